//! Resolving a path inside a snapshot, and walking its trees depth-first.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::Index;
use crate::repository::Repository;
use crate::tree::{Node, NodeKind, Tree};

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
pub fn walk(
    repo: &Repository,
    index: &Index,
    tree: &Tree,
    at: &Path,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<bool>,
) -> Result<()> {
    for node in &tree.nodes {
        let path = child_path(at, &node.name);
        let descend = visit(&path, node)?;
        if descend {
            if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                let subtree = repo.load_tree(index, &sub)?;
                walk(repo, index, &subtree, &path, visit)?;
            }
        }
    }
    Ok(())
}
