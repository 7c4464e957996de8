//! Real cairn processes sharing one repository at the same moment (issue 13,
//! item 4). Each one is run a step at a time (SIGSTOP between steps) and left
//! stopped part way, so the processes provably overlap however fast the
//! machine is. Every test ends with `check --read-data` clean and every
//! snapshot restoring byte for byte.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::backend::{FileType, LocalBackend};
use cairn::format::{FileKind, SealKind};
use cairn::lock::Lock;
use cairn::repository::Repository;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::{self, Env, stderr, stdout};
use crate::locks::lock_names;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// Packs stored under their final names.
fn packs(repo: &Path) -> usize {
    common::all_files(&repo.join("data"))
        .iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(cairn::id::is_file_name)
        })
        .count()
}

/// Steps `child` (SIGCONT, a moment, SIGSTOP) until `ready` holds, and leaves it
/// stopped; panics if it exits first.
fn step_until(child: &mut Child, what: &str, ready: impl Fn() -> bool) {
    // common::stop_when waits until the child has stopped before looking: a
    // SIGSTOP is delivered asynchronously, and a child still running for a
    // moment after kill() returned wrote a file after the look (seen once in
    // prune_beside_a_running_backup_is_refused_naming_its_host_and_pid).
    common::stop_when(child, what, ready);
}

/// Continues a stopped `child` and waits for it: its output.
fn finish(child: Child) -> std::process::Output {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT).expect("SIGCONT");
    child.wait_with_output().expect("wait")
}

fn spawn(env: &Env, args: &[&str]) -> Child {
    env.cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn")
}

/// Files enough for a backup of a few dozen 1 MiB packs.
fn dataset(dir: &Path, seed: u64) {
    fs::create_dir_all(dir.join("sub")).expect("mkdir");
    common::random_files(dir, seed, 12, 700 << 10, |i| format!("part-{i:02}.bin"));
    let mut rng = common::rng(seed + 1);
    for i in 0..6 {
        fs::write(
            dir.join("sub").join(format!("log-{i}.txt")),
            common::text_bytes(&mut rng, 60 << 10),
        )
        .expect("write");
    }
}

fn new_env() -> Env {
    Env::with_repo(&["--pack-size", "1", "--chunker-params", "64K,128K,512K"])
}

/// `check --read-data` finds no error (notes, such as blobs stored twice by
/// backups that ran at once, are fine), and every snapshot restores its path
/// byte for byte from `sources` (path → source directory; a snapshot of a
/// path backs up that directory as it is now).
fn all_sound(env: &Env, sources: &[&Path]) {
    let out = env.run(&["check", "--read-data"]);
    assert!(
        out.status.success(),
        "check --read-data:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    let list = list.as_array().expect("array");
    assert!(!list.is_empty());
    for snap in list {
        let path = snap["paths"][0].as_str().expect("path");
        let src = sources
            .iter()
            .find(|p| s(p) == path)
            .unwrap_or_else(|| panic!("a snapshot of {path}"));
        common::restore_matches(env, snap["id"].as_str().expect("id"), src);
    }
    assert!(
        lock_names(env).is_empty(),
        "locks left: {:?}",
        lock_names(env)
    );
}

/// Two hosts back up into one repository at once: both are stopped part way
/// with packs written and their locks held, then both finish.
#[test]
fn backups_of_two_hosts_at_once_both_commit() {
    let env = new_env();
    let (a, b) = (env.path("a"), env.path("b"));
    dataset(&a, 1);
    dataset(&b, 2);
    let mut first = spawn(&env, &["backup", "--host", "alpha", s(&a)]);
    step_until(&mut first, "alpha's backup", || packs(&env.repo) >= 2);
    let mut second = spawn(&env, &["backup", "--host", "beta", s(&b)]);
    step_until(&mut second, "beta's backup", || packs(&env.repo) >= 5);
    // Both are part way at this moment, each under its own shared lock.
    assert_eq!(lock_names(&env).len(), 2);
    assert!(common::all_files(&env.repo.join("snapshots")).is_empty());
    for out in [finish(first), finish(second)] {
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    let mut hosts: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["hostname"].as_str().expect("hostname"))
        .collect();
    hosts.sort_unstable();
    assert_eq!(hosts, ["alpha", "beta"]);
    all_sound(&env, &[&a, &b]);
}

/// `check` while a backup is part way: it reports no error (the backup's packs
/// not yet indexed are untidiness), and the backup then commits.
#[test]
fn check_beside_a_running_backup_succeeds_and_so_does_the_backup() {
    let env = new_env();
    let (base, src) = (env.path("base"), env.path("src"));
    dataset(&base, 3);
    dataset(&src, 4);
    env.ok(&["backup", s(&base)]);
    let before = packs(&env.repo);
    let mut backup = spawn(&env, &["backup", s(&src)]);
    step_until(&mut backup, "the backup", || packs(&env.repo) > before);
    let out = env.run(&["check", "--json"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    for line in stdout(&out).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert_ne!(v["severity"], "error", "{v}");
    }
    let out = finish(backup);
    assert!(out.status.success(), "{}", stderr(&out));
    all_sound(&env, &[&base, &src]);
}

/// `prune` while a backup holds its lock is refused with exit code 11, naming
/// the backup's host and pid, and deletes nothing; the backup then commits.
#[test]
fn prune_beside_a_running_backup_is_refused_naming_its_host_and_pid() {
    let env = new_env();
    let (old, src) = (env.path("old"), env.path("src"));
    dataset(&old, 5);
    dataset(&src, 6);
    // Something for prune to delete, were it let.
    let id = env.backup_json(&[s(&old)])["snapshot_id"]
        .as_str()
        .expect("id")
        .to_string();
    env.ok(&["forget", &id]);
    // Only the forgotten snapshot's packs are in the repository now.
    let forgotten = common::all_files(&env.repo.join("data"));
    assert!(!forgotten.is_empty(), "the first backup wrote no pack");
    let before = packs(&env.repo);
    let mut backup = spawn(&env, &["backup", s(&src)]);
    step_until(&mut backup, "the backup", || packs(&env.repo) > before);
    let files = common::all_files(&env.repo.join("data"));
    let out = env.run(&["prune", "--max-unused", "0"]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    let host = nix::unistd::gethostname().expect("hostname");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "@{} (pid {})",
            host.to_string_lossy(),
            backup.id()
        )),
        "{err}"
    );
    assert_eq!(common::all_files(&env.repo.join("data")), files);
    let out = finish(backup);
    assert!(out.status.success(), "{}", stderr(&out));
    env.ok(&["prune", "--max-unused", "0"]);
    // How many packs the backup wrote after it was let go varies with how
    // its packers' work interleaved, so the count proves nothing; that each
    // of the forgotten snapshot's packs is gone does.
    let left: Vec<_> = forgotten.iter().filter(|p| p.exists()).collect();
    assert!(
        left.is_empty(),
        "prune left the forgotten snapshot's packs {left:?}"
    );
    all_sound(&env, &[&src]);
}

