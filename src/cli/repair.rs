use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::output::count;
use super::{GlobalArgs, open_uncached, output};

#[derive(Args)]
pub struct RepairArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Rebuild the index from the pack files
    Index {
        /// Print what would be done, and change nothing
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
    /// Rewrite snapshots that name lost data, dropping what is lost
    Snapshots {
        /// Print what would be dropped, and change nothing
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// Remove the damaged originals once their repaired versions are written
        #[arg(long)]
        forget: bool,
    },
}

pub fn run(g: &GlobalArgs, a: RepairArgs) -> Result<ExitCode> {
    let repo = open_uncached(g)?;
    let quiet = g.quiet || g.json;
    let report = move |m: &str| {
        if !quiet {
            eprintln!("{}", output::printable(m));
        }
    };
    match a.what {
        What::Index { dry_run } => {
            let s = cairn::repair::repair_index(&repo, dry_run, &report)?;
            if g.json {
                print_summary(&s, "repair index")?;
            } else if !g.quiet {
                let verb = if dry_run { "would index" } else { "indexed" };
                println!(
                    "{verb} {} of {} ({} read, {} unreadable); replaced {} with {}",
                    s.packs_indexed,
                    count(s.packs, "pack", "packs"),
                    count(s.headers_read, "header", "headers"),
                    s.packs_unreadable,
                    count(s.index_files_removed, "index file", "index files"),
                    s.index_files_written
                );
            }
        }
        What::Snapshots { dry_run, forget } => {
            let s = cairn::repair::repair_snapshots(&repo, dry_run, forget, &report)?;
            if g.json {
                print_summary(&s, "repair snapshots")?;
            } else if !g.quiet {
                println!(
                    "{} of {} lost data ({} dropped); {} written, {} removed{}",
                    s.snapshots_damaged,
                    count(s.snapshots, "snapshot names", "snapshots name"),
                    count(s.entries_dropped, "entry", "entries"),
                    count(
                        s.snapshots_written,
                        "repaired snapshot",
                        "repaired snapshots"
                    ),
                    count(s.snapshots_removed, "original", "originals"),
                    if dry_run { " (dry run)" } else { "" }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON summary line (docs/json.md).
fn print_summary<T: serde::Serialize>(s: &T, command: &str) -> Result<()> {
    let mut v = serde_json::to_value(s)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("message_type".into(), "summary".into());
        o.insert("command".into(), command.into());
    }
    output::print_json(&v)
}
