//! Restore drills (`cairn drill`) and the records they and checks leave in the
//! repository (format-spec §20).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn::backend::{FileType, LocalBackend};
use cairn::format::{FileKind, SealKind};
use cairn::record::{self, Record, RecordKind};
use cairn::repository::Repository;

use crate::common::{self, Env, PASSWORD, stderr};

fn open(env: &Env) -> Arc<Repository> {
    let backend = Arc::new(LocalBackend::new(&env.repo));
    Arc::new(Repository::open(backend, PASSWORD.as_bytes()).expect("open"))
}

fn record_files(env: &Env) -> Vec<PathBuf> {
    match fs::read_dir(env.repo.join("records")) {
        Ok(_) => common::all_files(&env.repo.join("records")),
        Err(_) => Vec::new(),
    }
}

fn flip_middle(p: &Path) {
    let mut b = fs::read(p).expect("read");
    let i = b.len() / 2;
    b[i] ^= 0x01;
    fs::write(p, b).expect("write");
}

/// A repository with one small backup, and one record saved through the library.
fn with_a_record() -> (Env, Record) {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), "some data").expect("write");
    env.ok(&["backup", src.to_str().expect("utf-8")]);
    let repo = open(&env);
    let mut r = Record::new(RecordKind::Check);
    r.ok = true;
    r.detail = "read-data".into();
    let _lock = cairn::lock::acquire(&repo, false).expect("lock");
    record::save(&repo, &r).expect("save");
    (env, r)
}

/// A damaged record file is an error of `check`, which says no backup data is
/// affected and points at `repair snapshots --forget`; that removes it, and
/// check is clean again.
#[test]
fn check_reports_a_damaged_record_and_repair_forget_removes_it() {
    let (env, _) = with_a_record();
    env.ok(&["check"]);
    let files = record_files(&env);
    assert_eq!(files.len(), 1);
    flip_middle(&files[0]);
    let name = files[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();

    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("record {name}")), "{err}");
    assert!(err.contains("no backup data is affected"), "{err}");
    assert!(err.contains("cairn repair snapshots --forget"), "{err}");

    // Without --forget it is only reported.
    env.ok(&["repair", "snapshots"]);
    assert_eq!(record_files(&env).len(), 1);
    let out = env.ok(&["repair", "snapshots", "--forget"]);
    assert!(out.contains("1 record is unreadable; 1 removed"), "{out}");
    assert!(record_files(&env).is_empty());
    env.ok(&["check"]);
}

/// A record of a kind this cairn doesn't know (a newer cairn's) is noted, not
/// an error, and `repair snapshots --forget` leaves it.
#[test]
fn a_record_of_an_unknown_kind_is_left_alone() {
    let (env, _) = with_a_record();
    #[derive(serde::Serialize)]
    struct Newer {
        kind: &'static str,
        time: &'static str,
        hostname: &'static str,
        username: &'static str,
        program_version: &'static str,
        ok: bool,
    }
    let repo = open(&env);
    let plain = cairn::format::to_msgpack(&Newer {
        kind: "audit",
        time: "2027-01-01T00:00:00+00:00",
        hostname: "h",
        username: "u",
        program_version: "cairn 9.0.0",
        ok: true,
    });
    repo.save_sealed(FileKind::Record, SealKind::Record, FileType::Record, &plain)
        .expect("save");
    let (ok, bad) = record::load_all(&repo).expect("load");
    assert_eq!((ok.len(), bad.len()), (1, 1));
    assert!(matches!(bad[0].1, cairn::Error::UnknownRecordKind { .. }));
    let out = env.run(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("\"audit\""), "{}", stderr(&out));
    env.ok(&["repair", "snapshots", "--forget"]);
    assert_eq!(record_files(&env).len(), 2);
}

/// `init` makes `records/`; a repository without it (an older one) has no
/// records, checks clean, and gets the directory with its first record.
#[test]
fn a_repository_without_records_dir_reads_none() {
    let env = Env::with_repo(&[]);
    assert!(env.repo.join("records").is_dir());
    fs::remove_dir(env.repo.join("records")).expect("rmdir");
    let repo = open(&env);
    let (ok, bad) = record::load_all(&repo).expect("load");
    assert!(ok.is_empty() && bad.is_empty());
    env.ok(&["check"]);
    let _lock = cairn::lock::acquire(&repo, false).expect("lock");
    record::save(&repo, &Record::new(RecordKind::Drill)).expect("save");
    assert_eq!(record::load_all(&repo).expect("load").0.len(), 1);
}

// ---------------------------------------------------------------------------------
// Drills.

