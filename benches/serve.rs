//! Load test of the REST service on loopback: single-post `POST /v1/locate` at several client concurrencies
//! (p50 / p99 latency, requests/s, the mean inference batch the server formed), then bulk `Engine::locate`
//! over the same posts on the same store, and the ratio of the two.
//!
//! `cargo bench --bench serve`. Environment:
//! - `CONTRASTGEO_BENCH_STORE`: the store to serve (default: a store built here from the 20 fixture cities
//!   with 5 support posts each, with the base model);
//! - `CONTRASTGEO_BENCH_CHECKPOINT`: the checkpoint a plain store was built with (default: the base model; a
//!   store written by `contrastgeo index build` carries its own model);
//! - `CONTRASTGEO_BENCH_POSTS`: the posts to send, JSONL with `text` (default: the fixture posts not in the
//!   fixture store);
//! - `CONTRASTGEO_BENCH_SECONDS`: duration of each concurrency level (default 10);
//! - `CONTRASTGEO_BENCH_CONCURRENCY`: the levels (default `1,8,32`);
//! - `CONTRASTGEO_BENCH_MAX_WAIT_MS`: the server's `max_batch_wait_ms` (default: the server's default);
//! - `CONTRASTGEO_BENCH_BULK_CHUNK`: posts per bulk `Engine::locate` call (default 256, as `locate`);
//! - `CONTRASTGEO_BENCH_FOLLOWERS`: after the single server, also serve the store from a writer publishing to
//!   a `file://` URL and this many followers (`serve --follow`), the clients spread over the followers
//!   (default 0: skipped). The store must then be one with generations (the default fixture store is).
//!
//! The servers run in this process (the single one read-only, so it serves a private copy and the bulk
//! engine opens the original), with their default configuration; clients are plain threads with
//! keep-alive connections.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use contrastgeo::data::read_labelled_posts;
use contrastgeo::engine::{Engine, EngineConfig, LiveStore};
use contrastgeo::geo::CityTable;
use contrastgeo::model::{GeoModel, GeoModelConfig, ModelFiles};
use contrastgeo::server::{self, FollowSource, RunningServer, ServerConfig, Signals, StoreSource};
use contrastgeo_index::SupportPost;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load_model() -> Arc<GeoModel> {
    let device = candle_core::Device::Cpu;
    let model = match std::env::var_os("CONTRASTGEO_BENCH_CHECKPOINT") {
        Some(dir) => GeoModel::load(Path::new(&dir), &device).expect("load the checkpoint"),
        None => GeoModel::from_base(
            &ModelFiles::resolve(None).expect("the base model (run tools/setup.sh)"),
            GeoModelConfig::default(),
            &device,
        )
        .expect("load the base model"),
    };
    Arc::new(model)
}

/// Opens a store as `contrastgeo serve` does: a generational store (written by `contrastgeo index build`) with
/// its own model, a plain one (written by `Engine::build_index`) with `model`.
fn open_any(dir: &Path, model: Arc<GeoModel>, config: EngineConfig) -> Arc<Engine> {
    if LiveStore::exists(dir) {
        let live = LiveStore::open(dir, &candle_core::Device::Cpu, config).expect("open the store");
        return live.shared_engine();
    }
    Arc::new(Engine::open(dir, model, config).expect("open the store"))
}

/// The fixture store (20 cities, the first 5 posts of each as support) and the other fixture posts.
fn fixture_store(dir: &Path, model: &GeoModel) -> Vec<String> {
    let cities = CityTable::read_jsonl(&fixture("engine_cities.jsonl")).expect("fixture cities");
    let posts = read_labelled_posts(&fixture("engine_posts.jsonl"))
        .expect("fixture posts")
        .posts;
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let (mut support, mut queries) = (Vec::new(), Vec::new());
    for post in posts {
        let Some(city) = post.city_id else { continue };
        let count = seen.entry(city).or_default();
        *count += 1;
        if *count <= 5 {
            support.push(SupportPost {
                text: post.text,
                city,
                source: "engine_posts.jsonl".into(),
            });
        } else {
            queries.push(post.text);
        }
    }
    LiveStore::create(
        dir,
        model,
        cities.cities(),
        &support,
        &EngineConfig::default(),
        &|_| {},
    )
    .expect("build the fixture store");
    queries
}

fn read_posts(path: &Path) -> Vec<String> {
    read_labelled_posts(path)
        .expect("CONTRASTGEO_BENCH_POSTS")
        .posts
        .into_iter()
        .map(|p| p.text)
        .collect()
}

