//! Small files: read whole, many at a time on the rayon pool while the walk goes
//! on, then stored; and the directories whose trees wait for them.

use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use rayon::prelude::*;

use super::read::{changed_while_read, open_for_backup};
use super::walk::on_pool;
use super::{Archiver, Status};
use crate::chunker::Chunk;
use crate::error::{Error, Result};
use crate::format;
use crate::id::BlobId;
use crate::pack::BlobKind;
use crate::tree::{Node, Tree, TreeView};

/// Files up to this size are read whole, many at a time on the rayon pool: one
/// small file alone can't keep the cores (or a NAS's queue) busy.
pub(super) const SMALL_FILE: u64 = 4 * 1024 * 1024;
/// A batch of small files holds at most about this many bytes (one file may
/// take it up to SMALL_FILE)... One batch is read while the one before is
/// stored, so two are in memory. Measured on the benchmark's trees against 2,
/// 4 and 8 MiB: as fast, and 8 MiB batches held 10–15 MiB more.
pub(super) const SMALL_BATCH_BYTES: u64 = 1024 * 1024;
/// ...and at most this many files.
pub(super) const SMALL_BATCH_FILES: usize = 512;

/// Small files queued for reading, the batch being read on the pool, and the
/// directories whose trees wait for them.
///
/// A batch is read on the pool while the walk goes on: it lists and probes the
/// next directories and queues their small files, and the batch's chunks are
/// stored only when the next batch starts. A directory whose walk is done
/// while some of its files (or subdirectories) are still outstanding stays
/// open here; its tree is finished, and its node handed to its parent's tree,
/// when the last of them arrives. Reading each directory's files before going
/// on left the pool idle while the walk listed directories, and the walk idle
/// while the pool read: on the benchmark's copy of /usr, the two cores were
/// busy 1.52 of the time on average, and 1.71 with this.
#[derive(Default)]
pub(super) struct Deferral {
    queue: Vec<Deferred>,
    queued_bytes: u64,
    reading: Option<Reading>,
    dirs: Vec<Option<OpenDir>>,
    free: Vec<usize>,
    /// The directory whose entries the walk is deciding.
    pub(super) current: Option<usize>,
    /// Tree nodes (new and parent snapshot's) held by directories left
    /// waiting after their walk, at most [`HELD_NODES`].
    held: usize,
}

/// At most this many tree nodes (of a directory's new tree and its tree in the
/// parent snapshot) are held by directories left waiting for their files: tens
/// of MiB at worst. Without a bound, a re-backup of a tree of large
/// directories each with one changed small file would keep hundreds of them
/// in memory until a batch filled up; one that would go over is finished at
/// once, after reading what is queued, as before batches spanned directories.
const HELD_NODES: usize = 64 * 1024;

/// A batch on the pool: its files come back with what was read of each.
type Reading = Receiver<Vec<(Deferred, SmallRead)>>;

/// A directory whose tree is being built.
pub(super) struct OpenDir {
    pub(super) path: PathBuf,
    pub(super) tree: Tree,
    /// Its own node: the finished tree's id becomes its subtree.
    pub(super) node: Node,
    /// The open directory it is in, if any.
    pub(super) parent: Option<usize>,
    /// Its tree in the parent snapshot, and that tree's id.
    pub(super) old: Option<Arc<TreeView>>,
    /// Which of `old`'s nodes the new tree has unchanged. They stay in `old`
    /// (encoded) rather than being copied into `tree`, so that a large
    /// directory isn't held twice: when all are unchanged (and nothing else
    /// arrived), `old`'s id is the tree's; otherwise they are decoded into
    /// `tree` when it is finished.
    pub(super) reused: Vec<bool>,
    pub(super) old_id: Option<BlobId>,
    /// Entries (small files, subdirectories) not in `tree` yet.
    pub(super) outstanding: usize,
    /// Whether the walk has decided all its entries.
    pub(super) walked: bool,
    /// What it counts for in [`Deferral::held`] while it waits.
    pub(super) held: usize,
}

