//! Restore as users meet it: into a target that already holds files (overwrite
//! modes, `--delete`, `--dry-run`), with filters, with verification, with damage
//! in the repository, and at a million files within a bounded memory budget.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::stat::UtimensatFlags;
use nix::sys::time::TimeSpec;

use cairn::archiver::saver::Saver;
use cairn::backend::LocalBackend;
use cairn::repository::Repository;
use cairn::snapshot::{Snapshot, Summary};
use cairn::tree::{Node, NodeKind, Timestamp, Tree};

use crate::common::{self, Env, PASSWORD};

fn open_lib(env: &Env) -> Arc<Repository> {
    let backend = Arc::new(LocalBackend::new(&env.repo));
    Arc::new(Repository::open(backend, PASSWORD.as_bytes()).expect("open"))
}

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: if kind == NodeKind::Dir { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        user: None,
        group: None,
        mtime: Timestamp(1_600_000_000, 0),
        atime: Timestamp(1_600_000_000, 0),
        ctime: Timestamp(1_600_000_000, 0),
        size: 0,
        inode: 0,
        device: 0,
        links: 1,
        rdev: 0,
        link_target: None,
        content: Vec::new(),
        subtree: None,
        xattrs: Vec::new(),
    }
}

/// Writes a snapshot of `dirs` directories of `per_dir` files each, as a backup
/// of such a tree would store it, without the tree existing on disk: one file in
/// eight holds a few bytes (one of 64 contents), the others are empty.
fn store_generated_snapshot(repo: &Arc<Repository>, dirs: usize, per_dir: usize) {
    let index = Arc::new(repo.load_index(&mut |_, _| {}).expect("index"));
    let mut saver = Saver::new(Arc::clone(repo), index);
    let contents: Vec<(Vec<u8>, cairn::id::BlobId)> = (0..64)
        .map(|i| {
            let data = format!("tiny file contents {i}\n").into_bytes();
            let id = repo.key().blob_id(&data);
            let payload = cairn::format::encode_payload(&data, 0);
            saver
                .add(cairn::pack::BlobKind::Data, id, payload, data.len())
                .expect("add blob");
            (data, id)
        })
        .collect();
    let mut root = Tree::default();
    for d in 0..dirs {
        let mut tree = Tree::default();
        for f in 0..per_dir {
            let mut file = node(format!("f{f:07}").as_bytes(), NodeKind::File);
            if f % 8 == 0 {
                let (data, id) = &contents[(d + f) % contents.len()];
                file.size = data.len() as u64;
                file.content = vec![*id];
            }
            tree.nodes.push(file);
        }
        let mut dir = node(format!("d{d:05}").as_bytes(), NodeKind::Dir);
        dir.subtree = Some(saver.save_tree(&mut tree).expect("save tree"));
        root.nodes.push(dir);
    }
    let root = saver.save_tree(&mut root).expect("save root");
    saver.finish().expect("finish");
    let snap = Snapshot {
        time: cairn::snapshot::now_rfc3339(),
        hostname: "generated".into(),
        username: "generated".into(),
        uid: 0,
        gid: 0,
        paths: vec!["/".into()],
        tags: Vec::new(),
        tree: root,
        parent: None,
        original: None,
        replaces: None,
        excludes: Vec::new(),
        program_version: "test".into(),
        summary: Summary::default(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    repo.save_snapshot(&snap).expect("save snapshot");
}

/// Runs `cairn ARGS` to completion and returns its exit code and peak resident
/// set size in bytes: the highest VmHWM that /proc shows for the `cairn` process
/// image while it runs (polled; VmHWM only grows, so a reading at any time after
/// the peak has it). Not `ru_maxrss` from wait4: a child spawned with vfork
/// inherits at exec the high-water mark of the test process, which other tests
/// running in it can push above any bound.
fn run_measured(env: &Env, args: &[&str]) -> (Option<i32>, u64) {
    let log = |name: &str| fs::File::create(env.path(name)).expect("log file");
    let mut child = env
        .cmd()
        .args(args)
        .stdout(Stdio::from(log("stdout.log")))
        .stderr(Stdio::from(log("stderr.log")))
        .spawn()
        .expect("spawn cairn");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        let status = fs::read_to_string(&status_file).unwrap_or_default();
        // Before exec the child is still a copy of the test process.
        if status
            .lines()
            .any(|l| l.split_whitespace().eq(["Name:", "cairn"]))
        {
            let hwm = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            peak = peak.max(hwm.unwrap_or(0) * 1024);
        }
        if let Some(exit) = child.try_wait().expect("wait for cairn") {
            assert!(peak > 0, "cairn's memory was never read from {status_file}");
            return (exit.code(), peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Peak memory of a restore must not grow with the number of files: a million
/// (empty and tiny) files restore within 32 MiB on 2 cores. Set CAIRN_TEST_RESTORE_FILES
/// to measure other sizes (tools/bench/restore_rss.sh does).
#[test]
fn a_million_files_restore_in_bounded_memory() {
    let files: usize = std::env::var("CAIRN_TEST_RESTORE_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let per_dir = 1000.min(files);
    let env = Env::with_repo(&[]);
    let started = std::time::Instant::now();
    store_generated_snapshot(&open_lib(&env), files / per_dir, per_dir);
    eprintln!(
        "snapshot of {files} files stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Into memory (tmpfs) where there is one: creating a million files on some
    // disks costs minutes of file system time that says nothing about cairn.
    let shm = Path::new("/dev/shm");
    let scratch = shm
        .is_dir()
        .then(|| {
            tempfile::Builder::new()
                .prefix("cairn-restore-")
                .tempdir_in(shm)
                .ok()
        })
        .flatten();
    let target = match &scratch {
        Some(d) => d.path().join("target"),
        None => env.path("target"),
    };
    let started = std::time::Instant::now();
    let (code, rss) = run_measured(
        &env,
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf-8"),
        ],
    );
    let took = started.elapsed();
    let stderr = fs::read_to_string(env.path("stderr.log")).unwrap_or_default();
    assert_eq!(code, Some(0), "restore failed: {stderr}");
    eprintln!(
        "restore of {files} files: peak RSS {:.1} MiB, {:.1} s",
        rss as f64 / (1 << 20) as f64,
        took.as_secs_f64()
    );
    let stdout = fs::read_to_string(env.path("stdout.log")).unwrap_or_default();
    assert!(stdout.contains(&format!(": {files} files,")), "{stdout}");
    // Spot check: the first file of the last directory has its contents.
    let d = files / per_dir - 1;
    let last = target.join(format!("d{d:05}/f{:07}", 0));
    let want = format!("tiny file contents {}\n", d % 64);
    assert_eq!(fs::read_to_string(&last).expect("restored"), want);
    // The README says about 15 MiB on 2 cores; memory grows with the cores
    // (each worker reads a few MiB ahead), so the bound does too.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let bound = (24 + 4 * cores as u64) << 20;
    assert!(
        rss < bound,
        "restoring {files} files took {} MiB of peak RSS, over {} MiB",
        rss >> 20,
        bound >> 20
    );
    remove_in_parallel(&target);
}

/// A scratch directory in memory (tmpfs) where there is one: creating a
/// million files on some disks costs minutes of file system time that says
/// nothing about cairn.
fn memory_scratch(prefix: &str) -> Option<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    shm.is_dir()
        .then(|| tempfile::Builder::new().prefix(prefix).tempdir_in(shm).ok())
        .flatten()
}

/// `dirs` directories of `per_dir` empty files under `root`, created by
/// several threads.
fn empty_files(root: &Path, dirs: usize, per_dir: usize) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let d = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if d >= dirs {
                        return;
                    }
                    let dir = root.join(format!("d{d:05}"));
                    fs::create_dir_all(&dir).expect("mkdir");
                    for f in 0..per_dir {
                        fs::File::create(dir.join(format!("f{f:05}"))).expect("create");
                    }
                }
            });
        }
    });
}

