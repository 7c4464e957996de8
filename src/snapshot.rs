//! Snapshot files under `snapshots/` (format-spec/README.md, "Snapshots").

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use serde::{Deserialize, Serialize};

use crate::id::{BlobId, SnapshotId};

pub const SNAPSHOT_MAX_LEN: u64 = 256 * 1024 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unchanged: u64,
    /// Files, directories and other entries in the snapshot.
    pub entries: u64,
    /// Sum of the sizes of the files in the snapshot.
    pub total_bytes: u64,
    /// Bytes read from the sources (unchanged files are not read).
    pub bytes_read: u64,
    /// Plaintext bytes of the new blobs.
    pub bytes_new: u64,
    /// Bytes written to the repository (packs, index files and this snapshot).
    pub bytes_added: u64,
    pub data_blobs_new: u64,
    pub tree_blobs_new: u64,
    pub started: String,
    pub finished: String,
}

/// A source that could not be backed up, or changed while being read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceProblem {
    pub path: String,
    pub error: String,
}

/// Problems a snapshot records, each list at most this many...
pub const MAX_RECORDED: usize = 100_000;
/// ...and at most this many bytes of paths and messages: a backup with millions
/// of unreadable files, or a repair that drops as many, must still write a
/// snapshot within the size readers accept ([`SNAPSHOT_MAX_LEN`], spec §17).
pub const MAX_RECORDED_BYTES: usize = 64 << 20;

/// A snapshot's error or warning list being filled, and how many did not fit.
#[derive(Default)]
pub struct Recorded {
    list: Vec<SourceProblem>,
    bytes: usize,
    dropped: u64,
}

impl Recorded {
    pub fn push(&mut self, p: SourceProblem) {
        let size = p.path.len() + p.error.len();
        if self.list.len() < MAX_RECORDED && self.bytes + size <= MAX_RECORDED_BYTES {
            self.bytes += size;
            self.list.push(p);
        } else {
            self.dropped += 1;
        }
    }

    /// The list, ending with one entry that counts what did not fit, if any.
    pub fn into_list(mut self, what: &str) -> Vec<SourceProblem> {
        if self.dropped > 0 {
            self.list.push(SourceProblem {
                path: String::new(),
                error: format!(
                    "{} more {what} were reported but not recorded here, to keep the snapshot \
                     within its size limit",
                    self.dropped
                ),
            });
        }
        self.list
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// RFC 3339 with nanoseconds and the local offset.
    pub time: String,
    pub hostname: String,
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    /// The backed-up paths, absolute.
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub tree: BlobId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    /// For a copy (`cairn copy`): the id of the snapshot it copies, in the
    /// repository that snapshot was first written to (a copy of a copy names the
    /// first one). Format-spec §14.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
    /// For a snapshot `cairn tag` or `cairn rewrite` made from another: that
    /// one's id. Format-spec §14.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<SnapshotId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    pub program_version: String,
    pub summary: Summary,
    /// Sources that could not be read; they are missing from the tree.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<SourceProblem>,
    /// Sources that changed while being read; what was read is stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<SourceProblem>,
}

impl Snapshot {
    pub fn time_parsed(&self) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        chrono::DateTime::parse_from_rfc3339(&self.time).ok()
    }

    /// Sort key: time in nanoseconds since the epoch (unparseable times first).
    pub fn sort_key(&self) -> i64 {
        self.time_parsed()
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(i64::MIN)
    }
}

