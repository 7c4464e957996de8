//! Removing the entries exclude patterns match from a snapshot's trees, bottom-up:
//! a directory whose entries changed gets a new tree blob, every other keeps its
//! id, so an unchanged subtree costs nothing to store.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::archiver::Excludes;
use crate::archiver::saver::Saver;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::Index;
use crate::repository::Repository;
use crate::tree::{MAX_TREE_DEPTH, Node, NodeKind, Tree};

/// An entry a pattern matched, removed with everything under it.
#[derive(Clone, Debug)]
pub struct Removed {
    /// Absolute, as backed up.
    pub path: PathBuf,
    pub kind: NodeKind,
    /// Entries removed: this one and, for a directory, everything under it.
    pub entries: u64,
    /// Of those, regular files...
    pub files: u64,
    /// ...and the sum of their sizes.
    pub bytes: u64,
    /// Part of a removed directory's trees could not be read, so the counts
    /// above leave out what is under it.
    pub uncounted: bool,
}

/// What filtering a tree removed, in tree order. Shared rather than copied: a
/// directory's list points at its subdirectories' lists, and a subtree met
/// again (in the memo, in another snapshot) hands out the same list, so each
/// match is held once however many directories and snapshots report it.
#[derive(Clone, Debug, Default)]
pub struct RemovedList {
    parts: Arc<Vec<Part>>,
    len: usize,
}

#[derive(Debug)]
enum Part {
    One(Removed),
    Sub(RemovedList),
}

impl RemovedList {
    /// The number of matches.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> RemovedIter<'_> {
        RemovedIter {
            stack: vec![self.parts.iter()],
        }
    }
}

impl<'a> IntoIterator for &'a RemovedList {
    type Item = &'a Removed;
    type IntoIter = RemovedIter<'a>;

    fn into_iter(self) -> RemovedIter<'a> {
        self.iter()
    }
}

/// The matches of a [`RemovedList`] in tree order; its stack is as deep as the
/// directories, which the filter bounds.
pub struct RemovedIter<'a> {
    stack: Vec<std::slice::Iter<'a, Part>>,
}

impl<'a> Iterator for RemovedIter<'a> {
    type Item = &'a Removed;

    fn next(&mut self) -> Option<&'a Removed> {
        loop {
            let top = self.stack.last_mut()?;
            match top.next() {
                None => {
                    self.stack.pop();
                }
                Some(Part::One(r)) => return Some(r),
                Some(Part::Sub(list)) => self.stack.push(list.parts.iter()),
            }
        }
    }
}

/// A tree filtered: its id (the old one if nothing under it matched), what it
/// keeps below it (entries and the bytes of its files, as a backup's summary
/// counts them), and what was removed.
#[derive(Clone)]
pub struct Filtered {
    pub id: BlobId,
    pub entries: u64,
    pub bytes: u64,
    pub removed: RemovedList,
}

/// One directory being filtered: its entries still to go, and what is decided.
struct Frame {
    id: BlobId,
    path: PathBuf,
    nodes: std::vec::IntoIter<Node>,
    kept: Vec<Node>,
    changed: bool,
    entries: u64,
    bytes: u64,
    /// Matches here, and subdirectories' lists of theirs, in tree order.
    removed: Vec<Part>,
    removed_len: usize,
    /// The directory node waiting for its subtree's result.
    waiting: Option<Node>,
}

/// Results kept across snapshots, which share most of their directories: a
/// subtree seen at the same path again is not read again. A cache, emptied
/// when it holds this many, so memory stays bounded over any repository.
const MEMO_MAX: usize = 1 << 18;

pub struct TreeFilter<'a> {
    repo: &'a Repository,
    index: &'a Index,
    excludes: &'a Excludes,
    /// `None`: a dry run, which computes the ids new trees would get.
    pub saver: Option<Saver>,
    interrupt: &'a AtomicBool,
    /// (tree id, its path) → its result: patterns match paths, so the same tree
    /// elsewhere may be filtered differently.
    memo: HashMap<(BlobId, PathBuf), Filtered>,
}

