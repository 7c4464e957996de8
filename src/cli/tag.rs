//! `cairn tag SNAPSHOT... --add/--remove/--set TAG`: the library's
//! `rewrite::tag` behind flags.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use cairn::id::SnapshotId;
use cairn::rewrite::{Retagged, TagChange};

use super::output::count;
use super::{FilterArgs, GlobalArgs, open_uncached, output, usage};

#[derive(Args)]
pub struct TagArgs {
    /// Snapshots to change (ids, unique prefixes, latest or latest~N)
    #[arg(required = true, value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    /// Add this tag (repeatable)
    #[arg(long = "add", value_name = "TAG")]
    add: Vec<String>,
    /// Remove this tag (repeatable)
    #[arg(long = "remove", value_name = "TAG")]
    remove: Vec<String>,
    /// Replace every tag with these (repeatable; `--set ''` removes them all)
    #[arg(long = "set", value_name = "TAG", conflicts_with_all = ["add", "remove"])]
    set: Option<Vec<String>>,
    #[command(flatten)]
    filter: FilterArgs,
}

/// The snapshots `specs` name among those `filter` lets through, each once;
/// `SNAPSHOT:PATH` is refused (a whole snapshot changes or none).
pub fn resolve_all(
    g: &GlobalArgs,
    repo: &cairn::repository::Repository,
    filter: &FilterArgs,
    specs: &[String],
) -> Result<Vec<SnapshotId>> {
    let mut ids = Vec::new();
    for spec in specs {
        if spec.contains(':') {
            return Err(usage(format!(
                "{spec:?}: name whole snapshots (a part of one can't be changed alone)"
            )));
        }
        let sel = filter.resolve(repo, spec)?;
        super::warn_skipped(g, &sel.skipped);
        if !ids.contains(&sel.id) {
            ids.push(sel.id);
        }
    }
    Ok(ids)
}

fn tag_list(tags: &[String]) -> String {
    if tags.is_empty() {
        "(none)".into()
    } else {
        output::printable(&tags.join(", ")).into_owned()
    }
}

pub fn run(g: &GlobalArgs, a: TagArgs) -> Result<ExitCode> {
    let change = TagChange {
        add: a.add,
        remove: a.remove,
        set: a.set,
    };
    change.validate().map_err(|e| usage(e.to_string()))?;
    let repo = open_uncached(g)?;
    // The lock comes before choosing: what is chosen can't go meanwhile.
    let lock = cairn::lock::acquire(&repo, true)?;
    let ids = resolve_all(g, &repo, &a.filter, &a.snapshots)?;
    let (json, quiet) = (g.json, g.quiet);
    // Printed as each snapshot is done: a failure later leaves these reported.
    let failed: std::cell::RefCell<Option<anyhow::Error>> = std::cell::RefCell::new(None);
    let report = |r: &Retagged| {
        if let Err(e) = print_one(r, json, quiet) {
            failed.borrow_mut().get_or_insert(e);
        }
    };
    let done = cairn::rewrite::tag(&repo, &lock, &ids, &change, &report)?;
    if let Some(e) = failed.into_inner() {
        return Err(e);
    }
    drop(lock);
    let changed = done.iter().filter(|r| r.new.is_some()).count();
    if json {
        output::print_json(&serde_json::json!({
            "message_type": "summary", "command": "tag",
            "changed": changed, "unchanged": done.len() - changed,
        }))?;
    } else if !quiet {
        println!(
            "changed the tags of {}, {} left as {}",
            count(changed, "snapshot", "snapshots"),
            done.len() - changed,
            if done.len() - changed == 1 {
                "it was"
            } else {
                "they were"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_one(r: &Retagged, json: bool, quiet: bool) -> Result<()> {
    if json {
        return output::print_json(&serde_json::json!({
            "message_type": "tagged", "snapshot_id": r.old.to_hex(),
            "new_snapshot_id": r.new.map(|n| n.to_hex()), "changed": r.new.is_some(),
            "tags": r.tags,
        }));
    }
    if quiet {
        return Ok(());
    }
    match r.new {
        Some(n) => println!(
            "snapshot {} is now {}: tags {}",
            r.old.short(),
            n.short(),
            tag_list(&r.tags)
        ),
        None => println!(
            "snapshot {}: tags unchanged ({})",
            r.old.short(),
            tag_list(&r.tags)
        ),
    }
    Ok(())
}
