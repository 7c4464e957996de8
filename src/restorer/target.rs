//! The target as it is found: what an entry already in place means under the
//! overwrite mode, making directories and other entries without following what
//! is in their way, and deleting what the snapshot lacks.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::batch::{FileJob, LinkJob, SourceStatus};
use super::plan::Filters;
use super::{Action, Overwrite, State, verify};
use crate::tree::{Node, NodeKind, Timestamp};

/// What to do with a file of the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Write it (there is nothing in its place, or what is there goes).
    Write,
    /// The target already has it; `verified` when its contents were checked
    /// against the snapshot's blobs because `--verify` was given.
    Unchanged { verified: bool },
    /// Something else is in its place, and the overwrite mode keeps it.
    Keep,
}

fn mtime(m: &Metadata) -> Timestamp {
    Timestamp(m.mtime(), u32::try_from(m.mtime_nsec()).unwrap_or(0))
}

/// Whether the overwrite mode lets an entry of the snapshot with this mtime
/// replace the existing `m`, without looking at contents.
fn replaces(mode: Overwrite, snapshot_mtime: Timestamp, m: &Metadata) -> bool {
    match mode {
        Overwrite::Always | Overwrite::IfChanged => true,
        Overwrite::IfNewer => snapshot_mtime > mtime(m),
        Overwrite::Never => false,
    }
}

/// What is at `dest` now; `None` when nothing is (or, in a dry run, when its
/// parent is not a directory yet).
fn existing(state: &State, dest: &Path, fresh: bool) -> io::Result<Option<Metadata>> {
    if fresh {
        return Ok(None);
    }
    match fs::symlink_metadata(dest) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory && state.opts.dry_run => Ok(None),
        Err(e) => Err(e),
    }
}

/// Decides a file by what the target has in its place (see [`Overwrite`]).
pub(super) fn decide_file(state: &State, job: &FileJob) -> Decision {
    // An error here shows up, with the path, when the file is written.
    let Ok(Some(m)) = existing(state, &job.dest, job.fresh) else {
        return Decision::Write;
    };
    let mode = state.opts.overwrite;
    if mode != Overwrite::IfChanged {
        return match replaces(mode, job.node.mtime, &m) {
            true => Decision::Write,
            false => Decision::Keep,
        };
    }
    if !m.is_file() || m.len() != job.node.size {
        return Decision::Write;
    }
    let verify = state.opts.verify;
    if mtime(&m) == job.node.mtime && !verify {
        return Decision::Unchanged { verified: false };
    }
    match verify::check_file(state, &job.dest, &job.node) {
        Ok(()) => Decision::Unchanged { verified: verify },
        Err(_) => Decision::Write,
    }
}

/// How a directory of the snapshot was made.
pub(super) struct MadeDir {
    /// It did not exist: nothing in it to compare with or delete.
    pub(super) fresh: bool,
    pub(super) set_metadata: bool,
}

/// Makes `dest` a real directory, unless the overwrite mode keeps the
/// non-directory in its place. `None`: it is not a directory (reported).
pub(super) fn make_dir(
    state: &State,
    dest: &Path,
    node: &Node,
    parent_fresh: bool,
) -> Option<MadeDir> {
    let mode = state.opts.overwrite;
    match existing(state, dest, parent_fresh) {
        Ok(Some(m)) if m.is_dir() => {
            // An existing directory gets the snapshot's metadata when the
            // mode would have replaced a file there.
            let set_metadata = mode == Overwrite::IfChanged || replaces(mode, node.mtime, &m);
            state.with(|s| match set_metadata {
                true => s.dirs += 1,
                false => s.kept += 1,
            });
            return Some(MadeDir {
                fresh: false,
                set_metadata,
            });
        }
        Ok(Some(m)) if !replaces(mode, node.mtime, &m) => {
            state.planned(Action::Keep, dest);
            state.with(|s| s.kept += 1);
            state.warning(format!(
                "{}: kept as it is (--overwrite {}), so this directory of the snapshot \
                 and everything in it are not restored",
                dest.display(),
                mode.name()
            ));
            return None;
        }
        Ok(_) => {}
        Err(e) => {
            state.error(format!("{}: {e}", dest.display()));
            return None;
        }
    }
    state.planned(Action::Restore, dest);
    if !state.opts.dry_run {
        if let Err(e) = create_dir_safely(dest) {
            state.error(format!("{}: {e}", dest.display()));
            return None;
        }
    }
    state.with(|s| s.dirs += 1);
    Some(MadeDir {
        fresh: true,
        set_metadata: true,
    })
}

