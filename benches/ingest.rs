//! Adding a city to a live store, measured on the real benchmark posts in `../shared/data` (read in place,
//! never copied; `$CONTRASTGEO_BENCHMARK_DATA` names another directory). Issue #8, "measured on real posts".
//!
//! 1. Six of the 60 cities are held out: the cities are sorted by post count into six bands of ten, and a
//!    seeded draw picks one city of each band (big and small ones alike). A K = 5 model is trained from the
//!    base checkpoint on the other 54 cities (5 support posts each, drawn by the eval protocol's K-shot
//!    sampler with seed 0, default [`TrainConfig`]), and a [`LiveStore`] is created with those 54 cities and
//!    their support posts. Accuracy is measured before the ingest.
//! 2. The six cities are ingested one at a time through [`LiveStore::ingest`], each with its 5 support posts
//!    (the same draw): ingest-to-searchable latency per city (`IngestReport::searchable_after_s`), then
//!    accuracy (a) right after the ingest.
//! 3. [`LiveStore::retrain`] (default options, one training thread) while a second thread sends single-post
//!    [`Engine::locate`] calls in a loop: query latency p50/p99 and failures during the retrain and rebuild,
//!    its wall time and the gate's verdict; then accuracy (b).
//! 4. (c) A K = 5 model trained on all 60 cities from the base checkpoint (same seed), indexed with all 60
//!    cities' support posts: accuracy on the same test posts.
//! 5. A store of the 54 cities holding 100,000 support vectors, with the base model (ingest costs the same
//!    whatever the training): their K-shot posts, [`BIG_STORE_REAL_POSTS`] other benchmark posts of those
//!    cities encoded once, and jittered copies of those embeddings (Gaussian noise, re-normalised, each
//!    pointing at its original's stored post) up to 100,000; then the six held-out cities ingested one at a
//!    time with 5 posts each: searchable-after latency, median of the six.
//!
//! Accuracy is Acc@1 and Acc@161km ([`Metrics`]) of the engine's answers on the split's `test` posts, at most
//! [`TEST_PER_CITY`] per city (the first ones in split order, as `eval --max-test-per-city` takes them),
//! reported separately for the six held-out cities and the 54 others.
//!
//! ```text
//! cargo bench --bench ingest                                # full run, about half an hour on 2 cores
//! CONTRASTGEO_BENCH_QUICK=1 cargo bench --bench ingest      # quick check: tiny training, small store
//! ```
//!
//! `CONTRASTGEO_INGEST_BENCH_PARTS=live` (stages 1 to 3), `all60` (stage 4) or `big` (stage 5), or a
//! comma-separated list, runs only those parts; each process writes `part-*.json` and the merge of all part
//! files present is `report.json` / `report.md`, so parts can run as separate processes.
//!
//! For diagnostics, `CONTRASTGEO_INGEST_BENCH_GATE_MARGIN` overrides the retrain gate's margin (1.0 lets any
//! retrain go live) and `CONTRASTGEO_INGEST_BENCH_OUT` names another report directory.
//!
//! Without `--bench` on its command line (e.g. `cargo test --benches`) it runs the quick sizes. Progress goes
//! to stderr; the Markdown table to stdout; the JSON report to `reports/ingest/report.json` (quick runs:
//! `target/ingest-bench-quick/`), rewritten after every stage.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use candle_core::Device;
use contrastgeo::data::names_city;
use contrastgeo::data::split::{sample_k_shot, test_posts};
use contrastgeo::data::{CityPost, DEFAULT_ASSIGN_RADIUS_KM};
use contrastgeo::engine::snapshot::SupportVector;
use contrastgeo::engine::{Engine, EngineConfig, LiveStore, RetrainOptions, RetrainProgress};
use contrastgeo::eval::benchmark::BenchmarkData;
use contrastgeo::eval::{Metrics, Prediction};
use contrastgeo::geo::{City, CityId, CityTable};
use contrastgeo::model::{GeoModel, GeoModelConfig, ModelFiles};
use contrastgeo::train::{train, TrainConfig};
use contrastgeo_index::synthetic::Rng;
use contrastgeo_index::{PostLabel, SupportPost, VectorKind, VectorMeta};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Setting this environment variable to `1` shrinks every size, to check the bench quickly.
const QUICK_ENV: &str = "CONTRASTGEO_BENCH_QUICK";
/// Support posts per city (K).
const SHOTS: usize = 5;
/// Seed of the K-shot draw and of training, as in the eval protocol.
const SEED: u64 = 0;
/// Cities held out of the first store and ingested later.
const HELD_OUT: usize = 6;
/// Seed of the held-out draw.
const HELD_OUT_SEED: u64 = 8;
/// Test posts per city evaluated (full run).
const TEST_PER_CITY: usize = 100;
/// Posts per [`Engine::locate`] call when evaluating.
const EVAL_CHUNK: usize = 256;
/// Support vectors of the big store (full run).
const BIG_STORE_SUPPORTS: usize = 100_000;
/// Benchmark posts encoded for the big store (full run); the rest of it are jittered repeats.
const BIG_STORE_REAL_POSTS: usize = 8_000;
/// Per-component standard deviation of the jitter of repeated embeddings (cosine ~0.93 to the original).
const REPEAT_NOISE: f32 = 0.02;
/// Posts encoded, or vectors inserted, per round while filling the big store.
const FILL_CHUNK: usize = 1024;
/// Target of issue #8: a new city searchable within this many seconds of the acknowledgement.
const TARGET_SEARCHABLE_S: f64 = 1.0;
/// Target: after the retrain, held-out cities' Acc@1 at most this far below a model trained on all 60.
const TARGET_HELD_OUT_GAP: f64 = 0.05;
/// Target: after the retrain, the other cities' Acc@1 at most this far below their Acc@1 before the ingest.
const TARGET_OTHER_DROP: f64 = 0.01;
/// Target: single-post query p99 during the retrain and rebuild, seconds.
const TARGET_QUERY_P99_S: f64 = 1.0;

