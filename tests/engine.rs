//! The query path end to end: a real model, a real sled + HNSW store in a temporary directory, the project's
//! 20 fixture cities and a few of their made-up support posts (`tests/fixtures/engine_*.jsonl`).

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use contrastgeo::engine::{Engine, EngineConfig, EngineError, Snapshot};
use contrastgeo::geo::{City, CityTable};
use contrastgeo::model::{GeoModel, GeoModelConfig};
use contrastgeo_index::SupportPost;

/// The base model (zero-shot, untrained head) on the CPU, shared by the tests.
fn model() -> Arc<GeoModel> {
    common::base_model()
}

fn cities() -> &'static CityTable {
    static CITIES: OnceLock<CityTable> = OnceLock::new();
    CITIES.get_or_init(common::fixture_cities)
}

/// The first two fixture posts of every city (both name their city).
fn support_posts() -> Vec<SupportPost> {
    common::fixture_support(2)
}

fn build(dir: &Path, model: &GeoModel, cities: &[City], support: &[SupportPost]) -> f64 {
    let started = Instant::now();
    Engine::build_index(
        dir,
        model,
        cities,
        support,
        &EngineConfig::default(),
        &|_| {},
    )
    .expect("build the index");
    started.elapsed().as_secs_f64()
}

const QUERIES: [&str; 4] = [
    "Just landed in Denver, Colorado",
    "Deep dish pizza on the river walk in Chicago tonight",
    "Go Raptors! The arena in Toronto is loud",
    "Can't believe the traffic this morning",
];

#[test]
fn build_then_locate_names_the_city_with_a_shortlist_and_reopens_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let support = support_posts();
    let seconds = build(&store, &model(), cities().cities(), &support);
    eprintln!(
        "built {} cities + {} support posts in {seconds:.2}s",
        cities().len(),
        support.len()
    );

    let engine = Engine::open(&store, model(), EngineConfig::default()).unwrap();
    let answers = engine.locate(&QUERIES).unwrap();
    assert_eq!(answers.len(), QUERIES.len());
    assert_eq!(answers[0].name, "Denver", "{:?}", answers[0].top_k);
    // Zero-shot prompts with two supports per city: a city's name is a strong cue, not a sure one.
    assert!(
        answers[1].top_k[..3].iter().any(|c| c.name == "Chicago"),
        "{:?}",
        answers[1].top_k
    );
    assert!(
        answers[2].top_k[..3].iter().any(|c| c.name == "Toronto"),
        "{:?}",
        answers[2].top_k
    );
    for answer in &answers {
        assert_eq!(answer.top_k.len(), 10);
        assert_eq!(answer.top_k[0].city_id, answer.city_id);
        assert_eq!(answer.probability, answer.top_k[0].probability);
        let total: f32 = answer.top_k.iter().map(|c| c.probability).sum();
        assert!((total - 1.0).abs() < 1e-4, "probabilities sum to {total}");
        assert!(answer.top_k.windows(2).all(|w| w[0].score >= w[1].score));
        let ids: HashSet<u64> = answer.top_k.iter().map(|c| c.city_id).collect();
        assert_eq!(ids.len(), 10, "a city appears twice in the shortlist");
        for candidate in &answer.top_k {
            // Every fixture city has prompts and supports: the weighted mean is used.
            let (p, s) = (
                candidate.prompt_similarity.unwrap(),
                candidate.support_similarity.unwrap(),
            );
            let w = EngineConfig::default().prompt_weight;
            assert!((candidate.retrieval_score - (w * p + (1.0 - w) * s)).abs() < 1e-5);
            assert!(candidate.tlm_logit.is_none(), "the base head is untrained");
        }
        assert!(!answer.evidence.is_empty() && answer.evidence.len() <= 3);
        assert!(answer
            .evidence
            .windows(2)
            .all(|w| w[0].similarity >= w[1].similarity));
    }

    // A support post as query finds itself as the best evidence of its own city.
    let probe = &support[7];
    let answer = &engine.locate(&[probe.text.as_str()]).unwrap()[0];
    assert_eq!(answer.city_id, probe.city);
    assert_eq!(answer.evidence[0].text, probe.text);
    assert!(answer.evidence[0].similarity > 0.999);

    // Closing and reopening the store gives the same answers.
    drop(engine);
    let reopened = Engine::open(&store, model(), EngineConfig::default()).unwrap();
    assert_eq!(reopened.locate(&QUERIES).unwrap(), answers);

    // A snapshot swap changes what new queries see; the old generation stays usable.
    let other = tmp.path().join("no-denver");
    let fewer: Vec<City> = cities()
        .cities()
        .iter()
        .filter(|c| c.name != "Denver")
        .cloned()
        .collect();
    build(&other, &model(), &fewer, &[]);
    let old = reopened.swap(Snapshot::open(&other, model(), &EngineConfig::default()).unwrap());
    let swapped = reopened.locate(&QUERIES[..1]).unwrap();
    assert_ne!(swapped[0].name, "Denver");
    assert!(
        swapped[0].evidence.is_empty(),
        "the new store has no supports"
    );
    assert_eq!(old.dir(), store.as_path());
}

