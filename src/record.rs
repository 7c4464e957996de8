//! Records of checks and restore drills under `records/` (format-spec/README.md,
//! §20 "Records"): small sealed files that let a backup plan run from any
//! machine see when the repository was last checked and last drilled, and how
//! that went. They describe the repository's health; they hold no backup data,
//! so a damaged one loses nothing but its own history.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::format::{self, FileKind, SealKind};
use crate::id::{IndexId, RecordId, SnapshotId};
use crate::lock::LockGuard;
use crate::repository::Repository;

/// Readers refuse a record file, and a decoded record payload, larger than this
/// (format-spec §17). Records are a few hundred bytes; the cap only has to stop
/// a forged file from costing memory.
pub const RECORD_MAX_LEN: u64 = 1024 * 1024;

/// A record keeps at most this many problems...
pub const MAX_PROBLEMS: usize = 1000;
/// ...of at most this many bytes in all (each one cut to [`MAX_PROBLEM_LEN`]),
/// followed by one entry counting those left out: a drill of a badly damaged
/// repository must still write a record well within [`RECORD_MAX_LEN`].
pub const MAX_PROBLEM_BYTES: usize = 256 * 1024;
/// The longest single problem kept, in bytes.
pub const MAX_PROBLEM_LEN: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// `cairn check`.
    Check,
    /// `cairn drill`: a restore rehearsal.
    Drill,
    /// Snapshot or index files a cairn command removed (`forget`, `prune`,
    /// `repair`), written before it removes them: what tells a legitimate
    /// removal from a storage that lost or rolled back files (`crate::seen`).
    Removal,
}

impl RecordKind {
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Check => "check",
            RecordKind::Drill => "drill",
            RecordKind::Removal => "removal",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        match s {
            "check" => Some(RecordKind::Check),
            "drill" => Some(RecordKind::Drill),
            "removal" => Some(RecordKind::Removal),
            _ => None,
        }
    }
}

/// One check or drill, as stored (field meanings in format-spec §20).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub kind: RecordKind,
    /// RFC 3339: when it started ([`crate::clock::now_rfc3339`]).
    pub time: String,
    pub hostname: String,
    pub username: String,
    pub program_version: String,
    /// The plan class it ran for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// A drill's snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotId>,
    pub ok: bool,
    /// What went wrong, bounded by [`MAX_PROBLEMS`] and [`MAX_PROBLEM_BYTES`]
    /// when saved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Drill: files restored and verified; check: packs read.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub files: u64,
    /// Drill: bytes restored; check: bytes read.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes: u64,
    /// How long it took (a drill: its restore).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub seconds: f64,
    /// What was done, e.g. "read-data-subset 5%" or "50 files".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Removal: the snapshot files removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_snapshots: Vec<SnapshotId>,
    /// Removal: the index files removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_index: Vec<IndexId>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

impl Record {
    /// A record of `kind` starting now, by this host and user, with nothing
    /// else filled in (and `ok` false until the caller says otherwise).
    pub fn new(kind: RecordKind) -> Self {
        Self {
            kind,
            time: crate::clock::now_rfc3339(),
            hostname: crate::snapshot::hostname(),
            username: crate::snapshot::username(),
            program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
            class: None,
            snapshot: None,
            ok: false,
            problems: Vec::new(),
            files: 0,
            bytes: 0,
            seconds: 0.0,
            detail: String::new(),
            removed_snapshots: Vec::new(),
            removed_index: Vec::new(),
        }
    }

    /// Sort key: time in nanoseconds since the epoch (unparseable times first).
    pub fn sort_key(&self) -> i64 {
        chrono::DateTime::parse_from_rfc3339(&self.time)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(i64::MIN)
    }
}

/// `problems` within [`MAX_PROBLEMS`] and [`MAX_PROBLEM_BYTES`], each cut to
/// [`MAX_PROBLEM_LEN`], the last entry counting those left out.
pub fn bound_problems(problems: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut dropped = 0usize;
    for p in problems {
        let p = cut(p, MAX_PROBLEM_LEN);
        if out.len() < MAX_PROBLEMS && bytes + p.len() <= MAX_PROBLEM_BYTES {
            bytes += p.len();
            out.push(p);
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        out.push(format!(
            "{dropped} more problems were found but not recorded, to keep the record small"
        ));
    }
    out
}

/// `s` cut to at most `max` bytes, on a character boundary, marked with "…".
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or_default())
}

/// The msgpack payload of a record (format-spec §20).
pub fn encode(r: &Record) -> Vec<u8> {
    format::to_msgpack(r)
}

/// A record's `kind` alone, read first: a kind from a newer cairn is not
/// damage, and must not read as such.
#[derive(Deserialize)]
struct KindOnly {
    kind: String,
}

/// Decodes a record's payload. Unknown keys are ignored; a `kind` this cairn
/// doesn't know is [`Error::UnknownRecordKind`] (a newer cairn's record: not
/// damage).
pub fn decode(plain: &[u8], what: &dyn Fn() -> String) -> Result<Record> {
    let kind: KindOnly = format::from_msgpack(plain, what)?;
    if RecordKind::from_name(&kind.kind).is_none() {
        return Err(Error::UnknownRecordKind {
            what: what(),
            kind: kind.kind,
        });
    }
    format::from_msgpack(plain, what)
}

