//! Walking a source snapshot's trees, depth first and without recursion, and
//! storing in the destination what it lacks.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::archiver::read::{ChunkTarget, ReadError, chunk_into};
use crate::archiver::saver::Saver;
use crate::error::{Error, Result};
use crate::format;
use crate::id::BlobId;
use crate::index::Index;
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::tree::{MAX_TREE_DEPTH, Node, NodeKind, Tree};

/// Why a snapshot's copy stopped.
pub(super) enum Stop {
    /// Something in the source can't be read (at `path`, a place in the
    /// snapshot): this snapshot is not copied, the others are.
    Source { path: String, error: Error },
    /// Writing to the destination failed, or the run was interrupted: the copy
    /// stops.
    Fatal(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Fatal(e)
    }
}

fn source(path: &Path, error: Error) -> Stop {
    Stop::Source {
        path: path.display().to_string(),
        error,
    }
}

/// A source tree once copied whole: the destination's tree, and the files and
/// file bytes under it (to count as done when it is met again).
#[derive(Clone, Copy)]
struct Done {
    tree: BlobId,
    files: u64,
    bytes: u64,
}

/// Entries the run's caches hold before they are emptied and start again:
/// memory stays bounded, whatever the number of directories and files.
const CACHE_MAX: usize = 1 << 20;

/// Bytes of data blobs read from the source at once, in parallel, when blobs
/// are copied as they are.
const READ_BATCH_BYTES: usize = 32 << 20;

pub(super) struct Copier<'a> {
    src: &'a Repository,
    src_index: &'a Index,
    dst: &'a Repository,
    pub saver: Saver,
    rechunk: bool,
    /// zstd level of new blobs: the destination's.
    level: i32,
    /// Source tree → its copy, for trees copied whole in this run: a subtree
    /// that two snapshots share is copied once.
    trees: HashMap<BlobId, Done>,
    /// Re-chunking: a file's source content (hashed) → its destination content,
    /// so a file met again (unchanged in a changed directory, a hard link) is
    /// not read again.
    files: HashMap<[u8; 32], Vec<BlobId>>,
    progress: &'a Progress,
    interrupt: &'a AtomicBool,
    /// Data blobs read at once when copying blob for blob.
    batch: usize,
}

/// A directory being copied: its source tree's nodes, those done, and the
/// node in the parent that waits for this directory's new tree id.
struct Frame {
    id: BlobId,
    /// The source tree's plaintext, stored as it is when ids are shared.
    plain: Vec<u8>,
    nodes: std::vec::IntoIter<Node>,
    out: Vec<Node>,
    waiting: Option<Node>,
    files: u64,
    bytes: u64,
    /// The same directory in the reference pair, if it has it (see [`Reference`]).
    refs: Option<Box<(Tree, Tree)>>,
}

/// An earlier snapshot of the source and its copy in the destination, walked
/// beside the snapshot being re-chunked: where a file has the content it had
/// there, or a directory the tree, the copy's blobs or tree are taken without
/// reading anything again. This is what makes copying a series of snapshots
/// one at a time, in separate runs, cost their differences.
#[derive(Clone, Copy)]
pub(super) struct Reference {
    /// The earlier snapshot's root tree in the source...
    pub source: BlobId,
    /// ...and its copy's in the destination.
    pub copy: BlobId,
}

impl<'a> Copier<'a> {
    pub(super) fn new(
        src: &'a Repository,
        src_index: &'a Index,
        dst: &'a Repository,
        saver: Saver,
        rechunk: bool,
        progress: &'a Progress,
        interrupt: &'a AtomicBool,
    ) -> Self {
        let max_blob = src.config().chunker.max_size.max(1) as usize;
        Self {
            src,
            src_index,
            dst,
            saver,
            rechunk,
            level: dst.config().compression,
            trees: HashMap::new(),
            files: HashMap::new(),
            progress,
            interrupt,
            batch: (READ_BATCH_BYTES / max_blob).max(1),
        }
    }

    fn check_interrupt(&self) -> Result<(), Stop> {
        if self.interrupt.load(Ordering::Relaxed) {
            return Err(Stop::Fatal(Error::Interrupted));
        }
        Ok(())
    }

