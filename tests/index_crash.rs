//! Crash safety of `contrastgeo index build`: a build killed half-way (SIGKILL, no chance to clean up) leaves
//! the previous store answering queries, and its leftover staging directory does not stop the next build.
//! Runs the real binary on the project's 20 fixture cities; the build that is killed indexes the whole
//! gazetteer (`tools/setup.sh` fetches it), which takes minutes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use contrastgeo::engine::{EngineConfig, LiveStore};

/// How long the killed build may take to start writing its staging store.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the killed build writes before it is killed.
const WRITE_TIME: Duration = Duration::from_millis(1500);

/// Runs `contrastgeo index build` into `store` to the end; returns its stderr.
fn build(store: &Path, support: Option<&Path>) -> String {
    let cities = common::fixture("engine_cities.jsonl");
    let mut args = vec![
        "index",
        "build",
        "--store",
        store.to_str().unwrap(),
        "--cities",
        cities.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    if let Some(support) = support {
        args.extend(["--support", support.to_str().unwrap()]);
    }
    let (code, _, stderr) = common::run_contrastgeo(&args, b"");
    assert_eq!(code, 0, "index build failed: {stderr}");
    stderr
}

/// The answered city of each query through `contrastgeo locate` on `store`.
fn locate_with_binary(store: &Path, queries: &str) -> Vec<String> {
    let (code, stdout, stderr) = common::run_contrastgeo(
        &[
            "locate",
            "--store",
            store.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        queries.as_bytes(),
    );
    assert_eq!(code, 0, "locate failed: {stderr}");
    stdout
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            record["name"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Starts a build of every gazetteer city's prompt (minutes of embedding) into
/// `store`, waits until it has been writing its staging store for [`WRITE_TIME`], and SIGKILLs it. Returns
/// the staging directory it left behind.
fn start_and_kill_a_big_build(store: &Path, log: &Path) -> PathBuf {
    let mut child = Command::new(env!("CARGO_BIN_EXE_contrastgeo"))
        .args(["index", "build", "--store", store.to_str().unwrap()])
        .args(["--device", "cpu"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn contrastgeo");
    // The build writes into `.NAME.building-PID` beside the store (see `engine::build`).
    let staging = store
        .parent()
        .unwrap()
        .join(format!(".store.building-{}", child.id()));
    let started = Instant::now();
    // The label log is written first, then generation 1's model and index.
    while !staging.join("labels.sled").exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the big build ended ({status}) before it was killed:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < START_TIMEOUT,
            "no staging store after {START_TIMEOUT:?}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(WRITE_TIME);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the big build must still be running when it is killed"
    );
    child.kill().expect("SIGKILL the build");
    child.wait().expect("reap the killed build");
    staging
}

#[test]
fn a_build_killed_midway_leaves_the_old_store_working_and_the_next_build_succeeds() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");

    // Store A: the 20 city prompts, no support posts.
    let stderr = build(&store, None);
    assert!(
        stderr.contains("indexed 20 cities and 0 support posts"),
        "{stderr}"
    );

    // A bigger build into the same directory, killed while it writes.
    let staging = start_and_kill_a_big_build(&store, &tmp.path().join("killed-build.log"));
    assert!(
        staging.is_dir(),
        "the killed build leaves its staging directory"
    );

    // Store A still opens and answers, and it is still A: nothing of the killed build reached it.
    {
        let live = LiveStore::open(&store, &candle_core::Device::Cpu, EngineConfig::default())
            .expect("the old store opens after the crash");
        let engine = live.engine();
        let snapshot = engine.snapshot();
        assert_eq!(snapshot.cities().len(), 20);
        assert_eq!(snapshot.cities().support_count(), 0);
        let answers = engine.locate(&["Just landed in Denver, Colorado"]).unwrap();
        assert_eq!(answers[0].name, "Denver", "{:?}", answers[0].top_k);
    }

    // The leftover staging directory does not get in the way of the next build or of queries.
    let support = tmp.path().join("support.jsonl");
    std::fs::write(
        &support,
        concat!(
            "{\"text\": \"Skyway lunch then a Twins game, Minnesota summer at its best\", \"city_id\": 5037649}\n",
            "{\"text\": \"Voodoo Doughnut line in the rain, naturally\", \"city_id\": 5746545}\n",
        ),
    )
    .unwrap();
    let stderr = build(&store, Some(&support));
    assert!(
        stderr.contains("indexed 20 cities and 2 support posts"),
        "{stderr}"
    );
    let names = locate_with_binary(
        &store,
        "Just landed in Denver, Colorado\nSkyway lunch then a Twins game, Minnesota summer at its best\n",
    );
    assert_eq!(names, ["Denver", "Minneapolis"]);
    eprintln!(
        "crash test done in {:.1}s; staging directory of the killed build {}",
        started.elapsed().as_secs_f64(),
        if staging.exists() {
            "left in place"
        } else {
            "cleaned up"
        }
    );
}
