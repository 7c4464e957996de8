//! The walk: directories listed and their entries probed a group ahead, each
//! entry compared with the parent snapshot, and trees built bottom-up.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use super::Archiver;
use super::node::{self, Meta};
use super::small::{Deferred, OpenDir, SMALL_FILE};
use super::source::{Virtual, insert_virtual};
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::Index;
use crate::pack::BlobKind;
use crate::repository::Repository;
use crate::tree::{MAX_TREE_DEPTH, Node, NodeKind, Tree, TreeView};

/// Directory entries whose metadata is gathered in parallel at a time.
const PROBE_BATCH: usize = 256;

/// Directories with at most this many entries are probed on the walking thread.
const INLINE_PROBE: usize = 16;

/// Subdirectories gathered ahead (see [`gather_ahead`]) at most at once: two
/// for each thread of the pool that gathers them, from 4 to 16. More than
/// the pool can work on only holds finished listings, parent trees and
/// probes in memory until the walk gets to them: on 2 cores, 16 instead of 4
/// made an unchanged re-backup of `small` peak at 24 instead of 18 MiB, and
/// no faster.
fn ahead_dirs() -> usize {
    (2 * rayon::current_num_threads()).clamp(4, 16)
}

/// Directories at most this deep keep their descriptor open while their
/// entries are probed (see [`Meta`]); a directory of more than one group of
/// entries holds it while the walk goes down into the earlier groups'
/// subdirectories. Deeper ones are probed by path, so the descriptors held
/// stay far below the usual limit of 1024 on trees of any depth.
const OPEN_DEPTH: usize = 64;

/// Only subdirectories whose tree in the parent snapshot is at least this
/// long (in plaintext; about 30 entries) are gathered ahead.
const AHEAD_MIN_TREE: u32 = 4096;

/// The subtree of a parent snapshot's node, if it is a directory.
fn subtree_of(parent: Option<&Node>) -> Option<BlobId> {
    parent.filter(|n| n.kind == NodeKind::Dir)?.subtree
}