#[test]
fn a_store_of_another_model_or_no_store_is_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    build(&store, &model(), &cities().cities()[..5], &[]);
    let other = GeoModel::from_base(
        &common::model_files(),
        GeoModelConfig {
            model_id: "some-other-model".into(),
            ..Default::default()
        },
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let err = Engine::open(&store, Arc::new(other), EngineConfig::default())
        .err()
        .expect("a model mismatch must be refused");
    assert!(matches!(err, EngineError::ModelMismatch { .. }), "{err:?}");
    let message = err.to_string();
    for needle in [
        "some-other-model",
        model().config().model_id.as_str(),
        "contrastgeo index build",
    ] {
        assert!(message.contains(needle), "{message}");
    }

    let missing = Engine::open(
        &tmp.path().join("nothing"),
        model(),
        EngineConfig::default(),
    )
    .err()
    .expect("a missing store must be refused");
    assert!(
        matches!(missing, EngineError::NoStore { .. }),
        "{missing:?}"
    );
    assert!(missing.to_string().contains("contrastgeo index build"));
    assert!(
        !tmp.path().join("nothing").exists(),
        "opening must not create a store"
    );

    let bad = EngineConfig {
        prompt_weight: 1.5,
        ..Default::default()
    };
    assert!(matches!(
        Engine::open(&store, model(), bad),
        Err(EngineError::InvalidConfig(_))
    ));
}

