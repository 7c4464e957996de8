use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use cairn::prune::{self, PruneOptions, PruneSummary};

use super::output::count;
use super::{GlobalArgs, open_uncached, output, signals, usage};

#[derive(Args, Clone)]
pub struct PruneArgs {
    /// Repack packs of which more than this percentage is unused
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0)]
    max_unused: f64,
    /// Repack at most this much per run (bytes, or with K/M/G/T suffix)
    #[arg(long, value_name = "SIZE")]
    max_repack_size: Option<String>,
}

impl PruneArgs {
    pub fn options(&self, dry_run: bool) -> Result<PruneOptions> {
        if !(0.0..=100.0).contains(&self.max_unused) {
            return Err(usage("--max-unused must be a percentage between 0 and 100"));
        }
        let max_repack_bytes = match &self.max_repack_size {
            Some(s) => Some(parse_size(s).map_err(|e| usage(format!("--max-repack-size: {e}")))?),
            None => None,
        };
        Ok(PruneOptions {
            max_unused_percent: self.max_unused,
            max_repack_bytes,
            dry_run,
        })
    }
}

fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| anyhow::anyhow!("{s:?} is not a size (e.g. 500M, 10G)"))
}

#[derive(Args)]
pub struct PruneCmd {
    #[command(flatten)]
    opts: PruneArgs,
    /// Print what would be deleted and repacked, and change nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
}

pub fn run(g: &GlobalArgs, a: PruneCmd) -> Result<ExitCode> {
    let repo = open_uncached(g)?;
    run_with(g, &repo, &a.opts, a.dry_run)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_with(
    g: &GlobalArgs,
    repo: &std::sync::Arc<cairn::repository::Repository>,
    a: &PruneArgs,
    dry_run: bool,
) -> Result<()> {
    let opts = a.options(dry_run)?;
    // Packs of snapshots lost behind cairn's back may be all that is left of
    // them: nothing is deleted until the loss is accepted.
    if !dry_run {
        if let Some(o) = super::observe(g, repo).filter(|o| o.anything_missing()) {
            anyhow::bail!(
                "prune refuses to delete anything: {}. Their data may still be in packs \
                 that prune would delete: put the files back from a copy of the repository, \
                 or accept the loss with `cairn check --accept-missing`, then prune",
                o.describe(&super::repo_path(g)?.display().to_string())
            );
        }
    }
    let quiet = g.quiet || g.json;
    let report = move |m: &str| {
        if !quiet {
            eprintln!("{}", output::printable(m));
        }
    };
    let s = prune::prune(repo, &opts, &signals::INTERRUPTED, &report)?;
    print_summary(g, &s)
}

fn print_summary(g: &GlobalArgs, s: &PruneSummary) -> Result<()> {
    if g.json {
        let mut v = serde_json::to_value(s)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("message_type".into(), "summary".into());
            o.insert("command".into(), "prune".into());
        }
        return output::print_json(&v);
    }
    if g.quiet {
        return Ok(());
    }
    let b = output::bytes;
    let verb = if s.dry_run { "would" } else { "did" };
    if s.temp_files_removed > 0 {
        println!(
            "{verb} remove {} temporary files of interrupted writes ({})",
            s.temp_files_removed,
            b(s.bytes_temp_removed)
        );
    }
    println!(
        "{} {} {}; {} unused",
        count(s.snapshots, "snapshot", "snapshots"),
        if s.snapshots == 1 { "uses" } else { "use" },
        count(s.used_blobs, "blob", "blobs"),
        if s.unused_blobs == 1 {
            "1 blob is".to_string()
        } else {
            format!("{} blobs are", s.unused_blobs)
        }
    );
    if s.nothing_to_do {
        println!(
            "nothing to prune: no pack is unused or has more than the --max-unused share unused"
        );
        return Ok(());
    }
    println!(
        "{verb} delete {} ({}) and {} ({})",
        count(s.packs_deleted, "unused pack", "unused packs"),
        b(s.bytes_deleted),
        count(
            s.packs_unindexed_deleted,
            "unindexed pack",
            "unindexed packs"
        ),
        b(s.bytes_unindexed_deleted)
    );
    println!(
        "{verb} repack {} ({})",
        count(s.packs_repacked, "pack", "packs"),
        b(s.bytes_repacked)
    );
    if s.packs_not_repacked > 0 {
        println!(
            "left {} ({}) unrepacked for lack of room: repacking {} needs about {} free",
            count(s.packs_not_repacked, "pack", "packs"),
            b(s.bytes_not_repacked),
            if s.packs_not_repacked == 1 {
                "it"
            } else {
                "them"
            },
            b(s.bytes_needed_for_repack)
        );
    }
    println!(
        "repository: {} in {} before, {} after",
        b(s.bytes_before),
        count(s.packs_before, "pack", "packs"),
        b(s.bytes_after)
    );
    Ok(())
}