/// Peak memory of a backup must not grow with the number of files: a million
/// empty files take at most a few MiB more than a hundred thousand, and stay
/// within a fixed bound.
#[test]
fn a_million_empty_files_back_up_in_flat_memory() {
    let env = Env::with_repo(&[]);
    let scratch = memory_scratch("cairn-backup-");
    let base = scratch
        .as_ref()
        .map_or_else(|| env.path("sources"), |d| d.path().to_path_buf());
    let mut peaks = Vec::new();
    for (name, dirs) in [("small", 100), ("large", 1000)] {
        let src = base.join(name);
        empty_files(&src, dirs, 1000);
        let started = std::time::Instant::now();
        let (code, rss) = run_measured(&env, &["backup", "-q", src.to_str().expect("utf-8")]);
        let stderr = fs::read_to_string(env.path("stderr.log")).unwrap_or_default();
        assert_eq!(code, Some(0), "backup of {name} failed: {stderr}");
        eprintln!(
            "backup of {} files: peak RSS {:.1} MiB, {:.1} s",
            dirs * 1000,
            rss as f64 / (1 << 20) as f64,
            started.elapsed().as_secs_f64()
        );
        peaks.push(rss);
        remove_in_parallel(&src);
    }
    let listing = env.ok(&["ls", "-q", "latest"]);
    let under = format!("{}/", base.join("large").display());
    assert_eq!(
        listing.lines().filter(|l| l.starts_with(&under)).count(),
        1000 + 1_000_000,
        "every directory and file listed"
    );
    let (small, large) = (peaks[0], peaks[1]);
    assert!(
        large < small + (16 << 20),
        "a million files took {} MiB of peak RSS, 100,000 took {} MiB: memory grows with files",
        large >> 20,
        small >> 20
    );
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let bound = (32 + 8 * cores as u64) << 20;
    assert!(
        large < bound,
        "a million files took {} MiB of peak RSS, over {} MiB",
        large >> 20,
        bound >> 20
    );
}

/// Removes a directory of many directories faster than one thread would.
fn remove_in_parallel(dir: &Path) {
    let subdirs: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while let Some(d) =
                    subdirs.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    fs::remove_dir_all(d).expect("remove");
                }
            });
        }
    });
}