impl<'a> TreeFilter<'a> {
    pub fn new(
        repo: &'a Repository,
        index: &'a Index,
        excludes: &'a Excludes,
        saver: Option<Saver>,
        interrupt: &'a AtomicBool,
    ) -> Self {
        Self {
            repo,
            index,
            excludes,
            saver,
            interrupt,
            memo: HashMap::new(),
        }
    }

    /// The snapshot root `root` (path `/`) without what the patterns match.
    /// Iterative, with an explicit stack: a forged snapshot may nest directories
    /// deeper than a call stack would take, and nesting beyond
    /// [`MAX_TREE_DEPTH`] is an error naming the tree.
    pub fn filter(&mut self, root: BlobId) -> Result<Filtered> {
        let mut stack: Vec<Frame> = Vec::new();
        let mut done = self.enter(root, PathBuf::from("/"), &mut stack)?;
        loop {
            if let Some(sub) = done.take() {
                let Some(parent) = stack.last_mut() else {
                    return Ok(sub);
                };
                let Some(mut node) = parent.waiting.take() else {
                    return Err(Error::invalid("rewrite: tree filter lost its place"));
                };
                if node.subtree != Some(sub.id) {
                    node.subtree = Some(sub.id);
                    parent.changed = true;
                }
                parent.entries = parent.entries.saturating_add(sub.entries).saturating_add(1);
                parent.bytes = parent.bytes.saturating_add(sub.bytes);
                if !sub.removed.is_empty() {
                    parent.removed_len = parent.removed_len.saturating_add(sub.removed.len());
                    parent.removed.push(Part::Sub(sub.removed));
                }
                parent.kept.push(node);
                continue;
            }
            let depth = stack.len();
            let Some(frame) = stack.last_mut() else {
                return Err(Error::invalid("rewrite: tree filter lost its place"));
            };
            let Some(node) = frame.nodes.next() else {
                if let Some(f) = stack.pop() {
                    done = Some(self.finish(f)?);
                }
                continue;
            };
            let path = frame.path.join(OsStr::from_bytes(&node.name));
            if self.excludes.is_excluded(&path) {
                frame.changed = true;
                let removed = self.count_removed(path, &node);
                frame.removed.push(Part::One(removed));
                frame.removed_len = frame.removed_len.saturating_add(1);
                continue;
            }
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(sub)) => {
                    if depth >= MAX_TREE_DEPTH {
                        return Err(Error::corrupt(
                            format!("tree {sub}"),
                            format!(
                                "directories nest more than {MAX_TREE_DEPTH} levels deep (at \
                                 {}); no backup makes such a tree",
                                shorten(&path)
                            ),
                        ));
                    }
                    frame.waiting = Some(node);
                    done = self.enter(sub, path, &mut stack)?;
                }
                _ => {
                    frame.entries = frame.entries.saturating_add(1);
                    if node.kind == NodeKind::File {
                        frame.bytes = frame.bytes.saturating_add(node.size);
                    }
                    frame.kept.push(node);
                }
            }
        }
    }

    /// Starts on tree `id` at `path`: its result at once if it is known,
    /// otherwise a new frame on `stack` and `None`.
    fn enter(
        &mut self,
        id: BlobId,
        path: PathBuf,
        stack: &mut Vec<Frame>,
    ) -> Result<Option<Filtered>> {
        if self.interrupt.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let key = (id, path);
        if let Some(known) = self.memo.get(&key) {
            return Ok(Some(known.clone()));
        }
        let (id, path) = key;
        let tree = self.repo.load_tree(self.index, &id)?;
        stack.push(Frame {
            id,
            path,
            kept: Vec::with_capacity(tree.nodes.len()),
            nodes: tree.nodes.into_iter(),
            changed: false,
            entries: 0,
            bytes: 0,
            removed: Vec::new(),
            removed_len: 0,
            waiting: None,
        });
        Ok(None)
    }

    /// A finished directory: a new tree blob if anything in it changed.
    fn finish(&mut self, f: Frame) -> Result<Filtered> {
        let id = if f.changed {
            let mut tree = Tree { nodes: f.kept };
            match &mut self.saver {
                Some(s) => s.save_tree(&mut tree)?,
                None => self.repo.key().blob_id(&tree.encode()),
            }
        } else {
            f.id
        };
        let done = Filtered {
            id,
            entries: f.entries,
            bytes: f.bytes,
            removed: RemovedList {
                parts: Arc::new(f.removed),
                len: f.removed_len,
            },
        };
        if self.memo.len() >= MEMO_MAX {
            self.memo.clear();
        }
        self.memo.insert((f.id, f.path), done.clone());
        Ok(done)
    }

    /// What removing `node` at `path` removes. The trees under a removed
    /// directory are only counted: one that can't be read doesn't stop its
    /// removal, it is left out of the counts (and said so).
    fn count_removed(&self, path: PathBuf, node: &Node) -> Removed {
        let mut r = Removed {
            kind: node.kind,
            entries: 1,
            files: u64::from(node.kind == NodeKind::File),
            bytes: if node.kind == NodeKind::File {
                node.size
            } else {
                0
            },
            uncounted: false,
            path,
        };
        if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
            let mut count = |_: &Path, n: &Node| -> Result<bool> {
                r.entries = r.entries.saturating_add(1);
                if n.kind == NodeKind::File {
                    r.files = r.files.saturating_add(1);
                    r.bytes = r.bytes.saturating_add(n.size);
                }
                Ok(true)
            };
            let walked = self.repo.load_tree(self.index, &sub).and_then(|t| {
                crate::walk::walk(self.repo, self.index, &t, Path::new("/"), &mut count)
            });
            r.uncounted = walked.is_err();
        }
        r
    }
}

