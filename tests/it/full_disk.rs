//! A full disk under the repository or the restore target (issue 13 item 3): a
//! clear ENOSPC error naming the file, no partial snapshot, a repository that
//! checks clean, and a run that works once there is room. (prune on a full disk
//! is `prune::prune_on_a_full_disk_frees_unused_packs_and_says_what_needs_room`.)
//! Needs root to mount a small tmpfs; skips, saying why, without.

use std::fs;
use std::path::Path;

use crate::common::{self, Env, stderr};

fn tmpfs(env: &Env, size: &str) -> Option<(common::Mount, std::path::PathBuf)> {
    let mnt = env.path("mnt");
    common::tmpfs_or_skip(&mnt, size).map(|m| (m, mnt))
}

/// Room again: the tmpfs at `mnt` grown to 32 MiB, as a disk with files deleted.
fn grow(mnt: &Path) {
    let out = std::process::Command::new("mount")
        .args(["-o", "remount,size=32m"])
        .arg(mnt)
        .output()
        .expect("remount");
    assert!(out.status.success(), "{}", stderr(&out));
}

fn check_clean(env: &Env) -> String {
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "check not clean:\n{}", stderr(&out));
    stderr(&out)
}

/// The path an ENOSPC error line names, if it names one under `under`.
fn names_a_path_under(err: &str, under: &Path) -> bool {
    err.lines().any(|l| {
        l.contains("No space left on device") && l.contains(under.to_str().expect("utf-8"))
    })
}

#[test]
fn backup_into_a_full_repository_fails_cleanly_and_works_once_there_is_room() {
    let mut env = Env::new();
    let Some((_mount, mnt)) = tmpfs(&env, "6m") else {
        return;
    };
    env.repo = mnt.join("repo");
    env.ok(&[
        "init",
        "--kdf-memory",
        "1024",
        "--kdf-iterations",
        "1",
        "--pack-size",
        "1",
    ]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("first.txt"), "the first snapshot").expect("write");
    let s = src.to_str().expect("utf-8");
    env.ok(&["backup", "-q", s]);
    // More than the 6 MiB there is.
    common::random_files(&src, 141, 10, 1 << 20, |i| format!("big{i}.bin"));
    let out = env.run(&["backup", "-q", s]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        names_a_path_under(&stderr(&out), &env.repo),
        "no ENOSPC error naming a repository file:\n{}",
        stderr(&out)
    );
    assert_eq!(
        common::all_files(&env.repo.join("snapshots")).len(),
        1,
        "a snapshot was written by the backup that ran out of room"
    );
    assert!(common::all_files(&env.repo.join("locks")).is_empty());
    // Packs it wrote are untidiness (indexed for the next run), not damage.
    check_clean(&env);
    let first = env.path("first");
    env.ok(&[
        "restore",
        &format!("latest:{s}"),
        "--target",
        first.to_str().expect("utf-8"),
        "--verify",
    ]);
    assert_eq!(
        fs::read_to_string(first.join("first.txt")).expect("restored"),
        "the first snapshot"
    );

    // Room again (the tmpfs grown, as a disk with files deleted): the next
    // backup completes and restores.
    grow(&mnt);
    let summary = env.backup_json(&[s]);
    assert_eq!(summary["errors"], 0, "{summary}");
    check_clean(&env);
    common::restore_matches(&env, "latest", &src);
}

/// Packs are spooled to the temporary directory before they are written: with
/// that full, the backup fails naming it and what it was for, writes nothing
/// that check minds, and works once there is room.
#[test]
fn backup_with_a_full_temporary_directory_fails_naming_it_and_works_once_there_is_room() {
    let mut env = Env::with_repo(&["--pack-size", "4"]);
    let Some((_mount, mnt)) = tmpfs(&env, "1m") else {
        return;
    };
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    // 6 MiB of noise: more than the 1 MiB there is, in packs of 4 MiB.
    common::random_files(&src, 143, 6, 1 << 20, |i| format!("big{i}.bin"));
    let s = src.to_str().expect("utf-8");
    env.vars
        .push(("TMPDIR".into(), mnt.to_str().expect("utf-8").into()));
    let out = env.run(&["backup", "-q", s]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        names_a_path_under(&err, &mnt) && err.contains("spool"),
        "no ENOSPC error naming the spool directory:\n{err}"
    );
    assert!(common::all_files(&env.repo.join("snapshots")).is_empty());
    assert!(common::all_files(&env.repo.join("locks")).is_empty());
    check_clean(&env);

    grow(&mnt);
    let summary = env.backup_json(&[s]);
    assert_eq!(summary["errors"], 0, "{summary}");
    assert!(
        common::all_files(&mnt).is_empty(),
        "a spool file was left in the temporary directory"
    );
    check_clean(&env);
    common::restore_matches(&env, "latest", &src);
}

#[test]
fn restore_into_a_full_target_names_the_file_and_works_once_there_is_room() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    common::random_files(&src, 142, 6, 1 << 20, |i| format!("f{i}.bin"));
    let s = src.to_str().expect("utf-8");
    env.ok(&["backup", "-q", s]);
    let Some((_mount, mnt)) = tmpfs(&env, "3m") else {
        return;
    };
    let target = mnt.join("target");
    let restore = || {
        env.run(&[
            "restore",
            &format!("latest:{s}"),
            "--target",
            target.to_str().expect("utf-8"),
        ])
    };
    let out = restore();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        names_a_path_under(&err, &target),
        "no ENOSPC error naming a target file:\n{err}"
    );
    // A file that didn't fit is named, and one left in part doesn't get the
    // snapshot's mtime (a later backup would take it for the unchanged
    // original); no temporary file is left behind.
    let mut failed = 0;
    for i in 0..6 {
        let n = format!("f{i}.bin");
        let whole = fs::read(target.join(&n)).ok() == Some(fs::read(src.join(&n)).expect("src"));
        if !whole {
            failed += 1;
            assert!(
                err.contains(n.as_str()),
                "{n} not restored and not named:\n{err}"
            );
            if let Ok(m) = fs::metadata(target.join(&n)) {
                assert_ne!(
                    m.modified().expect("mtime"),
                    fs::metadata(src.join(&n))
                        .expect("src")
                        .modified()
                        .expect("mtime"),
                    "{n} is partial but has the snapshot's mtime"
                );
            }
        }
    }
    assert!(failed > 0, "everything fitted in 3 MiB?");
    for f in common::all_files(&target) {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        assert!(!name.starts_with(".cairn-restore-"), "{name} left behind");
    }
    // The repository was only read.
    check_clean(&env);

    // Room again: the same restore completes.
    fs::remove_dir_all(&target).expect("rm");
    let out = std::process::Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(&mnt)
        .output()
        .expect("remount");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = restore();
    assert!(out.status.success(), "{}", stderr(&out));
    common::restore_matches(&env, "latest", &src);
    for i in 0..6 {
        let n = format!("f{i}.bin");
        assert!(
            fs::read(target.join(&n)).expect("restored") == fs::read(src.join(&n)).expect("src"),
            "{n}"
        );
    }
}
