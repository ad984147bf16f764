//! The benchmark suite: tests that need the labelled benchmark (real posts of 60 North American cities),
//! which users do not have. Every test here is `#[ignore]`d so that `cargo test` passes on a fresh machine;
//! CI runs them with the data directory named:
//!
//! ```sh
//! CONTRASTGEO_BENCHMARK_DATA=../shared/data cargo test --release --test benchmark -- --ignored
//! ```
//!
//! Run without the variable, each test fails at once saying what it needs.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use contrastgeo::data::{read_labelled_posts, split::Split, LabelledPost};
use contrastgeo::engine::{Engine, EngineConfig};
use contrastgeo::geo::CityTable;
use contrastgeo::model::{GeoModel, GeoModelConfig};
use contrastgeo_index::{SupportPost, VectorIndex, VectorKind, VectorMeta};

fn benchmark_posts() -> Vec<LabelledPost> {
    read_labelled_posts(&common::benchmark_data().join("posts.jsonl"))
        .expect("posts.jsonl")
        .posts
}

#[test]
#[ignore = "benchmark suite: set CONTRASTGEO_BENCHMARK_DATA (see the file's doc)"]
fn hnsw_recall_at_10_against_exact_search_on_real_post_embeddings() {
    let all = benchmark_posts();
    let posts: Vec<&LabelledPost> = all.iter().step_by(19).take(2000).collect();
    assert_eq!(posts.len(), 2000);
    let texts: Vec<&str> = posts.iter().map(|p| p.text.as_str()).collect();
    let started = Instant::now();
    let vectors = common::encoder().embed(&texts).unwrap();
    eprintln!(
        "embedded 2000 posts in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let (stored, queries) = vectors.split_at(1800);
    let tmp = tempfile::tempdir().unwrap();
    let index = VectorIndex::open(
        tmp.path(),
        "recall-test",
        EngineConfig::default().index_options(),
    )
    .unwrap();
    let rows: Vec<(VectorMeta, Vec<f32>)> = stored
        .iter()
        .zip(&posts)
        .map(|(v, p)| {
            let meta = VectorMeta {
                city: p.city_id.unwrap_or(0),
                kind: VectorKind::Support,
                post: None,
            };
            (meta, v.clone())
        })
        .collect();
    index.insert(&rows).unwrap();
    let mut found = 0usize;
    for query in queries {
        let approx: HashSet<u64> = index
            .search(query, 10)
            .unwrap()
            .iter()
            .map(|n| n.vector_id)
            .collect();
        let exact = index.exact_search(query, 10).unwrap();
        found += exact
            .iter()
            .filter(|n| approx.contains(&n.vector_id))
            .count();
    }
    let recall = found as f64 / (10 * queries.len()) as f64;
    eprintln!(
        "HNSW recall@10 = {recall:.4} over {} queries",
        queries.len()
    );
    assert!(recall >= 0.95, "recall@10 {recall}");
}

/// Zero-shot on the 60 benchmark cities with two support posts each must beat chance by far on posts that
/// name their city: a sanity check of the whole query path on real posts (the accuracy figures themselves
/// come from `contrastgeo eval`).
#[test]
#[ignore = "benchmark suite: set CONTRASTGEO_BENCHMARK_DATA (see the file's doc)"]
fn zero_shot_locate_answers_real_posts_that_name_their_city() {
    let data = common::benchmark_data();
    let cities = CityTable::read_jsonl(&data.join("cities.jsonl")).unwrap();
    let split = Split::read(&data.join("split.json")).unwrap();
    let posts = benchmark_posts();
    let by_id: HashMap<&str, &LabelledPost> = posts
        .iter()
        .filter_map(|p| p.id.as_deref().map(|id| (id, p)))
        .collect();
    let mut support = Vec::new();
    let mut tests = Vec::new();
    for (city, city_split) in &split.cities {
        support.extend(
            city_split
                .support
                .iter()
                .filter_map(|id| by_id.get(id.as_str()))
                .take(2)
                .map(|post| SupportPost {
                    text: post.text.clone(),
                    city: *city,
                    source: "posts.jsonl".into(),
                }),
        );
        let name = cities
            .cities()
            .iter()
            .find(|c| c.id == *city)
            .map(|c| c.name.to_lowercase())
            .unwrap();
        tests.extend(
            city_split
                .test
                .iter()
                .filter_map(|id| by_id.get(id.as_str()))
                .filter(|p| p.text.to_lowercase().contains(&name))
                .take(5)
                .map(|p| (p.text.clone(), *city)),
        );
    }
    let model = std::sync::Arc::new(
        GeoModel::from_base(
            &common::model_files(),
            GeoModelConfig::default(),
            &candle_core::Device::Cpu,
        )
        .unwrap(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    Engine::build_index(
        &store,
        &model,
        cities.cities(),
        &support,
        &EngineConfig::default(),
        &|_| {},
    )
    .unwrap();
    let engine = Engine::open(&store, model, EngineConfig::default()).unwrap();
    let texts: Vec<&str> = tests.iter().map(|(t, _)| t.as_str()).collect();
    let answers = engine.locate(&texts).unwrap();
    let right = answers
        .iter()
        .zip(&tests)
        .filter(|(a, (_, city))| a.city_id == *city)
        .count();
    let accuracy = right as f64 / tests.len() as f64;
    eprintln!(
        "zero-shot Acc@1 on {} named test posts: {accuracy:.3}",
        tests.len()
    );
    assert!(tests.len() >= 150, "{}", tests.len());
    assert!(
        accuracy > 0.6,
        "Acc@1 {accuracy} on posts naming their city"
    );
}
