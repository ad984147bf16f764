//! The K-shot benchmark protocol: for each K and seed, draw K support posts per city, train a model from the
//! base checkpoint, and evaluate every rule on all test posts; report the mean over seeds.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use std::sync::Arc;

use super::{centroids, rank_by_cosine, tlc_rankings, to_predictions, EvalStore, MethodReport};
use crate::data::split::{sample_k_shot, test_posts, Split};
use crate::data::{assign_cities, read_labelled_posts, CityPost, DataError};
use crate::engine::{AuthorRule, EngineConfig, EngineError, PostQuery};
use crate::eval::{Metrics, Prediction};
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
    /// Building or querying the evaluation store failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The evaluation store's temporary directory could not be made.
    #[error("creating a temporary directory for the evaluation store: {0}")]
    TempStore(std::io::Error),
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
    /// The query settings of the engine rule (the product's, as `locate` and `serve` use them).
    pub engine: EngineConfig,
    /// How the engine combines an author's posts (the author-level rows).
    pub author_rule: AuthorRule,
    /// Cities kept out of training (see [`held_out_cities`]): the model never sees their posts or prompts
    /// while training; they are still candidates with their K support posts in the store at test time.
    #[serde(default)]
    pub hold_out_cities: usize,
    /// Evaluate on at most this many test posts per city (all when absent).
    pub max_test_per_city: Option<usize>,
    /// Evaluate this trained checkpoint instead of training one per run (its K and seed must match the
    /// run's, so that the support posts are the ones it was trained on).
    pub checkpoint: Option<std::path::PathBuf>,
    /// Save each run's trained checkpoint under this directory (`k{K}-seed{S}`).
    pub save_checkpoints: Option<std::path::PathBuf>,
    /// Fine-tune the encoders (TLC + TLM) per run; without it every run uses the base model, and the
    /// store's own parts (votes, label head) are all that learn from the labels.
    pub train_encoder: bool,
}

/// The K that means "every support post" ([`sample_k_shot`] takes them all).
pub const ALL_SHOTS: usize = usize::MAX;

/// "all" for [`ALL_SHOTS`], else the number.
pub fn shots_label(shots: usize) -> String {
    if shots == ALL_SHOTS {
        "all".to_string()
    } else {
        shots.to_string()
    }
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
    /// The engine's author-level answers, when test posts carry authors.
    pub authors: Option<AuthorReport>,
    /// With cities held out of training: every rule on the held-out cities' test posts
    /// (`"RULE / held-out cities"`) and on the others' (`"RULE / trained cities"`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub slices: BTreeMap<String, MethodReport>,
}

/// The engine located each test author from all of their test posts ([`crate::engine::Engine::locate_authors`]).
/// An author's true city is the one most of their test posts were written in; distances are to its centre.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuthorReport {
    /// Every test author (`n`: authors).
    pub authors: Metrics,
    /// Authors with at least [`MANY_POSTS`] test posts.
    pub authors_with_many_posts: Metrics,
    /// The engine's per-post answers on the posts of those authors (what aggregation improves on).
    pub their_posts: Metrics,
    /// Authors with many posts again, the engine also told each post's profile location where it has one.
    #[serde(default)]
    pub with_profile: Metrics,
}

/// Table positions of the `count` cities kept out of training: evenly spread over the table (every
/// `len / count`-th city), so big and small cities of every region are among them.
pub fn held_out_cities(table: &crate::geo::CityTable, count: usize) -> Vec<usize> {
    if count == 0 || table.is_empty() {
        return Vec::new();
    }
    let step = (table.len() / count.min(table.len())).max(1);
    (0..table.len())
        .filter(|p| p % step == step - 1)
        .take(count)
        .collect()
}

/// The training set without the held-out cities: their table, and the posts re-bound to it.
fn without_held_out(
    table: &crate::geo::CityTable,
    posts: &[CityPost],
    held: &[usize],
) -> (crate::geo::CityTable, Vec<CityPost>) {
    let kept: std::collections::HashSet<crate::geo::CityId> = table
        .cities()
        .iter()
        .enumerate()
        .filter(|(p, _)| !held.contains(p))
        .map(|(_, c)| c.id)
        .collect();
    let sub = table.subset(&kept);
    let posts = posts
        .iter()
        .filter_map(|p| {
            let city = sub.position(table.cities()[p.city].id)?;
            Some(CityPost {
                post: p.post.clone(),
                city,
            })
        })
        .collect();
    (sub, posts)
}

/// "Authors with many posts": at least this many test posts.
pub const MANY_POSTS: usize = 5;

