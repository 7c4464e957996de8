//! Preparing the sources: the paths given, made absolute and normalized, arranged
//! under the directories above them, and counted for progress totals.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::Excludes;
use super::walk::list_dir;
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::repository::Repository;

/// The paths a backup was given, prepared.
pub(super) struct Sources {
    /// Absolute, normalized, deduplicated, without paths inside other given paths
    /// (they are covered): what the snapshot records as its paths.
    pub given: Vec<PathBuf>,
    /// Those of `given` that can't be backed up, with why: they are recorded as
    /// errors and the rest is backed up.
    pub missing: Vec<(PathBuf, String)>,
}

impl Sources {
    /// The paths to walk.
    pub fn present(&self) -> Vec<PathBuf> {
        self.given
            .iter()
            .filter(|p| !self.missing.iter().any(|(m, _)| m == *p))
            .cloned()
            .collect()
    }
}

/// Prepares the paths given to a backup. A path that doesn't exist is listed in
/// [`Sources::missing`], as restic does, so that one missing source doesn't cost
/// the backup of the others; when none exists it is an error.
pub(super) fn prepare(paths: &[PathBuf]) -> Result<Sources> {
    if paths.is_empty() {
        return Err(Error::invalid("nothing to back up: give at least one path"));
    }
    let mut out: Vec<PathBuf> = Vec::new();
    let mut unresolved: Vec<(PathBuf, String)> = Vec::new();
    for p in paths {
        let abs = std::path::absolute(p).at(p)?;
        match resolve_parent_dirs(&abs) {
            Ok(clean) => out.push(clean),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                unresolved.push((abs, "does not exist; not backed up".into()));
            }
            Err(e) => unresolved.push((abs, format!("resolving `..` in it: {e}; not backed up"))),
        }
    }
    out.sort();
    out.dedup();
    let all = out.clone();
    out.retain(|p| !all.iter().any(|q| q != p && p.starts_with(q)));
    // Other errors (a parent that can't be searched, say) are the walk's to
    // report: it records them as it does for any entry it can't read.
    let mut missing: Vec<(PathBuf, String)> = out
        .iter()
        .filter_map(|p| match std::fs::symlink_metadata(p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Some((p.clone(), "does not exist; not backed up".to_string()))
            }
            _ => None,
        })
        .collect();
    for (p, why) in unresolved {
        if !out.contains(&p) {
            out.push(p.clone());
            missing.push((p, why));
        }
    }
    out.sort();
    if missing.len() == out.len() {
        return Err(Error::NoSource(
            missing.into_iter().map(|(p, _)| p).collect(),
        ));
    }
    Ok(Sources {
        given: out,
        missing,
    })
}

/// Normalizes an absolute path, resolving each `..` as the kernel does: it goes
/// up from the directory the path so far *leads to*, through any symlink in it.
/// With `link` a symlink to `/x/y`, `/a/link/../b` is `/x/b`; cutting the text
/// (`/a/b`) would back up another directory than the one the user named. Without
/// a `..`, the path is kept as written (`.` and repeated `/` dropped).
fn resolve_parent_dirs(abs: &Path) -> io::Result<PathBuf> {
    let mut clean = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::ParentDir => {
                let real = std::fs::canonicalize(&clean)?;
                if !std::fs::metadata(&real)?.is_dir() {
                    return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
                }
                clean = real;
                clean.pop();
            }
            _ => {}
        }
    }
    Ok(clean)
}

pub(super) fn repo_local_root(repo: &Repository) -> Option<PathBuf> {
    std::fs::canonicalize(repo.backend().location()).ok()
}

/// The directories above the backed-up paths, down to each path.
pub(super) enum Virtual {
    Leaf(PathBuf),
    Dir(BTreeMap<Vec<u8>, Virtual>),
}

/// Counts the regular files and bytes under `paths` (with the backup's exclude and
/// file-system rules) into `progress`'s totals, for a progress bar's ETA. Runs
/// beside the backup and stops when `stop` is set. It lists directories the way the
/// backup does, without touching their atimes: a walker that did would change the
/// directories' metadata, and so their trees, on every backup.
pub(super) fn count_sources(
    paths: &[PathBuf],
    excludes: &Excludes,
    one_file_system: bool,
    progress: &Progress,
    stop: &AtomicBool,
) {
    let mut stack: Vec<(PathBuf, Option<u64>)> = paths.iter().map(|p| (p.clone(), None)).collect();
    while let Some((path, dev)) = stack.pop() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if excludes.is_excluded(&path) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            progress.found(1, meta.len());
        } else if meta.is_dir() {
            if one_file_system && dev.is_some_and(|d| d != meta.dev()) {
                continue;
            }
            if let Ok((_, entries)) = list_dir(&path, None) {
                stack.extend(entries.into_iter().map(|name| {
                    let child = path.join(std::ffi::OsStr::from_bytes(&name));
                    (child, Some(meta.dev()))
                }));
            }
        }
    }
    progress.set_totals_final();
}

pub(super) fn insert_virtual(
    map: &mut BTreeMap<Vec<u8>, Virtual>,
    comps: &[Vec<u8>],
    full: PathBuf,
) {
    let Some((first, rest)) = comps.split_first() else {
        return;
    };
    if rest.is_empty() {
        map.insert(first.clone(), Virtual::Leaf(full));
        return;
    }
    let entry = map
        .entry(first.clone())
        .or_insert_with(|| Virtual::Dir(BTreeMap::new()));
    if let Virtual::Dir(sub) = entry {
        insert_virtual(sub, rest, full);
    }
}
