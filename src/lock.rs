//! Lock files under `locks/` (format-spec/README.md, "Locks").
//!
//! Shared locks (backup, restore) may coexist; an exclusive lock (prune, repair)
//! excludes every other. A lock is stale when it is older than [`STALE_AFTER`]
//! without refresh, or when its process is gone on this host; stale locks are
//! ignored but never removed automatically unless their process is provably dead.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::format::{self, FileKind, SealKind};
use crate::id::LockId;
use crate::repository::Repository;

pub const LOCK_MAX_LEN: u64 = 64 * 1024;
/// A lock not refreshed for this long is stale.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30 * 60);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub time: String,
    pub hostname: String,
    pub username: String,
    pub pid: u32,
    pub exclusive: bool,
}

impl Lock {
    fn age(&self) -> Option<std::time::Duration> {
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

/// Held while an operation runs; removes its lock file when dropped.
pub struct LockGuard {
    repo: Arc<Repository>,
    id: LockId,
}

impl LockGuard {
    pub fn id(&self) -> LockId {
        self.id
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = self
            .repo
            .backend()
            .remove(FileType::Lock, &self.id.to_hex());
    }
}

/// Takes a lock: writes it first, then looks for conflicting ones, so that two
/// processes racing for conflicting locks can't both see "no conflict".
pub fn acquire(repo: &Arc<Repository>, exclusive: bool) -> Result<LockGuard> {
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
    let guard = LockGuard {
        repo: Arc::clone(repo),
        id: LockId::from_hex(&name)?,
    };
    for other in repo.list_ids(FileType::Lock, LockId::from_hex)? {
        if other == guard.id {
            continue;
        }
        let Ok(l) = load_lock(repo, &other) else {
            // Unreadable lock files are the business of `check`; a lock that
            // vanished between list and read was released.
            continue;
        };
        if (exclusive || l.exclusive) && !l.is_stale() {
            return Err(Error::Locked(format!(
                "{}; wait for it to finish, or run `cairn unlock` if it is stale",
                l.describe(&other)
            )));
        }
    }
    Ok(guard)
}
