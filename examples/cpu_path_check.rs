//! Compares the CPU inference pass (`TextEncoder::embed`) with the candle reference path
//! (`TextEncoder::embed_reference`) on real posts: minimum and mean cosine, and interleaved timings.
//!
//! Run: `cargo run --release --example cpu_path_check -- ../shared/data/posts.jsonl 1000 3 32`
//! (posts file, how many posts, how many timing rounds, batch size).

use std::io::BufRead;
use std::time::Instant;

use candle_core::Device;
use contrastgeo::model::{EncoderSettings, ModelFiles, TextEncoder};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("../shared/data/posts.jsonl");
    let count: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let rounds: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let batch_size: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let mut posts = Vec::with_capacity(count);
    for line in std::io::BufReader::new(std::fs::File::open(path)?).lines() {
        let value: serde_json::Value = serde_json::from_str(&line?)?;
        if let Some(text) = value["text"].as_str() {
            if !text.trim().is_empty() {
                posts.push(text.to_string());
            }
        }
        if posts.len() == count {
            break;
        }
    }
    let texts: Vec<&str> = posts.iter().map(String::as_str).collect();
    let files = ModelFiles::resolve(None)?;
    let settings = EncoderSettings {
        batch_size,
        ..Default::default()
    };
    let encoder = TextEncoder::load(&files, settings, &Device::Cpu)?;
    let fast = encoder.embed(&texts)?;
    let reference = encoder.embed_reference(&texts)?;
    let cosines: Vec<f32> = fast
        .iter()
        .zip(&reference)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>())
        .collect();
    let min = cosines.iter().copied().fold(f32::INFINITY, f32::min);
    let mean = cosines.iter().sum::<f32>() / cosines.len() as f32;
    println!(
        "posts {} min_cosine {min:.7} mean_cosine {mean:.7}",
        texts.len()
    );
    let (mut fast_rates, mut reference_rates) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let start = Instant::now();
        encoder.embed(&texts)?;
        let fast_rate = texts.len() as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        encoder.embed_reference(&texts)?;
        let reference_rate = texts.len() as f64 / start.elapsed().as_secs_f64();
        println!("round {round}: cpu pass {fast_rate:.1} posts/s, candle path {reference_rate:.1} posts/s");
        fast_rates.push(fast_rate);
        reference_rates.push(reference_rate);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (f, r) = (median(&mut fast_rates), median(&mut reference_rates));
    println!(
        "median: cpu pass {f:.1} posts/s, candle path {r:.1} posts/s, ratio {:.2}",
        f / r
    );
    Ok(())
}
