//! `prune`: delete what no snapshot needs, repack what is mostly unneeded.
//!
//! Order of operations (format-spec/README.md §16), each step durable before the
//! next starts, so that a prune killed at any moment loses nothing:
//! 0. once every needed blob is known to be indexed (the plan), removal of
//!    abandoned temporary files (§2) and of packs no index names
//!    (nothing needs them);
//! 1. new packs (holding the used blobs of packs being repacked);
//! 2. new index files naming every kept pack and every new pack;
//! 3. deletion of the old index files;
//! 4. deletion of the packs no longer named by any index.
//!
//! A crash after 1 leaves unindexed packs (the next prune deletes them); after 2,
//! blobs indexed twice (harmless); after 3, unindexed old packs (deleted next time).
//! Prune runs under an exclusive lock and refuses to delete anything when a blob a
//! snapshot needs is missing, or a snapshot can't be read.
//!
//! Repacking needs room before it frees any. When the storage says it has clearly
//! too little, or a new pack's write fails for lack of room (its packs written so
//! far are removed again), step 1 is skipped: steps 2–4 delete the wholly unused
//! packs, which needs no room but the new index's, and the summary says how much
//! the repack needs.

mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use self::plan::{Plan, make_plan, plan_repacked_used};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::PackId;
use crate::index::IndexPack;
use crate::pack::{self, BlobKind, PackBuilder, PackEntry};
use crate::repository::Repository;

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
    /// Temporary files of interrupted writes removed (§2), and their bytes.
    pub temp_files_removed: u64,
    pub bytes_temp_removed: u64,
    /// Temporary files kept, being too young to be surely abandoned.
    pub temp_files_kept: u64,
    /// Packs that were to be repacked but were left as they are for lack of room.
    pub packs_not_repacked: u64,
    pub bytes_not_repacked: u64,
    /// Free space the skipped repack needs (about), when it was skipped.
    pub bytes_needed_for_repack: u64,
    pub bytes_after: u64,
    /// Nothing to delete or repack: no file was changed.
    pub nothing_to_do: bool,
    pub dry_run: bool,
}

pub fn prune(
    repo: &Arc<Repository>,
    opts: &PruneOptions,
    interrupt: &AtomicBool,
    report: &(dyn Fn(&str) + Sync),
) -> Result<PruneSummary> {
    let lock = crate::lock::acquire(repo, true)?;
    prune_locked(repo, &lock, opts, interrupt, report)
}

