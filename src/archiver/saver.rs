//! Where new blobs go: deduplication against the index and this run, packing, a
//! background pack writer, and index files written as the backup goes.
//!
//! Order of writes (format-spec/README.md, "Write order"): a pack is written and
//! synced before any index file names it, and index files before the snapshot. An
//! interrupted backup therefore leaves packs (and index files naming them) that no
//! snapshot references; the next backup finds their blobs in the index (or, for
//! packs killed before their index file, by reading the packs' headers: see
//! `adopt`) and skips them, so re-running an interrupted first backup does not
//! start over.

use std::collections::HashSet;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::crypto::SEAL_OVERHEAD;
use crate::error::{Error, Result};
use crate::format;
use crate::id::{BlobId, IndexId, PackId};
use crate::index::{Index, IndexFile, IndexPack};
use crate::pack::{BlobKind, MAX_BLOB_LEN, MAX_PACK_BLOBS, NewBlob, PACK_DATA_START, PackSpool};
use crate::repository::Repository;
use crate::tree::Tree;

/// Write an index file once this many blobs are in packs no index names yet...
const INDEX_FLUSH_BLOBS: usize = 4096;
/// ...or this many packs (1 GiB at the default pack size), which bounds the pack
/// headers a re-run after a kill reads to find what wasn't indexed (see `adopt`)
/// whatever the chunk sizes, while keeping index files few...
const INDEX_FLUSH_PACKS: usize = 64;
/// ...or once this much time has passed since the last one.
const INDEX_FLUSH_INTERVAL: Duration = Duration::from_secs(120);
/// New blobs go to the sealing thread in batches of about this many bytes...
const SEAL_BATCH: usize = 1 << 20;
/// ...of which this many may wait for it: memory holds a few batches, not a
/// pack (the sealing thread appends sealed blobs to the pack's spool file).
const SEAL_QUEUE: usize = 2;
/// Complete packs queued for the writer threads. 0: a complete pack is handed
/// straight to a free writer, so at most WRITERS packs are being written and
/// one waits for a writer while the next fills. Each is a spool file, so the
/// temporary directory holds up to WRITERS + 3 packs (those, and the data and
/// tree packs filling).
const WRITE_QUEUE: usize = 0;
/// Threads that write packs: at least this many, or as many requests as the
/// storage wants in flight (object storage), if more. On a local disk, when
/// packs were built in memory, a second writer made a 1 GiB checkpoint's
/// backup 15% faster for 20 MiB more at the peak, and one was kept
/// (tools/bench/RESULTS.md, "Against the targets"); not measured again since
/// packs are spooled.
const WRITERS: usize = 1;

/// What the saver sends the sealing thread.
enum ToSealer {
    /// Blobs to seal and append to the open pack of their kind.
    Blobs(BlobKind, Vec<NewBlob>),
    /// The open pack of this kind is complete: hand it to a writer.
    Close(BlobKind),
}

/// The pack of one kind being filled, as the saver counts it, and the blobs
/// not yet sent to the sealing thread.
#[derive(Default)]
struct Filling {
    /// Bytes the pack will have before its header.
    size: usize,
    blobs: usize,
    batch: Vec<NewBlob>,
    batch_bytes: usize,
}

/// Whether the repository has a blob or the run it was taken from stored it
/// already, as the run goes on (see [`Saver::known_blobs`]).
#[derive(Clone)]
pub struct KnownBlobs {
    index: Arc<Index>,
    pending: Arc<RwLock<HashSet<(BlobKind, BlobId)>>>,
}

impl KnownBlobs {
    pub fn contains(&self, kind: BlobKind, id: &BlobId) -> bool {
        known_in(&self.index, &self.pending, kind, id)
    }
}

/// Whether `index` has the blob, or `pending` (what a run stored) does.
fn known_in(
    index: &Index,
    pending: &RwLock<HashSet<(BlobKind, BlobId)>>,
    kind: BlobKind,
    id: &BlobId,
) -> bool {
    index.contains(kind, id)
        || pending
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&(kind, *id))
}

#[derive(Default)]
struct Written {
    packs: Vec<IndexPack>,
    bytes: u64,
    error: Option<Error>,
}

