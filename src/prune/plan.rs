//! Prune's plan: which blobs the snapshots need, where each one stays, and which
//! packs go or are repacked.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{PruneOptions, PruneSummary};
use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::index::Index;
use crate::pack::{BlobKind, PackEntry};
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::tree::NodeKind;

pub(super) struct Plan {
    pub(super) packs: BTreeMap<PackId, (u64, Vec<PackEntry>)>,
    /// Where each used blob stays, by (kind, id).
    pub(super) home: HashMap<(BlobKind, BlobId), PackId>,
    pub(super) delete: Vec<PackId>,
    pub(super) repack: Vec<PackId>,
    pub(super) unindexed: Vec<(PackId, u64)>,
    /// Packs the index names that are missing from storage.
    pub(super) vanished: usize,
    pub(super) index_files: Vec<IndexId>,
    /// Bytes of the index files, which are all written anew.
    pub(super) index_bytes: u64,
}

impl Plan {
    pub(super) fn is_noop(&self) -> bool {
        self.delete.is_empty()
            && self.repack.is_empty()
            && self.unindexed.is_empty()
            && self.vanished == 0
    }

    /// About how much room repacking needs: the blobs moved, a padded header per
    /// new pack, and the new index files (written before the old ones go).
    pub(super) fn repack_needs(&self, pack_size: u32) -> u64 {
        let moved: u64 = self
            .repack
            .iter()
            .filter_map(|id| self.packs.get(id).map(|(_, es)| (id, es)))
            .flat_map(|(id, es)| {
                es.iter()
                    .filter(move |e| self.home.get(&(e.kind, e.id)) == Some(id))
            })
            .map(|e| u64::from(e.length))
            .sum();
        let new_packs = moved / u64::from(pack_size.max(1)) + 2;
        moved + new_packs * 64 * 1024 + self.index_bytes
    }
}

/// Bytes of the used blobs in the packs to repack: what they become.
pub(super) fn plan_repacked_used(plan: &Plan) -> u64 {
    plan.repack
        .iter()
        .filter_map(|id| plan.packs.get(id).map(|(_, es)| (id, es)))
        .flat_map(|(id, es)| {
            es.iter()
                .filter(move |e| plan.home.get(&(e.kind, e.id)) == Some(id))
        })
        .map(|e| u64::from(e.length))
        .sum()
}

