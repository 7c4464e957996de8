//! Sources that change or can't be read while a backup runs (issue 13 item 5).
//! The backup is stepped with SIGSTOP until it has a file open and has read
//! part of it (its offset, in /proc/PID/fdinfo, is past 0 and short of the
//! end), the change is made while it is stopped there, and then it goes on:
//! so the change happens during the read, however fast the machine.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::{self, Env, stderr};

/// How far `pid` has read `file`, if it has it open.
fn read_offset(pid: u32, file: &Path) -> Option<u64> {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    for fd in fds.flatten() {
        if fs::read_link(fd.path()).ok().as_deref() == Some(file) {
            let info = fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .ok()?;
            return info
                .lines()
                .find_map(|l| l.strip_prefix("pos:"))
                .and_then(|v| v.trim().parse().ok());
        }
    }
    None
}

const BIG: usize = 48 << 20;

/// A source with `big.bin` (BIG random bytes) and a few small files.
fn source(env: &Env) -> PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("later")).expect("mkdir");
    common::random_files(&src, 151, 1, BIG, |_| "big.bin".into());
    for i in 0..3 {
        fs::write(src.join(format!("later/s{i}.txt")), format!("small {i}")).expect("write");
    }
    src
}

/// Runs `backup --json SRC` and calls `change` once the backup is stopped part
/// way through reading `big.bin`; returns the exit code and the snapshot.
fn backup_changing(
    env: &Env,
    src: &Path,
    change: impl FnOnce(),
) -> (Option<i32>, serde_json::Value) {
    let big = src.join("big.bin");
    let mut child = env
        .cmd()
        .args(["backup", "--json", src.to_str().expect("utf-8")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    common::stop_when(&mut child, "reading big.bin", || {
        read_offset(pid, &big).is_some_and(|pos| pos > 0 && pos < BIG as u64)
    });
    change();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .expect("SIGCONT");
    let out = child.wait_with_output().expect("wait");
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{:?}: {}",
        out.status,
        stderr(&out)
    );
    let snap: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat", "snapshot", "latest"])).expect("json");
    (out.status.code(), snap)
}

fn messages(snap: &serde_json::Value, list: &str, path: &Path) -> Vec<String> {
    // An empty list is left out of the snapshot.
    snap[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["path"] == path.to_str().expect("utf-8"))
        .map(|p| p["error"].as_str().expect("message").to_string())
        .collect()
}

/// A file that grows, shrinks, is replaced or is deleted while it is read: the
/// backup stores what it read, records a warning naming the file, and exits 0;
/// the rest of the source is backed up.
#[test]
fn files_changed_while_being_read_are_warned_about_and_exit_0() {
    type Change = fn(&Path);
    let cases: [(&str, Change); 4] = [
        ("grows", |big| {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().append(true).open(big).expect("open");
            f.write_all(&[7u8; 1 << 20]).expect("append");
        }),
        ("shrinks", |big| {
            fs::OpenOptions::new()
                .write(true)
                .open(big)
                .and_then(|f| f.set_len(1 << 20))
                .expect("truncate");
        }),
        ("is replaced", |big| {
            let new = big.with_file_name("new.tmp");
            fs::write(&new, b"another file").expect("write");
            fs::rename(&new, big).expect("rename over");
        }),
        ("is deleted", |big| fs::remove_file(big).expect("rm")),
    ];
    for (what, change) in cases {
        let env = Env::with_repo(&[]);
        let src = source(&env);
        let big = src.join("big.bin");
        let (code, snap) = backup_changing(&env, &src, || change(&big));
        assert_eq!(code, Some(0), "{what}: {snap}");
        let warnings = messages(&snap, "warnings", &big);
        // Content that changed may be mixed; a file unlinked while open was
        // read whole, as it was.
        let says = if what.starts_with("is ") {
            "the whole file as it was before"
        } else {
            "may mix old and new content"
        };
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("while being read") && w.contains(says)),
            "{what}: no warning for big.bin saying {says:?}: {snap}"
        );
        assert!(messages(&snap, "errors", &big).is_empty(), "{what}: {snap}");
        let listing = env.ok(&["ls", "-q", "latest"]);
        for i in 0..3 {
            let p = src.join(format!("later/s{i}.txt"));
            assert!(
                listing.lines().any(|l| l == p.to_str().expect("utf-8")),
                "{what}: {listing}"
            );
        }
    }
}

/// A directory removed while the backup reads another file: recorded as an
/// error naming it, exit 3, and the rest backed up.
#[test]
fn a_directory_removed_mid_walk_is_an_error_and_exit_3() {
    let env = Env::with_repo(&[]);
    let src = source(&env);
    let later = src.join("later");
    let (code, snap) = backup_changing(&env, &src, || fs::remove_dir_all(&later).expect("rm"));
    assert_eq!(code, Some(3), "{snap}");
    let errors: Vec<String> = snap["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter(|e| {
            e["path"]
                .as_str()
                .is_some_and(|p| Path::new(p).starts_with(&later))
        })
        .map(|e| e.to_string())
        .collect();
    assert!(!errors.is_empty(), "{snap}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("vanished") || e.contains("No such file")),
        "{errors:?}"
    );
    let listing = env.ok(&["ls", "-q", "latest"]);
    assert!(
        listing
            .lines()
            .any(|l| l == src.join("big.bin").to_str().expect("utf-8")),
        "{listing}"
    );
}

