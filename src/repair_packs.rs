//! `repair packs`: salvage what is intact in damaged packs (format-spec §16).
//!
//! Without pack ids every pack under `data/` is read and verified as
//! `check --read-data` does; with ids only those packs are. A pack is damaged when
//! its bytes don't hash to its name, its header can't be read, or a blob its header
//! lists doesn't open. Every blob of a damaged pack is sealed on its own, so each
//! one its header or the index locates is opened (authenticated, decoded,
//! re-hashed to its keyed id) and, if intact, copied as it is into a new pack. The
//! rest are lost: a new index lists the salvaged blobs in their new packs and no
//! longer lists the lost ones, so the next backup of a source that still has that
//! data stores it again, under the same ids, which heals every snapshot naming it.
//!
//! Order (each step durable before the next): new packs, read back and checked
//! against their names; new index files replacing every index file that names a
//! damaged pack, read back; the old index files deleted; the damaged packs deleted.
//! A kill at any point leaves a consistent repository, and running the repair
//! again finishes the job (what was already salvaged is then found in the index).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId};
use crate::index::{Index, IndexBuilder, IndexPack};
use crate::lock::LockGuard;
use crate::pack::{self, BlobKind, PackBuilder, PackEntry};
use crate::remedy::{NextStep, Wanting};
use crate::repository::{Repository, check_name};
use crate::tree::{MAX_TREE_DEPTH, NodeKind};

/// One damaged pack and what became of its blobs.
#[derive(Clone, Debug, Serialize)]
pub struct PackRepair {
    pub pack: String,
    /// What is wrong with it.
    pub damage: String,
    /// Intact blobs copied into new packs.
    pub blobs_salvaged: u64,
    /// Blobs of which the index has another copy (in an intact pack, or salvaged
    /// from another damaged one): nothing to copy, nothing lost.
    pub blobs_elsewhere: u64,
    pub blobs_lost: u64,
    /// The lost blobs, as "data <id>" or "tree <id>".
    pub lost: Vec<String>,
    /// Whether the pack was deleted (false in a dry run, or when it couldn't be read).
    pub removed: bool,
}

/// A snapshot that names data the repaired index no longer has.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotLoss {
    pub id: String,
    pub time: String,
    pub hostname: String,
    pub paths: Vec<String>,
    /// Files with lost data and directories whose tree is lost.
    pub entries: u64,
    /// The first of them.
    pub first: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairPacksSummary {
    pub dry_run: bool,
    pub packs_read: u64,
    pub packs_damaged: u64,
    /// Packs that could not be read at all (an I/O error, not damage): left alone.
    pub packs_unreadable: u64,
    /// Packs the index names that are missing from `data/`: `repair index`'s
    /// work, not this command's.
    pub packs_missing: u64,
    pub blobs_salvaged: u64,
    pub blobs_lost: u64,
    pub packs_written: u64,
    pub index_files_written: u64,
    pub index_files_removed: u64,
    pub packs_removed: u64,
    pub packs: Vec<PackRepair>,
    pub snapshots_missing_data: Vec<SnapshotLoss>,
    /// What to run next.
    pub next_steps: Vec<NextStep>,
}

/// A pack as the index describes it: its size and blobs (the union over every
/// index file naming it), and those files.
struct Known {
    size: u64,
    entries: Vec<PackEntry>,
    files: Vec<IndexId>,
}

pub fn repair_packs(
    repo: &Arc<Repository>,
    packs: &[String],
    dry_run: bool,
    interrupt: &AtomicBool,
    report: &dyn Fn(&str),
) -> Result<RepairPacksSummary> {
    let lock = crate::lock::acquire(repo, true)?;
    repair_packs_locked(repo, &lock, packs, dry_run, interrupt, report)
}

