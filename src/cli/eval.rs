//! `contrastgeo eval`: the K-shot benchmark protocol on a benchmark directory, with JSON and Markdown reports.

use std::path::PathBuf;

use anyhow::Context;

use super::train::TrainOptions;
use crate::eval::benchmark::{self, BenchmarkData, BenchmarkSpec};
use crate::eval::RerankConfig;

/// Arguments of `contrastgeo eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Benchmark directory with cities.jsonl, posts.jsonl and split.json.
    #[arg(long, default_value = "../shared/data")]
    pub data_dir: PathBuf,
    /// K values, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,5,16")]
    pub shots: Vec<usize>,
    /// Seeds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// At most this many test posts per city (quick runs); all by default.
    #[arg(long)]
    pub max_test_per_city: Option<usize>,
    /// Cities reranked by the TLM head.
    #[arg(long, default_value_t = RerankConfig::default().top_k)]
    pub top_k: usize,
    /// Weight of prompt similarity against best support similarity in retrieval.
    #[arg(long, default_value_t = RerankConfig::default().prompt_weight)]
    pub prompt_weight: f32,
    /// Weight of the retrieval score added to the TLM logit.
    #[arg(long, default_value_t = RerankConfig::default().retrieval_weight)]
    pub retrieval_weight: f32,
    /// Evaluate this checkpoint instead of training (use with the single K and seed it was trained with).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Save every run's trained checkpoint under this directory.
    #[arg(long)]
    pub save_checkpoints: Option<PathBuf>,
    /// Directory for report.json and report.md.
    #[arg(long, default_value = "reports/benchmark")]
    pub out: PathBuf,
    /// Model and training options.
    #[command(flatten)]
    pub options: TrainOptions,
}

/// Runs the command.
pub fn run(args: &EvalArgs) -> anyhow::Result<usize> {
    let data = BenchmarkData::load(&args.data_dir, args.options.radius_km)
        .with_context(|| format!("loading benchmark {}", args.data_dir.display()))?;
    let spec = BenchmarkSpec {
        shots: args.shots.clone(),
        seeds: args.seeds.clone(),
        train: args.options.train_config(),
        rerank: RerankConfig {
            top_k: args.top_k,
            prompt_weight: args.prompt_weight,
            retrieval_weight: args.retrieval_weight,
        },
        max_test_per_city: args.max_test_per_city,
        checkpoint: args.checkpoint.clone(),
        save_checkpoints: args.save_checkpoints.clone(),
    };
    let base = || {
        args.options
            .base_model()
            .map_err(|e| crate::model::ModelError::InvalidSetting(format!("{e:#}")))
    };
    let report = benchmark::run(
        &data,
        &spec,
        &base,
        &mut |event| tracing::info!("{event}"),
        &mut |s| {
            if s.step % 20 == 0 || s.step == s.steps {
                tracing::info!(
                    step = s.step,
                    steps = s.steps,
                    loss = s.loss,
                    tlc = s.tlc,
                    tlm = s.tlm,
                    "training"
                );
            }
        },
    )?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let markdown = benchmark::to_markdown(&report);
    std::fs::write(args.out.join("report.md"), &markdown)?;
    println!("{markdown}");
    Ok(0)
}