/// Makes a symlink, fifo, device or socket, or leaves what is in its place as
/// the overwrite mode says. Returns whether it gets the snapshot's metadata.
pub(super) fn make_special(state: &State, dest: &Path, node: &Node, fresh: bool) -> bool {
    let mode = state.opts.overwrite;
    match existing(state, dest, fresh) {
        Ok(Some(m)) if mode == Overwrite::IfChanged && same_special(dest, &m, node) => {
            state.planned(Action::Unchanged, dest);
            state.with(|s| s.unchanged += 1);
            return !state.opts.dry_run;
        }
        Ok(Some(m)) if !replaces(mode, node.mtime, &m) => {
            state.planned(Action::Keep, dest);
            state.with(|s| s.kept += 1);
            return false;
        }
        Ok(_) => {}
        Err(e) => {
            state.error(format!("{}: {e}", dest.display()));
            return false;
        }
    }
    state.planned(Action::Restore, dest);
    let created = match state.opts.dry_run {
        true => Ok(()),
        false => replace_non_dir(dest).and_then(|()| create_special(dest, node)),
    };
    match created {
        Ok(()) => {
            state.with(|s| match node.kind {
                NodeKind::Symlink => s.symlinks += 1,
                _ => s.special += 1,
            });
            !state.opts.dry_run
        }
        Err(e) => {
            state.error(format!("{}: {e}", dest.display()));
            false
        }
    }
}

/// Whether the entry `m` at `dest` is already the snapshot's `node`: a symlink to
/// the same target, or a fifo, device or socket of the same kind and number.
fn same_special(dest: &Path, m: &Metadata, node: &Node) -> bool {
    let t = m.file_type();
    match node.kind {
        NodeKind::Symlink => {
            t.is_symlink()
                && fs::read_link(dest)
                    .is_ok_and(|l| Some(l.as_os_str().as_bytes()) == node.link_target.as_deref())
        }
        NodeKind::Fifo => t.is_fifo(),
        NodeKind::Chardev => t.is_char_device() && m.rdev() == node.rdev,
        NodeKind::Blockdev => t.is_block_device() && m.rdev() == node.rdev,
        NodeKind::Socket => t.is_socket(),
        NodeKind::File | NodeKind::Dir => false,
    }
}

/// Makes `link.dest` a hard link to `first`, the first path restored with its
/// inode, once that is written. A link to a file that could not be restored is
/// not made, and is reported under its own path.
pub(super) fn make_link(state: &State, link: &LinkJob, first: &Path, status: SourceStatus) {
    let dest = &link.dest;
    match status {
        SourceStatus::Written | SourceStatus::Unchanged => {}
        SourceStatus::Pending | SourceStatus::Failed => {
            return state.error(format!(
                "{}: not restored: it is a hard link to {}, which could not be restored",
                dest.display(),
                first.display()
            ));
        }
        SourceStatus::Kept => {
            state.planned(Action::Keep, dest);
            state.with(|s| s.kept += 1);
            return state.warning(format!(
                "{}: not restored: it is a hard link to {}, which was kept as it was \
                 (--overwrite {}) and so may not hold the snapshot's contents",
                dest.display(),
                first.display(),
                state.opts.overwrite.name()
            ));
        }
    }
    let mode = state.opts.overwrite;
    match existing(state, dest, link.fresh) {
        Ok(Some(m)) => {
            // In a dry run a file to be written is still the old one: no telling.
            let same = status == SourceStatus::Unchanged
                && fs::symlink_metadata(first)
                    .is_ok_and(|f| (f.dev(), f.ino()) == (m.dev(), m.ino()));
            if same {
                state.planned(Action::Unchanged, dest);
                return state.with(|s| s.unchanged += 1);
            }
            if !replaces(mode, link.mtime, &m) {
                state.planned(Action::Keep, dest);
                return state.with(|s| s.kept += 1);
            }
        }
        Ok(None) => {}
        Err(e) => return state.error(format!("{}: {e}", dest.display())),
    }
    state.planned(Action::Restore, dest);
    let linked = match state.opts.dry_run {
        true => Ok(()),
        false => replace_non_dir(dest).and_then(|()| fs::hard_link(first, dest)),
    };
    match linked {
        Ok(()) => state.with(|s| s.hardlinks += 1),
        Err(e) => state.error(format!(
            "{}: hard link to {}: {e}",
            dest.display(),
            first.display()
        )),
    }
}

