//! `cairn mount`: the repository as a read-only FUSE filesystem. Made-up
//! directories list the snapshots ([`layout`]); below each, its trees are
//! decoded as they are visited and kept in a small cache, and files are read
//! at any offset through the index ([`reader`]), never restored first.
//!
//! Inode numbers: 1 to [`Layout::len`] for the made-up entries; below a
//! snapshot's directory, a hash of the parent's inode number and the entry's
//! name with the top bit set, so an entry keeps its number however often the
//! kernel forgets and looks it up again. The same snapshot under `snapshots/`
//! and `ids/` gets different numbers: the kernel allows no directory two
//! parents.

pub mod layout;
pub mod reader;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyXattr, Request,
};
use lru::LruCache;

use crate::id::{BlobId, SnapshotId};
use crate::index::Index;
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind, Timestamp, Tree};

pub use layout::Layout;
use layout::VNode;
pub use reader::Stats;
use reader::{BlobCache, OpenFile};

/// Nothing in a mount changes: the kernel may keep what it was told.
const TTL: Duration = Duration::from_secs(3600);
/// Top bit of the inode numbers of entries from trees.
const TREE_BIT: u64 = 1 << 63;
/// Decrypted data blobs kept for reads nearby (blobs are 0.5-8 MiB).
const BLOB_CACHE_BYTES: usize = 64 << 20;
/// Plaintext bytes of decoded trees kept.
const TREE_CACHE_BYTES: usize = 32 << 20;

/// Where warnings go (standard error, escaped, in the binary).
pub type Warn = Box<dyn Fn(&str) + Send + Sync>;

pub struct MountFs {
    repo: Arc<Repository>,
    index: Arc<Index>,
    layout: Layout,
    /// Entries from trees the kernel holds (looked up and not yet forgotten).
    live: Mutex<HashMap<u64, Live>>,
    trees: Mutex<TreeCache>,
    blobs: BlobCache,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_handle: AtomicU64,
    stats: Arc<Stats>,
    /// Owner of the made-up directories: who mounted.
    uid: u32,
    gid: u32,
    warn: Warn,
}

struct Live {
    parent: u64,
    node: Arc<Node>,
    path: Arc<str>,
    lookups: u64,
}

struct Handle {
    file: OpenFile,
    path: Arc<str>,
}

struct TreeCache {
    trees: LruCache<BlobId, (Arc<Tree>, usize)>,
    bytes: usize,
}

/// What an inode number names.
enum Found<'a> {
    Made(&'a layout::Entry),
    Tree(Arc<Node>, u64, Arc<str>),
}

impl MountFs {
    /// `snapshots` oldest first.
    pub fn new(
        repo: Arc<Repository>,
        index: Arc<Index>,
        snapshots: Vec<(SnapshotId, Snapshot)>,
        warn: Warn,
    ) -> Self {
        Self {
            repo,
            index,
            layout: Layout::new(snapshots),
            live: Mutex::new(HashMap::new()),
            trees: Mutex::new(TreeCache {
                trees: LruCache::unbounded(),
                bytes: 0,
            }),
            blobs: BlobCache::new(BLOB_CACHE_BYTES),
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            stats: Arc::new(Stats::default()),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            warn,
        }
    }

    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    pub fn snapshot_count(&self) -> usize {
        self.layout.snapshots.len()
    }

