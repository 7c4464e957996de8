use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use cairn::tree::{Node, NodeKind};
use cairn::walk::{self, Selection};

use super::{FilterArgs, GlobalArgs, open, output, usage};

#[derive(Args)]
pub struct LsArgs {
    /// Snapshot: id prefix, latest or latest~N, optionally with :PATH
    snapshot: String,
    /// List only this path inside the snapshot (like SNAPSHOT:PATH)
    path: Option<String>,
    /// Show type, permissions, owner, size and time
    #[arg(short, long)]
    long: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &GlobalArgs, a: LsArgs) -> Result<ExitCode> {
    if a.path.is_some() && a.snapshot.contains(':') {
        return Err(usage(
            "give the path either as SNAPSHOT:PATH or as the second argument, not both",
        ));
    }
    let repo = open(g)?;
    let sel = a.filter.resolve(&repo, &a.snapshot)?;
    super::warn_skipped(g, &sel.skipped);
    let index = super::load_index(g, &repo)?;
    let path = a
        .path
        .clone()
        .or(sel.path.clone())
        .unwrap_or_else(|| "/".into());
    let selection = walk::resolve(&repo, &index, &sel.snapshot.tree, &path)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if !g.json && !g.quiet {
        writeln!(
            out,
            "snapshot {} of [{}] at {}:",
            sel.id.short(),
            output::printable(&sel.snapshot.paths.join(" ")),
            output::local_time(&sel.snapshot.time)
        )?;
    }
    let mut print = |p: &Path, n: &Node| -> cairn::Result<bool> {
        let r = if g.json {
            serde_json::to_writer(&mut out, &json_node(p, n))
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
        } else if a.long {
            writeln!(out, "{}", long_line(p, n))
        } else {
            writeln!(out, "{}", output::path(p))
        };
        r.map_err(|e| cairn::Error::io("standard output", e))?;
        Ok(true)
    };
    match &selection {
        Selection::Dir { path, tree } => walk::walk(&repo, &index, tree, path, &mut print)?,
        Selection::Node { path, node } => {
            print(path, node)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn json_node(path: &Path, n: &Node) -> serde_json::Value {
    use std::os::unix::ffi::OsStrExt;
    let mut v = serde_json::to_value(n).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("path".into(), path.display().to_string().into());
        if std::str::from_utf8(path.as_os_str().as_bytes()).is_err() {
            o.insert(
                "path_bytes".into(),
                path.as_os_str().as_bytes().to_vec().into(),
            );
        }
        o.remove("content");
        o.insert("blobs".into(), n.content.len().into());
        for (k, t) in [("mtime", n.mtime), ("atime", n.atime), ("ctime", n.ctime)] {
            o.insert(k.into(), rfc3339(t).into());
        }
        o.insert("message_type".into(), "node".into());
    }
    v
}

/// A node's time as RFC 3339 in local time with nanoseconds, as `snapshots
/// --json` gives a snapshot's; `None` (null) for a time chrono can't represent
/// (it comes from the repository).
fn rfc3339(t: cairn::tree::Timestamp) -> Option<String> {
    chrono::DateTime::from_timestamp(t.0, t.1).map(|d| {
        d.with_timezone(&chrono::Local)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)
    })
}

/// One `ls -l`-style line; every text from the tree is escaped for the terminal.
fn long_line(path: &Path, n: &Node) -> String {
    let owner = n
        .user
        .as_deref()
        .map_or_else(|| n.uid.to_string(), |u| output::printable(u).into_owned());
    let group = n
        .group
        .as_deref()
        .map_or_else(|| n.gid.to_string(), |g| output::printable(g).into_owned());
    let time = chrono::DateTime::from_timestamp(n.mtime.0, n.mtime.1)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default();
    let mut line = format!(
        "{} {:>8} {:>8} {:>12} {} {}",
        output::mode_string(n.kind, n.mode),
        owner,
        group,
        n.size,
        time,
        output::path(path)
    );
    if n.kind == NodeKind::Symlink {
        line.push_str(" -> ");
        line.push_str(&output::printable(&String::from_utf8_lossy(
            n.link_target.as_deref().unwrap_or_default(),
        )));
    }
    line
}
