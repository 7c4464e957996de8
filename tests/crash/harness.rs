//! Running an operation, killing it at a chosen moment, and the oracle that
//! judges what the kill left behind.
//!
//! Plain runs first measure how long the operation takes; the kill points are
//! then spread evenly over that time. Beside them, the operation is run a step at
//! a time (a short quantum, then SIGSTOP while the repository is listed, then
//! SIGCONT) and killed, while stopped, right after one of a sample of the changes
//! it makes to the repository (a pack renamed into place, an index file written,
//! an old file deleted): the moments a wrong order of writes would show.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::{self, Env, stderr, stdout};

/// Kill points spread evenly over an operation's run that land while it runs.
pub const SPREAD: usize = 30;
/// Further kill points, each right after one of the repository changes.
pub const AT_CHANGES: usize = 10;

/// Files under a snapshot's path and the hashes of their contents.
pub type Manifest = BTreeMap<PathBuf, blake3::Hash>;

/// The regular files under `dir`, hashed.
pub fn manifest(dir: &Path) -> Manifest {
    common::all_files(dir)
        .into_iter()
        .map(|f| {
            let hash = blake3::hash(&fs::read(&f).expect("read"));
            (f.strip_prefix(dir).expect("prefix").to_path_buf(), hash)
        })
        .collect()
}

/// What every snapshot in the repository must restore.
#[derive(Default)]
pub struct Expect {
    /// Snapshots present before the operation, by id, with the files each
    /// restores intact before it runs (all of its files unless it was damaged).
    pub before: HashMap<String, Manifest>,
    /// What snapshots of `before` restore once the operation has run, where that
    /// is more than before it (a repair brings back what only looked lost).
    pub complete: HashMap<String, Manifest>,
    /// Snapshots of `before` the operation may remove (`forget`'s policy).
    pub may_go: HashSet<String>,
    /// Snapshots of `before` the operation replaces by a repaired snapshot
    /// (tagged `repaired`, its parent the original): one of the two is always
    /// present.
    pub replaced: HashSet<String>,
    /// What the repaired replacement of a snapshot of `replaced` restores.
    pub repaired: HashMap<String, Manifest>,
    /// A snapshot of this path not in `before` is the operation's (a backup's).
    pub new_of_path: Option<(String, Manifest)>,
    /// A copy names the snapshot it copies (`original`): what that one holds.
    pub by_original: HashMap<String, Manifest>,
    /// `check` errors the prepared damage causes (object: message); after a
    /// kill, only these may be reported, and after the re-run none.
    pub check_errors: BTreeSet<String>,
}

impl Expect {
    /// What the snapshot `s` (a line of `snapshots --json`) must restore.
    fn of(&self, s: &serde_json::Value) -> &Manifest {
        let id = s["id"].as_str().expect("id");
        if let Some(m) = self.before.get(id) {
            return m;
        }
        let tagged = |t: &str| {
            s["tags"]
                .as_array()
                .is_some_and(|tags| tags.iter().any(|x| x == t))
        };
        if let Some(m) = s["parent"]
            .as_str()
            .filter(|_| tagged("repaired"))
            .and_then(|p| self.repaired.get(p))
        {
            return m;
        }
        if let Some(m) = s["original"].as_str().and_then(|o| self.by_original.get(o)) {
            return m;
        }
        match &self.new_of_path {
            Some((path, m)) if s["paths"][0] == path.as_str() => m,
            _ => panic!("a snapshot nobody wrote: {s}"),
        }
    }
}

/// How a complete re-run shows it has converged.
pub enum Converge {
    /// A second run changes no file of the repository.
    Idempotent,
    /// A second backup stores no data (only its snapshot, and trees where the
    /// metadata of the source's ancestor directories changed).
    Backup,
    /// `key add`: each run adds a key; the killed one may have added one too.
    /// The new password opens the repository.
    KeyAdd { new_password: PathBuf },
    /// `key remove ID`: once the key is gone, a run fails saying there is no
    /// such key, and changes nothing.
    KeyRemove { id: String },
}

