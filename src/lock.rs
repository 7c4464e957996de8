//! Lock files under `locks/` (format-spec/README.md, "Locks").
//!
//! Shared locks (backup, restore) may coexist; an exclusive lock (prune, repair)
//! excludes every other. A lock is stale when it is older than [`STALE_AFTER`]
//! without refresh, or when its process is gone on this host; stale locks are
//! ignored but never removed automatically unless their process is provably dead.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::format::{self, FileKind, SealKind};
use crate::id::LockId;
use crate::repository::Repository;

pub const LOCK_MAX_LEN: u64 = 64 * 1024;
/// A lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub time: String,
    pub hostname: String,
    pub username: String,
    pub pid: u32,
    pub exclusive: bool,
}

impl Lock {
    fn age(&self) -> Option<Duration> {
        let t = chrono::DateTime::parse_from_rfc3339(&self.time).ok()?;
        (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
            .to_std()
            .ok()
    }

    /// Provably dead: same host, and no such process.
    pub fn process_gone(&self) -> bool {
        self.hostname == crate::snapshot::hostname()
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), None)
                == Err(nix::errno::Errno::ESRCH)
    }

    pub fn is_stale(&self) -> bool {
        self.process_gone() || self.age().is_none_or(|a| a > STALE_AFTER)
    }

    pub fn describe(&self, id: &LockId) -> String {
        format!(
            "{} lock {} held by {}@{} (pid {}) since {}",
            if self.exclusive {
                "exclusive"
            } else {
                "shared"
            },
            id.short(),
            self.username,
            self.hostname,
            self.pid,
            self.time
        )
    }
}

pub fn load_lock(repo: &Repository, id: &LockId) -> Result<Lock> {
    let what = || format!("lock {id}");
    let plain = repo.load_sealed(
        FileKind::Lock,
        SealKind::Lock,
        FileType::Lock,
        &id.to_hex(),
        LOCK_MAX_LEN,
        &what,
    )?;
    format::from_msgpack(&plain, &what)
}

/// How often a held lock is rewritten with a fresh time.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

struct Held {
    id: LockId,
    /// Wall-clock time of the last successful write: a monotonic clock stops while
    /// a laptop sleeps, and the point is to notice exactly that.
    refreshed: SystemTime,
}