impl Archiver<'_> {
    fn parent_subtree(&mut self, parent: Option<&Node>) -> Option<Arc<TreeView>> {
        let id = subtree_of(parent)?;
        let loaded = self.repo.load_tree_view(self.saver.index(), &id);
        self.parent_tree_or_warn(&id, loaded)
    }

    /// A parent tree as loaded. A damaged one only costs re-reading: carry on
    /// without it, saying so.
    fn parent_tree_or_warn(
        &mut self,
        id: &BlobId,
        loaded: Result<TreeView>,
    ) -> Option<Arc<TreeView>> {
        match loaded {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => {
                self.damaged_parent(id, "the files under it", &e);
                None
            }
        }
    }

    /// Reports a parent tree, or a node of one, that can't be read, and
    /// what is read again instead.
    fn damaged_parent(&mut self, id: &BlobId, instead: &str, e: &Error) {
        (self.report)(super::Event::Warning(&crate::snapshot::SourceProblem {
            path: format!("parent tree {}", id.short()),
            error: format!("unreadable, reading {instead} instead: {e}; `cairn check` reports it"),
        }));
    }

    /// An entry's node in the parent tree, and where it is there; a node
    /// that can't be decoded is reported, and the entry read again.
    fn parent_node(&mut self, view: &TreeView, found: Option<Found>) -> Option<(usize, Node)> {
        match found? {
            (i, Ok(n)) => Some((i, n)),
            (_, Err(e)) => {
                self.damaged_parent(view.id(), "that entry", &e);
                None
            }
        }
    }

    pub(super) fn backup_roots(
        &mut self,
        paths: &[PathBuf],
        parent: Option<&TreeView>,
    ) -> Result<BlobId> {
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
        self.drain()?;
        if self.deferral.any_open() {
            return Err(Error::invalid(
                "internal: a directory was left unfinished by the walk",
            ));
        }
        self.saver.save_tree(&mut tree)
    }

    fn backup_virtual(
        &mut self,
        children: &BTreeMap<Vec<u8>, Virtual>,
        at: &Path,
        parent: Option<&TreeView>,
    ) -> Result<Tree> {
        let mut tree = Tree::default();
        for (name, v) in children {
            let path = at.join(std::ffi::OsStr::from_bytes(name));
            let parent_node = parent
                .and_then(|t| {
                    let found = t.find(name);
                    self.parent_node(t, found)
                })
                .map(|(_, n)| n);
            let parent_node = parent_node.as_ref();
            match v {
                Virtual::Leaf(p) => {
                    if let Some(n) = self.backup_path(p, name, parent_node)? {
                        tree.nodes.push(n);
                    }
                }
                Virtual::Dir(sub) => {
                    let meta = match Meta::of_path(&path) {
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
                    let subtree = self.backup_virtual(sub, &path, parent_sub.as_deref());
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

    /// Backs up one entry outside any open directory (a path given to the
    /// backup). `Ok(None)`: skipped (excluded, or unreadable and reported).
    fn backup_path(
        &mut self,
        path: &Path,
        name: &[u8],
        parent: Option<&Node>,
    ) -> Result<Option<Node>> {
        self.check_interrupt()?;
        if self.skip(path) {
            return Ok(None);
        }
        let known = parent.filter(|_| self.reuse_metadata).map(node::Known::of);
        let parent = Parent {
            node: parent,
            indexed: false,
        };
        self.backup_probed(path, node::probe(None, path, name, known), parent)
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
    /// `Ok(None)` also when the entry joins the open directory it is in later:
    /// a small file queued to be read with others, or a subdirectory waiting
    /// for such files (see [`super::small::Deferral`]).
    fn backup_probed(
        &mut self,
        path: &Path,
        probe: node::Probe,
        parent: Parent,
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
                let done = self.backup_dir(path, &meta, parent, node);
                self.depth -= 1;
                return done;
            }
            NodeKind::File => {
                let Some(status) = self.reuse_content(&mut node, parent, indexed) else {
                    return Ok(Some(node));
                };
                if let Some(dir) = self.deferral.current {
                    if node.links <= 1 && node.size <= SMALL_FILE {
                        self.defer(Deferred {
                            path: path.to_path_buf(),
                            node,
                            status,
                            dir,
                        })?;
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

    /// Backs up a directory whose node is `node`: that node with its subtree,
    /// or `None` if it joins its parent's tree later (see
    /// [`Self::walked_dir`]).
    fn backup_dir(
        &mut self,
        path: &Path,
        meta: &Meta,
        parent: Option<&Node>,
        node: Node,
    ) -> Result<Option<Node>> {
        // Gathered ahead while the directories before it were backed up, or (the
        // gathering failed, or it wasn't started) here and now.
        let ahead = self.ahead.remove(path).and_then(|rx| rx.recv().ok());
        let (parent_tree, listing, first) = match ahead {
            Some(a) => {
                let (id, loaded) = a.parent_tree;
                let tree = self.parent_tree_or_warn(&id, loaded);
                (tree, a.listing, Some(a.first))
            }
            None => {
                let tree = self.parent_subtree(parent);
                let open = self.depth <= OPEN_DEPTH;
                (tree, list_sorted(path, meta, open), None)
            }
        };
        let (mut dir, mut entries) = match listing {
            Ok(l) => (l.dir, l.entries),
            Err(e) => {
                self.error(path, format!("listing directory: {e}; stored as empty"));
                (None, Vec::new())
            }
        };
        // A directory new since the parent snapshot gets room for every
        // entry: its tree is otherwise grown by doubling as they arrive. One
        // that was there keeps its unchanged entries in its parent tree
        // until it is finished (see `OpenDir::reused`).
        let room = match &parent_tree {
            Some(_) => 0,
            None => entries.len(),
        };
        let slot = self.deferral.open(OpenDir {
            path: path.to_path_buf(),
            tree: Tree {
                nodes: Vec::with_capacity(room),
            },
            node,
            parent: self.deferral.current,
            old: None,
            reused: vec![false; parent_tree.as_ref().map_or(0, |t| t.len())],
            old_id: subtree_of(parent),
            outstanding: 0,
            walked: false,
            held: 0,
        });
        // Restored below; an error ends the whole backup.
        let outer = self.deferral.current.replace(slot);
        // The first entries may have been probed ahead: they are the first group.
        let mut first = first.filter(|_| !entries.is_empty()).map(|mut probed| {
            entries.drain(..probed.len().min(entries.len()));
            probed.retain(|e| !self.skip(&e.path));
            probed
        });
        // Names only are listed: an entry's path is made when it is probed
        // (a listing of usr's man1 held 2 MiB of paths). Here only when an
        // entry could be left out: there are excludes, or the repository is
        // in this directory.
        if !self.excludes.patterns().is_empty()
            || self.repo_root.as_deref().and_then(Path::parent) == Some(path)
        {
            entries.retain(|name| !self.skip(&path.join(std::ffi::OsStr::from_bytes(name))));
        }
        // Entries are probed a group ahead on the rayon pool while this thread
        // decides about the previous group, so the system calls overlap with it.
        // (Each group is its own allocation of its own size: splitting off the
        // rest would leave every group holding the capacity of all that followed
        // it, quadratic in a large directory's entries.)
        let mut groups = Vec::with_capacity(entries.len().div_ceil(PROBE_BATCH).max(1));
        let mut rest = entries.into_iter();
        loop {
            let group: Vec<_> = rest.by_ref().take(PROBE_BATCH).collect();
            let last = group.len() < PROBE_BATCH;
            groups.push(group);
            if last {
                break;
            }
        }
        let reuse_metadata = self.reuse_metadata;
        if first.is_some() && groups.first().is_some_and(Vec::is_empty) {
            groups.remove(0);
        }
        let mut groups = groups.into_iter();
        // The directory goes with its last group: only the probes hold it
        // then, not the walk down into this group's subdirectories.
        let mut issue = || {
            let Some(g) = groups.next() else {
                // All were probed ahead, or are probing.
                dir = None;
                return None;
            };
            let d = if groups.len() == 0 {
                dir.take()
            } else {
                dir.clone()
            };
            Some(probe_ahead(d, path, g, parent_tree.clone(), reuse_metadata))
        };
        let mut next = match first.take() {
            Some(probed) => Some(ready(probed)),
            None => issue(),
        };
        while let Some(pending) = next.take() {
            self.check_interrupt()?;
            let probed = pending.recv().map_err(|_| {
                Error::invalid(format!(
                    "gathering the metadata of the entries of {} failed",
                    path.display()
                ))
            })?;
            next = issue();
            // Each entry's node in the parent tree, and where it is there
            // (decoded with its probe).
            let mut parents = Vec::with_capacity(probed.len());
            let mut probes = Vec::with_capacity(probed.len());
            for e in probed {
                let at = match &parent_tree {
                    Some(t) => self.parent_node(t, e.parent),
                    None => None,
                };
                parents.push(at);
                probes.push((e.path, e.probe));
            }
            // The blobs of the parent's copies of this group's files, looked up
            // side by side (see `Index::contains_each`).
            let wanted: Vec<BlobId> = parents
                .iter()
                .flatten()
                .map(|(_, n)| n)
                .filter(|n| n.kind == NodeKind::File)
                .flat_map(|n| n.content.iter().copied())
                .collect();
            let mut indexed = self
                .saver
                .index()
                .contains_each(BlobKind::Data, &wanted)
                .into_iter();
            // This group's larger subdirectories are listed and probed ahead,
            // up to `ahead_dirs()` at a time, while the entries before them are
            // decided and backed up. Larger means a tree in the parent
            // snapshot of at least AHEAD_MIN_TREE bytes (the index records each
            // blob's length); a directory new since has none there and is
            // done in place. For a directory of a few entries, handing it to
            // the pool costs more than it saves.
            let index = self.saver.index();
            let mut subdirs: std::collections::VecDeque<_> = probes
                .iter()
                .zip(&parents)
                .filter_map(|((child, probe), parent_node)| {
                    let Ok((m, _, _)) = probe else { return None };
                    let subtree = subtree_of(parent_node.as_ref().map(|(_, n)| n))?;
                    let large = index
                        .get(BlobKind::Tree, &subtree)
                        .is_some_and(|(_, e)| e.raw_length >= AHEAD_MIN_TREE);
                    (large
                        && m.is_dir()
                        && !(self.one_file_system && m.dev() != meta.dev())
                        && self.depth < MAX_TREE_DEPTH)
                        .then(|| (child.clone(), *m, subtree))
                })
                .collect();
            let mut issued = Vec::new();
            let ahead_dirs = ahead_dirs();
            for ((child, probe), parent_at) in probes.into_iter().zip(parents) {
                let parent_node = parent_at.as_ref().map(|(_, n)| n);
                while self.ahead.len() < ahead_dirs {
                    let Some((dir, m, subtree)) = subdirs.pop_front() else {
                        break;
                    };
                    let rx = gather_ahead(
                        dir.clone(),
                        m,
                        self.depth < OPEN_DEPTH,
                        subtree,
                        Arc::clone(&self.repo),
                        self.saver.shared_index(),
                        self.reuse_metadata,
                    );
                    self.ahead.insert(dir.clone(), rx);
                    issued.push(dir);
                }
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
                        self.deferral.dir(slot)?.tree.nodes.push(n);
                        continue;
                    }
                    other => other,
                };
                let parent = Parent {
                    node: parent_node,
                    indexed: all_indexed,
                };
                if let Some(n) = self.backup_probed(&child, probe, parent)? {
                    let dir = self.deferral.dir(slot)?;
                    // Unchanged: its node in the parent tree stands for it.
                    let same = parent_at
                        .filter(|(_, old)| *old == n)
                        .and_then(|(i, _)| dir.reused.get_mut(i));
                    match same {
                        Some(reused) => *reused = true,
                        None => dir.tree.nodes.push(n),
                    }
                }
            }
            // Gathered for a directory that was not backed up after all (it
            // vanished, or became something else): let go.
            for child in issued {
                self.ahead.remove(&child);
            }
        }
        self.deferral.current = outer;
        self.deferral.dir(slot)?.old = parent_tree;
        self.walked_dir(slot)
    }
}

/// What is gathered for a directory before its turn: its sorted listing, its
/// tree in the parent snapshot (by id, as loaded) and its first
/// [`PROBE_BATCH`] entries probed.
pub(super) struct Ahead {
    listing: io::Result<Listing>,
    parent_tree: (BlobId, Result<TreeView>),
    first: Probed,
}

/// Starts gathering [`Ahead`] for the directory at `path` (whose metadata
/// `meta` the listing must match; kept `open`, see [`Listing`]) on the rayon
/// pool. A walk otherwise lists, loads and probes each directory only when it
/// gets there, and on a tree of many small directories most of the time went
/// to waiting for that. The receiver closes empty if the work panicked; the
/// directory is then done in place.
fn gather_ahead(
    path: PathBuf,
    meta: Meta,
    open: bool,
    parent_subtree: BlobId,
    repo: Arc<Repository>,
    index: Arc<Index>,
    reuse_metadata: bool,
) -> std::sync::mpsc::Receiver<Ahead> {
    on_pool(move || {
        let parent_tree = repo.load_tree_view(&index, &parent_subtree);
        let listing = list_sorted(&path, &meta, open);
        let view = parent_tree.as_ref().ok();
        let first = match &listing {
            Ok(l) => l
                .entries
                .iter()
                .take(PROBE_BATCH)
                .map(|name| {
                    probe_entry(l.dir.as_deref(), &path, name.clone(), view, reuse_metadata)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        Ahead {
            listing,
            parent_tree: (parent_subtree, parent_tree),
            first,
        }
    })
}

/// An entry's node in the parent snapshot, and whether all of that node's blobs
/// were found in the index (looked up ahead, for a whole group of entries).
struct Parent<'a> {
    node: Option<&'a Node>,
    indexed: bool,
}

/// A node of a parent tree, decoded, and where it is there.
type Found = (usize, Result<Node>);

/// A directory entry with its metadata, and its node in the parent tree.
struct ProbedEntry {
    path: PathBuf,
    probe: node::Probe,
    parent: Option<Found>,
}

/// Directory entries with their metadata, as [`probe_ahead`] delivers them.
type Probed = Vec<ProbedEntry>;

/// Starts gathering the metadata of `entries`, with their nodes in the
/// parent tree, on the rayon pool (see [`on_pool`]), or gathers it here for a
/// few.
fn probe_ahead(
    dir: Option<Arc<File>>,
    dir_path: &Path,
    entries: Vec<Vec<u8>>,
    parent: Option<Arc<TreeView>>,
    reuse_metadata: bool,
) -> std::sync::mpsc::Receiver<Probed> {
    if entries.len() <= INLINE_PROBE {
        // Handing a few entries to the pool costs more in thread wake-ups than
        // their system calls take.
        let probed = entries
            .into_iter()
            .map(|name| {
                probe_entry(
                    dir.as_deref(),
                    dir_path,
                    name,
                    parent.as_deref(),
                    reuse_metadata,
                )
            })
            .collect();
        return ready(probed);
    }
    let dir_path = dir_path.to_path_buf();
    on_pool(move || {
        entries
            .into_par_iter()
            .map(|name| {
                probe_entry(
                    dir.as_deref(),
                    &dir_path,
                    name,
                    parent.as_deref(),
                    reuse_metadata,
                )
            })
            .collect::<Probed>()
    })
}

/// The directory entry `name` of `dir_path` probed, with its node in the
/// `parent` tree; what that node knows of it (see [`node::Known`]) is used
/// when metadata may be reused. With `dir`, the open directory (at
/// `dir_path`).
fn probe_entry(
    dir: Option<&File>,
    dir_path: &Path,
    name: Vec<u8>,
    parent: Option<&TreeView>,
    reuse_metadata: bool,
) -> ProbedEntry {
    let path = dir_path.join(std::ffi::OsStr::from_bytes(&name));
    let parent = parent.and_then(|t| t.find(&name));
    let known = match &parent {
        Some((_, Ok(n))) if reuse_metadata => Some(node::Known::of(n)),
        _ => None,
    };
    let probe = node::probe(dir, &path, &name, known);
    ProbedEntry {
        path,
        probe,
        parent,
    }
}

/// A channel that already holds `value`, for work done in place.
fn ready<T>(value: T) -> std::sync::mpsc::Receiver<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let _ = tx.send(value);
    rx
}

/// Runs `work` on the rayon pool; its result arrives on the returned channel,
/// which closes empty if the work panicked (a panic in a spawned rayon job would
/// otherwise abort the process, leaving the packs written so far without an
/// index).
pub(super) fn on_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> std::sync::mpsc::Receiver<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rayon::spawn(move || {
        if let Ok(value) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
            let _ = tx.send(value);
        }
    });
    rx
}

/// A directory's entries, by name.
type Entries = Vec<Vec<u8>>;

/// A directory's entries, and with `dir` the directory itself, kept open so
/// that the entries' metadata is asked of it (see [`Meta`]).
pub(super) struct Listing {
    dir: Option<Arc<File>>,
    entries: Entries,
}

/// [`list_dir`] of a directory that must match `meta`, sorted by name, and
/// kept `open` if asked.
fn list_sorted(path: &Path, meta: &Meta, open: bool) -> io::Result<Listing> {
    let (dir, mut entries) = list_dir(path, Some(meta))?;
    entries.sort();
    // A name `readdir` returned twice (entries renamed while it ran) would make
    // a tree that readers refuse.
    entries.dedup();
    Ok(Listing {
        dir: open.then(|| Arc::new(dir)),
        entries,
    })
}

/// Lists a directory without updating its atime where permitted (reading it would
/// otherwise change the directory's metadata and so its tree on every backup).
/// With `expected`, the directory opened must be the one that metadata describes:
/// another one renamed or mounted there since is refused. The directory comes
/// back open with its entries.
pub(super) fn list_dir(path: &Path, expected: Option<&Meta>) -> io::Result<(File, Entries)> {
    use std::os::fd::AsRawFd;
    let open = |noatime: libc::c_int| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | noatime)
            .open(path)
    };
    // O_NOATIME is refused (EPERM) on a directory this user doesn't own.
    let dir = match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        r => r,
    }?;
    if let Some(m) = expected {
        let st = dir.metadata()?;
        if (st.dev(), st.ino()) != (m.dev(), m.ino()) {
            return Err(io::Error::other(
                "it was replaced by another directory while being backed up",
            ));
        }
    }
    // Read through a descriptor of its own: `Dir` closes the one it is given.
    let copy = nix::fcntl::fcntl(dir.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0))
        .map_err(io::Error::from)?;
    let mut listed = nix::dir::Dir::from_fd(copy).map_err(io::Error::from)?;
    let mut out = Vec::new();
    for entry in listed.iter() {
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push(name.to_vec());
    }
    Ok((dir, out))
}
