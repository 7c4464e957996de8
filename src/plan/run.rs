//! `cairn plan run`: for each class, what is due, done through the library.
//!
//! Per class, in order: the backup if the class's interval has passed since its
//! last snapshot without errors (`before` commands, the backup tagged
//! `class=NAME`, `after` commands also when something failed), the class's
//! retention on its own snapshots (and a prune when it forgot any; without a
//! backup, only when a postponed retention left something to forget), copies of
//! its snapshots to each `copy_to` repository that lacks them (with the same
//! retention there), then a check and a restore drill of each of those
//! repositories when theirs are due. Each step's failure is recorded and the
//! next class goes on. Copies are attempted at every run, due or not, so a copy
//! target that was away gets what it missed when it comes back.
//!
//! Two runs of the same class at once are kept apart by a lock file on this
//! machine and by a claim in the class's repository (a lock naming the class,
//! format-spec §15), which other machines see: the second skips the class and
//! says so. The repository locks keep everything else consistent.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use super::state::{self, ClassState};
use super::{Class, DrillSample, Plan, RepositorySpec, Sources};
use crate::archiver::{self, BackupOptions, Source};
use crate::check::{self, ReadData};
use crate::error::{Error, Result};
use crate::forget::{self, GroupBy};
use crate::id::SnapshotId;
use crate::prune::{self, PruneOptions};
use crate::record::{self, Record, RecordKind};
use crate::repository::Repository;
use crate::snapshot::{self, SourceProblem};

pub struct RunOptions {
    /// Only this class.
    pub class: Option<String>,
    /// Say what is due and would be done; change nothing, run no command.
    pub dry_run: bool,
    pub now: DateTime<FixedOffset>,
    /// The local cache's base directory, if any.
    pub cache_base: Option<PathBuf>,
    /// Where the per-class lock files go.
    pub lock_dir: PathBuf,
    /// Where what this user saw of each repository is kept (`crate::seen`);
    /// `None`: no comparison (a dry run writes nothing there either).
    pub seen_base: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Ok,
    /// Not done, for a reason that is not a failure (locked by another run,
    /// nothing to do in a dry run).
    Skipped,
    /// Would be done (dry run).
    Planned,
    Failed,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// `before`, `backup`, `after`, `forget`, `prune`, `copy`, `check`, `drill`.
    pub step: &'static str,
    /// The repository (plan name) it acted on.
    pub repository: String,
    pub status: StepStatus,
    pub message: String,
    /// The snapshot made (backup), drilled (drill); ids forgotten (forget) and
    /// copied (copy) are in `snapshots`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassOutcome {
    /// Everything due was done.
    Ok,
    /// Nothing was due.
    NotDue,
    /// Another plan run holds this class.
    Busy,
    /// A step failed.
    Failed,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClassReport {
    pub class: String,
    pub repository: String,
    pub outcome: ClassOutcome,
    /// Whether the backup was due.
    pub backup_due: bool,
    /// When the next backup is due (after this run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_backup: Option<String>,
    pub steps: Vec<StepReport>,
}

impl ClassReport {
    /// The failed steps' messages.
    pub fn failures(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|s| s.status == StepStatus::Failed)
            .map(|s| format!("{} ({}): {}", s.step, s.repository, s.message))
            .collect()
    }
}

/// What a run reports as it goes.
pub enum Event<'a> {
    /// A class is being started.
    Class(&'a Class),
    /// A step finished (or, in a dry run, was planned).
    Step(&'a Class, &'a StepReport),
    /// A backup could not read a source (`error`) or saw it change.
    Source(&'a Class, bool, &'a SourceProblem),
    /// A class is done.
    ClassDone(&'a Class, &'a ClassReport),
}

/// Runs the plan (or one class of it). A class that fails doesn't stop the
/// others: the reports say which failed and why.
pub fn run(
    plan: &Plan,
    opts: &RunOptions,
    interrupt: &AtomicBool,
    report: &(dyn Fn(Event) + Sync),
) -> Result<Vec<ClassReport>> {
    if let Some(c) = &opts.class {
        if !plan.classes.iter().any(|k| k.name == *c) {
            let known: Vec<&str> = plan.classes.iter().map(|k| k.name.as_str()).collect();
            return Err(Error::invalid(format!(
                "the plan has no class {c:?} (its classes: {})",
                known.join(", ")
            )));
        }
    }
    let mut runner = Runner {
        plan,
        opts,
        interrupt,
        report,
        open: HashMap::new(),
        lost: HashMap::new(),
    };
    let mut reports = Vec::new();
    for class in &plan.classes {
        if opts.class.as_ref().is_some_and(|c| *c != class.name) {
            continue;
        }
        if interrupt.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        report(Event::Class(class));
        let r = runner.class(class)?;
        report(Event::ClassDone(class, &r));
        reports.push(r);
    }
    Ok(reports)
}

