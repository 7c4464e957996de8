use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};

use cairn::id::{BlobId, SnapshotId};
use cairn::inspect::stats;

use super::Out;
use crate::cli::output::{self, count};
use crate::cli::{FilterArgs, GlobalArgs, load_index, open, warn_skipped};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// What restoring the snapshots would write: entries and file sizes
    RestoreSize,
    /// Distinct file contents (a file stored twice counts once)
    FilesByContents,
    /// The distinct blobs referenced: plaintext and stored size, compression
    /// and deduplication
    RawData,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::RestoreSize => "restore-size",
            Mode::FilesByContents => "files-by-contents",
            Mode::RawData => "raw-data",
        }
    }
}

#[derive(Args)]
pub struct StatsArgs {
    /// Snapshots (id prefix, latest or latest~N, optionally with :PATH, a
    /// directory in it). Default: every snapshot the filters let through, and
    /// totals for the whole repository
    snapshots: Vec<String>,
    /// What to count
    #[arg(long, value_enum, default_value_t = Mode::RestoreSize)]
    mode: Mode,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &GlobalArgs, a: StatsArgs) -> Result<ExitCode> {
    let repo = open(g)?;
    let index = load_index(g, &repo)?;
    let mut ids: Vec<SnapshotId> = Vec::new();
    let mut roots: Vec<BlobId> = Vec::new();
    let mut unreadable = 0;
    if a.snapshots.is_empty() {
        let filter = a.filter.filter()?;
        let (all, bad) = repo.list_snapshots_lenient()?;
        warn_skipped(g, &bad);
        unreadable = bad.len();
        for (id, s) in all.into_iter().filter(|(_, s)| filter.matches(s)) {
            ids.push(id);
            roots.push(s.tree);
        }
    } else {
        let mut seen = std::collections::HashSet::new();
        for spec in &a.snapshots {
            let sel = a.filter.resolve(&repo, spec)?;
            let path = sel.path.as_deref().unwrap_or("/");
            let found = cairn::inspect::locate(&repo, &index, &sel.snapshot.tree, path)
                .with_context(|| format!("in snapshot {}", sel.id.short()))?;
            let tree = found.tree.ok_or_else(|| {
                anyhow!(
                    "{spec}: {} is not a directory; stats counts directories",
                    output::path(&found.path)
                )
            })?;
            if seen.insert((sel.id, found.path)) {
                ids.push(sel.id);
                roots.push(tree);
            }
        }
    }
    let figures = match a.mode {
        Mode::RestoreSize => serde_json::to_value(stats::restore_size(&repo, &index, &roots)?),
        Mode::FilesByContents => {
            serde_json::to_value(stats::files_by_contents(&repo, &index, &roots)?)
        }
        Mode::RawData => serde_json::to_value(stats::raw_data(&repo, &index, &roots)?),
    }
    .unwrap_or_default();
    let totals = a
        .snapshots
        .is_empty()
        .then(|| stats::repository_totals(&index));
    let mut out = Out::new();
    if g.json {
        let mut doc = serde_json::Map::new();
        doc.insert("mode".into(), a.mode.name().into());
        doc.insert(
            "snapshots".into(),
            ids.iter().map(|i| i.to_hex()).collect::<Vec<_>>().into(),
        );
        if let Some(o) = figures.as_object() {
            doc.extend(o.clone());
        }
        doc.insert(
            "repository".into(),
            totals
                .as_ref()
                .and_then(|t| serde_json::to_value(t).ok())
                .unwrap_or_default(),
        );
        out.json(&serde_json::Value::Object(doc))?;
    } else {
        out.line(format_args!(
            "{} ({}):",
            count(ids.len(), "snapshot", "snapshots"),
            a.mode.name()
        ))?;
        for (label, text) in describe(a.mode, &figures) {
            out.line(format_args!("  {:<19}{text}", format!("{label}:")))?;
        }
        if let Some(t) = &totals {
            out.line(format_args!("repository:"))?;
            out.line(format_args!(
                "  {:<19}{}, {}",
                "packs:",
                t.packs,
                sized(t.pack_bytes)
            ))?;
            out.line(format_args!(
                "  {:<19}{} data, {} tree, {} plaintext",
                "blobs:",
                t.data_blobs,
                t.tree_blobs,
                sized(t.plaintext_bytes)
            ))?;
        }
    }
    out.flush()?;
    if unreadable > 0 {
        bail!(
            "{} could not be read and {} left out of these figures; `cairn check` shows the \
             damage",
            count(unreadable, "snapshot", "snapshots"),
            if unreadable == 1 { "is" } else { "are" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn sized(n: u64) -> String {
    format!("{} ({n} bytes)", output::bytes(n))
}

/// The text lines of a mode's figures.
fn describe(mode: Mode, v: &serde_json::Value) -> Vec<(&'static str, String)> {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let ratio = |k: &str| {
        v[k].as_f64()
            .map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"))
    };
    match mode {
        Mode::RestoreSize => vec![
            ("files", n("files").to_string()),
            ("directories", n("dirs").to_string()),
            ("others", n("others").to_string()),
            ("total size", sized(n("bytes"))),
        ],
        Mode::FilesByContents => vec![
            ("distinct contents", n("contents").to_string()),
            ("total size", sized(n("bytes"))),
        ],
        Mode::RawData => {
            let mut lines = vec![
                ("data blobs", n("data_blobs").to_string()),
                ("tree blobs", n("tree_blobs").to_string()),
                ("plaintext size", sized(n("plaintext_bytes"))),
                ("stored size", sized(n("stored_bytes"))),
                ("compression ratio", ratio("compression_ratio")),
                ("file data", sized(n("logical_bytes"))),
                ("dedup ratio", ratio("dedup_ratio")),
            ];
            if n("missing_blobs") > 0 {
                lines.push(("missing blobs", n("missing_blobs").to_string()));
            }
            lines
        }
    }
}
