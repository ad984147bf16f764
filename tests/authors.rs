//! Locating an author from all of their posts, and a post's profile location as evidence: the engine's
//! rules on a real model and a real sled + HNSW store of the 20 fixture cities, and `locate --group-by user`
//! through the binary.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};

use contrastgeo::engine::{AuthorRule, Engine, EngineConfig, EngineError, PostQuery, Snapshot};
use contrastgeo::model::ModelError;

/// Builds a store of every fixture city with its first two support posts in `dir`.
fn build_store(dir: &std::path::Path) {
    Engine::build_index(
        dir,
        &common::base_model(),
        common::fixture_cities().cities(),
        &common::fixture_support(2),
        &EngineConfig::default(),
        &|_| {},
    )
    .expect("build the fixture store");
}

/// An engine with `config` over one store opened once per test binary (sled lets one handle own it).
fn engine(config: EngineConfig) -> Engine {
    static SNAPSHOT: OnceLock<(tempfile::TempDir, Arc<Snapshot>)> = OnceLock::new();
    let (_, snapshot) = SNAPSHOT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        build_store(&dir.path().join("store"));
        let snapshot = Snapshot::open(
            &dir.path().join("store"),
            common::base_model(),
            &EngineConfig::default(),
        )
        .unwrap();
        (dir, Arc::new(snapshot))
    });
    Engine::with_shared(Arc::clone(snapshot), config)
}

#[test]
fn an_author_of_one_post_gets_that_posts_answer() {
    let engine = engine(EngineConfig::default());
    let text = "Deep dish pizza on the river walk in Chicago tonight";
    let post = engine.locate(&[text]).unwrap().remove(0);
    for rule in [AuthorRule::Product, AuthorRule::Mixture] {
        let author = engine
            .locate_authors(&[vec![PostQuery::text(text)]], rule)
            .unwrap()
            .remove(0);
        assert_eq!(author.answer.name, post.name, "{rule:?}");
        let order = |ids: Vec<u64>| ids;
        assert_eq!(
            order(author.answer.top_k.iter().map(|c| c.city_id).collect()),
            order(post.top_k.iter().map(|c| c.city_id).collect()),
            "{rule:?}: one post's distribution keeps its own order"
        );
        assert_eq!(author.posts_used, 1);
        assert_eq!(author.weighing_posts.len(), 1);
        let total: f32 = author.answer.top_k.iter().map(|c| c.probability).sum();
        assert!((total - 1.0).abs() < 1e-4, "{rule:?}: {total}");
    }
}

#[test]
fn the_post_that_names_a_place_outweighs_vague_ones() {
    let engine = engine(EngineConfig::default());
    let posts = [
        "Can't believe the traffic this morning",
        "Deep dish pizza on the river walk in Chicago tonight, then the Cubs at Wrigley",
        "lunch was fine I guess",
        "so tired today",
    ];
    // Alone, the vague posts are answered anywhere; together with the one that names its place the author
    // is answered there, and that post is the one named as weighing most.
    let author = engine
        .locate_authors(
            &[posts.iter().map(|&t| PostQuery::text(t)).collect()],
            AuthorRule::default(),
        )
        .unwrap()
        .remove(0);
    assert_eq!(author.answer.name, "Chicago", "{author:#?}");
    assert_eq!(author.posts_used, 4);
    assert_eq!(
        author.weighing_posts[0].index, 1,
        "{:?}",
        author.weighing_posts
    );
    let weights: Vec<f32> = author.weighing_posts.iter().map(|w| w.weight).collect();
    assert!(
        weights.iter().all(|w| (0.0..=1.0).contains(w)),
        "{weights:?}"
    );
}

