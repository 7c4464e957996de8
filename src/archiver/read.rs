//! Reading files as streams: reuse of the parent's content where the metadata
//! allows, then chunking, hashing and compressing batch by batch.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use super::saver::Saver;
use super::{Archiver, Status, node};
use crate::chunker::{Chunk, ChunkReader};
use crate::error::{Error, Result};
use crate::format;
use crate::id::BlobId;
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::tree::Node;

/// Chunks processed in parallel per batch: bounds memory while keeping every core
/// busy on a large file.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

impl Archiver<'_> {
    /// Fills `node.content` without reading the file when the parent snapshot (or
    /// another link to the same inode) already has it. Otherwise returns whether
    /// the file is new or changed, for [`Self::read_file`].
    pub(super) fn reuse_content(
        &mut self,
        node: &mut Node,
        parent: Option<&Node>,
        indexed: bool,
    ) -> Option<Status> {
        self.summary.total_bytes += node.size;
        let status = match parent {
            None => Status::New,
            Some(old)
                if !self.force
                    && node::unchanged(old, node)
                    && (indexed
                        || old
                            .content
                            .iter()
                            .all(|id| self.saver.known(BlobKind::Data, id))) =>
            {
                node.content = old.content.clone();
                self.summary.files_unchanged += 1;
                self.progress.done(1, node.size);
                return None;
            }
            // A file whose blobs are missing from the index is re-read, so that a
            // backup heals a damaged repository.
            Some(_) => Status::Changed,
        };
        if node.links > 1 {
            if let Some(content) = self.hardlinks.get(&(node.device, node.inode)) {
                if content
                    .iter()
                    .all(|id| self.saver.known(BlobKind::Data, id))
                {
                    node.content = content.clone();
                    self.count(status);
                    self.progress.done(1, node.size);
                    return None;
                }
            }
        }
        Some(status)
    }

    /// Reads a file as a stream and fills `node.content`. Returns false if the file
    /// could not be read (reported).
    pub(super) fn read_file(
        &mut self,
        path: &Path,
        node: &mut Node,
        status: Status,
    ) -> Result<bool> {
        let file = match open_for_backup(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.error(path, "vanished before it could be read".into());
                return Ok(false);
            }
            Err(e) => {
                self.error(path, format!("open: {e}"));
                return Ok(false);
            }
        };
        let before = match file.metadata() {
            Ok(m) if m.is_file() && m.ino() == node.inode => m,
            Ok(_) => {
                self.error(
                    path,
                    "was replaced by something else while being backed up".into(),
                );
                return Ok(false);
            }
            Err(e) => {
                self.error(path, format!("stat: {e}"));
                return Ok(false);
            }
        };
        let (content, read) = match self.read_content(&file, before.len()) {
            Ok(r) => r,
            Err(ReadError::Io(e)) => {
                self.error(path, format!("read: {e}"));
                return Ok(false);
            }
            Err(ReadError::Repo(e)) => return Err(e),
        };
        self.summary.bytes_read += read;
        if let Ok(after) = file.metadata() {
            if let Some(why) = changed_while_read(&before, &after, read) {
                self.warning(path, why.into());
            }
        }
        node.size = read;
        node.content = content;
        if node.links > 1 {
            self.hardlinks
                .insert((node.device, node.inode), node.content.clone());
        }
        self.count(status);
        Ok(true)
    }

    /// Chunks a stream into the repository (see [`chunk_into`]).
    pub(super) fn read_content(
        &mut self,
        reader: impl Read + Send,
        size_hint: u64,
    ) -> std::result::Result<(Vec<BlobId>, u64), ReadError> {
        let to = ChunkTarget {
            repo: &self.repo,
            saver: &mut self.saver,
            level: self.level,
            progress: &self.progress,
            interrupt: self.interrupt,
        };
        chunk_into(to, reader, size_hint)
    }
}

/// Where [`chunk_into`] stores a stream's chunks.
pub(crate) struct ChunkTarget<'a> {
    pub repo: &'a Repository,
    pub saver: &'a mut Saver,
    /// zstd level of new blobs.
    pub level: i32,
    /// Bytes are counted as done as they are chunked.
    pub progress: &'a Progress,
    pub interrupt: &'a AtomicBool,
}

