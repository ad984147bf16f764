//! The REST service end to end: real servers (in-process on 127.0.0.1:0, and the real binary as a child
//! process) over a real store built with the real base model from the project's 20-city fixtures, answered
//! over real HTTP.
//!
//! One store is built per test binary and never opened in place: in-process servers run read-only (each
//! serves its own private copy), the reference engine and the child processes open copies of their own.
//!
//! Regenerate `schema/openapi.json` with `CONTRASTGEO_UPDATE_SCHEMAS=1 cargo test --release --test server`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use contrastgeo::data::{read_labelled_posts, LabelledPost};
use contrastgeo::engine::{AuthorRule, Engine, EngineConfig, LiveStore, PostQuery};
use contrastgeo::geo::CityTable;
use contrastgeo::model::GeoModel;
use contrastgeo::server::api::LocatedPost;
use contrastgeo::server::replica::copy_dir;
use contrastgeo::server::{self, RunningServer, ServerConfig, Signals, StoreSource};
use contrastgeo_index::SupportPost;
use serde_json::{json, Value};

/// Support posts per fixture city in the store; the city's other posts are queries.
const SUPPORT_PER_CITY: usize = 5;

/// The base model (zero-shot, untrained head) on the CPU, shared by the tests.
fn model() -> Arc<GeoModel> {
    common::base_model()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The store built once per test binary, the held-out query posts, and a reference engine on a copy.
struct Store {
    _tmp: tempfile::TempDir,
    /// The pristine store (only ever copied).
    dir: PathBuf,
    /// Fixture posts that are not in the store, with their city.
    queries: Vec<LabelledPost>,
    /// `Engine::locate` on a copy of the store, for the answers the server must give.
    reference: Engine,
}

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        // Under the target directory: the store lives as long as the test binary (statics are never
        // dropped), and `cargo clean` removes what a run leaves.
        let tmp = tempfile::Builder::new()
            .prefix("server-tests-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let dir = tmp.path().join("store");
        let cities = CityTable::read_jsonl(&fixture("engine_cities.jsonl")).unwrap();
        let posts = read_labelled_posts(&fixture("engine_posts.jsonl"))
            .unwrap()
            .posts;
        let mut seen: HashMap<u64, usize> = HashMap::new();
        let (mut support, mut queries) = (Vec::new(), Vec::new());
        for post in posts {
            let city = post.city_id.expect("fixture posts name their city");
            let count = seen.entry(city).or_default();
            *count += 1;
            if *count <= SUPPORT_PER_CITY {
                support.push(SupportPost {
                    text: post.text.clone(),
                    city,
                    source: "engine_posts.jsonl".into(),
                });
            } else {
                queries.push(post);
            }
        }
        Engine::build_index(
            &dir,
            &model(),
            cities.cities(),
            &support,
            &EngineConfig::default(),
            &|_| {},
        )
        .expect("build the fixture store");
        let reference_dir = tmp.path().join("reference");
        copy_dir(&dir, &reference_dir).unwrap();
        let reference = Engine::open(&reference_dir, model(), EngineConfig::default()).unwrap();
        Store {
            _tmp: tmp,
            dir,
            queries,
            reference,
        }
    })
}

/// A private copy of the store (for a server that opens it in place).
fn store_copy(into: &Path) -> PathBuf {
    let dir = into.join("store");
    copy_dir(&store().dir, &dir).unwrap();
    dir
}

/// Settings of the in-process test servers: read-only, any free port, small limits.
fn test_config() -> ServerConfig {
    ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        read_only: true,
        workers: 2,
        batch_limit: 16,
        max_text_chars: 500,
        body_limit_bytes: 64 * 1024,
        ..ServerConfig::default()
    }
}

/// Starts an in-process server on the shared store; `gate` holds the loader back until it yields.
fn start(config: ServerConfig, gate: Option<std::sync::mpsc::Receiver<()>>) -> RunningServer {
    start_on(config, store().dir.clone(), gate)
}

/// Starts an in-process server on the store in `store_dir`.
fn start_on(
    config: ServerConfig,
    store_dir: PathBuf,
    gate: Option<std::sync::mpsc::Receiver<()>>,
) -> RunningServer {
    let loader: server::Loader = Box::new(move || {
        if let Some(gate) = gate {
            gate.recv()?;
        }
        Ok(StoreSource {
            model: model(),
            store: store_dir,
        })
    });
    server::start(config, loader, Signals::Ignore).expect("start the server")
}

fn base(server: &RunningServer) -> String {
    format!("http://{}", server.addr())
}

/// The server most tests share (never stopped; it dies with the test binary).
fn shared() -> &'static str {
    static SHARED: OnceLock<String> = OnceLock::new();
    SHARED.get_or_init(|| {
        // It is never stopped, so it serves its own copy in place (beside the store, under the target
        // directory) rather than a read-only replica in $TMPDIR that nothing would remove.
        let copy = store().dir.with_file_name("shared-server-store");
        copy_dir(&store().dir, &copy).unwrap();
        let config = ServerConfig {
            read_only: false,
            ..test_config()
        };
        let server = start_on(config, copy, None);
        let url = base(&server);
        wait_ready(&url);
        std::mem::forget(server);
        url
    })
}

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts a problem+json answer with `status` and returns it.
    fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.body
        );
        let problem = self.json();
        assert_eq!(problem["status"], status);
        for member in ["type", "title", "detail"] {
            assert!(problem[member].is_string(), "{member} missing: {problem}");
        }
        problem
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

