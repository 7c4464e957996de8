//! Restore: a whole snapshot, a sub-tree or one file, into a target directory.
//!
//! Order: directories, symlinks and special files are created while walking the
//! trees; file contents are then written pack by pack, in parallel (holes left as
//! holes), and each file gets its metadata through its descriptor as soon as its
//! last chunk is written; then hard links; then metadata of everything else,
//! directories last and deepest first so that writing into a directory does not
//! disturb its restored mtime. A file that could not be written whole gets no
//! metadata.
//!
//! Nothing is written outside the target: tree names are checked on decode (no `/`,
//! `.`, `..`), every created entry replaces whatever non-directory was in its place
//! instead of following it, and files are opened with `O_NOFOLLOW`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use rayon::prelude::*;

use crate::archiver::Excludes;
use crate::error::{Error, IoContext, Result};
use crate::index::Index;
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::tree::{Node, NodeKind};
use crate::walk::{self, Selection};

/// The longest path the system can create, terminating NUL included.
const PATH_LIMIT: usize = libc::PATH_MAX as usize;

/// Holes are detected and skipped at this granularity (the usual filesystem block).
const SPARSE_BLOCK: usize = 4096;
static ZEROS: [u8; SPARSE_BLOCK] = [0; SPARSE_BLOCK];

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Restore only entries matching one of these (and what is inside them).
    pub includes: Vec<String>,
    /// Skip entries matching one of these (and what is inside them).
    pub excludes: Vec<String>,
    /// After writing, read every file back and check it against its blob ids.
    pub verify: bool,
    /// Counters to update as files are written.
    pub progress: Option<Arc<Progress>>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub special: u64,
    pub bytes_written: u64,
    pub files_verified: u64,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

