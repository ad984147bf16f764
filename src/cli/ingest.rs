//! `contrastgeo ingest` and `contrastgeo model`: an analyst adds cities and labelled posts to a store (they
//! are searchable at once), optionally retrains, and manages the store's model versions.
//!
//! Thin: the file is validated as a whole by [`crate::data::ingest`], the store does the rest
//! ([`crate::engine::LiveStore`]).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;

use super::flags;
use super::index::{gazetteer_cities, open_store, GeoModelArgs};
use super::progress::bulk_progress;
use super::UsageError;
use crate::data::ingest::{plan_ingest, CityLookup, IngestFormat};
use crate::engine::{LiveStore, RetrainOptions, RetrainProgress};
use crate::geo::{City, CityId, CityTable};
use crate::train::TrainConfig;
use contrastgeo_index::PostLabel;

/// Arguments of `contrastgeo ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Store directory [default: $CONTRASTGEO_STORE, else the default store in the data home].
    #[arg(long, env = crate::home::STORE_DIR_ENV)]
    pub store: Option<PathBuf>,
    /// Labels to add: JSONL (`text` + `city_id`, or + a new `city` with name, lat, lon), or CSV/TSV with
    /// the same columns; `-` for stdin.
    #[arg(long)]
    pub labels: PathBuf,
    /// Publish the store's generations and labels to this object-store URL (as `serve --publish`), so
    /// followers see what this command changes.
    #[arg(long, env = "CONTRASTGEO_PUBLISH_URL")]
    pub publish: Option<String>,
    /// Store the good lines even when some are bad (each bad line is reported; exit code 3).
    #[arg(long)]
    pub skip_bad: bool,
    /// Directory of the gazetteer, for city ids the store does not know yet.
    #[arg(long, env = crate::home::GAZETTEER_DIR_ENV)]
    pub gazetteer: Option<PathBuf>,
    /// Retrain on every stored label after the ingest and swap the new model in if it passes the gate.
    #[arg(long)]
    pub retrain: bool,
    /// Retrain settings.
    #[command(flatten)]
    pub retraining: RetrainArgs,
    /// Device and model options (a store carries its own model).
    #[command(flatten)]
    pub model: GeoModelArgs,
}

/// Settings of a retrain.
#[derive(Debug, Clone, clap::Args)]
pub struct RetrainArgs {
    /// Passes over the stored labels.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,
    /// Minimum optimiser steps.
    #[arg(long, default_value_t = TrainConfig::default().min_steps)]
    pub min_steps: usize,
    /// Posts per step.
    #[arg(long, value_parser = flags::at_least_one, default_value_t = TrainConfig::default().batch_size)]
    pub train_batch: usize,
    /// Encoder learning rate.
    #[arg(long, value_parser = flags::non_negative_f64, default_value_t = TrainConfig::default().lr)]
    pub lr: f64,
    /// Largest allowed drop of held-out Acc@1 against the live model (0.02 = 2 points).
    #[arg(long, value_parser = flags::non_negative_f64, default_value_t = RetrainOptions::default().gate_margin)]
    pub gate_margin: f64,
    /// Threads for training (0: all cores; leave some to a running server).
    #[arg(long, default_value_t = 0)]
    pub train_threads: usize,
    /// Seed of training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl RetrainArgs {
    /// The retrain options these flags describe.
    pub fn options(&self) -> RetrainOptions {
        RetrainOptions {
            train: TrainConfig {
                epochs: self.epochs,
                min_steps: self.min_steps,
                batch_size: self.train_batch,
                lr: self.lr,
                seed: self.seed,
                ..TrainConfig::default()
            },
            gate_margin: self.gate_margin,
            threads: self.train_threads,
        }
    }
}

/// Arguments of `contrastgeo model`.
#[derive(Debug, clap::Args)]
pub struct ModelCommandArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ModelCommand,
}