/// [`prune`] under an exclusive lock the caller already holds (a plan's
/// retention forgets and prunes under one lock, so nothing can come between).
pub fn prune_locked(
    repo: &Arc<Repository>,
    lock: &crate::lock::LockGuard,
    opts: &PruneOptions,
    interrupt: &AtomicBool,
    report: &(dyn Fn(&str) + Sync),
) -> Result<PruneSummary> {
    let mut s = PruneSummary {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let plan = make_plan(repo, opts, &mut s, report)?;
    // Leftover temporary files first: they are never data, and on a full disk
    // they may be the room the rest needs.
    remove_leftovers(repo, lock, opts.dry_run, &mut s, report)?;
    if plan.is_noop() {
        s.nothing_to_do = true;
        return Ok(s);
    }
    if opts.dry_run {
        if let Some(free) = short_of_room(repo, &plan)? {
            report(&format!(
                "repacking needs about {} free, and the storage has {}: prune would delete \
                 what it can and leave {} to repack as {} are",
                size_text(plan.repack_needs(repo.config().pack_size)),
                size_text(free),
                crate::text::count(plan.repack.len(), "pack", "packs"),
                if plan.repack.len() == 1 { "it" } else { "they" }
            ));
        }
        return Ok(s);
    }

    // Packs no index names hold nothing a snapshot needs (`make_plan` checked that
    // every needed blob is in an indexed pack), and deleting them needs no room.
    lock.still_valid()?;
    for (id, _) in &plan.unindexed {
        repo.backend().remove(FileType::Pack, &id.to_hex())?;
    }

    // 1. New packs with the used blobs of the packs being repacked — unless the
    // storage is clearly too full for them, or fills up on the way: then the
    // packs to repack stay as they are, and the rest of prune, which frees room
    // without needing any but the index's, goes ahead.
    let mut repacked: Vec<PackId> = plan.repack.clone();
    let mut new_packs: Vec<IndexPack> = Vec::new();
    if !repacked.is_empty() {
        let short = short_of_room(repo, &plan)?;
        let outcome = match short {
            Some(_) => None,
            None => Some(write_repacked(
                repo,
                &plan,
                interrupt,
                &mut new_packs,
                &mut s,
            )),
        };
        match outcome {
            Some(Ok(())) => {}
            Some(Err(e)) if e.is_out_of_space() => {
                report(&format!("the storage is full ({e}); not repacking"));
                // Written by this run and named by no index: nothing needs them.
                for p in new_packs.drain(..) {
                    repo.backend().remove(FileType::Pack, &p.id.to_hex())?;
                }
                skip_repack(&plan, &mut s, &mut repacked, repo.config().pack_size);
            }
            Some(Err(e)) => return Err(e),
            None => skip_repack(&plan, &mut s, &mut repacked, repo.config().pack_size),
        }
    }
    if interrupt.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }

    if plan.delete.is_empty() && repacked.is_empty() && plan.vanished == 0 {
        // Only a repack was to be done, and it wasn't: the index stays as it is.
        report_skipped(&s, report);
        return Ok(s);
    }

    // 2. New index files: kept packs and new packs.
    let gone: HashSet<&PackId> = plan.delete.iter().chain(&repacked).collect();
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
        repo.save_index(f)
            .map_err(|e| index_full(e, plan.index_bytes))?;
    }
    // 3. Old index files. Deleting is a commit point: check the lock again.
    lock.still_valid()?;
    crate::record::note_removal(repo, lock, "prune", &[], &plan.index_files)?;
    for id in &plan.index_files {
        repo.backend().remove(FileType::Index, &id.to_hex())?;
        s.index_files_replaced += 1;
    }
    // 4. Packs no index names any more.
    lock.still_valid()?;
    for id in plan.delete.iter().chain(&repacked) {
        repo.backend().remove(FileType::Pack, &id.to_hex())?;
    }
    report(&format!(
        "deleted {}, repacked {}, wrote {} and {}",
        crate::text::count(s.packs_deleted + s.packs_unindexed_deleted, "pack", "packs"),
        s.packs_repacked,
        crate::text::count(s.packs_written, "new pack", "new packs"),
        crate::text::count(written, "index file", "index files")
    ));
    report_skipped(&s, report);
    Ok(s)
}

fn report_skipped(s: &PruneSummary, report: &(dyn Fn(&str) + Sync)) {
    if s.packs_not_repacked > 0 {
        report(&format!(
            "{} ({}) still {} unused data: repacking {} needs about {} of free \
             space, which the storage lacks; free some and run `cairn prune` again",
            crate::text::count(s.packs_not_repacked, "pack", "packs"),
            size_text(s.bytes_not_repacked),
            if s.packs_not_repacked == 1 {
                "holds"
            } else {
                "hold"
            },
            if s.packs_not_repacked == 1 {
                "it"
            } else {
                "them"
            },
            size_text(s.bytes_needed_for_repack)
        ));
    }
}

/// The free space, when the storage says it has clearly less than repacking needs.
fn short_of_room(repo: &Repository, plan: &Plan) -> Result<Option<u64>> {
    if plan.repack.is_empty() {
        return Ok(None);
    }
    let need = plan.repack_needs(repo.config().pack_size);
    Ok(repo.backend().free_space()?.filter(|free| *free < need))
}

/// Leaves the packs to repack as they are, and counts them as such.
fn skip_repack(plan: &Plan, s: &mut PruneSummary, repacked: &mut Vec<PackId>, pack_size: u32) {
    s.packs_not_repacked = s.packs_repacked;
    s.bytes_not_repacked = s.bytes_repacked;
    s.bytes_needed_for_repack = plan.repack_needs(pack_size);
    s.bytes_after += s.bytes_repacked - plan_repacked_used(plan);
    s.packs_repacked = 0;
    s.bytes_repacked = 0;
    s.blobs_moved = 0;
    s.packs_written = 0;
    s.bytes_written = 0;
    repacked.clear();
}

