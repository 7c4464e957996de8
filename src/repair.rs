//! `repair index` and `repair snapshots`.
//!
//! `repair index` rebuilds the index from the packs themselves: entries of readable
//! index files are kept for packs whose size matches, every other pack's header is
//! read. New index files are written before the old ones are deleted.
//!
//! `repair snapshots` rewrites snapshots whose trees name blobs that are gone
//! (missing from the index, or in a pack that is missing): files with lost data and
//! directories whose tree is lost are dropped, each drop is recorded in the new
//! snapshot's `errors`, and the new snapshot is tagged `repaired`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::archiver::saver::Saver;
use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId};
use crate::index::{Index, IndexPack};
use crate::lock::LockGuard;
use crate::pack::{self, BlobKind};
use crate::repository::Repository;
use crate::snapshot::{Recorded, SourceProblem};
use crate::tree::{MAX_TREE_DEPTH, Node, NodeKind, Tree};

#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairIndexSummary {
    pub packs: u64,
    pub headers_read: u64,
    pub packs_indexed: u64,
    pub packs_unreadable: u64,
    pub index_files_removed: u64,
    pub index_files_written: u64,
}

pub fn repair_index(
    repo: &Arc<Repository>,
    dry_run: bool,
    report: &dyn Fn(&str),
) -> Result<RepairIndexSummary> {
    let lock = crate::lock::acquire(repo, true)?;
    repair_index_locked(repo, &lock, dry_run, report)
}

fn repair_index_locked(
    repo: &Arc<Repository>,
    lock: &LockGuard,
    dry_run: bool,
    report: &dyn Fn(&str),
) -> Result<RepairIndexSummary> {
    let mut s = RepairIndexSummary::default();
    let old_files = repo.list_ids(FileType::Index, IndexId::from_name)?;
    let mut known: HashMap<PackId, IndexPack> = HashMap::new();
    // Packs index files describe differently: which one is right is unknown, so
    // their headers are read.
    let mut conflicting: HashSet<PackId> = HashSet::new();
    // Anything that a rewrite would change: an unreadable index file, a pack
    // named twice, or (below) a pack whose header must be read or that is gone.
    let mut unsound = false;
    for id in &old_files {
        match repo.load_index_file(id) {
            Ok(f) => {
                for p in f.packs {
                    match known.get(&p.id) {
                        None => {
                            known.insert(p.id, p);
                        }
                        Some(k) if *k == p => unsound = true,
                        Some(_) => {
                            conflicting.insert(p.id);
                        }
                    }
                }
            }
            Err(e) => {
                unsound = true;
                report(&format!(
                    "index {id} is unreadable and will be replaced: {e}"
                ));
            }
        }
    }
    let mut packs = Vec::new();
    for e in repo.backend().list(FileType::Pack)? {
        let Ok(id) = PackId::from_name(&e.name) else {
            continue;
        };
        s.packs += 1;
        if let Some(p) = known
            .remove(&id)
            .filter(|p| p.size == e.size && !conflicting.contains(&id))
        {
            packs.push(p);
            continue;
        }
        s.headers_read += 1;
        match pack::read_header(repo.backend(), repo.key(), repo.repo_id(), &id, e.size) {
            Ok(blobs) => packs.push(IndexPack {
                id,
                size: e.size,
                blobs,
            }),
            Err(err) => {
                s.packs_unreadable += 1;
                report(&format!(
                    "pack {id}: {err}; its blobs can't be indexed (snapshots using them need `repair snapshots`)"
                ));
            }
        }
    }
    for id in known.keys() {
        report(&format!(
            "pack {id} is listed in the index but missing from storage; dropping it"
        ));
    }
    s.packs_indexed = packs.len() as u64;
    // Index files that all read, name every pack stored as it is stored, each
    // once, and nothing else are what a rewrite would write again: leave them,
    // so that a second run changes nothing.
    let sound = !unsound && s.headers_read == 0 && known.is_empty();
    if dry_run || sound {
        return Ok(s);
    }
    // Commit points (format-spec §15): stop rather than write or delete if
    // others may already take this lock for stale.
    lock.still_valid()?;
    for f in crate::index::split_into_files(packs) {
        repo.save_index(&f)?;
        s.index_files_written += 1;
    }
    lock.still_valid()?;
    crate::record::note_removal(repo, lock, "repair index", &[], &old_files)?;
    for id in &old_files {
        repo.backend().remove(FileType::Index, &id.to_hex())?;
        s.index_files_removed += 1;
    }
    Ok(s)
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairSnapshotsSummary {
    pub snapshots: u64,
    pub snapshots_damaged: u64,
    pub snapshots_written: u64,
    pub snapshots_removed: u64,
    pub entries_dropped: u64,
    /// Snapshots that can't be read at all (damaged files).
    pub snapshots_unreadable: u64,
    /// Of those, removed (`--forget`).
    pub unreadable_removed: u64,
    /// Record files (format-spec §20) too damaged to read.
    pub records_unreadable: u64,
    /// Of those, removed (`--forget`).
    pub records_removed: u64,
}

/// Entries dropped under a tree: (path relative to it, why).
type Dropped = Vec<(String, String)>;

/// A tree rewritten: its new id, what was dropped under it, and how many levels
/// of trees it spans (1 for a tree without subdirectories).
#[derive(Clone)]
struct Rewritten {
    id: BlobId,
    dropped: Dropped,
    height: usize,
    /// Something was dropped for nesting too deep: the result depends on where
    /// the tree sits, so it is not reused elsewhere.
    cut: bool,
}

/// One tree being rewritten: its nodes still to go, and what is decided so far.
struct Frame {
    id: BlobId,
    depth: usize,
    nodes: std::vec::IntoIter<Node>,
    kept: Vec<Node>,
    dropped: Dropped,
    changed: bool,
    height: usize,
    cut: bool,
    /// The directory node waiting for its subtree's rewrite.
    waiting: Option<Node>,
}

struct Rewriter<'a> {
    repo: &'a Repository,
    index: &'a Index,
    saver: Option<Saver>,
    /// Old tree id → its rewrite, wherever it sits no deeper than allows.
    memo: HashMap<BlobId, Rewritten>,
}

