//! Batches: the files, hard links and metadata the walk has gathered, written
//! together once there are enough of them. A batch is bounded in entries and in
//! blobs, so a restore's memory does not grow with the number of files; within
//! it, blob reads are still grouped by pack span across files.

use std::collections::HashMap;
use std::mem;
use std::path::PathBuf;

use rayon::prelude::*;

use super::metadata::apply_metadata;
use super::target::{self, Decision};
use super::{Action, State, contents, verify};
use crate::error::{Error, Result};
use crate::tree::{Node, Timestamp};

/// Entries (files, links, other entries and directories awaiting metadata) a
/// batch holds before it is written: a few MiB of nodes and paths.
const BATCH_ENTRIES: usize = 8192;
/// Blobs a batch's files may name before it is written (one file naming more is
/// a batch of its own: its node holds them anyway).
const BATCH_BLOBS: usize = 1 << 16;

pub(super) struct FileJob {
    pub(super) dest: PathBuf,
    pub(super) node: Node,
    /// Its directory was made by this restore, so nothing is in its place.
    pub(super) fresh: bool,
}

/// A path to create as a hard link to the first path restored with its inode.
pub(super) struct LinkJob {
    pub(super) dest: PathBuf,
    pub(super) mtime: Timestamp,
    pub(super) fresh: bool,
    inode: (u64, u64),
}

/// What became of the first path restored with an inode that has hard links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SourceStatus {
    /// Not written yet (its batch is the current one).
    Pending,
    Written,
    Unchanged,
    /// An existing file the overwrite mode kept: not the snapshot's contents.
    Kept,
    Failed,
}

struct LinkSource {
    dest: PathBuf,
    status: SourceStatus,
}

#[derive(Default)]
pub(super) struct Batch {
    files: Vec<FileJob>,
    links: Vec<LinkJob>,
    /// Entries other than files and directories, whose metadata is applied
    /// after the batch's contents (a file's is applied as soon as its last
    /// chunk is written).
    pub(super) meta: Vec<(PathBuf, Node)>,
    /// Directories the walk has left, deepest first.
    pub(super) dirs: Vec<(PathBuf, Node)>,
    blobs: usize,
    /// (device, inode) → the first path restored with it. Kept across batches
    /// for the whole restore; it holds only files that have hard links.
    sources: HashMap<(u64, u64), LinkSource>,
}

impl Batch {
    pub(super) fn add_file(&mut self, dest: PathBuf, node: &Node, fresh: bool) {
        if node.links > 1 && node.inode != 0 {
            let inode = (node.device, node.inode);
            if self.sources.contains_key(&inode) {
                self.links.push(LinkJob {
                    dest,
                    mtime: node.mtime,
                    fresh,
                    inode,
                });
                return;
            }
            let status = SourceStatus::Pending;
            let source = LinkSource {
                dest: dest.clone(),
                status,
            };
            self.sources.insert(inode, source);
        }
        self.blobs += node.content.len();
        self.files.push(FileJob {
            dest,
            node: node.clone(),
            fresh,
        });
    }

    pub(super) fn is_full(&self) -> bool {
        let entries = self.files.len() + self.links.len() + self.meta.len() + self.dirs.len();
        entries >= BATCH_ENTRIES || self.blobs >= BATCH_BLOBS
    }

    /// Writes the batch: contents, hard links, metadata, then verification.
    pub(super) fn flush(&mut self, state: &State) -> Result<()> {
        let files = mem::take(&mut self.files);
        self.blobs = 0;
        let decisions: Vec<Decision> = files
            .par_iter()
            .map(|job| target::decide_file(state, job))
            .collect();
        let to_write: Vec<&FileJob> = files
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| **d == Decision::Write)
            .map(|(job, _)| job)
            .collect();
        let written: Vec<bool> = if state.opts.dry_run {
            // In the walk's order, for the listing.
            let mut written = Vec::with_capacity(to_write.len());
            for (job, d) in files.iter().zip(&decisions) {
                match d {
                    Decision::Write => written.push(plan_write(state, job)),
                    _ => record_kept(state, job, *d),
                }
            }
            written
        } else {
            for job in &to_write {
                state.progress.found(1, job.node.size);
            }
            let written = contents::write_contents(state, &to_write);
            if state.interrupted() {
                return Err(Error::Interrupted);
            }
            files
                .par_iter()
                .zip(&decisions)
                .for_each(|(job, d)| record_kept(state, job, *d));
            written
        };
        let mut written_iter = written.iter();
        for (job, d) in files.iter().zip(&decisions) {
            let status = match d {
                Decision::Write => match written_iter.next() {
                    Some(true) => SourceStatus::Written,
                    _ => SourceStatus::Failed,
                },
                Decision::Unchanged { .. } => SourceStatus::Unchanged,
                Decision::Keep => SourceStatus::Kept,
            };
            let inode = (job.node.device, job.node.inode);
            if let Some(source) = self.sources.get_mut(&inode) {
                if source.dest == job.dest {
                    source.status = status;
                }
            }
        }
        for link in mem::take(&mut self.links) {
            let source = self.sources.get(&link.inode);
            let (first, status) = match source {
                Some(s) => (s.dest.as_path(), s.status),
                None => (link.dest.as_path(), SourceStatus::Failed),
            };
            target::make_link(state, &link, first, status);
        }
        // Verified before directories get their permissions: one without
        // search permission would keep a user from reading back its own files.
        if state.opts.verify && !state.opts.dry_run {
            to_write
                .par_iter()
                .zip(&written)
                .filter(|(_, ok)| **ok)
                .for_each(
                    |(job, _)| match verify::check_file(state, &job.dest, &job.node) {
                        Ok(()) => state.with(|s| s.files_verified += 1),
                        Err(why) => state.error(format!("{}: verify: {why}", job.dest.display())),
                    },
                );
        }
        let meta = mem::take(&mut self.meta);
        let dirs = mem::take(&mut self.dirs);
        if !state.opts.dry_run {
            meta.par_iter()
                .for_each(|(dest, node)| apply_metadata(state, dest, None, node));
            for (dest, node) in &dirs {
                apply_metadata(state, dest, None, node);
            }
        }
        Ok(())
    }
}

/// A dry run's stand-in for writing a file: reports it, and checks that every
/// blob it needs is in the index, as writing it would.
fn plan_write(state: &State, job: &FileJob) -> bool {
    state.planned(Action::Restore, &job.dest);
    if let Some(id) = job
        .node
        .content
        .iter()
        .find(|id| !state.index.contains(crate::pack::BlobKind::Data, id))
    {
        state.error(format!(
            "{}: data blob {id} is not named by any index file; the file would not be restored",
            job.dest.display()
        ));
        return false;
    }
    state
        .bytes
        .fetch_add(job.node.size, std::sync::atomic::Ordering::Relaxed);
    state.with(|s| s.files += 1);
    true
}

/// Counts (and reports, in a dry run) a file that is not written because the
/// target already has it; an unchanged one gets the snapshot's metadata.
fn record_kept(state: &State, job: &FileJob, decision: Decision) {
    match decision {
        Decision::Write => {}
        Decision::Unchanged { verified } => {
            state.planned(Action::Unchanged, &job.dest);
            if !state.opts.dry_run {
                apply_metadata(state, &job.dest, None, &job.node);
            }
            state.with(|s| {
                s.unchanged += 1;
                s.files_verified += u64::from(verified);
            });
        }
        Decision::Keep => {
            state.planned(Action::Keep, &job.dest);
            state.with(|s| s.kept += 1);
        }
    }
}
