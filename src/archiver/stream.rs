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
