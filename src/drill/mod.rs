//! Restore drills: rehearse a restore of part of a snapshot and prove it.
//!
//! A drill draws a random sample of a snapshot's regular files (`sample`),
//! restores them with the real restorer into a fresh scratch directory
//! (`scratch`), checks every byte and the metadata of each restored file
//! against the snapshot (`verify`) and, if asked, against the live file it was
//! backed up from; then it records the outcome in the repository (`record`,
//! format-spec §20) and removes the scratch directory, whatever happened.
//! Damage met on the way — a blob that doesn't open, a tree that can't be read —
//! is a mismatch naming the file, never a reason to stop: the point of a drill
//! is to find out everything a real restore would meet.

mod sample;
mod scratch;
mod verify;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{RecordId, SnapshotId};
use crate::index::Index;
use crate::progress::Progress;
use crate::record::{Record, RecordKind};
use crate::repository::Repository;
use crate::restorer::{self, Event, Overwrite, RestoreOptions};
use crate::tree::{Node, NodeKind, Tree};
use crate::walk::Selection;

use sample::{Reservoir, exact_pattern, walk_tolerant};
use scratch::Scratch;

/// Files a drill samples unless told otherwise: enough that a problem touching
/// one file in twenty shows up in 92% of drills, few enough for a routine
/// rehearsal of a dataset of small files.
pub const DEFAULT_FILES: u64 = 50;

/// What a drill restores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sample {
    /// This many regular files, chosen uniformly at random (all if fewer).
    Files(u64),
    /// This percentage of the regular files (at least one), 0 < X ≤ 100.
    Percent(f64),
    /// Everything: every file, directory, symlink and special file.
    All,
}

#[derive(Clone, Debug)]
pub struct DrillOptions {
    pub sample: Sample,
    /// Also compare each restored file with the live file at its original path.
    pub compare_source: bool,
    /// Restore under this directory (created if missing; refused if it holds
    /// anything) instead of the system's temporary directory.
    pub target: Option<PathBuf>,
    /// Draw the sample from this seed (the report gives the seed used).
    pub seed: Option<u64>,
    /// The plan class the drill runs for, kept in its record.
    pub class: Option<String>,
    /// Write a record of the drill into the repository.
    pub record: bool,
    pub progress: Option<Arc<Progress>>,
}

impl Default for DrillOptions {
    fn default() -> Self {
        Self {
            sample: Sample::Files(DEFAULT_FILES),
            compare_source: false,
            target: None,
            seed: None,
            class: None,
            record: true,
            progress: None,
        }
    }
}

/// One thing wrong with one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The entry's path in the snapshot (absolute, as backed up); `/` for what
    /// concerns the whole drill.
    pub path: String,
    pub problem: String,
    /// Found by `--compare-source`: the live file differs from (or lacks) what
    /// the snapshot holds, which the restore reproduced faithfully.
    pub at_source: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct DrillReport {
    pub snapshot: SnapshotId,
    /// The seed the sample was drawn with (`--seed` draws it again).
    pub seed: u64,
    /// Regular files in the snapshot (with `Sample::All`: those met while
    /// verifying).
    pub files_in_snapshot: u64,
    /// Entries chosen: sampled files, or with `Sample::All` every entry.
    pub sampled: u64,
    /// Regular files restored and verified without a problem.
    pub files: u64,
    /// Bytes the restore wrote.
    pub bytes: u64,
    /// How long the restore took (sampling and verifying not included).
    pub seconds: f64,
    pub mismatches: Vec<Mismatch>,
    /// What went wrong besides the restored data (an unreadable index file left
    /// out, a scratch directory that could not be removed, a record that could
    /// not be written); not a failure of the drill.
    pub warnings: Vec<String>,
    /// The record written, if one was.
    pub record: Option<RecordId>,
    /// What was drilled, as recorded: "50 of 1200 files, seed 7".
    pub detail: String,
}

