//! Restore: a whole snapshot, a sub-tree or one file, into a target directory.
//!
//! The trees are walked depth-first (`plan`); directories, symlinks and special
//! files are created as they are met, and files are gathered into batches of a
//! bounded number of entries and blobs (`batch`), so that memory does not grow
//! with the number of files. Each batch is written in turn: which files the
//! target already holds is decided first (`target`, by `--overwrite`), then the
//! contents of the rest are written pack span by pack span, in parallel (holes
//! left as holes), and each file gets its metadata through its descriptor as
//! soon as its last chunk is written (`contents`, `metadata`); then hard links;
//! then metadata of everything else, directories once the walk has left them,
//! deepest first, so that writing into a directory does not disturb its restored
//! mtime; then, with `verify`, the files written are read back (`verify`). A file
//! that could not be written whole gets no metadata, and no hard link to it is
//! made.
//!
//! Nothing is written outside the target: tree names are checked on decode (no `/`,
//! `.`, `..`), every created entry replaces whatever non-directory was in its place
//! instead of following it, files are opened with `O_NOFOLLOW`, and `delete` only
//! looks into directories this restore made or found to be real directories.

mod batch;
mod contents;
mod metadata;
mod plan;
mod target;
mod verify;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, IoContext, Result};
use crate::index::Index;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::walk::Selection;

/// What to do with an entry the target already has where the snapshot has one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Replace it.
    Always,
    /// Keep it when it already matches the snapshot, else replace it. A file
    /// matches when its size and mtime are the snapshot's (with `verify`, its
    /// contents must also hash to the snapshot's blobs); when only its mtime
    /// differs, its contents are compared, and a file with the same contents is
    /// kept and gets the snapshot's metadata. A symlink matches when it points to
    /// the same target; a fifo or device when it is of the same kind and number.
    #[default]
    IfChanged,
    /// Replace it only if the snapshot's entry has a later mtime.
    IfNewer,
    /// Keep it.
    Never,
}

impl Overwrite {
    /// The name the command line uses.
    pub fn name(self) -> &'static str {
        match self {
            Overwrite::Always => "always",
            Overwrite::IfChanged => "if-changed",
            Overwrite::IfNewer => "if-newer",
            Overwrite::Never => "never",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Restore only entries matching one of these (and what is inside them).
    pub includes: Vec<String>,
    /// Skip entries matching one of these (and what is inside them).
    pub excludes: Vec<String>,
    /// After writing, read every file back and check it against its blob ids.
    pub verify: bool,
    pub overwrite: Overwrite,
    /// Remove what the target holds and the snapshot lacks, in the directories
    /// restored (entries that the filters leave out are kept).
    pub delete: bool,
    /// Change nothing: report through [`Event::Planned`] what would be done.
    pub dry_run: bool,
    /// Snapshot paths the backup could not read in full (its recorded errors):
    /// `delete` removes nothing in or under them, since what they hold in the
    /// snapshot (a directory that could not be listed is stored empty) says
    /// nothing about what belongs there.
    pub incomplete: Vec<PathBuf>,
    /// Counters to update as files are written.
    pub progress: Option<Arc<Progress>>,
}

/// What a restore did (with `dry_run`: would do). `files`, `dirs`, `symlinks`,
/// `hardlinks` and `special` count entries written; an existing directory that
/// is kept and given its metadata counts as written.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub special: u64,
    pub bytes_written: u64,
    pub files_verified: u64,
    /// Existing entries that already matched the snapshot: not rewritten, only
    /// given the snapshot's metadata.
    pub unchanged: u64,
    /// Existing entries left as they were because of the overwrite mode.
    pub kept: u64,
    /// Entries removed by `delete` (a directory counts with everything in it).
    pub deleted: u64,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

/// What a dry run reports for one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The entry would be created, or replace what is there.
    Restore,
    /// What is there already matches the snapshot.
    Unchanged,
    /// What is there would be kept, by the overwrite mode.
    Keep,
    /// What is there would be deleted, with everything inside it.
    Delete,
}

