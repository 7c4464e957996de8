//! Restore: a whole snapshot, a sub-tree or one file, into a target directory.
//!
//! Order: directories, symlinks and special files are created while walking the
//! trees; file contents are then written pack by pack, in parallel (holes left as
//! holes), and each file gets its metadata through its descriptor as soon as its
//! last chunk is written; then hard links; then metadata of everything else,
//! directories last and deepest first so that writing into a directory does not
//! disturb its restored mtime. A file that could not be written whole gets no
//! metadata.
//!
//! Nothing is written outside the target: tree names are checked on decode (no `/`,
//! `.`, `..`), every created entry replaces whatever non-directory was in its place
//! instead of following it, and files are opened with `O_NOFOLLOW`.

mod contents;
mod metadata;
mod plan;
mod verify;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;

use crate::archiver::Excludes;
use crate::error::{Error, IoContext, Result};
use crate::index::Index;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::tree::NodeKind;
use crate::walk::{self, Selection};

use metadata::apply_metadata;
use plan::{PATH_LIMIT, Plan, replace_non_dir};

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Restore only entries matching one of these (and what is inside them).
    pub includes: Vec<String>,
    /// Skip entries matching one of these (and what is inside them).
    pub excludes: Vec<String>,
    /// After writing, read every file back and check it against its blob ids.
    pub verify: bool,
    /// Counters to update as files are written.
    pub progress: Option<Arc<Progress>>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub special: u64,
    pub bytes_written: u64,
    pub files_verified: u64,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

pub enum Event<'a> {
    Warning(&'a str),
    Error(&'a str),
}

/// Restores `sel` into `opts.target`: a directory's contents go directly into the
/// target; a single file (or other non-directory) is restored as `target/NAME`.
pub fn restore(
    repo: &Arc<Repository>,
    index: &Index,
    sel: &Selection,
    opts: &RestoreOptions,
    interrupt: &AtomicBool,
    report: &(dyn Fn(Event) + Sync),
) -> Result<RestoreSummary> {
    let _lock = crate::lock::acquire(repo, false)?;
    let includes = Excludes::new(&opts.includes)?;
    let excludes = Excludes::new(&opts.excludes)?;
    fs::create_dir_all(&opts.target).at(&opts.target)?;
    let target = fs::canonicalize(&opts.target).at(&opts.target)?;
    let state = State {
        repo,
        index,
        report,
        summary: Mutex::new(RestoreSummary::default()),
        bytes: AtomicU64::new(0),
        progress: opts.progress.clone().unwrap_or_default(),
        interrupt,
        is_root: nix::unistd::geteuid().is_root(),
    };

    let mut plan = Plan::default();
    match sel {
        Selection::Dir { path, tree } => {
            let mut stack: Vec<(PathBuf, bool)> = Vec::new();
            walk::walk(repo, index, tree, path, &mut |p, node| {
                if interrupt.load(Ordering::Relaxed) {
                    return Err(Error::Interrupted);
                }
                // Nodes arrive parents first; pop the ancestors we have left.
                while stack.last().is_some_and(|(a, _)| !p.starts_with(a)) {
                    stack.pop();
                }
                if excludes.is_excluded(p) {
                    return Ok(false);
                }
                let inherited = stack.last().is_some_and(|(_, inc)| *inc);
                let included = opts.includes.is_empty() || inherited || includes.is_excluded(p);
                let rel = p.strip_prefix(path).unwrap_or(p);
                let dest = target.join(rel);
                if dest.as_os_str().len() >= PATH_LIMIT {
                    // Nothing at or below it can be created: one error, not one per
                    // entry, and no paths that grow with a forged tree's depth.
                    let shown: String = dest.to_string_lossy().chars().take(200).collect();
                    state.error(format!(
                        "{shown}…: not restored, nor anything under it: the path is longer \
                         than the {PATH_LIMIT} bytes the system allows"
                    ));
                    return Ok(false);
                }
                if node.kind == NodeKind::Dir {
                    stack.push((p.to_path_buf(), included));
                    if included {
                        plan.make_dir(&state, &target, &dest, node);
                    }
                    return Ok(true);
                }
                if included {
                    plan.make_entry(&state, &target, dest, node);
                }
                Ok(false)
            })?;
        }
        Selection::Node { node, .. } => {
            let dest = target.join(std::ffi::OsStr::from_bytes(&node.name));
            plan.make_entry(&state, &target, dest, node);
        }
    }

    // Contents, pack by pack, in parallel.
    for job in &plan.files {
        state.progress.found(1, job.node.size);
    }
    state.progress.set_totals_final();
    contents::write_contents(&state, &plan.files);
    if interrupt.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    for (dest, first) in &plan.links {
        if fs::symlink_metadata(first).is_err() {
            state.error(format!(
                "{}: not restored: it is a hard link to {}, which could not be restored",
                dest.display(),
                first.display()
            ));
            continue;
        }
        let result = replace_non_dir(dest).and_then(|()| fs::hard_link(first, dest));
        match result {
            Ok(()) => state.with(|s| s.hardlinks += 1),
            Err(e) => state.error(format!(
                "{}: hard link to {}: {e}",
                dest.display(),
                first.display()
            )),
        }
    }
    // Metadata: files and other entries, then directories deepest first.
    plan.meta
        .par_iter()
        .for_each(|(dest, node)| apply_metadata(&state, dest, None, node));
    for (dest, node) in plan.dirs.iter().rev() {
        apply_metadata(&state, dest, None, node);
    }
    if opts.verify {
        plan.files
            .par_iter()
            .for_each(|job| match verify::verify_file(&state, job) {
                Ok(()) => state.with(|s| s.files_verified += 1),
                Err(e) => state.error(format!("verify {}: {e}", job.dest.display())),
            });
    }
    let mut summary = state.summary.into_inner().unwrap_or_default();
    summary.bytes_written = state.bytes.load(Ordering::Relaxed);
    Ok(summary)
}

struct State<'a> {
    repo: &'a Repository,
    index: &'a Index,
    report: &'a (dyn Fn(Event) + Sync),
    summary: Mutex<RestoreSummary>,
    bytes: AtomicU64,
    progress: Arc<Progress>,
    interrupt: &'a AtomicBool,
    is_root: bool,
}

impl State<'_> {
    fn with(&self, f: impl FnOnce(&mut RestoreSummary)) {
        if let Ok(mut s) = self.summary.lock() {
            f(&mut s);
        }
    }

    fn error(&self, msg: String) {
        (self.report)(Event::Error(&msg));
        self.with(|s| s.errors.push(msg));
    }

    fn warning(&self, msg: String) {
        (self.report)(Event::Warning(&msg));
        self.with(|s| s.warnings.push(msg));
    }
}