/// The snapshot's files' mtime, set on the source before the backup.
const T0: i64 = 1_600_000_000;

fn set_mtime(p: &Path, secs: i64) {
    let t = TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(None, p, &t, &t, UtimensatFlags::NoFollowSymlink)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

fn mtime_of(p: &Path) -> i64 {
    fs::symlink_metadata(p).expect("stat").mtime()
}

/// A repository with one snapshot of a small tree whose entries all have mtime
/// T0; returns it and the snapshot spec.
fn backed_up_tree() -> (Env, String) {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("dir")).expect("mkdir");
    for (rel, data) in [
        ("same.txt", "unchanged\n"),
        ("resized.txt", "short\n"),
        ("same_size.txt", "aaaa\n"),
        ("touched.txt", "touched contents\n"),
        ("newer.txt", "the snapshot's newer.txt\n"),
        ("older.txt", "the snapshot's older.txt\n"),
        ("dir/inner.txt", "inner\n"),
    ] {
        fs::write(src.join(rel), data).expect("write");
        set_mtime(&src.join(rel), T0);
    }
    set_mtime(&src.join("dir"), T0);
    let s = src.to_str().expect("utf-8").to_string();
    env.ok(&["backup", &s]);
    (env, format!("latest:{s}"))
}

/// Restores the snapshot into a new target `name`, then changes it the ways a
/// user's copy drifts from a snapshot.
fn drifted_target(env: &Env, snapshot: &str, name: &str) -> PathBuf {
    let t = env.path(name);
    env.ok(&["restore", snapshot, "--target", t.to_str().expect("utf-8")]);
    fs::write(t.join("resized.txt"), "a longer local edit\n").expect("write");
    // Same size and mtime, other contents: what only --verify notices.
    fs::write(t.join("same_size.txt"), "bbbb\n").expect("write");
    set_mtime(&t.join("same_size.txt"), T0);
    set_mtime(&t.join("touched.txt"), T0 + 500);
    fs::write(t.join("newer.txt"), "a local edit, later\n").expect("write");
    set_mtime(&t.join("newer.txt"), T0 + 10_000);
    fs::write(t.join("older.txt"), "a local edit, earlier\n").expect("write");
    set_mtime(&t.join("older.txt"), T0 - 10_000);
    fs::write(t.join("extra.txt"), "not in the snapshot\n").expect("write");
    fs::create_dir_all(t.join("dir/extra")).expect("mkdir");
    fs::write(t.join("dir/extra/a"), "a\n").expect("write");
    fs::write(t.join("dir/extra/b"), "b\n").expect("write");
    t
}

fn restore_json(env: &Env, snapshot: &str, target: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json", "restore", snapshot, "--target"];
    args.push(target.to_str().expect("utf-8"));
    args.extend_from_slice(extra);
    common::last_json(&env.ok(&args), "summary")
}

fn text(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"))
}

fn counts(v: &serde_json::Value) -> [u64; 5] {
    ["files", "dirs", "unchanged", "kept", "deleted"].map(|k| v[k].as_u64().expect(k))
}

#[test]
fn overwrite_modes_on_a_target_that_has_drifted() {
    let (env, snap) = backed_up_tree();
    let snapshot_text = |name: &str| text(&env.path("src").join(name));

    // if-changed (the default): what differs in size or contents is rewritten; a
    // file whose only change is its mtime is kept and gets the snapshot's; a
    // file of the same size and mtime is taken as unchanged, unread.
    let t = drifted_target(&env, &snap, "if-changed");
    let same_inode = fs::metadata(t.join("same.txt")).expect("stat").ino();
    let touched_inode = fs::metadata(t.join("touched.txt")).expect("stat").ino();
    let v = restore_json(&env, &snap, &t, &[]);
    assert_eq!(counts(&v), [3, 1, 4, 0, 0], "{v}");
    for f in ["resized.txt", "newer.txt", "older.txt"] {
        assert_eq!(text(&t.join(f)), snapshot_text(f), "{f}");
    }
    assert_eq!(text(&t.join("same_size.txt")), "bbbb\n");
    assert_eq!(
        fs::metadata(t.join("same.txt")).expect("stat").ino(),
        same_inode
    );
    assert_eq!(
        fs::metadata(t.join("touched.txt")).expect("stat").ino(),
        touched_inode
    );
    assert_eq!(mtime_of(&t.join("touched.txt")), T0);
    assert_eq!(text(&t.join("extra.txt")), "not in the snapshot\n");
    assert!(t.join("dir/extra/a").exists());

    // if-changed with --verify: contents are compared even when size and mtime
    // match, and every file in the target is verified.
    let t = drifted_target(&env, &snap, "if-changed-verify");
    let v = restore_json(&env, &snap, &t, &["--verify"]);
    assert_eq!(counts(&v), [4, 1, 3, 0, 0], "{v}");
    assert_eq!(v["files_verified"], 7, "{v}");
    assert_eq!(text(&t.join("same_size.txt")), "aaaa\n");

    // always: every file is rewritten.
    let t = drifted_target(&env, &snap, "always");
    let v = restore_json(&env, &snap, &t, &["--overwrite", "always"]);
    assert_eq!(counts(&v), [7, 1, 0, 0, 0], "{v}");
    assert_ne!(
        fs::metadata(t.join("same.txt")).expect("stat").ino(),
        same_inode
    );
    for f in ["same_size.txt", "resized.txt", "newer.txt", "touched.txt"] {
        assert_eq!(text(&t.join(f)), snapshot_text(f), "{f}");
    }

    // if-newer: only what is older in the target than in the snapshot. The
    // directory, changed locally after the snapshot, is kept as it is too.
    let t = drifted_target(&env, &snap, "if-newer");
    let v = restore_json(&env, &snap, &t, &["--overwrite", "if-newer"]);
    assert_eq!(counts(&v), [1, 0, 0, 7, 0], "{v}");
    assert_eq!(text(&t.join("older.txt")), snapshot_text("older.txt"));
    assert_eq!(text(&t.join("newer.txt")), "a local edit, later\n");
    assert_eq!(text(&t.join("resized.txt")), "a longer local edit\n");

    // never: nothing that exists is touched; what is missing is restored.
    let t = drifted_target(&env, &snap, "never");
    fs::remove_file(t.join("dir/inner.txt")).expect("rm");
    let v = restore_json(&env, &snap, &t, &["--overwrite", "never"]);
    assert_eq!(counts(&v), [1, 0, 0, 7, 0], "{v}");
    assert_eq!(text(&t.join("dir/inner.txt")), "inner\n");
    assert_eq!(text(&t.join("older.txt")), "a local edit, earlier\n");
    assert_eq!(text(&t.join("same_size.txt")), "bbbb\n");
}

