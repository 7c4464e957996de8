//! The local filesystem backend: disks and NAS mounts.

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Backend, Entry, FileType};
use crate::error::{Error, IoContext, Result};

pub struct LocalBackend {
    root: PathBuf,
}

const TMP_PREFIX: &str = ".tmp-";

/// Modes of everything the repository holds, whatever the umask: key files are
/// offline password-guessing material, and the rest is nobody else's business.
pub const FILE_MODE: u32 = 0o600;
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents with [`DIR_MODE`].
pub(crate) fn create_private_dirs(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Packs are spread over 256 subdirectories by their first two hex digits.
    pub fn path(&self, t: FileType, name: &str) -> PathBuf {
        match t {
            FileType::Config => self.root.join("config"),
            FileType::Pack => {
                let sub = name.get(..2).unwrap_or("00");
                self.root.join("data").join(sub).join(name)
            }
            _ => self.root.join(t.dir()).join(name),
        }
    }

    fn check_name(t: FileType, name: &str) -> Result<()> {
        let ok = match t {
            FileType::Config => name == "config",
            _ => crate::id::is_file_name(name),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "{name:?} is not a valid name for a {t:?} file"
            )))
        }
    }
}

impl LocalBackend {
    /// The key files and config that users other than the owner may read (left by
    /// an older cairn, or copied with another umask): each is offline
    /// password-guessing material, so the CLI warns about them.
    fn exposed(&self) -> Vec<(PathBuf, u32)> {
        let mut paths = vec![self.root.join("config")];
        if let Ok(rd) = fs::read_dir(self.root.join("keys")) {
            paths.extend(
                rd.flatten()
                    .filter(|e| e.file_name().to_str().is_some_and(crate::id::is_file_name))
                    .map(|e| e.path()),
            );
        }
        paths
            .into_iter()
            .filter_map(|p| {
                let m = fs::symlink_metadata(&p).ok()?;
                let mode = m.permissions().mode() & 0o7777;
                (m.is_file() && mode & 0o077 != 0).then_some((p, mode))
            })
            .collect()
    }
}

/// Files at least this large are written with O_DIRECT where the filesystem allows.
/// Packs are written once and read back rarely: going around the page cache saves
/// the kernel's copy (on a 2-core machine a large share of a backup's CPU) and
/// leaves the user's cached data in memory.
const DIRECT_MIN: usize = 1 << 20;
/// O_DIRECT needs buffers, offsets and lengths aligned to the logical block size;
/// 4096 covers 512-byte and 4 KiB devices.
const DIRECT_ALIGN: usize = 4096;
/// Bytes per write through the aligned staging buffer. A pack writer keeps
/// this much: 4 MiB measured no faster and cost 3 MiB more of a backup's peak.
const WRITE_STAGE: usize = 1 << 20;
/// Bytes per O_DIRECT read (`check --read-data`, restore): larger, as each read
/// waits for the device.
const READ_STAGE: usize = 4 << 20;