pub enum Event<'a> {
    Warning(&'a str),
    Error(&'a str),
}

struct FileJob {
    dest: PathBuf,
    node: Node,
}

/// Restores `sel` into `opts.target`: a directory's contents go directly into the
/// target; a single file (or other non-directory) is restored as `target/NAME`.
pub fn restore(
    repo: &Arc<Repository>,
    index: &Index,
    sel: &Selection,
    opts: &RestoreOptions,
    interrupt: &AtomicBool,
    report: &(dyn Fn(Event) + Sync),
) -> Result<RestoreSummary> {
    let _lock = crate::lock::acquire(repo, false)?;
    let includes = Excludes::new(&opts.includes)?;
    let excludes = Excludes::new(&opts.excludes)?;
    fs::create_dir_all(&opts.target).at(&opts.target)?;
    let target = fs::canonicalize(&opts.target).at(&opts.target)?;
    let state = State {
        repo,
        index,
        report,
        summary: Mutex::new(RestoreSummary::default()),
        bytes: AtomicU64::new(0),
        progress: opts.progress.clone().unwrap_or_default(),
        interrupt,
        is_root: nix::unistd::geteuid().is_root(),
    };

    let mut plan = Plan::default();
    match sel {
        Selection::Dir { path, tree } => {
            let mut stack: Vec<(PathBuf, bool)> = Vec::new();
            walk::walk(repo, index, tree, path, &mut |p, node| {
                if interrupt.load(Ordering::Relaxed) {
                    return Err(Error::Interrupted);
                }
                // Nodes arrive parents first; pop the ancestors we have left.
                while stack.last().is_some_and(|(a, _)| !p.starts_with(a)) {
                    stack.pop();
                }
                if excludes.is_excluded(p) {
                    return Ok(false);
                }
                let inherited = stack.last().is_some_and(|(_, inc)| *inc);
                let included = opts.includes.is_empty() || inherited || includes.is_excluded(p);
                let rel = p.strip_prefix(path).unwrap_or(p);
                let dest = target.join(rel);
                if dest.as_os_str().len() >= PATH_LIMIT {
                    // Nothing at or below it can be created: one error, not one per
                    // entry, and no paths that grow with a forged tree's depth.
                    let shown: String = dest.to_string_lossy().chars().take(200).collect();
                    state.error(format!(
                        "{shown}…: not restored, nor anything under it: the path is longer \
                         than the {PATH_LIMIT} bytes the system allows"
                    ));
                    return Ok(false);
                }
                if node.kind == NodeKind::Dir {
                    stack.push((p.to_path_buf(), included));
                    if included {
                        plan.make_dir(&state, &target, &dest, node);
                    }
                    return Ok(true);
                }
                if included {
                    plan.make_entry(&state, &target, dest, node);
                }
                Ok(false)
            })?;
        }
        Selection::Node { node, .. } => {
            let dest = target.join(std::ffi::OsStr::from_bytes(&node.name));
            plan.make_entry(&state, &target, dest, node);
        }
    }

    // Contents, pack by pack, in parallel.
    for job in &plan.files {
        state.progress.found(1, job.node.size);
    }
    state.progress.set_totals_final();
    write_contents(&state, &plan.files);
    if interrupt.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    for (dest, first) in &plan.links {
        if fs::symlink_metadata(first).is_err() {
            state.error(format!(
                "{}: not restored: it is a hard link to {}, which could not be restored",
                dest.display(),
                first.display()
            ));
            continue;
        }
        let result = replace_non_dir(dest).and_then(|()| fs::hard_link(first, dest));
        match result {
            Ok(()) => state.with(|s| s.hardlinks += 1),
            Err(e) => state.error(format!(
                "{}: hard link to {}: {e}",
                dest.display(),
                first.display()
            )),
        }
    }
    // Metadata: files and other entries, then directories deepest first.
    plan.meta
        .par_iter()
        .for_each(|(dest, node)| apply_metadata(&state, dest, None, node));
    for (dest, node) in plan.dirs.iter().rev() {
        apply_metadata(&state, dest, None, node);
    }
    if opts.verify {
        plan.files
            .par_iter()
            .for_each(|job| match verify_file(&state, job) {
                Ok(()) => state.with(|s| s.files_verified += 1),
                Err(e) => state.error(format!("verify {}: {e}", job.dest.display())),
            });
    }
    let mut summary = state.summary.into_inner().unwrap_or_default();
    summary.bytes_written = state.bytes.load(Ordering::Relaxed);
    Ok(summary)
}

struct State<'a> {
    repo: &'a Repository,
    index: &'a Index,
    report: &'a (dyn Fn(Event) + Sync),
    summary: Mutex<RestoreSummary>,
    bytes: AtomicU64,
    progress: Arc<Progress>,
    interrupt: &'a AtomicBool,
    is_root: bool,
}

impl State<'_> {
    fn with(&self, f: impl FnOnce(&mut RestoreSummary)) {
        if let Ok(mut s) = self.summary.lock() {
            f(&mut s);
        }
    }

    fn error(&self, msg: String) {
        (self.report)(Event::Error(&msg));
        self.with(|s| s.errors.push(msg));
    }

    fn warning(&self, msg: String) {
        (self.report)(Event::Warning(&msg));
        self.with(|s| s.warnings.push(msg));
    }
}

#[derive(Default)]
struct Plan {
    files: Vec<FileJob>,
    /// (destination, first restored path of the same inode)
    links: Vec<(PathBuf, PathBuf)>,
    /// Entries other than files whose metadata is applied after contents (a
    /// file's is applied as soon as its last chunk is written).
    meta: Vec<(PathBuf, Node)>,
    /// Directories known to exist, so that their entries don't stat them again.
    known_dirs: std::collections::HashSet<PathBuf>,
    dirs: Vec<(PathBuf, Node)>,
    /// (device, inode) → first destination, for hard links.
    inodes: HashMap<(u64, u64), PathBuf>,
}

