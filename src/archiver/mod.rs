//! Backup: walk → compare with the parent snapshot → read → chunk → id → dedup →
//! compress → encrypt → pack → write packs → write index → write snapshot.
//!
//! The snapshot is the only commit point; see `saver` for why an interruption
//! anywhere before it is harmless.

pub mod exclude;
pub mod node;
pub mod saver;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::chunker::{Chunk, ChunkReader};
use crate::error::{Error, IoContext, Result};
use crate::format;
use crate::id::{BlobId, SnapshotId};
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::{self, Recorded, Snapshot, SourceProblem, Summary};
use crate::tree::{MAX_TREE_DEPTH, Node, NodeKind, Timestamp, Tree, is_safe_name};

pub use exclude::Excludes;
use node::NameCache;
use saver::Saver;

/// Chunks processed in parallel per batch: bounds memory while keeping every core
/// busy on a large file.
const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Files up to this size are read whole, many at a time on the rayon pool: one
/// small file alone can't keep the cores (or a NAS's queue) busy.
const SMALL_FILE: u64 = 4 * 1024 * 1024;
/// A batch of small files holds at most about this many bytes...
const SMALL_BATCH_BYTES: u64 = 8 * 1024 * 1024;
/// ...and at most this many files.
const SMALL_BATCH_FILES: usize = 512;
/// How long a backup runs before the sources are counted for progress totals.
const SCAN_DELAY: std::time::Duration = std::time::Duration::from_secs(1);
/// Directory entries whose metadata is gathered in parallel at a time.
const PROBE_BATCH: usize = 256;

pub enum Source {
    Paths(Vec<PathBuf>),
    /// Standard input (or any stream), stored as one file of this name.
    Stream {
        name: String,
        reader: Box<dyn Read + Send>,
    },
}

pub struct BackupOptions {
    pub source: Source,
    pub host: Option<String>,
    pub tags: Vec<String>,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    /// `None`: the latest snapshot of this host with the same paths.
    pub parent: Option<SnapshotId>,
    /// Re-read every file even when its metadata says it is unchanged.
    pub force: bool,
    /// Counters to update as the backup goes; the sources are also counted, in a
    /// thread of their own, for totals.
    pub progress: Option<Arc<Progress>>,
}

