//! `cairn plan`: `validate` finds the plan file and reports every mistake in it
//! with its line and column; `run` does what is due; `status` shows each class
//! in each repository; `schedule` makes the timer or crontab line that runs it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};

use cairn::plan::run::{ClassOutcome, ClassReport, Event, RunOptions, StepReport, StepStatus};
use cairn::plan::schedule;
use cairn::plan::status::Row;
use cairn::plan::{self, Class, Origin, Plan, Problem, Severity, Sources};
use cairn::repository::Repository;

use super::output::{self, count};
use super::{GlobalArgs, signals, usage};

#[derive(Args)]
pub struct PlanCmd {
    /// The plan file [default: $CAIRN_PLAN, else the first of ./cairn.toml,
    /// ~/.config/cairn/cairn.toml, /etc/cairn/cairn.toml that exists]
    #[arg(long, value_name = "FILE", global = true)]
    plan: Option<PathBuf>,
    #[command(subcommand)]
    command: PlanSub,
}

#[derive(Subcommand)]
enum PlanSub {
    /// Check the plan file and report every mistake in it, with its line and
    /// column; exits 1 if there is any
    Validate,
    /// Do what is due: for each class whose interval has passed, back up (with
    /// its before/after commands), apply its retention, copy to its copy
    /// targets, and run its due check and restore drill. For cron or a timer:
    /// run it as often as you like. Exits 1 if any class failed
    Run(RunArgs),
    /// One row per class and repository: last snapshot and its age, snapshots
    /// kept, stored size and dedup ratio, last check and drill, and the
    /// estimated time to restore. Exits 1 if anything is overdue or failed
    Status(StatusArgs),
    /// Print a systemd service and timer (or, with --cron or without systemd,
    /// a crontab line) that starts `plan run` often enough for the plan's
    /// shortest interval; --install writes and enables the systemd units
    Schedule(ScheduleArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Only this class
    #[arg(long, value_name = "CLASS")]
    class: Option<String>,
    /// Say what is due and would be done; change nothing and run no command
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct StatusArgs {
    /// Only this class
    #[arg(long, value_name = "CLASS")]
    class: Option<String>,
}

#[derive(Args)]
struct ScheduleArgs {
    /// Write the systemd units and enable the timer
    #[arg(long)]
    install: bool,
    /// A crontab line instead of systemd units [default when systemd is not running]
    #[arg(long, conflicts_with_all = ["systemd", "install"])]
    cron: bool,
    /// systemd units even when systemd does not seem to be running
    #[arg(long)]
    systemd: bool,
    /// Where --install writes the units [default: /etc/systemd/system as root,
    /// else ~/.config/systemd/user]
    #[arg(long, value_name = "DIR")]
    unit_dir: Option<PathBuf>,
}

pub fn run(g: &GlobalArgs, a: PlanCmd) -> Result<ExitCode> {
    match a.command {
        PlanSub::Validate => validate(g, a.plan),
        PlanSub::Run(r) => run_plan(g, a.plan, r),
        PlanSub::Status(s) => status(g, a.plan, s),
        PlanSub::Schedule(s) => schedule(g, a.plan, s),
    }
}

fn locate(flag: Option<PathBuf>) -> Result<(PathBuf, Origin)> {
    let env = std::env::var_os("CAIRN_PLAN").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    Ok(plan::locate(
        flag.as_deref(),
        env.as_deref(),
        home.as_deref(),
    )?)
}

/// The plan, or an error listing its mistakes (warnings are printed too).
fn load(g: &GlobalArgs, flag: Option<PathBuf>) -> Result<Plan> {
    let (path, _) = locate(flag)?;
    let report =
        plan::load(&path).with_context(|| format!("reading plan file {}", path.display()))?;
    let shown = output::path(&path);
    for p in &report.problems {
        if p.severity == Severity::Error || !g.quiet {
            eprintln!("{}", problem_line(&shown, p));
        }
    }
    let errors = report.errors();
    report.plan.ok_or_else(|| {
        anyhow!(
            "plan file {shown} has {}; `cairn plan validate` lists them",
            count(errors, "mistake", "mistakes")
        )
    })
}

fn now() -> Result<chrono::DateTime<chrono::FixedOffset>> {
    Ok(cairn::clock::now()?)
}

/// A `--class` the plan doesn't have is a usage error.
fn known_class(plan: &Plan, class: Option<&str>) -> Result<()> {
    match class {
        Some(c) if !plan.classes.iter().any(|k| k.name == c) => {
            let known: Vec<&str> = plan.classes.iter().map(|k| k.name.as_str()).collect();
            Err(usage(format!(
                "the plan has no class {c:?} (its classes: {})",
                known.join(", ")
            )))
        }
        _ => Ok(()),
    }
}

fn run_plan(g: &GlobalArgs, flag: Option<PathBuf>, a: RunArgs) -> Result<ExitCode> {
    let plan = load(g, flag)?;
    known_class(&plan, a.class.as_deref())?;
    // A dry run changes nothing, the local cache included: opening a
    // repository with its cache creates it, fills it and sweeps old ones.
    let cache_base = if g.no_cache || a.dry_run {
        None
    } else {
        cairn::cache::base_dir()
    };
    let lock_dir = cairn::cache::base_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("plan-locks");
    let seen_base = if a.dry_run {
        None
    } else {
        cairn::cache::base_dir()
    };
    let opts = RunOptions {
        class: a.class,
        dry_run: a.dry_run,
        now: now()?,
        cache_base,
        lock_dir,
        seen_base,
    };
    let (json, quiet) = (g.json, g.quiet);
    // A class's heading is printed with its first step, so that a class with
    // nothing due takes one line.
    let headed = std::sync::atomic::AtomicBool::new(false);
    let heading = |c: &Class| {
        if !headed.swap(true, std::sync::atomic::Ordering::Relaxed) {
            println!(
                "class {} ({}):",
                output::printable(&c.name),
                output::printable(&c.repository)
            );
        }
    };
    let report = |e: Event| match e {
        Event::Class(_) => headed.store(false, std::sync::atomic::Ordering::Relaxed),
        Event::ClassDone(c, r) => {
            if !json && !quiet && r.outcome == ClassOutcome::NotDue {
                println!(
                    "class {} ({}): nothing due{}",
                    output::printable(&c.name),
                    output::printable(&c.repository),
                    r.next_backup
                        .as_ref()
                        .map(|t| format!("; next backup {}", output::local_time(t)))
                        .unwrap_or_default()
                );
            }
        }
        Event::Step(c, s) => {
            if json {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("message_type".into(), "plan_step".into());
                    o.insert("class".into(), c.name.clone().into());
                }
                let _ = output::print_json(&v);
            } else if !quiet || s.status == StepStatus::Failed {
                heading(c);
                println!("  {}", step_line(s));
            }
        }
        Event::Source(c, error, p) => {
            let level = if error { "error" } else { "warning" };
            if json {
                let _ = output::print_json(&serde_json::json!({
                    "message_type": level, "class": c.name, "path": p.path, "error": p.error,
                }));
            } else if error || !quiet {
                eprintln!(
                    "{level}: class {}: {}: {}",
                    output::printable(&c.name),
                    output::printable(&p.path),
                    output::printable(&p.error)
                );
            }
        }
    };
    let reports = cairn::plan::run::run(&plan, &opts, &signals::INTERRUPTED, &report)?;
    let failed: Vec<&ClassReport> = reports
        .iter()
        .filter(|r| r.outcome == ClassOutcome::Failed)
        .collect();
    let tally = |o: ClassOutcome| reports.iter().filter(|r| r.outcome == o).count();
    if json {
        for r in &reports {
            output::print_json(&serde_json::json!({
                "message_type": "plan_class", "class": r.class, "repository": r.repository,
                "outcome": r.outcome, "backup_due": r.backup_due, "next_backup": r.next_backup,
                "failures": r.failures(),
            }))?;
        }
        output::print_json(&serde_json::json!({
            "message_type": "summary", "command": "plan run", "dry_run": a.dry_run,
            "classes": reports.len(), "ok": tally(ClassOutcome::Ok),
            "not_due": tally(ClassOutcome::NotDue), "busy": tally(ClassOutcome::Busy),
            "failed": failed.iter().map(|r| r.class.clone()).collect::<Vec<_>>(),
        }))?;
    } else if !quiet {
        println!(
            "plan run{}: {}: {} done, {} not due, {} busy, {} failed",
            if a.dry_run { " (dry run)" } else { "" },
            count(reports.len(), "class", "classes"),
            tally(ClassOutcome::Ok),
            tally(ClassOutcome::NotDue),
            tally(ClassOutcome::Busy),
            failed.len()
        );
    }
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut msg = format!("{} failed:", count(failed.len(), "class", "classes"));
    for r in &failed {
        for f in r.failures() {
            msg.push_str(&format!("\n  {}: {}", r.class, f));
        }
    }
    Err(anyhow!(msg))
}

fn step_line(s: &StepReport) -> String {
    let status = match s.status {
        StepStatus::Ok => "ok",
        StepStatus::Skipped => "skipped",
        StepStatus::Planned => "planned",
        StepStatus::Failed => "FAILED",
    };
    format!(
        "{:<7} {:<10} {:<8} {}",
        s.step,
        output::printable(&s.repository),
        status,
        output::printable(&s.message)
    )
}

fn status(g: &GlobalArgs, flag: Option<PathBuf>, a: StatusArgs) -> Result<ExitCode> {
    let plan = load(g, flag)?;
    known_class(&plan, a.class.as_deref())?;
    let now = now()?;
    let cache_base = if g.no_cache {
        None
    } else {
        cairn::cache::base_dir()
    };
    let mut opened: HashMap<String, std::result::Result<Arc<Repository>, String>> = HashMap::new();
    let mut lost: HashMap<String, String> = HashMap::new();
    let mut open = |name: &str| {
        opened
            .entry(name.to_string())
            .or_insert_with(|| {
                let spec = plan
                    .repositories
                    .iter()
                    .find(|r| r.name == name)
                    .ok_or_else(|| format!("the plan has no repository {name:?}"))?;
                let repo = plan::open::open(spec, cache_base.as_deref()).map_err(|e| {
                    format!(
                        "repository {name} ({}) can't be opened: {e}",
                        spec.path.display()
                    )
                })?;
                if let Some(o) = super::observe(g, &repo).filter(|o| o.anything_missing()) {
                    lost.insert(
                        name.to_string(),
                        o.describe(&spec.path.display().to_string()),
                    );
                }
                Ok(repo)
            })
            .clone()
    };
    let mut rows = cairn::plan::status::rows(&plan, a.class.as_deref(), now, &mut open);
    for r in &mut rows {
        r.lost = lost.get(&r.repository).cloned();
    }
    let attention = rows.iter().filter(|r| needs_attention(r)).count();
    if g.json {
        for r in &rows {
            let mut v = serde_json::to_value(r)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("message_type".into(), "plan_status".into());
            }
            output::print_json(&v)?;
        }
        output::print_json(&serde_json::json!({
            "message_type": "summary", "command": "plan status",
            "rows": rows.len(), "needing_attention": attention,
        }))?;
    } else {
        print_status(&rows, now);
    }
    if attention > 0 {
        if !g.json && !g.quiet {
            eprintln!(
                "{} overdue, failed or unreadable",
                count(attention, "row is", "rows are")
            );
        }
        return Ok(ExitCode::from(super::EXIT_ERROR));
    }
    Ok(ExitCode::SUCCESS)
}