impl Plan {
    /// Creates the parents of `dest` that an include filter skipped over.
    fn ensure_parents(&mut self, state: &State, target: &Path, dest: &Path) -> bool {
        let Some(parent) = dest.parent() else {
            return true;
        };
        if parent == target || !parent.starts_with(target) || self.known_dirs.contains(parent) {
            return true;
        }
        match create_dir_safely(parent, true) {
            Ok(()) => {
                self.known_dirs.insert(parent.to_path_buf());
                true
            }
            Err(e) => {
                state.error(format!("{}: {e}", parent.display()));
                false
            }
        }
    }

    fn make_dir(&mut self, state: &State, target: &Path, dest: &Path, node: &Node) {
        if !self.ensure_parents(state, target, dest) {
            return;
        }
        match create_dir_safely(dest, false) {
            Ok(()) => {
                self.known_dirs.insert(dest.to_path_buf());
                state.with(|s| s.dirs += 1);
                self.dirs.push((dest.to_path_buf(), node.clone()));
            }
            Err(e) => state.error(format!("{}: {e}", dest.display())),
        }
    }

    fn make_entry(&mut self, state: &State, target: &Path, dest: PathBuf, node: &Node) {
        if !self.ensure_parents(state, target, &dest) {
            return;
        }
        if node.kind == NodeKind::File {
            if node.links > 1 && node.inode != 0 {
                let key = (node.device, node.inode);
                if let Some(first) = self.inodes.get(&key) {
                    self.links.push((dest, first.clone()));
                    return;
                }
                self.inodes.insert(key, dest.clone());
            }
            self.files.push(FileJob {
                dest,
                node: node.clone(),
            });
            return;
        }
        let created = replace_non_dir(&dest).and_then(|()| create_special(&dest, node));
        match created {
            Ok(()) => {
                state.with(|s| match node.kind {
                    NodeKind::Symlink => s.symlinks += 1,
                    _ => s.special += 1,
                });
                self.meta.push((dest, node.clone()));
            }
            Err(e) => state.error(format!("{}: {e}", dest.display())),
        }
    }
}

/// Makes `dir` a real directory: a symlink or file in its place is removed rather
/// than followed. With `all`, missing parents are created the same way.
fn create_dir_safely(dir: &Path, all: bool) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => fs::remove_file(dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if all {
        if let Some(p) = dir.parent() {
            create_dir_safely(p, true)?;
        }
    }
    match fs::create_dir(dir) {
        Err(e)
            if e.kind() == io::ErrorKind::AlreadyExists && fs::symlink_metadata(dir)?.is_dir() =>
        {
            Ok(())
        }
        r => r,
    }
}

/// Removes whatever non-directory is at `path`, so that creating the new entry
/// never writes through a pre-existing symlink.
fn replace_non_dir(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a directory is in the way of a non-directory entry",
        )),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn create_special(dest: &Path, node: &Node) -> io::Result<()> {
    let perm = Mode::from_bits_truncate(node.mode as libc::mode_t & 0o777);
    let mk = |kind: SFlag, rdev: u64| {
        nix::sys::stat::mknod(dest, kind, perm, rdev as libc::dev_t).map_err(io::Error::from)
    };
    match node.kind {
        NodeKind::Symlink => {
            let target = node.link_target.as_deref().unwrap_or_default();
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), dest)
        }
        NodeKind::Fifo => nix::unistd::mkfifo(dest, perm).map_err(io::Error::from),
        NodeKind::Chardev => mk(SFlag::S_IFCHR, node.rdev),
        NodeKind::Blockdev => mk(SFlag::S_IFBLK, node.rdev),
        NodeKind::Socket => mk(SFlag::S_IFSOCK, 0),
        NodeKind::File | NodeKind::Dir => Err(io::Error::other("not a special file")),
    }
}

/// Blobs next to each other in a pack are fetched with one read when the gap
/// between them is at most this...
const SPAN_GAP: u64 = 1 << 20;
/// ...and the read stays below this (a blob larger than this is read alone).
const SPAN_MAX: u64 = 6 << 20;
/// Spans read and waiting, besides the one being written and the one being read.
/// Smaller spans with one waiting keep the writers as busy as whole-pack spans
/// with none, in two thirds of the memory (measured on 50k small files: same
/// time, 80 instead of 100 MiB peak RSS).
const SPANS_QUEUED: usize = 1;