impl DrillReport {
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// Restore throughput.
    pub fn bytes_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Drills `snapshot`: see the module's description. Holds a shared lock
/// throughout. Returns an error only when the drill can't be carried out at
/// all (the lock, the snapshot file, the scratch directory) or is interrupted;
/// damage in the repository is reported as mismatches.
pub fn drill(
    repo: &Arc<Repository>,
    snapshot: SnapshotId,
    opts: &DrillOptions,
    interrupt: &AtomicBool,
) -> Result<DrillReport> {
    validate(&opts.sample)?;
    let started = crate::clock::now_rfc3339();
    let _lock = crate::lock::acquire(repo, false)?;
    let snap = repo.load_snapshot(&snapshot)?;
    let mut warnings = Vec::new();
    let index = repo.load_index(&mut |id, e| {
        warnings.push(format!(
            "index {id} is unreadable and was left out ({e}); blobs only it lists look missing"
        ))
    })?;
    let seed = match opts.seed {
        Some(s) => s,
        // 53 bits: exact as a JSON number in every consumer.
        None => u64::from_le_bytes(crate::crypto::random_array()?) >> 11,
    };
    let mut d = Drill {
        repo,
        index: &index,
        opts,
        interrupt,
        mismatches: Vec::new(),
        is_root: nix::unistd::geteuid().is_root(),
    };
    let root = match repo.load_tree(&index, &snap.tree) {
        Ok(t) => Some(t),
        Err(e) => {
            d.mismatch(
                "/",
                format!("the snapshot's root tree {} can't be read: {e}", snap.tree),
            );
            None
        }
    };
    let (chosen, files_in_snapshot) = match (&root, opts.sample) {
        (None, _) | (_, Sample::All) => (None, 0),
        (Some(root), how) => {
            let (chosen, total) = d.sample(root, how, seed)?;
            (Some(chosen), total)
        }
    };

    let scratch = Scratch::create(opts.target.as_deref())?;
    let target = scratch.path().join("restored");
    let (bytes, seconds, failed) = match &root {
        Some(root) if chosen.as_ref().is_none_or(|c| !c.is_empty()) => {
            d.restore(root, chosen.as_deref(), &target, &mut warnings)?
        }
        _ => (0, 0.0, HashSet::new()),
    };
    let (files, sampled, met) = match (&root, &chosen) {
        (_, Some(chosen)) => {
            let files = d.verify_list(chosen, &target, &failed);
            (files, chosen.len() as u64, files_in_snapshot)
        }
        (Some(root), None) => d.verify_all(root, &target, &failed)?,
        (None, None) => (0, 0, 0),
    };
    if interrupt.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    if let Err(e) = scratch.remove() {
        warnings.push(format!(
            "the drill's scratch directory could not be removed: {e}"
        ));
    }
    if sampled == 0 && d.mismatches.is_empty() {
        warnings.push("the snapshot holds no files: there was nothing to drill".into());
    }
    let mut mismatches = d.mismatches;
    mismatches.sort_by(|a, b| (&a.path, a.at_source).cmp(&(&b.path, b.at_source)));
    let detail = describe(opts, sampled, met, seed);
    let mut report = DrillReport {
        snapshot,
        seed,
        files_in_snapshot: met,
        sampled,
        files,
        bytes,
        seconds,
        mismatches,
        warnings,
        record: None,
        detail,
    };
    if opts.record {
        match save_record(repo, &report, opts, started) {
            Ok(id) => report.record = Some(id),
            Err(e) => report
                .warnings
                .push(format!("the drill's record could not be written: {e}")),
        }
    }
    Ok(report)
}

fn validate(sample: &Sample) -> Result<()> {
    match *sample {
        Sample::Files(0) => Err(Error::invalid("a drill of 0 files drills nothing")),
        Sample::Percent(p) if !(p > 0.0 && p <= 100.0) => Err(Error::invalid(format!(
            "a drill's percentage must be above 0 and at most 100, not {p}"
        ))),
        _ => Ok(()),
    }
}

fn describe(opts: &DrillOptions, sampled: u64, files: u64, seed: u64) -> String {
    let what = match opts.sample {
        Sample::Files(_) => format!("{sampled} of {files} files, seed {seed}"),
        Sample::Percent(p) => format!("{p}% ({sampled} of {files} files), seed {seed}"),
        Sample::All => format!("all {sampled} entries"),
    };
    if opts.compare_source {
        format!("{what}, compared with the source")
    } else {
        what
    }
}

fn save_record(
    repo: &Repository,
    report: &DrillReport,
    opts: &DrillOptions,
    started: String,
) -> Result<RecordId> {
    let r = Record {
        time: started,
        class: opts.class.clone(),
        snapshot: Some(report.snapshot),
        ok: report.ok(),
        problems: report
            .mismatches
            .iter()
            .map(|m| format!("{}: {}", m.path, m.problem))
            .collect(),
        files: report.files,
        bytes: report.bytes,
        seconds: report.seconds,
        detail: report.detail.clone(),
        ..Record::new(RecordKind::Drill)
    };
    crate::record::save(repo, &r)
}

/// What every stage shares.
struct Drill<'a> {
    repo: &'a Arc<Repository>,
    index: &'a Index,
    opts: &'a DrillOptions,
    interrupt: &'a AtomicBool,
    mismatches: Vec<Mismatch>,
    is_root: bool,
}

