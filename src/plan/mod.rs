//! Backup plans: a TOML file (`cairn.toml`) naming repositories and classes of
//! data, each class with its sources, interval, retention, copies, checks and
//! restore drills. This module finds the file, reads it and checks it; a [`Plan`]
//! exists only for a file without mistakes. The schema is in README.md
//! ("Backup plans") and docs/cairn.example.toml.

mod class;
pub mod config;
pub mod open;
pub mod run;
pub mod schedule;
pub mod state;
pub mod status;
mod validate;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::check::ReadData;
use crate::error::{Error, Result};
use crate::forget::KeepPolicy;

/// The file name looked for in the working directory and the config directories.
pub const FILE_NAME: &str = "cairn.toml";

/// How the plan file was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `--plan FILE`
    Flag,
    /// `CAIRN_PLAN`
    Env,
    /// The first of [`default_candidates`] that exists.
    Default,
}

/// Where a plan file is looked for when neither `--plan` nor CAIRN_PLAN names
/// one, in order: the working directory, the user's config directory, /etc.
pub fn default_candidates(home: Option<&Path>) -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from(FILE_NAME)];
    if let Some(h) = home {
        v.push(h.join(".config").join("cairn").join(FILE_NAME));
    }
    v.push(PathBuf::from("/etc/cairn").join(FILE_NAME));
    v
}

/// The plan file to use: `flag`, else `env`, else the first default candidate
/// that exists. A file named by the flag or the variable is used even if it
/// does not exist, so that reading it says so rather than another file being
/// picked up.
pub fn locate(
    flag: Option<&Path>,
    env: Option<&Path>,
    home: Option<&Path>,
) -> Result<(PathBuf, Origin)> {
    if let Some(f) = flag {
        return Ok((f.to_path_buf(), Origin::Flag));
    }
    if let Some(f) = env.filter(|f| !f.as_os_str().is_empty()) {
        return Ok((f.to_path_buf(), Origin::Env));
    }
    let candidates = default_candidates(home);
    for c in &candidates {
        if c.exists() {
            return Ok((c.clone(), Origin::Default));
        }
    }
    Err(Error::PlanNotFound {
        searched: candidates,
    })
}

/// A fixed length of time: `90m`, `1h30m`, `7d`, `2w` (minutes, hours, days,
/// weeks). Unlike `keep.within` (forget's calendar durations, months written
/// `mo`), an interval has no months or years: those have no fixed length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval(pub Duration);

impl Interval {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let bad = |why: &str| format!("{s:?} is not an interval like 90m, 1h, 7d or 2w: {why}");
        let mut minutes: u64 = 0;
        let mut num = String::new();
        let mut any = false;
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: u64 = num.parse().map_err(|_| bad("a unit without a number"))?;
            num.clear();
            let unit: u64 = match c {
                'm' => 1,
                'h' => 60,
                'd' => 60 * 24,
                'w' => 60 * 24 * 7,
                's' => return Err(bad("seconds are too short for a schedule")),
                'y' | 'M' => return Err(bad("months and years have no fixed length")),
                _ => return Err(bad(&format!("unknown unit {c:?} (use m, h, d, w)"))),
            };
            minutes = n
                .checked_mul(unit)
                .and_then(|v| v.checked_add(minutes))
                .filter(|v| *v <= u64::MAX / 60)
                .ok_or_else(|| bad("too long"))?;
            any = true;
        }
        if !num.is_empty() {
            return Err(bad("a number without a unit"));
        }
        if !any {
            return Err(bad("empty"));
        }
        Ok(Interval(Duration::from_secs(minutes * 60)))
    }

    pub fn minutes(&self) -> u64 {
        self.0.as_secs() / 60
    }
}

impl fmt::Display for Interval {
    /// The largest units first: `1h30m`, `2w`, `0m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = self.minutes();
        if m == 0 {
            return f.write_str("0m");
        }
        for (unit, len) in [("w", 60 * 24 * 7), ("d", 60 * 24), ("h", 60), ("m", 1)] {
            if m >= len {
                write!(f, "{}{unit}", m / len)?;
                m %= len;
            }
        }
        Ok(())
    }
}

/// The shortest `every` a class may have: a plan run is started by a timer or
/// cron, whose granularity is a minute.
pub const MIN_INTERVAL: Interval = Interval(Duration::from_secs(60));

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

