//! In-process encode rate of `TextEncoder::embed` on the CPU, for tools/peer_bench.py: reads JSONL posts
//! (`text`) on stdin, loads the encoder, embeds the first 64 posts once (warm-up), then times one `embed` call
//! over all of them and prints `{"posts": N, "seconds": S, "posts_per_s": R}`. Model loading is outside the
//! timing, as the ONNX Runtime session's creation is in the peer benchmark.
//!
//! Run: `head -1000 ../shared/data/posts.jsonl | cargo run --release --example encode_rate`

use std::io::BufRead;
use std::time::Instant;

use candle_core::Device;
use contrastgeo::model::{EncoderSettings, ModelFiles, TextEncoder};

fn main() -> anyhow::Result<()> {
    let mut posts = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let value: serde_json::Value = serde_json::from_str(&line?)?;
        if let Some(text) = value["text"].as_str().filter(|t| !t.trim().is_empty()) {
            posts.push(text.to_string());
        }
    }
    let texts: Vec<&str> = posts.iter().map(String::as_str).collect();
    let files = ModelFiles::resolve(None)?;
    let encoder = TextEncoder::load(&files, EncoderSettings::default(), &Device::Cpu)?;
    encoder.embed(&texts[..texts.len().min(64)])?;
    let start = Instant::now();
    encoder.embed(&texts)?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "posts": texts.len(),
            "seconds": seconds,
            "posts_per_s": texts.len() as f64 / seconds,
        })
    );
    Ok(())
}