/// A file being restored. Its chunks are written by whichever threads decrypt
/// them; the one that writes the last chunk sets the size and the metadata.
struct Slot<'a> {
    job: &'a FileJob,
    /// Sum of the chunks' plaintext lengths.
    size: u64,
    /// Chunk writes still to come (a chunk that appears twice counts twice).
    remaining: AtomicUsize,
    /// (device, inode) of the file once created; held while creating it. Later
    /// chunks reopen the path and must find this same inode there.
    created: Mutex<Option<(u64, u64)>>,
    /// End of the last byte written (holes are not written).
    written_end: AtomicU64,
    failed: AtomicBool,
}

/// One blob to fetch and where its plaintext goes: (slot, offset in the file).
struct BlobWork {
    entry: crate::pack::PackEntry,
    dests: Vec<(usize, u64)>,
}

/// A contiguous range of one pack, read with one request.
struct Span {
    pack: crate::id::PackId,
    start: u64,
    len: u64,
    blobs: Vec<BlobWork>,
}

/// Writes every file's contents. Blobs are grouped by pack and read in spans that
/// cover many blobs, in the order the files need them, by a reader thread that
/// reads ahead while this span is written; each span's blobs are
/// decrypted, checked and written on all cores. So each pack is read once, and
/// one big file's chunks are written in parallel at their offsets.
fn write_contents(state: &State, files: &[FileJob]) {
    let (slots, spans) = plan_contents(state, files);
    // Empty files have no chunk to trigger their completion.
    slots
        .par_iter()
        .filter(|s| s.job.node.content.is_empty() && !s.failed.load(Ordering::Relaxed))
        .for_each(|slot| match open_slot(slot) {
            Ok(f) => finish_slot(state, slot, &f),
            Err(e) => fail_slot(state, slot, &e),
        });
    crate::readahead::read_ahead(
        &spans,
        SPANS_QUEUED,
        state.interrupt,
        |span| {
            state.repo.backend().read_range(
                crate::backend::FileType::Pack,
                &span.pack.to_hex(),
                span.start,
                span.len,
            )
        },
        |span, bytes| {
            let session = match state.repo.pack_session(&span.pack) {
                Ok(s) => s,
                Err(e) => {
                    for blob in &span.blobs {
                        for &(slot, _) in &blob.dests {
                            fail_chunk(state, &slots[slot], Some(&e));
                        }
                    }
                    return;
                }
            };
            span.blobs.par_iter().for_each(|blob| {
                if state.interrupt.load(Ordering::Relaxed) {
                    return;
                }
                let (offset, length) = (u64::from(blob.entry.offset), u64::from(blob.entry.length));
                let open = |sealed: &[u8]| {
                    crate::pack::open_blob(
                        state.repo.key(),
                        &session,
                        state.repo.repo_id(),
                        &blob.entry,
                        sealed,
                        &span.pack,
                    )
                };
                let at = (offset - span.start) as usize;
                let within = bytes
                    .as_ref()
                    .ok()
                    .and_then(|b| b.get(at..at + length as usize));
                let plain = match within {
                    Some(sealed) => open(sealed),
                    // A span that can't be read whole (a truncated pack, say) is
                    // read blob by blob, so that every intact blob is restored.
                    None => state
                        .repo
                        .backend()
                        .read_range(
                            crate::backend::FileType::Pack,
                            &span.pack.to_hex(),
                            offset,
                            length,
                        )
                        .and_then(|sealed| open(&sealed)),
                };
                match plain {
                    Ok(plain) => {
                        for &(slot, at) in &blob.dests {
                            write_chunk(state, &slots[slot], at, &plain);
                        }
                    }
                    Err(e) => {
                        for &(slot, _) in &blob.dests {
                            fail_chunk(state, &slots[slot], Some(&e));
                        }
                    }
                }
            });
        },
    );
}

