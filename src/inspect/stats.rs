//! Sizes of snapshots, counted three ways (as restic's `stats` modes), and
//! of the repository as a whole.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::id::BlobId;
use crate::index::Index;
use crate::pack::BlobKind;
use crate::repository::Repository;
use crate::tree::NodeKind;
use crate::walk;

/// What restoring each of the directories would write, added up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RestoreSize {
    pub files: u64,
    pub dirs: u64,
    /// Symlinks, devices, FIFOs and sockets.
    pub others: u64,
    /// File sizes; a file with several names in one directory tree counts once
    /// there, as a restore recreates it once and links the other names.
    pub bytes: u64,
}

/// Entries below each root (not the root itself), walked one by one.
pub fn restore_size(repo: &Repository, index: &Index, roots: &[BlobId]) -> Result<RestoreSize> {
    let mut s = RestoreSize::default();
    for root in roots {
        let tree = repo.load_tree(index, root)?;
        let mut linked: HashSet<(u64, u64)> = HashSet::new();
        walk::walk(repo, index, &tree, Path::new("/"), &mut |_, n| {
            match n.kind {
                NodeKind::File => {
                    s.files += 1;
                    if n.links <= 1 || linked.insert((n.device, n.inode)) {
                        s.bytes = s.bytes.saturating_add(n.size);
                    }
                }
                NodeKind::Dir => s.dirs += 1,
                _ => s.others += 1,
            }
            Ok(true)
        })?;
    }
    Ok(s)
}

/// Distinct file contents (blob lists) under the roots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ByContents {
    /// Distinct contents (an empty file is one, however many there are).
    pub contents: u64,
    /// Their sizes, each counted once.
    pub bytes: u64,
}

pub fn files_by_contents(repo: &Repository, index: &Index, roots: &[BlobId]) -> Result<ByContents> {
    let mut seen: HashSet<[u8; 32]> = HashSet::new();
    let mut bytes = 0u64;
    let mut memo: HashMap<BlobId, ()> = HashMap::new();
    super::fold_trees(
        repo,
        index,
        roots,
        &mut memo,
        &mut |n| {
            if n.kind == NodeKind::File && seen.insert(super::content_key(n)) {
                bytes = bytes.saturating_add(n.size);
            }
        },
        &|_, _| {},
    )?;
    Ok(ByContents {
        contents: seen.len() as u64,
        bytes,
    })
}

/// The distinct blobs the roots reference, as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RawData {
    pub data_blobs: u64,
    pub tree_blobs: u64,
    /// Plaintext size of all those blobs...
    pub plaintext_bytes: u64,
    /// ...of the data blobs alone...
    pub data_plaintext_bytes: u64,
    /// ...and what they take in packs (compressed, encrypted, with nonce and tag).
    pub stored_bytes: u64,
    /// The file sizes they make up: every file of every root, counted each
    /// time it appears.
    pub logical_bytes: u64,
    /// Referenced blobs the index doesn't list (sizes unknown, not counted).
    pub missing_blobs: u64,
    /// `plaintext_bytes / stored_bytes`; `None` when nothing is stored.
    pub compression_ratio: Option<f64>,
    /// `logical_bytes / data_plaintext_bytes`: how many times each stored byte
    /// of file data is used; `None` when there is no file data.
    pub dedup_ratio: Option<f64>,
}

pub fn raw_data(repo: &Repository, index: &Index, roots: &[BlobId]) -> Result<RawData> {
    let mut data: HashSet<BlobId> = HashSet::new();
    let mut memo: HashMap<BlobId, u64> = HashMap::new();
    super::fold_trees(
        repo,
        index,
        roots,
        &mut memo,
        &mut |n| {
            if n.kind == NodeKind::File {
                data.extend(n.content.iter().copied());
                n.size
            } else {
                0
            }
        },
        &|acc, v| *acc = acc.saturating_add(*v),
    )?;
    let mut r = RawData {
        logical_bytes: roots
            .iter()
            .filter_map(|t| memo.get(t))
            .fold(0u64, |a, v| a.saturating_add(*v)),
        ..RawData::default()
    };
    let mut tally = |kind: BlobKind, id: &BlobId| match index.get(kind, id) {
        Some((_, e)) => {
            let plain = u64::from(e.raw_length);
            r.plaintext_bytes += plain;
            r.stored_bytes += u64::from(e.length);
            match kind {
                BlobKind::Data => {
                    r.data_blobs += 1;
                    r.data_plaintext_bytes += plain;
                }
                BlobKind::Tree => r.tree_blobs += 1,
            }
        }
        None => r.missing_blobs += 1,
    };
    for id in &data {
        tally(BlobKind::Data, id);
    }
    for id in memo.keys() {
        tally(BlobKind::Tree, id);
    }
    r.compression_ratio = ratio(r.plaintext_bytes, r.stored_bytes);
    r.dedup_ratio = ratio(r.logical_bytes, r.data_plaintext_bytes);
    Ok(r)
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// The repository as its index describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RepositoryTotals {
    pub packs: u64,
    /// Size of the pack files.
    pub pack_bytes: u64,
    pub data_blobs: u64,
    pub tree_blobs: u64,
    /// Plaintext size of every blob listed.
    pub plaintext_bytes: u64,
}

pub fn repository_totals(index: &Index) -> RepositoryTotals {
    let mut t = RepositoryTotals {
        packs: index.pack_count() as u64,
        pack_bytes: index.packs().map(|(_, size)| size).sum(),
        ..RepositoryTotals::default()
    };
    for (_, e) in index.blobs() {
        t.plaintext_bytes += u64::from(e.raw_length);
        match e.kind {
            BlobKind::Data => t.data_blobs += 1,
            BlobKind::Tree => t.tree_blobs += 1,
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::archiver::saver::Saver;
    use crate::tree::Tree;
    use crate::tree::tests::node;

    /// A forged tree may give any file any size: totals saturate instead of
    /// overflowing (a panic in a debug build, a wrong small number otherwise).
    #[test]
    fn forged_sizes_saturate_the_totals() {
        let (_dir, repo) = crate::lock::tests::repo();
        let mut saver = Saver::new(Arc::clone(&repo), Arc::new(Index::new()));
        let file = |name: &[u8], blob: u8| {
            let mut n = node(name, NodeKind::File);
            n.size = u64::MAX;
            n.content = vec![BlobId([blob; 32])];
            n
        };
        let root = saver
            .save_tree(&mut Tree {
                nodes: vec![file(b"a", 1), file(b"b", 2)],
            })
            .unwrap();
        saver.finish().unwrap();
        let index = repo.load_index(&mut |_, _| {}).unwrap();
        let s = restore_size(&repo, &index, &[root]).unwrap();
        assert_eq!((s.files, s.bytes), (2, u64::MAX));
        let c = files_by_contents(&repo, &index, &[root]).unwrap();
        assert_eq!((c.contents, c.bytes), (2, u64::MAX));
        let r = raw_data(&repo, &index, &[root]).unwrap();
        assert_eq!(r.logical_bytes, u64::MAX);
    }
}
