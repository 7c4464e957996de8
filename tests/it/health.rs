//! Keeping a repository healthy: the corruption matrix for `check` and `repair`,
//! forget + prune, and prune killed at many points.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::Ordering;

use crate::common::{self, Env, stderr};

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

fn check_clean(env: &Env) {
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "check not clean:\n{}", stderr(&out));
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
    common::restore_matches(&env, "latest", &src);
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Flip,
    /// A byte of the first blob: in a small pack the middle is its padded header.
    FlipBlob,
    FlipHeader,
    Truncate,
    Delete,
}

#[derive(Clone, Copy, Debug)]
enum Target {
    DataPack,
    TreePack,
    Index,
    Snapshot,
    Key,
    Config,
}

/// What a remedy must achieve.
enum Expect {
    /// After these commands, `check --read-data` is clean and the latest snapshot
    /// (repaired or not) restores.
    Repaired(&'static [&'static [&'static str]]),
    /// Damage that can't be undone: it stays reported.
    Unrepairable,
}

fn damage_file(p: &Path, d: Damage) {
    match d {
        Damage::Flip => flip(p, None),
        Damage::FlipBlob => {
            let len = fs::metadata(p).expect("stat").len() as usize;
            flip(p, Some(len - 60))
        }
        Damage::FlipHeader => flip(p, Some(10)),
        Damage::Truncate => truncate(p),
        Damage::Delete => fs::remove_file(p).expect("rm"),
    }
}

const REPAIR_ALL: &[&[&str]] = &[
    &["repair", "index"],
    &["repair", "snapshots", "--forget"],
    &["prune", "--max-unused", "0"],
];

/// A flipped byte inside a data pack: salvage the rest, drop what is lost.
const REPAIR_PACKS: &[&[&str]] = &[&["repair", "packs"], &["repair", "snapshots", "--forget"]];

/// Every kind of stored file × flip / truncate / delete: detected by `check`, with
/// the object named, and then repaired or reported as unrepairable.
#[test]
fn corruption_matrix() {
    use Damage::*;
    use Target::*;
    let cases: &[(Target, Damage, &[&str], Expect)] = &[
        (
            DataPack,
            Flip,
            &["--read-data"],
            Expect::Repaired(REPAIR_PACKS),
        ),
        (
            DataPack,
            FlipHeader,
            &["--read-data"],
            Expect::Repaired(&[&["repair", "packs"]]),
        ),
        (DataPack, Truncate, &[], Expect::Repaired(REPAIR_ALL)),
        (DataPack, Delete, &[], Expect::Repaired(REPAIR_ALL)),
        (
            TreePack,
            FlipBlob,
            &["--read-data"],
            Expect::Repaired(REPAIR_ALL),
        ),
        (TreePack, Truncate, &[], Expect::Repaired(REPAIR_ALL)),
        (TreePack, Delete, &[], Expect::Repaired(REPAIR_ALL)),
        (Index, Flip, &[], Expect::Repaired(&[&["repair", "index"]])),
        (
            Index,
            Truncate,
            &[],
            Expect::Repaired(&[&["repair", "index"]]),
        ),
        (
            Index,
            Delete,
            &[],
            Expect::Repaired(&[&["repair", "index"]]),
        ),
        (Snapshot, Flip, &[], Expect::Repaired(&[])),
        (Snapshot, Truncate, &[], Expect::Repaired(&[])),
        (Key, Flip, &[], Expect::Unrepairable),
        (Key, Truncate, &[], Expect::Unrepairable),
        (Key, Delete, &[], Expect::Unrepairable),
        (Config, Flip, &[], Expect::Unrepairable),
        (Config, Truncate, &[], Expect::Unrepairable),
        (Config, Delete, &[], Expect::Unrepairable),
    ];
    let (pristine, src) = populated();
    let trees = packs_of_kind(&pristine, "tree");
    let datas = packs_of_kind(&pristine, "data");
    for (target, damage, check_flags, expect) in cases {
        let label = format!("{target:?}/{damage:?}");
        let env = Env::new();
        copy_dir(&pristine.repo, &env.repo);
        let rel = |p: &Path| {
            env.repo
                .join(p.strip_prefix(&pristine.repo).expect("inside repo"))
        };
        let file = match target {
            DataPack => rel(&datas[0]),
            TreePack => rel(&trees[0]),
            Index => common::all_files(&env.repo.join("index")).remove(0),
            Snapshot => common::all_files(&env.repo.join("snapshots")).remove(0),
            Key => common::all_files(&env.repo.join("keys")).remove(0),
            Config => env.repo.join("config"),
        };
        damage_file(&file, *damage);
        let mut args = vec!["check"];
        args.extend_from_slice(check_flags);
        let out = env.run(&args);
        assert_ne!(out.status.code(), Some(0), "{label}: check did not notice");
        let err = stderr(&out);
        let named = match (target, damage) {
            (Config, Delete) => err.contains("not a cairn repository"),
            // A config whose sealed part is altered or cut short (but still long
            // enough to be a sealed object) can't be told from one that the key
            // doesn't belong to, which must read as a wrong password (spec §9:
            // anything else would be an oracle for planted keys).
            (Config, Flip | Truncate) => {
                out.status.code() == Some(12) && err.contains("wrong password")
            }
            (Key, Delete) => err.contains("no key files"),
            (Index, Delete) => err.contains("missing from the index"),
            _ => err.contains(&name_of(&file)),
        };
        assert!(
            named,
            "{label}: check did not name {}:\n{err}",
            name_of(&file)
        );
        match expect {
            Expect::Unrepairable => {
                let again = env.run(&args);
                assert_ne!(
                    again.status.code(),
                    Some(0),
                    "{label}: damage vanished by itself"
                );
            }
            Expect::Repaired(steps) => {
                if matches!(target, Snapshot) {
                    env.ok(&["forget", &name_of(&file)]);
                }
                for step in *steps {
                    env.ok(step);
                }
                let out = env.run(&["check", "--read-data"]);
                assert!(
                    out.status.success(),
                    "{label}: not clean after repair:\n{}",
                    stderr(&out)
                );
                // What survived restores and verifies.
                let target_dir = env.path("restored");
                let out = env.run(&[
                    "restore",
                    "latest",
                    "--target",
                    target_dir.to_str().expect("utf-8"),
                    "--verify",
                ]);
                assert!(
                    out.status.success(),
                    "{label}: restore after repair failed:\n{}",
                    stderr(&out)
                );
            }
        }
    }
    // The pristine repository still restores exactly.
    common::restore_matches(&pristine, "latest", &src);
}

#[test]
fn prune_refuses_when_needed_data_is_missing_and_repair_records_what_it_drops() {
    let (env, _src) = populated();
    let pack = packs_of_kind(&env, "data").remove(0);
    fs::remove_file(&pack).expect("rm");
    let before = common::all_files(&env.repo).len();
    let out = env.run(&["prune"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("repair"), "{}", stderr(&out));
    assert_eq!(
        common::all_files(&env.repo).len(),
        before,
        "prune deleted something"
    );

    env.ok(&["repair", "index"]);
    let repaired_index = common::all_files(&env.repo);
    let dry = env.run(&["repair", "snapshots", "--dry-run"]);
    assert!(dry.status.success());
    assert!(stderr(&dry).contains("dropping"), "{}", stderr(&dry));
    assert_eq!(
        common::all_files(&env.repo),
        repaired_index,
        "dry run wrote something"
    );
    env.ok(&["repair", "snapshots", "--forget"]);
    let snaps: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    let repaired: Vec<&serde_json::Value> = snaps
        .as_array()
        .expect("array")
        .iter()
        .filter(|s| {
            s["tags"]
                .as_array()
                .expect("tags")
                .iter()
                .any(|t| t == "repaired")
        })
        .collect();
    assert!(!repaired.is_empty(), "{snaps}");
    for s in repaired {
        assert!(
            !s["errors"].as_array().expect("errors").is_empty(),
            "dropped files recorded: {s}"
        );
    }
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn damaged_pack_header_does_not_stop_restores() {
    let (env, src) = populated();
    let pack = packs_of_kind(&env, "data").remove(0);
    flip(&pack, Some(10));
    // The index still locates every blob.
    common::restore_matches(&env, "latest", &src);
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

    // An empty policy (a usage error) and a remove-everything policy are refused.
    let out = env.run(&["forget"]);
    assert_eq!(out.status.code(), Some(2));
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

/// prune SIGKILLed at each of its steps (format-spec §16): once a new pack is
/// written, once a new index file is, once an old index file is deleted, once an
/// old pack is. It is stepped with SIGSTOP until the step shows in the
/// repository, so each kill lands there, mid-prune (its lock still held). After
/// each, the kept snapshot restores and a prune run again finishes the job.
#[test]
fn prune_killed_at_many_points_then_rerun_loses_nothing() {
    let (pristine, src) = populated();
    let mut rng = common::rng(51);
    let s = src.to_str().expect("utf-8").to_string();
    for round in 0..3 {
        fs::write(
            src.join(format!("extra{round}.bin")),
            common::random_bytes(&mut rng, 600_000),
        )
        .expect("write");
        pristine.ok(&["backup", &s]);
    }
    pristine.ok(&["forget", "--keep-last", "1"]);
    let names = |dir: &Path| -> std::collections::BTreeSet<String> {
        common::all_files(dir)
            .iter()
            .map(|p| name_of(p))
            .filter(|n| !n.starts_with(".tmp-"))
            .collect()
    };
    let packs0 = common::pack_names(&pristine.repo);
    let index0 = names(&pristine.repo.join("index"));
    type Step =
        fn(&Path, &std::collections::BTreeSet<String>, &std::collections::BTreeSet<String>) -> bool;
    let steps: [(&str, Step); 4] = [
        ("a new pack is written", |repo, packs0, _| {
            common::pack_names(repo).iter().any(|p| !packs0.contains(p))
        }),
        ("a new index file is written", |repo, _, index0| {
            common::all_files(&repo.join("index"))
                .iter()
                .map(|p| name_of(p))
                .any(|n| !n.starts_with(".tmp-") && !index0.contains(&n))
        }),
        ("an old index file is deleted", |repo, _, index0| {
            index0.iter().any(|n| !repo.join("index").join(n).exists())
        }),
        ("an old pack is deleted", |repo, packs0, _| {
            let now = common::pack_names(repo);
            packs0.iter().any(|p| !now.contains(p))
        }),
    ];
    for (what, reached) in steps {
        let env = Env::new();
        copy_dir(&pristine.repo, &env.repo);
        let mut child = env
            .cmd()
            .args(["prune", "-q", "--max-unused", "0"])
            .spawn()
            .expect("spawn");
        common::stop_when(&mut child, what, || reached(&env.repo, &packs0, &index0));
        assert!(
            !common::all_files(&env.repo.join("locks")).is_empty(),
            "{what}: stopped mid-prune, its lock is there"
        );
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        // Whatever state the kill left: the kept snapshot restores.
        common::restore_matches(&env, "latest", &src);
        env.ok(&["prune", "--max-unused", "0"]);
        check_clean(&env);
        common::restore_matches(&env, "latest", &src);
        // A backup after all that works too.
        fs::write(src.join("after.txt"), what).expect("write");
        env.ok(&["backup", &s]);
        common::restore_matches(&env, "latest", &src);
        fs::remove_file(src.join("after.txt")).expect("rm");
    }
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
    // Two backups of the same data at once can't see each other's new blobs. To
    // have them overlap every time, the second runs to its end from inside the
    // first, just before the first writes its first pack (its index was loaded
    // before, so it stores every blob again).
    let second_ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ran = std::sync::Arc::clone(&second_ran);
    let mut second = env.cmd();
    second.args(["backup", "-q", &s]);
    let second = std::sync::Mutex::new(Some(second));
    let backend = common::HookedBackend::new(
        &env.repo,
        move |inner: &cairn::backend::LocalBackend, t, name: &str, data: &[u8]| {
            use cairn::backend::{Backend, FileType};
            if t == FileType::Pack {
                if let Some(mut cmd) = second.lock().expect("lock").take() {
                    let out = cmd.output().expect("second backup");
                    assert!(out.status.success(), "{}", stderr(&out));
                    ran.store(true, Ordering::SeqCst);
                }
            }
            inner.write(t, name, data)
        },
    );
    common::backup_through(std::sync::Arc::new(backend), &src).expect("first backup");
    assert!(
        second_ran.load(Ordering::SeqCst),
        "the second backup never ran"
    );
    assert_eq!(common::all_files(&env.repo.join("snapshots")).len(), 2);
    let out = env.run(&["check", "--read-data"]);
    assert!(
        out.status.success(),
        "duplicates are not damage: {}",
        stderr(&out)
    );
    let noted = stderr(&out).contains("more than once");
    assert!(noted, "duplicates not noted: {}", stderr(&out));
    env.ok(&["forget", "--keep-last", "1"]);
    env.ok(&["prune", "--max-unused", "0"]);
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("more than once"),
        "prune left duplicates (noted before: {noted}): {}",
        stderr(&out)
    );
    common::restore_matches(&env, "latest", &src);
}

/// Twelve random files f00.bin..f11.bin of 150-260 kB with the given mtime, in
/// 1 MiB packs of small chunks, backed up once: (env, source dir, its path).
fn twelve_files_backed_up(seed: u64, mtime: std::time::SystemTime) -> (Env, PathBuf, String) {
    let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "16K,64K,256K"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut rng = common::rng(seed);
    for i in 0..12 {
        let p = src.join(format!("f{i:02}.bin"));
        fs::write(&p, common::random_bytes(&mut rng, 150_000 + i * 10_000)).expect("write");
        fs::File::options()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_modified(mtime))
            .expect("set mtime");
    }
    let s = src.to_str().expect("utf-8").to_string();
    env.ok(&["backup", &s]);
    (env, src, s)
}

/// `restore latest:SRC --target <scratch>/out`, whatever its outcome.
fn restore_to_out(env: &Env, src: &str) -> (PathBuf, Output) {
    let out_dir = env.path("out");
    let out = env.run(&[
        "restore",
        &format!("latest:{src}"),
        "--target",
        out_dir.to_str().expect("utf-8"),
    ]);
    (out_dir, out)
}

/// One damaged blob: restore writes every other file whole, with its metadata,
/// names the damaged files, and leaves their mtime unset so that a later backup
/// can't mistake a damaged copy for the unchanged original.
#[test]
fn damaged_blob_fails_only_its_files_which_get_no_metadata() {
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let (env, src, s) = twelve_files_backed_up(77, old);
    let pack = packs_of_kind(&env, "data").remove(0);
    flip(&pack, None);

    let (out_dir, out) = restore_to_out(&env, &s);
    assert!(
        !out.status.success(),
        "a damaged blob must fail the restore"
    );
    let err = stderr(&out);
    let mut damaged = 0;
    for i in 0..12 {
        let name = format!("f{i:02}.bin");
        let restored = out_dir.join(&name);
        if err.contains(&name) {
            damaged += 1;
            if let Ok(m) = fs::metadata(&restored) {
                assert_ne!(
                    m.modified().expect("mtime"),
                    old,
                    "{name} is damaged but got its recorded mtime"
                );
            }
        } else {
            assert_eq!(
                fs::read(src.join(&name)).expect("src"),
                fs::read(&restored).expect("restored"),
                "{name} was not reported but differs\n{err}"
            );
            assert_eq!(
                fs::metadata(&restored)
                    .expect("stat")
                    .modified()
                    .expect("mtime"),
                old,
                "{name}"
            );
        }
    }
    assert!(
        (1..12).contains(&damaged),
        "expected some but not all files reported:\n{err}"
    );
}

/// A pack cut short inside its last blob: only the file holding that blob is
/// reported; the files whose blobs lie before the cut restore whole (restore
/// falls back to reading blob by blob when the pack can't be read in one go).
#[test]
fn truncated_pack_loses_only_the_blobs_past_the_cut() {
    let (env, src, s) = twelve_files_backed_up(78, std::time::SystemTime::now());
    let pack = packs_of_kind(&env, "data").remove(0);
    let listing: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat", "pack", &name_of(&pack)])).expect("json");
    let last_offset = listing["blobs"]
        .as_array()
        .expect("blobs")
        .iter()
        .map(|b| b["offset"].as_u64().expect("offset"))
        .max()
        .expect("a blob");
    let bytes = fs::read(&pack).expect("read");
    fs::write(&pack, &bytes[..last_offset as usize + 1]).expect("truncate");

    let (out_dir, out) = restore_to_out(&env, &s);
    assert!(!out.status.success());
    let err = stderr(&out);
    let reported: Vec<String> = (0..12)
        .map(|i| format!("f{i:02}.bin"))
        .filter(|n| err.contains(n.as_str()))
        .collect();
    assert_eq!(reported.len(), 1, "{err}");
    for i in 0..12 {
        let name = format!("f{i:02}.bin");
        if !reported.contains(&name) {
            assert!(
                fs::read(src.join(&name)).expect("src")
                    == fs::read(out_dir.join(&name)).expect("restored"),
                "{name}"
            );
        }
    }
}

/// Every file of the repository but its locks, with its bytes.
fn files_but_locks(env: &Env) -> Vec<(PathBuf, Vec<u8>)> {
    common::all_files(&env.repo)
        .into_iter()
        .filter(|p| !p.starts_with(env.repo.join("locks")))
        .map(|p| {
            let bytes = fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect()
}

/// `repair index` with nothing to repair rewrote every index file under new
/// names, so a second run after a first one never converged (the crash
/// harness's "a second run changes nothing" found it). Index files naming a
/// pack twice, as a repair killed between writing and deleting leaves them,
/// are still rewritten.
#[test]
fn repair_index_with_nothing_to_repair_changes_no_file() {
    let (env, src) = populated();
    let repo = cairn::repository::Repository::open(
        std::sync::Arc::new(cairn::backend::LocalBackend::new(&env.repo)),
        common::PASSWORD.as_bytes(),
    )
    .expect("open");
    let index_ids = || {
        repo.list_ids(
            cairn::backend::FileType::Index,
            cairn::id::IndexId::from_name,
        )
        .expect("list")
    };
    let copy = repo.load_index_file(&index_ids()[0]).expect("load");
    repo.save_index(&copy)
        .expect("save a second index file naming the same packs");
    let named_twice = index_ids().len();
    env.ok(&["repair", "index"]);
    assert!(
        index_ids().len() < named_twice,
        "index files naming packs twice kept"
    );
    // Rebuilt from the packs' headers alone, then run again.
    for f in common::all_files(&env.repo.join("index")) {
        fs::remove_file(f).expect("remove an index file");
    }
    env.ok(&["repair", "index"]);
    check_clean(&env);
    let before = files_but_locks(&env);
    let out = env.ok(&["repair", "index"]);
    assert!(
        files_but_locks(&env) == before,
        "a second repair index changed files: {out}"
    );
    common::restore_matches(&env, "latest", &src);
}
