//! The K-shot benchmark protocol: for each K and seed, draw K support posts per city, train a model from the
//! base checkpoint, and evaluate every rule on all test posts; report the mean over seeds.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{
    centroids, rank_by_cosine, to_predictions, trained_rankings, MethodReport, RerankConfig,
};
use crate::data::split::{sample_k_shot, test_posts, Split};
use crate::data::{assign_cities, read_labelled_posts, CityPost, DataError};
use crate::geo::{CityTable, GeoError};
use crate::model::{GeoModel, ModelError};
use crate::train::{train, StepReport, TrainConfig, TrainError, TrainReport};

/// Errors of an evaluation run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Reading cities failed.
    #[error(transparent)]
    Geo(#[from] GeoError),
    /// Reading posts or the split failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Nothing to evaluate.
    #[error("no test posts: check the split's ids against posts.jsonl")]
    NoTestPosts,
}

/// A benchmark directory's content: `cities.jsonl`, `posts.jsonl`, `split.json`.
pub struct BenchmarkData {
    /// The candidate cities.
    pub cities: CityTable,
    /// Posts bound to cities.
    pub posts: Vec<CityPost>,
    /// Per-city support/test ids.
    pub split: Split,
}

impl BenchmarkData {
    /// Loads a benchmark directory.
    pub fn load(dir: &Path, radius_km: f64) -> Result<Self, EvalError> {
        let cities = CityTable::read_jsonl(&dir.join("cities.jsonl"))?;
        let read = read_labelled_posts(&dir.join("posts.jsonl"))?;
        let (posts, dropped) = assign_cities(read.posts, &cities, radius_km);
        tracing::info!(
            posts = posts.len(),
            dropped,
            rejected = read.rejected.len(),
            "benchmark posts"
        );
        let split = Split::read(&dir.join("split.json"))?;
        Ok(Self {
            cities,
            posts,
            split,
        })
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchmarkSpec {
    /// K values.
    pub shots: Vec<usize>,
    /// Seeds per K.
    pub seeds: Vec<u64>,
    /// Training settings (the seed is replaced per run).
    pub train: TrainConfig,
    /// The product rule's settings.
    pub rerank: RerankConfig,
    /// Evaluate on at most this many test posts per city (all when absent).
    pub max_test_per_city: Option<usize>,
    /// Evaluate this trained checkpoint instead of training one per run (its K and seed must match the
    /// run's, so that the support posts are the ones it was trained on).
    pub checkpoint: Option<std::path::PathBuf>,
    /// Save each run's trained checkpoint under this directory (`k{K}-seed{S}`).
    pub save_checkpoints: Option<std::path::PathBuf>,
}

/// One (K, seed) run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Seed of the draw and of training.
    pub seed: u64,
    /// Training summary.
    pub train: TrainReport,
    /// Reports of the rules that depend on the run, by name.
    pub methods: BTreeMap<String, MethodReport>,
}

/// Results for one K: the mean over seeds of every rule, and each run.
#[derive(Debug, Clone, Serialize)]
pub struct ShotReport {
    /// K.
    pub shots: usize,
    /// Mean over seeds, by rule name (zero-shot included for comparison).
    pub methods: BTreeMap<String, MethodReport>,
    /// The individual runs.
    pub runs: Vec<RunReport>,
}

/// The whole benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct BenchmarkReport {
    /// What was run.
    pub spec: BenchmarkSpec,
    /// The model configuration (prompts, fusion, ...).
    pub model: serde_json::Value,
    /// Test posts evaluated.
    pub test_posts: usize,
    /// Of which do not name their city.
    pub unnamed_posts: usize,
    /// Per K.
    pub results: Vec<ShotReport>,
}

/// Names of the rules, in report order.
pub const METHODS: [&str; 4] = ["zero-shot", "centroid (frozen)", "TLC", "TLC+TLM rerank"];

