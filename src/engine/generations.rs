//! A store directory as a sequence of immutable generations with a pointer to the live one.
//!
//! ```text
//! STORE/labels.sled/            the durable label log (contrastgeo_index::LabelLog)
//! STORE/generations/000001/     a complete generation: model/ (checkpoint), index/ (sled + HNSW dump),
//!                               generation.json (its manifest, written last)
//! STORE/generations/000002.building/   a generation being built: never served, removed on open
//! STORE/CURRENT                 the live generation's number (written to a temp name, fsynced, renamed)
//! ```
//!
//! A new generation is built beside the live one under a `.building` name and renamed when complete;
//! only then may `CURRENT` name it. A crash at any point leaves `CURRENT` naming a complete generation.
//! Generations are kept after they stop being current (`contrastgeo model list` / `rollback`).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{EngineError, Result};
use crate::atomic_dir;

/// Number of a generation (first is 1).
pub type GenerationId = u64;

/// The file naming the live generation.
const CURRENT: &str = "CURRENT";
/// A generation's manifest, written last.
pub const MANIFEST: &str = "generation.json";
const BUILDING: &str = ".building";

/// What a generation is: written into its directory when it is complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationManifest {
    /// Its number.
    pub id: GenerationId,
    /// The model version its vectors come from.
    pub model_id: String,
    /// The generation it was retrained from, if any.
    pub parent: Option<GenerationId>,
    /// When it was completed, seconds since the Unix epoch.
    pub created_at: u64,
    /// The last label of the store's log it was built from (later labels are applied live).
    pub label_watermark: u64,
    /// Cities indexed at build time.
    pub cities: usize,
    /// Support posts indexed at build time.
    pub supports: usize,
    /// How it came to be: `build`, or `retrain` with the training report and the gate's verdict.
    pub origin: serde_json::Value,
}

/// The generations of one store directory.
#[derive(Debug, Clone)]
pub struct Generations {
    store: PathBuf,
}

impl Generations {
    /// The generations of `store`; removes generations left half-built by a crash (nothing names them).
    pub fn open(store: &Path) -> Result<Self> {
        let generations = Self {
            store: store.to_path_buf(),
        };
        let dir = generations.root();
        std::fs::create_dir_all(&dir).map_err(EngineError::io(&dir))?;
        for entry in std::fs::read_dir(&dir).map_err(EngineError::io(&dir))? {
            let path = entry.map_err(EngineError::io(&dir))?.path();
            if path.to_string_lossy().ends_with(BUILDING) {
                tracing::warn!(dir = %path.display(), "removing a generation left half-built by a crash");
                atomic_dir::remove_dir_if_present(&path).map_err(EngineError::io(&path))?;
            }
        }
        Ok(generations)
    }

    /// Whether `store` is a store directory with generations.
    pub fn exists(store: &Path) -> bool {
        store.join(CURRENT).is_file()
    }

    fn root(&self) -> PathBuf {
        self.store.join("generations")
    }

    /// The directory of a complete generation.
    pub fn dir(&self, id: GenerationId) -> PathBuf {
        self.root().join(format!("{id:06}"))
    }