impl AuthorReport {
    fn mean(all: &[AuthorReport]) -> Option<Self> {
        let pick =
            |f: fn(&AuthorReport) -> &Metrics| all.iter().map(|r| f(r).clone()).collect::<Vec<_>>();
        Some(Self {
            authors: Metrics::mean(&pick(|r| &r.authors))?,
            authors_with_many_posts: Metrics::mean(&pick(|r| &r.authors_with_many_posts))?,
            their_posts: Metrics::mean(&pick(|r| &r.their_posts))?,
            with_profile: Metrics::mean(&pick(|r| &r.with_profile))?,
        })
    }
}

/// The author-level figures of `store`'s engine on the `test` posts that carry an author; `per_post` are the
/// engine's per-post predictions for `texts` (the test posts, rendered).
fn author_report(
    store: &EvalStore,
    test: &[CityPost],
    texts: &[&str],
    per_post: &[Prediction],
    table: &crate::geo::CityTable,
    rule: AuthorRule,
) -> Result<Option<AuthorReport>, EvalError> {
    let mut by_author: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, post) in test.iter().enumerate() {
        if let Some(user) = post.post.user.as_deref().filter(|u| !u.is_empty()) {
            by_author.entry(user).or_default().push(i);
        }
    }
    if by_author.is_empty() {
        return Ok(None);
    }
    let groups: Vec<&Vec<usize>> = by_author.values().collect();
    let group_texts: Vec<Vec<PostQuery>> = groups
        .iter()
        .map(|g| g.iter().map(|&i| PostQuery::text(texts[i])).collect())
        .collect();
    let located = store.engine().locate_authors(&group_texts, rule)?;
    let many_with_profile: Vec<Vec<PostQuery>> = groups
        .iter()
        .filter(|g| g.len() >= MANY_POSTS)
        .map(|g| {
            g.iter()
                .map(|&i| PostQuery {
                    text: texts[i],
                    profile: test[i].post.user_location.as_deref(),
                })
                .collect()
        })
        .collect();
    let mut located_with_profile = store
        .engine()
        .locate_authors(&many_with_profile, rule)?
        .into_iter();
    let mut with_profile = Vec::new();
    let mut authors = Vec::new();
    let mut many = Vec::new();
    let mut their_posts = Vec::new();
    for (posts, answer) in groups.iter().zip(&located) {
        let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
        for &i in posts.iter() {
            *counts.entry(test[i].city).or_default() += 1;
        }
        let truth = counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(&city, _)| city)
            .unwrap_or_default();
        let centre = &table.cities()[truth];
        let prediction = Prediction {
            truth,
            ranked: store.ranking(&answer.answer),
            lat: centre.lat,
            lon: centre.lon,
            names_city: false,
            has_profile: false,
        };
        if posts.len() >= MANY_POSTS {
            if let Some(answer) = located_with_profile.next() {
                with_profile.push(Prediction {
                    ranked: store.ranking(&answer.answer),
                    ..prediction.clone()
                });
            }
            many.push(prediction.clone());
            their_posts.extend(posts.iter().map(|&i| per_post[i].clone()));
        }
        authors.push(prediction);
    }
    let metrics = |ps: &[Prediction]| Metrics::of(&ps.iter().collect::<Vec<_>>(), table);
    Ok(Some(AuthorReport {
        authors: metrics(&authors),
        authors_with_many_posts: metrics(&many),
        their_posts: metrics(&their_posts),
        with_profile: metrics(&with_profile),
    }))
}

/// Results for one K: the mean over seeds of every rule, and each run.
#[derive(Debug, Clone, Serialize)]
pub struct ShotReport {
    /// K.
    pub shots: usize,
    /// Mean over seeds, by rule name (zero-shot included for comparison).
    pub methods: BTreeMap<String, MethodReport>,
    /// Mean over seeds of the engine's author-level figures.
    pub authors: Option<AuthorReport>,
    /// Mean over seeds of the held-out / trained city slices (see [`RunReport::slices`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub slices: BTreeMap<String, MethodReport>,
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
pub const METHODS: [&str; 5] = [
    "zero-shot",
    "centroid (frozen)",
    "TLC",
    "engine",
    "engine + profile location",
];

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
    // The base model's weights never change here: every rule that asks it for the same post gets the
    // embedding it made first (without training, the engine of every run uses this model too).
    let base = Arc::new(base_model()?);
    base.post_encoder().freeze_with_cache();
    base.location_encoder().freeze_with_cache();
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
    let zero_shot_predictions = to_predictions(
        &test,
        rank_by_cosine(&base_test, &base_cities)?,
        &data.cities,
    );
    let unnamed_posts = zero_shot_predictions
        .iter()
        .filter(|p| !p.names_city)
        .count();
    let zero_shot = MethodReport::of(&zero_shot_predictions, &data.cities);
    let held = held_out_cities(&data.cities, spec.hold_out_cities);
    if !held.is_empty() {
        let names: Vec<&str> = held
            .iter()
            .map(|&p| data.cities.cities()[p].name.as_str())
            .collect();
        on_event(&format!("held out of training: {}", names.join(", ")));
    }