#[test]
fn delete_removes_only_what_the_snapshot_lacks_inside_the_target() {
    let (env, snap) = backed_up_tree();
    let t = drifted_target(&env, &snap, "target");
    // A symlink to a directory outside: deleting it must not reach through it.
    let outside = env.path("outside");
    fs::create_dir_all(&outside).expect("mkdir");
    fs::write(outside.join("precious"), "keep me\n").expect("write");
    std::os::unix::fs::symlink(&outside, t.join("link-out")).expect("symlink");
    fs::write(t.join("notes.keep"), "excluded, so kept\n").expect("write");

    let v = restore_json(&env, &snap, &t, &["--delete", "--exclude", "*.keep"]);
    // extra.txt, link-out, and dir/extra with its two files.
    assert_eq!(v["deleted"], 5, "{v}");
    assert!(v["errors"].as_array().expect("errors").is_empty(), "{v}");
    assert!(!t.join("extra.txt").exists());
    assert!(fs::symlink_metadata(t.join("link-out")).is_err());
    assert!(!t.join("dir/extra").exists());
    assert_eq!(text(&t.join("notes.keep")), "excluded, so kept\n");
    assert_eq!(text(&outside.join("precious")), "keep me\n");
    // The target now holds exactly the snapshot (and the excluded file).
    let mut left: Vec<String> = common::all_files(&t)
        .iter()
        .map(|p| p.strip_prefix(&t).expect("prefix").display().to_string())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "dir/inner.txt",
            "newer.txt",
            "notes.keep",
            "older.txt",
            "resized.txt",
            "same.txt",
            "same_size.txt",
            "touched.txt"
        ]
    );
    // The directory got the snapshot's mtime after its extras were deleted.
    assert_eq!(mtime_of(&t.join("dir")), T0);

    // With --include, only entries the include lets through are deleted.
    fs::write(t.join("stray.txt"), "x\n").expect("write");
    fs::write(t.join("stray.bin"), "x\n").expect("write");
    let v = restore_json(&env, &snap, &t, &["--delete", "--include", "*.txt"]);
    assert_eq!(v["deleted"], 1, "{v}");
    assert!(!t.join("stray.txt").exists());
    assert!(t.join("stray.bin").exists());

    // Restoring one file: the target is only where it goes, nothing else in it
    // is the restore's to delete.
    let file = format!("{snap}/older.txt");
    let v = restore_json(&env, &file, &t, &["--delete", "--overwrite", "always"]);
    assert_eq!(
        (v["files"].as_u64(), v["deleted"].as_u64()),
        (Some(1), Some(0)),
        "{v}"
    );
    assert!(t.join("stray.bin").exists());
}

/// Every path, its kind, size, mtime, inode and contents: what a dry run must
/// leave exactly as it was.
fn state_of(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).expect("stat");
        if m.is_dir() {
            for e in fs::read_dir(&p).expect("read_dir") {
                stack.push(e.expect("entry").path());
            }
        }
        let data = if m.is_file() {
            fs::read(&p).expect("read")
        } else {
            Vec::new()
        };
        let rel = p.strip_prefix(root).expect("prefix").display().to_string();
        out.push(format!(
            "{rel} {:o} {} {}.{} {} {data:?}",
            m.mode(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ino()
        ));
    }
    out.sort();
    out
}