/// Twelve random files, one in a subdirectory, and a symlink, backed up in small
/// packs: (env, source dir).
fn backed_up() -> (Env, PathBuf) {
    let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "16K,64K,256K"]);
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    let mut rng = common::rng(12);
    for i in 0..12 {
        let dir = if i == 11 {
            src.join("sub")
        } else {
            src.clone()
        };
        fs::write(
            dir.join(format!("f{i:02}.bin")),
            common::random_bytes(&mut rng, 100_000 + i * 7_000),
        )
        .expect("write");
    }
    std::os::unix::fs::symlink("f00.bin", src.join("link")).expect("symlink");
    env.ok(&["backup", src.to_str().expect("utf-8")]);
    (env, src)
}

/// `drill --json ARGS`: exit code, mismatch lines, summary.
fn drill_json(
    env: &Env,
    args: &[&str],
) -> (Option<i32>, Vec<serde_json::Value>, serde_json::Value) {
    let mut all = vec!["drill", "--json"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    let text = common::stdout(&out);
    let mismatches = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message_type"] == "mismatch")
        .collect();
    (
        out.status.code(),
        mismatches,
        common::last_json(&text, "summary"),
    )
}

fn snapshot_id(env: &Env) -> cairn::id::SnapshotId {
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    let id = v[0]["id"].as_str().expect("id");
    cairn::id::SnapshotId::from_hex(id).expect("hex")
}

/// A clean drill passes, says so, and leaves a record that reads back with
/// what it did.
#[test]
fn a_clean_drill_passes_and_records_it() {
    let (env, _) = backed_up();
    let out = env.ok(&["drill", "--files", "5"]);
    assert!(out.contains("drill passed"), "{out}");
    assert!(out.contains("5 of 12 files"), "{out}");
    assert!(out.contains("MiB/s"), "{out}");

    let (code, mismatches, summary) = drill_json(&env, &["--files", "3", "--seed", "9"]);
    assert_eq!(code, Some(0));
    assert!(mismatches.is_empty());
    assert_eq!(summary["command"], "drill");
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["files"], 3);
    assert_eq!(summary["seed"], 9);

    let repo = open(&env);
    let (records, bad) = record::load_all(&repo).expect("records");
    assert!(bad.is_empty());
    assert_eq!(records.len(), 2);
    let (id, r) = records.last().expect("a record");
    assert_eq!(summary["record"], id.to_hex());
    assert_eq!(r.kind, RecordKind::Drill);
    assert_eq!(r.snapshot, Some(snapshot_id(&env)));
    assert!(r.ok && r.problems.is_empty());
    assert_eq!(r.files, 3);
    assert!(r.bytes >= 300_000, "{}", r.bytes);
    assert_eq!(r.bytes, summary["bytes"].as_u64().expect("bytes"));
    assert_eq!(r.detail, "3 of 12 files, seed 9");
    assert_eq!(r.class, None);
}

