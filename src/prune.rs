//! `prune`: delete what no snapshot needs, repack what is mostly unneeded.
//!
//! Order of operations (format-spec/README.md, "Write order"), each step durable
//! before the next starts, so that a prune killed at any moment loses nothing:
//! 1. new packs (holding the used blobs of packs being repacked);
//! 2. new index files naming every kept pack and every new pack;
//! 3. deletion of the old index files;
//! 4. deletion of the packs no longer named by any index.
//!
//! A crash after 1 leaves unindexed packs (the next prune deletes them); after 2,
//! blobs indexed twice (harmless); after 3, unindexed old packs (deleted next time).
//! Prune runs under an exclusive lock and refuses to delete anything when a blob a
//! snapshot needs is missing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::index::{Index, IndexPack};
use crate::pack::{self, BlobKind, PackBuilder, PackEntry};
use crate::repository::Repository;
use crate::text::count;
use crate::tree::NodeKind;

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Repack a pack when more than this percentage of it is unused.
    pub max_unused_percent: f64,
    /// Repack at most this many bytes of packs in one run.
    pub max_repack_bytes: Option<u64>,
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            max_unused_percent: 10.0,
            max_repack_bytes: None,
            dry_run: false,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneSummary {
    pub snapshots: u64,
    pub packs_before: u64,
    pub bytes_before: u64,
    pub used_blobs: u64,
    pub unused_blobs: u64,
    /// Packs holding nothing any snapshot needs.
    pub packs_deleted: u64,
    pub bytes_deleted: u64,
    /// Packs in no index (left by interrupted backups or prunes).
    pub packs_unindexed_deleted: u64,
    pub bytes_unindexed_deleted: u64,
    pub packs_repacked: u64,
    pub bytes_repacked: u64,
    pub blobs_moved: u64,
    pub packs_written: u64,
    pub bytes_written: u64,
    pub index_files_replaced: u64,
    pub bytes_after: u64,
    pub dry_run: bool,
}

struct Plan {
    packs: BTreeMap<PackId, (u64, Vec<PackEntry>)>,
    /// Where each used blob stays, by (kind, id).
    home: HashMap<(BlobKind, BlobId), PackId>,
    delete: Vec<PackId>,
    repack: Vec<PackId>,
    unindexed: Vec<(PackId, u64)>,
    index_files: Vec<IndexId>,
}

pub fn prune(
    repo: &Arc<Repository>,
    opts: &PruneOptions,
    interrupt: &AtomicBool,
    report: &(dyn Fn(&str) + Sync),
) -> Result<PruneSummary> {
    let lock = crate::lock::acquire(repo, true)?;
    let mut s = PruneSummary {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let plan = make_plan(repo, opts, &mut s, report)?;
    if opts.dry_run {
        return Ok(s);
    }

    // 1. New packs with the used blobs of the packs being repacked.
    let mut new_packs: Vec<IndexPack> = Vec::new();
    let mut builders: HashMap<BlobKind, PackBuilder> = HashMap::new();
    for id in &plan.repack {
        if interrupt.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let Some((size, entries)) = plan.packs.get(id) else {
            continue;
        };
        let bytes = repo.backend().read(FileType::Pack, &id.to_hex(), *size)?;
        let session = repo.key().session(&pack::parse_session(&bytes, id)?);
        for e in entries
            .iter()
            .filter(|e| plan.home.get(&(e.kind, e.id)) == Some(id))
        {
            let sealed = bytes
                .get(e.offset as usize..e.offset as usize + e.length as usize)
                .ok_or_else(|| {
                    Error::corrupt(
                        format!("pack {id}"),
                        format!("blob {} lies past its end", e.id),
                    )
                })?;
            let payload = pack::open_blob_payload(
                repo.key(),
                &session,
                repo.repo_id(),
                e,
                sealed,
                id,
            )
            .map_err(|err| {
                Error::invalid(format!(
                    "{err}; prune stopped before deleting anything — run `cairn check --read-data`"
                ))
            })?;
            let b = match builders.entry(e.kind) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(PackBuilder::new(repo.key())?)
                }
            };
            b.add(e.kind, e.id, payload, e.raw_length);
            s.blobs_moved += 1;
            if b.is_full(repo.config().pack_size) {
                if let Some(full) = builders.remove(&e.kind) {
                    new_packs.push(write_pack(repo, full, &mut s)?);
                }
            }
        }
    }
    for (_, b) in builders.drain() {
        if !b.is_empty() {
            new_packs.push(write_pack(repo, b, &mut s)?);
        }
    }
    if interrupt.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }

    // 2. New index files: kept packs and new packs.
    let gone: HashSet<&PackId> = plan.delete.iter().chain(&plan.repack).collect();
    let mut all: Vec<IndexPack> = plan
        .packs
        .iter()
        .filter(|(id, _)| !gone.contains(id))
        .map(|(id, (size, entries))| IndexPack {
            id: *id,
            size: *size,
            blobs: entries.clone(),
        })
        .collect();
    all.extend(new_packs);
    lock.still_valid()?;
    let files = crate::index::split_into_files(all);
    let written = files.len();
    for f in &files {
        repo.save_index(f)?;
    }
    // 3. Old index files. Deleting is a commit point: check the lock again.
    lock.still_valid()?;
    for id in &plan.index_files {
        repo.backend().remove(FileType::Index, &id.to_hex())?;
        s.index_files_replaced += 1;
    }
    // 4. Packs no index names any more.
    lock.still_valid()?;
    for id in plan
        .delete
        .iter()
        .chain(&plan.repack)
        .chain(plan.unindexed.iter().map(|(id, _)| id))
    {
        repo.backend().remove(FileType::Pack, &id.to_hex())?;
    }
    report(&format!(
        "deleted {}, repacked {}, wrote {} and {}",
        count(s.packs_deleted + s.packs_unindexed_deleted, "pack", "packs"),
        s.packs_repacked,
        count(s.packs_written, "new pack", "new packs"),
        count(written, "index file", "index files")
    ));
    Ok(s)
}

