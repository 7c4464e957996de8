use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use cairn::archiver::{self, BackupOptions, Event, Excludes, Source};
use cairn::progress::Progress;

use super::output::count;
use super::{EXIT_PARTIAL, GlobalArgs, open, output, signals, usage};

#[derive(Args)]
pub struct BackupArgs {
    /// Files and directories to back up
    paths: Vec<PathBuf>,
    /// Host name to record [default: this machine's]
    #[arg(long)]
    host: Option<String>,
    /// Tag for the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Skip entries matching this glob (repeatable): without `/` it matches a
    /// name at any depth, with `/` the path
    #[arg(short = 'e', long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Read exclude globs from a file, one per line (repeatable)
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_files: Vec<PathBuf>,
    /// Don't descend into other filesystems (mount points are kept, empty)
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Back up standard input as one file
    #[arg(long)]
    stdin: bool,
    /// File name for --stdin
    #[arg(long, default_value = "stdin", value_name = "NAME")]
    stdin_filename: String,
    /// Compare with this snapshot instead of the latest one of the same host and paths
    #[arg(long, value_name = "ID")]
    parent: Option<String>,
    /// Read every file, even those whose metadata says they are unchanged
    #[arg(long)]
    force: bool,
}

pub fn run(g: &GlobalArgs, a: BackupArgs) -> Result<ExitCode> {
    if a.stdin && !a.paths.is_empty() {
        return Err(usage(
            "--stdin backs up standard input only; don't give paths with it",
        ));
    }
    if !a.stdin && a.paths.is_empty() {
        return Err(usage(
            "nothing to back up: give one or more paths, or --stdin",
        ));
    }
    let mut excludes = a.excludes.clone();
    for f in &a.exclude_files {
        excludes.extend(
            Excludes::read_file(f).with_context(|| format!("exclude file {}", f.display()))?,
        );
    }
    let repo = open(g)?;
    let parent = match &a.parent {
        Some(p) => {
            let sel = cairn::select::resolve(&repo, p, &Default::default())?;
            Some(sel.id)
        }
        None => None,
    };
    let progress = Arc::new(Progress::new());
    let source = if a.stdin {
        Source::Stream {
            name: a.stdin_filename.clone(),
            reader: Box::new(std::io::stdin()),
        }
    } else {
        Source::Paths(a.paths.clone())
    };
    let opts = BackupOptions {
        source,
        host: a.host.clone(),
        tags: a.tags.clone(),
        excludes,
        one_file_system: a.one_file_system,
        parent,
        force: a.force,
        progress: super::progress::shown(g).then(|| Arc::clone(&progress)),
        compression: None,
    };
    let quiet = g.quiet;
    let json = g.json;
    let report = move |e: Event| {
        let (level, p) = match e {
            Event::Error(p) => ("error", p),
            Event::Warning(p) => ("warning", p),
        };
        if json {
            let _ = output::print_json(&serde_json::json!({
                "message_type": level, "path": p.path, "error": p.error,
            }));
        } else if level == "error" || !quiet {
            eprintln!(
                "{level}: {}: {}",
                output::printable(&p.path),
                output::printable(&p.error)
            );
        }
    };
    let start = Instant::now();
    let display = super::progress::start(g, "backup", &progress);
    let result = archiver::backup(&repo, opts, &signals::INTERRUPTED, &report);
    drop(display);
    let result = result.context("backup failed")?;
    if let Some(base) = cairn::cache::base_dir() {
        let _ = cairn::seen::note_written(&repo, &base, &[result.id]);
    }
    let elapsed = start.elapsed();
    print_summary(g, &result, elapsed.as_secs_f64())?;
    if !result.snapshot.errors.is_empty() {
        return Ok(ExitCode::from(EXIT_PARTIAL));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(g: &GlobalArgs, r: &archiver::BackupResult, secs: f64) -> Result<()> {
    let (id, s) = (&r.id, &r.snapshot);
    let m = &s.summary;
    if g.json {
        return output::print_json(&serde_json::json!({
            "message_type": "summary",
            "command": "backup",
            "snapshot_id": id.to_hex(),
            "files_new": m.files_new,
            "files_changed": m.files_changed,
            "files_unchanged": m.files_unchanged,
            "dirs_new": m.dirs_new,
            "dirs_changed": m.dirs_changed,
            "dirs_unchanged": m.dirs_unchanged,
            "entries": m.entries,
            "total_bytes": m.total_bytes,
            "bytes_read": m.bytes_read,
            "bytes_new": m.bytes_new,
            "bytes_added": m.bytes_added,
            "data_blobs_new": m.data_blobs_new,
            "tree_blobs_new": m.tree_blobs_new,
            "errors": s.errors.len(),
            "warnings": s.warnings.len(),
            "duration_seconds": secs,
            "index_blobs": r.index_blobs,
            "index_memory_bytes": r.index_memory_bytes,
            "packs_adopted": r.adopted.packs,
        }));
    }
    if g.quiet {
        return Ok(());
    }
    if r.adopted.packs > 0 {
        println!(
            "Reused {} that no index listed (left by an interrupted backup), holding {}",
            super::output::count(r.adopted.packs, "pack", "packs"),
            super::output::count(r.adopted.blobs, "blob", "blobs")
        );
    }
    println!(
        "Files:  {:>8} new, {:>8} changed, {:>8} unchanged",
        m.files_new, m.files_changed, m.files_unchanged
    );
    println!(
        "Dirs:   {:>8} new, {:>8} changed, {:>8} unchanged",
        m.dirs_new, m.dirs_changed, m.dirs_unchanged
    );
    println!(
        "Data:   read {} of {}; {} new before compression; added {} to the repository",
        output::bytes(m.bytes_read),
        output::bytes(m.total_bytes),
        output::bytes(m.bytes_new),
        output::bytes(m.bytes_added),
    );
    if !s.errors.is_empty() {
        println!(
            "{} could not be read (listed above and recorded in the snapshot)",
            count(s.errors.len(), "source", "sources")
        );
    }
    if !s.warnings.is_empty() {
        println!(
            "{}, listed above and recorded in the snapshot",
            count(s.warnings.len(), "warning", "warnings")
        );
    }
    println!(
        "snapshot {} saved ({}) in {secs:.1} s",
        id.short(),
        count(m.entries, "entry", "entries")
    );
    Ok(())
}
