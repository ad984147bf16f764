//! Query-path benchmarks on the real benchmark data in `../shared/data` (read in place, never copied), with
//! the base model (zero-shot, untrained head: retrieval without TLM rerank) on the CPU.
//!
//! - `locate_one_post`: latency of [`Engine::locate`] for one post at a time, over 200 test posts, on a store
//!   built in a temporary directory from the 60 benchmark cities and 5 support posts per city. Criterion
//!   reports the median; the bench also prints p50 and p99 from its own loop (one timing per post).
//! - `bulk_1000_posts`: 1,000 test posts through [`Engine::locate`] in chunks of [`BULK_CHUNK`], against the
//!   same posts in the same chunks through [`TextEncoder::embed`] alone: posts/s of both, and the overhead
//!   ratio (locate time / embed time) that retrieval, scoring and evidence add to encoding.
//! - `index_100000_vectors`: 100k synthetic clustered unit vectors (the model's 384 dimensions) inserted
//!   through [`VectorIndex`] (sled + live graph) and dumped, timed once (a build takes about a minute and
//!   criterion wants at least 10 samples); then the reload, [`VectorIndex::open`] of the dumped store, timed
//!   by criterion and by the bench's own loop.
//!
//! Full run, on an idle machine (roughly ten minutes on 2 cores):
//!
//! ```text
//! cargo bench --bench engine
//! ```
//!
//! Quick check that everything works (50 queries, 100 posts, 5k vectors, short criterion runs); criterion's
//! `--test` mode (e.g. `cargo test --benches`) also uses the quick sizes:
//!
//! ```text
//! CONTRASTGEO_BENCH_QUICK=1 cargo bench --bench engine
//! ```
//!
//! The bench's own figures go to stderr on lines starting with `engine-bench:`.

use std::collections::{HashMap, HashSet};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use contrastgeo::data::{read_labelled_posts, split::Split, LabelledPost};
use contrastgeo::engine::{Engine, EngineConfig};
use contrastgeo::geo::CityTable;
use contrastgeo::model::{GeoModel, GeoModelConfig, ModelFiles, TextEncoder};
use contrastgeo_index::synthetic::{Clusters, Rng};
use contrastgeo_index::{IndexStatus, SupportPost, VectorIndex};
use criterion::{BenchmarkGroup, Criterion, Throughput};

/// Setting this environment variable to `1` shrinks every size, to check the bench quickly.
const QUICK_ENV: &str = "CONTRASTGEO_BENCH_QUICK";

/// Support posts per benchmark city in the query-path store.
const SUPPORTS_PER_CITY: usize = 5;

/// Posts per [`Engine::locate`] (and [`TextEncoder::embed`]) call in the bulk benchmark.
const BULK_CHUNK: usize = 256;

/// Dimension of the synthetic vectors: all-MiniLM-L6-v2's embedding size.
const DIMENSION: usize = 384;

/// Synthetic vectors per city (and per cluster) in the 100k index.
const VECTORS_PER_CITY: usize = 80;

/// Vectors per [`VectorIndex::insert`] while building the 100k index.
const INSERT_BATCH: usize = 10_000;

/// How big each benchmark is.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    quick: bool,
    /// Posts timed one at a time.
    queries: usize,
    /// Posts of the bulk comparison.
    bulk_posts: usize,
    /// Timed passes of the bulk comparison's own loop (the median is printed).
    bulk_repeats: usize,
    /// Vectors of the index build.
    vectors: usize,
    /// Timed reloads of the index benchmark's own loop.
    reloads: usize,
}

impl Sizes {
    fn from_env() -> Self {
        let quick = std::env::var(QUICK_ENV).is_ok_and(|v| v == "1")
            || std::env::args().any(|a| a == "--test");
        if quick {
            Self {
                quick,
                queries: 50,
                bulk_posts: 100,
                bulk_repeats: 1,
                vectors: 5_000,
                reloads: 3,
            }
        } else {
            Self {
                quick,
                queries: 200,
                bulk_posts: 1_000,
                bulk_repeats: 3,
                vectors: 100_000,
                reloads: 5,
            }
        }
    }

