//! Turning a file's metadata into a tree node.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

pub use super::meta::Meta;

use crate::tree::{Node, NodeKind, Timestamp, Xattr};

/// uid/gid → name lookups, cached for the run.
#[derive(Default)]
pub struct NameCache {
    users: HashMap<u32, Option<Arc<str>>>,
    groups: HashMap<u32, Option<Arc<str>>>,
}

impl NameCache {
    /// Sets the node's user and group names from its uid and gid.
    pub fn fill(&mut self, node: &mut Node) {
        node.user = self.user(node.uid);
        node.group = self.group(node.gid);
    }

    fn user(&mut self, uid: u32) -> Option<Arc<str>> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| Arc::from(u.name))
            })
            .clone()
    }

    fn group(&mut self, gid: u32) -> Option<Arc<str>> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| Arc::from(g.name))
            })
            .clone()
    }
}

pub fn kind_of(meta: &Meta) -> NodeKind {
    if meta.is_dir() {
        NodeKind::Dir
    } else if meta.is_symlink() {
        NodeKind::Symlink
    } else if meta.is_fifo() {
        NodeKind::Fifo
    } else if meta.is_char_device() {
        NodeKind::Chardev
    } else if meta.is_block_device() {
        NodeKind::Blockdev
    } else if meta.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

fn ts(secs: i64, nanos: i64) -> Timestamp {
    Timestamp(secs, nanos.clamp(0, 999_999_999) as u32)
}

/// What an entry's node in the parent snapshot says that `lstat` alone can't:
/// its extended attributes and link target, taken over without reading them
/// again when the entry is still the same inode with the same change time.
/// Every change to either sets the change time (setxattr and removexattr do;
/// a symlink's target can't change without a new link), and user space can't
/// set it back, so an equal ctime means both are as recorded.
#[derive(Debug, Clone)]
pub struct Known {
    kind: NodeKind,
    device: u64,
    inode: u64,
    ctime: Timestamp,
    xattrs: Vec<Xattr>,
    link_target: Option<Vec<u8>>,
}

impl Known {
    pub fn of(node: &Node) -> Self {
        Known {
            kind: node.kind,
            device: node.device,
            inode: node.inode,
            ctime: node.ctime,
            xattrs: node.xattrs.clone(),
            link_target: node.link_target.clone(),
        }
    }

    fn matches(&self, kind: NodeKind, meta: &Meta) -> bool {
        self.kind == kind
            && self.device == meta.dev()
            && self.inode == meta.ino()
            && self.ctime == ts(meta.ctime(), meta.ctime_nsec())
            && (kind != NodeKind::Symlink
                || self.link_target.as_ref().is_some_and(|t| !t.is_empty()))
    }
}

/// Builds the node for `path` from its `lstat` metadata, without user and group
/// names (see [`NameCache::fill`]). Reading the link target or extended attributes
/// can fail; such failures are returned for the caller to report, and the node is
/// still usable.
pub fn node_from(path: &Path, name: &[u8], meta: &Meta) -> (Node, Vec<String>) {
    node_from_known(path, name, meta, None)
}

/// [`node_from`], taking the extended attributes and the link target from
/// `recorded` when it still describes the entry (see [`Known`]).
pub fn node_from_known(
    path: &Path,
    name: &[u8],
    meta: &Meta,
    recorded: Option<Known>,
) -> (Node, Vec<String>) {
    let kind = kind_of(meta);
    let mut problems = Vec::new();
    let recorded = recorded.filter(|r| r.matches(kind, meta));
    let (known_xattrs, known_target) = match recorded {
        Some(r) => (Some(r.xattrs), r.link_target),
        None => (None, None),
    };
    let link_target = if kind != NodeKind::Symlink {
        None
    } else if let Some(t) = known_target {
        Some(t)
    } else {
        match std::fs::read_link(path) {
            Ok(t) => Some(t.as_os_str().as_bytes().to_vec()),
            Err(e) => {
                problems.push(format!("reading link target: {e}"));
                Some(Vec::new())
            }
        }
    };
    let xattrs = match known_xattrs {
        Some(x) => x,
        None => match read_xattrs(path) {
            Ok(x) => x,
            Err(e) => {
                problems.push(format!("reading extended attributes: {e}"));
                Vec::new()
            }
        },
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
            meta.size()
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
pub type Probe = io::Result<(Meta, Node, Vec<String>)>;

/// Gathers an entry's metadata. Several run at once on the rayon pool, ahead of the
/// (sequential) decisions about the entries: on many small files the walk is
/// system calls, and they run in parallel on the kernel's side too.
/// With `recorded`, the entry's node in the parent snapshot, whose extended
/// attributes and link target are reused if the entry is unchanged.
/// With `dir`, the open directory `path` is an entry of, its metadata is asked
/// of that directory (see [`Meta`]).
pub fn probe(dir: Option<&File>, path: &Path, name: &[u8], recorded: Option<Known>) -> Probe {
    let meta = match dir {
        Some(d) => Meta::of_entry(d, name)?,
        None => Meta::of_path(path)?,
    };
    let (node, problems) = node_from_known(path, name, &meta, recorded);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn known_with(node: &Node, xattrs: Vec<Xattr>, target: Option<&[u8]>) -> Known {
        let mut k = Known::of(node);
        k.xattrs = xattrs;
        k.link_target = target.map(<[u8]>::to_vec);
        k
    }

    #[test]
    fn an_entry_with_its_recorded_inode_and_ctime_keeps_what_was_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").expect("write");
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("f", &link).expect("symlink");
        let marker = vec![Xattr {
            name: b"user.recorded".to_vec(),
            value: b"1".to_vec(),
        }];

        // Asked by path and relative to the open directory, alike.
        let open = std::fs::File::open(dir.path()).expect("open dir");
        let reprobe = |path: &Path, name: &[u8], k: Known| -> Node {
            let (_, by_path, _) = probe(None, path, name, Some(k.clone())).expect("probe");
            let (_, in_dir, _) = probe(Some(&open), path, name, Some(k)).expect("probe");
            assert_eq!(by_path, in_dir);
            by_path
        };

        // Same inode and change time: the recorded attributes and target are
        // taken as they are (these were never on disk, so nothing was read).
        let (node, _) = node_from(&file, b"f", &Meta::of_path(&file).expect("stat"));
        let again = reprobe(&file, b"f", known_with(&node, marker.clone(), None));
        assert_eq!(again.xattrs, marker);
        let (lnode, _) = node_from(&link, b"l", &Meta::of_path(&link).expect("stat"));
        let again = reprobe(
            &link,
            b"l",
            known_with(&lnode, Vec::new(), Some(b"elsewhere")),
        );
        assert_eq!(again.link_target.as_deref(), Some(&b"elsewhere"[..]));

        // Another change time, another inode, another kind, or an empty recorded
        // target (a read that had failed): read from the entry again.
        let mut other = node.clone();
        other.ctime = Timestamp(node.ctime.0 - 1, node.ctime.1);
        let fresh = reprobe(&file, b"f", known_with(&other, marker.clone(), None));
        assert!(fresh.xattrs.is_empty(), "{:?}", fresh.xattrs);
        let mut other = node.clone();
        other.inode += 1;
        let fresh = reprobe(&file, b"f", known_with(&other, marker.clone(), None));
        assert!(fresh.xattrs.is_empty());
        let mut other = lnode.clone();
        other.kind = NodeKind::File;
        let fresh = reprobe(&link, b"l", known_with(&other, Vec::new(), Some(b"x")));
        assert_eq!(fresh.link_target.as_deref(), Some(&b"f"[..]));
        let fresh = reprobe(&link, b"l", known_with(&lnode, Vec::new(), Some(b"")));
        assert_eq!(fresh.link_target.as_deref(), Some(&b"f"[..]));
    }
}