struct Runner<'a> {
    plan: &'a Plan,
    opts: &'a RunOptions,
    interrupt: &'a AtomicBool,
    report: &'a (dyn Fn(Event<'_>) + Sync),
    /// Repositories opened so far, or why one could not be: a second class on
    /// an unreachable repository fails at once with the same message.
    open: HashMap<String, std::result::Result<Arc<Repository>, String>>,
    /// Repositories that lost files this user saw, with what was lost.
    lost: HashMap<String, String>,
}

/// A step's result being built.
struct Steps<'a> {
    class: &'a Class,
    report: &'a (dyn Fn(Event<'_>) + Sync),
    list: Vec<StepReport>,
}

impl<'a> Steps<'a> {
    fn push(&mut self, step: StepReport) {
        (self.report)(Event::Step(self.class, &step));
        self.list.push(step);
    }

    fn add(&mut self, step: &'static str, repo: &str, status: StepStatus, message: String) {
        self.push(StepReport {
            step,
            repository: repo.to_string(),
            status,
            message,
            snapshot: None,
            snapshots: Vec::new(),
        });
    }

    fn failed(&self) -> bool {
        self.list.iter().any(|s| s.status == StepStatus::Failed)
    }
}

impl<'a> Runner<'a> {
    fn spec(&self, name: &str) -> Result<&'a RepositorySpec> {
        self.plan
            .repositories
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::invalid(format!("the plan has no repository {name:?}")))
    }

    fn repo(&mut self, name: &str) -> std::result::Result<Arc<Repository>, String> {
        if let Some(r) = self.open.get(name) {
            return r.clone();
        }
        let opened = self
            .spec(name)
            .and_then(|spec| super::open::open(spec, self.opts.cache_base.as_deref()))
            .map_err(|e| {
                let path = self
                    .spec(name)
                    .map(|s| s.path.display().to_string())
                    .unwrap_or_default();
                format!("repository {name} ({path}) can't be opened: {e}")
            });
        if let (Ok(repo), Some(base)) = (&opened, &self.opts.seen_base) {
            let path = self
                .spec(name)
                .map(|s| s.path.display().to_string())
                .unwrap_or_default();
            match crate::seen::observe(repo, base) {
                Ok(o) if o.anything_missing() => {
                    self.lost.insert(name.to_string(), o.describe(&path));
                }
                Ok(_) => {}
                Err(e) => {
                    self.lost.insert(
                        name.to_string(),
                        format!("could not compare {path} with what this user saw there: {e}"),
                    );
                }
            }
        }
        self.open.insert(name.to_string(), opened.clone());
        opened
    }

    /// A failed `integrity` step when repository `name` lost files this user
    /// saw: the class goes on, and fails, until the loss is accepted.
    fn report_lost(&self, name: &str, steps: &mut Steps<'a>) {
        if let Some(msg) = self.lost.get(name) {
            steps.add("integrity", name, StepStatus::Failed, msg.clone());
        }
    }

    fn class(&mut self, class: &'a Class) -> Result<ClassReport> {
        let mut steps = Steps {
            class,
            report: self.report,
            list: Vec::new(),
        };
        let mut out = ClassReport {
            class: class.name.clone(),
            repository: class.repository.clone(),
            outcome: ClassOutcome::Ok,
            backup_due: false,
            next_backup: None,
            steps: Vec::new(),
        };
        let repo = match self.repo(&class.repository) {
            Ok(r) => r,
            Err(msg) => {
                steps.add("backup", &class.repository, StepStatus::Failed, msg);
                out.outcome = ClassOutcome::Failed;
                out.steps = steps.list;
                return Ok(out);
            }
        };
        let _guard = if self.opts.dry_run {
            None
        } else {
            match class_lock(&self.opts.lock_dir, &repo, &class.name)? {
                Some(g) => Some(g),
                None => {
                    steps.add(
                        "backup",
                        &class.repository,
                        StepStatus::Skipped,
                        format!(
                            "another `cairn plan run` is running class {} on this machine",
                            class.name
                        ),
                    );
                    out.outcome = ClassOutcome::Busy;
                    out.steps = steps.list;
                    return Ok(out);
                }
            }
        };
        // The same across machines, through a claim in the repository.
        let _claim = if self.opts.dry_run {
            None
        } else {
            match crate::lock::claim_class(&repo, &class.name) {
                Ok(crate::lock::Claim::Held(g)) => Some(g),
                Ok(crate::lock::Claim::Busy(who)) => {
                    steps.add(
                        "backup",
                        &class.repository,
                        StepStatus::Skipped,
                        format!(
                            "another `cairn plan run` is running class {}: {who}",
                            class.name
                        ),
                    );
                    out.outcome = ClassOutcome::Busy;
                    out.steps = steps.list;
                    return Ok(out);
                }
                Err(e) => {
                    steps.add(
                        "backup",
                        &class.repository,
                        StepStatus::Failed,
                        format!("claiming the class in {}: {e}", class.repository),
                    );
                    out.outcome = ClassOutcome::Failed;
                    out.steps = steps.list;
                    return Ok(out);
                }
            }
        };
        self.report_lost(&class.repository, &mut steps);
        // Read once the class is held: a run that just finished is seen.
        let st = match ClassState::load(&repo, &class.name) {
            Ok(s) => s,
            Err(e) => {
                steps.add(
                    "backup",
                    &class.repository,
                    StepStatus::Failed,
                    format!("reading the class's state in {}: {e}", class.repository),
                );
                out.outcome = ClassOutcome::Failed;
                out.steps = steps.list;
                return Ok(out);
            }
        };
        let now = self.opts.now;
        out.backup_due = state::is_due(st.last_success(), class.every, now);
        let mut acted = false;
        let mut next_from = st.last_success();
        if out.backup_due {
            acted = true;
            let made = self.backup(class, &repo, &mut steps)?;
            if made.is_some() && !steps.failed() {
                next_from = Some(now);
            }
        }
        if let Some(keep) = &class.keep {
            // Without a backup, only when there is something to forget: a
            // retention postponed (the repository was locked) or failed
            // before is applied at the next run, due or not.
            let pending = !out.backup_due && !forgotten(st.snapshots.clone(), keep).is_empty();
            if out.backup_due || pending {
                acted |= pending;
                self.retention(class, keep, &class.repository, &repo, &mut steps);
            }
        }
        for target in &class.copy_to {
            if self.copy(class, &repo, target, &mut steps) {
                acted = true;
            }
        }
        let mut repos = vec![class.repository.clone()];
        repos.extend(class.copy_to.iter().cloned());
        for name in &repos {
            if self.verify(class, name, &mut steps)? {
                acted = true;
            }
        }
        out.next_backup = state::next_due(next_from, class.every)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, false));
        out.outcome = if steps.failed() {
            ClassOutcome::Failed
        } else if acted {
            ClassOutcome::Ok
        } else {
            ClassOutcome::NotDue
        };
        out.steps = steps.list;
        Ok(out)
    }

    /// `before`, the backup, `after`. The snapshot's id if one was written.
    fn backup(
        &mut self,
        class: &'a Class,
        repo: &Arc<Repository>,
        steps: &mut Steps<'a>,
    ) -> Result<Option<SnapshotId>> {
        let rname = &class.repository;
        if self.opts.dry_run {
            steps.add(
                "backup",
                rname,
                StepStatus::Planned,
                format!("would back up {}", describe_sources(&class.sources)),
            );
            return Ok(None);
        }
        let mut ok = true;
        for (i, cmd) in class.before.iter().enumerate() {
            match run_hook(class, "before", cmd, None) {
                Ok(()) => steps.add("before", rname, StepStatus::Ok, format!("ran `{cmd}`")),
                Err(e) => {
                    steps.add(
                        "before",
                        rname,
                        StepStatus::Failed,
                        format!(
                            "before command {} `{cmd}` failed: {e}; the backup was not made",
                            i + 1
                        ),
                    );
                    ok = false;
                    break;
                }
            }
        }
        let mut made = None;
        if ok {
            match self.backup_now(class, repo) {
                Ok((id, snap)) => {
                    let m = &snap.summary;
                    let mut message = format!(
                        "snapshot {} saved: {} files, {} new before compression",
                        id.short(),
                        m.files_new + m.files_changed + m.files_unchanged,
                        crate::text::bytes(m.bytes_new)
                    );
                    let status = if snap.errors.is_empty() {
                        StepStatus::Ok
                    } else {
                        ok = false;
                        message.push_str(&format!(
                            "; {} could not be read (recorded in the snapshot)",
                            crate::text::count(snap.errors.len(), "source", "sources")
                        ));
                        StepStatus::Failed
                    };
                    steps.push(StepReport {
                        step: "backup",
                        repository: rname.clone(),
                        status,
                        message,
                        snapshot: Some(id.to_hex()),
                        snapshots: Vec::new(),
                    });
                    made = Some(id);
                }
                Err(e) => {
                    ok = false;
                    if matches!(e, Error::Interrupted) {
                        self.after(class, false, steps);
                        return Err(e);
                    }
                    steps.add("backup", rname, StepStatus::Failed, e.to_string());
                }
            }
        }
        self.after(class, ok, steps);
        Ok(made)
    }

    fn after(&self, class: &Class, ok: bool, steps: &mut Steps<'a>) {
        for (i, cmd) in class.after.iter().enumerate() {
            match run_hook(class, "after", cmd, Some(ok)) {
                Ok(()) => steps.add(
                    "after",
                    &class.repository,
                    StepStatus::Ok,
                    format!("ran `{cmd}`"),
                ),
                Err(e) => steps.add(
                    "after",
                    &class.repository,
                    StepStatus::Failed,
                    format!("after command {} `{cmd}` failed: {e}", i + 1),
                ),
            }
        }
    }

    fn backup_now(
        &self,
        class: &'a Class,
        repo: &Arc<Repository>,
    ) -> Result<(SnapshotId, snapshot::Snapshot)> {
        let mut tags = vec![class.tag()];
        tags.extend(class.tags.iter().cloned());
        let source = match &class.sources {
            Sources::Paths(p) => Source::Paths(p.clone()),
            Sources::Command {
                command,
                stdin_filename,
            } => {
                let (c, out) = spawn_source(class, command)?;
                Source::Stream {
                    name: stdin_filename.clone(),
                    reader: Box::new(CommandOutput {
                        child: Some(c),
                        out,
                        command: command.clone(),
                    }),
                }
            }
        };
        let report = self.report;
        let opts = BackupOptions {
            source,
            host: None,
            tags,
            excludes: class.exclude.clone(),
            one_file_system: false,
            parent: None,
            force: false,
            progress: None,
            compression: class.compression,
        };
        let r = archiver::backup(repo, opts, self.interrupt, &|e| match e {
            archiver::Event::Error(p) => report(Event::Source(class, true, p)),
            archiver::Event::Warning(p) => report(Event::Source(class, false, p)),
        })?;
        if let Some(base) = &self.opts.seen_base {
            let _ = crate::seen::note_written(repo, base, &[r.id]);
        }
        Ok((r.id, r.snapshot))
    }

    /// Applies the class's retention to its snapshots in `repo`, then prunes if
    /// it forgot any. A repository locked by someone else postpones this to the
    /// next run; it is not a failure.
    fn retention(
        &self,
        class: &Class,
        keep: &forget::KeepPolicy,
        rname: &str,
        repo: &Arc<Repository>,
        steps: &mut Steps<'a>,
    ) {
        // A repository that lost files behind cairn's back keeps what it has
        // until the loss is accepted: a prune would delete the packs of the
        // lost snapshots, which putting them back from a copy would need.
        if self.lost.contains_key(rname) {
            steps.add(
                "forget",
                rname,
                StepStatus::Skipped,
                "postponed until the lost files are put back or the loss is accepted \
                 (`cairn check --accept-missing`)"
                    .to_string(),
            );
            return;
        }
        let tag = class.tag();
        let lock = if self.opts.dry_run {
            None
        } else {
            match crate::lock::acquire(repo, true) {
                Ok(l) => Some(l),
                Err(Error::Locked(who)) => {
                    steps.add(
                        "forget",
                        rname,
                        StepStatus::Skipped,
                        format!("postponed to the next run: the repository is locked: {who}"),
                    );
                    return;
                }
                Err(e) => {
                    steps.add("forget", rname, StepStatus::Failed, e.to_string());
                    return;
                }
            }
        };
        let chosen = repo.list_snapshots_lenient().map(|(all, _)| {
            let mine: Vec<_> = all
                .into_iter()
                .filter(|(_, s)| s.tags.contains(&tag))
                .collect();
            let total = mine.len();
            (total, forgotten(mine, keep))
        });
        let (total, remove) = match chosen {
            Ok(r) => r,
            Err(e) => {
                steps.add("forget", rname, StepStatus::Failed, e.to_string());
                return;
            }
        };
        let ids: Vec<String> = remove.iter().map(|i| i.to_hex()).collect();
        let kept = total - remove.len();
        let Some(lock) = lock else {
            let status = StepStatus::Planned;
            steps.push(StepReport {
                step: "forget",
                repository: rname.to_string(),
                status,
                message: format!(
                    "would keep {}, forget {}",
                    crate::text::count(kept, "snapshot", "snapshots"),
                    remove.len()
                ),
                snapshot: None,
                snapshots: ids,
            });
            return;
        };
        if let Err(e) = forget::remove_snapshots(repo, &lock, &remove) {
            steps.add("forget", rname, StepStatus::Failed, e.to_string());
            return;
        }
        // Old records of this class's checks and drills go with the snapshots.
        let trimmed = record::load_all(repo).map(|(all, _)| {
            record::trim_plan(&all, RECORDS_KEPT)
                .into_iter()
                .filter(|id| {
                    all.iter()
                        .any(|(i, r)| i == id && r.class.as_deref() == Some(&class.name))
                })
                .collect::<Vec<_>>()
        });
        let trim_note = match trimmed.and_then(|old| record::remove(repo, &lock, &old)) {
            Ok(()) => String::new(),
            Err(e) => format!("; old check and drill records were left: {e}"),
        };
        steps.push(StepReport {
            step: "forget",
            repository: rname.to_string(),
            status: StepStatus::Ok,
            message: format!(
                "kept {}, forgot {}{trim_note}",
                crate::text::count(kept, "snapshot", "snapshots"),
                remove.len()
            ),
            snapshot: None,
            snapshots: ids,
        });
        if remove.is_empty() {
            return;
        }
        // Under the same lock: nothing can come between the forget and the
        // prune that frees what it forgot.
        let pruned = prune::prune_locked(
            repo,
            &lock,
            &PruneOptions::default(),
            self.interrupt,
            &|_| {},
        );
        drop(lock);
        match pruned {
            Ok(s) => steps.add(
                "prune",
                rname,
                StepStatus::Ok,
                format!(
                    "deleted {}, repacked {}; {} freed",
                    crate::text::count(
                        (s.packs_deleted + s.packs_unindexed_deleted) as usize,
                        "pack",
                        "packs"
                    ),
                    crate::text::count(s.packs_repacked as usize, "pack", "packs"),
                    crate::text::bytes(s.bytes_before.saturating_sub(s.bytes_after))
                ),
            ),
            Err(Error::Locked(who)) => steps.add(
                "prune",
                rname,
                StepStatus::Skipped,
                format!("postponed to the next run: the repository is locked: {who}"),
            ),
            Err(e) => steps.add("prune", rname, StepStatus::Failed, e.to_string()),
        }
    }

    /// Copies the class's snapshots that `target` lacks, then applies the
    /// class's retention there. Whether anything was (or would be) copied.
    fn copy(
        &mut self,
        class: &'a Class,
        src: &Arc<Repository>,
        target: &str,
        steps: &mut Steps<'a>,
    ) -> bool {
        let dst = match self.repo(target) {
            Ok(r) => r,
            Err(msg) => {
                steps.add("copy", target, StepStatus::Failed, msg);
                return false;
            }
        };
        self.report_lost(target, steps);
        let tag = class.tag();
        let wanted = match src.list_snapshots_lenient() {
            Ok((all, _)) => all
                .into_iter()
                .filter(|(_, s)| s.tags.contains(&tag))
                .collect::<Vec<_>>(),
            Err(e) => {
                steps.add("copy", target, StepStatus::Failed, e.to_string());
                return false;
            }
        };
        // Only what the class's retention keeps: the target applies the same
        // retention, and would forget again at once (and prune) a snapshot the
        // source still has only because its own retention was postponed.
        let wanted = match &class.keep {
            Some(keep) => {
                let gone: HashSet<SnapshotId> =
                    forgotten(wanted.clone(), keep).into_iter().collect();
                wanted
                    .into_iter()
                    .filter(|(id, _)| !gone.contains(id))
                    .collect()
            }
            None => wanted,
        };
        let missing = match crate::copy::missing(&dst, &wanted) {
            Ok(m) => m,
            Err(e) => {
                steps.add("copy", target, StepStatus::Failed, e.to_string());
                return false;
            }
        };
        if missing.is_empty() {
            return false;
        }
        if self.opts.dry_run {
            steps.push(StepReport {
                step: "copy",
                repository: target.to_string(),
                status: StepStatus::Planned,
                message: format!(
                    "would copy {}",
                    crate::text::count(missing.len(), "snapshot", "snapshots")
                ),
                snapshot: None,
                snapshots: missing.iter().map(|i| i.to_hex()).collect(),
            });
            return true;
        }
        let opts = crate::copy::CopyOptions::default();
        match crate::copy::copy(src, &dst, &missing, &opts, self.interrupt, &|_| {}) {
            Ok(r) => {
                if let Some(base) = &self.opts.seen_base {
                    let made: Vec<SnapshotId> = r.copied.iter().map(|(_, new)| *new).collect();
                    let _ = crate::seen::note_written(&dst, base, &made);
                }
                let failed = !r.failed.is_empty();
                steps.push(StepReport {
                    step: "copy",
                    repository: target.to_string(),
                    status: if failed {
                        StepStatus::Failed
                    } else {
                        StepStatus::Ok
                    },
                    message: {
                        let mut m = format!(
                            "copied {} ({} sent)",
                            crate::text::count(r.copied.len(), "snapshot", "snapshots"),
                            crate::text::bytes(r.bytes_sent)
                        );
                        for (id, why) in &r.failed {
                            m.push_str(&format!("; {} not copied: {why}", id.short()));
                        }
                        m
                    },
                    snapshot: None,
                    snapshots: r.copied.iter().map(|(_, new)| new.to_hex()).collect(),
                });
            }
            Err(Error::Interrupted) => return true,
            Err(e) => {
                let (status, msg) = postponed_if_locked(e);
                steps.add("copy", target, status, msg);
                return true;
            }
        }
        if let Some(keep) = &class.keep {
            self.retention(class, keep, target, &dst, steps);
        }
        true
    }

    /// The check and the drill of repository `name` for the class, each when
    /// due. Whether either was (or would be) run.
    fn verify(&mut self, class: &'a Class, name: &str, steps: &mut Steps<'a>) -> Result<bool> {
        if class.check.is_none() && class.drill.is_none() {
            return Ok(false);
        }
        let Ok(cached) = self.repo(name) else {
            // Already reported by the step that needed it first.
            return Ok(false);
        };
        let st = match ClassState::load(&cached, &class.name) {
            Ok(s) => s,
            Err(e) => {
                steps.add("check", name, StepStatus::Failed, e.to_string());
                return Ok(true);
            }
        };
        let now = self.opts.now;
        let check_due = class
            .check
            .as_ref()
            .is_some_and(|c| state::is_due(st.last_check_time(), c.every, now));
        let drill_due = class
            .drill
            .as_ref()
            .is_some_and(|d| state::is_due(st.last_drill_time(), d.every, now));
        if !check_due && !drill_due {
            return Ok(false);
        }
        // Checks and drills read the repository's own bytes, not the local
        // cache: a drill rehearses a restore on a machine that has lost it.
        let repo = if self.opts.dry_run {
            cached
        } else {
            match self.spec(name).and_then(|s| super::open::open(s, None)) {
                Ok(r) => r,
                Err(e) => {
                    steps.add(
                        "check",
                        name,
                        StepStatus::Failed,
                        format!("repository {name} can't be opened: {e}"),
                    );
                    return Ok(true);
                }
            }
        };
        if let Some(c) = class.check.as_ref().filter(|_| check_due) {
            self.check(class, name, &repo, c.read_data, steps)?;
        }
        if let Some(d) = class.drill.as_ref().filter(|_| drill_due) {
            {
                match st.last() {
                    None => steps.add(
                        "drill",
                        name,
                        StepStatus::Skipped,
                        "the class has no snapshot here yet".into(),
                    ),
                    Some((id, _)) => self.drill(class, name, &repo, *id, d.sample, steps)?,
                }
            }
        }
        Ok(true)
    }

    fn check(
        &self,
        class: &Class,
        name: &str,
        repo: &Arc<Repository>,
        read_data: ReadData,
        steps: &mut Steps<'a>,
    ) -> Result<()> {
        let detail = match read_data {
            ReadData::None => "structure".to_string(),
            ReadData::All => "read-data".to_string(),
            other => format!("read-data-subset {}", other.describe()),
        };
        if self.opts.dry_run {
            steps.add(
                "check",
                name,
                StepStatus::Planned,
                format!("would check ({detail})"),
            );
            return Ok(());
        }
        let started = crate::clock::now_rfc3339();
        let clock = Instant::now();
        let problems = std::sync::Mutex::new(Vec::new());
        let result = check::check(repo, read_data, self.interrupt, &|p| {
            if p.severity == check::Severity::Error {
                if let Ok(mut v) = problems.lock() {
                    if v.len() < record::MAX_PROBLEMS {
                        v.push(format!("{}: {}", p.object, p.message));
                    }
                }
            }
        });
        let problems = problems.into_inner().unwrap_or_default();
        let summary = match result {
            Ok(s) => s,
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => {
                let (status, msg) = postponed_if_locked(e);
                steps.add("check", name, status, msg);
                return Ok(());
            }
        };
        let ok = summary.errors == 0;
        let mut rec = Record::new(RecordKind::Check);
        rec.time = started;
        rec.class = Some(class.name.clone());
        rec.ok = ok;
        rec.problems = problems.clone();
        rec.files = summary.packs_read;
        rec.bytes = summary.bytes_read;
        rec.seconds = clock.elapsed().as_secs_f64();
        rec.detail = detail.clone();
        let saved = crate::lock::acquire(repo, false).and_then(|_lock| record::save(repo, &rec));
        let mut message = if ok {
            format!("no errors ({detail})")
        } else {
            format!(
                "{} ({detail}): {}; run `cairn check -r {}` for the repair steps",
                crate::text::count(summary.errors as usize, "error", "errors"),
                problems.first().cloned().unwrap_or_default(),
                self.spec(name)
                    .map(|s| s.path.display().to_string())
                    .unwrap_or_default()
            )
        };
        if let Err(e) = &saved {
            message.push_str(&format!("; the result could not be recorded: {e}"));
        }
        let status = if ok && saved.is_ok() {
            StepStatus::Ok
        } else {
            StepStatus::Failed
        };
        steps.add("check", name, status, message);
        Ok(())
    }

    fn drill(
        &self,
        class: &Class,
        name: &str,
        repo: &Arc<Repository>,
        snapshot: SnapshotId,
        sample: DrillSample,
        steps: &mut Steps<'a>,
    ) -> Result<()> {
        let sample = match sample {
            DrillSample::Files(n) => crate::drill::Sample::Files(u64::from(n)),
            DrillSample::Percent(p) => crate::drill::Sample::Percent(p),
        };
        if self.opts.dry_run {
            steps.push(StepReport {
                step: "drill",
                repository: name.to_string(),
                status: StepStatus::Planned,
                message: "would rehearse a restore".into(),
                snapshot: Some(snapshot.to_hex()),
                snapshots: Vec::new(),
            });
            return Ok(());
        }
        let opts = crate::drill::DrillOptions {
            sample,
            compare_source: false,
            target: None,
            seed: None,
            class: Some(class.name.clone()),
            record: true,
            progress: None,
        };
        let (status, message) = match crate::drill::drill(repo, snapshot, &opts, self.interrupt) {
            Ok(r) => {
                let rate = if r.seconds > 0.0 {
                    format!(
                        "{}/s",
                        crate::text::bytes((r.bytes as f64 / r.seconds) as u64)
                    )
                } else {
                    "-".into()
                };
                if r.mismatches.is_empty() && r.record.is_none() {
                    // Unrecorded, the drill is due again at every run and
                    // status never shows it: not a success.
                    (
                        StepStatus::Failed,
                        format!(
                            "restored and verified {} at {rate}, but the result could not be \
                             recorded: {}",
                            crate::text::count(r.files, "file", "files"),
                            r.warnings.join("; ")
                        ),
                    )
                } else if r.mismatches.is_empty() {
                    (
                        StepStatus::Ok,
                        format!(
                            "restored and verified {} ({}) at {rate}",
                            crate::text::count(r.files as usize, "file", "files"),
                            crate::text::bytes(r.bytes)
                        ),
                    )
                } else {
                    let first = r
                        .mismatches
                        .first()
                        .map(|m| format!("{}: {}", m.path, m.problem))
                        .unwrap_or_default();
                    (
                        StepStatus::Failed,
                        format!(
                            "{} of {}: {first}",
                            crate::text::count(r.mismatches.len(), "mismatch", "mismatches"),
                            crate::text::count(r.files as usize, "file", "files"),
                        ),
                    )
                }
            }
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => postponed_if_locked(e),
        };
        steps.push(StepReport {
            step: "drill",
            repository: name.to_string(),
            status,
            message,
            snapshot: Some(snapshot.to_hex()),
            snapshots: Vec::new(),
        });
        Ok(())
    }
}