/// How big the run is.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sizes {
    quick: bool,
    /// Test posts per city evaluated.
    test_per_city: usize,
    /// Support vectors of the big store.
    big_store_supports: usize,
    /// Real posts encoded for the big store (at most).
    big_store_real_posts: usize,
    /// Training settings of both models and of the retrain (seed [`SEED`]).
    #[serde(skip)]
    train: TrainConfig,
    /// The same, as recorded.
    train_settings: Value,
    /// The retrain gate's margin (`$CONTRASTGEO_INGEST_BENCH_GATE_MARGIN`, else the default).
    gate_margin: f64,
}

impl Sizes {
    fn from_env() -> Self {
        let quick = std::env::var(QUICK_ENV).is_ok_and(|v| v == "1")
            || !std::env::args().any(|a| a == "--bench");
        let train = TrainConfig {
            seed: SEED,
            ..TrainConfig::default()
        };
        let (test_per_city, big_store_supports, big_store_real_posts, train) = if quick {
            let train = TrainConfig {
                epochs: 1,
                min_steps: 1,
                batch_size: 128,
                ..train
            };
            (3, 3_000, 500, train)
        } else {
            (
                TEST_PER_CITY,
                BIG_STORE_SUPPORTS,
                BIG_STORE_REAL_POSTS,
                train,
            )
        };
        let gate_margin = std::env::var(GATE_MARGIN_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(RetrainOptions::default().gate_margin);
        Self {
            quick,
            gate_margin,
            test_per_city,
            big_store_supports,
            big_store_real_posts,
            train_settings: serde_json::to_value(&train).unwrap_or_default(),
            train,
        }
    }
}

/// Acc@1 and Acc@161km of one state of the store, on the held-out cities' and the other cities' test posts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Accuracy {
    /// The six held-out cities.
    held_out: Metrics,
    /// The 54 others.
    other: Metrics,
    /// Seconds the evaluation took.
    seconds: f64,
}

/// The ingest of the held-out cities, one city per call.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IngestFigures {
    /// Support vectors in the store before the first ingest.
    supports_before: usize,
    /// Per city: the ingest's report and the whole `ingest` call's wall time.
    ingests: Vec<IngestTiming>,
    /// Median of `searchable_after_s` over the cities.
    searchable_median_s: f64,
    /// Largest `searchable_after_s`.
    searchable_max_s: f64,
}

/// One ingest call.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IngestTiming {
    /// The city ingested.
    city: String,
    /// Seconds from the acknowledgement to the labels being searchable (`IngestReport`).
    searchable_after_s: f64,
    /// What `LiveStore::ingest` reported.
    report: Value,
    /// Wall time of the whole call (log append and fsync included).
    call_s: f64,
    /// Whether its first support post, located right after, is answered with the new city.
    first_post_answered: bool,
}

/// The retrain with queries running.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RetrainFigures {
    /// What `LiveStore::retrain` reported (`RetrainReport`).
    report: Value,
    /// Seconds of training.
    train_s: f64,
    /// Seconds of building the new index.
    index_s: f64,
    /// Held-out posts the gate judged on.
    gate_held_out: usize,
    /// The gate's Acc@1 of the live generation.
    gate_live_acc: f64,
    /// The gate's Acc@1 of the new generation.
    gate_new_acc: f64,
    /// Whether the gate passed.
    gate_passed: bool,
    /// Whether the new generation went live.
    swapped: bool,
    /// Wall time of the retrain call (training, rebuild, gate, swap).
    wall_s: f64,
    /// Single-post queries answered while it ran.
    queries: usize,
    /// Queries that returned an error.
    failed: usize,
    /// The first error, if any.
    first_error: Option<String>,
    /// Query latency percentiles, milliseconds.
    p50_ms: f64,
    /// See `p50_ms`.
    p99_ms: f64,
    /// See `p50_ms`.
    max_ms: f64,
}

/// What the big store held and how fast new cities became searchable in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BigStoreFigures {
    /// Cities in the store before the ingests.
    cities: usize,
    /// Support vectors in the store before the ingests.
    supports: usize,
    /// Of which: the 54 cities' K-shot support posts.
    k_shot_supports: usize,
    /// Of which: benchmark posts of the 54 cities, each encoded once.
    real_posts: usize,
    /// Of which: jittered copies of those embeddings (pointing at the same stored post).
    repeats: usize,
    /// Seconds to encode and insert everything.
    fill_s: f64,
    /// The six ingests.
    ingest: IngestFigures,
}

