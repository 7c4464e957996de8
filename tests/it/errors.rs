//! Bad input and interruptions: exit codes, clear messages, and a repository that
//! stays consistent.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn::backend::{Backend, FileType, LocalBackend};
use cairn::repository::Repository;

use crate::common::{self, Env, PASSWORD, stderr};

#[test]
fn wrong_password_exits_12() {
    let env = Env::with_repo(&[]);
    fs::write(&env.password_file, "not the password\n").expect("write");
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).lines().count(),
        1,
        "one line: {}",
        stderr(&out)
    );
}

#[test]
fn not_a_repository_exits_10() {
    let env = Env::new();
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    fs::create_dir_all(&env.repo).expect("mkdir");
    fs::write(env.repo.join("hello.txt"), "not a repo").expect("write");
    let out = env.run(&["ls", "latest"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a cairn repository"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn init_refuses_non_empty_directory() {
    let env = Env::new();
    fs::create_dir_all(&env.repo).expect("mkdir");
    fs::write(env.repo.join("precious.txt"), "keep me").expect("write");
    let out = env.run(&["init", "--kdf-memory", "1024", "--kdf-iterations", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(env.repo.join("precious.txt")).expect("read"),
        "keep me"
    );
    // And an existing repository is not re-initialized either.
    let env = Env::with_repo(&[]);
    let out = env.run(&["init", "--kdf-memory", "1024", "--kdf-iterations", "1"]);
    assert_eq!(out.status.code(), Some(1));
}

/// Rewrites a stored file with a different format version byte, under its new
/// content-hash name, as a newer cairn would have written it.
fn bump_version(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(name);
    let mut bytes = fs::read(&path).expect("read");
    bytes[8] = 2;
    fs::remove_file(&path).expect("remove");
    let new = hex::encode(blake3::hash(&bytes).as_bytes());
    fs::write(dir.join(&new), bytes).expect("write");
    new
}

#[test]
fn newer_format_version_is_refused_with_a_clear_message() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), "a").expect("write");
    env.ok(&["backup", src.to_str().expect("utf-8")]);

    let snaps = env.repo.join("snapshots");
    let name = common::all_files(&snaps)[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let new = bump_version(&snaps, &name);
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&new) && err.contains("newer cairn"), "{err}");

    // The config itself (not content-addressed).
    let mut cfg = fs::read(env.repo.join("config")).expect("config");
    cfg[8] = 7;
    fs::write(env.repo.join("config"), cfg).expect("write");
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("config") && stderr(&out).contains("version 7"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn corrupt_snapshot_file_is_named() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), "a").expect("write");
    env.ok(&["backup", src.to_str().expect("utf-8")]);
    let f = common::all_files(&env.repo.join("snapshots")).remove(0);
    let mut bytes = fs::read(&f).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(&f, bytes).expect("write");
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    let name = f.file_name().expect("name").to_string_lossy().into_owned();
    assert!(
        stderr(&out).contains(&name) && stderr(&out).contains("corrupt"),
        "{}",
        stderr(&out)
    );
}

