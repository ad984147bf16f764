//! Opening a sled database, waiting out the lock of a handle that was just dropped.
//!
//! sled 0.34 holds its file lock in a background flusher thread which `Drop` signals but does not
//! join, so the lock can outlive the handle by a few milliseconds (longer on a loaded machine).
//! Anything that closes a store and opens it again (a generation swap, a rollback, a CLI command
//! after a server test, a reopen in a test) would otherwise fail now and then with `WouldBlock`.
//! We retry only that error, for a bounded time: a store really held by another handle or process
//! is still refused, just [`LOCK_WAIT`] later.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Result, StoreError};

/// How long an open waits for a lock held by a handle being dropped before it reports the store busy.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens the sled database at `path`, retrying while its lock is held, for at most [`LOCK_WAIT`].
pub(crate) fn open_sled(path: &Path) -> Result<sled::Db> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match sled::open(path) {
            Ok(db) => return Ok(db),
            Err(source) if is_lock_contention(&source) && started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(source) => {
                return Err(StoreError::Open {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Whether sled failed because another handle holds the database's lock (`flock` gave `EAGAIN`).
fn is_lock_contention(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("WouldBlock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_released_while_waiting_is_acquired_and_a_held_one_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db.sled");
        let held = open_sled(&path).unwrap();
        held.insert(b"k", b"v".to_vec()).unwrap();
        held.flush().unwrap();

        // Held for the whole wait: refused as busy, after the wait.
        let started = Instant::now();
        let refused = open_sled(&path);
        assert!(
            matches!(refused, Err(StoreError::Open { .. })),
            "{refused:?}"
        );
        assert!(started.elapsed() >= LOCK_WAIT);

        // Released part-way through the wait: the open succeeds and sees the data.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let reopened = open_sled(&path).expect("the lock is released within the wait");
        assert_eq!(reopened.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        releaser.join().unwrap();
    }

    #[test]
    fn closing_and_reopening_at_once_never_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db.sled");
        for round in 0u32..40 {
            let db = open_sled(&path).unwrap_or_else(|e| panic!("round {round}: {e}"));
            db.insert(round.to_be_bytes(), vec![1]).unwrap();
            drop(db);
        }
        let db = open_sled(&path).unwrap();
        assert_eq!(db.len(), 40);
    }
}
