//! `contrastgeo index build`: fills a store with city prompts and support posts embedded by a model.
//!
//! Also home of the flags every command that queries a store shares: the model (a trained checkpoint or the
//! base model, zero-shot), turned into the library's [`crate::engine::open_store`] arguments.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::ModelArgs;
use crate::data::{self, DEFAULT_ASSIGN_RADIUS_KM};
pub use crate::engine::open::gazetteer_cities;
use crate::engine::{
    BuildProgress, BuildStage, EngineConfig, GenerationManifest, LiveStore, OpenOptions,
    OpenedStore,
};
use crate::geo::CityTable;
use crate::model::{GeoModel, GeoModelConfig, ModelFiles};
use contrastgeo_index::SupportPost;

pub use crate::home::GAZETTEER_DIR_ENV;

/// Arguments of `contrastgeo index`.
#[derive(Debug, clap::Args)]
pub struct IndexArgs {
    /// What to do with the index.
    #[command(subcommand)]
    pub command: IndexCommand,
}

/// Sub-commands of `contrastgeo index`.
#[derive(Debug, clap::Subcommand)]
pub enum IndexCommand {
    /// Build a store (replacing any store in the directory) from cities and optional support posts.
    Build(BuildArgs),
}

/// Arguments of `contrastgeo index build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Store directory [default: $CONTRASTGEO_STORE, else index/default in the data home].
    #[arg(long, env = crate::home::STORE_DIR_ENV)]
    pub store: Option<PathBuf>,
    /// Candidate cities (JSONL city records) [default: the whole GeoNames gazetteer].
    #[arg(long)]
    pub cities: Option<PathBuf>,
    /// Directory of the gazetteer files (`tools/setup.sh` fetches them), used without --cities.
    #[arg(long, env = GAZETTEER_DIR_ENV)]
    pub gazetteer: Option<PathBuf>,
    /// Labelled support posts (JSONL: text, city_id and/or lat/lon), embedded as few-shot evidence.
    #[arg(long)]
    pub support: Option<PathBuf>,
    /// Radius for binding coordinate-only support posts to a city, km.
    #[arg(long, value_parser = super::flags::positive_f64, default_value_t = DEFAULT_ASSIGN_RADIUS_KM)]
    pub radius_km: f64,
    /// The model.
    #[command(flatten)]
    pub model: GeoModelArgs,
}

/// The model of commands that query or fill a store.
#[derive(Debug, Clone, clap::Args)]
pub struct GeoModelArgs {
    /// A checkpoint written by `contrastgeo train`; without it, the base model (zero-shot).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Base model options (a checkpoint brings its own encoder settings).
    #[command(flatten)]
    pub model: ModelArgs,
}

impl GeoModelArgs {
    /// Loads the checkpoint, or the base model with default prompts and an untrained head.
    pub fn load(&self) -> anyhow::Result<GeoModel> {
        let device = self.model.device.open()?;
        let model = match &self.checkpoint {
            Some(dir) => {
                let mut model = GeoModel::load(dir, &device)
                    .with_context(|| format!("loading checkpoint {}", dir.display()))?;
                // Batching and precision are the machine's choice, not the checkpoint's.
                model.set_inference_options(&self.model.inference_options(&device)?);
                model
            }
            None => {
                let files = ModelFiles::resolve(self.model.model.as_deref())?;
                let config = GeoModelConfig {
                    encoder: self.model.settings(&device)?,
                    ..Default::default()
                };
                GeoModel::from_base(&files, config, &device)?
            }
        };
        tracing::info!(
            model_id = %model.config().model_id,
            head_trained = model.config().head_trained,
            ?device,
            "model loaded"
        );
        Ok(model)
    }
}

/// A progress bar on stderr for building a store, and the callback that drives it.
fn build_progress() -> (ProgressBar, impl Fn(BuildProgress)) {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let drawn = bar.clone();
    let progress = move |p: BuildProgress| {
        let stage = match p.stage {
            BuildStage::Prompts => "city prompts",
            BuildStage::Supports => "support posts",
            BuildStage::Graph => "graph dump",
        };
        if drawn.length() != Some(p.total as u64) || drawn.message() != stage {
            drawn.reset();
            drawn.set_length(p.total as u64);
            drawn.set_message(stage);
        }
        drawn.set_position(p.done as u64);
    };
    (bar, progress)
}

