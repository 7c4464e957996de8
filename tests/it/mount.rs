//! `cairn mount`: the repository as a read-only FUSE filesystem, run as a child
//! process and looked at through the kernel: the made-up directories, every
//! file's bytes and metadata against the source, random reads at seeded
//! offsets, refusals to write, filters, the lock that keeps prune away, a
//! damaged blob (EIO on the reads that need it, a warning naming it, nothing
//! else lost), and clean unmounts by SIGTERM (a busy mount detached lazily)
//! and by `umount`.
//!
//! Needs /dev/fuse and the right to mount (root here). Where either is missing
//! the tests say why and pass, except where CAIRN_TEST_REQUIRE_FUSE=1 (CI):
//! there a skip fails.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rand::Rng;

use crate::common::{self, Env};

/// Small chunks and packs: the big file spans many blobs in several packs.
const INIT: [&str; 4] = ["--chunker-params", "16K,32K,128K", "--pack-size", "1"];
const BIG: usize = 3 * 1024 * 1024 + 12_345;
const MANY: usize = 3000;
/// Generous bounds on waits for the child, so a broken mount fails the test
/// instead of hanging it; no assertion is about how long anything took.
const PATIENCE: Duration = Duration::from_secs(120);

/// Whether FUSE mounts can be tried here; otherwise says why (and fails where
/// CAIRN_TEST_REQUIRE_FUSE=1).
fn fuse_available() -> bool {
    if !Path::new("/dev/fuse").exists() {
        skip("/dev/fuse is missing");
        return false;
    }
    true
}

fn skip(why: &str) {
    if std::env::var("CAIRN_TEST_REQUIRE_FUSE").is_ok_and(|v| v == "1") {
        panic!("CAIRN_TEST_REQUIRE_FUSE=1, but the mount test can't run: {why}");
    }
    eprintln!("skipping the mount test: {why}");
}

fn is_mounted(dir: &Path) -> bool {
    let want = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| Path::new(m) == want.as_path())
    })
}

