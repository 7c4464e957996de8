//! `cairn plan run`, `status` and `schedule`: a plan of three classes and two
//! repositories run day by day over 90 simulated days (CAIRN_NOW), and the
//! ways a class can fail without stopping the others.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{DateTime, Duration, FixedOffset};

use crate::common::{Env, last_json, stderr, stdout, write_private};

/// A scratch directory with two repositories, `hot` (the plan's primary) and
/// `cold` (its copy target, with keys and chunker seed of its own), one
/// password file, and the sources of three classes.
struct Site {
    env: Env,
    plan: PathBuf,
}

/// The repositories every test site has, as a plan names them.
const REPOSITORIES: &str = r#"[repository.hot]
path = "hot"
password_file = "pw"

[repository.cold]
path = "cold"
password_file = "pw"
"#;

impl Site {
    /// A site whose plan is [`REPOSITORIES`] and `classes`.
    fn with_classes(classes: &str) -> Self {
        Self::new(&format!("{REPOSITORIES}\n{classes}"))
    }

    /// Makes the plan [`REPOSITORIES`] and `classes`.
    fn set_classes(&self, classes: &str) {
        std::fs::write(&self.plan, format!("{REPOSITORIES}\n{classes}")).expect("write plan");
    }

    fn new(plan_text: &str) -> Self {
        let env = Env::new();
        write_private(&env.path("pw"), "plan secret\n");
        for repo in ["hot", "cold"] {
            let out = cairn(&env)
                .arg("-r")
                .arg(env.path(repo))
                .arg("--password-file")
                .arg(env.path("pw"))
                .args(["init", "--kdf-memory", "1024", "--kdf-iterations", "1"])
                .output()
                .expect("running cairn");
            assert!(out.status.success(), "init {repo}: {}", stderr(&out));
        }
        for d in ["critical", "general"] {
            std::fs::create_dir_all(env.path(d)).expect("mkdir");
        }
        let plan = env.path("cairn.toml");
        std::fs::write(&plan, plan_text).expect("write plan");
        Self { env, plan }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.env.path(rel)
    }

    /// `cairn plan ARGS --plan FILE` at simulated time `now`.
    fn plan_cmd(&self, now: Option<DateTime<FixedOffset>>, args: &[&str]) -> Command {
        let mut c = cairn(&self.env);
        c.env("HOME", self.path("home"));
        if let Some(t) = now {
            c.env("CAIRN_NOW", t.to_rfc3339());
        }
        c.arg("plan").args(args).arg("--plan").arg(&self.plan);
        c
    }

    fn plan(&self, now: Option<DateTime<FixedOffset>>, args: &[&str]) -> Output {
        self.plan_cmd(now, args).output().expect("running cairn")
    }

    /// `cairn -r REPO ARGS` with the plan's password.
    fn repo(&self, repo: &str, args: &[&str]) -> Output {
        cairn(&self.env)
            .arg("-r")
            .arg(self.path(repo))
            .arg("--password-file")
            .arg(self.path("pw"))
            .args(args)
            .output()
            .expect("running cairn")
    }

    fn repo_ok(&self, repo: &str, args: &[&str]) -> String {
        let out = self.repo(repo, args);
        assert!(
            out.status.success(),
            "cairn -r {repo} {args:?}: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// The snapshots of `repo` tagged `class=CLASS`, as `snapshots --json` gives them.
    fn snapshots(&self, repo: &str, class: &str) -> Vec<serde_json::Value> {
        let out = self.repo_ok(repo, &["snapshots", "--json"]);
        let tag = format!("class={class}");
        snapshot_list(&out)
            .into_iter()
            .filter(|s| {
                s["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| *t == *tag))
            })
            .collect()
    }

    /// Days (`MM-DD`) of the snapshots of a class.
    fn days(&self, repo: &str, class: &str) -> Vec<String> {
        let mut d: Vec<String> = self
            .snapshots(repo, class)
            .iter()
            .map(|s| {
                let t = s["time"].as_str().expect("time");
                DateTime::parse_from_rfc3339(t)
                    .expect("rfc3339")
                    .format("%m-%d")
                    .to_string()
            })
            .collect();
        d.sort();
        d
    }
}

/// `cairn` with no CAIRN_* variables inherited and the cache in the scratch
/// directory.
fn cairn(env: &Env) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CAIRN_") {
            c.env_remove(k);
        }
    }
    c.env("CAIRN_CACHE_DIR", env.path("cache"));
    c.stdin(std::process::Stdio::null());
    c
}

