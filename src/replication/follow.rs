//! The follower side: a read-only copy of a published store that keeps up with its writer.
//!
//! The local cache holds downloaded generations (`CACHE/generations/000002/`, complete once its
//! `generation.json` is in place, which is downloaded last; `000002.download/` while downloading, removed
//! at start: a follower killed mid-download starts that generation again). A downloaded generation is
//! opened like any generation and caught up with the published label segments after its index's
//! watermark, then polled: new segments are applied to the live copy, a new `LIVE.json` generation is
//! downloaded, caught up beside the serving one and swapped in (queries hold the snapshot they started
//! with, so none fails).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use candle_core::Device;
use contrastgeo_index::{Label, LabelSeq};
use serde::{Deserialize, Serialize};

use super::{
    generation_key, parse_segment_key, LivePointer, Remote, ReplicationError, SegmentLine,
    GENERATIONS, LABELS, LIVE, MANIFEST,
};
use crate::atomic_dir;
use crate::engine::{
    apply_labels, open_generation_dir, Engine, EngineConfig, GenerationId, Snapshot,
};

const DOWNLOADING: &str = ".download";

/// How far a follower is behind its writer, as `/readyz` and `/metrics` report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FollowStatus {
    /// The URL followed.
    pub url: String,
    /// The generation served.
    pub generation: GenerationId,
    /// The live generation the writer published (differs from `generation` while downloading it).
    pub published_generation: GenerationId,
    /// The last label applied here.
    pub applied_seq: LabelSeq,
    /// The last label the writer published.
    pub published_seq: LabelSeq,
    /// Published labels not applied here yet.
    pub lag_labels: u64,
    /// Seconds since this copy was last caught up with the writer (0 when the last poll found nothing
    /// missing).
    pub lag_s: f64,
    /// Polls done.
    pub polls: u64,
    /// The last poll's error, if it failed (the copy keeps serving what it has).
    pub last_error: Option<String>,
}

/// A followed store: the engine over the local copy, and its poller.
pub struct Follower {
    remote: Remote,
    cache: PathBuf,
    device: Device,
    config: EngineConfig,
    engine: Arc<Engine>,
    state: Mutex<State>,
    stop: AtomicBool,
}

struct State {
    generation: GenerationId,
    published_generation: GenerationId,
    applied_seq: LabelSeq,
    published_seq: LabelSeq,
    /// When the last poll (or the start) found nothing missing.
    caught_up_at: Instant,
    polls: u64,
    last_error: Option<String>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("url", &self.remote.url())
            .field("cache", &self.cache)
            .finish()
    }
}

impl Follower {
    /// Downloads (or reuses from `cache`) the live generation published at `url`, catches it up with the
    /// published labels, and polls every `poll` for more on a background thread (stopped when the
    /// follower is dropped).
    pub fn start(
        url: &str,
        cache: &Path,
        device: &Device,
        config: EngineConfig,
        poll: Duration,
    ) -> Result<Arc<Self>, ReplicationError> {
        config.validate()?;
        let remote = Remote::open(url)?;
        let generations = cache.join(GENERATIONS);
        std::fs::create_dir_all(&generations).map_err(|source| ReplicationError::Local {
            path: generations.clone(),
            source,
        })?;
        remove_partial_downloads(&generations)?;
        let live = read_live(&remote)?.ok_or_else(|| ReplicationError::NothingPublished {
            url: remote.url().to_string(),
        })?;
        let dir = download_generation(&remote, &generations, live.generation)?;
        let snapshot = open_generation_dir(&dir, device, &config)?;
        let before = snapshot.index().store().label_watermark()?;
        let (applied_seq, published_seq, _) = catch_up(&remote, &snapshot)?;
        if applied_seq > before || snapshot.head().is_none() {
            snapshot.refit_head()?;
        }
        let engine = Arc::new(Engine::with_snapshot(snapshot, config.clone()));
        let follower = Arc::new(Self {
            remote,
            cache: cache.to_path_buf(),
            device: device.clone(),
            config,
            engine,
            state: Mutex::new(State {
                generation: live.generation,
                published_generation: live.generation,
                applied_seq,
                published_seq,
                caught_up_at: Instant::now(),
                polls: 0,
                last_error: None,
            }),
            stop: AtomicBool::new(false),
        });
        tracing::info!(
            url = follower.remote.url(),
            generation = live.generation,
            labels = published_seq,
            "following"
        );
        let weak = Arc::downgrade(&follower);
        std::thread::Builder::new()
            .name("contrastgeo-follow".into())
            .spawn(move || poll_loop(weak, poll))
            .map_err(|source| ReplicationError::Local {
                path: cache.to_path_buf(),
                source,
            })?;
        Ok(follower)
    }

