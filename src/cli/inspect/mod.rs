//! The commands that only look at snapshots: `diff`, `find`, `stats`, `dump`.
//! They open the repository with the cache and take no lock (the library
//! side is `cairn::inspect`).

mod diff;
mod dump;
mod find;
mod stats;

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::GlobalArgs;

#[derive(Subcommand)]
pub enum InspectCmd {
    /// Compare two snapshots (or directories in them): what was added, removed
    /// or changed
    Diff(diff::DiffArgs),
    /// Find entries by name pattern, or which snapshots and paths use given
    /// blobs, trees or a pack's blobs
    Find(find::FindArgs),
    /// Sizes of snapshots: as restored, by distinct contents, or as stored
    Stats(stats::StatsArgs),
    /// Write a file's bytes, or a directory as a tar archive, to standard
    /// output or a file
    Dump(dump::DumpArgs),
}

pub fn run(g: &GlobalArgs, c: InspectCmd) -> Result<ExitCode> {
    match c {
        InspectCmd::Diff(a) => diff::run(g, a),
        InspectCmd::Find(a) => find::run(g, a),
        InspectCmd::Stats(a) => stats::run(g, a),
        InspectCmd::Dump(a) => dump::run(g, a),
    }
}

/// Standard output, buffered; a failed write is an error on "standard output",
/// which `main` ends quietly when the reader of a pipe has gone.
struct Out(std::io::BufWriter<std::io::StdoutLock<'static>>);

impl Out {
    fn new() -> Self {
        Out(std::io::BufWriter::new(std::io::stdout().lock()))
    }

    fn line(&mut self, text: std::fmt::Arguments) -> cairn::Result<()> {
        writeln!(self.0, "{text}").map_err(|e| cairn::Error::io("standard output", e))
    }

    fn json(&mut self, v: &serde_json::Value) -> cairn::Result<()> {
        serde_json::to_writer(&mut self.0, v)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(self.0))
            .map_err(|e| cairn::Error::io("standard output", e))
    }

    fn flush(&mut self) -> cairn::Result<()> {
        self.0
            .flush()
            .map_err(|e| cairn::Error::io("standard output", e))
    }
}

/// A time as RFC 3339 in local time with nanoseconds (as `ls --json`); `None`
/// for one a date can't be written for.
fn rfc3339(t: cairn::tree::Timestamp) -> Option<String> {
    chrono::DateTime::from_timestamp(t.0, t.1).map(|d| {
        d.with_timezone(&chrono::Local)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)
    })
}

/// `2026-01-02 15:04:05` in local time, or blank.
fn local_time(t: cairn::tree::Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.0, t.1)
        .map(|d| {
            d.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// `path` (exact) and, for a name that isn't UTF-8, `path_bytes`, as `ls --json`.
fn put_path(o: &mut serde_json::Map<String, serde_json::Value>, path: &Path) {
    o.insert("path".into(), path.display().to_string().into());
    let raw = path.as_os_str().as_bytes();
    if std::str::from_utf8(raw).is_err() {
        o.insert("path_bytes".into(), raw.to_vec().into());
    }
}
