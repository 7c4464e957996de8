//! Keeping a repository healthy: the corruption matrix for `check` and `repair`,
//! forget + prune, and prune killed at many points.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{self, Env};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).expect("copy");
        }
    }
}

/// A repository with two snapshots of mixed data in small packs.
fn populated() -> (Env, PathBuf) {
    let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "16K,64K,256K"]);
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    let mut rng = common::rng(31);
    for i in 0..6 {
        fs::write(
            src.join(format!("r{i}.bin")),
            common::random_bytes(&mut rng, 400_000),
        )
        .expect("write");
        fs::write(
            src.join("sub").join(format!("t{i}.log")),
            common::text_bytes(&mut rng, 300_000),
        )
        .expect("write");
    }
    let s = src.to_str().expect("utf-8").to_string();
    env.ok(&["backup", &s]);
    fs::write(src.join("r0.bin"), common::random_bytes(&mut rng, 500_000)).expect("write");
    env.ok(&["backup", &s]);
    (env, src)
}

/// Packs of one blob kind, by reading their headers with `cat pack`.
fn packs_of_kind(env: &Env, kind: &str) -> Vec<PathBuf> {
    common::all_files(&env.repo.join("data"))
        .into_iter()
        .filter(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            let v: serde_json::Value =
                serde_json::from_str(&env.ok(&["cat", "pack", &name])).expect("json");
            v["blobs"]
                .as_array()
                .expect("blobs")
                .iter()
                .all(|b| b["type"] == kind)
        })
        .collect()
}

fn name_of(p: &Path) -> String {
    p.file_name().expect("name").to_string_lossy().into_owned()
}

fn flip(p: &Path, offset_from_end: Option<usize>) {
    let mut b = fs::read(p).expect("read");
    let i = match offset_from_end {
        Some(o) => b.len() - o,
        None => b.len() / 2,
    };
    b[i] ^= 0x01;
    fs::write(p, b).expect("write");
}

fn truncate(p: &Path) {
    let b = fs::read(p).expect("read");
    fs::write(p, &b[..b.len() - 100]).expect("write");
}

/// Runs `check` (with `extra` flags); asserts it fails and its output names `what`.
fn check_fails_naming(env: &Env, extra: &[&str], what: &str) {
    let mut args = vec!["check"];
    args.extend_from_slice(extra);
    let out = env.run(&args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "check {extra:?} passed, expected it to name {what}"
    );
    assert!(
        stderr(&out).contains(what),
        "check {extra:?} did not name {what}:\n{}",
        stderr(&out)
    );
}

fn check_clean(env: &Env) {
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "check not clean:\n{}", stderr(&out));
}