fn repair_packs_locked(
    repo: &Arc<Repository>,
    lock: &LockGuard,
    packs: &[String],
    dry_run: bool,
    interrupt: &AtomicBool,
    report: &dyn Fn(&str),
) -> Result<RepairPacksSummary> {
    let mut s = RepairPacksSummary {
        dry_run,
        ..Default::default()
    };
    let known = load_known(repo)?;
    let stored: HashMap<PackId, u64> = repo
        .backend()
        .list(FileType::Pack)?
        .into_iter()
        .filter(|e| crate::id::is_file_name(&e.name))
        .filter_map(|e| PackId::from_name(&e.name).ok().map(|id| (id, e.size)))
        .collect();
    let named = !packs.is_empty();
    let targets = if named {
        resolve(packs, &stored, &known)?
    } else {
        let mut all: Vec<PackId> = stored.keys().copied().collect();
        all.sort();
        all
    };

    // 1. Which packs are damaged.
    let damaged = find_damaged(repo, &targets, &known, named, interrupt, report, &mut s)?;
    s.packs_damaged = damaged.len() as u64;
    let missing = known.keys().filter(|p| !stored.contains_key(p)).count();
    s.packs_missing = missing as u64;
    if missing > 0 {
        report(&format!(
            "{} the index names {} missing from data/; `cairn repair index` drops {} from the index",
            crate::text::count(missing, "pack", "packs"),
            if missing == 1 { "is" } else { "are" },
            if missing == 1 { "it" } else { "them" }
        ));
    }
    if damaged.is_empty() {
        return Ok(s);
    }

    // 2. Salvage: every blob the header or the index locates, unless the index
    // has another copy of it.
    let damaged_ids: HashSet<PackId> = damaged.iter().map(|(id, _)| *id).collect();
    let rest = index_of(&known, &stored, |id| !damaged_ids.contains(id));
    let mut salvage = Salvage {
        repo,
        dry_run,
        rest: &rest,
        copied: HashSet::new(),
        in_place: Vec::new(),
        builders: HashMap::new(),
        new_packs: Vec::new(),
    };
    let mut outcomes: Vec<(PackRepair, Vec<(BlobKind, BlobId)>)> = Vec::new();
    for (id, damage) in damaged {
        if interrupt.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let bytes = match repo
            .backend()
            .read(FileType::Pack, &id.to_hex(), max_pack_len())
        {
            Ok(b) => b,
            Err(e) => {
                s.packs_unreadable += 1;
                report(&format!("pack {id} can't be read ({e}); left as it is"));
                continue;
            }
        };
        let (mut out, lost) = salvage.pack(&id, &bytes, known.get(&id))?;
        out.damage = damage;
        outcomes.push((out, lost));
    }
    salvage.flush()?;
    // A blob lost in one pack but salvaged from another is not lost.
    for (out, lost) in &mut outcomes {
        let before = lost.len();
        lost.retain(|b| !salvage.copied.contains(b));
        out.blobs_elsewhere += (before - lost.len()) as u64;
        out.blobs_lost = lost.len() as u64;
        out.lost = lost
            .iter()
            .map(|(k, b)| format!("{} {b}", k.name()))
            .collect();
        s.blobs_salvaged += out.blobs_salvaged;
        s.blobs_lost += out.blobs_lost;
    }
    let removed: BTreeSet<PackId> = outcomes
        .iter()
        .filter_map(|(o, _)| PackId::from_name(&o.pack).ok())
        .collect();
    let new_packs = std::mem::take(&mut salvage.new_packs);
    s.packs_written = new_packs.len() as u64;

    // 3. Which snapshots will miss data, judged by the index as it will be: the
    // packs that stay, and the salvaged blobs (in their new packs, or where they
    // lie in the damaged pack in a dry run).
    let mut after = index_builder_of(&known, &stored, |id| !removed.contains(id));
    if dry_run {
        let mut by_pack: BTreeMap<PackId, Vec<PackEntry>> = BTreeMap::new();
        for (p, e) in &salvage.in_place {
            by_pack.entry(*p).or_default().push(*e);
        }
        for (p, entries) in by_pack {
            after.add_pack(p, stored.get(&p).copied().unwrap_or(0), &entries);
        }
    } else {
        for p in &new_packs {
            after.add_pack(p.id, p.size, &p.blobs);
        }
    }
    let after = after.build();
    let (losses, wanting) = snapshots_missing_data(repo, &after, interrupt, report)?;
    s.snapshots_missing_data = losses;
    s.next_steps = next_steps(&wanting, s.packs_unreadable);

    if !dry_run {
        commit(repo, lock, &known, &removed, new_packs, interrupt, &mut s)?;
        for (o, _) in &mut outcomes {
            o.removed = true;
        }
    }
    s.packs = outcomes.into_iter().map(|(o, _)| o).collect();
    Ok(s)
}