    /// The live generation, if `CURRENT` exists.
    pub fn current(&self) -> Result<Option<GenerationId>> {
        let path = self.store.join(CURRENT);
        match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map(Some).map_err(|_| {
                EngineError::InvalidConfig(format!(
                    "{} does not hold a generation number ({:?})",
                    path.display(),
                    text.trim()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(EngineError::io(&path)(e)),
        }
    }

    /// Makes `id` the live generation: `CURRENT` is written to a temp file, fsynced and renamed.
    pub fn set_current(&self, id: GenerationId) -> Result<()> {
        if !self.dir(id).join(MANIFEST).is_file() {
            return Err(EngineError::InvalidConfig(format!(
                "generation {id} is not a complete generation of {}",
                self.store.display()
            )));
        }
        let path = self.store.join(CURRENT);
        let temp = self
            .store
            .join(format!(".{CURRENT}.{}", std::process::id()));
        let mut file = std::fs::File::create(&temp).map_err(EngineError::io(&temp))?;
        writeln!(file, "{id}").map_err(EngineError::io(&temp))?;
        file.sync_all().map_err(EngineError::io(&temp))?;
        std::fs::rename(&temp, &path).map_err(EngineError::io(&path))?;
        atomic_dir::sync_dir(&self.store).map_err(EngineError::io(&self.store))
    }

    /// Every complete generation, oldest first.
    pub fn list(&self) -> Result<Vec<GenerationManifest>> {
        let dir = self.root();
        let mut manifests = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(EngineError::io(&dir))? {
            let path = entry.map_err(EngineError::io(&dir))?.path();
            if path.join(MANIFEST).is_file() && !path.to_string_lossy().ends_with(BUILDING) {
                manifests.push(read_manifest(&path)?);
            }
        }
        manifests.sort_by_key(|m| m.id);
        Ok(manifests)
    }

    /// The manifest of a complete generation.
    pub fn manifest(&self, id: GenerationId) -> Result<GenerationManifest> {
        read_manifest(&self.dir(id))
    }

    /// Starts a new generation: a fresh `.building` directory numbered after every existing one.
    pub fn begin(&self) -> Result<(GenerationId, PathBuf)> {
        let dir = self.root();
        let mut last = 0;
        for entry in std::fs::read_dir(&dir).map_err(EngineError::io(&dir))? {
            let name = entry.map_err(EngineError::io(&dir))?.file_name();
            let name = name.to_string_lossy();
            let number = name.strip_suffix(BUILDING).unwrap_or(&name);
            if let Ok(n) = number.parse::<GenerationId>() {
                last = last.max(n);
            }
        }
        let id = last + 1;
        let building = self.root().join(format!("{id:06}{BUILDING}"));
        atomic_dir::remove_dir_if_present(&building).map_err(EngineError::io(&building))?;
        std::fs::create_dir_all(&building).map_err(EngineError::io(&building))?;
        Ok((id, building))
    }

    /// Completes a generation begun with [`Generations::begin`]: writes its manifest, fsyncs the tree and
    /// renames it to its final name. It is not live until [`Generations::set_current`].
    pub fn commit(&self, building: &Path, manifest: &GenerationManifest) -> Result<PathBuf> {
        let path = building.join(MANIFEST);
        let json = serde_json::to_vec_pretty(manifest)
            .map_err(|e| EngineError::InvalidConfig(e.to_string()))?;
        std::fs::write(&path, json).map_err(EngineError::io(&path))?;
        atomic_dir::sync_tree(building).map_err(EngineError::io(building))?;
        let done = self.dir(manifest.id);
        std::fs::rename(building, &done).map_err(EngineError::io(&done))?;
        atomic_dir::sync_dir(&self.root()).map_err(EngineError::io(&done))?;
        Ok(done)
    }

    /// Removes a generation that was begun but is not wanted (a failed build or a failed gate).
    pub fn abandon(&self, building: &Path) {
        if let Err(e) = atomic_dir::remove_dir_if_present(building) {
            tracing::warn!(dir = %building.display(), error = %e, "could not remove an abandoned generation");
        }
    }
}

fn read_manifest(dir: &Path) -> Result<GenerationManifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(EngineError::io(&path))?;
    serde_json::from_str(&text).map_err(|e| {
        EngineError::InvalidConfig(format!(
            "{}: not a generation manifest: {e}",
            path.display()
        ))
    })
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: GenerationId) -> GenerationManifest {
        GenerationManifest {
            id,
            model_id: format!("m{id}"),
            parent: id.checked_sub(1).filter(|&p| p > 0),
            created_at: 0,
            label_watermark: 0,
            cities: 0,
            supports: 0,
            origin: serde_json::json!("build"),
        }
    }

    #[test]
    fn only_complete_generations_can_be_current_and_half_built_ones_are_removed_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let generations = Generations::open(tmp.path()).unwrap();
        assert_eq!(generations.current().unwrap(), None);
        let (id, building) = generations.begin().unwrap();
        assert_eq!(id, 1);
        assert!(
            generations.set_current(1).is_err(),
            "a generation being built cannot be live"
        );
        generations.commit(&building, &manifest(1)).unwrap();
        generations.set_current(1).unwrap();
        assert_eq!(generations.current().unwrap(), Some(1));

        // A crash while building generation 2 leaves it half-built; reopening removes it.
        let (id, building) = generations.begin().unwrap();
        assert_eq!(id, 2);
        std::fs::write(building.join("partial"), b"x").unwrap();
        let reopened = Generations::open(tmp.path()).unwrap();
        assert!(!building.exists());
        assert_eq!(reopened.current().unwrap(), Some(1));
        assert_eq!(reopened.list().unwrap(), vec![manifest(1)]);
        let (id, _) = reopened.begin().unwrap();
        assert_eq!(id, 2, "the number of a removed half generation is reused");
    }
}
