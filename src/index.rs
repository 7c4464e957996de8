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
use crate::id::{BlobId, PackId};
use crate::pack::{BlobKind, PackEntry};

/// Largest index file accepted.
pub const INDEX_MAX_LEN: u64 = 1024 * 1024 * 1024;

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

/// Where a blob is. `pack` indexes `Index::packs`.
#[derive(Clone, Copy, Debug)]
struct Location {
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    kind: BlobKind,
}

/// The in-memory index: blob id → location.
#[derive(Default)]
pub struct Index {
    packs: Vec<(PackId, u64)>,
    pack_pos: HashMap<PackId, u32>,
    blobs: HashMap<BlobId, Location>,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_pack(&mut self, id: PackId, size: u64, entries: &[PackEntry]) {
        let pos = match self.pack_pos.get(&id) {
            Some(&p) => p,
            None => {
                let p = self.packs.len() as u32;
                self.packs.push((id, size));
                self.pack_pos.insert(id, p);
                p
            }
        };
        for e in entries {
            // A blob stored twice keeps its first location; either copy is valid.
            self.blobs.entry(e.id).or_insert(Location {
                pack: pos,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
                kind: e.kind,
            });
        }
    }

    pub fn add_file(&mut self, f: &IndexFile) {
        for p in &f.packs {
            self.add_pack(p.id, p.size, &p.blobs);
        }
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn get(&self, id: &BlobId) -> Option<(PackId, PackEntry)> {
        let l = self.blobs.get(id)?;
        let (pack, _) = *self.packs.get(l.pack as usize)?;
        Some((
            pack,
            PackEntry {
                kind: l.kind,
                id: *id,
                offset: l.offset,
                length: l.length,
                raw_length: l.raw_length,
            },
        ))
    }

    pub fn packs(&self) -> impl Iterator<Item = (PackId, u64)> + '_ {
        self.packs.iter().copied()
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_first_location_wins() {
        let e = |id: u8, offset| PackEntry {
            kind: BlobKind::Data,
            id: BlobId([id; 32]),
            offset,
            length: 50,
            raw_length: 20,
        };
        let mut idx = Index::new();
        idx.add_pack(PackId([1; 32]), 1000, &[e(1, 42), e(2, 92)]);
        idx.add_pack(PackId([2; 32]), 1000, &[e(2, 42)]);
        assert_eq!(idx.get(&BlobId([2; 32])).unwrap().0, PackId([1; 32]));
        assert!(idx.get(&BlobId([3; 32])).is_none());
        assert_eq!(idx.blob_count(), 2);
        assert_eq!(idx.pack_count(), 2);
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
