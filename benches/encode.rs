//! Encode throughput: 1,000 real posts from `../shared/data/posts.jsonl` (tweet-length texts) through the
//! text encoder at batch 1, 32 and 128 with length bucketing, on the CPU: `TextEncoder::embed` (the CPU
//! inference pass) and, at batch 32, `TextEncoder::embed_reference` (candle ops on padded batches) for
//! comparison.
//!
//! Run: `cargo bench --bench encode`. Criterion reports time per 1,000 posts and posts/s (its "elem/s").

use std::io::BufRead;
use std::time::Duration;

use candle_core::Device;
use contrastgeo::model::{EncoderSettings, ModelFiles, TextEncoder};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const POSTS: usize = 1_000;

fn sample_posts() -> Vec<String> {
    // The benchmark directory: $CONTRASTGEO_BENCHMARK_DATA, else ../shared/data beside the checkout.
    let dir = std::env::var_os("CONTRASTGEO_BENCHMARK_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let path = dir.join("posts.jsonl");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; this benchmark reads real posts: set CONTRASTGEO_BENCHMARK_DATA to the benchmark directory",
            path.display()
        )
    });
    std::io::BufReader::new(file)
        .lines()
        .take(POSTS)
        .map(|line| {
            let value: serde_json::Value =
                serde_json::from_str(&line.expect("read line")).expect("JSON line");
            value["text"].as_str().expect("text field").to_string()
        })
        .collect()
}

fn encode_throughput(c: &mut Criterion) {
    let posts = sample_posts();
    let texts: Vec<&str> = posts.iter().map(String::as_str).collect();
    let files = ModelFiles::resolve(None).unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("encode_1000_posts");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(40))
        .warm_up_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(texts.len() as u64));
    for batch_size in [1usize, 32, 128] {
        let settings = EncoderSettings {
            batch_size,
            ..Default::default()
        };
        let encoder = TextEncoder::load(&files, settings, &Device::Cpu).expect("load encoder");
        group.bench_with_input(BenchmarkId::new("batch", batch_size), &texts, |b, texts| {
            b.iter(|| encoder.embed(texts).expect("embed"))
        });
        if batch_size == 32 {
            group.bench_with_input(
                BenchmarkId::new("candle_path_batch", batch_size),
                &texts,
                |b, texts| b.iter(|| encoder.embed_reference(texts).expect("embed")),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, encode_throughput);
criterion_main!(benches);