/// As a user who may not read them (root reads everything): a file and a
/// directory without permission are errors naming them, exit 3, the rest is
/// backed up. Needs root and setpriv to become `nobody`; skips without.
#[test]
fn unreadable_files_and_directories_as_a_user_are_errors_and_exit_3() {
    if !common::is_root() || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipping: needs root and setpriv to back up as another user");
        return;
    }
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("closed")).expect("mkdir");
    fs::write(src.join("closed/inside.txt"), "inside").expect("write");
    fs::write(src.join("secret.txt"), "secret").expect("write");
    fs::write(src.join("open.txt"), "open").expect("write");
    // Everything belongs to nobody but the two that must stay closed to it.
    for p in walk(env.dir.path()) {
        nix::unistd::chown(&p, Some(65534.into()), Some(65534.into())).expect("chown");
    }
    for p in [src.join("secret.txt"), src.join("closed")] {
        nix::unistd::chown(&p, Some(0.into()), Some(0.into())).expect("chown");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let out = env
        .bare_cmd_through(&[
            "/usr/bin/setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args([
            "--password-file",
            env.password_file.to_str().expect("utf-8"),
        ])
        .args(["backup", "--json", src.to_str().expect("utf-8")])
        .output()
        .expect("run as nobody");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let snap: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat", "snapshot", "latest"])).expect("json");
    for p in [src.join("secret.txt"), src.join("closed")] {
        let errs = messages(&snap, "errors", &p);
        assert!(
            errs.iter().any(|e| e.contains("Permission denied")),
            "{}: {snap}",
            p.display()
        );
    }
    let listing = env.ok(&["ls", "-q", "latest"]);
    assert!(
        listing
            .lines()
            .any(|l| l == src.join("open.txt").to_str().expect("utf-8")),
        "{listing}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if fs::symlink_metadata(&out[i]).is_ok_and(|m| m.is_dir()) {
            for e in fs::read_dir(&out[i]).expect("read_dir") {
                out.push(e.expect("entry").path());
            }
        }
        i += 1;
    }
    out
}

/// A 255-byte name (the most Linux allows) backs up and restores; a path
/// longer than PATH_MAX (4096 bytes), made by creating each directory
/// relative to the one before, is recorded as an error naming where it
/// stops, with exit 3, and what is above it is backed up.
#[test]
fn long_names_round_trip_and_over_long_paths_are_errors() {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::{Mode, mkdirat};
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let long = "n".repeat(255);
    fs::write(src.join(&long), "a long name").expect("write");
    fs::write(src.join("short.txt"), "short").expect("write");
    let s = src.to_str().expect("utf-8");
    let out = env.run(&["backup", "--json", s]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    common::restore_matches(&env, "latest", &src);

    // 24 levels of 200-byte names: about 4.8 kB below src.
    let level = "d".repeat(200);
    let mut fd = open(&src, OFlag::O_DIRECTORY | OFlag::O_RDONLY, Mode::empty()).expect("open");
    for _ in 0..24 {
        mkdirat(Some(fd), level.as_str(), Mode::from_bits_truncate(0o755)).expect("mkdirat");
        let next = nix::fcntl::openat(
            Some(fd),
            level.as_str(),
            OFlag::O_DIRECTORY | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .expect("openat");
        nix::unistd::close(fd).expect("close");
        fd = next;
    }
    let leaf = nix::fcntl::openat(
        Some(fd),
        "leaf.txt",
        OFlag::O_CREAT | OFlag::O_WRONLY,
        Mode::from_bits_truncate(0o644),
    )
    .expect("create leaf");
    {
        use std::io::Write;
        use std::os::fd::FromRawFd;
        // SAFETY: `leaf` was just opened here and is owned by nothing else.
        let mut f = unsafe { fs::File::from_raw_fd(leaf) };
        f.write_all(b"deep").expect("write");
    }
    nix::unistd::close(fd).expect("close");

    let out = env.run(&["backup", "--json", s]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let snap: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat", "snapshot", "latest"])).expect("json");
    let errors = snap["errors"].as_array().expect("errors");
    assert!(
        errors.iter().any(|e| {
            e["error"]
                .as_str()
                .is_some_and(|m| m.contains("File name too long"))
                && e["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(s) && p.len() > 4000)
        }),
        "{snap}"
    );
    let listing = env.ok(&["ls", "-q", "latest"]);
    assert!(
        listing
            .lines()
            .any(|l| l == src.join(&long).to_str().expect("utf-8")),
        "{listing}"
    );
}