fn restore_latest_matches(env: &Env, src: &Path) {
    let out = env.path(&format!("restore-{}", rand_suffix()));
    env.ok(&[
        "restore",
        &format!("latest:{}", src.display()),
        "--target",
        out.to_str().expect("utf-8"),
        "--verify",
    ]);
    for f in common::all_files(src) {
        let rel = f.strip_prefix(src).expect("prefix");
        assert_eq!(
            fs::read(&f).expect("src"),
            fs::read(out.join(rel)).expect("restored"),
            "{}",
            rel.display()
        );
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[test]
fn clean_repository_checks_clean() {
    let (env, src) = populated();
    check_clean(&env);
    let out = env.run(&["check", "--read-data-subset", "1/3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&["check", "--read-data-subset", "50%", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = common::last_json(&String::from_utf8_lossy(&out.stdout), "summary");
    assert!(s["packs_read"].as_u64().expect("n") > 0);
    restore_latest_matches(&env, &src);
}

#[test]
fn damaged_data_pack_is_found_by_read_data() {
    let (env, _src) = populated();
    let pack = packs_of_kind(&env, "data").remove(0);
    flip(&pack, None);
    // Same size: the structure check can't see it, reading the data does.
    assert!(env.run(&["check"]).status.success());
    check_fails_naming(&env, &["--read-data"], &name_of(&pack));
    // Unrepairable by design (the data is gone); the blob is named too.
    let out = env.run(&["check", "--read-data"]);
    assert!(stderr(&out).contains("blob "), "{}", stderr(&out));
}

#[test]
fn damaged_pack_header_is_found_and_index_still_reads_it() {
    let (env, src) = populated();
    let pack = packs_of_kind(&env, "data").remove(0);
    flip(&pack, Some(10));
    check_fails_naming(&env, &["--read-data"], &name_of(&pack));
    // The index still locates every blob, so restores work despite the header.
    restore_latest_matches(&env, &src);
}

#[test]
fn truncated_pack_is_found_by_the_structure_check() {
    let (env, _src) = populated();
    let pack = packs_of_kind(&env, "data").remove(0);
    truncate(&pack);
    check_fails_naming(&env, &[], &name_of(&pack));
}

#[test]
fn deleted_data_pack_is_found_and_repair_drops_what_is_lost() {
    let (env, _src) = populated();
    let pack = packs_of_kind(&env, "data").remove(0);
    fs::remove_file(&pack).expect("rm");
    check_fails_naming(&env, &[], &name_of(&pack));
    // Prune refuses to run, and deletes nothing.
    let before = common::all_files(&env.repo).len();
    let out = env.run(&["prune"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("repair"), "{}", stderr(&out));
    assert_eq!(common::all_files(&env.repo).len(), before);

    env.ok(&["repair", "index"]);
    env.ok(&["repair", "snapshots", "--forget"]);
    check_clean(&env);
    let snaps: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    for s in snaps.as_array().expect("array") {
        assert!(
            s["tags"]
                .as_array()
                .expect("tags")
                .iter()
                .any(|t| t == "repaired"),
            "{s}"
        );
        assert!(
            !s["errors"].as_array().expect("errors").is_empty(),
            "dropped files recorded: {s}"
        );
    }
}

#[test]
fn deleted_tree_pack_is_found_and_repaired() {
    let (env, _src) = populated();
    let pack = packs_of_kind(&env, "tree").remove(0);
    fs::remove_file(&pack).expect("rm");
    check_fails_naming(&env, &[], &name_of(&pack));
    env.ok(&["repair", "index"]);
    env.ok(&["repair", "snapshots", "--forget"]);
    check_clean(&env);
}

#[test]
fn damaged_or_deleted_index_file_is_repaired() {
    for damage in ["flip", "truncate", "delete"] {
        let (env, src) = populated();
        let idx = common::all_files(&env.repo.join("index")).remove(0);
        match damage {
            "flip" => flip(&idx, None),
            "truncate" => truncate(&idx),
            _ => fs::remove_file(&idx).expect("rm"),
        }
        let expect = if damage == "delete" {
            "missing from the index".to_string()
        } else {
            name_of(&idx)
        };
        check_fails_naming(&env, &[], &expect);
        env.ok(&["repair", "index"]);
        check_clean(&env);
        restore_latest_matches(&env, &src);
    }
}

#[test]
fn damaged_snapshot_key_and_config_are_named() {
    let (env, _src) = populated();
    let work = env.path("pristine");
    copy_dir(&env.repo, &work);
    let reset = || {
        fs::remove_dir_all(&env.repo).expect("rm");
        copy_dir(&work, &env.repo);
    };

    let snap = common::all_files(&env.repo.join("snapshots")).remove(0);
    flip(&snap, None);
    check_fails_naming(&env, &[], &name_of(&snap));
    reset();

    let key = common::all_files(&env.repo.join("keys")).remove(0);
    flip(&key, None);
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&name_of(&key)), "{}", stderr(&out));
    reset();

    flip(&env.repo.join("config"), Some(5));
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("config"), "{}", stderr(&out));
}

#[test]
fn forget_and_prune_shrink_and_kept_snapshots_restore() {
    let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "16K,64K,256K"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut rng = common::rng(41);
    let s = src.to_str().expect("utf-8").to_string();
    let mut versions = Vec::new();
    for round in 0..5 {
        for i in 0..4 {
            fs::write(
                src.join(format!("f{i}.bin")),
                common::random_bytes(&mut rng, 300_000 + round * 1000),
            )
            .expect("write");
        }
        env.ok(&["backup", &s]);
        versions.push(
            (0..4)
                .map(|i| fs::read(src.join(format!("f{i}.bin"))).expect("read"))
                .collect::<Vec<_>>(),
        );
    }
    let size = |env: &Env| -> u64 {
        common::all_files(&env.repo)
            .iter()
            .map(|f| fs::metadata(f).expect("stat").len())
            .sum()
    };
    let before = size(&env);

    // An empty policy and a remove-everything policy are refused.
    let out = env.run(&["forget"]);
    assert_eq!(out.status.code(), Some(1));
    let out = env.run(&["forget", "--keep-tag", "nosuchtag"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("every snapshot"), "{}", stderr(&out));

    let dry = env.ok(&["forget", "--keep-last", "2", "--prune", "--dry-run"]);
    assert!(dry.contains("would remove 3"), "{dry}");
    assert_eq!(size(&env), before, "dry run changed the repository");

    env.ok(&["forget", "--keep-last", "2", "--prune", "--max-unused", "0"]);
    let after = size(&env);
    assert!(
        after < before * 2 / 3,
        "prune freed too little: {before} -> {after}"
    );
    check_clean(&env);
    for (back, version) in [(0usize, &versions[4]), (1, &versions[3])] {
        let out = env.path(&format!("v{back}"));
        env.ok(&[
            "restore",
            &format!("latest~{back}:{s}"),
            "--target",
            out.to_str().expect("utf-8"),
            "--verify",
        ]);
        for (i, data) in version.iter().enumerate() {
            assert_eq!(
                &fs::read(out.join(format!("f{i}.bin"))).expect("read"),
                data
            );
        }
    }
}

#[test]
fn prune_killed_at_many_points_then_rerun_loses_nothing() {
    let (env, src) = populated();
    let mut rng = common::rng(51);
    let s = src.to_str().expect("utf-8").to_string();
    for round in 0..3 {
        fs::write(
            src.join(format!("extra{round}.bin")),
            common::random_bytes(&mut rng, 600_000),
        )
        .expect("write");
        env.ok(&["backup", &s]);
    }
    env.ok(&["forget", "--keep-last", "1"]);
    for delay_ms in [1u64, 10, 30, 60, 120] {
        let mut child = env
            .cmd()
            .args(["prune", "-q", "--max-unused", "0"])
            .spawn()
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever state the kill left: the kept snapshot restores.
        restore_latest_matches(&env, &src);
    }
    env.ok(&["prune", "--max-unused", "0"]);
    check_clean(&env);
    restore_latest_matches(&env, &src);
    // A backup after all that works too.
    fs::write(src.join("after.txt"), "after").expect("write");
    env.ok(&["backup", &s]);
    restore_latest_matches(&env, &src);
}

#[test]
fn unlock_removes_stale_locks_only_unless_told() {
    let (env, _src) = populated();
    let locks = env.repo.join("locks");
    fs::create_dir_all(&locks).expect("mkdir");
    // An unreadable lock file might belong to a running process: kept by default.
    let junk = locks.join("ab".repeat(32));
    fs::write(&junk, b"junk").expect("write");
    let out = env.ok(&["unlock"]);
    assert!(out.contains("kept"), "{out}");
    assert!(junk.exists());
    env.ok(&["unlock", "--remove-all"]);
    assert!(!junk.exists());
}

#[test]
fn blobs_stored_twice_are_noted_and_prune_keeps_one_copy() {
    let env = Env::with_repo(&["--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut rng = common::rng(61);
    for i in 0..6 {
        fs::write(
            src.join(format!("{i}.bin")),
            common::random_bytes(&mut rng, 700_000),
        )
        .expect("write");
    }
    let s = src.to_str().expect("utf-8").to_string();
    // Two backups of the same data at once can't see each other's new blobs.
    let a = env.cmd().args(["backup", "-q", &s]).spawn().expect("spawn");
    let b = env.cmd().args(["backup", "-q", &s]).spawn().expect("spawn");
    assert!(a.wait_with_output().expect("wait").status.success());
    assert!(b.wait_with_output().expect("wait").status.success());
    let out = env.run(&["check", "--read-data"]);
    assert!(
        out.status.success(),
        "duplicates are not damage: {}",
        stderr(&out)
    );
    let noted = stderr(&out).contains("more than once");
    env.ok(&["forget", "--keep-last", "1"]);
    env.ok(&["prune", "--max-unused", "0"]);
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("more than once"),
        "prune left duplicates (noted before: {noted}): {}",
        stderr(&out)
    );
    restore_latest_matches(&env, &src);
}
