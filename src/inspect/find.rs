//! Finding entries in snapshots: by name pattern, or by the blobs and trees
//! they use ("what does this damaged pack take with it").

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::index::Index;
use crate::pack::BlobKind;
use crate::repository::Repository;
use crate::tree::{Node, NodeKind};

/// Glob patterns as `find` takes them. A pattern without `/` matches an entry's
/// name; one with `/` matches its whole path, anchored at the root when it
/// starts with `/` and at any depth otherwise (`data/*.txt` finds
/// `/home/u/data/a.txt`). `*` and `?` stay within one name, `**` crosses
/// directories.
pub struct Patterns {
    names: GlobSet,
    paths: GlobSet,
}

impl Patterns {
    pub fn new(patterns: &[String], ignore_case: bool) -> Result<Self> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let (set, text) = if !p.contains('/') {
                (&mut names, p.clone())
            } else if p.starts_with('/') || p.starts_with("**") {
                (&mut paths, p.clone())
            } else {
                (&mut paths, format!("**/{p}"))
            };
            let glob = GlobBuilder::new(&text)
                .literal_separator(true)
                .case_insensitive(ignore_case)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::invalid(format!("pattern {p:?}: {e}")))?;
            set.add(glob);
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::invalid(format!("patterns: {e}")))
        };
        Ok(Self {
            names: build(names)?,
            paths: build(paths)?,
        })
    }

    pub fn matches(&self, path: &Path) -> bool {
        let name = path.file_name().unwrap_or_else(|| OsStr::new(""));
        (!self.names.is_empty() && self.names.is_match(name))
            || (!self.paths.is_empty() && self.paths.is_match(path))
    }
}

/// Blobs and trees looked for.
#[derive(Default)]
pub struct Wanted {
    pub data: HashSet<BlobId>,
    pub trees: HashSet<BlobId>,
}

impl Wanted {
    /// Adds the blob of `kind` whose id starts with `prefix`: it must name
    /// exactly one blob the index lists, unless it is a whole id (a blob the
    /// index no longer lists may still be named by trees).
    pub fn add_blob(&mut self, index: &Index, kind: BlobKind, prefix: &str) -> Result<()> {
        let id = match BlobId::from_hex(prefix) {
            Ok(id) => id,
            Err(_) => {
                let p = prefix.to_ascii_lowercase();
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Error::invalid(format!(
                        "{prefix:?} is not a blob id or a prefix of one (hex digits)"
                    )));
                }
                let hits: Vec<BlobId> = index
                    .blobs()
                    .filter(|(_, e)| e.kind == kind && hex_prefix(&e.id.0, &p))
                    .map(|(_, e)| e.id)
                    .take(2)
                    .collect();
                match hits.as_slice() {
                    [one] => *one,
                    [] => {
                        return Err(Error::invalid(format!(
                            "no {} blob in the index starts with {prefix:?}",
                            kind.name()
                        )));
                    }
                    _ => {
                        return Err(Error::invalid(format!(
                            "{prefix:?} is ambiguous: several {} blobs start with it; give \
                             more digits",
                            kind.name()
                        )));
                    }
                }
            }
        };
        match kind {
            BlobKind::Data => self.data.insert(id),
            BlobKind::Tree => self.trees.insert(id),
        };
        Ok(())
    }

    /// Adds every blob the index reads from the pack whose id starts with
    /// `prefix`; returns the pack's id.
    pub fn add_pack(&mut self, index: &Index, prefix: &str) -> Result<PackId> {
        let p = prefix.to_ascii_lowercase();
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "{prefix:?} is not a pack id or a prefix of one (hex digits)"
            )));
        }
        let hits: Vec<PackId> = index
            .packs()
            .map(|(id, _)| id)
            .filter(|id| hex_prefix(&id.0, &p))
            .collect();
        let pack = match hits.as_slice() {
            [one] => *one,
            [] => {
                return Err(Error::invalid(format!(
                    "no pack in the index starts with {prefix:?}"
                )));
            }
            many => {
                return Err(Error::invalid(format!(
                    "{prefix:?} is ambiguous: {} packs start with it; give more digits",
                    many.len()
                )));
            }
        };
        for (_, e) in index.blobs().filter(|(id, _)| *id == pack) {
            match e.kind {
                BlobKind::Data => self.data.insert(e.id),
                BlobKind::Tree => self.trees.insert(e.id),
            };
        }
        Ok(pack)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty() && self.trees.is_empty()
    }

    /// The wanted data blobs a file uses, in the order of its contents, once each.
    pub fn blobs_of(&self, node: &Node) -> Vec<BlobId> {
        let mut out: Vec<BlobId> = Vec::new();
        for id in &node.content {
            if self.data.contains(id) && !out.contains(id) {
                out.push(*id);
            }
        }
        out
    }

    /// Whether a directory entry's own tree is wanted.
    pub fn tree_of(&self, node: &Node) -> Option<BlobId> {
        match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(t)) if self.trees.contains(&t) => Some(t),
            _ => None,
        }
    }

    /// The trees under `roots` (themselves included) below which something
    /// wanted is used: a walk need enter only those. Each distinct tree is
    /// read once, however many snapshots share it.
    pub fn trees_leading_to(
        &self,
        repo: &Repository,
        index: &Index,
        roots: &[BlobId],
    ) -> Result<HashSet<BlobId>> {
        let mut memo: HashMap<BlobId, bool> = HashMap::new();
        super::fold_trees(
            repo,
            index,
            roots,
            &mut memo,
            &mut |n| !self.blobs_of(n).is_empty() || self.tree_of(n).is_some(),
            &|acc, v| *acc |= *v,
        )?;
        Ok(memo
            .into_iter()
            .filter_map(|(id, hit)| hit.then_some(id))
            .collect())
    }
}