/// Runs the protocol. `base_model` makes a fresh model from the base checkpoint each time it is called;
/// `on_event` hears what is happening (for logs and progress).
pub fn run(
    data: &BenchmarkData,
    spec: &BenchmarkSpec,
    base_model: &dyn Fn() -> Result<GeoModel, ModelError>,
    on_event: &mut dyn FnMut(&str),
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<BenchmarkReport, EvalError> {
    let mut test = test_posts(&data.split, &data.posts);
    if let Some(cap) = spec.max_test_per_city {
        let mut seen = vec![0usize; data.cities.len()];
        test.retain(|p| {
            seen[p.city] += 1;
            seen[p.city] <= cap
        });
    }
    if test.is_empty() {
        return Err(EvalError::NoTestPosts);
    }
    let base = base_model()?;
    let render = |p: &CityPost| base.config().post_input.render(&p.post);
    let test_texts: Vec<String> = test.iter().map(render).collect();
    let test_refs: Vec<&str> = test_texts.iter().map(String::as_str).collect();
    on_event(&format!(
        "embedding {} test posts with the base encoder",
        test.len()
    ));
    let base_test = base.post_encoder().embed(&test_refs)?;
    let city_refs: Vec<&crate::geo::City> = data.cities.cities().iter().collect();
    let base_cities = base.city_vectors(&city_refs)?;
    let zero_shot = to_predictions(
        &test,
        rank_by_cosine(&base_test, &base_cities)?,
        &data.cities,
    );
    let unnamed_posts = zero_shot.iter().filter(|p| !p.names_city).count();
    let zero_shot = MethodReport::of(&zero_shot, &data.cities);

    let mut results = Vec::new();
    for &shots in &spec.shots {
        let mut runs = Vec::new();
        for &seed in &spec.seeds {
            on_event(&format!("K={shots} seed={seed}: training"));
            let support = sample_k_shot(&data.split, &data.posts, shots, seed);
            let support_texts: Vec<String> = support.iter().map(render).collect();
            let support_refs: Vec<&str> = support_texts.iter().map(String::as_str).collect();
            let support_cities: Vec<usize> = support.iter().map(|p| p.city).collect();
            let centroid_vectors = centroids(
                &base.post_encoder().embed(&support_refs)?,
                &support_cities,
                data.cities.len(),
            );
            let centroid = to_predictions(
                &test,
                rank_by_cosine(&base_test, &centroid_vectors)?,
                &data.cities,
            );

            let (model, train_report) = match &spec.checkpoint {
                Some(dir) => (GeoModel::load(dir, base.device())?, TrainReport::default()),
                None => {
                    let mut model = base_model()?;
                    let config = TrainConfig {
                        seed,
                        ..spec.train.clone()
                    };
                    let report = train(&mut model, &data.cities, &support, &config, on_step)?;
                    if let Some(root) = &spec.save_checkpoints {
                        model.save(&root.join(format!("k{shots}-seed{seed}")))?;
                    }
                    (model, report)
                }
            };
            on_event(&format!(
                "K={shots} seed={seed}: trained {} steps in {:.0}s; evaluating",
                train_report.steps, train_report.seconds
            ));
            let trained = trained_rankings(&model, &data.cities, &test, &support, &spec.rerank)?;
            let mut methods = BTreeMap::new();
            methods.insert(
                METHODS[1].to_string(),
                MethodReport::of(&centroid, &data.cities),
            );
            methods.insert(
                METHODS[2].to_string(),
                MethodReport::of(
                    &to_predictions(&test, trained.tlc, &data.cities),
                    &data.cities,
                ),
            );
            methods.insert(
                METHODS[3].to_string(),
                MethodReport::of(
                    &to_predictions(&test, trained.reranked, &data.cities),
                    &data.cities,
                ),
            );
            on_event(&format!("K={shots} seed={seed}: {}", one_line(&methods)));
            runs.push(RunReport {
                seed,
                train: train_report,
                methods,
            });
        }
        let mut methods = BTreeMap::new();
        methods.insert(METHODS[0].to_string(), zero_shot.clone());
        for name in &METHODS[1..] {
            let per_seed: Vec<MethodReport> = runs
                .iter()
                .filter_map(|r| r.methods.get(*name).cloned())
                .collect();
            if let Some(mean) = MethodReport::mean(&per_seed) {
                methods.insert(name.to_string(), mean);
            }
        }
        results.push(ShotReport {
            shots,
            methods,
            runs,
        });
    }
    Ok(BenchmarkReport {
        spec: spec.clone(),
        model: serde_json::to_value(base.config()).unwrap_or_default(),
        test_posts: test.len(),
        unnamed_posts,
        results,
    })
}

fn one_line(methods: &BTreeMap<String, MethodReport>) -> String {
    methods
        .iter()
        .map(|(name, r)| {
            format!(
                "{name} Acc@1 {:.3} macro {:.3}",
                r.overall.acc1, r.macro_avg.acc1
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The report as Markdown tables, one per K.
pub fn to_markdown(report: &BenchmarkReport) -> String {
    let mut md = format!(
        "Test posts: {} ({} do not name their city). Mean over seeds {:?}.\n\n",
        report.test_posts, report.unnamed_posts, report.spec.seeds
    );
    for shot in &report.results {
        md.push_str(&format!("### K = {}\n\n", shot.shots));
        md.push_str("| rule | Acc@1 | Acc@5 | Acc@161km | mean km | median km | macro Acc@1 | macro Acc@161km | macro median km | unnamed Acc@1 | unnamed Acc@161km |\n");
        md.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
        for name in METHODS {
            if let Some(r) = shot.methods.get(name) {
                md.push_str(&format!(
                    "| {name} | {:.3} | {:.3} | {:.3} | {:.0} | {:.0} | {:.3} | {:.3} | {:.0} | {:.3} | {:.3} |\n",
                    r.overall.acc1,
                    r.overall.acc5,
                    r.overall.acc161,
                    r.overall.mean_km,
                    r.overall.median_km,
                    r.macro_avg.acc1,
                    r.macro_avg.acc161,
                    r.macro_avg.median_km,
                    r.unnamed.acc1,
                    r.unnamed.acc161
                ));
            }
        }
        let secs: Vec<String> = shot
            .runs
            .iter()
            .map(|r| format!("{:.0}s", r.train.seconds))
            .collect();
        md.push_str(&format!(
            "\nTraining time per seed: {}.\n\n",
            secs.join(", ")
        ));
    }
    md
}