fn max_pack_len() -> u64 {
    u64::from(crate::config::MAX_PACK_SIZE) * 2
}

/// Every index file, read in full: a pack is deleted here, so every file that
/// names it must be known (as prune and repair snapshots, this refuses to run
/// with an unreadable index file).
fn load_known(repo: &Repository) -> Result<HashMap<PackId, Known>> {
    let mut known: HashMap<PackId, Known> = HashMap::new();
    for id in repo.list_ids(FileType::Index, IndexId::from_name)? {
        let f = repo.load_index_file(&id).map_err(|e| {
            Error::invalid(format!(
                "{e}; repair packs needs every index file — run `cairn repair index` first"
            ))
        })?;
        for p in f.packs {
            let k = known.entry(p.id).or_insert_with(|| Known {
                size: p.size,
                entries: Vec::new(),
                files: Vec::new(),
            });
            k.files.push(id);
            if k.entries.is_empty() {
                k.entries = p.blobs;
            } else {
                // The same pack in several index files (an interrupted prune):
                // keep every location any of them gives.
                let key = |e: &PackEntry| (e.kind, e.id, e.offset, e.length, e.raw_length);
                let have: HashSet<_> = k.entries.iter().map(key).collect();
                let new: Vec<PackEntry> = p
                    .blobs
                    .into_iter()
                    .filter(|e| !have.contains(&key(e)))
                    .collect();
                k.entries.extend(new);
            }
        }
    }
    Ok(known)
}

/// Pack ids from unique prefixes of the names under `data/`.
fn resolve(
    prefixes: &[String],
    stored: &HashMap<PackId, u64>,
    known: &HashMap<PackId, Known>,
) -> Result<Vec<PackId>> {
    let mut out: Vec<PackId> = Vec::new();
    for given in prefixes {
        let p = given.to_ascii_lowercase();
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_hexdigit()) || p.len() > 64 {
            return Err(Error::invalid(format!(
                "{given:?} is not a pack id (up to 64 hex digits)"
            )));
        }
        let hits: Vec<PackId> = stored
            .keys()
            .filter(|id| id.to_hex().starts_with(&p))
            .copied()
            .collect();
        match hits.as_slice() {
            [one] => {
                if !out.contains(one) {
                    out.push(*one);
                }
            }
            [] if known.keys().any(|id| id.to_hex().starts_with(&p)) => {
                return Err(Error::Missing {
                    what: format!("pack {given}"),
                    reason: "the index names it but data/ has no such file; \
                             `cairn repair index` drops it from the index"
                        .into(),
                });
            }
            [] => {
                return Err(Error::Missing {
                    what: format!("pack {given}"),
                    reason: "no file in data/ has a name starting with it".into(),
                });
            }
            many => {
                return Err(Error::invalid(format!(
                    "{given:?} is ambiguous: {} packs have ids starting with it; give more digits",
                    many.len()
                )));
            }
        }
    }
    Ok(out)
}

