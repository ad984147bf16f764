//! contrastgeo's persistent vector store: sled records plus an HNSW graph over them.
//!
//! This crate knows nothing of models or tensors: it stores cities, support posts and vectors
//! (`&[f32]` with a [`VectorMeta`]) and answers "which stored vectors are nearest to this one".
//!
//! # Design
//!
//! - **sled is the source of truth.** [`Store`] keeps every record in sled trees under
//!   `dir/records.sled`; vector ids come from a counter bumped in the same transaction as the
//!   vectors, so a crash never reuses an id. The store also records the model version whose
//!   embeddings it holds and the vectors' dimension, and refuses vectors of another dimension or
//!   with NaN/infinite components.
//! - **The graph is a cache.** [`AnnIndex`] is an in-memory hnsw_rs graph over the L2-normalised
//!   vectors (cosine similarity through [`DotDistance`]), which can always be rebuilt from sled.
//!   Writes go to sled first, then to the live graph, so new vectors are searchable at once.
//! - **Dumps and the watermark.** [`VectorIndex::dump`] saves the graph to `dir/graph/` with a
//!   manifest recording the format version, model version, dimension, CRC-32s and the watermark:
//!   the highest vector id in the graph. Ids only grow, so on the next start the dump is reloaded
//!   and only the vectors above the watermark are inserted.
//! - **Atomic rename.** A dump is written to `dir/graph.tmp/`, manifest last, and renamed into
//!   place: a crash leaves the old dump or the new one, never a torn one (see [`dump`]).
//! - **Never stuck on a bad dump.** A missing, corrupt, old-format or other-model dump does not
//!   stop [`VectorIndex::open`]: queries fall back to exact search over sled while a background
//!   thread rebuilds the graph, then the new graph is swapped in (readers hold an `Arc` of the
//!   generation they started with) and dumped.
//! - **Model mismatch is explicit.** Embeddings of different models cannot be compared, so an index
//!   opened with another model version than the store's refuses queries with
//!   [`StoreError::ModelMismatch`], which tells the user to run `contrastgeo index build`.
//!
//! Modules: [`records`] (the record types), [`labels`] (the durable log of cities and labelled posts
//! a store's generations are built from), [`store`] (sled), [`sled_open`] (opening sled past a lock a dropped handle still holds), [`ann`] (the graph and exact
//! search), [`lexical`] (the BM25 index of the support posts' words, tantivy), [`dump`] (dump files), [`vector_index`] (the two together), [`synthetic`] (clustered
//! random embeddings for tests and benchmarks).

#[cfg(not(target_pointer_width = "64"))]
compile_error!(
    "contrastgeo-index maps u64 vector ids to hnsw_rs's usize ids and needs a 64-bit target"
);

pub mod ann;
pub mod dump;
pub mod error;
pub mod labels;
pub mod lexical;
pub mod records;
pub mod sled_open;
pub mod store;
pub mod synthetic;
pub mod vector_index;

pub use ann::{
    dot, exact_search_records, normalise, AnnIndex, DotDistance, IndexOptions, Neighbour,
};
pub use dump::{DumpFile, DumpManifest, DUMP_FORMAT_VERSION};
pub use error::{Result, StoreError};
pub use labels::{Appended, Label, LabelLog, LabelSeq, PostLabel};
pub use lexical::{LexicalHit, LexicalIndex, LEXICAL_DIR};
pub use records::{
    City, CityId, PostId, SupportPost, VectorId, VectorKind, VectorMeta, VectorRecord,
};
pub use store::{Store, VectorIter};
pub use vector_index::{IndexStatus, VectorIndex};