/// Looks every chunk up in the index and groups the chunks by pack, in the order
/// files first need each pack. A file with a chunk missing from the index is
/// reported and not created.
fn plan_contents<'a>(state: &State, files: &'a [FileJob]) -> (Vec<Slot<'a>>, Vec<Span>) {
    let mut slots = Vec::with_capacity(files.len());
    // Per pack, in order of first need: (pack, blobs).
    let mut packs: Vec<(crate::id::PackId, Vec<BlobWork>)> = Vec::new();
    let mut pack_pos: HashMap<crate::id::PackId, usize> = HashMap::new();
    let mut blob_pos: HashMap<crate::id::BlobId, (usize, usize)> = HashMap::new();
    let mut found = Vec::new();
    for job in files {
        found.clear();
        let mut missing = None;
        for id in &job.node.content {
            match state.index.get(BlobKind::Data, id) {
                Some(hit) => found.push((*id, hit)),
                None => {
                    missing = Some(*id);
                    break;
                }
            }
        }
        let slot_no = slots.len();
        let mut size = 0u64;
        if missing.is_none() {
            for (id, (pack, entry)) in &found {
                let p = *pack_pos.entry(*pack).or_insert_with(|| {
                    packs.push((*pack, Vec::new()));
                    packs.len() - 1
                });
                let (p, b) = *blob_pos.entry(*id).or_insert_with(|| {
                    packs[p].1.push(BlobWork {
                        entry: *entry,
                        dests: Vec::new(),
                    });
                    (p, packs[p].1.len() - 1)
                });
                packs[p].1[b].dests.push((slot_no, size));
                size += u64::from(entry.raw_length);
            }
        }
        slots.push(Slot {
            job,
            size,
            remaining: AtomicUsize::new(if missing.is_some() { 0 } else { found.len() }),
            created: Mutex::new(None),
            written_end: AtomicU64::new(0),
            failed: AtomicBool::new(missing.is_some()),
        });
        if let Some(id) = missing {
            state.error(format!(
                "{}: data blob {id} is not named by any index file; the file was not restored",
                job.dest.display()
            ));
        }
    }
    let mut spans = Vec::new();
    for (pack, mut blobs) in packs {
        blobs.sort_by_key(|b| b.entry.offset);
        let mut current: Option<Span> = None;
        for blob in blobs {
            let (off, len) = (u64::from(blob.entry.offset), u64::from(blob.entry.length));
            if let Some(span) = current.as_mut() {
                let end = span.start + span.len;
                if off >= end && off - end <= SPAN_GAP && off + len - span.start <= SPAN_MAX {
                    span.len = off + len - span.start;
                    span.blobs.push(blob);
                    continue;
                }
                spans.extend(current.take());
            }
            current = Some(Span {
                pack,
                start: off,
                len,
                blobs: vec![blob],
            });
        }
        spans.extend(current);
    }
    (slots, spans)
}

/// Opens the slot's file for writing, creating it on first use. An existing
/// non-directory in its place is replaced, never followed. A later open must
/// find the very file it created: if anything swapped it (for a symlink, or a
/// hard link to a file elsewhere), nothing is written through it.
fn open_slot(slot: &Slot) -> io::Result<File> {
    use std::os::unix::fs::MetadataExt;
    let dest = &slot.job.dest;
    let mut created = slot.created.lock().unwrap_or_else(|e| e.into_inner());
    let mut opts = OpenOptions::new();
    opts.write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if let Some(identity) = *created {
        let f = opts.open(dest)?;
        let m = f.metadata()?;
        if (m.dev(), m.ino()) != identity {
            return Err(io::Error::other(
                "was replaced by another file while being restored; not writing to it",
            ));
        }
        return Ok(f);
    }
    opts.create_new(true).mode(0o600);
    let f = match opts.open(dest) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            replace_non_dir(dest)?;
            opts.open(dest)?
        }
        r => r?,
    };
    let m = f.metadata()?;
    *created = Some((m.dev(), m.ino()));
    Ok(f)
}

