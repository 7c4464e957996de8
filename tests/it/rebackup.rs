//! Re-backups that take an entry's extended attributes and link target from the
//! parent snapshot when the entry is unchanged (same inode and change time)
//! must still see every change to them.

use std::fs;
use std::path::Path;

use crate::common::Env;

fn xattrs_supported(dir: &Path) -> bool {
    let probe = dir.join(".xattr-probe");
    fs::write(&probe, b"").expect("probe");
    let ok = xattr::set(&probe, "user.probe", b"1").is_ok();
    fs::remove_file(&probe).expect("rm probe");
    ok
}

fn get(p: &Path, name: &str) -> Option<Vec<u8>> {
    xattr::get(p, name).unwrap_or_else(|e| panic!("getxattr {}: {e}", p.display()))
}

#[test]
fn changed_xattrs_and_link_targets_reach_the_next_snapshot() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).expect("mkdir");
    if !xattrs_supported(&src) {
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
