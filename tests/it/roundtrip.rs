//! Fidelity: a generated tree with every kind of entry cairn stores is backed up and
//! restored (whole, one sub-tree, one file, with include and exclude filters), and
//! compared byte for byte and by metadata. Also: standard input, exclude rules,
//! `--one-file-system` across a tmpfs mount, and restores that must not write
//! outside their target whatever the repository holds.
//!
//! Parts that need root (device nodes, sockets, ownership, mounts) check for it and
//! say what they skip.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use cairn::archiver::saver::Saver;
use cairn::backend::LocalBackend;
use cairn::repository::Repository;
use cairn::snapshot::{Snapshot, Summary};
use cairn::tree::{Node, NodeKind, Timestamp, Tree};

use crate::common::{self, Env, PASSWORD};

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// What the test compares for one entry. Times are (seconds, nanoseconds).
#[derive(Debug, PartialEq, Eq)]
struct Meta {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    /// Not compared for symlinks, whose atime Linux updates on readlink.
    atime: Option<(i64, i64)>,
    rdev: u64,
    link_target: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Other entries (relative paths) that are the same inode.
    same_inode: Vec<Vec<u8>>,
}

fn kind_of(m: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_file() {
        "file"
    } else if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_char_device() {
        "chardev"
    } else if t.is_block_device() {
        "blockdev"
    } else {
        "socket"
    }
}

/// Relative paths (as bytes) of everything under `root`, `b""` being `root` itself.
/// Reads directories, so it changes their atimes: call it before times are set.
fn list(root: &Path) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    let mut stack = vec![Vec::<u8>::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(os(&rel))
        };
        for e in fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("entry");
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(e.file_name().as_bytes());
            if e.file_type().expect("type").is_dir() {
                stack.push(child.clone());
            }
            out.push(child);
        }
    }
    out.sort();
    out
}

fn at(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(os(rel))
    }
}

