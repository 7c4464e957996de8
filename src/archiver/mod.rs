//! Backup: walk → compare with the parent snapshot → read → chunk → id → dedup →
//! compress → encrypt → pack → write packs → write index → write snapshot.
//!
//! The snapshot is the only commit point; see `saver` for why an interruption
//! anywhere before it is harmless.
//!
//! By stage: `source` prepares the given paths, `walk` lists directories and
//! builds trees, `small` reads small files in parallel batches, `read` streams
//! larger files (and `stream` standard input), `saver` packs and writes, and
//! `commit` checks what the snapshot will name and writes it.

pub(crate) mod adopt;
pub(crate) mod commit;
pub mod exclude;
mod meta;
pub mod node;
pub(crate) mod read;
pub mod saver;
mod small;
mod source;
mod stream;
mod walk;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::{self, Recorded, Snapshot, SourceProblem, Summary};

pub use adopt::Adopted;
pub use exclude::Excludes;
use node::NameCache;
use saver::Saver;

/// How long a backup runs before the sources are counted for progress totals.
const SCAN_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

pub enum Source {
    Paths(Vec<PathBuf>),
    /// Standard input (or any stream), stored as one file of this name.
    Stream {
        name: String,
        reader: Box<dyn Read + Send>,
    },
}

pub struct BackupOptions {
    pub source: Source,
    pub host: Option<String>,
    pub tags: Vec<String>,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    /// `None`: the latest snapshot of this host with the same paths.
    pub parent: Option<SnapshotId>,
    /// Re-read every file even when its metadata says it is unchanged.
    pub force: bool,
    /// Counters to update as the backup goes; the sources are also counted, in a
    /// thread of their own, for totals.
    pub progress: Option<Arc<Progress>>,
    /// zstd level for this backup's new blobs; `None`: the repository's.
    pub compression: Option<i32>,
}

/// What the backup reports as it goes.
pub enum Event<'a> {
    /// A source could not be read and is missing from the snapshot.
    Error(&'a SourceProblem),
    /// A source changed while being read, or some of its metadata was unreadable.
    Warning(&'a SourceProblem),
}

pub struct BackupResult {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    /// Blobs in the index loaded at the start, and the memory their entries took.
    pub index_blobs: usize,
    pub index_memory_bytes: usize,
    /// Packs left unindexed (by a killed backup, say) that this one indexed and
    /// reused.
    pub adopted: Adopted,
}

pub fn backup(
    repo: &Arc<Repository>,
    opts: BackupOptions,
    interrupt: &AtomicBool,
    report: &(dyn Fn(Event) + Sync),
) -> Result<BackupResult> {
    let lock = crate::lock::acquire(repo, false)?;
    let started = crate::clock::now_rfc3339();
    let level = match opts.compression {
        Some(l) => {
            crate::config::check_compression(l)?;
            l
        }
        None => repo.config().compression,
    };
    // An unreadable index file only costs storing its blobs again: say so and
    // go on, rather than refusing every backup until it is repaired.
    let index = repo.load_index(&mut |id, e| {
        report(Event::Warning(&SourceProblem {
            path: format!("index {id}"),
            error: format!(
                "unreadable, left out ({e}); blobs only it lists are stored again. \
                 `cairn check` reports it, `cairn repair index` rebuilds it"
            ),
        }))
    })?;
    // Packs a killed backup wrote but didn't index yet: reused, not stored again.
    let (index, adopted) = adopt::adopt_unindexed(repo, index, &|p| report(Event::Warning(p)))?;
    let index = Arc::new(index);
    let host = opts.host.clone().unwrap_or_else(snapshot::hostname);
    let excludes = Excludes::new(&opts.excludes)?;

    let sources = match &opts.source {
        Source::Paths(p) => source::prepare(p)?,
        Source::Stream { name, .. } => source::Sources {
            given: vec![PathBuf::from(format!("/{name}"))],
            missing: Vec::new(),
        },
    };
    // The snapshot names every path it was given, missing ones too: the next run
    // of the same command finds it as its parent, and `forget` groups it with the
    // others of that command; its errors say what was missing.
    let path_strings: Vec<String> = sources
        .given
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let paths = sources.present();

    let parent = match opts.parent {
        Some(id) => Some((id, repo.load_snapshot(&id)?)),
        None if opts.force => None,
        None => {
            let (found, skipped) = crate::select::find_parent(repo, &host, &path_strings)?;
            // The newest of them may have been the parent: then files it has
            // unchanged are read again. Say why.
            for (id, e) in skipped {
                report(Event::Warning(&SourceProblem {
                    path: format!("snapshot {}", id.short()),
                    error: format!(
                        "unreadable, not considered as the parent ({e}); files it may have \
                         had unchanged are read again. `cairn check` reports it"
                    ),
                }));
            }
            found
        }
    };
    // A parent whose tree can't be read only costs re-reading every file; that is
    // also how a backup heals a repository that lost blobs.
    let parent_tree = match &parent {
        Some((id, s)) => match repo.load_tree_view(&index, &s.tree) {
            Ok(t) => Some(t),
            Err(e) => {
                report(Event::Warning(&SourceProblem {
                    path: format!("parent snapshot {}", id.short()),
                    error: format!("unreadable, reading every file instead: {e}"),
                }));
                None
            }
        },
        None => None,
    };

    let progress = opts.progress.clone().unwrap_or_default();
    let mut a = Archiver {
        progress: Arc::clone(&progress),
        repo: Arc::clone(repo),
        saver: Saver::new(Arc::clone(repo), Arc::clone(&index)).with_level(level),
        level,
        excludes,
        one_file_system: opts.one_file_system,
        force: opts.force,
        interrupt,
        report,
        // A parent tree written by another version may hold fields this one
        // doesn't know, and so can't compare: only trees of this version are kept
        // as they are.
        reuse_trees: parent
            .as_ref()
            .is_some_and(|(_, s)| s.program_version == program_version()),
        // A parent snapshot that recorded no problem read every entry's
        // extended attributes and link target: entries unchanged since keep them.
        reuse_metadata: !opts.force
            && parent
                .as_ref()
                .is_some_and(|(_, s)| s.errors.is_empty() && s.warnings.is_empty()),
        names: NameCache::default(),
        hardlinks: HashMap::new(),
        summary: Summary::default(),
        errors: Recorded::default(),
        warnings: Recorded::default(),
        repo_root: source::repo_local_root(repo),
        depth: 1,
        ahead: HashMap::new(),
        deferral: small::Deferral::default(),
    };

    for (path, why) in &sources.missing {
        a.error(path, why.clone());
    }

    let scan_done = AtomicBool::new(false);
    let (walk_done, walk_done_rx) = std::sync::mpsc::channel::<()>();
    let walked = std::thread::scope(|scope| {
        if opts.progress.is_some() && matches!(opts.source, Source::Paths(_)) {
            let (paths, progress, stop) = (&paths, &progress, &scan_done);
            let patterns = opts.excludes.clone();
            let one_fs = opts.one_file_system;
            scope.spawn(move || {
                // A backup done within the delay (an unchanged one, say) needs no
                // totals, and counting would compete with it for the same disks.
                let waited = walk_done_rx.recv_timeout(SCAN_DELAY);
                if waited != Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                    return;
                }
                if let Ok(excludes) = Excludes::new(&patterns) {
                    source::count_sources(paths, &excludes, one_fs, progress, stop);
                }
            });
        }
        let walked = match opts.source {
            Source::Paths(_) => a.backup_roots(&paths, parent_tree.as_ref()),
            Source::Stream { name, reader } => a.backup_stream(&name, reader),
        };
        scan_done.store(true, Ordering::Relaxed);
        drop(walk_done);
        walked
    });
    let tree = match walked {
        Ok(t) => t,
        Err(e) => {
            // Make what was written reusable by the next run, then report.
            let _ = a.saver.finish();
            return Err(e);
        }
    };
    a.saver.finish()?;

    let head = commit::Head {
        started,
        host,
        paths: path_strings,
        tags: opts.tags,
        parent: parent.map(|(id, _)| id),
        adopted,
    };
    commit::commit(repo, &index, &lock, a, tree, head)
}

