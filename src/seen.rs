//! Deletion and rollback detection: what this user last saw of a repository.
//!
//! For each repository (by its id), a small file under the local cache's base
//! directory, `seen/<repository id>.json`, lists the snapshot and index files
//! this user's cairn saw there. Each command that opens the repository lists
//! them again: a file seen before and gone now must have been removed by a
//! cairn command, which writes a removal record (an authenticated file under
//! `records/`, format-spec §20) before it removes anything. A file gone without
//! one was deleted by something else, or the repository was rolled back to an
//! older state: every command warns, and `check` fails, until the user accepts
//! the loss (`cairn check --accept-missing`). Until then the missing files stay
//! in the list, so the warning doesn't fade after one run.
//!
//! This is local state, not part of the repository format. What it does and
//! doesn't protect against is in format-spec/threat-model.md.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::record::{self, RecordKind};
use crate::repository::Repository;

/// The state file's own version.
const STATE_VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    /// When it was last written, by the host's clock.
    updated: String,
    /// Snapshot and index file names (ids) seen, and not known to be removed
    /// by cairn.
    snapshots: BTreeSet<String>,
    index: BTreeSet<String>,
}

/// What one look at the repository found.
#[derive(Debug, Default)]
pub struct Observation {
    /// No earlier state: nothing could be compared.
    pub first_look: bool,
    /// When the state compared against was written.
    pub since: Option<String>,
    /// Files seen before, gone now, and removed by no cairn command.
    pub missing_snapshots: Vec<String>,
    pub missing_index: Vec<String>,
    /// A state file that could not be read, and was started afresh.
    pub reset: Option<String>,
}

impl Observation {
    pub fn anything_missing(&self) -> bool {
        !self.missing_snapshots.is_empty() || !self.missing_index.is_empty()
    }

    /// One line for a warning or a check error.
    pub fn describe(&self, location: &str) -> String {
        let list = |v: &[String]| {
            let mut s: Vec<String> = v
                .iter()
                .take(5)
                .map(|id| id.get(..8).unwrap_or(id).to_string())
                .collect();
            if v.len() > 5 {
                s.push(format!("and {} more", v.len() - 5));
            }
            s.join(", ")
        };
        let mut parts = Vec::new();
        if !self.missing_snapshots.is_empty() {
            parts.push(format!(
                "{} ({})",
                crate::text::count(self.missing_snapshots.len(), "snapshot", "snapshots"),
                list(&self.missing_snapshots)
            ));
        }
        if !self.missing_index.is_empty() {
            parts.push(format!(
                "{} ({})",
                crate::text::count(self.missing_index.len(), "index file", "index files"),
                list(&self.missing_index)
            ));
        }
        format!(
            "repository {location} has lost {} that this user's cairn saw there{}, and no \
             cairn command recorded removing them: something else deleted them, or the \
             repository was put back to an older state. `cairn check --accept-missing` \
             accepts the loss",
            parts.join(" and "),
            self.since
                .as_ref()
                .map(|t| format!(" (by {t})"))
                .unwrap_or_default()
        )
    }
}

/// The state file of `repo` under `base` (the cache's base directory).
pub fn state_path(base: &Path, repo: &Repository) -> PathBuf {
    base.join("seen")
        .join(format!("{}.json", hex::encode(repo.repo_id().0)))
}

/// Names of `t`'s files in the repository (64 lowercase hex digits).
fn names(repo: &Repository, t: FileType) -> Result<BTreeSet<String>> {
    Ok(repo
        .backend()
        .list(t)?
        .into_iter()
        .map(|e| e.name)
        .filter(|n| crate::id::is_file_name(n))
        .collect())
}

/// The state file, held locked while it is read and rewritten, so that two
/// commands of the same user don't lose each other's updates.
struct Locked {
    path: PathBuf,
    _lock: Flock<fs::File>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Locked {
    fn open(path: PathBuf) -> Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        }
        let lock_path = path.with_extension("lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| Error::Io {
            path: lock_path.clone(),
            source: std::io::Error::from(e),
        })?;
        Ok(Self { path, _lock: lock })
    }

    /// The state, `None` if there is none; an unreadable one is an error
    /// message (and the caller starts afresh).
    fn read(&self) -> std::result::Result<Option<State>, String> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        match serde_json::from_slice::<State>(&bytes) {
            Ok(s) if s.version == STATE_VERSION => Ok(Some(s)),
            Ok(s) => Err(format!(
                "{}: state version {} (this cairn writes {STATE_VERSION})",
                self.path.display(),
                s.version
            )),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    fn write(&self, state: &State) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(state)
            .map_err(|e| Error::invalid(format!("encoding {}: {e}", self.path.display())))?;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &self.path).map_err(io(&self.path))
    }
}

/// Compares the repository's snapshot and index files with what this user saw
/// last time, and records what it sees now. Removal records are read only when
/// something is gone.
pub fn observe(repo: &Repository, base: &Path) -> Result<Observation> {
    let file = Locked::open(state_path(base, repo))?;
    observe_locked(repo, &file, false)
}

