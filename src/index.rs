//! Index files under `index/` (format-spec/README.md, "Index files") and the
//! in-memory index built from them.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId};
use crate::pack::{BlobKind, PackEntry};

/// Largest index file accepted.
pub const INDEX_MAX_LEN: u64 = 1024 * 1024 * 1024;

/// Packs per index file written by prune and repair...
pub const PACKS_PER_INDEX_FILE: usize = 2000;
/// ...and blob entries per file (about 45 bytes each encoded), so that no writer
/// makes an index file near the size readers refuse ([`INDEX_MAX_LEN`]) however
/// many small blobs its packs hold.
pub const BLOBS_PER_INDEX_FILE: usize = 1 << 20;

/// Groups packs into index files of at most [`PACKS_PER_INDEX_FILE`] packs and,
/// unless one pack alone has more, [`BLOBS_PER_INDEX_FILE`] blobs.
pub fn split_into_files(packs: Vec<IndexPack>) -> Vec<IndexFile> {
    let mut files = Vec::new();
    let mut current = IndexFile::default();
    let mut blobs = 0;
    for p in packs {
        let full = current.packs.len() >= PACKS_PER_INDEX_FILE
            || blobs + p.blobs.len() > BLOBS_PER_INDEX_FILE;
        if full && !current.packs.is_empty() {
            files.push(std::mem::take(&mut current));
            blobs = 0;
        }
        blobs += p.blobs.len();
        current.packs.push(p);
    }
    if !current.packs.is_empty() {
        files.push(current);
    }
    files
}

/// What one index file stores: packs and the blobs each holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    pub packs: Vec<IndexPack>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    pub id: PackId,
    /// The pack's size in bytes, so `check` can compare without reading the pack.
    pub size: u64,
    pub blobs: Vec<PackEntry>,
}

impl IndexFile {
    /// Parses and validates the plaintext of an index file (after authentication):
    /// every entry must lie inside its pack's blob area.
    pub fn decode(plain: &[u8], what: &dyn Fn() -> String) -> Result<Self> {
        let f: IndexFile = crate::format::from_msgpack(plain, what)?;
        for p in &f.packs {
            let data_end = p.size.saturating_sub(4);
            crate::pack::validate_entries(&p.blobs, data_end)
                .map_err(|r| Error::corrupt(what(), format!("entry for pack {}: {r}", p.id)))?;
        }
        Ok(f)
    }

    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|p| p.blobs.len()).sum()
    }
}

/// One blob in the in-memory index: exactly 48 bytes, so that an index of ten
/// million blobs takes 480 MB, and a sorted array of them needs no per-entry
/// allocation or hash-table slack.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Entry {
    id: [u8; 32],
    /// Position in `Index::packs`.
    pack: u32,
    offset: u32,
    length: u32,
    /// Plaintext length, with the blob kind in the top bit (lengths are < 2^31).
    raw_and_kind: u32,
}

const TREE_BIT: u32 = 1 << 31;
const _: () = assert!(std::mem::size_of::<Entry>() == 48);

/// The order of the entries: by id, the first 8 bytes compared as one integer
/// first (which settles almost every comparison without a call to memcmp).
fn order(a: &[u8; 32], b: &[u8; 32]) -> std::cmp::Ordering {
    id_prefix(a).cmp(&id_prefix(b)).then_with(|| a.cmp(b))
}

/// The order an index keeps its entries in: data blobs first, then by id and,
/// among copies of one blob, by pack (the pack indexed first) and offset. The
/// first copy is the one kept; a total order lets an unstable sort, which
/// needs no scratch copy of the entries, keep the same one a stable sort would.
fn full_order(a: &Entry, b: &Entry) -> std::cmp::Ordering {
    (a.raw_and_kind & TREE_BIT)
        .cmp(&(b.raw_and_kind & TREE_BIT))
        .then_with(|| order(&a.id, &b.id))
        .then_with(|| a.pack.cmp(&b.pack))
        .then_with(|| a.offset.cmp(&b.offset))
}

/// Sorts `v` by [`full_order`] and keeps the first copy of each blob.
fn sort_entries(v: &mut Vec<Entry>) {
    v.sort_unstable_by(full_order);
    v.dedup_by(|later, first| later.id == first.id && kind_of(later) == kind_of(first));
}

