//! Planning: the walk over the snapshot's trees that creates directories,
//! symlinks and special files and lists the files whose contents are to be written.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag};

use super::State;
use crate::tree::{Node, NodeKind};

/// The longest path the system can create, terminating NUL included.
pub(super) const PATH_LIMIT: usize = libc::PATH_MAX as usize;

pub(super) struct FileJob {
    pub(super) dest: PathBuf,
    pub(super) node: Node,
}

#[derive(Default)]
pub(super) struct Plan {
    pub(super) files: Vec<FileJob>,
    /// (destination, first restored path of the same inode)
    pub(super) links: Vec<(PathBuf, PathBuf)>,
    /// Entries other than files whose metadata is applied after contents (a
    /// file's is applied as soon as its last chunk is written).
    pub(super) meta: Vec<(PathBuf, Node)>,
    /// Directories known to exist, so that their entries don't stat them again.
    known_dirs: std::collections::HashSet<PathBuf>,
    pub(super) dirs: Vec<(PathBuf, Node)>,
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

    pub(super) fn make_dir(&mut self, state: &State, target: &Path, dest: &Path, node: &Node) {
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

    pub(super) fn make_entry(&mut self, state: &State, target: &Path, dest: PathBuf, node: &Node) {
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
pub(super) fn replace_non_dir(path: &Path) -> io::Result<()> {
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
