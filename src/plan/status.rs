//! `cairn plan status`: one row per class and repository, from what the
//! repositories hold.

use std::collections::HashSet;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use super::state::{self, ClassState};
use super::{Class, Plan};
use crate::error::Result;
use crate::id::BlobId;
use crate::index::Index;
use crate::pack::BlobKind;
use crate::record::Record;
use crate::repository::Repository;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    pub class: String,
    pub repository: String,
    /// `primary` (the class's repository) or `copy`.
    pub role: &'static str,
    /// Why the repository could not be read; the other fields are then empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Snapshot or index files this user saw there that are gone, with no
    /// cairn command having removed them (`crate::seen`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_snapshot_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
    /// No snapshot without errors within the class's interval.
    pub overdue: bool,
    pub snapshots: usize,
    /// Sum of the file sizes of the newest snapshot: what a full restore writes.
    pub size_bytes: u64,
    /// Sum of the file sizes of all the class's snapshots.
    pub logical_bytes: u64,
    /// Stored (compressed, encrypted) size of the blobs the class's snapshots
    /// use, each counted once.
    pub stored_bytes: u64,
    /// Plaintext size of the data blobs the class's snapshots use, each
    /// counted once: what deduplication left to store before compression.
    pub unique_bytes: u64,
    /// `logical_bytes / unique_bytes`: what deduplication saves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup_ratio: Option<f64>,
    /// `logical_bytes / stored_bytes`: deduplication and compression together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<RecordSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<RecordSummary>,
    /// Restore throughput measured by the last drill, bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_bytes_per_second: Option<f64>,
    /// `size_bytes` at that throughput: how long restoring the whole class
    /// would take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_restore_seconds: Option<f64>,
    pub check_overdue: bool,
    pub drill_overdue: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct RecordSummary {
    pub id: String,
    pub time: String,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
}

impl RecordSummary {
    fn of(id: String, r: &Record) -> Self {
        Self {
            id,
            time: r.time.clone(),
            ok: r.ok,
            detail: r.detail.clone(),
            problems: r.problems.clone(),
            files: r.files,
            bytes: r.bytes,
            seconds: r.seconds,
        }
    }
}

/// The rows of every class (or of `only`), opening each repository once.
pub fn rows(
    plan: &Plan,
    only: Option<&str>,
    now: DateTime<FixedOffset>,
    open: &mut dyn FnMut(&str) -> std::result::Result<std::sync::Arc<Repository>, String>,
) -> Vec<Row> {
    let mut out = Vec::new();
    for class in &plan.classes {
        if only.is_some_and(|c| c != class.name) {
            continue;
        }
        let mut names = vec![(class.repository.clone(), "primary")];
        names.extend(class.copy_to.iter().map(|c| (c.clone(), "copy")));
        for (name, role) in names {
            let mut row = Row {
                class: class.name.clone(),
                repository: name.clone(),
                role,
                ..Row::default()
            };
            let filled = open(&name)
                .and_then(|repo| fill(&mut row, class, &repo, now).map_err(|e| e.to_string()));
            if let Err(e) = filled {
                row.error = Some(e);
                row.overdue = true;
            }
            out.push(row);
        }
    }
    out
}

fn fill(row: &mut Row, class: &Class, repo: &Repository, now: DateTime<FixedOffset>) -> Result<()> {
    let st = ClassState::load(repo, &class.name)?;
    row.snapshots = st.snapshots.len();
    if let Some((id, s)) = st.last() {
        row.last_snapshot = Some(id.to_hex());
        row.last_snapshot_time = Some(s.time.clone());
        row.age_seconds = s.time_parsed().map(|t| (now - t).num_seconds());
        row.size_bytes = s.summary.total_bytes;
    }
    row.overdue = state::is_due(st.last_success(), class.every, now);
    row.logical_bytes = st
        .snapshots
        .iter()
        .map(|(_, s)| s.summary.total_bytes)
        .sum();
    let index = repo.load_index(&mut |_, _| {})?;
    let sizes = sizes(repo, &index, st.snapshots.iter().map(|(_, s)| s.tree))?;
    row.stored_bytes = sizes.stored;
    row.unique_bytes = sizes.unique;
    if sizes.unique > 0 {
        row.dedup_ratio = Some(row.logical_bytes as f64 / sizes.unique as f64);
    }
    if sizes.stored > 0 {
        row.total_ratio = Some(row.logical_bytes as f64 / sizes.stored as f64);
    }
    if let Some((id, r)) = &st.last_check {
        row.last_check = Some(RecordSummary::of(id.to_hex(), r));
    }
    if let Some((id, r)) = &st.last_drill {
        row.last_drill = Some(RecordSummary::of(id.to_hex(), r));
        if r.ok && r.seconds > 0.0 && r.bytes > 0 {
            let rate = r.bytes as f64 / r.seconds;
            row.restore_bytes_per_second = Some(rate);
            row.estimated_restore_seconds = Some(row.size_bytes as f64 / rate);
        }
    }
    if let Some(c) = &class.check {
        row.check_overdue = state::is_due(st.last_check_time(), c.every, now);
    }
    if let Some(d) = &class.drill {
        row.drill_overdue = state::is_due(st.last_drill_time(), d.every, now);
    }
    Ok(())
}

struct Sizes {
    /// Stored bytes of the tree and data blobs.
    stored: u64,
    /// Plaintext bytes of the data blobs.
    unique: u64,
}

/// Sizes of the tree and data blobs reachable from `roots`, each blob counted
/// once. Trees shared between snapshots are read once.
fn sizes(repo: &Repository, index: &Index, roots: impl Iterator<Item = BlobId>) -> Result<Sizes> {
    let mut seen_trees: HashSet<BlobId> = HashSet::new();
    let mut seen_data: HashSet<BlobId> = HashSet::new();
    let mut todo: Vec<BlobId> = roots.collect();
    let mut total = 0u64;
    let mut unique = 0u64;
    while let Some(id) = todo.pop() {
        if !seen_trees.insert(id) {
            continue;
        }
        if let Some((_, e)) = index.get(BlobKind::Tree, &id) {
            total += u64::from(e.length);
        }
        let tree = repo.load_tree(index, &id)?;
        for n in tree.nodes {
            for b in n.content {
                if seen_data.insert(b) {
                    if let Some((_, e)) = index.get(BlobKind::Data, &b) {
                        total += u64::from(e.length);
                        unique += u64::from(e.raw_length);
                    }
                }
            }
            if let Some(sub) = n.subtree {
                todo.push(sub);
            }
        }
    }
    Ok(Sizes {
        stored: total,
        unique,
    })
}
