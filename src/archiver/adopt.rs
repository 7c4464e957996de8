//! Adopting packs that no index file names (format-spec §16, "backup").
//!
//! A backup killed before it wrote the index file for its latest packs leaves
//! those packs stored but unknown to the index, so a re-run would read and store
//! all their blobs again. Before it starts, a backup lists `data/`, reads the
//! whole of every pack the index doesn't name, writes index files for the packs
//! whose content hashes to their name and whose header authenticates and is
//! valid and whose every blob opens, and deduplicates against their blobs.
//! Hashing the whole pack (not only its header) and opening its blobs keeps a
//! damaged pack out of the index: such a pack is
//! left unindexed by `repair packs` if it is killed before deleting it, and
//! adopting it would bring the damaged blobs back for later backups to rely on.
//!
//! A pack another backup is writing right now under its shared lock is adopted
//! the same way once it is complete under its name (the backend never lists a
//! partial file): that backup later indexes it too, and a pack named by two
//! index files with the same description is acceptable to every reader
//! (format-spec §12). Prune, which deletes packs, holds the exclusive lock, so no
//! pack can go between the listing and the index file written here; a prune that
//! took this backup's lock for stale is caught before the snapshot as for any
//! other pack the backup relied on (see `commit`).

use std::collections::HashSet;

use rayon::prelude::*;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::{IndexId, PackId};
use crate::index::{Index, IndexPack};
use crate::pack;
use crate::repository::Repository;
use crate::snapshot::SourceProblem;

/// What adoption found and wrote.
#[derive(Clone, Debug, Default)]
pub struct Adopted {
    /// Packs indexed from their headers.
    pub packs: u64,
    /// Blobs those packs hold.
    pub blobs: u64,
    /// Bytes of the index files written for them.
    pub bytes_written: u64,
    /// Unindexed packs left alone because they could not be read, did not hash
    /// to their name, or their header did not authenticate or was invalid.
    pub skipped: u64,
}

/// Indexes the packs under `data/` that `index` does not name, and returns the
/// index with them added. A pack that can't be used is reported through
/// `warn` and left alone: its blobs are stored again if needed, and `check`
/// and `prune` deal with it.
pub(crate) fn adopt_unindexed(
    repo: &Repository,
    index: Index,
    warn: &dyn Fn(&SourceProblem),
) -> Result<(Index, Adopted)> {
    let mut adopted = Adopted::default();
    let known: HashSet<PackId> = index.packs().map(|(id, _)| id).collect();
    let unindexed: Vec<(PackId, u64)> = repo
        .backend()
        .list(FileType::Pack)?
        .into_iter()
        .filter_map(|e| PackId::from_name(&e.name).ok().map(|id| (id, e.size)))
        .filter(|(id, _)| !known.contains(id))
        .collect();
    if unindexed.is_empty() {
        return Ok((index, adopted));
    }
    let max_pack_len = u64::from(crate::config::MAX_PACK_SIZE) * 2;
    let read: Vec<(PackId, u64, Result<Vec<pack::PackEntry>>)> = unindexed
        .into_par_iter()
        .map(|(id, size)| {
            let header = repo
                .backend()
                .read(FileType::Pack, &id.to_hex(), max_pack_len)
                .and_then(|bytes| {
                    let actual = PackId::of_stored(&bytes);
                    if actual != id {
                        return Err(Error::corrupt(
                            format!("pack {id}"),
                            format!("its content hashes to {actual}, not to its name"),
                        ));
                    }
                    let (session, entries) =
                        pack::header_from_bytes(repo.key(), repo.repo_id(), &id, &bytes)?;
                    // A pack can hash to its name and still hold a blob that
                    // doesn't open (written so): `repair packs` takes such a pack
                    // out of the index, and adopting it would bring the blob back.
                    for e in &entries {
                        let end = (e.offset as usize).saturating_add(e.length as usize);
                        let sealed = bytes.get(e.offset as usize..end).ok_or_else(|| {
                            Error::corrupt(
                                format!("blob {}", e.id),
                                "lies past the end of the pack",
                            )
                        })?;
                        pack::open_blob(repo.key(), &session, repo.repo_id(), e, sealed, &id)?;
                    }
                    Ok(entries)
                });
            (id, size, header)
        })
        .collect();
    let mut packs = Vec::new();
    for (id, size, header) in read {
        match header {
            Ok(blobs) if !blobs.is_empty() => {
                adopted.blobs += blobs.len() as u64;
                packs.push(IndexPack { id, size, blobs });
            }
            Ok(_) => {}
            Err(e) => {
                adopted.skipped += 1;
                warn(&SourceProblem {
                    path: format!("pack {id}"),
                    error: format!(
                        "is in no index and can't be used ({e}); left alone, \
                         its blobs are stored again if needed. `cairn check --read-data` \
                         examines it, `cairn prune` removes it"
                    ),
                });
            }
        }
    }
    adopted.packs = packs.len() as u64;
    let files = crate::index::split_into_files(packs);
    let mut ids: Vec<IndexId> = Vec::with_capacity(files.len());
    for f in &files {
        let (id, size) = repo.save_index(f)?;
        adopted.bytes_written += size;
        ids.push(id);
    }
    Ok((index.extended(&files, &ids), adopted))
}