impl Deferral {
    pub(super) fn open(&mut self, dir: OpenDir) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.dirs[slot] = Some(dir);
                slot
            }
            None => {
                self.dirs.push(Some(dir));
                self.dirs.len() - 1
            }
        }
    }

    pub(super) fn dir(&mut self, slot: usize) -> Result<&mut OpenDir> {
        self.dirs
            .get_mut(slot)
            .and_then(Option::as_mut)
            .ok_or_else(|| Error::invalid(format!("internal: no open directory {slot}")))
    }

    fn close(&mut self, slot: usize) -> Result<OpenDir> {
        let dir = self
            .dirs
            .get_mut(slot)
            .and_then(Option::take)
            .ok_or_else(|| Error::invalid(format!("internal: no open directory {slot}")))?;
        self.free.push(slot);
        Ok(dir)
    }

    /// Whether any directory is still open.
    pub(super) fn any_open(&self) -> bool {
        self.dirs.iter().any(Option::is_some)
    }
}

impl Archiver<'_> {
    /// Queues a small file of the open directory `dir`, to be read with others.
    pub(super) fn defer(&mut self, file: Deferred) -> Result<()> {
        self.deferral.dir(file.dir)?.outstanding += 1;
        self.deferral.queued_bytes += file.node.size;
        self.deferral.queue.push(file);
        if self.deferral.queued_bytes >= SMALL_BATCH_BYTES
            || self.deferral.queue.len() >= SMALL_BATCH_FILES
        {
            self.start_batch()?;
        }
        Ok(())
    }

    /// Sends the queued files to the pool, then stores what the batch before
    /// them read, while they are read.
    fn start_batch(&mut self) -> Result<()> {
        self.check_interrupt()?;
        let files = std::mem::take(&mut self.deferral.queue);
        self.deferral.queued_bytes = 0;
        let previous = self.deferral.reading.take();
        if let Some(first) = files.first() {
            self.progress.set_current(&first.path);
            let repo = Arc::clone(&self.repo);
            let blobs = self.saver.known_blobs();
            let level = self.level;
            self.deferral.reading = Some(on_pool(move || {
                let chunker = repo.chunker();
                // Also what this run stored so far, as the batch before is
                // being stored: duplicates of earlier files are not compressed.
                let known = |id: &BlobId| blobs.contains(BlobKind::Data, id);
                files
                    .into_par_iter()
                    .map(|d| {
                        let r =
                            read_small(&d.path, d.node.inode, chunker, repo.key(), level, &known);
                        (d, r)
                    })
                    .collect()
            }));
        }
        match previous {
            Some(batch) => self.store_batch(batch),
            None => Ok(()),
        }
    }

    /// Reads every queued file and stores what was read, so that no directory
    /// waits for anything: then each open directory has been finished.
    pub(super) fn drain(&mut self) -> Result<()> {
        while !self.deferral.queue.is_empty() || self.deferral.reading.is_some() {
            self.start_batch()?;
        }
        Ok(())
    }

    /// Stores the chunks of a batch that was read, puts the files' nodes in their
    /// directories' trees, and finishes each directory that has all it waited for.
    fn store_batch(&mut self, batch: Reading) -> Result<()> {
        let read = batch
            .recv()
            .map_err(|_| Error::invalid("reading a batch of small files failed"))?;
        for (mut d, r) in read {
            let node = match r {
                SmallRead::Failed(msg) => {
                    self.error(&d.path, msg);
                    self.summary.entries -= 1;
                    self.progress.done(1, d.node.size);
                    None
                }
                SmallRead::Grew => {
                    // Larger than a small file by now: stream it like a large one.
                    let stored = self.read_file(&d.path, &mut d.node, d.status)?;
                    self.progress.done(1, 0);
                    if stored {
                        Some(d.node)
                    } else {
                        self.summary.entries -= 1;
                        None
                    }
                }
                SmallRead::Done {
                    chunks,
                    read,
                    changed,
                } => {
                    let mut content = Vec::with_capacity(chunks.len());
                    for (id, len, payload) in chunks {
                        if let Some(p) = payload {
                            self.saver.add(BlobKind::Data, id, p, len)?;
                        }
                        content.push(id);
                    }
                    self.summary.bytes_read += read;
                    if let Some(why) = changed {
                        self.warning(&d.path, why.into());
                    }
                    d.node.size = read;
                    d.node.content = content;
                    self.count(d.status);
                    self.progress.done(1, read);
                    Some(d.node)
                }
            };
            self.arrived(d.dir, node)?;
        }
        Ok(())
    }

    /// An outstanding entry of the open directory `slot` is done: `node` goes in
    /// its tree (unless the entry was left out). The directory, and in turn the
    /// directories it is in, are finished if that was the last they waited for.
    fn arrived(&mut self, mut slot: usize, mut node: Option<Node>) -> Result<()> {
        loop {
            let dir = self.deferral.dir(slot)?;
            dir.tree.nodes.extend(node.take());
            debug_assert!(
                dir.outstanding > 0,
                "{}: more arrived than awaited",
                dir.path.display()
            );
            dir.outstanding = dir.outstanding.saturating_sub(1);
            // Only one the walk left waiting (`walked`, which implies an open
            // parent) is finished here; `walked_dir` finishes the others.
            let Some(parent) = dir.parent.filter(|_| dir.walked && dir.outstanding == 0) else {
                return Ok(());
            };
            node = Some(self.finish_dir(slot)?);
            slot = parent;
        }
    }

    /// The walk has decided every entry of the open directory `slot`. Its node,
    /// with the finished tree's id, if nothing is outstanding, or once
    /// everything queued was read when it has no open parent to go to later or
    /// waiting would hold more than [`HELD_NODES`]; `None` if it is left
    /// waiting, and joins its parent's tree when its last entry arrives.
    pub(super) fn walked_dir(&mut self, slot: usize) -> Result<Option<Node>> {
        let room = HELD_NODES.saturating_sub(self.deferral.held);
        let dir = self.deferral.dir(slot)?;
        if dir.outstanding > 0 {
            let held = dir.tree.nodes.len() + dir.old.as_ref().map_or(0, |t| t.len());
            match dir.parent {
                Some(parent) if held <= room => {
                    dir.walked = true;
                    dir.held = held;
                    self.deferral.held += held;
                    self.deferral.dir(parent)?.outstanding += 1;
                    return Ok(None);
                }
                // Not `walked` yet, so that what is read now only fills its
                // tree, and it is finished here.
                _ => self.drain()?,
            }
        }
        self.finish_dir(slot).map(Some)
    }

    /// Saves the tree of the open directory `slot` (or keeps its tree in the
    /// parent snapshot, if equal) and closes it; its node, with the tree's id.
    fn finish_dir(&mut self, slot: usize) -> Result<Node> {
        let OpenDir {
            path,
            mut tree,
            mut node,
            old,
            reused,
            old_id,
            held,
            ..
        } = self.deferral.close(slot)?;
        self.deferral.held = self.deferral.held.saturating_sub(held);
        // A directory whose entries all match the parent's keeps the parent's
        // tree blob, without encoding and hashing it again. (Its view took
        // nothing a whole decode of that blob would refuse: see `tree::view`.)
        let unchanged = reused.iter().filter(|&&r| r).count();
        let kept = match (&old, old_id) {
            (Some(old), Some(old_id))
                if self.reuse_trees
                    && tree.nodes.is_empty()
                    && old.id() == &old_id
                    && unchanged == old.len()
                    && self.saver.known(BlobKind::Tree, &old_id) =>
            {
                Some(old_id)
            }
            _ => None,
        };
        let id = match kept {
            Some(id) => id,
            None => {
                if let Some(old) = old {
                    tree.nodes.reserve_exact(unchanged);
                    for (i, _) in reused.iter().enumerate().filter(|(_, r)| **r) {
                        // Decoded once already, when it was compared.
                        tree.nodes.push(old.node(i)?);
                    }
                }
                // Encoding sorts the nodes by name.
                self.saver.save_tree(&mut tree).map_err(|e| match e {
                    Error::Invalid(m) => Error::invalid(format!("{}: {m}", path.display())),
                    other => other,
                })?
            }
        };
        match old_id {
            None => self.summary.dirs_new += 1,
            Some(o) if o == id => self.summary.dirs_unchanged += 1,
            Some(_) => self.summary.dirs_changed += 1,
        }
        node.subtree = Some(id);
        Ok(node)
    }
}

