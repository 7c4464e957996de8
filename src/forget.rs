//! `forget`: which snapshots a retention policy keeps, and why.
//!
//! Snapshots are grouped (by default by host and paths); within a group, newest
//! first, each rule keeps snapshots until its count is used up: `last` the newest N,
//! `hourly`..`yearly` the newest snapshot of each of the N most recent hours, days,
//! ISO weeks, months or years that have one, `within` every snapshot younger than
//! the duration counted back from the group's newest, `tags` every snapshot with one
//! of the tags. A snapshot is kept if any rule keeps it. Times are bucketed in the
//! offset the snapshot was taken in.

use chrono::{DateTime, Datelike, FixedOffset, Months, Timelike};

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::snapshot::Snapshot;

#[derive(Clone, Debug, Default)]
pub struct KeepPolicy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    pub within: Option<Within>,
    pub tags: Vec<String>,
}

impl KeepPolicy {
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none()
            && self.tags.is_empty()
    }
}

/// A calendar duration: `1y6m2w3d12h` (years, months, weeks, days, hours).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Within {
    pub months: u32,
    pub hours: i64,
}

impl Within {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::invalid(format!("{s:?} is not a duration like 1y6m2w3d12h"));
        let mut w = Within::default();
        let mut num = String::new();
        let mut any = false;
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: u32 = num.parse().map_err(|_| bad())?;
            num.clear();
            any = true;
            match c {
                'y' => {
                    w.months = w
                        .months
                        .checked_add(n.checked_mul(12).ok_or_else(bad)?)
                        .ok_or_else(bad)?
                }
                'm' => w.months = w.months.checked_add(n).ok_or_else(bad)?,
                'w' | 'd' | 'h' => {
                    let per = match c {
                        'w' => 24 * 7,
                        'd' => 24,
                        _ => 1,
                    };
                    w.hours = w.hours.checked_add(i64::from(n) * per).ok_or_else(bad)?
                }
                _ => return Err(bad()),
            }
        }
        if !num.is_empty() || !any {
            return Err(bad());
        }
        Ok(w)
    }

    /// The oldest time kept; `None` when the duration reaches back past the
    /// earliest time there is (then everything is kept).
    fn cutoff(&self, newest: DateTime<FixedOffset>) -> Option<DateTime<FixedOffset>> {
        newest
            .checked_sub_months(Months::new(self.months))?
            .checked_sub_signed(chrono::Duration::try_hours(self.hours)?)
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl GroupBy {
    /// `host,paths` (the default), any subset of host/paths/tags, or empty for one group.
    pub fn parse(s: &str) -> Result<Self> {
        let mut g = GroupBy::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                _ => {
                    return Err(Error::invalid(format!(
                        "--group-by: unknown key {part:?} (use host, paths, tags)"
                    )));
                }
            }
        }
        Ok(g)
    }

    fn key(&self, s: &Snapshot) -> String {
        let mut parts = Vec::new();
        if self.host {
            parts.push(format!("host {}", s.hostname));
        }
        if self.paths {
            let mut p = s.paths.clone();
            p.sort();
            parts.push(format!("paths [{}]", p.join(", ")));
        }
        if self.tags {
            let mut t = s.tags.clone();
            t.sort();
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        if parts.is_empty() {
            "all snapshots".into()
        } else {
            parts.join(", ")
        }
    }
}