#[derive(Clone, Debug, Default)]
pub struct SaverStats {
    pub data_blobs_new: u64,
    pub tree_blobs_new: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_new: u64,
    /// Bytes of packs and index files written.
    pub bytes_written: u64,
}

pub struct Saver {
    repo: Arc<Repository>,
    index: Arc<Index>,
    /// Blobs stored by this run, by kind and id (a data blob and a tree blob with
    /// the same plaintext are two objects). Shared with pool jobs through
    /// [`KnownBlobs`].
    pending: Arc<RwLock<HashSet<(BlobKind, BlobId)>>>,
    data: Filling,
    tree: Filling,
    /// To the sealing thread, which hands complete packs to the writers.
    tx: Option<SyncSender<ToSealer>>,
    /// The sealing thread and the writers.
    writers: Vec<JoinHandle<()>>,
    written: Arc<Mutex<Written>>,
    unindexed_blobs: usize,
    unindexed_packs: usize,
    last_index: Instant,
    pub stats: SaverStats,
    pub index_files: Vec<IndexId>,
    /// Packs and index files this run wrote and indexed, with their sizes, for
    /// [`Saver::verify_written`].
    written_packs: Vec<(PackId, u64)>,
    written_index_files: Vec<(IndexId, u64)>,
    /// How many of those [`Saver::verify_written`] has already found stored.
    verified: (usize, usize),
    /// zstd level of tree blobs.
    level: i32,
}

impl Saver {
    pub fn new(repo: Arc<Repository>, index: Arc<Index>) -> Self {
        let repo_level = repo.config().compression;
        let written = Arc::new(Mutex::new(Written::default()));
        let (tx, writers) = spawn_writers(&repo, &written);
        Self {
            repo,
            index,
            pending: Arc::default(),
            data: Filling::default(),
            tree: Filling::default(),
            tx: Some(tx),
            writers,
            written,
            verified: (0, 0),
            unindexed_blobs: 0,
            unindexed_packs: 0,
            last_index: Instant::now(),
            stats: SaverStats::default(),
            index_files: Vec::new(),
            written_packs: Vec::new(),
            written_index_files: Vec::new(),
            level: repo_level,
        }
    }