#[test]
fn dry_run_lists_what_it_would_do_and_changes_nothing() {
    let (env, snap) = backed_up_tree();
    let t = drifted_target(&env, &snap, "target");
    let before = state_of(&t);
    let out = env.ok(&[
        "restore",
        &snap,
        "--target",
        t.to_str().expect("utf-8"),
        "--dry-run",
        "--delete",
    ]);
    assert_eq!(state_of(&t), before, "a dry run changed the target");
    let ts = t.to_str().expect("utf-8");
    for line in [
        format!("would restore {ts}/resized.txt"),
        format!("would restore {ts}/older.txt"),
        format!("unchanged, would skip {ts}/same.txt"),
        format!("unchanged, would skip {ts}/touched.txt"),
        format!("would delete {ts}/extra.txt"),
        format!("would delete {ts}/dir/extra"),
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "no line {line:?} in:\n{out}"
        );
    }
    assert!(out.contains("dry run: would restore snapshot"), "{out}");
    assert!(
        out.contains("4 unchanged") && out.contains("4 deleted"),
        "{out}"
    );

    // Into a target that does not exist: everything would be restored, and the
    // target is not created.
    let missing = env.path("missing");
    let out = env.ok(&[
        "restore",
        &snap,
        "--target",
        missing.to_str().expect("utf-8"),
        "--dry-run",
    ]);
    assert!(!missing.exists());
    let ms = missing.to_str().expect("utf-8");
    assert!(
        out.contains(&format!("would restore {ms}/dir/inner.txt")),
        "{out}"
    );
    assert!(out.contains(": 7 files, 1 dir,"), "{out}");
}

#[test]
fn filter_patterns_that_match_nothing_are_warned_about() {
    let (env, snap) = backed_up_tree();
    let t = env.path("target");
    let r = env.run(&[
        "restore",
        &snap,
        "--target",
        t.to_str().expect("utf-8"),
        "--include",
        "*.txt",
        "--include",
        "*.parquet",
        "--exclude",
        "tmp",
    ]);
    assert!(r.status.success());
    let err = common::stderr(&r);
    assert!(
        err.contains("--include \"*.parquet\" matched nothing"),
        "{err}"
    );
    assert!(err.contains("--exclude \"tmp\" matched nothing"), "{err}");
    assert!(!err.contains("\"*.txt\""), "{err}");
}

/// `--include` makes the directories leading to what it restores: they get the
/// snapshot's metadata and are counted.
#[test]
fn include_restores_the_directories_it_creates_with_their_metadata() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("a/b")).expect("mkdir");
    fs::create_dir_all(src.join("a/c")).expect("mkdir");
    fs::write(src.join("a/b/one.txt"), "one\n").expect("write");
    fs::write(src.join("a/c/two.bin"), "two\n").expect("write");
    set_mtime(&src.join("a/b"), T0);
    set_mtime(&src.join("a/c"), T0 + 1);
    set_mtime(&src.join("a"), T0 + 2);
    let s = src.to_str().expect("utf-8");
    env.ok(&["backup", s]);
    let t = env.path("target");
    let v = restore_json(&env, &format!("latest:{s}"), &t, &["--include", "*.txt"]);
    assert_eq!(v["files"], 1, "{v}");
    assert_eq!(v["dirs"], 2, "{v}");
    assert_eq!(mtime_of(&t.join("a/b")), T0);
    assert_eq!(mtime_of(&t.join("a")), T0 + 2);
    assert!(!t.join("a/c").exists());
}

/// A snapshot of `big.bin` (1 MiB in many chunks), a hard link to it, and a
/// small file, with one byte flipped in the middle of the data pack: big.bin is
/// written in part and then fails.
fn damaged_big_file() -> (Env, String) {
    let env = Env::with_repo(&["--chunker-params", "16K,64K,256K"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut rng = common::rng(11);
    fs::write(src.join("big.bin"), common::random_bytes(&mut rng, 1 << 20)).expect("write");
    fs::hard_link(src.join("big.bin"), src.join("link.bin")).expect("link");
    fs::write(src.join("small.txt"), "small\n").expect("write");
    let s = src.to_str().expect("utf-8").to_string();
    env.ok(&["backup", &s]);
    let pack = common::all_files(&env.repo.join("data"))
        .into_iter()
        .max_by_key(|p| fs::metadata(p).expect("stat").len())
        .expect("a pack");
    let mut bytes = fs::read(&pack).expect("read pack");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&pack, bytes).expect("write pack");
    (env, format!("latest:{s}"))
}

/// A file that fails to restore is one error, naming its path once, even with
/// --verify (which used to report it again, as "verify PATH: PATH: ...").
#[test]
fn verify_reports_a_file_that_failed_once_under_its_path() {
    let (env, snap) = damaged_big_file();
    let t = env.path("target");
    let r = env.run(&[
        "--json",
        "restore",
        &snap,
        "--target",
        t.to_str().expect("utf-8"),
        "--verify",
    ]);
    assert_eq!(r.status.code(), Some(1));
    let v = common::last_json(&common::stdout(&r), "summary");
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e.as_str().expect("string"))
        .collect();
    let big = t.join("big.bin").display().to_string();
    let link = t.join("link.bin").display().to_string();
    let about_big: Vec<&&str> = errors
        .iter()
        .filter(|e| e.contains(&big) && !e.starts_with(&format!("{link}:")))
        .collect();
    assert_eq!(about_big.len(), 1, "{errors:#?}");
    assert_eq!(about_big[0].matches(&big).count(), 1, "{errors:#?}");
    assert_eq!(v["files_verified"], 1, "{v}");
    assert_eq!(text(&t.join("small.txt")), "small\n");
}