    let mut results = Vec::new();
    for &shots in &spec.shots {
        let mut runs = Vec::new();
        // Every seed draws the same set when it takes every post.
        let seeds = if shots == ALL_SHOTS {
            &spec.seeds[..spec.seeds.len().min(1)]
        } else {
            &spec.seeds[..]
        };
        let label = shots_label(shots);
        for &seed in seeds {
            let shots_text = &label;
            on_event(&format!("K={shots_text} seed={seed}: training"));
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
                Some(dir) => (
                    Arc::new(GeoModel::load(dir, base.device())?),
                    TrainReport::default(),
                ),
                None if !spec.train_encoder => (Arc::clone(&base), TrainReport::default()),
                None => {
                    let mut model = base_model()?;
                    let config = TrainConfig {
                        seed,
                        ..spec.train.clone()
                    };
                    let report = if held.is_empty() {
                        train(&mut model, &data.cities, &support, &config, on_step)?
                    } else {
                        let (table, posts) = without_held_out(&data.cities, &support, &held);
                        train(&mut model, &table, &posts, &config, on_step)?
                    };
                    if let Some(root) = &spec.save_checkpoints {
                        model.save(&root.join(format!("k{shots_text}-seed{seed}")))?;
                    }
                    (Arc::new(model), report)
                }
            };
            on_event(&format!(
                "K={shots_text} seed={seed}: trained {} steps in {:.0}s; evaluating",
                train_report.steps, train_report.seconds
            ));
            // Without training the model is the base one: the paper's rule is the zero-shot rule.
            let tlc = if spec.train_encoder || spec.checkpoint.is_some() {
                Some(tlc_rankings(&model, &data.cities, &test_refs)?)
            } else {
                None
            };
            let store = EvalStore::build(model, &data.cities, &support, spec.engine.clone())?;
            let engine: Vec<Vec<usize>> = store
                .answers(&test_refs)?
                .iter()
                .map(|a| store.ranking(a))
                .collect();
            let engine = to_predictions(&test, engine, &data.cities);
            let authors = author_report(
                &store,
                &test,
                &test_refs,
                &engine,
                &data.cities,
                spec.author_rule,
            )?;
            let mut predictions: BTreeMap<String, Vec<Prediction>> = BTreeMap::new();
            predictions.insert(METHODS[0].to_string(), zero_shot_predictions.clone());
            predictions.insert(METHODS[1].to_string(), centroid);
            predictions.insert(
                METHODS[2].to_string(),
                match tlc {
                    Some(tlc) => to_predictions(&test, tlc, &data.cities),
                    None => zero_shot_predictions.clone(),
                },
            );
            predictions.insert(METHODS[3].to_string(), engine);
            // The same engine, told each post's profile location where the post has one (not the
            // method's own text-only setting; the slice of posts with a profile shows what it adds).
            let with_profile: Vec<PostQuery> = test
                .iter()
                .zip(&test_refs)
                .map(|(post, &text)| PostQuery {
                    text,
                    profile: post.post.user_location.as_deref(),
                })
                .collect();
            if with_profile.iter().any(|p| p.profile.is_some()) {
                let ranked: Vec<Vec<usize>> = store
                    .answers_posts(&with_profile)?
                    .iter()
                    .map(|a| store.ranking(a))
                    .collect();
                predictions.insert(
                    METHODS[4].to_string(),
                    to_predictions(&test, ranked, &data.cities),
                );
            }
            let mut methods = BTreeMap::new();
            let mut slices = BTreeMap::new();
            for (name, predicted) in &predictions {
                if name != METHODS[0] {
                    methods.insert(name.clone(), MethodReport::of(predicted, &data.cities));
                }
                if !held.is_empty() {
                    let (out, kept): (Vec<Prediction>, Vec<Prediction>) = predicted
                        .iter()
                        .cloned()
                        .partition(|p| held.contains(&p.truth));
                    slices.insert(
                        format!("{name} / held-out cities"),
                        MethodReport::of(&out, &data.cities),
                    );
                    slices.insert(
                        format!("{name} / trained cities"),
                        MethodReport::of(&kept, &data.cities),
                    );
                }
            }
            on_event(&format!(
                "K={shots_text} seed={seed}: {}",
                one_line(&methods)
            ));
            if let Some(a) = &authors {
                on_event(&format!(
                    "K={shots_text} seed={seed}: authors with >= {MANY_POSTS} posts ({}): Acc@1 {:.3} Acc@161km {:.3} (their posts one by one: {:.3} / {:.3})",
                    a.authors_with_many_posts.n,
                    a.authors_with_many_posts.acc1,
                    a.authors_with_many_posts.acc161,
                    a.their_posts.acc1,
                    a.their_posts.acc161
                ));
            }
            runs.push(RunReport {
                seed,
                train: train_report,
                methods,
                authors,
                slices,
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
        let per_seed: Vec<AuthorReport> = runs.iter().filter_map(|r| r.authors.clone()).collect();
        let mut slices = BTreeMap::new();
        if let Some(first) = runs.first() {
            for name in first.slices.keys() {
                let per_seed: Vec<MethodReport> = runs
                    .iter()
                    .filter_map(|r| r.slices.get(name).cloned())
                    .collect();
                if let Some(mean) = MethodReport::mean(&per_seed) {
                    slices.insert(name.clone(), mean);
                }
            }
        }
        results.push(ShotReport {
            shots,
            methods,
            authors: AuthorReport::mean(&per_seed),
            slices,
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
        md.push_str(&format!("### K = {}\n\n", shots_label(shot.shots)));
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
        if let Some(a) = &shot.authors {
            md.push_str(&format!(
                "\nAuthors (engine, rule `{}`): one answer per test author from all of their test posts.\n\n",
                serde_json::to_value(report.spec.author_rule)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ));
            md.push_str("| slice | n | Acc@1 | Acc@161km | median km |\n|---|---|---|---|---|\n");
            for (name, m) in [
                ("all test authors".to_string(), &a.authors),
                (
                    format!("authors with >= {MANY_POSTS} posts"),
                    &a.authors_with_many_posts,
                ),
                ("their posts, one by one".to_string(), &a.their_posts),
                (
                    format!("authors with >= {MANY_POSTS} posts, with profile location"),
                    &a.with_profile,
                ),
            ] {
                md.push_str(&format!(
                    "| {name} | {} | {:.3} | {:.3} | {:.0} |\n",
                    m.n, m.acc1, m.acc161, m.median_km
                ));
            }
        }
        if !shot.slices.is_empty() {
            md.push_str(&format!(
                "\nCities held out of training ({}), against the cities trained on:\n\n",
                report.spec.hold_out_cities
            ));
            md.push_str("| rule / cities | posts | Acc@1 | Acc@161km | macro Acc@1 | unnamed Acc@1 |\n|---|---|---|---|---|---|\n");
            for name in METHODS {
                for part in ["held-out cities", "trained cities"] {
                    if let Some(r) = shot.slices.get(&format!("{name} / {part}")) {
                        md.push_str(&format!(
                            "| {name} / {part} | {} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
                            r.overall.n,
                            r.overall.acc1,
                            r.overall.acc161,
                            r.macro_avg.acc1,
                            r.unnamed.acc1
                        ));
                    }
                }
            }
        }
        for name in &METHODS[3..] {
            if let Some(r) = shot.methods.get(*name).filter(|r| r.with_profile.n > 0) {
                md.push_str(&format!(
                    "\nPosts with a profile location ({} posts), {name}: Acc@1 {:.3}, Acc@161km {:.3}, median km {:.0}.\n",
                    r.with_profile.n, r.with_profile.acc1, r.with_profile.acc161, r.with_profile.median_km
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::LabelledPost;
    use crate::geo::{City, CityTable};

    fn table(n: u64) -> CityTable {
        CityTable::new(
            (1..=n)
                .map(|id| City {
                    id,
                    name: format!("c{id}"),
                    admin1: None,
                    country: "X".into(),
                    country_code: "XX".into(),
                    lat: 0.0,
                    lon: 0.0,
                    population: 0,
                    alternate_names: Vec::new(),
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn held_out_cities_are_spread_and_dropped_from_training_with_posts_rebound() {
        let cities = table(6);
        assert_eq!(held_out_cities(&cities, 2), vec![2, 5]);
        assert_eq!(held_out_cities(&cities, 0), Vec::<usize>::new());
        assert_eq!(held_out_cities(&cities, 9).len(), 6, "at most every city");
        let post = |city| CityPost {
            post: serde_json::from_value::<LabelledPost>(
                serde_json::json!({"text": format!("in {city}")}),
            )
            .unwrap(),
            city,
        };
        let (sub, posts) =
            without_held_out(&cities, &[post(0), post(2), post(3), post(5)], &[2, 5]);
        let ids: Vec<u64> = sub.cities().iter().map(|c| c.id).collect();
        assert_eq!(ids, [1, 2, 4, 5]);
        // Posts of held-out cities are gone; the others point at their city in the smaller table.
        let bound: Vec<(String, u64)> = posts
            .iter()
            .map(|p| (p.post.text.clone(), sub.cities()[p.city].id))
            .collect();
        assert_eq!(bound, [("in 0".to_string(), 1), ("in 3".to_string(), 4)]);
    }
}