#[test]
fn the_product_counts_the_population_prior_once_however_many_posts_an_author_has() {
    // Every city is a candidate of every post (20 cities, 60 vectors, 64 neighbours), so the prior changes
    // no shortlist and the author's scores differ from the prior-free ones by exactly prior / tau, once.
    let config = |population_prior| EngineConfig {
        top_k: 20,
        population_prior,
        mention_weight: 0.0,
        ..Default::default()
    };
    let texts = [
        "Can't believe the traffic this morning",
        "Coffee first, then the long meeting",
        "Best tacos in town, no contest",
        "Rain all day, staying in with a book",
    ];
    let author = vec![texts.map(PostQuery::text).to_vec()];
    let answer = |prior| {
        engine(config(prior))
            .locate_authors(&author, AuthorRule::Product)
            .unwrap()
            .remove(0)
            .answer
            .top_k
    };
    let (plain, with_prior) = (answer(0.0), answer(0.05));
    assert_eq!(plain.len(), 20);
    let tau = common::base_model().config().tau as f32;
    let population: BTreeMap<u64, u64> = common::fixture_cities()
        .cities()
        .iter()
        .map(|c| (c.id, c.population))
        .collect();
    let shift = |city: u64| 0.05 * (population[&city] as f32).ln_1p() / tau;
    let score_of = |top: &[contrastgeo::engine::Candidate], city: u64| {
        top.iter().find(|c| c.city_id == city).unwrap().score
    };
    let (first, last) = (plain[0].city_id, plain[19].city_id);
    let moved = (score_of(&with_prior, first) - score_of(&with_prior, last))
        - (score_of(&plain, first) - score_of(&plain, last));
    let once = shift(first) - shift(last);
    assert!(
        (moved - once).abs() < 0.05 * once.abs().max(1.0),
        "the prior moved the gap by {moved}, once is {once} ({} posts)",
        texts.len()
    );
}

#[test]
fn authors_without_posts_and_empty_posts_are_refused_by_position() {
    let engine = engine(EngineConfig::default());
    let err = engine
        .locate_authors(
            &[vec![PostQuery::text("hello Denver")], vec![]],
            AuthorRule::default(),
        )
        .unwrap_err();
    assert!(
        matches!(err, EngineError::EmptyAuthor { index: 1 }),
        "{err}"
    );
    let err = engine
        .locate_authors(
            &[
                vec![PostQuery::text("hello Denver")],
                vec![PostQuery::text("ok"), PostQuery::text("  ")],
            ],
            AuthorRule::default(),
        )
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Model(ModelError::EmptyText { index: 2 })),
        "{err}"
    );
}

#[test]
fn a_profile_location_moves_a_vague_post_to_the_place_it_names() {
    let text = "what a lovely quiet afternoon";
    let with = |weight: f32, profile: Option<&str>| {
        engine(EngineConfig {
            profile_weight: weight,
            ..Default::default()
        })
        .locate_posts(&[PostQuery { text, profile }])
        .unwrap()
        .remove(0)
    };
    let text_only = with(0.5, None);
    for (profile, city) in [("Toronto, Ontario", "Toronto"), ("Sydney NSW", "Sydney")] {
        assert_ne!(
            text_only.name, city,
            "pick a profile the text alone does not answer"
        );
        assert_eq!(with(0.5, Some(profile)).name, city, "{profile}");
        // Weight 0 ignores the profile: the text-only answer.
        assert_eq!(with(0.0, Some(profile)), text_only, "{profile}");
    }
    // A blank profile is no profile.
    assert_eq!(with(0.5, Some("   ")), text_only);
}

#[test]
fn locate_group_by_user_answers_each_author_once_from_their_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    build_store(&store);
    let input = common::fixture("engine_posts.jsonl");
    let (code, stdout, stderr) = common::run_contrastgeo(
        &[
            "locate",
            "--store",
            store.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--group-by",
            "user",
        ],
        b"",
    );
    // Posts without a user cannot be grouped: reported, skipped, exit 3.
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("no `user` to group by"), "{stderr}");

    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (line, raw) in std::fs::read_to_string(&input).unwrap().lines().enumerate() {
        let post: serde_json::Value = serde_json::from_str(raw).unwrap();
        if let Some(user) = post["user"].as_str() {
            expected
                .entry(user.to_string())
                .or_default()
                .push(line as u64 + 1);
        }
    }
    assert!(expected.len() >= 3, "the fixture has several authors");
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), expected.len(), "one record per author");
    let mut seen = HashSet::new();
    for record in &records {
        let user = record["user"].as_str().unwrap();
        assert!(seen.insert(user.to_string()), "{user} answered twice");
        let lines: Vec<u64> = record["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_u64().unwrap())
            .collect();
        assert_eq!(lines, expected[user], "{user}");
        assert_eq!(record["posts_used"].as_u64(), Some(lines.len() as u64));
        for weighing in record["weighing_lines"].as_array().unwrap() {
            assert!(lines.contains(&weighing.as_u64().unwrap()), "{record}");
        }
        assert!(
            record["name"].is_string() && record["top_k"].is_array(),
            "{record}"
        );
    }
}