    /// Stores tree blobs at this zstd level instead of the repository's.
    pub fn with_level(mut self, level: i32) -> Self {
        self.level = level;
        self
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The index loaded at the start, shared.
    pub fn shared_index(&self) -> Arc<Index> {
        Arc::clone(&self.index)
    }

    /// Whether the repository has the blob, or this run already stored it.
    pub fn known(&self, kind: BlobKind, id: &BlobId) -> bool {
        known_in(&self.index, &self.pending, kind, id)
    }

    /// [`Self::known`] for work that runs while the saver goes on storing
    /// (small files read on the pool while the walk stores the batch before).
    pub fn known_blobs(&self) -> KnownBlobs {
        KnownBlobs {
            index: Arc::clone(&self.index),
            pending: Arc::clone(&self.pending),
        }
    }

    /// Stores an encoded blob (see `format::encode_payload`) unless it is known.
    pub fn add(
        &mut self,
        kind: BlobKind,
        id: BlobId,
        payload: Vec<u8>,
        raw_len: usize,
    ) -> Result<()> {
        if self.known(kind, &id) {
            return Ok(());
        }
        // Readers refuse an entry over the limit, and with it the whole index file
        // and pack header that list it (format-spec §17): never write one.
        let raw_len = u32::try_from(raw_len)
            .ok()
            .filter(|&n| n <= MAX_BLOB_LEN)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "a {} blob of {raw_len} bytes is larger than the {MAX_BLOB_LEN} bytes \
                     the format allows",
                    kind.name()
                ))
            })?;
        let pack_size = self.repo.config().pack_size as usize;
        let filling = self.filling(kind);
        if filling.blobs == 0 {
            filling.size = PACK_DATA_START;
        }
        filling.size += payload.len() + SEAL_OVERHEAD;
        filling.blobs += 1;
        filling.batch_bytes += payload.len();
        filling.batch.push((kind, id, payload, raw_len));
        let full = filling.size >= pack_size || filling.blobs >= MAX_PACK_BLOBS;
        let batch_full = filling.batch_bytes >= SEAL_BATCH;
        self.pending
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((kind, id));
        match kind {
            BlobKind::Data => self.stats.data_blobs_new += 1,
            BlobKind::Tree => self.stats.tree_blobs_new += 1,
        }
        self.stats.bytes_new += u64::from(raw_len);
        if full {
            self.close(kind)?;
        } else if batch_full {
            self.send_batch(kind)?;
        }
        self.maybe_write_index()
    }

    /// Encodes a tree, stores it if new, and returns its id. A tree larger than a
    /// blob may be (a directory of millions of entries) is an error.
    pub fn save_tree(&mut self, tree: &mut Tree) -> Result<BlobId> {
        let bytes = tree.encode();
        if bytes.len() > MAX_BLOB_LEN as usize {
            return Err(Error::invalid(format!(
                "a directory of {} entries makes a tree of {} bytes, more than the {} bytes \
                 a tree may have (format-spec §17); split the directory, or exclude part of it",
                tree.nodes.len(),
                bytes.len(),
                MAX_BLOB_LEN
            )));
        }
        let id = self.repo.key().blob_id(&bytes);
        if !self.known(BlobKind::Tree, &id) {
            let payload = format::encode_payload(&bytes, self.level);
            self.add(BlobKind::Tree, id, payload, bytes.len())?;
        }
        Ok(id)
    }

    fn filling(&mut self, kind: BlobKind) -> &mut Filling {
        match kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree => &mut self.tree,
        }
    }

    /// Sends the blobs of `kind` gathered so far to the sealing thread.
    fn send_batch(&mut self, kind: BlobKind) -> Result<()> {
        let filling = self.filling(kind);
        if filling.batch.is_empty() {
            return Ok(());
        }
        filling.batch_bytes = 0;
        let batch = std::mem::take(&mut filling.batch);
        self.send(ToSealer::Blobs(kind, batch))
    }

    /// Completes the pack of `kind`: it goes to a writer.
    fn close(&mut self, kind: BlobKind) -> Result<()> {
        if self.filling(kind).blobs == 0 {
            return Ok(());
        }
        self.send_batch(kind)?;
        let filling = std::mem::take(self.filling(kind));
        self.unindexed_blobs += filling.blobs;
        self.unindexed_packs += 1;
        self.send(ToSealer::Close(kind))
    }

    fn send(&mut self, message: ToSealer) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(message).is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.writer_error());
        }
        self.check_writer()
    }

    /// Closes the queue and waits for the writers. False if one panicked.
    fn stop_writers(&mut self) -> bool {
        self.tx = None;
        let mut ok = true;
        for h in self.writers.drain(..) {
            ok &= h.join().is_ok();
        }
        ok
    }

    fn writer_error(&mut self) -> Error {
        let joined = self.stop_writers();
        self.written
            .lock()
            .ok()
            .and_then(|mut w| w.error.take())
            .unwrap_or_else(|| {
                Error::invalid(if joined {
                    "the pack writer stopped unexpectedly"
                } else {
                    "a pack writer panicked"
                })
            })
    }

    fn check_writer(&mut self) -> Result<()> {
        let failed = self
            .written
            .lock()
            .map(|w| w.error.is_some())
            .unwrap_or(true);
        if failed {
            Err(self.writer_error())
        } else {
            Ok(())
        }
    }

    fn maybe_write_index(&mut self) -> Result<()> {
        if self.unindexed_blobs >= INDEX_FLUSH_BLOBS
            || self.unindexed_packs >= INDEX_FLUSH_PACKS
            || self.last_index.elapsed() >= INDEX_FLUSH_INTERVAL
        {
            self.write_index()?;
        }
        Ok(())
    }

    /// Writes an index file for the packs written so far that no index names yet.
    fn write_index(&mut self) -> Result<()> {
        self.last_index = Instant::now();
        let packs = match self.written.lock() {
            Ok(mut w) => std::mem::take(&mut w.packs),
            Err(_) => return Err(Error::invalid("the pack writer panicked")),
        };
        if packs.is_empty() {
            return Ok(());
        }
        let n: usize = packs.iter().map(|p| p.blobs.len()).sum();
        let sizes: Vec<(PackId, u64)> = packs.iter().map(|p| (p.id, p.size)).collect();
        let (id, size) = self.repo.save_index(&IndexFile { packs })?;
        self.unindexed_blobs = self.unindexed_blobs.saturating_sub(n);
        self.unindexed_packs = self.unindexed_packs.saturating_sub(sizes.len());
        self.stats.bytes_written += size;
        self.index_files.push(id);
        self.written_packs.extend(sizes);
        self.written_index_files.push((id, size));
        Ok(())
    }

    /// Checks that every pack and index file this run wrote is still stored, at
    /// least as long as written (by reading its last bytes). A backup calls this
    /// after [`Saver::finish`] and before writing its snapshot: a prune that took
    /// this backup's lock for stale (a host clock far off, a machine that slept)
    /// may have deleted them, and a snapshot must never name missing data.
    ///
    /// Each file is checked once: a run that commits several snapshots (`copy`)
    /// checks, before each, what it wrote since the last.
    pub fn verify_written(&mut self) -> Result<()> {
        use crate::backend::FileType;
        use rayon::prelude::*;
        let backend = self.repo.backend();
        let probe = |t: FileType, name: String, size: u64| -> Result<Option<String>> {
            let tail = size.min(4);
            match backend.read_range(t, &name, size - tail, tail) {
                Ok(_) => Ok(None),
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    Ok(Some(name))
                }
                Err(e) => Err(e),
            }
        };
        let (packs_from, index_from) = self.verified;
        // Per file: its name if it is gone.
        type Gone = Vec<Option<String>>;
        let check = || -> Result<(Gone, Gone)> {
            let packs = self.written_packs[packs_from.min(self.written_packs.len())..]
                .par_iter()
                .map(|(id, size)| probe(FileType::Pack, id.to_hex(), *size))
                .collect::<Result<Vec<_>>>()?;
            let index_files = self.written_index_files
                [index_from.min(self.written_index_files.len())..]
                .par_iter()
                .map(|(id, size)| probe(FileType::Index, id.to_hex(), *size))
                .collect::<Result<Vec<_>>>()?;
            Ok((packs, index_files))
        };
        // On object storage each probe is a round trip: as many at once as the
        // storage wants in flight, not one per core.
        let wanted = backend.concurrency();
        let pool = (wanted > rayon::current_num_threads())
            .then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(wanted)
                    .build()
                    .ok()
            })
            .flatten();
        let (packs, index_files) = match pool {
            Some(pool) => pool.install(check)?,
            None => check()?,
        };
        let gone_packs: Vec<String> = packs.into_iter().flatten().collect();
        let gone_index: Vec<String> = index_files.into_iter().flatten().collect();
        let first = match (gone_packs.first(), gone_index.first()) {
            (Some(p), _) => format!("pack {p}"),
            (None, Some(i)) => format!("index {i}"),
            (None, None) => {
                self.verified = (self.written_packs.len(), self.written_index_files.len());
                return Ok(());
            }
        };
        Err(Error::WrittenFilesGone {
            packs: gone_packs.len(),
            index_files: gone_index.len(),
            first,
        })
    }

    /// Writes out partial packs, waits for the writer, and writes the last index
    /// file. On success every blob this run stored is in a durable pack named by a
    /// durable index file.
    pub fn finish(&mut self) -> Result<()> {
        let mut first_err = None;
        for kind in [BlobKind::Data, BlobKind::Tree] {
            if first_err.is_none() {
                first_err = self.close(kind).err();
            }
        }
        if !self.stop_writers() && first_err.is_none() {
            first_err = Some(Error::invalid("a pack writer panicked"));
        }
        if let Some(e) = self.written.lock().ok().and_then(|mut w| w.error.take()) {
            first_err.get_or_insert(e);
        }
        // Index whatever did get written, even after an error, so that a re-run
        // reuses it instead of writing it again.
        let indexed = self.write_index();
        self.stats.bytes_written += self
            .written
            .lock()
            .map(|mut w| std::mem::take(&mut w.bytes))
            .unwrap_or(0);
        match first_err {
            Some(e) => Err(e),
            None => indexed,
        }
    }

    /// [`Saver::finish`], then ready for more blobs: what was stored so far is
    /// in durable packs named by durable index files, so a snapshot may name it.
    pub fn flush(&mut self) -> Result<()> {
        self.finish()?;
        let (tx, writers) = spawn_writers(&self.repo, &self.written);
        self.tx = Some(tx);
        self.writers = writers;
        Ok(())
    }
}