fn read(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut response = response.expect("an HTTP answer");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.body_mut().read_to_string().unwrap_or_default(),
    }
}

fn get(base: &str, path: &str) -> Reply {
    read(agent().get(format!("{base}{path}")).call())
}

fn post_with(
    agent: &ureq::Agent,
    base: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Reply {
    read(
        agent
            .post(format!("{base}{path}"))
            .header("content-type", content_type)
            .send(body),
    )
}

fn post_json(base: &str, path: &str, body: &Value) -> Reply {
    post_with(
        &agent(),
        base,
        path,
        "application/json",
        body.to_string().as_bytes(),
    )
}

fn wait_ready(base: &str) {
    let started = Instant::now();
    loop {
        if get(base, "/readyz").status == 200 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{base} never became ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Compares two JSON answers: same shape, same strings and integers, floats within a tolerance (a post
/// encoded in another batch may differ in the last bits).
fn assert_close(a: &Value, b: &Value, path: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-3 * (1.0 + x.abs()),
                "{path}: {x} vs {y}"
            );
        }
        (Value::Object(x), Value::Object(y)) => {
            let (mut kx, mut ky): (Vec<&String>, Vec<&String>) =
                (x.keys().collect(), y.keys().collect());
            kx.sort();
            ky.sort();
            assert_eq!(kx, ky, "{path}: keys differ");
            for (key, value) in x {
                assert_close(value, &y[key], &format!("{path}.{key}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: lengths differ");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_close(x, y, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

/// The reference answer for `text`, as the server writes it (no id, full shortlist unless `top_k`).
fn reference_answer(text: &str, top_k: Option<usize>) -> Value {
    let mut answer = store().reference.locate(&[text]).unwrap().remove(0);
    if let Some(k) = top_k {
        answer.top_k.truncate(k);
    }
    serde_json::to_value(LocatedPost { id: None, answer }).unwrap()
}

fn without(mut value: Value, key: &str) -> Value {
    if let Value::Object(map) = &mut value {
        map.remove(key);
    }
    value
}

#[test]
fn openapi_document_matches_the_committed_file() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/openapi.json");
    let generated = server::openapi::document_text();
    if std::env::var_os("CONTRASTGEO_UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date with the routes or the wire types; regenerate with \
         CONTRASTGEO_UPDATE_SCHEMAS=1 cargo test --release --test server",
        path.display()
    );
    let document: Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let refs = generated
        .matches("\"$ref\": \"#/components/schemas/")
        .count();
    assert!(refs > 5, "schemas are referenced from components");
}

#[test]
fn every_documented_route_is_served_and_the_served_document_is_the_committed_one() {
    let base = shared();
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/openapi.json"))
            .unwrap();
    let served = get(base, "/openapi.json");
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    assert_eq!(served.body, committed);
    let document: Value = serde_json::from_str(&committed).unwrap();
    let paths = document["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let mut registered: Vec<(String, String)> = server::routes::ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    documented.sort();
    registered.sort();
    assert_eq!(documented, registered);
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let url = path.replace("{id}", "4671654");
            let reply = match method.as_str() {
                "get" => get(base, &url),
                "post" => post_json(base, &url, &json!({"text": "Keep Austin weird"})),
                other => panic!("undocumented method {other}"),
            };
            // This shared server is a read-only replica of a plain index: write routes want the key
            // first (401), and the store's write side (jobs, versions) is not there (403).
            let expected = if item[method].get("security").is_some() {
                401
            } else if path.starts_with("/v1/jobs") || path == "/v1/models" {
                403
            } else {
                200
            };
            assert_eq!(reply.status, expected, "{method} {path}: {}", reply.body);
        }
    }
}

#[test]
fn health_readiness_and_metrics_answer() {
    let base = shared();
    let health = get(base, "/healthz");
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"status": "ok"}))
    );
    let ready = get(base, "/readyz").json();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["cities"], 20);
    assert_eq!(ready["read_only"], false);
    assert!(ready["model"].as_str().unwrap().starts_with("base:"));
    assert!(ready["store"]
        .as_str()
        .unwrap()
        .ends_with("shared-server-store"));

    // Generate a success, a problem and a batch, then read them back.
    assert_eq!(
        post_json(base, "/v1/locate", &json!({"text": "Snow on the Rockies"})).status,
        200
    );
    get(base, "/v1/cities/1").problem(404);
    let metrics = get(base, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    for needle in [
        r#"contrastgeo_http_requests_total{method="POST",route="/v1/locate",status="200"}"#,
        r#"contrastgeo_http_requests_total{method="GET",route="/v1/cities/{id}",status="404"}"#,
        r#"contrastgeo_http_problems_total{status="404",type="city-not-found"}"#,
        r#"contrastgeo_http_request_duration_seconds_bucket{route="/v1/locate",le="#,
        "contrastgeo_locate_request_posts_bucket",
        "contrastgeo_inference_batch_posts_bucket",
        "contrastgeo_inference_batch_duration_seconds_bucket",
        "contrastgeo_inference_queue_posts ",
    ] {
        assert!(
            metrics.body.contains(needle),
            "{needle} missing:\n{}",
            metrics.body
        );
    }
}

#[test]
fn locate_answers_like_the_engine_and_echoes_the_id_and_truncates_top_k() {
    let base = shared();
    let text = &store().queries[0].text;
    let reply = post_json(base, "/v1/locate", &json!({"text": text, "id": "q-1"}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let answer = reply.json();
    assert_eq!(answer["id"], "q-1");
    assert_eq!(answer["top_k"].as_array().unwrap().len(), 10);
    assert_close(
        &without(answer, "id"),
        &reference_answer(text, None),
        "answer",
    );

    let reply = post_json(
        base,
        "/v1/locate",
        &json!({"text": text, "id": 7, "top_k": 3}),
    );
    let answer = reply.json();
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["top_k"].as_array().unwrap().len(), 3);
    assert_close(
        &without(answer, "id"),
        &reference_answer(text, Some(3)),
        "top 3",
    );

    let answer = post_json(base, "/v1/locate", &json!({"text": text, "top_k": 10})).json();
    assert!(answer.get("id").is_none(), "no id, none echoed");
    assert_eq!(answer["top_k"].as_array().unwrap().len(), 10);
}

#[test]
fn the_http_answer_is_the_locate_commands_record_without_its_line() {
    let base = shared();
    let tmp = tempfile::tempdir().unwrap();
    let cli_store = store_copy(tmp.path());
    let posts: Vec<Value> = store().queries[..6]
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"id": format!("p{i}"), "text": p.text}))
        .collect();
    let input = tmp.path().join("posts.jsonl");
    let lines: Vec<String> = posts.iter().map(Value::to_string).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_contrastgeo"))
        .args(["locate", "--store"])
        .arg(&cli_store)
        .arg("-i")
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let batch = post_json(base, "/v1/locate", &json!({ "posts": posts })).json();
    let results = batch["results"].as_array().unwrap();
    assert_eq!(results.len(), records.len());
    for (served, record) in results.iter().zip(&records) {
        assert_close(served, &without(record.clone(), "line"), "record");
    }
}

