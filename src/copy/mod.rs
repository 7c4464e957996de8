//! `copy`: snapshots from one repository into another (format-spec §14,
//! "Copies").
//!
//! Two ways, chosen by the keys and configs of the two repositories:
//!
//! - **Blob for blob**, when the destination shares the source's id key and
//!   chunker (`init --from-repo`): ids are the same in both, so every tree and
//!   data blob the destination lacks is read from the source (decrypted, checked
//!   against its id) and stored, encrypted under the destination's keys. Data
//!   blobs keep their stored payload (compressed as the source compressed them);
//!   trees are unchanged, and so are their ids.
//! - **Re-chunked** otherwise: each file's content is read from the source in
//!   order and cut again by the destination's chunker, as a backup into the
//!   destination would cut it, so the copies deduplicate against the
//!   destination's own backups; trees are rebuilt around the new blob ids.
//!
//! Writes go through the backup's `Saver` (packs, index files every so often),
//! after adopting the packs an interrupted run left unindexed, so a copy killed at
//! any moment resumes without sending again what arrived. Each destination
//! snapshot is written once everything it names is in durable packs and index
//! files, and checked still there (format-spec §16): it is the commit point.

mod walk;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::archiver::Adopted;
use crate::archiver::saver::Saver;
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::{Snapshot, SourceProblem};

use walk::{Copier, Reference, Stop};

#[derive(Clone, Default)]
pub struct CopyOptions {
    /// Counters to update as the copy goes; totals are the files and bytes of
    /// the snapshots to copy, as their summaries give them.
    pub progress: Option<Arc<Progress>>,
}

/// What the copy reports as it goes.
pub enum Event<'a> {
    /// A source snapshot was copied; `snapshot` is the copy as written.
    Copied {
        source: SnapshotId,
        copy: SnapshotId,
        snapshot: &'a Snapshot,
        /// Blobs and stored bytes this snapshot's copy sent.
        blobs_sent: u64,
        bytes_sent: u64,
    },
    /// The destination already has this snapshot (`present`: its id there, the
    /// snapshot itself or a copy of it).
    AlreadyThere {
        source: SnapshotId,
        present: SnapshotId,
    },
    /// A source snapshot that could not be copied; the others are.
    Failed {
        source: SnapshotId,
        error: &'a Error,
    },
    /// Worth knowing, but it stops nothing: an unreadable index file, an
    /// unindexed pack that can't be adopted, an unreadable destination snapshot.
    Warning(&'a SourceProblem),
}

#[derive(Debug, Default)]
pub struct CopyReport {
    /// (id in the source, id of the new snapshot in the destination)
    pub copied: Vec<(SnapshotId, SnapshotId)>,
    /// Source snapshots the destination already had.
    pub already_there: Vec<SnapshotId>,
    /// Source snapshots that could not be copied, and why.
    pub failed: Vec<(SnapshotId, Error)>,
    /// Tree and data blobs stored in the destination.
    pub blobs_sent: u64,
    /// Stored bytes written to the destination: packs, index files, snapshots.
    pub bytes_sent: u64,
    /// Plaintext bytes of the blobs sent.
    pub bytes_new: u64,
    /// Whether contents were cut again by the destination's chunker (the two
    /// repositories don't share ids); false: copied blob for blob.
    pub rechunked: bool,
    /// Packs an interrupted run left unindexed, indexed and reused.
    pub adopted: Adopted,
}

/// Whether blobs have the same ids and files the same chunks in both: the same
/// id key (compared through the keyed id of a fixed probe, as keys never leave
/// their repository), chunker seed and chunker sizes.
pub fn shares_ids(a: &Repository, b: &Repository) -> bool {
    const PROBE: &[u8] = b"cairn copy: do these two repositories share blob ids?";
    a.key().blob_id(PROBE) == b.key().blob_id(PROBE)
        && a.key().chunker_seed() == b.key().chunker_seed()
        && a.config().chunker == b.config().chunker
}