/// `snapshots --json` prints one array, or one object per line: both read.
fn snapshot_list(out: &str) -> Vec<serde_json::Value> {
    if let Ok(serde_json::Value::Array(v)) = serde_json::from_str(out.trim()) {
        return v;
    }
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message_type"] == "snapshot" || v.get("tree").is_some())
        .collect()
}

fn t(s: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(s).expect("time")
}

fn three_classes(dir: &Path) -> String {
    format!(
        r#"{REPOSITORIES}
[class.critical]
paths = ["critical"]
every = "1d"
keep = {{ daily = 7, weekly = 4, monthly = 3 }}
repository = "hot"
copy_to = ["cold"]
check = {{ every = "7d", read_data_subset = "50%" }}
drill = {{ every = "30d", files = 3 }}
before = ["echo $CAIRN_PLAN_STEP $CAIRN_CLASS >> {log}"]
after = ["echo $CAIRN_PLAN_STEP $CAIRN_CLASS $CAIRN_BACKUP_OK >> {log}"]

[class.db]
command = "cat {db}"
stdin_filename = "app.sql"
every = "2d"
keep = {{ daily = 5 }}
repository = "hot"

[class.general]
paths = ["general"]
every = "7d"
keep = {{ weekly = 4, monthly = 2 }}
repository = "hot"
compression = 19
"#,
        log = dir.join("hooks.log").display(),
        db = dir.join("db.sql").display(),
    )
}