#[derive(Clone, Debug)]
pub struct Decision {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    /// Empty: the snapshot is to be removed.
    pub reasons: Vec<String>,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct Group {
    pub key: String,
    /// Newest first.
    pub decisions: Vec<Decision>,
}

/// Applies the policy to every group. Snapshots whose time can't be parsed are kept
/// (a policy can't place them).
pub fn plan(
    snapshots: Vec<(SnapshotId, Snapshot)>,
    policy: &KeepPolicy,
    group_by: GroupBy,
) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (id, s) in snapshots {
        let key = group_by.key(&s);
        let d = Decision {
            id,
            snapshot: s,
            reasons: Vec::new(),
        };
        match groups.iter_mut().find(|g| g.key == key) {
            Some(g) => g.decisions.push(d),
            None => groups.push(Group {
                key,
                decisions: vec![d],
            }),
        }
    }
    for g in &mut groups {
        // Newest first, in the order `latest` uses.
        let mut order: Vec<(SnapshotId, Snapshot)> = g
            .decisions
            .iter()
            .map(|d| (d.id, d.snapshot.clone()))
            .collect();
        crate::snapshot::sort_oldest_first(&mut order);
        let rank: std::collections::HashMap<SnapshotId, usize> = order
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i))
            .collect();
        g.decisions
            .sort_by_key(|d| std::cmp::Reverse(rank.get(&d.id).copied()));
        apply(&mut g.decisions, policy);
    }
    groups
}

type Bucket = fn(&DateTime<FixedOffset>) -> i64;

fn apply(ds: &mut [Decision], policy: &KeepPolicy) {
    let times: Vec<Option<DateTime<FixedOffset>>> =
        ds.iter().map(|d| d.snapshot.time_parsed()).collect();
    for (d, t) in ds.iter_mut().zip(&times) {
        if t.is_none() {
            d.reasons.push("time unreadable".into());
        }
    }
    for (i, d) in ds.iter_mut().enumerate() {
        if (i as u64) < u64::from(policy.last) {
            d.reasons.push("last".into());
        }
    }
    let rules: [(&str, u32, Bucket); 5] = [
        ("hourly", policy.hourly, |t| {
            i64::from(t.year()) * 1_000_000 + i64::from(t.ordinal()) * 100 + i64::from(t.hour())
        }),
        ("daily", policy.daily, |t| {
            i64::from(t.year()) * 1000 + i64::from(t.ordinal())
        }),
        ("weekly", policy.weekly, |t| {
            let w = t.iso_week();
            i64::from(w.year()) * 100 + i64::from(w.week())
        }),
        ("monthly", policy.monthly, |t| {
            i64::from(t.year()) * 100 + i64::from(t.month())
        }),
        ("yearly", policy.yearly, |t| i64::from(t.year())),
    ];
    for (name, count, bucket) in rules {
        let mut left = count;
        let mut last_bucket = None;
        for (d, t) in ds.iter_mut().zip(&times) {
            if left == 0 {
                break;
            }
            let Some(t) = t else { continue };
            let b = bucket(t);
            if last_bucket != Some(b) {
                d.reasons.push(name.into());
                last_bucket = Some(b);
                left -= 1;
            }
        }
    }
    if let Some(w) = policy.within {
        if let Some(newest) = times.iter().flatten().max().copied() {
            let cutoff = w.cutoff(newest);
            for (d, t) in ds.iter_mut().zip(&times) {
                if t.is_some_and(|t| cutoff.is_none_or(|c| t >= c)) {
                    d.reasons.push("within".into());
                }
            }
        }
    }
    for d in ds.iter_mut() {
        for tag in &policy.tags {
            if d.snapshot.tags.contains(tag) {
                d.reasons.push(format!("tag {tag}"));
            }
        }
    }
}

