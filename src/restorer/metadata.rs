//! Metadata of restored entries.

use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::stat::UtimensatFlags;
use nix::sys::time::TimeSpec;

use super::State;
use crate::tree::{Node, NodeKind};

fn timespec(t: crate::tree::Timestamp) -> TimeSpec {
    TimeSpec::new(t.0, i64::from(t.1))
}

/// Sets `node`'s metadata on `dest`: through `file` when given (a regular file
/// being restored: no path lookups, and nothing can swap the file in between),
/// else by path without following a final symlink. Ownership, extended
/// attributes, permissions, then times — chown clears setuid bits, so
/// permissions come after it, and times come last because the others change
/// ctime and, for xattrs on some filesystems, mtime.
pub(super) fn apply_metadata(state: &State, dest: &Path, file: Option<&File>, node: &Node) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;
    use xattr::FileExt as _;
    let (uid, gid) = (
        Some(nix::unistd::Uid::from_raw(node.uid)),
        Some(nix::unistd::Gid::from_raw(node.gid)),
    );
    let own = match file {
        Some(f) => nix::unistd::fchown(f.as_raw_fd(), uid, gid),
        None => nix::unistd::fchownat(
            None,
            dest,
            uid,
            gid,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ),
    };
    let owned = own.is_ok();
    // Only root can give files away; as a user, ownership is expected to differ.
    if let (Err(e), true) = (own, state.is_root) {
        state.warning(format!(
            "{}: chown {}:{}: {e}",
            dest.display(),
            node.uid,
            node.gid
        ));
    }
    for x in &node.xattrs {
        let name = std::ffi::OsStr::from_bytes(&x.name);
        let set = match file {
            Some(f) => f.set_xattr(name, &x.value),
            None => xattr::set(dest, name, &x.value),
        };
        if let Err(e) = set {
            state.warning(format!(
                "{}: extended attribute {}: {e}",
                dest.display(),
                String::from_utf8_lossy(&x.name)
            ));
        }
    }
    if node.kind != NodeKind::Symlink {
        // Setuid and setgid bits only on a file owned as the snapshot says: on
        // one left owned by whoever restores it (root, say, after a failed
        // chown) they would grant that owner's rights instead.
        let bits = if owned { 0o7777 } else { 0o1777 };
        let perm = fs::Permissions::from_mode(node.mode & bits);
        let set = match file {
            Some(f) => f.set_permissions(perm),
            None => fs::set_permissions(dest, perm),
        };
        if let Err(e) = set {
            state.warning(format!("{}: chmod {:o}: {e}", dest.display(), node.mode));
        }
    }
    let (atime, mtime) = (timespec(node.atime), timespec(node.mtime));
    let times = match file {
        Some(f) => nix::sys::stat::futimens(f.as_raw_fd(), &atime, &mtime),
        None => {
            nix::sys::stat::utimensat(None, dest, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        }
    };
    if let Err(e) = times {
        state.warning(format!("{}: setting times: {e}", dest.display()));
    }
}