/// A flipped byte in a data pack: the drill goes on, names each damaged file
/// and its blob, exits 1, records ok=false, and removes its scratch directory.
#[test]
fn a_corrupted_blob_fails_the_drill_naming_the_file() {
    let (env, _) = backed_up();
    let packs: Vec<PathBuf> = common::all_files(&env.repo.join("data"))
        .into_iter()
        .filter(|p| fs::metadata(p).expect("stat").len() > 200_000)
        .collect();
    flip_middle(&packs[0]);
    let target = env.path("drill-target");
    let (code, mismatches, summary) = drill_json(
        &env,
        &["--all", "--target", target.to_str().expect("utf-8")],
    );
    assert_eq!(code, Some(1));
    assert!(
        !target.exists(),
        "the scratch directory and the target it made are gone"
    );
    assert_eq!(summary["ok"], false);
    assert!(!mismatches.is_empty());
    for m in &mismatches {
        let path = m["path"].as_str().expect("path");
        assert!(path.contains("/src/") && path.ends_with(".bin"), "{m}");
        assert!(
            m["problem"].as_str().expect("problem").contains("blob"),
            "{m}"
        );
        assert_eq!(m["at_source"], false);
    }
    // Every other file was restored and verified.
    assert_eq!(
        summary["files"].as_u64().expect("files") + mismatches.len() as u64,
        12,
        "{summary}"
    );
    let out = env.run(&["drill", "--all"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("mismatch: ") && err.contains("drill FAILED"),
        "{err}"
    );

    let repo = open(&env);
    let (records, _) = record::load_all(&repo).expect("records");
    assert!(records.iter().all(|(_, r)| !r.ok && !r.problems.is_empty()));
    assert!(
        records[0].1.problems[0].contains("blob"),
        "{:?}",
        records[0].1
    );
}

/// `--compare-source` names a file changed at the source since the backup and
/// one deleted there; the drill itself restored both faithfully.
#[test]
fn compare_source_finds_changed_and_deleted_files() {
    let (env, src) = backed_up();
    env.ok(&["drill", "--all", "--compare-source"]);
    fs::write(src.join("f03.bin"), b"rewritten").expect("write");
    fs::remove_file(src.join("sub/f11.bin")).expect("rm");
    let (code, mismatches, summary) = drill_json(&env, &["--all", "--compare-source"]);
    assert_eq!(code, Some(1));
    assert_eq!(summary["files"], 12, "every file restored and verified");
    let found: Vec<(String, String)> = mismatches
        .iter()
        .map(|m| {
            assert_eq!(m["at_source"], true, "{m}");
            (
                m["path"].as_str().expect("path").to_string(),
                m["problem"].as_str().expect("problem").to_string(),
            )
        })
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    let changed = src.join("f03.bin").display().to_string();
    let deleted = src.join("sub/f11.bin").display().to_string();
    assert!(
        found
            .iter()
            .any(|(p, why)| *p == changed
                && why.contains("changed at the source since the snapshot")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(p, why)| *p == deleted && why == "missing at the source"),
        "{found:?}"
    );
}

/// `--all` restores and verifies every entry: files, directories, the symlink.
#[test]
fn all_restores_everything() {
    let (env, src) = backed_up();
    let (code, mismatches, summary) = drill_json(&env, &["--all"]);
    assert_eq!(code, Some(0), "{mismatches:?}");
    assert_eq!(summary["files"], 12);
    assert_eq!(summary["files_in_snapshot"], 12);
    // The files, `sub`, `link`, and the directories from / down to src.
    let depth = src.components().count() as u64 - 1;
    assert_eq!(summary["sampled"], 12 + 2 + depth, "{summary}");
    assert_eq!(summary["detail"], format!("all {} entries", 12 + 2 + depth));
}

/// The same seed draws the same sample: with every source file changed, the
/// mismatches name exactly the sampled files.
#[test]
fn a_seed_draws_the_same_sample_again() {
    let (env, src) = backed_up();
    for f in common::all_files(&src) {
        fs::write(f, b"changed").expect("write");
    }
    let drawn = |seed: &str| {
        let (code, mismatches, _) =
            drill_json(&env, &["--files", "4", "--seed", seed, "--compare-source"]);
        assert_eq!(code, Some(1));
        let mut paths: Vec<String> = mismatches
            .iter()
            .map(|m| m["path"].as_str().expect("path").to_string())
            .collect();
        paths.sort();
        assert_eq!(paths.len(), 4);
        paths
    };
    let first = drawn("1234");
    assert_eq!(drawn("1234"), first);
    let others: Vec<Vec<String>> = ["1", "2", "3"].iter().map(|s| drawn(s)).collect();
    assert!(
        others.iter().any(|o| *o != first),
        "other seeds draw other samples"
    );
}

/// The scratch directory is removed after a clean drill, a failed one and an
/// interrupted one; a target that holds anything is refused and left alone.
#[test]
fn the_scratch_directory_is_always_removed() {
    let (env, _) = backed_up();
    let target = env.path("t");
    env.ok(&["drill", "--target", target.to_str().expect("utf-8")]);
    assert!(!target.exists());

    fs::create_dir(&target).expect("mkdir");
    fs::write(target.join("mine"), "x").expect("write");
    let out = env.run(&["drill", "--target", target.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("must be empty"), "{}", stderr(&out));
    assert_eq!(fs::read_dir(&target).expect("ls").count(), 1);
    fs::remove_file(target.join("mine")).expect("rm");

    // Interrupted (Ctrl-C) in the restore (`--all` draws no sample first, so
    // the scratch directory is made before the flag is seen): no record, the
    // empty target stays, nothing in it.
    let repo = open(&env);
    let opts = cairn::drill::DrillOptions {
        sample: cairn::drill::Sample::All,
        target: Some(target.clone()),
        ..Default::default()
    };
    let stop = std::sync::atomic::AtomicBool::new(true);
    let r = cairn::drill::drill(&repo, snapshot_id(&env), &opts, &stop);
    assert!(matches!(r, Err(cairn::Error::Interrupted)), "{:?}", r.err());
    assert_eq!(fs::read_dir(&target).expect("ls").count(), 0);
    assert!(record::load_all(&repo).expect("records").0.len() == 1);
}
