//! `check`: find every kind of damage and name the object.
//!
//! Structure first: key files, lock files, index files, packs against the index
//! (existence and size), snapshots, and every tree reachable from them, with every
//! blob a tree names present in the index under the right kind. Then, with
//! `--read-data`, packs are read in full and verified end to end: the file hashes to
//! its name, the header matches the index, and every blob authenticates,
//! decompresses to its recorded length and re-hashes to its id.
//!
//! Problems are errors (damage: data can't be read back as it was stored, or a lock
//! file that can't be read and holds off prune) or notes (untidiness an interrupted
//! backup leaves, which `prune` cleans up).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, KeyId, PackId, RecordId, SnapshotId};
use crate::index::{Index, IndexFile};
use crate::keyfile::{KEY_FILE_MAX_LEN, KeyFile};
use crate::pack::{self, BlobKind, PackEntry};
use crate::remedy::{NextStep, Wanting};
use crate::repository::{Repository, check_name};
use crate::tree::{MAX_TREE_DEPTH, NodeKind, Tree};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    /// Not damage, but worth acting on (space taken by leftovers of killed
    /// processes).
    Warning,
    Note,
}

#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// The object concerned, e.g. "pack 3fa2…" or "snapshot 1b2c…".
    pub object: String,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// Group `n` of `m` (1-based): packs whose id, as a number, is `n-1` mod `m`.
    /// Running 1/m … m/m on successive days reads everything once per cycle.
    Subset {
        n: u32,
        m: u32,
    },
    /// A random selection of this percentage of the packs.
    Percent(f64),
}

impl ReadData {
    /// As `--read-data-subset` takes it: `2/7`, `5%`; `all`, `none`.
    pub fn describe(&self) -> String {
        match self {
            ReadData::None => "none".into(),
            ReadData::All => "all".into(),
            ReadData::Subset { n, m } => format!("{n}/{m}"),
            ReadData::Percent(p) => format!("{p}%"),
        }
    }

    /// Parses `n/m` or `X%`.
    pub fn parse_subset(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "--read-data-subset {s:?}: expected n/m (e.g. 2/7) or a percentage (e.g. 10%)"
            ))
        };
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(v > 0.0 && v <= 100.0) {
                return Err(bad());
            }
            return Ok(ReadData::Percent(v));
        }
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let m: u32 = m.trim().parse().map_err(|_| bad())?;
        if m == 0 || n == 0 || n > m {
            return Err(bad());
        }
        Ok(ReadData::Subset { n, m })
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckSummary {
    pub keys: u64,
    pub index_files: u64,
    pub packs: u64,
    pub snapshots: u64,
    /// Records of checks and drills (format-spec §20).
    pub records: u64,
    pub trees: u64,
    pub data_blobs: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
    pub errors: u64,
    pub warnings: u64,
    pub notes: u64,
    /// The commands to run, in order, to repair what was found.
    pub next_steps: Vec<NextStep>,
}

struct Reporter<'a> {
    report: &'a (dyn Fn(&Problem) + Sync),
    errors: AtomicU64,
    warnings: AtomicU64,
    notes: AtomicU64,
    found: Findings,
}

impl Reporter<'_> {
    fn error(&self, object: String, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        (self.report)(&Problem {
            severity: Severity::Error,
            object,
            message,
        });
    }

    fn warning(&self, object: String, message: String) {
        self.warnings.fetch_add(1, Ordering::Relaxed);
        (self.report)(&Problem {
            severity: Severity::Warning,
            object,
            message,
        });
    }

    fn note(&self, object: String, message: String) {
        self.notes.fetch_add(1, Ordering::Relaxed);
        (self.report)(&Problem {
            severity: Severity::Note,
            object,
            message,
        });
    }
}

/// Every pack an index names, with the index files naming it.
struct IndexedPack {
    size: u64,
    entries: Vec<PackEntry>,
    named_by: Vec<IndexId>,
}

