//! Read-only views of snapshots: `diff`, `find`, `stats` and `dump`. Each
//! reads trees through [`crate::walk`] and [`Repository::load_tree`], and blob
//! sizes from the index; none takes a lock or writes anything.

pub mod diff;
pub mod dump;
pub mod find;
pub mod stats;

use std::collections::HashMap;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::Index;
use crate::repository::Repository;
use crate::tree::{MAX_TREE_DEPTH, Node, NodeKind};
use crate::walk::{self, Selection};

/// What a path inside a snapshot names, with its own entry (which
/// [`walk::resolve`] leaves out for directories).
pub struct Located {
    /// Absolute path inside the snapshot (`/` for its root).
    pub path: PathBuf,
    /// The entry; `None` for the snapshot's root, which has none.
    pub node: Option<Node>,
    /// The directory's tree, for the root and directories.
    pub tree: Option<BlobId>,
}

/// Resolves `path` in the snapshot whose root tree is `root`.
pub fn locate(repo: &Repository, index: &Index, root: &BlobId, path: &str) -> Result<Located> {
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let Some((last, parents)) = comps.split_last() else {
        return Ok(Located {
            path: PathBuf::from("/"),
            node: None,
            tree: Some(*root),
        });
    };
    let parent = format!("/{}", parents.join("/"));
    let (at, tree) = match walk::resolve(repo, index, root, &parent)? {
        Selection::Dir { path, tree } => (path, tree),
        Selection::Node { path, .. } => {
            return Err(Error::invalid(format!(
                "{} is not a directory in the snapshot",
                path.display()
            )));
        }
    };
    let path = at.join(last);
    let node = tree
        .find(last.as_bytes())
        .cloned()
        .ok_or_else(|| Error::invalid(format!("{} is not in the snapshot", path.display())))?;
    let tree = match node.kind {
        NodeKind::Dir => node.subtree,
        _ => None,
    };
    Ok(Located {
        path,
        node: Some(node),
        tree,
    })
}

/// Folds every distinct tree reachable from `roots` bottom-up, loading each
/// once however many snapshots and directories share it: a tree's value is the
/// sum (`add`) of `own(node)` over its entries and, for directories, of their
/// subtree's value. `own` sees each entry of each distinct tree exactly once.
/// Values end up in `memo`, keyed by tree id; trees already there are not
/// read again.
///
/// Iterative, like [`walk::walk`]: nesting deeper than [`MAX_TREE_DEPTH`] is an
/// error naming the tree, never a deep call stack.
pub fn fold_trees<T: Default>(
    repo: &Repository,
    index: &Index,
    roots: &[BlobId],
    memo: &mut HashMap<BlobId, T>,
    own: &mut dyn FnMut(&Node) -> T,
    add: &dyn Fn(&mut T, &T),
) -> Result<()> {
    struct Frame<T> {
        id: BlobId,
        nodes: Vec<Node>,
        next: usize,
        acc: T,
    }
    let load = |id: &BlobId| -> Result<Frame<T>> {
        Ok(Frame {
            id: *id,
            nodes: repo.load_tree(index, id)?.nodes,
            next: 0,
            acc: T::default(),
        })
    };
    for root in roots {
        if memo.contains_key(root) {
            continue;
        }
        let mut stack = vec![load(root)?];
        while let Some(top) = stack.last_mut() {
            let Some(node) = top.nodes.get(top.next) else {
                if let Some(done) = stack.pop() {
                    memo.insert(done.id, done.acc);
                }
                continue;
            };
            if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                match memo.get(&sub) {
                    Some(v) => {
                        let mine = own(node);
                        add(&mut top.acc, &mine);
                        add(&mut top.acc, v);
                    }
                    None => {
                        if stack.len() >= MAX_TREE_DEPTH {
                            return Err(Error::corrupt(
                                format!("tree {sub}"),
                                format!(
                                    "directories nest more than {MAX_TREE_DEPTH} levels deep; \
                                     no backup makes such a tree, so the repository is damaged \
                                     or forged"
                                ),
                            ));
                        }
                        // Come back to this entry once its subtree is folded.
                        stack.push(load(&sub)?);
                        continue;
                    }
                }
            } else {
                let mine = own(node);
                add(&mut top.acc, &mine);
            }
            top.next += 1;
        }
    }
    Ok(())
}

/// A file's content, as one key: the hash of its blob ids in order. Two files
/// have the same key exactly when they restore to the same bytes from the same
/// blobs.
pub fn content_key(node: &Node) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for id in &node.content {
        h.update(&id.0);
    }
    *h.finalize().as_bytes()
}
