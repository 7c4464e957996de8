use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use cairn::restorer::{self, Event, RestoreOptions};
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
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &GlobalArgs, a: RestoreArgs) -> Result<ExitCode> {
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
        progress: Some(Arc::clone(&progress)),
    };
    let quiet = g.quiet;
    let report = move |e: Event| match e {
        Event::Error(m) => eprintln!("error: {}", output::printable(m)),
        Event::Warning(m) if !quiet => eprintln!("warning: {}", output::printable(m)),
        Event::Warning(_) => {}
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
            o.insert("snapshot_id".into(), sel.id.to_hex().into());
            o.insert("duration_seconds".into(), secs.into());
        }
        output::print_json(&v)?;
    } else if !g.quiet {
        println!(
            "restored snapshot {} ({}) into {}: {}, {}, {}, {}, {} other; {} in {secs:.1} s",
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
        if a.verify {
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