/// One target of the issue and whether it was met.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TargetCheck {
    /// What is measured.
    figure: String,
    /// The figure.
    value: String,
    /// The target.
    target: String,
    /// Whether it is met.
    met: bool,
}

/// The whole report, written after every stage.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct Report {
    sizes: Option<Sizes>,
    data_dir: PathBuf,
    held_out_cities: Vec<String>,
    test_posts_held_out: usize,
    test_posts_other: usize,
    train_54: Option<Value>,
    before_ingest: Option<Accuracy>,
    ingest: Option<IngestFigures>,
    after_ingest: Option<Accuracy>,
    retrain: Option<RetrainFigures>,
    after_retrain: Option<Accuracy>,
    train_60: Option<Value>,
    trained_on_60: Option<Accuracy>,
    big_store: Option<BigStoreFigures>,
    targets: Vec<TargetCheck>,
}

/// The benchmark, the held-out split of its cities and the test posts to evaluate on.
struct Fixture {
    data: BenchmarkData,
    /// Table positions of the held-out cities.
    held_out: HashSet<usize>,
    /// The 54 other cities.
    kept_cities: Vec<City>,
    /// K-shot support posts of all 60 cities (table positions of the 60-city table).
    support: Vec<CityPost>,
    /// Test posts (capped per city), with their rendered text.
    test: Vec<(CityPost, String)>,
}

impl Fixture {
    fn load(dir: &Path, sizes: &Sizes) -> anyhow::Result<Self> {
        let data = BenchmarkData::load(dir, DEFAULT_ASSIGN_RADIUS_KM)
            .with_context(|| format!("loading the benchmark in {}", dir.display()))?;
        ensure!(
            data.cities.len() >= HELD_OUT * 2,
            "only {} cities",
            data.cities.len()
        );
        let held_out = held_out_cities(&data);
        let kept_cities = data
            .cities
            .cities()
            .iter()
            .enumerate()
            .filter(|(i, _)| !held_out.contains(i))
            .map(|(_, c)| c.clone())
            .collect();
        let support = sample_k_shot(&data.split, &data.posts, SHOTS, SEED);
        let mut seen = vec![0usize; data.cities.len()];
        let test = test_posts(&data.split, &data.posts)
            .into_iter()
            .filter(|p| !p.post.text.trim().is_empty())
            .filter(|p| {
                seen[p.city] += 1;
                seen[p.city] <= sizes.test_per_city
            })
            .map(|p| {
                let text = GeoModelConfig::default().post_input.render(&p.post);
                (p, text)
            })
            .collect();
        Ok(Self {
            data,
            held_out,
            kept_cities,
            support,
            test,
        })
    }

    fn city(&self, position: usize) -> &City {
        &self.data.cities.cities()[position]
    }

    /// The K-shot support posts of `cities` (table positions) as store records.
    fn support_posts(&self, keep: impl Fn(usize) -> bool) -> Vec<SupportPost> {
        self.support
            .iter()
            .filter(|p| keep(p.city))
            .map(|p| SupportPost {
                text: p.post.text.clone(),
                city: self.city(p.city).id,
                source: "posts.jsonl".into(),
            })
            .collect()
    }

    /// The K-shot support posts of `cities` for the trainer, bound to positions in `table`.
    fn training_posts(&self, table: &CityTable) -> Vec<CityPost> {
        self.support
            .iter()
            .filter_map(|p| {
                Some(CityPost {
                    city: table.position(self.city(p.city).id)?,
                    post: p.post.clone(),
                })
            })
            .collect()
    }

    fn held_out_positions(&self) -> Vec<usize> {
        let mut positions: Vec<usize> = self.held_out.iter().copied().collect();
        positions.sort_unstable();
        positions
    }
}

/// One city from each of six bands of cities sorted by post count, drawn with [`HELD_OUT_SEED`].
fn held_out_cities(data: &BenchmarkData) -> HashSet<usize> {
    let mut counts = vec![0usize; data.cities.len()];
    for post in &data.posts {
        counts[post.city] += 1;
    }
    let mut by_size: Vec<usize> = (0..data.cities.len()).collect();
    by_size.sort_by_key(|&i| (std::cmp::Reverse(counts[i]), data.cities.cities()[i].id));
    let band = by_size.len() / HELD_OUT;
    let mut rng = Rng::new(HELD_OUT_SEED);
    (0..HELD_OUT)
        .map(|b| by_size[b * band + rng.below(band)])
        .collect()
}