/// Copies the snapshots `snapshots` of `src` that `dst` lacks into `dst`, oldest
/// first. A snapshot that can't be read, or one of whose trees or blobs can't
/// be, is reported (`Event::Failed`, [`CopyReport::failed`]) and skipped; an
/// error writing to `dst`, or an interruption, stops the copy (snapshots copied
/// by then stay, and what was written for the rest is indexed for the next run).
pub fn copy(
    src: &Arc<Repository>,
    dst: &Arc<Repository>,
    snapshots: &[SnapshotId],
    opts: &CopyOptions,
    interrupt: &AtomicBool,
    report: &(dyn Fn(Event) + Sync),
) -> Result<CopyReport> {
    let _src_lock = crate::lock::acquire(src, false)?;
    let dst_lock = crate::lock::acquire(dst, false)?;
    let warn = |path: String, error: String| report(Event::Warning(&SourceProblem { path, error }));
    let src_index = src.load_index(&mut |id, e| {
        warn(
            format!("index {id} of the source"),
            format!("unreadable, left out ({e}); snapshots that need blobs only it lists fail"),
        )
    })?;
    let dst_index = dst.load_index(&mut |id, e| {
        warn(
            format!("index {id}"),
            format!(
                "unreadable, left out ({e}); blobs only it lists are sent again. \
                 `cairn check` reports it, `cairn repair index` rebuilds it"
            ),
        )
    })?;
    let (dst_index, adopted) =
        crate::archiver::adopt::adopt_unindexed(dst, dst_index, &|p| report(Event::Warning(p)))?;
    let dst_index = Arc::new(dst_index);

    let (mut have, mut copies) = present(dst, &warn)?;
    let (readable, unreadable) = src.list_snapshots_lenient()?;
    let wanted: HashSet<SnapshotId> = snapshots.iter().copied().collect();
    // The source's own copies name their original: a parent is looked up by it.
    let origin_of: HashMap<SnapshotId, SnapshotId> = readable
        .iter()
        .map(|(id, s)| (*id, s.original.unwrap_or(*id)))
        .collect();
    let todo: Vec<(SnapshotId, Snapshot)> = readable
        .iter()
        .filter(|(id, _)| wanted.contains(id))
        .cloned()
        .collect();

    let mut out = CopyReport {
        rechunked: !shares_ids(src, dst),
        adopted,
        ..CopyReport::default()
    };
    let progress = opts.progress.clone().unwrap_or_default();
    for (id, s) in &todo {
        if lookup(&have, *id, s).is_none() {
            let files = s.summary.files_new + s.summary.files_changed + s.summary.files_unchanged;
            progress.found(files, s.summary.total_bytes);
        }
    }
    progress.set_totals_final();

    let saver = Saver::new(Arc::clone(dst), Arc::clone(&dst_index));
    let mut c = Copier::new(
        src,
        &src_index,
        dst,
        saver,
        out.rechunked,
        &progress,
        interrupt,
    );
    let run = (|| -> Result<()> {
        for (id, e) in unreadable.into_iter().filter(|(id, _)| wanted.contains(id)) {
            report(Event::Failed {
                source: id,
                error: &e,
            });
            out.failed.push((id, e));
        }
        let found: HashSet<SnapshotId> = todo.iter().map(|(id, _)| *id).collect();
        for id in snapshots.iter().filter(|id| !found.contains(id)) {
            let e = Error::Missing {
                what: format!("snapshot {id}"),
                reason: "the source repository has no such snapshot".into(),
            };
            if !out.failed.iter().any(|(f, _)| f == id) {
                report(Event::Failed {
                    source: *id,
                    error: &e,
                });
                out.failed.push((*id, e));
            }
        }
        for (id, s) in todo {
            if interrupt.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            if let Some(present) = lookup(&have, id, &s) {
                report(Event::AlreadyThere {
                    source: id,
                    present,
                });
                out.already_there.push(id);
                continue;
            }
            let before = (c.saver.stats.clone(), out.bytes_sent);
            let reference = reference(id, &s, &readable, &have, &copies);
            let tree = match c.copy_tree(&s.tree, reference) {
                Ok(t) => t,
                Err(Stop::Source { path, error }) => {
                    let e = Error::CopySource {
                        snapshot: id.to_hex(),
                        path,
                        source: Box::new(error),
                    };
                    report(Event::Failed {
                        source: id,
                        error: &e,
                    });
                    out.failed.push((id, e));
                    continue;
                }
                Err(Stop::Fatal(e)) => return Err(e),
            };
            // The commit point: everything the snapshot names is in durable
            // packs and index files, and still there (format-spec §16).
            c.saver.flush()?;
            c.saver.verify_written()?;
            crate::archiver::commit::verify_relied_on(dst, &dst_index)?;
            dst_lock.still_valid()?;
            let original = s.original.unwrap_or(id);
            let parent = s
                .parent
                .map(|p| origin_of.get(&p).copied().unwrap_or(p))
                .and_then(|p| have.get(&p).copied());
            let copy = Snapshot {
                tree,
                parent,
                original: Some(original),
                // It names a snapshot of the source repository, not of this one.
                replaces: None,
                program_version: if out.rechunked {
                    crate::archiver::program_version()
                } else {
                    s.program_version.clone()
                },
                ..s
            };
            let (new_id, size) = dst.save_snapshot(&copy)?;
            out.bytes_sent += size;
            have.insert(original, new_id);
            have.insert(new_id, new_id);
            copies.insert(new_id, copy.clone());
            out.copied.push((id, new_id));
            let st = &c.saver.stats;
            report(Event::Copied {
                source: id,
                copy: new_id,
                snapshot: &copies[&new_id],
                blobs_sent: st.data_blobs_new + st.tree_blobs_new
                    - before.0.data_blobs_new
                    - before.0.tree_blobs_new,
                bytes_sent: st.bytes_written - before.0.bytes_written + out.bytes_sent - before.1,
            });
        }
        Ok(())
    })();
    // Index what was written, even after an error, so the next run reuses it.
    let finished = c.saver.finish();
    run?;
    finished?;
    let st = &c.saver.stats;
    out.blobs_sent = st.data_blobs_new + st.tree_blobs_new;
    out.bytes_new = st.bytes_new;
    out.bytes_sent += st.bytes_written + out.adopted.bytes_written;
    Ok(out)
}