fn umount(dir: &Path, flags: i32) -> std::io::Result<()> {
    let c = CString::new(dir.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: umount2 reads a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A running `cairn mount`. Dropped on any path out of a test (a failed
/// assertion too), it detaches the mount and kills the child, so nothing is
/// left mounted.
struct Mounted {
    child: Option<Child>,
    dir: PathBuf,
    /// Standard output's lines, read by a thread.
    lines: mpsc::Receiver<String>,
    stdout: Option<std::thread::JoinHandle<()>>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// The `mounted` line.
    mounted: serde_json::Value,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = umount(&self.dir, libc::MNT_DETACH);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How a mount ended: its status, the summary line and standard error.
struct Ended {
    status: ExitStatus,
    summary: serde_json::Value,
    stderr: String,
}

impl Mounted {
    /// Starts `cairn --json mount DIR ARGS` and waits for its `mounted` line;
    /// `None` (said why) when mounting is impossible here.
    fn start(env: &Env, dir: &Path, args: &[&str]) -> Option<Mounted> {
        fs::create_dir_all(dir).expect("mountpoint");
        let mut child = env
            .cmd()
            .args(["--json", "mount"])
            .arg(dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting cairn mount");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        let mut m = Mounted {
            child: Some(child),
            dir: dir.to_path_buf(),
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
            mounted: serde_json::Value::Null,
        };
        match m.lines.recv_timeout(PATIENCE) {
            Ok(line) => {
                m.mounted = serde_json::from_str(&line).expect("mounted line is JSON");
                assert_eq!(m.mounted["message_type"], "mounted", "{line}");
                assert!(is_mounted(dir), "cairn says mounted, but {dir:?} is not");
                Some(m)
            }
            Err(_) => {
                let mut child = m.child.take().expect("child");
                let _ = child.kill();
                let status = child.wait().expect("wait");
                let stderr = m.stderr.take().expect("stderr").join().unwrap_or_default();
                if stderr.contains("mounting the FUSE filesystem") {
                    skip(&format!("cairn could not mount: {}", stderr.trim()));
                    return None;
                }
                panic!("cairn mount never said it was mounted ({status}):\n{stderr}");
            }
        }
    }

    /// Waits for the child to end (after a signal or an unmount).
    fn wait(mut self) -> Ended {
        let mut child = self.child.take().expect("child");
        let mut waited = Duration::ZERO;
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            assert!(waited < PATIENCE, "cairn mount did not end");
            std::thread::sleep(Duration::from_millis(50));
            waited += Duration::from_millis(50);
        };
        let stderr = self
            .stderr
            .take()
            .expect("stderr")
            .join()
            .unwrap_or_default();
        // Every line the child wrote has been passed on once its reader ends.
        let _ = self.stdout.take().expect("stdout").join();
        let rest: Vec<String> = self.lines.try_iter().collect();
        let summary = rest
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message_type"] == "summary")
            .unwrap_or_else(|| panic!("no summary line: {rest:?}\nstderr:\n{stderr}"));
        Ended {
            status,
            summary,
            stderr,
        }
    }

    fn terminate(self) -> Ended {
        let pid = self.child.as_ref().expect("child").id();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        self.wait()
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {dir:?}: {e}"))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The source tree: nested directories, small files, an empty one, a
/// multi-MiB one spanning many chunks, a symlink, a directory of [`MANY`] entries,
/// and set modes and times.
fn make_source(root: &Path) -> Vec<u8> {
    let mut rng = common::rng(15);
    fs::create_dir_all(root.join("a/b/c")).expect("dirs");
    fs::create_dir_all(root.join("empty_dir")).expect("dirs");
    let big = common::random_bytes(&mut rng, BIG);
    fs::write(root.join("a/big.bin"), &big).expect("big");
    for (i, p) in ["top.txt", "a/one.log", "a/b/two.log", "a/b/c/three.log"]
        .iter()
        .enumerate()
    {
        let n = 1000 + i * 7919;
        fs::write(root.join(p), common::text_bytes(&mut rng, n)).expect("small");
    }
    fs::write(root.join("a/b/empty"), b"").expect("empty");
    // Over 128 KiB of entries: listed in several readdir calls.
    fs::create_dir(root.join("many")).expect("dir");
    for i in 0..MANY {
        let name = format!("many/a-file-name-long-enough-to-fill-a-buffer-{i:04}");
        fs::write(root.join(name), i.to_string()).expect("small");
    }
    std::os::unix::fs::symlink("../big.bin", root.join("a/b/link")).expect("symlink");
    fs::set_permissions(root.join("a/one.log"), fs::Permissions::from_mode(0o640)).expect("chmod");
    fs::set_permissions(root.join("a/b/c"), fs::Permissions::from_mode(0o750)).expect("chmod");
    let when = std::time::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    fs::File::options()
        .write(true)
        .open(root.join("top.txt"))
        .and_then(|f| f.set_modified(when))
        .expect("mtime");
    big
}

/// Every entry under `src` is under `mounted` with the same kind, bytes,
/// link target, size, permissions, owner and modification time.
fn compare_trees(src: &Path, mounted: &Path) {
    let mut stack = vec![PathBuf::new()];
    let mut seen = 0;
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(src.join(&rel)).expect("read source") {
            let e = e.expect("entry");
            let r = rel.join(e.file_name());
            let (s, m) = (src.join(&r), mounted.join(&r));
            let sm = fs::symlink_metadata(&s).expect("source meta");
            let mm = fs::symlink_metadata(&m).unwrap_or_else(|e| panic!("{m:?}: {e}"));
            assert_eq!(sm.file_type(), mm.file_type(), "{r:?}");
            assert_eq!(sm.mode() & 0o7777, mm.mode() & 0o7777, "{r:?} mode");
            assert_eq!((sm.uid(), sm.gid()), (mm.uid(), mm.gid()), "{r:?} owner");
            if !sm.is_dir() {
                assert_eq!(sm.len(), mm.len(), "{r:?} size");
                assert_eq!(
                    (sm.mtime(), sm.mtime_nsec()),
                    (mm.mtime(), mm.mtime_nsec()),
                    "{r:?} mtime"
                );
            }
            if sm.is_dir() {
                let (a, b) = (names(&s), names(&m));
                let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
                assert!(
                    a == b,
                    "{r:?}: {} entries in the source, {} mounted, first difference at {first_diff:?}",
                    a.len(),
                    b.len()
                );
                stack.push(r);
            } else if sm.is_symlink() {
                assert_eq!(fs::read_link(&s).unwrap(), fs::read_link(&m).unwrap());
            } else {
                let (a, b) = (fs::read(&s).unwrap(), fs::read(&m).unwrap());
                assert!(a == b, "{r:?}: contents differ");
            }
            seen += 1;
        }
    }
    assert!(seen >= MANY, "only {seen} entries compared");
}

/// Two snapshots of `src` (changed between them), of hosts h1 and h2 with
/// tags t1 and t2; returns their (id, short id, time) oldest first.
fn two_snapshots(env: &Env, src: &Path) -> Vec<(String, String, String)> {
    let s = src.to_str().unwrap();
    env.ok(&["backup", "--host", "h1", "--tag", "t1", s]);
    fs::write(
        src.join("a/b/two.log"),
        b"changed after the first snapshot\n",
    )
    .expect("change");
    env.ok(&["backup", "--host", "h2", "--tag", "t2", "--tag", "t1", s]);
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["--json", "snapshots"])).expect("snapshots json");
    list.as_array()
        .expect("array")
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_string(),
                v["short_id"].as_str().unwrap().to_string(),
                v["time"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn dir_name(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("time")
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// Where the source appears inside a snapshot's directory.
fn inside(snapshot_dir: &Path, src: &Path) -> PathBuf {
    snapshot_dir.join(src.strip_prefix("/").unwrap())
}

fn assert_refused(r: std::io::Result<impl Sized>, what: &str) {
    match r {
        Ok(_) => panic!("{what} succeeded on a read-only mount"),
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES)),
            "{what}: {e}"
        ),
    }
}

#[test]
fn mount_shows_every_snapshot_file_and_byte_and_unmounts_on_sigterm() {
    if !fuse_available() {
        return;
    }
    let env = Env::with_repo(&INIT);
    let src = env.path("src");
    let big = make_source(&src);
    let snaps = two_snapshots(&env, &src);
    assert_eq!(snaps.len(), 2);
    let mnt = env.path("mnt");
    let Some(m) = Mounted::start(&env, &mnt, &[]) else {
        return;
    };
    // The mounted line's fields are the documented ones.
    crate::json::assert_documented("mount", &m.mounted);
    assert_eq!(m.mounted["snapshots"], 2);
    assert_eq!(
        m.mounted["mountpoint"],
        fs::canonicalize(&mnt).unwrap().display().to_string()
    );

    // The made-up directories.
    assert_eq!(names(&mnt), ["hosts", "ids", "latest", "snapshots", "tags"]);
    let (t1, t2) = (dir_name(&snaps[0].2), dir_name(&snaps[1].2));
    let mut by_time = vec![t1.clone(), t2.clone(), "latest".into()];
    if t1 == t2 {
        by_time[1] = format!("{t1}-1");
    }
    let newest = by_time[1].clone();
    by_time.sort();
    assert_eq!(names(&mnt.join("snapshots")), by_time);
    let mut ids = vec![snaps[0].1.clone(), snaps[1].1.clone()];
    ids.sort();
    assert_eq!(names(&mnt.join("ids")), ids);
    assert_eq!(names(&mnt.join("hosts")), ["h1", "h2"]);
    assert_eq!(
        names(&mnt.join("hosts/h2")),
        [newest.clone(), "latest".into()]
    );
    assert_eq!(names(&mnt.join("tags")), ["t1", "t2"]);
    assert_eq!(
        names(&mnt.join("tags/t1")).len(),
        3,
        "both snapshots and latest"
    );
    assert_eq!(
        fs::read_link(mnt.join("latest")).unwrap(),
        Path::new("snapshots").join(&newest)
    );
    assert_eq!(
        fs::read_link(mnt.join("hosts/h1/latest")).unwrap(),
        Path::new(&t1)
    );

    // The newest snapshot is the source as it is now, by every path to it.
    compare_trees(&src, &inside(&mnt.join("latest"), &src));
    compare_trees(&src, &inside(&mnt.join("ids").join(&snaps[1].1), &src));
    // The first has the file as it was.
    let old = inside(&mnt.join("hosts/h1/latest"), &src).join("a/b/two.log");
    let old = fs::read(old).expect("old file");
    assert_ne!(old, fs::read(src.join("a/b/two.log")).unwrap());
    assert_eq!(old.len(), 1000 + 2 * 7919);

    // Random reads of the big file, through pread.
    let f = fs::File::open(inside(&mnt.join("latest"), &src).join("a/big.bin")).expect("open");
    assert_eq!(f.metadata().unwrap().len(), BIG as u64);
    let mut rng = common::rng(1515);
    for _ in 0..300 {
        let off = rng.gen_range(0..BIG);
        let len = match rng.gen_range(0..4) {
            0 => rng.gen_range(1..64),
            1 => rng.gen_range(1..200_000),
            _ => rng.gen_range(1..1_000_000),
        };
        let end = (off + len).min(BIG);
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = f
                .read_at(&mut buf[got..], (off + got) as u64)
                .expect("pread");
            if n == 0 {
                break;
            }
            got += n;
        }
        assert_eq!(got, end - off, "length read at {off}");
        assert!(buf[..got] == big[off..end], "bytes at {off}..{end}");
    }
    // Past the end: nothing.
    assert_eq!(f.read_at(&mut [0u8; 16], BIG as u64 + 10).unwrap(), 0);
    drop(f);

    // Read-only, every way.
    let dir = inside(&mnt.join("latest"), &src);
    assert_refused(fs::File::create(dir.join("new")), "creating a file");
    assert_refused(
        fs::OpenOptions::new().write(true).open(dir.join("top.txt")),
        "opening for writing",
    );
    assert_refused(fs::remove_file(dir.join("top.txt")), "removing a file");
    assert_refused(fs::create_dir(dir.join("d")), "making a directory");
    assert_refused(fs::rename(dir.join("top.txt"), dir.join("x")), "renaming");
    assert_refused(
        fs::set_permissions(dir.join("top.txt"), fs::Permissions::from_mode(0o600)),
        "chmod",
    );

    let ended = m.terminate();
    assert!(
        ended.status.success(),
        "{:?}\n{}",
        ended.status,
        ended.stderr
    );
    let s = &ended.summary;
    // The summary's fields are the documented ones.
    crate::json::assert_documented("mount", s);
    assert_eq!(s["command"], "mount");
    assert_eq!(s["unmounted_by"], "signal");
    assert_eq!(s["detached"], false);
    assert_eq!(s["snapshots"], 2);
    assert_eq!(s["read_errors"], 0);
    assert!(s["reads"].as_u64().unwrap() > 0);
    assert!(s["bytes_read"].as_u64().unwrap() >= BIG as u64);
    assert!(s["blobs_read"].as_u64().unwrap() > 10, "many chunks: {s}");
    assert!(s["blob_cache_hits"].as_u64().is_some());
    assert!(s["duration_seconds"].as_f64().is_some());
    assert_eq!(s["mountpoint"], m_path(&mnt));
    assert!(!is_mounted(&mnt));
    assert!(names(&mnt).is_empty(), "the mountpoint is empty again");
}

fn m_path(p: &Path) -> String {
    fs::canonicalize(p).unwrap().display().to_string()
}

#[test]
fn mount_filters_choose_snapshots_and_an_umount_ends_it() {
    if !fuse_available() {
        return;
    }
    let env = Env::with_repo(&INIT);
    let src = env.path("src");
    make_source(&src);
    let snaps = two_snapshots(&env, &src);
    let mnt = env.path("mnt");
    let Some(m) = Mounted::start(&env, &mnt, &["--host", "h1"]) else {
        return;
    };
    assert_eq!(m.mounted["snapshots"], 1);
    assert_eq!(names(&mnt.join("ids")), [snaps[0].1.clone()]);
    assert_eq!(names(&mnt.join("hosts")), ["h1"]);
    assert_eq!(names(&mnt.join("tags")), ["t1"]);
    let first = inside(&mnt.join("latest"), &src);
    assert_eq!(
        fs::read(first.join("a/b/two.log")).unwrap().len(),
        1000 + 2 * 7919
    );
    // The mount's shared lock keeps prune from pulling packs from under it.
    let out = env.run(&["prune"]);
    assert_eq!(out.status.code(), Some(11), "{}", common::stderr(&out));
    umount(&mnt, 0).expect("umount");
    let ended = m.wait();
    assert!(
        ended.status.success(),
        "{:?}\n{}",
        ended.status,
        ended.stderr
    );
    assert_eq!(ended.summary["unmounted_by"], "umount");
    assert_eq!(ended.summary["snapshots"], 1);
    assert!(names(&mnt).is_empty());

    // Tags must all match; --path chooses by backed-up path.
    let Some(m) = Mounted::start(&env, &mnt, &["--tag", "t1", "--tag", "t2"]) else {
        return;
    };
    assert_eq!(names(&mnt.join("ids")), [snaps[1].1.clone()]);
    // Busy (a file open in it) at SIGTERM: detached lazily, still exit 0.
    let held = fs::File::open(inside(&mnt.join("latest"), &src).join("top.txt")).unwrap();
    let ended = m.terminate();
    assert!(ended.status.success(), "{}", ended.stderr);
    assert_eq!(ended.summary["detached"], true);
    assert!(ended.stderr.contains("busy"), "{}", ended.stderr);
    assert!(!is_mounted(&mnt));
    drop(held);
    let elsewhere = env.path("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let Some(m) = Mounted::start(&env, &mnt, &["--path", elsewhere.to_str().unwrap()]) else {
        return;
    };
    assert_eq!(m.mounted["snapshots"], 0);
    assert!(names(&mnt.join("snapshots")).is_empty());
    assert!(!mnt.join("latest").exists());
    assert!(m.terminate().status.success());
}

/// A data blob of the big file damaged in its pack: reads that need it fail
/// with EIO and a warning naming the blob and the file; the rest of the file
/// and the mount stay readable, and the command ends with an error.
#[test]
fn mount_damaged_blob_is_eio_on_its_reads_only() {
    if !fuse_available() {
        return;
    }
    let env = Env::with_repo(&INIT);
    let src = env.path("src");
    let big = make_source(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    // The big file's blobs and their sizes; damage the middle one.
    let dir_spec = format!("latest:{}", src.join("a").display());
    let tree: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat", "tree", &dir_spec])).expect("tree json");
    let node = tree["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "big.bin")
        .expect("big.bin in tree")
        .clone();
    let blobs: Vec<String> = node["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    assert!(blobs.len() > 20, "{} blobs", blobs.len());
    let k = blobs.len() / 2;
    let victim = blobs[k].clone();
    let mut sizes = BTreeMap::new();
    let mut damaged = false;
    for pack in common::all_files(&env.repo.join("data")) {
        let name = pack.file_name().unwrap().to_str().unwrap().to_string();
        let header: serde_json::Value =
            serde_json::from_str(&env.ok(&["cat", "pack", &name])).expect("pack json");
        for b in header["blobs"].as_array().unwrap() {
            let id = b["id"].as_str().unwrap().to_string();
            sizes.insert(id.clone(), b["raw_length"].as_u64().unwrap());
            if id == victim {
                let at = b["offset"].as_u64().unwrap() + b["length"].as_u64().unwrap() / 2;
                let mut bytes = fs::read(&pack).unwrap();
                bytes[at as usize] ^= 0x55;
                fs::File::create(&pack).unwrap().write_all(&bytes).unwrap();
                damaged = true;
            }
        }
    }
    assert!(damaged, "the victim blob's pack was found");
    let start: u64 = blobs[..k].iter().map(|b| sizes[b]).sum();
    let end = start + sizes[&victim];

    let mnt = env.path("mnt");
    let Some(m) = Mounted::start(&env, &mnt, &[]) else {
        return;
    };
    let path = inside(&mnt.join("latest"), &src).join("a/big.bin");
    // O_DIRECT: each read reaches cairn as it is made, with no readahead
    // into the damaged blob on behalf of the reads beside it.
    let f = fs::File::options()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .expect("open");
    let mut buf = vec![0u8; 4096];
    let e = f
        .read_at(&mut buf, start + 10)
        .expect_err("a read of the damaged blob");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    // Before and after it, the file reads as stored.
    let mut head = vec![0u8; start as usize];
    f.read_exact_at(&mut head, 0).expect("before the damage");
    assert!(head == big[..start as usize]);
    let mut tail = vec![0u8; BIG - end as usize];
    f.read_exact_at(&mut tail, end).expect("after the damage");
    assert!(tail == big[end as usize..]);
    drop(f);
    // Other files too.
    assert_eq!(
        fs::read(inside(&mnt.join("latest"), &src).join("top.txt")).unwrap(),
        fs::read(src.join("top.txt")).unwrap()
    );

    let ended = m.terminate();
    assert_eq!(ended.status.code(), Some(1), "{}", ended.stderr);
    assert!(
        ended.stderr.contains(&victim) && ended.stderr.contains("a/big.bin"),
        "the warning names the blob and the file:\n{}",
        ended.stderr
    );
    assert!(ended.summary["read_errors"].as_u64().unwrap() >= 1);
    assert!(!is_mounted(&mnt));
}

/// A mountpoint that is missing or not a directory is refused, naming it,
/// before the repository is opened; no mountpoint at all is a usage error.
#[test]
fn mount_refuses_a_missing_or_non_directory_mountpoint() {
    let env = Env::with_repo(&[]);
    let missing = env.path("nowhere");
    let out = env.run(&["mount", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = common::stderr(&out);
    assert!(
        err.contains("nowhere") && err.contains("mountpoint"),
        "{err}"
    );

    let file = env.path("file");
    fs::write(&file, b"x").unwrap();
    let out = env.run(&["mount", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(common::stderr(&out).contains("is not a directory"));

    let out = env.run(&["mount"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
}