/// Set once a filesystem refused O_DIRECT, so later writes don't retry it.
static DIRECT_REFUSED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static STAGE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` bytes (WRITE_STAGE or READ_STAGE) of this thread's
/// staging buffer, aligned to DIRECT_ALIGN; allocated on first use, grown
/// when a use needs more, and kept.
fn with_stage<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    STAGE.with(|cell| {
        let mut stage = cell.borrow_mut();
        if stage.len() < len + DIRECT_ALIGN {
            *stage = vec![0u8; len + DIRECT_ALIGN];
        }
        let start = stage.as_ptr().align_offset(DIRECT_ALIGN);
        f(&mut stage[start..start + len])
    })
}

/// Creates `path` (which must not exist) holding the concatenation of `parts`, not
/// yet synced.
fn write_new_file(path: &Path, parts: &[&[u8]]) -> io::Result<File> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let direct = len >= DIRECT_MIN && !DIRECT_REFUSED.load(Ordering::Relaxed);
    write_new_file_with(path, parts, direct)
}

fn write_new_file_with(path: &Path, parts: &[&[u8]], direct: bool) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    if direct && set_direct(&f, true) {
        match write_staged(&f, parts, true) {
            Ok(()) => return Ok(f),
            Err(e) if refuses_direct(&e) => {
                // The filesystem took the flag but not the write (an alignment
                // it can't do): start the file over without it.
                DIRECT_REFUSED.store(true, Ordering::Relaxed);
                if !set_direct(&f, false) {
                    return Err(e);
                }
                f.set_len(0)?;
            }
            Err(e) => return Err(e),
        }
    }
    match parts {
        [one] => f.write_all_at(one, 0)?,
        _ => write_staged(&f, parts, false)?,
    }
    Ok(f)
}

/// A new file written through a staging buffer, with O_DIRECT while the
/// filesystem takes it (see [`write_staged`]); for [`Backend::write_streamed`].
struct StagedFile<'a> {
    file: &'a File,
    path: &'a Path,
    buf: &'a mut [u8],
    filled: usize,
    offset: u64,
    direct: bool,
}

impl StagedFile<'_> {
    /// Writes `len` bytes of the buffer (all of it but at the end, where they
    /// are padded to the alignment). A filesystem that takes O_DIRECT but
    /// refuses a write goes on without it: the bytes before are in place.
    fn write_out(&mut self, len: usize) -> io::Result<()> {
        let at = self.offset;
        let bytes = self.buf.get(..len).ok_or(io::ErrorKind::InvalidInput)?;
        match self.file.write_all_at(bytes, at) {
            Err(e) if self.direct && refuses_direct(&e) => {
                DIRECT_REFUSED.store(true, Ordering::Relaxed);
                if !set_direct(self.file, false) {
                    return Err(e);
                }
                self.direct = false;
                self.file.write_all_at(bytes, at)
            }
            r => r,
        }
    }

    /// Writes what is left in the buffer, and cuts the padding off.
    fn finish(&mut self) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let end = if self.direct {
            self.filled.next_multiple_of(DIRECT_ALIGN)
        } else {
            self.filled
        };
        if let Some(pad) = self.buf.get_mut(self.filled..end) {
            pad.fill(0);
        }
        self.write_out(end)?;
        let len = self.offset + self.filled as u64;
        if end != self.filled {
            self.file.set_len(len)?;
        }
        self.offset = len;
        self.filled = 0;
        Ok(())
    }
}

impl io::Write for StagedFile<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = self.buf.len() - self.filled;
        let n = bytes.len().min(room);
        if let (Some(to), Some(from)) = (
            self.buf.get_mut(self.filled..self.filled + n),
            bytes.get(..n),
        ) {
            to.copy_from_slice(from);
        }
        self.filled += n;
        if self.filled == self.buf.len() {
            self.write_out(self.filled)
                .map_err(|e| io::Error::other(Error::io(self.path, e)))?;
            self.offset += self.filled as u64;
            self.filled = 0;
        }
        Ok(n)
    }

    /// Buffered bytes stay until [`StagedFile::finish`]: a write of fewer than
    /// the aligned block can't go out with O_DIRECT before the end.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether an error means "this filesystem doesn't do O_DIRECT here".
fn refuses_direct(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
}

/// Turns O_DIRECT on or off for an open file. Switching it on after `open`
/// (rather than passing it to `open`) means a filesystem that refuses it fails
/// here, cleanly, instead of after having created the file. Returns whether the
/// file is now in the requested mode; a refusal to turn it on is remembered.
fn set_direct(f: &File, on: bool) -> bool {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let Ok(bits) = fcntl(fd, FcntlArg::F_GETFL) else {
        return false;
    };
    let flags = OFlag::from_bits_truncate(bits);
    let wanted = if on {
        flags | OFlag::O_DIRECT
    } else {
        flags - OFlag::O_DIRECT
    };
    let ok = fcntl(fd, FcntlArg::F_SETFL(wanted)).is_ok();
    if on && !ok {
        DIRECT_REFUSED.store(true, Ordering::Relaxed);
    }
    ok
}

/// Streams `parts` into the empty file `f` through this thread's staging buffer,
/// WRITE_STAGE bytes per write, so that many small pieces cost few system calls.
/// With `direct` (O_DIRECT on) the last block is padded with zeros to the
/// alignment and the file is then cut to its real length.
fn write_staged(f: &File, parts: &[&[u8]], direct: bool) -> io::Result<()> {
    with_stage(WRITE_STAGE, |buf| {
        let mut filled = 0usize;
        let mut offset = 0u64;
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let n = rest.len().min(buf.len() - filled);
                let (now, later) = rest.split_at(n);
                buf[filled..filled + n].copy_from_slice(now);
                filled += n;
                rest = later;
                if filled == buf.len() {
                    f.write_all_at(buf, offset)?;
                    offset += filled as u64;
                    filled = 0;
                }
            }
        }
        if filled > 0 {
            let end = if direct {
                filled.next_multiple_of(DIRECT_ALIGN)
            } else {
                filled
            };
            buf[filled..end].fill(0);
            f.write_all_at(&buf[..end], offset)?;
            if end != filled {
                f.set_len(offset + filled as u64)?;
            }
        }
        Ok(())
    })
}

/// Reads `len` bytes at `offset` of `f` with O_DIRECT when the range is large and
/// the filesystem allows it: `check --read-data` then reads what is on the device
/// rather than a cached copy, and neither it nor a restore fills the page cache
/// with packs that are read once. `None`: read the usual way.
fn read_direct(f: &File, offset: u64, len: usize) -> Option<io::Result<Vec<u8>>> {
    if len < DIRECT_MIN || DIRECT_REFUSED.load(Ordering::Relaxed) || !set_direct(f, true) {
        return None;
    }
    match read_aligned(f, offset, len) {
        Err(e) if refuses_direct(&e) => {
            DIRECT_REFUSED.store(true, Ordering::Relaxed);
            // Read the usual way, if the descriptor can go back to it.
            if set_direct(f, false) {
                None
            } else {
                Some(Err(e))
            }
        }
        r => Some(r),
    }
}

/// The reads behind `read_direct`: block-aligned reads into the staging buffer,
/// copying out the part asked for. A short read just starts the next one there.
fn read_aligned(f: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    with_stage(READ_STAGE, |buf| {
        let mut out = Vec::with_capacity(len);
        let end = offset + len as u64;
        let mut pos = offset;
        while pos < end {
            let aligned = pos - pos % DIRECT_ALIGN as u64;
            let skip = (pos - aligned) as usize;
            let want = ((end - aligned) as usize)
                .next_multiple_of(DIRECT_ALIGN)
                .min(READ_STAGE);
            let n = f.read_at(&mut buf[..want], aligned)?;
            if n <= skip {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file ends before byte {end}"),
                ));
            }
            let take = (n - skip).min((end - pos) as usize);
            out.extend_from_slice(&buf[skip..skip + take]);
            pos += take as u64;
        }
        Ok(out)
    })
}

/// `.tmp-` and 16 lowercase hex digits: the temporary files `write_parts` makes.
fn is_temporary_name(name: &str) -> bool {
    name.strip_prefix(TMP_PREFIX).is_some_and(|rest| {
        rest.len() == 16 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn is_pack_subdir(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Makes a directory's entries (a rename, a new or removed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

impl Backend for LocalBackend {
    fn exposed_secrets(&self) -> Vec<(PathBuf, u32)> {
        self.exposed()
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        match fs::read_dir(&self.root) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(Error::RepositoryExists(self.location()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_private_dirs(&self.root).at(&self.root)?;
            }
            Err(e) => return Err(Error::io(&self.root, e)),
        }
        // An existing empty directory (made by the user, say) gets the same mode,
        // where the filesystem keeps modes at all (some network mounts don't).
        let _ = fs::set_permissions(&self.root, fs::Permissions::from_mode(DIR_MODE));
        let mkdir = |d: PathBuf| fs::DirBuilder::new().mode(DIR_MODE).create(&d).at(&d);
        for t in FileType::all() {
            if t != FileType::Config {
                mkdir(self.root.join(t.dir()))?;
            }
        }
        for i in 0..=255u8 {
            mkdir(self.root.join("data").join(hex::encode([i])))?;
        }
        sync_dir(&self.root.join("data"))?;
        sync_dir(&self.root)
    }

    fn is_repository(&self) -> Result<bool> {
        let p = self.path(FileType::Config, "config");
        match fs::symlink_metadata(&p) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    fn list(&self, t: FileType) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut scan = |dir: &Path| -> Result<()> {
            let rd = match fs::read_dir(dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io(dir, e)),
            };
            for entry in rd {
                let entry = entry.at(dir)?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with(TMP_PREFIX) {
                    continue;
                }
                let meta = entry.metadata().at(entry.path())?;
                if meta.is_file() {
                    out.push(Entry {
                        name: name.to_string(),
                        size: meta.len(),
                        modified: meta.modified().ok(),
                    });
                }
            }
            Ok(())
        };
        match t {
            FileType::Config => {
                if self.is_repository()? {
                    let p = self.path(t, "config");
                    let meta = fs::metadata(&p).at(&p)?;
                    out.push(Entry {
                        name: "config".into(),
                        size: meta.len(),
                        modified: meta.modified().ok(),
                    });
                }
            }
            FileType::Pack => {
                let data = self.root.join("data");
                let rd = fs::read_dir(&data).at(&data)?;
                for sub in rd {
                    let sub = sub.at(&data)?;
                    // A streamed pack's temporary file, which another writer
                    // may rename away between the listing and a stat.
                    if sub.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                        continue;
                    }
                    match sub.file_type() {
                        Ok(t) if t.is_dir() => scan(&sub.path())?,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io(sub.path(), e)),
                    }
                }
            }
            _ => scan(&self.root.join(t.dir()))?,
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, t: FileType, name: &str, max_len: u64) -> Result<Vec<u8>> {
        Self::check_name(t, name)?;
        let p = self.path(t, name);
        let f = File::open(&p).at(&p)?;
        let len = f.metadata().at(&p)?.len();
        if len > max_len {
            return Err(Error::corrupt(
                p.display().to_string(),
                format!("{len} bytes is larger than the {max_len} bytes such a file may have"),
            ));
        }
        if let Some(direct) = read_direct(&f, 0, len as usize) {
            return direct.at(&p);
        }
        let mut buf = Vec::with_capacity(len as usize);
        f.take(max_len).read_to_end(&mut buf).at(&p)?;
        Ok(buf)
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        Self::check_name(t, name)?;
        let p = self.path(t, name);
        let f = File::open(&p).at(&p)?;
        let size = f.metadata().at(&p)?.len();
        let end = offset.checked_add(len);
        if end.is_none_or(|end| end > size) {
            return Err(Error::corrupt(
                p.display().to_string(),
                format!("range {offset}+{len} is past the end of the {size}-byte file"),
            ));
        }
        if let Some(direct) = read_direct(&f, offset, len as usize) {
            return direct.at(&p);
        }
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, offset).at(&p)?;
        Ok(buf)
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.write_parts(t, name, &[data])
    }

    fn write_parts(&self, t: FileType, name: &str, parts: &[&[u8]]) -> Result<()> {
        Self::check_name(t, name)?;
        let dest = self.path(t, name);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        if !dir.is_dir() {
            create_private_dirs(&dir).at(&dir)?;
        }
        let rnd: [u8; 8] = crate::crypto::random_array()?;
        let tmp = dir.join(format!("{TMP_PREFIX}{}", hex::encode(rnd)));
        let result = (|| -> Result<()> {
            let f = write_new_file(&tmp, parts).at(&tmp)?;
            f.sync_all().at(&tmp)?;
            drop(f);
            fs::rename(&tmp, &dest).at(&dest)?;
            sync_dir(&dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| stop_point())
    }

    fn write_streamed(
        &self,
        t: FileType,
        size_hint: usize,
        fill: &mut dyn FnMut(&mut dyn io::Write) -> Result<String>,
    ) -> Result<String> {
        if t == FileType::Config {
            return Err(Error::invalid("the config is not written by streaming"));
        }
        // In the type's top directory: a pack's subdirectory depends on its name.
        let dir = self.root.join(t.dir());
        if !dir.is_dir() {
            create_private_dirs(&dir).at(&dir)?;
        }
        let rnd: [u8; 8] = crate::crypto::random_array()?;
        let tmp = dir.join(format!("{TMP_PREFIX}{}", hex::encode(rnd)));
        let result = (|| -> Result<String> {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&tmp)
                .at(&tmp)?;
            let direct = size_hint >= DIRECT_MIN
                && !DIRECT_REFUSED.load(Ordering::Relaxed)
                && set_direct(&f, true);
            let name = with_stage(WRITE_STAGE, |buf| -> Result<String> {
                let mut sink = StagedFile {
                    file: &f,
                    path: &tmp,
                    buf,
                    filled: 0,
                    offset: 0,
                    direct,
                };
                let name = fill(&mut sink)?;
                sink.finish().at(&tmp)?;
                Ok(name)
            })?;
            Self::check_name(t, &name)?;
            f.sync_all().at(&tmp)?;
            drop(f);
            let dest = self.path(t, &name);
            let dest_dir = dest.parent().unwrap_or(&self.root).to_path_buf();
            if !dest_dir.is_dir() {
                create_private_dirs(&dest_dir).at(&dest_dir)?;
            }
            fs::rename(&tmp, &dest).at(&dest)?;
            sync_dir(&dest_dir)?;
            Ok(name)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.inspect(|_| stop_point())
    }

    fn list_temporary(&self) -> Result<Vec<Entry>> {
        let mut dirs: Vec<String> = vec![String::new()];
        for t in FileType::all() {
            if t != FileType::Config {
                dirs.push(t.dir().to_string());
            }
        }
        let data = self.root.join("data");
        match fs::read_dir(&data) {
            Ok(rd) => {
                for sub in rd {
                    let sub = sub.at(&data)?;
                    let name = sub.file_name();
                    if let Some(n) = name.to_str().filter(|n| is_pack_subdir(n)) {
                        dirs.push(format!("data/{n}"));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&data, e)),
        }
        let mut out = Vec::new();
        for rel in dirs {
            let dir = self.root.join(&rel);
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&dir, e)),
            };
            for entry in rd {
                let entry = entry.at(&dir)?;
                let name = entry.file_name();
                let Some(name) = name.to_str().filter(|n| is_temporary_name(n)) else {
                    continue;
                };
                // Gone since the listing: its write finished or failed.
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(entry.path(), e)),
                };
                if meta.is_file() {
                    out.push(Entry {
                        name: if rel.is_empty() {
                            name.to_string()
                        } else {
                            format!("{rel}/{name}")
                        },
                        size: meta.len(),
                        modified: meta.modified().ok(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn remove_temporary(&self, name: &str) -> Result<()> {
        // Only names `list_temporary` gives: a temporary file's name in the root,
        // a type's directory or a pack subdirectory, never anything else.
        let (dir, file) = name.rsplit_once('/').unwrap_or(("", name));
        let dir_ok = dir.is_empty()
            || FileType::all()
                .iter()
                .any(|t| *t != FileType::Config && t.dir() == dir)
            || dir.strip_prefix("data/").is_some_and(is_pack_subdir);
        if !dir_ok || !is_temporary_name(file) {
            return Err(Error::invalid(format!(
                "{name:?} is not a temporary file of the repository"
            )));
        }
        let p = self.root.join(name);
        // A symlink or directory of that name is not one of cairn's temporary
        // files (`list_temporary` lists regular files only): left alone.
        if !fs::symlink_metadata(&p).at(&p)?.is_file() {
            return Err(Error::invalid(format!(
                "{name:?} is not a temporary file of the repository (not a regular file)"
            )));
        }
        fs::remove_file(&p).at(&p)?;
        if let Some(d) = p.parent() {
            sync_dir(d)?;
        }
        stop_point();
        Ok(())
    }

    fn free_space(&self) -> Result<Option<u64>> {
        let st = nix::sys::statvfs::statvfs(&self.root)
            .map_err(|e| Error::io(&self.root, io::Error::from(e)))?;
        // Both are u64 on 64-bit Linux, narrower elsewhere.
        #[allow(clippy::useless_conversion)]
        let (blocks, size) = (
            u64::from(st.blocks_available()),
            u64::from(st.fragment_size()),
        );
        Ok(Some(blocks.saturating_mul(size)))
    }

    fn remove(&self, t: FileType, name: &str) -> Result<()> {
        Self::check_name(t, name)?;
        let p = self.path(t, name);
        fs::remove_file(&p).at(&p)?;
        if let Some(dir) = p.parent() {
            sync_dir(dir)?;
        }
        stop_point();
        Ok(())
    }
}

/// Built with the `test-hooks` feature and run with `CAIRN_TEST_STOP_AT_WRITES`
/// set, the process stops itself (SIGSTOP)
/// after each write or removal is durable, so that the crash harness
/// (tests/crash) can SIGKILL it exactly between two of them, each in turn.
/// Read once; unset, it costs nothing.
#[cfg(feature = "test-hooks")]
fn stop_point() {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("CAIRN_TEST_STOP_AT_WRITES").is_some()) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
}

/// Without the `test-hooks` feature (every build but the crash harness's),
/// nothing.
#[cfg(not(feature = "test-hooks"))]
fn stop_point() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symlink or a directory named like a temporary file is not one:
    /// `remove_temporary` refuses it, and a symlink's target is untouched
    /// (found by the `backend_names` fuzz target: a symlink was removed).
    #[test]
    fn remove_temporary_refuses_a_symlink_or_directory_of_a_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("r"));
        b.create().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, b"keep").unwrap();
        let link = "keys/.tmp-0123456789abcdef";
        std::os::unix::fs::symlink(&outside, b.root().join(link)).unwrap();
        let sub = "index/.tmp-fedcba9876543210";
        fs::create_dir(b.root().join(sub)).unwrap();
        assert!(b.list_temporary().unwrap().is_empty());
        for name in [link, sub] {
            let e = b.remove_temporary(name).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        assert!(fs::symlink_metadata(b.root().join(link)).is_ok());
        assert!(b.root().join(sub).is_dir());
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
    }

    #[test]
    fn write_read_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        assert!(
            b.create().is_err(),
            "create on an existing layout must fail"
        );
        let name = "ab".repeat(32);
        b.write(FileType::Pack, &name, b"hello world").unwrap();
        assert_eq!(b.read(FileType::Pack, &name, 100).unwrap(), b"hello world");
        assert!(b.read(FileType::Pack, &name, 5).is_err());
        assert_eq!(b.read_range(FileType::Pack, &name, 6, 5).unwrap(), b"world");
        assert!(b.read_range(FileType::Pack, &name, 6, 6).is_err());
        assert!(b.read_range(FileType::Pack, &name, u64::MAX, 2).is_err());
        let listed = b.list(FileType::Pack).unwrap();
        let written = fs::metadata(b.path(FileType::Pack, &name))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            listed,
            vec![Entry {
                name: name.clone(),
                size: 11,
                modified: Some(written),
            }]
        );
        assert!(b.read(FileType::Pack, "../../etc/passwd", 100).is_err());
        b.remove(FileType::Pack, &name).unwrap();
        assert!(b.list(FileType::Pack).unwrap().is_empty());
    }

    /// Sizes around the O_DIRECT threshold, the block size and the staging buffer
    /// come back byte for byte, with the exact length (no padding left behind).
    #[test]
    fn large_writes_round_trip_at_every_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        let sizes = [
            DIRECT_MIN - 1,
            DIRECT_MIN,
            DIRECT_MIN + 1,
            DIRECT_MIN + DIRECT_ALIGN - 1,
            WRITE_STAGE,
            WRITE_STAGE + 1,
            READ_STAGE,
            READ_STAGE + 1,
            2 * READ_STAGE + 12_345,
        ];
        for (i, &n) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..n).map(|k| (k * 31 + i * 7 + k / 4099) as u8).collect();
            let name = format!("{:02x}", i).repeat(32);
            b.write(FileType::Pack, &name, &data).unwrap();
            let back = b.read(FileType::Pack, &name, n as u64).unwrap();
            assert_eq!(back.len(), n, "length of a {n}-byte file");
            assert!(back == data, "contents of a {n}-byte file");
            for (off, len) in [(0, n), (1, n - 1), (4095, n - 5000), (n / 3, n - n / 3 - 7)] {
                let part = b
                    .read_range(FileType::Pack, &name, off as u64, len as u64)
                    .unwrap();
                assert!(part == data[off..off + len], "{len} bytes at {off} of {n}");
            }
            assert!(b.read_range(FileType::Pack, &name, 1, n as u64).is_err());
            assert!(b.read(FileType::Pack, &name, n as u64 - 1).is_err());
        }
        // Both ways of writing give the same file.
        let data: Vec<u8> = (0..3 * READ_STAGE + 77).map(|k| (k % 251) as u8).collect();
        // Pieces of every size, across the staging buffer's boundaries.
        let mut pieces = Vec::new();
        let mut rest = &data[..];
        for k in [12usize, 1, 0, 4095, WRITE_STAGE - 5, 16, READ_STAGE + 3, 7]
            .into_iter()
            .cycle()
        {
            let (piece, tail) = rest.split_at(k.min(rest.len()));
            pieces.push(piece);
            rest = tail;
            if rest.is_empty() {
                break;
            }
        }
        for direct in [false, true] {
            for (how, parts) in [("whole", vec![&data[..]]), ("pieces", pieces.clone())] {
                let p = dir.path().join(format!("direct-{direct}-{how}"));
                let f = write_new_file_with(&p, &parts, direct).unwrap();
                drop(f);
                assert!(fs::read(&p).unwrap() == data, "direct = {direct}, {how}");
                assert!(
                    write_new_file_with(&p, &parts, direct).is_err(),
                    "must not overwrite"
                );
            }
        }
        // A streamed write gives the same file, under the name it returns.
        let name = "ab".repeat(32);
        let streamed = b
            .write_streamed(FileType::Pack, data.len(), &mut |sink| {
                for piece in &pieces {
                    sink.write_all(piece).unwrap();
                }
                Ok(name.clone())
            })
            .unwrap();
        assert_eq!(streamed, name);
        assert!(b.read(FileType::Pack, &name, data.len() as u64).unwrap() == data);
        // A failed fill leaves nothing behind.
        let failed = b.write_streamed(FileType::Pack, data.len(), &mut |sink| {
            sink.write_all(&data[..WRITE_STAGE + 9]).unwrap();
            Err(Error::invalid("stopped"))
        });
        assert!(failed.is_err());
        assert!(
            b.list_temporary().unwrap().is_empty(),
            "a temporary file was left"
        );
        // One a killed writer left in `data/` is a temporary file, not a pack.
        let left = "data/.tmp-0123456789abcdef";
        fs::write(b.root().join(left), b"partial").unwrap();
        let packs: Vec<String> = b
            .list(FileType::Pack)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(
            packs.contains(&name) && !packs.iter().any(|p| p.contains("tmp")),
            "{packs:?}"
        );
        let temporary: Vec<String> = b
            .list_temporary()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(temporary, [left]);
        b.remove_temporary(left).unwrap();
        let stray = fs::read_dir(dir.path().join("repo/data/00"))
            .unwrap()
            .filter(|e| {
                let e = e.as_ref().unwrap();
                e.file_name().to_string_lossy().starts_with(TMP_PREFIX)
            })
            .count();
        assert_eq!(stray, 0, "temporary files left behind");
    }
}