/// Reads and verifies `targets`; returns the damaged ones with what is wrong.
/// Packs that can't be read at all are reported and counted, and left alone: an
/// I/O error (a NAS gone away) is not proof of damage.
fn find_damaged(
    repo: &Repository,
    targets: &[PackId],
    known: &HashMap<PackId, Known>,
    named: bool,
    interrupt: &AtomicBool,
    report: &dyn Fn(&str),
    s: &mut RepairPacksSummary,
) -> Result<Vec<(PackId, String)>> {
    let mut damaged = Vec::new();
    crate::readahead::read_ahead(
        targets,
        0,
        repo.backend().concurrency(),
        interrupt,
        |id| {
            repo.backend()
                .read(FileType::Pack, &id.to_hex(), max_pack_len())
        },
        |id, read| {
            s.packs_read += 1;
            match read {
                Ok(bytes) => match damage_of(repo, id, &bytes) {
                    Some(why) => damaged.push((*id, why)),
                    None if named => {
                        let sized = known.get(id).is_none_or(|k| k.size == bytes.len() as u64);
                        report(&format!(
                            "pack {id} is intact; nothing to do{}",
                            if sized {
                                ""
                            } else {
                                " (the index records another size for it: `cairn repair index` corrects that)"
                            }
                        ));
                    }
                    None => {}
                },
                Err(e) => {
                    s.packs_unreadable += 1;
                    report(&format!("pack {id} can't be read ({e}); left as it is"));
                }
            }
        },
    );
    if interrupt.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    Ok(damaged)
}

/// What is wrong with a pack, if anything: as `check --read-data` judges it.
fn damage_of(repo: &Repository, id: &PackId, bytes: &[u8]) -> Option<String> {
    let (actual, parsed) = rayon::join(
        || PackId::of_stored(bytes),
        || pack::header_from_bytes(repo.key(), repo.repo_id(), id, bytes),
    );
    if actual != *id {
        return Some(format!(
            "its content hashes to {actual}, not to its name: damaged on storage"
        ));
    }
    let (session, header) = match parsed {
        Ok(h) => h,
        Err(e) => return Some(format!("its header can't be read: {e}")),
    };
    header.par_iter().find_map_any(|e| {
        let sealed =
            bytes.get(e.offset as usize..(e.offset as usize).saturating_add(e.length as usize));
        let opened = match sealed {
            Some(b) => pack::open_blob(repo.key(), &session, repo.repo_id(), e, b, id).map(|_| ()),
            None => Err(Error::corrupt(
                format!("blob {}", e.id),
                "lies past the end of the pack",
            )),
        };
        opened
            .err()
            .map(|err| format!("{} blob {}: {err}", e.kind.name(), e.id))
    })
}

/// An index of the stored packs `keep` accepts.
fn index_of(
    known: &HashMap<PackId, Known>,
    stored: &HashMap<PackId, u64>,
    keep: impl Fn(&PackId) -> bool,
) -> Index {
    index_builder_of(known, stored, keep).build()
}

fn index_builder_of(
    known: &HashMap<PackId, Known>,
    stored: &HashMap<PackId, u64>,
    keep: impl Fn(&PackId) -> bool,
) -> IndexBuilder {
    let mut b = IndexBuilder::new();
    let mut ids: Vec<&PackId> = known
        .keys()
        .filter(|id| stored.contains_key(id) && keep(id))
        .collect();
    ids.sort();
    for id in ids {
        if let Some(k) = known.get(id) {
            b.add_pack(*id, k.size, &k.entries);
        }
    }
    b
}

struct Salvage<'a> {
    repo: &'a Repository,
    dry_run: bool,
    /// The index without the damaged packs.
    rest: &'a Index,
    /// Blobs salvaged so far, from any damaged pack.
    copied: HashSet<(BlobKind, BlobId)>,
    /// In a dry run: where each salvaged blob lies in its damaged pack.
    in_place: Vec<(PackId, PackEntry)>,
    builders: HashMap<BlobKind, PackBuilder>,
    new_packs: Vec<IndexPack>,
}