/// What the backup reports as it goes.
pub enum Event<'a> {
    /// A source could not be read and is missing from the snapshot.
    Error(&'a SourceProblem),
    /// A source changed while being read, or some of its metadata was unreadable.
    Warning(&'a SourceProblem),
}

pub struct BackupResult {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    /// Blobs in the index loaded at the start, and the memory their entries took.
    pub index_blobs: usize,
    pub index_memory_bytes: usize,
}

pub fn backup(
    repo: &Arc<Repository>,
    opts: BackupOptions,
    interrupt: &AtomicBool,
    report: &(dyn Fn(Event) + Sync),
) -> Result<BackupResult> {
    let lock = crate::lock::acquire(repo, false)?;
    let started = snapshot::now_rfc3339();
    // An unreadable index file only costs storing its blobs again: say so and
    // go on, rather than refusing every backup until it is repaired.
    let index = Arc::new(repo.load_index(&mut |id, e| {
        report(Event::Warning(&SourceProblem {
            path: format!("index {id}"),
            error: format!(
                "unreadable, left out ({e}); blobs only it lists are stored again. \
                 `cairn check` reports it, `cairn repair index` rebuilds it"
            ),
        }))
    })?);
    let host = opts.host.clone().unwrap_or_else(snapshot::hostname);
    let excludes = Excludes::new(&opts.excludes)?;

    let paths = match &opts.source {
        Source::Paths(p) => normalize_paths(p)?,
        Source::Stream { name, .. } => vec![PathBuf::from(format!("/{name}"))],
    };
    let path_strings: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();

    let parent = match opts.parent {
        Some(id) => Some((id, repo.load_snapshot(&id)?)),
        None if opts.force => None,
        None => crate::select::find_parent(repo, &host, &path_strings)?,
    };
    // A parent whose tree can't be read only costs re-reading every file; that is
    // also how a backup heals a repository that lost blobs.
    let parent_tree = match &parent {
        Some((id, s)) => match repo.load_tree(&index, &s.tree) {
            Ok(t) => Some(t),
            Err(e) => {
                report(Event::Warning(&SourceProblem {
                    path: format!("parent snapshot {}", id.short()),
                    error: format!("unreadable, reading every file instead: {e}"),
                }));
                None
            }
        },
        None => None,
    };

    let progress = opts.progress.clone().unwrap_or_default();
    let mut a = Archiver {
        progress: Arc::clone(&progress),
        repo: Arc::clone(repo),
        saver: Saver::new(Arc::clone(repo), Arc::clone(&index)),
        excludes,
        one_file_system: opts.one_file_system,
        force: opts.force,
        interrupt,
        report,
        // A parent tree written by another version may hold fields this one
        // doesn't know, and so can't compare: only trees of this version are kept
        // as they are.
        reuse_trees: parent
            .as_ref()
            .is_some_and(|(_, s)| s.program_version == program_version()),
        names: NameCache::default(),
        hardlinks: HashMap::new(),
        summary: Summary::default(),
        errors: Recorded::default(),
        warnings: Recorded::default(),
        repo_root: repo_local_root(repo),
        depth: 1,
    };

    let scan_done = AtomicBool::new(false);
    let (walk_done, walk_done_rx) = std::sync::mpsc::channel::<()>();
    let walked = std::thread::scope(|scope| {
        if opts.progress.is_some() && matches!(opts.source, Source::Paths(_)) {
            let (paths, progress, stop) = (&paths, &progress, &scan_done);
            let patterns = opts.excludes.clone();
            let one_fs = opts.one_file_system;
            scope.spawn(move || {
                // A backup done within the delay (an unchanged one, say) needs no
                // totals, and counting would compete with it for the same disks.
                let waited = walk_done_rx.recv_timeout(SCAN_DELAY);
                if waited != Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                    return;
                }
                if let Ok(excludes) = Excludes::new(&patterns) {
                    count_sources(paths, &excludes, one_fs, progress, stop);
                }
            });
        }
        let walked = match opts.source {
            Source::Paths(_) => a.backup_roots(&paths, parent_tree.as_ref()),
            Source::Stream { name, reader } => a.backup_stream(&name, reader),
        };
        scan_done.store(true, Ordering::Relaxed);
        drop(walk_done);
        walked
    });
    let tree = match walked {
        Ok(t) => t,
        Err(e) => {
            // Make what was written reusable by the next run, then report.
            let _ = a.saver.finish();
            return Err(e);
        }
    };
    a.saver.finish()?;

    let mut summary = a.summary;
    let st = &a.saver.stats;
    summary.data_blobs_new = st.data_blobs_new;
    summary.tree_blobs_new = st.tree_blobs_new;
    summary.bytes_new = st.bytes_new;
    summary.bytes_added = st.bytes_written;
    summary.started = started;
    summary.finished = snapshot::now_rfc3339();
    let mut snap = Snapshot {
        time: summary.started.clone(),
        hostname: host,
        username: snapshot::username(),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        paths: path_strings,
        tags: opts.tags,
        tree,
        parent: parent.map(|(id, _)| id),
        excludes: a.excludes.patterns().to_vec(),
        program_version: program_version(),
        summary,
        errors: a.errors.into_list("errors"),
        warnings: a.warnings.into_list("warnings"),
    };
    if interrupt.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    // The lock is the first defence and this the second: whatever a process that
    // took our lock for stale deleted, the snapshot must not name it.
    a.saver.verify_written()?;
    verify_relied_on(repo, &index)?;
    lock.still_valid()?;
    // The snapshot's own size is part of what was added; it is known only after
    // encoding, so it is added to the in-memory copy returned to the caller.
    let (id, size) = repo.save_snapshot(&snap)?;
    snap.summary.bytes_added += size;
    Ok(BackupResult {
        id,
        snapshot: snap,
        index_blobs: index.blob_count(),
        index_memory_bytes: index.memory_bytes(),
    })
}

/// Checks that the packs this backup may have deduplicated against are still
/// stored. A pack leaves the index before it is deleted (format-spec §16), so
/// while every index file loaded at the start is still there — one listing of
/// `index/`, the usual case — none of them can be gone. If one was replaced, the
/// index was rewritten under this backup by a process that took its lock for
/// stale: then every pack the loaded index names must still be stored.
fn verify_relied_on(repo: &Repository, index: &crate::index::Index) -> Result<()> {
    use crate::backend::FileType;
    let names = |t| -> Result<std::collections::HashSet<String>> {
        Ok(repo
            .backend()
            .list(t)?
            .into_iter()
            .map(|e| e.name)
            .collect())
    };
    let index_now = names(FileType::Index)?;
    if index
        .files()
        .iter()
        .all(|f| index_now.contains(&f.to_hex()))
    {
        return Ok(());
    }
    let packs_now = names(FileType::Pack)?;
    let gone: Vec<crate::id::PackId> = index
        .packs()
        .map(|(p, _)| p)
        .filter(|p| !packs_now.contains(&p.to_hex()))
        .collect();
    match gone.first() {
        None => Ok(()),
        Some(&first) => Err(Error::IndexRewritten {
            packs: gone.len(),
            first,
        }),
    }
}

