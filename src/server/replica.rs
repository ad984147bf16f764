//! Read-only replicas: a private copy of a store directory, removed when the server stops.
//!
//! Why: sled lets one process open a store, so several replicas behind a load balancer cannot share one
//! directory. A `--read-only` server copies the store into a private temporary directory (under `$TMPDIR`)
//! and serves the copy, leaving the original unlocked for the next replica or for the owner. Copy a store
//! that no process is writing: a copy taken while a writer is active may miss its latest writes (sled then
//! recovers to an earlier consistent state; a stale graph dump falls back to exact search while the graph
//! is rebuilt). A replica killed with SIGKILL leaves its copy behind (`contrastgeo-replica-*`).

use std::path::{Path, PathBuf};

/// A private copy of a store directory, deleted on drop.
#[derive(Debug)]
pub struct StoreReplica {
    /// Keeps the copy alive; removes it on drop.
    _root: tempfile::TempDir,
    dir: PathBuf,
}

impl StoreReplica {
    /// Copies the store in `source` into a fresh temporary directory.
    pub fn copy(source: &Path) -> std::io::Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("contrastgeo-replica-")
            .tempdir()?;
        let dir = root.path().join("store");
        let bytes = copy_dir(source, &dir)?;
        tracing::info!(
            source = %source.display(),
            copy = %dir.display(),
            mib = bytes as f64 / (1024.0 * 1024.0),
            "serving a private read-only copy of the store"
        );
        Ok(Self { _root: root, dir })
    }

    /// The copied store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Copies the directory tree `source` to `target` (created; must not exist); returns the bytes copied.
pub fn copy_dir(source: &Path, target: &Path) -> std::io::Result<u64> {
    std::fs::create_dir(target)?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(source)? {
        let entry = entry?;
        let to = target.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            bytes += copy_dir(&entry.path(), &to)?;
        } else if kind.is_file() {
            bytes += std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_copies_the_tree_and_is_removed_on_drop() {
        let source = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(source.path().join("a/b")).unwrap();
        std::fs::write(source.path().join("top"), b"12345").unwrap();
        std::fs::write(source.path().join("a/b/deep"), b"xy").unwrap();
        let replica = StoreReplica::copy(source.path()).unwrap();
        assert_eq!(std::fs::read(replica.dir().join("top")).unwrap(), b"12345");
        assert_eq!(
            std::fs::read(replica.dir().join("a/b/deep")).unwrap(),
            b"xy"
        );
        let dir = replica.dir().to_path_buf();
        drop(replica);
        assert!(!dir.exists());
        assert!(source.path().join("top").exists(), "the source is kept");
    }
}
