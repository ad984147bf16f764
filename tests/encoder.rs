//! The trainable encoder against references: candle-transformers' BERT, itself in other modes and batches,
//! and the semantics a sentence encoder must have. Uses the real all-MiniLM-L6-v2 weights.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use candle_transformers::models::bert::{BertModel, Config as ReferenceConfig};
use contrastgeo::model::encoder::read_config;
use contrastgeo::model::pooling::{l2_normalize, Pooling};
use contrastgeo::model::tokenize::MAX_TEXT_BYTES;
use contrastgeo::model::{EncoderSettings, ForwardMode, InferenceDType, ModelError};

const SENTENCES: [&str; 4] = [
    "Traffic on I-35 is terrible again this morning",
    "Best tacos in town!",
    "Can't wait for the Hawkeyes game tonight at Kinnick, go Hawks",
    "ok",
];

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn reference_model() -> BertModel {
    let files = common::model_files();
    let config: ReferenceConfig =
        serde_json::from_str(&std::fs::read_to_string(&files.config).unwrap()).unwrap();
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&[&files.weights], DType::F32, &Device::Cpu)
            .unwrap()
    };
    BertModel::load(vb, &config).unwrap()
}

#[test]
fn hidden_states_and_embeddings_match_candle_transformers_bert() {
    let encoder = common::encoder();
    let reference = reference_model();
    let ids = encoder.tokenizer().tokenize(&SENTENCES).unwrap();
    // Each sentence alone, then all four in one padded batch.
    let mut batches: Vec<Vec<&[u32]>> = ids.iter().map(|s| vec![s.as_slice()]).collect();
    batches.push(ids.iter().map(|s| s.as_slice()).collect());
    for sequences in batches {
        let batch = encoder.tokenizer().batch(&sequences, &Device::Cpu).unwrap();
        let ours = encoder.embed_batch(&batch, ForwardMode::Inference).unwrap();
        let token_types = batch.input_ids.zeros_like().unwrap();
        let hidden = reference
            .forward(&batch.input_ids, &token_types, Some(&batch.attention_mask))
            .unwrap();
        let theirs =
            l2_normalize(&Pooling::Mean.pool(&hidden, &batch.attention_mask).unwrap()).unwrap();
        let diff = max_abs_diff(&ours, &theirs);
        assert!(
            diff < 1e-4,
            "pooled embeddings differ by {diff} for batch of {}",
            sequences.len()
        );
        // Token states at real positions, also through the differentiable training path.
        let config = read_config(&common::model_files().config).unwrap();
        let bert = contrastgeo::model::BertEncoder::new(
            &config,
            candle_nn::VarBuilder::from_varmap(encoder.vars(), DType::F32, &Device::Cpu),
        )
        .unwrap();
        for mode in [
            ForwardMode::Inference,
            ForwardMode::Train { dropout_scale: 0.0 },
        ] {
            let ours_hidden = bert
                .forward(&batch.input_ids, &batch.attention_mask, mode)
                .unwrap();
            for (row, seq) in sequences.iter().enumerate() {
                let len = seq.len();
                let a = ours_hidden.i((row, 0..len)).unwrap();
                let b = hidden.i((row, 0..len)).unwrap();
                let diff = max_abs_diff(&a, &b);
                assert!(
                    diff < 1e-4,
                    "hidden states differ by {diff} ({mode:?}, row {row})"
                );
            }
        }
    }
}

#[test]
fn a_post_embedded_in_a_bucketed_batch_equals_the_post_alone() {
    let encoder = common::encoder();
    let together = encoder.embed(&SENTENCES).unwrap();
    for (text, embedded) in SENTENCES.iter().zip(&together) {
        let alone = &encoder.embed(&[text]).unwrap()[0];
        let diff = alone
            .iter()
            .zip(embedded)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "{text:?}: batch vs alone differ by {diff}");
        let norm: f32 = alone.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "embedding norm {norm}");
    }
}

fn min_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>())
        .fold(f32::INFINITY, f32::min)
}