/// A hard link to a file that could not be restored is not made (it would show
/// the broken file under a second name), and is reported under its own path.
#[test]
fn a_hard_link_to_a_file_that_failed_is_reported_under_its_own_path() {
    let (env, snap) = damaged_big_file();
    let t = env.path("target");
    let r = env.run(&["restore", &snap, "--target", t.to_str().expect("utf-8")]);
    assert_eq!(r.status.code(), Some(1));
    let err = common::stderr(&r);
    let link = t.join("link.bin").display().to_string();
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: ") && l.contains(&link)),
        "{err}"
    );
    assert!(err.contains("2 entries could not be restored"), "{err}");
    assert!(fs::symlink_metadata(t.join("link.bin")).is_err());
}

/// `--delete` of a directory the snapshot lacks keeps what `--exclude` names
/// inside it (it used to remove the directory whole, excluded files and all,
/// and then warn that the pattern matched nothing), and never follows a
/// symlink inside it.
#[test]
fn delete_keeps_excluded_files_inside_a_directory_it_removes() {
    let (env, snap) = backed_up_tree();
    let t = drifted_target(&env, &snap, "target");
    let outside = env.path("outside");
    fs::create_dir_all(&outside).expect("mkdir");
    fs::write(outside.join("precious.bin"), "keep me\n").expect("write");
    fs::create_dir_all(t.join("old/sub")).expect("mkdir");
    fs::create_dir_all(t.join("gone/deep")).expect("mkdir");
    fs::write(t.join("old/notes.keep"), "excluded\n").expect("write");
    fs::write(t.join("old/sub/more.keep"), "excluded too\n").expect("write");
    fs::write(t.join("old/x.bin"), "x\n").expect("write");
    fs::write(t.join("gone/deep/z.bin"), "z\n").expect("write");
    std::os::unix::fs::symlink(&outside, t.join("old/out")).expect("symlink");
    let before = state_of(&t);

    let args = ["--delete", "--exclude", "*.keep"];
    let dry = restore_json(&env, &snap, &t, &[&args[..], &["--dry-run"]].concat());
    assert_eq!(state_of(&t), before, "a dry run changed the target");
    let r = env.run(
        &[
            &["restore", &snap, "--target", t.to_str().expect("utf-8")],
            &args[..],
        ]
        .concat(),
    );
    assert!(r.status.success(), "{}", common::stderr(&r));
    assert!(
        !common::stderr(&r).contains("matched nothing"),
        "{}",
        common::stderr(&r)
    );
    let v = restore_json(&env, &snap, &t, &args);
    assert_eq!(
        v["deleted"], 0,
        "a second run has nothing left to delete: {v}"
    );

    assert_eq!(text(&t.join("old/notes.keep")), "excluded\n");
    assert_eq!(text(&t.join("old/sub/more.keep")), "excluded too\n");
    assert_eq!(text(&outside.join("precious.bin")), "keep me\n");
    for gone in ["old/x.bin", "old/out", "gone", "extra.txt", "dir/extra"] {
        assert!(fs::symlink_metadata(t.join(gone)).is_err(), "{gone}");
    }
    // extra.txt, dir/extra with a and b, old/x.bin, old/out, gone/deep/z.bin.
    assert_eq!(dry["deleted"], 9, "{dry}");
}

/// A setuid file restored by someone who can't give it its owner keeps its
/// permissions but not the setuid bit: a file owned by root in the snapshot,
/// restored by another user, must not become a setuid program of that user. Runs
/// the restore as `nobody` (needs root and setpriv; skips, saying why, without).
#[test]
fn setuid_bit_is_kept_only_where_the_owner_could_be_set() {
    if !can_run_as_nobody() {
        return;
    }
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let prog = src.join("prog");
    fs::write(&prog, b"#!/bin/sh\n").expect("write");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&prog, fs::Permissions::from_mode(0o4755)).expect("chmod");
    env.ok(&["backup", src.to_str().expect("utf-8")]);
    let target = env.path("target");
    let out = restore_as_nobody(&env, &src, &target, &[]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let m = fs::metadata(target.join("prog")).expect("restored");
    assert_eq!(m.uid(), NOBODY, "restored by nobody, owned by nobody");
    assert_eq!(
        m.mode() & 0o7777,
        0o755,
        "setuid kept on a file its owner could not be given"
    );
    // Restored by root, the owner is set and the bit kept.
    let target = env.path("target-root");
    env.ok(&[
        "restore",
        &format!("latest:{}", src.display()),
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    let m = fs::metadata(target.join("prog")).expect("restored");
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o4755));
}

