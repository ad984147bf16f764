//! Replicas beyond one machine, on loopback with a `file://` URL (the same object_store code path as S3):
//! a writer publishing its store and followers serving copies of it. Real model, real sled/HNSW/tantivy,
//! real HTTP, and real processes where a test kills one.
//!
//! - a city ingested on the writer is answered by two followers within `--poll-s` + 2 s, and a retrain's
//!   swap reaches them while a load generator queries them, with no failed request;
//! - a half-uploaded generation (a writer killed mid-upload) is never followed;
//! - a follower killed with SIGKILL mid-download restarts and catches up;
//! - the writer killed right after an acknowledged ingest loses nothing on the followers.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{call, nashville_record as nashville, NASHVILLE_EXAMPLES as EXAMPLES};
use contrastgeo::engine::EngineConfig;
use contrastgeo::replication::Follower;
use contrastgeo::server::{self, FollowSource, RunningServer, ServerConfig, Signals, StoreSource};
use serde_json::{json, Value};

const KEY: &str = "follow-key";

/// The tests here run one at a time: each starts several servers or processes, and the first checks a
/// deadline (`--poll-s` + 2 s) that a neighbour loading models on the same two cores would eat into.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
const POLL_S: u64 = 1;

const NASHVILLE_POST: &str = "Hot chicken and honky tonks on Broadway tonight";