/// Absolute, lexically normalized, deduplicated, with paths inside other given
/// paths dropped (they are covered).
fn normalize_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(Error::invalid("nothing to back up: give at least one path"));
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        let abs = std::path::absolute(p).at(p)?;
        let mut clean = PathBuf::from("/");
        for c in abs.components() {
            match c {
                Component::Normal(n) => clean.push(n),
                Component::ParentDir => {
                    clean.pop();
                }
                _ => {}
            }
        }
        std::fs::symlink_metadata(&clean).at(&clean)?;
        out.push(clean);
    }
    out.sort();
    out.dedup();
    let all = out.clone();
    out.retain(|p| !all.iter().any(|q| q != p && p.starts_with(q)));
    Ok(out)
}

fn repo_local_root(repo: &Repository) -> Option<PathBuf> {
    std::fs::canonicalize(repo.backend().location()).ok()
}

/// The directories above the backed-up paths, down to each path.
enum Virtual {
    Leaf(PathBuf),
    Dir(BTreeMap<Vec<u8>, Virtual>),
}

struct Archiver<'a> {
    repo: Arc<Repository>,
    progress: Arc<Progress>,
    saver: Saver,
    excludes: Excludes,
    one_file_system: bool,
    force: bool,
    interrupt: &'a AtomicBool,
    report: &'a (dyn Fn(Event) + Sync),
    /// Whether an unchanged directory may keep its parent's tree blob.
    reuse_trees: bool,
    names: NameCache,
    /// (device, inode) → content, for files with several links seen in this run.
    hardlinks: HashMap<(u64, u64), Vec<BlobId>>,
    summary: Summary,
    errors: Recorded,
    warnings: Recorded,
    repo_root: Option<PathBuf>,
    /// Depth of the tree being built: the root tree is at 1 (format-spec §17).
    depth: usize,
}