    /// Criterion settings for a group; `slow` when one iteration takes seconds at full size.
    fn configure(
        &self,
        group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
        slow: bool,
    ) {
        if self.quick {
            group
                .sample_size(10)
                .warm_up_time(Duration::from_millis(200))
                .measurement_time(Duration::from_secs(1));
        } else if slow {
            group
                .sample_size(10)
                .warm_up_time(Duration::from_secs(3))
                .measurement_time(Duration::from_secs(60));
        } else {
            group
                .sample_size(100)
                .warm_up_time(Duration::from_secs(3))
                .measurement_time(Duration::from_secs(20));
        }
    }
}

/// The benchmark directory: `$CONTRASTGEO_BENCHMARK_DATA`, else `../shared/data` beside the checkout.
fn shared_data() -> PathBuf {
    let dir = std::env::var_os("CONTRASTGEO_BENCHMARK_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    assert!(
        dir.join("posts.jsonl").is_file(),
        "{}: no posts.jsonl; this benchmark reads the labelled benchmark: set CONTRASTGEO_BENCHMARK_DATA",
        dir.display()
    );
    dir
}

/// A store of the 60 benchmark cities with a few support posts each, opened by an engine, and held-out test
/// posts to query it with.
struct QueryFixture {
    engine: Engine,
    model: Arc<GeoModel>,
    /// Test posts for the latency benchmark.
    queries: Vec<String>,
    /// Test posts for the bulk benchmark.
    bulk: Vec<String>,
    /// Keeps the store until the fixture is dropped.
    _dir: tempfile::TempDir,
}

impl QueryFixture {
    fn new(sizes: &Sizes) -> Self {
        let data = shared_data();
        let cities = CityTable::read_jsonl(&data.join("cities.jsonl")).expect("cities.jsonl");
        let split = Split::read(&data.join("split.json")).expect("split.json");
        let posts = read_labelled_posts(&data.join("posts.jsonl"))
            .expect("posts.jsonl")
            .posts;
        let by_id: HashMap<&str, &LabelledPost> = posts
            .iter()
            .filter_map(|p| p.id.as_deref().map(|id| (id, p)))
            .collect();
        let support: Vec<SupportPost> = split
            .cities
            .iter()
            .flat_map(|(city, city_split)| {
                city_split
                    .support
                    .iter()
                    .filter_map(|id| by_id.get(id.as_str()))
                    .filter(|p| !p.text.trim().is_empty())
                    .take(SUPPORTS_PER_CITY)
                    .map(|p| SupportPost {
                        text: p.text.clone(),
                        city: *city,
                        source: "posts.jsonl".into(),
                    })
            })
            .collect();
        let test_ids: HashSet<&str> = split
            .cities
            .values()
            .flat_map(|s| s.test.iter().map(String::as_str))
            .collect();
        let test_posts: Vec<&str> = posts
            .iter()
            .filter(|p| p.id.as_deref().is_some_and(|id| test_ids.contains(id)))
            .map(|p| p.text.as_str())
            .filter(|t| !t.trim().is_empty())
            .collect();

        let model = Arc::new(
            GeoModel::from_base(
                &ModelFiles::resolve(None).unwrap_or_else(|e| panic!("{e}")),
                GeoModelConfig::default(),
                &Device::Cpu,
            )
            .expect("load the base model"),
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = dir.path().join("store");
        let config = EngineConfig::default();
        let report =
            Engine::build_index(&store, &model, cities.cities(), &support, &config, &|_| {})
                .expect("build the store");
        eprintln!(
            "engine-bench: store of {} cities + {} support posts built in {:.1}s; {} test posts available",
            report.cities,
            report.supports,
            report.seconds,
            test_posts.len()
        );
        let engine = Engine::open(&store, Arc::clone(&model), config).expect("open the store");
        Self {
            engine,
            model,
            queries: spread(&test_posts, sizes.queries),
            bulk: spread(&test_posts, sizes.bulk_posts),
            _dir: dir,
        }
    }
}

/// `n` items evenly spread over `items` (which mixes the data's sources and cities).
fn spread(items: &[&str], n: usize) -> Vec<String> {
    assert!(items.len() >= n, "only {} test posts", items.len());
    let step = items.len() / n;
    items
        .iter()
        .step_by(step)
        .take(n)
        .map(|s| s.to_string())
        .collect()
}

/// Nearest-rank percentile of sorted durations, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn single_post_latency(c: &mut Criterion, sizes: &Sizes, fixture: &QueryFixture) {
    let engine = &fixture.engine;
    let locate_one = |text: &str| {
        black_box(engine.locate(&[text]).expect("locate"));
    };
    for text in fixture.queries.iter().take(5) {
        locate_one(text);
    }
    let mut times: Vec<Duration> = fixture
        .queries
        .iter()
        .map(|text| {
            let started = Instant::now();
            locate_one(text);
            started.elapsed()
        })
        .collect();
    times.sort();
    let mean = times.iter().sum::<Duration>().as_secs_f64() * 1e3 / times.len() as f64;
    eprintln!(
        "engine-bench: locate one post: p50 {:.2} ms, p99 {:.2} ms, mean {mean:.2} ms, max {:.2} ms over {} posts",
        percentile_ms(&times, 0.50),
        percentile_ms(&times, 0.99),
        percentile_ms(&times, 1.0),
        times.len()
    );

