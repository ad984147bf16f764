//! Ingest, retrain and model versions on a real generational store (real model, real sled + HNSW), built
//! from the project's fixtures: a city added from five posts is answered at once; a file with a bad line
//! writes nothing; a retrain swaps a new generation in while queries run, or keeps the live one when the
//! gate says no; rollback; and kill -9 in the middle of an ingest or a retrain loses nothing.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use contrastgeo::engine::{EngineConfig, LiveStore, MatchedBy, RetrainOptions};
use contrastgeo::geo::City;
use contrastgeo::train::TrainConfig;
use contrastgeo_index::PostLabel;

/// The fixture cities without Nashville (held out, to be ingested), with two support posts each.
fn build_store(dir: &Path) {
    common::fixture_live_store(dir, "Nashville", 2);
}

fn nashville() -> City {
    common::fixture_cities()
        .cities()
        .iter()
        .find(|c| c.name == "Nashville")
        .unwrap()
        .clone()
}

fn label(text: &str, city: u64) -> PostLabel {
    PostLabel {
        text: text.into(),
        city,
        source: "test".into(),
        added_at: 0,
    }
}

const NASHVILLE_POSTS: [&str; 5] = [
    "Honky tonks on Broadway all night long",
    "Hot chicken so spicy I cried, worth it",
    "Grand Ole Opry tonight, goosebumps the whole time",
    "Predators game at Bridgestone, the catfish flew",
    "Pedal taverns full of bachelorettes again on Lower Broad",
];

fn quick_retrain() -> RetrainOptions {
    RetrainOptions {
        train: TrainConfig {
            epochs: 1,
            min_steps: 3,
            batch_size: 8,
            ..TrainConfig::default()
        },
        gate_margin: 1.0, // the gate is tested on its own below
        threads: 1,
    }
}

#[test]
fn a_city_added_from_five_posts_is_answered_at_once_and_survives_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    build_store(&dir);
    let query = "Hot chicken and honky tonks on Broadway tonight";
    let fitted;
    {
        let store = LiveStore::open(&dir, &Device::Cpu, EngineConfig::default()).unwrap();
        let before = store.engine().locate(&[query]).unwrap();
        assert_ne!(
            before[0].name, "Nashville",
            "the store does not know it yet"
        );
        let posts: Vec<PostLabel> = NASHVILLE_POSTS
            .iter()
            .map(|t| label(t, nashville().id))
            .collect();
        let report = store.ingest(&[nashville()], &posts).unwrap();
        assert_eq!((report.cities_added.len(), report.posts_added), (1, 5));
        assert!(
            report.searchable_after_s < 1.0,
            "searchable {:.3}s after the acknowledgement",
            report.searchable_after_s
        );
        // Found by its words at once too: the lexical index was written in the same step.
        let snapshot = store.engine().snapshot();
        let by_words = snapshot.lexical().search("Opry goosebumps", 3).unwrap();
        assert_eq!(by_words[0].city, nashville().id, "{by_words:?}");
        // The label head learns the new city when it refits (in the background after an ingest; here
        // at once): one more city than the 19 it was fitted on.
        let head = snapshot
            .refit_head()
            .unwrap()
            .expect("a store with labels has a head");
        assert_eq!((head.cities(), head.posts()), (20, 19 * 2 + 5));
        fitted = head;
        let after = store.engine().locate(&[query]).unwrap();
        assert_eq!(after[0].name, "Nashville", "{:?}", after[0].top_k);
        assert!(
            after[0]
                .evidence
                .iter()
                .any(|e| e.matched_by != MatchedBy::Vector && e.bm25.is_some()),
            "the evidence shows the posts sharing its words: {:?}",
            after[0].evidence
        );
        assert!(after[0]
            .evidence
            .iter()
            .any(|e| NASHVILLE_POSTS.contains(&e.text.as_str())));
        // The same labels again are stored once.
        let again = store.ingest(&[nashville()], &posts).unwrap();
        assert_eq!(
            (again.posts_added, again.duplicates, again.unchanged_cities),
            (0, 5, 1)
        );
    }
    let reopened = LiveStore::open(&dir, &Device::Cpu, EngineConfig::default()).unwrap();
    assert_eq!(reopened.labels().post_count(), 19 * 2 + 5);
    // The head saved with the generation is read back, not refitted: exactly the head fitted before the
    // store closed (a refit from the reopened store's vectors, normalised again on their way through
    // sled, differs in the last bits).
    let saved = reopened.engine().snapshot().head().expect("a head");
    assert_eq!(*saved, *fitted);
    assert_eq!(
        reopened.engine().locate(&[query]).unwrap()[0].name,
        "Nashville"
    );
}

