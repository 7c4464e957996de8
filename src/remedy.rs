//! What to run next: the commands `check` and `repair packs` suggest for the
//! damage they found, as exact command lines (without the repository and
//! password options, which are the user's own).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::id::{PackId, SnapshotId};

/// One command to run, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NextStep {
    pub command: String,
    pub reason: String,
}

impl NextStep {
    pub fn new(command: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            reason: reason.into(),
        }
    }
}

/// `s` as one shell word: unchanged when it holds only characters no shell
/// treats specially, else in single quotes.
pub fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `cairn repair packs ID...` for the given packs (full ids, so that no prefix
/// can become ambiguous later).
pub fn repair_packs(packs: &[PackId]) -> NextStep {
    let ids: Vec<String> = packs.iter().map(|p| p.to_hex()).collect();
    NextStep::new(
        format!("cairn repair packs {}", ids.join(" ")),
        "salvages every intact blob of the damaged packs into new packs, drops the lost \
         blobs from the index and removes the damaged packs",
    )
}

/// A snapshot that names data the index doesn't have.
#[derive(Clone, Debug)]
pub struct Wanting {
    pub id: SnapshotId,
    pub hostname: String,
    pub paths: Vec<String>,
}

/// One `cairn backup PATHS` per host and set of paths among `snapshots`: a backup
/// of the same sources stores again whatever is still on disk, under the same
/// ids, and so heals every snapshot that names it.
pub fn backups(snapshots: &[Wanting]) -> Vec<NextStep> {
    let mut groups: BTreeMap<(&str, &[String]), Vec<String>> = BTreeMap::new();
    for s in snapshots {
        groups
            .entry((s.hostname.as_str(), s.paths.as_slice()))
            .or_default()
            .push(s.id.short());
    }
    groups
        .into_iter()
        .map(|((host, paths), ids)| {
            let words: Vec<String> = paths.iter().map(|p| shell_word(p)).collect();
            NextStep::new(
                format!("cairn backup {}", words.join(" ")),
                format!(
                    "on host {host}: {} {} {} data; backing up the same paths again \
                     stores what is still there (same content, same ids) and heals {}",
                    if ids.len() == 1 {
                        "snapshot"
                    } else {
                        "snapshots"
                    },
                    ids.join(", "),
                    if ids.len() == 1 { "misses" } else { "miss" },
                    if ids.len() == 1 { "it" } else { "them" }
                ),
            )
        })
        .collect()
}

/// `cairn repair snapshots --forget`, for what no backup could bring back (and,
/// with `records`, for damaged record files too).
pub fn repair_snapshots(records: bool) -> NextStep {
    NextStep::new(
        "cairn repair snapshots --forget",
        format!(
            "if `cairn check` still reports missing data (it is gone from the sources too), \
             rewrites the snapshots that need it without what is lost (tagged `repaired`, each \
             drop recorded) and removes the damaged originals{}",
            if records {
                ", and the record files that can't be read"
            } else {
                ""
            }
        ),
    )
}

/// `cairn repair snapshots --forget` for damaged record files alone.
pub fn remove_damaged_records() -> NextStep {
    NextStep::new(
        "cairn repair snapshots --forget",
        "removes the record files that can't be read (records of past checks and drills: \
         only their history is lost; no snapshot is changed, since none lost data)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("/srv/data-1/x.bin"), "/srv/data-1/x.bin");
        assert_eq!(shell_word("/a b"), "'/a b'");
        assert_eq!(shell_word("/it's"), r"'/it'\''s'");
        assert_eq!(shell_word("/$HOME;rm"), "'/$HOME;rm'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn one_backup_per_host_and_paths() {
        let w = |b: u8, host: &str, paths: &[&str]| Wanting {
            id: SnapshotId([b; 32]),
            hostname: host.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
        };
        let steps = backups(&[
            w(1, "h", &["/a", "/b c"]),
            w(2, "h", &["/a", "/b c"]),
            w(3, "g", &["/a"]),
        ]);
        let commands: Vec<&str> = steps.iter().map(|s| s.command.as_str()).collect();
        assert_eq!(commands, ["cairn backup /a", "cairn backup /a '/b c'"]);
        assert!(
            steps[1].reason.contains("01010101, 02020202"),
            "{}",
            steps[1].reason
        );
    }
}
