//! The frozen repository in `tests/fixtures/repo-v1` was written by format version 1
//! and must stay readable by every later cairn.
//!
//! It was generated once with
//! `cargo test --test it write_fixture -- --ignored` (which refuses to overwrite an
//! existing fixture) from `fixture_source` below; never regenerate it for a format
//! change — a change that breaks this test breaks users' repositories.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::{self, Env};

const FIXTURE: &str = "tests/fixtures/repo-v1";
const FIXTURE_PASSWORD: &str = "cairn fixture v1";

fn log_text(n: usize) -> Vec<u8> {
    let mut s = Vec::new();
    let mut i = 0u64;
    while s.len() < n {
        s.extend_from_slice(
            format!("step {i} loss {:.4} lr 0.0003\n", 1.0 / (i as f64 + 1.0)).as_bytes(),
        );
        i += 1;
    }
    s.truncate(n);
    s
}

/// (relative path as bytes, content) of every regular file in the fixture source.
fn expected_files() -> Vec<(Vec<u8>, Vec<u8>)> {
    let random = common::xorshift(0x00C0_FFEE, 6000);
    vec![
        (b"hello.txt".to_vec(), b"hello, cairn v1\n".to_vec()),
        (b"empty".to_vec(), Vec::new()),
        (b"train.log".to_vec(), log_text(5000)),
        (b"random.bin".to_vec(), random.clone()),
        (b"sub/dup.bin".to_vec(), random),
        (b"sub/caf\xe9.txt".to_vec(), b"latin-1 name\n".to_vec()),
    ]
}

fn fixture_source(root: &Path) {
    for (rel, content) in expected_files() {
        let p = root.join(OsStr::from_bytes(&rel));
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, content).expect("write");
    }
    std::os::unix::fs::symlink("hello.txt", root.join("link")).expect("symlink");
    fs::set_permissions(root.join("train.log"), fs::Permissions::from_mode(0o640)).expect("chmod");
    fs::set_permissions(root.join("sub"), fs::Permissions::from_mode(0o750)).expect("chmod");
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

fn fixture_env() -> Env {
    let env = Env::new();
    fs::write(&env.password_file, FIXTURE_PASSWORD).expect("password");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE),
        &env.repo,
    );
    env
}

#[test]
fn v1_fixture_repository_stays_readable() {
    let env = fixture_env();
    let cfg: serde_json::Value = serde_json::from_str(&env.ok(&["cat", "config"])).expect("json");
    assert_eq!(cfg["version"], 1);
    assert_eq!(cfg["chunker"]["min_size"], 64);
    assert_eq!(cfg["chunker"]["avg_size"], 256);
    assert_eq!(cfg["chunker"]["max_size"], 1024);

    let snaps: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    let snaps = snaps.as_array().expect("array");
    assert_eq!(snaps.len(), 1);
    let source = snaps[0]["paths"][0].as_str().expect("path").to_string();
    assert_eq!(snaps[0]["tags"][0], "fixture");

    let target = env.path("restored");
    env.ok(&[
        "restore",
        &format!("latest:{source}"),
        "--target",
        target.to_str().expect("utf-8"),
        "--verify",
    ]);
    for (rel, content) in expected_files() {
        let p: PathBuf = target.join(OsStr::from_bytes(&rel));
        assert_eq!(
            fs::read(&p).expect("restored file"),
            content,
            "{}",
            p.display()
        );
    }
    assert_eq!(
        fs::read_link(target.join("link")).expect("link"),
        Path::new("hello.txt")
    );
    let mode = |p: &str| {
        fs::symlink_metadata(target.join(p))
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("train.log"), 0o640);
    assert_eq!(mode("sub"), 0o750);

    assert_duplicate_stored_once(&env, &source);
    let listing = env.ok(&["ls", "-q", "--long", "latest"]);
    assert!(listing.contains("caf\u{FFFD}.txt"), "{listing}");
}

/// Blobs of the duplicated file are stored once: `sub/dup.bin` names the same
/// chunks as `random.bin`, no data blob is in two places, and the data blobs
/// hold no more bytes than the source without the copy.
fn assert_duplicate_stored_once(env: &Env, source: &str) {
    let content = |dir: &str, name: &str| -> serde_json::Value {
        let tree: serde_json::Value =
            serde_json::from_str(&env.ok(&["cat", "tree", &format!("latest:{dir}")]))
                .expect("json");
        tree["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {tree}"))["content"]
            .clone()
    };
    let original = content(source, "random.bin");
    assert!(
        original.as_array().is_some_and(|c| c.len() > 1),
        "{original}"
    );
    assert_eq!(content(&format!("{source}/sub"), "dup.bin"), original);
    let mut seen = std::collections::HashSet::new();
    let mut raw = 0;
    for pack in common::all_files(&env.repo.join("data")) {
        let name = pack
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let listing: serde_json::Value =
            serde_json::from_str(&env.ok(&["cat", "pack", &name])).expect("json");
        for b in listing["blobs"].as_array().expect("blobs") {
            if b["type"] == "data" {
                assert!(seen.insert(b["id"].clone()), "{} stored twice", b["id"]);
                raw += b["raw_length"].as_u64().expect("raw_length");
            }
        }
    }
    let without_copy: u64 = expected_files()
        .iter()
        .filter(|(rel, _)| rel.as_slice() != b"sub/dup.bin")
        .map(|(_, c)| c.len() as u64)
        .sum();
    assert!(
        raw <= without_copy,
        "{raw} bytes of data blobs, {without_copy} without the copy"
    );
}

/// What the fixture says of the duplicated file holds for a repository this
/// cairn writes the way the fixture was written.
#[test]
fn a_repository_written_like_the_fixture_stores_the_duplicate_once() {
    let env = Env::new();
    env.ok(&[
        "init",
        "--kdf-memory",
        "1024",
        "--kdf-iterations",
        "1",
        "--chunker-params",
        "64,256,1024",
        "--pack-size",
        "1",
    ]);
    let src = env.path("fixture-src");
    fixture_source(&src);
    env.ok(&["backup", "-q", src.to_str().expect("utf-8")]);
    assert_duplicate_stored_once(&env, src.to_str().expect("utf-8"));
}

/// The fixture predates records (format-spec §20): it has no `records/`, checks
/// clean, and a drill of it passes and leaves the first record.
#[test]
fn v1_fixture_without_records_checks_and_drills_clean() {
    let env = fixture_env();
    assert!(!env.repo.join("records").exists());
    env.ok(&["check", "--read-data"]);
    let out = env.ok(&["drill", "--all"]);
    assert!(out.contains("drill passed"), "{out}");
    assert_eq!(common::all_files(&env.repo.join("records")).len(), 1);
    env.ok(&["check"]);
}

#[test]
#[ignore = "writes the frozen fixture; run once by hand, never for a format change"]
fn write_fixture() {
    let dest = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    assert!(
        !dest.exists(),
        "{} exists; the fixture is frozen",
        dest.display()
    );
    let env = Env::new();
    fs::write(&env.password_file, FIXTURE_PASSWORD).expect("password");
    env.ok(&[
        "init",
        "--kdf-memory",
        "1024",
        "--kdf-iterations",
        "1",
        "--chunker-params",
        "64,256,1024",
        "--pack-size",
        "1",
    ]);
    let src = env.path("fixture-src");
    fixture_source(&src);
    env.ok(&[
        "backup",
        "--tag",
        "fixture",
        "--host",
        "fixture-host",
        src.to_str().expect("utf-8"),
    ]);
    copy_dir(&env.repo, &dest);
}