fn fixture_texts() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/posts.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["text"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn the_cpu_inference_pass_matches_the_candle_path() {
    let mut texts: Vec<String> = SENTENCES.iter().map(|s| s.to_string()).collect();
    texts.extend(fixture_texts());
    // A post longer than max_length (truncated) and one of a single word.
    texts.push("the river walk at night ".repeat(60));
    texts.push("y'all".into());
    // Enough tokens (> 2,048) that `embed` also takes the transposed-weights path; the first copy alone
    // stays under it.
    let few = texts.len();
    let mut many = texts.clone();
    for round in 0..12 {
        many.extend(texts.iter().map(|t| format!("{t} {round}")));
    }
    texts.extend(many);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    for refs in [&refs[..few], &refs[..]] {
        for pooling in [Pooling::Mean, Pooling::Cls] {
            // Small batches so that several buckets run in parallel; one big batch runs gemm split.
            for batch_size in [3, 64] {
                let encoder = common::fresh_encoder(EncoderSettings {
                    pooling,
                    batch_size,
                    ..Default::default()
                });
                let fast = encoder.embed(refs).unwrap();
                let reference = encoder.embed_reference(refs).unwrap();
                let worst = fast
                    .iter()
                    .zip(&reference)
                    .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
                    .fold(0.0f32, f32::max);
                assert!(
                    worst < 1e-4,
                    "{pooling:?}, batch {batch_size}: max difference {worst}"
                );
                assert!(min_cosine(&fast, &reference) > 0.99999);
            }
        }
    }
}

#[test]
fn the_cpu_inference_pass_sees_optimiser_updates() {
    let encoder = common::fresh_encoder(EncoderSettings::default());
    let before = encoder.embed(&SENTENCES).unwrap();
    let mode = ForwardMode::Train { dropout_scale: 0.0 };
    let a = encoder.embed_texts(&SENTENCES[..2], mode).unwrap();
    let b = encoder.embed_texts(&SENTENCES[2..], mode).unwrap();
    let loss = a.matmul(&b.t().unwrap()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let mut opt = AdamW::new(
        encoder.vars().all_vars(),
        ParamsAdamW {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .unwrap();
    opt.step(&grads).unwrap();
    let after = encoder.embed(&SENTENCES).unwrap();
    let reference = encoder.embed_reference(&SENTENCES).unwrap();
    assert!(
        min_cosine(&before, &after) < 0.9999,
        "the step did not reach inference"
    );
    assert!(min_cosine(&after, &reference) > 0.99999);
}

#[test]
fn half_precision_inference_stays_close_to_f32() {
    // The GPU path in half precision, exercised on the CPU (candle has CPU kernels for every op it uses).
    let texts = fixture_texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let reference = common::encoder().embed_reference(&refs).unwrap();
    for (dtype, floor) in [(InferenceDType::F16, 0.999), (InferenceDType::Bf16, 0.99)] {
        let encoder = common::fresh_encoder(EncoderSettings {
            dtype,
            ..Default::default()
        });
        let half = encoder.embed_reference(&refs).unwrap();
        let worst = min_cosine(&half, &reference);
        assert!(worst > floor, "{dtype:?}: min cosine {worst}");
    }
}

#[test]
fn paraphrases_score_higher_than_unrelated_posts() {
    let encoder = common::encoder();
    let pairs = [
        (
            "The weather is lovely and sunny today",
            "What a beautiful sunny day outside",
            "I need to renew my car insurance",
        ),
        (
            "Stuck in traffic on the highway again",
            "The freeway is jammed, not moving at all",
            "My cat loves sleeping on the couch",
        ),
        (
            "Just landed at the airport, heading home",
            "My flight arrived, going home now",
            "This pizza has way too much cheese",
        ),
    ];
    for (anchor, paraphrase, unrelated) in pairs {
        let e = encoder.embed(&[anchor, paraphrase, unrelated]).unwrap();
        let (close, far) = (common::dot(&e[0], &e[1]), common::dot(&e[0], &e[2]));
        assert!(
            close > far + 0.3,
            "{anchor:?}: paraphrase {close:.3} vs unrelated {far:.3}"
        );
    }
}

#[test]
fn one_optimiser_step_moves_every_encoder_weight() {
    let encoder = common::fresh_encoder(EncoderSettings::default());
    let before: Vec<(String, Tensor)> = {
        let data = encoder.vars().data().lock().unwrap();
        data.iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().copy().unwrap()))
            .collect()
    };
    // An in-batch contrastive (InfoNCE) loss between posts and their paraphrases.
    let posts = [
        "sunny day at the lake",
        "traffic jam downtown",
        "great coffee on main street",
    ];
    let views = [
        "beautiful weather by the water",
        "cars stuck in the city centre",
        "nice espresso bar in town",
    ];
    let mode = ForwardMode::Train { dropout_scale: 0.0 };
    let a = encoder.embed_texts(&posts, mode).unwrap();
    let b = encoder.embed_texts(&views, mode).unwrap();
    let logits = (a.matmul(&b.t().unwrap()).unwrap() / 0.05).unwrap();
    let targets = Tensor::arange(0u32, posts.len() as u32, &Device::Cpu).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &targets).unwrap();
    let grads = loss.backward().unwrap();
    let vars = encoder.vars().all_vars();
    let data = encoder.vars().data().lock().unwrap();
    for (name, var) in data.iter() {
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient reached {name}"));
        let size = grad
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(size > 0.0, "zero gradient for {name}");
    }
    drop(data);
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr: 1e-4,
            ..Default::default()
        },
    )
    .unwrap();
    opt.step(&grads).unwrap();
    let data = encoder.vars().data().lock().unwrap();
    for (name, old) in before {
        let new = data[&name].as_tensor();
        let moved = max_abs_diff(&old, new);
        assert!(
            moved > 0.0,
            "{name} did not change after the optimiser step"
        );
    }
    let layers = data
        .keys()
        .filter(|n| n.starts_with("encoder.layer."))
        .count();
    assert_eq!(
        layers,
        6 * 16,
        "expected 16 tensors in each of the 6 layers"
    );
}

