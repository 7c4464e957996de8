use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;

use cairn::id::{BlobId, SnapshotId};
use cairn::inspect::find::{Patterns, Wanted};
use cairn::pack::BlobKind;
use cairn::snapshot::Snapshot;
use cairn::tree::Node;

use super::{Out, local_time, put_path, rfc3339};
use crate::cli::output::{self, count};
use crate::cli::{FilterArgs, GlobalArgs, load_index, open, usage, warn_skipped};

#[derive(Args)]
pub struct FindArgs {
    /// Glob patterns: one without `/` matches names, one with `/` whole paths
    /// (from the root if it starts with `/`, else at any depth); `*` stays
    /// within a name, `**` crosses directories
    patterns: Vec<String>,
    /// Search only this snapshot (repeatable; id prefix, latest or latest~N).
    /// Default: every snapshot the filters let through, newest first
    #[arg(short = 's', long = "snapshot", value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    /// Match patterns without regard to case
    #[arg(short = 'i', long)]
    ignore_case: bool,
    /// Instead of patterns: the files that use this data blob (id or unique
    /// prefix; repeatable)
    #[arg(long = "blob", value_name = "ID")]
    blobs: Vec<String>,
    /// Instead of patterns: the directories whose tree is this one (id or
    /// unique prefix; repeatable)
    #[arg(long = "tree", value_name = "ID")]
    trees: Vec<String>,
    /// Instead of patterns: what uses any blob the index reads from this pack
    /// (id or unique prefix; repeatable): what a damaged pack takes with it
    #[arg(long = "pack", value_name = "ID")]
    packs: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

/// What is looked for.
enum Query {
    Patterns(Patterns),
    Ids(Wanted),
}

/// Counts for the closing line.
#[derive(Default)]
struct Found {
    matches: u64,
    snapshots_matched: u64,
    used_data: HashSet<BlobId>,
    used_trees: HashSet<BlobId>,
}

pub fn run(g: &GlobalArgs, a: FindArgs) -> Result<ExitCode> {
    let by_id = !(a.blobs.is_empty() && a.trees.is_empty() && a.packs.is_empty());
    if by_id && !a.patterns.is_empty() {
        return Err(usage(
            "give either patterns or --blob/--tree/--pack, not both",
        ));
    }
    if !by_id && a.patterns.is_empty() {
        return Err(usage(
            "nothing to find: give a pattern, or --blob, --tree or --pack",
        ));
    }
    if by_id && a.ignore_case {
        return Err(usage("--ignore-case applies to patterns only"));
    }
    let repo = open(g)?;
    let (snapshots, unreadable) = choose(g, &repo, &a)?;
    let index = load_index(g, &repo)?;
    let query = if by_id {
        let mut w = Wanted::default();
        for b in &a.blobs {
            w.add_blob(&index, BlobKind::Data, b)?;
        }
        for t in &a.trees {
            w.add_blob(&index, BlobKind::Tree, t)?;
        }
        for p in &a.packs {
            w.add_pack(&index, p)?;
        }
        Query::Ids(w)
    } else {
        Query::Patterns(Patterns::new(&a.patterns, a.ignore_case)?)
    };
    let hits = match &query {
        Query::Ids(w) => {
            let roots: Vec<BlobId> = snapshots.iter().map(|(_, s)| s.tree).collect();
            w.trees_leading_to(&repo, &index, &roots)?
        }
        Query::Patterns(_) => HashSet::new(),
    };
    let mut out = Out::new();
    let mut found = Found::default();
    for (id, snap) in &snapshots {
        let mut shown = false;
        let mut emit =
            |out: &mut Out, p: &Path, n: Option<&Node>, blobs: &[BlobId], tree: Option<BlobId>| {
                if !shown && !g.json && !g.quiet {
                    out.line(format_args!(
                        "snapshot {} of [{}] at {}:",
                        id.short(),
                        output::printable(&snap.paths.join(" ")),
                        output::local_time(&snap.time)
                    ))?;
                }
                shown = true;
                found.matches += 1;
                found.used_data.extend(blobs.iter().copied());
                found.used_trees.extend(tree);
                if g.json {
                    out.json(&match_json(id, p, n, blobs, tree))
                } else {
                    out.line(format_args!("{}", match_line(p, n, blobs, tree)))
                }
            };
        let root = Path::new("/");
        match &query {
            Query::Patterns(pats) => {
                let tree = repo.load_tree(&index, &snap.tree)?;
                cairn::walk::walk(&repo, &index, &tree, root, &mut |p, n| {
                    if pats.matches(p) {
                        emit(&mut out, p, Some(n), &[], None)?;
                    }
                    Ok(true)
                })?;
            }
            Query::Ids(w) => {
                if w.trees.contains(&snap.tree) {
                    emit(&mut out, root, None, &[], Some(snap.tree))?;
                }
                if hits.contains(&snap.tree) {
                    let tree = repo.load_tree(&index, &snap.tree)?;
                    cairn::walk::walk(&repo, &index, &tree, root, &mut |p, n| {
                        let blobs = w.blobs_of(n);
                        let t = w.tree_of(n);
                        if !blobs.is_empty() || t.is_some() {
                            emit(&mut out, p, Some(n), &blobs, t)?;
                        }
                        Ok(n.subtree.is_some_and(|s| hits.contains(&s)))
                    })?;
                }
            }
        }
        if shown {
            found.snapshots_matched += 1;
        }
    }
    let unused: Vec<String> = match &query {
        Query::Ids(w) => {
            let mut v: Vec<String> = w
                .data
                .difference(&found.used_data)
                .chain(w.trees.difference(&found.used_trees))
                .map(|id| id.to_hex())
                .collect();
            v.sort();
            v
        }
        Query::Patterns(_) => Vec::new(),
    };
    if g.json {
        out.json(&serde_json::json!({
            "message_type": "summary",
            "command": "find",
            "snapshots": snapshots.len(),
            "snapshots_matched": found.snapshots_matched,
            "matches": found.matches,
            "unused": unused,
        }))?;
    } else if !g.quiet {
        out.line(format_args!(
            "{} in {} of {}",
            count(found.matches, "match", "matches"),
            found.snapshots_matched,
            count(snapshots.len(), "snapshot", "snapshots")
        ))?;
        if !unused.is_empty() {
            out.line(format_args!(
                "{} looked for {} used by none of these snapshots",
                count(unused.len(), "blob", "blobs"),
                if unused.len() == 1 { "is" } else { "are" }
            ))?;
        }
    }
    out.flush()?;
    if unreadable > 0 {
        bail!(
            "{} could not be read and {} not searched; `cairn check` shows the damage",
            count(unreadable, "snapshot", "snapshots"),
            if unreadable == 1 { "was" } else { "were" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The snapshots to search: those named, in that order, or every one the
/// filters let through, newest first; and how many could not be read.
fn choose(
    g: &GlobalArgs,
    repo: &cairn::repository::Repository,
    a: &FindArgs,
) -> Result<(Vec<(SnapshotId, Snapshot)>, usize)> {
    if a.snapshots.is_empty() {
        let filter = a.filter.filter()?;
        let (all, unreadable) = repo.list_snapshots_lenient()?;
        warn_skipped(g, &unreadable);
        let mut list: Vec<_> = all.into_iter().filter(|(_, s)| filter.matches(s)).collect();
        list.reverse();
        return Ok((list, unreadable.len()));
    }
    let mut list: Vec<(SnapshotId, Snapshot)> = Vec::new();
    for spec in &a.snapshots {
        if spec.contains(':') {
            return Err(usage(format!(
                "--snapshot {spec}: find searches whole snapshots; leave out the :PATH"
            )));
        }
        let sel = a.filter.resolve(repo, spec)?;
        if !list.iter().any(|(id, _)| *id == sel.id) {
            list.push((sel.id, sel.snapshot));
        }
    }
    Ok((list, 0))
}

fn match_line(p: &Path, n: Option<&Node>, blobs: &[BlobId], tree: Option<BlobId>) -> String {
    let mut line = match n {
        Some(n) => format!(
            "{} {:>12} {:19} {}",
            output::mode_string(n.kind, n.mode),
            n.size,
            local_time(n.mtime),
            output::path(p)
        ),
        None => format!("{:10} {:>12} {:19} {}", "d", "", "", output::path(p)),
    };
    if !blobs.is_empty() {
        let ids: Vec<String> = blobs.iter().map(|b| b.short()).collect();
        line.push_str(&format!("  (data blob {})", ids.join(", ")));
    }
    if let Some(t) = tree {
        line.push_str(&format!("  (tree {})", t.short()));
    }
    line
}

fn match_json(
    id: &SnapshotId,
    p: &Path,
    n: Option<&Node>,
    blobs: &[BlobId],
    tree: Option<BlobId>,
) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    o.insert("message_type".into(), "match".into());
    o.insert("snapshot".into(), id.to_hex().into());
    put_path(&mut o, p);
    o.insert("type".into(), n.map_or("dir", |n| n.kind.name()).into());
    o.insert("size".into(), n.map_or(0, |n| n.size).into());
    o.insert("mode".into(), n.map(|n| n.mode).into());
    o.insert("mtime".into(), n.and_then(|n| rfc3339(n.mtime)).into());
    o.insert(
        "blobs".into(),
        blobs.iter().map(|b| b.to_hex()).collect::<Vec<_>>().into(),
    );
    o.insert("tree".into(), tree.map(|t| t.to_hex()).into());
    serde_json::Value::Object(o)
}
