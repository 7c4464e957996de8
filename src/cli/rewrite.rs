//! `cairn rewrite SNAPSHOT... --exclude GLOB`: the library's `rewrite::rewrite`
//! behind flags.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use cairn::archiver::Excludes;
use cairn::rewrite::{Removed, RewriteOptions, RewriteSummary, Rewritten};
use cairn::tree::NodeKind;

use super::output::{bytes, count};
use super::{FilterArgs, GlobalArgs, open_uncached, output, signals, usage};

#[derive(Args)]
pub struct RewriteArgs {
    /// Snapshots to rewrite (ids, unique prefixes, latest or latest~N)
    #[arg(required = true, value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    /// Remove what this glob matches, as `backup --exclude` matches (repeatable)
    #[arg(short = 'e', long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Read exclude globs from a file, one per line (repeatable)
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_files: Vec<PathBuf>,
    /// Remove each old snapshot once its rewritten version is written
    /// (`prune` then frees the data only the old one used)
    #[arg(long)]
    forget: bool,
    /// Print what would be removed, and change nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// List every path removed
    #[arg(short, long)]
    verbose: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &GlobalArgs, a: RewriteArgs) -> Result<ExitCode> {
    let mut patterns = a.excludes.clone();
    for f in &a.exclude_files {
        patterns.extend(
            Excludes::read_file(f).with_context(|| format!("exclude file {}", f.display()))?,
        );
    }
    let excludes = Excludes::new(&patterns).map_err(|e| usage(e.to_string()))?;
    if excludes.patterns().is_empty() {
        return Err(usage(
            "nothing to remove: give --exclude GLOB or --exclude-file FILE",
        ));
    }
    let repo = open_uncached(g)?;
    // Taken before choosing, as `forget` does; a dry run only reads.
    let lock = cairn::lock::acquire(&repo, !a.dry_run)?;
    let ids = super::tag::resolve_all(g, &repo, &a.filter, &a.snapshots)?;
    let opts = RewriteOptions {
        excludes,
        forget: a.forget,
        dry_run: a.dry_run,
    };
    let quiet = g.quiet || g.json;
    let warn = |m: &str| {
        if !quiet {
            eprintln!("warning: {}", output::printable(m));
        }
    };
    let (results, sum) =
        cairn::rewrite::rewrite(&repo, &lock, &ids, &opts, &signals::INTERRUPTED, &warn)?;
    drop(lock);
    for r in &results {
        if g.json {
            output::print_json(&json_line(r, a.dry_run))?;
        } else if !g.quiet {
            print_text(r, a.dry_run, a.verbose);
        }
    }
    if g.json {
        output::print_json(&json_summary(&sum, a.dry_run))?;
    } else if !g.quiet {
        print_summary(&sum, &a);
    }
    Ok(ExitCode::SUCCESS)
}

fn totals(r: &Rewritten) -> (u64, u64, u64) {
    r.removed.iter().fold((0, 0, 0), |(e, f, b), x| {
        (
            e.saturating_add(x.entries),
            f.saturating_add(x.files),
            b.saturating_add(x.bytes),
        )
    })
}

fn removed_json(x: &Removed) -> serde_json::Value {
    let mut v = serde_json::json!({
        "path": x.path.display().to_string(), "kind": x.kind.name(),
        "entries": x.entries, "files": x.files, "bytes": x.bytes, "uncounted": x.uncounted,
    });
    let raw = x.path.as_os_str().as_bytes();
    if let (Some(o), Err(_)) = (v.as_object_mut(), std::str::from_utf8(raw)) {
        o.insert("path_bytes".into(), raw.to_vec().into());
    }
    v
}

fn json_line(r: &Rewritten, dry_run: bool) -> serde_json::Value {
    let (entries, files, b) = totals(r);
    serde_json::json!({
        "message_type": "rewritten", "snapshot_id": r.old.to_hex(),
        "new_snapshot_id": r.new.map(|n| n.to_hex()), "changed": !r.removed.is_empty(),
        "dry_run": dry_run, "forgotten": r.forgotten,
        "entries_removed": entries, "files_removed": files, "bytes_removed": b,
        "entries": r.entries, "total_bytes": r.total_bytes,
        "removed": r.removed.iter().map(removed_json).collect::<Vec<_>>(),
    })
}

fn print_text(r: &Rewritten, dry_run: bool, verbose: bool) {
    if r.removed.is_empty() {
        println!("snapshot {}: nothing matches, left as it is", r.old.short());
        return;
    }
    let (entries, files, b) = totals(r);
    let what = format!(
        "{} ({}, {})",
        count(entries, "entry", "entries"),
        count(files, "file", "files"),
        bytes(b)
    );
    match r.new {
        Some(n) => println!(
            "snapshot {}: removed {what}; rewritten as {}{}",
            r.old.short(),
            n.short(),
            if r.forgotten {
                ", the old one removed"
            } else {
                ""
            }
        ),
        None if dry_run => println!("snapshot {}: would remove {what}", r.old.short()),
        None => println!("snapshot {}: removed {what}", r.old.short()),
    }
    if verbose {
        for x in &r.removed {
            let more = if x.kind == NodeKind::Dir {
                format!(
                    "directory, {} under it{}",
                    count(x.entries - 1, "entry", "entries"),
                    if x.uncounted {
                        ", part of it unreadable"
                    } else {
                        ""
                    }
                )
            } else {
                format!("{}, {}", x.kind.name(), bytes(x.bytes))
            };
            println!("  {} ({more})", output::path(&x.path));
        }
    }
}

fn json_summary(s: &RewriteSummary, dry_run: bool) -> serde_json::Value {
    serde_json::json!({
        "message_type": "summary", "command": "rewrite", "dry_run": dry_run,
        "snapshots": s.snapshots, "rewritten": s.rewritten,
        "snapshots_removed": s.removed_snapshots, "entries_removed": s.entries_removed,
        "bytes_removed": s.bytes_removed, "tree_blobs_new": s.tree_blobs_new,
        "bytes_added": s.bytes_added,
    })
}

fn print_summary(s: &RewriteSummary, a: &RewriteArgs) {
    let verb = if a.dry_run {
        "would rewrite"
    } else {
        "rewrote"
    };
    println!(
        "{verb} {} of {}: {} removed ({} of file data)",
        s.rewritten,
        count(s.snapshots, "snapshot", "snapshots"),
        count(s.entries_removed, "entry", "entries"),
        bytes(s.bytes_removed)
    );
    if a.dry_run || s.rewritten == 0 {
        return;
    }
    if a.forget {
        println!(
            "removed {}; `cairn prune` frees the data only they used",
            count(s.removed_snapshots, "old snapshot", "old snapshots")
        );
    } else {
        println!(
            "the old snapshots are kept: `--forget` (or `cairn forget ID`), then `cairn prune`, \
             removes them and their data"
        );
    }
}