/// Metadata of the listed entries, by `lstat` only (no reads, so no atime changes).
fn metadata(root: &Path, rels: &[Vec<u8>]) -> BTreeMap<Vec<u8>, Meta> {
    let mut by_inode: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    let mut metas = BTreeMap::new();
    for rel in rels {
        let p = at(root, rel);
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let kind = kind_of(&m);
        if kind != "dir" {
            by_inode
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
        }
        let mut xattrs = Vec::new();
        if kind == "file" || kind == "dir" {
            for name in xattr::list(&p).expect("listxattr") {
                if name.as_bytes().starts_with(b"user.") {
                    let v = xattr::get(&p, &name).expect("getxattr").unwrap_or_default();
                    xattrs.push((name.as_bytes().to_vec(), v));
                }
            }
            xattrs.sort();
        }
        metas.insert(
            rel.clone(),
            Meta {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: if kind == "file" { m.size() } else { 0 },
                mtime: (m.mtime(), m.mtime_nsec()),
                atime: (kind != "symlink").then(|| (m.atime(), m.atime_nsec())),
                rdev: if kind == "chardev" || kind == "blockdev" {
                    m.rdev()
                } else {
                    0
                },
                link_target: (kind == "symlink").then(|| {
                    fs::read_link(&p)
                        .expect("readlink")
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                xattrs,
                same_inode: Vec::new(),
            },
        );
    }
    for group in by_inode.values() {
        for rel in group {
            if let Some(m) = metas.get_mut(rel) {
                m.same_inode = group.iter().filter(|r| *r != rel).cloned().collect();
            }
        }
    }
    metas
}

fn compare_meta(want: &BTreeMap<Vec<u8>, Meta>, got: &BTreeMap<Vec<u8>, Meta>) {
    for (rel, w) in want {
        let g = got
            .get(rel)
            .unwrap_or_else(|| panic!("{:?} not restored", String::from_utf8_lossy(rel)));
        assert_eq!(w, g, "metadata of {:?}", String::from_utf8_lossy(rel));
    }
    assert_eq!(want.len(), got.len());
}

/// Compares two files' contents in 1 MiB steps (they may be gigabytes, mostly holes).
fn same_content(a: &Path, b: &Path) {
    let (mut fa, mut fb) = (
        File::open(a).expect("open a"),
        File::open(b).expect("open b"),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        assert_eq!(
            na,
            nb,
            "{} and {} differ in length",
            a.display(),
            b.display()
        );
        assert!(
            ba[..na] == bb[..nb],
            "{} and {} differ in the MiB at {offset}",
            a.display(),
            b.display()
        );
        if na == 0 {
            return;
        }
        offset += na as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).expect("read") {
            0 => break,
            k => n += k,
        }
    }
    n
}

fn set_times(p: &Path, mtime: (i64, i64), atime: (i64, i64)) {
    nix::sys::stat::utimensat(
        None,
        p,
        &TimeSpec::new(atime.0, atime.1),
        &TimeSpec::new(mtime.0, mtime.1),
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

const GIB: u64 = 1 << 30;

/// Builds the source tree. Returns the relative paths of regular files.
fn build_source(src: &Path) -> Vec<Vec<u8>> {
    let root = common::is_root();
    let mut rng = common::rng(0xF1DE);
    fs::create_dir_all(src).expect("mkdir");
    let w = |rel: &[u8], data: &[u8]| {
        let p = src.join(os(rel));
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, data).expect("write");
    };
    w(b"empty", b"");
    w(b"small.txt", b"a small text file\n");
    w(b"random.bin", &common::random_bytes(&mut rng, 3 << 20));
    w(b"logs/train.log", &common::text_bytes(&mut rng, 2 << 20));
    w(b"a/b/c/d/e/deep.txt", b"deep\n");
    w(b"with space", b"space\n");
    w(b"new\nline", b"newline in the name\n");
    w(b"caf\xe9.txt", b"latin-1 name\n");
    w(b"d\xff/\x80\x81", b"not utf-8 at all\n");

    // Sparse: larger than 4 GiB, data around the 4 GiB boundary, a trailing hole.
    let big = src.join("sparse-5g.img");
    {
        let mut f = File::create(&big).expect("create sparse");
        f.set_len(5 * GIB + 4321).expect("set_len");
        for (offset, len) in [(0, 4096), (2 * GIB, 10_000), (4 * GIB - 3000, 8192)] {
            f.seek(SeekFrom::Start(offset)).expect("seek");
            f.write_all(&common::random_bytes(&mut rng, len))
                .expect("write");
        }
    }
    let tail = src.join("tail-hole.img");
    {
        let mut f = File::create(&tail).expect("create");
        f.write_all(&common::random_bytes(&mut rng, 5000))
            .expect("write");
        f.set_len(64 << 20).expect("set_len");
    }

    // Hard links: three names of one inode, across directories.
    w(b"hl/a", b"hard linked\n");
    fs::hard_link(src.join("hl/a"), src.join("hl/b")).expect("link");
    fs::hard_link(src.join("hl/a"), src.join("top-link")).expect("link");

    // Symlinks: relative, dangling absolute, to a directory, non-UTF-8 target.
    std::os::unix::fs::symlink("small.txt", src.join("sym")).expect("symlink");
    std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).expect("symlink");
    std::os::unix::fs::symlink("hl", src.join("symdir")).expect("symlink");
    std::os::unix::fs::symlink(os(b"caf\xe9.txt"), src.join("sym-latin1")).expect("symlink");

    nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).expect("mkfifo");

    // Permissions, including setuid, setgid and sticky, and a read-only directory
    // that must still receive its contents.
    w(b"setuid", b"#!/bin/sh\n");
    w(b"setgid", b"#!/bin/sh\n");
    w(b"private", b"secret\n");
    fs::create_dir(src.join("sticky")).expect("mkdir");
    w(b"ro-dir/inside", b"inside a read-only dir\n");
    for (rel, mode) in [
        ("setuid", 0o4755),
        ("setgid", 0o2750),
        ("private", 0o600),
        ("sticky", 0o1777),
        ("ro-dir", 0o555),
    ] {
        fs::set_permissions(src.join(rel), fs::Permissions::from_mode(mode)).expect("chmod");
    }

    if common::user_xattrs_supported(src) {
        xattr::set(src.join("small.txt"), "user.comment", b"hello").expect("xattr");
        xattr::set(src.join("small.txt"), "user.binary", b"\x00\xff\x01").expect("xattr");
        xattr::set(src.join("hl"), "user.dir", b"on a directory").expect("xattr");
    } else {
        eprintln!("skipping extended attributes: the test filesystem does not keep user.* xattrs");
    }

    if root {
        let dev = |maj, min| nix::sys::stat::makedev(maj, min);
        nix::sys::stat::mknod(
            &src.join("null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            dev(1, 3),
        )
        .expect("mknod chr");
        nix::sys::stat::mknod(
            &src.join("blk"),
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o660),
            dev(7, 250),
        )
        .expect("mknod blk");
        drop(std::os::unix::net::UnixListener::bind(src.join("sock")).expect("socket"));
        w(b"owned", b"owned by someone else\n");
        nix::unistd::chown(
            &src.join("owned"),
            Some(nix::unistd::Uid::from_raw(1234)),
            Some(nix::unistd::Gid::from_raw(5678)),
        )
        .expect("chown");
        nix::unistd::fchownat(
            None,
            &src.join("sym"),
            Some(nix::unistd::Uid::from_raw(4321)),
            Some(nix::unistd::Gid::from_raw(8765)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .expect("lchown");
    } else {
        eprintln!("skipping device nodes, sockets and ownership: not running as root");
    }

    // Times last, deepest first, with nanoseconds; atimes in the future so that
    // reading with relatime does not move them.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let rels = list(src);
    for (i, rel) in rels.iter().enumerate().rev() {
        let i = i as i64;
        set_times(
            &at(src, rel),
            (1_600_000_000 + i * 1000, i * 1_000_003 + 7),
            (now + 2 * 86_400 + i, 999_999_999 - i),
        );
    }
    rels.into_iter()
        .filter(|r| {
            fs::symlink_metadata(at(src, r))
                .map(|m| m.is_file())
                .unwrap_or(false)
        })
        .collect()
}

/// Allocated bytes of a file: a sparse file must stay sparse when restored.
fn allocated(p: &Path) -> u64 {
    fs::metadata(p).expect("stat").blocks() * 512
}

#[test]
fn every_kind_of_entry_round_trips_with_its_metadata() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let files = build_source(&src);
    // Listing again does not move directory atimes: they lie in the future, and
    // relatime only updates atimes older than mtime, ctime or a day.
    let rels = list(&src);
    let want = metadata(&src, &rels);

    let summary = env.backup_json(&[src.to_str().expect("utf-8 temp path")]);
    assert_eq!(summary["errors"], 0, "{summary}");

    // The whole snapshot: the source appears under its absolute path.
    let out = env.path("out-all");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        out.to_str().expect("utf-8"),
        "--verify",
    ]);
    let restored = out.join(src.strip_prefix("/").expect("absolute"));
    let got = metadata(&restored, &rels);
    compare_meta(&want, &got);
    for rel in &files {
        same_content(&at(&src, rel), &at(&restored, rel));
    }
    assert!(
        allocated(&restored.join("sparse-5g.img")) < 64 << 20,
        "the 5 GiB sparse file was restored with {} bytes allocated",
        allocated(&restored.join("sparse-5g.img"))
    );
    assert!(allocated(&restored.join("tail-hole.img")) < 8 << 20);
    // Nothing more than the source (listing now: the metadata was taken already).
    assert_eq!(list(&restored), rels);

    // The snapshot's own listing names the non-UTF-8 entries losslessly in JSON:
    // `path_bytes` holds the exact path, and `name` the name's bytes.
    let ls = env.ok(&["ls", "--json", &format!("latest:{}", src.display())]);
    let nodes: Vec<serde_json::Value> = ls
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let bytes_of = |v: &serde_json::Value| -> Option<Vec<u8>> {
        v.as_array()?
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect()
    };
    let non_utf8: Vec<&Vec<u8>> = rels
        .iter()
        .filter(|r| std::str::from_utf8(r).is_err())
        .collect();
    assert_eq!(non_utf8.len(), 3, "{non_utf8:?}");
    for rel in non_utf8 {
        let mut full = src.as_os_str().as_bytes().to_vec();
        full.push(b'/');
        full.extend_from_slice(rel);
        let node = nodes
            .iter()
            .find(|n| bytes_of(&n["path_bytes"]).as_ref() == Some(&full))
            .unwrap_or_else(|| panic!("no node with the exact path {full:?}:\n{ls}"));
        let name = rel.rsplit(|&b| b == b'/').next().expect("name");
        if std::str::from_utf8(name).is_err() {
            assert_eq!(bytes_of(&node["name"]).as_deref(), Some(name), "{node}");
        }
    }
}