impl Salvage<'_> {
    /// Salvages what it can of damaged pack `id`; returns the counts and the
    /// blobs not found intact.
    fn pack(
        &mut self,
        id: &PackId,
        bytes: &[u8],
        known: Option<&Known>,
    ) -> Result<(PackRepair, Vec<(BlobKind, BlobId)>)> {
        let mut out = PackRepair {
            pack: id.to_hex(),
            damage: String::new(),
            blobs_salvaged: 0,
            blobs_elsewhere: 0,
            blobs_lost: 0,
            lost: Vec::new(),
            removed: false,
        };
        let mut lost = Vec::new();
        let repo = self.repo;
        // The session id is taken as stored even if the prefix before it is
        // damaged: every blob authenticates under it, so a damaged one only
        // makes every blob fail.
        let session = pack::raw_session_id(bytes).map(|sid| repo.key().session(&sid));
        // Where the blobs are: the header's entries and the index's, each tried.
        let mut places: HashMap<(BlobKind, BlobId), Vec<PackEntry>> = HashMap::new();
        let header = session
            .as_ref()
            .and_then(|s| pack::header_with_session(s, repo.repo_id(), id, bytes).ok());
        let from_index = known.map(|k| k.entries.as_slice()).unwrap_or_default();
        for e in header.iter().flatten().chain(from_index) {
            let v = places.entry((e.kind, e.id)).or_default();
            if !v.contains(e) {
                v.push(*e);
            }
        }
        let mut places: Vec<_> = places.into_iter().collect();
        places.sort_by_key(|((kind, blob), _)| (u8::from(*kind), *blob));
        for ((kind, blob), tries) in places {
            // Another copy counts only if it opens: it may lie in a damaged pack
            // the user did not name (and that is about to be repaired too).
            if self.copied.contains(&(kind, blob))
                || (self.rest.contains(kind, &blob)
                    && repo.read_blob(self.rest, kind, &blob).is_ok())
            {
                out.blobs_elsewhere += 1;
                continue;
            }
            let opened = session.as_ref().and_then(|session| {
                tries.iter().find_map(|e| {
                    let end = (e.offset as usize).checked_add(e.length as usize)?;
                    let sealed = bytes.get(e.offset as usize..end)?;
                    pack::open_blob_payload(repo.key(), session, repo.repo_id(), e, sealed, id)
                        .ok()
                        .map(|payload| (*e, payload))
                })
            });
            let Some((entry, payload)) = opened else {
                lost.push((kind, blob));
                continue;
            };
            self.copied.insert((kind, blob));
            out.blobs_salvaged += 1;
            if self.dry_run {
                self.in_place.push((*id, entry));
            } else {
                self.add(entry, payload)?;
            }
        }
        Ok((out, lost))
    }

    fn add(&mut self, e: PackEntry, payload: Vec<u8>) -> Result<()> {
        let b = match self.builders.entry(e.kind) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(PackBuilder::new(self.repo.key())?)
            }
        };
        b.add(e.kind, e.id, payload, e.raw_length);
        if b.is_full(self.repo.config().pack_size) {
            if let Some(full) = self.builders.remove(&e.kind) {
                self.write(full)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let mut rest: Vec<(BlobKind, PackBuilder)> = self.builders.drain().collect();
        rest.sort_by_key(|(k, _)| u8::from(*k));
        for (_, b) in rest {
            if !b.is_empty() {
                self.write(b)?;
            }
        }
        Ok(())
    }

    fn write(&mut self, b: PackBuilder) -> Result<()> {
        let p = b.finish(self.repo.repo_id())?;
        self.repo.write_pack(&p)?;
        self.new_packs.push(IndexPack {
            id: p.id,
            size: p.len(),
            blobs: p.entries,
        });
        Ok(())
    }
}

/// Facts about one tree for [`snapshots_missing_data`]: the entries in it whose
/// data is lost, and its subdirectories. `None`: the tree itself is lost.
struct TreeFacts {
    lost: Vec<String>,
    subdirs: Vec<(String, BlobId)>,
}

