//! An entry's `lstat` metadata, gathered relative to its directory.
//!
//! `std::fs::symlink_metadata` takes a path, and the kernel walks every
//! component of it again for each entry: on a tree a few levels deep that walk
//! was two thirds of the time `statx` took, and a fifth of an unchanged
//! re-backup's CPU. The walk keeps each directory it lists open and asks for
//! its entries' metadata relative to it (`fstatat`), which looks up one name.
//! `std::fs::Metadata` can't be built from that call's result, hence this type.
//! It also pins the entry to the directory that was listed: a parent renamed
//! meanwhile no longer sends the lookup somewhere else.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::stat::{FileStat, SFlag};

/// `lstat` metadata, with the accessors of `std::os::unix::fs::MetadataExt`
/// that the walk uses.
#[derive(Clone, Copy)]
pub struct Meta(FileStat);

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta")
            .field("dev", &self.dev())
            .field("ino", &self.ino())
            .field("mode", &format_args!("{:o}", self.0.st_mode))
            .field("size", &self.size())
            .finish()
    }
}

impl Meta {
    /// `lstat(path)`.
    pub fn of_path(path: &Path) -> io::Result<Self> {
        nix::sys::stat::lstat(path)
            .map(Self)
            .map_err(io::Error::from)
    }

    /// `lstat` of the entry `name` of the open directory `dir`.
    pub fn of_entry(dir: &File, name: &[u8]) -> io::Result<Self> {
        nix::sys::stat::fstatat(
            Some(dir.as_raw_fd()),
            OsStr::from_bytes(name),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map(Self)
        .map_err(io::Error::from)
    }

    fn format(&self) -> SFlag {
        SFlag::from_bits_truncate(self.0.st_mode & SFlag::S_IFMT.bits())
    }

    pub fn is_dir(&self) -> bool {
        self.format() == SFlag::S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.format() == SFlag::S_IFREG
    }

    pub fn is_symlink(&self) -> bool {
        self.format() == SFlag::S_IFLNK
    }

    pub fn is_fifo(&self) -> bool {
        self.format() == SFlag::S_IFIFO
    }

    pub fn is_char_device(&self) -> bool {
        self.format() == SFlag::S_IFCHR
    }

    pub fn is_block_device(&self) -> bool {
        self.format() == SFlag::S_IFBLK
    }

    pub fn is_socket(&self) -> bool {
        self.format() == SFlag::S_IFSOCK
    }

    pub fn dev(&self) -> u64 {
        self.0.st_dev
    }

    pub fn ino(&self) -> u64 {
        self.0.st_ino
    }

    /// Type and permission bits (`st_mode`).
    pub fn mode(&self) -> u32 {
        self.0.st_mode
    }

    pub fn nlink(&self) -> u64 {
        self.0.st_nlink
    }

    pub fn uid(&self) -> u32 {
        self.0.st_uid
    }

    pub fn gid(&self) -> u32 {
        self.0.st_gid
    }

    pub fn rdev(&self) -> u64 {
        self.0.st_rdev
    }

    /// Size in bytes (`st_size`); never negative for a real file.
    pub fn size(&self) -> u64 {
        u64::try_from(self.0.st_size).unwrap_or(0)
    }

    pub fn atime(&self) -> i64 {
        self.0.st_atime
    }

    pub fn atime_nsec(&self) -> i64 {
        self.0.st_atime_nsec
    }

    pub fn mtime(&self) -> i64 {
        self.0.st_mtime
    }

    pub fn mtime_nsec(&self) -> i64 {
        self.0.st_mtime_nsec
    }

    pub fn ctime(&self) -> i64 {
        self.0.st_ctime
    }

    pub fn ctime_nsec(&self) -> i64 {
        self.0.st_ctime_nsec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Both ways of asking agree with the standard library on every field the
    /// walk records, for each kind of entry it meets here.
    #[test]
    fn metadata_of_an_entry_and_of_its_path_agree_with_std() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("f"), b"seven b").expect("write");
        std::os::unix::fs::symlink("f", root.join("l")).expect("symlink");
        std::fs::create_dir(root.join("d")).expect("mkdir");
        nix::unistd::mkfifo(&root.join("p"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let open = File::open(root).expect("open dir");
        for name in ["f", "l", "d", "p"] {
            let path = root.join(name);
            let std = std::fs::symlink_metadata(&path).expect("stat");
            for m in [
                Meta::of_path(&path).expect("lstat"),
                Meta::of_entry(&open, name.as_bytes()).expect("fstatat"),
            ] {
                let ft = std.file_type();
                assert_eq!(
                    (m.is_dir(), m.is_file(), m.is_symlink(), m.is_fifo()),
                    (ft.is_dir(), ft.is_file(), ft.is_symlink(), {
                        use std::os::unix::fs::FileTypeExt;
                        ft.is_fifo()
                    }),
                    "{name}"
                );
                assert!(!m.is_char_device() && !m.is_block_device() && !m.is_socket());
                assert_eq!(
                    (m.dev(), m.ino(), m.mode(), m.nlink(), m.uid(), m.gid()),
                    (
                        std.dev(),
                        std.ino(),
                        std.mode(),
                        std.nlink(),
                        std.uid(),
                        std.gid()
                    ),
                    "{name}"
                );
                assert_eq!((m.size(), m.rdev()), (std.len(), std.rdev()), "{name}");
                assert_eq!(
                    (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()),
                    (std.mtime(), std.mtime_nsec(), std.ctime(), std.ctime_nsec()),
                    "{name}"
                );
                assert_eq!((m.atime(), m.atime_nsec()), (std.atime(), std.atime_nsec()));
            }
        }
        assert_eq!(
            Meta::of_entry(&open, b"gone")
                .expect_err("no such entry")
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
