use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

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
        /// Remove the damaged originals once their repaired versions are written,
        /// and snapshot files too damaged to read
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
                output::print_json(&s)?;
            } else if !g.quiet {
                let verb = if dry_run { "would index" } else { "indexed" };
                println!(
                    "{verb} {} of {} packs ({} headers read, {} unreadable); replaced {} index files with {}",
                    s.packs_indexed,
                    s.packs,
                    s.headers_read,
                    s.packs_unreadable,
                    s.index_files_removed,
                    s.index_files_written
                );
            }
        }
        What::Snapshots { dry_run, forget } => {
            let s = cairn::repair::repair_snapshots(&repo, dry_run, forget, &report)?;
            if g.json {
                output::print_json(&s)?;
            } else if !g.quiet {
                println!(
                    "{} of {} snapshots name lost data ({} entries dropped); {} repaired snapshots written, {} originals removed{}",
                    s.snapshots_damaged,
                    s.snapshots,
                    s.entries_dropped,
                    s.snapshots_written,
                    s.snapshots_removed,
                    if dry_run { " (dry run)" } else { "" }
                );
                if s.snapshots_unreadable > 0 {
                    println!(
                        "{} snapshots are unreadable; {} removed{}",
                        s.snapshots_unreadable,
                        s.unreadable_removed,
                        if forget || dry_run {
                            ""
                        } else {
                            " (`--forget` removes them)"
                        }
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
