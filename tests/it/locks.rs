//! Locks under hostile or odd conditions (format-spec §15): clocks that disagree,
//! lock files that can't be read, hosts that share a name, and a backup whose
//! packs are deleted under it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cairn::backend::{Backend, FileType, LocalBackend};
use cairn::format::{FileKind, SealKind};
use cairn::lock::Lock;
use cairn::repository::Repository;

use crate::common::{self, Env, PASSWORD, stderr};

fn open_lib(repo: &Path) -> Arc<Repository> {
    let backend = Arc::new(LocalBackend::new(repo));
    Arc::new(Repository::open(backend, PASSWORD.as_bytes()).expect("open"))
}

/// Seals `lock` into `repo`'s `locks/`; returns the file's path.
fn write_lock(env: &Env, lock: &Lock) -> PathBuf {
    let repo = open_lib(&env.repo);
    let (name, _) = repo
        .save_sealed(
            FileKind::Lock,
            SealKind::Lock,
            FileType::Lock,
            &cairn::format::to_msgpack(lock),
        )
        .expect("write lock");
    env.repo.join("locks").join(name)
}

/// A repository with two snapshots (so that `forget --keep-last 1` has one to
/// remove, and takes its lock), and their source directory.
fn backed_up() -> (Env, String) {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), "a").expect("write");
    let src = src.to_str().expect("utf-8").to_string();
    env.ok(&["backup", &src]);
    env.ok(&["backup", &src]);
    (env, src)
}

fn set_file_age(path: &Path, age: Duration) {
    fs::File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_modified(SystemTime::now() - age)
        .expect("set mtime");
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)
}

const HOUR: Duration = Duration::from_secs(3600);