    fn find(&self, ino: u64) -> Option<Found<'_>> {
        if let Some(e) = self.layout.get(ino) {
            return Some(Found::Made(e));
        }
        let live = self.live.lock().ok()?;
        let l = live.get(&ino)?;
        Some(Found::Tree(
            Arc::clone(&l.node),
            l.parent,
            Arc::clone(&l.path),
        ))
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        Some(match self.find(ino)? {
            Found::Made(e) => self.made_attr(ino, &e.node),
            Found::Tree(node, _, _) => node_attr(ino, &node),
        })
    }

    fn made_attr(&self, ino: u64, node: &VNode) -> FileAttr {
        let (kind, perm, size, uid, gid, time) = match node {
            VNode::Dir(_) => (
                FileType::Directory,
                0o555,
                0,
                self.uid,
                self.gid,
                self.layout.time,
            ),
            VNode::Link(t) => (
                FileType::Symlink,
                0o777,
                t.len() as u64,
                self.uid,
                self.gid,
                self.layout.time,
            ),
            VNode::Snapshot(i) => match self.layout.snapshots.get(*i) {
                Some(m) => (
                    FileType::Directory,
                    0o555,
                    0,
                    m.snapshot.uid,
                    m.snapshot.gid,
                    m.time,
                ),
                None => (
                    FileType::Directory,
                    0o555,
                    0,
                    self.uid,
                    self.gid,
                    self.layout.time,
                ),
            },
        };
        let t = system_time(time);
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The tree listing directory `ino` and the directory's path, or the
    /// error for the kernel (a warning says what went wrong).
    fn dir_tree(&self, ino: u64) -> Result<(Arc<Tree>, Arc<str>), Errno> {
        let (tree, path): (BlobId, Arc<str>) = match self.find(ino).ok_or(Errno::ENOENT)? {
            Found::Made(e) => match &e.node {
                VNode::Snapshot(i) => {
                    let m = self.layout.snapshots.get(*i).ok_or(Errno::ENOENT)?;
                    (m.snapshot.tree, Arc::from(e.path.as_str()))
                }
                VNode::Dir(_) => return Err(Errno::EINVAL),
                VNode::Link(_) => return Err(Errno::ENOTDIR),
            },
            Found::Tree(node, _, path) => match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(sub)) => (sub, path),
                _ => return Err(Errno::ENOTDIR),
            },
        };
        match self.load_tree(&tree) {
            Ok(t) => Ok((t, path)),
            Err(e) => {
                (self.warn)(&format!("can't list {path}: {e}"));
                Err(Errno::EIO)
            }
        }
    }

    fn load_tree(&self, id: &BlobId) -> crate::error::Result<Arc<Tree>> {
        if let Some((t, _)) = self
            .trees
            .lock()
            .ok()
            .and_then(|mut c| c.trees.get(id).cloned())
        {
            return Ok(t);
        }
        let bytes = self
            .repo
            .read_blob(&self.index, crate::pack::BlobKind::Tree, id)?;
        let size = bytes.len();
        let tree = Arc::new(Tree::decode(&bytes, id)?);
        if let Ok(mut c) = self.trees.lock() {
            c.bytes += size;
            if let Some((_, old)) = c.trees.put(*id, (Arc::clone(&tree), size)) {
                c.bytes -= old;
            }
            while c.bytes > TREE_CACHE_BYTES && c.trees.len() > 1 {
                match c.trees.pop_lru() {
                    Some((_, (_, old))) => c.bytes -= old,
                    None => break,
                }
            }
        }
        Ok(tree)
    }

    /// Records one more kernel reference to `node` (child of `parent`, whose
    /// path is `parent_path`); returns its inode number.
    fn remember(&self, parent: u64, parent_path: &str, node: &Node) -> u64 {
        let mut ino = child_ino(parent, &node.name);
        let Ok(mut live) = self.live.lock() else {
            return ino;
        };
        // A hash collision with another live entry (most unlikely): the next
        // free number.
        loop {
            match live.get_mut(&ino) {
                Some(l) if l.parent == parent && l.node.name == node.name => {
                    l.lookups += 1;
                    return ino;
                }
                Some(_) => ino = (ino.wrapping_add(1)) | TREE_BIT,
                None => break,
            }
        }
        let path = format!("{parent_path}/{}", String::from_utf8_lossy(&node.name));
        live.insert(
            ino,
            Live {
                parent,
                node: Arc::new(node.clone()),
                path: Arc::from(path),
                lookups: 1,
            },
        );
        ino
    }

    fn entry_kind(&self, ino: u64) -> FileType {
        match self.layout.get(ino).map(|e| &e.node) {
            Some(VNode::Link(_)) => FileType::Symlink,
            _ => FileType::Directory,
        }
    }

    fn xattrs(&self, ino: u64) -> Vec<crate::tree::Xattr> {
        match self.find(ino) {
            Some(Found::Tree(node, _, _)) => node.xattrs.clone(),
            _ => Vec::new(),
        }
    }
}