impl Drill<'_> {
    fn mismatch(&mut self, path: &str, problem: String) {
        self.mismatches.push(Mismatch {
            path: path.to_string(),
            problem,
            at_source: false,
        });
    }

    /// The sampled regular files, sorted by path, and how many the snapshot
    /// has. A percentage needs the count first: one more walk over the trees
    /// (cached, and small beside the restore).
    fn sample(
        &mut self,
        root: &Tree,
        how: Sample,
        seed: u64,
    ) -> Result<(Vec<(PathBuf, Node)>, u64)> {
        let want = match how {
            Sample::Files(n) => n,
            Sample::Percent(p) => {
                let mut n = 0u64;
                walk_tolerant(
                    self.repo,
                    self.index,
                    root.clone(),
                    self.interrupt,
                    &mut |_, node| n += u64::from(node.kind == NodeKind::File),
                    &mut |_, _| {},
                )?;
                ((n as f64 * p / 100.0).ceil() as u64).max(1)
            }
            Sample::All => u64::MAX,
        };
        let mut reservoir = Reservoir::new(want, seed);
        let mut unreadable = Vec::new();
        walk_tolerant(
            self.repo,
            self.index,
            root.clone(),
            self.interrupt,
            &mut |p, node| {
                if node.kind == NodeKind::File {
                    reservoir.offer(p, node);
                }
            },
            &mut |p, why| unreadable.push((p.display().to_string(), why)),
        )?;
        for (p, why) in unreadable {
            self.mismatch(
                &p,
                format!("nothing under this directory can be restored: {why}"),
            );
        }
        let total = reservoir.seen();
        let mut chosen = reservoir.chosen;
        chosen.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((chosen, total))
    }

    /// Restores `chosen` (everything when `None`) into `target` with the
    /// restorer. Each error it reports becomes a mismatch of the file it names.
    /// Returns the bytes written, the seconds taken and the snapshot paths of
    /// the files that failed.
    fn restore(
        &mut self,
        root: &Tree,
        chosen: Option<&[(PathBuf, Node)]>,
        target: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<(u64, f64, HashSet<String>)> {
        let includes = chosen
            .map(|c| c.iter().map(|(p, _)| exact_pattern(p)).collect())
            .unwrap_or_default();
        let ropts = RestoreOptions {
            target: target.to_path_buf(),
            includes,
            overwrite: Overwrite::Always,
            progress: self.opts.progress.clone(),
            ..Default::default()
        };
        let errors = Mutex::new(Vec::new());
        let warned = Mutex::new(Vec::new());
        let report = |e: Event| match e {
            Event::Error(m) => errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(m.to_string()),
            Event::Warning(m) => warned
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(m.to_string()),
            Event::Planned(..) => {}
        };
        let sel = Selection::Dir {
            path: PathBuf::from("/"),
            tree: root.clone(),
        };
        let start = Instant::now();
        let result =
            restorer::restore(self.repo, self.index, &sel, &ropts, self.interrupt, &report);
        let seconds = start.elapsed().as_secs_f64();
        let bytes = match result {
            Ok(s) => s.bytes_written,
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => {
                self.mismatch("/", format!("the restore stopped: {e}"));
                0
            }
        };
        if self.interrupt.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        warnings.extend(warned.into_inner().unwrap_or_else(PoisonError::into_inner));
        let known: HashSet<String> = chosen
            .unwrap_or_default()
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        let prefix = format!("{}/", target.display());
        let mut failed = HashSet::new();
        for msg in errors.into_inner().unwrap_or_else(PoisonError::into_inner) {
            let (path, problem) = split_restore_error(&msg, &prefix, &known);
            failed.insert(path.clone());
            self.mismatch(&path, problem);
        }
        Ok((bytes, seconds, failed))
    }

    /// Verifies the sampled files; returns how many passed.
    fn verify_list(
        &mut self,
        chosen: &[(PathBuf, Node)],
        target: &Path,
        failed: &HashSet<String>,
    ) -> u64 {
        let found = self.verify_batch(chosen, target, failed);
        self.take(found)
    }

    /// Verifies everything restored, walking the snapshot again and checking
    /// a batch at a time (memory stays bounded); returns (files passed,
    /// entries met, files met).
    fn verify_all(
        &mut self,
        root: &Tree,
        target: &Path,
        failed: &HashSet<String>,
    ) -> Result<(u64, u64, u64)> {
        const BATCH: usize = 4096;
        let (mut entries, mut files, mut passed) = (0u64, 0u64, 0u64);
        let mut found = Vec::new();
        let mut unreadable = Vec::new();
        {
            let this: &Self = self;
            let mut batch: Vec<(PathBuf, Node)> = Vec::with_capacity(BATCH);
            let mut check = |batch: &mut Vec<(PathBuf, Node)>| {
                for f in this.verify_batch(batch, target, failed) {
                    if f.problems.is_empty() && f.source.is_none() {
                        passed += u64::from(f.file);
                    } else {
                        found.push(f);
                    }
                }
                batch.clear();
            };
            walk_tolerant(
                this.repo,
                this.index,
                root.clone(),
                this.interrupt,
                &mut |p, node| {
                    entries += 1;
                    files += u64::from(node.kind == NodeKind::File);
                    batch.push((p.to_path_buf(), node.clone()));
                    if batch.len() >= BATCH {
                        check(&mut batch);
                    }
                },
                &mut |p, why| unreadable.push((p.display().to_string(), why)),
            )?;
            check(&mut batch);
        }
        if self.interrupt.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        passed += self.take(found);
        for (p, why) in unreadable {
            self.mismatch(
                &p,
                format!("nothing under this directory could be verified: {why}"),
            );
        }
        Ok((passed, entries, files))
    }

    /// Checks each entry, in parallel: (path, is a file, problems).
    fn verify_batch(
        &self,
        list: &[(PathBuf, Node)],
        target: &Path,
        failed: &HashSet<String>,
    ) -> Vec<Finding> {
        let key = self.repo.key();
        list.par_iter()
            .filter_map(|(p, node)| {
                if self.interrupt.load(Ordering::Relaxed) {
                    return None;
                }
                let shown = p.display().to_string();
                if failed.contains(&shown) {
                    return None;
                }
                let dest = target.join(p.strip_prefix("/").unwrap_or(p));
                let problems = verify::check_entry(key, self.index, &dest, node, self.is_root);
                let source = (problems.is_empty()
                    && self.opts.compare_source
                    && node.kind == NodeKind::File)
                    .then(|| verify::compare_source(p, &dest))
                    .flatten();
                Some(Finding {
                    path: shown,
                    file: node.kind == NodeKind::File,
                    problems,
                    source,
                })
            })
            .collect()
    }

    /// Turns findings into mismatches; returns the files that passed.
    fn take(&mut self, found: Vec<Finding>) -> u64 {
        let mut passed = 0;
        for f in found {
            if f.problems.is_empty() && f.file {
                passed += 1;
            }
            for p in f.problems {
                self.mismatch(&f.path, p);
            }
            if let Some(p) = f.source {
                self.mismatches.push(Mismatch {
                    path: f.path,
                    problem: p,
                    at_source: true,
                });
            }
        }
        passed
    }
}

