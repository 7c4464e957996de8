use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::Args;

use cairn::inspect::diff::{Change, DiffSummary, Modifier, Side};
use cairn::repository::Repository;
use cairn::select::Selected;
use cairn::tree::NodeKind;

use super::{Out, put_path};
use crate::cli::output::{self, count};
use crate::cli::{FilterArgs, GlobalArgs, load_index, open, warn_skipped};

#[derive(Args)]
pub struct DiffArgs {
    /// The old snapshot: id prefix, latest or latest~N, optionally with :PATH
    /// (a directory in it)
    old: String,
    /// The new snapshot, likewise
    new: String,
    /// Also report entries whose metadata alone changed (U): mode, owner,
    /// modification time, extended attributes
    #[arg(long)]
    metadata: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &GlobalArgs, a: DiffArgs) -> Result<ExitCode> {
    let repo = open(g)?;
    let old = a.filter.resolve(&repo, &a.old)?;
    warn_skipped(g, &old.skipped);
    let new = a.filter.resolve(&repo, &a.new)?;
    let index = load_index(g, &repo)?;
    let old_tree = dir_of(&repo, &index, &old, &a.old)?;
    let new_tree = dir_of(&repo, &index, &new, &a.new)?;
    let mut out = Out::new();
    if !g.json && !g.quiet {
        out.line(format_args!(
            "comparing snapshot {} to {}:",
            old.id.short(),
            new.id.short()
        ))?;
    }
    let mut report = |c: &Change| -> cairn::Result<()> {
        if g.json {
            out.json(&change_json(c))
        } else {
            let dir = c.new.or(c.old).is_some_and(|n| n.kind == NodeKind::Dir);
            out.line(format_args!(
                "{} {}{}",
                c.modifier.symbol(),
                output::path(c.path),
                if dir { "/" } else { "" }
            ))
        }
    };
    let summary =
        cairn::inspect::diff::diff(&repo, &index, &old_tree, &new_tree, a.metadata, &mut report)?;
    if g.json {
        let mut v = serde_json::to_value(&summary).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("message_type".into(), "summary".into());
            o.insert("command".into(), "diff".into());
            o.insert("old_snapshot".into(), old.id.to_hex().into());
            o.insert("new_snapshot".into(), new.id.to_hex().into());
        }
        out.json(&v)?;
    } else if !g.quiet {
        out.line(format_args!("{}", totals(&summary, a.metadata)))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The tree of the directory `SNAPSHOT[:PATH]` names.
fn dir_of(
    repo: &Repository,
    index: &cairn::index::Index,
    sel: &Selected,
    spec: &str,
) -> Result<cairn::id::BlobId> {
    let path = sel.path.as_deref().unwrap_or("/");
    let found = cairn::inspect::locate(repo, index, &sel.snapshot.tree, path)
        .with_context(|| format!("in snapshot {}", sel.id.short()))?;
    found.tree.ok_or_else(|| {
        anyhow!(
            "{spec}: {} is not a directory; diff compares directories (`cairn dump` \
             writes out a file to compare)",
            output::path(&found.path)
        )
    })
}

fn change_json(c: &Change) -> serde_json::Value {
    let kind = |n: Option<&cairn::tree::Node>| n.map(|n| n.kind.name());
    let name = match c.modifier {
        Modifier::Added => "added",
        Modifier::Removed => "removed",
        Modifier::Modified => "modified",
        Modifier::TypeChanged => "type_changed",
        Modifier::Metadata => "metadata",
    };
    let mut o = serde_json::Map::new();
    o.insert("message_type".into(), "change".into());
    put_path(&mut o, c.path);
    o.insert("modifier".into(), c.modifier.symbol().to_string().into());
    o.insert("change".into(), name.into());
    o.insert("kind".into(), kind(c.new.or(c.old)).into());
    o.insert("old_kind".into(), kind(c.old).into());
    o.insert("new_kind".into(), kind(c.new).into());
    serde_json::Value::Object(o)
}

/// The closing line: entries by kind, then blob-level data.
fn totals(s: &DiffSummary, metadata: bool) -> String {
    let side = |x: &Side, verb: &str| {
        format!(
            "{}, {}, {} {verb}",
            count(x.files, "file", "files"),
            count(x.dirs, "dir", "dirs"),
            count(x.others, "other", "others")
        )
    };
    let mut line = format!(
        "{}; {}; {} modified, {} type changed",
        side(&s.added, "added"),
        side(&s.removed, "removed"),
        s.modified,
        s.type_changed
    );
    if metadata {
        line.push_str(&format!(", {} metadata changed", s.metadata_changed));
    }
    line.push_str(&format!(
        "; data: {} ({}) added, {} ({}) removed",
        count(s.added.blobs, "blob", "blobs"),
        output::bytes(s.added.bytes),
        count(s.removed.blobs, "blob", "blobs"),
        output::bytes(s.removed.bytes)
    ));
    if s.blobs_unknown_size > 0 {
        line.push_str(&format!(
            " ({} not in the index, of unknown size)",
            count(s.blobs_unknown_size, "blob", "blobs")
        ));
    }
    line
}