pub fn check(
    repo: &Arc<Repository>,
    read_data: ReadData,
    interrupt: &AtomicBool,
    report: &(dyn Fn(&Problem) + Sync),
) -> Result<CheckSummary> {
    let _lock = crate::lock::acquire(repo, false)?;
    let r = Reporter {
        report,
        errors: AtomicU64::new(0),
        warnings: AtomicU64::new(0),
        notes: AtomicU64::new(0),
        found: Findings::default(),
    };
    let mut summary = CheckSummary::default();

    check_keys(repo, &r, &mut summary)?;
    check_locks(repo, &r)?;
    check_leftovers(repo, &r)?;
    let (packs, index) = check_index_files(repo, &r, &mut summary)?;
    let stored = check_packs_exist(repo, &r, &packs, &mut summary)?;
    check_snapshots(repo, &index, &r, interrupt, &mut summary)?;
    check_records(repo, &r, &mut summary)?;
    if read_data != ReadData::None {
        read_packs(
            repo,
            &packs,
            &stored,
            read_data,
            &r,
            interrupt,
            &mut summary,
        )?;
    }
    if interrupt.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    summary.errors = r.errors.load(Ordering::Relaxed);
    summary.warnings = r.warnings.load(Ordering::Relaxed);
    summary.notes = r.notes.load(Ordering::Relaxed);
    summary.next_steps = r.found.next_steps();
    Ok(summary)
}

fn check_keys(repo: &Repository, r: &Reporter, summary: &mut CheckSummary) -> Result<()> {
    for e in repo.backend().list(FileType::Key)? {
        let what = format!("key {}", e.name);
        let Ok(id) = KeyId::from_name(&e.name) else {
            r.note(what, "unexpected file name in keys/".into());
            continue;
        };
        summary.keys += 1;
        let result = repo
            .backend()
            .read(FileType::Key, &e.name, KEY_FILE_MAX_LEN)
            .and_then(|b| {
                check_name(&b, &e.name, "key file").and_then(|()| KeyFile::decode(&b, &id))
            });
        if let Err(err) = result {
            r.error(what, err.to_string());
        }
    }
    Ok(())
}

/// Unreadable lock files: nothing reads them, but they hold off prune, forget and
/// repair (format-spec §15), so the user has to hear about them.
fn check_locks(repo: &Repository, r: &Reporter) -> Result<()> {
    for e in repo.backend().list(FileType::Lock)? {
        if !crate::id::is_file_name(&e.name) {
            r.note(
                format!("file locks/{}", e.name),
                "unexpected file name in locks/".into(),
            );
        }
    }
    for l in crate::lock::list_locks(repo)? {
        if let Some(why) = l.unreadable_because() {
            r.error(
                format!("lock file locks/{}", l.name),
                format!("can't be read ({why}); {}", l.unreadable_advice()),
            );
        }
    }
    Ok(())
}

/// Temporary files of writes that never finished: not damage (nothing reads
/// them), but up to a pack each of wasted space (format-spec §2).
fn check_leftovers(repo: &Repository, r: &Reporter) -> Result<()> {
    let found = crate::leftovers::list(repo)?;
    if let Some(first) = found.first() {
        let bytes: u64 = found.iter().map(|e| e.size).sum();
        r.warning(
            "temporary files".into(),
            format!(
                "{} left by interrupted writes (first: {}), {bytes} bytes in all; `cairn prune` \
                 removes those older than {} minutes",
                found.len(),
                first.name,
                crate::lock::STALE_AFTER.as_secs() / 60
            ),
        );
    }
    Ok(())
}

/// Records of checks and drills: decoded, so that one that can't be read is
/// named. They hold no backup data: a damaged one loses only its own history.
fn check_records(repo: &Repository, r: &Reporter, summary: &mut CheckSummary) -> Result<()> {
    for e in repo.backend().list(FileType::Record)? {
        let Ok(id) = RecordId::from_name(&e.name) else {
            r.note(
                format!("file records/{}", e.name),
                "unexpected file name in records/".into(),
            );
            continue;
        };
        summary.records += 1;
        match crate::record::load(repo, &id) {
            Ok(_) => {}
            Err(err @ Error::UnknownRecordKind { .. }) => {
                r.note(format!("record {id}"), err.to_string())
            }
            Err(err) => {
                let damaged = matches!(err, Error::Corrupt { .. });
                r.error(
                    format!("record {id}"),
                    format!(
                        "{err} (a record of a past check or drill: no backup data is affected{})",
                        if damaged {
                            "; `cairn repair snapshots --forget` removes it"
                        } else {
                            ""
                        }
                    ),
                );
                if damaged {
                    r.found.record_unreadable();
                }
            }
        }
    }
    Ok(())
}