impl Rewriter<'_> {
    fn present(&self, kind: BlobKind, id: &BlobId) -> bool {
        self.index.contains(kind, id)
    }

    /// The repaired version of the tree `root`. Iterative, with an explicit stack
    /// of frames: a forged snapshot may nest directories far deeper than any call
    /// stack would take. Directories below [`MAX_TREE_DEPTH`] are dropped (and
    /// recorded), so that the repaired snapshot can be restored.
    fn rewrite(&mut self, root: BlobId) -> Result<(BlobId, Dropped)> {
        let mut stack: Vec<Frame> = Vec::new();
        let mut done = self.enter(root, 1, &mut stack)?;
        loop {
            if let Some(sub) = done.take() {
                let Some(parent) = stack.last_mut() else {
                    return Ok((sub.id, sub.dropped));
                };
                let Some(mut node) = parent.waiting.take() else {
                    continue;
                };
                let name = node.name_lossy();
                for (p, why) in sub.dropped {
                    let at = if p.is_empty() {
                        name.clone()
                    } else {
                        format!("{name}/{p}")
                    };
                    parent.dropped.push((at, why));
                }
                if node.subtree != Some(sub.id) {
                    node.subtree = Some(sub.id);
                    parent.changed = true;
                }
                parent.height = parent.height.max(sub.height + 1);
                parent.cut |= sub.cut;
                parent.kept.push(node);
                continue;
            }
            let Some(frame) = stack.last_mut() else {
                return Err(Error::invalid("repair: tree rewrite lost its place"));
            };
            let Some(node) = frame.nodes.next() else {
                if let Some(f) = stack.pop() {
                    done = Some(self.finish(f)?);
                }
                continue;
            };
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(_)) if frame.depth >= MAX_TREE_DEPTH => {
                    frame.dropped.push((
                        node.name_lossy(),
                        format!("directories nest more than {MAX_TREE_DEPTH} levels deep"),
                    ));
                    frame.changed = true;
                    frame.cut = true;
                }
                (NodeKind::Dir, Some(sub)) => {
                    let depth = frame.depth + 1;
                    frame.waiting = Some(node);
                    done = self.enter(sub, depth, &mut stack)?;
                }
                _ => {
                    let lost = node
                        .content
                        .iter()
                        .filter(|b| !self.present(BlobKind::Data, b))
                        .count();
                    if lost > 0 {
                        frame.dropped.push((
                            node.name_lossy(),
                            format!(
                                "{lost} of {} lost",
                                crate::text::count(node.content.len(), "data blob", "data blobs")
                            ),
                        ));
                        frame.changed = true;
                    } else {
                        frame.kept.push(node);
                    }
                }
            }
        }
    }

    /// Starts on tree `id` at `depth`: its rewrite at once if it is known, missing
    /// or unreadable; otherwise a new frame on `stack` and `None`.
    fn enter(
        &mut self,
        id: BlobId,
        depth: usize,
        stack: &mut Vec<Frame>,
    ) -> Result<Option<Rewritten>> {
        if let Some(known) = self.memo.get(&id) {
            if depth + known.height - 1 <= MAX_TREE_DEPTH {
                return Ok(Some(known.clone()));
            }
        }
        let lost = |why: String, id| Rewritten {
            id,
            dropped: vec![(String::new(), why)],
            height: 1,
            cut: false,
        };
        if !self.present(BlobKind::Tree, &id) {
            return Ok(Some(lost(
                "directory tree missing".into(),
                self.empty_tree()?,
            )));
        }
        match self.repo.load_tree(self.index, &id) {
            Ok(tree) => {
                stack.push(Frame {
                    id,
                    depth,
                    kept: Vec::with_capacity(tree.nodes.len()),
                    nodes: tree.nodes.into_iter(),
                    dropped: Vec::new(),
                    changed: false,
                    height: 1,
                    cut: false,
                    waiting: None,
                });
                Ok(None)
            }
            Err(e) => Ok(Some(lost(
                format!("directory tree unreadable: {e}"),
                self.empty_tree()?,
            ))),
        }
    }

    /// Saves a finished frame's tree if anything in it changed.
    fn finish(&mut self, f: Frame) -> Result<Rewritten> {
        let id = if f.changed {
            self.save(&mut Tree { nodes: f.kept })?
        } else {
            f.id
        };
        let done = Rewritten {
            id,
            dropped: f.dropped,
            height: f.height,
            cut: f.cut,
        };
        if !done.cut {
            self.memo.insert(f.id, done.clone());
        }
        Ok(done)
    }

    fn empty_tree(&mut self) -> Result<BlobId> {
        self.save(&mut Tree::default())
    }

    fn save(&mut self, tree: &mut Tree) -> Result<BlobId> {
        match &mut self.saver {
            Some(s) => s.save_tree(tree),
            // Dry run: the id the tree would get.
            None => Ok(self.repo.key().blob_id(&tree.encode())),
        }
    }
}

