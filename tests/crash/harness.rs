//! Running an operation, killing it at a chosen moment, and the oracle that
//! judges what the kill left behind.
//!
//! Plain runs first measure how long the operation takes; the kill points are
//! then spread evenly over that time. Beside them, the operation is killed right
//! after each of the writes and removals it makes in the repository (a pack
//! renamed into place, an index file written, an old file deleted, a lock
//! taken): the moments a wrong order of writes would show. For those, cairn runs
//! with `CAIRN_TEST_STOP_AT_WRITES`, which makes it stop itself (SIGSTOP) once
//! each is durable, and is killed while stopped after the n-th.

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
/// Kill points right after a write or removal: after each of them, or after as
/// many spread over them where a run makes more.
pub const AT_WRITES: usize = 40;

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

/// How a run ended.
pub struct Run {
    /// Writes and removals it made durable (counted with [`Stop::AtWrite`] and
    /// [`Stop::Never`]).
    pub writes: u32,
    /// Killed by us before it exited on its own.
    pub killed: bool,
    pub status: ExitStatus,
}

#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// Run to the end, counting writes.
    Never,
    /// SIGKILL this long after the start.
    After(Duration),
    /// SIGKILL right after the n-th write or removal is durable.
    AtWrite(u32),
}

/// Runs `cmd` until it exits or `stop`.
pub fn run_until(mut cmd: Command, stop: Stop) -> Run {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use std::os::unix::process::ExitStatusExt;
    if let Stop::After(at) = stop {
        let mut child = cmd.spawn().expect("spawn cairn");
        std::thread::sleep(at);
        // An exited child not yet waited for is still there to signal.
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        return Run {
            writes: 0,
            killed: status.signal() == Some(Signal::SIGKILL as i32),
            status,
        };
    }
    cmd.env("CAIRN_TEST_STOP_AT_WRITES", "1");
    #[allow(
        clippy::zombie_processes,
        reason = "reaped by the waitpid below, which also sees it stop"
    )]
    let child = cmd.spawn().expect("spawn cairn");
    let pid = Pid::from_raw(child.id() as i32);
    let mut writes = 0;
    let mut killed = false;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WUNTRACED)).expect("waitpid") {
            WaitStatus::Stopped(_, _) => {
                writes += 1;
                if matches!(stop, Stop::AtWrite(n) if writes >= n) {
                    kill(pid, Signal::SIGKILL).expect("SIGKILL");
                    killed = true;
                } else {
                    kill(pid, Signal::SIGCONT).expect("SIGCONT");
                }
            }
            WaitStatus::Exited(_, code) => {
                return Run {
                    writes,
                    killed: false,
                    status: ExitStatus::from_raw(code << 8),
                };
            }
            WaitStatus::Signaled(_, sig, _) => {
                return Run {
                    writes,
                    killed: killed && sig == Signal::SIGKILL,
                    status: ExitStatus::from_raw(sig as i32),
                };
            }
            _ => {}
        }
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
        vars: Vec::new(),
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
fn kill_point(sc: &Scenario, stop: Stop) -> bool {
    let env = fresh(sc);
    let keys_before = match sc.converge {
        Converge::KeyAdd { .. } => key_count(&env),
        _ => 0,
    };
    let ro = read_only_state(sc);
    let run = run_until(op_cmd(sc, &env, true), stop);
    let what = format!(
        "{}, killed at {stop:?} ({})",
        sc.name,
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
    // How many writes and removals a run makes.
    let env = fresh(sc);
    let full = run_until(op_cmd(sc, &env, true), Stop::Never);
    assert!(
        !full.killed && full.status.success(),
        "{}: a run stopping at every write: {}",
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
            if kill_point(sc, Stop::After(at)) {
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
    let writes = full.writes;
    let at_writes = AT_WRITES.min(writes as usize);
    let mut mid_writes = 0;
    for j in 0..at_writes {
        let nth = 1 + (j as u32 * writes) / at_writes as u32;
        if kill_point(sc, Stop::AtWrite(nth)) {
            mid_writes += 1;
        }
    }
    println!(
        "crash: {:<16} {:>2} kill points, {:>2} mid-operation: {mid_spread:>2} of {spread} spread \
         over the {} ms a run takes, {mid_writes:>2} of {at_writes} right after one of its \
         {writes} writes and removals ({:.0} s)",
        sc.name,
        spread + at_writes,
        mid_spread + mid_writes,
        wall.as_millis(),
        started.elapsed().as_secs_f64()
    );
}