/// Every path under `dir`, directories included.
fn walk_all(dir: &Path) -> Vec<PathBuf> {
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

/// `--delete` stays on the target's filesystem: where another filesystem is
/// mounted (a backup with --one-file-system stores the mount point empty), what
/// is mounted there is left alone, with a warning; the rest is cleaned as usual.
#[test]
fn delete_leaves_what_is_mounted_inside_the_target() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("mnt")).expect("mkdir");
    fs::write(src.join("kept.txt"), b"in the snapshot\n").expect("write");
    env.ok(&["backup", src.to_str().expect("utf-8")]);
    let target = env.path("target");
    fs::create_dir_all(&target).expect("mkdir");
    let Some(_mount) = common::tmpfs_or_skip(&target.join("mnt"), "1M") else {
        return;
    };
    fs::write(target.join("mnt/on-the-mount.txt"), b"not the restore's\n").expect("write");
    fs::write(target.join("extra.txt"), b"extra\n").expect("write");
    let out = env.run(&[
        "restore",
        &format!("latest:{}", src.display()),
        "--target",
        target.to_str().expect("utf-8"),
        "--delete",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        common::stderr(&out).contains("another filesystem is mounted there"),
        "{}",
        common::stderr(&out)
    );
    assert!(
        target.join("mnt/on-the-mount.txt").exists(),
        "deleted on a mount"
    );
    assert!(!target.join("extra.txt").exists(), "extra file kept");
    assert!(target.join("kept.txt").exists());
}

/// `--delete` removes nothing in a directory the backup could not read in full
/// (recorded in the snapshot's errors; such a directory is stored empty).
#[test]
fn delete_leaves_directories_the_backup_could_not_read() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("unread")).expect("mkdir");
    fs::create_dir_all(src.join("read")).expect("mkdir");
    env.ok(&["backup", src.to_str().expect("utf-8")]);
    let snap: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat", "snapshot", "latest"])).expect("json");
    let tree = cairn::id::BlobId::from_hex(snap["tree"].as_str().expect("tree")).expect("id");
    let unread = src.join("unread");
    let forged = crate::hostile::Forge::new(&env).snapshot_edited(tree, |s| {
        s.paths = vec![src.to_string_lossy().into_owned()];
        s.errors = vec![cairn::snapshot::SourceProblem {
            path: unread.to_string_lossy().into_owned(),
            error: "listing directory: permission denied; stored as empty".into(),
        }];
    });
    let target = env.path("target");
    fs::create_dir_all(target.join("unread")).expect("mkdir");
    fs::create_dir_all(target.join("read")).expect("mkdir");
    fs::write(target.join("unread/precious.txt"), b"keep\n").expect("write");
    fs::write(target.join("read/extra.txt"), b"extra\n").expect("write");
    let out = env.run(&[
        "restore",
        &format!("{}:{}", forged.to_hex(), src.display()),
        "--target",
        target.to_str().expect("utf-8"),
        "--delete",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        common::stderr(&out).contains("could not read"),
        "{}",
        common::stderr(&out)
    );
    assert!(
        target.join("unread/precious.txt").exists(),
        "deleted in an unread dir"
    );
    assert!(!target.join("read/extra.txt").exists(), "extra file kept");
}