pub fn repair_snapshots(
    repo: &Arc<Repository>,
    dry_run: bool,
    forget_damaged: bool,
    report: &dyn Fn(&str),
) -> Result<RepairSnapshotsSummary> {
    let lock = crate::lock::acquire(repo, true)?;
    repair_snapshots_locked(repo, &lock, dry_run, forget_damaged, report)
}

fn repair_snapshots_locked(
    repo: &Arc<Repository>,
    lock: &LockGuard,
    dry_run: bool,
    forget_damaged: bool,
    report: &dyn Fn(&str),
) -> Result<RepairSnapshotsSummary> {
    // Only packs that exist: a blob in a missing pack is lost, and must not count
    // as present when the saver deduplicates repaired trees either.
    let stored: HashSet<PackId> = repo
        .backend()
        .list(FileType::Pack)?
        .into_iter()
        .filter_map(|e| PackId::from_name(&e.name).ok())
        .collect();
    let mut index = crate::index::IndexBuilder::new();
    for id in repo.list_ids(FileType::Index, IndexId::from_name)? {
        // Blobs only an unreadable index file lists would look lost, and their
        // files would be dropped: refuse instead.
        let mut f = repo.load_index_file(&id).map_err(|e| {
            Error::invalid(format!(
                "{e}; repair snapshots needs every index file — run `cairn repair index` first"
            ))
        })?;
        f.packs.retain(|p| stored.contains(&p.id));
        index.add_file(&f);
    }
    let index = Arc::new(index.build());
    let mut rw = Rewriter {
        repo,
        index: &index,
        saver: (!dry_run).then(|| Saver::new(Arc::clone(repo), Arc::clone(&index))),
        memo: HashMap::new(),
    };
    let mut s = RepairSnapshotsSummary::default();
    let mut new_snapshots = Vec::new();
    let (snapshots, unreadable) = repo.list_snapshots_lenient()?;
    let damaged = damaged_snapshots(unreadable, forget_damaged, report);
    s.snapshots_unreadable = damaged.len() as u64;
    let damaged_records = damaged_records(repo, forget_damaged, report)?;
    s.records_unreadable = damaged_records.len() as u64;
    for (id, snap) in snapshots {
        s.snapshots += 1;
        let (new_tree, dropped) = rw.rewrite(snap.tree)?;
        if new_tree == snap.tree {
            continue;
        }
        s.snapshots_damaged += 1;
        s.entries_dropped += dropped.len() as u64;
        for (p, why) in &dropped {
            report(&format!("snapshot {}: dropping /{p}: {why}", id.short()));
        }
        let mut fixed = snap.clone();
        fixed.tree = new_tree;
        fixed.parent = Some(id);
        fixed.replaces = Some(id);
        if !fixed.tags.iter().any(|t| t == "repaired") {
            fixed.tags.push("repaired".into());
        }
        // Capped like a backup's list: a repair that drops millions of files must
        // still write a snapshot readers accept.
        let mut errors = Recorded::default();
        for e in std::mem::take(&mut fixed.errors) {
            errors.push(e);
        }
        for (p, why) in dropped {
            errors.push(SourceProblem {
                path: format!("/{p}"),
                error: format!("dropped by `cairn repair snapshots`: {why}"),
            });
        }
        fixed.errors = errors.into_list("dropped entries");
        new_snapshots.push((id, fixed));
    }
    if let Some(saver) = &mut rw.saver {
        saver.finish()?;
    }
    if dry_run {
        return Ok(s);
    }
    if forget_damaged {
        let mut gone: Vec<crate::id::SnapshotId> = damaged.clone();
        gone.extend(new_snapshots.iter().map(|(old, _)| *old));
        crate::record::note_removal(repo, lock, "repair snapshots --forget", &gone, &[])?;
    }
    if forget_damaged {
        for id in &damaged {
            lock.still_valid()?;
            repo.backend().remove(FileType::Snapshot, &id.to_hex())?;
            s.unreadable_removed += 1;
            report(&format!("snapshot {id} is unreadable and was removed"));
        }
        for id in &damaged_records {
            lock.still_valid()?;
            repo.backend().remove(FileType::Record, &id.to_hex())?;
            s.records_removed += 1;
            report(&format!("record {id} is unreadable and was removed"));
        }
    }
    // The repaired trees are durable (saver.finish) before any snapshot names them.
    for (old, fixed) in new_snapshots {
        // A commit point (format-spec §15), checked before each snapshot.
        lock.still_valid()?;
        let (new_id, _) = repo.save_snapshot(&fixed)?;
        s.snapshots_written += 1;
        report(&format!(
            "snapshot {} repaired as {}",
            old.short(),
            new_id.short()
        ));
        if forget_damaged {
            repo.backend().remove(FileType::Snapshot, &old.to_hex())?;
            s.snapshots_removed += 1;
        }
    }
    Ok(s)
}

