//! Small files are read in batches on the pool while the walk goes on, so a
//! batch holds files of many directories, and a directory's tree is finished
//! only when the last of its files (and subdirectories) arrives. These trees
//! are large enough for several batches (512 files each), with directories
//! left waiting at every depth.

use std::fs;
use std::path::Path;

use crate::common::{self, Env};

/// Writes the tree: `wide/` with 40 directories of 30 small files, one of
/// them three levels deeper; `mixed/` with small files around a 5 MiB file
/// (read on its own, not in a batch), a hard-linked pair, an empty directory
/// and files that are copies of each other; `one/` with 600 files in one
/// directory, more than a batch. Sizes vary from empty to 20 KiB.
fn write_tree(src: &Path) {
    let mut rng = common::rng(16);
    let size = |i: usize| (i * 7919) % 20_000;
    for d in 0..40 {
        let dir = src.join(format!("wide/s{d:02}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..30 {
            let bytes = common::random_bytes(&mut rng, size(d * 30 + f));
            fs::write(dir.join(format!("f{f:02}")), bytes).expect("write");
        }
    }
    let deep = src.join("wide/s07/deep/deeper");
    fs::create_dir_all(&deep).expect("mkdir");
    for f in 0..50 {
        let bytes = common::text_bytes(&mut rng, size(f + 5000));
        fs::write(deep.join(format!("t{f:02}.txt")), bytes).expect("write");
    }
    let mixed = src.join("mixed");
    fs::create_dir_all(mixed.join("empty")).expect("mkdir");
    for f in 0..300 {
        let bytes = common::text_bytes(&mut rng, size(f + 9000));
        fs::write(mixed.join(format!("m{f:03}")), bytes).expect("write");
        if f == 150 {
            let big = common::random_bytes(&mut rng, 5 << 20);
            fs::write(mixed.join("m150-big"), big).expect("write");
        }
    }
    for f in 0..20 {
        fs::write(mixed.join(format!("copy{f:02}")), b"the same small file\n").expect("write");
    }
    fs::hard_link(mixed.join("m010"), mixed.join("m010-link")).expect("link");
    let one = src.join("one");
    fs::create_dir_all(&one).expect("mkdir");
    for f in 0..600 {
        let bytes = common::random_bytes(&mut rng, size(f + 20_000) / 4);
        fs::write(one.join(format!("o{f:03}")), bytes).expect("write");
    }
}

/// Directories under and including `root`.
fn dirs_in(root: &Path) -> u64 {
    1 + common::tree_contents(root)
        .keys()
        .filter(|k| k.ends_with('/'))
        .count() as u64
}

#[test]
fn small_files_of_many_directories_read_in_batches_back_up_every_tree() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    write_tree(&src);
    let s = src.to_str().expect("utf-8");
    let excluded = format!("{s}/wide/s20/f05");
    let files = common::tree_contents(&src)
        .keys()
        .filter(|k| !k.ends_with('/'))
        .count() as u64;

    let first = env.backup_json(&[s, "--exclude", &excluded]);
    assert_eq!(first["errors"], 0, "{first}");
    assert_eq!(first["files_new"], files - 1, "{first}");
    assert_eq!(first["dirs_new"], dirs_in(&src), "{first}");
    let mut expected = common::tree_contents(&src);
    expected.remove("wide/s20/f05");
    assert_eq!(common::restored_contents(&env, "restored", &src), expected);
    common::check_clean(&env);

    let unchanged = env.backup_json(&[s, "--exclude", &excluded]);
    assert_eq!(unchanged["files_unchanged"], files - 1, "{unchanged}");
    assert_eq!(unchanged["dirs_unchanged"], dirs_in(&src), "{unchanged}");
    assert_eq!(unchanged["dirs_changed"], 0, "{unchanged}");

    // A change three levels down, a new file, a directory removed. Changed:
    // deeper, deep, s07, wide (s10 went), one (a new entry), and src.
    fs::write(src.join("wide/s07/deep/deeper/t03.txt"), b"changed\n").expect("write");
    fs::write(src.join("one/new"), b"new\n").expect("write");
    fs::remove_dir_all(src.join("wide/s10")).expect("rm");
    // Listed (and the new files read) once now: the listing would otherwise
    // move the changed directories' access times (relatime) between the two
    // backups compared below, and trees record them.
    let dirs = dirs_in(&src);
    for f in ["wide/s07/deep/deeper/t03.txt", "one/new"] {
        fs::read(src.join(f)).expect("read");
    }
    let changed = env.backup_json(&[s, "--exclude", &excluded]);
    assert_eq!(changed["errors"], 0, "{changed}");
    assert_eq!(changed["files_changed"], 1, "{changed}");
    assert_eq!(changed["files_new"], 1, "{changed}");
    assert_eq!(changed["dirs_changed"], 6, "{changed}");
    assert_eq!(changed["dirs_new"], 0, "{changed}");
    assert_eq!(changed["dirs_unchanged"], dirs - 6, "{changed}");
    // The changed directories' trees were put together from their unchanged
    // entries' nodes in the parent tree and the new ones: the same trees as
    // a backup that reads everything again builds from scratch.
    let forced = env.backup_json(&[s, "--exclude", &excluded, "--force"]);
    assert_eq!(forced["errors"], 0, "{forced}");
    let above = src.parent().and_then(Path::to_str).expect("utf-8");
    let subtrees = |spec: &str| -> std::collections::BTreeMap<String, String> {
        env.ok(&["ls", "--json", spec, above])
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|n| n["kind"] == "dir")
            .map(|n| (n["path"].to_string(), n["subtree"].to_string()))
            .collect()
    };
    let (after_change, after_force) = (subtrees("latest~1"), subtrees("latest"));
    assert_eq!(after_change.len() as u64, dirs, "{after_change:?}");
    assert_eq!(after_change, after_force);
    let mut expected = common::tree_contents(&src);
    expected.remove("wide/s20/f05");
    assert_eq!(common::restored_contents(&env, "again", &src), expected);
}

/// Directories left waiting for their small files hold at most 64 Ki tree
/// nodes between them; past that, a directory is finished as soon as its walk
/// is, after reading what is queued. Here 80 directories of 1,000 symlinks
/// and one small file each: their files fit one batch, so without the bound
/// all 80 would wait, holding 80,080 nodes.
#[test]
fn directories_waiting_for_their_files_are_bounded_and_still_complete() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    for d in 0..80 {
        let dir = src.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("file"), format!("{d}\n")).expect("write");
        for l in 0..1000 {
            std::os::unix::fs::symlink("file", dir.join(format!("l{l:03}"))).expect("symlink");
        }
    }
    let s = src.to_str().expect("utf-8");
    let first = env.backup_json(&[s]);
    assert_eq!(first["errors"], 0, "{first}");
    assert_eq!(first["dirs_new"], 81, "{first}");
    let target = env.path("restored");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    let restored = target.join(s.trim_start_matches('/'));
    for d in 0..80 {
        let dir = restored.join(format!("d{d:02}"));
        assert_eq!(
            fs::read(dir.join("file")).expect("file"),
            format!("{d}\n").as_bytes()
        );
        let links = fs::read_dir(&dir).expect("list").count();
        assert_eq!(links, 1001, "{}", dir.display());
        assert_eq!(
            fs::read_link(dir.join("l999")).expect("link"),
            Path::new("file")
        );
    }
}