/// A path for an error message, cut short: a forged one may be very long.
fn shorten(p: &Path) -> String {
    let shown = p.to_string_lossy();
    let head: String = shown.chars().take(120).collect();
    if head.len() < shown.len() {
        format!("{head}…")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(path: &str) -> Part {
        Part::One(Removed {
            path: PathBuf::from(path),
            kind: NodeKind::File,
            entries: 1,
            files: 1,
            bytes: 1,
            uncounted: false,
        })
    }

    fn list(parts: Vec<Part>) -> RemovedList {
        let len = parts
            .iter()
            .map(|p| match p {
                Part::One(_) => 1,
                Part::Sub(l) => l.len(),
            })
            .sum();
        RemovedList {
            parts: Arc::new(parts),
            len,
        }
    }

    /// Matches come out in tree order through nested lists, and a list handed
    /// to a parent (or a second snapshot) is shared, not copied.
    #[test]
    fn removed_lists_nest_in_order_and_are_shared() {
        let logs = list(vec![one("/d/logs/a.log"), one("/d/logs/b.log")]);
        let d = list(vec![
            one("/d/a.log"),
            Part::Sub(logs.clone()),
            one("/d/z.log"),
        ]);
        let root = list(vec![
            one("/a.log"),
            Part::Sub(d.clone()),
            Part::Sub(list(vec![])),
        ]);
        let paths: Vec<_> = root.iter().map(|r| r.path.display().to_string()).collect();
        assert_eq!(
            paths,
            [
                "/a.log",
                "/d/a.log",
                "/d/logs/a.log",
                "/d/logs/b.log",
                "/d/z.log"
            ]
        );
        assert_eq!(root.len(), 5);
        assert!(list(vec![]).is_empty());
        let Part::Sub(inner) = &d.parts[1] else {
            panic!("not a sub-list");
        };
        assert!(Arc::ptr_eq(&inner.parts, &logs.parts));
    }
}
