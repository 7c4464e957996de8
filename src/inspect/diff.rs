//! Comparing two directories of snapshots: both trees are walked in step, by
//! name, and a directory whose tree is the same on both sides is passed over
//! without being read (equal tree ids mean equal contents, all the way down).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::iter::Peekable;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::Index;
use crate::pack::BlobKind;
use crate::repository::Repository;
use crate::tree::{MAX_TREE_DEPTH, Node, NodeKind};

/// What happened to one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modifier {
    /// `+`: only in the new snapshot.
    Added,
    /// `-`: only in the old one.
    Removed,
    /// `M`: a file's contents (blob list or size), a symlink's target or a
    /// device's number differ.
    Modified,
    /// `T`: the entry is of another type (a file became a directory, say).
    TypeChanged,
    /// `U`: same contents, other metadata (mode, owner, mtime, xattrs); only
    /// reported when asked for.
    Metadata,
}

impl Modifier {
    pub fn symbol(self) -> char {
        match self {
            Modifier::Added => '+',
            Modifier::Removed => '-',
            Modifier::Modified => 'M',
            Modifier::TypeChanged => 'T',
            Modifier::Metadata => 'U',
        }
    }
}

/// One reported path, relative to the compared directories (`/name/...`).
pub struct Change<'a> {
    pub path: &'a Path,
    pub modifier: Modifier,
    pub old: Option<&'a Node>,
    pub new: Option<&'a Node>,
}

/// Entries and blob-level data on one side only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Side {
    pub files: u64,
    pub dirs: u64,
    /// Symlinks, devices, FIFOs and sockets.
    pub others: u64,
    /// Tree and data blobs that only this side references.
    pub blobs: u64,
    /// Their plaintext size, from the index.
    pub bytes: u64,
}