fn kind_bit(kind: BlobKind) -> u32 {
    match kind {
        BlobKind::Data => 0,
        BlobKind::Tree => TREE_BIT,
    }
}

fn kind_of(e: &Entry) -> BlobKind {
    if e.raw_and_kind & TREE_BIT != 0 {
        BlobKind::Tree
    } else {
        BlobKind::Data
    }
}

/// The first 8 bytes of an id as a big-endian integer: orders ids as their bytes do.
fn id_prefix(id: &[u8; 32]) -> u64 {
    let (head, _) = id.split_first_chunk::<8>().unwrap_or((&[0; 8], &[]));
    u64::from_be_bytes(*head)
}

/// Entries per bucket of [`Sorted::starts`], on average: a lookup bisects
/// about this many entries, in two or three cache lines.
const PER_BUCKET: usize = 4;

/// The most buckets a table has (2^24: 64 MiB of table for 64 million blobs).
const MAX_BUCKET_BITS: u32 = 24;

/// One kind's entries, sorted by id, and where each bucket of ids starts.
///
/// Ids are keyed hashes, so uniformly spread: the table, keyed by an id's top
/// bits, leads a lookup straight to the few entries that may hold it, one
/// cache miss into the table and one or two into the entries. (Bisecting a
/// large index takes twenty steps, nearly all of them cache misses.) Entries
/// whose ids all share their top bits only make one bucket large, which is
/// then bisected: no spread of ids makes a lookup slower than bisection.
#[derive(Default)]
struct Sorted {
    entries: Vec<Entry>,
    /// `starts[b]`: the first entry whose id's top `bits` bits are `b` or
    /// more; one more than the buckets, the last being the number of
    /// entries. Empty when the entries are too few (or too many, beyond
    /// `u32`) to need it.
    starts: Vec<u32>,
    bits: u32,
}

impl Sorted {
    /// Entries of one kind, sorted by [`sort_entries`], with their table.
    fn from_sorted(mut v: Vec<Entry>) -> Self {
        v.shrink_to_fit();
        let n = v.len();
        let buckets = n / PER_BUCKET;
        if buckets < 2 || u32::try_from(n).is_err() {
            return Self {
                entries: v,
                starts: Vec::new(),
                bits: 0,
            };
        }
        let bits = buckets.ilog2().min(MAX_BUCKET_BITS);
        // Count each bucket's entries one place up, then sum: starts[b] is
        // the number of entries in buckets before b.
        let mut starts = vec![0u32; (1usize << bits) + 1];
        for e in &v {
            if let Some(c) = starts.get_mut(bucket(bits, &e.id) + 1) {
                *c += 1;
            }
        }
        let mut sum = 0u32;
        for s in &mut starts {
            sum += *s;
            *s = sum;
        }
        Self {
            entries: v,
            starts,
            bits,
        }
    }

    /// The entry of `id`, if present.
    fn find(&self, id: &BlobId) -> Option<&Entry> {
        let b = bucket(self.bits, &id.0);
        let range = match (self.starts.get(b), self.starts.get(b + 1)) {
            (Some(&lo), Some(&hi)) => self.entries.get(lo as usize..hi as usize),
            _ => Some(self.entries.as_slice()),
        }?;
        range
            .binary_search_by(|e| order(&e.id, &id.0))
            .ok()
            .and_then(|i| range.get(i))
    }

    fn memory_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.starts.capacity() * std::mem::size_of::<u32>()
    }
}

/// The bucket of `id` in a table of `2^bits` buckets: its top `bits` bits.
fn bucket(bits: u32, id: &[u8; 32]) -> usize {
    match bits {
        0 => 0,
        b => (id_prefix(id) >> (64 - b)) as usize,
    }
}

/// Collects index files, then sorts once into an [`Index`].
#[derive(Default)]
pub struct IndexBuilder {
    packs: Vec<(PackId, u64)>,
    pack_pos: HashMap<PackId, u32>,
    entries: Vec<Entry>,
}