fn check_index_files(
    repo: &Repository,
    r: &Reporter,
    summary: &mut CheckSummary,
) -> Result<(HashMap<PackId, IndexedPack>, Index)> {
    let mut packs: HashMap<PackId, IndexedPack> = HashMap::new();
    let mut index = crate::index::IndexBuilder::new();
    let mut copies: HashMap<(BlobKind, BlobId), u32> = HashMap::new();
    let mut duplicates = 0u64;
    for e in repo.backend().list(FileType::Index)? {
        let Ok(id) = IndexId::from_name(&e.name) else {
            r.note(
                format!("index {}", e.name),
                "unexpected file name in index/".into(),
            );
            continue;
        };
        summary.index_files += 1;
        let file: IndexFile = match repo.load_index_file(&id) {
            Ok(f) => f,
            Err(err) => {
                r.error(
                    format!("index {id}"),
                    format!("{err}; `cairn repair index` rebuilds the index from the packs"),
                );
                r.found.index_unreadable.store(true, Ordering::Relaxed);
                continue;
            }
        };
        index.add_file(&file);
        for p in file.packs {
            if let Some(known) = packs.get_mut(&p.id) {
                if known.size != p.size || known.entries != p.blobs {
                    r.error(
                        format!("pack {}", p.id),
                        format!(
                            "index files {} and {id} describe it differently",
                            known.named_by[0]
                        ),
                    );
                }
                known.named_by.push(id);
                continue;
            }
            for b in &p.blobs {
                let n = copies.entry((b.kind, b.id)).or_insert(0);
                *n += 1;
                if *n > 1 {
                    duplicates += 1;
                }
            }
            packs.insert(
                p.id,
                IndexedPack {
                    size: p.size,
                    entries: p.blobs,
                    named_by: vec![id],
                },
            );
        }
    }
    if duplicates > 0 {
        r.note(
            "index".into(),
            format!(
                "{} stored more than once (harmless; `prune` keeps one)",
                if duplicates == 1 {
                    "1 blob copy is".to_string()
                } else {
                    format!("{duplicates} blob copies are")
                }
            ),
        );
    }
    Ok((packs, index.build()))
}

fn check_packs_exist(
    repo: &Repository,
    r: &Reporter,
    packs: &HashMap<PackId, IndexedPack>,
    summary: &mut CheckSummary,
) -> Result<HashMap<PackId, u64>> {
    let mut stored = HashMap::new();
    for e in repo.backend().list(FileType::Pack)? {
        match PackId::from_name(&e.name) {
            Ok(id) => {
                stored.insert(id, e.size);
            }
            Err(_) => r.note(
                format!("file data/{}", e.name),
                "unexpected file name in data/".into(),
            ),
        }
    }
    summary.packs = stored.len() as u64;
    let mut ids: Vec<&PackId> = packs.keys().collect();
    ids.sort();
    for id in ids {
        let p = &packs[id];
        match stored.get(id) {
            None => {
                r.error(
                    format!("pack {id}"),
                    format!(
                        "missing, but index {} lists {} in it; snapshots that use {} can't be fully restored",
                        p.named_by[0],
                        crate::text::count(p.entries.len(), "blob", "blobs"),
                        if p.entries.len() == 1 { "it" } else { "them" }
                    ),
                );
                r.found.pack_missing(*id);
            }
            Some(&size) if size != p.size => {
                r.error(
                    format!("pack {id}"),
                    format!(
                        "is {size} bytes, but index {} says {}; `cairn repair packs {id}` salvages its intact blobs",
                        p.named_by[0], p.size
                    ),
                );
                r.found.pack_damaged(*id);
            }
            Some(_) => {}
        }
    }
    let mut unindexed: Vec<&PackId> = stored.keys().filter(|id| !packs.contains_key(id)).collect();
    unindexed.sort();
    for id in unindexed {
        r.note(
            format!("pack {id}"),
            "is not in any index (left by an interrupted backup; the next backup adopts it, `prune` removes it)".into(),
        );
    }
    Ok(stored)
}

