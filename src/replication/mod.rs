//! Replicas on other machines: a writer publishes its store to an object store, followers serve copies
//! that keep up with it.
//!
//! The store's own design does the work: generations are immutable once complete, labels are an ordered
//! log, and a generation's index records the last label it holds. Published, that becomes:
//!
//! ```text
//! URL/generations/000002/...          every file of a complete generation (model/, index/)
//! URL/generations/000002/generation.json   its manifest, uploaded last: present = complete
//! URL/labels/<first>-<last>.jsonl     an acknowledged ingest batch: labels <first>..=<last>, one per line
//! URL/LIVE.json                       the live generation's number, written after it is complete
//! ```
//!
//! [`Publisher`] (the writer side, a [`StorePublisher`](crate::engine::StorePublisher) the live store calls)
//! uploads each generation before it goes live, each label batch before the ingest is acknowledged, and
//! `LIVE.json` after each swap. [`Follower`] downloads the live generation, applies the label segments
//! after its index's watermark (the catch-up a store does after a crash), polls for more, and swaps
//! generations the way a retrain does. Nothing is ever overwritten except `LIVE.json`, so a follower
//! never reads a half-written generation: `LIVE.json` names only complete ones, and an object store's put
//! is atomic. Any object store object_store speaks works: `file://` here and in the tests, `s3://` with
//! the `s3` feature (`AWS_ENDPOINT_URL` for MinIO and other S3-compatible servers).

pub mod follow;
pub mod publish;
pub mod remote;

use std::path::PathBuf;

use contrastgeo_index::{Label, LabelSeq};
use serde::{Deserialize, Serialize};

pub use follow::{FollowStatus, Follower};
pub use publish::Publisher;
pub use remote::Remote;

use crate::engine::{EngineError, GenerationId};

/// The object naming the live generation.
pub const LIVE: &str = "LIVE.json";
/// The folder of label segments.
pub const LABELS: &str = "labels";
/// The folder of generations.
pub const GENERATIONS: &str = "generations";
/// A generation's manifest, uploaded after its files.
pub const MANIFEST: &str = crate::engine::generations::MANIFEST;

/// What went wrong publishing or following.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The URL is not one object_store can open.
    #[error("cannot use {url} as a published store: {why}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why not.
        why: String,
    },
    /// Reading or writing an object failed.
    #[error("{object}: {source}")]
    Remote {
        /// The object's URL.
        object: String,
        /// object_store's error.
        #[source]
        source: object_store::Error,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Local {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An object holds something else than this module wrote.
    #[error("{object} is not a contrastgeo object: {why}")]
    Corrupt {
        /// The object's URL.
        object: String,
        /// What is wrong.
        why: String,
    },
    /// Nothing has been published at the URL yet.
    #[error(
        "nothing is published at {url} yet: start the writer with `contrastgeo serve --store DIR \
         --publish {url}` first"
    )]
    NothingPublished {
        /// The URL.
        url: String,
    },
    /// The remote holds another store's labels.
    #[error(
        "{url} holds labels up to #{remote} but this store's log ends at #{local}: another store \
         publishes there; give each store its own URL"
    )]
    OtherStore {
        /// The URL.
        url: String,
        /// The last label published there.
        remote: LabelSeq,
        /// The last label of the local log.
        local: LabelSeq,
    },
    /// Opening or updating the local copy failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The local label log failed.
    #[error(transparent)]
    Store(#[from] contrastgeo_index::StoreError),
}

/// `LIVE.json`: which generation followers serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LivePointer {
    /// The live generation.
    pub generation: GenerationId,
    /// Its model version.
    pub model_id: String,
    /// When it was published, seconds since the Unix epoch.
    pub published_at: u64,
}

/// One line of a label segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentLine {
    /// The label's sequence number in the writer's log.
    pub seq: LabelSeq,
    /// The label.
    pub label: Label,
}

/// The key of the segment holding labels `first..=last` (zero-padded, so keys sort by sequence).
pub fn segment_key(first: LabelSeq, last: LabelSeq) -> String {
    format!("{LABELS}/{first:020}-{last:020}.jsonl")
}

/// The label range a segment key names, if it is one.
pub fn parse_segment_key(key: &str) -> Option<(LabelSeq, LabelSeq)> {
    let name = key.strip_prefix(LABELS)?.strip_prefix('/')?;
    let (first, last) = name.strip_suffix(".jsonl")?.split_once('-')?;
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

/// The folder of generation `id`.
pub fn generation_key(id: GenerationId) -> String {
    format!("{GENERATIONS}/{id:06}")
}

/// The last label published at `remote` (0 when none).
pub fn last_published_seq(remote: &Remote) -> Result<LabelSeq, ReplicationError> {
    Ok(remote
        .list(LABELS)?
        .iter()
        .filter_map(|key| parse_segment_key(key))
        .map(|(_, last)| last)
        .max()
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_keys_round_trip_and_sort_by_sequence() {
        let keys = [segment_key(1, 9), segment_key(10, 10), segment_key(11, 200)];
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, keys);
        assert_eq!(parse_segment_key(&keys[2]), Some((11, 200)));
        assert_eq!(parse_segment_key("labels/x-2.jsonl"), None);
        assert_eq!(parse_segment_key("labels/5-2.jsonl"), None);
        assert_eq!(parse_segment_key("generations/1-2.jsonl"), None);
    }
}