impl IndexBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_pack(&mut self, id: PackId, size: u64, blobs: &[PackEntry]) {
        let pos = match self.pack_pos.get(&id) {
            Some(&p) => p,
            None => {
                let p = self.packs.len() as u32;
                self.packs.push((id, size));
                self.pack_pos.insert(id, p);
                p
            }
        };
        self.entries.extend(blobs.iter().map(|e| Entry {
            id: e.id.0,
            pack: pos,
            offset: e.offset,
            length: e.length,
            raw_and_kind: (e.raw_length & !TREE_BIT) | kind_bit(e.kind),
        }));
    }

    pub fn add_file(&mut self, f: &IndexFile) {
        for p in &f.packs {
            self.add_pack(p.id, p.size, &p.blobs);
        }
    }

    /// The index, sorted in place: at its largest, it takes the entries once,
    /// plus a copy of the tree entries (a few percent of them).
    pub fn build(self) -> Index {
        let (data, trees) = split_by_kind(self.entries);
        Index {
            packs: self.packs,
            data,
            trees,
            files: Vec::new(),
        }
    }
}

/// `entries` sorted (see [`sort_entries`]), data blobs and tree blobs apart.
fn split_by_kind(mut entries: Vec<Entry>) -> (Sorted, Sorted) {
    sort_entries(&mut entries);
    let trees = entries.split_off(entries.partition_point(|e| kind_of(e) == BlobKind::Data));
    (Sorted::from_sorted(entries), Sorted::from_sorted(trees))
}

/// The in-memory index: (blob kind, blob id) → location. One sorted array per
/// kind, searched through a table of buckets (see [`Sorted`]): a data blob and a tree blob
/// with the same plaintext share an id but are different objects
/// (format-spec/README.md, "Index files"), and every lookup names the kind it
/// expects, at no cost over a lookup by id alone.
#[derive(Default)]
pub struct Index {
    packs: Vec<(PackId, u64)>,
    data: Sorted,
    trees: Sorted,
    /// The index files it was loaded from, when known.
    files: Vec<IndexId>,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records which index files this index was loaded from.
    pub fn with_files(mut self, files: Vec<IndexId>) -> Self {
        self.files = files;
        self
    }

    /// The index files this index was loaded from (empty when built otherwise).
    pub fn files(&self) -> &[IndexId] {
        &self.files
    }

    fn sorted(&self, kind: BlobKind) -> &Sorted {
        match kind {
            BlobKind::Data => &self.data,
            BlobKind::Tree => &self.trees,
        }
    }

    fn find(&self, kind: BlobKind, id: &BlobId) -> Option<&Entry> {
        self.sorted(kind).find(id)
    }

    /// [`Self::contains`] of each of `ids`. The lookups don't depend on each
    /// other, so the processor overlaps their cache misses.
    pub fn contains_each(&self, kind: BlobKind, ids: &[BlobId]) -> Vec<bool> {
        let sorted = self.sorted(kind);
        ids.iter().map(|id| sorted.find(id).is_some()).collect()
    }

    pub fn contains(&self, kind: BlobKind, id: &BlobId) -> bool {
        self.find(kind, id).is_some()
    }

    /// Size of the pack that holds blob `(kind, id)`.
    pub fn pack_size_of(&self, kind: BlobKind, id: &BlobId) -> Option<u64> {
        let e = self.find(kind, id)?;
        self.packs.get(e.pack as usize).map(|(_, size)| *size)
    }

    /// Where blob `(kind, id)` is stored.
    pub fn get(&self, kind: BlobKind, id: &BlobId) -> Option<(PackId, PackEntry)> {
        let e = self.find(kind, id)?;
        let (pack, _) = *self.packs.get(e.pack as usize)?;
        Some((
            pack,
            PackEntry {
                kind: kind_of(e),
                id: *id,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_and_kind & !TREE_BIT,
            },
        ))
    }

