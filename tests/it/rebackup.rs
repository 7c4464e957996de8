//! Re-backups that take an entry's extended attributes and link target from the
//! parent snapshot when the entry is unchanged (same inode and change time)
//! must still see every change to them.

use std::fs;
use std::path::Path;

use crate::common::{self, Env};

fn get(p: &Path, name: &str) -> Option<Vec<u8>> {
    xattr::get(p, name).unwrap_or_else(|e| panic!("getxattr {}: {e}", p.display()))
}

#[test]
fn changed_xattrs_and_link_targets_reach_the_next_snapshot() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).expect("mkdir");
    if !common::user_xattrs_supported(&src) {
        eprintln!("skipping: the test filesystem does not keep user.* xattrs");
        return;
    }
    fs::write(src.join("a.txt"), b"a\n").expect("write");
    fs::write(src.join("b.txt"), b"b\n").expect("write");
    fs::write(src.join("kept.txt"), b"kept\n").expect("write");
    xattr::set(src.join("a.txt"), "user.v", b"1").expect("xattr");
    xattr::set(src.join("kept.txt"), "user.k", b"kept").expect("xattr");
    std::os::unix::fs::symlink("a.txt", src.join("s")).expect("symlink");
    let s = src.to_str().expect("utf-8");
    env.ok(&["backup", s]);
    // Unchanged: everything is taken from the parent, and must be as it was.
    env.ok(&["backup", s]);
    let t1 = env.path("t1");
    env.ok(&["restore", "latest", "--target", t1.to_str().expect("utf-8")]);
    let r1 = t1.join(s.trim_start_matches('/'));
    assert_eq!(get(&r1.join("a.txt"), "user.v").as_deref(), Some(&b"1"[..]));
    assert_eq!(
        get(&r1.join("kept.txt"), "user.k").as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        fs::read_link(r1.join("s")).expect("readlink"),
        Path::new("a.txt")
    );

    // Changed in place: an attribute rewritten, one removed, one added to a
    // directory, and the link replaced by one to another file. Contents and
    // mtimes stay as they were.
    xattr::set(src.join("a.txt"), "user.v", b"2").expect("xattr");
    xattr::remove(src.join("kept.txt"), "user.k").expect("xattr");
    xattr::set(src.join("d"), "user.dir", b"new").expect("xattr");
    fs::remove_file(src.join("s")).expect("rm link");
    std::os::unix::fs::symlink("b.txt", src.join("s")).expect("symlink");
    env.ok(&["backup", s]);
    let t2 = env.path("t2");
    env.ok(&["restore", "latest", "--target", t2.to_str().expect("utf-8")]);
    let r2 = t2.join(s.trim_start_matches('/'));
    assert_eq!(get(&r2.join("a.txt"), "user.v").as_deref(), Some(&b"2"[..]));
    assert_eq!(get(&r2.join("kept.txt"), "user.k"), None);
    assert_eq!(get(&r2.join("d"), "user.dir").as_deref(), Some(&b"new"[..]));
    assert_eq!(
        fs::read_link(r2.join("s")).expect("readlink"),
        Path::new("b.txt")
    );
}

/// Directories large enough to be listed and probed ahead of their turn (their
/// parent-snapshot trees are several KiB) must come out exactly as the ones
/// done in place: changes in them, exclusions among their first entries, a
/// directory become a file and one removed.
#[test]
fn large_directories_gathered_ahead_back_up_what_changed() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    for d in 0..6 {
        for f in 0..80 {
            let p = src.join(format!("d{d}/f{f:03}.txt"));
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(&p, format!("{d}/{f}\n")).expect("write");
        }
        fs::create_dir_all(src.join(format!("d{d}/sub/deeper"))).expect("mkdir");
        fs::write(src.join(format!("d{d}/sub/deeper/x")), b"x\n").expect("write");
    }
    let s = src.to_str().expect("utf-8");
    let exclude = format!("{s}/d1/f000.txt");
    env.ok(&["backup", s, "--exclude", &exclude]);
    env.ok(&["backup", s, "--exclude", &exclude]);

    fs::write(
        src.join("d0/f005.txt"),
        b"changed, and longer than before\n",
    )
    .expect("write");
    fs::write(src.join("d2/new.txt"), b"new\n").expect("write");
    fs::remove_dir_all(src.join("d3")).expect("rm d3");
    fs::remove_dir_all(src.join("d4/sub")).expect("rm d4/sub");
    fs::write(src.join("d4/sub"), b"a file where a directory was\n").expect("write");
    fs::write(src.join("d5/sub/deeper/y"), b"y\n").expect("write");
    let summary = env.backup_json(&[s, "--exclude", &exclude]);
    // Changed: d0/f005.txt, and d4/sub (a directory before). New: d2/new.txt
    // and d5/sub/deeper/y.
    assert_eq!(summary["files_changed"], 2, "{summary}");
    assert_eq!(summary["files_new"], 2, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");

    let mut expected = common::tree_contents(&src);
    expected.remove("d1/f000.txt");
    assert_eq!(common::restored_contents(&env, "restored", &src), expected);
}