fn write_pack(repo: &Repository, b: PackBuilder, s: &mut PruneSummary) -> Result<IndexPack> {
    let p = b.finish(repo.repo_id())?;
    repo.write_pack(&p)?;
    s.packs_written += 1;
    s.bytes_written += p.len();
    Ok(IndexPack {
        id: p.id,
        size: p.len(),
        blobs: p.entries,
    })
}

fn make_plan(
    repo: &Repository,
    opts: &PruneOptions,
    s: &mut PruneSummary,
    report: &(dyn Fn(&str) + Sync),
) -> Result<Plan> {
    let mut packs: BTreeMap<PackId, (u64, Vec<PackEntry>)> = BTreeMap::new();
    let mut index = crate::index::IndexBuilder::new();
    let index_files = repo.list_ids(FileType::Index, IndexId::from_name)?;
    for id in &index_files {
        let f = repo.load_index_file(id).map_err(|e| {
            Error::invalid(format!(
                "{e}; prune needs a readable index — run `cairn repair index` first"
            ))
        })?;
        index.add_file(&f);
        for p in f.packs {
            packs.entry(p.id).or_insert((p.size, p.blobs));
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
        let used_bytes: u64 = es
            .iter()
            .filter(|e| home.get(&(e.kind, e.id)) == Some(id))
            .map(|e| u64::from(e.length))
            .sum();
        if used_bytes == 0 {
            delete.push(*id);
            s.packs_deleted += 1;
            s.bytes_deleted += size;
            continue;
        }
        let unused = 100.0 * (1.0 - used_bytes as f64 / (*size).max(1) as f64);
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
    let home_ref = &home;
    let repacked_used: u64 = repack
        .iter()
        .filter_map(|id| packs.get(id).map(|(_, es)| (id, es)))
        .flat_map(|(id, es)| {
            es.iter()
                .filter(move |e| home_ref.get(&(e.kind, e.id)) == Some(id))
        })
        .map(|e| u64::from(e.length))
        .sum();
    s.bytes_after = s.bytes_before - s.bytes_deleted - s.bytes_unindexed_deleted - s.bytes_repacked
        + repacked_used;
    Ok(Plan {
        packs,
        home,
        delete,
        repack,
        unindexed,
        index_files,
    })
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
    for sid in repo.list_ids(FileType::Snapshot, SnapshotId::from_name)? {
        s.snapshots += 1;
        let snap = repo.load_snapshot(&sid)?;
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