/// Acc@1 / Acc@161km of `engine` on the test posts, split into held-out and other cities.
fn evaluate(engine: &Engine, fixture: &Fixture) -> anyhow::Result<Accuracy> {
    let started = Instant::now();
    let table = &fixture.data.cities;
    let texts: Vec<&str> = fixture.test.iter().map(|(_, t)| t.as_str()).collect();
    let mut predictions = Vec::with_capacity(texts.len());
    for (chunk, posts) in texts
        .chunks(EVAL_CHUNK)
        .zip(fixture.test.chunks(EVAL_CHUNK))
    {
        for (answer, (post, text)) in engine.locate(chunk)?.into_iter().zip(posts) {
            let ranked: Vec<usize> = answer
                .top_k
                .iter()
                .filter_map(|c| table.position(c.city_id))
                .collect();
            ensure!(
                ranked.first() == table.position(answer.city_id).as_ref(),
                "answer {} is not the head of its shortlist",
                answer.name
            );
            let city = fixture.city(post.city);
            predictions.push(Prediction {
                truth: post.city,
                ranked,
                lat: post.post.lat.unwrap_or(city.lat),
                lon: post.post.lon.unwrap_or(city.lon),
                names_city: names_city(text, city),
                has_profile: false,
            });
        }
    }
    let (held_out, other): (Vec<&Prediction>, Vec<&Prediction>) = predictions
        .iter()
        .partition(|p| fixture.held_out.contains(&p.truth));
    Ok(Accuracy {
        held_out: Metrics::of(&held_out, table),
        other: Metrics::of(&other, table),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn log_accuracy(stage: &str, a: &Accuracy) {
    eprintln!(
        "ingest-bench: {stage}: held-out Acc@1 {:.3} Acc@161km {:.3} (n {}); other Acc@1 {:.3} \
         Acc@161km {:.3} (n {}); {:.0}s",
        a.held_out.acc1,
        a.held_out.acc161,
        a.held_out.n,
        a.other.acc1,
        a.other.acc161,
        a.other.n,
        a.seconds
    );
}

/// A fresh model from the base checkpoint, trained on the K-shot posts of `table`'s cities.
fn train_model(
    fixture: &Fixture,
    table: &CityTable,
    sizes: &Sizes,
) -> anyhow::Result<(GeoModel, Value)> {
    let files = ModelFiles::resolve(None).context("the base model (run tools/setup.sh)")?;
    let mut model = GeoModel::from_base(&files, GeoModelConfig::default(), &Device::Cpu)?;
    if sizes.quick {
        // The quick check exercises the store, not the trainer: the base model, untrained.
        return Ok((model, Value::Null));
    }
    let posts = fixture.training_posts(table);
    let report = train(&mut model, table, &posts, &sizes.train, &mut |s| {
        if s.step % 10 == 0 || s.step == s.steps {
            eprintln!(
                "ingest-bench:   step {}/{} loss {:.3}",
                s.step, s.steps, s.loss
            );
        }
    })?;
    eprintln!(
        "ingest-bench: trained on {} posts of {} cities: {} steps in {:.0}s",
        posts.len(),
        table.len(),
        report.steps,
        report.seconds
    );
    Ok((model, serde_json::to_value(&report)?))
}

/// Ingests each held-out city with its K-shot posts, one `ingest` call per city.
fn ingest_held_out(store: &LiveStore, fixture: &Fixture) -> anyhow::Result<IngestFigures> {
    let supports_before = store.engine().snapshot().cities().support_count();
    let mut ingests = Vec::new();
    for position in fixture.held_out_positions() {
        let city = fixture.city(position).clone();
        let posts: Vec<PostLabel> = fixture
            .support_posts(|c| c == position)
            .into_iter()
            .map(|p| PostLabel {
                text: p.text,
                city: p.city,
                source: "ingest-bench".into(),
                added_at: 0,
            })
            .collect();
        let started = Instant::now();
        let report = store.ingest(std::slice::from_ref(&city), &posts)?;
        let call_s = started.elapsed().as_secs_f64();
        let first_post_answered = match posts.first() {
            Some(p) => store.engine().locate(&[p.text.as_str()])?[0].city_id == city.id,
            None => false,
        };
        eprintln!(
            "ingest-bench: ingested {} ({} posts): searchable after {:.3}s, call {:.3}s",
            city.name, report.posts_added, report.searchable_after_s, call_s
        );
        ingests.push(IngestTiming {
            city: city.name.clone(),
            searchable_after_s: report.searchable_after_s,
            report: serde_json::to_value(&report)?,
            call_s,
            first_post_answered,
        });
    }
    let mut times: Vec<f64> = ingests.iter().map(|i| i.searchable_after_s).collect();
    times.sort_by(f64::total_cmp);
    Ok(IngestFigures {
        supports_before,
        searchable_median_s: median(&times),
        searchable_max_s: times.last().copied().unwrap_or(0.0),
        ingests,
    })
}

/// Median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile of sorted durations, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

/// Retrains the store while a second thread locates single posts in a loop.
fn retrain_under_load(
    store: &LiveStore,
    fixture: &Fixture,
    sizes: &Sizes,
) -> anyhow::Result<RetrainFigures> {
    let options = RetrainOptions {
        train: sizes.train.clone(),
        threads: 1,
        gate_margin: sizes.gate_margin,
    };
    let engine = store.shared_engine();
    let queries: Vec<&str> = fixture.test.iter().map(|(_, t)| t.as_str()).collect();
    let stop = AtomicBool::new(false);
    let last_step = std::sync::atomic::AtomicUsize::new(0);
    let progress = |p: RetrainProgress| match p {
        RetrainProgress::Training { step, steps, loss } => {
            if step % 10 == 0 && last_step.swap(step, Ordering::Relaxed) != step {
                eprintln!("ingest-bench:   retrain step {step}/{steps} loss {loss:.3}");
            }
        }
        RetrainProgress::Indexing { .. } => {}
        other => eprintln!("ingest-bench:   retrain: {other:?}"),
    };
    let (result, wall_s, (mut times, failed, first_error)) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let (mut times, mut failed, mut first_error) = (Vec::new(), 0usize, None);
            let mut next = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let text = queries[next % queries.len()];
                next += 1;
                let started = Instant::now();
                match engine.locate(&[text]) {
                    Ok(_) => times.push(started.elapsed()),
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (times, failed, first_error)
        });
        let started = Instant::now();
        let result = store.retrain(&options, &progress);
        let wall_s = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let load = load.join().unwrap_or_else(|_| {
            (
                Vec::new(),
                usize::MAX,
                Some("the query thread panicked".into()),
            )
        });
        (result, wall_s, load)
    });
    let report = result?;
    times.sort();
    let figures = RetrainFigures {
        wall_s,
        queries: times.len() + failed,
        failed,
        first_error,
        p50_ms: percentile_ms(&times, 0.50),
        p99_ms: percentile_ms(&times, 0.99),
        max_ms: percentile_ms(&times, 1.0),
        train_s: report.train_s,
        index_s: report.index_s,
        gate_held_out: report.gate.held_out,
        gate_live_acc: report.gate.live_acc,
        gate_new_acc: report.gate.new_acc,
        gate_passed: report.gate.passed,
        swapped: report.swapped,
        report: serde_json::to_value(&report)?,
    };
    eprintln!(
        "ingest-bench: retrain {:.0}s (train {:.0}s, index {:.0}s), gate {} ({:.3} vs live {:.3} on {}), \
         swapped {}; {} queries meanwhile, {} failed, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        figures.wall_s,
        figures.train_s,
        figures.index_s,
        if figures.gate_passed { "passed" } else { "failed" },
        figures.gate_new_acc,
        figures.gate_live_acc,
        figures.gate_held_out,
        figures.swapped,
        figures.queries,
        figures.failed,
        figures.p50_ms,
        figures.p99_ms,
        figures.max_ms
    );
    Ok(figures)
}