/// [`observe`] with the state file held; `accept` records what the repository
/// holds now, without the losses found (which are still returned).
fn observe_locked(repo: &Repository, file: &Locked, accept: bool) -> Result<Observation> {
    let mut out = Observation::default();
    let old = match file.read() {
        Ok(s) => s,
        Err(why) => {
            out.reset = Some(why);
            None
        }
    };
    let snapshots = names(repo, FileType::Snapshot)?;
    let index = names(repo, FileType::Index)?;
    let mut state = State {
        version: STATE_VERSION,
        updated: crate::snapshot::now_rfc3339(),
        snapshots: snapshots.clone(),
        index: index.clone(),
    };
    match old {
        None => out.first_look = true,
        Some(old) => {
            out.since = Some(old.updated.clone());
            let mut gone_s: BTreeSet<String> =
                old.snapshots.difference(&snapshots).cloned().collect();
            let mut gone_i: BTreeSet<String> = old.index.difference(&index).cloned().collect();
            if !gone_s.is_empty() || !gone_i.is_empty() {
                let (records, _) = record::load_all(repo)?;
                for (_, r) in records
                    .iter()
                    .filter(|(_, r)| r.kind == RecordKind::Removal)
                {
                    for id in &r.removed_snapshots {
                        gone_s.remove(&id.to_hex());
                    }
                    for id in &r.removed_index {
                        gone_i.remove(&id.to_hex());
                    }
                }
            }
            // Unexplained losses stay listed: the warning repeats until
            // the loss is accepted.
            if !accept {
                state.snapshots.extend(gone_s.iter().cloned());
                state.index.extend(gone_i.iter().cloned());
            }
            out.missing_snapshots = gone_s.into_iter().collect();
            out.missing_index = gone_i.into_iter().collect();
        }
    }
    match file.write(&state) {
        Ok(()) => Ok(out),
        // A loss found is reported even if the new state can't be saved: the
        // old one, which still lists the lost files, stays.
        Err(_) if out.anything_missing() && !accept => Ok(out),
        Err(e) => Err(e),
    }
}

/// Accepts every loss [`observe`] reports: the state becomes what the
/// repository holds now. Returns what was accepted.
pub fn accept_missing(repo: &Repository, base: &Path) -> Result<Observation> {
    // One look, under one hold of the state file: a file that goes between
    // two listings must not be accepted unseen.
    let file = Locked::open(state_path(base, repo))?;
    observe_locked(repo, &file, true)
}

/// Adds snapshots this process just wrote to what this user saw, so that one
/// deleted before the next command looks is missed too.
pub fn note_written(
    repo: &Repository,
    base: &Path,
    snapshots: &[crate::id::SnapshotId],
) -> Result<()> {
    let file = Locked::open(state_path(base, repo))?;
    // Without an earlier look there is nothing to add to: the next look
    // records everything.
    let Ok(Some(mut state)) = file.read() else {
        return Ok(());
    };
    state
        .snapshots
        .extend(snapshots.iter().map(|id| id.to_hex()));
    file.write(&state)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::backend::{Backend, Entry};

    /// Removes snapshot `victim` just before the `at`-th listing of snapshots.
    struct DeletesAtListing {
        inner: LocalBackend,
        victim: String,
        at: usize,
        lists: AtomicUsize,
    }

    impl Backend for DeletesAtListing {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn create(&self) -> Result<()> {
            self.inner.create()
        }
        fn is_repository(&self) -> Result<bool> {
            self.inner.is_repository()
        }
        fn list(&self, t: FileType) -> Result<Vec<Entry>> {
            if t == FileType::Snapshot && self.lists.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
                self.inner.remove(t, &self.victim)?;
            }
            self.inner.list(t)
        }
        fn read(&self, t: FileType, name: &str, max: u64) -> Result<Vec<u8>> {
            self.inner.read(t, name, max)
        }
        fn read_range(&self, t: FileType, name: &str, off: u64, len: u64) -> Result<Vec<u8>> {
            self.inner.read_range(t, name, off, len)
        }
        fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
            self.inner.write(t, name, data)
        }
        fn remove(&self, t: FileType, name: &str) -> Result<()> {
            self.inner.remove(t, name)
        }
    }

    /// A snapshot that goes while `accept_missing` looks is either among the
    /// losses it accepted (and shows) or found missing next time: never
    /// accepted unseen.
    #[test]
    fn accept_missing_accepts_only_what_it_saw() {
        let (dir, repo) = crate::lock::tests::repo();
        let victim = "ab".repeat(32);
        repo.backend()
            .write(FileType::Snapshot, &victim, b"x")
            .unwrap();
        let backend = Arc::new(DeletesAtListing {
            inner: LocalBackend::new(dir.path().join("r")),
            victim: victim.clone(),
            at: 3,
            lists: AtomicUsize::new(0),
        });
        let repo = Repository::open(backend, b"pw").unwrap();
        let base = dir.path().join("cache");
        assert!(observe(&repo, &base).unwrap().first_look);
        let accepted = accept_missing(&repo, &base).unwrap();
        let next = observe(&repo, &base).unwrap();
        assert!(
            accepted.missing_snapshots.contains(&victim)
                || next.missing_snapshots.contains(&victim),
            "accepted {accepted:?}, then {next:?}"
        );
    }
}