/// The pipeline behind the saver: one thread seals blobs (on the rayon pool) and
/// appends them to their pack's spool file; writers write complete packs from
/// their spools, hashing them as they go. Sealing, writing and syncing overlap
/// with the reading and compressing of the next blobs. Errors go to `written`;
/// a thread that fails stops, and the saver's next send fails.
fn spawn_writers(
    repo: &Arc<Repository>,
    written: &Arc<Mutex<Written>>,
) -> (SyncSender<ToSealer>, Vec<JoinHandle<()>>) {
    let fail = |written: &Mutex<Written>, e: Error| {
        if let Ok(mut w) = written.lock() {
            w.error.get_or_insert(e);
        }
    };
    let (tx, rx) = sync_channel::<ToSealer>(SEAL_QUEUE);
    let (packs, complete) = sync_channel::<(BlobKind, PackSpool)>(WRITE_QUEUE);
    let complete = Arc::new(Mutex::new(complete));
    let mut threads: Vec<JoinHandle<()>> = (0..WRITERS.max(repo.backend().concurrency()))
        .map(|_| {
            let repo = Arc::clone(repo);
            let written = Arc::clone(written);
            let complete = Arc::clone(&complete);
            std::thread::spawn(move || {
                loop {
                    let Ok(next) = complete.lock().map(|r| r.recv()) else {
                        return;
                    };
                    let Ok((kind, spool)) = next else { return };
                    match repo.write_spooled_pack(spool, kind) {
                        Ok((id, size, blobs)) => {
                            let Ok(mut w) = written.lock() else { return };
                            w.bytes += size;
                            w.packs.push(IndexPack { id, size, blobs });
                        }
                        Err(e) => {
                            // ENOSPC and permission errors are permanent: stop, and
                            // let the main thread report it.
                            fail(&written, e);
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    let repo = Arc::clone(repo);
    let written = Arc::clone(written);
    threads.push(std::thread::spawn(move || {
        let mut open: [Option<PackSpool>; 2] = [None, None];
        let slot = |kind: BlobKind| match kind {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        };
        for message in rx {
            let step = match message {
                ToSealer::Blobs(kind, batch) => {
                    let spool = match open.get_mut(slot(kind)) {
                        Some(Some(s)) => Ok(s),
                        Some(s @ None) => new_spool(&repo).map(|new| s.insert(new)),
                        None => Err(Error::invalid("no pack slot for this kind")),
                    };
                    spool.and_then(|s| s.add(repo.repo_id(), batch))
                }
                ToSealer::Close(kind) => {
                    if let Some(spool) = open.get_mut(slot(kind)).and_then(Option::take) {
                        if packs.send((kind, spool)).is_err() {
                            // The writers are gone: one failed and said why.
                            return;
                        }
                    }
                    Ok(())
                }
            };
            if let Err(e) = step {
                fail(&written, e);
                return;
            }
        }
    }));
    (tx, threads)
}

/// An unnamed file in the temporary directory (`TMPDIR`, else `/tmp`) to spool
/// a pack to. It holds only sealed blobs, and is gone when closed.
fn new_spool(repo: &Repository) -> Result<PackSpool> {
    let dir = std::env::temp_dir();
    let file =
        tempfile::tempfile_in(&dir).map_err(|e| crate::pack::spool_error(&dir, "creating", e))?;
    PackSpool::new(repo.key(), file, dir)
}

impl Drop for Saver {
    fn drop(&mut self) {
        // Stop the writers if `finish` was not called (an error path).
        self.stop_writers();
    }
}
