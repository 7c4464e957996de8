//! A class's state as its repositories hold it: its snapshots (tagged
//! `class=NAME`) and the records of its checks and drills. Nothing is kept on
//! the machine that runs the plan, so a plan run from another machine sees the
//! same state.

use chrono::{DateTime, FixedOffset};

use super::Interval;
use crate::error::Result;
use crate::id::{RecordId, SnapshotId};
use crate::record::{self, Record, RecordKind};
use crate::repository::Repository;
use crate::snapshot::Snapshot;

pub struct ClassState {
    /// The class's readable snapshots, oldest first.
    pub snapshots: Vec<(SnapshotId, Snapshot)>,
    /// Snapshot files of the repository that can't be read (of any class).
    pub unreadable_snapshots: usize,
    pub last_check: Option<(RecordId, Record)>,
    pub last_drill: Option<(RecordId, Record)>,
    /// Record files that can't be read.
    pub unreadable_records: usize,
}

impl ClassState {
    pub fn load(repo: &Repository, class: &str) -> Result<Self> {
        let tag = format!("class={class}");
        let (all, unreadable) = repo.list_snapshots_lenient()?;
        let snapshots = all
            .into_iter()
            .filter(|(_, s)| s.tags.contains(&tag))
            .collect();
        let (records, bad_records) = record::load_all(repo)?;
        let newest = |kind: RecordKind| {
            records
                .iter()
                .filter(|(_, r)| r.kind == kind && r.class.as_deref() == Some(class))
                .max_by_key(|(_, r)| time_key(&r.time))
                .cloned()
        };
        Ok(Self {
            snapshots,
            unreadable_snapshots: unreadable.len(),
            last_check: newest(RecordKind::Check),
            last_drill: newest(RecordKind::Drill),
            unreadable_records: bad_records.len(),
        })
    }

    /// The newest snapshot of the class.
    pub fn last(&self) -> Option<&(SnapshotId, Snapshot)> {
        self.snapshots.last()
    }

    /// When the newest snapshot without errors was taken: intervals count from
    /// it, so a backup that missed files is tried again at the next run.
    pub fn last_success(&self) -> Option<DateTime<FixedOffset>> {
        self.snapshots
            .iter()
            .rev()
            .filter(|(_, s)| s.errors.is_empty())
            .find_map(|(_, s)| s.time_parsed())
    }

    pub fn last_check_time(&self) -> Option<DateTime<FixedOffset>> {
        parse(self.last_check.as_ref().map(|(_, r)| r.time.as_str()))
    }

    pub fn last_drill_time(&self) -> Option<DateTime<FixedOffset>> {
        parse(self.last_drill.as_ref().map(|(_, r)| r.time.as_str()))
    }
}

fn parse(t: Option<&str>) -> Option<DateTime<FixedOffset>> {
    t.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
}

fn time_key(t: &str) -> i64 {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(i64::MIN)
}

/// How early a run may start what is due: a twentieth of the interval, at most
/// ten minutes. A timer that fires a few seconds before the hour still makes the
/// hourly backup, instead of putting it off to the next firing.
pub fn slack(every: Interval) -> chrono::Duration {
    let secs = (every.0.as_secs() / 20).min(600);
    chrono::Duration::seconds(i64::try_from(secs).unwrap_or(600))
}

/// When something done `last` (never: `None`) is next due.
pub fn next_due(
    last: Option<DateTime<FixedOffset>>,
    every: Interval,
) -> Option<DateTime<FixedOffset>> {
    let every = chrono::Duration::from_std(every.0).ok()?;
    last.and_then(|t| t.checked_add_signed(every))
}

/// Whether something done `last` is due at `now`.
pub fn is_due(
    last: Option<DateTime<FixedOffset>>,
    every: Interval,
    now: DateTime<FixedOffset>,
) -> bool {
    match next_due(last, every) {
        None => true,
        // A `now` at the end of time is past everything.
        Some(due) => now
            .checked_add_signed(slack(every))
            .is_none_or(|n| n >= due),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).expect("time")
    }

    #[test]
    fn due_after_the_interval_with_a_little_slack() {
        let hour = Interval::parse("1h").expect("interval");
        let last = Some(t("2026-01-01T10:00:00+00:00"));
        assert!(is_due(None, hour, t("2026-01-01T10:00:00+00:00")));
        assert!(!is_due(last, hour, t("2026-01-01T10:30:00+00:00")));
        // Three minutes early is within an hour's slack (a twentieth).
        assert!(is_due(last, hour, t("2026-01-01T10:57:00+00:00")));
        assert!(!is_due(last, hour, t("2026-01-01T10:56:00+00:00")));
        let week = Interval::parse("7d").expect("interval");
        // A week's slack is capped at ten minutes.
        assert!(!is_due(last, week, t("2026-01-08T09:49:00+00:00")));
        assert!(is_due(last, week, t("2026-01-08T09:50:00+00:00")));
        // A clock set back: not due.
        assert!(!is_due(last, hour, t("2026-01-01T09:00:00+00:00")));
    }
}