pub struct Scenario {
    pub name: &'static str,
    /// The prepared state: its repository is copied afresh for every run.
    pub template: Env,
    /// The operation (after `-r REPO --password-file P`).
    pub args: Vec<String>,
    /// The password file the operation opens the repository with.
    pub password: PathBuf,
    /// A repository the operation only reads (copy's source): it must not change.
    pub source: Option<Env>,
    pub expect: Expect,
    pub converge: Converge,
}

/// How a stepped run ended.
pub struct Run {
    pub changes: u32,
    /// Killed by us before it exited on its own.
    pub killed: bool,
    pub status: ExitStatus,
}

#[derive(Clone, Copy, Debug)]
pub enum Stop {
    Never,
    /// SIGKILL this long after the start.
    After(Duration),
    /// SIGKILL as soon as this many changes to the repository's listing are seen.
    AtChange(u32),
}

/// Every file under `repo` (temporary files and locks included).
fn listing(repo: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => {
                    out.insert(e.path());
                }
                Err(_) => {}
            }
        }
    }
    out
}

/// Waits until the process is stopped (or gone), so that the listing taken next
/// sees what it had done, and a kill lands where it stands.
fn wait_stopped(pid: u32) {
    let stat = format!("/proc/{pid}/stat");
    // It takes a while when the machine is busy: every thread must get a CPU
    // to stop. Not spinning leaves them one.
    for _ in 0..20_000 {
        let Ok(s) = fs::read_to_string(&stat) else {
            return;
        };
        match s
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
        {
            Some('T' | 't' | 'Z' | 'X') | None => return,
            _ => std::thread::sleep(Duration::from_micros(20)),
        }
    }
}

fn ended(mut child: std::process::Child, changes: u32) -> Run {
    use std::os::unix::process::ExitStatusExt;
    let status = child.wait().expect("wait");
    Run {
        changes,
        killed: status.signal() == Some(Signal::SIGKILL as i32),
        status,
    }
}

/// Runs `cmd` until it exits or `stop`: freely for [`Stop::After`], else a
/// quantum at a time, watching `watch`.
pub fn stepped(mut cmd: Command, watch: &Path, quantum: Duration, stop: Stop) -> Run {
    let mut child = cmd.spawn().expect("spawn cairn");
    if let Stop::After(at) = stop {
        std::thread::sleep(at);
        // An exited child not yet waited for is still there to signal.
        child.kill().expect("SIGKILL");
        return ended(child, 0);
    }
    let pid = Pid::from_raw(child.id() as i32);
    let mut seen = listing(watch);
    let mut changes = 0u32;
    // A hang guard, not a measurement: far beyond any run here.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        std::thread::sleep(quantum);
        let _ = kill(pid, Signal::SIGSTOP);
        wait_stopped(child.id());
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Run {
                changes,
                killed: false,
                status,
            };
        }
        let now = listing(watch);
        if now != seen {
            changes += 1;
            seen = now;
        }
        assert!(Instant::now() < deadline, "cairn hangs");
        if matches!(stop, Stop::AtChange(n) if changes >= n) {
            child.kill().expect("SIGKILL");
            return ended(child, changes);
        }
        let _ = kill(pid, Signal::SIGCONT);
    }
}

/// Where scratch directories go: a tmpfs where there is one. What a SIGKILL
/// leaves is the same on any filesystem (the kernel keeps what the process
/// wrote), and a tmpfs runs the harness about twice as fast as a disk.
fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let writable = tempfile::tempdir_in(shm).is_ok();
    if writable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// [`Env::new`] under [`scratch_root`].
pub fn scratch_env() -> Env {
    let dir = tempfile::tempdir_in(scratch_root()).expect("tempdir");
    let repo = dir.path().join("repo");
    let password_file = dir.path().join("password");
    common::write_private(&password_file, &format!("{}\n", common::PASSWORD));
    Env {
        dir,
        repo,
        password_file,
    }
}

/// [`Env::with_repo`] under [`scratch_root`].
pub fn scratch_repo(extra: &[&str]) -> Env {
    let env = scratch_env();
    let mut args = vec!["init", "--kdf-memory", "1024", "--kdf-iterations", "1"];
    args.extend_from_slice(extra);
    env.ok(&args);
    env
}

/// A fresh copy of the scenario's repository, in a scratch directory of its own
/// (with its own cache).
fn fresh(sc: &Scenario) -> Env {
    let env = scratch_env();
    let st = Command::new("cp")
        .arg("-a")
        .arg(&sc.template.repo)
        .arg(&env.repo)
        .status()
        .expect("cp");
    assert!(st.success(), "copying the prepared repository");
    env
}