#[test]
fn sub_tree_single_file_include_and_exclude_restores() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let mut rng = common::rng(7);
    for (rel, n) in [
        ("a/b/one.txt", 100),
        ("a/b/two.bin", 200_000),
        ("a/c/three.txt", 300),
        ("keep.txt", 10),
        ("cache/blob.bin", 5000),
    ] {
        let p = src.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, common::random_bytes(&mut rng, n)).expect("write");
    }
    let s = src.to_str().expect("utf-8");
    env.ok(&["backup", s]);

    // A sub-tree: its contents land directly in the target.
    let out = env.path("out-sub");
    env.ok(&[
        "restore",
        &format!("latest:{s}/a/b"),
        "--target",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        list(&out),
        vec![b"".to_vec(), b"one.txt".to_vec(), b"two.bin".to_vec()]
    );
    same_content(&src.join("a/b/two.bin"), &out.join("two.bin"));

    // One file, chosen in a snapshot chosen by --path (which filters snapshots).
    let out = env.path("out-file");
    env.ok(&[
        "restore",
        &format!("latest:{s}/a/c/three.txt"),
        "--path",
        s,
        "--target",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(list(&out), vec![b"".to_vec(), b"three.txt".to_vec()]);
    same_content(&src.join("a/c/three.txt"), &out.join("three.txt"));

    let txt_files = vec![
        b"a/b/one.txt".to_vec(),
        b"a/c/three.txt".to_vec(),
        b"keep.txt".to_vec(),
    ];
    // Include: only .txt files, with the directories that lead to them.
    let (_, got) = restore_files(
        &env,
        "out-inc",
        &format!("latest:{s}"),
        &["--include", "*.txt"],
    );
    assert_eq!(got, txt_files);
    // Exclude: a directory and everything in it.
    let (out, got) = restore_files(
        &env,
        "out-exc",
        &format!("latest:{s}"),
        &["--exclude", "cache", "--exclude", "*.bin"],
    );
    assert_eq!(got, txt_files);
    assert!(!out.join("cache").exists());

    // A path that is not in the snapshot is a clear error.
    let out = env.path("out-missing");
    let r = env.run(&[
        "restore",
        &format!("latest:{s}/nope"),
        "--target",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("nope") && err.contains("not in the snapshot"),
        "{err}"
    );
}

/// Restores `snapshot` with `extra` flags into a new directory `name`; returns it
/// and the relative paths of the regular files restored there.
fn restore_files(env: &Env, name: &str, snapshot: &str, extra: &[&str]) -> (PathBuf, Vec<Vec<u8>>) {
    let out = env.path(name);
    let mut args = vec![
        "restore",
        snapshot,
        "--target",
        out.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    env.ok(&args);
    let files = list(&out)
        .into_iter()
        .filter(|r| out.join(os(r)).is_file())
        .collect();
    (out, files)
}

#[test]
fn backup_excludes_and_exclude_files() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    for rel in [
        "keep/a.txt",
        "keep/b.tmp",
        "node_modules/x.js",
        "deep/node_modules/y.js",
        "checkpoints/step-100.pt",
        "checkpoints/latest.pt",
    ] {
        let p = src.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, rel.as_bytes()).expect("write");
    }
    let excludes = env.path("excludes");
    fs::write(
        &excludes,
        format!(
            "# comments and blank lines are ignored\n\nnode_modules\n{}/checkpoints/step-*\n",
            src.display()
        ),
    )
    .expect("write");
    let s = src.to_str().expect("utf-8");
    env.ok(&[
        "backup",
        s,
        "--exclude",
        "*.tmp",
        "--exclude-file",
        excludes.to_str().expect("utf-8"),
    ]);
    let ls = env.ok(&["ls", &format!("latest:{s}")]);
    let names: Vec<&str> = ls
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{s}/")))
        .collect();
    assert_eq!(
        names,
        vec![
            "checkpoints",
            "checkpoints/latest.pt",
            "deep",
            "keep",
            "keep/a.txt"
        ],
        "{ls}"
    );
    let snaps: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    let recorded = snaps[0]["excludes"].to_string();
    assert!(
        recorded.contains("*.tmp") && recorded.contains("node_modules"),
        "{recorded}"
    );
}

#[test]
fn standard_input_round_trips() {
    let env = Env::with_repo(&[]);
    let mut rng = common::rng(11);
    let data = common::random_bytes(&mut rng, 3 << 20);
    let mut child = env
        .cmd()
        .args([
            "backup",
            "--stdin",
            "--stdin-filename",
            "model.safetensors",
            "--json",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&data)
        .expect("feed stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let target = env.path("out");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
        "--verify",
    ]);
    assert_eq!(
        fs::read(target.join("model.safetensors")).expect("restored"),
        data
    );
    let snaps: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    assert_eq!(snaps[0]["paths"][0], "/model.safetensors");
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn one_file_system_stops_at_a_tmpfs_mount() {
    if !common::is_root() {
        eprintln!("skipping: mounting a tmpfs needs root");
        return;
    }
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let mnt = src.join("mnt");
    fs::create_dir_all(&mnt).expect("mkdir");
    fs::write(src.join("outside.txt"), b"on the source filesystem\n").expect("write");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "skipping: cannot mount a tmpfs here ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("skipping: cannot run mount ({e})");
            return;
        }
    }
    let _mount = Mount(mnt.clone());
    fs::write(mnt.join("inside.txt"), b"on the tmpfs\n").expect("write");
    let s = src.to_str().expect("utf-8");

    env.ok(&["backup", "--one-file-system", s]);
    let ls = env.ok(&["ls", &format!("latest:{s}")]);
    assert!(ls.contains("outside.txt"), "{ls}");
    assert!(
        ls.contains(&format!("{s}/mnt")),
        "the mount point itself is kept: {ls}"
    );
    assert!(!ls.contains("inside.txt"), "{ls}");

    env.ok(&["backup", s]);
    let ls = env.ok(&["ls", &format!("latest:{s}")]);
    assert!(ls.contains("inside.txt"), "{ls}");
}

fn open_lib(env: &Env) -> Arc<Repository> {
    let backend = Arc::new(LocalBackend::new(&env.repo));
    Arc::new(Repository::open(backend, PASSWORD.as_bytes()).expect("open"))
}

fn file_node(name: &[u8], content: Vec<cairn::id::BlobId>, size: u64) -> Node {
    Node {
        name: name.to_vec(),
        kind: NodeKind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        user: None,
        group: None,
        mtime: Timestamp(0, 0),
        atime: Timestamp(0, 0),
        ctime: Timestamp(0, 0),
        size,
        inode: 1,
        device: 1,
        links: 1,
        rdev: 0,
        link_target: None,
        content,
        subtree: None,
        xattrs: Vec::new(),
    }
}

/// Writes a snapshot whose root tree holds `nodes` exactly as given: the library's
/// tree encoder does not validate, so this is what a malicious writer can store.
fn forge_snapshot(repo: &Arc<Repository>, nodes: Vec<Node>) {
    let index = Arc::new(repo.load_index(&mut |_, _| {}).expect("index"));
    let mut saver = Saver::new(Arc::clone(repo), index);
    let mut tree = Tree { nodes };
    let root = saver.save_tree(&mut tree).expect("save tree");
    saver.finish().expect("finish");
    let snap = Snapshot {
        time: cairn::snapshot::now_rfc3339(),
        hostname: "forger".into(),
        username: "forger".into(),
        uid: 0,
        gid: 0,
        paths: vec!["/".into()],
        tags: Vec::new(),
        tree: root,
        parent: None,
        original: None,
        replaces: None,
        excludes: Vec::new(),
        program_version: "forged".into(),
        summary: Summary::default(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    repo.save_snapshot(&snap).expect("save snapshot");
}

#[test]
fn restore_never_writes_outside_its_target() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("dir")).expect("mkdir");
    fs::write(src.join("dir/file"), b"payload\n").expect("write");
    fs::write(src.join("file"), b"top\n").expect("write");
    let s = src.to_str().expect("utf-8");
    env.ok(&["backup", s]);
    let outside = env.path("outside");
    fs::create_dir_all(&outside).expect("mkdir");

    // A target prepared with symlinks where the snapshot has a directory and a
    // file: restore replaces them instead of writing through them.
    let target = env.path("target");
    fs::create_dir_all(&target).expect("mkdir");
    std::os::unix::fs::symlink(&outside, target.join("dir")).expect("symlink");
    std::os::unix::fs::symlink(outside.join("victim"), target.join("file")).expect("symlink");
    let r = env.run(&[
        "restore",
        &format!("latest:{s}"),
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    assert!(
        fs::read_dir(&outside).expect("read_dir").next().is_none(),
        "restore wrote through a symlink in the target: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        fs::symlink_metadata(target.join("dir"))
            .expect("dir")
            .is_dir()
    );
    assert_eq!(
        fs::read(target.join("dir/file")).expect("file"),
        b"payload\n"
    );
    assert_eq!(fs::read(target.join("file")).expect("file"), b"top\n");

    // Forged trees: names that are paths, dot-dot, or duplicates are refused
    // before anything is written.
    let repo = open_lib(&env);
    let blob = {
        let index = Arc::new(repo.load_index(&mut |_, _| {}).expect("index"));
        let mut saver = Saver::new(Arc::clone(&repo), index);
        let data = b"evil\n";
        let id = repo.key().blob_id(data);
        let payload = cairn::format::encode_payload(data, 0);
        saver
            .add(cairn::pack::BlobKind::Data, id, payload, data.len())
            .expect("add");
        saver.finish().expect("finish");
        id
    };
    let escape = format!(
        "../{}",
        outside.file_name().expect("name").to_string_lossy()
    );
    for nodes in [
        vec![file_node(b"..", vec![blob], 5)],
        vec![file_node(escape.as_bytes(), vec![blob], 5)],
        vec![file_node(b"/etc/evil", vec![blob], 5)],
        vec![
            file_node(b"same", vec![blob], 5),
            file_node(b"same", vec![blob], 5),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let (i, nodes) = nodes;
        for f in fs::read_dir(env.repo.join("snapshots")).expect("ls") {
            fs::remove_file(f.expect("entry").path()).expect("rm snapshot");
        }
        forge_snapshot(&repo, nodes);
        let target = env.path(&format!("forged-{i}"));
        let r = env.run(&[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf-8"),
        ]);
        assert_eq!(r.status.code(), Some(1), "forged tree restored");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            err.contains("unsafe entry name") || err.contains("not sorted or not unique"),
            "{err}"
        );
        assert!(fs::read_dir(&outside).expect("read_dir").next().is_none());
        assert!(!Path::new("/etc/evil").exists());
    }
}

/// Restore fetches each blob once and writes it everywhere it is used: a chunk
/// repeated inside one file, files that are copies of each other, many tiny
/// files with the same content, and zeros between data.
#[test]
fn shared_chunks_restore_to_every_place_they_are_used() {
    let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "16K,64K,256K"]);
    let src = env.path("src");
    fs::create_dir_all(src.join("copies")).expect("mkdir");
    let mut rng = common::rng(9);
    let block = common::random_bytes(&mut rng, 700_000);
    let mut repeated = Vec::new();
    for _ in 0..4 {
        repeated.extend_from_slice(&block);
    }
    repeated.extend(std::iter::repeat_n(0u8, 1 << 20));
    repeated.extend_from_slice(&common::random_bytes(&mut rng, 90_000));
    fs::write(src.join("repeated.bin"), &repeated).expect("write");
    for i in 0..3 {
        fs::write(src.join("copies").join(format!("copy{i}.bin")), &repeated).expect("write");
    }
    for i in 0..200 {
        fs::write(src.join(format!("tiny{i:03}.txt")), b"same few bytes\n").expect("write");
    }
    let s = src.to_str().expect("utf-8").to_string();
    let summary = env.backup_json(&[&s]);
    let new = summary["bytes_new"].as_u64().expect("bytes_new");
    let total = summary["total_bytes"].as_u64().expect("total_bytes");
    assert!(new < total / 4, "deduplication: {new} new bytes of {total}");
    let out = env.path("out");
    env.ok(&[
        "restore",
        &format!("latest:{s}"),
        "--target",
        out.to_str().expect("utf-8"),
        "--verify",
    ]);
    for f in common::all_files(&src) {
        let rel = f.strip_prefix(&src).expect("prefix");
        assert!(
            fs::read(&f).expect("src") == fs::read(out.join(rel)).expect("restored"),
            "{} differs",
            rel.display()
        );
    }
}