#[test]
fn a_retrain_swaps_a_new_generation_in_while_queries_run_and_rollback_brings_the_old_one_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    build_store(&dir);
    let store = Arc::new(LiveStore::open(&dir, &Device::Cpu, EngineConfig::default()).unwrap());
    let posts: Vec<PostLabel> = NASHVILLE_POSTS
        .iter()
        .map(|t| label(t, nashville().id))
        .collect();
    store.ingest(&[nashville()], &posts).unwrap();
    let first_model = store.engine().snapshot().model().config().model_id.clone();

    // Clients query throughout the retrain and the swap; every query must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let (store, stop, answered) =
                (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&answered));
            std::thread::spawn(move || {
                let texts = [
                    "Rain again in Seattle",
                    "Snow in Denver today",
                    "Tacos in Austin",
                ];
                while !stop.load(Ordering::Relaxed) {
                    let answers = store.engine().locate(&[texts[i]]).expect("a query failed");
                    assert_eq!(answers.len(), 1);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let report = store.retrain(&quick_retrain(), &|_| {}).unwrap();
    // Let the clients run on the new generation for a moment too.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a client thread panicked");
    }
    assert!(answered.load(Ordering::Relaxed) > 3);
    assert!(report.swapped, "{report:?}");
    assert_eq!((report.parent, report.generation), (1, 2));
    assert_eq!(store.current_generation(), 2);
    let live_model = store.engine().snapshot().model().config().model_id.clone();
    assert_eq!(live_model, report.model_id);
    assert_ne!(live_model, first_model);
    assert!(live_model.starts_with("trained:"));
    assert!(store.engine().snapshot().model().config().head_trained);
    assert_eq!(
        store
            .engine()
            .locate(&["Hot chicken and honky tonks on Broadway tonight"])
            .unwrap()[0]
            .name,
        "Nashville"
    );

    // Labels ingested after the retrain are in the new generation at once.
    store
        .ingest(
            &[],
            &[label("Printers Alley jazz after midnight", nashville().id)],
        )
        .unwrap();

    let versions = store.versions().unwrap();
    assert_eq!(versions.len(), 2);
    assert!(versions[1].current && !versions[0].current);

    // Rollback: generation 1 is live again, caught up with every label.
    store.rollback(1).unwrap();
    assert_eq!(store.current_generation(), 1);
    assert_eq!(
        store.engine().snapshot().model().config().model_id,
        first_model
    );
    let answer = &store
        .engine()
        .locate(&["Printers Alley jazz after midnight"])
        .unwrap()[0];
    assert_eq!(answer.name, "Nashville");
    assert_eq!(
        answer.evidence[0].text,
        "Printers Alley jazz after midnight"
    );
    drop(store);
    let reopened = LiveStore::open(&dir, &Device::Cpu, EngineConfig::default()).unwrap();
    assert_eq!(reopened.current_generation(), 1, "CURRENT was rewritten");
}

#[test]
fn a_retrain_that_fails_the_gate_keeps_the_live_generation_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    build_store(&dir);
    let store = LiveStore::open(&dir, &Device::Cpu, EngineConfig::default()).unwrap();
    // Enough posts per city for held-out labels (the fixture's 15 per city).
    let posts: Vec<PostLabel> = common::fixture_posts()
        .into_iter()
        .filter(|p| p.city_id != Some(nashville().id))
        .map(|p| label(&p.text, p.city_id.unwrap()))
        .collect();
    store.ingest(&[], &posts).unwrap();
    // The gate asks the new model to beat the live one by more than any accuracy can (a margin of
    // -2), so it refuses whatever training gives. (A wild learning rate was used before, but on some
    // machines the model it made still beat the live one: the test must not depend on training.)
    let mut options = quick_retrain();
    options.gate_margin = -2.0;
    let report = store.retrain(&options, &|_| {}).unwrap();
    assert!(!report.swapped, "{report:?}");
    assert!(report.gate.held_out >= 19, "{:?}", report.gate);
    assert!(
        report.reason.as_deref().unwrap().contains("gate failed"),
        "{report:?}"
    );
    assert_eq!(store.current_generation(), 1);
    assert_eq!(
        store.versions().unwrap().len(),
        1,
        "the rejected generation is removed"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("generations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, vec!["000001".to_string()]);
}

/// Starts `contrastgeo` with `args`, waits until its stderr shows `marker`, then SIGKILLs it.
fn kill_when(args: &[&str], marker: &str, log: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_contrastgeo"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(marker) {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the process ended ({status}) before `{marker}`:\n{text}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no `{marker}` after 2 minutes:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn kill_9_in_the_middle_of_an_ingest_or_a_retrain_loses_no_acknowledged_label() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    build_store(&dir);
    let store_arg = dir.to_str().unwrap();

    // An ingest of 1,200 posts, killed right after the acknowledgement, while it encodes.
    let labels = tmp.path().join("labels.jsonl");
    let mut lines = String::new();
    let city = nashville();
    lines.push_str(&format!(
        "{{\"text\": \"Broadway honky tonk, night one\", \"city\": {{\"id\": {}, \"name\": \"Nashville\", \
         \"admin1\": \"Tennessee\", \"country\": \"United States\", \"lat\": {}, \"lon\": {}}}}}\n",
        city.id, city.lat, city.lon
    ));
    for i in 0..1200 {
        lines.push_str(&format!(
            "{{\"text\": \"Hot chicken stop number {i} on the way to the Ryman\", \"city_id\": {}}}\n",
            city.id
        ));
    }
    std::fs::write(&labels, lines).unwrap();
    kill_when(
        &[
            "ingest",
            "--store",
            store_arg,
            "--labels",
            labels.to_str().unwrap(),
        ],
        "acknowledged",
        &tmp.path().join("ingest.log"),
    );
    {
        let store = LiveStore::open(&dir, &Device::Cpu, EngineConfig::default()).unwrap();
        assert_eq!(
            store.labels().post_count(),
            19 * 2 + 1201,
            "every acknowledged post is there"
        );
        let snapshot = store.engine().snapshot();
        assert_eq!(
            snapshot.cities().get(city.id).unwrap().supports.len(),
            1201,
            "the reopened store applied what the killed ingest had not"
        );
        assert_eq!(
            snapshot.lexical().len(),
            19 * 2 + 1201,
            "and its lexical index holds every post, rebuilt from the label log"
        );
        let hits = snapshot.lexical().search("stop number 1199", 1).unwrap();
        assert_eq!(hits[0].city, city.id);
        let answer = &store
            .engine()
            .locate(&["Hot chicken stop number 1199 on the way to the Ryman"])
            .unwrap()[0];
        assert_eq!(answer.name, "Nashville");
    }

    // A retrain killed while it builds the new generation: the store serves generation 1, and the half
    // generation is removed on open.
    // Killed once it has begun writing the new generation (its model is saved after training).
    let mut child = Command::new(env!("CARGO_BIN_EXE_contrastgeo"))
        .args([
            "model",
            "retrain",
            "--store",
            store_arg,
            "--epochs",
            "1",
            "--min-steps",
            "2",
            "--train-batch",
            "8",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let building = dir.join("generations/000002.building");
    while !building.join("model").exists() && started.elapsed() < Duration::from_secs(120) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the retrain ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(building.exists(), "the retrain never started building");
    child.kill().unwrap();
    child.wait().unwrap();
    let store = LiveStore::open(&dir, &Device::Cpu, EngineConfig::default()).unwrap();
    assert_eq!(store.current_generation(), 1);
    assert!(
        !building.exists(),
        "the half-built generation is removed on open"
    );
    assert_eq!(store.versions().unwrap().len(), 1);
    assert_eq!(store.labels().post_count(), 19 * 2 + 1201);
}

#[test]
fn the_ingest_command_refuses_a_bad_file_whole_and_a_second_process_is_told_who_owns_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    build_store(&dir);
    let store_arg = dir.to_str().unwrap();
    let labels = tmp.path().join("labels.jsonl");
    let city = nashville();
    std::fs::write(
        &labels,
        format!(
            "{{\"text\": \"{}\", \"city_id\": {}}}\n{{\"text\": \"nowhere\", \"city\": {{\"name\": \"Atlantis\"}}}}\n\
             {{\"text\": \"\", \"city_id\": {}}}\n{{\"text\": \"{}\", \"city_id\": 999999999999}}\n",
            NASHVILLE_POSTS[0], city.id, city.id, NASHVILLE_POSTS[1]
        ),
    )
    .unwrap();
    let args = [
        "ingest",
        "--store",
        store_arg,
        "--labels",
        labels.to_str().unwrap(),
    ];
    let (code, _, stderr) = common::run_contrastgeo(&args, b"");
    assert_eq!(code, 1, "{stderr}");
    for (line, why) in [
        (2, "no coordinates"),
        (3, "empty text"),
        (4, "unknown city id"),
    ] {
        assert!(
            stderr.contains(&format!("labels.jsonl:{line}: ")) && stderr.contains(why),
            "line {line}: {why}: {stderr}"
        );
    }
    assert!(stderr.contains("nothing was written"), "{stderr}");
    {
        let store = LiveStore::open(&dir, &Device::Cpu, EngineConfig::default()).unwrap();
        assert_eq!(store.labels().post_count(), 19 * 2);
        // While this process holds the store, the binary is told who owns it.
        let (code, _, stderr) = common::run_contrastgeo(&args, b"");
        assert_eq!(code, 1);
        assert!(stderr.contains("in use by another process"), "{stderr}");
    }
    // --skip-bad stores the good line (Nashville comes from the gazetteer) and exits 3.
    let mut skipping = args.to_vec();
    skipping.push("--skip-bad");
    let (code, stdout, stderr) = common::run_contrastgeo(&skipping, b"");
    assert_eq!(code, 3, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(report["posts_added"], 1);
    assert_eq!(report["cities_added"][0]["name"], "Nashville");
    let (code, stdout, _) = common::run_contrastgeo(
        &["locate", "--store", store_arg],
        format!("{}\n", NASHVILLE_POSTS[0]).as_bytes(),
    );
    assert_eq!(code, 0);
    assert_eq!(common::jsonl_records(&stdout).0[0]["name"], "Nashville");
}
