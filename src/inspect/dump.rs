//! Writing a file's bytes, or a directory as a tar stream, out of a snapshot.
//! Contents are read a blob at a time, in order, so memory stays at about one
//! blob (8 MiB at most by default) whatever the sizes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tar::{Builder, EntryType, Header};

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::Index;
use crate::pack::BlobKind;
use crate::repository::Repository;
use crate::tree::{Node, NodeKind};
use crate::walk;

/// Writes the contents of `node` (a file) to `w`, blob by blob; `out` names
/// `w` in errors. Returns the bytes written.
pub fn write_file(
    repo: &Repository,
    index: &Index,
    node: &Node,
    w: &mut dyn Write,
    out: &Path,
) -> Result<u64> {
    let mut written = 0u64;
    for id in &node.content {
        let plain = repo.read_blob(index, BlobKind::Data, id)?;
        w.write_all(&plain).map_err(|e| Error::io(out, e))?;
        written += plain.len() as u64;
    }
    w.flush().map_err(|e| Error::io(out, e))?;
    Ok(written)
}

/// What a tar stream holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TarSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Further names of a file already in the archive.
    pub hardlinks: u64,
    /// FIFOs and devices.
    pub specials: u64,
    /// Sockets, which tar can't hold.
    pub skipped: u64,
    /// File contents written.
    pub bytes: u64,
}

/// Writes a tar stream (GNU format: long names and link targets as GNU
/// extension entries) of the entry `node` at `path` and, for a directory,
/// everything under `tree`. Names in the archive start with the entry's own
/// name (`proj/src/a.rs` for `/home/u/proj`); with no `node` (a snapshot's
/// root) they start below it. `skipped` hears of entries tar can't hold.
#[allow(clippy::too_many_arguments)]
pub fn write_tar<W: Write>(
    repo: &Repository,
    index: &Index,
    path: &Path,
    node: Option<&Node>,
    tree: Option<&BlobId>,
    w: W,
    out: &Path,
    skipped: &mut dyn FnMut(&Path),
) -> Result<(W, TarSummary)> {
    let mut t = Tar {
        repo,
        index,
        builder: Builder::new(w),
        out,
        links: HashMap::new(),
        summary: TarSummary::default(),
        skipped,
    };
    let base = match (node, path.file_name()) {
        (Some(n), Some(name)) => {
            let base = PathBuf::from(name);
            t.entry(&base, n)?;
            base
        }
        _ => PathBuf::new(),
    };
    if let Some(tree) = tree {
        let tree = repo.load_tree(index, tree)?;
        walk::walk(repo, index, &tree, &base, &mut |p, n| {
            t.entry(p, n)?;
            Ok(true)
        })?;
    }
    let summary = t.summary;
    let w = t.builder.into_inner().map_err(|e| Error::io(out, e))?;
    Ok((w, summary))
}

struct Tar<'a, W: Write> {
    repo: &'a Repository,
    index: &'a Index,
    builder: Builder<W>,
    out: &'a Path,
    /// Files with several names: (device, inode) → their first name here.
    links: HashMap<(u64, u64), PathBuf>,
    summary: TarSummary,
    skipped: &'a mut dyn FnMut(&Path),
}

