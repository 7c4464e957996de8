//! Checking what a drill restored: every byte of a file against the snapshot's
//! blob ids (recomputed from the restored file, blob by blob, with the lengths
//! the index gives), and its kind, size, mode, mtime, symlink target, device
//! number and (as root) owner against its tree node. And, with
//! `--compare-source`, each restored file against the live file at its
//! original path.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::crypto::MasterKey;
use crate::index::Index;
use crate::pack::BlobKind;
use crate::tree::{Node, NodeKind};

/// What is wrong with the restored `dest` (empty: nothing).
pub(super) fn check_entry(
    key: &MasterKey,
    index: &Index,
    dest: &Path,
    node: &Node,
    is_root: bool,
) -> Vec<String> {
    let m = match fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return vec!["missing from the restore".into()];
        }
        Err(e) => return vec![format!("can't be examined after the restore: {e}")],
    };
    let mut problems = Vec::new();
    if !same_kind(&m, node) {
        problems.push(format!(
            "restored as {}, but the snapshot has {}",
            kind_of(&m),
            node.kind.name()
        ));
        return problems;
    }
    match node.kind {
        NodeKind::File => {
            if m.len() != node.size {
                problems.push(format!(
                    "is {} bytes, the snapshot recorded {}",
                    m.len(),
                    node.size
                ));
            }
            if let Err(why) = check_content(key, index, dest, node) {
                problems.push(why);
            }
        }
        NodeKind::Symlink => match fs::read_link(dest) {
            Ok(t) if Some(t.as_os_str().as_bytes()) == node.link_target.as_deref() => {}
            Ok(t) => problems.push(format!(
                "points to {}, the snapshot has {}",
                t.display(),
                String::from_utf8_lossy(node.link_target.as_deref().unwrap_or_default())
            )),
            Err(e) => problems.push(format!("reading the link: {e}")),
        },
        NodeKind::Chardev | NodeKind::Blockdev if m.rdev() != node.rdev => {
            problems.push(format!(
                "has device number {}, the snapshot has {}",
                m.rdev(),
                node.rdev
            ));
        }
        _ => {}
    }
    check_metadata(&m, node, is_root, &mut problems);
    problems
}

fn check_metadata(m: &Metadata, node: &Node, is_root: bool, problems: &mut Vec<String>) {
    let owned = m.uid() == node.uid && m.gid() == node.gid;
    if is_root && !owned {
        problems.push(format!(
            "is owned by {}:{}, the snapshot has {}:{}",
            m.uid(),
            m.gid(),
            node.uid,
            node.gid
        ));
    }
    if node.kind != NodeKind::Symlink {
        // The restorer leaves setuid and setgid off a file it could not give
        // to its owner (a drill run as another user): that is by design.
        let want = node.mode & if owned { 0o7777 } else { 0o1777 };
        let have = m.mode() & 0o7777;
        if have != want {
            problems.push(format!("has mode {have:04o}, the snapshot has {want:04o}"));
        }
    }
    let mtime = (m.mtime(), m.mtime_nsec());
    let want = (node.mtime.0, i64::from(node.mtime.1));
    if mtime != want {
        problems.push(format!(
            "has mtime {}.{:09}, the snapshot has {}.{:09}",
            mtime.0, mtime.1, want.0, want.1
        ));
    }
}

fn same_kind(m: &Metadata, node: &Node) -> bool {
    let t = m.file_type();
    match node.kind {
        NodeKind::File => t.is_file(),
        NodeKind::Dir => t.is_dir(),
        NodeKind::Symlink => t.is_symlink(),
        NodeKind::Fifo => t.is_fifo(),
        NodeKind::Chardev => t.is_char_device(),
        NodeKind::Blockdev => t.is_block_device(),
        NodeKind::Socket => t.is_socket(),
    }
}

fn kind_of(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_file() {
        "file"
    } else if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_char_device() {
        "chardev"
    } else if t.is_block_device() {
        "blockdev"
    } else {
        "socket"
    }
}

/// Reads `dest` blob by blob and re-hashes each piece with the id key: the file
/// holds exactly the snapshot's content. The error names the blob and bytes.
fn check_content(key: &MasterKey, index: &Index, dest: &Path, node: &Node) -> Result<(), String> {
    let mut f = File::open(dest).map_err(|e| format!("opening it: {e}"))?;
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for id in &node.content {
        let (_, entry) = index
            .get(BlobKind::Data, id)
            .ok_or_else(|| format!("data blob {id} is not in the index"))?;
        buf.resize(entry.raw_length as usize, 0);
        let end = offset + buf.len() as u64;
        f.read_exact(&mut buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                format!("it ends within bytes {offset}..{end} of data blob {id}")
            }
            _ => format!("reading it: {e}"),
        })?;
        if key.blob_id(&buf) != *id {
            return Err(format!("bytes {offset}..{end} differ from data blob {id}"));
        }
        offset = end;
    }
    let mut extra = [0u8; 1];
    match f.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err(format!("it is longer than the {offset} bytes of its blobs")),
        Err(e) => Err(format!("reading it: {e}")),
    }
}

/// How the live file at `source` differs from the restored, verified `restored`
/// (`None`: the same size and bytes).
pub(super) fn compare_source(source: &Path, restored: &Path) -> Option<String> {
    let m = match fs::symlink_metadata(source) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Some("missing at the source".into());
        }
        Err(e) => return Some(format!("can't be read at the source: {e}")),
    };
    if !m.is_file() {
        return Some(format!(
            "changed at the source since the snapshot: it is now a {}",
            kind_of(&m)
        ));
    }
    let size = fs::metadata(restored).map(|r| r.len()).unwrap_or(0);
    if m.len() != size {
        return Some(format!(
            "changed at the source since the snapshot: {} bytes there, {size} in the snapshot",
            m.len()
        ));
    }
    let (mut a, mut b) = match (File::open(source), File::open(restored)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) => return Some(format!("can't be read at the source: {e}")),
        (_, Err(e)) => return Some(format!("the restored copy can't be read: {e}")),
    };
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut offset = 0u64;
    loop {
        let n = match read_full(&mut a, &mut x) {
            Ok(n) => n,
            Err(e) => return Some(format!("can't be read at the source: {e}")),
        };
        let m = match read_full(&mut b, &mut y) {
            Ok(m) => m,
            Err(e) => return Some(format!("the restored copy can't be read: {e}")),
        };
        let (xs, ys) = (
            x.get(..n).unwrap_or_default(),
            y.get(..m).unwrap_or_default(),
        );
        if xs != ys {
            let at = xs
                .iter()
                .zip(ys)
                .position(|(p, q)| p != q)
                .unwrap_or(n.min(m));
            return Some(format!(
                "changed at the source since the snapshot: its contents differ from byte {}",
                offset + at as u64
            ));
        }
        if n == 0 {
            return None;
        }
        offset += n as u64;
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
