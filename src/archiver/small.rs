//! Small files: read whole, many at a time on the rayon pool, then stored in the
//! order the walk listed them.

use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::read::{changed_while_read, open_for_backup};
use super::{Archiver, Status};
use crate::chunker::Chunk;
use crate::error::Result;
use crate::format;
use crate::id::BlobId;
use crate::pack::BlobKind;
use crate::tree::{Node, Tree};

/// Files up to this size are read whole, many at a time on the rayon pool: one
/// small file alone can't keep the cores (or a NAS's queue) busy.
pub(super) const SMALL_FILE: u64 = 4 * 1024 * 1024;
/// A batch of small files holds at most about this many bytes...
pub(super) const SMALL_BATCH_BYTES: u64 = 8 * 1024 * 1024;
/// ...and at most this many files.
pub(super) const SMALL_BATCH_FILES: usize = 512;

impl Archiver<'_> {
    /// Reads a batch of small files in parallel, then stores their chunks and adds
    /// their nodes to `tree` in order.
    pub(super) fn read_batch(&mut self, batch: Vec<Deferred>, tree: &mut Tree) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.check_interrupt()?;
        let chunker = self.repo.chunker();
        let key = self.repo.key();
        let level = self.level;
        let saver = &self.saver;
        let known = |id: &BlobId| saver.known(BlobKind::Data, id);
        if let Some(first) = batch.first() {
            self.progress.set_current(&first.path);
        }
        let results: Vec<SmallRead> = batch
            .par_iter()
            .map(|d| read_small(&d.path, d.node.inode, chunker, key, level, &known))
            .collect();
        for (mut d, r) in batch.into_iter().zip(results) {
            match r {
                SmallRead::Failed(msg) => {
                    self.error(&d.path, msg);
                    self.summary.entries -= 1;
                    self.progress.done(1, d.node.size);
                }
                SmallRead::Grew => {
                    // Larger than a small file by now: stream it like a large one.
                    let stored = self.read_file(&d.path, &mut d.node, d.status)?;
                    self.progress.done(1, 0);
                    if stored {
                        tree.nodes.push(d.node);
                    } else {
                        self.summary.entries -= 1;
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
                    tree.nodes.push(d.node);
                }
            }
        }
        Ok(())
    }
}

/// A small file waiting to be read with others in parallel.
pub(super) struct Deferred {
    pub(super) path: PathBuf,
    pub(super) node: Node,
    pub(super) status: Status,
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