impl<W: Write> Tar<'_, W> {
    fn entry(&mut self, path: &Path, n: &Node) -> Result<()> {
        let mut h = Header::new_gnu();
        h.set_mode(n.mode & 0o7777);
        h.set_uid(u64::from(n.uid));
        h.set_gid(u64::from(n.gid));
        // Names longer than the header holds (32 bytes) are left out; the
        // numeric ids are always there.
        if let Some(u) = &n.user {
            let _ = h.set_username(u);
        }
        if let Some(g) = &n.group {
            let _ = h.set_groupname(g);
        }
        h.set_mtime(u64::try_from(n.mtime.0).unwrap_or(0));
        h.set_size(0);
        let out = self.out;
        let written = match n.kind {
            NodeKind::File => {
                if n.links > 1 {
                    if let Some(first) = self.links.get(&(n.device, n.inode)) {
                        h.set_entry_type(EntryType::Link);
                        self.summary.hardlinks += 1;
                        return self
                            .builder
                            .append_link(&mut h, path, first)
                            .map_err(|e| Error::io(out, e));
                    }
                    self.links.insert((n.device, n.inode), path.to_path_buf());
                }
                return self.file(h, path, n);
            }
            NodeKind::Dir => {
                h.set_entry_type(EntryType::Directory);
                self.summary.dirs += 1;
                self.builder.append_data(&mut h, path, io::empty())
            }
            NodeKind::Symlink => {
                h.set_entry_type(EntryType::Symlink);
                self.summary.symlinks += 1;
                let target = OsStr::from_bytes(n.link_target.as_deref().unwrap_or_default());
                self.builder.append_link(&mut h, path, target)
            }
            NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {
                h.set_entry_type(match n.kind {
                    NodeKind::Fifo => EntryType::Fifo,
                    NodeKind::Chardev => EntryType::Char,
                    _ => EntryType::Block,
                });
                if n.kind != NodeKind::Fifo {
                    let major = u32::try_from(nix::sys::stat::major(n.rdev)).unwrap_or(u32::MAX);
                    let minor = u32::try_from(nix::sys::stat::minor(n.rdev)).unwrap_or(u32::MAX);
                    h.set_device_major(major)
                        .and_then(|()| h.set_device_minor(minor))
                        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
                }
                self.summary.specials += 1;
                self.builder.append_data(&mut h, path, io::empty())
            }
            NodeKind::Socket => {
                self.summary.skipped += 1;
                (self.skipped)(path);
                Ok(())
            }
        };
        written.map_err(|e| Error::io(out, e))
    }

    fn file(&mut self, mut h: Header, path: &Path, n: &Node) -> Result<()> {
        // The header comes first, so the size is what the blobs hold, as the
        // index says; a blob it doesn't list fails the file before anything
        // of it is written.
        let mut size = 0u64;
        for id in &n.content {
            let (_, e) = self
                .index
                .get(BlobKind::Data, id)
                .ok_or_else(|| Error::Missing {
                    what: format!("data blob {id} of {}", path.display()),
                    reason: "no index file lists it; run `cairn check`".into(),
                })?;
            size += u64::from(e.raw_length);
        }
        h.set_entry_type(EntryType::Regular);
        h.set_size(size);
        let mut r = Contents {
            repo: self.repo,
            index: self.index,
            blobs: n.content.iter(),
            buf: Vec::new(),
            pos: 0,
            remaining: size,
            path,
            error: None,
        };
        let written = self.builder.append_data(&mut h, path, &mut r);
        if let Some(e) = r.error.take() {
            return Err(e);
        }
        written.map_err(|e| Error::io(self.out, e))?;
        self.summary.files += 1;
        self.summary.bytes += size;
        Ok(())
    }
}

/// A file's contents as a reader, a blob at a time, giving exactly `remaining`
/// bytes (what the tar header says). Its own failures are kept in `error`, so
/// that they are told apart from the archive's writer's.
struct Contents<'a> {
    repo: &'a Repository,
    index: &'a Index,
    blobs: std::slice::Iter<'a, BlobId>,
    buf: Vec<u8>,
    pos: usize,
    remaining: u64,
    path: &'a Path,
    error: Option<Error>,
}

impl Contents<'_> {
    fn fail(&mut self, e: Error) -> io::Error {
        let msg = e.to_string();
        self.error = Some(e);
        io::Error::other(msg)
    }
}

impl Read for Contents<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(rest) = self.buf.get(self.pos..).filter(|r| !r.is_empty()) {
                let n = rest.len().min(out.len());
                if let (Some(dst), Some(src)) = (out.get_mut(..n), rest.get(..n)) {
                    dst.copy_from_slice(src);
                }
                self.pos += n;
                return Ok(n);
            }
            let Some(id) = self.blobs.next() else {
                if self.remaining > 0 {
                    let e = Error::corrupt(
                        format!("{}", self.path.display()),
                        format!(
                            "its blobs hold {} bytes fewer than the index says",
                            self.remaining
                        ),
                    );
                    return Err(self.fail(e));
                }
                return Ok(0);
            };
            match self.repo.read_blob(self.index, BlobKind::Data, id) {
                Ok(plain) => {
                    let len = plain.len() as u64;
                    if len > self.remaining {
                        let e = Error::corrupt(
                            format!("data blob {id}"),
                            "it holds more bytes than the index says",
                        );
                        return Err(self.fail(e));
                    }
                    self.remaining -= len;
                    self.buf = plain;
                    self.pos = 0;
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
    }
}
