use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::{GlobalArgs, open_uncached, output, signals};

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
    /// Salvage the intact blobs of damaged packs, then remove the packs
    ///
    /// Without PACK ids, every pack is read and verified (as `check --read-data`
    /// does) and each damaged one is repaired; `check` names the damaged packs
    /// and prints the exact command.
    Packs {
        /// Packs to repair (ids or unique prefixes); default: every damaged pack
        #[arg(value_name = "PACK")]
        packs: Vec<String>,
        /// Print what would be salvaged and lost, and change nothing
        #[arg(short = 'n', long)]
        dry_run: bool,
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
        What::Packs { packs, dry_run } => {
            let s = cairn::repair_packs::repair_packs(
                &repo,
                &packs,
                dry_run,
                &signals::INTERRUPTED,
                &report,
            )?;
            if g.json {
                output::print_json(&s)?;
            } else if !g.quiet {
                print_packs_summary(&s);
            }
            if s.packs_unreadable > 0 {
                anyhow::bail!(
                    "{} pack(s) could not be read and were left as they are (see above)",
                    s.packs_unreadable
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_packs_summary(s: &cairn::repair_packs::RepairPacksSummary) {
    let would = if s.dry_run { "would be " } else { "" };
    for p in &s.packs {
        println!("pack {}: {}", p.pack, output::printable(&p.damage));
        println!(
            "  {} blobs salvaged, {} stored elsewhere, {} lost; pack {}{}",
            p.blobs_salvaged,
            p.blobs_elsewhere,
            p.blobs_lost,
            would,
            if p.removed || s.dry_run {
                "removed"
            } else {
                "kept"
            }
        );
    }
    if s.packs.is_empty() {
        println!(
            "read {} packs: none is damaged{}",
            s.packs_read,
            if s.packs_unreadable > 0 {
                " among those that could be read"
            } else {
                ""
            }
        );
        return;
    }
    if s.dry_run {
        println!(
            "dry run: {} of {} packs read are damaged; {} blobs would be salvaged, {} lost; nothing was changed",
            s.packs_damaged, s.packs_read, s.blobs_salvaged, s.blobs_lost
        );
    } else {
        println!(
            "{} of {} packs read were damaged: {} blobs salvaged into {} new packs, {} lost; \
             replaced {} index files with {}, removed {} damaged packs",
            s.packs_damaged,
            s.packs_read,
            s.blobs_salvaged,
            s.packs_written,
            s.blobs_lost,
            s.index_files_removed,
            s.index_files_written,
            s.packs_removed
        );
    }
    if s.snapshots_missing_data.is_empty() {
        println!(
            "no snapshot {}",
            if s.dry_run {
                "would miss data"
            } else {
                "misses data"
            }
        );
    } else {
        println!(
            "{} snapshot(s) {} data:",
            s.snapshots_missing_data.len(),
            if s.dry_run { "would miss" } else { "now miss" }
        );
        for l in &s.snapshots_missing_data {
            println!(
                "  {} {} {} {}: {} entries (first: {})",
                l.id.get(..8).unwrap_or(&l.id),
                output::local_time(&l.time),
                output::printable(&l.hostname),
                output::printable(&l.paths.join(" ")),
                l.entries,
                output::printable(&l.first)
            );
        }
    }
    if !s.next_steps.is_empty() {
        println!("next, in this order:");
        for step in &s.next_steps {
            println!("  {}", output::printable(&step.command));
            println!("      {}", output::printable(&step.reason));
        }
    }
}