pub enum Event<'a> {
    Warning(&'a str),
    Error(&'a str),
    /// Only in a dry run.
    Planned(Action, &'a Path),
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
    let filters = plan::Filters::new(&opts.includes, &opts.excludes)?;
    let (target, fresh) = prepare_target(&opts.target, opts.dry_run)?;
    let state = State {
        repo,
        index,
        opts,
        record: Record::new(report),
        bytes: AtomicU64::new(0),
        progress: opts.progress.clone().unwrap_or_default(),
        interrupt,
        is_root: nix::unistd::geteuid().is_root(),
    };
    let mut walker = plan::Walker::new(&state, filters, target, fresh);
    match sel {
        Selection::Dir { path, tree } => walker.walk(path, tree)?,
        Selection::Node { path, node } => walker.single(path, node)?,
    }
    let filters = walker.finish()?;
    filters.warn_unmatched(&state, sel.path());
    Ok(state.finish())
}

/// The target as an absolute path without symlinks, created unless this is a
/// dry run, and whether it is new (nothing in it to compare or delete).
fn prepare_target(target: &Path, dry_run: bool) -> Result<(PathBuf, bool)> {
    let fresh = match fs::metadata(target) {
        Ok(_) => false,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::io(target, e)),
    };
    if dry_run && fresh {
        return Ok((std::path::absolute(target).at(target)?, true));
    }
    if !dry_run {
        fs::create_dir_all(target).at(target)?;
    }
    Ok((fs::canonicalize(target).at(target)?, fresh))
}

/// What every stage of a restore shares.
struct State<'a> {
    repo: &'a Repository,
    index: &'a Index,
    opts: &'a RestoreOptions,
    record: Record<'a>,
    bytes: AtomicU64,
    progress: Arc<Progress>,
    interrupt: &'a AtomicBool,
    is_root: bool,
}

impl State<'_> {
    fn with(&self, f: impl FnOnce(&mut RestoreSummary)) {
        self.record.with(f);
    }

    fn error(&self, msg: String) {
        self.record.error(msg);
    }

    fn warning(&self, msg: String) {
        self.record.warning(msg);
    }

    /// In a dry run, reports what would be done to `path`.
    fn planned(&self, action: Action, path: &Path) {
        if self.opts.dry_run {
            (self.record.report)(Event::Planned(action, path));
        }
    }

    fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::Relaxed)
    }

    fn finish(self) -> RestoreSummary {
        let mut summary = self.record.finish();
        summary.bytes_written = self.bytes.load(Ordering::Relaxed);
        summary
    }
}

/// The summary as the writer threads fill it in, and the caller's report.
struct Record<'a> {
    summary: Mutex<RestoreSummary>,
    report: &'a (dyn Fn(Event) + Sync),
}

impl<'a> Record<'a> {
    fn new(report: &'a (dyn Fn(Event) + Sync)) -> Self {
        Self {
            summary: Mutex::new(RestoreSummary::default()),
            report,
        }
    }

    /// A thread that panicked while holding the lock leaves the summary as it
    /// was (every update is a single push or increment); it is used as it is,
    /// and [`Record::finish`] reports the panic, so nothing is dropped silently.
    fn with(&self, f: impl FnOnce(&mut RestoreSummary)) {
        let mut s = self.summary.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut s);
    }

    fn error(&self, msg: String) {
        (self.report)(Event::Error(&msg));
        self.with(|s| s.errors.push(msg));
    }

    fn warning(&self, msg: String) {
        (self.report)(Event::Warning(&msg));
        self.with(|s| s.warnings.push(msg));
    }

    fn finish(self) -> RestoreSummary {
        let poisoned = self.summary.is_poisoned();
        let mut summary = self
            .summary
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if poisoned {
            let msg = "a restore thread panicked: the restore is incomplete and this report \
                       may miss errors; run the restore again"
                .to_string();
            (self.report)(Event::Error(&msg));
            summary.errors.push(msg);
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer thread that panics while recording its results poisons the
    /// summary's lock: what others record after that is kept, and the panic is
    /// itself an error, so the restore can't end in success.
    #[test]
    fn a_panicking_writer_makes_the_restore_fail() {
        let seen = Mutex::new(Vec::new());
        let report = |e: Event| {
            if let Event::Error(m) = e {
                seen.lock().unwrap().push(m.to_string());
            }
        };
        let record = Record::new(&report);
        record.error("first".into());
        std::thread::scope(|s| {
            let panicked = s
                .spawn(|| record.with(|_| panic!("a writer thread fails")))
                .join();
            assert!(panicked.is_err());
        });
        record.error("after the panic".into());
        record.with(|s| s.files += 1);
        let summary = record.finish();
        assert_eq!(summary.files, 1);
        assert_eq!(summary.errors.len(), 3, "{:?}", summary.errors);
        assert_eq!(summary.errors[..2], ["first", "after the panic"]);
        assert!(summary.errors[2].contains("panicked"));
        assert_eq!(seen.lock().unwrap().len(), 3);
    }
}