    /// The engine answering queries over the local copy.
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine)
    }

    /// How far behind the writer this copy is.
    pub fn status(&self) -> FollowStatus {
        let state = self.lock();
        let lag_labels = state.published_seq.saturating_sub(state.applied_seq);
        let caught_up = lag_labels == 0 && state.generation == state.published_generation;
        FollowStatus {
            url: self.remote.url().to_string(),
            generation: state.generation,
            published_generation: state.published_generation,
            applied_seq: state.applied_seq,
            published_seq: state.published_seq,
            lag_labels,
            lag_s: if caught_up {
                0.0
            } else {
                state.caught_up_at.elapsed().as_secs_f64()
            },
            polls: state.polls,
            last_error: state.last_error.clone(),
        }
    }

    /// Stops polling (the copy keeps serving what it has).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One poll: a new live generation is downloaded, caught up and swapped in; new labels are applied.
    pub fn poll_once(&self) -> Result<(), ReplicationError> {
        let live = read_live(&self.remote)?.ok_or_else(|| ReplicationError::NothingPublished {
            url: self.remote.url().to_string(),
        })?;
        let serving = {
            let mut state = self.lock();
            state.published_generation = live.generation;
            state.generation
        };
        let generations = self.cache.join(GENERATIONS);
        if live.generation != serving {
            // The download may take a while: the lag reported meanwhile counts the labels published now.
            let published = super::last_published_seq(&self.remote)?;
            {
                let mut state = self.lock();
                state.published_seq = state.published_seq.max(published);
            }
            let dir = download_generation(&self.remote, &generations, live.generation)?;
            let snapshot = open_generation_dir(&dir, &self.device, &self.config)?;
            let (applied_seq, published_seq, _) = catch_up(&self.remote, &snapshot)?;
            snapshot.refit_head()?;
            self.engine.swap(snapshot);
            let mut state = self.lock();
            state.generation = live.generation;
            state.applied_seq = applied_seq;
            state.published_seq = published_seq;
            tracing::info!(
                generation = live.generation,
                "swapped in the published generation"
            );
            drop(state);
            remove_old_generations(&generations, serving, live.generation);
        } else {
            let snapshot = self.engine.snapshot();
            let (applied_seq, published_seq, posts) = catch_up(&self.remote, &snapshot)?;
            if posts > 0 {
                snapshot.refit_head_in_background();
            }
            let mut state = self.lock();
            state.applied_seq = applied_seq;
            state.published_seq = published_seq;
        }
        let mut state = self.lock();
        if state.applied_seq >= state.published_seq && state.generation == live.generation {
            state.caught_up_at = Instant::now();
        }
        Ok(())
    }
}

/// Polls until the follower is dropped or stopped; a failed poll is recorded and retried next time.
fn poll_loop(follower: Weak<Follower>, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Some(follower) = follower.upgrade() else {
            return;
        };
        if follower.stop.load(Ordering::Relaxed) {
            return;
        }
        let outcome = follower.poll_once();
        let mut state = follower.lock();
        state.polls += 1;
        match outcome {
            Ok(()) => state.last_error = None,
            Err(error) => {
                tracing::warn!("following {}: {error}", follower.remote.url());
                state.last_error = Some(error.to_string());
            }
        }
    }
}

/// `LIVE.json`, if published.
fn read_live(remote: &Remote) -> Result<Option<LivePointer>, ReplicationError> {
    let Some(bytes) = remote.get(LIVE)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ReplicationError::Corrupt {
            object: format!("{}/{LIVE}", remote.url()),
            why: e.to_string(),
        })
}

/// Applies every published label the snapshot lacks; returns (its watermark after, the last published
/// label, posts applied).
fn catch_up(
    remote: &Remote,
    snapshot: &Snapshot,
) -> Result<(LabelSeq, LabelSeq, usize), ReplicationError> {
    let mut watermark = snapshot.index().store().label_watermark()?;
    let mut published = 0;
    let mut posts = 0;
    for key in remote.list(LABELS)? {
        let Some((_, last)) = parse_segment_key(&key) else {
            continue;
        };
        published = published.max(last);
        if last <= watermark {
            continue;
        }
        let labels = read_segment(remote, &key)?;
        posts += labels
            .iter()
            .filter(|(seq, l)| *seq > watermark && matches!(l, Label::Post(_)))
            .count();
        apply_labels(snapshot, &labels)?;
        watermark = snapshot.index().store().label_watermark()?;
    }
    Ok((watermark, published.max(watermark), posts))
}