fn url_of(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn base(running: &RunningServer, path: &str) -> String {
    format!("http://{}{path}", running.addr())
}

/// Waits for `/readyz` to answer 200 (a process may not listen yet: refused connections are retried).
fn wait_ready(url: &str, within: Duration) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let started = Instant::now();
    loop {
        let mut last = String::new();
        if let Ok(mut response) = agent.get(url).call() {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            if response.status().as_u16() == 200 {
                return serde_json::from_str(&text).unwrap();
            }
            last = text;
        }
        assert!(started.elapsed() < within, "{url} never ready: {last}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh fixture store (the fixture cities less Nashville, two support posts each) in a temporary
/// directory, and the `file://` URL beside it to publish it to: (the directory, store, published dir, URL).
fn writer_store() -> (tempfile::TempDir, PathBuf, PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("writer");
    common::fixture_live_store(&store, "Nashville", 2);
    let published = tmp.path().join("published");
    let url = url_of(&published);
    (tmp, store, published, url)
}

/// An in-process writer over a fresh fixture store (the fixture cities less Nashville), publishing to `url`.
fn start_writer(tmp: &Path, url: &str) -> RunningServer {
    let dir = tmp.join("writer");
    common::fixture_live_store(&dir, "Nashville", 3);
    let key_file = tmp.join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let config = ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        api_key_file: Some(key_file),
        workers: 2,
        retrain_threads: 1,
        publish: Some(url.to_string()),
        ..ServerConfig::default()
    };
    let model = common::base_model();
    let loader: server::Loader = Box::new(move || Ok(StoreSource { model, store: dir }));
    let running = server::start(config, loader, Signals::Ignore).unwrap();
    wait_ready(&base(&running, "/readyz"), Duration::from_secs(120));
    running
}

fn start_follower(cache: &Path, url: &str) -> RunningServer {
    let config = ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        poll_s: POLL_S,
        ..ServerConfig::default()
    };
    let source = FollowSource {
        url: url.to_string(),
        cache: cache.to_path_buf(),
        device: candle_core::Device::Cpu,
    };
    let running = server::start_follower(config, source, Signals::Ignore).unwrap();
    wait_ready(&base(&running, "/readyz"), Duration::from_secs(120));
    running
}

fn top_city(url: &str, text: &str) -> (u16, String) {
    let (status, answer) = call("POST", url, Some(&json!({"text": text})), None);
    let name = answer["best_guess"]["name"]
        .as_str()
        .or(answer["name"].as_str())
        .unwrap_or_default()
        .to_string();
    (status, name)
}

#[test]
fn an_ingest_reaches_two_followers_within_the_poll_and_a_retrain_swaps_them_under_load() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let published = tmp.path().join("published");
    let url = url_of(&published);
    let writer = start_writer(tmp.path(), &url);
    let followers = [
        start_follower(&tmp.path().join("cache-a"), &url),
        start_follower(&tmp.path().join("cache-b"), &url),
    ];
    for follower in &followers {
        let (_, ready) = call("GET", &base(follower, "/readyz"), None, None);
        assert_eq!(ready["read_only"], true, "{ready}");
        assert_eq!(ready["follow"]["generation"], 1, "{ready}");
        assert_eq!(ready["follow"]["lag_labels"], 0, "{ready}");
        let (status, name) = top_city(&base(follower, "/v1/locate"), NASHVILLE_POST);
        assert_eq!(status, 200);
        assert_ne!(name, "Nashville", "Nashville is not in the store yet");
        let (status, _) = call(
            "POST",
            &base(follower, "/v1/cities"),
            Some(&json!({"city": nashville(), "examples": EXAMPLES})),
            Some(KEY),
        );
        assert!(
            status == 401 || status == 403,
            "a follower takes no writes: {status}"
        );
    }

    let body = json!({"city": nashville(), "examples": EXAMPLES});
    let (status, stored) = call("POST", &base(&writer, "/v1/cities"), Some(&body), Some(KEY));
    assert_eq!(status, 201, "{stored}");
    let acknowledged = Instant::now();
    for follower in &followers {
        loop {
            let (status, name) = top_city(&base(follower, "/v1/locate"), NASHVILLE_POST);
            assert_eq!(status, 200);
            if name == "Nashville" {
                break;
            }
            assert!(
                acknowledged.elapsed() < Duration::from_secs(POLL_S + 2),
                "a follower did not answer the new city within --poll-s + 2 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let reached_s = acknowledged.elapsed().as_secs_f64();
    eprintln!(
        "the new city reached both followers {reached_s:.2}s after the writer acknowledged it"
    );
    for follower in &followers {
        let (_, ready) = call("GET", &base(follower, "/readyz"), None, None);
        assert_eq!(ready["follow"]["lag_labels"], 0, "{ready}");
        let (_, metrics) = call("GET", &base(follower, "/metrics"), None, None);
        let metrics = metrics.as_str().unwrap_or_default().to_string();
        assert!(
            metrics.contains("contrastgeo_follow_lag_labels 0"),
            "{metrics}"
        );
    }

    // A retrain on the writer, while a load generator queries both followers.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = followers
        .iter()
        .map(|follower| {
            let locate = base(follower, "/v1/locate");
            let (stop, failures, answered) = (stop.clone(), failures.clone(), answered.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (status, _) = top_city(&locate, "Rain again in Seattle");
                    if status == 200 {
                        answered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let retrain = json!({"epochs": 1, "min_steps": 3, "gate_margin": 1.0});
    let (status, accepted) = call(
        "POST",
        &base(&writer, "/v1/retrain"),
        Some(&retrain),
        Some(KEY),
    );
    assert_eq!(status, 202, "{accepted}");
    let job = accepted["job"]["id"].as_u64().unwrap();
    let started = Instant::now();
    loop {
        let (_, state) = call(
            "GET",
            &base(&writer, &format!("/v1/jobs/{job}")),
            None,
            None,
        );
        if state["state"] != "running" {
            assert_eq!(state["state"], "succeeded", "{state}");
            assert_eq!(state["report"]["swapped"], true, "{state}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "retrain never ended"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let swapped = Instant::now();
    for follower in &followers {
        loop {
            let (_, ready) = call("GET", &base(follower, "/readyz"), None, None);
            if ready["follow"]["generation"] == 2 {
                assert!(
                    ready["model"].as_str().unwrap().starts_with("trained:"),
                    "{ready}"
                );
                break;
            }
            assert!(
                swapped.elapsed() < Duration::from_secs(60),
                "a follower never swapped in generation 2: {ready}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        thread.join().unwrap();
    }
    assert!(answered.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "queries failed on a follower during the swap"
    );
    // The retrained generation still knows the city added before it.
    for follower in &followers {
        let (_, name) = top_city(&base(follower, "/v1/locate"), NASHVILLE_POST);
        assert_eq!(name, "Nashville");
    }
    for follower in followers {
        follower.stop(true).unwrap();
    }
    writer.stop(true).unwrap();
}

#[test]
fn a_half_uploaded_generation_is_never_followed() {
    let _serial = one_at_a_time();
    let (tmp, store, published, url) = writer_store();
    let publisher: Arc<dyn contrastgeo::engine::StorePublisher> =
        Arc::new(contrastgeo::replication::Publisher::open(&url).unwrap());
    let live = contrastgeo::engine::LiveStore::open_publishing(
        &store,
        &candle_core::Device::Cpu,
        EngineConfig::default(),
        Some(publisher),
    )
    .unwrap();
    drop(live);
    let follower = Follower::start(
        &url,
        &tmp.path().join("cache"),
        &candle_core::Device::Cpu,
        EngineConfig::default(),
        Duration::from_secs(3600),
    )
    .unwrap();
    assert_eq!(follower.status().generation, 1);

    // A writer killed while uploading generation 2: some files, no manifest, LIVE.json unchanged.
    let partial = published.join("generations/000002/model");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::copy(
        published.join("generations/000001/model/config.json"),
        partial.join("config.json"),
    )
    .unwrap();
    follower.poll_once().unwrap();
    assert_eq!(follower.status().generation, 1);

    // Even a pointer naming it (which a writer never writes before the manifest) is not followed: the
    // follower keeps serving generation 1 and says why.
    let pointer = std::fs::read_to_string(published.join("LIVE.json")).unwrap();
    let pointer = pointer.replace("\"generation\": 1", "\"generation\": 2");
    std::fs::write(published.join("LIVE.json"), pointer).unwrap();
    let error = follower.poll_once().expect_err("an incomplete generation");
    assert!(error.to_string().contains("incomplete"), "{error}");
    let status = follower.status();
    assert_eq!(status.generation, 1);
    assert_eq!(status.published_generation, 2);
    assert!(status.lag_s >= 0.0);
    let answers = follower
        .engine()
        .locate(&["Rain again in Seattle"])
        .unwrap();
    assert_eq!(answers.len(), 1);
    assert!(!tmp.path().join("cache/generations/000002").exists());
}

/// `contrastgeo serve` as a child process, stopped with SIGKILL on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_serve(args: &[&str], log: &Path) -> Process {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_contrastgeo"))
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn contrastgeo serve");
    Process(child)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_follower_killed_mid_download_restarts_and_catches_up_and_a_killed_writer_loses_nothing() {
    let _serial = one_at_a_time();
    let (tmp, store, _, url) = writer_store();
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();

    // The writer, a real process: an ingest it acknowledged, then SIGKILL at once.
    let writer_port = free_port().to_string();
    let writer_bind = format!("127.0.0.1:{writer_port}");
    let mut writer = spawn_serve(
        &[
            "--store",
            store.to_str().unwrap(),
            "--publish",
            &url,
            "--bind",
            &writer_bind,
            "--api-key-file",
            key_file.to_str().unwrap(),
        ],
        &tmp.path().join("writer.log"),
    );
    wait_ready(
        &format!("http://{writer_bind}/readyz"),
        Duration::from_secs(120),
    );
    let body = json!({"city": nashville(), "examples": EXAMPLES});
    let (status, stored) = call(
        "POST",
        &format!("http://{writer_bind}/v1/cities"),
        Some(&body),
        Some(KEY),
    );
    assert_eq!(status, 201, "{stored}");
    writer.0.kill().unwrap();
    writer.0.wait().unwrap();

    // A follower, killed with SIGKILL while it downloads the generation (its `.download` folder exists).
    let cache = tmp.path().join("cache");
    let follower_bind = format!("127.0.0.1:{}", free_port());
    let args = [
        "--follow",
        url.as_str(),
        "--store",
        cache.to_str().unwrap(),
        "--bind",
        follower_bind.as_str(),
        "--poll-s",
        "1",
    ];
    let mut follower = spawn_serve(&args, &tmp.path().join("follower-1.log"));
    let downloading = cache.join("generations/000001.download");
    let started = Instant::now();
    while !downloading.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the follower never started downloading"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    follower.0.kill().unwrap();
    follower.0.wait().unwrap();
    let killed_mid_download = downloading.exists() && !cache.join("generations/000001").exists();
    eprintln!("killed mid-download: {killed_mid_download}");

    let _follower = spawn_serve(&args, &tmp.path().join("follower-2.log"));
    let ready = wait_ready(
        &format!("http://{follower_bind}/readyz"),
        Duration::from_secs(120),
    );
    assert_eq!(ready["follow"]["lag_labels"], 0, "{ready}");
    assert!(!downloading.exists(), "the unfinished download was removed");
    let (status, name) = top_city(&format!("http://{follower_bind}/v1/locate"), NASHVILLE_POST);
    assert_eq!(status, 200);
    assert_eq!(
        name, "Nashville",
        "the city the killed writer acknowledged reached the follower"
    );
}
