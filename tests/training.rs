//! Training on the project's own tiny fixture (4 cities, 20 posts) with the real base model: the loss falls,
//! and a saved checkpoint reloads to exactly the same predictions.

mod common;

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use contrastgeo::data::{assign_cities, read_labelled_posts, CityPost};
use contrastgeo::engine::EngineConfig;
use contrastgeo::eval::{tlc_rankings, EvalStore};
use contrastgeo::geo::CityTable;
use contrastgeo::model::{ForwardMode, Fusion, GeoModel, GeoModelConfig};
use contrastgeo::train::{tlc_loss, train, TrainConfig};

fn fixture() -> (CityTable, Vec<CityPost>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cities = CityTable::read_jsonl(&dir.join("cities.jsonl")).unwrap();
    let read = read_labelled_posts(&dir.join("posts.jsonl")).unwrap();
    assert!(read.rejected.is_empty());
    let (posts, dropped) = assign_cities(read.posts, &cities, 50.0);
    assert_eq!(
        (posts.len(), dropped),
        (20, 0),
        "coordinate-only posts bind to their city"
    );
    (cities, posts)
}

fn full_tlc_loss(model: &GeoModel, cities: &CityTable, posts: &[CityPost]) -> f32 {
    let texts: Vec<&str> = posts.iter().map(|p| p.post.text.as_str()).collect();
    let encoded = model
        .post_encoder()
        .encode_texts(&texts, ForwardMode::Inference)
        .unwrap();
    let refs: Vec<_> = cities.cities().iter().collect();
    let encoded_cities = model.encode_cities(&refs, ForwardMode::Inference).unwrap();
    let targets: Vec<u32> = posts.iter().map(|p| p.city as u32).collect();
    let targets = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
    tlc_loss(
        &encoded.pooled,
        &encoded_cities.pooled,
        &targets,
        model.config().tau,
    )
    .unwrap()
    .to_scalar::<f32>()
    .unwrap()
}

fn quick_config(steps: usize) -> TrainConfig {
    TrainConfig {
        epochs: 1,
        min_steps: steps,
        batch_size: 8,
        lr: 5e-5,
        head_lr: 1e-3,
        negatives: 2,
        dropout_scale: 0.0,
        ..Default::default()
    }
}

#[test]
fn a_few_steps_reduce_the_contrastive_loss_and_train_the_head() {
    let (cities, posts) = fixture();
    let config = GeoModelConfig {
        fusion: Fusion::Concat,
        ..Default::default()
    };
    let mut model = GeoModel::from_base(&common::model_files(), config, &Device::Cpu).unwrap();
    let before = full_tlc_loss(&model, &cities, &posts);
    let mut steps = Vec::new();
    let report = train(&mut model, &cities, &posts, &quick_config(12), &mut |s| {
        steps.push(s.clone())
    })
    .unwrap();
    let after = full_tlc_loss(&model, &cities, &posts);
    assert_eq!(report.steps, 12);
    assert_eq!(steps.len(), 12);
    assert!(
        after < before * 0.8,
        "TLC loss on the training posts should fall: {before} -> {after}"
    );
    assert!(model.config().head_trained);
    assert!(steps.iter().all(|s| s.tlm > 0.0 && s.loss.is_finite()));
}