/// The labels of one segment, in order.
fn read_segment(remote: &Remote, key: &str) -> Result<Vec<(LabelSeq, Label)>, ReplicationError> {
    let object = || format!("{}/{key}", remote.url());
    let bytes = remote.get(key)?.ok_or_else(|| ReplicationError::Corrupt {
        object: object(),
        why: "listed but gone".into(),
    })?;
    let mut labels = Vec::new();
    for (line, text) in bytes.split(|b| *b == b'\n').enumerate() {
        if text.is_empty() {
            continue;
        }
        let parsed: SegmentLine =
            serde_json::from_slice(text).map_err(|e| ReplicationError::Corrupt {
                object: object(),
                why: format!("line {}: {e}", line + 1),
            })?;
        labels.push((parsed.seq, parsed.label));
    }
    Ok(labels)
}

/// The local directory of generation `id`, downloaded first unless complete already (its manifest,
/// downloaded last, is there). A published generation without its manifest is still uploading: refused.
fn download_generation(
    remote: &Remote,
    generations: &Path,
    id: GenerationId,
) -> Result<PathBuf, ReplicationError> {
    let dir = generations.join(format!("{id:06}"));
    if dir.join(MANIFEST).is_file() {
        return Ok(dir);
    }
    let folder = generation_key(id);
    let keys = remote.list(&folder)?;
    let manifest_key = format!("{folder}/{MANIFEST}");
    if !keys.contains(&manifest_key) {
        return Err(ReplicationError::Corrupt {
            object: format!("{}/{folder}", remote.url()),
            why: "the generation is incomplete (no manifest): its upload did not finish".into(),
        });
    }
    let started = Instant::now();
    let partial = generations.join(format!("{id:06}{DOWNLOADING}"));
    let local = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReplicationError::Local { path, source }
    };
    atomic_dir::remove_dir_if_present(&partial).map_err(local(&partial))?;
    let mut bytes = 0usize;
    for key in keys.iter().filter(|k| **k != manifest_key) {
        let relative = key
            .strip_prefix(&folder)
            .unwrap_or(key)
            .trim_start_matches('/');
        let target = partial.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(local(parent))?;
        }
        let data = remote.get(key)?.ok_or_else(|| ReplicationError::Corrupt {
            object: format!("{}/{key}", remote.url()),
            why: "listed but gone".into(),
        })?;
        bytes += data.len();
        std::fs::write(&target, data).map_err(local(&target))?;
    }
    let manifest = remote.get(&manifest_key)?.unwrap_or_default();
    std::fs::write(partial.join(MANIFEST), manifest).map_err(local(&partial))?;
    atomic_dir::sync_tree(&partial).map_err(local(&partial))?;
    std::fs::rename(&partial, &dir).map_err(local(&dir))?;
    tracing::info!(
        generation = id,
        mb = bytes as f64 / 1e6,
        seconds = started.elapsed().as_secs_f64(),
        "downloaded generation"
    );
    Ok(dir)
}

/// Removes downloads a killed follower left behind.
fn remove_partial_downloads(generations: &Path) -> Result<(), ReplicationError> {
    let local = |source| ReplicationError::Local {
        path: generations.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(generations).map_err(local)? {
        let path = entry.map_err(local)?.path();
        if path.to_string_lossy().ends_with(DOWNLOADING) {
            tracing::warn!(dir = %path.display(), "removing a download left unfinished");
            atomic_dir::remove_dir_if_present(&path).map_err(local)?;
        }
    }
    Ok(())
}

/// Removes local generations other than the one just replaced and the one now served.
fn remove_old_generations(generations: &Path, previous: GenerationId, serving: GenerationId) {
    let Ok(entries) = std::fs::read_dir(generations) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(id) = name.parse::<GenerationId>() else {
            continue;
        };
        if id != previous && id != serving {
            if let Err(error) = atomic_dir::remove_dir_if_present(&entry.path()) {
                tracing::warn!(
                    generation = id,
                    "could not remove an old local generation: {error}"
                );
            }
        }
    }
}