fn needs_attention(r: &Row) -> bool {
    r.error.is_some()
        || r.lost.is_some()
        || r.overdue
        || r.check_overdue
        || r.drill_overdue
        || r.last_check.as_ref().is_some_and(|c| !c.ok)
        || r.last_drill.as_ref().is_some_and(|d| !d.ok)
}

/// "3m", "5h", "12d".
fn age(secs: i64) -> String {
    let s = secs.max(0);
    if s < 3600 {
        format!("{}m", s / 60)
    } else if s < 2 * 86400 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86400)
    }
}

fn since(now: chrono::DateTime<chrono::FixedOffset>, t: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|t| format!("{} ago", age((now - t).num_seconds())))
        .unwrap_or_else(|_| "?".into())
}

fn duration(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0}s")
    } else if secs < 7200.0 {
        format!("{:.0}m", secs / 60.0)
    } else {
        format!("{:.1}h", secs / 3600.0)
    }
}

fn print_status(rows: &[Row], now: chrono::DateTime<chrono::FixedOffset>) {
    let mut table = vec![
        [
            "CLASS",
            "REPOSITORY",
            "LAST SNAPSHOT",
            "AGE",
            "STATE",
            "KEPT",
            "SIZE",
            "STORED",
            "DEDUP",
            "LAST CHECK",
            "LAST DRILL",
            "RESTORE TIME",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut errors = Vec::new();
    for r in rows {
        let repo = if r.role == "copy" {
            format!("{} (copy)", r.repository)
        } else {
            r.repository.clone()
        };
        if let Some(e) = &r.error {
            errors.push(format!("{} in {}: {e}", r.class, r.repository));
            let mut row = vec![
                r.class.clone(),
                repo,
                "-".into(),
                "-".into(),
                "UNREADABLE".into(),
            ];
            row.resize(12, "-".into());
            table.push(row);
            continue;
        }
        if let Some(l) = &r.lost {
            errors.push(format!("{} in {}: {l}", r.class, r.repository));
        }
        let state = if r.lost.is_some() {
            "LOST FILES"
        } else if r.overdue {
            "OVERDUE"
        } else {
            "ok"
        };
        let check = r.last_check.as_ref().map_or_else(
            || {
                if r.check_overdue {
                    "never (due)".into()
                } else {
                    "-".into()
                }
            },
            |c| {
                format!(
                    "{} {}{}",
                    if c.ok { "ok" } else { "FAILED" },
                    since(now, &c.time),
                    if r.check_overdue { " (due)" } else { "" }
                )
            },
        );
        let drill = r.last_drill.as_ref().map_or_else(
            || {
                if r.drill_overdue {
                    "never (due)".into()
                } else {
                    "-".into()
                }
            },
            |d| {
                let rate = r
                    .restore_bytes_per_second
                    .map(|b| format!(", {}/s", output::bytes(b as u64)))
                    .unwrap_or_default();
                format!(
                    "{} {}{rate}{}",
                    if d.ok { "ok" } else { "FAILED" },
                    since(now, &d.time),
                    if r.drill_overdue { " (due)" } else { "" }
                )
            },
        );
        table.push(vec![
            r.class.clone(),
            repo,
            r.last_snapshot
                .as_ref()
                .map_or("none".into(), |s| s.get(..8).unwrap_or(s).to_string()),
            r.age_seconds.map_or("-".into(), age),
            state.into(),
            r.snapshots.to_string(),
            output::bytes(r.size_bytes),
            output::bytes(r.stored_bytes),
            r.dedup_ratio.map_or("-".into(), |d| format!("{d:.1}x")),
            check,
            drill,
            r.estimated_restore_seconds.map_or("-".into(), duration),
        ]);
    }
    let widths: Vec<usize> = (0..12)
        .map(|i| {
            table
                .iter()
                .map(|row| row.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{:<w$}", output::printable(c), w = *w))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    for e in errors {
        eprintln!("error: {}", output::printable(&e));
    }
}

fn schedule(g: &GlobalArgs, flag: Option<PathBuf>, a: ScheduleArgs) -> Result<ExitCode> {
    let plan = load(g, flag)?;
    let exe = std::env::current_exe().context("finding the path of this cairn")?;
    let period = schedule::period_minutes(&plan);
    let shortest = schedule::shortest_interval(&plan)
        .map(|i| i.to_string())
        .unwrap_or_else(|| "-".into());
    let systemd_running = Path::new("/run/systemd/system").is_dir();
    let use_cron = a.cron || (!a.systemd && !systemd_running);
    // `--json`: the fields every schedule has, then the scheduler's own.
    let schedule_doc = |scheduler: &str, own: Vec<(&str, serde_json::Value)>| {
        let mut doc = serde_json::json!({
            "scheduler": scheduler,
            "plan": plan.file.display().to_string(),
            "shortest_interval": shortest,
            "period_minutes": period,
        });
        if let Some(o) = doc.as_object_mut() {
            for (k, v) in own {
                o.insert(k.to_string(), v);
            }
        }
        doc
    };
    let root = nix::unistd::geteuid().is_root();
    if use_cron {
        let line = schedule::crontab_line(&exe, &plan.file, period);
        if !a.install && g.json {
            output::print_json(&schedule_doc(
                "cron",
                vec![("crontab_line", line.clone().into())],
            ))?;
            return Ok(ExitCode::SUCCESS);
        }
        if !a.install {
            if !g.quiet {
                println!(
                    "# cairn: the shortest interval in {} is {shortest}; run every {period} min",
                    plan.file.display()
                );
            }
            println!("{line}");
            return Ok(ExitCode::SUCCESS);
        }
        return Err(anyhow!(
            "--install writes systemd units, and systemd is not running here (--systemd \
             writes them anyway); or add this line to the crontab with `crontab -e`:\n{line}"
        ));
    }
    let user = !root;
    let units = schedule::systemd_units(&exe, &plan.file, period, user);
    if !a.install && g.json {
        output::print_json(&schedule_doc(
            "systemd",
            vec![
                ("user_units", user.into()),
                ("service", units.service.clone().into()),
                ("timer", units.timer.clone().into()),
            ],
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    if !a.install {
        println!("# {UNIT}.service");
        print!("{}", units.service);
        println!("\n# {UNIT}.timer");
        print!("{}", units.timer);
        if !g.quiet {
            eprintln!(
                "the shortest interval in {} is {shortest}, so the timer starts `plan run` every \
                 {period} min; `cairn plan schedule --install` writes and enables these{}",
                plan.file.display(),
                if systemd_running {
                    ""
                } else {
                    " (systemd does not seem to be running here)"
                }
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let dir = match a.unit_dir {
        Some(d) => d,
        None if root => PathBuf::from("/etc/systemd/system"),
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".config/systemd/user"))
            .ok_or_else(|| anyhow!("HOME is not set: give --unit-dir"))?,
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let service = dir.join(format!("{UNIT}.service"));
    let timer = dir.join(format!("{UNIT}.timer"));
    std::fs::write(&service, &units.service)
        .with_context(|| format!("writing {}", service.display()))?;
    std::fs::write(&timer, &units.timer).with_context(|| format!("writing {}", timer.display()))?;
    if !g.quiet && !g.json {
        println!("wrote {} and {}", service.display(), timer.display());
    }
    let scope: &[&str] = if user { &["--user"] } else { &[] };
    for args in [
        vec!["daemon-reload"],
        vec!["enable", "--now", "cairn-plan.timer"],
    ] {
        let mut cmd = std::process::Command::new("systemctl");
        cmd.args(scope).args(&args);
        let status = cmd.status();
        let ok = matches!(&status, Ok(s) if s.success());
        if !ok {
            let why = match status {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            };
            return Err(anyhow!(
                "`systemctl {}{}` failed ({why}); the unit files are written: run \
                 `systemctl {}daemon-reload && systemctl {}enable --now {UNIT}.timer` once \
                 systemd runs",
                if user { "--user " } else { "" },
                args.join(" "),
                if user { "--user " } else { "" },
                if user { "--user " } else { "" },
            ));
        }
    }
    if g.json {
        let installed = [service.display().to_string(), timer.display().to_string()];
        output::print_json(&schedule_doc(
            "systemd",
            vec![
                ("user_units", user.into()),
                ("installed", installed.to_vec().into()),
            ],
        ))?;
    } else if !g.quiet {
        println!(
            "enabled {UNIT}.timer: `systemctl {}list-timers {UNIT}.timer` shows the next run",
            if user { "--user " } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The units' name.
const UNIT: &str = "cairn-plan";

fn validate(g: &GlobalArgs, flag: Option<PathBuf>) -> Result<ExitCode> {
    let (path, origin) = locate(flag)?;
    let report =
        plan::load(&path).with_context(|| format!("reading plan file {}", path.display()))?;
    let shown = output::path(&path);
    for p in &report.problems {
        if g.json {
            let mut v = serde_json::to_value(p)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("message_type".into(), "plan_problem".into());
                o.insert("file".into(), path.to_string_lossy().into());
            }
            output::print_json(&v)?;
        } else if p.severity == Severity::Error || !g.quiet {
            eprintln!("{}", problem_line(&shown, p));
        }
    }
    let (errors, warnings) = (report.errors(), report.warnings());
    if g.json {
        output::print_json(&serde_json::json!({
            "message_type": "summary", "command": "plan validate",
            "file": path.to_string_lossy(), "origin": origin,
            "errors": errors, "warnings": warnings,
            "classes": report.plan.as_ref().map(classes_json),
        }))?;
    } else if let (Some(p), false) = (&report.plan, g.quiet) {
        print_summary(&shown, origin, p, warnings);
    }
    match report.plan {
        Some(_) => Ok(ExitCode::SUCCESS),
        None => Err(anyhow!(
            "plan file {shown} has {}{}",
            count(errors, "mistake", "mistakes"),
            if warnings > 0 {
                format!(" and {}", count(warnings, "warning", "warnings"))
            } else {
                String::new()
            }
        )),
    }
}

fn problem_line(file: &str, p: &Problem) -> String {
    let level = match p.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    format!(
        "{file}:{}:{}: {level}: {}",
        p.line,
        p.column,
        output::printable(&p.message)
    )
}

fn origin_text(origin: Origin) -> &'static str {
    match origin {
        Origin::Flag => "given by --plan",
        Origin::Env => "given by CAIRN_PLAN",
        Origin::Default => "the first default location that exists",
    }
}

fn sources_text(c: &Class) -> String {
    match &c.sources {
        Sources::Paths(p) => p
            .iter()
            .map(|p| output::path(p))
            .collect::<Vec<_>>()
            .join(", "),
        Sources::Command {
            command,
            stdin_filename,
        } => format!(
            "output of `{}` as {}",
            output::printable(command),
            output::printable(stdin_filename)
        ),
    }
}

fn print_summary(file: &str, origin: Origin, p: &Plan, warnings: usize) {
    println!("plan {file} ({}) is valid", origin_text(origin));
    println!(
        "{}, {}{}",
        count(p.classes.len(), "class", "classes"),
        count(p.repositories.len(), "repository", "repositories"),
        if warnings > 0 {
            format!(", {}", count(warnings, "warning", "warnings"))
        } else {
            String::new()
        }
    );
    for c in &p.classes {
        let copies = if c.copy_to.is_empty() {
            String::new()
        } else {
            format!(", copied to {}", output::printable(&c.copy_to.join(", ")))
        };
        println!(
            "  {}: {} every {} into {}{copies}",
            output::printable(&c.name),
            sources_text(c),
            c.every,
            output::printable(&c.repository),
        );
    }
}

fn classes_json(p: &Plan) -> serde_json::Value {
    let list: Vec<serde_json::Value> = p
        .classes
        .iter()
        .map(|c| {
            let sources = match &c.sources {
                Sources::Paths(p) => serde_json::json!({
                    "paths": p.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>()
                }),
                Sources::Command {
                    command,
                    stdin_filename,
                } => serde_json::json!({ "command": command, "stdin_filename": stdin_filename }),
            };
            serde_json::json!({
                "name": c.name, "sources": sources, "every": c.every.to_string(),
                "every_seconds": c.every.0.as_secs(), "repository": c.repository,
                "copy_to": c.copy_to,
            })
        })
        .collect();
    serde_json::Value::Array(list)
}