fn op_cmd(sc: &Scenario, env: &Env, quiet: bool) -> Command {
    let mut c = env.cmd_with(&sc.password);
    c.args(&sc.args);
    if quiet {
        c.stdout(Stdio::null()).stderr(Stdio::null());
    }
    c
}

fn run_op(sc: &Scenario, env: &Env) -> std::process::Output {
    op_cmd(sc, env, false).output().expect("run cairn")
}

/// `check --json` (with `--read-data` if asked): the errors it reports, as
/// "object: message". Warnings and notes (leftovers of killed processes, which
/// `prune` removes) are not errors.
pub fn check_errors(env: &Env, read_data: bool) -> BTreeSet<String> {
    let mut args = vec!["check", "--json"];
    if read_data {
        args.push("--read-data");
    }
    let out = env.run(&args);
    let text = stdout(&out);
    let mut errors = BTreeSet::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["message_type"] == "problem" && v["severity"] == "error" {
            errors.insert(format!(
                "{}: {}",
                v["object"].as_str().unwrap_or_default(),
                v["message"].as_str().unwrap_or_default()
            ));
        }
    }
    assert!(
        out.status.success() || !errors.is_empty(),
        "check failed without reporting an error: {}\n{text}",
        stderr(&out)
    );
    errors
}

pub fn snapshots(env: &Env) -> Vec<serde_json::Value> {
    let out = env.run(&["snapshots", "--json"]);
    assert!(out.status.success(), "snapshots: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    v.as_array().expect("array").clone()
}

/// Restores `id` (its single path) with `--verify` into a scratch directory:
/// the files it restored intact, compared with the hashes `want` gives. A file
/// restored with other contents than `want` says is always a failure.
pub fn restore(env: &Env, id: &str, path: &str, want: &Manifest) -> (bool, Manifest) {
    let scratch = tempfile::tempdir_in(env.dir.path()).expect("scratch");
    let target = scratch.path().join("t");
    let out = env.run(&[
        "restore",
        "-q",
        &format!("{id}:{path}"),
        "--target",
        target.to_str().expect("utf-8"),
        "--verify",
    ]);
    let got = if target.exists() {
        manifest(&target)
    } else {
        Manifest::new()
    };
    for (f, h) in &got {
        if let Some(w) = want.get(f) {
            assert_eq!(
                w,
                h,
                "snapshot {id}: {} restored with wrong contents",
                f.display()
            );
        }
    }
    (out.status.success(), got)
}

/// The oracle after a kill: check reports no error the prepared damage doesn't
/// explain; every snapshot present restores what it must; none that must stay
/// is gone; the read-only repository is untouched.
fn judge_killed_state(sc: &Scenario, env: &Env, what: &str) {
    let errors = check_errors(env, false);
    let new: Vec<_> = errors.difference(&sc.expect.check_errors).collect();
    assert!(new.is_empty(), "{what}: check reports {new:#?}");
    let present = snapshots(env);
    let ids: HashSet<&str> = present.iter().filter_map(|s| s["id"].as_str()).collect();
    let repaired_parents: HashSet<&str> = present
        .iter()
        .filter(|s| {
            s["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == "repaired"))
        })
        .filter_map(|s| s["parent"].as_str())
        .collect();
    for id in sc.expect.before.keys() {
        let kept = ids.contains(id.as_str())
            || sc.expect.may_go.contains(id)
            || (sc.expect.replaced.contains(id) && repaired_parents.contains(id.as_str()));
        assert!(kept, "{what}: snapshot {id} is gone");
    }
    for s in &present {
        let id = s["id"].as_str().expect("id");
        let path = s["paths"][0].as_str().expect("path");
        let want = sc.expect.of(s);
        let (_, got) = restore(env, id, path, want);
        let lost: Vec<_> = want.keys().filter(|f| !got.contains_key(*f)).collect();
        assert!(
            lost.is_empty(),
            "{what}: snapshot {id} no longer restores {lost:?}"
        );
    }
}

/// Files of `repo` but its locks (which come and go with every command), with
/// their sizes.
fn state(repo: &Path) -> BTreeMap<PathBuf, u64> {
    common::all_files(repo)
        .into_iter()
        .filter(|p| !p.starts_with(repo.join("locks")))
        .map(|p| {
            let len = fs::metadata(&p).expect("metadata").len();
            (p.strip_prefix(repo).expect("prefix").to_path_buf(), len)
        })
        .collect()
}

fn key_count(env: &Env) -> usize {
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["key", "list", "--json"])).expect("json");
    v.as_array().expect("array").len()
}

