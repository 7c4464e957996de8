use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::output::count;
use super::{FilterArgs, GlobalArgs, open, output};

#[derive(Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &GlobalArgs, a: SnapshotsArgs) -> Result<ExitCode> {
    let repo = open(g)?;
    let filter = a.filter.filter()?;
    let (all, unreadable) = repo.list_snapshots_lenient()?;
    let snaps: Vec<_> = all.into_iter().filter(|(_, s)| filter.matches(s)).collect();
    for (id, e) in &unreadable {
        eprintln!(
            "error: snapshot {id}: {}",
            output::printable(&e.to_string())
        );
    }
    if g.json {
        let list: Vec<serde_json::Value> = snaps
            .iter()
            .map(|(id, s)| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("id".into(), id.to_hex().into());
                    o.insert("short_id".into(), id.short().into());
                }
                v
            })
            .collect();
        output::print_json(&list)?;
        if !unreadable.is_empty() {
            anyhow::bail!(
                "{} could not be read",
                count(unreadable.len(), "snapshot file", "snapshot files")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8}  {:<19}  {:<16}  {:>10}  {:<16}  paths",
        "id", "time", "host", "size", "tags"
    );
    for (id, s) in &snaps {
        println!(
            "{:<8}  {:<19}  {:<16}  {:>10}  {:<16}  {}",
            id.short(),
            output::local_time(&s.time),
            output::printable(&s.hostname),
            output::bytes(s.summary.total_bytes),
            output::printable(&s.tags.join(",")),
            output::printable(&s.paths.join(" "))
        );
    }
    if !g.quiet {
        println!("{}", count(snaps.len(), "snapshot", "snapshots"));
    }
    if !unreadable.is_empty() {
        anyhow::bail!(
            "{} could not be read; `cairn check` shows the damage, `cairn forget ID` removes one",
            count(unreadable.len(), "snapshot file", "snapshot files")
        );
    }
    Ok(ExitCode::SUCCESS)
}
