//! A backup killed with SIGKILL, then run again: the re-run adopts the packs the
//! killed one wrote but never indexed, and stores only what is missing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;

use cairn::backend::{Backend, FileType, LocalBackend};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::{self, Env, stderr};

/// Packs stored under their final names (partial writes are temporary files).
fn packs(repo: &Path) -> Vec<(PathBuf, u64)> {
    common::all_files(&repo.join("data"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .map(|p| {
            let size = fs::metadata(&p).expect("pack metadata").len();
            (p, size)
        })
        .collect()
}

/// Packs that no index file names.
fn unindexed(env: &Env) -> u64 {
    let repo = cairn::repository::Repository::open(
        Arc::new(LocalBackend::new(&env.repo)),
        common::PASSWORD.as_bytes(),
    )
    .expect("open");
    let index = repo
        .load_index(&mut |id, e| panic!("index {id}: {e}"))
        .expect("index");
    let named: std::collections::HashSet<String> =
        index.packs().map(|(id, _)| id.to_hex()).collect();
    packs(&env.repo)
        .iter()
        .filter(|(p, _)| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            !named.contains(name)
        })
        .count() as u64
}

fn pack_bytes(repo: &Path) -> u64 {
    packs(repo).iter().map(|(_, n)| n).sum()
}

/// Blocks until `repo` holds at least `n` packs; panics if `child` exits first.
fn wait_for_packs(repo: &Path, n: usize, child: &mut Child) {
    while packs(repo).len() < n {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("cairn exited ({status}) before {n} packs were written");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// `check --read-data --json`: exits 0, reports no error, and finds no pack
/// outside the index (every pack the killed runs left was adopted).
fn check_read_data_clean(env: &Env) {
    let out = env.run(&["check", "--read-data", "--json"]);
    let text = common::stdout(&out);
    assert!(
        out.status.success(),
        "check failed:\n{text}\n{}",
        stderr(&out)
    );
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        if v["message_type"] == "problem" {
            assert_ne!(v["severity"], "error", "{v}");
            let msg = v["message"].as_str().unwrap_or_default();
            assert!(!msg.contains("not in any index"), "{v}");
        }
    }
}

fn restore_to(env: &Env, snapshot: &str, name: &str) -> PathBuf {
    let out = env.path(name);
    env.ok(&[
        "restore",
        snapshot,
        "--target",
        out.to_str().expect("utf-8"),
        "--verify",
    ]);
    out
}

/// What a second run may add beyond the bytes the first left missing: new packs'
/// headers, index files, trees and the snapshot, and the headers of the packs
/// adopted (counted in the stored bytes but not in the data).
fn slack(adopted_packs: u64) -> u64 {
    (512 << 10) + adopted_packs * (8 << 10)
}

/// The killed run is fed through a pipe that the test controls, so it is killed
/// at exactly the moment wanted — once `n` packs are stored — however fast the
/// machine: until the test closes the pipe, cairn can't finish. (Of the 32 MiB
/// fed, at most a few MiB wait in cairn's reader and pack builder, so the 12
/// packs of the last case always appear.)
#[test]
fn stdin_backup_killed_after_n_packs_rerun_stores_only_what_is_missing() {
    let mut rng = common::rng(51);
    let data = common::random_bytes(&mut rng, 32 << 20);
    for n in [1usize, 5, 12] {
        let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "64K,128K,512K"]);
        let mut child = env
            .cmd()
            .args(["backup", "-q", "--stdin", "--stdin-filename", "data.bin"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        for piece in data.chunks(256 << 10) {
            if packs(&env.repo).len() >= n {
                break;
            }
            stdin.write_all(piece).expect("feed cairn");
        }
        wait_for_packs(&env.repo, n, &mut child);
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        drop(stdin);
        assert!(
            common::all_files(&env.repo.join("snapshots")).is_empty(),
            "the killed run committed a snapshot"
        );
        let stored = pack_bytes(&env.repo);
        let left = unindexed(&env);
        assert!(left >= n as u64);

        let mut rerun = env
            .cmd()
            .args([
                "backup",
                "--json",
                "--stdin",
                "--stdin-filename",
                "data.bin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdin = rerun.stdin.take().expect("stdin");
        let feeder = {
            let data = data.clone();
            std::thread::spawn(move || stdin.write_all(&data).expect("feed cairn"))
        };
        let out = rerun.wait_with_output().expect("wait");
        feeder.join().expect("feeder");
        assert!(out.status.success(), "{}", stderr(&out));
        let s = common::last_json(&common::stdout(&out), "summary");
        let added = s["bytes_added"].as_u64().expect("bytes_added");
        let adopted = s["packs_adopted"].as_u64().expect("packs_adopted");
        let missing = data.len() as u64 - stored;
        assert!(
            added <= missing + slack(left),
            "kill after {n} packs ({stored} bytes stored): the re-run added {added} bytes \
             for about {missing} missing; it stored again what the killed run wrote"
        );
        assert_eq!(
            adopted, left,
            "kill after {n} packs: every pack left adopted"
        );

        check_read_data_clean(&env);
        let out = restore_to(&env, "latest", "out");
        assert!(
            fs::read(out.join("data.bin")).expect("restored") == data,
            "kill after {n} packs: restored data differs"
        );
    }
}

fn generated_dataset(root: &Path) {
    let mut rng = common::rng(52);
    for d in 0..4 {
        let dir = root.join(format!("shard-{d}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..8 {
            fs::write(
                dir.join(format!("img-{i}.bin")),
                common::random_bytes(&mut rng, 640 << 10),
            )
            .expect("write");
        }
        for i in 0..20 {
            fs::write(
                dir.join(format!("log-{i}.txt")),
                common::text_bytes(&mut rng, 20 << 10),
            )
            .expect("write");
        }
    }
}

/// Runs `cairn backup SRC` a step at a time (stopped with SIGSTOP between steps)
/// until at least `n` more packs are stored than `before`, then SIGKILLs it: the
/// kill lands mid-backup however fast the machine is.
fn kill_backup_after_packs(env: &Env, src: &Path, before: usize, n: usize) {
    let mut child = env
        .cmd()
        .args(["backup", "-q", src.to_str().expect("utf-8")])
        .spawn()
        .expect("spawn");
    let pid = Pid::from_raw(child.id() as i32);
    loop {
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        if packs(&env.repo).len() >= before + n {
            break;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("cairn exited ({status}) before {n} packs were written");
        }
        kill(pid, Signal::SIGCONT).expect("SIGCONT");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
}

/// The user's case: the first backup of a directory is killed part way, twice,
/// then completes. Each re-run adopts what the killed one left.
#[test]
fn directory_backup_killed_twice_then_completed_stores_each_byte_once() {
    let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "64K,128K,512K"]);
    let src = env.path("src");
    generated_dataset(&src);
    let src_s = src.to_str().expect("utf-8");

    kill_backup_after_packs(&env, &src, 0, 4);
    let first = packs(&env.repo).len();
    kill_backup_after_packs(&env, &src, first, 6);
    let stored = pack_bytes(&env.repo);
    let left = unindexed(&env);
    assert!(
        left >= 6,
        "the second killed run left {left} unindexed packs"
    );
    assert!(common::all_files(&env.repo.join("snapshots")).is_empty());

    let s = env.backup_json(&[src_s]);
    let added = s["bytes_added"].as_u64().expect("bytes_added");
    let adopted = s["packs_adopted"].as_u64().expect("packs_adopted");
    // Text compresses: measure what a full backup of the same data stores.
    let reference = Env::with_repo(&["--pack-size", "1", "--chunker-params", "64K,128K,512K"]);
    let whole = reference.backup_json(&[src_s])["bytes_added"]
        .as_u64()
        .expect("bytes_added");
    assert!(
        added + stored <= whole + slack(left),
        "after {stored} bytes stored by killed runs, the re-run added {added}; \
         a whole backup adds {whole}"
    );
    assert_eq!(adopted, left, "every pack the killed runs left is adopted");

    check_read_data_clean(&env);
    let out = restore_to(&env, &format!("latest:{src_s}"), "out");
    for f in common::all_files(&src) {
        let rel = f.strip_prefix(&src).expect("prefix");
        assert!(
            fs::read(&f).expect("src") == fs::read(out.join(rel)).expect("restored"),
            "{} differs",
            rel.display()
        );
    }
}

/// An unindexed pack whose header doesn't authenticate (a byte flipped in it) is
/// left alone with a warning naming it; the others are adopted, and the backup
/// stores again only what the damaged pack held.
#[test]
fn unindexed_pack_with_a_damaged_header_is_skipped_with_a_warning() {
    // The sealed header ends just before the 4-byte length at the end.
    unindexed_damaged_pack_is_skipped(|len| len - 10);
}

/// The same for a byte flipped inside a blob, with the header intact: adoption
/// hashes the whole pack, so damaged blobs never enter the index (where later
/// backups would rely on them).
#[test]
fn unindexed_pack_with_a_damaged_blob_is_skipped_with_a_warning() {
    // Blobs start after the 42-byte prefix and session id; the first is a chunk
    // of at least 64 KiB.
    unindexed_damaged_pack_is_skipped(|_| 42 + 1000);
}

fn unindexed_damaged_pack_is_skipped(flip_at: fn(usize) -> usize) {
    let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "64K,128K,512K"]);
    let src = env.path("src");
    generated_dataset(&src);
    let src_s = src.to_str().expect("utf-8");
    kill_backup_after_packs(&env, &src, 0, 5);
    let left = packs(&env.repo);
    assert_eq!(unindexed(&env), left.len() as u64);
    let (damaged, size) = left.first().cloned().expect("a pack");
    let mut bytes = fs::read(&damaged).expect("read pack");
    let at = flip_at(bytes.len());
    bytes[at] ^= 0x40;
    fs::write(&damaged, &bytes).expect("write pack");
    assert_eq!(bytes.len() as u64, size);
    let name = damaged
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();

    let out = env.run(&["backup", "--json", src_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = common::stdout(&out);
    let warned = text.lines().any(|l| {
        serde_json::from_str::<serde_json::Value>(l)
            .is_ok_and(|v| v["message_type"] == "warning" && v["path"] == format!("pack {name}"))
    });
    assert!(warned, "no warning naming pack {name}:\n{text}");
    let s = common::last_json(&text, "summary");
    assert_eq!(
        s["packs_adopted"].as_u64(),
        Some(left.len() as u64 - 1),
        "{s}"
    );
    let out = restore_to(&env, &format!("latest:{src_s}"), "out");
    for f in common::all_files(&src) {
        let rel = f.strip_prefix(&src).expect("prefix");
        assert!(fs::read(&f).expect("src") == fs::read(out.join(rel)).expect("restored"));
    }
    // The damaged pack stays outside the index; prune removes it.
    env.ok(&["prune"]);
    assert!(!damaged.exists(), "prune kept the damaged unindexed pack");
    check_read_data_clean(&env);
}

/// Another backup adopts a pack while the backup that wrote it is still running:
/// both index it, and a pack named by two index files is fine for check, restore
/// and prune.
#[test]
fn pack_adopted_while_its_backup_runs_is_indexed_twice_harmlessly() {
    let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "64K,128K,512K"]);
    let a = env.path("a");
    generated_dataset(&a);
    let b = env.path("b");
    fs::create_dir_all(&b).expect("mkdir");
    for f in common::all_files(&a.join("shard-0")) {
        fs::copy(&f, b.join(f.file_name().expect("name"))).expect("copy");
    }
    let b_s = b.to_str().expect("utf-8").to_string();
    let mut other = env.cmd();
    other.args(["backup", "--json", &b_s]);
    let other = Arc::new(std::sync::Mutex::new(Some(other)));
    let other_out = Arc::new(std::sync::Mutex::new(None));
    let (repo_dir, hook_other, hook_out) =
        (env.repo.clone(), Arc::clone(&other), Arc::clone(&other_out));
    let backend = Arc::new(common::HookedBackend::new(
        &env.repo,
        move |inner: &LocalBackend, t, name: &str, data: &[u8]| {
            inner.write(t, name, data)?;
            // Once this backup's third pack is stored (and not yet indexed), a
            // real cairn process backs up overlapping data beside it.
            if t == FileType::Pack && packs(&repo_dir).len() >= 3 {
                let cmd = hook_other.lock().expect("lock").take();
                if let Some(mut cmd) = cmd {
                    let out = cmd.output().expect("run the other backup");
                    *hook_out.lock().expect("lock") = Some(out);
                }
            }
            Ok(())
        },
    ));
    common::backup_through(backend, &a).expect("backup of a");
    let out = other_out
        .lock()
        .expect("lock")
        .take()
        .expect("the other backup ran");
    assert!(out.status.success(), "{}", stderr(&out));
    let s = common::last_json(&common::stdout(&out), "summary");
    assert!(
        s["packs_adopted"].as_u64().expect("packs_adopted") >= 3,
        "{s}"
    );

    // Some pack is named by two index files.
    let repo = LocalBackend::new(&env.repo);
    let opened = cairn::repository::Repository::open(
        Arc::new(LocalBackend::new(&env.repo)),
        common::PASSWORD.as_bytes(),
    )
    .expect("open");
    let mut named = std::collections::HashMap::new();
    for e in repo.list(FileType::Index).expect("list") {
        let id = cairn::id::IndexId::from_name(&e.name).expect("index id");
        for p in opened.load_index_file(&id).expect("index").packs {
            *named.entry(p.id).or_insert(0) += 1;
        }
    }
    assert!(named.values().any(|&n| n > 1), "no pack indexed twice");

    check_read_data_clean(&env);
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    assert_eq!(list.as_array().expect("array").len(), 2);
    let compare = |src: &Path, out: &Path| {
        for f in common::all_files(src) {
            let rel = f.strip_prefix(src).expect("prefix");
            assert!(fs::read(&f).expect("src") == fs::read(out.join(rel)).expect("restored"));
        }
    };
    let id_of = |path: &str| {
        list.as_array()
            .expect("array")
            .iter()
            .find(|s| s["paths"][0] == path)
            .and_then(|s| s["id"].as_str())
            .expect("snapshot of the path")
            .to_string()
    };
    let a_s = a.to_str().expect("utf-8");
    let a_snap = format!("{}:{a_s}", id_of(a_s));
    let b_snap = format!("{}:{b_s}", id_of(&b_s));
    compare(&a, &restore_to(&env, &a_snap, "out-a"));
    compare(&b, &restore_to(&env, &b_snap, "out-b"));
    env.ok(&["prune"]);
    check_read_data_clean(&env);
    compare(&a, &restore_to(&env, &a_snap, "out-a2"));
    compare(&b, &restore_to(&env, &b_snap, "out-b2"));
}

/// A repository whose index files were all lost (deleted by hand, say) is
/// re-indexed by the next backup from the packs' headers: nothing is read or
/// stored again, and the older snapshot restores.
#[test]
fn lost_index_files_are_rebuilt_by_the_next_backup_without_rereading() {
    let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "64K,128K,512K"]);
    let src = env.path("src");
    generated_dataset(&src);
    let src_s = src.to_str().expect("utf-8");
    let first = env.backup_json(&[src_s]);
    let first_id = first["snapshot_id"].as_str().expect("id").to_string();
    for f in common::all_files(&env.repo.join("index")) {
        fs::remove_file(f).expect("remove index file");
    }
    // Staged by hand (a killed backup leaves packs no index names yet).
    common::unsee(&env);
    let before = packs(&env.repo).len() as u64;
    let s = env.backup_json(&[src_s]);
    assert_eq!(s["packs_adopted"].as_u64(), Some(before), "{s}");
    assert_eq!(s["bytes_read"], 0, "{s}");
    assert_eq!(s["files_changed"], 0, "{s}");
    assert_eq!(s["data_blobs_new"], 0, "{s}");
    check_read_data_clean(&env);
    let out = restore_to(&env, &format!("{first_id}:{src_s}"), "out");
    for f in common::all_files(&src) {
        let rel = f.strip_prefix(&src).expect("prefix");
        assert!(fs::read(&f).expect("src") == fs::read(out.join(rel)).expect("restored"));
    }
}

/// "Index files are written every 64 packs, so few packs are ever left to
/// find": a backup SIGKILLed after writing a hundred packs has indexed all but
/// fewer than 64 of them, and the re-run adopts only those.
#[test]
fn a_backup_killed_after_many_packs_left_fewer_than_64_unindexed() {
    let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "64K,128K,512K"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut rng = common::rng(64);
    for i in 0..130 {
        fs::write(
            src.join(format!("part-{i:03}.bin")),
            common::random_bytes(&mut rng, 1 << 20),
        )
        .expect("write");
    }
    kill_backup_after_packs(&env, &src, 0, 100);
    let written = packs(&env.repo).len() as u64;
    let left = unindexed(&env);
    assert!(
        left < 64,
        "{left} of {written} packs unindexed after the kill"
    );
    assert!(
        !common::all_files(&env.repo.join("index")).is_empty(),
        "no index file written in {written} packs"
    );

    let out = env.ok(&["--json", "backup", src.to_str().expect("utf-8")]);
    let s = common::last_json(&out, "summary");
    let adopted = s["packs_adopted"].as_u64().expect("packs_adopted");
    assert_eq!(adopted, left, "{s}");
    check_read_data_clean(&env);
}