/// A 54-city store filled to `sizes.big_store_supports` support vectors, then the six held-out ingests.
fn big_store(
    dir: &Path,
    model: &GeoModel,
    fixture: &Fixture,
    sizes: &Sizes,
) -> anyhow::Result<BigStoreFigures> {
    let config = EngineConfig::default();
    let k_shot = fixture.support_posts(|c| !fixture.held_out.contains(&c));
    LiveStore::create(dir, model, &fixture.kept_cities, &k_shot, &config, &|_| {})?;
    let store = LiveStore::open(dir, &Device::Cpu, config)?;
    let snapshot = store.engine().snapshot();
    let index = snapshot.index();
    let started = Instant::now();

    // Every benchmark post of the 54 cities, encoded once, stored as a support post.
    let target = sizes.big_store_supports.saturating_sub(k_shot.len());
    let real: Vec<SupportPost> = fixture
        .data
        .posts
        .iter()
        .filter(|p| !fixture.held_out.contains(&p.city) && !p.post.text.trim().is_empty())
        .take(sizes.big_store_real_posts.min(target))
        .map(|p| SupportPost {
            text: p.post.text.clone(),
            city: fixture.city(p.city).id,
            source: "posts.jsonl (bulk fill)".into(),
        })
        .collect();
    let mut additions: Vec<(CityId, SupportVector)> = Vec::with_capacity(target);
    for chunk in real.chunks(FILL_CHUNK) {
        let ids = index.store().add_support_posts(chunk)?;
        let texts: Vec<&str> = chunk.iter().map(|p| p.text.as_str()).collect();
        let vectors = snapshot.model().post_encoder().embed(&texts)?;
        let rows: Vec<(VectorMeta, Vec<f32>)> = chunk
            .iter()
            .zip(&ids)
            .zip(&vectors)
            .map(|((post, id), v)| (support_meta(post.city, *id), v.clone()))
            .collect();
        index.insert(&rows)?;
        additions.extend(
            chunk
                .iter()
                .zip(ids)
                .zip(vectors)
                .map(|((post, post_id), vector)| {
                    (
                        post.city,
                        SupportVector {
                            post: post_id,
                            vector,
                        },
                    )
                }),
        );
        eprintln!(
            "ingest-bench:   big store: {} real posts encoded and inserted ({:.0}s)",
            additions.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let real_posts = additions.len();
    ensure!(real_posts > 0, "no real posts to fill the big store with");

    // Jittered copies of those embeddings up to the target.
    let mut rng = Rng::new(SEED);
    while additions.len() < target {
        let n = (target - additions.len()).min(FILL_CHUNK * 10);
        let copies: Vec<(CityId, SupportVector)> = (0..n)
            .map(|_| {
                let (city, original) = &additions[rng.below(real_posts)];
                let jittered: Vec<f32> = original
                    .vector
                    .iter()
                    .map(|x| x + REPEAT_NOISE * rng.gaussian())
                    .collect();
                let norm = jittered.iter().map(|x| x * x).sum::<f32>().sqrt();
                let vector = jittered.into_iter().map(|x| x / norm).collect();
                (
                    *city,
                    SupportVector {
                        post: original.post,
                        vector,
                    },
                )
            })
            .collect();
        let rows: Vec<(VectorMeta, Vec<f32>)> = copies
            .iter()
            .map(|(city, s)| (support_meta(*city, s.post), s.vector.clone()))
            .collect();
        index.insert(&rows)?;
        additions.extend(copies);
        eprintln!(
            "ingest-bench:   big store: {} support vectors ({:.0}s)",
            additions.len() + k_shot.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let repeats = additions.len() - real_posts;
    index.store().flush()?;
    snapshot.set_cities(snapshot.cities().with_additions(&[], Vec::new(), additions));
    let fill_s = started.elapsed().as_secs_f64();
    let cities = snapshot.cities().len();
    drop(snapshot);

    let ingest = ingest_held_out(&store, fixture)?;
    Ok(BigStoreFigures {
        cities,
        supports: ingest.supports_before,
        k_shot_supports: k_shot.len(),
        real_posts,
        repeats,
        fill_s,
        ingest,
    })
}

/// Writes `text` to a temporary file beside `path` and renames it into place.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn support_meta(city: CityId, post: contrastgeo_index::PostId) -> VectorMeta {
    VectorMeta {
        city,
        kind: VectorKind::Support,
        post: Some(post),
    }
}

/// The benchmark directory: `$CONTRASTGEO_BENCHMARK_DATA`, else `../shared/data` beside the checkout.
fn shared_data() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("CONTRASTGEO_BENCHMARK_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    ensure!(
        dir.join("posts.jsonl").is_file(),
        "{}: no posts.jsonl; this benchmark reads the labelled benchmark: set CONTRASTGEO_BENCHMARK_DATA",
        dir.display()
    );
    Ok(dir)
}

impl Report {
    /// Writes this process's figures to `out/part-{parts}.json`, then merges every part file there into
    /// `out/report.json` and `out/report.md` (parts may run as separate processes).
    fn write(&self, out: &Path, parts: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        write_atomically(
            &out.join(format!("part-{parts}.json")),
            &serde_json::to_string_pretty(self)?,
        )?;
        let mut merged = Report::default();
        let mut names: Vec<PathBuf> = std::fs::read_dir(out)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("part-") && n.ends_with(".json"))
            })
            .collect();
        names.sort();
        for path in names {
            let text = std::fs::read_to_string(&path)?;
            let part: Report = serde_json::from_str(&text)
                .with_context(|| format!("reading {}", path.display()))?;
            merged.merge(part);
        }
        merged.check_targets();
        write_atomically(
            &out.join("report.json"),
            &serde_json::to_string_pretty(&merged)?,
        )?;
        write_atomically(&out.join("report.md"), &merged.markdown())?;
        Ok(())
    }

    /// Takes every figure of `other` that this report lacks.
    fn merge(&mut self, other: Report) {
        if self.sizes.is_none() {
            self.sizes = other.sizes;
            self.data_dir = other.data_dir;
            self.held_out_cities = other.held_out_cities;
            self.test_posts_held_out = other.test_posts_held_out;
            self.test_posts_other = other.test_posts_other;
        }
        self.train_54 = self.train_54.take().or(other.train_54);
        self.before_ingest = self.before_ingest.take().or(other.before_ingest);
        self.ingest = self.ingest.take().or(other.ingest);
        self.after_ingest = self.after_ingest.take().or(other.after_ingest);
        self.retrain = self.retrain.take().or(other.retrain);
        self.after_retrain = self.after_retrain.take().or(other.after_retrain);
        self.train_60 = self.train_60.take().or(other.train_60);
        self.trained_on_60 = self.trained_on_60.take().or(other.trained_on_60);
        self.big_store = self.big_store.take().or(other.big_store);
    }

    fn check_targets(&mut self) {
        let mut targets = Vec::new();
        if let Some(big) = &self.big_store {
            targets.push(TargetCheck {
                figure: format!(
                    "new city searchable after ingest, store of {} support vectors (median of {})",
                    big.supports,
                    big.ingest.ingests.len()
                ),
                value: format!("{:.3} s", big.ingest.searchable_median_s),
                target: format!("< {TARGET_SEARCHABLE_S} s"),
                met: big.ingest.searchable_median_s < TARGET_SEARCHABLE_S,
            });
        }
        if let (Some(b), Some(c)) = (&self.after_retrain, &self.trained_on_60) {
            let gap = c.held_out.acc1 - b.held_out.acc1;
            targets.push(TargetCheck {
                figure: "held-out cities' Acc@1 after retrain (b) vs trained on all 60 (c)".into(),
                value: format!(
                    "{:.3} vs {:.3} ({:+.1} points)",
                    b.held_out.acc1,
                    c.held_out.acc1,
                    -gap * 100.0
                ),
                target: format!("within {:.0} points", TARGET_HELD_OUT_GAP * 100.0),
                met: gap <= TARGET_HELD_OUT_GAP,
            });
        }
        if let (Some(before), Some(b)) = (&self.before_ingest, &self.after_retrain) {
            let drop = before.other.acc1 - b.other.acc1;
            targets.push(TargetCheck {
                figure: "other cities' Acc@1 after retrain vs before the ingest".into(),
                value: format!(
                    "{:.3} vs {:.3} ({:+.1} points)",
                    b.other.acc1,
                    before.other.acc1,
                    -drop * 100.0
                ),
                target: format!("at most {:.0} point below", TARGET_OTHER_DROP * 100.0),
                met: drop <= TARGET_OTHER_DROP,
            });
        }
        if let Some(r) = &self.retrain {
            targets.push(TargetCheck {
                figure: "single-post query p99 during retrain + rebuild".into(),
                value: format!("{:.0} ms over {} queries", r.p99_ms, r.queries),
                target: format!("< {:.0} ms", TARGET_QUERY_P99_S * 1e3),
                met: r.p99_ms < TARGET_QUERY_P99_S * 1e3,
            });
            targets.push(TargetCheck {
                figure: "failed queries during retrain + rebuild".into(),
                value: r.failed.to_string(),
                target: "0".into(),
                met: r.failed == 0,
            });
        }
        self.targets = targets;
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        md.push_str(&format!(
            "Held-out cities: {}. Test posts: at most {} per city, {} of the held-out cities and {} of \
             the other 54.\n\n",
            self.held_out_cities.join(", "),
            self.sizes.as_ref().map_or(0, |s| s.test_per_city),
            self.test_posts_held_out,
            self.test_posts_other
        ));
        md.push_str(
            "| store | held-out Acc@1 | held-out Acc@161km | other Acc@1 | other Acc@161km |\n",
        );
        md.push_str("|---|---|---|---|---|\n");
        let rows = [
            ("54 cities, before the ingest", &self.before_ingest),
            ("(a) after the ingest, before retrain", &self.after_ingest),
            ("(b) after the retrain", &self.after_retrain),
            ("(c) trained on all 60 from the start", &self.trained_on_60),
        ];
        for (name, accuracy) in rows {
            if let Some(a) = accuracy {
                md.push_str(&format!(
                    "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
                    a.held_out.acc1, a.held_out.acc161, a.other.acc1, a.other.acc161
                ));
            }
        }
        md.push_str("\n| figure | value |\n|---|---|\n");
        if let Some(i) = &self.ingest {
            md.push_str(&format!(
                "| new city searchable after ingest, 54-city store ({} support vectors), median / max of {} | \
                 {:.0} ms / {:.0} ms |\n",
                i.supports_before,
                i.ingests.len(),
                i.searchable_median_s * 1e3,
                i.searchable_max_s * 1e3
            ));
        }
        if let Some(b) = &self.big_store {
            md.push_str(&format!(
                "| new city searchable after ingest, store of {} support vectors, median / max of {} | \
                 {:.0} ms / {:.0} ms |\n",
                b.supports,
                b.ingest.ingests.len(),
                b.ingest.searchable_median_s * 1e3,
                b.ingest.searchable_max_s * 1e3
            ));
        }
        if let Some(r) = &self.retrain {
            md.push_str(&format!(
                "| retrain + rebuild wall time (training {:.0} s, index {:.0} s), one training thread | {:.0} s |\n",
                r.train_s, r.index_s, r.wall_s
            ));
            md.push_str(&format!(
                "| gate (held-out Acc@1 new vs live, {} posts) | {} ({:.3} vs {:.3}); swapped: {} |\n",
                r.gate_held_out,
                if r.gate_passed { "passed" } else { "failed" },
                r.gate_new_acc,
                r.gate_live_acc,
                r.swapped
            ));
            md.push_str(&format!(
                "| single-post queries during retrain + rebuild: p50 / p99 / max | {:.0} ms / {:.0} ms / {:.0} ms \
                 ({} queries, {} failed) |\n",
                r.p50_ms, r.p99_ms, r.max_ms, r.queries, r.failed
            ));
        }
        if !self.targets.is_empty() {
            md.push_str("\n| target | value | target | met |\n|---|---|---|---|\n");
            for t in &self.targets {
                md.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    t.figure,
                    t.value,
                    t.target,
                    if t.met { "yes" } else { "**no**" }
                ));
            }
        }
        md
    }
}