#[test]
fn the_tlm_rerank_scores_every_shortlisted_city_and_batching_does_not_change_answers() {
    // The base head is untrained (random); marking it trained exercises the rerank path.
    let mut reranking = GeoModel::from_base(
        &common::model_files(),
        GeoModelConfig::default(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    reranking.config_mut().head_trained = true;
    let reranking = Arc::new(reranking);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    build(
        &store,
        &reranking,
        cities().cities(),
        &support_posts()[..20],
    );
    let config = EngineConfig {
        rerank_batch: 7, // several head passes and groups
        // Scores here are exactly the head's logit plus retrieval / tau: no bonus for the cities the
        // queries name (tested apart, below), nor votes or label head (tests/ingest.rs, label_head.rs).
        mention_weight: 0.0,
        lexical_weight: 0.0,
        vote_weight: 0.0,
        head: contrastgeo::engine::label_head::HeadConfig {
            weight: 0.0,
            ..Default::default()
        },
        ..Default::default()
    };
    let engine = Engine::open(&store, Arc::clone(&reranking), config).unwrap();
    let together = engine.locate(&QUERIES).unwrap();
    let tau = reranking.config().tau as f32;
    for answer in &together {
        assert_eq!(answer.top_k.len(), 10);
        let total: f32 = answer.top_k.iter().map(|c| c.probability).sum();
        assert!((total - 1.0).abs() < 1e-4);
        for c in &answer.top_k {
            let logit = c.tlm_logit.expect("every shortlisted city is reranked");
            assert!((c.score - (logit + c.retrieval_score / tau)).abs() < 1e-3);
        }
        assert!(answer.top_k.windows(2).all(|w| w[0].score >= w[1].score));
    }
    for (query, batched) in QUERIES.iter().zip(&together) {
        let alone = &engine.locate(&[query]).unwrap()[0];
        assert_eq!(alone.city_id, batched.city_id);
        for (a, b) in alone.top_k.iter().zip(&batched.top_k) {
            assert_eq!(a.city_id, b.city_id);
            assert!(
                (a.score - b.score).abs() < 1e-2,
                "{} vs {}",
                a.score,
                b.score
            );
        }
    }
}

#[test]
fn a_place_the_post_names_points_at_its_city_even_when_the_store_lacks_that_place() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    build(&store, &model(), cities().cities(), &support_posts());
    let posts = [
        // Evanston is not a stored city: the gazetteer places it 19 km from Chicago.
        "Brunch with the whole family in Evanston this morning",
        // A stored city named mid-sentence.
        "Rain again, typical weekend in Portland",
        // A capitalised word opening the post is not taken for a place ("Phoenix" the bird).
        "Phoenix rising from the ashes, that is me this year",
    ];
    let plain = Engine::open(
        &store,
        model(),
        EngineConfig {
            mention_weight: 0.0,
            ..Default::default()
        },
    )
    .unwrap()
    .locate(&posts)
    .unwrap();
    let with_mentions = Engine::open(&store, model(), EngineConfig::default())
        .unwrap()
        .locate(&posts)
        .unwrap();
    assert!(plain
        .iter()
        .flat_map(|a| &a.top_k)
        .all(|c| c.mention.is_none()));

    // Evanston pulls Chicago up (whether it wins depends on what else the text says).
    let chicago = |answer: &contrastgeo::engine::Answer| {
        answer
            .top_k
            .iter()
            .position(|c| c.name == "Chicago")
            .map(|at| (at, answer.top_k[at].clone()))
    };
    let (rank, named) = chicago(&with_mentions[0]).unwrap_or_else(|| {
        panic!(
            "needs the gazetteer of tools/setup.sh in the data home: {:?}",
            with_mentions[0].top_k
        )
    });
    assert_eq!(named.mention.as_deref(), Some("Evanston"));
    match chicago(&plain[0]) {
        Some((plain_rank, plain_chicago)) => {
            assert!(rank <= plain_rank, "{rank} vs {plain_rank}");
            assert!(named.score > plain_chicago.score + 1.0, "{named:?}");
        }
        None => assert!(rank < 10),
    }
    let portland = &with_mentions[1];
    assert_eq!(portland.name, "Portland", "{:?}", portland.top_k);
    assert_eq!(portland.top_k[0].mention.as_deref(), Some("Portland"));
    // The bonus is mention_weight x strength over tau, on top of the same retrieval score; the strength is
    // Portland, Oregon's share of the population of the gazetteer's Portlands (most, not all of it: Maine
    // has one too).
    let before = plain[1]
        .top_k
        .iter()
        .find(|c| c.name == "Portland")
        .expect("Portland is on the plain shortlist too");
    let tau = model().config().tau as f32;
    let full = EngineConfig::default().mention_weight / tau;
    let gained = portland.top_k[0].score - before.score;
    assert!(
        gained > 0.6 * full && gained < full - 1e-3,
        "gained {gained} of at most {full}"
    );
    assert!(with_mentions[2].top_k.iter().all(|c| c.mention.is_none()));
}

fn reported(stderr: &str, prefix: &str) -> String {
    stderr
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("`{prefix}` missing in {stderr}"))
        .to_string()
}