    /// Copies the tree `root` of the source and everything under it; returns
    /// the destination's tree id (the same when ids are shared).
    pub(super) fn copy_tree(
        &mut self,
        root: &BlobId,
        reference: Option<Reference>,
    ) -> Result<BlobId, Stop> {
        if let Some(d) = self.trees.get(root).copied() {
            self.progress.done(d.files, d.bytes);
            return Ok(d.tree);
        }
        let reference = reference.filter(|_| self.rechunk);
        if let Some(r) = reference {
            if r.source == *root && self.saver.known(BlobKind::Tree, &r.copy) {
                return Ok(r.copy);
            }
        }
        let mut path = PathBuf::from("/");
        let mut first = self.open(root, &path)?;
        if let Some(r) = reference {
            first.refs = self.reference_pair(&r.source, &r.copy);
        }
        let mut stack = vec![first];
        loop {
            self.check_interrupt()?;
            let Some(top) = stack.last_mut() else {
                return Err(Stop::Fatal(Error::invalid("copy: empty tree stack")));
            };
            let Some(mut node) = top.nodes.next() else {
                let Some(frame) = stack.pop() else { continue };
                let done =
                    self.store(frame.id, frame.plain, frame.out, frame.files, frame.bytes)?;
                let Some(parent) = stack.last_mut() else {
                    return Ok(done.tree);
                };
                if let Some(mut node) = frame.waiting {
                    node.subtree = Some(done.tree);
                    parent.out.push(node);
                }
                parent.files += done.files;
                parent.bytes += done.bytes;
                path.pop();
                continue;
            };
            path.push(OsStr::from_bytes(&node.name));
            let (before, copied) = match &top.refs {
                Some(r) => (r.0.find(&node.name).cloned(), r.1.find(&node.name).cloned()),
                None => (None, None),
            };
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(sub)) => {
                    let same = self.same_tree(&sub, before.as_ref(), copied.as_ref());
                    if let Some(tree) = same {
                        node.subtree = Some(tree);
                        top.out.push(node);
                        path.pop();
                    } else if let Some(d) = self.trees.get(&sub).copied() {
                        self.progress.done(d.files, d.bytes);
                        node.subtree = Some(d.tree);
                        top.files += d.files;
                        top.bytes += d.bytes;
                        top.out.push(node);
                        path.pop();
                    } else if stack.len() >= MAX_TREE_DEPTH {
                        let e = Error::corrupt(
                            format!("tree {sub}"),
                            format!("directories nest more than {MAX_TREE_DEPTH} levels deep"),
                        );
                        return Err(source(&path, e));
                    } else {
                        let mut frame = self.open(&sub, &path)?;
                        if let (Some(b), Some(c)) = (&before, &copied) {
                            if let (Some(bs), Some(cs)) = (b.subtree, c.subtree) {
                                frame.refs = self.reference_pair(&bs, &cs);
                            }
                        }
                        frame.waiting = Some(node);
                        stack.push(frame);
                    }
                }
                (NodeKind::File, _) => {
                    self.progress.set_current(&path);
                    if let Some(content) =
                        self.same_content(&node, before.as_ref(), copied.as_ref())
                    {
                        node.content = content;
                        self.progress.done(1, node.size);
                    } else {
                        self.copy_file(&mut node, &path)?;
                    }
                    top.files += 1;
                    top.bytes += node.size;
                    top.out.push(node);
                    path.pop();
                }
                _ => {
                    top.out.push(node);
                    path.pop();
                }
            }
        }
    }

    /// Reads and decodes a source tree.
    fn open(&self, id: &BlobId, path: &Path) -> Result<Frame, Stop> {
        let plain = self
            .src
            .read_blob(self.src_index, BlobKind::Tree, id)
            .map_err(|e| source(path, e))?;
        let tree = Tree::decode(&plain, id).map_err(|e| source(path, e))?;
        Ok(Frame {
            id: *id,
            plain: if self.rechunk { Vec::new() } else { plain },
            out: Vec::with_capacity(tree.nodes.len()),
            nodes: tree.nodes.into_iter(),
            waiting: None,
            files: 0,
            bytes: 0,
            refs: None,
        })
    }

    /// The reference's trees at one place, in the source and in the copy; none
    /// if either can't be read (the reference only saves work).
    fn reference_pair(&self, source: &BlobId, copy: &BlobId) -> Option<Box<(Tree, Tree)>> {
        let before = self.src.load_tree(self.src_index, source).ok()?;
        let copied = self.dst.load_tree(self.saver.index(), copy).ok()?;
        Some(Box::new((before, copied)))
    }

    /// The copy's tree for a directory whose source tree `sub` is the one the
    /// reference had at the same place.
    fn same_tree(
        &self,
        sub: &BlobId,
        before: Option<&Node>,
        copied: Option<&Node>,
    ) -> Option<BlobId> {
        let (b, c) = (before?, copied?);
        let tree = c.subtree.filter(|_| c.kind == NodeKind::Dir)?;
        (b.kind == NodeKind::Dir
            && b.subtree == Some(*sub)
            && self.saver.known(BlobKind::Tree, &tree))
        .then_some(tree)
    }

    /// The copy's content for a file whose source content is the one the
    /// reference had at the same place, when all its blobs are stored.
    fn same_content(
        &self,
        node: &Node,
        before: Option<&Node>,
        copied: Option<&Node>,
    ) -> Option<Vec<BlobId>> {
        let (b, c) = (before?, copied?);
        let same = b.kind == NodeKind::File
            && c.kind == NodeKind::File
            && b.content == node.content
            && c.size == node.size
            && c.content
                .iter()
                .all(|id| self.saver.known(BlobKind::Data, id));
        same.then(|| c.content.clone())
    }

    /// Stores a directory's tree, once everything under it is stored.
    fn store(
        &mut self,
        id: BlobId,
        plain: Vec<u8>,
        out: Vec<Node>,
        files: u64,
        bytes: u64,
    ) -> Result<Done, Stop> {
        let tree = if self.rechunk {
            self.saver.save_tree(&mut Tree { nodes: out })?
        } else {
            if !self.saver.known(BlobKind::Tree, &id) {
                let payload = format::encode_payload(&plain, self.level);
                self.saver.add(BlobKind::Tree, id, payload, plain.len())?;
            }
            id
        };
        let done = Done { tree, files, bytes };
        if self.trees.len() >= CACHE_MAX {
            self.trees.clear();
        }
        self.trees.insert(id, done);
        Ok(done)
    }

    fn copy_file(&mut self, node: &mut Node, path: &Path) -> Result<(), Stop> {
        if self.rechunk {
            return self.rechunk_file(node, path);
        }
        let mut seen = std::collections::HashSet::new();
        let missing: Vec<BlobId> = node
            .content
            .iter()
            .filter(|id| !self.saver.known(BlobKind::Data, id) && seen.insert(**id))
            .copied()
            .collect();
        for ids in missing.chunks(self.batch) {
            self.check_interrupt()?;
            let (src, index) = (self.src, self.src_index);
            let read: Vec<Result<(Vec<u8>, usize)>> = ids
                .par_iter()
                .map(|id| src.read_blob_payload(index, BlobKind::Data, id))
                .collect();
            for (id, r) in ids.iter().zip(read) {
                let (payload, len) = r.map_err(|e| source(path, e))?;
                self.saver.add(BlobKind::Data, *id, payload, len)?;
            }
        }
        self.progress.done(1, node.size);
        Ok(())
    }

    /// Streams a file's content from the source through the destination's
    /// chunker, as a backup into the destination would store it.
    fn rechunk_file(&mut self, node: &mut Node, path: &Path) -> Result<(), Stop> {
        if node.content.is_empty() {
            self.progress.done(1, 0);
            return Ok(());
        }
        let mut h = blake3::Hasher::new();
        for id in &node.content {
            h.update(&id.0);
        }
        let key: [u8; 32] = *h.finalize().as_bytes();
        if let Some(content) = self.files.get(&key) {
            node.content = content.clone();
            self.progress.done(1, node.size);
            return Ok(());
        }
        let failed = Mutex::new(None);
        let reader = BlobReader {
            src: self.src,
            index: self.src_index,
            ids: &node.content,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            failed: &failed,
        };
        let to = ChunkTarget {
            repo: self.dst,
            saver: &mut self.saver,
            level: self.level,
            progress: self.progress,
            interrupt: self.interrupt,
        };
        let content = match chunk_into(to, reader, node.size) {
            Ok((content, _)) => content,
            Err(ReadError::Io(e)) => {
                let why = failed
                    .lock()
                    .ok()
                    .and_then(|mut f| f.take())
                    .unwrap_or_else(|| Error::io(path, e));
                return Err(source(path, why));
            }
            Err(ReadError::Repo(e)) => return Err(Stop::Fatal(e)),
        };
        if self.files.len() >= CACHE_MAX {
            self.files.clear();
        }
        self.files.insert(key, content.clone());
        node.content = content;
        self.progress.done(1, 0);
        Ok(())
    }
}

/// A file's content read from the source, one data blob after the other. A
/// blob that can't be read ends the stream with an error; the repository's
/// error, which names the blob and its pack, is left in `failed`.
struct BlobReader<'a> {
    src: &'a Repository,
    index: &'a Index,
    ids: &'a [BlobId],
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    failed: &'a Mutex<Option<Error>>,
}

impl Read for BlobReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            let Some(id) = self.ids.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            match self.src.read_blob(self.index, BlobKind::Data, id) {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(e) => {
                    let msg = e.to_string();
                    if let Ok(mut f) = self.failed.lock() {
                        *f = Some(e);
                    }
                    return Err(io::Error::other(msg));
                }
            }
        }
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(out.len());
        if let (Some(to), Some(from)) = (out.get_mut(..n), rest.get(..n)) {
            to.copy_from_slice(from);
        }
        self.pos += n;
        Ok(n)
    }
}