/// A host whose clock ran 10 minutes ahead held a lock that prune took for stale
/// (its age was negative); prune then deleted the packs of the running backup.
#[test]
fn future_dated_lock_blocks_prune_with_exit_11() {
    let (env, src) = backed_up();
    let lock = Lock {
        time: rfc3339(SystemTime::now() + Duration::from_secs(600)),
        hostname: "clock-ahead".into(),
        ..Lock::for_this_process(false)
    };
    let file = write_lock(&env, &lock);
    let out = env.run(&["prune"]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(stderr(&out).contains("in the future"), "{}", stderr(&out));
    let out = env.run(&["forget", "--keep-last", "1"]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    // Shared locks coexist with it; plain unlock keeps it.
    env.ok(&["backup", &src]);
    assert!(env.ok(&["unlock"]).contains("kept"));
    assert!(file.exists());
    // Once its file has gone unreplaced for longer than a holder refreshing every
    // 5 minutes allows, it is stale, and plain unlock removes it.
    set_file_age(&file, HOUR);
    let out = env.ok(&["unlock"]);
    assert!(
        out.contains("removed") && out.contains("in the future"),
        "{out}"
    );
    assert!(!file.exists());
    env.ok(&["prune"]);
}

/// Three kinds of lock file that can't be read, each built through the library.
fn hostile_lock_files(env: &Env) -> Vec<(&'static str, PathBuf)> {
    let locks = env.repo.join("locks");
    fs::create_dir_all(&locks).expect("mkdir");
    // Bad bytes, named by their hash.
    let junk = b"\x89CRN\r\n\x1a\n\x01\x06 definitely not a sealed lock".to_vec();
    let garbage = locks.join(hex::encode(blake3::hash(&junk).as_bytes()));
    fs::write(&garbage, &junk).expect("write");
    // A good lock under a name that isn't its hash.
    let good = write_lock(env, &Lock::for_this_process(true));
    let renamed = locks.join("ab".repeat(32));
    fs::rename(&good, &renamed).expect("rename");
    // Another repository's lock: its name is its hash, but our key can't open it.
    let other = Env::with_repo(&[]);
    let foreign_src = write_lock(&other, &Lock::for_this_process(false));
    let foreign = locks.join(foreign_src.file_name().expect("name"));
    fs::copy(&foreign_src, &foreign).expect("copy");
    vec![
        ("bad bytes", garbage),
        ("name not its hash", renamed),
        ("another repository's key", foreign),
    ]
}

#[test]
fn unreadable_lock_is_reported_by_check_and_blocks_prune_until_stale_by_file_time() {
    let (env, src) = backed_up();
    let files = hostile_lock_files(&env);
    let stash = env.path("stash");
    fs::create_dir_all(&stash).expect("mkdir");
    for (_, f) in &files {
        fs::rename(f, stash.join(f.file_name().expect("name"))).expect("stash");
    }
    for (kind, file) in &files {
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        fs::rename(stash.join(&name), file).expect("unstash");
        set_file_age(file, Duration::from_secs(60));

        // check names it and says what to do.
        let out = env.run(&["check"]);
        assert_eq!(out.status.code(), Some(1), "{kind}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&name) && err.contains("cairn unlock --remove-all"),
            "{kind}: {err}"
        );
        // Nothing that deletes runs beside it; shared operations do.
        for cmd in [&["prune"][..], &["forget", "--keep-last", "1"]] {
            let out = env.run(cmd);
            assert_eq!(
                out.status.code(),
                Some(11),
                "{kind} {cmd:?}: {}",
                stderr(&out)
            );
            assert!(stderr(&out).contains(&name), "{kind}: {}", stderr(&out));
        }
        env.ok(&["backup", &src]);
        let out = env.ok(&["unlock"]);
        assert!(out.contains("kept") && out.contains(&name), "{kind}: {out}");
        assert!(file.exists(), "{kind}");

        // Stale by its file time: it blocks nothing, check says `unlock` removes
        // it, and plain unlock does, saying so.
        set_file_age(file, HOUR);
        env.ok(&["prune"]);
        let out = env.run(&["check"]);
        assert!(
            stderr(&out).contains(&name) && stderr(&out).contains("blocks nothing"),
            "{kind}: {}",
            stderr(&out)
        );
        let out = env.ok(&["unlock"]);
        assert!(
            out.contains("removed") && out.contains(&name) && out.contains("file time"),
            "{kind}: {out}"
        );
        assert!(!file.exists(), "{kind}");
        env.ok(&["check"]);
    }
}

/// Two containers share a hostname (and a kernel) but not a PID namespace: each
/// used to take the other's pids for dead and delete its live locks.
#[test]
fn lock_of_a_same_named_host_without_provable_identity_is_kept() {
    let (env, src) = backed_up();
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let dead_pid = child.id();
    child.wait().expect("wait");
    let here = Lock::for_this_process(false);
    let other_namespace = Lock {
        pid: dead_pid,
        pid_ns: Some(here.pid_ns.unwrap_or(0).wrapping_add(1)),
        ..here.clone()
    };
    let older_cairn = Lock {
        pid: dead_pid,
        boot_id: None,
        pid_ns: None,
        ..here.clone()
    };
    for (what, lock) in [
        ("other pid namespace", other_namespace),
        ("no identity fields", older_cairn),
    ] {
        let file = write_lock(&env, &lock);
        // Another lock's acquisition (which removes provably dead locks) keeps it.
        env.ok(&["backup", &src]);
        assert!(file.exists(), "{what}");
        let out = env.run(&["prune"]);
        assert_eq!(out.status.code(), Some(11), "{what}: {}", stderr(&out));
        let out = env.ok(&["unlock"]);
        assert!(out.contains("kept"), "{what}: {out}");
        assert!(file.exists(), "{what}");
        env.ok(&["unlock", "--remove-all"]);
        assert!(!file.exists(), "{what}");
    }
}

#[test]
fn backup_whose_packs_are_deleted_before_commit_fails_without_a_snapshot() {
    let env = Env::with_repo(&["--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    common::random_files(&src, 5, 3, 700 << 10, |i| format!("{i}.bin"));
    // Deletes every pack it has written once an index file is written: what a
    // prune that took the backup's lock for stale does between the backup's last
    // pack and its snapshot.
    let packs = Mutex::new(Vec::new());
    let backend = Arc::new(common::HookedBackend::new(
        &env.repo,
        move |inner: &LocalBackend, t, name: &str, data: &[u8]| {
            inner.write(t, name, data)?;
            let mut packs = packs.lock().expect("mutex");
            match t {
                FileType::Pack => packs.push(name.to_string()),
                FileType::Index => {
                    for p in packs.drain(..) {
                        inner.remove(FileType::Pack, &p)?;
                    }
                }
                _ => {}
            }
            Ok(())
        },
    ));
    let err = common::backup_through(backend, &src)
        .err()
        .expect("a backup whose packs are gone must fail");
    assert!(
        matches!(err, cairn::Error::WrittenFilesGone { packs, .. } if packs >= 2),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("written by this backup are gone")
            && msg.contains("the snapshot was not written")
            && msg.contains("cairn check"),
        "{msg}"
    );
    assert!(common::all_files(&env.repo.join("snapshots")).is_empty());
    assert!(common::all_files(&env.repo.join("locks")).is_empty());
    // `check` finds the index naming missing packs, but no snapshot that needs them.
    let out = env.run(&["check"]);
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
}

/// A backup also relies on packs it didn't write: those holding blobs it found in
/// the index (here, of a file whose snapshot was forgotten). A prune that takes
/// its lock for stale deletes them (after rewriting the index), and the backup
/// must then fail instead of committing a snapshot that names them.
#[test]
fn backup_whose_deduplicated_packs_are_pruned_underneath_fails_without_a_snapshot() {
    let env = Env::with_repo(&["--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut rng = common::rng(8);
    fs::write(
        src.join("old.bin"),
        common::random_bytes(&mut rng, 300 << 10),
    )
    .expect("write");
    let src_s = src.to_str().expect("utf-8");
    env.ok(&["backup", src_s]);
    // Forgotten, not pruned: old.bin's blobs stay in the index, used by nothing.
    for snap in common::all_files(&env.repo.join("snapshots")) {
        fs::remove_file(snap).expect("forget");
    }
    // Staged by hand, not by `cairn forget`: not a loss for check to report.
    common::unsee(&env);
    fs::write(
        src.join("new.bin"),
        common::random_bytes(&mut rng, 300 << 10),
    )
    .expect("write");

    // Writes go one at a time, so that the prune runs before any pack of this
    // backup exists (it would delete those too, which `verify_written` catches).
    let pruned = Mutex::new(false);
    let (repo_dir, password_file) = (env.repo.clone(), env.password_file.clone());
    let backend = Arc::new(common::HookedBackend::new(
        &env.repo,
        move |inner: &LocalBackend, t, name: &str, data: &[u8]| {
            let mut pruned = pruned.lock().expect("mutex");
            if t == FileType::Pack && !*pruned {
                *pruned = true;
                // As if this backup's lock had been taken for stale.
                for l in common::all_files(&repo_dir.join("locks")) {
                    fs::remove_file(l).expect("remove lock");
                }
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
                    .arg("-r")
                    .arg(&repo_dir)
                    .arg("--password-file")
                    .arg(&password_file)
                    .args(["--no-cache", "prune"])
                    .output()
                    .expect("run prune");
                assert!(out.status.success(), "{}", stderr(&out));
            }
            inner.write(t, name, data)
        },
    ));
    let err = common::backup_through(backend, &src)
        .err()
        .expect("a backup whose deduplicated packs are gone must fail");
    assert!(
        matches!(err, cairn::Error::IndexRewritten { packs, .. } if packs >= 1),
        "{err}"
    );
    assert!(
        err.to_string().contains("the snapshot was not written"),
        "{err}"
    );
    assert!(common::all_files(&env.repo.join("snapshots")).is_empty());
    // The next backup stores what it needs again and checks clean.
    env.ok(&["backup", src_s]);
    env.ok(&["check", "--read-data"]);
}

/// `cairn backup --stdin` started through `wrapper` (see `Env::bare_cmd_through`)
/// and held, lock taken, until [`HeldBackup::finish`] gives it its data.
pub(crate) struct HeldBackup {
    child: std::process::Child,
}

impl HeldBackup {
    pub(crate) fn start(env: &Env, wrapper: &[&str], vars: &[(&str, &str)]) -> Self {
        let mut child = env
            .bare_cmd_through(wrapper)
            .arg("--password-file")
            .arg(&env.password_file)
            .args(["backup", "--stdin", "--stdin-filename", "data.bin"])
            .envs(vars.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the backup");
        // Its lock appears once it runs; a generous guard against a hang, not a
        // measurement.
        for _ in 0..3000 {
            if !lock_names(env).is_empty() {
                return Self { child };
            }
            if child.try_wait().expect("wait").is_some() {
                let out = child.wait_with_output().expect("output");
                panic!("the backup ended before taking its lock: {}", stderr(&out));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the backup never took its lock");
    }

    pub(crate) fn finish(mut self, data: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut stdin = self.child.stdin.take().expect("stdin");
        stdin.write_all(data).expect("write to the backup");
        drop(stdin);
        self.child.wait_with_output().expect("backup output")
    }
}

/// What a backup held open by another host must survive: a prune and a plain
/// unlock from here are refused or keep its lock, and the backup then commits
/// a snapshot that checks clean and holds its data.
fn held_backup_survives_prune_and_unlock(env: &Env, held: HeldBackup, why: &str) {
    let out = env.run(&["prune"]);
    assert_eq!(
        out.status.code(),
        Some(11),
        "prune beside {why}: {}",
        stderr(&out)
    );
    let out = env.ok(&["unlock"]);
    assert!(out.contains("kept"), "unlock beside {why}: {out}");
    assert_eq!(lock_names(env).len(), 1);
    let data = common::random_bytes(&mut common::rng(21), 300 << 10);
    let out = held.finish(&data);
    assert!(out.status.success(), "the held backup: {}", stderr(&out));
    env.ok(&["check", "--read-data"]);
    let target = env.path("out");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    assert!(fs::read(target.join("data.bin")).expect("restored") == data);
}

pub(crate) const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Issue #10, item 1, as it was met: a backup runs on a host whose clock is 10
/// minutes ahead (libfaketime, and under root its own hostname), and a prune
/// from this host, which used to take the future-dated lock for stale and
/// delete the backup's packs, is refused.
#[test]
fn backup_on_a_host_whose_clock_runs_ten_minutes_ahead_keeps_prune_out() {
    if !Path::new(FAKETIME).exists() {
        eprintln!("skipped: {FAKETIME} is missing (Debian package faketime; .ci/run installs it)");
        return;
    }
    let env = Env::with_repo(&[]);
    let other_host: &[&str] = &[
        "unshare",
        "--uts",
        "sh",
        "-c",
        "hostname ahead && exec \"$@\"",
        "sh",
    ];
    let wrapper: &[&str] = if common::is_root() { other_host } else { &[] };
    let held = HeldBackup::start(
        &env,
        wrapper,
        &[("LD_PRELOAD", FAKETIME), ("FAKETIME", "+10m")],
    );
    let lock = env.ok(&["cat", "lock", &lock_name(&env)]);
    if common::is_root() {
        assert!(lock.contains("\"hostname\":\"ahead\""), "{lock}");
    }
    held_backup_survives_prune_and_unlock(&env, held, "a backup dated 10 minutes ahead");
}

/// Issue #10, item 11, as it is met: a backup runs in another PID namespace (a
/// container) under the same hostname, with a pid that names no process here.
/// Same host, no such pid used to count as "provably dead": prune and unlock
/// removed its lock. Needs root, for unshare.
#[test]
fn backup_in_another_pid_namespace_under_the_same_hostname_keeps_prune_out() {
    if !common::is_root() {
        eprintln!("skipped: needs root to start a PID namespace with unshare");
        return;
    }
    let env = Env::with_repo(&[]);
    // A pid that no process here has, for the backup inside the namespace.
    let pid = (20_000..30_000)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .expect("a free pid");
    let script = format!("echo {} > /proc/sys/kernel/ns_last_pid; \"$@\"", pid - 1);
    let wrapper = [
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "sh",
        "-c",
        &script,
        "sh",
    ];
    let held = HeldBackup::start(&env, &wrapper, &[]);
    let lock = env.ok(&["cat", "lock", &lock_name(&env)]);
    assert!(lock.contains(&format!("\"pid\":{pid},")), "{lock}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} taken here meanwhile"
    );
    held_backup_survives_prune_and_unlock(&env, held, "a backup in another PID namespace");
}

/// The lock files under `locks/` (not the temporary files of writes under way).
pub(crate) fn lock_names(env: &Env) -> Vec<String> {
    common::all_files(&env.repo.join("locks"))
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .filter(|n| cairn::id::is_file_name(n))
        .collect()
}

fn lock_name(env: &Env) -> String {
    let locks = lock_names(env);
    let [one] = locks.as_slice() else {
        panic!("expected one lock, found {locks:?}");
    };
    one.clone()
}