fn tree_facts(repo: &Repository, index: &Index, id: &BlobId) -> Option<TreeFacts> {
    if !index.contains(BlobKind::Tree, id) {
        return None;
    }
    let tree = repo.load_tree(index, id).ok()?;
    let mut f = TreeFacts {
        lost: Vec::new(),
        subdirs: Vec::new(),
    };
    for node in tree.nodes {
        match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(sub)) => f.subdirs.push((node.name_lossy(), sub)),
            _ => {
                if node
                    .content
                    .iter()
                    .any(|b| !index.contains(BlobKind::Data, b))
                {
                    f.lost.push(node.name_lossy());
                }
            }
        }
    }
    Some(f)
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The snapshots that name data `index` doesn't have. Each tree is read once
/// whatever the number of snapshots sharing it; walks are iterative and stop at
/// the nesting limit, since trees are untrusted.
fn snapshots_missing_data(
    repo: &Repository,
    index: &Index,
    interrupt: &AtomicBool,
    report: &dyn Fn(&str),
) -> Result<(Vec<SnapshotLoss>, Vec<Wanting>)> {
    let (snapshots, unreadable) = repo.list_snapshots_lenient()?;
    for (id, e) in &unreadable {
        match e {
            Error::Corrupt { .. } => report(&format!(
                "snapshot {id} is unreadable ({e}); remove it with `cairn forget {id}`"
            )),
            e => report(&format!("snapshot {id} can't be read: {e}")),
        }
    }
    let mut facts: HashMap<BlobId, Option<TreeFacts>> = HashMap::new();
    let mut losses = Vec::new();
    let mut wanting = Vec::new();
    for (sid, snap) in snapshots {
        let mut entries = 0u64;
        let mut first: Option<String> = None;
        let mut seen: HashSet<BlobId> = HashSet::new();
        let mut stack = vec![(snap.tree, "/".to_string(), 1usize)];
        while let Some((tid, path, depth)) = stack.pop() {
            if interrupt.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            if !seen.insert(tid) {
                continue;
            }
            let f = facts
                .entry(tid)
                .or_insert_with(|| tree_facts(repo, index, &tid));
            match f {
                None => {
                    entries += 1;
                    first.get_or_insert_with(|| format!("{path} (its directory tree)"));
                }
                Some(f) => {
                    for name in &f.lost {
                        entries += 1;
                        first.get_or_insert_with(|| join(&path, name));
                    }
                    if depth < MAX_TREE_DEPTH {
                        for (name, sub) in &f.subdirs {
                            stack.push((*sub, join(&path, name), depth + 1));
                        }
                    }
                }
            }
        }
        if let Some(first) = first {
            wanting.push(Wanting {
                id: sid,
                hostname: snap.hostname.clone(),
                paths: snap.paths.clone(),
            });
            losses.push(SnapshotLoss {
                id: sid.to_hex(),
                time: snap.time,
                hostname: snap.hostname,
                paths: snap.paths,
                entries,
                first,
            });
        }
    }
    Ok((losses, wanting))
}

fn next_steps(wanting: &[Wanting], unreadable_packs: u64) -> Vec<NextStep> {
    let mut steps = Vec::new();
    if unreadable_packs > 0 {
        steps.push(NextStep::new(
            "cairn repair packs",
            "again once the packs that could not be read are readable (it reads every pack \
             and repairs what is damaged)",
        ));
    }
    if !wanting.is_empty() {
        steps.extend(crate::remedy::backups(wanting));
        steps.push(NextStep::new(
            "cairn check",
            "shows what is still missing after the backups",
        ));
        steps.push(crate::remedy::repair_snapshots(false));
    }
    steps
}

