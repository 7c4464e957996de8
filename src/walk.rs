//! Resolving a path inside a snapshot, and walking its trees depth-first.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::Index;
use crate::repository::Repository;
use crate::tree::{MAX_TREE_DEPTH, Node, NodeKind, Tree};

/// What a path inside a snapshot names.
pub enum Selection {
    /// A directory (or the snapshot root): its tree.
    Dir { path: PathBuf, tree: Tree },
    /// Anything else: the node itself.
    Node { path: PathBuf, node: Box<Node> },
}

impl Selection {
    pub fn path(&self) -> &Path {
        match self {
            Selection::Dir { path, .. } | Selection::Node { path, .. } => path,
        }
    }
}

/// Resolves an absolute path (`/` is the root) in the snapshot whose root tree is
/// `root`. Symlinks inside the snapshot are not followed.
pub fn resolve(repo: &Repository, index: &Index, root: &BlobId, path: &str) -> Result<Selection> {
    let mut tree = repo.load_tree(index, root)?;
    let mut at = PathBuf::from("/");
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    for (i, c) in comps.iter().enumerate() {
        let node = tree.find(c.as_bytes()).cloned().ok_or_else(|| {
            Error::invalid(format!("{} is not in the snapshot", at.join(c).display()))
        })?;
        at.push(c);
        let last = i + 1 == comps.len();
        match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(sub)) => tree = repo.load_tree(index, &sub)?,
            _ if last => {
                return Ok(Selection::Node {
                    path: at,
                    node: Box::new(node),
                });
            }
            _ => {
                return Err(Error::invalid(format!(
                    "{} is not a directory in the snapshot",
                    at.display()
                )));
            }
        }
    }
    Ok(Selection::Dir { path: at, tree })
}

pub fn child_path(parent: &Path, name: &[u8]) -> PathBuf {
    parent.join(OsStr::from_bytes(name))
}

/// Visits every node under `tree` (whose own path is `at`) depth-first, parents
/// before children. `visit` returns whether to descend into a directory.
///
/// Iterative, with one path buffer: a hostile repository's trees may nest as deep
/// as it likes, so neither the call stack nor memory may grow with the depth
/// beyond one frame of nodes per level, and levels beyond [`MAX_TREE_DEPTH`] are
/// an error naming the tree.
pub fn walk(
    repo: &Repository,
    index: &Index,
    tree: &Tree,
    at: &Path,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<bool>,
) -> Result<()> {
    let mut path = at.to_path_buf();
    // The nodes of each directory being walked, root first; `path` is `at`
    // joined with the names of the directories entered below the root.
    let mut stack: Vec<std::vec::IntoIter<Node>> = vec![tree.nodes.clone().into_iter()];
    while let Some(level) = stack.last_mut() {
        let Some(node) = level.next() else {
            stack.pop();
            if !stack.is_empty() {
                path.pop();
            }
            continue;
        };
        path.push(OsStr::from_bytes(&node.name));
        let descend = visit(&path, &node)?;
        let subtree = match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(sub)) if descend => sub,
            _ => {
                path.pop();
                continue;
            }
        };
        if stack.len() >= MAX_TREE_DEPTH {
            return Err(too_deep(&subtree, &path));
        }
        stack.push(repo.load_tree(index, &subtree)?.nodes.into_iter());
    }
    Ok(())
}

/// The error for directories nested deeper than [`MAX_TREE_DEPTH`].
fn too_deep(tree: &BlobId, path: &Path) -> Error {
    let shown = path.to_string_lossy();
    let head: String = shown.chars().take(120).collect();
    Error::corrupt(
        format!("tree {tree}"),
        format!(
            "directories nest more than {MAX_TREE_DEPTH} levels deep (under {head}…); \
             no backup makes such a tree, so the repository is damaged or forged"
        ),
    )
}