/// One mistake (or doubt) in a plan file. Lines and columns count from 1;
/// columns count characters, not bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub message: String,
}

impl Problem {
    pub fn error_at(text: &str, span: Option<Range<usize>>, message: String) -> Self {
        Self::at(text, span, Severity::Error, message)
    }

    pub fn warning_at(text: &str, span: Option<Range<usize>>, message: String) -> Self {
        Self::at(text, span, Severity::Warning, message)
    }

    fn at(text: &str, span: Option<Range<usize>>, severity: Severity, message: String) -> Self {
        let (line, column) = line_column(text, span.map_or(0, |s| s.start));
        Problem {
            line,
            column,
            severity,
            message,
        }
    }
}

/// 1-based line and character column of byte `offset` in `text` (clamped).
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A checked plan.
#[derive(Debug)]
pub struct Plan {
    pub file: PathBuf,
    pub repositories: Vec<RepositorySpec>,
    pub classes: Vec<Class>,
}

#[derive(Clone, Debug)]
pub struct RepositorySpec {
    pub name: String,
    pub path: PathBuf,
    pub password: PasswordSource,
}

/// Where a repository's password comes from; as `--password-file` and
/// `--password-command`.
#[derive(Clone, Debug)]
pub enum PasswordSource {
    File(PathBuf),
    Command(String),
}

#[derive(Clone, Debug)]
pub enum Sources {
    /// Files and directories, absolute.
    Paths(Vec<PathBuf>),
    /// A shell command whose output is stored as one file (`backup --stdin`).
    Command {
        command: String,
        stdin_filename: String,
    },
}

#[derive(Clone, Debug)]
pub struct Class {
    pub name: String,
    pub sources: Sources,
    pub exclude: Vec<String>,
    pub every: Interval,
    /// `None`: no retention, every snapshot of the class is kept.
    pub keep: Option<KeepPolicy>,
    pub repository: String,
    pub copy_to: Vec<String>,
    pub check: Option<CheckSchedule>,
    pub drill: Option<DrillSchedule>,
    /// Shell commands run before the backup, in order.
    pub before: Vec<String>,
    /// Shell commands run after the backup, also when it failed.
    pub after: Vec<String>,
    /// zstd level for this class's data; `None`: the repository's.
    pub compression: Option<i32>,
    /// Tags added to each snapshot, beside `class=NAME`.
    pub tags: Vec<String>,
}

impl Class {
    /// The tag that marks this class's snapshots.
    pub fn tag(&self) -> String {
        format!("class={}", self.name)
    }
}

#[derive(Clone, Debug)]
pub struct CheckSchedule {
    pub every: Interval,
    pub read_data: ReadData,
}

#[derive(Clone, Debug)]
pub struct DrillSchedule {
    pub every: Interval,
    pub sample: DrillSample,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DrillSample {
    Files(u32),
    Percent(f64),
}

/// What reading a plan file found: its mistakes and warnings, in file order,
/// and the plan when there was no mistake.
#[derive(Debug)]
pub struct Report {
    pub plan: Option<Plan>,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, s: Severity) -> usize {
        self.problems.iter().filter(|p| p.severity == s).count()
    }
}

/// Reads and checks the plan file at `path`. Relative paths inside it are taken
/// from the file's directory. An unreadable file is an error; mistakes in it are
/// in the report.
pub fn load(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file = std::path::absolute(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base = file
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let mut report = check_text(&text, &file, &base);
    let unsafe_file = ownership_problems(&text, &file, &base);
    if !unsafe_file.is_empty() {
        report.problems.extend(unsafe_file);
        report.problems.sort();
        report.plan = None;
    }
    Ok(report)
}

/// A plan runs commands (`before`, `after`, `command`, `password_command`)
/// and backups as whoever runs it, often root: a plan file, or a directory
/// holding it, that someone else can change is refused. A directory with the
/// sticky bit (like /tmp) is fine: others can't replace a file they don't own.
fn ownership_problems(text: &str, file: &Path, dir: &Path) -> Vec<Problem> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let mut out = Vec::new();
    for (what, p) in [("plan file", file), ("the plan file's directory", dir)] {
        let Ok(meta) = std::fs::metadata(p) else {
            continue;
        };
        let mode = meta.mode() & 0o7777;
        let sticky_dir = meta.is_dir() && mode & 0o1000 != 0;
        let why = if meta.uid() != me && meta.uid() != 0 {
            Some(format!("is owned by another user (uid {})", meta.uid()))
        } else if mode & 0o022 != 0 && !sticky_dir {
            Some(format!("can be changed by other users (mode {mode:04o})"))
        } else {
            None
        };
        if let Some(why) = why {
            out.push(Problem::error_at(
                text,
                None,
                format!(
                    "{what} {} {why}: whoever can change the plan runs its commands and \
                     backups as you; make it yours (or root's) and `chmod go-w` it",
                    p.display()
                ),
            ));
        }
    }
    out
}

