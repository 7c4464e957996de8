//! Standard input (or any stream), stored as one file at the snapshot's root.

use std::io::Read;

use super::Archiver;
use super::read::ReadError;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::snapshot;
use crate::tree::{Node, NodeKind, Timestamp, Tree, is_safe_name};

impl Archiver<'_> {
    pub(super) fn backup_stream(
        &mut self,
        name: &str,
        reader: Box<dyn Read + Send>,
    ) -> Result<BlobId> {
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
        let node = Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::File,
            // What a shell's `> file` would have created.
            mode: 0o666 & !current_umask().unwrap_or(UNKNOWN_UMASK),
            uid,
            gid,
            user: Some(snapshot::username().into()),
            group: nix::unistd::Group::from_gid(nix::unistd::getgid())
                .ok()
                .flatten()
                .map(|g| g.name.into()),
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

/// Assumed when the umask can't be read: the stored file is then restored
/// readable by its owner only (standard input is often a database dump).
const UNKNOWN_UMASK: u32 = 0o077;

/// The process's umask, read without changing it. `umask(2)` can only read it by
/// setting it, and the process-wide mask it sets for that moment would apply to
/// files other threads create meanwhile (the pack writers run throughout a
/// backup). Linux shows it in /proc/self/status since 4.7.
fn current_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(value.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o777)
}