impl Archiver<'_> {
    fn check_interrupt(&self) -> Result<()> {
        if self.interrupt.load(Ordering::Relaxed) {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }

    fn error(&mut self, path: &Path, msg: String) {
        let p = SourceProblem {
            path: path.display().to_string(),
            error: msg,
        };
        (self.report)(Event::Error(&p));
        self.errors.push(p);
    }

    fn warning(&mut self, path: &Path, msg: String) {
        let p = SourceProblem {
            path: path.display().to_string(),
            error: msg,
        };
        (self.report)(Event::Warning(&p));
        self.warnings.push(p);
    }

    fn parent_subtree(&mut self, parent: Option<&Node>) -> Option<Tree> {
        let id = parent.filter(|n| n.kind == NodeKind::Dir)?.subtree?;
        // A damaged parent only costs re-reading: carry on without it.
        self.repo.load_tree(self.saver.index(), &id).ok()
    }

    fn backup_roots(&mut self, paths: &[PathBuf], parent: Option<&Tree>) -> Result<BlobId> {
        let mut root = BTreeMap::new();
        for p in paths {
            let comps: Vec<Vec<u8>> = p
                .components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n.as_bytes().to_vec()),
                    _ => None,
                })
                .collect();
            insert_virtual(&mut root, &comps, p.clone());
        }
        let mut tree = self.backup_virtual(&root, Path::new("/"), parent)?;
        self.saver.save_tree(&mut tree)
    }

    fn backup_virtual(
        &mut self,
        children: &BTreeMap<Vec<u8>, Virtual>,
        at: &Path,
        parent: Option<&Tree>,
    ) -> Result<Tree> {
        let mut tree = Tree::default();
        for (name, v) in children {
            let path = at.join(std::ffi::OsStr::from_bytes(name));
            let parent_node = parent.and_then(|t| t.find(name));
            match v {
                Virtual::Leaf(p) => {
                    if let Some(n) = self.backup_path(p, name, parent_node, None)? {
                        tree.nodes.push(n);
                    }
                }
                Virtual::Dir(sub) => {
                    let meta = match std::fs::symlink_metadata(&path) {
                        Ok(m) => m,
                        Err(e) => {
                            self.error(&path, e.to_string());
                            continue;
                        }
                    };
                    let (mut node, _) = node::node_from(&path, name, &meta);
                    self.names.fill(&mut node);
                    node.kind = NodeKind::Dir;
                    node.link_target = None;
                    let parent_sub = self.parent_subtree(parent_node);
                    self.depth += 1;
                    let subtree = self.backup_virtual(sub, &path, parent_sub.as_ref());
                    self.depth -= 1;
                    let mut subtree = subtree?;
                    node.subtree = Some(self.saver.save_tree(&mut subtree)?);
                    self.summary.entries += 1;
                    tree.nodes.push(node);
                }
            }
        }
        Ok(tree)
    }

    /// Backs up one entry. `Ok(None)`: skipped (excluded, or unreadable and
    /// reported), or, for a small file that must be read when `defer` is given,
    /// queued there for [`Self::read_batch`].
    fn backup_path(
        &mut self,
        path: &Path,
        name: &[u8],
        parent: Option<&Node>,
        defer: Option<&mut Vec<Deferred>>,
    ) -> Result<Option<Node>> {
        self.check_interrupt()?;
        if self.skip(path) {
            return Ok(None);
        }
        let parent = Parent {
            node: parent,
            indexed: false,
        };
        self.backup_probed(path, node::probe(path, name), parent, defer)
    }

    /// Whether `path` is left out: excluded, or the repository itself (reported).
    fn skip(&mut self, path: &Path) -> bool {
        if self.excludes.is_excluded(path) {
            return true;
        }
        if self.repo_root.as_deref() == Some(path) {
            // Backing a repository up into itself reads packs as they are written.
            self.warning(
                path,
                "skipped: this is the repository being written to".into(),
            );
            return true;
        }
        false
    }

    /// [`Self::backup_path`] once the entry's metadata has been gathered.
    fn backup_probed(
        &mut self,
        path: &Path,
        probe: node::Probe,
        parent: Parent,
        defer: Option<&mut Vec<Deferred>>,
    ) -> Result<Option<Node>> {
        let Parent {
            node: parent,
            indexed,
        } = parent;
        let (meta, mut node, problems) = match probe {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.error(path, "vanished before it could be read".into());
                return Ok(None);
            }
            Err(e) => {
                self.error(path, e.to_string());
                return Ok(None);
            }
        };
        self.names.fill(&mut node);
        for p in problems {
            self.warning(path, p);
        }
        self.summary.entries += 1;
        match node.kind {
            NodeKind::Dir => {
                // Readers refuse deeper trees. (Paths by absolute name stop at
                // about 2047 levels on Linux, so this is a guard, not a limit
                // anyone meets.)
                if self.depth >= MAX_TREE_DEPTH {
                    self.error(
                        path,
                        format!("not backed up: directories nest more than {MAX_TREE_DEPTH} levels deep here"),
                    );
                    self.summary.entries -= 1;
                    return Ok(None);
                }
                self.depth += 1;
                let subtree = self.backup_dir(path, &meta, parent);
                self.depth -= 1;
                let subtree = subtree?;
                let old = parent
                    .filter(|p| p.kind == NodeKind::Dir)
                    .and_then(|p| p.subtree);
                match old {
                    None => self.summary.dirs_new += 1,
                    Some(o) if o == subtree => self.summary.dirs_unchanged += 1,
                    Some(_) => self.summary.dirs_changed += 1,
                }
                node.subtree = Some(subtree);
            }
            NodeKind::File => {
                let Some(status) = self.reuse_content(&mut node, parent, indexed) else {
                    return Ok(Some(node));
                };
                if let Some(queue) = defer {
                    if node.links <= 1 && node.size <= SMALL_FILE {
                        queue.push(Deferred {
                            path: path.to_path_buf(),
                            node,
                            status,
                        });
                        return Ok(None);
                    }
                }
                self.progress.set_current(path);
                let stored = self.read_file(path, &mut node, status)?;
                self.progress.done(1, 0);
                if !stored {
                    self.summary.entries -= 1;
                    return Ok(None);
                }
            }
            _ => {}
        }
        Ok(Some(node))
    }

    fn backup_dir(
        &mut self,
        path: &Path,
        meta: &std::fs::Metadata,
        parent: Option<&Node>,
    ) -> Result<BlobId> {
        let parent_tree = self.parent_subtree(parent);
        let mut tree = Tree::default();
        let mut entries: Vec<(Vec<u8>, PathBuf)> = match list_dir(path, Some(meta)) {
            Ok(v) => v,
            Err(e) => {
                self.error(path, format!("listing directory: {e}; stored as empty"));
                Vec::new()
            }
        };
        entries.sort();
        entries.retain(|(_, p)| !self.skip(p));
        // Entries are probed a group ahead on the rayon pool while this thread
        // decides about the previous group, so the system calls overlap with it.
        let mut groups = Vec::with_capacity(entries.len().div_ceil(PROBE_BATCH));
        while entries.len() > PROBE_BATCH {
            let rest = entries.split_off(PROBE_BATCH);
            groups.push(std::mem::replace(&mut entries, rest));
        }
        groups.push(entries);
        let mut groups = groups.into_iter();
        let mut batch: Vec<Deferred> = Vec::new();
        let mut next = groups.next().map(probe_ahead);
        while let Some(pending) = next.take() {
            self.check_interrupt()?;
            let probed = pending.recv().map_err(|_| {
                Error::invalid(format!(
                    "gathering the metadata of the entries of {} failed",
                    path.display()
                ))
            })?;
            next = groups.next().map(probe_ahead);
            // The blobs of the parent's copies of this group's files, looked up
            // side by side (see `Index::contains_each`).
            let parents: Vec<Option<&Node>> = probed
                .iter()
                .map(|(name, _, _)| parent_tree.as_ref().and_then(|t| t.find(name)))
                .collect();
            let wanted: Vec<BlobId> = parents
                .iter()
                .flatten()
                .filter(|n| n.kind == NodeKind::File)
                .flat_map(|n| n.content.iter().copied())
                .collect();
            let mut indexed = self
                .saver
                .index()
                .contains_each(BlobKind::Data, &wanted)
                .into_iter();
            for ((_, child, probe), parent_node) in probed.into_iter().zip(parents) {
                let all_indexed = match parent_node {
                    Some(n) if n.kind == NodeKind::File => {
                        let k = n.content.len();
                        indexed.by_ref().take(k).filter(|&b| b).count() == k
                    }
                    _ => false,
                };
                let probe = match probe {
                    Ok((m, mut n, _))
                        if self.one_file_system && m.is_dir() && m.dev() != meta.dev() =>
                    {
                        // A mount point: keep the directory itself, not what is mounted.
                        self.names.fill(&mut n);
                        n.subtree = Some(self.saver.save_tree(&mut Tree::default())?);
                        self.summary.entries += 1;
                        tree.nodes.push(n);
                        continue;
                    }
                    other => other,
                };
                let parent = Parent {
                    node: parent_node,
                    indexed: all_indexed,
                };
                if let Some(n) = self.backup_probed(&child, probe, parent, Some(&mut batch))? {
                    tree.nodes.push(n);
                }
                let queued: u64 = batch.iter().map(|d| d.node.size).sum();
                if queued >= SMALL_BATCH_BYTES || batch.len() >= SMALL_BATCH_FILES {
                    self.read_batch(std::mem::take(&mut batch), &mut tree)?;
                }
            }
        }
        self.read_batch(batch, &mut tree)?;
        // A directory whose entries all match the parent's keeps the parent's tree
        // blob, without encoding and hashing it again.
        tree.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let old_id = parent
            .filter(|n| n.kind == NodeKind::Dir)
            .and_then(|n| n.subtree);
        if let (Some(old), Some(old_id)) = (&parent_tree, old_id) {
            if self.reuse_trees
                && old.nodes == tree.nodes
                && self.saver.known(BlobKind::Tree, &old_id)
            {
                return Ok(old_id);
            }
        }
        self.saver.save_tree(&mut tree).map_err(|e| match e {
            Error::Invalid(m) => Error::invalid(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Reads a batch of small files in parallel, then stores their chunks and adds
    /// their nodes to `tree` in order.
    fn read_batch(&mut self, batch: Vec<Deferred>, tree: &mut Tree) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.check_interrupt()?;
        let chunker = self.repo.chunker();
        let key = self.repo.key();
        let level = self.repo.config().compression;
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
                    if changed {
                        self.warning(&d.path, CHANGED_WHILE_READ.into());
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

    /// Fills `node.content` without reading the file when the parent snapshot (or
    /// another link to the same inode) already has it. Otherwise returns whether
    /// the file is new or changed, for [`Self::read_file`].
    fn reuse_content(
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
    fn read_file(&mut self, path: &Path, node: &mut Node, status: Status) -> Result<bool> {
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
            if changed_while_read(&before, &after, read) {
                self.warning(path, CHANGED_WHILE_READ.into());
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

    fn count(&mut self, s: Status) {
        match s {
            Status::New => self.summary.files_new += 1,
            Status::Changed => self.summary.files_changed += 1,
        }
    }

    /// Chunks a stream; ids and compression run in parallel per batch of chunks,
    /// while a reader thread reads and cuts the next batch.
    fn read_content(
        &mut self,
        reader: impl Read + Send,
        size_hint: u64,
    ) -> std::result::Result<(Vec<BlobId>, u64), ReadError> {
        let mut chunks = ChunkReader::new(self.repo.chunker(), reader);
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
            self.store_batches(rx)
        })
    }

    fn store_batches(
        &mut self,
        rx: std::sync::mpsc::Receiver<io::Result<Vec<Chunk>>>,
    ) -> std::result::Result<(Vec<BlobId>, u64), ReadError> {
        let mut content = Vec::new();
        let mut total = 0u64;
        let level = self.repo.config().compression;
        for batch in rx {
            self.check_interrupt().map_err(ReadError::Repo)?;
            let batch = batch.map_err(ReadError::Io)?;
            let bytes: usize = batch.iter().map(Chunk::len).sum();
            total += bytes as u64;
            self.progress.done(0, bytes as u64);
            let key = self.repo.key();
            let saver = &self.saver;
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
                    self.saver
                        .add(BlobKind::Data, id, p, len)
                        .map_err(ReadError::Repo)?;
                }
                content.push(id);
            }
        }
        Ok((content, total))
    }

    fn backup_stream(&mut self, name: &str, reader: Box<dyn Read + Send>) -> Result<BlobId> {
        if !is_safe_name(name.as_bytes()) {
            return Err(Error::invalid(format!(
                "--stdin-filename {name:?} must be a plain file name"
            )));
        }
        let (content, read) = match self.read_content(reader, 0) {
            Ok(r) => r,
            Err(ReadError::Io(e)) => return Err(Error::io("standard input", e)),
            Err(ReadError::Repo(e)) => return Err(e),
        };
        let now = chrono::Utc::now();
        let t = Timestamp(now.timestamp(), now.timestamp_subsec_nanos());
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        nix::sys::stat::umask(umask);
        let node = Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::File,
            mode: 0o666 & !umask.bits(),
            uid,
            gid,
            user: Some(snapshot::username()),
            group: nix::unistd::Group::from_gid(nix::unistd::getgid())
                .ok()
                .flatten()
                .map(|g| g.name),
            mtime: t,
            atime: t,
            ctime: t,
            size: read,
            inode: 0,
            device: 0,
            links: 1,
            rdev: 0,
            link_target: None,
            content,
            subtree: None,
            xattrs: Vec::new(),
        };
        self.summary.files_new += 1;
        self.summary.entries += 1;
        self.summary.bytes_read += read;
        self.summary.total_bytes += read;
        let mut tree = Tree { nodes: vec![node] };
        self.saver.save_tree(&mut tree)
    }
}

#[derive(Clone, Copy)]
enum Status {
    New,
    Changed,
}

/// A small file waiting to be read with others in parallel.
struct Deferred {
    path: PathBuf,
    node: Node,
    status: Status,
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
        changed: bool,
    },
}

const CHANGED_WHILE_READ: &str =
    "changed while being read; the stored copy may mix old and new content";

fn changed_while_read(before: &std::fs::Metadata, after: &std::fs::Metadata, read: u64) -> bool {
    after.len() != before.len()
        || after.mtime() != before.mtime()
        || after.mtime_nsec() != before.mtime_nsec()
        || after.ctime() != before.ctime()
        || after.ctime_nsec() != before.ctime_nsec()
        || read != before.len()
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
        .is_ok_and(|after| changed_while_read(&before, &after, read));
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

enum ReadError {
    /// Reading the source failed: the file is skipped and reported.
    Io(io::Error),
    /// Writing to the repository failed, or the run was interrupted: the backup stops.
    Repo(Error),
}

/// An entry's node in the parent snapshot, and whether all of that node's blobs
/// were found in the index (looked up ahead, for a whole group of entries).
struct Parent<'a> {
    node: Option<&'a Node>,
    indexed: bool,
}

/// What snapshots record as the program that wrote them.
fn program_version() -> String {
    format!("cairn {}", env!("CARGO_PKG_VERSION"))
}

/// Directory entries with their metadata, as [`probe_ahead`] delivers them.
type Probed = Vec<(Vec<u8>, PathBuf, node::Probe)>;

/// Starts gathering the metadata of `entries` on the rayon pool; the result
/// arrives on the returned channel, which closes empty if the work panicked (a
/// panic in a spawned rayon job would otherwise abort the process, leaving the
/// packs written so far without an index).
fn probe_ahead(entries: Vec<(Vec<u8>, PathBuf)>) -> std::sync::mpsc::Receiver<Probed> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rayon::spawn(move || {
        let probed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            entries
                .into_par_iter()
                .map(|(name, path)| {
                    let probe = node::probe(&path, &name);
                    (name, path, probe)
                })
                .collect::<Probed>()
        }));
        if let Ok(probed) = probed {
            let _ = tx.send(probed);
        }
    });
    rx
}