#[test]
fn the_binaries_build_an_index_and_locate_around_malformed_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let store_arg = store.to_str().unwrap();
    let support = tmp.path().join("support.jsonl");
    std::fs::write(
        &support,
        concat!(
            "{\"text\": \"Skyway lunch then a Twins game, Minnesota summer at its best\", \"city_id\": \"5037649\"}\n",
            "{\"text\": \"no place for this one\"}\n",
            "{\"text\": \"Voodoo Doughnut line in the rain, naturally\", \"city_id\": 5746545}\n",
        ),
    )
    .unwrap();
    let cities = common::fixture("engine_cities.jsonl");
    let (code, _, stderr) = common::run_contrastgeo(
        &[
            "index",
            "build",
            "--store",
            store_arg,
            "--cities",
            cities.to_str().unwrap(),
            "--support",
            support.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        b"",
    );
    assert_eq!(
        code, 3,
        "a rejected support line gives exit code 3: {stderr}"
    );
    assert!(reported(&stderr, &format!("{}:2:", support.display())).contains("city_id"));
    assert!(
        stderr.contains("indexed 20 cities and 2 support posts"),
        "{stderr}"
    );

    let mut input = Vec::new();
    input.extend_from_slice(b"Just landed in Denver, Colorado\n");
    input.extend_from_slice(b"\n");
    input.extend_from_slice(
        b"{\"id\": \"p3\", \"text\": \"Skyway lunch then a Twins game, Minnesota summer at its best\"}\n",
    );
    input.extend_from_slice(b"{broken json\n");
    input.extend_from_slice(b"bad \xff\xfe utf8\n");
    input.extend_from_slice(b"{\"id\": 6, \"text\": 42}\n");
    input.extend_from_slice(b"Go Suns! The whole of Phoenix is loud tonight\n");
    let (code, stdout, stderr) =
        common::run_contrastgeo(&["locate", "--store", store_arg, "--device", "cpu"], &input);
    assert_eq!(code, 3, "rejected lines give exit code 3: {stderr}");
    let (records, lines) = common::jsonl_records(&stdout);
    assert_eq!(lines, vec![1, 3, 7]);
    assert_eq!(records[0]["name"], "Denver");
    assert_eq!(records[1]["id"], "p3");
    assert_eq!(records[1]["name"], "Minneapolis");
    assert_eq!(
        records[1]["evidence"][0]["text"],
        "Skyway lunch then a Twins game, Minnesota summer at its best"
    );
    assert_eq!(records[2]["name"], "Phoenix");
    assert_eq!(records[2]["top_k"].as_array().unwrap().len(), 10);
    for (line, why) in [
        (2, "empty"),
        (4, "invalid JSON"),
        (5, "UTF-8"),
        (6, "not a string"),
    ] {
        assert!(reported(&stderr, &format!("line {line}: ")).contains(why));
    }

    // CSV output of one shard: lines 2, 4 and 6 of the input (all good here).
    let (code, stdout, stderr) = common::run_contrastgeo(
        &[
            "locate", "--store", store_arg, "--device", "cpu", "--shard", "1/2",
            "--output-format", "csv", "--top-k", "3",
        ],
        b"a\nJust landed in Denver, Colorado\nb\n{\"id\": \"x,1\", \"text\": \"Go Suns!\"}\nc\nVoodoo Doughnut, Portland, Oregon\n",
    );
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        rows[0],
        "line,id,city_id,name,admin1,country,lat,lon,score,probability"
    );
    assert_eq!(rows.len(), 4, "{stdout}");
    assert!(
        rows[1].starts_with("2,,5419384,Denver,Colorado,United States,"),
        "{}",
        rows[1]
    );
    assert!(rows[2].starts_with("4,\"x,1\","), "{}", rows[2]);
    assert!(rows[3].starts_with("6,,5746545,Portland,"), "{}", rows[3]);

    // A CSV file is read as a table by its extension: the `text` column, the `id` column, true line numbers
    // (the header is line 1; a quoted text spans lines 3-4) and a short record reported by its line.
    let table = tmp.path().join("posts.csv");
    std::fs::write(
        &table,
        "id,text\r\nq1,\"Just landed in Denver, Colorado\"\r\nq2,\"Voodoo Doughnut,\r\nPortland, Oregon\"\r\nq3\r\n",
    )
    .unwrap();
    let (code, stdout, stderr) = common::run_contrastgeo(
        &[
            "locate",
            "--store",
            store_arg,
            "--device",
            "cpu",
            "--input",
            table.to_str().unwrap(),
            "--output-format",
            "csv",
        ],
        b"",
    );
    assert_eq!(code, 3, "the short record is rejected: {stderr}");
    assert!(reported(&stderr, "line 5: ").contains("no `text` column"));
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert!(rows[1].starts_with("2,q1,5419384,Denver,"), "{}", rows[1]);
    assert!(rows[2].starts_with("3,q2,5746545,Portland,"), "{}", rows[2]);

    // A store built by `index build` carries its model: base-model flags do not change its answers, and a
    // checkpoint that is not its model is refused with what to do.
    let (code, stdout, stderr) = common::run_contrastgeo(
        &[
            "locate",
            "--store",
            store_arg,
            "--device",
            "cpu",
            "--max-length",
            "64",
        ],
        b"Just landed in Denver, Colorado\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(common::jsonl_records(&stdout).0[0]["name"], "Denver");
    let other = tmp.path().join("other-checkpoint");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("contrastgeo.json"),
        "{\"format\": 1, \"model_id\": \"trained:0123456789abcdef\"}",
    )
    .unwrap();
    let (code, _, stderr) = common::run_contrastgeo(
        &[
            "locate",
            "--store",
            store_arg,
            "--checkpoint",
            other.to_str().unwrap(),
        ],
        b"Just landed in Denver, Colorado\n",
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("trained:0123456789abcdef"), "{stderr}");
    assert!(stderr.contains("rebuild the index"), "{stderr}");
}