/// /proc/self/mem is a regular file whose read at offset 0 fails with EIO, even
/// for root: a reliable unreadable source.
#[test]
fn unreadable_source_is_recorded_and_exits_3() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("ok.txt"), "fine").expect("write");
    let out = env.run(&[
        "backup",
        "--json",
        "/proc/self/mem",
        src.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = common::last_json(&stdout, "error");
    assert_eq!(err["path"], "/proc/self/mem");
    let snap: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat", "snapshot", "latest"])).expect("json");
    assert_eq!(snap["errors"][0]["path"], "/proc/self/mem", "{snap}");
    let listing = env.ok(&["ls", "-q", "latest"]);
    assert!(listing.lines().any(|l| l.ends_with("/ok.txt")), "{listing}");
    assert!(!listing.lines().any(|l| l == "/proc/self/mem"), "{listing}");
}

#[test]
fn missing_source_path_is_an_error_before_anything_is_written() {
    let env = Env::with_repo(&[]);
    let out = env.run(&[
        "backup",
        env.path("does-not-exist").to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does-not-exist"), "{}", stderr(&out));
    assert!(common::all_files(&env.repo.join("snapshots")).is_empty());
}

/// As restic does: a missing source is reported and recorded, the others are
/// backed up, and the exit code says the snapshot is partial.
#[test]
fn one_missing_source_path_is_recorded_and_the_rest_backed_up_with_exit_3() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("kept.txt"), "kept").expect("write");
    let gone = env.path("gone");
    let (src_s, gone_s) = (src.to_str().expect("utf-8"), gone.to_str().expect("utf-8"));
    let out = env.run(&["backup", "--json", gone_s, src_s]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = common::last_json(&stdout, "error");
    assert_eq!(err["path"], gone_s, "{stdout}");
    assert!(
        err["error"]
            .as_str()
            .expect("message")
            .contains("does not exist"),
        "{err}"
    );
    assert_eq!(common::last_json(&stdout, "summary")["errors"], 1);

    let snap: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat", "snapshot", "latest"])).expect("json");
    assert_eq!(snap["errors"][0]["path"], gone_s, "{snap}");
    let listing = env.ok(&["ls", "-q", "latest"]);
    assert!(
        listing.lines().any(|l| l == format!("{src_s}/kept.txt")),
        "{listing}"
    );
    assert!(!listing.lines().any(|l| l == gone_s), "{listing}");
    // The snapshot lists the missing path among its paths, so the same command
    // run again finds it as its parent and reads nothing unchanged.
    let paths = snap["paths"].as_array().expect("paths");
    assert!(paths.iter().any(|p| p == gone_s), "{snap}");
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    let first_id = list[0]["id"].as_str().expect("id").to_string();

    // Human output says so too, on stderr, and still exits 3.
    let out = env.run(&["backup", src_s, gone_s]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let again: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat", "snapshot", "latest"])).expect("json");
    assert_eq!(again["parent"], first_id.as_str(), "{again}");
    assert!(
        stderr(&out).contains(&format!("error: {gone_s}: does not exist")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn no_existing_source_at_all_is_an_error_naming_each() {
    let env = Env::with_repo(&[]);
    let (a, b) = (env.path("gone-a"), env.path("gone-b"));
    let before = common::all_files(&env.repo);
    let out = env.run(&[
        "backup",
        a.to_str().expect("utf-8"),
        b.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("gone-a") && err.contains("gone-b"), "{err}");
    assert!(common::all_files(&env.repo.join("snapshots")).is_empty());
    // Nothing at all: no pack, no index file, no lock left behind.
    assert_eq!(common::all_files(&env.repo), before);
}

#[test]
fn full_disk_mid_backup_keeps_repository_consistent_and_rerun_reuses_packs() {
    let env = Env::with_repo(&["--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut rng = common::rng(9);
    fs::write(src.join("small.txt"), "first snapshot").expect("write");
    let src_s = src.to_str().expect("utf-8");
    env.ok(&["backup", src_s]);
    for i in 0..12 {
        fs::write(
            src.join(format!("big{i}.bin")),
            common::random_bytes(&mut rng, 1 << 20),
        )
        .expect("write");
    }

    // Pack writes fail after five successes, like a disk that fills up mid-backup.
    let packs_left = AtomicUsize::new(5);
    let backend = Arc::new(common::HookedBackend::new(
        &env.repo,
        move |inner: &LocalBackend, t, name: &str, data: &[u8]| {
            if t == FileType::Pack {
                let left = packs_left.load(Ordering::SeqCst);
                if left == 0 {
                    return Err(cairn::Error::io(
                        inner.path(t, name),
                        std::io::Error::from_raw_os_error(libc::ENOSPC),
                    ));
                }
                packs_left.store(left - 1, Ordering::SeqCst);
            }
            inner.write(t, name, data)
        },
    ));
    let err = common::backup_through(backend, &src)
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("No space left"), "{err}");

    // Still one snapshot, and it restores.
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    assert_eq!(list.as_array().expect("array").len(), 1);
    let out = env.path("out");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        out.to_str().expect("utf-8"),
        "--verify",
    ]);
    // No lock left behind.
    assert!(common::all_files(&env.repo.join("locks")).is_empty());

    // The re-run finds the packs written before the failure through their index.
    let s = env.backup_json(&[src_s]);
    let new = s["bytes_new"].as_u64().expect("bytes_new");
    assert!(
        new <= 8 << 20,
        "re-run stored {new} new bytes; packs written before the failure were not reused"
    );
    let out2 = env.path("out2");
    env.ok(&[
        "restore",
        &format!("latest:{src_s}"),
        "--target",
        out2.to_str().expect("utf-8"),
        "--verify",
    ]);
    for f in common::all_files(&src) {
        let rel = f.strip_prefix(&src).expect("prefix");
        assert_eq!(
            fs::read(&f).expect("src"),
            fs::read(out2.join(rel)).expect("restored"),
            "{}",
            rel.display()
        );
    }
}

/// SIGKILL in the middle of a backup, after 1, 3 and 6 of its packs are
/// written (the backup is stepped with SIGSTOP until then, so each kill lands
/// mid-backup however fast the machine): no snapshot is written, the earlier
/// one restores, and the next backup reuses what the killed ones stored.
#[test]
fn backup_killed_at_any_moment_leaves_a_usable_repository() {
    let env = Env::with_repo(&["--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("base.txt"), "base").expect("write");
    let src_s = src.to_str().expect("utf-8");
    env.ok(&["backup", src_s]);
    let mut rng = common::rng(11);
    for i in 0..40 {
        fs::write(
            src.join(format!("f{i}.bin")),
            common::random_bytes(&mut rng, 512 << 10),
        )
        .expect("write");
    }
    for after in [1usize, 3, 6] {
        let before = common::pack_names(&env.repo).len();
        let mut child = env
            .cmd()
            .args(["backup", "-q", src_s])
            .spawn()
            .expect("spawn");
        common::stop_when(&mut child, &format!("{after} new packs"), || {
            common::pack_names(&env.repo).len() >= before + after
        });
        assert!(
            !common::all_files(&env.repo.join("locks")).is_empty(),
            "stopped mid-backup, its lock is there"
        );
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        assert_eq!(
            common::all_files(&env.repo.join("snapshots")).len(),
            1,
            "a backup killed after {after} packs wrote a snapshot"
        );
        let out = env.path(&format!("out-{after}"));
        env.ok(&[
            "restore",
            "latest",
            "--target",
            out.to_str().expect("utf-8"),
            "--verify",
        ]);
        // Locks of killed processes on this host are provably stale: not blocking.
    }
    // Each killed run adopted the packs of the one before; the last one's six
    // are adopted now, and nothing the killed runs stored is stored again.
    let s = env.backup_json(&[src_s]);
    assert!(
        s["packs_adopted"].as_u64() >= Some(6),
        "the packs of the killed backups were not reused: {s}"
    );
    assert!(
        s["bytes_new"].as_u64().expect("bytes_new") < 12 << 20,
        "the packs of the killed backups were stored again: {s}"
    );
    let out = env.path("final");
    env.ok(&[
        "restore",
        &format!("latest:{src_s}"),
        "--target",
        out.to_str().expect("utf-8"),
        "--verify",
    ]);
    for f in common::all_files(&src) {
        let rel = f.strip_prefix(&src).expect("prefix");
        assert_eq!(
            fs::read(&f).expect("src"),
            fs::read(out.join(rel)).expect("restored")
        );
    }
}

/// SIGINT stops the backup with exit code 130 and commits no snapshot. The
/// backup is stepped with SIGSTOP until it has written two packs, so the
/// signal lands mid-backup, never after it finished.
#[test]
fn interrupted_backup_exits_130_without_a_snapshot() {
    let env = Env::with_repo(&["--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut rng = common::rng(12);
    for i in 0..60 {
        fs::write(
            src.join(format!("f{i}.bin")),
            common::random_bytes(&mut rng, 1 << 20),
        )
        .expect("write");
    }
    let mut child = env
        .cmd()
        .args(["backup", "-q", src.to_str().expect("utf-8")])
        .spawn()
        .expect("spawn");
    common::stop_when(&mut child, "two packs", || {
        common::pack_names(&env.repo).len() >= 2
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        common::all_files(&env.repo.join("snapshots")).is_empty(),
        "an interrupted backup committed a snapshot"
    );
    assert!(
        common::all_files(&env.repo.join("locks")).is_empty(),
        "lock left behind"
    );
}

fn open_lib(env: &Env) -> Arc<Repository> {
    let backend = Arc::new(LocalBackend::new(&env.repo));
    Arc::new(Repository::open(backend, PASSWORD.as_bytes()).expect("open"))
}

#[test]
fn exclusive_lock_blocks_backup_with_exit_11() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), "a").expect("write");
    let repo = open_lib(&env);
    let guard = cairn::lock::acquire(&repo, true).expect("exclusive lock");
    let out = env.run(&["backup", src.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(stderr(&out).contains("exclusive lock"), "{}", stderr(&out));
    assert!(common::all_files(&env.repo.join("snapshots")).is_empty());
    drop(guard);
    env.ok(&["backup", src.to_str().expect("utf-8")]);
    assert!(common::all_files(&env.repo.join("locks")).is_empty());
}

#[test]
fn lock_of_a_dead_process_on_this_host_is_removed() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), "a").expect("write");
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let dead_pid = child.id();
    child.wait().expect("wait");
    let repo = open_lib(&env);
    // Same host, boot and PID namespace as this process: provably dead.
    let lock = cairn::lock::Lock {
        username: "someone".into(),
        pid: dead_pid,
        ..cairn::lock::Lock::for_this_process(true)
    };
    repo.save_sealed(
        cairn::format::FileKind::Lock,
        cairn::format::SealKind::Lock,
        FileType::Lock,
        &cairn::format::to_msgpack(&lock),
    )
    .expect("write lock");
    env.ok(&["backup", src.to_str().expect("utf-8")]);
    assert!(common::all_files(&env.repo.join("locks")).is_empty());
}

#[test]
fn two_backups_at_once_both_succeed() {
    let env = Env::with_repo(&["--pack-size", "1"]);
    let mut rng = common::rng(21);
    let mut children = Vec::new();
    for name in ["a", "b"] {
        let src = env.path(name);
        fs::create_dir_all(&src).expect("mkdir");
        for i in 0..8 {
            fs::write(
                src.join(format!("{i}.bin")),
                common::random_bytes(&mut rng, 512 << 10),
            )
            .expect("write");
        }
        children.push(
            env.cmd()
                .args(["backup", "-q", src.to_str().expect("utf-8")])
                .spawn()
                .expect("spawn"),
        );
    }
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    assert_eq!(list.as_array().expect("array").len(), 2);
    for (i, snap) in list.as_array().expect("array").iter().enumerate() {
        let path = snap["paths"][0].as_str().expect("path");
        let id = snap["id"].as_str().expect("id");
        let out = env.path(&format!("out{i}"));
        env.ok(&[
            "restore",
            &format!("{id}:{path}"),
            "--target",
            out.to_str().expect("utf-8"),
            "--verify",
        ]);
        for f in common::all_files(std::path::Path::new(path)) {
            let rel = f.strip_prefix(path).expect("prefix");
            assert_eq!(
                fs::read(&f).expect("src"),
                fs::read(out.join(rel)).expect("restored")
            );
        }
    }
}

#[test]
fn password_from_command_env_or_nowhere() {
    let env = Env::with_repo(&[]);
    let bare = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CAIRN_") {
                c.env_remove(k);
            }
        }
        c.arg("-r")
            .arg(&env.repo)
            .stdin(std::process::Stdio::null());
        c
    };
    let cmd = format!("printf '%s\\n' '{PASSWORD}'");
    let out = bare()
        .args(["--password-command", &cmd, "snapshots"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = bare()
        .env("CAIRN_PASSWORD_COMMAND", &cmd)
        .arg("snapshots")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = bare()
        .env("CAIRN_PASSWORD", PASSWORD)
        .arg("snapshots")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = bare()
        .args(["--password-command", "exit 3", "snapshots"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("password command"),
        "{}",
        stderr(&out)
    );
    // No source and no terminal: a clear error, not a hang.
    let out = bare()
        .arg("snapshots")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no password given"),
        "{}",
        stderr(&out)
    );
}

/// A snapshot that can't be read may have been the parent: the backup then
/// reads again every file it had unchanged. It said nothing; it must say which
/// snapshot it could not read.
#[test]
fn backup_names_an_unreadable_snapshot_it_could_not_consider_as_parent() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), "a").expect("write");
    let src_s = src.to_str().expect("utf-8");
    let first = env.backup_json(&[src_s])["snapshot_id"]
        .as_str()
        .expect("id")
        .to_string();
    let f = env.repo.join("snapshots").join(&first);
    let mut bytes = fs::read(&f).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&f, bytes).expect("write");
    let out = env.run(&["backup", "--json", src_s]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let warning = common::last_json(&common::stdout(&out), "warning");
    assert!(
        warning.to_string().contains(&first[..8])
            && warning.to_string().contains("not considered as the parent"),
        "{warning}"
    );
}