#[test]
fn training_mode_without_dropout_computes_the_inference_function() {
    let encoder = common::encoder();
    let inference = encoder
        .embed_texts(&SENTENCES, ForwardMode::Inference)
        .unwrap();
    let train = encoder
        .embed_texts(&SENTENCES, ForwardMode::Train { dropout_scale: 0.0 })
        .unwrap();
    assert!(max_abs_diff(&inference, &train) < 1e-4);
    let dropped = encoder
        .embed_texts(&SENTENCES, ForwardMode::Train { dropout_scale: 1.0 })
        .unwrap();
    assert!(
        max_abs_diff(&inference, &dropped) > 1e-3,
        "dropout should perturb training embeddings"
    );
    let sims = inference.matmul(&dropped.t().unwrap()).unwrap();
    let diagonal = sims.i((0, 0)).unwrap().to_scalar::<f32>().unwrap();
    assert!(
        diagonal > 0.8,
        "dropout changed a post beyond recognition: {diagonal}"
    );
    assert_eq!(sims.dims(), &[4, 4]);
}

#[test]
fn empty_and_whitespace_texts_are_typed_errors() {
    let encoder = common::encoder();
    for bad in ["", "   \t\n"] {
        match encoder.embed(&["fine post", bad]) {
            Err(ModelError::EmptyText { index: 1 }) => {}
            other => panic!(
                "{bad:?}: expected EmptyText at 1, got {:?}",
                other.map(|v| v.len())
            ),
        }
    }
}

#[test]
fn very_long_posts_are_truncated_to_max_length_tokens() {
    let encoder = common::encoder();
    let long = "Austin music festival downtown tonight ".repeat(100_000 / 39 + 1);
    assert!(long.len() > 100_000 && long.len() > MAX_TEXT_BYTES);
    let prefix: String = long
        .split_whitespace()
        .take(300)
        .collect::<Vec<_>>()
        .join(" ");
    let e = encoder.embed(&[long.as_str(), prefix.as_str()]).unwrap();
    // Both are cut to the same first 128 tokens.
    assert!(common::dot(&e[0], &e[1]) > 0.9999);
    let ids = encoder.tokenizer().tokenize(&[long.as_str()]).unwrap();
    assert_eq!(ids[0].len(), encoder.settings().max_length);
}

#[test]
fn settings_out_of_range_are_rejected() {
    let files = common::model_files();
    let too_long = EncoderSettings {
        max_length: 4096,
        ..Default::default()
    };
    assert!(matches!(
        contrastgeo::model::TextEncoder::load(&files, too_long, &Device::Cpu),
        Err(ModelError::InvalidSetting(_))
    ));
}

#[test]
fn a_checkpoint_with_a_bert_prefix_loads_and_a_truncated_one_is_refused() {
    let files = common::model_files();
    let dir = tempfile::tempdir().unwrap();
    let tensors = candle_core::safetensors::load(&files.weights, &Device::Cpu).unwrap();
    let prefixed: std::collections::HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| (format!("bert.{k}"), v.to_dtype(DType::F16).unwrap()))
        .collect();
    let prefixed_path = dir.path().join("prefixed.safetensors");
    candle_core::safetensors::save(&prefixed, &prefixed_path).unwrap();
    let config = read_config(&files.config).unwrap();
    let settings = EncoderSettings::default();
    let loaded = contrastgeo::model::TextEncoder::load_with_weights(
        &config,
        &files.tokenizer,
        &prefixed_path,
        settings.clone(),
        &Device::Cpu,
    )
    .expect("a bert.-prefixed f16 checkpoint loads");
    let a = loaded.embed(&SENTENCES[..2]).unwrap();
    let b = common::encoder().embed(&SENTENCES[..2]).unwrap();
    assert!(
        common::dot(&a[0], &b[0]) > 0.999,
        "f16 round trip changed the model"
    );

    let mut truncated = tensors.clone();
    truncated.remove("encoder.layer.5.output.dense.weight");
    let truncated_path = dir.path().join("truncated.safetensors");
    candle_core::safetensors::save(&truncated, &truncated_path).unwrap();
    let err = contrastgeo::model::TextEncoder::load_with_weights(
        &config,
        &files.tokenizer,
        &truncated_path,
        settings,
        &Device::Cpu,
    )
    .err()
    .expect("a checkpoint missing a tensor must be refused");
    assert!(
        matches!(&err, ModelError::BadWeights { reason, .. } if reason.contains("encoder.layer.5.output.dense.weight")),
        "{err}"
    );
}
