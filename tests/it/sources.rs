//! How `backup` reads the paths and streams it is given.

use std::fs;
use std::os::unix::fs::symlink;

use crate::common::{self, Env, stderr};

fn snapshot_paths(env: &Env) -> Vec<String> {
    let snap: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat", "snapshot", "latest"])).expect("json");
    snap["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|p| p.as_str().expect("path").to_string())
        .collect()
}

/// `a/link/../b`, with `link` a symlink to `x/y`, names `x/b` to the kernel (it
/// follows the link, then goes up). Cutting the text would back up `a/b`, another
/// directory, which here exists with other content.
#[test]
fn dot_dot_after_a_symlink_is_resolved_as_the_kernel_does() {
    let env = Env::with_repo(&[]);
    let root = env.path("src");
    fs::create_dir_all(root.join("x/y")).expect("mkdir");
    fs::create_dir_all(root.join("x/b")).expect("mkdir");
    fs::write(root.join("x/b/wanted.txt"), "the kernel's b").expect("write");
    fs::create_dir_all(root.join("a/b")).expect("mkdir");
    fs::write(root.join("a/b/decoy.txt"), "the text's b").expect("write");
    symlink(root.join("x/y"), root.join("a/link")).expect("symlink");
    let given = root.join("a/link/../b");
    assert_eq!(
        fs::read(given.join("wanted.txt")).expect("the kernel's reading"),
        b"the kernel's b"
    );

    env.ok(&["backup", "-q", given.to_str().expect("utf-8")]);
    let real_b = fs::canonicalize(root.join("x/b")).expect("canonicalize");
    let real_b = real_b.to_str().expect("utf-8");
    assert_eq!(snapshot_paths(&env), vec![real_b.to_string()]);
    let listing = env.ok(&["ls", "-q", "latest"]);
    assert!(
        listing.lines().any(|l| l == format!("{real_b}/wanted.txt")),
        "{listing}"
    );
    assert!(!listing.contains("decoy"), "{listing}");

    // Without a symlink before it, `..` means what the text says.
    let plain = root.join("a/../x/b");
    env.ok(&["backup", "-q", plain.to_str().expect("utf-8")]);
    assert_eq!(
        snapshot_paths(&env),
        vec![root.join("x/b").to_str().expect("utf-8").to_string()]
    );

    // `..` after a file is an error to the kernel (ENOTDIR): reported and
    // recorded for that path, the other paths backed up.
    let through_file = root.join("x/b/wanted.txt/../wanted.txt");
    let out = env.run(&[
        "backup",
        "--json",
        through_file.to_str().expect("utf-8"),
        root.join("a").to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = common::last_json(&common::stdout(&out), "error");
    assert!(
        err["error"]
            .as_str()
            .expect("message")
            .contains("Not a directory"),
        "{err}"
    );
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// A seccomp filter that kills the process on any `umask(2)` call.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn umask_forbidden() -> [libc::sock_filter; 6] {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    [
        // seccomp_data: nr at offset 0, arch at offset 4.
        stmt(load, 4),
        jeq(AUDIT_ARCH, 0, 3),
        stmt(load, 0),
        jeq(libc::SYS_umask as u32, 0, 1),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ]
}

/// The umask is process-wide: setting it to read it (as `umask(2)` does) would
/// give files that other threads create at that moment the wrong mode. A stdin
/// backup runs here under a filter that kills cairn if it calls `umask(2)` at
/// all, and must still record the mode a shell's `> file` would have given
/// (0666 less the umask, 027 here).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn stdin_backup_reads_the_umask_without_setting_it() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let env = Env::with_repo(&[]);
    let filter = umask_forbidden();
    let mut cmd = env.cmd();
    cmd.args(["backup", "-q", "--stdin", "--stdin-filename", "dump.sql"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: umask, prctl and seccomp are async-signal-safe system calls that
    // touch only this child; `filter` is built before the fork and only read.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(0o027);
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn cairn under the filter");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"CREATE TABLE t (x int);\n")
        .expect("feed");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.signal(),
        None,
        "cairn was killed (SIGSYS is {}): it called umask(2)",
        libc::SIGSYS
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let target = env.path("out");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    let mode = fs::metadata(target.join("dump.sql"))
        .expect("restored")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640, "mode {mode:o}");
    // Owned by the user who ran cairn, as recorded, at the snapshot's root.
    let node = env
        .ok(&["ls", "--json", "latest"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|n| n["name"] == "dump.sql")
        .expect("dump.sql listed");
    assert_eq!(node["path"], "/dump.sql", "{node}");
    assert_eq!(
        node["uid"],
        u64::from(nix::unistd::getuid().as_raw()),
        "{node}"
    );
    assert_eq!(
        node["gid"],
        u64::from(nix::unistd::getgid().as_raw()),
        "{node}"
    );
}

/// A path given to `backup` that is itself a symlink is backed up as the
/// symlink (recorded under the path given), and a symlink earlier in a path is
/// kept as written: the snapshot records the path as given, not its target.
#[test]
fn a_symlink_given_or_inside_a_path_is_kept_as_written() {
    let env = Env::with_repo(&[]);
    let root = env.path("src");
    fs::create_dir_all(root.join("real")).expect("mkdir");
    fs::write(root.join("real/file.txt"), "contents\n").expect("write");
    fs::create_dir_all(root.join("real/sub")).expect("mkdir");
    fs::write(root.join("real/sub/deep.txt"), "deep\n").expect("write");
    symlink(root.join("real"), root.join("link")).expect("symlink");
    let link = root.join("link");
    let link_s = link.to_str().expect("utf-8");

    env.ok(&["backup", "-q", link_s]);
    assert_eq!(snapshot_paths(&env), vec![link_s.to_string()]);
    let nodes: Vec<serde_json::Value> = env
        .ok(&["ls", "--json", "latest"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let node = nodes
        .iter()
        .find(|n| n["path"] == link_s)
        .expect("the link is listed");
    assert_eq!(node["kind"], "symlink", "{node}");
    assert!(
        !nodes.iter().any(|n| n["name"] == "file.txt"),
        "the link was followed: {nodes:?}"
    );

    let through = link.join("sub");
    let through_s = through.to_str().expect("utf-8");
    env.ok(&["backup", "-q", through_s]);
    assert_eq!(snapshot_paths(&env), vec![through_s.to_string()]);
    let listing = env.ok(&["ls", "-q", "latest"]);
    assert!(
        listing
            .lines()
            .any(|l| l == format!("{through_s}/deep.txt")),
        "{listing}"
    );
    assert!(!listing.contains("/real"), "{listing}");
}

/// A backup of a directory that holds the repository leaves the repository
/// out, saying so, with excludes given or not (the walk checks an entry's
/// path for either only where one could apply).
#[test]
fn a_directory_holding_the_repository_is_backed_up_without_it() {
    let env = Env::with_repo(&[]);
    let top = env.path("");
    let top = top
        .to_str()
        .expect("utf-8")
        .trim_end_matches('/')
        .to_string();
    fs::write(env.path("notes.txt"), b"kept\n").expect("write");
    let cache = format!("{top}/cache");
    for extra in [vec!["--exclude", cache.as_str()], vec![]] {
        let mut args = vec![top.as_str()];
        args.extend(extra.iter().copied());
        let text = env.ok(&[&["backup", "--json"], args.as_slice()].concat());
        let warning = common::last_json(&text, "warning");
        assert_eq!(
            warning["error"], "skipped: this is the repository being written to",
            "{extra:?}: {text}"
        );
        assert_eq!(warning["path"], format!("{top}/repo"), "{extra:?}: {text}");
        let summary = common::last_json(&text, "summary");
        assert_eq!(summary["errors"], 0, "{extra:?}: {summary}");
        let listed = env.ok(&["ls", "latest", &top]);
        let names: Vec<&str> = listed
            .lines()
            .map(|l| l.trim_start_matches(&format!("{top}/")))
            .collect();
        assert!(names.contains(&"notes.txt"), "{extra:?}: {listed}");
        assert!(
            !names.iter().any(|n| *n == "repo" || n.starts_with("repo/")),
            "{extra:?}: {listed}"
        );
        assert_eq!(
            names.contains(&"cache"),
            extra.is_empty(),
            "{extra:?}: {listed}"
        );
    }
}