fn check_snapshots(
    repo: &Repository,
    index: &Index,
    r: &Reporter,
    interrupt: &AtomicBool,
    summary: &mut CheckSummary,
) -> Result<()> {
    let mut visited_trees: HashSet<BlobId> = HashSet::new();
    let mut data_blobs: HashSet<BlobId> = HashSet::new();
    // Each tree's subtrees, and each tree's height once known: a tree shared by
    // several directories is visited once, so how deep a snapshot nests is
    // worked out from these afterwards rather than along the way.
    let mut children: HashMap<BlobId, Vec<BlobId>> = HashMap::new();
    let mut heights: HashMap<BlobId, usize> = HashMap::new();
    for e in repo.backend().list(FileType::Snapshot)? {
        let Ok(id) = SnapshotId::from_name(&e.name) else {
            r.note(
                format!("file snapshots/{}", e.name),
                "unexpected file name in snapshots/".into(),
            );
            continue;
        };
        summary.snapshots += 1;
        let snap = match repo.load_snapshot(&id) {
            Ok(s) => s,
            Err(err) => {
                r.error(format!("snapshot {id}"), err.to_string());
                // Only damage is to be forgotten: a file a newer cairn wrote, or one
                // the storage failed to give, may be a good snapshot.
                if matches!(err, Error::Corrupt { .. }) {
                    r.found.snapshot_unreadable(id);
                }
                continue;
            }
        };
        // (tree, its directory's path, its depth: the root tree is at depth 1).
        let mut stack = vec![(snap.tree, "/".to_string(), 1usize)];
        while let Some((tree_id, path, depth)) = stack.pop() {
            if interrupt.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            if !visited_trees.insert(tree_id) {
                continue;
            }
            let tree = match load_tree_checked(repo, index, &tree_id) {
                Ok(t) => t,
                Err(msg) => {
                    r.error(
                        format!("tree {tree_id}"),
                        format!("{msg} (directory {path} of snapshot {})", id.short()),
                    );
                    r.found.snapshot_wants(id, &snap);
                    if let Some((pack, _)) = index.get(BlobKind::Tree, &tree_id) {
                        r.found.pack_damaged(pack);
                    }
                    continue;
                }
            };
            summary.trees += 1;
            let subtrees = children.entry(tree_id).or_default();
            for node in &tree.nodes {
                // Paths stop growing past the depth limit, so that a forged chain
                // of directories costs memory and time linear in its length.
                let child = match (depth < MAX_TREE_DEPTH, path.as_str()) {
                    (false, _) => path.clone(),
                    (true, "/") => format!("/{}", node.name_lossy()),
                    (true, _) => format!("{path}/{}", node.name_lossy()),
                };
                if node.kind == NodeKind::Dir {
                    if let Some(sub) = node.subtree {
                        subtrees.push(sub);
                        stack.push((sub, child, depth + 1));
                    }
                    continue;
                }
                let mut missing = Vec::new();
                for b in &node.content {
                    if index.contains(BlobKind::Data, b) {
                        data_blobs.insert(*b);
                    } else {
                        missing.push(*b);
                    }
                }
                if let Some(first) = missing.first() {
                    // A cairn before 2026-11-29 kept one copy of identical bytes
                    // whatever their kind.
                    let other_kind = if index.contains(BlobKind::Tree, first) {
                        " (only a tree blob has that id, stored by a cairn before 2026-11-29; \
                         a new backup stores the file again)"
                    } else {
                        ""
                    };
                    r.error(
                        format!("snapshot {}", id.short()),
                        format!(
                            "file {child}: {} of its {} {} missing from the index (first: {first}){other_kind}; \
                             `cairn repair snapshots` can drop what is lost",
                            missing.len(),
                            crate::text::count(node.content.len(), "data blob", "data blobs"),
                            if missing.len() == 1 { "is" } else { "are" }
                        ),
                    );
                    r.found.snapshot_wants(id, &snap);
                }
            }
        }
        let height = tree_height(snap.tree, &children, &mut heights);
        if height > MAX_TREE_DEPTH {
            r.error(
                format!("snapshot {}", id.short()),
                format!(
                    "its directories nest {height} levels deep, more than the {MAX_TREE_DEPTH} \
                     readers go (no backup makes such a tree: the repository is damaged or \
                     forged); restore and ls refuse it, `cairn repair snapshots` drops what \
                     lies too deep"
                ),
            );
            r.found.too_deep.store(true, Ordering::Relaxed);
        }
    }
    summary.data_blobs = data_blobs.len() as u64;
    Ok(())
}