/// The server's `name` counter or gauge value.
fn metric(agent: &ureq::Agent, base: &str, name: &str) -> f64 {
    let text = agent
        .get(format!("{base}/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

struct Level {
    clients: usize,
    requests: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    mean_batch: f64,
}

/// The inference batches all `bases` formed so far: (batches, posts in them).
fn batches(probe: &ureq::Agent, bases: &[String]) -> (f64, f64) {
    bases.iter().fold((0.0, 0.0), |(count, sum), base| {
        (
            count + metric(probe, base, "contrastgeo_inference_batch_posts_count"),
            sum + metric(probe, base, "contrastgeo_inference_batch_posts_sum"),
        )
    })
}

/// `clients` threads sending single-post requests back to back for `seconds`, client `i` to server
/// `bases[i % bases.len()]`.
fn load(bases: &[String], posts: &Arc<Vec<String>>, clients: usize, seconds: f64) -> Level {
    let probe: ureq::Agent = ureq::Agent::config_builder().build().into();
    let (batches_before, batch_posts_before) = batches(&probe, bases);
    let barrier = Arc::new(Barrier::new(clients));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let (base, posts, barrier) = (
                bases[client % bases.len()].clone(),
                Arc::clone(posts),
                Arc::clone(&barrier),
            );
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
                barrier.wait();
                let deadline = Instant::now() + Duration::from_secs_f64(seconds);
                let mut latencies = Vec::new();
                let mut next = client;
                while Instant::now() < deadline {
                    let body = serde_json::json!({ "text": posts[next % posts.len()] }).to_string();
                    next += clients;
                    let sent = Instant::now();
                    let mut reply = agent
                        .post(format!("{base}/v1/locate"))
                        .header("content-type", "application/json")
                        .send(body.as_bytes())
                        .expect("a 200 answer");
                    reply.body_mut().read_to_string().expect("the answer");
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a client thread"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let (batches_after, batch_posts_after) = batches(&probe, bases);
    let (batches, batch_posts) = (
        batches_after - batches_before,
        batch_posts_after - batch_posts_before,
    );
    Level {
        clients,
        requests: latencies.len(),
        seconds: elapsed,
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        mean_batch: batch_posts / batches.max(1.0),
    }
}

/// Bulk `Engine::locate` over `posts` in chunks of `chunk` posts for about `seconds`; posts/s.
fn bulk(engine: &Engine, posts: &[String], chunk: usize, seconds: f64) -> f64 {
    let texts: Vec<&str> = posts.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut located = 0usize;
    // Round after round over the posts, stopping at the first chunk boundary past `seconds`.
    for chunk in texts.chunks(chunk).cycle() {
        engine.locate(chunk).expect("bulk locate");
        located += chunk.len();
        if started.elapsed().as_secs_f64() >= seconds {
            break;
        }
    }
    located as f64 / started.elapsed().as_secs_f64()
}

/// Waits until the server at `base` is ready.
fn wait_ready(base: &str) {
    let probe: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let waited = Instant::now();
    while probe
        .get(format!("{base}/readyz"))
        .call()
        .map_or(true, |r| r.status() != 200)
    {
        assert!(waited.elapsed() < Duration::from_secs(600), "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every level against `bases`; prints the table rows and returns (clients, req/s).
fn levels_table(
    bases: &[String],
    posts: &Arc<Vec<String>>,
    levels: &[usize],
    seconds: f64,
) -> Vec<(usize, f64)> {
    // Warm-up: caches, the allocator, the HTTP connection pool.
    load(bases, posts, 4 * bases.len(), 1.0);
    println!("| clients | requests | req/s | p50 ms | p99 ms | mean inference batch |");
    println!("|---|---|---|---|---|---|");
    let mut measured = Vec::new();
    for &clients in levels {
        let level = load(bases, posts, clients, seconds);
        let rate = level.requests as f64 / level.seconds;
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            level.clients, level.requests, rate, level.p50_ms, level.p99_ms, level.mean_batch
        );
        measured.push((clients, rate));
    }
    measured
}

/// A writer over `store` publishing to a `file://` URL in `tmp`, and `count` followers of it.
fn start_followers(
    store: &Path,
    model: Arc<GeoModel>,
    tmp: &Path,
    count: usize,
) -> (RunningServer, Vec<RunningServer>) {
    let url = format!("file://{}", tmp.join("published").display());
    let config = ServerConfig {
        bind: "127.0.0.1:0".parse().expect("an address"),
        publish: Some(url.clone()),
        ..ServerConfig::default()
    };
    let store = store.to_path_buf();
    let loader: server::Loader = Box::new(move || Ok(StoreSource { model, store }));
    let writer = server::start(config, loader, Signals::Ignore).expect("start the writer");
    wait_ready(&format!("http://{}", writer.addr()));
    let followers = (0..count)
        .map(|i| {
            let config = ServerConfig {
                bind: "127.0.0.1:0".parse().expect("an address"),
                ..ServerConfig::default()
            };
            let source = FollowSource {
                url: url.clone(),
                cache: tmp.join(format!("follower-{i}")),
                device: candle_core::Device::Cpu,
            };
            let follower =
                server::start_follower(config, source, Signals::Ignore).expect("start a follower");
            wait_ready(&format!("http://{}", follower.addr()));
            follower
        })
        .collect();
    (writer, followers)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read from the command line.
    let seconds: f64 = env_or("CONTRASTGEO_BENCH_SECONDS", 10.0);
    let levels: Vec<usize> = std::env::var("CONTRASTGEO_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,8,32".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let model = load_model();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (store, mut posts, which) = match std::env::var_os("CONTRASTGEO_BENCH_STORE") {
        Some(dir) => (
            PathBuf::from(&dir),
            Vec::new(),
            PathBuf::from(dir).display().to_string(),
        ),
        None => {
            let dir = tmp.path().join("store");
            let queries = fixture_store(&dir, &model);
            (
                dir,
                queries,
                "fixture store (20 cities, 5 support posts each, base model)".into(),
            )
        }
    };
    if let Some(path) = std::env::var_os("CONTRASTGEO_BENCH_POSTS") {
        posts = read_posts(Path::new(&path));
    }
    if posts.is_empty() {
        posts = read_posts(&fixture("engine_posts.jsonl"));
    }
    let config = ServerConfig {
        bind: "127.0.0.1:0".parse().expect("an address"),
        read_only: true,
        max_batch_wait_ms: env_or(
            "CONTRASTGEO_BENCH_MAX_WAIT_MS",
            ServerConfig::default().max_batch_wait_ms,
        ),
        ..ServerConfig::default()
    };
    let config_wait = config.max_batch_wait_ms;
    let (serving_model, serving_store) = (Arc::clone(&model), store.clone());
    let loader: server::Loader = Box::new(move || {
        Ok(StoreSource {
            model: serving_model,
            store: serving_store,
        })
    });
    let running = server::start(config, loader, Signals::Ignore).expect("start the server");
    let base = format!("http://{}", running.addr());
    wait_ready(&base);
    let posts = Arc::new(posts);
    println!(
        "store: {which}; {} posts; {seconds} s per level; max batch wait {config_wait} ms",
        posts.len()
    );
    println!("one server:");
    let measured = levels_table(&[base], &posts, &levels, seconds);
    running.stop(true).expect("stop the server");
    let engine = open_any(&store, Arc::clone(&model), EngineConfig::default());
    let chunk = env_or("CONTRASTGEO_BENCH_BULK_CHUNK", 256usize).max(1);
    let bulk_rate = bulk(&engine, &posts, chunk, seconds);
    println!("bulk Engine::locate (chunks of {chunk}): {bulk_rate:.1} posts/s");
    for &(clients, rate) in &measured {
        println!(
            "server at {clients} clients / bulk: {:.2}",
            rate / bulk_rate
        );
    }
    drop(engine);
    let followers: usize = env_or("CONTRASTGEO_BENCH_FOLLOWERS", 0);
    if followers > 0 {
        let (writer, running) = start_followers(&store, model, tmp.path(), followers);
        let bases: Vec<String> = running
            .iter()
            .map(|f| format!("http://{}", f.addr()))
            .collect();
        println!(
            "{followers} followers of a writer publishing to file:// (clients spread over them):"
        );
        let spread = levels_table(&bases, &posts, &levels, seconds);
        for ((clients, one), (_, many)) in measured.iter().zip(&spread) {
            println!(
                "{followers} followers / one server at {clients} clients: {:.2}",
                many / one
            );
        }
        for follower in running {
            follower.stop(true).expect("stop a follower");
        }
        writer.stop(true).expect("stop the writer");
    }
}
