use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use cairn::drill::{self, DrillOptions, Sample};

use super::output::count;
use super::{EXIT_ERROR, FilterArgs, GlobalArgs, open_uncached, output, signals, usage};

#[derive(Args)]
pub struct DrillArgs {
    /// Snapshot: id prefix, latest or latest~N (among those the filters let through)
    #[arg(default_value = "latest")]
    snapshot: String,
    /// Restore this many files, chosen at random [default: 50]
    #[arg(long, value_name = "N", conflicts_with_all = ["percent", "all"])]
    files: Option<u64>,
    /// Restore this percentage of the files, chosen at random (at least one)
    #[arg(long, value_name = "X", conflicts_with = "all")]
    percent: Option<f64>,
    /// Restore everything: every file, directory, symlink and special file
    #[arg(long)]
    all: bool,
    /// Also compare each restored file with the live file at its original path
    #[arg(long)]
    compare_source: bool,
    /// Restore under this directory (created if missing, refused unless empty)
    /// instead of the system's temporary directory; removed again afterwards
    #[arg(long, value_name = "DIR")]
    target: Option<PathBuf>,
    /// Draw the sample from this seed, to repeat a drill exactly
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &GlobalArgs, a: DrillArgs) -> Result<ExitCode> {
    let sample = match (a.files, a.percent, a.all) {
        (Some(0), _, _) => return Err(usage("--files must be at least 1")),
        (Some(n), _, _) => Sample::Files(n),
        (_, Some(p), _) if !(p > 0.0 && p <= 100.0) => {
            return Err(usage(format!(
                "--percent {p}: give a percentage above 0 and at most 100"
            )));
        }
        (_, Some(p), _) => Sample::Percent(p),
        (_, _, true) => Sample::All,
        _ => Sample::Files(drill::DEFAULT_FILES),
    };
    if a.snapshot.contains(':') {
        return Err(usage(
            "a drill samples a whole snapshot; SNAPSHOT:PATH is not supported",
        ));
    }
    // Uncached: a drill proves what the repository itself gives back, as a
    // restore on another machine would get it.
    let repo = open_uncached(g)?;
    let sel = a.filter.resolve(&repo, &a.snapshot)?;
    super::warn_skipped(g, &sel.skipped);
    let progress = Arc::new(cairn::progress::Progress::new());
    let opts = DrillOptions {
        sample,
        compare_source: a.compare_source,
        target: a.target.clone(),
        seed: a.seed,
        class: None,
        record: true,
        progress: Some(Arc::clone(&progress)),
    };
    let display = super::progress::start(g, "drill", &progress);
    let r = drill::drill(&repo, sel.id, &opts, &signals::INTERRUPTED);
    drop(display);
    let r = r.with_context(|| format!("drilling snapshot {}", sel.id.short()))?;

    if g.json {
        for m in &r.mismatches {
            let mut v = serde_json::to_value(m)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("message_type".into(), "mismatch".into());
            }
            output::print_json(&v)?;
        }
        let mut v = serde_json::to_value(&r)?;
        if let Some(o) = v.as_object_mut() {
            o.remove("mismatches");
            o.insert("message_type".into(), "summary".into());
            o.insert("command".into(), "drill".into());
            o.insert("ok".into(), r.ok().into());
            o.insert("mismatch_count".into(), r.mismatches.len().into());
            o.insert("bytes_per_second".into(), r.bytes_per_second().into());
        }
        output::print_json(&v)?;
    } else {
        for w in &r.warnings {
            if !g.quiet {
                eprintln!("warning: {}", output::printable(w));
            }
        }
        for m in &r.mismatches {
            eprintln!(
                "mismatch: {}: {}",
                output::printable(&m.path),
                output::printable(&m.problem)
            );
        }
        if !g.quiet {
            println!(
                "drilled snapshot {}: {}",
                sel.id.short(),
                output::printable(&r.detail)
            );
            println!(
                "restored {} in {:.1} s ({:.1} MiB/s); {} verified",
                output::bytes(r.bytes),
                r.seconds,
                r.bytes_per_second() / (1024.0 * 1024.0),
                count(r.files, "file", "files"),
            );
        }
        if r.ok() {
            if !g.quiet {
                println!("drill passed");
            }
        } else {
            eprintln!(
                "drill FAILED: {}",
                count(r.mismatches.len(), "mismatch", "mismatches")
            );
        }
        if let (Some(id), false) = (r.record, g.quiet) {
            println!("recorded as record {}", id.short());
        }
    }
    Ok(if r.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_ERROR)
    })
}