/// The destination's snapshots by id, and which snapshots it has, by their ids
/// and the ids of the snapshots they copy: id or original → the destination's
/// snapshot.
type Present = (
    HashMap<SnapshotId, SnapshotId>,
    HashMap<SnapshotId, Snapshot>,
);

fn present(dst: &Repository, warn: &dyn Fn(String, String)) -> Result<Present> {
    let (readable, unreadable) = dst.list_snapshots_lenient()?;
    for (id, e) in unreadable {
        warn(
            format!("snapshot {id}"),
            format!(
                "unreadable ({e}); if it is a copy of one of the snapshots being copied, \
                 that one is copied again"
            ),
        );
    }
    let mut have = HashMap::new();
    for (id, s) in &readable {
        have.insert(*id, *id);
        if let Some(o) = s.original {
            have.insert(o, *id);
        }
    }
    Ok((have, readable.into_iter().collect()))
}

/// For re-chunking `s` (`id` in the source): an earlier source snapshot that the
/// destination has a faithful copy of (the same errors recorded: not one that
/// `repair snapshots` cut down) — `s`'s parent if it can, else the latest one of
/// the same host and paths.
fn reference(
    id: SnapshotId,
    s: &Snapshot,
    sources: &[(SnapshotId, Snapshot)],
    have: &HashMap<SnapshotId, SnapshotId>,
    copies: &HashMap<SnapshotId, Snapshot>,
) -> Option<Reference> {
    let usable = |sid: &SnapshotId, before: &Snapshot| {
        let there = lookup(have, *sid, before)?;
        let copy = copies.get(&there)?;
        (copy.errors == before.errors).then_some(Reference {
            source: before.tree,
            copy: copy.tree,
        })
    };
    let parent = s
        .parent
        .and_then(|p| sources.iter().find(|(i, _)| *i == p))
        .and_then(|(i, p)| usable(i, p));
    if parent.is_some() {
        return parent;
    }
    let mut paths: Vec<&String> = s.paths.iter().collect();
    paths.sort();
    sources
        .iter()
        .rev()
        .filter(|(i, b)| {
            let mut theirs: Vec<&String> = b.paths.iter().collect();
            theirs.sort();
            *i != id && b.hostname == s.hostname && theirs == paths && b.sort_key() <= s.sort_key()
        })
        .find_map(|(i, b)| usable(i, b))
}

/// The destination's snapshot that is `s` (whose id in the source is `id`) or
/// a copy of the same original, if any.
fn lookup(
    have: &HashMap<SnapshotId, SnapshotId>,
    id: SnapshotId,
    s: &Snapshot,
) -> Option<SnapshotId> {
    have.get(&id)
        .or_else(|| s.original.and_then(|o| have.get(&o)))
        .copied()
}

/// Which of `wanted` (source snapshots) `dst` lacks: those that are neither
/// there nor copied there (by id or by `original`). Unreadable destination
/// snapshots count as absent, as in [`copy`].
pub fn missing(dst: &Repository, wanted: &[(SnapshotId, Snapshot)]) -> Result<Vec<SnapshotId>> {
    let (have, _) = present(dst, &|_, _| {})?;
    Ok(wanted
        .iter()
        .filter(|(id, s)| lookup(&have, *id, s).is_none())
        .map(|(id, _)| *id)
        .collect())
}