/// Opens without following a symlink swapped in since `lstat`, without blocking
/// on a FIFO swapped in, and without touching atime where permitted.
fn open_for_backup(path: &Path) -> io::Result<File> {
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

/// Counts the regular files and bytes under `paths` (with the backup's exclude and
/// file-system rules) into `progress`'s totals, for a progress bar's ETA. Runs
/// beside the backup and stops when `stop` is set. It lists directories the way the
/// backup does, without touching their atimes: a walker that did would change the
/// directories' metadata, and so their trees, on every backup.
fn count_sources(
    paths: &[PathBuf],
    excludes: &Excludes,
    one_file_system: bool,
    progress: &Progress,
    stop: &AtomicBool,
) {
    let mut stack: Vec<(PathBuf, Option<u64>)> = paths.iter().map(|p| (p.clone(), None)).collect();
    while let Some((path, dev)) = stack.pop() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if excludes.is_excluded(&path) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            progress.found(1, meta.len());
        } else if meta.is_dir() {
            if one_file_system && dev.is_some_and(|d| d != meta.dev()) {
                continue;
            }
            if let Ok(entries) = list_dir(&path, None) {
                stack.extend(entries.into_iter().map(|(_, p)| (p, Some(meta.dev()))));
            }
        }
    }
    progress.set_totals_final();
}

