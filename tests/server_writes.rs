//! The REST write routes end to end: an in-process server over a real store with generations (real model,
//! real sled + HNSW, the 20 fixture cities less Nashville), an API key, and real HTTP: a city added with five
//! posts is answered at once; bad bodies get problems naming the field; a retrain job runs while queries are
//! answered, then the versions and a rollback.

mod common;

use std::time::{Duration, Instant};

use common::{call, nashville_record as nashville, NASHVILLE_EXAMPLES as EXAMPLES};
use contrastgeo::server::{self, RunningServer, ServerConfig, Signals, StoreSource};
use serde_json::json;

const KEY: &str = "test-key-123";

struct Server {
    _tmp: tempfile::TempDir,
    running: RunningServer,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr())
    }
}

/// A live store of the fixture cities without Nashville, served with an API key.
fn start() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    common::fixture_live_store(&dir, "Nashville", 3);
    let model = common::base_model();
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let config = ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        api_key_file: Some(key_file),
        workers: 2,
        retrain_threads: 1,
        ..ServerConfig::default()
    };
    let loader: server::Loader = Box::new(move || Ok(StoreSource { model, store: dir }));
    let running = server::start(config, loader, Signals::Ignore).unwrap();
    let server = Server { _tmp: tmp, running };
    let started = Instant::now();
    while call("GET", &server.url("/readyz"), None, None).0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(120), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

#[test]
fn a_city_added_over_rest_is_answered_at_once_and_bad_bodies_name_the_field() {
    let server = start();
    let query = json!({"text": "Hot chicken and honky tonks on Broadway tonight"});
    let (_, before) = call("POST", &server.url("/v1/locate"), Some(&query), None);
    assert_ne!(before["name"], "Nashville");

    let body = json!({"city": nashville(), "examples": EXAMPLES});
    let (status, problem) = call("POST", &server.url("/v1/cities"), Some(&body), None);
    assert_eq!(status, 401, "{problem}");
    let (status, _) = call(
        "POST",
        &server.url("/v1/cities"),
        Some(&body),
        Some("wrong"),
    );
    assert_eq!(status, 401);

    for (bad, field, status) in [
        (
            json!({"city": {"name": "Nowhere"}, "examples": ["x"]}),
            "city.lat",
            422,
        ),
        (
            json!({"city": {"name": "Up", "lat": 91.0, "lon": 0.0}}),
            "city.lat",
            422,
        ),
        (
            json!({"city": {"name": "Up", "lat": "north", "lon": 0.0}}),
            "city.lat",
            400,
        ),
        (
            json!({"city": nashville(), "examples": ["fine", "  "]}),
            "examples[1]",
            422,
        ),
        (
            json!({"city": nashville(), "examples": "one"}),
            "examples",
            400,
        ),
        (json!({"examples": []}), "body", 400),
    ] {
        let (got, problem) = call("POST", &server.url("/v1/cities"), Some(&bad), Some(KEY));
        assert_eq!(got, status, "{bad}: {problem}");
        assert_eq!(problem["field"], field, "{bad}: {problem}");
    }

    let acknowledged = Instant::now();
    let (status, stored) = call("POST", &server.url("/v1/cities"), Some(&body), Some(KEY));
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["examples_added"], 5);
    assert_eq!(stored["city"]["name"], "Nashville");
    let id = stored["city"]["id"].as_u64().unwrap();
    let (status, answer) = call("POST", &server.url("/v1/locate"), Some(&query), None);
    assert_eq!(status, 200);
    assert_eq!(answer["name"], "Nashville", "{answer}");
    assert!(acknowledged.elapsed() < Duration::from_secs(5));
    assert!(stored["searchable_after_ms"].as_f64().unwrap() < 1000.0);

    let (status, city) = call("GET", &server.url(&format!("/v1/cities/{id}")), None, None);
    assert_eq!((status, city["support_posts"].as_u64()), (200, Some(5)));
    let more = json!({"examples": ["Printers Alley jazz after midnight"]});
    let (status, stored) = call(
        "POST",
        &server.url(&format!("/v1/cities/{id}/examples")),
        Some(&more),
        Some(KEY),
    );
    assert_eq!(
        (status, stored["examples_added"].as_u64()),
        (200, Some(1)),
        "{stored}"
    );
    let (status, problem) = call(
        "POST",
        &server.url("/v1/cities/123456789/examples"),
        Some(&more),
        Some(KEY),
    );
    assert_eq!((status, problem["field"].as_str()), (404, Some("id")));
    let (status, _) = call("GET", &server.url("/v1/jobs/77"), None, None);
    assert_eq!(status, 404);
}