/// Environment variable naming the parts to run, comma-separated: `live` (stages 1 to 3), `all60` (stage 4),
/// `big` (stage 5); all of them when unset. Parts run as separate processes merge their figures.
const PARTS_ENV: &str = "CONTRASTGEO_INGEST_BENCH_PARTS";
/// Environment variable overriding the retrain gate's margin (a diagnostic: 1.0 lets any retrain go live).
const GATE_MARGIN_ENV: &str = "CONTRASTGEO_INGEST_BENCH_GATE_MARGIN";
/// Environment variable naming another report directory (for diagnostic runs beside the main report).
const OUT_ENV: &str = "CONTRASTGEO_INGEST_BENCH_OUT";
/// Every part, in the order they run.
const PARTS: [&str; 3] = ["live", "all60", "big"];

/// Stages 1 to 3: the 54-city store, the ingest of the six others, the retrain with queries running.
fn run_live(
    fixture: &Fixture,
    sizes: &Sizes,
    dir: &Path,
    report: &mut Report,
    save: &dyn Fn(&Report) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let config = EngineConfig::default();
    let kept = CityTable::new(fixture.kept_cities.clone())
        .map_err(|id| anyhow::anyhow!("duplicate city {id}"))?;
    let (model_54, train_54) = train_model(fixture, &kept, sizes)?;
    report.train_54 = Some(train_54);
    let support_54 = fixture.support_posts(|c| !fixture.held_out.contains(&c));
    LiveStore::create(
        dir,
        &model_54,
        &fixture.kept_cities,
        &support_54,
        &config,
        &|_| {},
    )?;
    drop(model_54);
    let store = LiveStore::open(dir, &Device::Cpu, config)?;
    let before = evaluate(store.engine(), fixture)?;
    log_accuracy("before the ingest", &before);
    report.before_ingest = Some(before);
    save(report)?;

    report.ingest = Some(ingest_held_out(&store, fixture)?);
    let after = evaluate(store.engine(), fixture)?;
    log_accuracy("(a) after the ingest", &after);
    report.after_ingest = Some(after);
    save(report)?;

    report.retrain = Some(retrain_under_load(&store, fixture, sizes)?);
    let after = evaluate(store.engine(), fixture)?;
    log_accuracy("(b) after the retrain", &after);
    report.after_retrain = Some(after);
    save(report)
}

