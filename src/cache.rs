//! A local cache of a repository's index files, snapshots and tree packs, so that
//! a backup or restore from a slow NAS (or, later, an object store) reads almost
//! nothing but the data it needs.
//!
//! Everything cached is immutable and content-addressed: a file's name is the
//! BLAKE3 of its bytes, so a cached copy is verified against its name on every read
//! and discarded if it differs; a stale entry (the file was pruned) is never listed
//! by the repository, so it is never asked for, and is swept when seen.
//!
//! `check`, `prune`, `repair` and `cat` do not use the cache: they must see the
//! repository's own bytes.
//!
//! Layout: `<cache dir>/<repository id>/{index,snapshots,tree-packs}/<id>`, where the
//! cache dir is `$CAIRN_CACHE_DIR`, else `$XDG_CACHE_HOME/cairn`, else
//! `~/.cache/cairn`.
//!
//! A repository's directory has its mtime set whenever a process opens it, and
//! directories of repositories unused for [`UNUSED_FOR`] (moved, deleted, or
//! reached under another cache dir) are removed when any cache is opened. A
//! process holds a shared `flock` on the directory it uses and the remover an
//! exclusive one, so a directory in use is never removed, even one whose mtime
//! is old because its process started before the sweep's horizon.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};

use crate::backend::FileType;
use crate::backend::local::{DIR_MODE, FILE_MODE, create_private_dirs};
use crate::id::RepoId;

pub struct Cache {
    dir: PathBuf,
    /// The directory itself, shared-locked while this cache is in use.
    _in_use: Flock<fs::File>,
    /// The file [`Cache::read_range`] read last, kept open: a backup's walk of
    /// its parent reads thousands of trees one at a time from one or two tree
    /// packs, and opening the file for each cost a third of an unchanged
    /// re-backup's system calls.
    held: Mutex<Option<(PathBuf, Arc<fs::File>)>>,
}

/// A repository's cache unused for this long is removed.
pub const UNUSED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// The directory that holds every repository's cache, if one can be found.
pub fn base_dir() -> Option<PathBuf> {
    let from_env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from_env("CAIRN_CACHE_DIR")
        .or_else(|| from_env("XDG_CACHE_HOME").map(|d| d.join("cairn")))
        .or_else(|| from_env("HOME").map(|d| d.join(".cache").join("cairn")))
}

fn kind_dir(t: FileType) -> Option<&'static str> {
    match t {
        FileType::Index => Some("index"),
        FileType::Snapshot => Some("snapshots"),
        FileType::Pack => Some("tree-packs"),
        _ => None,
    }
}

/// Creates a file readable and writable by its owner only.
fn new_private_file(p: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(p)
}