/// Which of a class's snapshots its retention forgets (grouped by host).
fn forgotten(
    snapshots: Vec<(SnapshotId, snapshot::Snapshot)>,
    keep: &forget::KeepPolicy,
) -> Vec<SnapshotId> {
    let group_by = GroupBy {
        host: true,
        paths: false,
        tags: false,
    };
    forget::plan(snapshots, keep, group_by)
        .into_iter()
        .flat_map(|g| g.decisions)
        .filter(|d| !d.keep())
        .map(|d| d.id)
        .collect()
}

/// A step that met another process's lock waits for the next run (what it
/// would have done stays due); anything else is a failure.
fn postponed_if_locked(e: Error) -> (StepStatus, String) {
    match e {
        Error::Locked(who) => (
            StepStatus::Skipped,
            format!("postponed to the next run: the repository is locked: {who}"),
        ),
        e => (StepStatus::Failed, e.to_string()),
    }
}

/// Records of checks and drills kept per class and kind; older ones are
/// removed when the class's retention runs.
pub const RECORDS_KEPT: usize = 100;

fn describe_sources(s: &Sources) -> String {
    match s {
        Sources::Paths(p) => p
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        Sources::Command {
            command,
            stdin_filename,
        } => format!("the output of `{command}` as {stdin_filename}"),
    }
}

