//! Shared set-up for integration tests: the real base model, loaded once per test binary.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use contrastgeo::model::{EncoderSettings, ModelFiles, TextEncoder};

/// The base model's files; panics with the set-up hint when `tools/setup.sh` has not run.
pub fn model_files() -> ModelFiles {
    ModelFiles::resolve(None).unwrap_or_else(|e| panic!("{e}"))
}

/// A CPU encoder with default settings, shared by the tests of one binary.
pub fn encoder() -> &'static TextEncoder {
    static ENCODER: OnceLock<TextEncoder> = OnceLock::new();
    ENCODER.get_or_init(|| {
        TextEncoder::load(
            &model_files(),
            EncoderSettings::default(),
            &candle_core::Device::Cpu,
        )
        .expect("load encoder")
    })
}

/// The base model (zero-shot, untrained head) on the CPU, loaded once per test binary.
pub fn base_model() -> std::sync::Arc<contrastgeo::model::GeoModel> {
    static MODEL: OnceLock<std::sync::Arc<contrastgeo::model::GeoModel>> = OnceLock::new();
    std::sync::Arc::clone(MODEL.get_or_init(|| {
        std::sync::Arc::new(
            contrastgeo::model::GeoModel::from_base(
                &model_files(),
                contrastgeo::model::GeoModelConfig::default(),
                &candle_core::Device::Cpu,
            )
            .expect("load the base model"),
        )
    }))
}

/// Writes a store with generations to `dir`: the fixture cities except `without`, each with its first
/// `support_per_city` fixture posts, and the base model.
pub fn fixture_live_store(dir: &std::path::Path, without: &str, support_per_city: usize) {
    let cities: Vec<contrastgeo::geo::City> = fixture_cities()
        .cities()
        .iter()
        .filter(|c| c.name != without)
        .cloned()
        .collect();
    let support: Vec<_> = fixture_support(support_per_city)
        .into_iter()
        .filter(|p| cities.iter().any(|c| c.id == p.city))
        .collect();
    contrastgeo::engine::LiveStore::create(
        dir,
        &base_model(),
        &cities,
        &support,
        &contrastgeo::engine::EngineConfig::default(),
        &|_| {},
    )
    .expect("build the fixture store");
}

/// A fresh CPU encoder (for tests that change weights).
pub fn fresh_encoder(settings: EncoderSettings) -> TextEncoder {
    TextEncoder::load(&model_files(), settings, &candle_core::Device::Cpu).expect("load encoder")
}

/// Environment variable naming the benchmark directory (cities.jsonl, posts.jsonl, split.json) for the
/// benchmark suite: `CONTRASTGEO_BENCHMARK_DATA=../shared/data cargo test --release -- --ignored`.
pub const BENCHMARK_DATA_ENV: &str = "CONTRASTGEO_BENCHMARK_DATA";

/// The benchmark directory for tests of the benchmark suite (marked `#[ignore]`); panics saying what is
/// needed when `CONTRASTGEO_BENCHMARK_DATA` is unset or does not hold the benchmark.
pub fn benchmark_data() -> PathBuf {
    let dir = std::env::var_os(BENCHMARK_DATA_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "this test belongs to the benchmark suite and needs the labelled benchmark: set \
                 {BENCHMARK_DATA_ENV} to a directory with cities.jsonl, posts.jsonl and split.json \
                 (e.g. {BENCHMARK_DATA_ENV}=../shared/data cargo test --release -- --ignored)"
            )
        });
    for file in ["cities.jsonl", "posts.jsonl", "split.json"] {
        assert!(
            dir.join(file).is_file(),
            "{BENCHMARK_DATA_ENV}={}: no {file} there",
            dir.display()
        );
    }
    dir
}

/// A file of the project's own fixtures (`tests/fixtures/`).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The 20 fixture cities (`tests/fixtures/engine_cities.jsonl`).
pub fn fixture_cities() -> contrastgeo::geo::CityTable {
    contrastgeo::geo::CityTable::read_jsonl(&fixture("engine_cities.jsonl"))
        .expect("engine_cities.jsonl")
}

/// The 300 made-up fixture posts (`tests/fixtures/engine_posts.jsonl`), 15 per fixture city.
pub fn fixture_posts() -> Vec<contrastgeo::data::LabelledPost> {
    let read = contrastgeo::data::read_labelled_posts(&fixture("engine_posts.jsonl"))
        .expect("engine_posts.jsonl");
    assert!(read.rejected.is_empty(), "{:?}", read.rejected);
    read.posts
}

/// The first `per_city` fixture posts of every fixture city, as support posts (the first posts of each
/// city name it).
pub fn fixture_support(per_city: usize) -> Vec<contrastgeo_index::SupportPost> {
    let mut taken: std::collections::HashMap<u64, usize> = Default::default();
    fixture_posts()
        .into_iter()
        .filter_map(|post| {
            let city = post.city_id?;
            let n = taken.entry(city).or_default();
            *n += 1;
            (*n <= per_city).then(|| contrastgeo_index::SupportPost {
                text: post.text,
                city,
                source: "engine_posts.jsonl".into(),
            })
        })
        .collect()
}

/// Cosine of two unit vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Runs the real `contrastgeo` binary with `args`, feeding `stdin`; returns (exit code, stdout, stderr).
pub fn run_contrastgeo(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    run_contrastgeo_in(args, stdin, &[], None)
}

/// [`run_contrastgeo`] with extra environment variables and, optionally, another working directory.
pub fn run_contrastgeo_in(
    args: &[&str],
    stdin: &[u8],
    env: &[(&str, &std::ffi::OsStr)],
    cwd: Option<&std::path::Path>,
) -> (i32, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut command = Command::new(env!("CARGO_BIN_EXE_contrastgeo"));
    command.args(args).envs(env.iter().copied());
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn contrastgeo");
    // A command that fails early (say, on a missing model) may exit before reading its input.
    match child.stdin.take().expect("stdin").write_all(stdin) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.expect("write stdin"),
    }
    let out = child.wait_with_output().expect("wait for contrastgeo");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses JSONL output of a bulk command: the records and their `line` numbers.
pub fn jsonl_records(stdout: &str) -> (Vec<serde_json::Value>, Vec<u64>) {
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let lines = records
        .iter()
        .map(|r| r["line"].as_u64().expect("a line number"))
        .collect();
    (records, lines)
}

/// One HTTP call: (status, JSON body).
pub fn call(
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
    key: Option<&str>,
) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(120)))
        .build()
        .into();
    let response = match method {
        "GET" => agent.get(url).call(),
        _ => {
            let mut request = agent.post(url).header("content-type", "application/json");
            if let Some(key) = key {
                request = request.header("authorization", format!("Bearer {key}"));
            }
            request.send(
                body.map(serde_json::Value::to_string)
                    .unwrap_or_default()
                    .as_bytes(),
            )
        }
    };
    let mut response = response.expect("an HTTP answer");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Nashville, the city the write and replication tests add (the fixture stores leave it out), as the REST
/// API takes a new city.
pub fn nashville_record() -> serde_json::Value {
    serde_json::json!({"name": "Nashville", "admin1": "Tennessee", "country": "United States",
                       "lat": 36.16589, "lon": -86.78444, "aliases": ["Music City"]})
}

/// Five example posts of Nashville.
pub const NASHVILLE_EXAMPLES: [&str; 5] = [
    "Honky tonks on Broadway all night long",
    "Hot chicken so spicy I cried, worth it",
    "Grand Ole Opry tonight, goosebumps the whole time",
    "Predators game at Bridgestone, the catfish flew",
    "Pedal taverns full of bachelorettes again on Lower Broad",
];