/// The re-run after a kill (`keys_before`: key files before the killed run) and
/// the second run: both succeed (or, for `key remove`, fail only because the key
/// is gone), the result checks clean with every byte read, and the second run
/// changes nothing.
fn rerun_and_converge(sc: &Scenario, env: &Env, keys_before: usize, what: &str) {
    let gone_before = match &sc.converge {
        Converge::KeyRemove { id } => !env.ok(&["key", "list"]).contains(&id[..8]),
        _ => false,
    };
    let out = run_op(sc, env);
    if gone_before {
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains("no key"), "{what}: {}", stderr(&out));
    } else {
        assert!(
            out.status.success(),
            "{what}: the re-run failed ({:?}):\n{}\n{}",
            out.status.code(),
            stdout(&out),
            stderr(&out)
        );
    }
    let errors = check_errors(env, true);
    assert!(
        errors.is_empty(),
        "{what}: after the re-run, check --read-data reports {errors:#?}"
    );
    match &sc.converge {
        Converge::KeyAdd { new_password } => {
            let added = key_count(env) - keys_before;
            assert!(
                (1..=2).contains(&added),
                "{what}: {added} keys added by a killed run and its re-run"
            );
            env.ok_with(new_password, &["snapshots"]);
        }
        Converge::KeyRemove { id } => {
            assert!(
                !env.ok(&["key", "list"]).contains(&id[..8]),
                "{what}: key {id} still there"
            );
            let before = state(&env.repo);
            let out = run_op(sc, env);
            assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
            assert_eq!(
                before,
                state(&env.repo),
                "{what}: a second run changed files"
            );
        }
        Converge::Backup => {
            let before = state(&env.repo);
            let out = op_cmd(sc, env, false)
                .arg("--json")
                .output()
                .expect("run cairn");
            assert!(out.status.success(), "{what}: {}", stderr(&out));
            let sum = common::last_json(&stdout(&out), "summary");
            // The snapshot's ancestor directories (a scratch directory's parents)
            // may have changed, so new trees are allowed; new data is not.
            for k in [
                "data_blobs_new",
                "files_new",
                "files_changed",
                "packs_adopted",
            ] {
                assert_eq!(sum[k], 0, "{what}: a second backup: {sum}");
            }
            let after = state(&env.repo);
            let removed: Vec<_> = before.keys().filter(|p| !after.contains_key(*p)).collect();
            assert!(
                removed.is_empty(),
                "{what}: a second backup removed {removed:?}"
            );
        }
        Converge::Idempotent => {
            let before = state(&env.repo);
            let out = run_op(sc, env);
            assert!(out.status.success(), "{what}: {}", stderr(&out));
            assert_eq!(
                before,
                state(&env.repo),
                "{what}: a second run changed files"
            );
        }
    }
}

/// The state the read-only repository must keep.
fn read_only_state(sc: &Scenario) -> Option<BTreeMap<PathBuf, u64>> {
    sc.source.as_ref().map(|e| state(&e.repo))
}

/// One kill point: a fresh copy, the operation run to `stop` and killed
/// there, the oracle, then the re-run and the second run.
fn kill_point(sc: &Scenario, quantum: Duration, stop: Stop) -> bool {
    let env = fresh(sc);
    let keys_before = match sc.converge {
        Converge::KeyAdd { .. } => key_count(&env),
        _ => 0,
    };
    let ro = read_only_state(sc);
    let run = stepped(op_cmd(sc, &env, true), &env.repo, quantum, stop);
    let what = format!(
        "{}, killed at {stop:?} (change {}, {})",
        sc.name,
        run.changes,
        if run.killed {
            "mid-operation".to_string()
        } else {
            format!("after it exited with {}", run.status)
        }
    );
    if !run.killed {
        assert!(run.status.success(), "{what}");
    }
    judge_killed_state(sc, &env, &what);
    rerun_and_converge(sc, &env, keys_before, &what);
    assert_eq!(
        ro,
        read_only_state(sc),
        "{what}: the source repository changed"
    );
    run.killed
}