/// The per-class lock: a file on this machine named after the repository and
/// the class, held with `flock` for the class's whole run. `None` when another
/// process holds it.
fn class_lock(dir: &Path, repo: &Repository, class: &str) -> Result<Option<Flock<File>>> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut h = blake3::Hasher::new();
    h.update(&repo.repo_id().0);
    h.update(class.as_bytes());
    let name = format!("class-{}.lock", &h.finalize().to_hex()[..32]);
    let path = dir.join(name);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(Error::Io {
            path,
            source: io::Error::from(e),
        }),
    }
}

/// The standard error stream, for a command's standard output: `--json` keeps
/// standard output for cairn's own messages.
fn stderr_as_stdio() -> Stdio {
    match io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::null(),
    }
}

/// Runs a `before` or `after` command with `sh -c`, its output on our standard
/// error. It sees CAIRN_CLASS, CAIRN_PLAN_STEP and, after the backup,
/// CAIRN_BACKUP_OK (`1` or `0`).
fn run_hook(
    class: &Class,
    step: &str,
    cmd: &str,
    backup_ok: Option<bool>,
) -> std::result::Result<(), String> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(stderr_as_stdio())
        .env("CAIRN_CLASS", &class.name)
        .env("CAIRN_PLAN_STEP", step);
    if let Some(ok) = backup_ok {
        c.env("CAIRN_BACKUP_OK", if ok { "1" } else { "0" });
    }
    let status = c.status().map_err(|e| format!("can't run sh: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(status.to_string())
    }
}

fn spawn_source(class: &Class, cmd: &str) -> Result<(Child, ChildStdout)> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .env("CAIRN_CLASS", &class.name)
        .env("CAIRN_PLAN_STEP", "backup")
        .spawn()
        .map_err(|source| Error::Io {
            path: "sh".into(),
            source,
        })?;
    let out = child.stdout.take().ok_or_else(|| {
        Error::invalid(format!("the command of class {} has no output", class.name))
    })?;
    Ok((child, out))
}

/// A command's output, read to its end; the end is an error unless the command
/// exited successfully, so the backup of a dump that failed half-way writes no
/// snapshot.
struct CommandOutput {
    child: Option<Child>,
    out: ChildStdout,
    command: String,
}

impl Read for CommandOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.out.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Some(mut c) = self.child.take() {
                let status = c.wait()?;
                if !status.success() {
                    return Err(io::Error::other(format!(
                        "the command `{}` failed ({status}); no snapshot was written",
                        self.command
                    )));
                }
            }
        }
        Ok(n)
    }
}

impl Drop for CommandOutput {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
