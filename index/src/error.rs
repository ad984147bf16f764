//! The one error type of the index crate.
//!
//! Every message says what went wrong and, where the user can do something about it, what to do.

use std::path::PathBuf;

/// Result alias of the index crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in the store, the graph or their files.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled could not open the database (missing permissions, or another process holds it).
    #[error(
        "cannot open the record store at {path}: {source} (is another contrastgeo process using it?)"
    )]
    Open {
        /// The sled directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A read or write of the sled database failed.
    #[error("record store I/O failed: {0}")]
    Sled(#[from] sled::Error),
    /// A file operation outside sled failed (graph dump, manifest).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A stored record could not be decoded.
    #[error(
        "corrupt record in tree `{tree}` at key {key}: {reason}; restore the store from a backup \
         or rebuild it (`contrastgeo index build`)"
    )]
    Corrupt {
        /// The sled tree.
        tree: &'static str,
        /// The key, printed.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A record could not be encoded (should not happen for well-formed records).
    #[error("cannot encode a {what} record: {reason}")]
    Encode {
        /// The kind of record.
        what: &'static str,
        /// bincode's message.
        reason: String,
    },
    /// A vector's length differs from the store's dimension.
    #[error(
        "vector has {got} dimensions but the store holds {expected}-dimensional vectors; \
         was it produced by another model? rebuild the index with `contrastgeo index build`"
    )]
    DimensionMismatch {
        /// The store's dimension.
        expected: usize,
        /// The offending vector's length.
        got: usize,
    },
    /// A vector has a NaN or infinite component.
    #[error("vector {index} of the batch has a non-finite value (NaN or infinity) at position {position}")]
    NonFiniteVector {
        /// Position of the vector in the batch (0 for a query).
        index: usize,
        /// Position of the bad component.
        position: usize,
    },
    /// A vector is all zeros (or empty) and cannot be L2-normalised.
    #[error("vector {index} of the batch has zero length and cannot be normalised")]
    ZeroVector {
        /// Position of the vector in the batch (0 for a query).
        index: usize,
    },
    /// The stored vectors were made by another model than the running one.
    #[error(
        "the index holds embeddings of model `{store}` but the running model is `{expected}`; \
         embeddings of different models cannot be compared: rebuild the index with the new model \
         (`contrastgeo index build`)"
    )]
    ModelMismatch {
        /// Model version recorded in the store.
        store: String,
        /// Model version of the running encoder.
        expected: String,
    },
    /// A graph dump cannot be used; the index falls back to exact search and rebuilds the graph.
    #[error("graph dump at {path} is unusable: {reason}")]
    UnusableDump {
        /// The dump directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An operation needs the HNSW graph, which is being rebuilt.
    #[error(
        "the HNSW graph is not loaded yet ({reason}); wait for the rebuild to finish and retry"
    )]
    GraphNotReady {
        /// Why it is not loaded.
        reason: String,
    },
    /// Building the HNSW graph failed.
    #[error(
        "building the HNSW graph failed: {reason}; queries use exact search until \
         `contrastgeo index build` succeeds"
    )]
    BuildFailed {
        /// Why.
        reason: String,
    },
    /// The lexical (BM25) index failed; it is rebuilt from the record store when it cannot be opened.
    #[error("lexical index at {path}: {reason}")]
    Lexical {
        /// The lexical index directory.
        path: PathBuf,
        /// What failed, with tantivy's message.
        reason: String,
    },
    /// Another writer (a generation still open in this or another process) holds the lexical index.
    #[error(
        "the lexical index at {path} is held by another writer (is the store open in another process?)"
    )]
    LexicalBusy {
        /// The lexical index directory.
        path: PathBuf,
    },
    /// A graph build was cancelled because the index is being closed.
    #[error("the graph build was cancelled because the index is closing")]
    Cancelled,
}
