//! `tag` and `rewrite`: snapshots made from existing ones (format-spec §14, "Tags
//! and rewrites"; order of writes, §16).
//!
//! Snapshot files are never changed in place, so both write a new snapshot and
//! delete the old file (`rewrite` only with `--forget`). The new one names the
//! old one as `replaces` and keeps its `original` (or takes the old id as
//! `original`), so that `copy` counts both as the same backup. Snapshots a
//! change leaves as they are get no new file.

mod filter;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::archiver::Excludes;
use crate::archiver::saver::Saver;
use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::lock::LockGuard;
use crate::repository::Repository;
use crate::snapshot::{Snapshot, SourceProblem};

use filter::TreeFilter;
pub use filter::{Removed, RemovedIter, RemovedList};

/// The copy of `old` (whose id is `id`) that replaces it: it names `id` as
/// `replaces`, and the backup it is a version of as `original`.
pub fn replacement(id: SnapshotId, old: &Snapshot) -> Snapshot {
    Snapshot {
        replaces: Some(id),
        original: Some(old.original.unwrap_or(id)),
        ..old.clone()
    }
}

/// A change of tags: `set` replaces them all; otherwise `remove` takes tags
/// away and `add` appends the ones missing, in the order given.
#[derive(Clone, Debug, Default)]
pub struct TagChange {
    pub add: Vec<String>,
    pub remove: Vec<String>,
    pub set: Option<Vec<String>>,
}

impl TagChange {
    /// Refuses a change that does nothing, mixes `set` with the others, names
    /// an empty tag (but `set` with only empty tags: that clears them), or adds
    /// and removes the same tag.
    pub fn validate(&self) -> Result<()> {
        if self.set.is_none() && self.add.is_empty() && self.remove.is_empty() {
            return Err(Error::invalid("give --add, --remove or --set"));
        }
        if self.set.is_some() && !(self.add.is_empty() && self.remove.is_empty()) {
            return Err(Error::invalid(
                "--set replaces every tag: give it alone, or use --add and --remove",
            ));
        }
        if self.add.iter().chain(&self.remove).any(String::is_empty) {
            return Err(Error::invalid(
                "a tag can't be empty (`--set ''` removes every tag)",
            ));
        }
        if let Some(t) = self.add.iter().find(|t| self.remove.contains(t)) {
            return Err(Error::invalid(format!(
                "tag {t:?} is both added and removed"
            )));
        }
        Ok(())
    }

    /// The tags `tags` become.
    pub fn apply(&self, tags: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let keep = |t: &String, out: &Vec<String>| !t.is_empty() && !out.contains(t);
        match &self.set {
            Some(set) => {
                for t in set {
                    if keep(t, &out) {
                        out.push(t.clone());
                    }
                }
            }
            None => {
                for t in tags.iter().chain(&self.add) {
                    if !self.remove.contains(t) && keep(t, &out) {
                        out.push(t.clone());
                    }
                }
            }
        }
        out
    }
}

/// Whether two tag lists name the same tags (order and repeats aside).
fn same_tags(a: &[String], b: &[String]) -> bool {
    a.iter().all(|t| b.contains(t)) && b.iter().all(|t| a.contains(t))
}

/// One snapshot `tag` looked at.
#[derive(Clone, Debug)]
pub struct Retagged {
    pub old: SnapshotId,
    /// The snapshot written, or `None` when the tags didn't change.
    pub new: Option<SnapshotId>,
    pub tags: Vec<String>,
}

