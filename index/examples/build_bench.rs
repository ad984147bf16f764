//! Times the index on synthetic embeddings: insert into sled, graph build, dump, reload, recall.
//!
//! `cargo run --release -p contrastgeo-index --example build_bench -- [VECTORS] [DIMENSION]`
//! (defaults: 100000 vectors of 384 dimensions, in a temporary directory).

use std::time::Instant;

use contrastgeo_index::synthetic::{Clusters, Rng};
use contrastgeo_index::{IndexOptions, VectorIndex};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let count: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let dimension: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(384);
    let dir = tempfile::tempdir()?;
    let clusters = Clusters::new(1, dimension, (count / 80).max(1));
    let mut rng = Rng::new(2);
    println!(
        "{count} vectors of {dimension} dimensions, {} threads",
        rayon::current_num_threads()
    );

    let index = VectorIndex::open(dir.path(), "bench", IndexOptions::default())?;
    let started = Instant::now();
    let mut inserted = 0;
    while inserted < count {
        let n = (count - inserted).min(10_000);
        let batch = clusters.support_rows(&mut rng, inserted, n, 0.1, 80);
        index.insert(&batch)?;
        inserted += n;
    }
    println!(
        "insert (sled + live graph): {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    index.rebuild(&|_, _| {})?;
    println!(
        "rebuild from sled (graph build + dump): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    index.dump()?;
    println!("dump alone: {:.1} s", started.elapsed().as_secs_f64());
    drop(index);

    let started = Instant::now();
    let index = VectorIndex::open(dir.path(), "bench", IndexOptions::default())?;
    println!(
        "reopen with dump: {:.1} s, status {:?}",
        started.elapsed().as_secs_f64(),
        index.status()
    );

    let queries = clusters.sample(&mut rng, 100, 0.1);
    let started = Instant::now();
    let mut hits = 0;
    for query in &queries {
        let found = index.search(query, 10)?;
        let exact = index.exact_search(query, 10)?;
        hits += found
            .iter()
            .filter(|n| exact.iter().any(|e| e.vector_id == n.vector_id))
            .count();
    }
    println!(
        "recall@10 {:.4} over {} queries ({:.1} s with exact search)",
        hits as f64 / (10 * queries.len()) as f64,
        queries.len(),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    for query in &queries {
        index.search(query, 10)?;
    }
    println!(
        "HNSW search: {:.2} ms per query",
        started.elapsed().as_secs_f64() * 1000.0 / queries.len() as f64
    );
    Ok(())
}