/// How many levels of trees `root` spans (1 for a tree without subdirectories;
/// a tree that couldn't be read counts as 1), without recursion, remembering
/// every tree's height in `memo` so that shared subtrees are measured once.
fn tree_height(
    root: BlobId,
    children: &HashMap<BlobId, Vec<BlobId>>,
    memo: &mut HashMap<BlobId, usize>,
) -> usize {
    let mut stack = vec![(root, false)];
    while let Some((id, expanded)) = stack.pop() {
        if memo.contains_key(&id) {
            continue;
        }
        let kids = children.get(&id).map(Vec::as_slice).unwrap_or_default();
        if expanded {
            // Every child was measured above this entry on the stack; ids are
            // hashes of contents, so no tree contains itself.
            let below = kids.iter().filter_map(|k| memo.get(k)).max().copied();
            memo.insert(id, 1 + below.unwrap_or(0));
        } else {
            stack.push((id, true));
            stack.extend(
                kids.iter()
                    .filter(|k| !memo.contains_key(k))
                    .map(|k| (*k, false)),
            );
        }
    }
    memo.get(&root).copied().unwrap_or(1)
}

/// Loads a tree, distinguishing "not indexed" (as a tree: a data blob with that
/// id is another object) from damage.
fn load_tree_checked(
    repo: &Repository,
    index: &Index,
    id: &BlobId,
) -> std::result::Result<Tree, String> {
    match index.get(BlobKind::Tree, id) {
        None if index.contains(BlobKind::Data, id) => Err(
            "is missing from the index as a tree blob (only a data blob has that id: forged, or \
             stored by a cairn before 2026-11-29, which kept one copy of identical bytes)"
                .into(),
        ),
        None => Err("is missing from the index".into()),
        Some((pack, _)) => repo
            .load_tree(index, id)
            .map_err(|e| format!("can't be read from pack {}: {e}", pack.short())),
    }
}

fn select_packs(all: &[PackId], how: ReadData) -> Result<Vec<PackId>> {
    Ok(match how {
        ReadData::None => Vec::new(),
        ReadData::All => all.to_vec(),
        ReadData::Subset { n, m } => all
            .iter()
            .filter(|id| {
                let head = u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
                head % m == n - 1
            })
            .copied()
            .collect(),
        ReadData::Percent(p) => {
            let want = ((all.len() as f64) * p / 100.0).ceil() as usize;
            let mut keyed: Vec<(u64, PackId)> = Vec::with_capacity(all.len());
            for id in all {
                keyed.push((u64::from_le_bytes(crate::crypto::random_array()?), *id));
            }
            keyed.sort();
            keyed.into_iter().take(want).map(|(_, id)| id).collect()
        }
    })
}

fn read_packs(
    repo: &Repository,
    packs: &HashMap<PackId, IndexedPack>,
    stored: &HashMap<PackId, u64>,
    how: ReadData,
    r: &Reporter,
    interrupt: &AtomicBool,
    summary: &mut CheckSummary,
) -> Result<()> {
    let mut all: Vec<PackId> = stored.keys().copied().collect();
    all.sort();
    let chosen = select_packs(&all, how)?;
    let mut bytes = 0u64;
    // Reader threads fetch the next packs while pack k is verified on all cores
    // (one reader on a local disk, several on object storage).
    crate::readahead::read_ahead(
        &chosen,
        0,
        repo.backend().concurrency(),
        interrupt,
        |id| {
            let max = u64::from(crate::config::MAX_PACK_SIZE) * 2;
            repo.backend().read(FileType::Pack, &id.to_hex(), max)
        },
        |id, read| {
            bytes += stored.get(id).copied().unwrap_or(0);
            match read {
                Ok(b) => verify_pack(repo, id, &b, packs.get(id), r),
                Err(e) => r.error(format!("pack {id}"), format!("can't be read: {e}")),
            }
        },
    );
    summary.packs_read = chosen.len() as u64;
    summary.bytes_read = bytes;
    Ok(())
}

