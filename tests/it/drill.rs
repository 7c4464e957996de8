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