/// The snapshots whose files are damaged (they can't be repaired: their trees are
/// unknown), reported. Files a newer cairn wrote, and files that failed to read
/// (a storage error, which may pass), are reported and never among them: only
/// damage is removed.
fn damaged_snapshots(
    unreadable: Vec<(crate::id::SnapshotId, Error)>,
    forget_damaged: bool,
    report: &dyn Fn(&str),
) -> Vec<crate::id::SnapshotId> {
    let mut damaged = Vec::new();
    for (id, e) in unreadable {
        match e {
            Error::Corrupt { .. } => {
                report(&format!(
                    "snapshot {id} is unreadable ({e}); it can't be repaired{}",
                    if forget_damaged {
                        String::new()
                    } else {
                        format!(" — `--forget` removes it, or `cairn forget {id}`")
                    }
                ));
                damaged.push(id);
            }
            e => report(&format!("snapshot {id}: {e}; it is left as it is")),
        }
    }
    damaged
}

/// The record files that are damaged (only damage: a newer cairn's record, or
/// one the storage failed to give, is reported and left), reported.
fn damaged_records(
    repo: &Repository,
    forget_damaged: bool,
    report: &dyn Fn(&str),
) -> Result<Vec<crate::id::RecordId>> {
    let (_, unreadable) = crate::record::load_all(repo)?;
    let mut damaged = Vec::new();
    for (id, e) in unreadable {
        match e {
            Error::Corrupt { .. } => {
                report(&format!(
                    "record {id} is unreadable ({e}){}",
                    if forget_damaged {
                        ""
                    } else {
                        " — `--forget` removes it"
                    }
                ));
                damaged.push(id);
            }
            e => report(&format!("record {id}: {e}; it is left as it is")),
        }
    }
    Ok(damaged)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::lock::tests::names;
    use crate::snapshot::{Snapshot, Summary};

    /// A repository with one snapshot whose file names a data blob that was never
    /// stored, and one pack (its root tree) in one index file.
    fn damaged() -> (tempfile::TempDir, Arc<Repository>) {
        let (dir, repo) = crate::lock::tests::repo();
        let mut saver = Saver::new(Arc::clone(&repo), Arc::new(Index::new()));
        let mut file = crate::tree::tests::node(b"lost", NodeKind::File);
        file.content = vec![BlobId([7; 32])];
        let root = saver.save_tree(&mut Tree { nodes: vec![file] }).unwrap();
        saver.finish().unwrap();
        let snap = Snapshot {
            time: crate::snapshot::now_rfc3339(),
            hostname: "h".into(),
            username: "u".into(),
            uid: 0,
            gid: 0,
            paths: vec!["/x".into()],
            tags: vec![],
            tree: root,
            parent: None,
            original: None,
            replaces: None,
            excludes: vec![],
            program_version: "test".into(),
            summary: Summary::default(),
            errors: vec![],
            warnings: vec![],
        };
        repo.save_snapshot(&snap).unwrap();
        (dir, repo)
    }

    /// Spec §15/§16: a repair whose lock others may already take for stale (the
    /// machine slept) stops before its commit points and changes nothing.
    #[test]
    fn repair_with_a_lock_gone_stale_changes_nothing() {
        let (_dir, repo) = damaged();
        // An index to rebuild too: with the pack unindexed, `repair index` has
        // something to write (a sound index it leaves alone).
        for n in names(&repo, FileType::Index) {
            repo.backend().remove(FileType::Index, &n).unwrap();
        }
        let before: Vec<Vec<String>> = [FileType::Index, FileType::Snapshot, FileType::Pack]
            .iter()
            .map(|t| names(&repo, *t))
            .collect();
        let lock = crate::lock::acquire(&repo, true).unwrap();
        lock.pretend_refreshed(Duration::from_secs(3600));
        let quiet = |_: &str| {};
        assert!(matches!(
            repair_index_locked(&repo, &lock, false, &quiet),
            Err(Error::Locked(_))
        ));
        assert!(matches!(
            repair_snapshots_locked(&repo, &lock, false, true, &quiet),
            Err(Error::Locked(_))
        ));
        // Repaired trees may have been stored (additions are harmless), but no
        // snapshot was written or removed and no index file deleted.
        assert_eq!(names(&repo, FileType::Snapshot), before[1]);
        let index_now = names(&repo, FileType::Index);
        assert!(
            before[0].iter().all(|n| index_now.contains(n)),
            "{index_now:?}"
        );
        assert!(
            before[2]
                .iter()
                .all(|n| names(&repo, FileType::Pack).contains(n))
        );

        // With a fresh lock, the same calls do their work.
        lock.pretend_refreshed(Duration::ZERO);
        repair_index_locked(&repo, &lock, false, &quiet).unwrap();
        let s = repair_snapshots_locked(&repo, &lock, false, true, &quiet).unwrap();
        assert_eq!((s.snapshots_written, s.snapshots_removed), (1, 1));
        drop(lock);
    }
}
