use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use cairn::copy::{self, CopyOptions, CopyReport, Event};
use cairn::id::SnapshotId;
use cairn::progress::Progress;
use cairn::repository::Repository;

use super::output::count;
use super::{EXIT_ERROR, FilterArgs, FromRepoArgs, GlobalArgs, open, open_source, output, signals};

#[derive(Args)]
pub struct CopyArgs {
    /// Snapshots of the source to copy (id prefix, latest, latest~N) [default:
    /// every snapshot the filters let through]
    snapshots: Vec<String>,
    #[command(flatten)]
    from: FromRepoArgs,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &GlobalArgs, a: CopyArgs) -> Result<ExitCode> {
    if a.from.from_repo.is_none() {
        return Err(super::usage(
            "copy needs the repository to copy from: --from-repo DIR",
        ));
    }
    let dst = open(g)?;
    let src = open_source(g, &a.from)?;
    let ids = select(&src, &a)?;
    let progress = Arc::new(Progress::new());
    let opts = CopyOptions {
        progress: super::progress::shown(g).then(|| Arc::clone(&progress)),
    };
    let (quiet, json) = (g.quiet, g.json);
    let report = move |e: Event| match e {
        Event::Copied {
            source,
            copy,
            snapshot,
            blobs_sent,
            bytes_sent,
        } => {
            if json {
                let _ = output::print_json(&serde_json::json!({
                    "message_type": "copied",
                    "source_id": source.to_hex(),
                    "snapshot_id": copy.to_hex(),
                    "blobs_sent": blobs_sent,
                    "bytes_sent": bytes_sent,
                }));
            } else if !quiet {
                println!(
                    "copied {} as {} ({}, {}, {}): {} sent, {}",
                    source.short(),
                    copy.short(),
                    output::local_time(&snapshot.time),
                    output::printable(&snapshot.hostname),
                    output::printable(&snapshot.paths.join(" ")),
                    count(blobs_sent, "blob", "blobs"),
                    output::bytes(bytes_sent)
                );
            }
        }
        Event::AlreadyThere { source, present } => {
            if !json && !quiet {
                println!(
                    "{} is already there, as {}",
                    source.short(),
                    present.short()
                );
            }
        }
        Event::Failed { source, error } => {
            if json {
                let _ = output::print_json(&serde_json::json!({
                    "message_type": "error",
                    "source_id": source.to_hex(),
                    "error": error.to_string(),
                }));
            } else {
                eprintln!(
                    "error: snapshot {} not copied: {}",
                    source.short(),
                    output::printable(&error.to_string())
                );
            }
        }
        Event::Warning(p) => {
            if json {
                let _ = output::print_json(&serde_json::json!({
                    "message_type": "warning", "path": p.path, "error": p.error,
                }));
            } else if !quiet {
                eprintln!(
                    "warning: {}: {}",
                    output::printable(&p.path),
                    output::printable(&p.error)
                );
            }
        }
    };
    let start = Instant::now();
    let display = super::progress::start(g, "copy", &progress);
    let result = copy::copy(&src, &dst, &ids, &opts, &signals::INTERRUPTED, &report);
    drop(display);
    let r = result.context("copy failed")?;
    if let Some(base) = cairn::cache::base_dir() {
        let made: Vec<_> = r.copied.iter().map(|(_, new)| *new).collect();
        let _ = cairn::seen::note_written(&dst, &base, &made);
    }
    print_summary(g, &r, start.elapsed().as_secs_f64())?;
    if !r.failed.is_empty() {
        eprintln!(
            "error: {} could not be copied (named above); the others were",
            count(r.failed.len(), "snapshot", "snapshots")
        );
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    Ok(ExitCode::SUCCESS)
}

/// The source snapshots to copy, oldest first: those named, else every one
/// the filters let through. Snapshot files that can't be read are included
/// (any of them might match): the copy reports each and fails in the end.
fn select(src: &Repository, a: &CopyArgs) -> Result<Vec<SnapshotId>> {
    let filter = a.filter.filter()?;
    if a.snapshots.is_empty() {
        let (readable, unreadable) = src.list_snapshots_lenient()?;
        let mut ids: Vec<SnapshotId> = readable
            .into_iter()
            .filter(|(_, s)| filter.matches(s))
            .map(|(id, _)| id)
            .collect();
        ids.extend(unreadable.into_iter().map(|(id, _)| id));
        return Ok(ids);
    }
    let mut ids = Vec::new();
    for spec in &a.snapshots {
        // One that can't be read is reported by the copy, which fails on it.
        let (id, _unreadable) = cairn::select::resolve_for_removal(src, spec, &filter)
            .with_context(|| format!("choosing {spec:?} in the source repository"))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

fn print_summary(g: &GlobalArgs, r: &CopyReport, secs: f64) -> Result<()> {
    if g.json {
        let pairs: Vec<serde_json::Value> = r
            .copied
            .iter()
            .map(|(s, d)| serde_json::json!({"source_id": s.to_hex(), "snapshot_id": d.to_hex()}))
            .collect();
        let failed: Vec<serde_json::Value> = r
            .failed
            .iter()
            .map(|(s, e)| serde_json::json!({"source_id": s.to_hex(), "error": e.to_string()}))
            .collect();
        return output::print_json(&serde_json::json!({
            "message_type": "summary",
            "command": "copy",
            "copied": pairs,
            "already_there": r.already_there.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
            "failed": failed,
            "blobs_sent": r.blobs_sent,
            "bytes_sent": r.bytes_sent,
            "bytes_new": r.bytes_new,
            "rechunked": r.rechunked,
            "packs_adopted": r.adopted.packs,
            "duration_seconds": secs,
        }));
    }
    if g.quiet {
        return Ok(());
    }
    if r.adopted.packs > 0 {
        println!(
            "Reused {} that no index listed (left by an interrupted run), holding {}",
            count(r.adopted.packs, "pack", "packs"),
            count(r.adopted.blobs, "blob", "blobs")
        );
    }
    let how = if r.rechunked {
        "contents cut again: the repositories don't share ids"
    } else {
        "blob for blob: the repositories share ids"
    };
    println!(
        "{} copied, {} already there{}; {} ({}) sent in {secs:.1} s, {how}",
        count(r.copied.len(), "snapshot", "snapshots"),
        r.already_there.len(),
        if r.failed.is_empty() {
            String::new()
        } else {
            format!(", {} failed", r.failed.len())
        },
        count(r.blobs_sent, "blob", "blobs"),
        output::bytes(r.bytes_sent),
    );
    Ok(())
}