/// A small file waiting to be read with others in parallel.
pub(super) struct Deferred {
    pub(super) path: PathBuf,
    pub(super) node: Node,
    pub(super) status: Status,
    /// The open directory it belongs to.
    pub(super) dir: usize,
}

/// The outcome of reading a small file on the rayon pool.
enum SmallRead {
    /// Could not be read; the message is for the snapshot's error list.
    Failed(String),
    /// It grew past [`SMALL_FILE`] since it was listed.
    Grew,
    Done {
        /// Each chunk's id and length, with its encoded payload unless known.
        chunks: Vec<(BlobId, usize, Option<Vec<u8>>)>,
        read: u64,
        /// Why the file counts as changed while read, if it does.
        changed: Option<&'static str>,
    },
}

/// Reads a small file whole, chunks it, and hashes and compresses its chunks.
/// Runs on the rayon pool, so it touches nothing but its own file.
fn read_small(
    path: &Path,
    inode: u64,
    chunker: crate::chunker::Chunker,
    key: &crate::crypto::MasterKey,
    level: i32,
    known: &(dyn Fn(&BlobId) -> bool + Sync),
) -> SmallRead {
    let file = match open_for_backup(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return SmallRead::Failed("vanished before it could be read".into());
        }
        Err(e) => return SmallRead::Failed(format!("open: {e}")),
    };
    let before = match file.metadata() {
        Ok(m) if m.is_file() && m.ino() == inode => m,
        Ok(_) => {
            return SmallRead::Failed(
                "was replaced by something else while being backed up".into(),
            );
        }
        Err(e) => return SmallRead::Failed(format!("stat: {e}")),
    };
    // One spare byte first: a file that is one chunk stored raw is its own payload.
    let mut buf = Vec::with_capacity(usize::try_from(before.len()).unwrap_or(0).min(1 << 23) + 1);
    buf.push(0);
    if let Err(e) = (&file).take(SMALL_FILE + 1).read_to_end(&mut buf) {
        return SmallRead::Failed(format!("read: {e}"));
    }
    let read = buf.len() as u64 - 1;
    if read > SMALL_FILE {
        return SmallRead::Grew;
    }
    let changed = file
        .metadata()
        .ok()
        .and_then(|after| changed_while_read(&before, &after, read));
    let data = buf.get(1..).unwrap_or_default();
    let cuts = chunker.cuts(data);
    let chunks = match cuts.as_slice() {
        [_] => {
            let id = key.blob_id(data);
            let len = data.len();
            let payload = if known(&id) {
                None
            } else {
                Chunk::from_spare_first(buf).map(|c| format::encode_chunk(c, level))
            };
            vec![(id, len, payload)]
        }
        _ => cuts
            .iter()
            .map(|&(offset, len)| {
                let chunk = &data[offset..offset + len];
                let id = key.blob_id(chunk);
                let payload = (!known(&id)).then(|| format::encode_payload(chunk, level));
                (id, len, payload)
            })
            .collect(),
    };
    SmallRead::Done {
        chunks,
        read,
        changed,
    }
}