fn write_chunk(state: &State, slot: &Slot, offset: u64, data: &[u8]) {
    if slot.failed.load(Ordering::Relaxed) {
        return fail_chunk(state, slot, None);
    }
    let written = open_slot(slot).and_then(|f| Ok((write_sparse(&f, offset, data)?, f)));
    match written {
        Ok((end, f)) => {
            slot.written_end.fetch_max(end, Ordering::Relaxed);
            state.progress.done(0, data.len() as u64);
            if slot.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                finish_slot(state, slot, &f);
            }
        }
        Err(e) => fail_chunk(state, slot, Some(&e)),
    }
}

/// A chunk of the slot's file could not be fetched or written: the first such
/// error is reported, and the file gets no metadata, so that a later backup
/// doesn't take the damaged file for an unchanged one.
/// `None`: the file has already failed, just count the chunk.
fn fail_chunk(state: &State, slot: &Slot, e: Option<&dyn std::fmt::Display>) {
    let first = !slot.failed.swap(true, Ordering::AcqRel);
    if let (true, Some(e)) = (first, e) {
        state.error(format!("{}: {e}", slot.job.dest.display()));
    }
    slot.remaining.fetch_sub(1, Ordering::AcqRel);
}

fn fail_slot(state: &State, slot: &Slot, e: &io::Error) {
    slot.failed.store(true, Ordering::Relaxed);
    state.error(format!("{}: {e}", slot.job.dest.display()));
}

/// Every chunk is written: extend over a trailing hole, then apply metadata.
fn finish_slot(state: &State, slot: &Slot, f: &File) {
    let dest = &slot.job.dest;
    if slot.failed.load(Ordering::Acquire) {
        return;
    }
    if slot.written_end.load(Ordering::Relaxed) < slot.size {
        if let Err(e) = f.set_len(slot.size) {
            return fail_slot(state, slot, &e);
        }
    }
    if slot.size != slot.job.node.size {
        state.warning(format!(
            "{}: restored {} bytes, but the snapshot recorded a size of {}",
            dest.display(),
            slot.size,
            slot.job.node.size
        ));
    }
    apply_metadata(state, dest, Some(f), &slot.job.node);
    state.progress.set_current(dest);
    state.progress.done(1, 0);
    state.bytes.fetch_add(slot.size, Ordering::Relaxed);
    state.with(|s| s.files += 1);
}

/// Writes `data` at `offset`, skipping blocks of zeros so that they stay holes.
/// Returns the end of the last byte written, 0 if nothing was (all zeros).
fn write_sparse(f: &File, offset: u64, data: &[u8]) -> io::Result<u64> {
    let mut run: Option<usize> = None;
    let mut last_end = 0;
    let mut i = 0;
    while i < data.len() {
        let into_block = ((offset + i as u64) % SPARSE_BLOCK as u64) as usize;
        let end = (i + SPARSE_BLOCK - into_block).min(data.len());
        let block = &data[i..end];
        if block == &ZEROS[..block.len()] {
            if let Some(s) = run.take() {
                f.write_all_at(&data[s..i], offset + s as u64)?;
                last_end = i;
            }
        } else if run.is_none() {
            run = Some(i);
        }
        i = end;
    }
    if let Some(s) = run {
        f.write_all_at(&data[s..], offset + s as u64)?;
        return Ok(offset + data.len() as u64);
    }
    Ok(if last_end == 0 {
        0
    } else {
        offset + last_end as u64
    })
}

fn timespec(t: crate::tree::Timestamp) -> TimeSpec {
    TimeSpec::new(t.0, i64::from(t.1))
}