/// Ninety days of a daily `plan run`: each class backs up on its own
/// interval, keeps what its rules keep (here and in the copy), is copied,
/// checked and drilled on schedule, and `plan status` says so.
#[test]
fn ninety_days_of_a_three_class_plan() {
    let site = Site::new("");
    std::fs::write(&site.plan, three_classes(site.env.dir.path())).expect("write plan");
    let start = t("2026-01-01T02:00:00+00:00");
    let mut made: std::collections::BTreeMap<String, usize> = Default::default();
    let mut checks = 0;
    let mut drills = 0;
    for day in 0..90i64 {
        let now = start + Duration::days(day);
        // The sources change every day.
        std::fs::write(
            site.path("critical/model.bin"),
            crate::common::xorshift(day as u64 + 1, 20_000),
        )
        .expect("write");
        std::fs::write(site.path("critical/notes.txt"), format!("day {day}\n")).expect("write");
        std::fs::write(site.path("db.sql"), format!("insert {day};\n").repeat(50)).expect("write");
        std::fs::write(
            site.path(&format!("general/log-{day}.txt")),
            "a log line\n".repeat(20),
        )
        .expect("write");
        let out = site.plan(Some(now), &["run", "--json"]);
        assert!(
            out.status.success(),
            "day {day}: plan run failed:\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
        for l in stdout(&out).lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            if v["message_type"] != "plan_step" {
                continue;
            }
            assert_ne!(v["status"], "failed", "day {day}: {v}");
            match v["step"].as_str() {
                Some("backup") => {
                    *made
                        .entry(v["class"].as_str().unwrap_or("").to_string())
                        .or_default() += 1
                }
                Some("check") => checks += 1,
                Some("drill") => drills += 1,
                _ => {}
            }
        }
    }
    // Backups on each class's interval: daily, every other day, weekly.
    assert_eq!(made.get("critical"), Some(&90));
    assert_eq!(made.get("db"), Some(&45));
    assert_eq!(made.get("general"), Some(&13));
    // A check every 7 days and a drill every 30, in both repositories.
    assert_eq!(checks, 13 * 2);
    assert_eq!(drills, 3 * 2);

    // Retention, worked out by hand for runs at 02:00 UTC from 1 January to
    // 31 March 2026: the last 7 days, the newest of ISO weeks 12 and 11 (13
    // and 14 are among the 7 days) and of January and February.
    let critical = [
        "01-31", "02-28", "03-15", "03-22", "03-25", "03-26", "03-27", "03-28", "03-29", "03-30",
        "03-31",
    ];
    assert_eq!(site.days("hot", "critical"), critical);
    // The cold copy holds the same snapshots, under the same rules.
    assert_eq!(site.days("cold", "critical"), critical);
    assert_eq!(
        site.days("hot", "db"),
        ["03-22", "03-24", "03-26", "03-28", "03-30"]
    );
    // Weekly from 1 January (a Thursday): the newest of the last four ISO
    // weeks, and of the last two months.
    assert_eq!(
        site.days("hot", "general"),
        ["02-26", "03-05", "03-12", "03-19", "03-26"]
    );
    // Only the critical class is copied.
    assert!(site.snapshots("cold", "db").is_empty());
    assert!(site.snapshots("cold", "general").is_empty());

    // What was kept restores, from the hot repository and from the cold copy.
    for repo in ["hot", "cold"] {
        site.repo_ok(repo, &["check", "--read-data"]);
        let target = site.path(&format!("restored-{repo}"));
        site.repo_ok(
            repo,
            &[
                "restore",
                "latest",
                "--tag",
                "class=critical",
                "--target",
                target.to_str().expect("utf-8"),
            ],
        );
        let src = site.path("critical");
        let back = target.join(src.strip_prefix("/").expect("absolute"));
        assert_eq!(
            std::fs::read(back.join("model.bin")).expect("restored"),
            std::fs::read(src.join("model.bin")).expect("source")
        );
    }
    // The hooks ran around every critical backup, `after` told it succeeded.
    let log = std::fs::read_to_string(site.path("hooks.log")).expect("hooks log");
    assert_eq!(log.matches("before critical\n").count(), 90);
    assert_eq!(log.matches("after critical 1\n").count(), 90);

    // Status, the same evening: nothing overdue, the last check and drill
    // passed, and a restore time estimated from the drill's throughput.
    let evening = start + Duration::days(89) + Duration::hours(12);
    let out = site.plan(Some(evening), &["status", "--json"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let rows: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message_type"] == "plan_status")
        .collect();
    let row = |class: &str, repo: &str| {
        rows.iter()
            .find(|r| r["class"] == class && r["repository"] == repo)
            .unwrap_or_else(|| panic!("no row for {class} in {repo}: {rows:?}"))
            .clone()
    };
    let hot = row("critical", "hot");
    assert_eq!(hot["snapshots"], 11);
    assert_eq!(hot["overdue"], false);
    assert_eq!(hot["age_seconds"], 12 * 3600);
    assert_eq!(hot["last_check"]["ok"], true);
    assert_eq!(hot["last_drill"]["ok"], true);
    assert!(hot["restore_bytes_per_second"].as_f64().unwrap_or(0.0) > 0.0);
    // The restore estimate is the newest snapshot's size at the drill's rate.
    let size = hot["size_bytes"].as_f64().unwrap_or(0.0);
    let rate = hot["restore_bytes_per_second"].as_f64().unwrap_or(0.0);
    let estimate = hot["estimated_restore_seconds"].as_f64().unwrap_or(-1.0);
    assert!(size > 20_000.0, "{hot}");
    assert!(
        (estimate - size / rate).abs() < 1e-9 * estimate.max(1.0),
        "{hot}"
    );
    assert!(hot["stored_bytes"].as_u64().unwrap_or(0) > 0);
    // Eleven snapshots of ~20 kB of random data each, stored once each: the
    // ratio is about 1, not 11.
    let cold = row("critical", "cold");
    assert_eq!(cold["role"], "copy");
    assert_eq!(cold["snapshots"], 11);
    assert_eq!(cold["last_check"]["ok"], true);
    assert_eq!(row("db", "hot")["snapshots"], 5);
    assert_eq!(row("general", "hot")["snapshots"], 5);
    // The weekly class dedups its logs: each snapshot holds every earlier log.
    let general = row("general", "hot");
    assert!(
        general["dedup_ratio"].as_f64().unwrap_or(0.0) > 2.0,
        "{general}"
    );

    // Three days on, with no run: the daily and two-daily classes are overdue
    // and status exits 1; the human table says OVERDUE.
    let later = start + Duration::days(92);
    let out = site.plan(Some(later), &["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("critical") && l.contains("OVERDUE")),
        "{table}"
    );
    // And a run then makes the backups it missed, one per class.
    // A class the plan doesn't have is a usage error, for run and status.
    for cmd in ["run", "status"] {
        let out = site.plan(Some(later), &[cmd, "--class", "nope"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("critical, db, general"),
            "{}",
            stderr(&out)
        );
    }
    let out = site.plan(Some(later), &["run", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let planned = stdout(&out)
        .lines()
        .filter(|l| l.contains("\"step\":\"backup\"") && l.contains("\"planned\""))
        .count();
    assert_eq!(planned, 3);
}

/// A plan with a class on a repository that isn't there and one on a good one.
fn two_repos_one_gone(dir: &Path) -> String {
    format!(
        r#"[repository.hot]
path = "hot"
password_file = "pw"

[repository.gone]
path = "{gone}"
password_file = "pw"

[class.lost]
paths = ["critical"]
every = "1h"
repository = "gone"

[class.fine]
paths = ["general"]
every = "1h"
repository = "hot"
copy_to = ["gone"]
"#,
        gone = dir.join("unplugged-usb").display()
    )
}

#[test]
fn a_class_whose_repository_is_unreachable_fails_alone() {
    let site = Site::new("");
    std::fs::write(&site.plan, two_repos_one_gone(site.env.dir.path())).expect("plan");
    std::fs::write(site.path("general/a"), "a").expect("write");
    let out = site.plan(None, &["run"]);
    let (o, e) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{o}\n{e}");
    // The class on the good repository was backed up...
    assert_eq!(site.snapshots("hot", "fine").len(), 1);
    // ...and the failures name the class, the step and the repository.
    assert!(e.contains("lost: backup (gone)"), "{e}");
    assert!(e.contains("fine: copy (gone)"), "{e}");
    assert!(e.contains("unplugged-usb"), "{e}");
    assert!(
        o.contains("2 classes: 0 done, 0 not due, 0 busy, 2 failed"),
        "{o}"
    );
    // JSON says which failed and why.
    let out = site.plan(None, &["run", "--json"]);
    let s = last_json(&stdout(&out), "summary");
    assert_eq!(s["failed"], serde_json::json!(["lost", "fine"]));
    // Status shows the repository as unreadable, says why, and exits 1.
    let out = site.plan(None, &["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("lost") && l.contains("UNREADABLE")),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("unplugged-usb"), "{}", stderr(&out));

    // The disk is plugged in: the next run, with no backup due, copies what
    // the copy target missed.
    let usb = site.path("unplugged-usb");
    let out = site.repo(
        usb.to_str().expect("utf-8"),
        &["init", "--kdf-memory", "1024", "--kdf-iterations", "1"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = site.plan(None, &["run", "--class", "fine", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let c = last_json(&stdout(&out), "plan_class");
    assert_eq!(c["backup_due"], false);
    assert_eq!(
        site.snapshots(usb.to_str().expect("utf-8"), "fine").len(),
        1
    );
}

/// A backup running beside the plan holds a shared lock: the class's backup
/// goes ahead, its retention waits for the next run, and neither is a failure.
#[test]
fn retention_is_postponed_while_another_process_holds_the_repository() {
    let site = Site::with_classes(
        r#"[class.general]
paths = ["general"]
every = "1h"
keep = { last = 1 }
repository = "hot"
"#,
    );
    std::fs::write(site.path("general/a"), "a").expect("write");
    let first = t("2026-03-01T10:00:00+00:00");
    let out = site.plan(Some(first), &["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A backup of a stream that stays open holds its lock until we close it.
    let mut held = cairn(&site.env)
        .arg("-r")
        .arg(site.path("hot"))
        .arg("--password-file")
        .arg(site.path("pw"))
        .args(["backup", "--stdin", "--stdin-filename", "held"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let locks = site.path("hot/locks");
    let mut waited = 0;
    while std::fs::read_dir(&locks).map_or(0, |d| d.count()) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        waited += 1;
        assert!(waited < 1500, "the holding backup never took its lock");
    }
    let out = site.plan(Some(first + Duration::hours(1)), &["run", "--json"]);
    drop(held.stdin.take());
    let _ = held.wait();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let forget = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["step"] == "forget")
        .expect("a forget step");
    assert_eq!(forget["status"], "skipped", "{forget}");
    assert!(
        forget["message"]
            .as_str()
            .unwrap_or("")
            .contains("postponed"),
        "{forget}"
    );
    assert_eq!(site.snapshots("hot", "general").len(), 2);
    // The next run, with the repository free, applies it.
    let out = site.plan(Some(first + Duration::hours(2)), &["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(site.snapshots("hot", "general").len(), 1);
}

#[test]
fn failing_before_command_skips_the_backup_and_after_still_runs() {
    let site = Site::new("");
    let dir = site.env.dir.path();
    site.set_classes(&format!(
        r#"[class.critical]
paths = ["critical"]
every = "1h"
repository = "hot"
before = ["exit 7"]
after = ["echo after $CAIRN_BACKUP_OK > {log}"]

[class.db]
command = "echo partial; exit 3"
stdin_filename = "app.sql"
every = "1h"
repository = "hot"
"#,
        log = dir.join("after.log").display()
    ));
    let out = site.plan(None, &["run"]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("before command 1 `exit 7` failed"), "{e}");
    assert!(site.snapshots("hot", "critical").is_empty());
    assert_eq!(
        std::fs::read_to_string(site.path("after.log")).expect("after ran"),
        "after 0\n"
    );
    // A dump command that fails half-way writes no snapshot.
    assert!(e.contains("`echo partial; exit 3` failed"), "{e}");
    assert!(site.snapshots("hot", "db").is_empty());
    site.repo_ok("hot", &["check"]);
}

#[test]
fn dry_run_changes_nothing_and_a_second_run_finds_nothing_due() {
    let site = Site::new("");
    std::fs::write(
        &site.plan,
        two_repos_one_gone(site.env.dir.path())
            .replace(
                "[class.lost]\npaths = [\"critical\"]\nevery = \"1h\"\nrepository = \"gone\"\n",
                "",
            )
            .replace("copy_to = [\"gone\"]\n", ""),
    )
    .expect("plan");
    std::fs::write(site.path("general/a"), "a").expect("write");
    let out = site.plan(None, &["run", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("planned"), "{}", stdout(&out));
    assert!(site.snapshots("hot", "fine").is_empty());
    let out = site.plan(None, &["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(site.snapshots("hot", "fine").len(), 1);
    // Idempotent: run again at once, nothing is due.
    let out = site.plan(None, &["run", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let c = last_json(&stdout(&out), "plan_class");
    assert_eq!(c["outcome"], "not_due");
    assert_eq!(site.snapshots("hot", "fine").len(), 1);
    // Another machine (nothing local: another cache, another home) sees the
    // same state, from the repository alone.
    let out = site
        .plan_cmd(None, &["run", "--json"])
        .env("CAIRN_CACHE_DIR", site.path("other-machine/cache"))
        .env("HOME", site.path("other-machine"))
        .output()
        .expect("running cairn");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_json(&stdout(&out), "plan_class")["outcome"], "not_due");
}

/// Two runs at once: the second skips the class the first is running, and
/// the class is backed up once.
#[test]
fn two_plan_runs_at_once_do_not_double_run_a_class() {
    let site = Site::new("");
    let dir = site.env.dir.path();
    site.set_classes(&format!(
            r#"[class.critical]
paths = ["critical"]
every = "1h"
repository = "hot"
before = ["touch {started}; i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done"]
"#,
            started = dir.join("started").display(),
            go = dir.join("go").display()
    ));
    std::fs::write(site.path("critical/a"), "a").expect("write");
    let first = site
        .plan_cmd(None, &["run", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut waited = 0;
    while !site.path("started").exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
        waited += 1;
        assert!(
            waited < 1500,
            "the first run never started its before command"
        );
    }
    let second = site.plan(None, &["run", "--json"]);
    std::fs::write(site.path("go"), "").expect("go");
    let first = first.wait_with_output().expect("first run");
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(second.status.success(), "{}", stderr(&second));
    let c = last_json(&stdout(&second), "plan_class");
    assert_eq!(c["outcome"], "busy", "{}", stdout(&second));
    assert_eq!(site.snapshots("hot", "critical").len(), 1);
}

#[test]
fn schedule_prints_a_persistent_randomized_timer_for_the_shortest_interval() {
    let site = Site::new("");
    std::fs::write(&site.plan, three_classes(site.env.dir.path())).expect("plan");
    let out = site.plan(None, &["schedule", "--systemd"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let units = stdout(&out);
    // The shortest interval is a day: a run every 6 hours.
    assert!(units.contains("OnCalendar=*-*-* 00/6:00:00"), "{units}");
    assert!(units.contains("Persistent=true"), "{units}");
    assert!(units.contains("RandomizedDelaySec="), "{units}");
    assert!(units.contains("Type=oneshot"), "{units}");
    let exec = format!("plan run --plan {}", site.plan.display());
    assert!(units.contains(&exec), "{units}");
    let out = site.plan(None, &["schedule", "--cron"]);
    let line = stdout(&out);
    assert!(
        line.trim_end().ends_with(&format!("{exec} --quiet")),
        "{line}"
    );
    assert!(line.contains("0 */6 * * *"), "{line}");

    // The calendar expression is one systemd accepts, where its tools exist.
    match Command::new("systemd-analyze")
        .args(["calendar", "*-*-* 00/6:00:00"])
        .output()
    {
        Ok(o) => assert!(o.status.success(), "{}", stderr(&o)),
        Err(e) => eprintln!("skipped systemd-analyze calendar: {e}"),
    }

    // --install writes the units, whether or not systemctl can then enable them.
    let units_dir = site.path("units");
    let out = site.plan(
        None,
        &[
            "schedule",
            "--systemd",
            "--install",
            "--unit-dir",
            units_dir.to_str().expect("utf-8"),
        ],
    );
    let timer = std::fs::read_to_string(units_dir.join("cairn-plan.timer")).expect("timer");
    assert!(timer.contains("Persistent=true"));
    assert!(units_dir.join("cairn-plan.service").exists());
    if !out.status.success() {
        let e = stderr(&out);
        assert!(e.contains("the unit files are written"), "{e}");
    }
    // systemd's own checker accepts them, where it exists.
    match Command::new("systemd-analyze")
        .arg("verify")
        .arg(units_dir.join("cairn-plan.timer"))
        .arg(units_dir.join("cairn-plan.service"))
        .output()
    {
        Ok(o) => assert!(
            o.status.success() && o.stderr.is_empty(),
            "systemd-analyze verify: {}",
            stderr(&o)
        ),
        Err(e) => eprintln!("skipped systemd-analyze verify: {e}"),
    }
}

/// Every directory and file under `dir`, with the files' bytes.
fn everything_under(dir: &Path) -> std::collections::BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let t = e.file_type().expect("file type");
            if t.is_dir() {
                stack.push(e.path());
                out.insert(e.path(), None);
            } else {
                out.insert(e.path(), Some(std::fs::read(e.path()).unwrap_or_default()));
            }
        }
    }
    out
}

/// A dry run with backups, retention, a check and a drill due leaves every
/// file where it was: no snapshot, lock, record or class lock, and no local
/// cache (which opening a repository with its cache would create, fill and
/// sweep).
#[test]
fn dry_run_writes_nothing_not_even_the_local_cache() {
    let site = Site::new("");
    std::fs::write(&site.plan, three_classes(site.env.dir.path())).expect("write plan");
    std::fs::write(site.path("critical/a"), "a").expect("write");
    std::fs::write(site.path("db.sql"), "insert;\n").expect("write");
    let start = t("2026-01-01T02:00:00+00:00");
    let out = site.plan(Some(start), &["run"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    std::fs::write(site.path("critical/b"), "b").expect("write");
    // A snapshot of the class the cold copy lacks: the dry run plans its copy.
    let critical = site.path("critical");
    site.repo_ok(
        "hot",
        &[
            "backup",
            "--tag",
            "class=critical",
            critical.to_str().expect("utf-8"),
        ],
    );
    let before = everything_under(site.env.dir.path());
    let later = start + Duration::days(40);
    let out = site
        .plan_cmd(Some(later), &["run", "--dry-run", "--json"])
        .env("CAIRN_CACHE_DIR", site.path("dry-cache"))
        .output()
        .expect("running cairn");
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let o = stdout(&out);
    for step in ["backup", "forget", "copy", "check", "drill"] {
        assert!(
            o.lines()
                .any(|l| l.contains(&format!("\"step\":\"{step}\""))
                    && l.contains("\"status\":\"planned\"")),
            "no planned {step}: {o}"
        );
    }
    assert!(
        !site.path("dry-cache").exists(),
        "the dry run made a cache directory"
    );
    let after = everything_under(site.env.dir.path());
    let changed: Vec<_> = after
        .iter()
        .filter(|(p, c)| before.get(*p) != Some(c))
        .map(|(p, _)| p.clone())
        .chain(before.keys().filter(|p| !after.contains_key(*p)).cloned())
        .collect();
    assert!(changed.is_empty(), "the dry run changed {changed:?}");
}

/// `cairn backup --stdin` into `repo`, holding its shared lock until the
/// returned child's standard input is closed.
fn hold_lock(site: &Site, repo: &str) -> std::process::Child {
    let held = cairn(&site.env)
        .arg("-r")
        .arg(site.path(repo))
        .arg("--password-file")
        .arg(site.path("pw"))
        .args(["backup", "--stdin", "--stdin-filename", "held"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let locks = site.path(&format!("{repo}/locks"));
    let mut waited = 0;
    while std::fs::read_dir(&locks).map_or(0, |d| d.count()) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        waited += 1;
        assert!(waited < 1500, "the holding backup never took its lock");
    }
    held
}

fn steps_named(out: &Output, step: &str) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message_type"] == "plan_step" && v["step"] == step)
        .collect()
}

/// While the class's retention is postponed in its repository, the copy
/// target (which applied the same retention) must not be sent again, at every
/// run, the snapshots it has already forgotten.
#[test]
fn a_copy_target_is_not_sent_again_what_its_retention_forgot() {
    let site = Site::with_classes(
        r#"[class.general]
paths = ["general"]
every = "1h"
keep = { last = 1 }
repository = "hot"
copy_to = ["cold"]
"#,
    );
    std::fs::write(site.path("general/a"), "a").expect("write");
    let first = t("2026-03-01T10:00:00+00:00");
    let out = site.plan(Some(first), &["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(site.snapshots("cold", "general").len(), 1);

    let mut held = hold_lock(&site, "hot");
    std::fs::write(site.path("general/b"), "b").expect("write");
    let second = site.plan(Some(first + Duration::hours(1)), &["run", "--json"]);
    // Not due: ten minutes later, the hot repository still held.
    let third = site.plan(
        Some(first + Duration::hours(1) + Duration::minutes(10)),
        &["run", "--json"],
    );
    drop(held.stdin.take());
    let _ = held.wait();
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(third.status.success(), "{}", stderr(&third));
    assert_eq!(steps_named(&second, "forget")[0]["status"], "skipped");
    // The new snapshot went to the cold copy, whose retention kept it alone.
    assert_eq!(steps_named(&second, "copy").len(), 1, "{}", stdout(&second));
    assert_eq!(site.snapshots("cold", "general").len(), 1);
    // The next run has nothing to copy.
    assert!(steps_named(&third, "copy").is_empty(), "{}", stdout(&third));
    assert_eq!(site.snapshots("cold", "general").len(), 1);
    assert_eq!(site.snapshots("hot", "general").len(), 2);

    // Postponed means to the next run, even one with no backup due: with the
    // repository free again, the retention it missed is applied.
    let fourth = site.plan(
        Some(first + Duration::hours(1) + Duration::minutes(20)),
        &["run", "--json"],
    );
    assert!(fourth.status.success(), "{}", stderr(&fourth));
    assert_eq!(
        last_json(&stdout(&fourth), "plan_class")["backup_due"],
        false
    );
    assert_eq!(
        site.snapshots("hot", "general").len(),
        1,
        "{}",
        stdout(&fourth)
    );
    // And a run after that has nothing left to forget: no step at all.
    let fifth = site.plan(
        Some(first + Duration::hours(1) + Duration::minutes(30)),
        &["run", "--json"],
    );
    assert_eq!(
        last_json(&stdout(&fifth), "plan_class")["outcome"],
        "not_due"
    );
}

/// A class's `compression` is the zstd level its backups store new blobs at:
/// level 0 stores a compressible file as it is, the repository's level shrinks it.
#[test]
fn a_class_compression_level_is_the_one_its_blobs_are_stored_at() {
    let site = Site::with_classes(
        r#"[class.critical]
paths = ["critical"]
every = "1h"
repository = "hot"

[class.general]
paths = ["general"]
every = "1h"
repository = "hot"
compression = 0
"#,
    );
    // The same size of text in each, different content so nothing dedups.
    for (d, word) in [("critical", "alpha "), ("general", "omega ")] {
        std::fs::write(site.path(&format!("{d}/log.txt")), word.repeat(200_000)).expect("write");
    }
    let out = site.plan(None, &["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = site.plan(None, &["status", "--json"]);
    let rows: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message_type"] == "plan_status")
        .collect();
    let stored = |class: &str| {
        rows.iter()
            .find(|r| r["class"] == class)
            .and_then(|r| r["stored_bytes"].as_u64())
            .unwrap_or_else(|| panic!("no stored size for {class}: {rows:?}"))
    };
    assert!(stored("general") >= 1_200_000, "{rows:?}");
    assert!(stored("critical") < 100_000, "{rows:?}");
}

/// Another machine running the class is seen through its claim in the
/// repository (here: this test process's claim, which the plan run can't tell
/// from another machine's, as it holds no local lock file).
#[test]
fn a_class_claimed_in_the_repository_by_another_run_is_busy() {
    let site = Site::with_classes(
        r#"[class.critical]
paths = ["critical"]
every = "1h"
repository = "hot"
"#,
    );
    std::fs::write(site.path("critical/a"), "a").expect("write");
    let backend = std::sync::Arc::new(cairn::backend::LocalBackend::new(site.path("hot")));
    let repo = std::sync::Arc::new(
        cairn::repository::Repository::open(backend, b"plan secret").expect("open"),
    );
    let claim = match cairn::lock::claim_class(&repo, "critical").expect("claim") {
        cairn::lock::Claim::Held(g) => g,
        cairn::lock::Claim::Busy(who) => panic!("busy: {who}"),
    };
    let out = site.plan(None, &["run", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let step = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message_type"] == "plan_step")
        .expect("a step");
    assert_eq!(step["status"], "skipped", "{step}");
    let pid = format!("(pid {})", std::process::id());
    assert!(
        step["message"].as_str().unwrap_or("").contains(&pid),
        "{step}"
    );
    assert_eq!(last_json(&stdout(&out), "plan_class")["outcome"], "busy");
    assert!(site.snapshots("hot", "critical").is_empty());
    // The claim guards no data: a prune runs beside it.
    site.repo_ok("hot", &["prune"]);
    // Released, the class runs, and its own claim is gone afterwards.
    drop(claim);
    let out = site.plan(None, &["run", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(site.snapshots("hot", "critical").len(), 1);
    assert_eq!(
        std::fs::read_dir(site.path("hot/locks")).map_or(0, |d| d.count()),
        0
    );
}

/// Retention groups a class's snapshots by host: one host's snapshots never
/// make another's go.
#[test]
fn retention_keeps_each_hosts_snapshots_of_a_class() {
    let site = Site::with_classes(
        r#"[class.general]
paths = ["general"]
every = "1h"
keep = { last = 1 }
repository = "hot"
"#,
    );
    std::fs::write(site.path("general/a"), "a").expect("write");
    let general = site.path("general");
    let general = general.to_str().expect("utf-8");
    // Another host's snapshot of the same class, older than ours.
    site.repo_ok(
        "hot",
        &[
            "backup",
            "--host",
            "other-host",
            "--tag",
            "class=general",
            general,
        ],
    );
    let start = t("2030-01-01T00:00:00+00:00");
    for hour in 0..3 {
        let out = site.plan(Some(start + Duration::hours(hour)), &["run"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let snaps = site.snapshots("hot", "general");
    let hosts: Vec<&str> = snaps
        .iter()
        .filter_map(|s| s["hostname"].as_str())
        .collect();
    assert_eq!(hosts.len(), 2, "{snaps:?}");
    assert!(hosts.contains(&"other-host"), "{hosts:?}");
}

/// A class's repository that lost a snapshot behind cairn's back fails the
/// class at every run (an `integrity` step) until the loss is accepted.
#[test]
fn a_repository_that_lost_snapshots_fails_its_classes_until_accepted() {
    let site = Site::with_classes(
        r#"[class.general]
paths = ["general"]
every = "1h"
repository = "hot"
"#,
    );
    std::fs::write(site.path("general/a"), "a").expect("write");
    let start = t("2030-01-01T00:00:00+00:00");
    let mut made = Vec::new();
    for hour in 0..2 {
        let out = site.plan(Some(start + Duration::hours(hour)), &["run", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let backup = steps_named(&out, "backup");
        made.push(backup[0]["snapshot"].as_str().expect("id").to_string());
    }
    // The newest one: written by the last run, and listed by no command since.
    std::fs::remove_file(site.path("hot/snapshots").join(&made[1])).expect("rm");
    for hour in 2..4 {
        let out = site.plan(Some(start + Duration::hours(hour)), &["run", "--json"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let integrity = steps_named(&out, "integrity");
        assert_eq!(integrity.len(), 1, "{}", stdout(&out));
        assert_eq!(integrity[0]["status"], "failed");
    }
    let out = site.plan(Some(start + Duration::hours(4)), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("LOST FILES"), "{}", stdout(&out));
    site.repo_ok("hot", &["check", "--accept-missing"]);
    let out = site.plan(Some(start + Duration::hours(5)), &["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// While a repository shows files lost behind cairn's back, its classes'
/// retention waits: a prune would delete the packs of the lost snapshots (no
/// index names them any more), the data that putting the lost files back
/// from a copy would need.
#[test]
fn retention_waits_while_a_repository_shows_a_loss() {
    let site = Site::with_classes(
        r#"[class.general]
paths = ["general"]
every = "1h"
keep = { last = 2 }
repository = "hot"
"#,
    );
    let start = t("2030-01-01T00:00:00+00:00");
    let index = || crate::common::all_files(&site.path("hot/index"));
    let mut made = Vec::new();
    let mut index_before = Vec::new();
    for hour in 0..2 {
        crate::common::random_files(&site.path("general"), 40 + hour as u64, 1, 200_000, |_| {
            "a".into()
        });
        index_before = index();
        let out = site.plan(Some(start + Duration::hours(hour)), &["run", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let backup = steps_named(&out, "backup");
        made.push(backup[0]["snapshot"].as_str().expect("id").to_string());
    }
    // The repository put back to before the second backup.
    std::fs::remove_file(site.path("hot/snapshots").join(&made[1])).expect("rm");
    for f in index().into_iter().filter(|f| !index_before.contains(f)) {
        std::fs::remove_file(f).expect("rm");
    }
    let packs = crate::common::all_files(&site.path("hot/data"));
    for hour in 2..4 {
        crate::common::random_files(&site.path("general"), 40 + hour as u64, 1, 200_000, |_| {
            "a".into()
        });
        let out = site.plan(Some(start + Duration::hours(hour)), &["run", "--json"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    }
    let now = crate::common::all_files(&site.path("hot/data"));
    for p in &packs {
        assert!(now.contains(p), "{} was deleted", p.display());
    }
}