#[test]
fn a_batch_answers_its_good_posts_and_gives_each_bad_post_its_own_problem() {
    let base = shared();
    let queries = &store().queries;
    let body = json!({"posts": [
        {"text": queries[1].text, "id": "a"},
        {"text": "   ", "id": "blank"},
        {"text": 42},
        {"text": queries[2].text, "top_k": 2},
        {"text": "x", "top_k": 0},
        {"txt": "typo"},
        {"text": "é".repeat(501)},
    ]});
    let reply = post_json(base, "/v1/locate", &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let results = reply.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 7);
    assert_eq!(results[0]["id"], "a");
    assert_close(
        &without(results[0].clone(), "id"),
        &reference_answer(&queries[1].text, None),
        "post 0",
    );
    assert_close(
        &results[3],
        &reference_answer(&queries[2].text, Some(2)),
        "post 3",
    );
    let expected = [
        (1, 422, "posts[1].text"),
        (2, 400, "posts[2].text"),
        (4, 422, "posts[4].top_k"),
        (5, 400, "posts[5].txt"),
        (6, 422, "posts[6].text"),
    ];
    for (index, status, field) in expected {
        let problem = &results[index];
        assert_eq!(problem["index"], index, "{problem}");
        assert_eq!(problem["status"], status, "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{problem}"
        );
        assert!(problem.get("city_id").is_none());
    }

    // A batch of nothing but bad posts is still a 200 with one problem each.
    let all_bad = post_json(
        base,
        "/v1/locate",
        &json!({"posts": [{"text": ""}, {"text": ""}]}),
    );
    assert_eq!(all_bad.status, 200);
    let results = all_bad.json()["results"].as_array().unwrap().clone();
    assert!(results.iter().all(|r| r["status"] == 422));
}