/// Builds a store (label log + generation 1) with a progress bar on stderr.
pub fn build_with_progress(
    dir: &Path,
    model: &GeoModel,
    cities: &CityTable,
    support: &[SupportPost],
) -> anyhow::Result<GenerationManifest> {
    let started = std::time::Instant::now();
    let (bar, progress) = build_progress();
    let manifest = LiveStore::create(
        dir,
        model,
        cities.cities(),
        support,
        &EngineConfig::default(),
        &progress,
    )
    .with_context(|| format!("building the index in {}", dir.display()))?;
    bar.finish_and_clear();
    eprintln!(
        "indexed {} cities and {} support posts with model `{}` in {:.1}s: {}",
        manifest.cities,
        manifest.supports,
        manifest.model_id,
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(manifest)
}

/// The store to query: `store` (a flag or `$CONTRASTGEO_STORE`) when given, else the default store in the data
/// home, built from the gazetteer on first use (with a progress bar).
pub fn open_or_build_default(store: Option<&Path>, model: &GeoModel) -> anyhow::Result<PathBuf> {
    let (bar, progress) = build_progress();
    let dir = crate::engine::store_or_default(store, || Ok(model), &progress)?;
    bar.finish_and_clear();
    Ok(dir)
}

/// Opens the store in `store` (or the default store, built on first use) for queries with `config`,
/// publishing it to `publish` when given. A store with generations answers with its own model: a
/// `--checkpoint` given too must be that model.
pub fn open_store(
    store: Option<&Path>,
    model: &GeoModelArgs,
    config: EngineConfig,
    publish: Option<&str>,
) -> anyhow::Result<OpenedStore> {
    let publisher = crate::replication::Publisher::shared(publish)?;
    let options = OpenOptions {
        config,
        device: model.model.device.open()?,
        checkpoint: model.checkpoint.clone(),
        publisher,
    };
    let (bar, progress) = build_progress();
    let opened =
        crate::engine::open_store(store, || model.load().map(Arc::new), options, &progress)?;
    bar.finish_and_clear();
    Ok(opened)
}

/// Reads support posts and binds them to `cities`; prints rejected lines and returns how many there were.
fn read_support(
    path: &Path,
    cities: &CityTable,
    model: &GeoModel,
    radius_km: f64,
) -> anyhow::Result<(Vec<SupportPost>, usize)> {
    let read = data::read_labelled_posts(path)?;
    for (line, why) in &read.rejected {
        eprintln!("{}:{line}: {why}; skipped", path.display());
    }
    let (bound, dropped) = data::assign_cities(read.posts, cities, radius_km);
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "support posts whose city is not among the indexed cities were dropped"
        );
    }
    let source = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let post_input = model.config().post_input;
    let support = bound
        .iter()
        .map(|bound| SupportPost {
            text: post_input.render(&bound.post),
            city: cities.cities()[bound.city].id,
            source: source.clone(),
        })
        .collect();
    Ok((support, read.rejected.len()))
}

/// Runs `contrastgeo index ...`; returns how many input lines were rejected.
pub fn run(args: &IndexArgs) -> anyhow::Result<usize> {
    match &args.command {
        IndexCommand::Build(args) => run_build(args),
    }
}

fn run_build(args: &BuildArgs) -> anyhow::Result<usize> {
    let model = args.model.load()?;
    let cities = match &args.cities {
        Some(path) => CityTable::read_jsonl(path)?,
        None => gazetteer_cities(args.gazetteer.as_deref())?,
    };
    let (support, rejected) = match &args.support {
        Some(path) => read_support(path, &cities, &model, args.radius_km)?,
        None => (Vec::new(), 0),
    };
    let dir = args
        .store
        .clone()
        .unwrap_or_else(crate::home::default_store_dir);
    tracing::info!(
        store = %dir.display(),
        cities = cities.len(),
        support = support.len(),
        "building index"
    );
    build_with_progress(&dir, &model, &cities, &support)?;
    Ok(rejected)
}