/// Writes the new index and deletes what it replaces (module docs give the order).
fn commit(
    repo: &Repository,
    lock: &LockGuard,
    known: &HashMap<PackId, Known>,
    removed: &BTreeSet<PackId>,
    new_packs: Vec<IndexPack>,
    interrupt: &AtomicBool,
    s: &mut RepairPacksSummary,
) -> Result<()> {
    // The new packs are on storage, whole, before any index names them.
    for p in &new_packs {
        let bytes = repo
            .backend()
            .read(FileType::Pack, &p.id.to_hex(), p.size)?;
        check_name(&bytes, &p.id.to_hex(), "new pack")?;
    }
    let affected: BTreeSet<IndexId> = removed
        .iter()
        .filter_map(|p| known.get(p))
        .flat_map(|k| k.files.iter().copied())
        .collect();
    let mut keep: Vec<IndexPack> = Vec::new();
    let mut kept: HashSet<PackId> = HashSet::new();
    for f in &affected {
        for p in repo.load_index_file(f)?.packs {
            if !removed.contains(&p.id) && kept.insert(p.id) {
                keep.push(p);
            }
        }
    }
    keep.extend(new_packs);
    if interrupt.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    // Commit points (format-spec §15): stop rather than write or delete if
    // others may already take this lock for stale.
    lock.still_valid()?;
    let mut written = Vec::new();
    for f in crate::index::split_into_files(keep) {
        let (id, _) = repo.save_index(&f)?;
        written.push(id);
    }
    for id in &written {
        // Read back: stored under its name, and it authenticates.
        repo.load_index_file(id)?;
    }
    s.index_files_written = written.len() as u64;
    lock.still_valid()?;
    let replaced: Vec<IndexId> = affected
        .iter()
        .filter(|f| !written.contains(f))
        .copied()
        .collect();
    crate::record::note_removal(repo, lock, "repair packs", &[], &replaced)?;
    for f in affected.iter().filter(|f| !written.contains(f)) {
        repo.backend().remove(FileType::Index, &f.to_hex())?;
        s.index_files_removed += 1;
    }
    lock.still_valid()?;
    for p in removed {
        repo.backend().remove(FileType::Pack, &p.to_hex())?;
        s.packs_removed += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::archiver::saver::Saver;
    use crate::lock::tests::names;

    /// Spec §15/§16: a repair whose lock others may already take for stale (the
    /// machine slept) stops before its commit points: the damaged pack and the
    /// index files that name it stay. With a fresh lock the same call repairs.
    #[test]
    fn repair_packs_with_a_lock_gone_stale_deletes_nothing() {
        let (dir, repo) = crate::lock::tests::repo();
        let mut saver = Saver::new(Arc::clone(&repo), Arc::new(Index::new()));
        let blobs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 3000 + usize::from(i)]).collect();
        for b in &blobs {
            let payload = crate::format::encode_payload(b, 0);
            saver
                .add(BlobKind::Data, repo.key().blob_id(b), payload, b.len())
                .unwrap();
        }
        saver.finish().unwrap();
        drop(saver);
        let pack = names(&repo, FileType::Pack).remove(0);
        let path = dir.path().join("r/data").join(&pack[..2]).join(&pack);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[pack::PACK_DATA_START + 20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let index_before = names(&repo, FileType::Index);

        let lock = crate::lock::acquire(&repo, true).unwrap();
        lock.pretend_refreshed(Duration::from_secs(3600));
        let quiet = |_: &str| {};
        let stop = AtomicBool::new(false);
        assert!(matches!(
            repair_packs_locked(&repo, &lock, &[], false, &stop, &quiet),
            Err(Error::Locked(_))
        ));
        assert!(path.exists());
        let index_now = names(&repo, FileType::Index);
        assert!(index_before.iter().all(|n| index_now.contains(n)));

        lock.pretend_refreshed(Duration::ZERO);
        let s = repair_packs_locked(&repo, &lock, &[], false, &stop, &quiet).unwrap();
        assert_eq!((s.packs_damaged, s.blobs_salvaged, s.blobs_lost), (1, 4, 1));
        assert!(!path.exists());
        assert!(
            names(&repo, FileType::Index)
                .iter()
                .all(|n| !index_before.contains(n))
        );
        drop(lock);
    }
}