    let mut group = c.benchmark_group("locate_one_post");
    sizes.configure(&mut group, false);
    let mut next = 0usize;
    group.bench_function("engine_locate", |b| {
        b.iter(|| {
            locate_one(&fixture.queries[next % fixture.queries.len()]);
            next += 1;
        })
    });
    group.finish();
}

/// Locates `texts` in chunks of [`BULK_CHUNK`]; returns the number of answers.
fn locate_all(engine: &Engine, texts: &[&str]) -> usize {
    texts
        .chunks(BULK_CHUNK)
        .map(|chunk| black_box(engine.locate(chunk).expect("locate")).len())
        .sum()
}

/// Embeds `texts` in chunks of [`BULK_CHUNK`]; returns the number of embeddings.
fn embed_all(encoder: &TextEncoder, texts: &[&str]) -> usize {
    texts
        .chunks(BULK_CHUNK)
        .map(|chunk| black_box(encoder.embed(chunk).expect("embed")).len())
        .sum()
}

fn bulk_throughput(c: &mut Criterion, sizes: &Sizes, fixture: &QueryFixture) {
    let engine = &fixture.engine;
    let encoder = fixture.model.post_encoder();
    let texts: Vec<&str> = fixture.bulk.iter().map(String::as_str).collect();
    let timed = |run: &dyn Fn() -> usize| {
        let started = Instant::now();
        assert_eq!(run(), texts.len());
        started.elapsed()
    };
    let (mut located, mut embedded) = (Vec::new(), Vec::new());
    for _ in 0..sizes.bulk_repeats {
        located.push(timed(&|| locate_all(engine, &texts)));
        embedded.push(timed(&|| embed_all(encoder, &texts)));
    }
    let (located, embedded) = (median(located), median(embedded));
    let rate = |d: Duration| texts.len() as f64 / d.as_secs_f64();
    eprintln!(
        "engine-bench: {} posts in chunks of {BULK_CHUNK} (median of {}): Engine::locate {:.1} posts/s, \
         TextEncoder::embed {:.1} posts/s, overhead ratio {:.3}",
        texts.len(),
        sizes.bulk_repeats,
        rate(located),
        rate(embedded),
        located.as_secs_f64() / embedded.as_secs_f64()
    );

    let mut group = c.benchmark_group(format!("bulk_{}_posts", texts.len()));
    sizes.configure(&mut group, true);
    group.throughput(Throughput::Elements(texts.len() as u64));
    group.bench_function("engine_locate", |b| b.iter(|| locate_all(engine, &texts)));
    group.bench_function("encoder_embed", |b| b.iter(|| embed_all(encoder, &texts)));
    group.finish();
}