    /// This index with the packs of `more` added, and `more`'s files recorded as
    /// loaded. A blob already in the index keeps its location; a pack already in it
    /// is not listed twice.
    pub fn extended(self, more: &[IndexFile], files: &[IndexId]) -> Index {
        let Index {
            packs,
            data,
            trees,
            files: mut loaded,
        } = self;
        let pack_pos = packs
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i as u32))
            .collect();
        // Existing packs keep their positions and new ones come after, so
        // a blob already indexed keeps its location over new copies (see
        // [`full_order`]).
        let mut entries = data.entries;
        entries.extend(trees.entries);
        let mut b = IndexBuilder {
            packs,
            pack_pos,
            entries,
        };
        for f in more {
            b.add_file(f);
        }
        loaded.extend_from_slice(files);
        let (data, trees) = split_by_kind(b.entries);
        Index {
            packs: b.packs,
            data,
            trees,
            files: loaded,
        }
    }

    pub fn packs(&self) -> impl Iterator<Item = (PackId, u64)> + '_ {
        self.packs.iter().copied()
    }

    pub fn blob_count(&self) -> usize {
        self.data.entries.len() + self.trees.entries.len()
    }

    /// Every blob and the pack it is read from, data blobs first, each kind in
    /// id order. A blob stored in several packs appears once, with the copy
    /// reads use.
    pub fn blobs(&self) -> impl Iterator<Item = (PackId, PackEntry)> + '_ {
        self.data
            .entries
            .iter()
            .chain(&self.trees.entries)
            .filter_map(|e| {
                let (pack, _) = *self.packs.get(e.pack as usize)?;
                Some((
                    pack,
                    PackEntry {
                        kind: kind_of(e),
                        id: BlobId(e.id),
                        offset: e.offset,
                        length: e.length,
                        raw_length: e.raw_and_kind & !TREE_BIT,
                    },
                ))
            })
    }

    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Bytes the blob entries and their bucket tables take in memory, for
    /// reports (48 per blob and about 1 for the tables).
    pub fn memory_bytes(&self) -> usize {
        self.data.memory_bytes() + self.trees.memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data blob entry of 50 stored and 20 plain bytes at `offset`.
    fn e(id: u8, offset: u32) -> PackEntry {
        PackEntry {
            kind: BlobKind::Data,
            id: BlobId([id; 32]),
            offset,
            length: 50,
            raw_length: 20,
        }
    }

    #[test]
    fn lookup_and_first_location_wins() {
        let mut b = IndexBuilder::new();
        b.add_pack(PackId([1; 32]), 1000, &[e(1, 42), e(2, 92)]);
        b.add_pack(PackId([2; 32]), 1000, &[e(2, 42)]);
        let idx = b.build();
        assert_eq!(
            idx.get(BlobKind::Data, &BlobId([2; 32])).unwrap().0,
            PackId([1; 32])
        );
        assert!(idx.get(BlobKind::Data, &BlobId([3; 32])).is_none());
        assert_eq!(idx.blob_count(), 2);
        assert_eq!(idx.pack_count(), 2);
        assert_eq!(idx.memory_bytes(), 2 * 48);
        let (_, got) = idx.get(BlobKind::Data, &BlobId([1; 32])).unwrap();
        assert_eq!(
            (got.offset, got.length, got.raw_length, got.kind),
            (42, 50, 20, BlobKind::Data)
        );
    }

    /// Packs added to a loaded index: their blobs are found, a blob already
    /// indexed keeps its first location, a pack already named is not listed
    /// again, and the index files are recorded.
    #[test]
    fn extended_index_keeps_first_locations_and_lists_packs_once() {
        let mut b = IndexBuilder::new();
        b.add_pack(PackId([1; 32]), 1000, &[e(1, 42), e(2, 92)]);
        let idx = b.build().with_files(vec![IndexId([7; 32])]);
        let tree = PackEntry {
            kind: BlobKind::Tree,
            ..e(2, 142)
        };
        let more = IndexFile {
            packs: vec![
                IndexPack {
                    id: PackId([2; 32]),
                    size: 1000,
                    blobs: vec![e(2, 42), e(3, 92), tree],
                },
                IndexPack {
                    id: PackId([1; 32]),
                    size: 1000,
                    blobs: vec![e(1, 42), e(2, 92)],
                },
            ],
        };
        let idx = idx.extended(&[more], &[IndexId([8; 32])]);
        assert_eq!(idx.pack_count(), 2);
        assert_eq!(idx.blob_count(), 4, "data 1, 2, 3 and tree 2");
        assert_eq!(
            idx.get(BlobKind::Data, &BlobId([2; 32])).unwrap().0,
            PackId([1; 32])
        );
        assert_eq!(
            idx.get(BlobKind::Data, &BlobId([3; 32])).unwrap().0,
            PackId([2; 32])
        );
        assert_eq!(
            idx.get(BlobKind::Tree, &BlobId([2; 32])).unwrap().0,
            PackId([2; 32])
        );
        assert_eq!(idx.files(), &[IndexId([7; 32]), IndexId([8; 32])]);
    }

    /// A lookup must find every id and no other, however the ids are spread:
    /// uniform (as keyed hashes are), all sharing their first 8 bytes (so all
    /// in one bucket of the table), or bunched at both ends (in the first and
    /// last buckets).
    #[test]
    fn lookup_holds_for_any_spread_of_ids() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let uniform = |r: u64, s: u64| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&r.to_be_bytes());
            id[8..16].copy_from_slice(&s.to_be_bytes());
            id
        };
        let shared_prefix = |r: u64, s: u64| {
            let mut id = uniform(7, r);
            id[16..24].copy_from_slice(&s.to_be_bytes());
            id
        };
        let bunched = |r: u64, s: u64| {
            uniform(
                if r % 2 == 0 {
                    r % 1000
                } else {
                    u64::MAX - r % 1000
                },
                s,
            )
        };
        let spreads: [&dyn Fn(u64, u64) -> [u8; 32]; 3] = [&uniform, &shared_prefix, &bunched];
        for (k, make) in spreads.iter().enumerate() {
            for n in [0usize, 1, 2, 33, 1000, 20_000] {
                let ids: Vec<[u8; 32]> = (0..n).map(|_| make(next(), next())).collect();
                let entries: Vec<PackEntry> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| PackEntry {
                        kind: BlobKind::Data,
                        id: BlobId(*id),
                        offset: i as u32,
                        length: 30,
                        raw_length: 1,
                    })
                    .collect();
                let mut b = IndexBuilder::new();
                b.add_pack(PackId([1; 32]), 1 << 30, &entries);
                let idx = b.build();
                // From 8 entries on, lookups go through a table of buckets.
                assert_eq!(idx.data.bits > 0, n >= 8, "n {n}");
                for (i, id) in ids.iter().enumerate() {
                    let (_, e) = idx
                        .get(BlobKind::Data, &BlobId(*id))
                        .expect("present id found");
                    assert_eq!(e.offset, i as u32, "spread {k}, n {n}");
                }
                let mut queries: Vec<BlobId> = Vec::new();
                for _ in 0..1000 {
                    let absent = make(next(), next());
                    assert!(
                        !idx.contains(BlobKind::Data, &BlobId(absent)),
                        "spread {k}, n {n}"
                    );
                    queries.push(BlobId(absent));
                }
                queries.extend(ids.iter().step_by(3).map(|id| BlobId(*id)));
                let each = idx.contains_each(BlobKind::Data, &queries);
                let one_by_one: Vec<bool> = queries
                    .iter()
                    .map(|q| idx.contains(BlobKind::Data, q))
                    .collect();
                assert_eq!(each, one_by_one, "spread {k}, n {n}");
                assert_eq!(each.iter().filter(|&&b| b).count(), ids.len().div_ceil(3));
                // Neighbours of present ids, one bit off, are absent too.
                for id in ids.iter().take(200) {
                    let mut near = *id;
                    near[31] ^= 1;
                    assert!(
                        !idx.contains(BlobKind::Data, &BlobId(near)),
                        "spread {k}, n {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn kind_survives_the_packed_length() {
        let t = PackEntry {
            kind: BlobKind::Tree,
            id: BlobId([5; 32]),
            offset: 42,
            length: 60,
            raw_length: (1 << 31) - 1,
        };
        let mut b = IndexBuilder::new();
        b.add_pack(PackId([1; 32]), 1000, &[t]);
        let idx = b.build();
        assert_eq!(idx.get(BlobKind::Tree, &t.id).unwrap().1, t);
        assert!(idx.get(BlobKind::Data, &t.id).is_none());
    }

    /// A data blob and a tree blob with the same plaintext have the same id but
    /// are two objects: each is found under its own kind, and only there, however
    /// many neighbours surround them and in whichever order they were added.
    #[test]
    fn a_data_blob_and_a_tree_blob_may_share_an_id() {
        let shared = BlobId([0x55; 32]);
        let entry = |kind, id, offset| PackEntry {
            kind,
            id,
            offset,
            length: 40,
            raw_length: 8,
        };
        for tree_first in [false, true] {
            let mut b = IndexBuilder::new();
            let mut first = vec![entry(BlobKind::Data, shared, 42)];
            let mut second = vec![entry(BlobKind::Tree, shared, 42)];
            if tree_first {
                std::mem::swap(&mut first, &mut second);
            }
            // Neighbours on both sides, so interpolation has something to skip.
            for i in (0..100u8).filter(|&i| i != 0x55) {
                first.push(entry(
                    BlobKind::Data,
                    BlobId([i; 32]),
                    100 + u32::from(i) * 40,
                ));
            }
            b.add_pack(PackId([1; 32]), 1 << 20, &first);
            b.add_pack(PackId([2; 32]), 1 << 20, &second);
            let idx = b.build();
            assert_eq!(idx.blob_count(), 101);
            let (data_pack, data) = idx.get(BlobKind::Data, &shared).unwrap();
            let (tree_pack, tree) = idx.get(BlobKind::Tree, &shared).unwrap();
            assert_eq!((data.kind, tree.kind), (BlobKind::Data, BlobKind::Tree));
            assert_ne!(data_pack, tree_pack);
            assert_eq!(
                idx.contains_each(BlobKind::Tree, &[shared, BlobId([3; 32])]),
                vec![true, false]
            );
            assert_eq!(
                idx.contains_each(BlobKind::Data, &[shared, BlobId([3; 32])]),
                vec![true, true]
            );
        }
    }

    #[test]
    fn index_files_are_split_by_packs_and_by_blobs() {
        let pack = |i: usize, n: usize| IndexPack {
            id: PackId([i as u8; 32]),
            size: 1 << 20,
            blobs: vec![
                PackEntry {
                    kind: BlobKind::Tree,
                    id: BlobId([1; 32]),
                    offset: 42,
                    length: 40,
                    raw_length: 8,
                };
                n
            ],
        };
        let many_small: Vec<IndexPack> = (0..2 * PACKS_PER_INDEX_FILE + 1)
            .map(|i| pack(i, 1))
            .collect();
        let files = split_into_files(many_small);
        assert_eq!(
            files.iter().map(|f| f.packs.len()).collect::<Vec<_>>(),
            [2000, 2000, 1]
        );
        let crowded = vec![
            pack(1, BLOBS_PER_INDEX_FILE / 2),
            pack(2, BLOBS_PER_INDEX_FILE / 2 + 1),
            pack(3, BLOBS_PER_INDEX_FILE + 5),
            pack(4, 1),
        ];
        let files = split_into_files(crowded);
        let shape: Vec<Vec<usize>> = files
            .iter()
            .map(|f| f.packs.iter().map(|p| p.blobs.len()).collect())
            .collect();
        assert_eq!(
            shape,
            [
                vec![BLOBS_PER_INDEX_FILE / 2],
                vec![BLOBS_PER_INDEX_FILE / 2 + 1],
                vec![BLOBS_PER_INDEX_FILE + 5],
                vec![1]
            ]
        );
        assert!(split_into_files(Vec::new()).is_empty());
    }

    #[test]
    fn index_file_msgpack_round_trip() {
        let f = IndexFile {
            packs: vec![IndexPack {
                id: PackId([9; 32]),
                size: 4242,
                blobs: vec![PackEntry {
                    kind: BlobKind::Tree,
                    id: BlobId([8; 32]),
                    offset: 42,
                    length: 100,
                    raw_length: 71,
                }],
            }],
        };
        let bytes = crate::format::to_msgpack(&f);
        let back: IndexFile = crate::format::from_msgpack(&bytes, &|| "t".into()).unwrap();
        assert_eq!(back, f);
    }
}