/// Sorts snapshots oldest first: by time; among equal times, a snapshot after the
/// one it replaces (`tag`, `rewrite` and `repair snapshots` keep the original's
/// time and name it as `replaces`; `repair snapshots` also as `parent`, which is
/// all an older one recorded), so the replacement is the latest, not the
/// original; then by id.
pub fn sort_oldest_first(list: &mut [(SnapshotId, Snapshot)]) {
    let known: std::collections::HashMap<SnapshotId, (i64, [Option<SnapshotId>; 2])> = list
        .iter()
        .map(|(id, s)| (*id, (s.sort_key(), [s.replaces, s.parent])))
        .collect();
    // How many replacements deep: steps back through the snapshots of the same
    // time each one replaces. Bounded by the list's length, though ids are
    // hashes and can't form a loop.
    let generation = |id: &SnapshotId| {
        let mut n = 0usize;
        let mut at = *id;
        while let Some((time, before)) = known.get(&at) {
            let same_time = before
                .iter()
                .flatten()
                .find(|b| known.get(b).is_some_and(|(t, _)| t == time));
            match same_time {
                Some(b) if n < known.len() => {
                    n += 1;
                    at = *b;
                }
                _ => break,
            }
        }
        n
    };
    let keys: std::collections::HashMap<SnapshotId, usize> =
        known.keys().map(|id| (*id, generation(id))).collect();
    list.sort_by_key(|(id, s)| (s.sort_key(), keys.get(id).copied().unwrap_or(0), *id));
}

pub fn now_rfc3339() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

pub fn username() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time: &str, parent: Option<SnapshotId>) -> Snapshot {
        Snapshot {
            time: time.into(),
            hostname: "h".into(),
            username: "u".into(),
            uid: 0,
            gid: 0,
            paths: vec!["/d".into()],
            tags: vec![],
            tree: BlobId([0; 32]),
            parent,
            original: None,
            replaces: None,
            excludes: vec![],
            program_version: String::new(),
            summary: Summary::default(),
            errors: vec![],
            warnings: vec![],
        }
    }

    /// A repaired snapshot keeps its original's time and names it as parent: it
    /// sorts after it whatever their ids, and a repair of it after both.
    #[test]
    fn a_replacement_sorts_after_the_snapshot_it_replaces() {
        let t = "2026-01-01T10:00:00+00:00";
        let original = SnapshotId([9; 32]);
        let repaired = SnapshotId([5; 32]);
        let again = SnapshotId([1; 32]);
        let older = SnapshotId([8; 32]);
        let mut list = vec![
            (again, at(t, Some(repaired))),
            (original, at(t, Some(older))),
            (repaired, at(t, Some(original))),
            (older, at("2026-01-01T09:00:00+00:00", None)),
        ];
        sort_oldest_first(&mut list);
        let ids: Vec<SnapshotId> = list.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [older, original, repaired, again]);
        // `replaces` orders the same way, whatever `parent` says.
        let mut tagged = at(t, Some(older));
        tagged.replaces = Some(original);
        let mut list = vec![(again, tagged), (original, at(t, Some(older)))];
        sort_oldest_first(&mut list);
        assert_eq!(list[1].0, again);
        // Unrelated snapshots of equal time still go by id.
        let mut list = vec![(original, at(t, None)), (repaired, at(t, None))];
        sort_oldest_first(&mut list);
        assert_eq!(list[0].0, repaired);
    }

    /// At most MAX_RECORDED problems, and MAX_RECORDED_BYTES of them, then one
    /// entry that counts the rest.
    #[test]
    fn recorded_problems_are_capped_and_the_rest_counted() {
        let problem = |i: usize, len: usize| SourceProblem {
            path: format!("/f{i}"),
            error: "x".repeat(len),
        };
        let mut r = Recorded::default();
        for i in 0..MAX_RECORDED + 5 {
            r.push(problem(i, 10));
        }
        let list = r.into_list("errors");
        assert_eq!(list.len(), MAX_RECORDED + 1);
        assert_eq!(
            list[MAX_RECORDED - 1].path,
            format!("/f{}", MAX_RECORDED - 1)
        );
        assert!(list[MAX_RECORDED].error.starts_with("5 more errors"));

        let mut r = Recorded::default();
        for i in 0..100 {
            r.push(problem(i, 4 << 20));
        }
        let list = r.into_list("warnings");
        assert_eq!(list.len(), 16, "15 of 4 MiB fit in 64 MiB, then the count");
        assert!(list[15].error.starts_with("85 more warnings"));
        assert!(Recorded::default().into_list("errors").is_empty());
    }
}
