//! Turning a file's metadata into a tree node.

use std::collections::HashMap;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::tree::{Node, NodeKind, Timestamp, Xattr};

/// uid/gid → name lookups, cached for the run.
#[derive(Default)]
pub struct NameCache {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl NameCache {
    /// Sets the node's user and group names from its uid and gid.
    pub fn fill(&mut self, node: &mut Node) {
        node.user = self.user(node.uid);
        node.group = self.group(node.gid);
    }

    fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }

    fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .clone()
    }
}

pub fn kind_of(meta: &Metadata) -> NodeKind {
    let ft = meta.file_type();
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::Chardev
    } else if ft.is_block_device() {
        NodeKind::Blockdev
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

fn ts(secs: i64, nanos: i64) -> Timestamp {
    Timestamp(secs, nanos.clamp(0, 999_999_999) as u32)
}

/// Builds the node for `path` from its `lstat` metadata, without user and group
/// names (see [`NameCache::fill`]). Reading the link target or extended attributes
/// can fail; such failures are returned for the caller to report, and the node is
/// still usable.
pub fn node_from(path: &Path, name: &[u8], meta: &Metadata) -> (Node, Vec<String>) {
    let kind = kind_of(meta);
    let mut problems = Vec::new();
    let link_target = if kind == NodeKind::Symlink {
        match std::fs::read_link(path) {
            Ok(t) => Some(t.as_os_str().as_bytes().to_vec()),
            Err(e) => {
                problems.push(format!("reading link target: {e}"));
                Some(Vec::new())
            }
        }
    } else {
        None
    };
    let xattrs = match read_xattrs(path) {
        Ok(x) => x,
        Err(e) => {
            problems.push(format!("reading extended attributes: {e}"));
            Vec::new()
        }
    };
    let node = Node {
        name: name.to_vec(),
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        user: None,
        group: None,
        mtime: ts(meta.mtime(), meta.mtime_nsec()),
        atime: ts(meta.atime(), meta.atime_nsec()),
        ctime: ts(meta.ctime(), meta.ctime_nsec()),
        size: if kind == NodeKind::File {
            meta.len()
        } else {
            0
        },
        inode: meta.ino(),
        device: meta.dev(),
        links: meta.nlink(),
        rdev: if matches!(kind, NodeKind::Chardev | NodeKind::Blockdev) {
            meta.rdev()
        } else {
            0
        },
        link_target,
        content: Vec::new(),
        subtree: None,
        xattrs,
    };
    (node, problems)
}

/// What `lstat` and the extended attributes say about one directory entry: the
/// metadata, the node built from it and the problems met building it.
pub type Probe = io::Result<(Metadata, Node, Vec<String>)>;

/// Gathers an entry's metadata. Several run at once on the rayon pool, ahead of the
/// (sequential) decisions about the entries: on many small files the walk is
/// system calls, and they run in parallel on the kernel's side too.
pub fn probe(path: &Path, name: &[u8]) -> Probe {
    let meta = std::fs::symlink_metadata(path)?;
    let (node, problems) = node_from(path, name, &meta);
    Ok((meta, node, problems))
}

fn read_xattrs(path: &Path) -> io::Result<Vec<Xattr>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        match xattr::get(path, &name) {
            Ok(Some(value)) => out.push(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            }),
            Ok(None) => {}
            Err(e) if unsupported(&e) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}

/// Whether a file is unchanged since `old` was recorded: same size, mtime, ctime
/// and inode. Then its blob list can be reused without reading it.
pub fn unchanged(old: &Node, new: &Node) -> bool {
    old.kind == NodeKind::File
        && new.kind == NodeKind::File
        && old.size == new.size
        && old.mtime == new.mtime
        && old.ctime == new.ctime
        && old.inode == new.inode
}