/// Writes a record under `records/`, bounding its problems first. The caller
/// holds a lock on the repository (shared, as `check` and `drill` do, or
/// exclusive): records are written under a lock like every other file, so that
/// nothing that removes files runs beside the write.
pub fn save(repo: &Repository, r: &Record) -> Result<RecordId> {
    let mut bounded = r.clone();
    bounded.problems = bound_problems(&r.problems);
    let plain = encode(&bounded);
    // Readers refuse a larger one (spec §17): never write it.
    if plain.len() as u64 > RECORD_MAX_LEN {
        return Err(Error::invalid(format!(
            "the {} record would be {} bytes, more than the {RECORD_MAX_LEN} readers accept; \
             it was not written",
            r.kind.name(),
            plain.len()
        )));
    }
    let (name, _) =
        repo.save_sealed(FileKind::Record, SealKind::Record, FileType::Record, &plain)?;
    RecordId::from_name(&name)
}

/// Reads one record.
pub fn load(repo: &Repository, id: &RecordId) -> Result<Record> {
    let what = || format!("record {id}");
    let plain = repo.load_sealed(
        FileKind::Record,
        SealKind::Record,
        FileType::Record,
        &id.to_hex(),
        RECORD_MAX_LEN,
        &what,
    )?;
    decode(&plain, &what)
}

/// Readable records (oldest first: by time, then id) and the unreadable ones
/// with their errors. A repository without `records/` has none.
pub type Records = (Vec<(RecordId, Record)>, Vec<(RecordId, Error)>);

/// Every record; see [`Records`].
pub fn load_all(repo: &Repository) -> Result<Records> {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for id in repo.list_ids(FileType::Record, RecordId::from_name)? {
        match load(repo, &id) {
            Ok(r) => ok.push((id, r)),
            Err(e) => bad.push((id, e)),
        }
    }
    ok.sort_by_key(|(id, r)| (r.sort_key(), *id));
    Ok((ok, bad))
}

/// Removes record files, under the caller's exclusive lock (checked first).
pub fn remove(repo: &Repository, lock: &LockGuard, ids: &[RecordId]) -> Result<()> {
    lock.still_valid()?;
    for id in ids {
        repo.backend().remove(FileType::Record, &id.to_hex())?;
    }
    Ok(())
}

/// Ids a removal record lists at most: 10,000 ids of 34 bytes keep it far
/// below [`RECORD_MAX_LEN`].
pub const REMOVAL_IDS_PER_RECORD: usize = 10_000;

/// Writes the removal records for `snapshots` and `index` files that the
/// caller (holding the exclusive lock) is about to remove: before removing
/// them, so that no file is ever gone without its record. `what` says which
/// command removes them.
pub fn note_removal(
    repo: &Repository,
    lock: &LockGuard,
    what: &str,
    snapshots: &[SnapshotId],
    index: &[IndexId],
) -> Result<()> {
    if snapshots.is_empty() && index.is_empty() {
        return Ok(());
    }
    lock.still_valid()?;
    let mut s = snapshots.chunks(REMOVAL_IDS_PER_RECORD);
    let mut i = index.chunks(REMOVAL_IDS_PER_RECORD);
    loop {
        let (a, b) = (s.next(), i.next());
        if a.is_none() && b.is_none() {
            return Ok(());
        }
        let mut r = Record::new(RecordKind::Removal);
        r.ok = true;
        r.detail = what.to_string();
        r.removed_snapshots = a.unwrap_or_default().to_vec();
        r.removed_index = b.unwrap_or_default().to_vec();
        save(repo, &r)?;
    }
}