/// Lists a directory without updating its atime where permitted (reading it would
/// otherwise change the directory's metadata and so its tree on every backup).
/// With `expected`, the directory opened must be the one that metadata describes:
/// another one renamed or mounted there since is refused.
fn list_dir(
    path: &Path,
    expected: Option<&std::fs::Metadata>,
) -> io::Result<Vec<(Vec<u8>, PathBuf)>> {
    use nix::fcntl::OFlag;
    use std::os::fd::AsRawFd;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let mode = nix::sys::stat::Mode::empty();
    let mut dir = match nix::dir::Dir::open(path, flags | OFlag::O_NOATIME, mode) {
        Err(nix::errno::Errno::EPERM) => nix::dir::Dir::open(path, flags, mode),
        r => r,
    }
    .map_err(io::Error::from)?;
    if let Some(m) = expected {
        let st = nix::sys::stat::fstat(dir.as_raw_fd()).map_err(io::Error::from)?;
        if (st.st_dev, st.st_ino) != (m.dev(), m.ino()) {
            return Err(io::Error::other(
                "it was replaced by another directory while being backed up",
            ));
        }
    }
    let mut out = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push((name.to_vec(), path.join(std::ffi::OsStr::from_bytes(name))));
    }
    Ok(out)
}

fn insert_virtual(map: &mut BTreeMap<Vec<u8>, Virtual>, comps: &[Vec<u8>], full: PathBuf) {
    let Some((first, rest)) = comps.split_first() else {
        return;
    };
    if rest.is_empty() {
        map.insert(first.clone(), Virtual::Leaf(full));
        return;
    }
    let entry = map
        .entry(first.clone())
        .or_insert_with(|| Virtual::Dir(BTreeMap::new()));
    if let Virtual::Dir(sub) = entry {
        insert_virtual(sub, rest, full);
    }
}