/// `--delete`: removes what the directory `dest` (`path` in the snapshot) holds
/// beyond `names`, if the filters would have let such an entry through, and in
/// a directory removed, only what the excludes let through (it stays, with
/// what they keep). Only called for directories this restore made or found to
/// be real directories; `dest` is opened from `root`, the target, and nothing
/// below is reached through a symlink (`O_NOFOLLOW`, `unlinkat`), so nothing
/// outside the target is looked into or removed.
pub(super) fn delete_extras(
    state: &State,
    filters: &mut Filters,
    root: &Path,
    (path, dest): (&Path, &Path),
    names: &HashSet<Vec<u8>>,
    inherited: bool,
) {
    if let Some(p) = state.opts.incomplete.iter().find(|p| path.starts_with(p)) {
        return state.warning(format!(
            "{}: --delete leaves it as it is: the backup could not read {} in full",
            dest.display(),
            p.display()
        ));
    }
    let listed = open_beneath(root, dest).and_then(|mut dir| Ok((names_in(&mut dir)?, dir)));
    let (entries, dir) = match listed {
        Ok(listed) => listed,
        Err(e) => {
            return state.error(format!("{}: listing it for --delete: {e}", dest.display()));
        }
    };
    // The target's filesystem only: a directory where another one is mounted may
    // be stored empty in the snapshot (a backup with --one-file-system keeps
    // mount points so), and what is mounted there is not the restore's to delete.
    if other_filesystem(root, &dir) {
        return state.warning(format!(
            "{}: --delete leaves it as it is: another filesystem is mounted there",
            dest.display()
        ));
    }
    let mut extras: Vec<OsString> = entries
        .into_iter()
        .filter(|n| !names.contains(n.as_bytes()))
        .collect();
    extras.sort();
    for name in extras {
        let snapshot_path = path.join(&name);
        if !filters.lets_through(&snapshot_path, inherited) {
            continue;
        }
        let victim = dest.join(&name);
        let (count, gone) = remove_at(state, filters, &dir, &name, &snapshot_path, &victim);
        if gone {
            state.planned(Action::Delete, &victim);
        }
        state.with(|s| s.deleted += count);
    }
}

/// Whether the directory `dir` is on another filesystem than the target `root`.
fn other_filesystem(root: &Path, dir: &Dir) -> bool {
    let here = nix::sys::stat::fstat(dir.as_raw_fd()).map(|s| s.st_dev);
    let target = nix::sys::stat::stat(root).map(|s| s.st_dev);
    matches!((here, target), (Ok(a), Ok(b)) if a != b)
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Opens the directory `dest`, at or under `root`, from `root` down one name at
/// a time, refusing a symlink at any of them.
fn open_beneath(root: &Path, dest: &Path) -> io::Result<Dir> {
    let rel = dest
        .strip_prefix(root)
        .map_err(|_| io::Error::other("not inside the target"))?;
    let mut dir = Dir::open(root, dir_flags() - OFlag::O_NOFOLLOW, Mode::empty())?;
    for name in rel.components() {
        let std::path::Component::Normal(name) = name else {
            return Err(io::Error::other("not a plain path inside the target"));
        };
        dir = Dir::openat(Some(dir.as_raw_fd()), name, dir_flags(), Mode::empty())?;
    }
    Ok(dir)
}

/// The names in `dir`, without `.` and `..`.
fn names_in(dir: &mut Dir) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for entry in dir.iter() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            out.push(OsString::from_vec(name));
        }
    }
    Ok(out)
}

/// Removes the entry `name` of `dir` (`path` in the snapshot, `shown` in the
/// target) without following it, and, if it is a directory, first what is in
/// it, except what the excludes keep (the directory then stays). Returns how
/// many entries went (in a dry run: would go) and whether `name` did.
fn remove_at(
    state: &State,
    filters: &mut Filters,
    dir: &Dir,
    name: &OsStr,
    path: &Path,
    shown: &Path,
) -> (u64, bool) {
    let fd = dir.as_raw_fd();
    let failed = |e: nix::Error| state.error(format!("{}: deleting it: {e}", shown.display()));
    let (is_dir, dev) = match fstatat(Some(fd), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => (
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR,
            st.st_dev,
        ),
        Err(e) => {
            failed(e);
            return (0, false);
        }
    };
    if is_dir && nix::sys::stat::fstat(fd).is_ok_and(|parent| parent.st_dev != dev) {
        state.warning(format!(
            "{}: --delete leaves it as it is: another filesystem is mounted there",
            shown.display()
        ));
        return (0, false);
    }
    let mut count = 0;
    if is_dir {
        let listed = Dir::openat(Some(fd), name, dir_flags(), Mode::empty())
            .map_err(io::Error::from)
            .and_then(|mut sub| Ok((names_in(&mut sub)?, sub)));
        let (names, sub) = match listed {
            Ok(listed) => listed,
            Err(e) => {
                state.error(format!("{}: deleting it: {e}", shown.display()));
                return (0, false);
            }
        };
        let (mut all, mut gone) = (true, Vec::new());
        for n in names {
            let (p, s) = (path.join(&n), shown.join(&n));
            if filters.excluded(&p) {
                all = false;
                continue;
            }
            let (c, went) = remove_at(state, filters, &sub, &n, &p, &s);
            count += c;
            match went {
                true => gone.push(s),
                false => all = false,
            }
        }
        if !all {
            for s in gone {
                state.planned(Action::Delete, &s);
            }
            return (count, false);
        }
    }
    let flag = match is_dir {
        true => UnlinkatFlags::RemoveDir,
        false => UnlinkatFlags::NoRemoveDir,
    };
    if !state.opts.dry_run {
        if let Err(e) = unlinkat(Some(fd), name, flag) {
            failed(e);
            return (count, false);
        }
    }
    (count + 1, true)
}

/// Makes `dir` a real directory: a symlink or file in its place is removed rather
/// than followed.
fn create_dir_safely(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => fs::remove_file(dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
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