/// Chunks a stream with the repository's chunker and stores the chunks it lacks;
/// returns the stream's blob ids, in order, and its length. Ids and compression
/// run in parallel per batch of chunks, while a reader thread reads and cuts the
/// next batch: memory holds about two batches, whatever the stream's length.
/// Backup reads files and standard input this way, and `copy` the contents of
/// files it re-chunks, so that both cut the same bytes into the same blobs.
pub(crate) fn chunk_into(
    to: ChunkTarget,
    reader: impl Read + Send,
    size_hint: u64,
) -> std::result::Result<(Vec<BlobId>, u64), ReadError> {
    let mut chunks = ChunkReader::new(to.repo.chunker(), reader);
    chunks.size_hint(size_hint);
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<Chunk>>>(0);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            loop {
                let mut batch = Vec::new();
                let mut bytes = 0;
                while bytes < BATCH_BYTES {
                    match chunks.next_chunk() {
                        Ok(Some(c)) => {
                            bytes += c.len();
                            batch.push(c);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                let last = bytes < BATCH_BYTES;
                // A closed channel means the consumer stopped: so do we.
                if tx.send(Ok(batch)).is_err() || last {
                    return;
                }
            }
        });
        // Dropping `rx` on an early return stops the reader thread.
        store_batches(to, rx)
    })
}

fn store_batches(
    to: ChunkTarget,
    rx: std::sync::mpsc::Receiver<io::Result<Vec<Chunk>>>,
) -> std::result::Result<(Vec<BlobId>, u64), ReadError> {
    let mut content = Vec::new();
    let mut total = 0u64;
    let level = to.level;
    for batch in rx {
        if to.interrupt.load(Ordering::Relaxed) {
            return Err(ReadError::Repo(Error::Interrupted));
        }
        let batch = batch.map_err(ReadError::Io)?;
        let bytes: usize = batch.iter().map(Chunk::len).sum();
        total += bytes as u64;
        to.progress.done(0, bytes as u64);
        let key = to.repo.key();
        let saver = &*to.saver;
        let done: Vec<(BlobId, usize, Option<Vec<u8>>)> = batch
            .into_par_iter()
            .map(|c| {
                let id = key.blob_id(c.data());
                let len = c.len();
                let payload =
                    (!saver.known(BlobKind::Data, &id)).then(|| format::encode_chunk(c, level));
                (id, len, payload)
            })
            .collect();
        for (id, len, payload) in done {
            if let Some(p) = payload {
                to.saver
                    .add(BlobKind::Data, id, p, len)
                    .map_err(ReadError::Repo)?;
            }
            content.push(id);
        }
    }
    Ok((content, total))
}

/// What a backup records when a file changed while it was read: `None` when
/// it didn't. The metadata compared are those of the open file, before and
/// after the read.
pub(super) fn changed_while_read(
    before: &std::fs::Metadata,
    after: &std::fs::Metadata,
    read: u64,
) -> Option<&'static str> {
    let content = after.len() != before.len()
        || after.mtime() != before.mtime()
        || after.mtime_nsec() != before.mtime_nsec()
        || read != before.len();
    if content {
        Some("changed while being read; the stored copy may mix old and new content")
    } else if after.nlink() == 0 {
        // Unlinked (deleted, or replaced by a rename) while open: what was
        // read is the whole of the file that was there.
        Some(
            "was deleted or replaced while being read; the stored copy is the whole file \
             as it was before",
        )
    } else if after.ctime() != before.ctime() || after.ctime_nsec() != before.ctime_nsec() {
        Some(
            "its metadata (owner, mode, links) changed while it was read; the content \
             stored was not changed meanwhile",
        )
    } else {
        None
    }
}

pub(crate) enum ReadError {
    /// Reading the source failed: the file is skipped and reported.
    Io(io::Error),
    /// Writing to the repository failed, or the run was interrupted: the backup stops.
    Repo(Error),
}

/// Opens without following a symlink swapped in since `lstat`, without blocking
/// on a FIFO swapped in, and without touching atime where permitted.
pub(super) fn open_for_backup(path: &Path) -> io::Result<File> {
    let base = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    match OpenOptions::new()
        .read(true)
        .custom_flags(base | libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            OpenOptions::new().read(true).custom_flags(base).open(path)
        }
        r => r,
    }
}
