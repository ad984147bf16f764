//! `contrastgeo eval`: the K-shot benchmark protocol on a benchmark directory, with JSON and Markdown reports.

use std::path::PathBuf;

use anyhow::Context;

use super::locate::EngineArgs;
use super::train::TrainOptions;
use crate::eval::benchmark::{self, BenchmarkData, BenchmarkSpec};

/// Arguments of `contrastgeo eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Benchmark directory with cities.jsonl, posts.jsonl and split.json.
    #[arg(long, default_value = "../shared/data")]
    pub data_dir: PathBuf,
    /// K values, comma-separated; `all` takes every support post (one seed: every seed draws the same).
    #[arg(long, value_delimiter = ',', value_parser = shots_or_all, default_value = "1,2,4,8,16")]
    pub shots: Vec<usize>,
    /// Seeds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// At most this many test posts per city (quick runs); all by default.
    #[arg(long)]
    pub max_test_per_city: Option<usize>,
    /// Query settings of the engine rule (the same flags as `locate`; no population prior unless given).
    #[command(flatten)]
    pub engine: EngineArgs,
    /// How the engine combines an author's posts in the author-level rows.
    #[arg(long, value_enum, default_value_t)]
    pub author_rule: crate::engine::AuthorRule,
    /// Keep this many cities (evenly spread over the table) out of training: the report then gives every
    /// rule on those cities' test posts apart from the others', i.e. on cities the training never saw.
    #[arg(long, default_value_t = 0)]
    pub hold_out_cities: usize,
    /// Evaluate this checkpoint instead of training (use with the single K and seed it was trained with).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Do not fine-tune the encoders: every run uses the base model, and only the store's parts (votes,
    /// lexical index, label head) learn from the K labels per city.
    #[arg(long)]
    pub no_train: bool,
    /// Save every run's trained checkpoint under this directory.
    #[arg(long)]
    pub save_checkpoints: Option<PathBuf>,
    /// Write the test posts (`test.jsonl`) and each run's K-shot support posts (`k{K}-seed{S}.support.jsonl`)
    /// to this directory and stop: the same sets `index build --support` and `locate` can be checked on.
    #[arg(long)]
    pub export_sets: Option<PathBuf>,
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
    if let Some(dir) = &args.export_sets {
        return export_sets(&data, args, dir);
    }
    let spec = BenchmarkSpec {
        shots: args.shots.clone(),
        seeds: args.seeds.clone(),
        train: args.options.train_config(),
        engine: args.engine.config(),
        author_rule: args.author_rule,
        hold_out_cities: args.hold_out_cities,
        max_test_per_city: args.max_test_per_city,
        checkpoint: args.checkpoint.clone(),
        save_checkpoints: args.save_checkpoints.clone(),
        train_encoder: !args.no_train,
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
        &mut super::train::log_step,
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

/// A K: a whole number >= 1, or `all`.
fn shots_or_all(text: &str) -> Result<usize, String> {
    if text.trim() == "all" {
        Ok(benchmark::ALL_SHOTS)
    } else {
        super::flags::at_least_one(text)
    }
}

/// Writes the benchmark's test set and K-shot support sets as labelled-post JSONL.
fn export_sets(
    data: &BenchmarkData,
    args: &EvalArgs,
    dir: &std::path::Path,
) -> anyhow::Result<usize> {
    use crate::data::split::{sample_k_shot, test_posts};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: String, posts: &[crate::data::CityPost]| -> anyhow::Result<()> {
        let path = dir.join(name);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for post in posts {
            let mut record = post.post.clone();
            record.city_id = Some(data.cities.cities()[post.city].id);
            serde_json::to_writer(&mut out, &record)?;
            std::io::Write::write_all(&mut out, b"\n")?;
        }
        eprintln!("wrote {} posts to {}", posts.len(), path.display());
        Ok(())
    };
    write("test.jsonl".into(), &test_posts(&data.split, &data.posts))?;
    for &shots in &args.shots {
        for &seed in &args.seeds {
            write(
                format!(
                    "k{}-seed{seed}.support.jsonl",
                    benchmark::shots_label(shots)
                ),
                &sample_k_shot(&data.split, &data.posts, shots, seed),
            )?;
        }
    }
    Ok(0)
}