/// Which of `records` (oldest first, as [`load_all`] gives them) to remove so
/// that only the newest `keep` of each (kind, class) remain.
pub fn trim_plan(records: &[(RecordId, Record)], keep: usize) -> Vec<RecordId> {
    type Group<'a> = (RecordKind, Option<&'a str>);
    let mut groups: HashMap<Group, Vec<(i64, RecordId)>> = HashMap::new();
    // Removal records are what rollback detection reads: never trimmed.
    for (id, r) in records
        .iter()
        .filter(|(_, r)| r.kind != RecordKind::Removal)
    {
        groups
            .entry((r.kind, r.class.as_deref()))
            .or_default()
            .push((r.sort_key(), *id));
    }
    let mut out: Vec<RecordId> = Vec::new();
    for mut list in groups.into_values() {
        list.sort();
        let surplus = list.len().saturating_sub(keep);
        out.extend(list.into_iter().take(surplus).map(|(_, id)| id));
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w() -> String {
        "test record".into()
    }

    fn sample(kind: RecordKind, time: &str, class: Option<&str>) -> Record {
        Record {
            time: time.into(),
            class: class.map(String::from),
            ..Record::new(kind)
        }
    }

    #[test]
    fn round_trip_and_defaults_omitted() {
        let mut r = sample(RecordKind::Drill, "2026-12-01T10:00:00+00:00", Some("data"));
        r.snapshot = Some(SnapshotId([3; 32]));
        r.ok = true;
        r.files = 50;
        r.bytes = 1 << 20;
        r.seconds = 1.5;
        r.detail = "50 files".into();
        assert_eq!(decode(&encode(&r), &w).unwrap(), r);
        let bare = sample(RecordKind::Check, "2026-12-01T10:00:00+00:00", None);
        let bytes = encode(&bare);
        assert_eq!(decode(&bytes, &w).unwrap(), bare);
        let map: HashMap<String, serde::de::IgnoredAny> = rmp_serde::from_slice(&bytes).unwrap();
        let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "hostname",
                "kind",
                "ok",
                "program_version",
                "time",
                "username"
            ]
        );
    }

    /// Unknown keys are ignored; an unknown kind is a newer cairn's record, not
    /// damage; a missing required key is damage.
    #[test]
    fn forward_compatible_decoding() {
        #[derive(Serialize)]
        struct Newer<'a> {
            kind: &'a str,
            time: &'a str,
            hostname: &'a str,
            username: &'a str,
            program_version: &'a str,
            ok: bool,
            flavour: &'a str,
        }
        let newer = |kind| Newer {
            kind,
            time: "2026-12-01T10:00:00+00:00",
            hostname: "h",
            username: "u",
            program_version: "cairn 9",
            ok: true,
            flavour: "new",
        };
        let r = decode(&format::to_msgpack(&newer("drill")), &w).unwrap();
        assert_eq!((r.kind, r.ok, r.files), (RecordKind::Drill, true, 0));
        assert!(matches!(
            decode(&format::to_msgpack(&newer("verify")), &w),
            Err(Error::UnknownRecordKind { .. })
        ));
        let missing = format::to_msgpack(&KindOnlyOut { kind: "check" });
        assert!(matches!(decode(&missing, &w), Err(Error::Corrupt { .. })));
        assert!(matches!(decode(b"\xc1", &w), Err(Error::Corrupt { .. })));
    }

    #[derive(Serialize)]
    struct KindOnlyOut<'a> {
        kind: &'a str,
    }

    #[test]
    fn problems_are_bounded() {
        let many: Vec<String> = (0..MAX_PROBLEMS + 10).map(|i| format!("p{i}")).collect();
        let b = bound_problems(&many);
        assert_eq!(b.len(), MAX_PROBLEMS + 1);
        assert!(b[MAX_PROBLEMS].starts_with("10 more problems"));
        let long = vec!["é".repeat(MAX_PROBLEM_LEN)];
        let b = bound_problems(&long);
        assert!(b[0].len() <= MAX_PROBLEM_LEN && b[0].ends_with('…'));
        let big: Vec<String> = (0..200).map(|_| "x".repeat(MAX_PROBLEM_LEN)).collect();
        let b = bound_problems(&big);
        assert_eq!(b.len(), MAX_PROBLEM_BYTES / MAX_PROBLEM_LEN + 1);
        assert!(bound_problems(&[]).is_empty());
    }

    #[test]
    fn trim_keeps_the_newest_per_kind_and_class() {
        let t = |h: u32| format!("2026-12-01T{h:02}:00:00+00:00");
        let records: Vec<(RecordId, Record)> = vec![
            (
                RecordId([1; 32]),
                sample(RecordKind::Drill, &t(1), Some("a")),
            ),
            (
                RecordId([2; 32]),
                sample(RecordKind::Drill, &t(2), Some("a")),
            ),
            (
                RecordId([3; 32]),
                sample(RecordKind::Drill, &t(3), Some("a")),
            ),
            (
                RecordId([4; 32]),
                sample(RecordKind::Check, &t(1), Some("a")),
            ),
            (RecordId([5; 32]), sample(RecordKind::Drill, &t(1), None)),
        ];
        assert_eq!(
            trim_plan(&records, 2),
            [RecordId([1; 32])],
            "only the oldest drill of class a goes"
        );
        assert_eq!(trim_plan(&records, 0).len(), 5);
        assert!(trim_plan(&records, 3).is_empty());
    }

    #[test]
    fn saved_records_load_oldest_first_and_are_removed() {
        let (_dir, repo) = crate::lock::tests::repo();
        assert_eq!(load_all(&repo).unwrap().0.len(), 0);
        let later = sample(RecordKind::Check, "2026-12-02T00:00:00+00:00", None);
        let earlier = sample(RecordKind::Drill, "2026-12-01T00:00:00+00:00", None);
        let a = save(&repo, &later).unwrap();
        let b = save(&repo, &earlier).unwrap();
        let (ok, bad) = load_all(&repo).unwrap();
        assert!(bad.is_empty());
        assert_eq!(ok, vec![(b, earlier), (a, later)]);
        let lock = crate::lock::acquire(&repo, true).unwrap();
        remove(&repo, &lock, &[a]).unwrap();
        assert_eq!(load_all(&repo).unwrap().0.len(), 1);
    }
}
