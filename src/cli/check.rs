use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;

use cairn::check::{self, Problem, ReadData, Severity};

use super::output::count;
use super::{GlobalArgs, open_for_check, output, signals};

#[derive(Args)]
pub struct CheckArgs {
    /// Also read every pack and verify every blob end to end
    #[arg(long)]
    read_data: bool,
    /// Read only part of the packs: `n/m` (group n of m, for rotating audits) or `X%`
    #[arg(long, value_name = "n/m|X%", conflicts_with = "read_data")]
    read_data_subset: Option<String>,
    /// Accept that snapshot or index files this user saw in the repository
    /// are gone with no cairn command having removed them (they were
    /// deleted, or the repository was put back to an older state): stop
    /// reporting them
    #[arg(long)]
    accept_missing: bool,
}

pub fn run(g: &GlobalArgs, a: CheckArgs) -> Result<ExitCode> {
    let how = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => ReadData::parse_subset(s)?,
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let repo = open_for_check(g)?;
    let location = super::repo_path(g)?.display().to_string();
    // Files this user saw that are gone with no record of cairn removing them.
    let lost = match (cairn::cache::base_dir(), a.accept_missing) {
        (Some(base), true) => {
            let accepted = cairn::seen::accept_missing(&repo, &base)?;
            if accepted.anything_missing() {
                if g.json {
                    output::print_json(&serde_json::json!({
                        "message_type": "accepted_missing",
                        "snapshots": accepted.missing_snapshots,
                        "index_files": accepted.missing_index,
                    }))?;
                } else if !g.quiet {
                    println!(
                        "accepted the loss: {}",
                        output::printable(&accepted.describe(&location))
                    );
                }
            }
            None
        }
        (Some(_), false) => super::observe(g, &repo).filter(|o| o.anything_missing()),
        (None, accept) => {
            if accept {
                bail!(
                    "--accept-missing: there is no cache directory, where what this user saw \
                     is kept (set CAIRN_CACHE_DIR, XDG_CACHE_HOME or HOME)"
                );
            }
            None
        }
    };
    let json = g.json;
    let quiet = g.quiet;
    let report = move |p: &Problem| {
        if json {
            let mut v = serde_json::to_value(p).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("message_type".into(), "problem".into());
            }
            let _ = output::print_json(&v);
        } else if p.severity == Severity::Error || !quiet {
            let level = match p.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Note => "note",
            };
            eprintln!(
                "{level}: {}: {}",
                output::printable(&p.object),
                output::printable(&p.message)
            );
        }
    };
    if let Some(o) = &lost {
        report(&Problem {
            severity: Severity::Error,
            object: "repository".into(),
            message: o.describe(&location),
        });
    }
    let start = Instant::now();
    let mut s = check::check(&repo, how, &signals::INTERRUPTED, &report)?;
    if lost.is_some() {
        s.errors += 1;
        s.next_steps.push(cairn::remedy::NextStep::new(
            "cairn check --accept-missing",
            "snapshot or index files this user saw are gone, and no cairn command removed \
             them: put them back from a copy of the repository if you can (then check again); \
             otherwise accept the loss",
        ));
    }
    let secs = start.elapsed().as_secs_f64();
    if json {
        let mut v = serde_json::to_value(&s)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("message_type".into(), "summary".into());
            o.insert("command".into(), "check".into());
            o.insert("duration_seconds".into(), secs.into());
        }
        output::print_json(&v)?;
    } else if !quiet {
        println!(
            "checked {}, {}, {}, {}, {}, {} in {secs:.1} s",
            count(s.snapshots, "snapshot", "snapshots"),
            count(s.trees, "tree", "trees"),
            count(s.data_blobs, "data blob", "data blobs"),
            count(s.index_files, "index file", "index files"),
            count(s.packs, "pack", "packs"),
            count(s.keys, "key", "keys")
        );
        if how != ReadData::None {
            println!(
                "read {} ({}) and verified every blob in them",
                count(s.packs_read, "pack", "packs"),
                output::bytes(s.bytes_read)
            );
        }
        if s.errors == 0 {
            let extra: Vec<String> = [
                (s.warnings, "warning", "warnings"),
                (s.notes, "note", "notes"),
            ]
            .iter()
            .filter(|(n, _, _)| *n > 0)
            .map(|(n, one, many)| count(*n, one, many))
            .collect();
            println!(
                "no errors found{}",
                if extra.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", extra.join(", "))
                }
            );
        }
    }
    if !json && !s.next_steps.is_empty() {
        eprintln!("to repair, run in this order:");
        for step in &s.next_steps {
            eprintln!("  {}", output::printable(&step.command));
            eprintln!("      {}", output::printable(&step.reason));
        }
    }
    if s.errors > 0 {
        bail!(
            "the repository has {}, listed above",
            count(s.errors, "error", "errors")
        );
    }
    Ok(ExitCode::SUCCESS)
}
