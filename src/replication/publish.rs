//! The writer side: uploads generations, label batches and the live pointer (see the module doc above).

use std::path::Path;
use std::sync::Mutex;

use contrastgeo_index::{LabelLog, LabelSeq};

use super::{
    generation_key, last_published_seq, segment_key, LivePointer, Remote, ReplicationError,
    SegmentLine, LIVE, MANIFEST,
};
use crate::engine::generations::now_unix;
use crate::engine::{BoxedError, GenerationId, GenerationManifest, StorePublisher};

/// Files a generation directory may hold that are not part of it: tantivy's lock files.
fn is_lock_file(name: &str) -> bool {
    name.starts_with(".tantivy-") && name.ends_with(".lock")
}

/// Publishes one store to one URL.
#[derive(Debug)]
pub struct Publisher {
    remote: Remote,
    state: Mutex<PublishState>,
}

#[derive(Debug, Default)]
struct PublishState {
    /// The last label published; `None` until read from the remote.
    published: Option<LabelSeq>,
    /// The label watermark of the first generation this process published, where a store that never
    /// published labels starts (earlier labels are in that generation's index).
    first_watermark: Option<LabelSeq>,
    /// Model versions of generations known to be published, by id.
    generations: Vec<(GenerationId, String)>,
}

impl Publisher {
    /// A publisher to `url`.
    pub fn open(url: &str) -> Result<Self, ReplicationError> {
        Ok(Self {
            remote: Remote::open(url)?,
            state: Mutex::new(PublishState::default()),
        })
    }

    /// A publisher to `url` as the engine takes it, or none without a URL.
    pub fn shared(
        url: Option<&str>,
    ) -> Result<Option<std::sync::Arc<dyn StorePublisher>>, ReplicationError> {
        url.map(|url| {
            Ok(std::sync::Arc::new(Self::open(url)?) as std::sync::Arc<dyn StorePublisher>)
        })
        .transpose()
    }

    /// The URL published to.
    pub fn url(&self) -> &str {
        self.remote.url()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PublishState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Uploads the generation in `dir` unless the remote has it: every file, then its manifest.
    pub fn upload_generation(
        &self,
        dir: &Path,
        manifest: &GenerationManifest,
    ) -> Result<bool, ReplicationError> {
        let folder = generation_key(manifest.id);
        let manifest_key = format!("{folder}/{MANIFEST}");
        let mut state = self.state();
        state
            .first_watermark
            .get_or_insert(manifest.label_watermark);
        if self.remote.get(&manifest_key)?.is_some() {
            state
                .generations
                .push((manifest.id, manifest.model_id.clone()));
            return Ok(false);
        }
        let started = std::time::Instant::now();
        let mut files = Vec::new();
        collect_files(dir, dir, &mut files)?;
        let mut bytes = 0u64;
        for (relative, path) in &files {
            if relative == MANIFEST {
                continue;
            }
            bytes += std::fs::metadata(path).map_or(0, |m| m.len());
            self.remote
                .put_file(&format!("{folder}/{relative}"), path)?;
        }
        let text = serde_json::to_vec_pretty(manifest).map_err(|e| ReplicationError::Corrupt {
            object: manifest_key.clone(),
            why: e.to_string(),
        })?;
        self.remote.put(&manifest_key, text)?;
        state
            .generations
            .push((manifest.id, manifest.model_id.clone()));
        tracing::info!(
            generation = manifest.id,
            files = files.len(),
            mb = bytes as f64 / 1e6,
            seconds = started.elapsed().as_secs_f64(),
            url = self.remote.url(),
            "published generation"
        );
        Ok(true)
    }

    /// Uploads the labels of `log` after the last one published, as one segment; returns how many.
    pub fn upload_labels(&self, log: &LabelLog) -> Result<usize, ReplicationError> {
        let mut state = self.state();
        let published = match state.published {
            Some(seq) => seq,
            None => match last_published_seq(&self.remote)? {
                0 => state.first_watermark.unwrap_or(0),
                seq => seq,
            },
        };
        let last = log.last_seq()?;
        if published > last {
            return Err(ReplicationError::OtherStore {
                url: self.remote.url().to_string(),
                remote: published,
                local: last,
            });
        }
        let mut text = Vec::new();
        let mut count = 0;
        for label in log.labels_after(published) {
            let (seq, label) = label?;
            if seq > last {
                break;
            }
            serde_json::to_writer(&mut text, &SegmentLine { seq, label }).map_err(|e| {
                ReplicationError::Corrupt {
                    object: "label segment".into(),
                    why: e.to_string(),
                }
            })?;
            text.push(b'\n');
            count += 1;
        }
        if count > 0 {
            self.remote.put(&segment_key(published + 1, last), text)?;
            tracing::debug!(first = published + 1, last, "published labels");
        }
        state.published = Some(last);
        Ok(count)
    }

    /// Writes `LIVE.json` naming generation `id` (which must have been published).
    pub fn set_live(&self, id: GenerationId) -> Result<(), ReplicationError> {
        let model_id = self
            .state()
            .generations
            .iter()
            .rev()
            .find(|(g, _)| *g == id)
            .map(|(_, m)| m.clone())
            .ok_or_else(|| ReplicationError::Corrupt {
                object: format!("{}/{}", self.remote.url(), generation_key(id)),
                why: "the generation to make live was never published".into(),
            })?;
        let pointer = LivePointer {
            generation: id,
            model_id,
            published_at: now_unix(),
        };
        let text = serde_json::to_vec_pretty(&pointer).map_err(|e| ReplicationError::Corrupt {
            object: LIVE.into(),
            why: e.to_string(),
        })?;
        self.remote.put(LIVE, text)
    }
}

impl StorePublisher for Publisher {
    fn publish_generation(
        &self,
        dir: &Path,
        manifest: &GenerationManifest,
    ) -> Result<(), BoxedError> {
        self.upload_generation(dir, manifest)?;
        Ok(())
    }

    fn publish_labels(&self, labels: &LabelLog) -> Result<(), BoxedError> {
        self.upload_labels(labels)?;
        Ok(())
    }

    fn publish_live(&self, id: GenerationId) -> Result<(), BoxedError> {
        self.set_live(id)?;
        Ok(())
    }
}

/// Every file below `dir`, with its path relative to `root` ('/'-separated), lock files left out.
fn collect_files(
    root: &Path,
    dir: &Path,
    files: &mut Vec<(String, std::path::PathBuf)>,
) -> Result<(), ReplicationError> {
    let local = |source| ReplicationError::Local {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(local)?
        .collect::<Result<_, _>>()
        .map_err(local)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(local)?;
        if kind.is_dir() {
            collect_files(root, &path, files)?;
        } else if kind.is_file() && !is_lock_file(&entry.file_name().to_string_lossy()) {
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            files.push((relative, path));
        }
    }
    Ok(())
}