/// Sub-commands of `contrastgeo model`.
#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// List the store's model versions (generations), the live one marked.
    List(StoreArgs),
    /// Make an earlier version live again.
    Rollback(RollbackArgs),
    /// Retrain now on every stored label (gated swap, as `ingest --retrain`).
    Retrain(RetrainCommandArgs),
}

/// A store and a device.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Store directory [default: $CONTRASTGEO_STORE, else the default store in the data home].
    #[arg(long, env = crate::home::STORE_DIR_ENV)]
    pub store: Option<PathBuf>,
    /// Publish the store's generations and labels to this object-store URL (as `serve --publish`), so
    /// followers see what this command changes.
    #[arg(long, env = "CONTRASTGEO_PUBLISH_URL")]
    pub publish: Option<String>,
    /// Device and model options.
    #[command(flatten)]
    pub model: GeoModelArgs,
}

/// Arguments of `contrastgeo model rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The generation to make live [default: the live one's parent, else the one before it].
    #[arg(long)]
    pub to: Option<u64>,
}

/// Arguments of `contrastgeo model retrain`.
#[derive(Debug, clap::Args)]
pub struct RetrainCommandArgs {
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Retrain settings.
    #[command(flatten)]
    pub retraining: RetrainArgs,
}

/// City ids looked up in the store's label log, then (loaded on first need) in the gazetteer.
struct Lookup<'a> {
    store: &'a LiveStore,
    gazetteer_dir: Option<PathBuf>,
    gazetteer: OnceLock<Option<CityTable>>,
}

impl CityLookup for Lookup<'_> {
    fn in_store(&self, id: CityId) -> bool {
        matches!(self.store.labels().city(id), Ok(Some(_)))
    }

    fn in_gazetteer(&self, id: CityId) -> Option<City> {
        let table = self.gazetteer.get_or_init(|| {
            gazetteer_cities(self.gazetteer_dir.as_deref())
                .map_err(|e| tracing::warn!("no gazetteer to look city ids up in: {e:#}"))
                .ok()
        });
        let table = table.as_ref()?;
        table.position(id).map(|i| table.cities()[i].clone())
    }
}

fn open_live(
    store: Option<&Path>,
    model: &GeoModelArgs,
    publish: Option<&str>,
) -> anyhow::Result<std::sync::Arc<LiveStore>> {
    let opened = open_store(
        store,
        model,
        crate::engine::EngineConfig::default(),
        publish,
    )?;
    opened.live().cloned().ok_or_else(|| {
        UsageError(
            "this store is a plain index without a label log; build it with `contrastgeo index build` \
             to add labels"
                .into(),
        )
        .into()
    })
}

/// Runs `contrastgeo ingest`; returns how many lines were rejected (with `--skip-bad`).
pub fn run(args: &IngestArgs) -> anyhow::Result<usize> {
    let store = open_live(args.store.as_deref(), &args.model, args.publish.as_deref())?;
    let lookup = Lookup {
        store: &store,
        gazetteer_dir: args.gazetteer.clone(),
        gazetteer: OnceLock::new(),
    };
    let format = match args.labels.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => IngestFormat::Csv,
        Some(e) if e.eq_ignore_ascii_case("tsv") => IngestFormat::Tsv,
        _ => IngestFormat::Jsonl,
    };
    let source = args
        .labels
        .file_name()
        .map_or_else(|| "stdin".to_string(), |n| n.to_string_lossy().into_owned());
    let plan = if args.labels == Path::new("-") {
        plan_ingest(std::io::stdin().lock(), format, "stdin", &lookup)?
    } else {
        let file = std::fs::File::open(&args.labels)
            .with_context(|| format!("opening {}", args.labels.display()))?;
        plan_ingest(BufReader::new(file), format, &source, &lookup)?
    };
    for (line, why) in &plan.problems {
        eprintln!("{}:{line}: {why}", args.labels.display());
    }
    if !plan.problems.is_empty() && !args.skip_bad {
        anyhow::bail!(
            "{} bad line(s) in {}; nothing was written (fix them, or pass --skip-bad to store the good lines)",
            plan.problems.len(),
            args.labels.display()
        );
    }
    let added_at = crate::engine::generations::now_unix();
    let posts: Vec<PostLabel> = plan
        .posts
        .iter()
        .map(|p| PostLabel {
            text: p.text.clone(),
            city: p.city,
            source: p.source.clone().unwrap_or_else(|| source.clone()),
            added_at,
        })
        .collect();
    let report = store.ingest_with(&plan.cities, &posts, &|appended| {
        eprintln!(
            "acknowledged: {} city(ies) and {} post(s) stored durably ({} duplicate post(s) skipped); \
             making them searchable",
            appended.cities.len(),
            appended.posts.len(),
            appended.duplicates
        );
    })?;
    eprintln!(
        "searchable after {:.0} ms in generation {} of {}",
        report.searchable_after_s * 1000.0,
        store.current_generation(),
        store.dir().display()
    );
    println!("{}", serde_json::to_string(&report)?);
    if args.retrain {
        retrain(&store, &args.retraining)?;
    }
    Ok(plan.problems.len())
}

