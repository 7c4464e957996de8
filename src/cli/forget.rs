use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;

use cairn::forget::{self, GroupBy, KeepPolicy, Within};
use cairn::id::SnapshotId;

use super::output::count;
use super::prune::PruneArgs;
use super::{FilterArgs, GlobalArgs, open_uncached, output, usage};

#[derive(Args)]
pub struct ForgetArgs {
    /// Snapshots to remove (ids or unique prefixes) instead of a policy
    ids: Vec<String>,
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_hourly: u32,
    /// Keep the newest snapshot of each of the last N days that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_daily: u32,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_weekly: u32,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_monthly: u32,
    /// Keep the newest snapshot of each of the last N years that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_yearly: u32,
    /// Keep every snapshot younger than this, counted back from the newest (e.g. 1y6m2w3d12h)
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<String>,
    /// Keep snapshots with this tag (repeatable)
    #[arg(long = "keep-tag", value_name = "TAG")]
    keep_tags: Vec<String>,
    /// Apply the policy per group of snapshots with equal host, paths and/or tags
    #[arg(long, value_name = "KEYS", default_value = "host,paths")]
    group_by: String,
    #[command(flatten)]
    filter: FilterArgs,
    /// Print what would be kept and removed, and change nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Run prune afterwards
    #[arg(long)]
    prune: bool,
    /// Allow a policy that removes every snapshot of a group (or an empty policy)
    #[arg(long)]
    unsafe_allow_remove_all: bool,
    #[command(flatten)]
    prune_opts: PruneArgs,
}

pub fn run(g: &GlobalArgs, a: ForgetArgs) -> Result<ExitCode> {
    let policy = KeepPolicy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a
            .keep_within
            .as_deref()
            .map(Within::parse)
            .transpose()
            .map_err(|e| usage(format!("--keep-within: {e}")))?,
        tags: a.keep_tags.clone(),
    };
    let group_by = GroupBy::parse(&a.group_by).map_err(|e| usage(format!("--group-by: {e}")))?;
    if !a.ids.is_empty() && !policy.is_empty() {
        return Err(usage(
            "give either snapshot ids or a --keep-* policy, not both",
        ));
    }
    if a.ids.is_empty() && policy.is_empty() && !a.unsafe_allow_remove_all {
        return Err(usage(
            "no --keep-* option given: that policy keeps nothing. Give a policy, or \
             --unsafe-allow-remove-all to remove every matching snapshot",
        ));
    }
    let filter = a.filter.filter()?;
    let repo = open_uncached(g)?;
    // The lock comes before the plan: a plan printed and then refused by a lock
    // would read as carried out. A dry run changes nothing and takes none.
    let lock = if a.dry_run {
        None
    } else {
        Some(cairn::lock::acquire(&repo, true)?)
    };

    let remove: Vec<SnapshotId> = if !a.ids.is_empty() {
        let mut ids = Vec::new();
        for spec in &a.ids {
            let (id, unreadable) = cairn::select::resolve_for_removal(&repo, spec, &filter)?;
            if let (Some(e), false) = (unreadable, g.quiet) {
                eprintln!(
                    "warning: removing unreadable snapshot {}: {}",
                    id.short(),
                    output::printable(&e.to_string())
                );
            }
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    } else {
        let (all, unreadable) = repo.list_snapshots_lenient()?;
        super::warn_skipped(g, &unreadable);
        let snaps: Vec<_> = all.into_iter().filter(|(_, s)| filter.matches(s)).collect();
        let groups = forget::plan(snaps, &policy, group_by);
        for grp in &groups {
            if !a.unsafe_allow_remove_all && !grp.decisions.iter().any(|d| d.keep()) {
                bail!(
                    "the policy would remove every snapshot of {}; nothing was removed \
                     (use --unsafe-allow-remove-all if that is what you want)",
                    grp.key
                );
            }
        }
        print_plan(g, &groups, a.dry_run)?;
        groups
            .iter()
            .flat_map(|grp| grp.decisions.iter().filter(|d| !d.keep()).map(|d| d.id))
            .collect()
    };

    if let Some(lock) = &lock {
        if !remove.is_empty() {
            forget::remove_snapshots(&repo, lock, &remove)?;
        }
    }
    // Prune takes its own.
    drop(lock);
    if g.json {
        output::print_json(&serde_json::json!({
            "message_type": "summary", "command": "forget", "dry_run": a.dry_run,
            "removed": remove.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
        }))?;
    } else if !g.quiet {
        let verb = if a.dry_run { "would remove" } else { "removed" };
        println!("{verb} {}", count(remove.len(), "snapshot", "snapshots"));
    }
    if a.prune {
        super::prune::run_with(g, &repo, &a.prune_opts, a.dry_run)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plan(g: &GlobalArgs, groups: &[forget::Group], dry_run: bool) -> Result<()> {
    for grp in groups {
        if g.json {
            let list: Vec<serde_json::Value> = grp
                .decisions
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "id": d.id.to_hex(), "time": d.snapshot.time, "keep": d.keep(), "reasons": d.reasons,
                    })
                })
                .collect();
            output::print_json(&serde_json::json!({
                "message_type": "forget_group", "group": grp.key, "dry_run": dry_run, "snapshots": list,
            }))?;
            continue;
        }
        if g.quiet {
            continue;
        }
        println!("{}:", output::printable(&grp.key));
        for d in &grp.decisions {
            let what = if d.keep() { "keep  " } else { "remove" };
            println!(
                "  {what} {}  {}  {}",
                d.id.short(),
                output::local_time(&d.snapshot.time),
                output::printable(&d.reasons.join(", "))
            );
        }
    }
    Ok(())
}