/// Held while an operation runs: refreshed in the background, removed when dropped.
pub struct LockGuard {
    repo: Arc<Repository>,
    held: Arc<Mutex<Held>>,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl LockGuard {
    pub fn id(&self) -> LockId {
        self.held.lock().map(|h| h.id).unwrap_or(LockId([0; 32]))
    }

    /// Fails if the lock has not been refreshed for so long that others may have
    /// considered it stale (and, say, pruned what this operation relies on). A
    /// backup calls this before committing its snapshot.
    pub fn still_valid(&self) -> Result<()> {
        let refreshed = self
            .held
            .lock()
            .map(|h| h.refreshed)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let age = SystemTime::now()
            .duration_since(refreshed)
            .unwrap_or_default();
        if age + REFRESH_EVERY > STALE_AFTER {
            return Err(Error::Locked(format!(
                "this process could not refresh its lock for {} s (was the machine asleep?); \
                 stopping instead of committing, as other processes may treat the lock as stale",
                age.as_secs()
            )));
        }
        Ok(())
    }
}

fn write_lock(repo: &Repository, exclusive: bool) -> Result<LockId> {
    let lock = Lock {
        time: crate::snapshot::now_rfc3339(),
        hostname: crate::snapshot::hostname(),
        username: crate::snapshot::username(),
        pid: std::process::id(),
        exclusive,
    };
    let (name, _) = repo.save_sealed(
        FileKind::Lock,
        SealKind::Lock,
        FileType::Lock,
        &format::to_msgpack(&lock),
    )?;
    LockId::from_hex(&name)
}

fn refresh_loop(
    repo: Arc<Repository>,
    held: Arc<Mutex<Held>>,
    exclusive: bool,
    stop: mpsc::Receiver<()>,
) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(REFRESH_EVERY) {
        // The new lock is written before the old one is removed, so there is no
        // moment without a lock. A failed write keeps the old time, and
        // `still_valid` notices once it is too old.
        if let Ok(new_id) = write_lock(&repo, exclusive) {
            let old = held.lock().map(|mut h| {
                let old = h.id;
                h.id = new_id;
                h.refreshed = SystemTime::now();
                old
            });
            if let Ok(old) = old {
                let _ = repo.backend().remove(FileType::Lock, &old.to_hex());
            }
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let id = self.id();
        let _ = self.repo.backend().remove(FileType::Lock, &id.to_hex());
    }
}

/// Takes a lock: writes it first, then looks for conflicting ones, so that two
/// processes racing for conflicting locks can't both see "no conflict". Locks of
/// processes that are gone from this host are removed on the way.
pub fn acquire(repo: &Arc<Repository>, exclusive: bool) -> Result<LockGuard> {
    let id = write_lock(repo, exclusive)?;
    let held = Arc::new(Mutex::new(Held {
        id,
        refreshed: SystemTime::now(),
    }));
    let (tx, rx) = mpsc::channel();
    let refresher = {
        let repo = Arc::clone(repo);
        let held = Arc::clone(&held);
        std::thread::spawn(move || refresh_loop(repo, held, exclusive, rx))
    };
    let guard = LockGuard {
        repo: Arc::clone(repo),
        held,
        stop: Some(tx),
        refresher: Some(refresher),
    };
    for other in repo.list_ids(FileType::Lock, LockId::from_hex)? {
        if other == id {
            continue;
        }
        let Ok(l) = load_lock(repo, &other) else {
            // Unreadable lock files are the business of `check`; a lock that
            // vanished between list and read was released.
            continue;
        };
        if l.process_gone() {
            let _ = repo.backend().remove(FileType::Lock, &other.to_hex());
            continue;
        }
        if (exclusive || l.exclusive) && !l.is_stale() {
            return Err(Error::Locked(format!(
                "{}; wait for it to finish, or run `cairn unlock` if it is stale",
                l.describe(&other)
            )));
        }
    }
    Ok(guard)
}

/// What `unlock` did with one lock file.
pub struct Unlocked {
    pub id: LockId,
    pub description: String,
    pub removed: bool,
}

/// Removes stale locks, or every lock with `all`. A lock that can't be read is
/// removed only with `all`: it might belong to a running process.
pub fn unlock(repo: &Repository, all: bool) -> Result<Vec<Unlocked>> {
    let mut out = Vec::new();
    for id in repo.list_ids(FileType::Lock, LockId::from_hex)? {
        let (description, stale) = match load_lock(repo, &id) {
            Ok(l) => (l.describe(&id), l.is_stale()),
            Err(e) => (format!("unreadable lock {id}: {e}"), false),
        };
        let removed = all || stale;
        if removed {
            repo.backend().remove(FileType::Lock, &id.to_hex())?;
        }
        out.push(Unlocked {
            id,
            description,
            removed,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::crypto::KdfParams;
    use crate::repository::InitOptions;

    fn repo() -> (tempfile::TempDir, Arc<Repository>) {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            kdf: Some(KdfParams::new(64, 1).unwrap()),
            ..Default::default()
        };
        let r = Repository::init(
            Arc::new(LocalBackend::new(dir.path().join("r"))),
            b"pw",
            opts,
        )
        .unwrap();
        (dir, Arc::new(r))
    }

    #[test]
    fn a_lock_not_refreshed_in_time_refuses_to_commit() {
        let (_dir, repo) = repo();
        let guard = acquire(&repo, false).unwrap();
        assert!(guard.still_valid().is_ok());
        // As if the machine had slept for an hour.
        guard.held.lock().unwrap().refreshed = SystemTime::now() - Duration::from_secs(3600);
        assert!(matches!(guard.still_valid(), Err(Error::Locked(_))));
    }

    #[test]
    fn shared_locks_coexist_and_exclusive_ones_conflict() {
        let (_dir, repo) = repo();
        let a = acquire(&repo, false).unwrap();
        let b = acquire(&repo, false).unwrap();
        assert!(matches!(acquire(&repo, true), Err(Error::Locked(_))));
        drop((a, b));
        let x = acquire(&repo, true).unwrap();
        assert!(matches!(acquire(&repo, false), Err(Error::Locked(_))));
        drop(x);
        assert!(repo.backend().list(FileType::Lock).unwrap().is_empty());
    }
}