#[test]
fn a_retrain_job_runs_while_queries_are_answered_then_versions_and_rollback() {
    let server = start();
    let body = json!({"city": nashville(), "examples": EXAMPLES});
    assert_eq!(
        call("POST", &server.url("/v1/cities"), Some(&body), Some(KEY)).0,
        201
    );
    // Gate open: a 3-step retrain judged on one held-out Nashville post is a coin toss (the gate has its
    // own test in tests/ingest.rs).
    let retrain = json!({"epochs": 1, "min_steps": 3, "gate_margin": 1.0});
    let (status, accepted) = call(
        "POST",
        &server.url("/v1/retrain"),
        Some(&retrain),
        Some(KEY),
    );
    assert_eq!(status, 202, "{accepted}");
    let job = accepted["job"]["id"].as_u64().unwrap();
    let (status, _) = call(
        "POST",
        &server.url("/v1/retrain"),
        Some(&retrain),
        Some(KEY),
    );
    assert_eq!(status, 409, "one retrain at a time");

    let started = Instant::now();
    let mut answered = 0;
    let state = loop {
        let (status, answer) = call(
            "POST",
            &server.url("/v1/locate"),
            Some(&json!({"text": "Rain again in Seattle"})),
            None,
        );
        assert_eq!(status, 200, "a query failed during the retrain: {answer}");
        answered += 1;
        let (_, job) = call("GET", &server.url(&format!("/v1/jobs/{job}")), None, None);
        if job["state"] != "running" {
            break job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the retrain never finished"
        );
    };
    assert!(answered >= 1);
    assert_eq!(state["state"], "succeeded", "{state}");
    assert_eq!(state["report"]["swapped"], true);

    let (status, models) = call("GET", &server.url("/v1/models"), None, None);
    assert_eq!(status, 200);
    assert_eq!(models["current"], 2, "{models}");
    assert_eq!(models["models"].as_array().unwrap().len(), 2);
    let (_, ready) = call("GET", &server.url("/readyz"), None, None);
    assert!(
        ready["model"].as_str().unwrap().starts_with("trained:"),
        "{ready}"
    );

    let (status, problem) = call(
        "POST",
        &server.url("/v1/models/rollback"),
        Some(&json!({"to": 9})),
        Some(KEY),
    );
    assert_eq!((status, problem["field"].as_str()), (422, Some("to")));
    let (status, rolled) = call(
        "POST",
        &server.url("/v1/models/rollback"),
        Some(&json!({"to": 1})),
        Some(KEY),
    );
    assert_eq!(
        (status, rolled["current"].as_u64()),
        (200, Some(1)),
        "{rolled}"
    );
    let (_, ready) = call("GET", &server.url("/readyz"), None, None);
    assert!(
        ready["model"].as_str().unwrap().starts_with("base:"),
        "{ready}"
    );
    let (_, answer) = call(
        "POST",
        &server.url("/v1/locate"),
        Some(&json!({"text": "Hot chicken and honky tonks on Broadway tonight"})),
        None,
    );
    assert_eq!(
        answer["name"], "Nashville",
        "the rolled-back version has the ingested city"
    );
}
