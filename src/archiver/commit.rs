//! The commit step's safeguards: what must still be stored before a snapshot may
//! name it.

use std::sync::atomic::Ordering;

use super::{Adopted, Archiver, BackupResult, program_version};
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::index::Index;
use crate::lock::LockGuard;
use crate::repository::Repository;
use crate::snapshot::{self, Snapshot};

/// What the snapshot says of itself, settled before the walk.
pub(super) struct Head {
    pub started: String,
    pub host: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub parent: Option<SnapshotId>,
    /// Packs indexed before the walk; their index files count as added.
    pub adopted: Adopted,
}

/// Writes the snapshot of a finished walk whose root tree is `tree`: the commit
/// point, after checks that everything it names is still stored.
pub(super) fn commit(
    repo: &Repository,
    index: &Index,
    lock: &LockGuard,
    mut a: Archiver,
    tree: BlobId,
    head: Head,
) -> Result<BackupResult> {
    let mut summary = a.summary;
    let st = &a.saver.stats;
    summary.data_blobs_new = st.data_blobs_new;
    summary.tree_blobs_new = st.tree_blobs_new;
    summary.bytes_new = st.bytes_new;
    summary.bytes_added = st.bytes_written + head.adopted.bytes_written;
    summary.started = head.started;
    summary.finished = crate::clock::now_rfc3339();
    let mut snap = Snapshot {
        time: summary.started.clone(),
        hostname: head.host,
        username: snapshot::username(),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        paths: head.paths,
        tags: head.tags,
        tree,
        parent: head.parent,
        original: None,
        replaces: None,
        excludes: a.excludes.patterns().to_vec(),
        program_version: program_version(),
        summary,
        errors: a.errors.into_list("errors"),
        warnings: a.warnings.into_list("warnings"),
    };
    if a.interrupt.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    // The lock is the first defence and this the second: whatever a process that
    // took our lock for stale deleted, the snapshot must not name it.
    a.saver.verify_written()?;
    verify_relied_on(repo, index)?;
    lock.still_valid()?;
    // The snapshot's own size is part of what was added; it is known only after
    // encoding, so it is added to the in-memory copy returned to the caller.
    let (id, size) = repo.save_snapshot(&snap)?;
    snap.summary.bytes_added += size;
    Ok(BackupResult {
        id,
        snapshot: snap,
        index_blobs: index.blob_count(),
        index_memory_bytes: index.memory_bytes(),
        adopted: head.adopted,
    })
}

/// Checks that the packs this backup may have deduplicated against are still
/// stored. A pack leaves the index before it is deleted (format-spec §16), so
/// while every index file loaded at the start is still there — one listing of
/// `index/`, the usual case — none of them can be gone. If one was replaced, the
/// index was rewritten under this backup by a process that took its lock for
/// stale: then every pack the loaded index names must still be stored.
pub(crate) fn verify_relied_on(repo: &Repository, index: &crate::index::Index) -> Result<()> {
    use crate::backend::FileType;
    let names = |t| -> Result<std::collections::HashSet<String>> {
        Ok(repo
            .backend()
            .list(t)?
            .into_iter()
            .map(|e| e.name)
            .collect())
    };
    let index_now = names(FileType::Index)?;
    if index
        .files()
        .iter()
        .all(|f| index_now.contains(&f.to_hex()))
    {
        return Ok(());
    }
    let packs_now = names(FileType::Pack)?;
    let gone: Vec<crate::id::PackId> = index
        .packs()
        .map(|(p, _)| p)
        .filter(|p| !packs_now.contains(&p.to_hex()))
        .collect();
    match gone.first() {
        None => Ok(()),
        Some(&first) => Err(Error::IndexRewritten {
            packs: gone.len(),
            first,
        }),
    }
}
