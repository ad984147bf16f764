//! The analyst's web page in a real browser: headless Chromium driven over WebDriver against a real server
//! (the real base model, a real store built from `tests/fixtures`, an API key file).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`apt-get install -y chromium chromium-driver`; `.ci/run`
//! installs them); `CONTRASTGEO_CHROMIUM` and `CONTRASTGEO_CHROMEDRIVER` name other binaries. Without them
//! the tests fail at once saying how to install them. Screenshots go to `target/screenshots/`.
//!
//! The WebDriver client is the few W3C WebDriver commands the tests use, over `ureq` (already the HTTP
//! client of the other server tests): a client crate would add an async stack and dozens of crates to the
//! build for the same dozen HTTP calls.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use contrastgeo::engine::{EngineConfig, LiveStore};
use contrastgeo::model::GeoModel;
use contrastgeo::server::{self, RunningServer, ServerConfig, Signals, StoreSource};
use serde_json::{json, Value};

/// The key of the test server's write routes.
const API_KEY: &str = "page-test-key";

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// `(status, JSON body)` of a request.
fn call(method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let agent = agent();
    let response = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        (_, body) => agent
            .post(url)
            .header("content-type", "application/json")
            .send(body.unwrap_or(&json!({})).to_string().as_bytes()),
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

// ---- The server ----------------------------------------------------------------------------------------

/// A server over a writable store built from the fixtures (five support posts per city), with an API key.
struct TestServer {
    running: Option<RunningServer>,
    base: String,
    _tmp: tempfile::TempDir,
}

impl TestServer {
    fn start() -> Self {
        Self::start_with(EngineConfig::default())
    }

    /// A server over the fixture store answering with `engine`.
    fn start_with(engine: EngineConfig) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let model = model();
        let dir = tmp.path().join("store");
        LiveStore::create(
            &dir,
            &model,
            common::fixture_cities().cities(),
            &common::fixture_support(5),
            &EngineConfig::default(),
            &|_| {},
        )
        .expect("build the fixture store");
        let key_file = tmp.path().join("api-key");
        std::fs::write(&key_file, format!("{API_KEY}\n")).unwrap();
        let config = ServerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            api_key_file: Some(key_file),
            workers: 2,
            engine,
            ..ServerConfig::default()
        };
        let loader: server::Loader = Box::new(move || Ok(StoreSource { model, store: dir }));
        let running = server::start(config, loader, Signals::Ignore).expect("start the server");
        let base = format!("http://{}", running.addr());
        let started = Instant::now();
        while call("GET", &format!("{base}/readyz"), None).0 != 200 {
            assert!(started.elapsed() < Duration::from_secs(120), "never ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            running: Some(running),
            base,
            _tmp: tmp,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop(false);
        }
    }
}

/// The base model, loaded once per test binary.
fn model() -> Arc<GeoModel> {
    common::base_model()
}

/// The server the read-only tests share (never stopped; it dies with the test binary). The test that writes
/// has its own, so its new city and retrain cannot change the answers the others compare.
fn server() -> &'static str {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = TestServer::start();
        let base = server.base.clone();
        std::mem::forget(server);
        base
    })
}

// ---- A small WebDriver client -----------------------------------------------------------------------

/// A headless Chromium session, and the chromedriver process serving it.
struct Browser {
    driver: Child,
    session: String,
}

