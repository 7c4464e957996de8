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