struct Archiver<'a> {
    repo: Arc<Repository>,
    progress: Arc<Progress>,
    saver: Saver,
    /// zstd level of new blobs.
    level: i32,
    excludes: Excludes,
    one_file_system: bool,
    force: bool,
    interrupt: &'a AtomicBool,
    report: &'a (dyn Fn(Event) + Sync),
    /// Whether entries unchanged since the parent snapshot keep its extended
    /// attributes and link targets (see [`node::Known`]).
    reuse_metadata: bool,
    /// Whether an unchanged directory may keep its parent's tree blob.
    reuse_trees: bool,
    names: NameCache,
    /// (device, inode) → content, for files with several links seen in this run.
    hardlinks: HashMap<(u64, u64), Vec<BlobId>>,
    summary: Summary,
    errors: Recorded,
    warnings: Recorded,
    repo_root: Option<PathBuf>,
    /// Depth of the tree being built: the root tree is at 1 (format-spec §17).
    depth: usize,
    /// Subdirectories being gathered ahead on the pool (see `walk::gather_ahead`),
    /// by path, until their turn comes.
    ahead: HashMap<PathBuf, std::sync::mpsc::Receiver<walk::Ahead>>,
    deferral: small::Deferral,
}

impl Archiver<'_> {
    fn check_interrupt(&self) -> Result<()> {
        if self.interrupt.load(Ordering::Relaxed) {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }

    fn error(&mut self, path: &Path, msg: String) {
        let p = SourceProblem {
            path: path.display().to_string(),
            error: msg,
        };
        (self.report)(Event::Error(&p));
        self.errors.push(p);
    }

    fn warning(&mut self, path: &Path, msg: String) {
        let p = SourceProblem {
            path: path.display().to_string(),
            error: msg,
        };
        (self.report)(Event::Warning(&p));
        self.warnings.push(p);
    }

    fn count(&mut self, s: Status) {
        match s {
            Status::New => self.summary.files_new += 1,
            Status::Changed => self.summary.files_changed += 1,
        }
    }
}

#[derive(Clone, Copy)]
enum Status {
    New,
    Changed,
}

/// What snapshots record as the program that wrote them.
pub fn program_version() -> String {
    format!("cairn {}", env!("CARGO_PKG_VERSION"))
}