struct Finding {
    path: String,
    file: bool,
    problems: Vec<String>,
    source: Option<String>,
}

/// Splits one of the restorer's error messages, `<target>/<path>: <problem>`,
/// into the snapshot path and the problem. Among the places the message could
/// be cut (a name may hold ": "), one giving a sampled path wins; else the
/// first. A message about no path in particular concerns `/`.
fn split_restore_error(msg: &str, prefix: &str, known: &HashSet<String>) -> (String, String) {
    let Some(rest) = msg.strip_prefix(prefix) else {
        return ("/".into(), msg.to_string());
    };
    let cuts: Vec<usize> = rest.match_indices(": ").map(|(i, _)| i).collect();
    let pick = cuts
        .iter()
        .find(|&&i| known.contains(&format!("/{}", &rest[..i])))
        .or(cuts.first());
    match pick {
        Some(&i) => (format!("/{}", &rest[..i]), rest[i + 2..].to_string()),
        None => ("/".into(), msg.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_errors_are_split_at_the_sampled_path() {
        let known: HashSet<String> = ["/d/a: b".to_string()].into_iter().collect();
        let p = "/tmp/x/restored/";
        assert_eq!(
            split_restore_error("/tmp/x/restored/d/a: b: Data blob 1 is corrupt", p, &known),
            ("/d/a: b".into(), "Data blob 1 is corrupt".into())
        );
        assert_eq!(
            split_restore_error("/tmp/x/restored/d/c: oops: more", p, &known),
            ("/d/c".into(), "oops: more".into())
        );
        assert_eq!(
            split_restore_error("a restore thread panicked", p, &known),
            ("/".into(), "a restore thread panicked".into())
        );
    }
}
