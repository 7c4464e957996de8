use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use cairn::forget::GroupBy;
use cairn::id::SnapshotId;
use cairn::snapshot::Snapshot;

use super::output::count;
use super::{FilterArgs, GlobalArgs, open, output, usage};

#[derive(Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// List snapshots in groups of equal host, paths and/or tags
    /// (comma-separated, e.g. host,paths), each under a header
    #[arg(long, value_name = "KEYS")]
    group_by: Option<String>,
    /// A narrower table: id, time, host and tags
    #[arg(long)]
    compact: bool,
}

/// What a group's snapshots share: the keys grouped by, the others `None`.
/// Paths and tags sorted, as they are compared.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
struct GroupKey {
    host: Option<String>,
    paths: Option<Vec<String>>,
    tags: Option<Vec<String>>,
}

impl GroupKey {
    fn of(by: GroupBy, s: &Snapshot) -> Self {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        Self {
            host: by.host.then(|| s.hostname.clone()),
            paths: by.paths.then(|| sorted(&s.paths)),
            tags: by.tags.then(|| sorted(&s.tags)),
        }
    }

    /// `host h, paths [/a, /b], tags [t]`, escaped for a terminal.
    fn header(&self) -> String {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = &self.paths {
            parts.push(format!("paths [{}]", p.join(", ")));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        if parts.is_empty() {
            return "all snapshots".into();
        }
        output::printable(&parts.join(", ")).into_owned()
    }
}

fn snapshot_json(id: &SnapshotId, s: &Snapshot) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), id.to_hex().into());
        o.insert("short_id".into(), id.short().into());
    }
    v
}

pub fn run(g: &GlobalArgs, a: SnapshotsArgs) -> Result<ExitCode> {
    let group_by = a
        .group_by
        .as_deref()
        .map(GroupBy::parse)
        .transpose()
        .map_err(|e| usage(e.to_string()))?;
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
    // Groups in the order of their keys; snapshots oldest first within each.
    let groups: Option<BTreeMap<GroupKey, Vec<&(SnapshotId, Snapshot)>>> = group_by.map(|by| {
        let mut m: BTreeMap<GroupKey, Vec<_>> = BTreeMap::new();
        for entry in &snaps {
            m.entry(GroupKey::of(by, &entry.1)).or_default().push(entry);
        }
        m
    });
    if g.json {
        match &groups {
            None => {
                let list: Vec<_> = snaps.iter().map(|(id, s)| snapshot_json(id, s)).collect();
                output::print_json(&list)?;
            }
            Some(groups) => {
                let list: Vec<serde_json::Value> = groups
                    .iter()
                    .map(|(key, members)| {
                        serde_json::json!({
                            "group_key": key,
                            "snapshots": members.iter().map(|(id, s)| snapshot_json(id, s)).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                output::print_json(&list)?;
            }
        }
        if !unreadable.is_empty() {
            anyhow::bail!(
                "{} could not be read",
                count(unreadable.len(), "snapshot file", "snapshot files")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    match &groups {
        None => print_table(&snaps.iter().collect::<Vec<_>>(), a.compact),
        Some(groups) => {
            for (i, (key, members)) in groups.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                println!("{}:", key.header());
                print_table(members, a.compact);
            }
        }
    }
    if !g.quiet {
        match &groups {
            Some(groups) => println!(
                "{} in {}",
                count(snaps.len(), "snapshot", "snapshots"),
                count(groups.len(), "group", "groups")
            ),
            None => println!("{}", count(snaps.len(), "snapshot", "snapshots")),
        }
    }
    if !unreadable.is_empty() {
        anyhow::bail!(
            "{} could not be read; `cairn check` shows the damage, `cairn forget ID` removes one",
            count(unreadable.len(), "snapshot file", "snapshot files")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(snaps: &[&(SnapshotId, Snapshot)], compact: bool) {
    if compact {
        println!("{:<8}  {:<19}  {:<16}  tags", "id", "time", "host");
        for (id, s) in snaps {
            let line = format!(
                "{:<8}  {:<19}  {:<16}  {}",
                id.short(),
                output::local_time(&s.time),
                output::printable(&s.hostname),
                output::printable(&s.tags.join(","))
            );
            // Tags come last and may be none: no trailing blanks.
            println!("{}", line.trim_end());
        }
        return;
    }
    println!(
        "{:<8}  {:<19}  {:<16}  {:>10}  {:<16}  paths",
        "id", "time", "host", "size", "tags"
    );
    for (id, s) in snaps {
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
}
