//! Replacing a directory without ever showing a half-written one: write everything into a staging
//! directory beside the target, fsync it, then rename it into place.
//!
//! Used for checkpoints (the encoder memory-maps `model.safetensors`, so rewriting a mapped file in place
//! would be undefined behaviour for a process that has it open) and for store builds. A rename within one
//! file system is atomic; replacing an existing directory takes two renames (old aside, new in), and a crash
//! between them leaves the previous version as `.NAME.old-PID` beside the target, never a mix of both.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// `DIR/../.NAME.WHAT-PID`: a directory beside `dir` on the same file system, so renames are atomic.
pub fn sibling(dir: &Path, what: &str) -> io::Result<PathBuf> {
    let name = dir.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no directory name", dir.display()),
        )
    })?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(parent.join(format!(
        ".{}.{what}-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Removes what killed processes left beside `dir`: `.NAME.building-PID`, `.NAME.writing-PID` and
/// `.NAME.old-PID` directories whose process no longer runs (a live process's are its work in progress).
/// Best effort: an entry that cannot be read or removed is left, with a warning.
pub fn remove_stale_siblings(dir: &Path) {
    let (Some(name), Some(parent)) = (dir.file_name(), dir.parent()) else {
        return;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let Some((what, pid)) = rest.rsplit_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !["building", "writing", "old"].contains(&what) || process_runs(pid) {
            continue;
        }
        match remove_dir_if_present(&entry.path()) {
            Ok(()) => {
                tracing::info!(path = %entry.path().display(), "removed what a stopped process left")
            }
            Err(e) => {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove a stale staging directory")
            }
        }
    }
}

/// Whether process `pid` is running. Where that cannot be told (no `/proc`), every process is taken as
/// running, so nothing is removed.
fn process_runs(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes `dir` and everything in it; a missing directory is fine.
pub fn remove_dir_if_present(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Flushes every regular file under `dir`, then `dir` itself, to disk.
pub fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// Flushes a directory's entries (names created or renamed in it) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    // Opening a directory read-only and syncing it is how POSIX persists renames; other platforms may refuse.
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if cfg!(unix) => Err(e),
        _ => Ok(()),
    }
}

/// Moves the finished `staging` directory to `dir`, replacing whatever was there, and makes the rename
/// durable. `staging` must be a [`sibling`] of `dir`.
pub fn replace_dir(staging: &Path, dir: &Path) -> io::Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    let old = if dir.exists() {
        let old = sibling(dir, "old")?;
        remove_dir_if_present(&old)?;
        std::fs::rename(dir, &old)?;
        Some(old)
    } else {
        None
    };
    std::fs::rename(staging, dir)?;
    sync_dir(&parent)?;
    if let Some(old) = old {
        remove_dir_if_present(&old)?;
    }
    Ok(())
}

/// Writes a directory atomically: `fill` writes into a fresh staging directory, which is then synced and
/// renamed over `dir`. When `fill` fails the staging directory is removed and `dir` is untouched.
pub fn write_dir<E: From<io::Error>>(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    remove_stale_siblings(dir);
    let staging = sibling(dir, "writing")?;
    remove_dir_if_present(&staging)?;
    std::fs::create_dir_all(&staging)?;
    if let Err(e) = fill(&staging) {
        let _ = remove_dir_if_present(&staging);
        return Err(e);
    }
    sync_tree(&staging)?;
    replace_dir(&staging, dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_of_stopped_processes_are_removed_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let dead = u32::MAX - 1; // above Linux's pid_max: never a running process
        let paths = [
            tmp.path().join(format!(".store.building-{dead}")),
            tmp.path().join(format!(".store.old-{dead}")),
            tmp.path().join(".store.building-1"), // init: running
            tmp.path()
                .join(format!(".store.building-{}", std::process::id())),
            tmp.path().join(format!(".other.building-{dead}")),
            tmp.path().join(format!(".store.backup-{dead}")),
        ];
        for p in &paths {
            std::fs::create_dir_all(p.join("inner")).unwrap();
        }
        remove_stale_siblings(&dir);
        let kept: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        assert_eq!(kept, [false, false, true, true, true, true]);
    }

    #[test]
    fn a_directory_is_replaced_whole_or_not_at_all() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ck");
        write_dir::<io::Error>(&dir, |d| std::fs::write(d.join("a"), "1")).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");

        // A failed fill leaves the old version and no staging directory behind.
        let failed = write_dir::<io::Error>(&dir, |d| {
            std::fs::write(d.join("a"), "2")?;
            Err(io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");

        // A file kept open from the old version still reads the old bytes after the swap.
        let mut open = File::open(dir.join("a")).unwrap();
        write_dir::<io::Error>(&dir, |d| std::fs::write(d.join("b"), "3")).unwrap();
        let mut old = String::new();
        io::Read::read_to_string(&mut open, &mut old).unwrap();
        assert_eq!(old, "1");
        assert!(
            !dir.join("a").exists(),
            "the new version replaces the old whole"
        );
        assert_eq!(std::fs::read_to_string(dir.join("b")).unwrap(), "3");
        let names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["ck".to_string()], "no staging leftovers");
    }
}