impl Side {
    fn count(&mut self, kind: NodeKind) {
        match kind {
            NodeKind::File => self.files += 1,
            NodeKind::Dir => self.dirs += 1,
            _ => self.others += 1,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiffSummary {
    pub added: Side,
    pub removed: Side,
    /// Entries reported `M`.
    pub modified: u64,
    /// Entries reported `T`.
    pub type_changed: u64,
    /// Entries reported `U` (0 unless metadata changes were asked for).
    pub metadata_changed: u64,
    /// Blobs on one side only that the index doesn't list, so whose size is
    /// unknown (counted in `blobs`, not in `bytes`).
    pub blobs_unknown_size: u64,
}

/// Compares the directory whose tree is `old` with the one whose tree is `new`,
/// calling `report` for each change in tree order (a directory before what is
/// in it). The contents of an added or removed directory are reported one by
/// one, as are those of a directory that replaced, or was replaced by, another
/// type of entry. With `metadata`, also entries whose metadata alone changed.
///
/// Blob-level totals count the blobs referenced on one side and not the other,
/// anywhere in the two directories: when the changed parts leave candidates,
/// the skipped (identical) directories are read to rule out blobs they share.
pub fn diff(
    repo: &Repository,
    index: &Index,
    old: &BlobId,
    new: &BlobId,
    metadata: bool,
    report: &mut dyn FnMut(&Change) -> Result<()>,
) -> Result<DiffSummary> {
    let mut d = Differ {
        repo,
        index,
        metadata,
        summary: DiffSummary::default(),
        old_blobs: HashSet::new(),
        new_blobs: HashSet::new(),
        shared: Vec::new(),
    };
    if old != new {
        d.walk(old, new, report)?;
    } else {
        d.shared.push(*old);
    }
    d.totals()?;
    Ok(d.summary)
}

type Blob = (BlobKind, BlobId);
type Nodes = Peekable<std::vec::IntoIter<Node>>;

struct Differ<'a> {
    repo: &'a Repository,
    index: &'a Index,
    metadata: bool,
    summary: DiffSummary,
    /// Blobs referenced by the parts of each side that were walked.
    old_blobs: HashSet<Blob>,
    new_blobs: HashSet<Blob>,
    /// Trees present on both sides and not walked.
    shared: Vec<BlobId>,
}

/// One directory being compared: its entries on each side (either may be
/// empty, for a directory on one side only).
struct Frame {
    old: Nodes,
    new: Nodes,
}

impl Differ<'_> {
    fn nodes(&mut self, tree: Option<&BlobId>, old_side: bool) -> Result<Nodes> {
        let Some(id) = tree else {
            return Ok(Vec::new().into_iter().peekable());
        };
        let set = if old_side {
            &mut self.old_blobs
        } else {
            &mut self.new_blobs
        };
        set.insert((BlobKind::Tree, *id));
        Ok(self
            .repo
            .load_tree(self.index, id)?
            .nodes
            .into_iter()
            .peekable())
    }

    fn note_content(&mut self, node: &Node, old_side: bool) {
        let set = if old_side {
            &mut self.old_blobs
        } else {
            &mut self.new_blobs
        };
        set.extend(node.content.iter().map(|id| (BlobKind::Data, *id)));
    }

    fn walk(
        &mut self,
        old: &BlobId,
        new: &BlobId,
        report: &mut dyn FnMut(&Change) -> Result<()>,
    ) -> Result<()> {
        let mut path = PathBuf::from("/");
        let mut stack = vec![Frame {
            old: self.nodes(Some(old), true)?,
            new: self.nodes(Some(new), false)?,
        }];
        while let Some(top) = stack.last_mut() {
            let (a, b) = match (top.old.peek(), top.new.peek()) {
                (None, None) => {
                    stack.pop();
                    path.pop();
                    continue;
                }
                (Some(_), None) => (top.old.next(), None),
                (None, Some(_)) => (None, top.new.next()),
                (Some(x), Some(y)) => match x.name.cmp(&y.name) {
                    std::cmp::Ordering::Less => (top.old.next(), None),
                    std::cmp::Ordering::Greater => (None, top.new.next()),
                    std::cmp::Ordering::Equal => (top.old.next(), top.new.next()),
                },
            };
            let name = match (&a, &b) {
                (Some(n), _) | (None, Some(n)) => n.name.clone(),
                (None, None) => continue,
            };
            path.push(OsStr::from_bytes(&name));
            let (modifier, descend) = self.compare(a.as_ref(), b.as_ref())?;
            if let Some(modifier) = modifier {
                report(&Change {
                    path: &path,
                    modifier,
                    old: a.as_ref(),
                    new: b.as_ref(),
                })?;
            }
            match descend {
                Some((o, n)) => {
                    if stack.len() >= MAX_TREE_DEPTH {
                        return Err(Error::corrupt(
                            format!("the directory {}", path.display()),
                            format!("directories nest more than {MAX_TREE_DEPTH} levels deep"),
                        ));
                    }
                    let frame = Frame {
                        old: self.nodes(o.as_ref(), true)?,
                        new: self.nodes(n.as_ref(), false)?,
                    };
                    stack.push(frame);
                }
                None => {
                    path.pop();
                }
            }
        }
        Ok(())
    }

    /// What to report for an entry, and which trees (old, new) to compare
    /// below it, if any.
    #[allow(clippy::type_complexity)]
    fn compare(
        &mut self,
        a: Option<&Node>,
        b: Option<&Node>,
    ) -> Result<(Option<Modifier>, Option<(Option<BlobId>, Option<BlobId>)>)> {
        let sub = |n: &Node| match n.kind {
            NodeKind::Dir => n.subtree,
            _ => None,
        };
        Ok(match (a, b) {
            (Some(a), None) => {
                self.summary.removed.count(a.kind);
                self.note_content(a, true);
                (Some(Modifier::Removed), sub(a).map(|t| (Some(t), None)))
            }
            (None, Some(b)) => {
                self.summary.added.count(b.kind);
                self.note_content(b, false);
                (Some(Modifier::Added), sub(b).map(|t| (None, Some(t))))
            }
            (Some(a), Some(b)) => {
                self.note_content(a, true);
                self.note_content(b, false);
                let (sa, sb) = (sub(a), sub(b));
                let below = match (sa, sb) {
                    (Some(x), Some(y)) if x == y => {
                        self.shared.push(x);
                        None
                    }
                    (None, None) => None,
                    (x, y) => Some((x, y)),
                };
                let modifier = if a.kind != b.kind {
                    self.summary.type_changed += 1;
                    Some(Modifier::TypeChanged)
                } else if content_differs(a, b) {
                    self.summary.modified += 1;
                    Some(Modifier::Modified)
                } else if self.metadata && metadata_differs(a, b) {
                    self.summary.metadata_changed += 1;
                    Some(Modifier::Metadata)
                } else {
                    None
                };
                (modifier, below)
            }
            (None, None) => (None, None),
        })
    }

    /// Blob-level totals: what only one side references. Candidates from the
    /// walked parts are ruled out when a skipped directory holds them.
    fn totals(&mut self) -> Result<()> {
        let mut removed: HashSet<Blob> = self
            .old_blobs
            .difference(&self.new_blobs)
            .copied()
            .collect();
        let mut added: HashSet<Blob> = self
            .new_blobs
            .difference(&self.old_blobs)
            .copied()
            .collect();
        let mut seen: HashSet<BlobId> = HashSet::new();
        let mut todo = std::mem::take(&mut self.shared);
        while !(removed.is_empty() && added.is_empty()) {
            let Some(id) = todo.pop() else { break };
            if !seen.insert(id) {
                continue;
            }
            removed.remove(&(BlobKind::Tree, id));
            added.remove(&(BlobKind::Tree, id));
            for n in self.repo.load_tree(self.index, &id)?.nodes {
                for c in &n.content {
                    removed.remove(&(BlobKind::Data, *c));
                    added.remove(&(BlobKind::Data, *c));
                }
                if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                    todo.push(sub);
                }
            }
        }
        for (set, side) in [
            (&removed, &mut self.summary.removed),
            (&added, &mut self.summary.added),
        ] {
            for (kind, id) in set {
                side.blobs += 1;
                match self.index.get(*kind, id) {
                    Some((_, e)) => side.bytes += u64::from(e.raw_length),
                    None => self.summary.blobs_unknown_size += 1,
                }
            }
        }
        Ok(())
    }
}

/// Contents as `M` means them: a file's blobs and size, a symlink's target, a
/// device's number.
fn content_differs(a: &Node, b: &Node) -> bool {
    match a.kind {
        NodeKind::File => a.content != b.content || a.size != b.size,
        NodeKind::Symlink => a.link_target != b.link_target,
        NodeKind::Chardev | NodeKind::Blockdev => a.rdev != b.rdev,
        _ => false,
    }
}

/// Metadata as `U` means it: what a restore sets. Access and change times,
/// inode, device and link count say where and when the entry was read, not
/// what it is, and are left out.
fn metadata_differs(a: &Node, b: &Node) -> bool {
    a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.user != b.user
        || a.group != b.group
        || a.mtime != b.mtime
        || a.xattrs != b.xattrs
}