pub(super) fn make_plan(
    repo: &Repository,
    opts: &PruneOptions,
    s: &mut PruneSummary,
    report: &(dyn Fn(&str) + Sync),
) -> Result<Plan> {
    let mut packs: BTreeMap<PackId, (u64, Vec<PackEntry>)> = BTreeMap::new();
    let mut index = crate::index::IndexBuilder::new();
    let index_files = repo.list_ids(FileType::Index, IndexId::from_name)?;
    let index_bytes: u64 = repo
        .backend()
        .list(FileType::Index)?
        .iter()
        .map(|e| e.size)
        .sum();
    for id in &index_files {
        let f = repo.load_index_file(id).map_err(|e| {
            Error::invalid(format!(
                "{e}; prune needs a readable index — run `cairn repair index` first"
            ))
        })?;
        index.add_file(&f);
        for p in f.packs {
            // The plan keeps one description per pack: with two that differ, the
            // blobs only the other lists would look homeless and be dropped.
            match packs.get(&p.id) {
                None => {
                    packs.insert(p.id, (p.size, p.blobs));
                }
                Some((size, blobs)) if *size == p.size && *blobs == p.blobs => {}
                Some(_) => {
                    return Err(Error::invalid(format!(
                        "index files describe pack {} differently (index {id} is one of them);                          prune deleted nothing — run `cairn repair index` first",
                        p.id
                    )));
                }
            }
        }
    }
    let stored: HashMap<PackId, u64> = repo
        .backend()
        .list(FileType::Pack)?
        .into_iter()
        .filter_map(|e| PackId::from_name(&e.name).ok().map(|id| (id, e.size)))
        .collect();
    s.packs_before = stored.len() as u64;
    s.bytes_before = stored.values().sum();

    let index = index.build();
    let used = used_blobs(repo, &index, &stored, s)?;
    s.used_blobs = used.len() as u64;

    // Packs the index names that are gone: drop them from the new index (nothing
    // any snapshot needs is in them, or `used_blobs` would have refused).
    let vanished: Vec<PackId> = packs
        .keys()
        .filter(|id| !stored.contains_key(id))
        .copied()
        .collect();
    let vanished_count = vanished.len();
    for id in vanished {
        report(&format!(
            "pack {id} is in the index but missing from storage; dropping it from the index"
        ));
        packs.remove(&id);
    }

    // One home per used blob: the copy in the pack with the most used blobs.
    let used_count: HashMap<PackId, usize> = packs
        .iter()
        .map(|(id, (_, es))| {
            let n = es.iter().filter(|e| used.contains(&(e.kind, e.id))).count();
            (*id, n)
        })
        .collect();
    let mut home: HashMap<(BlobKind, BlobId), PackId> = HashMap::new();
    for (id, (_, es)) in &packs {
        for e in es.iter().filter(|e| used.contains(&(e.kind, e.id))) {
            let better = match home.get(&(e.kind, e.id)) {
                None => true,
                Some(h) => used_count.get(id) > used_count.get(h),
            };
            if better {
                home.insert((e.kind, e.id), *id);
            }
        }
    }
    let all_blobs: HashSet<(BlobKind, BlobId)> = packs
        .values()
        .flat_map(|(_, es)| es.iter().map(|e| (e.kind, e.id)))
        .collect();
    s.unused_blobs = all_blobs.iter().filter(|b| !used.contains(*b)).count() as u64;

    let mut delete = Vec::new();
    let mut candidates: Vec<(f64, PackId, u64)> = Vec::new();
    for (id, (size, es)) in &packs {
        let (kept, dropped): (Vec<&PackEntry>, Vec<&PackEntry>) = es
            .iter()
            .partition(|e| home.get(&(e.kind, e.id)) == Some(id));
        if kept.is_empty() {
            delete.push(*id);
            s.packs_deleted += 1;
            s.bytes_deleted += size;
            continue;
        }
        // Unused means blobs a repack would drop. A pack's prefix and padded
        // header are not: counted as unused, they kept a small pack above any
        // threshold, and every prune repacked it into the same again (issue #11).
        if dropped.is_empty() {
            continue;
        }
        let unused_bytes: u64 = dropped.iter().map(|e| u64::from(e.length)).sum();
        let unused = 100.0 * unused_bytes as f64 / (*size).max(1) as f64;
        if unused > opts.max_unused_percent {
            candidates.push((unused, *id, *size));
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut repack = Vec::new();
    let mut budget = opts.max_repack_bytes.unwrap_or(u64::MAX);
    for (_, id, size) in candidates {
        if size > budget {
            continue;
        }
        budget -= size;
        repack.push(id);
        s.packs_repacked += 1;
        s.bytes_repacked += size;
    }
    let unindexed: Vec<(PackId, u64)> = stored
        .iter()
        .filter(|(id, _)| !packs.contains_key(id))
        .map(|(id, size)| (*id, *size))
        .collect();
    s.packs_unindexed_deleted = unindexed.len() as u64;
    s.bytes_unindexed_deleted = unindexed.iter().map(|(_, n)| n).sum();
    let plan = Plan {
        packs,
        home,
        delete,
        repack,
        unindexed,
        vanished: vanished_count,
        index_files,
        index_bytes,
    };
    s.bytes_after = s.bytes_before - s.bytes_deleted - s.bytes_unindexed_deleted - s.bytes_repacked
        + plan_repacked_used(&plan);
    Ok(plan)
}

/// Every snapshot, or a refusal naming those that can't be read. A damaged
/// snapshot's trees are unknown, so any pack may hold what it needs: prune deletes
/// nothing until it is removed (format-spec §16). Storage errors are errors as
/// they are.
fn readable_snapshots(repo: &Repository) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let mut ok = Vec::new();
    let mut damaged: Vec<(SnapshotId, Error)> = Vec::new();
    let mut newer: Vec<(SnapshotId, Error)> = Vec::new();
    for sid in repo.list_ids(FileType::Snapshot, SnapshotId::from_name)? {
        match repo.load_snapshot(&sid) {
            Ok(snap) => ok.push((sid, snap)),
            Err(e @ Error::UnsupportedVersion { .. }) => newer.push((sid, e)),
            Err(e @ Error::Corrupt { .. }) => damaged.push((sid, e)),
            Err(e) => return Err(e),
        }
    }
    if let Some((_, e)) = newer.first() {
        return Err(Error::invalid(format!(
            "{e}; prune can't tell which data a snapshot it can't read needs, and deleted \
             nothing: upgrade cairn to prune this repository"
        )));
    }
    if !damaged.is_empty() {
        let list: Vec<String> = damaged.iter().map(|(_, e)| e.to_string()).collect();
        let ids: Vec<String> = damaged.iter().map(|(id, _)| id.to_hex()).collect();
        return Err(Error::UnreadableSnapshots {
            count: damaged.len(),
            list: list.join("; "),
            forget: format!("cairn forget {}", ids.join(" ")),
        });
    }
    Ok(ok)
}

/// Every blob some snapshot needs, by (kind, id). Refuses (an error, nothing
/// deleted) if any of them is missing from the index or from storage, or a tree
/// can't be read.
fn used_blobs(
    repo: &Repository,
    index: &Index,
    stored: &HashMap<PackId, u64>,
    s: &mut PruneSummary,
) -> Result<HashSet<(BlobKind, BlobId)>> {
    let mut used: HashSet<(BlobKind, BlobId)> = HashSet::new();
    let mut missing: Vec<(BlobId, String)> = Vec::new();
    let present = |kind, id: &BlobId| {
        index
            .get(kind, id)
            .is_some_and(|(p, _)| stored.contains_key(&p))
    };
    let snapshots = readable_snapshots(repo)?;
    for (sid, snap) in snapshots {
        s.snapshots += 1;
        let mut stack = vec![snap.tree];
        while let Some(tree_id) = stack.pop() {
            if !used.insert((BlobKind::Tree, tree_id)) {
                continue;
            }
            if !present(BlobKind::Tree, &tree_id) {
                missing.push((tree_id, format!("a tree of snapshot {}", sid.short())));
                continue;
            }
            let tree = repo.load_tree(index, &tree_id)?;
            for node in tree.nodes {
                if node.kind == NodeKind::Dir {
                    stack.extend(node.subtree);
                }
                for b in &node.content {
                    let b = *b;
                    if used.insert((BlobKind::Data, b)) && !present(BlobKind::Data, &b) {
                        missing.push((
                            b,
                            format!("data of {} in snapshot {}", node.name_lossy(), sid.short()),
                        ));
                    }
                }
            }
        }
    }
    if let Some((id, what)) = missing.first() {
        return Err(Error::invalid(format!(
            "{} that snapshots need {} missing (first: {id}, {what}); prune deleted nothing. \
             Run `cairn check`, then `cairn repair index` (if packs are unindexed) or `cairn repair snapshots`",
            crate::text::count(missing.len(), "blob", "blobs"),
            if missing.len() == 1 { "is" } else { "are" }
        )));
    }
    Ok(used)
}