fn verify_pack(
    repo: &Repository,
    id: &PackId,
    bytes: &[u8],
    indexed: Option<&IndexedPack>,
    r: &Reporter,
) {
    let what = format!("pack {id}");
    let (actual, parsed) = rayon::join(
        || PackId::of_stored(bytes),
        || pack::header_from_bytes(repo.key(), repo.repo_id(), id, bytes),
    );
    if actual != *id {
        r.error(
            what.clone(),
            format!(
                "its content hashes to {actual}: the file was damaged on storage; \
                 `cairn repair packs {id}` salvages its intact blobs"
            ),
        );
        r.found.pack_damaged(*id);
    }
    let (session, header) = match parsed {
        Ok(h) => h,
        Err(e) => {
            r.found.pack_damaged(*id);
            return r.error(
                what,
                format!(
                    "{e}; its blobs can't be located without the header (the index may still \
                     know them: `cairn repair packs {id}` uses it)"
                ),
            );
        }
    };
    if let Some(ix) = indexed {
        let in_header: HashSet<(BlobKind, BlobId, u32, u32)> = header
            .iter()
            .map(|e| (e.kind, e.id, e.offset, e.length))
            .collect();
        for e in &ix.entries {
            if !in_header.contains(&(e.kind, e.id, e.offset, e.length)) {
                r.error(
                    format!("blob {}", e.id),
                    format!(
                        "index {} places it in pack {id} at {}+{}, but the pack header does not",
                        ix.named_by[0], e.offset, e.length
                    ),
                );
            }
        }
    }
    // Every blob the header lists: authenticate, decompress, re-hash.
    header.par_iter().for_each(|e| {
        let sealed =
            bytes.get(e.offset as usize..(e.offset as usize).saturating_add(e.length as usize));
        let result = match sealed {
            Some(s) => pack::open_blob(repo.key(), &session, repo.repo_id(), e, s, id).map(|_| ()),
            None => Err(Error::corrupt(
                format!("blob {}", e.id),
                "lies past the end of the pack",
            )),
        };
        if result.is_err() {
            r.found.pack_damaged(*id);
        }
        match result {
            Ok(()) => {}
            Err(Error::Corrupt { reason, .. }) => r.error(
                format!("blob {}", e.id),
                format!("in pack {}: {reason}", id.short()),
            ),
            Err(err) => r.error(
                format!("blob {}", e.id),
                format!("in pack {}: {err}", id.short()),
            ),
        }
    });
}

/// Damage seen so far, by what repairs it: for the next steps `check` prints.
#[derive(Default)]
struct Findings {
    index_unreadable: AtomicBool,
    too_deep: AtomicBool,
    packs_missing: Mutex<BTreeSet<PackId>>,
    packs_damaged: Mutex<BTreeSet<PackId>>,
    snapshots_wanting: Mutex<BTreeMap<SnapshotId, Wanting>>,
    snapshots_unreadable: Mutex<BTreeSet<SnapshotId>>,
    records_unreadable: AtomicBool,
}

impl Findings {
    fn pack_missing(&self, id: PackId) {
        if let Ok(mut s) = self.packs_missing.lock() {
            s.insert(id);
        }
    }

    fn pack_damaged(&self, id: PackId) {
        if let Ok(mut s) = self.packs_damaged.lock() {
            s.insert(id);
        }
    }

    fn record_unreadable(&self) {
        self.records_unreadable.store(true, Ordering::Relaxed);
    }

    fn snapshot_unreadable(&self, id: SnapshotId) {
        if let Ok(mut s) = self.snapshots_unreadable.lock() {
            s.insert(id);
        }
    }