/// A binary named by `env`, else the first of `names` found on the PATH.
fn find_binary(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width` x `height`.
    fn start(width: u32, height: u32) -> Self {
        let install =
            "install them with `apt-get update && apt-get install -y chromium chromium-driver` \
             (Debian; .ci/run does this), or name the binaries with CONTRASTGEO_CHROMIUM and \
             CONTRASTGEO_CHROMEDRIVER";
        let chromium = find_binary("CONTRASTGEO_CHROMIUM", &["chromium", "chromium-browser"])
            .unwrap_or_else(|| {
                panic!("the page tests need Chromium, which was not found: {install}")
            });
        let chromedriver = find_binary("CONTRASTGEO_CHROMEDRIVER", &["chromedriver"])
            .unwrap_or_else(|| {
                panic!("the page tests need chromedriver, which was not found: {install}")
            });
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {install}", chromedriver.display()));
        let mut browser = Self {
            driver,
            session: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        loop {
            let ready = agent()
                .get(format!("{}/status", browser.session))
                .call()
                .is_ok();
            if ready {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--hide-scrollbars", format!("--window-size={width},{height}")]
            }
        }}});
        let (status, created) = call(
            "POST",
            &format!("{}/session", browser.session),
            Some(&capabilities),
        );
        assert_eq!(status, 200, "a Chromium session: {created}");
        let id = created["value"]["sessionId"].as_str().unwrap().to_string();
        browser.session = format!("{}/session/{id}", browser.session);
        browser.set_size(width, height);
        browser
    }

    /// A WebDriver command; returns its `value`, panicking with the driver's message on an error.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, reply) = call(method, &format!("{}{path}", self.session), body.as_ref());
        assert_eq!(status, 200, "WebDriver {method} {path}: {reply}");
        reply["value"].clone()
    }

    fn set_size(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    /// The element matching a CSS selector.
    fn find(&self, css: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: {found}"))
            .to_string()
    }

    /// Types `text` into the element (after clearing it when `clear`).
    fn type_into(&self, css: &str, text: &str, clear: bool) {
        let element = self.find(css);
        if clear {
            self.command(
                "POST",
                &format!("/element/{element}/clear"),
                Some(json!({})),
            );
        }
        if text.is_empty() {
            return;
        }
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.command(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    /// Presses Enter on the element (a keyboard user activating a button).
    fn press_enter(&self, css: &str) {
        let element = self.find(css);
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({"text": "\u{E007}"})),
        );
    }

    /// Clicks `(dx, dy)` CSS pixels from the centre of the element.
    fn click_at(&self, css: &str, dx: f64, dy: f64) {
        // Pointer actions do not scroll: bring the element to the middle of the window first.
        let element = self.scroll_to(css, "center");
        let origin = json!({ ELEMENT: element });
        self.command(
            "POST",
            "/actions",
            Some(json!({"actions": [{
                "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                "actions": [
                    {"type": "pointerMove", "origin": origin, "x": dx.round() as i64, "y": dy.round() as i64},
                    {"type": "pointerDown", "button": 0},
                    {"type": "pointerUp", "button": 0}
                ]
            }]})),
        );
    }

    /// Runs `script` (a function body; `arguments` as in WebDriver) in the page and returns its value.
    fn js(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Waits until `script` returns something truthy (not null, false, 0 or ""), and returns it.
    fn wait_for(&self, what: &str, script: &str) -> Value {
        let started = Instant::now();
        loop {
            let value = self.js(script);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Scrolls the element to `block` (`start`, `center`) of the window; returns the element.
    fn scroll_to(&self, css: &str, block: &str) -> String {
        let element = self.find(css);
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({
                "script": "arguments[0].scrollIntoView({block: arguments[1]});",
                "args": [{ ELEMENT: element }, block]
            })),
        );
        element
    }

    /// Scrolls the element to the top of the window, then saves a screenshot.
    fn screenshot_at(&self, css: &str, name: &str) -> PathBuf {
        self.scroll_to(css, "start");
        self.screenshot(name)
    }

    /// Saves a PNG screenshot of the window as `target/screenshots/NAME.png`.
    fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.command("GET", "/screenshot", None);
        let png = base64_decode(encoded.as_str().unwrap());
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = agent().delete(&self.session).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `target/screenshots/` (beside the test binaries' own `target/tmp`).
fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new("target"))
        .join("screenshots")
}

/// Standard base64 (what WebDriver screenshots are) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .map(value)
        .collect();
    digits
        .chunks(4)
        .flat_map(|chunk| {
            let bits = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, d)| acc | (u32::from(*d) << (18 - 6 * i)));
            let bytes = bits.to_be_bytes();
            bytes[1..chunk.len()].to_vec()
        })
        .collect()
}

// ---- The page --------------------------------------------------------------------------------------

/// Opens the page of the server at `base` and waits until it says the server is ready.
fn open_page(browser: &Browser, base: &str) -> String {
    browser.goto(&format!("{base}/"));
    browser.wait_for(
        "the page to say the server is ready",
        "return document.getElementById('server-status').textContent.startsWith('Ready');",
    );
    base.to_string()
}

/// Types a post, submits it from the keyboard (Enter on the button) and waits for the answer; returns the
/// answered city id.
fn try_post(browser: &Browser, text: &str) -> u64 {
    try_post_with(browser, text, || browser.press_enter("#try-submit"))
}

/// [`try_post`], submitting with `submit`.
fn try_post_with(browser: &Browser, text: &str, submit: impl FnOnce()) -> u64 {
    browser.js("document.getElementById('answer').removeAttribute('data-city-id');");
    browser.type_into("#try-text", text, true);
    submit();
    let id = browser.wait_for(
        "the answer",
        "return document.getElementById('answer').dataset.cityId || null;",
    );
    id.as_str().unwrap().parse().unwrap()
}

/// What the page shows of the answer: name, probability, shortlist rows, evidence items, and the map's
/// circles (city id, highlighted).
fn shown_answer(browser: &Browser) -> Value {
    browser.js(
        "const $ = (s) => document.querySelector(s);
         return {
           name: $('#answer-name').textContent,
           verdict: $('#answer-verdict').hidden ? null : $('#answer-verdict').textContent,
           abstained: $('#answer').classList.contains('abstained'),
           probability: $('#answer-probability').textContent,
           shortlist: [...document.querySelectorAll('#shortlist li')].map((li) => li.textContent),
           evidence: [...document.querySelectorAll('#evidence li')].map((li) => li.textContent),
           circles: [...document.querySelectorAll('#answer-map circle')].map((c) =>
             ({id: +c.dataset.cityId, best: c.classList.contains('best'), r: +c.getAttribute('r')})),
         };",
    )
}

#[test]
fn a_post_is_answered_with_its_shortlist_evidence_and_map_and_an_empty_post_gets_the_apis_error() {
    let browser = Browser::start(1280, 800);
    let base = open_page(&browser, server());

    // Every input has a label; nothing is fetched from another origin.
    let unlabelled = browser.js(
        "return [...document.querySelectorAll('input, textarea, select')]
           .filter((e) => e.labels.length === 0).map((e) => e.id);",
    );
    assert_eq!(unlabelled, json!([]), "inputs without a label");

    let text = "Breakfast tacos on South Congress, then Barton Springs and a show on Sixth Street in Austin";
    // Ctrl+Enter in the text box (Control pressed, Enter, then every modifier released).
    let city = try_post_with(&browser, text, || {
        browser.type_into("#try-text", "\u{E009}\u{E007}\u{E000}", false)
    });
    let (status, answer) = call(
        "POST",
        &format!("{base}/v1/locate"),
        Some(&json!({ "text": text })),
    );
    assert_eq!(status, 200);
    assert_eq!(
        city,
        answer["city_id"].as_u64().unwrap(),
        "the API's answer"
    );
    let shown = shown_answer(&browser);
    assert_eq!(shown["name"], answer["name"]);
    // An abstention (no `city`) is shown as one; an answer is not.
    let abstained = answer["city"].is_null();
    assert_eq!(shown["abstained"], abstained, "{shown}");
    assert_eq!(shown["verdict"].is_string(), abstained, "{shown}");
    let top_k = answer["top_k"].as_array().unwrap();
    assert_eq!(shown["shortlist"].as_array().unwrap().len(), top_k.len());
    assert!(shown["shortlist"][0]
        .as_str()
        .unwrap()
        .starts_with(answer["name"].as_str().unwrap()));
    // A city the post names says so on its row.
    let named: Vec<(usize, &str)> = top_k
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some((i, c["mention"].as_str()?)))
        .collect();
    assert!(!named.is_empty(), "the post names Austin: {top_k:?}");
    for (row, mention) in named {
        let shown_row = shown["shortlist"][row].as_str().unwrap();
        assert!(
            shown_row.contains(&format!("names “{mention}”")),
            "{shown_row}"
        );
    }
    let evidence = answer["evidence"].as_array().unwrap();
    if let Some(first) = evidence.first() {
        assert!(shown["evidence"][0]
            .as_str()
            .unwrap()
            .contains(first["text"].as_str().unwrap()));
    }
    // Each evidence item says how it was found: nearest by vector, or sharing the post's words.
    for (item, shown_item) in evidence.iter().zip(shown["evidence"].as_array().unwrap()) {
        let shown_text = shown_item.as_str().unwrap();
        let by_words = item["matched_by"] != "vector";
        let by_vector = item["matched_by"] != "words";
        assert_eq!(
            (
                shown_text.contains("shares its words (BM25"),
                shown_text.contains("similarity")
            ),
            (by_words, by_vector),
            "{shown_item} for {item}"
        );
    }
    let circles = shown["circles"].as_array().unwrap();
    assert_eq!(
        circles.len(),
        top_k.len(),
        "one circle per shortlisted city"
    );
    let best: Vec<&Value> = circles.iter().filter(|c| c["best"] == true).collect();
    assert_eq!(best.len(), 1);
    assert_eq!(
        best[0]["id"].as_u64(),
        Some(city),
        "the answer is highlighted"
    );
    let largest = circles
        .iter()
        .map(|c| c["r"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(best[0]["r"].as_f64(), Some(largest), "sized by probability");
    let outside = browser.js(
        "return performance.getEntriesByType('resource').map((e) => e.name)
           .filter((u) => !u.startsWith(location.origin));",
    );
    assert_eq!(outside, json!([]), "requests to other origins");
    let map_drawn =
        browser.js("return document.querySelector('#answer-map .land').getAttribute('d').length;");
    assert!(
        map_drawn.as_u64().unwrap() > 10_000,
        "the map outline is drawn"
    );
    browser.screenshot("page-answer");

    // An empty post: the API's problem is shown next to the text box, which is marked and focused.
    browser.type_into("#try-text", "", true);
    browser.click("#try-submit");
    let shown = browser.wait_for(
        "the error next to the text box",
        "return document.getElementById('try-text-error').textContent;",
    );
    let (status, problem) = call(
        "POST",
        &format!("{base}/v1/locate"),
        Some(&json!({"text": ""})),
    );
    assert_eq!((status, problem["field"].as_str()), (422, Some("text")));
    assert_eq!(shown, problem["detail"]);
    let marked = browser.js("const t = document.getElementById('try-text');
         return [t.getAttribute('aria-invalid'), document.activeElement === t];");
    assert_eq!(marked, json!(["true", true]));
    browser.screenshot("page-empty-post");

    // A narrow screen: everything fits the width.
    browser.set_size(390, 844);
    let overflow = browser
        .js("return document.documentElement.scrollWidth - document.documentElement.clientWidth;");
    assert_eq!(
        overflow,
        json!(0),
        "horizontal scrolling on a narrow screen"
    );
    browser.screenshot("page-narrow");
    browser.screenshot_at("#add", "page-narrow-add");
}

#[test]
fn page_files_are_served_with_their_types_and_revalidated_by_etag() {
    let base = server();
    for file in server::page::PAGE_FILES {
        let mut response = agent().get(format!("{base}{}", file.path)).call().unwrap();
        assert_eq!(response.status().as_u16(), 200, "{}", file.path);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        assert_eq!(header("content-type").as_deref(), Some(file.content_type));
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
        let etag = header("etag").unwrap();
        let body = response.body_mut().read_to_vec().unwrap();
        assert_eq!(body, file.body);
        let again = agent()
            .get(format!("{base}{}", file.path))
            .header("if-none-match", &etag)
            .call()
            .unwrap();
        assert_eq!(again.status().as_u16(), 304, "{}", file.path);
    }
}

/// A city the fixture store does not have, and five posts written there.
const NEW_CITY: (&str, &str, &str, &str, f64, f64) = (
    "Reykjavík",
    "Capital Region",
    "Iceland",
    "IS",
    64.1466,
    -21.9426,
);
const NEW_CITY_POSTS: [&str; 5] = [
    "Soaking in the geothermal lagoon outside Reykjavik while it snows",
    "Hallgrimskirkja towering over Reykjavik under the midnight sun",
    "Hot dog from the stand by the harbour, still the best thing in Reykjavik",
    "Walking Laugavegur in Reykjavik, every shop sells puffins and wool sweaters",
    "Northern lights dancing over Faxafloi bay from downtown Reykjavik tonight",
];

#[test]
fn a_city_added_with_five_posts_is_answered_on_the_map_then_retrained_and_rolled_back() {
    let browser = Browser::start(1280, 800);
    let server = TestServer::start();
    let base = open_page(&browser, &server.base);

    // Type-ahead over GET /v1/cities: a city of the store fills the form when picked.
    browser.type_into("#city-search", "Sea", true);
    let option = browser.wait_for(
        "the type-ahead's options",
        "const o = document.querySelector('#city-options option'); return o && o.value;",
    );
    let option = option.as_str().unwrap();
    assert!(option.starts_with("Seattle, Washington"), "{option}");
    browser.type_into("#city-search", option.strip_prefix("Sea").unwrap(), false);
    let filled = browser.wait_for(
        "the picked city in the form",
        "return document.getElementById('city-lat').value;",
    );
    assert_eq!(filled, json!("47.60621"));
    browser.type_into("#city-search", "", true);

    // A new city, first with a latitude out of range: the API's problem is shown next to the latitude.
    let (name, admin1, country, code, lat, lon) = NEW_CITY;
    for (field, value) in [
        ("#city-name", name),
        ("#city-admin1", admin1),
        ("#city-country", country),
        ("#city-country-code", code),
        ("#city-lat", "123"),
        ("#city-lon", "-21.9"),
    ] {
        browser.type_into(field, value, true);
    }
    browser.type_into("#examples", &NEW_CITY_POSTS.join("\n"), true);

    // Without the key, the 401 is shown next to the key field, which gets the focus.
    browser.click("#add-submit");
    let error = browser.wait_for(
        "the key's error",
        "return document.getElementById('api-key-error').textContent;",
    );
    assert!(error.as_str().unwrap().contains("API key"), "{error}");
    assert_eq!(
        browser.js("return document.activeElement.id;"),
        json!("api-key")
    );
    browser.type_into("#api-key", API_KEY, true);
    browser.click("#key-form button[type=submit]");
    assert_eq!(
        browser.js(
            "return [sessionStorage.getItem('contrastgeo.apiKey'), localStorage.length,
                     document.getElementById('api-key-error').textContent];"
        ),
        json!([API_KEY, 0, ""]),
        "the key is kept for this tab only"
    );

    browser.click("#add-submit");
    let error = browser.wait_for(
        "the latitude's error",
        "return document.getElementById('city-lat-error').textContent;",
    );
    assert!(error.as_str().unwrap().contains("[-90, 90]"), "{error}");
    assert_eq!(
        browser.js("return document.getElementById('city-lat').getAttribute('aria-invalid');"),
        json!("true")
    );

    // A click on the map sets the coordinates.
    let size = browser.js(
        "const r = document.querySelector('#pick-map svg').getBoundingClientRect();
         return [r.width, r.height];",
    );
    let (width, height) = (size[0].as_f64().unwrap(), size[1].as_f64().unwrap());
    browser.click_at("#pick-map svg", lon / 360.0 * width, -lat / 180.0 * height);
    let picked = browser.js(
        "return [+document.getElementById('city-lat').value, +document.getElementById('city-lon').value];",
    );
    let degrees_per_pixel = 360.0 / width;
    assert!(
        (picked[0].as_f64().unwrap() - lat).abs() <= 2.0 * degrees_per_pixel
            && (picked[1].as_f64().unwrap() - lon).abs() <= 2.0 * degrees_per_pixel,
        "picked {picked} for {lat}, {lon}"
    );

    // An example over the API's length limit, on line 3 of the box (line 2 is blank and not sent): the
    // problem names `examples[1]`, and the page says which line.
    browser.js(&format!(
        "document.getElementById('examples').value = {};",
        json!(format!("{}\n\n{}", NEW_CITY_POSTS[0], "x".repeat(2001)))
    ));
    browser.click("#add-submit");
    let error = browser.wait_for(
        "the example's error",
        "return document.getElementById('examples-error').textContent;",
    );
    assert!(
        error.as_str().unwrap().starts_with("Line 3: ") && error.as_str().unwrap().contains("2001"),
        "{error}"
    );
    browser.type_into("#examples", &NEW_CITY_POSTS.join("\n"), true);

    // Stored: the summary and the city's first answers (its own posts, answered with it).
    browser.click("#add-submit");
    let id = browser.wait_for(
        "the stored city",
        "return document.getElementById('add-result').dataset.cityId || null;",
    );
    let id: u64 = id.as_str().unwrap().parse().unwrap();
    let summary = browser.js("return document.getElementById('add-summary').textContent;");
    assert!(
        summary.as_str().unwrap().contains("5 posts stored"),
        "{summary}"
    );
    let hits = browser.wait_for(
        "the first answers",
        "return document.querySelectorAll('#first-answers li').length === 5 &&
           document.querySelectorAll('#first-answers .ok').length;",
    );
    assert_eq!(hits, json!(5), "each of its posts is answered with it");
    assert_eq!(
        browser.js("return document.getElementById('city-lat-error').textContent;"),
        json!(""),
        "the old error is gone"
    );
    browser.screenshot_at("#add", "page-city-added");

    // A post that should match it is answered with it, highlighted on the map.
    let answered = try_post(
        &browser,
        "Geothermal pool, hot dog by the harbour, then the northern lights over Reykjavik",
    );
    assert_eq!(answered, id);
    let shown = shown_answer(&browser);
    assert_eq!(shown["name"], json!(name));
    let best: Vec<&Value> = shown["circles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["best"] == true)
        .collect();
    assert_eq!(best[0]["id"].as_u64(), Some(id));
    let (_, city) = call("GET", &format!("{base}/v1/cities/{id}"), None);
    assert_eq!(city["support_posts"], 5);
    browser.screenshot("page-new-city-answered");

    // A short retrain with progress; the page answers posts while it runs.
    browser.click("#retrain-options summary");
    browser.type_into("#retrain-epochs", "1", true);
    browser.type_into("#retrain-min-steps", "3", true);
    browser.click("#retrain-start");
    browser.wait_for(
        "the retrain job",
        "return !document.getElementById('job').hidden;",
    );
    assert_eq!(
        try_post(
            &browser,
            "Rain again in Seattle, grabbing coffee by Pike Place"
        ),
        5809844
    );
    browser.screenshot_at("#retrain", "page-retraining");
    let started = Instant::now();
    let mut stages = std::collections::BTreeSet::new();
    let state = loop {
        let state = browser.js("return document.getElementById('job').dataset.state;");
        let stage = browser.js("return document.getElementById('job-stage').textContent;");
        stages.insert(stage.as_str().unwrap_or_default().to_string());
        if state != json!("running") {
            break state;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the retrain never finished"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        state == json!("succeeded") || state == json!("rejected"),
        "{state}: {}",
        browser.js("return document.getElementById('job-report').textContent;")
    );
    assert!(
        stages
            .iter()
            .any(|s| ["Training:", "Indexing", "Checking", "Making"]
                .iter()
                .any(|p| s.starts_with(p))),
        "the job's progress was shown: {stages:?}"
    );
    let (_, models) = call("GET", &format!("{base}/v1/models"), None);
    let versions = models["models"].as_array().unwrap().len();
    let rows = browser.wait_for(
        "the versions table",
        &format!(
            "const n = document.querySelectorAll('#models tbody tr').length; return n === {versions} && n;"
        ),
    );
    assert_eq!(rows, json!(versions));
    browser.screenshot_at("#retrain", "page-retrained");

    // Roll back to the first version from the table, when the retrain made a second one live.
    if state == json!("succeeded") {
        browser.click("#models tbody tr:last-child button");
        browser.wait_for(
            "version 1 live",
            "const last = document.querySelector('#models tbody tr:last-child');
             return last && last.classList.contains('current');",
        );
        let (_, models) = call("GET", &format!("{base}/v1/models"), None);
        assert_eq!(models["current"], 1);
    }
}

#[test]
fn an_abstention_is_shown_as_one_with_the_best_guess_muted() {
    // Every answer below certainty abstains: the page must say "not sure" and still show the best guess.
    let server = TestServer::start_with(EngineConfig {
        min_confidence: 1.0,
        ..EngineConfig::default()
    });
    let browser = Browser::start(1280, 800);
    let base = open_page(&browser, &server.base);
    let text = "Nice weather for a walk by the water today";
    let city = try_post(&browser, text);
    let (status, answer) = call(
        "POST",
        &format!("{base}/v1/locate"),
        Some(&json!({ "text": text })),
    );
    assert_eq!(status, 200);
    assert!(answer["city"].is_null(), "{answer}");
    assert_eq!(city, answer["city_id"].as_u64().unwrap());
    let shown = shown_answer(&browser);
    assert_eq!(shown["abstained"], true, "{shown}");
    assert_eq!(shown["verdict"], "Not sure. Best guess:", "{shown}");
    assert_eq!(
        shown["name"], answer["name"],
        "the best guess is still shown"
    );
    assert!(
        shown["probability"]
            .as_str()
            .unwrap()
            .contains("below the confidence needed to answer"),
        "{shown}"
    );
}
