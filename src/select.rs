//! Choosing snapshots: `latest`, `latest~N`, a unique id prefix, filtered by host,
//! tag and path, optionally followed by `:PATH` for a sub-tree.

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::repository::Repository;
use crate::snapshot::Snapshot;

#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    pub tags: Vec<String>,
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    /// Every given host, tag and path must match (tags: the snapshot has all of them).
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.hostname))
            && self.tags.iter().all(|t| s.tags.contains(t))
            && (self.paths.is_empty() || self.paths.iter().all(|p| s.paths.contains(p)))
    }
}

/// A resolved `SNAPSHOT[:PATH]`.
pub struct Selected {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    /// The part after `:`, if any.
    pub path: Option<String>,
    /// Snapshots that could not be read and so were not considered.
    pub skipped: Vec<(SnapshotId, crate::error::Error)>,
}

pub fn resolve(repo: &Repository, spec: &str, filter: &SnapshotFilter) -> Result<Selected> {
    let (id_spec, path) = match spec.split_once(':') {
        Some((a, b)) => (a, Some(b.to_string())),
        None => (spec, None),
    };
    let (all, skipped) = repo.list_snapshots_lenient()?;
    // An unreadable snapshot may be the newest (or the newest matching the
    // filters): `latest` would silently be an older one.
    if id_spec.starts_with("latest") && !skipped.is_empty() {
        return Err(latest_unknown(&skipped));
    }
    let all: Vec<(SnapshotId, Snapshot)> =
        all.into_iter().filter(|(_, s)| filter.matches(s)).collect();
    let (id, snapshot) = match pick(all, id_spec) {
        Ok(found) => found,
        // If the wanted snapshot is among the unreadable ones, say why it can't be used.
        Err(e) => match skipped
            .into_iter()
            .find(|(id, _)| id.to_hex().starts_with(&id_spec.to_ascii_lowercase()))
        {
            Some((_, why)) if !id_spec.is_empty() && !id_spec.starts_with("latest") => {
                return Err(why);
            }
            _ => return Err(e),
        },
    };
    Ok(Selected {
        id,
        snapshot,
        path,
        skipped,
    })
}

fn latest_unknown(skipped: &[(SnapshotId, Error)]) -> Error {
    let list: Vec<String> = skipped.iter().map(|(_, e)| e.to_string()).collect();
    let ids: Vec<String> = skipped.iter().map(|(id, _)| id.to_hex()).collect();
    Error::invalid(format!(
        "{} snapshot(s) can't be read ({}), so which snapshot is the latest is unknown: \
         name a snapshot by id (`cairn snapshots` lists the readable ones), or, if the \
         unreadable ones are damaged beyond use, remove them with `cairn forget {}`",
        skipped.len(),
        list.join("; "),
        ids.join(" ")
    ))
}

/// A snapshot named for removal: `latest`/`latest~N` as [`resolve`] chooses it, or
/// an id or unique prefix among every snapshot file, readable or not — a damaged
/// snapshot's file name is still its id. Returns the id and, for an unreadable
/// snapshot, why it can't be read (the filters can't be applied to it).
pub fn resolve_for_removal(
    repo: &Repository,
    spec: &str,
    filter: &SnapshotFilter,
) -> Result<(SnapshotId, Option<Error>)> {
    if spec.starts_with("latest") {
        return resolve(repo, spec, filter).map(|sel| (sel.id, None));
    }
    let lower = spec.to_ascii_lowercase();
    if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(format!(
            "{spec:?} is not a snapshot id, prefix, latest or latest~N"
        )));
    }
    let hits: Vec<SnapshotId> = repo
        .list_ids(crate::backend::FileType::Snapshot, SnapshotId::from_name)?
        .into_iter()
        .filter(|id| id.to_hex().starts_with(&lower))
        .collect();
    let id = match hits.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::invalid(format!("no snapshot file matches {spec:?}")));
        }
        many => {
            return Err(Error::invalid(format!(
                "{spec:?} is ambiguous: {} snapshots start with it",
                many.len()
            )));
        }
    };
    match repo.load_snapshot(&id) {
        Ok(s) if filter.matches(&s) => Ok((id, None)),
        Ok(_) => Err(Error::invalid(format!(
            "snapshot {} does not match the given --host/--tag/--path filters",
            id.short()
        ))),
        Err(e) => Ok((id, Some(e))),
    }
}

fn pick(mut all: Vec<(SnapshotId, Snapshot)>, spec: &str) -> Result<(SnapshotId, Snapshot)> {
    if let Some(rest) = spec.strip_prefix("latest") {
        let back: usize = match rest.strip_prefix('~') {
            Some(n) => n
                .parse()
                .map_err(|_| Error::invalid(format!("{spec:?}: expected latest or latest~N")))?,
            None if rest.is_empty() => 0,
            None => {
                return Err(Error::invalid(format!(
                    "{spec:?}: expected latest or latest~N"
                )));
            }
        };
        let n = all.len();
        return if back < n {
            Ok(all.swap_remove(n - 1 - back))
        } else {
            Err(Error::invalid(format!(
                "{spec}: there {} only {}",
                if n == 1 { "is" } else { "are" },
                crate::text::count(n, "matching snapshot", "matching snapshots")
            )))
        };
    }
    let lower = spec.to_ascii_lowercase();
    if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(format!(
            "{spec:?} is not a snapshot id, prefix, latest or latest~N"
        )));
    }
    let mut hits: Vec<(SnapshotId, Snapshot)> = all
        .into_iter()
        .filter(|(id, _)| id.to_hex().starts_with(&lower))
        .collect();
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => Err(Error::invalid(format!(
            "no snapshot matches {spec:?} (with the given filters)"
        ))),
        n => Err(Error::invalid(format!(
            "{spec:?} is ambiguous: {n} snapshots start with it"
        ))),
    }
}

/// The latest snapshot with this host and the same set of paths: the default parent.
/// Snapshots that could not be read, with why.
pub type Unreadable = Vec<(SnapshotId, Error)>;

/// The latest snapshot of `host` with exactly `paths`, and the snapshots that
/// could not be read on the way (any of them may have been the one).
pub fn find_parent(
    repo: &Repository,
    host: &str,
    paths: &[String],
) -> Result<(Option<(SnapshotId, Snapshot)>, Unreadable)> {
    let mut want: Vec<&String> = paths.iter().collect();
    want.sort();
    // An unreadable snapshot can't serve as a parent; the others still can.
    let (all, skipped) = repo.list_snapshots_lenient()?;
    let found = all.into_iter().rev().find(|(_, s)| {
        let mut have: Vec<&String> = s.paths.iter().collect();
        have.sort();
        s.hostname == host && have == want
    });
    Ok((found, skipped))
}