#[test]
fn a_batch_grouped_by_user_answers_each_author_like_the_engine() {
    let base = shared();
    let queries = &store().queries;
    let body = json!({"group_by": "user", "posts": [
        {"text": queries[0].text, "user": "ann"},
        {"text": queries[1].text, "user": "bob", "user_location": "Toronto, Ontario"},
        {"text": queries[2].text, "user": "ann"},
        {"text": queries[3].text},
        {"text": "", "user": "bob"},
    ]});
    let reply = post_json(base, "/v1/locate", &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    let authors = answer["authors"].as_array().unwrap();
    assert_eq!(authors.len(), 2, "{answer}");
    assert_eq!(
        (authors[0]["user"].as_str(), authors[1]["user"].as_str()),
        (Some("ann"), Some("bob"))
    );
    assert_eq!(authors[0]["posts"], json!([0, 2]));
    assert_eq!(authors[1]["posts"], json!([1]));
    // The same aggregate the engine gives for those posts.
    let expected = store()
        .reference
        .locate_authors(
            &[
                vec![
                    PostQuery::text(&queries[0].text),
                    PostQuery::text(&queries[2].text),
                ],
                vec![PostQuery {
                    text: &queries[1].text,
                    profile: Some("Toronto, Ontario"),
                }],
            ],
            AuthorRule::default(),
        )
        .unwrap();
    for (author, expected) in authors.iter().zip(&expected) {
        assert_eq!(author["city_id"], expected.answer.city_id, "{author}");
        assert_eq!(author["posts_used"], expected.posts_used, "{author}");
    }
    // The post without a user and the empty one are refused by position; the others were used.
    let problems = answer["problems"].as_array().unwrap();
    let refused: Vec<(u64, &str)> = problems
        .iter()
        .map(|p| (p["index"].as_u64().unwrap(), p["field"].as_str().unwrap()))
        .collect();
    assert_eq!(refused, [(3, "posts[3].user"), (4, "posts[4].text")]);
    // An unknown grouping is a 400 naming the field.
    let bad = post_json(
        base,
        "/v1/locate",
        &json!({"group_by": "city", "posts": [{"text": "hi"}]}),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.json()["field"], "group_by");
}

#[test]
fn a_profile_location_is_evidence_over_http_too() {
    let base = shared();
    let text = "what a lovely quiet afternoon";
    let reply = post_json(
        base,
        "/v1/locate",
        &json!({"text": text, "user_location": "Toronto, Ontario"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let expected = store()
        .reference
        .locate_posts(&[PostQuery {
            text,
            profile: Some("Toronto, Ontario"),
        }])
        .unwrap()
        .remove(0);
    assert_eq!(reply.json()["city_id"], expected.city_id);
    assert_eq!(expected.name, "Toronto");
    let long = post_json(
        base,
        "/v1/locate",
        &json!({"text": text, "user_location": "é".repeat(501)}),
    );
    assert_eq!(long.status, 422, "{}", long.body);
    assert_eq!(long.json()["field"], "user_location");
}

#[test]
fn bad_requests_get_problems_naming_the_field_and_the_server_keeps_serving() {
    let base = shared();
    let problem = |reply: Reply, status: u16, field: Option<&str>| {
        let problem = reply.problem(status);
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "{problem}");
            assert!(
                problem["detail"].as_str().unwrap().contains(field),
                "{problem}"
            );
        }
        problem
    };
    let a = agent();
    let raw =
        |content_type: &str, body: &[u8]| post_with(&a, base, "/v1/locate", content_type, body);

    // 400: not JSON, wrong types, unknown fields.
    let malformed = problem(raw("application/json", br#"{"text": "#), 400, None);
    assert!(malformed["type"]
        .as_str()
        .unwrap()
        .ends_with("malformed-json"));
    assert!(malformed["detail"].as_str().unwrap().contains("line 1"));
    problem(
        post_json(base, "/v1/locate", &json!({"text": 5})),
        400,
        Some("text"),
    );
    problem(
        post_json(base, "/v1/locate", &json!({"id": 5})),
        400,
        Some("text"),
    );
    problem(
        post_json(base, "/v1/locate", &json!({"text": "a", "top_k": "3"})),
        400,
        Some("top_k"),
    );
    problem(
        post_json(base, "/v1/locate", &json!({"text": "a", "colour": 1})),
        400,
        Some("colour"),
    );
    problem(
        post_json(base, "/v1/locate", &json!(["a"])),
        400,
        Some("body"),
    );
    problem(
        post_json(base, "/v1/locate", &json!({"posts": "a"})),
        400,
        Some("posts"),
    );
    problem(get(base, "/v1/cities/abc"), 400, Some("id"));
    problem(get(base, "/v1/cities?limit=ten"), 400, Some("limit"));

    // 422: values out of range.
    problem(
        post_json(base, "/v1/locate", &json!({"text": ""})),
        422,
        Some("text"),
    );
    problem(
        post_json(base, "/v1/locate", &json!({"text": " \n\t "})),
        422,
        Some("text"),
    );
    let long = problem(
        post_json(base, "/v1/locate", &json!({"text": "a".repeat(501)})),
        422,
        Some("text"),
    );
    assert!(long["detail"].as_str().unwrap().contains("500"), "{long}");
    assert_eq!(
        post_json(base, "/v1/locate", &json!({"text": "a".repeat(500)})).status,
        200,
        "exactly the limit is allowed"
    );
    problem(
        post_json(base, "/v1/locate", &json!({"text": "a", "top_k": 0})),
        422,
        Some("top_k"),
    );
    problem(
        post_json(base, "/v1/locate", &json!({"text": "a", "top_k": 11})),
        422,
        Some("top_k"),
    );
    problem(
        post_json(base, "/v1/locate", &json!({"posts": []})),
        422,
        Some("posts"),
    );
    let too_many: Vec<Value> = (0..17)
        .map(|i| json!({"text": format!("post {i}")}))
        .collect();
    problem(
        post_json(base, "/v1/locate", &json!({"posts": too_many})),
        422,
        Some("posts"),
    );
    problem(get(base, "/v1/cities?limit=0"), 422, Some("limit"));

    // 404, 405, 413, 415.
    problem(get(base, "/v1/cities/999999999"), 404, Some("id"));
    let route = problem(get(base, "/v2/locate"), 404, None);
    assert!(route["type"].as_str().unwrap().ends_with("route-not-found"));
    let method = get(base, "/v1/locate");
    assert_eq!(method.header("allow"), Some("POST"));
    problem(method, 405, None);
    problem(
        read(agent().delete(format!("{base}/v1/cities/4671654")).call()),
        405,
        None,
    );
    let big = format!(r#"{{"text": "{}"}}"#, "a".repeat(70 * 1024));
    let too_large = problem(raw("application/json", big.as_bytes()), 413, None);
    assert!(too_large["detail"].as_str().unwrap().contains("65536"));
    let media = problem(raw("text/plain", br#"{"text": "a"}"#), 415, None);
    assert!(media["detail"].as_str().unwrap().contains("text/plain"));

    // And after all of that, the server still answers.
    let fine = post_json(
        base,
        "/v1/locate",
        &json!({"text": "Lobster rolls by the harbour"}),
    );
    assert_eq!(fine.status, 200, "{}", fine.body);
    assert_eq!(get(base, "/healthz").status, 200);
}

#[test]
fn cities_are_searched_by_name_prefix_and_looked_up_by_id() {
    let base = shared();
    let all = get(base, "/v1/cities?limit=100").json();
    let names: Vec<&str> = all["cities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 20);
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| n.to_lowercase());
    assert_eq!(names, sorted, "name order");
    assert_eq!(
        get(base, "/v1/cities").json()["cities"]
            .as_array()
            .unwrap()
            .len(),
        20
    );

    for query in ["sea", "SEA", "Sea"] {
        let found = get(base, &format!("/v1/cities?q={query}")).json();
        let cities = found["cities"].as_array().unwrap();
        assert_eq!(cities.len(), 1, "{found}");
        assert_eq!(cities[0]["name"], "Seattle");
        assert_eq!(cities[0]["id"], 5809844);
    }
    let first_letter = names[0].chars().next().unwrap().to_string();
    let limited = get(base, &format!("/v1/cities?q={first_letter}&limit=1")).json();
    assert_eq!(limited["cities"].as_array().unwrap().len(), 1);
    assert_eq!(get(base, "/v1/cities?q=zzz").json(), json!({"cities": []}));

    let austin = get(base, "/v1/cities/4671654");
    assert_eq!(austin.status, 200);
    let austin = austin.json();
    assert_eq!(austin["name"], "Austin");
    assert_eq!(austin["admin1"], "Texas");
    assert_eq!(austin["has_prompt"], true);
    assert_eq!(austin["support_posts"], SUPPORT_PER_CITY);
}

#[test]
fn thirty_two_concurrent_clients_get_the_engines_answers() {
    let base = shared().to_string();
    let queries: Vec<String> = store().queries.iter().map(|p| p.text.clone()).collect();
    let texts: Vec<&str> = queries.iter().map(String::as_str).collect();
    let reference = store().reference.locate(&texts).unwrap();
    let clients = 32;
    let barrier = Arc::new(Barrier::new(clients));
    let answers: Arc<Mutex<Vec<(usize, Value)>>> = Arc::default();
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let (base, queries, barrier, answers) = (
                base.clone(),
                queries.clone(),
                Arc::clone(&barrier),
                Arc::clone(&answers),
            );
            std::thread::spawn(move || {
                let agent = agent();
                barrier.wait();
                for i in (client..queries.len()).step_by(clients) {
                    let body = json!({"text": queries[i], "id": i}).to_string();
                    let reply = post_with(
                        &agent,
                        &base,
                        "/v1/locate",
                        "application/json",
                        body.as_bytes(),
                    );
                    assert_eq!(reply.status, 200, "{}", reply.body);
                    answers.lock().unwrap().push((i, reply.json()));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a client failed");
    }
    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), queries.len());
    for (i, answer) in answers.iter() {
        assert_eq!(answer["id"], *i);
        let expected = serde_json::to_value(LocatedPost {
            id: None,
            answer: reference[*i].clone(),
        })
        .unwrap();
        assert_close(
            &without(answer.clone(), "id"),
            &expected,
            &format!("post {i}"),
        );
    }
    // The requests were batched: fewer inference batches than requests.
    let metrics = get(&base, "/metrics").body;
    let batches: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("contrastgeo_inference_batch_posts_count "))
        .unwrap()
        .parse()
        .unwrap();
    let posts: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("contrastgeo_inference_batch_posts_sum "))
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("{posts} posts in {batches} inference batches");
    assert!(batches < posts, "{posts} posts in {batches} batches");
}

#[test]
fn readyz_is_503_while_loading_then_200() {
    let (release, gate) = std::sync::mpsc::channel();
    let server = start(test_config(), Some(gate));
    let base = base(&server);
    let not_ready = get(&base, "/readyz");
    assert_eq!(not_ready.header("retry-after"), Some("1"));
    let problem = not_ready.problem(503);
    assert!(problem["type"].as_str().unwrap().ends_with("not-ready"));
    assert_eq!(get(&base, "/healthz").status, 200, "alive while loading");
    post_json(&base, "/v1/locate", &json!({"text": "hello"})).problem(503);
    get(&base, "/v1/cities?q=a").problem(503);
    // Validation does not wait for the model.
    post_json(&base, "/v1/locate", &json!({"text": ""})).problem(422);

    release.send(()).unwrap();
    wait_ready(&base);
    assert_eq!(
        post_json(&base, "/v1/locate", &json!({"text": "hello"})).status,
        200
    );
    server.stop(true).expect("a clean stop");
}

#[test]
fn a_store_that_cannot_be_opened_stops_the_server_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-store");
    let loader: server::Loader = Box::new(move || {
        Ok(StoreSource {
            model: model(),
            store: missing,
        })
    });
    let config = ServerConfig {
        read_only: false,
        ..test_config()
    };
    let server = server::start(config, loader, Signals::Ignore).unwrap();
    let error = server.wait().unwrap_err().to_string();
    assert!(error.contains("no index"), "{error}");
}

#[test]
fn a_full_queue_answers_503_with_retry_after_and_recovers() {
    let server = start(
        ServerConfig {
            queue_capacity: 4,
            batch_limit: 4,
            max_batch_posts: 4,
            max_batch_wait_ms: 0,
            retry_after_s: 2,
            ..test_config()
        },
        None,
    );
    let base = base(&server);
    wait_ready(&base);
    let posts: Vec<Value> = store().queries[..4]
        .iter()
        .map(|p| json!({"text": p.text.repeat(4)}))
        .collect();
    let body = json!({ "posts": posts }).to_string();
    let clients = 16;
    let barrier = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (base, body, barrier) = (base.clone(), body.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let agent = agent();
                barrier.wait();
                post_with(
                    &agent,
                    &base,
                    "/v1/locate",
                    "application/json",
                    body.as_bytes(),
                )
            })
        })
        .collect();
    let replies: Vec<Reply> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let (mut answered, mut refused) = (0, 0);
    for reply in replies {
        match reply.status {
            200 => {
                answered += 1;
                assert_eq!(reply.json()["results"].as_array().unwrap().len(), 4);
            }
            503 => {
                refused += 1;
                assert_eq!(reply.header("retry-after"), Some("2"));
                let problem = reply.problem(503);
                assert!(problem["type"].as_str().unwrap().ends_with("overloaded"));
            }
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    assert!(
        answered >= 1 && refused >= 1,
        "{answered} answered, {refused} refused"
    );
    let metrics = get(&base, "/metrics").body;
    assert!(metrics.contains(r#"contrastgeo_http_problems_total{status="503",type="overloaded"}"#));
    assert_eq!(
        post_with(
            &agent(),
            &base,
            "/v1/locate",
            "application/json",
            body.as_bytes()
        )
        .status,
        200,
        "serves again once the queue drains"
    );
    server.stop(true).unwrap();
}

#[test]
fn a_request_not_answered_in_time_gets_504() {
    let server = start(
        ServerConfig {
            request_timeout_ms: 1,
            ..test_config()
        },
        None,
    );
    let base = base(&server);
    wait_ready(&base);
    let long = store().queries[0].text.repeat(6);
    let posts: Vec<Value> = (0..16).map(|_| json!({"text": long})).collect();
    let problem = post_json(&base, "/v1/locate", &json!({ "posts": posts })).problem(504);
    assert!(problem["type"].as_str().unwrap().ends_with("timeout"));
    assert_eq!(get(&base, "/healthz").status, 200);
    server.stop(true).unwrap();
}

/// The real binary serving on a free port; killed if a test fails before it exits.
struct ServerProcess {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_contrastgeo"))
            .arg("serve")
            .args(args)
            .args(["--bind", "127.0.0.1:0"])
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "contrastgeo=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn contrastgeo serve");
        let stderr = child.stderr.take().unwrap();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let plain = strip_ansi(&line);
                if let Some(rest) = plain.split("listening on http://").nth(1) {
                    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    let _ = addr_tx.send(addr);
                }
                lines.lock().unwrap().push(plain);
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no address logged: {:?}", log.lock().unwrap()));
        Self {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit code.
    fn wait(&mut self, within: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                started.elapsed() < within,
                "still running after {within:?}: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn metric(base: &str, name: &str) -> f64 {
    get(base, "/metrics")
        .body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_the_process_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = store_copy(tmp.path());
    let mut server = ServerProcess::spawn(&[
        "--store",
        dir.to_str().unwrap(),
        "--max-batch-posts",
        "8",
        "--batch-limit",
        "16",
    ]);
    wait_ready(&server.base);
    let posts: Vec<Value> = store().queries[..16]
        .iter()
        .map(|p| json!({"text": p.text}))
        .collect();
    let body = json!({ "posts": posts }).to_string();
    let clients = 8;
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (base, body) = (server.base.clone(), body.clone());
            std::thread::spawn(move || {
                post_with(
                    &agent(),
                    &base,
                    "/v1/locate",
                    "application/json",
                    body.as_bytes(),
                )
            })
        })
        .collect();
    // Every request is in: parsed and queued or being computed.
    let started = Instant::now();
    while metric(&server.base, "contrastgeo_locate_request_posts_count") < clients as f64 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "requests never arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    server.signal("TERM");
    for thread in threads {
        let reply = thread.join().unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let results = reply.json()["results"].as_array().unwrap().clone();
        assert_eq!(results.len(), 16);
        assert!(results.iter().all(|r| r["city_id"].is_u64()));
    }
    assert_eq!(server.wait(Duration::from_secs(60)), Some(0));
    let log = server.log.lock().unwrap().join("\n");
    assert!(log.contains("SIGTERM"), "{log}");
}

/// A generational store (as `contrastgeo index build` writes it) of the fixture cities and their first support
/// posts, built by the real binary in `into`.
fn generational_store(into: &Path) -> PathBuf {
    let support = into.join("support.jsonl");
    let lines: Vec<String> = read_labelled_posts(&fixture("engine_posts.jsonl"))
        .unwrap()
        .posts
        .iter()
        .filter(|p| !store().queries.iter().any(|q| q.text == p.text))
        .map(|p| json!({"text": p.text, "city_id": p.city_id}).to_string())
        .collect();
    std::fs::write(&support, lines.join("\n") + "\n").unwrap();
    let dir = into.join("generational");
    let output = Command::new(env!("CARGO_BIN_EXE_contrastgeo"))
        .args(["index", "build", "--store"])
        .arg(&dir)
        .arg("--cities")
        .arg(fixture("engine_cities.jsonl"))
        .arg("--support")
        .arg(&support)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

#[test]
fn read_only_replicas_serve_copies_of_one_generational_store_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = generational_store(tmp.path());
    let args = ["--store", dir.to_str().unwrap(), "--read-only"];
    let mut first = ServerProcess::spawn(&args);
    let mut second = ServerProcess::spawn(&args);
    wait_ready(&first.base);
    wait_ready(&second.base);
    let text = &store().queries[3].text;
    let a = post_json(&first.base, "/v1/locate", &json!({"text": text})).json();
    let b = post_json(&second.base, "/v1/locate", &json!({"text": text})).json();
    assert_close(&a, &b, "replicas");
    let mut copies = Vec::new();
    for server in [&first, &second] {
        let ready = get(&server.base, "/readyz").json();
        assert_eq!(ready["read_only"], true);
        let copy = PathBuf::from(ready["store"].as_str().unwrap());
        assert_ne!(copy, dir);
        assert!(copy.is_dir());
        copies.push(copy);
    }
    assert_ne!(copies[0], copies[1], "each replica has its own copy");
    // The original stays unlocked: a writer can still open it.
    let owner = LiveStore::open(&dir, &candle_core::Device::Cpu, EngineConfig::default());
    drop(owner.expect("the original is not locked"));
    first.signal("INT");
    second.signal("TERM");
    assert_eq!(first.wait(Duration::from_secs(30)), Some(0));
    assert_eq!(second.wait(Duration::from_secs(30)), Some(0));
    for copy in copies {
        assert!(!copy.exists(), "{} is left behind", copy.display());
    }
}

#[test]
fn the_binary_refuses_bad_limits_as_usage_errors() {
    for args in [
        vec!["--batch-limit", "0"],
        vec!["--batch-limit", "100", "--queue-capacity", "10"],
        vec!["--bind", "not-an-address"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_contrastgeo"))
            .arg("serve")
            .args(&args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    }
}

#[test]
fn the_binary_refuses_a_missing_store_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing-here");
    let output = Command::new(env!("CARGO_BIN_EXE_contrastgeo"))
        .args(["serve", "--bind", "127.0.0.1:0", "--store"])
        .arg(&missing)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no index"), "{stderr}");
}

/// Checks `value` against a JSON Schema of the OpenAPI document (the subset schemars writes: `$ref`,
/// `anyOf`/`oneOf`, `type`, `properties`, `required`, `items`, `minimum`, `minItems`). Objects are strict: a
/// member the schema does not declare is an error.
fn conforms(value: &Value, schema: &Value, document: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return conforms(
            value,
            &document["components"]["schemas"][name],
            document,
            at,
        );
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema[key].as_array() {
            let failures: Vec<String> = options
                .iter()
                .filter_map(|option| conforms(value, option, document, at).err())
                .collect();
            return match failures.len() < options.len() {
                true => Ok(()),
                false => Err(format!("{at}: no {key} option fits: {failures:?}")),
            };
        }
    }
    let kinds: Vec<&str> = match &schema["type"] {
        Value::String(kind) => vec![kind.as_str()],
        Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let kind_of = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let kind = kind_of(value);
    let fits = kinds.is_empty()
        || kinds.contains(&kind)
        || (kind == "integer" && kinds.contains(&"number"));
    if !fits {
        return Err(format!("{at}: a {kind}, the schema says {kinds:?}"));
    }
    if let (Some(minimum), Some(number)) = (schema["minimum"].as_f64(), value.as_f64()) {
        if number < minimum {
            return Err(format!("{at}: {number} is below {minimum}"));
        }
    }
    match value {
        Value::Object(members) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap();
                if !members.contains_key(name) {
                    return Err(format!("{at}: `{name}` is missing"));
                }
            }
            if let Some(properties) = schema["properties"].as_object() {
                for (name, member) in members {
                    let property = properties
                        .get(name)
                        .ok_or_else(|| format!("{at}: `{name}` is not in the schema"))?;
                    conforms(member, property, document, &format!("{at}.{name}"))?;
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema["minItems"].as_u64() {
                if (items.len() as u64) < min {
                    return Err(format!("{at}: fewer than {min} items"));
                }
            }
            for (i, item) in items.iter().enumerate() {
                conforms(item, &schema["items"], document, &format!("{at}[{i}]"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[test]
fn real_answers_conform_to_the_openapi_schemas() {
    let base = shared();
    let document: Value = serde_json::from_str(&server::openapi::document_text()).unwrap();
    let check = |method: &str, path: &str, reply: &Reply| {
        let content_type = reply.header("content-type").unwrap().to_string();
        let schema = &document["paths"][path][method]["responses"][reply.status.to_string()]
            ["content"][content_type.as_str()]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path} {} ({content_type}) is not documented",
            reply.status
        );
        conforms(&reply.json(), schema, &document, "$")
            .unwrap_or_else(|e| panic!("{method} {path} {}: {e}\n{}", reply.status, reply.body));
    };
    let text = &store().queries[5].text;
    let requests: Vec<(&str, &str, Reply)> = vec![
        (
            "post",
            "/v1/locate",
            post_json(
                base,
                "/v1/locate",
                &json!({"text": text, "id": {"any": [1]}}),
            ),
        ),
        (
            "post",
            "/v1/locate",
            post_json(
                base,
                "/v1/locate",
                &json!({"posts": [{"text": text}, {"text": ""}]}),
            ),
        ),
        (
            "post",
            "/v1/locate",
            post_json(base, "/v1/locate", &json!({"text": 1})),
        ),
        (
            "post",
            "/v1/locate",
            post_json(base, "/v1/locate", &json!({"text": "a", "top_k": 99})),
        ),
        (
            "post",
            "/v1/locate",
            post_with(&agent(), base, "/v1/locate", "text/csv", b"text\nhi"),
        ),
        ("get", "/v1/cities", get(base, "/v1/cities?q=a&limit=5")),
        ("get", "/v1/cities", get(base, "/v1/cities?limit=-1")),
        ("get", "/v1/cities/{id}", get(base, "/v1/cities/5809844")),
        ("get", "/v1/cities/{id}", get(base, "/v1/cities/0")),
        ("get", "/healthz", get(base, "/healthz")),
        ("get", "/readyz", get(base, "/readyz")),
        ("get", "/openapi.json", get(base, "/openapi.json")),
    ];
    for (method, path, reply) in &requests {
        check(method, path, reply);
    }
    // The checker does catch a drifted answer.
    let schema = &document["components"]["schemas"]["LocatedPost"];
    let mut answer = requests[0].2.json();
    assert!(conforms(&answer, schema, &document, "$").is_ok());
    answer["surprise"] = json!(1);
    assert!(conforms(&answer, schema, &document, "$").is_err());
    answer.as_object_mut().unwrap().remove("surprise");
    answer.as_object_mut().unwrap().remove("city_id");
    assert!(conforms(&answer, schema, &document, "$").is_err());
}

#[test]
fn start_up_refuses_a_taken_port_an_empty_key_file_and_bad_limits() {
    let taken = shared().trim_start_matches("http://").parse().unwrap();
    let no_loader = || -> server::Loader { Box::new(|| anyhow::bail!("never loaded")) };
    let error = server::start(
        ServerConfig {
            bind: taken,
            ..test_config()
        },
        no_loader(),
        Signals::Ignore,
    )
    .err()
    .expect("the port is taken");
    assert!(error.to_string().contains(&taken.to_string()), "{error}");

    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key");
    std::fs::write(&key, "\n \n").unwrap();
    let error = server::start(
        ServerConfig {
            read_only: false,
            api_key_file: Some(key),
            ..test_config()
        },
        no_loader(),
        Signals::Ignore,
    )
    .err()
    .expect("an empty key file");
    assert!(error.to_string().contains("empty"), "{error}");

    let error = server::start(
        ServerConfig {
            batch_limit: 2000,
            ..test_config()
        },
        no_loader(),
        Signals::Ignore,
    )
    .err()
    .expect("a batch larger than the queue");
    assert!(error.to_string().contains("queue_capacity"), "{error}");
}

#[test]
fn clients_that_leave_mid_request_do_not_disturb_the_others() {
    use std::io::Write;
    let base = shared();
    let addr = base.trim_start_matches("http://");
    let posts: Vec<Value> = store().queries[..16]
        .iter()
        .map(|p| json!({"text": p.text}))
        .collect();
    let body = json!({ "posts": posts }).to_string();
    for cut in [None, Some(body.len() / 2)] {
        // A full request (or half a body) written, then the connection closed without reading the answer.
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let sent = &body.as_bytes()[..cut.unwrap_or(body.len())];
        write!(
            stream,
            "POST /v1/locate HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        stream.write_all(sent).unwrap();
        drop(stream);
    }
    let text = &store().queries[7].text;
    let reply = post_json(base, "/v1/locate", &json!({"text": text}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_close(&reply.json(), &reference_answer(text, None), "after");
}