/// A tree entry's inode number: stable for its parent and name.
fn child_ino(parent: u64, name: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&parent.to_le_bytes());
    h.update(name);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first) | TREE_BIT
}

fn system_time(t: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.1));
    if t.0 >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.0.unsigned_abs()) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(t.0.unsigned_abs()) + nanos
    }
}

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Chardev => FileType::CharDevice,
        NodeKind::Blockdev => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

fn node_attr(ino: u64, n: &Node) -> FileAttr {
    let kind = file_type(n.kind);
    let size = match n.kind {
        NodeKind::File => n.size,
        NodeKind::Symlink => n.link_target.as_ref().map_or(0, |t| t.len() as u64),
        _ => 0,
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: system_time(n.atime),
        mtime: system_time(n.mtime),
        ctime: system_time(n.ctime),
        crtime: system_time(n.mtime),
        kind,
        perm: (n.mode & 0o7777) as u16,
        // Hard links are separate entries here, each with its own number.
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: n.uid,
        gid: n.gid,
        // Linux's 32-bit encoding of a device number is glibc's low 32 bits.
        rdev: u32::try_from(n.rdev).unwrap_or(0),
        blksize: 4096,
        flags: 0,
    }
}

/// Replies to a getxattr or listxattr: the size when asked for it, else the
/// bytes if they fit.
fn reply_sized(reply: ReplyXattr, size: u32, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    if size == 0 {
        reply.size(len);
    } else if len > size {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(bytes);
    }
}