#[test]
fn a_saved_checkpoint_reloads_to_identical_predictions_for_every_fusion() {
    let (cities, posts) = fixture();
    for fusion in [Fusion::Sum, Fusion::Concat, Fusion::CrossAttention] {
        let config = GeoModelConfig {
            fusion,
            ..Default::default()
        };
        let mut model = GeoModel::from_base(&common::model_files(), config, &Device::Cpu).unwrap();
        train(&mut model, &cities, &posts, &quick_config(2), &mut |_| {}).unwrap();
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let reloaded = std::sync::Arc::new(GeoModel::load(dir.path(), &Device::Cpu).unwrap());
        let model = std::sync::Arc::new(model);
        assert_eq!(reloaded.config(), model.config());
        // The id names the weights: the reloaded weights hash to it.
        assert_eq!(
            model.config().model_id,
            format!("trained:{}", reloaded.weights_digest().unwrap())
        );

        let support = &posts[..8];
        let config = EngineConfig {
            top_k: 3,
            ..Default::default()
        };
        let texts: Vec<&str> = posts.iter().map(|p| p.post.text.as_str()).collect();
        assert_eq!(
            tlc_rankings(&model, &cities, &texts).unwrap(),
            tlc_rankings(&reloaded, &cities, &texts).unwrap(),
            "{fusion:?}: TLC rankings changed after reload"
        );
        let engine_rankings = |m: &std::sync::Arc<GeoModel>| {
            let store = EvalStore::build(m.clone(), &cities, support, config.clone()).unwrap();
            let answers = store.answers(&texts).unwrap();
            answers.iter().map(|a| store.ranking(a)).collect::<Vec<_>>()
        };
        let a = engine_rankings(&model);
        assert!(a.iter().all(|r| r.len() == 3), "{fusion:?}: {a:?}");
        assert_eq!(
            a,
            engine_rankings(&reloaded),
            "{fusion:?}: the engine's rankings changed after reload"
        );

        let texts: Vec<&str> = posts.iter().map(|p| p.post.text.as_str()).collect();
        let ea = model
            .post_encoder()
            .encode_texts(&texts, ForwardMode::Inference)
            .unwrap();
        let eb = reloaded
            .post_encoder()
            .encode_texts(&texts, ForwardMode::Inference)
            .unwrap();
        let refs: Vec<_> = cities.cities().iter().collect();
        let ca = model.encode_cities(&refs, ForwardMode::Inference).unwrap();
        let cb = reloaded
            .encode_cities(&refs, ForwardMode::Inference)
            .unwrap();
        let rows: Vec<u32> = (0..posts.len() as u32).collect();
        let city_rows: Vec<u32> = posts.iter().map(|p| p.city as u32).collect();
        let la = model
            .match_logits(&ea, &rows, &ca, &city_rows, ForwardMode::Inference)
            .unwrap();
        let lb = reloaded
            .match_logits(&eb, &rows, &cb, &city_rows, ForwardMode::Inference)
            .unwrap();
        assert_eq!(
            la.to_vec1::<f32>().unwrap(),
            lb.to_vec1::<f32>().unwrap(),
            "{fusion:?}: TLM logits differ"
        );
        assert_eq!(
            ea.pooled.to_vec2::<f32>().unwrap(),
            eb.pooled.to_vec2::<f32>().unwrap()
        );
    }
}

#[test]
fn saving_over_a_loaded_checkpoint_replaces_it_whole_and_the_loaded_one_keeps_working() {
    let (cities, posts) = fixture();
    let mut model = GeoModel::from_base(
        &common::model_files(),
        GeoModelConfig::default(),
        &Device::Cpu,
    )
    .unwrap();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("ck");
    train(&mut model, &cities, &posts, &quick_config(1), &mut |_| {}).unwrap();
    model.save(&dir).unwrap();
    let first_id = model.config().model_id.clone();
    // This one memory-maps the first checkpoint's weights.
    let loaded = GeoModel::load(&dir, &Device::Cpu).unwrap();
    let texts = [
        "Bats over the Congress Avenue bridge",
        "Rain again in Seattle",
    ];
    let before = loaded.post_encoder().embed(&texts).unwrap();

    train(&mut model, &cities, &posts, &quick_config(2), &mut |_| {}).unwrap();
    assert_ne!(model.config().model_id, first_id, "new weights, new id");
    model.save(&dir).unwrap();
    assert_eq!(
        GeoModel::load(&dir, &Device::Cpu)
            .unwrap()
            .config()
            .model_id,
        model.config().model_id
    );
    assert_eq!(
        loaded.post_encoder().embed(&texts).unwrap(),
        before,
        "a process holding the old checkpoint reads the old weights, not a half-written file"
    );
    let names: Vec<String> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["ck".to_string()], "no staging leftovers");
}

#[test]
fn a_directory_without_a_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = GeoModel::load(dir.path(), &Device::Cpu)
        .err()
        .expect("empty dir is no checkpoint");
    assert!(err.to_string().contains("contrastgeo train"), "{err}");
}

#[test]
fn a_learned_temperature_moves_and_is_recorded_in_the_checkpoint_config() {
    let (cities, posts) = fixture();
    let mut model = GeoModel::from_base(
        &common::model_files(),
        GeoModelConfig::default(),
        &Device::Cpu,
    )
    .unwrap();
    let config = TrainConfig {
        learn_tau: true,
        use_tlm: false,
        ..quick_config(3)
    };
    train(&mut model, &cities, &posts, &config, &mut |_| {}).unwrap();
    let tau = model.config().tau;
    assert!(tau != 0.03 && (0.01..=1.0).contains(&tau), "tau {tau}");
    assert!(
        !model.config().head_trained,
        "TLM was off: the head stays untrained"
    );
}