/// Removes snapshot files. Their data stays until `prune`. The caller holds an
/// exclusive lock, taken before it chose them: a plan made before the lock could
/// name snapshots that are gone, or be shown as done when the lock is refused.
pub fn remove_snapshots(
    repo: &crate::repository::Repository,
    lock: &crate::lock::LockGuard,
    ids: &[SnapshotId],
) -> Result<()> {
    crate::record::note_removal(repo, lock, "forget", ids, &[])?;
    for id in ids {
        repo.backend()
            .remove(crate::backend::FileType::Snapshot, &id.to_hex())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(time: &str, host: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            time: time.into(),
            hostname: host.into(),
            username: "u".into(),
            uid: 0,
            gid: 0,
            paths: vec!["/data".into()],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            tree: crate::id::BlobId([0; 32]),
            parent: None,
            original: None,
            replaces: None,
            excludes: vec![],
            program_version: String::new(),
            summary: Default::default(),
            errors: vec![],
            warnings: vec![],
        }
    }

    fn ids(n: u8) -> SnapshotId {
        SnapshotId([n; 32])
    }

    fn kept(groups: &[Group]) -> Vec<String> {
        let mut v: Vec<String> = groups
            .iter()
            .flat_map(|g| {
                g.decisions
                    .iter()
                    .filter(|d| d.keep())
                    .map(|d| d.snapshot.time.clone())
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn daily_keeps_newest_of_each_day() {
        let s = vec![
            (ids(1), snap("2026-01-01T10:00:00+00:00", "h", &[])),
            (ids(2), snap("2026-01-01T20:00:00+00:00", "h", &[])),
            (ids(3), snap("2026-01-02T09:00:00+00:00", "h", &[])),
            (ids(4), snap("2026-01-03T09:00:00+00:00", "h", &[])),
        ];
        let p = KeepPolicy {
            daily: 2,
            ..Default::default()
        };
        assert_eq!(
            kept(&plan(s.clone(), &p, GroupBy::parse("host,paths").unwrap())),
            ["2026-01-02T09:00:00+00:00", "2026-01-03T09:00:00+00:00"]
        );
        let p = KeepPolicy {
            daily: 5,
            ..Default::default()
        };
        assert_eq!(kept(&plan(s, &p, GroupBy::default())).len(), 3);
    }

    #[test]
    fn last_within_tags_and_groups() {
        let s = vec![
            (ids(1), snap("2026-01-01T00:00:00+00:00", "a", &["keep"])),
            (ids(2), snap("2026-03-01T00:00:00+00:00", "a", &[])),
            (ids(3), snap("2026-03-05T00:00:00+00:00", "a", &[])),
            (ids(4), snap("2025-01-01T00:00:00+00:00", "b", &[])),
        ];
        let p = KeepPolicy {
            last: 1,
            within: Some(Within::parse("1w").unwrap()),
            tags: vec!["keep".into()],
            ..Default::default()
        };
        let groups = plan(s, &p, GroupBy::parse("host").unwrap());
        assert_eq!(groups.len(), 2);
        assert_eq!(
            kept(&groups),
            [
                "2025-01-01T00:00:00+00:00",
                "2026-01-01T00:00:00+00:00",
                "2026-03-01T00:00:00+00:00",
                "2026-03-05T00:00:00+00:00"
            ]
        );
    }

    #[test]
    fn within_parsing() {
        assert_eq!(
            Within::parse("1y2m").unwrap(),
            Within {
                months: 14,
                hours: 0
            }
        );
        assert_eq!(
            Within::parse("2w3d4h").unwrap(),
            Within {
                months: 0,
                hours: 14 * 24 + 3 * 24 + 4
            }
        );
        for bad in ["", "5", "3x", "d", "99999999999y"] {
            assert!(Within::parse(bad).is_err(), "{bad}");
        }
    }

    /// A `--keep-within` of more hours than chrono's durations hold (four times
    /// 4294967295 weeks) panicked in `chrono::Duration::hours`; one reaching back
    /// past the earliest date chrono has (4294967295 months) kept nothing at all.
    /// Both keep everything now.
    #[test]
    fn keep_within_longer_than_time_itself_keeps_everything_without_panicking() {
        for huge in ["4294967295w".repeat(4), "4294967295m".into()] {
            let policy = KeepPolicy {
                within: Some(Within::parse(&huge).unwrap()),
                ..Default::default()
            };
            let s = vec![
                (ids(1), snap("2026-01-01T00:00:00+00:00", "h", &[])),
                (ids(2), snap("1970-01-01T00:00:00+00:00", "h", &[])),
            ];
            let groups = plan(s, &policy, GroupBy::default());
            assert_eq!(kept(&groups).len(), 2, "{huge}");
        }
    }
}