/// Sets `node`'s metadata on `dest`: through `file` when given (a regular file
/// being restored: no path lookups, and nothing can swap the file in between),
/// else by path without following a final symlink. Ownership, extended
/// attributes, permissions, then times — chown clears setuid bits, so
/// permissions come after it, and times come last because the others change
/// ctime and, for xattrs on some filesystems, mtime.
fn apply_metadata(state: &State, dest: &Path, file: Option<&File>, node: &Node) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;
    use xattr::FileExt as _;
    let (uid, gid) = (
        Some(nix::unistd::Uid::from_raw(node.uid)),
        Some(nix::unistd::Gid::from_raw(node.gid)),
    );
    let own = match file {
        Some(f) => nix::unistd::fchown(f.as_raw_fd(), uid, gid),
        None => nix::unistd::fchownat(
            None,
            dest,
            uid,
            gid,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ),
    };
    // Only root can give files away; as a user, ownership is expected to differ.
    if let (Err(e), true) = (own, state.is_root) {
        state.warning(format!(
            "{}: chown {}:{}: {e}",
            dest.display(),
            node.uid,
            node.gid
        ));
    }
    for x in &node.xattrs {
        let name = std::ffi::OsStr::from_bytes(&x.name);
        let set = match file {
            Some(f) => f.set_xattr(name, &x.value),
            None => xattr::set(dest, name, &x.value),
        };
        if let Err(e) = set {
            state.warning(format!(
                "{}: extended attribute {}: {e}",
                dest.display(),
                String::from_utf8_lossy(&x.name)
            ));
        }
    }
    if node.kind != NodeKind::Symlink {
        let perm = fs::Permissions::from_mode(node.mode & 0o7777);
        let set = match file {
            Some(f) => f.set_permissions(perm),
            None => fs::set_permissions(dest, perm),
        };
        if let Err(e) = set {
            state.warning(format!("{}: chmod {:o}: {e}", dest.display(), node.mode));
        }
    }
    let (atime, mtime) = (timespec(node.atime), timespec(node.mtime));
    let times = match file {
        Some(f) => nix::sys::stat::futimens(f.as_raw_fd(), &atime, &mtime),
        None => {
            nix::sys::stat::utimensat(None, dest, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        }
    };
    if let Err(e) = times {
        state.warning(format!("{}: setting times: {e}", dest.display()));
    }
}

/// Reads a restored file back and checks every chunk against its blob id.
fn verify_file(state: &State, job: &FileJob) -> Result<()> {
    let dest = &job.dest;
    let mut f = File::open(dest).at(dest)?;
    let key = state.repo.key();
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for id in &job.node.content {
        let (_, entry) = state
            .index
            .get(BlobKind::Data, id)
            .ok_or_else(|| Error::Missing {
                what: format!("data blob {id}"),
                reason: "not in the index".into(),
            })?;
        buf.resize(entry.raw_length as usize, 0);
        f.read_exact(&mut buf).at(dest)?;
        if key.blob_id(&buf) != *id {
            return Err(Error::corrupt(
                dest.display().to_string(),
                format!(
                    "bytes {offset}..{} differ from blob {id}",
                    offset + buf.len() as u64
                ),
            ));
        }
        offset += buf.len() as u64;
    }
    let mut extra = [0u8; 1];
    if f.read(&mut extra).at(dest)? != 0 {
        return Err(Error::corrupt(
            dest.display().to_string(),
            format!("longer than the {offset} bytes restored"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_blocks_become_holes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = File::create(&p).unwrap();
        let mut data = vec![0u8; 1 << 20];
        data[100] = 1;
        data[(1 << 20) - 1] = 2;
        write_sparse(&f, 123, &data).unwrap();
        f.set_len(123 + data.len() as u64).unwrap();
        let back = fs::read(&p).unwrap();
        assert_eq!(&back[123..], &data[..]);
        assert!(back[..123].iter().all(|&b| b == 0));
        // At most three blocks hold data (allocation is in 512-byte units).
        assert!(fs::metadata(&p).unwrap().blocks() * 512 <= 3 * 4096 + 8192);
    }
}