/// Fills a fresh index in `dir` with `count` clustered vectors and dumps it; prints the timings.
fn build_synthetic_index(dir: &Path, count: usize) {
    let options = EngineConfig::default().index_options();
    let clusters = Clusters::new(1, DIMENSION, (count / VECTORS_PER_CITY).max(1));
    let mut rng = Rng::new(2);
    let started = Instant::now();
    let index = VectorIndex::open(dir, "bench", options).expect("create the index");
    let mut inserted = 0;
    while inserted < count {
        let n = (count - inserted).min(INSERT_BATCH);
        let rows = clusters.support_rows(&mut rng, inserted, n, 0.1, VECTORS_PER_CITY);
        index.insert(&rows).expect("insert");
        inserted += n;
    }
    let insert = started.elapsed();
    let started = Instant::now();
    index.dump().expect("dump");
    let dump = started.elapsed();
    eprintln!(
        "engine-bench: index build of {count} vectors: insert (sled + live graph) {:.2}s \
         ({:.0} vectors/s), dump {:.2}s",
        insert.as_secs_f64(),
        count as f64 / insert.as_secs_f64(),
        dump.as_secs_f64()
    );
}

/// Opens the dumped index in `dir`; returns it (to be closed untimed) and how long the open took.
fn reload(dir: &Path) -> (VectorIndex, Duration) {
    let options = EngineConfig::default().index_options();
    let started = Instant::now();
    let index = VectorIndex::open(dir, "bench", options).expect("reload the index");
    let elapsed = started.elapsed();
    assert_eq!(
        index.status(),
        IndexStatus::Ready,
        "the dump must load without a rebuild"
    );
    (index, elapsed)
}

fn index_build_and_reload(c: &mut Criterion, sizes: &Sizes) {
    let count = sizes.vectors;
    let dir = tempfile::tempdir().expect("temporary directory");
    build_synthetic_index(dir.path(), count);
    let (index, _) = reload(dir.path());
    assert_eq!(index.len(), count, "every vector survives the reload");
    drop(index);
    let mut times: Vec<Duration> = (0..sizes.reloads).map(|_| reload(dir.path()).1).collect();
    times.sort();
    eprintln!(
        "engine-bench: reload of {count} vectors (VectorIndex::open with the dump): median {:.1} ms, \
         min {:.1} ms over {} opens",
        percentile_ms(&times, 0.5),
        percentile_ms(&times, 0.0),
        times.len()
    );

    let mut group = c.benchmark_group(format!("index_{count}_vectors"));
    sizes.configure(&mut group, true);
    // One open at a time: sled locks its directory, so the previous index must be closed (untimed) first.
    group.bench_function("reload", |b| {
        b.iter_custom(|iterations| (0..iterations).map(|_| reload(dir.path()).1).sum())
    });
    group.finish();
}

fn main() {
    let sizes = Sizes::from_env();
    let mut criterion = Criterion::default().configure_from_args();
    eprintln!(
        "engine-bench: {} sizes, {} threads",
        if sizes.quick { "quick" } else { "full" },
        rayon::current_num_threads()
    );
    let fixture = QueryFixture::new(&sizes);
    single_post_latency(&mut criterion, &sizes, &fixture);
    bulk_throughput(&mut criterion, &sizes, &fixture);
    drop(fixture);
    index_build_and_reload(&mut criterion, &sizes);
    criterion.final_summary();
}