/// Stage 4: (c) a model trained on all 60 cities from the start, indexed with all their support posts.
fn run_all60(
    fixture: &Fixture,
    sizes: &Sizes,
    dir: &Path,
    report: &mut Report,
    save: &dyn Fn(&Report) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let config = EngineConfig::default();
    let (model_60, train_60) = train_model(fixture, &fixture.data.cities, sizes)?;
    report.train_60 = Some(train_60);
    Engine::build_index(
        dir,
        &model_60,
        fixture.data.cities.cities(),
        &fixture.support_posts(|_| true),
        &config,
        &|_| {},
    )?;
    let engine_60 = Engine::open(dir, Arc::new(model_60), config)?;
    let all = evaluate(&engine_60, fixture)?;
    log_accuracy("(c) trained on all 60", &all);
    report.trained_on_60 = Some(all);
    save(report)
}

fn main() -> anyhow::Result<()> {
    let sizes = Sizes::from_env();
    let out = if let Some(dir) = std::env::var_os(OUT_ENV) {
        PathBuf::from(dir)
    } else if sizes.quick {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ingest-bench-quick")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/ingest")
    };
    let parts: Vec<String> = match std::env::var(PARTS_ENV) {
        Ok(list) => list.split(',').map(|p| p.trim().to_string()).collect(),
        Err(_) => PARTS.iter().map(|p| p.to_string()).collect(),
    };
    if let Some(unknown) = parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
        anyhow::bail!(
            "{PARTS_ENV}: unknown part {unknown:?} (known: {})",
            PARTS.join(", ")
        );
    }
    let runs = |part: &str| parts.iter().any(|p| p == part);
    let data_dir = shared_data()?;
    eprintln!(
        "ingest-bench: {} sizes, parts {}, {} threads, report in {}",
        if sizes.quick { "quick" } else { "full" },
        parts.join(","),
        rayon::current_num_threads(),
        out.display()
    );
    let fixture = Fixture::load(&data_dir, &sizes)?;
    let held_out_names: Vec<String> = fixture
        .held_out_positions()
        .into_iter()
        .map(|i| fixture.city(i).name.clone())
        .collect();
    let test_held_out = fixture
        .test
        .iter()
        .filter(|(p, _)| fixture.held_out.contains(&p.city))
        .count();
    eprintln!(
        "ingest-bench: held out {}; {} test posts ({} of held-out cities)",
        held_out_names.join(", "),
        fixture.test.len(),
        test_held_out
    );
    let mut report = Report {
        sizes: Some(sizes.clone()),
        data_dir: data_dir.clone(),
        held_out_cities: held_out_names,
        test_posts_held_out: test_held_out,
        test_posts_other: fixture.test.len() - test_held_out,
        ..Report::default()
    };
    let part_name = PARTS
        .iter()
        .filter(|p| runs(p))
        .copied()
        .collect::<Vec<_>>()
        .join("+");
    let save = |report: &Report| report.write(&out, &part_name);
    let tmp = tempfile::tempdir()?;

    if runs("live") {
        run_live(
            &fixture,
            &sizes,
            &tmp.path().join("store"),
            &mut report,
            &save,
        )?;
    }
    if runs("all60") {
        run_all60(
            &fixture,
            &sizes,
            &tmp.path().join("store-60"),
            &mut report,
            &save,
        )?;
    }
    if runs("big") {
        // The base model: ingest encodes with the post encoder and the prompt, whatever the training.
        let files = ModelFiles::resolve(None).context("the base model (run tools/setup.sh)")?;
        let model = GeoModel::from_base(&files, GeoModelConfig::default(), &Device::Cpu)?;
        report.big_store = Some(big_store(
            &tmp.path().join("big"),
            &model,
            &fixture,
            &sizes,
        )?);
        save(&report)?;
    }

    let merged: Report = serde_json::from_str(&std::fs::read_to_string(out.join("report.json"))?)?;
    println!("{}", merged.markdown());
    let met = merged.targets.iter().filter(|t| t.met).count();
    eprintln!(
        "ingest-bench: {met} of {} targets met so far; report in {}",
        merged.targets.len(),
        out.display()
    );
    Ok(())
}
