use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use cairn::restorer::{self, Action, Event, Overwrite, RestoreOptions};
use cairn::walk;

use super::output::count;
use super::{FilterArgs, GlobalArgs, open, output, signals};

#[derive(Args)]
pub struct RestoreArgs {
    /// Snapshot: id prefix, latest or latest~N, optionally with :PATH
    snapshot: String,
    /// Directory to restore into (created if missing)
    #[arg(short, long, value_name = "DIR")]
    target: PathBuf,
    /// Restore only entries matching this glob, and what is inside them (repeatable)
    #[arg(short, long = "include", value_name = "GLOB")]
    includes: Vec<String>,
    /// Skip entries matching this glob, and what is inside them (repeatable)
    #[arg(short, long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Read restored files back and check them against the repository
    #[arg(long)]
    verify: bool,
    /// What to do with an entry the target already has
    #[arg(long, value_enum, value_name = "WHEN", default_value = "if-changed")]
    overwrite: OverwriteArg,
    /// Delete what the target has and the snapshot lacks, in the directories
    /// restored (entries the filters leave out are kept)
    #[arg(long)]
    delete: bool,
    /// Print what would be restored, skipped and deleted, and change nothing
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum OverwriteArg {
    /// Replace it
    Always,
    /// Keep it if it matches the snapshot: a file of the same size and mtime
    /// (with --verify, also the same contents), or of the same size and contents
    IfChanged,
    /// Replace it if the snapshot's entry has a later mtime
    IfNewer,
    /// Keep it
    Never,
}

impl From<OverwriteArg> for Overwrite {
    fn from(a: OverwriteArg) -> Self {
        match a {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::IfNewer => Overwrite::IfNewer,
            OverwriteArg::Never => Overwrite::Never,
        }
    }
}

pub fn run(g: &GlobalArgs, a: RestoreArgs) -> Result<ExitCode> {
    return_large_buffers();
    let repo = open(g)?;
    let sel = a.filter.resolve(&repo, &a.snapshot)?;
    super::warn_skipped(g, &sel.skipped);
    let index = super::load_index(g, &repo)?;
    let path = sel.path.clone().unwrap_or_else(|| "/".into());
    let selection = walk::resolve(&repo, &index, &sel.snapshot.tree, &path)?;
    let progress = Arc::new(cairn::progress::Progress::new());
    let opts = RestoreOptions {
        target: a.target.clone(),
        includes: a.includes.clone(),
        excludes: a.excludes.clone(),
        verify: a.verify,
        overwrite: a.overwrite.into(),
        delete: a.delete,
        dry_run: a.dry_run,
        incomplete: sel
            .snapshot
            .errors
            .iter()
            .map(|e| std::path::PathBuf::from(&e.path))
            .collect(),
        progress: Some(Arc::clone(&progress)),
    };
    let (quiet, json) = (g.quiet, g.json);
    let report = move |e: Event| match e {
        Event::Error(m) => eprintln!("error: {}", output::printable(m)),
        Event::Warning(m) if !quiet => eprintln!("warning: {}", output::printable(m)),
        Event::Warning(_) => {}
        Event::Planned(action, path) => print_planned(action, path, quiet, json),
    };
    let start = Instant::now();
    let display = super::progress::start(g, "restore", &progress);
    let s = restorer::restore(
        &repo,
        &index,
        &selection,
        &opts,
        &signals::INTERRUPTED,
        &report,
    );
    drop(display);
    let s = s.with_context(|| {
        format!(
            "restoring snapshot {} into {}",
            sel.id.short(),
            a.target.display()
        )
    })?;
    let secs = start.elapsed().as_secs_f64();
    if g.json {
        let mut v = serde_json::to_value(&s)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("message_type".into(), "summary".into());
            o.insert("command".into(), "restore".into());
            o.insert("snapshot_id".into(), sel.id.to_hex().into());
            o.insert("duration_seconds".into(), secs.into());
            o.insert("dry_run".into(), a.dry_run.into());
        }
        output::print_json(&v)?;
    } else if !g.quiet {
        println!(
            "{} snapshot {} ({}) into {}: {}, {}, {}, {}, {} other; {} in {secs:.1} s",
            if a.dry_run {
                "dry run: would restore"
            } else {
                "restored"
            },
            sel.id.short(),
            output::path(selection.path()),
            output::path(&a.target),
            count(s.files, "file", "files"),
            count(s.dirs, "dir", "dirs"),
            count(s.symlinks, "symlink", "symlinks"),
            count(s.hardlinks, "hard link", "hard links"),
            s.special,
            output::bytes(s.bytes_written),
        );
        if s.unchanged + s.kept + s.deleted > 0 || a.delete {
            println!(
                "{} {} unchanged, {} kept as they were (--overwrite {}), {} deleted",
                if a.dry_run { "would leave" } else { "left" },
                s.unchanged,
                s.kept,
                opts.overwrite.name(),
                s.deleted
            );
        }
        if a.verify && !a.dry_run {
            println!(
                "verified {} against the repository",
                count(s.files_verified, "file", "files")
            );
        }
    }
    if !s.errors.is_empty() {
        bail!(
            "{} could not be restored or verified (listed above)",
            count(s.errors.len(), "entry", "entries")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of a dry run's listing (nothing with --quiet).
fn print_planned(action: Action, path: &std::path::Path, quiet: bool, json: bool) {
    if json {
        let line = serde_json::json!({
            "message_type": "dry_run",
            "action": action,
            "path": path.to_string_lossy(),
        });
        println!("{line}");
    } else if !quiet {
        let what = match action {
            Action::Restore => "would restore",
            Action::Unchanged => "unchanged, would skip",
            Action::Keep => "exists, would keep",
            Action::Delete => "would delete",
        };
        println!("{what} {}", output::path(path));
    }
}

/// Has the allocator give buffers of a MiB or more back to the system when they
/// are freed. Restore reads pack spans of up to 16 MiB on several threads; glibc
/// otherwise raises its threshold for that after the first such buffer is freed
/// and then keeps the freed spans of each thread's arena resident, which put a
/// restore's peak at about 1.4 times the memory it had in use (71 against
/// 51 MiB restoring a copy of /usr). A backup is not set this way: it allocates
/// chunk-sized buffers all the time, and the page faults of fresh mappings cost
/// it a fifth of its speed.
fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets one of glibc's allocator parameters, under the
    // allocator's own lock; no memory is touched.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