impl Cache {
    /// The cache of repository `repo` under `base`, created if needed. `None` when
    /// it can't be created: the cache is an optimisation, never a reason to fail.
    pub fn open(base: &Path, repo: &RepoId) -> Option<Self> {
        let name = repo.to_hex();
        let dir = base.join(&name);
        let in_use = lock_in_use(&dir)?;
        // Sub-directories only under the lock: a sweep removing this directory
        // (it was old) must not race with them being made.
        for sub in ["index", "snapshots", "tree-packs"] {
            create_private_dirs(&dir.join(sub)).ok()?;
        }
        // The mark of use that sweeps go by.
        let _ = in_use.set_modified(SystemTime::now());
        // A cache made by an older cairn may be readable by others: it holds the
        // repository's (encrypted) index and trees, so make it private too. Only
        // this repository's directory: the base may be any directory the user
        // named in CAIRN_CACHE_DIR.
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(DIR_MODE));
        let tag = base.join("CACHEDIR.TAG");
        if !tag.exists() {
            // Marks the directory as a cache for tools that honour CACHEDIR.TAG.
            let _ = new_private_file(&tag).and_then(|mut f| {
                f.write_all(
                    b"Signature: 8a477f597d28d172789f06886806bc55\n# cairn's local cache: safe to delete.\n",
                )
            });
        }
        sweep(base, &name, SystemTime::now());
        Some(Self {
            dir,
            _in_use: in_use,
            held: Mutex::new(None),
        })
    }

    fn path(&self, t: FileType, name: &str) -> Option<PathBuf> {
        let valid = crate::id::is_file_name(name);
        Some(self.dir.join(kind_dir(t)?).join(name)).filter(|_| valid)
    }

    /// The cached bytes of `name`, if present and intact.
    pub fn get(&self, t: FileType, name: &str) -> Option<Vec<u8>> {
        let p = self.path(t, name)?;
        let bytes = fs::read(&p).ok()?;
        if blake3::hash(&bytes).to_hex().as_str() == name {
            Some(bytes)
        } else {
            let _ = fs::remove_file(&p);
            None
        }
    }

    /// `len` bytes at `offset` of a cached file, without verifying the whole file:
    /// for blobs in cached tree packs, which their own tag and id verify.
    pub fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let f = self.open_held(&self.path(t, name)?)?;
        let mut buf = vec![0u8; usize::try_from(len).ok()?];
        f.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    }

    /// `p` opened, or the open file of the last read if that was `p`. (Files
    /// here are replaced only by identical ones, so a held file never goes
    /// stale; one found damaged is let go by [`Cache::remove`].)
    fn open_held(&self, p: &Path) -> Option<Arc<fs::File>> {
        if let Ok(held) = self.held.lock() {
            if let Some((_, f)) = held.as_ref().filter(|(path, _)| path == p) {
                return Some(Arc::clone(f));
            }
        }
        let f = Arc::new(fs::File::open(p).ok()?);
        if let Ok(mut held) = self.held.lock() {
            *held = Some((p.to_path_buf(), Arc::clone(&f)));
        }
        Some(f)
    }

    /// Drops one cached file (found damaged).
    pub fn remove(&self, t: FileType, name: &str) {
        if let Some(p) = self.path(t, name) {
            if let Ok(mut held) = self.held.lock() {
                if held.as_ref().is_some_and(|(path, _)| *path == p) {
                    *held = None;
                }
            }
            let _ = fs::remove_file(p);
        }
    }

    /// Stores a copy; failures are ignored (a full cache disk must not stop a
    /// backup). Callers pass bytes already verified against `name`.
    pub fn put(&self, t: FileType, name: &str, bytes: &[u8]) {
        let Some(p) = self.path(t, name) else { return };
        if p.exists() {
            return;
        }
        write_new(&p, |f| f.write_all(bytes).ok());
    }

    /// Stores a copy of the `size`-byte file `name`, read `piece` bytes at a
    /// time by `read(offset, len)` and hashed as it goes, so that it is never
    /// in memory whole. `false` if a read failed, the bytes don't hash to
    /// `name` (nothing is then stored), or the copy couldn't be written.
    pub fn put_pieces(
        &self,
        t: FileType,
        name: &str,
        size: u64,
        piece: u64,
        mut read: impl FnMut(u64, u64) -> Option<Vec<u8>>,
    ) -> bool {
        let Some(p) = self.path(t, name) else {
            return false;
        };
        if p.exists() {
            return true;
        }
        write_new(&p, |f| {
            let mut hasher = blake3::Hasher::new();
            let mut offset = 0;
            while offset < size {
                let len = piece.max(1).min(size - offset);
                let bytes = read(offset, len).filter(|b| b.len() as u64 == len)?;
                hasher.update(&bytes);
                f.write_all(&bytes).ok()?;
                offset += len;
            }
            (hex::encode(hasher.finalize().as_bytes()) == name).then_some(())
        })
    }

    /// Removes cached files of kind `t` that the repository no longer has.
    pub fn retain(&self, t: FileType, keep: &HashSet<String>) {
        let Some(sub) = kind_dir(t) else { return };
        let Ok(rd) = fs::read_dir(self.dir.join(sub)) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Creates `p` through a temporary file beside it, renamed into place once
/// `fill` has written it whole; otherwise nothing is left. Whether it was.
fn write_new(p: &Path, fill: impl FnOnce(&mut fs::File) -> Option<()>) -> bool {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = p.with_extension(format!("tmp-{}-{n}", std::process::id()));
    let filled = new_private_file(&tmp).ok().and_then(|mut f| fill(&mut f));
    if filled.is_none() || fs::rename(&tmp, p).is_err() {
        let _ = fs::remove_file(&tmp);
        return false;
    }
    true
}

/// Opens `dir` (created if missing) with a shared lock. A sweep may remove the
/// directory between its creation and the lock; then the handle is of a removed
/// directory, and this starts over.
fn lock_in_use(dir: &Path) -> Option<Flock<fs::File>> {
    use std::os::unix::fs::MetadataExt;
    for _ in 0..5 {
        create_private_dirs(dir).ok()?;
        let Ok(f) = fs::File::open(dir) else { continue };
        let locked = Flock::lock(f, FlockArg::LockShared).ok()?;
        let (Ok(held), Ok(now)) = (locked.metadata(), fs::symlink_metadata(dir)) else {
            continue;
        };
        if held.dev() == now.dev() && held.ino() == now.ino() {
            return Some(locked);
        }
    }
    None
}

/// Removes the caches of other repositories under `base` unused since
/// [`UNUSED_FOR`] before `now`: only directories named by a repository id, never
/// `own`, and only under an exclusive lock (a process using one holds a shared
/// lock), checking the age again once locked. Failures leave things as they are.
fn sweep(base: &Path, own: &str, now: SystemTime) {
    let Some(horizon) = now.checked_sub(UNUSED_FOR) else {
        return;
    };
    let old = |m: &fs::Metadata| m.modified().is_ok_and(|t| t < horizon);
    let Ok(rd) = fs::read_dir(base) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == own || !crate::id::is_file_name(name) {
            continue;
        }
        let path = e.path();
        // Not a symlink: only directories cairn made are removed.
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() && old(&m) => {}
            _ => continue,
        }
        let Ok(f) = fs::File::open(&path) else {
            continue;
        };
        let Ok(locked) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
            continue; // in use
        };
        if locked.metadata().is_ok_and(|m| old(&m)) {
            let _ = fs::remove_dir_all(&path);
        }
        drop(locked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_on_read_and_swept() {
        let base = tempfile::tempdir().unwrap();
        let c = Cache::open(base.path(), &RepoId([1; 32])).unwrap();
        let bytes = b"an index file".to_vec();
        let name = blake3::hash(&bytes).to_hex().to_string();
        assert!(c.get(FileType::Index, &name).is_none());
        c.put(FileType::Index, &name, &bytes);
        assert_eq!(c.get(FileType::Index, &name).unwrap(), bytes);
        // A damaged copy is dropped, not returned.
        fs::write(c.dir.join("index").join(&name), b"damaged").unwrap();
        assert!(c.get(FileType::Index, &name).is_none());
        assert!(!c.dir.join("index").join(&name).exists());
        c.put(FileType::Index, &name, &bytes);
        c.retain(FileType::Index, &HashSet::new());
        assert!(c.get(FileType::Index, &name).is_none());
        // Names that are not ids never reach the filesystem.
        assert!(c.get(FileType::Index, "../../etc/passwd").is_none());
        assert!(c.get(FileType::Key, &name).is_none());
    }

    /// A file copied in pieces is stored only whole and hashing to its name:
    /// a piece that fails or comes back short, or bytes of another name,
    /// leave nothing (not even a temporary file) behind.
    #[test]
    fn a_copy_in_pieces_is_stored_only_whole_and_verified() {
        let base = tempfile::tempdir().unwrap();
        let c = Cache::open(base.path(), &RepoId([1; 32])).unwrap();
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let name = blake3::hash(&bytes).to_hex().to_string();
        let size = bytes.len() as u64;
        let range = |o: u64, l: u64| bytes.get(o as usize..(o + l) as usize).map(<[u8]>::to_vec);
        let packs = c.dir.join("tree-packs");
        let left = || fs::read_dir(&packs).unwrap().count();

        assert!(!c.put_pieces(FileType::Pack, &name, size, 999, |_, _| None));
        assert!(!c.put_pieces(FileType::Pack, &name, size, 999, |o, l| {
            range(o, l).map(|mut b| {
                b.pop();
                b
            })
        }));
        let other = blake3::hash(b"another file").to_hex().to_string();
        assert!(!c.put_pieces(FileType::Pack, &other, size, 999, range));
        assert_eq!(left(), 0, "nothing is left of the failed copies");

        let mut asked = Vec::new();
        assert!(c.put_pieces(FileType::Pack, &name, size, 4096, |o, l| {
            asked.push((o, l));
            range(o, l)
        }));
        assert_eq!(asked, [(0, 4096), (4096, 4096), (8192, 1808)]);
        assert_eq!(fs::read(packs.join(&name)).unwrap(), bytes);
        assert_eq!(
            c.read_range(FileType::Pack, &name, 4000, 200).unwrap(),
            &bytes[4000..4200]
        );
        assert_eq!(left(), 1);
    }

    fn set_age(dir: &Path, age: Duration) {
        fs::File::open(dir)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn caches_unused_for_30_days_are_swept_unless_in_use() {
        let base = tempfile::tempdir().unwrap();
        let old = Cache::open(base.path(), &RepoId([2; 32])).unwrap();
        let old_dir = old.dir.clone();
        set_age(&old_dir, 40 * DAY);
        // In use (locked), it stays, however old its mark.
        let own = Cache::open(base.path(), &RepoId([1; 32])).unwrap();
        assert!(old_dir.is_dir());
        drop(old);
        let fresh = base.path().join(RepoId([3; 32]).to_hex());
        create_private_dirs(&fresh).unwrap();
        set_age(&fresh, 29 * DAY);
        let not_ours = base.path().join("notes");
        create_private_dirs(&not_ours).unwrap();
        set_age(&not_ours, 400 * DAY);
        set_age(&own.dir, 400 * DAY);
        sweep(
            base.path(),
            &own.dir.file_name().unwrap().to_string_lossy(),
            SystemTime::now(),
        );
        assert!(!old_dir.exists(), "unused for 40 days");
        assert!(fresh.is_dir(), "used 29 days ago");
        assert!(not_ours.is_dir(), "not a cache directory");
        assert!(own.dir.is_dir(), "the one in use");
        assert!(base.path().join("CACHEDIR.TAG").is_file());
        // Opening marks use.
        let again = Cache::open(base.path(), &RepoId([3; 32])).unwrap();
        let age = SystemTime::now()
            .duration_since(fs::metadata(&again.dir).unwrap().modified().unwrap())
            .unwrap_or_default();
        assert!(age < DAY, "opening did not mark the cache as used");
    }
}