impl Filesystem for MountFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let parent = parent.0;
        if let Some(layout::Entry {
            node: VNode::Dir(list),
            ..
        }) = self.layout.get(parent)
        {
            let found = list.iter().find(|(n, _)| n.as_slice() == name.as_bytes());
            match found.and_then(|(_, ino)| self.attr(*ino)) {
                Some(a) => reply.entry(&TTL, &a, Generation(0)),
                None => reply.error(Errno::ENOENT),
            }
            return;
        }
        let (tree, path) = match self.dir_tree(parent) {
            Ok(t) => t,
            Err(e) => return reply.error(e),
        };
        match tree.find(name.as_bytes()) {
            Some(node) => {
                let ino = self.remember(parent, &path, node);
                reply.entry(&TTL, &node_attr(ino, node), Generation(0));
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if let Ok(mut live) = self.live.lock() {
            if let Some(l) = live.get_mut(&ino.0) {
                l.lookups = l.lookups.saturating_sub(nlookup);
                if l.lookups == 0 {
                    live.remove(&ino.0);
                }
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.find(ino.0) {
            Some(Found::Made(layout::Entry {
                node: VNode::Link(t),
                ..
            })) => reply.data(t),
            Some(Found::Tree(node, _, _)) if node.kind == NodeKind::Symlink => {
                reply.data(node.link_target.as_deref().unwrap_or_default())
            }
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let (node, path) = match self.find(ino.0) {
            Some(Found::Tree(node, _, path)) if node.kind == NodeKind::File => (node, path),
            Some(Found::Tree(node, _, _)) if node.kind == NodeKind::Dir => {
                return reply.error(Errno::EISDIR);
            }
            Some(Found::Made(_)) => return reply.error(Errno::EISDIR),
            Some(_) => return reply.error(Errno::EINVAL),
            None => return reply.error(Errno::ENOENT),
        };
        let file = OpenFile::new(&self.index, &node.content);
        match file.length() {
            Some(len) if len != node.size => (self.warn)(&format!(
                "{path}: its blobs hold {len} bytes, its size says {}; reads past {len} fail",
                node.size
            )),
            _ => {}
        }
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut h) = self.handles.lock() {
            h.insert(fh, Arc::new(Handle { file, path }));
        }
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let handle = self.handles.lock().ok().and_then(|h| h.get(&fh.0).cloned());
        let Some(handle) = handle else {
            return reply.error(Errno::EBADF);
        };
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        let got = handle.file.read_at(
            &self.repo,
            &self.index,
            &self.blobs,
            &self.stats,
            offset,
            size as usize,
        );
        match got {
            Ok(data) => {
                self.stats
                    .bytes_read
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                reply.data(&data);
            }
            Err(e) => {
                self.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                (self.warn)(&format!(
                    "can't read {} at offset {offset}: blob {}: {}",
                    handle.path, e.blob, e.error
                ));
                reply.error(Errno::EIO);
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut h) = self.handles.lock() {
            h.remove(&fh.0);
        }
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let ino = ino.0;
        // Only the entries from `offset` on are made: a large directory is
        // listed in many calls.
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        let mut add = |i: usize, child: u64, kind: FileType, name: &[u8]| {
            reply.add(INodeNo(child), i as u64 + 1, kind, OsStr::from_bytes(name))
        };
        let (parent, tree) = match self.find(ino) {
            Some(Found::Made(layout::Entry {
                node: VNode::Dir(list),
                parent,
                ..
            })) => {
                let dots = [(ino, &b"."[..]), (*parent, &b".."[..])];
                let made = list.iter().map(|(n, child)| (*child, n.as_slice()));
                for (i, (child, name)) in dots.into_iter().chain(made).enumerate().skip(skip) {
                    let kind = if i < 2 {
                        FileType::Directory
                    } else {
                        self.entry_kind(child)
                    };
                    if add(i, child, kind, name) {
                        break;
                    }
                }
                return reply.ok();
            }
            Some(Found::Made(e)) => (e.parent, self.dir_tree(ino)),
            Some(Found::Tree(_, parent, _)) => (parent, self.dir_tree(ino)),
            None => return reply.error(Errno::ENOENT),
        };
        let tree = match tree {
            Ok((t, _)) => t,
            Err(e) => return reply.error(e),
        };
        let dots = [
            (ino, FileType::Directory, &b"."[..]),
            (parent, FileType::Directory, &b".."[..]),
        ];
        let nodes = tree
            .nodes
            .iter()
            .map(|n| (0, file_type(n.kind), n.name.as_slice()));
        for (i, (child, kind, name)) in dots.into_iter().chain(nodes).enumerate().skip(skip) {
            let child = if i < 2 { child } else { child_ino(ino, name) };
            if add(i, child, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self
            .xattrs(ino.0)
            .into_iter()
            .find(|x| x.name == name.as_bytes())
        {
            Some(x) => reply_sized(reply, size, &x.value),
            None => reply.error(Errno::ENODATA),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let mut list = Vec::new();
        for x in self.xattrs(ino.0) {
            list.extend_from_slice(&x.name);
            list.push(0);
        }
        reply_sized(reply, size, &list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_inode_numbers_are_stable_and_apart_from_made_up_ones() {
        let a = child_ino(5, b"x");
        assert_eq!(a, child_ino(5, b"x"));
        assert_ne!(a, child_ino(6, b"x"));
        assert_ne!(a, child_ino(5, b"y"));
        assert!(a & TREE_BIT != 0);
    }

    #[test]
    fn times_before_the_epoch_convert() {
        let t = system_time(Timestamp(-2, 500_000_000));
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::from_millis(1500)
        );
        let t = system_time(Timestamp(3, 7));
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap(), Duration::new(3, 7));
    }
}
