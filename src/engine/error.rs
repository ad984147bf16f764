//! The one error type of the query path, converting the model's and the index's errors at the boundary.

use std::path::PathBuf;

use contrastgeo_index::StoreError;

use crate::geo::CityId;
use crate::model::ModelError;

/// Everything that can go wrong between a post and its answer, or while building an index.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Encoding a post or a city prompt failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The sled store or the HNSW graph failed.
    #[error(transparent)]
    Index(#[from] StoreError),
    /// There is no index at the given directory.
    #[error(
        "no index at {dir}: build one with `contrastgeo index build --store {dir}` \
         (add --checkpoint DIR to use a trained model)"
    )]
    NoStore {
        /// The store directory.
        dir: PathBuf,
    },
    /// The index holds no vectors to search.
    #[error(
        "the index at {dir} holds no vectors; rebuild it with `contrastgeo index build --store {dir}`"
    )]
    EmptyStore {
        /// The store directory.
        dir: PathBuf,
    },
    /// The index was built by another model than the one answering queries.
    #[error(
        "the index at {dir} holds embeddings of model `{store}` but the query model is `{model}`; \
         embeddings of different models cannot be compared: rebuild the index with this model \
         (`contrastgeo index build --store {dir}` with the same --checkpoint / model flags), \
         or query with the model it was built with"
    )]
    ModelMismatch {
        /// The store directory.
        dir: PathBuf,
        /// Model version recorded in the store.
        store: String,
        /// Model id of the query model.
        model: String,
    },
    /// A support post names a city that is not among the cities being indexed.
    #[error(
        "support post #{index} is about city {city}, which is not among the indexed cities; \
         add the city or drop the post"
    )]
    UnknownSupportCity {
        /// Position of the post in the input.
        index: usize,
        /// Its city id.
        city: CityId,
    },
    /// A city id appears twice among the cities to index.
    #[error("city id {0} appears twice among the cities to index")]
    DuplicateCity(CityId),
    /// There is nothing to build an index from.
    #[error("no cities to index")]
    NoCities,
    /// Posts were given with another number of precomputed vectors.
    #[error("{posts} posts were given with {vectors} vectors; give one vector per post")]
    VectorCount {
        /// Posts given.
        posts: usize,
        /// Vectors given.
        vectors: usize,
    },
    /// None of a post's nearest vectors belongs to a known city (the store lacks city records).
    #[error(
        "post #{index}: none of its nearest vectors belongs to a city the store knows; \
         the store is inconsistent, rebuild it with `contrastgeo index build`"
    )]
    NoCandidates {
        /// Position of the post in the request.
        index: usize,
    },
    /// An author was given with no posts.
    #[error("author #{index} has no posts; every author needs at least one")]
    EmptyAuthor {
        /// Position of the author in the request.
        index: usize,
    },
    /// Another process holds the store (sled's lock on its label log).
    #[error(
        "the store at {dir} is in use by another process (a running `contrastgeo serve`?): one process \
         owns a store; send labels to that server (POST /v1/cities, /v1/cities/{{id}}/examples), or stop it \
         and retry"
    )]
    StoreBusy {
        /// The store directory.
        dir: PathBuf,
    },
    /// The operation cannot run now (e.g. a retrain while another runs).
    #[error("{0}")]
    Busy(String),
    /// The store's labels or generation are durable here but could not be published for replicas elsewhere
    /// (the publisher retries them with the next write).
    #[error("published nowhere yet: {0}")]
    Publish(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A configuration value is out of range.
    #[error("invalid engine setting: {0}")]
    InvalidConfig(String),
    /// A file operation on the store directory failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    /// Maps an I/O error on `path` to [`EngineError::Io`] (for `map_err`).
    pub fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
        move |source| EngineError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result of the engine layer.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
