//! Temporary files that interrupted writes leave behind (format-spec §2, §16).
//!
//! A write goes to `.tmp-<16 hex>` in the target directory (a pack: in `data/`,
//! as its subdirectory follows from its name) and is renamed when complete; a process killed in between leaves the temporary file, up to a pack
//! in size. Nothing reads such files. `check` reports them; `prune` removes those
//! older than [`STALE_AFTER`] — the age at which a lock is stale — measured twice:
//! against the file time of prune's own lock file, written moments ago by the same
//! storage (so a storage clock that differs from ours can't make a fresh file look
//! old), and against our clock. Under prune's exclusive lock nobody else writes; a
//! file that young could still belong to a writer whose lock prune took for stale
//! (a machine that slept), and is left alone.

use std::time::SystemTime;

use crate::backend::Entry;
use crate::error::Result;
use crate::lock::{LockGuard, STALE_AFTER};
use crate::repository::Repository;

/// Temporary files in the repository, named by their path inside it.
pub fn list(repo: &Repository) -> Result<Vec<Entry>> {
    repo.backend().list_temporary()
}

/// Whether a temporary file last written at `modified` is old enough to remove,
/// given the storage's time (`storage_now`) and ours (`now`). Unknown or future
/// times are never old.
pub fn is_abandoned(
    modified: Option<SystemTime>,
    storage_now: Option<SystemTime>,
    now: SystemTime,
) -> bool {
    let old_at = |t: SystemTime| {
        modified
            .and_then(|m| t.duration_since(m).ok())
            .is_some_and(|age| age > STALE_AFTER)
    };
    storage_now.is_some_and(old_at) && old_at(now)
}

#[derive(Debug, Default)]
pub struct Cleaned {
    pub removed: u64,
    pub bytes_removed: u64,
    /// Too young to remove (or of unknown age).
    pub kept: u64,
    pub bytes_kept: u64,
}

/// Removes the abandoned temporary files (only counts them with `dry_run`).
pub fn remove_abandoned(repo: &Repository, lock: &LockGuard, dry_run: bool) -> Result<Cleaned> {
    let mut c = Cleaned::default();
    let found = list(repo)?;
    if found.is_empty() {
        return Ok(c);
    }
    let storage_now = lock.file_time()?;
    let now = SystemTime::now();
    for e in found {
        if !is_abandoned(e.modified, storage_now, now) {
            c.kept += 1;
            c.bytes_kept += e.size;
            continue;
        }
        if !dry_run {
            lock.still_valid()?;
            match repo.backend().remove_temporary(&e.name) {
                Ok(()) => {}
                // Gone meanwhile: nothing to remove.
                Err(crate::Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        c.removed += 1;
        c.bytes_removed += e.size;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn abandoned_only_when_old_by_both_clocks() {
        let now = SystemTime::now();
        let old = Some(now - 40 * MIN);
        assert!(is_abandoned(old, Some(now), now));
        // The storage's clock runs 20 minutes behind ours: by it the file is
        // 20 minutes old, too young.
        assert!(!is_abandoned(old, Some(now - 20 * MIN), now));
        // Ahead of ours: by ours it is young.
        assert!(!is_abandoned(
            Some(now - 10 * MIN),
            Some(now + 30 * MIN),
            now
        ));
        // Unknown times say nothing.
        assert!(!is_abandoned(None, Some(now), now));
        assert!(!is_abandoned(old, None, now));
        // A file time in the future is young.
        assert!(!is_abandoned(Some(now + 60 * MIN), Some(now), now));
    }
}