fn retrain(store: &LiveStore, args: &RetrainArgs) -> anyhow::Result<()> {
    let bar = bulk_progress(None);
    let report = store.retrain(&args.options(), &|p| {
        bar.set_message(match p {
            RetrainProgress::Training { step, steps, loss } => {
                format!("training step {step}/{steps}, loss {loss:.3}")
            }
            RetrainProgress::Indexing { done, total } => format!("indexing {done}/{total}"),
            RetrainProgress::Gating => "comparing with the live model".into(),
            RetrainProgress::Swapping => "swapping".into(),
        });
        bar.tick();
    })?;
    bar.finish_and_clear();
    eprintln!(
        "retrain: generation {} (model {}) {}; held-out Acc@1 {:.3} vs live {:.3} on {} posts; {:.1}s",
        report.generation,
        report.model_id,
        if report.swapped {
            "is live".to_string()
        } else {
            format!("was not swapped in: {}", report.reason.clone().unwrap_or_default())
        },
        report.gate.new_acc,
        report.gate.live_acc,
        report.gate.held_out,
        report.total_s
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Runs `contrastgeo model ...`.
pub fn run_model(args: &ModelCommandArgs) -> anyhow::Result<usize> {
    match &args.command {
        ModelCommand::List(store) => {
            let live = open_live(
                store.store.as_deref(),
                &store.model,
                store.publish.as_deref(),
            )?;
            for version in live.versions()? {
                println!("{}", serde_json::to_string(&version)?);
            }
        }
        ModelCommand::Rollback(rollback) => {
            let live = open_live(
                rollback.store.store.as_deref(),
                &rollback.store.model,
                rollback.store.publish.as_deref(),
            )?;
            let current = live.current_generation();
            let versions = live.versions()?;
            let to = match rollback.to {
                Some(to) => to,
                None => versions
                    .iter()
                    .find(|v| v.current)
                    .and_then(|v| v.manifest.parent)
                    .or_else(|| {
                        versions
                            .iter()
                            .map(|v| v.manifest.id)
                            .filter(|&id| id < current)
                            .max()
                    })
                    .ok_or_else(|| {
                        UsageError("there is no earlier generation to roll back to".into())
                    })?,
            };
            let manifest = live.rollback(to)?;
            eprintln!(
                "generation {to} (model {}) is live again (was {current})",
                manifest.model_id
            );
        }
        ModelCommand::Retrain(command) => {
            let live = open_live(
                command.store.store.as_deref(),
                &command.store.model,
                command.store.publish.as_deref(),
            )?;
            retrain(&live, &command.retraining)?;
        }
    }
    Ok(0)
}
