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