/// Changes the tags of `ids` (each once, in the order given). The caller holds
/// the exclusive lock, taken before it chose them (see `forget`). The new
/// snapshots are written first, then one removal record naming the old ones,
/// then the old files go; killed in between, both versions of a snapshot
/// remain, and tagging the new one again leaves it alone.
pub fn tag(
    repo: &Repository,
    lock: &LockGuard,
    ids: &[SnapshotId],
    change: &TagChange,
    report: &dyn Fn(&Retagged),
) -> Result<Vec<Retagged>> {
    change.validate()?;
    // Every snapshot is read before the first is written: one that can't be
    // read stops the change with nothing written.
    let olds = ids
        .iter()
        .map(|id| Ok((id, repo.load_snapshot(id)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for (id, old) in olds {
        let tags = change.apply(&old.tags);
        let mut done = Retagged {
            old: *id,
            new: None,
            tags: old.tags.clone(),
        };
        if !same_tags(&tags, &old.tags) {
            let new = Snapshot {
                tags: tags.clone(),
                ..replacement(*id, &old)
            };
            lock.still_valid()?;
            let (new_id, _) = repo.save_snapshot(&new)?;
            done.new = Some(new_id);
            done.tags = tags;
        }
        report(&done);
        out.push(done);
    }
    let replaced: Vec<SnapshotId> = out
        .iter()
        .filter(|r| r.new.is_some())
        .map(|r| r.old)
        .collect();
    crate::record::note_removal(repo, lock, "tag", &replaced, &[])?;
    for id in &replaced {
        lock.still_valid()?;
        repo.backend().remove(FileType::Snapshot, &id.to_hex())?;
    }
    Ok(out)
}

pub struct RewriteOptions {
    pub excludes: Excludes,
    /// Delete each old snapshot once its replacement is written.
    pub forget: bool,
    /// Write nothing; say what would be removed.
    pub dry_run: bool,
}

/// One snapshot `rewrite` looked at.
#[derive(Clone, Debug)]
pub struct Rewritten {
    pub old: SnapshotId,
    /// The snapshot written; `None` when nothing matched, or in a dry run.
    pub new: Option<SnapshotId>,
    /// What the patterns matched, in tree order; empty: the snapshot is left
    /// as it is.
    pub removed: RemovedList,
    /// The old snapshot was deleted (`--forget`).
    pub forgotten: bool,
    /// The replacement's (or, in a dry run, would-be) entry and byte counts.
    pub entries: u64,
    pub total_bytes: u64,
}

#[derive(Clone, Debug, Default)]
pub struct RewriteSummary {
    pub snapshots: u64,
    pub rewritten: u64,
    pub removed_snapshots: u64,
    pub entries_removed: u64,
    pub bytes_removed: u64,
    /// Tree blobs written, and the stored bytes of their packs and index files.
    pub tree_blobs_new: u64,
    pub bytes_added: u64,
}

/// Removes what `opts.excludes` matches from the snapshots `ids` (each once).
/// The caller holds the exclusive lock (a shared one suffices for a dry run),
/// taken before it chose them. New trees go to packs and index files first,
/// checked still stored as a backup checks them; then the new snapshots; then,
/// with `forget`, the removal record and the deletion of the old ones.
pub fn rewrite(
    repo: &Arc<Repository>,
    lock: &LockGuard,
    ids: &[SnapshotId],
    opts: &RewriteOptions,
    interrupt: &AtomicBool,
    warn: &dyn Fn(&str),
) -> Result<(Vec<Rewritten>, RewriteSummary)> {
    if opts.excludes.patterns().is_empty() {
        return Err(Error::invalid(
            "no exclude pattern given: use --exclude or --exclude-file",
        ));
    }
    let index = repo.load_index(&mut |id, e| {
        warn(&format!(
            "index {id} is unreadable and was left out ({e}); snapshots that need trees only \
             it lists can't be rewritten. `cairn repair index` rebuilds it"
        ))
    })?;
    let index = Arc::new(index);
    let saver = (!opts.dry_run).then(|| Saver::new(Arc::clone(repo), Arc::clone(&index)));
    let mut filter = TreeFilter::new(repo, &index, &opts.excludes, saver, interrupt);
    let mut sum = RewriteSummary::default();
    let mut results = Vec::new();
    let mut new_snapshots = Vec::new();
    let walked = (|| -> Result<()> {
        for id in ids {
            let old = repo.load_snapshot(id)?;
            sum.snapshots += 1;
            let f = filter.filter(old.tree)?;
            let mut r = Rewritten {
                old: *id,
                new: None,
                removed: f.removed,
                forgotten: false,
                entries: f.entries,
                total_bytes: f.bytes,
            };
            if !r.removed.is_empty() {
                sum.rewritten += 1;
                // Sizes come from trees, which a forged one may make anything.
                for x in &r.removed {
                    sum.entries_removed = sum.entries_removed.saturating_add(x.entries);
                    sum.bytes_removed = sum.bytes_removed.saturating_add(x.bytes);
                }
                new_snapshots.push((*id, rewritten_snapshot(*id, &old, f.id, &r, &opts.excludes)));
            } else {
                r.entries = old.summary.entries;
                r.total_bytes = old.summary.total_bytes;
            }
            results.push(r);
        }
        Ok(())
    })();
    // What was written is indexed even after an error, for the next run.
    let finished = match &mut filter.saver {
        Some(s) => s.finish(),
        None => Ok(()),
    };
    walked?;
    finished?;
    let Some(saver) = &mut filter.saver else {
        return Ok((results, sum));
    };
    sum.tree_blobs_new = saver.stats.tree_blobs_new;
    sum.bytes_added = saver.stats.bytes_written;
    // The commit point (format-spec §16): every tree the new snapshots name is
    // in durable packs and index files, and still there.
    saver.verify_written()?;
    crate::archiver::commit::verify_relied_on(repo, &index)?;
    let mut written = Vec::new();
    for (old, snap) in new_snapshots {
        lock.still_valid()?;
        let (new_id, size) = repo.save_snapshot(&snap)?;
        sum.bytes_added += size;
        if let Some(r) = results.iter_mut().find(|r| r.old == old) {
            r.new = Some(new_id);
        }
        written.push(old);
    }
    if opts.forget && !written.is_empty() {
        crate::record::note_removal(repo, lock, "rewrite --forget", &written, &[])?;
        for old in &written {
            lock.still_valid()?;
            repo.backend().remove(FileType::Snapshot, &old.to_hex())?;
            sum.removed_snapshots += 1;
            if let Some(r) = results.iter_mut().find(|r| r.old == *old) {
                r.forgotten = true;
            }
        }
    }
    Ok((results, sum))
}

/// The replacement of `old` whose root tree is `tree`, after removing what `r`
/// lists.
fn rewritten_snapshot(
    id: SnapshotId,
    old: &Snapshot,
    tree: crate::id::BlobId,
    r: &Rewritten,
    excludes: &Excludes,
) -> Snapshot {
    let mut s = replacement(id, old);
    s.tree = tree;
    s.summary.entries = r.entries;
    s.summary.total_bytes = r.total_bytes;
    s.program_version = crate::archiver::program_version();
    for p in excludes.patterns() {
        if !s.excludes.contains(p) {
            s.excludes.push(p.clone());
        }
    }
    // A backup with these patterns would not have met the sources they match.
    let kept =
        |p: &SourceProblem| !(p.path.starts_with('/') && excludes.is_excluded(Path::new(&p.path)));
    s.errors.retain(kept);
    s.warnings.retain(kept);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn tag_changes() {
        let add_remove = TagChange {
            add: v(&["c", "a"]),
            remove: v(&["b"]),
            set: None,
        };
        add_remove.validate().unwrap();
        assert_eq!(add_remove.apply(&v(&["a", "b", "d"])), v(&["a", "d", "c"]));
        let set = TagChange {
            set: Some(v(&["x", "x", "y"])),
            ..TagChange::default()
        };
        assert_eq!(set.apply(&v(&["a"])), v(&["x", "y"]));
        let clear = TagChange {
            set: Some(v(&[""])),
            ..TagChange::default()
        };
        clear.validate().unwrap();
        assert!(clear.apply(&v(&["a"])).is_empty());
        assert!(same_tags(&v(&["a", "b"]), &v(&["b", "a"])));
        assert!(!same_tags(&v(&["a"]), &v(&["a", "b"])));

        for bad in [
            TagChange::default(),
            TagChange {
                add: v(&["a"]),
                set: Some(v(&["b"])),
                ..TagChange::default()
            },
            TagChange {
                add: v(&[""]),
                ..TagChange::default()
            },
            TagChange {
                add: v(&["a"]),
                remove: v(&["a"]),
                set: None,
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    fn snapshot(tree: crate::id::BlobId) -> Snapshot {
        Snapshot {
            time: "2026-01-01T00:00:00+00:00".into(),
            hostname: "h".into(),
            username: "u".into(),
            uid: 0,
            gid: 0,
            paths: vec!["/d".into()],
            tags: vec![],
            tree,
            parent: None,
            original: None,
            replaces: None,
            excludes: vec!["*.tmp".into()],
            program_version: "cairn 0.0.1".into(),
            summary: crate::snapshot::Summary {
                entries: 6,
                total_bytes: 30,
                ..Default::default()
            },
            errors: vec![
                SourceProblem {
                    path: "/d/a/secret".into(),
                    error: "changed".into(),
                },
                SourceProblem {
                    path: "/d/b/x".into(),
                    error: "changed".into(),
                },
            ],
            warnings: vec![],
        }
    }

    #[test]
    fn a_replacement_keeps_the_backup_it_is_a_version_of() {
        let mut s = snapshot(crate::id::BlobId([0; 32]));
        let first = SnapshotId([1; 32]);
        let r = replacement(first, &s);
        assert_eq!((r.replaces, r.original), (Some(first), Some(first)));
        s.original = Some(SnapshotId([9; 32]));
        let r = replacement(first, &s);
        assert_eq!(r.original, Some(SnapshotId([9; 32])));
    }

    /// `/d/a/{keep, secret/{f1, f2}}`, `/d/b/x`: removing `secret` writes new
    /// trees for `/`, `/d` and `/d/a`; `/d/b` keeps its id, and the counts are
    /// those of what is left.
    #[test]
    fn filtering_rewrites_only_the_directories_above_a_match() {
        use crate::index::Index;
        use crate::tree::tests::node;
        use crate::tree::{NodeKind, Tree};
        let (_dir, repo) = crate::lock::tests::repo();
        let mut saver = Saver::new(Arc::clone(&repo), Arc::new(Index::new()));
        let file = |name: &[u8], size| {
            let mut n = node(name, NodeKind::File);
            n.size = size;
            n
        };
        let dir = |name: &[u8], saver: &mut Saver, nodes| {
            let mut n = node(name, NodeKind::Dir);
            n.subtree = Some(saver.save_tree(&mut Tree { nodes }).unwrap());
            n
        };
        let secret = dir(b"secret", &mut saver, vec![file(b"f1", 7), file(b"f2", 8)]);
        let a = dir(b"a", &mut saver, vec![file(b"keep", 5), secret]);
        let b = dir(b"b", &mut saver, vec![file(b"x", 10)]);
        let b_tree = b.subtree;
        let d = dir(b"d", &mut saver, vec![a, b]);
        let root = saver.save_tree(&mut Tree { nodes: vec![d] }).unwrap();
        saver.finish().unwrap();

        let index = repo.load_index(&mut |_, _| {}).unwrap();
        let excludes = Excludes::new(&["secret".into()]).unwrap();
        let stop = AtomicBool::new(false);
        let mut f = TreeFilter::new(&repo, &index, &excludes, None, &stop);
        let out = f.filter(root).unwrap();
        assert_ne!(out.id, root);
        // d, a, keep, b, x
        assert_eq!((out.entries, out.bytes), (5, 15));
        assert_eq!(out.removed.len(), 1);
        let r = out.removed.iter().next().unwrap();
        assert_eq!(r.path, Path::new("/d/a/secret"));
        assert_eq!(
            (r.entries, r.files, r.bytes, r.uncounted),
            (3, 2, 15, false)
        );

        // The dry run's ids are the ids the trees get when written.
        let index = Arc::new(index);
        let saver = Saver::new(Arc::clone(&repo), Arc::clone(&index));
        let mut w = TreeFilter::new(&repo, &index, &excludes, Some(saver), &stop);
        let written = w.filter(root).unwrap();
        w.saver.as_mut().unwrap().finish().unwrap();
        assert_eq!(written.id, out.id);
        let index = repo.load_index(&mut |_, _| {}).unwrap();
        let new_root = repo.load_tree(&index, &written.id).unwrap();
        let new_d = repo
            .load_tree(&index, &new_root.nodes[0].subtree.unwrap())
            .unwrap();
        assert_eq!(new_d.nodes[1].subtree, b_tree, "/d/b is unchanged");
        let new_a = repo
            .load_tree(&index, &new_d.nodes[0].subtree.unwrap())
            .unwrap();
        let names: Vec<&[u8]> = new_a.nodes.iter().map(|n| &n.name[..]).collect();
        assert_eq!(names, [b"keep"]);

        // Nothing matches: the same tree, nothing removed.
        let none = Excludes::new(&["nothing-here".into()]).unwrap();
        let mut f = TreeFilter::new(&repo, &index, &none, None, &stop);
        let same = f.filter(root).unwrap();
        assert_eq!((same.id, same.removed.len(), same.entries), (root, 0, 8));

        // The snapshot: counts of what is left, patterns added, problems of
        // removed paths dropped.
        let old = snapshot(root);
        let r = Rewritten {
            old: SnapshotId([3; 32]),
            new: None,
            removed: out.removed.clone(),
            forgotten: false,
            entries: out.entries,
            total_bytes: out.bytes,
        };
        let s = rewritten_snapshot(r.old, &old, out.id, &r, &excludes);
        assert_eq!((s.summary.entries, s.summary.total_bytes), (5, 15));
        assert_eq!(s.excludes, ["*.tmp", "secret"]);
        assert_eq!(s.errors.len(), 1);
        assert_eq!(s.errors[0].path, "/d/b/x");
        assert_eq!(s.replaces, Some(r.old));
        assert_eq!((s.time, s.tags, s.paths), (old.time, old.tags, old.paths));
    }

    /// A forged tree may give files any size: the counts saturate instead of
    /// overflowing (a panic in a debug build, a wrong total otherwise).
    #[test]
    fn forged_sizes_saturate_the_counts() {
        use crate::index::Index;
        use crate::tree::{NodeKind, Tree, tests::node};
        let (_dir, repo) = crate::lock::tests::repo();
        let mut saver = Saver::new(Arc::clone(&repo), Arc::new(Index::new()));
        let huge = |name: &[u8]| {
            let mut n = node(name, NodeKind::File);
            n.size = u64::MAX;
            n
        };
        let mut gone = node(b"gone", NodeKind::Dir);
        gone.subtree = Some(
            saver
                .save_tree(&mut Tree {
                    nodes: vec![huge(b"x"), huge(b"y")],
                })
                .unwrap(),
        );
        let root = saver
            .save_tree(&mut Tree {
                nodes: vec![huge(b"a"), huge(b"b"), gone],
            })
            .unwrap();
        saver.finish().unwrap();
        let index = repo.load_index(&mut |_, _| {}).unwrap();
        let excludes = Excludes::new(&["gone".into()]).unwrap();
        let stop = AtomicBool::new(false);
        let mut f = TreeFilter::new(&repo, &index, &excludes, None, &stop);
        let out = f.filter(root).unwrap();
        assert_eq!((out.entries, out.bytes), (2, u64::MAX));
        let first = out.removed.iter().next().unwrap();
        assert_eq!((first.files, first.bytes), (2, u64::MAX));
    }

    /// A snapshot that can't be read stops `tag` before it writes anything:
    /// otherwise the ones before it would be left in two versions, and a run
    /// again (by filter or `latest`) would replace the old versions a second
    /// time.
    #[test]
    fn an_unreadable_snapshot_stops_tag_before_any_write() {
        use crate::index::Index;
        use crate::lock::tests::names;
        use crate::tree::{NodeKind, Tree, tests::node};
        let (_dir, repo) = crate::lock::tests::repo();
        let mut saver = Saver::new(Arc::clone(&repo), Arc::new(Index::new()));
        let root = saver
            .save_tree(&mut Tree {
                nodes: vec![node(b"f", NodeKind::File)],
            })
            .unwrap();
        saver.finish().unwrap();
        let (good, _) = repo.save_snapshot(&snapshot(root)).unwrap();
        let bad = SnapshotId([0xab; 32]);
        repo.backend()
            .write(FileType::Snapshot, &bad.to_hex(), b"not a snapshot")
            .unwrap();
        let before = names(&repo, FileType::Snapshot);
        let lock = crate::lock::acquire(&repo, true).unwrap();
        let change = TagChange {
            add: vec!["x".into()],
            ..TagChange::default()
        };
        let r = tag(&repo, &lock, &[good, bad], &change, &|_| {});
        assert!(r.is_err());
        assert_eq!(names(&repo, FileType::Snapshot), before);
        drop(lock);
    }

    /// Spec §15/§16: with a lock others may already take for stale (the machine
    /// slept), tag and rewrite stop before writing a snapshot or deleting one.
    #[test]
    fn a_lock_gone_stale_writes_and_deletes_no_snapshot() {
        use crate::index::Index;
        use crate::lock::tests::names;
        use crate::tree::{NodeKind, Tree, tests::node};
        let (_dir, repo) = crate::lock::tests::repo();
        let mut saver = Saver::new(Arc::clone(&repo), Arc::new(Index::new()));
        let mut d = node(b"d", NodeKind::Dir);
        d.subtree = Some(
            saver
                .save_tree(&mut Tree {
                    nodes: vec![node(b"secret", NodeKind::File)],
                })
                .unwrap(),
        );
        let root = saver.save_tree(&mut Tree { nodes: vec![d] }).unwrap();
        saver.finish().unwrap();
        let (id, _) = repo.save_snapshot(&snapshot(root)).unwrap();
        let before = names(&repo, FileType::Snapshot);

        let lock = crate::lock::acquire(&repo, true).unwrap();
        lock.pretend_refreshed(std::time::Duration::from_secs(3600));
        let change = TagChange {
            add: vec!["x".into()],
            ..TagChange::default()
        };
        let r = tag(&repo, &lock, &[id], &change, &|_| {});
        assert!(matches!(r, Err(Error::Locked(_))), "{r:?}");
        let opts = RewriteOptions {
            excludes: Excludes::new(&["secret".into()]).unwrap(),
            forget: true,
            dry_run: false,
        };
        let stop = AtomicBool::new(false);
        let r = rewrite(&repo, &lock, &[id], &opts, &stop, &|_| {});
        assert!(matches!(r, Err(Error::Locked(_))), "{:?}", r.err());
        assert_eq!(names(&repo, FileType::Snapshot), before);

        // With a fresh lock the same calls do their work.
        lock.pretend_refreshed(std::time::Duration::ZERO);
        let (done, sum) = rewrite(&repo, &lock, &[id], &opts, &stop, &|_| {}).unwrap();
        assert_eq!((sum.rewritten, sum.removed_snapshots), (1, 1));
        let new = done[0].new.unwrap();
        let tagged = tag(&repo, &lock, &[new], &change, &|_| {}).unwrap();
        let last = tagged[0].new.unwrap();
        assert_eq!(names(&repo, FileType::Snapshot), [last.to_hex()]);
        let s = repo.load_snapshot(&last).unwrap();
        assert_eq!((s.replaces, s.original), (Some(new), Some(id)));
        drop(lock);
    }
}