/// [`load`] on text already read; `base` is where relative paths start.
pub fn check_text(text: &str, file: &Path, base: &Path) -> Report {
    let mut problems = Vec::new();
    let plan = config::parse(text, &mut problems)
        .and_then(|parsed| validate::validate(text, file, base, parsed, &mut problems));
    problems.sort();
    problems.dedup();
    let plan = plan.filter(|_| !problems.iter().any(|p| p.severity == Severity::Error));
    Report { plan, problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        let min = |s: &str| Interval::parse(s).map(|i| i.minutes());
        assert_eq!(min("90m"), Ok(90));
        assert_eq!(min("1h30m"), Ok(90));
        assert_eq!(min("7d"), Ok(7 * 24 * 60));
        assert_eq!(min("2w"), Ok(2 * 7 * 24 * 60));
        for bad in [
            "",
            "1",
            "h",
            "1y",
            "3M",
            "10s",
            "1x",
            "99999999999999999999w",
        ] {
            assert!(Interval::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Interval::parse("1h30m").map(|i| i.to_string()),
            Ok("1h30m".into())
        );
        assert_eq!(
            Interval::parse("14d").map(|i| i.to_string()),
            Ok("2w".into())
        );
    }

    #[test]
    fn line_and_column_count_characters() {
        let t = "a\nbé = 1\n";
        assert_eq!(line_column(t, 0), (1, 1));
        assert_eq!(line_column(t, 2), (2, 1));
        // After "bé" (3 bytes): column 3.
        assert_eq!(line_column(t, 5), (2, 3));
        assert_eq!(line_column(t, 1000), (3, 1));
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    /// What a checked plan holds, for the commands that will run it.
    #[test]
    fn a_valid_plan_becomes_typed_classes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "x").expect("write");
        std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let text = r#"
[repository.hot]
path = "hot"
password_file = "pw"
[repository.cold]
path = "/elsewhere/cold"
password_command = "echo x"

[class.db]
command = "pg_dump app"
every = "1d"
keep = { daily = 30, within = "1mo" }
repository = "hot"
copy_to = ["cold"]
check = { every = "1w", read_data_subset = "2/7" }
drill = { every = "30d", percent = 10 }
tags = ["prod"]
"#;
        let r = check_text(text, &dir.path().join("cairn.toml"), dir.path());
        assert_eq!(r.errors(), 0, "{:?}", r.problems);
        let plan = r.plan.expect("a plan");
        assert_eq!(plan.repositories[0].name, "hot");
        assert_eq!(plan.repositories[0].path, dir.path().join("hot"));
        assert!(matches!(&plan.repositories[0].password, PasswordSource::File(p) if *p == pw));
        assert!(
            matches!(&plan.repositories[1].password, PasswordSource::Command(c) if c == "echo x")
        );
        let c = &plan.classes[0];
        assert_eq!(c.tag(), "class=db");
        assert!(
            matches!(&c.sources, Sources::Command { command, stdin_filename }
            if command == "pg_dump app" && stdin_filename == "db")
        );
        assert_eq!(c.every.minutes(), 24 * 60);
        let keep = c.keep.as_ref().expect("keep");
        assert_eq!(keep.daily, 30);
        // keep.within is forget's calendar duration, with months written `mo`.
        assert_eq!(keep.within.map(|w| (w.months, w.hours)), Some((1, 0)));
        assert_eq!(c.copy_to, vec!["cold".to_string()]);
        let check = c.check.as_ref().expect("check");
        assert_eq!(check.read_data, ReadData::Subset { n: 2, m: 7 });
        let drill = c.drill.as_ref().expect("drill");
        assert_eq!(drill.sample, DrillSample::Percent(10.0));
        assert_eq!(c.tags, vec!["prod".to_string()]);
    }
}