/// Whether the id's hex form starts with `prefix` (hex digits, any case),
/// without formatting it: a prefix is matched against every blob the index
/// lists.
fn hex_prefix(id: &[u8; 32], prefix: &str) -> bool {
    prefix.len() <= 64
        && prefix.chars().enumerate().all(|(i, c)| {
            let byte = id.get(i / 2).copied().unwrap_or(0);
            let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0xf };
            c.to_digit(16) == Some(u32::from(nibble))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_depth_and_case() {
        let p = |pats: &[&str], ci: bool| {
            Patterns::new(&pats.iter().map(|s| s.to_string()).collect::<Vec<_>>(), ci).unwrap()
        };
        let m = |pats: &Patterns, path: &str| pats.matches(Path::new(path));
        let names = p(&["*.txt"], false);
        assert!(m(&names, "/a/b/c.txt"));
        assert!(!m(&names, "/a/b/c.TXT"));
        assert!(!m(&names, "/a/b.txt/c"));
        assert!(m(&p(&["*.txt"], true), "/a/b/c.TXT"));
        let rel = p(&["b/*.txt"], false);
        assert!(m(&rel, "/a/b/c.txt"));
        assert!(m(&rel, "/b/c.txt"));
        assert!(!m(&rel, "/a/b/x/c.txt"), "* stays within a name");
        let anchored = p(&["/b/*.txt"], false);
        assert!(m(&anchored, "/b/c.txt"));
        assert!(!m(&anchored, "/a/b/c.txt"));
        assert!(m(&p(&["/a/**/c.txt"], false), "/a/b/x/c.txt"));
        assert!(Patterns::new(&["[".into()], false).is_err());
    }

    #[test]
    fn hex_prefixes_match_as_the_hex_form_would() {
        let mut id = [0u8; 32];
        id[0] = 0xab;
        id[1] = 0x1f;
        for (p, want) in [
            ("a", true),
            ("ab1", true),
            ("AB1F", true),
            ("ab2", false),
            ("b", false),
        ] {
            assert_eq!(hex_prefix(&id, p), want, "{p}");
            assert_eq!(
                hex::encode(id).starts_with(&p.to_ascii_lowercase()),
                want,
                "{p}"
            );
        }
        assert!(hex_prefix(&id, &hex::encode(id)));
        assert!(!hex_prefix(&id, &format!("{}0", hex::encode(id))));
    }
}