/// A failed write of the new index on a full storage: nothing was deleted yet.
fn index_full(e: Error, index_bytes: u64) -> Error {
    if !e.is_out_of_space() {
        return e;
    }
    Error::invalid(format!(
        "{e}; the storage is full: prune must write the new index (about {}) before it may \
         delete the packs it names, and deleted none of them. Free that much space (outside \
         the repository) and run `cairn prune` again",
        size_text(index_bytes)
    ))
}

fn remove_leftovers(
    repo: &Repository,
    lock: &crate::lock::LockGuard,
    dry_run: bool,
    s: &mut PruneSummary,
    report: &(dyn Fn(&str) + Sync),
) -> Result<()> {
    let c = crate::leftovers::remove_abandoned(repo, lock, dry_run)?;
    s.temp_files_removed = c.removed;
    s.bytes_temp_removed = c.bytes_removed;
    s.temp_files_kept = c.kept;
    if c.kept > 0 {
        report(&format!(
            "{} temporary files ({}) are younger than {} minutes by the storage's clock, or \
             of unknown age, and were kept: they may belong to a write in progress",
            c.kept,
            size_text(c.bytes_kept),
            crate::lock::STALE_AFTER.as_secs() / 60
        ));
    }
    Ok(())
}

/// Writes the used blobs of the packs to repack into new packs, adding each new
/// pack to `new_packs` once written.
fn write_repacked(
    repo: &Repository,
    plan: &Plan,
    interrupt: &AtomicBool,
    new_packs: &mut Vec<IndexPack>,
    s: &mut PruneSummary,
) -> Result<()> {
    let mut builders: HashMap<BlobKind, PackBuilder> = HashMap::new();
    let repack: Vec<(&PackId, u64, &Vec<PackEntry>)> = plan
        .repack
        .iter()
        .filter_map(|id| {
            plan.packs
                .get(id)
                .map(|(size, entries)| (id, *size, entries))
        })
        .collect();
    // Packs are fetched ahead (several at once from object storage) while the
    // previous one's blobs are moved; `halt` stops the fetching on an error.
    let halt = AtomicBool::new(false);
    let mut failed: Option<Error> = None;
    crate::readahead::read_ahead(
        &repack,
        0,
        repo.backend().concurrency(),
        &halt,
        |(id, size, _)| repo.backend().read(FileType::Pack, &id.to_hex(), *size),
        |(id, _, entries), bytes| {
            if interrupt.load(Ordering::Relaxed) {
                failed.get_or_insert(Error::Interrupted);
            }
            if failed.is_none() {
                if let Err(e) = bytes.and_then(|bytes| {
                    repack_one(repo, plan, id, entries, &bytes, &mut builders, new_packs, s)
                }) {
                    failed = Some(e);
                }
            }
            if failed.is_some() {
                halt.store(true, Ordering::Relaxed);
            }
        },
    );
    if let Some(e) = failed {
        return Err(e);
    }
    if interrupt.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    for (_, b) in builders.drain() {
        if !b.is_empty() {
            new_packs.push(write_pack(repo, b, s)?);
        }
    }
    Ok(())
}

/// Moves the blobs of one pack to repack, `bytes`, into `builders`, writing
/// each builder that fills.
#[allow(clippy::too_many_arguments)]
fn repack_one(
    repo: &Repository,
    plan: &Plan,
    id: &PackId,
    entries: &[PackEntry],
    bytes: &[u8],
    builders: &mut HashMap<BlobKind, PackBuilder>,
    new_packs: &mut Vec<IndexPack>,
    s: &mut PruneSummary,
) -> Result<()> {
    {
        let session = repo.key().session(&pack::parse_session(bytes, id)?);
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
                    new_packs.push(write_pack(repo, full, s)?);
                }
            }
        }
    }
    Ok(())
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

/// "1.5 MiB", for messages.
fn size_text(n: u64) -> String {
    let mut v = n as f64;
    let mut unit = "B";
    for u in ["KiB", "MiB", "GiB", "TiB"] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if unit == "B" {
        format!("{n} B")
    } else {
        format!("{v:.1} {unit}")
    }
}
