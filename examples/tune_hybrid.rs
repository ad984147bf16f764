//! Tries several query settings of the engine on the same K-shot store and the same test posts, embedding the
//! posts once: how the hybrid weights (lexical vote, dense vote, label head) were chosen. Base model, no
//! encoder training (as `contrastgeo eval --no-train`).
//!
//! ```text
//! cargo run --release --example tune_hybrid -- DATA_DIR K SEED '{}' '{"lexical_weight": 0.1}' ...
//! ```
//!
//! K may be `all`. Each further argument is a JSON object of [`EngineConfig`] fields over the defaults; the
//! store is built with the first one, and the label head is refitted when a setting changes how it is
//! fitted (`head.epochs`, `head.l2`, ...). Prints one line per setting: Acc@1, macro
//! Acc@1, unnamed Acc@1, Acc@161km, macro Acc@161km, mean error in km.

use std::sync::Arc;

use contrastgeo::data::split::{sample_k_shot, test_posts};
use contrastgeo::engine::{Engine, EngineConfig, PostQuery};
use contrastgeo::eval::benchmark::{BenchmarkData, ALL_SHOTS};
use contrastgeo::eval::{to_predictions, EvalStore, MethodReport};
use contrastgeo::model::GeoModel;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 4,
        "usage: tune_hybrid DATA_DIR K SEED CONFIG_JSON..."
    );
    let data = BenchmarkData::load(std::path::Path::new(&args[0]), 30.0)?;
    let shots = if args[1] == "all" {
        ALL_SHOTS
    } else {
        args[1].parse()?
    };
    let seed: u64 = args[2].parse()?;
    let configs: Vec<EngineConfig> = args[3..]
        .iter()
        .map(|json| serde_json::from_str(json))
        .collect::<Result<_, _>>()?;

    let files = contrastgeo::model::ModelFiles::resolve(None)?;
    let device = candle_core::Device::Cpu;
    let model = Arc::new(GeoModel::from_base(
        &files,
        contrastgeo::model::GeoModelConfig::default(),
        &device,
    )?);
    let test = test_posts(&data.split, &data.posts);
    let render = |p: &contrastgeo::data::CityPost| model.config().post_input.render(&p.post);
    let texts: Vec<String> = test.iter().map(render).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let vectors = model.post_encoder().embed(&refs)?;
    eprintln!(
        "embedded {} test posts in {:.0}s",
        refs.len(),
        started.elapsed().as_secs_f64()
    );
    let support = sample_k_shot(&data.split, &data.posts, shots, seed);
    let started = std::time::Instant::now();
    let store = EvalStore::build(
        Arc::clone(&model),
        &data.cities,
        &support,
        configs[0].clone(),
    )?;
    eprintln!(
        "built the store of {} support posts in {:.0}s",
        support.len(),
        started.elapsed().as_secs_f64()
    );
    let posts: Vec<PostQuery> = refs.iter().map(|&t| PostQuery::text(t)).collect();
    let mut fitted = configs[0].head.clone();
    for (json, config) in args[3..].iter().zip(configs) {
        let started = std::time::Instant::now();
        let fit_settings = |h: &contrastgeo::engine::label_head::HeadConfig| {
            (
                h.epochs,
                h.l2.to_bits(),
                h.learning_rate.to_bits(),
                h.embedding_scale.to_bits(),
                h.min_posts_per_term,
                h.char_ngrams,
                h.prior_strength.to_bits(),
            )
        };
        if config.head.weight > 0.0 && fit_settings(&config.head) != fit_settings(&fitted) {
            store.engine().snapshot().refit_head_with(&config.head)?;
            fitted = config.head.clone();
        }
        let engine = Engine::with_shared(store.engine().snapshot(), config);
        let answers = engine.locate_embedded(&posts, vectors.clone())?;
        let rankings = answers.iter().map(|a| store.ranking(a)).collect();
        let report = MethodReport::of(&to_predictions(&test, rankings, &data.cities), &data.cities);
        println!(
            "K={} seed={seed} acc1 {:.3} macro {:.3} unnamed {:.3} acc161 {:.3} macro-acc161 {:.3} \
             mean-km {:.0} ({:.0}s) {json}",
            args[1],
            report.overall.acc1,
            report.macro_avg.acc1,
            report.unnamed.acc1,
            report.overall.acc161,
            report.macro_avg.acc161,
            report.overall.mean_km,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