/// The quantum of a stepped run. Stopping a process can take longer than this
/// on a busy machine (each of its threads must get a CPU to stop): a step is
/// then longer, and two changes may fall into one.
const QUANTUM: Duration = Duration::from_micros(300);

/// Measures the operation, checks a complete run, kills it at every kill point
/// and judges each; prints what it did.
pub fn run(sc: &Scenario) {
    let started = Instant::now();
    // How long a plain run takes: the median of three. The first is the
    // reference, judged like any other and then in full: every snapshot
    // restores all it should once the operation has run.
    let mut walls = Vec::new();
    for i in 0..3 {
        let env = fresh(sc);
        let keys_before = match sc.converge {
            Converge::KeyAdd { .. } => key_count(&env),
            _ => 0,
        };
        let t0 = Instant::now();
        let out = run_op(sc, &env);
        walls.push(t0.elapsed());
        assert!(
            out.status.success(),
            "{}: the operation fails on the prepared repository:\n{}\n{}",
            sc.name,
            stdout(&out),
            stderr(&out)
        );
        if i > 0 {
            continue;
        }
        let what = format!("{}, complete run", sc.name);
        judge_killed_state(sc, &env, &what);
        for s in snapshots(&env) {
            let want = s["id"]
                .as_str()
                .and_then(|id| sc.expect.complete.get(id))
                .unwrap_or_else(|| sc.expect.of(&s));
            let (ok, got) = restore(
                &env,
                s["id"].as_str().expect("id"),
                s["paths"][0].as_str().expect("path"),
                want,
            );
            let missing: Vec<_> = want.keys().filter(|f| !got.contains_key(*f)).collect();
            let extra: Vec<_> = got.keys().filter(|f| !want.contains_key(*f)).collect();
            assert!(
                ok && missing.is_empty() && extra.is_empty(),
                "{what}: snapshot {s} restores with exit ok {ok}, without {missing:?}, \
                 with {extra:?}"
            );
        }
        rerun_and_converge(sc, &env, keys_before, &what);
    }
    walls.sort();
    let wall = walls[1];
    // How many times a run changes the repository's listing, as a stepped run
    // sees it.
    let env = fresh(sc);
    let full = stepped(op_cmd(sc, &env, true), &env.repo, QUANTUM, Stop::Never);
    assert!(
        !full.killed && full.status.success(),
        "{}: stepped run: {}",
        sc.name,
        full.status
    );

    // Kill points spread evenly over the run; where some of them came after the
    // operation had ended (a busier machine measured it slower), more are
    // spread over the time it ended within, until SPREAD of them landed while
    // it ran (at most five rounds).
    let (mut spread, mut mid_spread) = (0, 0);
    let mut span = wall;
    for _ in 0..5 {
        let want = SPREAD - mid_spread;
        let mut ended_within = span;
        for i in 0..want {
            let at = span.mul_f64((i as f64 + 0.5) / want as f64);
            spread += 1;
            if kill_point(sc, QUANTUM, Stop::After(at)) {
                mid_spread += 1;
            } else {
                ended_within = ended_within.min(at);
            }
        }
        if mid_spread >= SPREAD {
            break;
        }
        span = ended_within;
    }
    let changes = full.changes;
    let at_changes = AT_CHANGES.min(changes as usize);
    let mut mid_changes = 0;
    for j in 0..at_changes {
        let nth = 1 + (j as u32 * changes) / at_changes as u32;
        if kill_point(sc, QUANTUM, Stop::AtChange(nth)) {
            mid_changes += 1;
        }
    }
    println!(
        "crash: {:<16} {:>2} kill points, {:>2} mid-operation: {mid_spread:>2} of {spread} spread \
         over the {} ms a run takes, {mid_changes} of {at_changes} right after one of its \
         {changes} changes to the repository ({:.0} s)",
        sc.name,
        spread + at_changes,
        mid_spread + mid_changes,
        wall.as_millis(),
        started.elapsed().as_secs_f64()
    );
}