/// A file that can't be restored whole (a byte flipped in its pack) leaves the
/// file the target had in its place as it was, with no temporary file beside it:
/// the new one is written under a temporary name and renamed over it only once
/// whole.
#[test]
fn a_file_that_fails_leaves_the_existing_one_in_place() {
    let (env, snap) = damaged_big_file();
    let t = env.path("target");
    fs::create_dir_all(&t).expect("mkdir");
    fs::write(t.join("big.bin"), b"the user's own version\n").expect("write");
    let r = env.run(&["restore", &snap, "--target", t.to_str().expect("utf-8")]);
    assert_eq!(r.status.code(), Some(1), "{}", common::stderr(&r));
    assert_eq!(text(&t.join("big.bin")), "the user's own version\n");
    let left: Vec<String> = fs::read_dir(&t)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".cairn-restore-"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    // An intact file replacing an existing one is renamed into place whole.
    fs::write(t.join("small.txt"), b"older\n").expect("write");
    let r = env.run(&[
        "restore",
        &snap,
        "--target",
        t.to_str().expect("utf-8"),
        "--overwrite",
        "always",
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(text(&t.join("small.txt")), "small\n");
}

const NOBODY: u32 = 65534;

fn can_run_as_nobody() -> bool {
    let can = nix::unistd::Uid::effective().is_root() && Path::new("/usr/bin/setpriv").exists();
    if !can {
        eprintln!("skipping: needs root and setpriv to restore as another user");
    }
    can
}

/// Runs `restore latest:SRC --target TARGET EXTRA...` as `nobody`, after giving
/// it everything it needs: the repository, the password file, the scratch dir.
fn restore_as_nobody(env: &Env, src: &Path, target: &Path, extra: &[&str]) -> std::process::Output {
    for e in walk_all(env.dir.path()) {
        nix::unistd::chown(&e, Some(NOBODY.into()), Some(NOBODY.into())).expect("chown");
    }
    env.bare_cmd_through(&[
        "/usr/bin/setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ])
    .args([
        "--password-file",
        env.password_file.to_str().expect("utf-8"),
    ])
    .args([
        "restore",
        &format!("latest:{}", src.display()),
        "--target",
        target.to_str().expect("utf-8"),
    ])
    .args(extra)
    .output()
    .expect("run cairn as nobody")
}

/// `--verify` as a user reads every file back before directories get their
/// permissions: a directory without search permission in the snapshot does not
/// make the user's own restore fail.
#[test]
fn verify_as_a_user_reads_files_in_directories_it_may_not_search() {
    if !can_run_as_nobody() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("closed")).expect("mkdir");
    fs::write(src.join("closed/inside.txt"), b"inside\n").expect("write");
    fs::set_permissions(src.join("closed"), fs::Permissions::from_mode(0o600)).expect("chmod");
    env.ok(&["backup", src.to_str().expect("utf-8")]);
    let target = env.path("target");
    let out = restore_as_nobody(&env, &src, &target, &["--verify"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        common::stdout(&out).contains("verified 1 file"),
        "{}",
        common::stdout(&out)
    );
    let m = fs::metadata(target.join("closed")).expect("restored");
    assert_eq!(m.mode() & 0o777, 0o600);
}

/// The README's other promises about a target that has entries already: a
/// symlink or fifo that is the same is kept (not recreated); a file whose
/// contents match but whose mtime and mode differ is kept and given the
/// snapshot's; `never` keeps a file where the snapshot has a directory, and
/// everything under it; a symlink in the target where the snapshot has a file
/// is replaced, never written through.
#[test]
fn existing_links_fifos_and_kept_files_in_the_target() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).expect("mkdir");
    fs::write(src.join("d/inner.txt"), "inner\n").expect("write");
    fs::write(src.join("file.txt"), "file\n").expect("write");
    fs::set_permissions(src.join("file.txt"), fs::Permissions::from_mode(0o640)).expect("chmod");
    set_mtime(&src.join("file.txt"), T0);
    std::os::unix::fs::symlink("somewhere", src.join("link")).expect("symlink");
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    let s = src.to_str().expect("utf-8");
    env.ok(&["backup", "-q", s]);
    let snap = format!("latest:{s}");

    let t = env.path("target");
    env.ok(&[
        "restore",
        "-q",
        &snap,
        "--target",
        t.to_str().expect("utf-8"),
    ]);
    let ino = |name: &str| fs::symlink_metadata(t.join(name)).expect("stat").ino();
    let (link, fifo) = (ino("link"), ino("fifo"));
    // The file differs in mtime and mode only.
    fs::set_permissions(t.join("file.txt"), fs::Permissions::from_mode(0o600)).expect("chmod");
    set_mtime(&t.join("file.txt"), T0 + 1000);
    let file = ino("file.txt");
    let v = restore_json(&env, &snap, &t, &[]);
    assert_eq!(v["files"], 0, "{v}");
    assert_eq!(v["symlinks"], 0, "{v}");
    assert_eq!(v["special"], 0, "{v}");
    assert_eq!(
        (ino("link"), ino("fifo"), ino("file.txt")),
        (link, fifo, file)
    );
    assert_eq!(mtime_of(&t.join("file.txt")), T0);
    let mode = fs::metadata(t.join("file.txt"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640);
    // Same size, another mtime and other contents: compared, and rewritten.
    fs::write(t.join("file.txt"), "fild\n").expect("write");
    set_mtime(&t.join("file.txt"), T0 + 1000);
    let v = restore_json(&env, &snap, &t, &[]);
    assert_eq!(v["files"], 1, "{v}");
    assert_eq!(text(&t.join("file.txt")), "file\n");

    // never: a file where the snapshot has a directory stays, and nothing of
    // the directory is restored.
    fs::remove_dir_all(t.join("d")).expect("rm");
    fs::write(t.join("d"), "a local file\n").expect("write");
    let v = restore_json(&env, &snap, &t, &["--overwrite", "never"]);
    assert_eq!(v["files"], 0, "{v}");
    assert_eq!(text(&t.join("d")), "a local file\n");

    // A symlink where the snapshot has a file is replaced by the file; what it
    // pointed at is untouched.
    let victim = env.path("victim");
    fs::write(&victim, "victim\n").expect("write");
    fs::remove_file(t.join("file.txt")).expect("rm");
    std::os::unix::fs::symlink(&victim, t.join("file.txt")).expect("symlink");
    restore_json(&env, &snap, &t, &["--overwrite", "always"]);
    assert_eq!(text(&victim), "victim\n");
    assert!(
        fs::symlink_metadata(t.join("file.txt"))
            .expect("stat")
            .is_file()
    );
    assert_eq!(text(&t.join("file.txt")), "file\n");
}