fn open_lib(env: &Env) -> Repository {
    Repository::open(
        Arc::new(LocalBackend::new(&env.repo)),
        common::PASSWORD.as_bytes(),
    )
    .expect("open")
}

/// A prune SIGKILLed while it holds its exclusive lock leaves the lock file
/// behind. Its process is provably gone (this host, boot and PID namespace), so
/// the next backup and prune take it over without `unlock`.
#[test]
fn lock_of_a_sigkilled_prune_is_taken_over_by_the_next_commands() {
    let env = new_env();
    let src = env.path("src");
    dataset(&src, 7);
    env.ok(&["backup", s(&src)]);
    fs::write(
        src.join("part-00.bin"),
        common::random_bytes(&mut common::rng(9), 700 << 10),
    )
    .expect("write");
    env.ok(&["backup", s(&src)]);
    // Work for prune, so that it holds its lock a while.
    env.ok(&["forget", "--keep-last", "1"]);
    let mut prune = spawn(&env, &["prune", "--max-unused", "0"]);
    step_until(&mut prune, "prune", || !lock_names(&env).is_empty());
    let pid = prune.id();
    prune.kill().expect("SIGKILL");
    prune.wait().expect("wait");
    let left = lock_names(&env);
    assert_eq!(left.len(), 1);
    let lock = env.ok(&["cat", "lock", &left[0]]);
    assert!(
        lock.contains(&format!("\"pid\":{pid},")) && lock.contains("\"exclusive\":true"),
        "{lock}"
    );
    env.ok(&["backup", s(&src)]);
    assert!(
        lock_names(&env).is_empty(),
        "the dead prune's lock is still there"
    );
    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    all_sound(&env, &[&src]);
}

/// A process SIGKILLed on another host (its lock can't be proved gone from
/// here) keeps `prune` and backups out until its lock is 30 minutes old by its
/// own time and by the file's; then they run beside it, and `unlock` removes it.
#[test]
fn lock_of_a_process_killed_on_another_host_is_taken_over_once_stale() {
    let env = new_env();
    let src = env.path("src");
    dataset(&src, 8);
    env.ok(&["backup", s(&src)]);
    env.ok(&["backup", s(&src)]);
    let repo = open_lib(&env);
    let write = |age: Duration| -> PathBuf {
        let lock = Lock {
            hostname: "elsewhere".into(),
            time: chrono::DateTime::<chrono::Utc>::from(SystemTime::now() - age)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, false),
            ..Lock::for_this_process(true)
        };
        let (name, _) = repo
            .save_sealed(
                FileKind::Lock,
                SealKind::Lock,
                FileType::Lock,
                &cairn::format::to_msgpack(&lock),
            )
            .expect("write lock");
        let path = env.repo.join("locks").join(name);
        fs::File::options()
            .write(true)
            .open(&path)
            .expect("open")
            .set_modified(SystemTime::now() - age)
            .expect("set mtime");
        path
    };
    // Ten minutes after the kill: held.
    let recent = write(Duration::from_secs(600));
    let out = env.run(&["prune"]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(stderr(&out).contains("@elsewhere"), "{}", stderr(&out));
    let out = env.run(&["backup", s(&src)]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    fs::remove_file(recent).expect("remove");
    // An hour after: stale, and taken over.
    let old = write(Duration::from_secs(3600));
    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    env.ok(&["backup", s(&src)]);
    let out = env.ok(&["unlock"]);
    assert!(out.contains("removed"), "{out}");
    assert!(!old.exists());
    all_sound(&env, &[&src]);
}
