use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::output::count;
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
        /// and snapshot and record files too damaged to read
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
                print_summary(&s, "repair index")?;
            } else if !g.quiet && !dry_run && s.index_files_written == 0 {
                println!(
                    "the index names each of the {} as stored: nothing to repair",
                    count(s.packs, "pack", "packs")
                );
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
                if s.snapshots_unreadable > 0 {
                    println!(
                        "{} unreadable; {} removed{}",
                        count(s.snapshots_unreadable, "snapshot is", "snapshots are"),
                        s.unreadable_removed,
                        if forget || dry_run {
                            ""
                        } else {
                            " (`--forget` removes them)"
                        }
                    );
                }
                if s.records_unreadable > 0 {
                    println!(
                        "{} unreadable; {} removed{}",
                        count(s.records_unreadable, "record is", "records are"),
                        s.records_removed,
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
                print_summary(&s, "repair packs")?;
            } else if !g.quiet {
                print_packs_summary(&s);
            }
            if s.packs_missing > 0 {
                anyhow::bail!(
                    "{} the index names {} missing from data/: run `cairn repair index`",
                    count(s.packs_missing, "pack", "packs"),
                    if s.packs_missing == 1 { "is" } else { "are" }
                );
            }
            if s.packs_unreadable > 0 {
                anyhow::bail!(
                    "{} (see above)",
                    count(
                        s.packs_unreadable,
                        "pack could not be read and was left as it is",
                        "packs could not be read and were left as they are"
                    )
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
            "  {} salvaged, {} stored elsewhere, {} lost; pack {}{}",
            count(p.blobs_salvaged, "blob", "blobs"),
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
            "read {}: none is damaged{}",
            count(s.packs_read, "pack", "packs"),
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
            "dry run: {} of {} read {} damaged; {} would be salvaged, {} lost; nothing was changed",
            s.packs_damaged,
            count(s.packs_read, "pack", "packs"),
            if s.packs_damaged == 1 { "is" } else { "are" },
            count(s.blobs_salvaged, "blob", "blobs"),
            s.blobs_lost
        );
    } else {
        println!(
            "{} of {} read {} damaged: {} salvaged into {}, {} lost; \
             replaced {} with {}, removed {}",
            s.packs_damaged,
            count(s.packs_read, "pack", "packs"),
            if s.packs_damaged == 1 { "was" } else { "were" },
            count(s.blobs_salvaged, "blob", "blobs"),
            count(s.packs_written, "new pack", "new packs"),
            s.blobs_lost,
            count(s.index_files_removed, "index file", "index files"),
            s.index_files_written,
            count(s.packs_removed, "damaged pack", "damaged packs")
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
            "{} {} data:",
            count(s.snapshots_missing_data.len(), "snapshot", "snapshots"),
            match (s.dry_run, s.snapshots_missing_data.len() == 1) {
                (true, _) => "would miss",
                (false, true) => "now misses",
                (false, false) => "now miss",
            }
        );
        for l in &s.snapshots_missing_data {
            println!(
                "  {} {} {} {}: {} (first: {})",
                l.id.get(..8).unwrap_or(&l.id),
                output::local_time(&l.time),
                output::printable(&l.hostname),
                output::printable(&l.paths.join(" ")),
                count(l.entries, "entry", "entries"),
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

/// The JSON summary line (docs/json.md).
fn print_summary<T: serde::Serialize>(s: &T, command: &str) -> Result<()> {
    let mut v = serde_json::to_value(s)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("message_type".into(), "summary".into());
        o.insert("command".into(), command.into());
    }
    output::print_json(&v)
}