    /// Snapshot `id` names data that is missing or unreadable.
    fn snapshot_wants(&self, id: SnapshotId, snap: &crate::snapshot::Snapshot) {
        if let Ok(mut s) = self.snapshots_wanting.lock() {
            s.entry(id).or_insert_with(|| Wanting {
                id,
                hostname: snap.hostname.clone(),
                paths: snap.paths.clone(),
            });
        }
    }

    /// The commands that repair what was found, in the order to run them: the
    /// index first (repair packs needs every index file), then the damaged packs,
    /// then backups that store again what is still in the sources, then
    /// `repair snapshots` for what is gone for good.
    fn next_steps(&self) -> Vec<NextStep> {
        let set = |m: &Mutex<BTreeSet<PackId>>| m.lock().map(|s| s.clone()).unwrap_or_default();
        let missing = set(&self.packs_missing);
        let damaged: Vec<PackId> = set(&self.packs_damaged)
            .into_iter()
            .filter(|p| !missing.contains(p))
            .collect();
        let wanting: Vec<Wanting> = self
            .snapshots_wanting
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let mut steps = Vec::new();
        if self.index_unreadable.load(Ordering::Relaxed) || !missing.is_empty() {
            steps.push(NextStep::new(
                "cairn repair index",
                "rebuilds the index from the packs: replaces unreadable index files and drops \
                 the packs missing from data/ (their blobs are lost)",
            ));
        }
        if !damaged.is_empty() {
            steps.push(crate::remedy::repair_packs(&damaged));
        }
        steps.extend(crate::remedy::backups(&wanting));
        let unknown_loss = !missing.is_empty() || !damaged.is_empty();
        let lost = unknown_loss || !wanting.is_empty();
        if !steps.is_empty() {
            steps.push(NextStep::new(
                "cairn check",
                if unknown_loss {
                    "after the steps above: it names the snapshots that lost data, and the \
                     paths to back up again to heal them"
                } else if lost {
                    "after the backups: shows what they could not bring back"
                } else {
                    "after the steps above, to confirm the repository is sound"
                },
            ));
        }
        let records = self.records_unreadable.load(Ordering::Relaxed);
        if lost || self.too_deep.load(Ordering::Relaxed) {
            steps.push(crate::remedy::repair_snapshots(records));
        } else if records {
            steps.push(crate::remedy::remove_damaged_records());
        }
        let unreadable: Vec<String> = self
            .snapshots_unreadable
            .lock()
            .map(|s| s.iter().map(|id| id.to_hex()).collect())
            .unwrap_or_default();
        if !unreadable.is_empty() {
            steps.push(NextStep::new(
                format!("cairn forget {}", unreadable.join(" ")),
                "removes the snapshot files that can't be read (they can't be repaired; \
                 their data stays for the other snapshots until `prune`)",
            ));
        }
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_parsing() {
        assert_eq!(
            ReadData::parse_subset("2/7").unwrap(),
            ReadData::Subset { n: 2, m: 7 }
        );
        assert_eq!(
            ReadData::parse_subset("10%").unwrap(),
            ReadData::Percent(10.0)
        );
        for bad in ["0/3", "4/3", "1/0", "x", "0%", "101%", "1/2/3"] {
            assert!(ReadData::parse_subset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subsets_partition_the_packs() {
        let all: Vec<PackId> = (0..200u8)
            .map(|i| PackId([i.wrapping_mul(37); 32]))
            .collect();
        // Every pack in exactly one of the subsets: counts alone would let
        // overlapping subsets that miss some packs pass.
        let mut owner: HashMap<PackId, u32> = HashMap::new();
        for n in 1..=5 {
            for id in select_packs(&all, ReadData::Subset { n, m: 5 }).unwrap() {
                if let Some(first) = owner.insert(id, n) {
                    panic!("pack {id} is in subsets {first} and {n}");
                }
            }
        }
        let missed: Vec<&PackId> = all.iter().filter(|id| !owner.contains_key(id)).collect();
        assert!(missed.is_empty(), "in no subset: {missed:?}");
        assert_eq!(
            select_packs(&all, ReadData::Percent(10.0)).unwrap().len(),
            20
        );
    }
}
