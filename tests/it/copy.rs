//! `cairn copy` and `init --from-repo`: snapshots from one repository into
//! another, re-chunked between unrelated repositories and blob for blob between
//! repositories that share ids.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn::backend::LocalBackend;
use cairn::pack::BlobKind;
use cairn::repository::Repository;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::{self, Env, last_json, stderr, stdout};

/// Small chunks, so that a few MiB make many blobs.
const SMALL_CHUNKS: [&str; 2] = ["--chunker-params", "16K,32K,128K"];
/// Other sizes, for a destination that cuts differently.
const OTHER_CHUNKS: [&str; 2] = ["--chunker-params", "8K,24K,96K"];

/// Random files in two directories, and compressible logs.
fn dataset(root: &Path, seed: u64) {
    for d in ["models", "logs"] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    common::random_files(&root.join("models"), seed, 4, 300 << 10, |i| {
        format!("ckpt-{i}.bin")
    });
    let mut rng = common::rng(seed + 1);
    for i in 0..3 {
        fs::write(
            root.join("logs").join(format!("run-{i}.log")),
            common::text_bytes(&mut rng, 100 << 10),
        )
        .expect("write");
    }
    fs::write(root.join("empty"), b"").expect("write");
    std::os::unix::fs::symlink("models/ckpt-0.bin", root.join("link")).expect("symlink");
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// `cairn copy --from-repo FROM` run in `to`, with `args`.
fn copy_run(to: &Env, from: &Env, args: &[&str]) -> std::process::Output {
    let mut all = vec![
        "copy",
        "--from-repo",
        s(&from.repo),
        "--from-password-file",
        s(&from.password_file),
    ];
    all.extend_from_slice(args);
    to.run(&all)
}

/// [`copy_run`] with `--json`, which must succeed; its summary.
fn copy_json(to: &Env, from: &Env, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = copy_run(to, from, &all);
    assert!(
        out.status.success(),
        "copy failed ({:?}):\n{}\n{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    let summary = last_json(&stdout(&out), "summary");
    assert_eq!(summary["command"], "copy");
    summary
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

fn copied(v: &serde_json::Value) -> usize {
    v["copied"].as_array().expect("copied").len()
}

fn open(env: &Env) -> Repository {
    Repository::open(
        Arc::new(LocalBackend::new(&env.repo)),
        common::PASSWORD.as_bytes(),
    )
    .expect("open")
}

/// Snapshots as `snapshots --json` lists them, oldest first.
fn snapshots(env: &Env) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    v.as_array().expect("array").clone()
}

fn check_clean(env: &Env) {
    let out = env.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors found"), "{out}");
}

#[test]
fn copy_between_unrelated_repositories_restores_byte_for_byte() {
    let a = Env::with_repo(&SMALL_CHUNKS);
    let b = Env::with_repo(&OTHER_CHUNKS);
    let src = a.path("src");
    dataset(&src, 1);
    let first = a.backup_json(&[s(&src), "--tag", "nightly", "--host", "box"]);
    let out = copy_run(&b, &a, &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // docs/json.md: a `copied` line per snapshot, then the summary.
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let types: Vec<&str> = lines
        .iter()
        .map(|l| l["message_type"].as_str().expect("message_type"))
        .filter(|t| *t != "status")
        .collect();
    assert_eq!(types, ["copied", "summary"]);
    let line = lines
        .iter()
        .find(|l| l["message_type"] == "copied")
        .expect("copied line");
    assert_eq!(line["source_id"], first["snapshot_id"]);
    let summary = last_json(&stdout(&out), "summary");
    assert_eq!(summary["command"], "copy");
    assert_eq!(copied(&summary), 1, "{summary}");
    assert_eq!(summary["copied"][0]["snapshot_id"], line["snapshot_id"]);
    assert_eq!(summary["rechunked"], true);
    assert!(n(&summary, "bytes_sent") > 0);

    let list = snapshots(&b);
    assert_eq!(list.len(), 1);
    let copy = &list[0];
    let a_list = snapshots(&a);
    let orig = &a_list[0];
    assert_eq!(copy["original"], first["snapshot_id"]);
    for key in [
        "time", "hostname", "username", "uid", "paths", "tags", "summary",
    ] {
        assert_eq!(copy[key], orig[key], "{key}");
    }
    assert_ne!(copy["tree"], orig["tree"], "trees are rebuilt with new ids");
    common::restore_matches(&b, "latest", &src);
    check_clean(&b);
}

/// A file backed up into the destination and the same file copied there share
/// all their blobs; two similar snapshots copied store only their difference.
#[test]
fn copies_deduplicate_in_the_destination() {
    let a = Env::with_repo(&SMALL_CHUNKS);
    let b = Env::with_repo(&OTHER_CHUNKS);
    let src = a.path("src");
    dataset(&src, 2);
    let data: u64 = common::all_files(&src)
        .iter()
        .map(|f| fs::metadata(f).expect("meta").len())
        .sum();
    a.backup_json(&[s(&src)]);
    let direct = b.backup_json(&[s(&src)]);
    assert!(n(&direct, "bytes_new") >= data);
    let summary = copy_json(&b, &a, &[]);
    assert_eq!(copied(&summary), 1);
    // Only trees are new: the directories' atimes differ from the backup's.
    assert!(
        n(&summary, "bytes_new") < 16 << 10,
        "copying what B already backed up sent {} of {data} bytes: {summary}",
        n(&summary, "bytes_new")
    );

    // Two similar snapshots into a fresh repository: the second costs about the
    // region that changed.
    let c = Env::with_repo(&OTHER_CHUNKS);
    let ckpt = src.join("models").join("ckpt-1.bin");
    let mut bytes = fs::read(&ckpt).expect("read");
    for b in &mut bytes[100 << 10..110 << 10] {
        *b ^= 0x5a;
    }
    fs::write(&ckpt, &bytes).expect("write");
    a.backup_json(&[s(&src)]);
    let both = copy_json(&c, &a, &[]);
    assert_eq!(copied(&both), 2);
    let sent = n(&both, "bytes_new");
    assert!(
        sent < data + (10 << 10) + 2 * 96 * 1024 + (32 << 10),
        "two snapshots differing in 10 KiB sent {sent} plaintext bytes for {data} of data"
    );
    common::restore_matches(&c, "latest", &src);
    check_clean(&c);
}

/// `init --from-repo`: the copy moves blobs as they are, each once, and the
/// snapshot names the same tree.
#[test]
fn init_from_repo_then_copy_sends_each_blob_once() {
    let a = Env::with_repo(&SMALL_CHUNKS);
    let src = a.path("src");
    dataset(&src, 3);
    a.backup_json(&[s(&src)]);

    let b = Env::new();
    let out = b.ok(&[
        "init",
        "--kdf-memory",
        "1024",
        "--kdf-iterations",
        "1",
        "--from-repo",
        s(&a.repo),
        "--from-password-file",
        s(&a.password_file),
    ]);
    assert!(out.contains("shares blob ids and chunking"), "{out}");
    let (ra, rb) = (open(&a), open(&b));
    assert_eq!(ra.config().chunker, rb.config().chunker);
    assert_ne!(ra.repo_id(), rb.repo_id());
    assert!(cairn::copy::shares_ids(&ra, &rb));

    let blobs_in_a = ra.load_index(&mut |_, _| {}).expect("index").blob_count() as u64;
    let summary = copy_json(&b, &a, &[]);
    assert_eq!(summary["rechunked"], false);
    assert_eq!(n(&summary, "blobs_sent"), blobs_in_a, "{summary}");
    assert_eq!(snapshots(&b)[0]["tree"], snapshots(&a)[0]["tree"]);

    // A second backup, then a copy: exactly the blobs that backup added.
    fs::write(src.join("logs").join("new.log"), b"one more line\n").expect("write");
    let second = a.backup_json(&[s(&src)]);
    let summary = copy_json(&b, &a, &[]);
    assert_eq!(copied(&summary), 1);
    assert_eq!(
        n(&summary, "blobs_sent"),
        n(&second, "data_blobs_new") + n(&second, "tree_blobs_new")
    );
    assert_eq!(snapshots(&b)[1]["tree"], snapshots(&a)[1]["tree"]);
    common::restore_matches(&b, "latest", &src);
    check_clean(&b);

    // Chunker sizes and the source's key go together.
    let c = Env::new();
    let out = c.run(&[
        "init",
        "--from-repo",
        s(&a.repo),
        "--chunker-params",
        "64K,128K,512K",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A copy run again copies nothing; copied back, nothing either; a copy of a
/// copy keeps the first original.
#[test]
fn copying_again_or_back_copies_nothing() {
    let a = Env::with_repo(&SMALL_CHUNKS);
    let b = Env::with_repo(&OTHER_CHUNKS);
    let src = a.path("src");
    dataset(&src, 4);
    let first = a.backup_json(&[s(&src)]);
    fs::write(src.join("extra"), b"x").expect("write");
    a.backup_json(&[s(&src)]);

    assert_eq!(copied(&copy_json(&b, &a, &[])), 2);
    let again = copy_json(&b, &a, &[]);
    assert_eq!(copied(&again), 0, "{again}");
    assert_eq!(again["already_there"].as_array().expect("list").len(), 2);
    assert_eq!(n(&again, "blobs_sent"), 0);
    let back = copy_json(&a, &b, &[]);
    assert_eq!(copied(&back), 0, "{back}");
    assert_eq!(snapshots(&a).len(), 2);

    // B's copies name A's snapshots; a copy of B's copy names A's too, and A
    // finds it already there.
    let c = Env::with_repo(&[]);
    assert_eq!(copied(&copy_json(&c, &b, &[])), 2);
    assert_eq!(snapshots(&c)[0]["original"], first["snapshot_id"]);
    assert_eq!(copied(&copy_json(&a, &c, &[])), 0);
    // The second copy's parent is the copy of the first.
    let list = snapshots(&c);
    assert_eq!(list[1]["parent"], list[0]["id"]);
    check_clean(&c);
}

#[test]
fn snapshots_are_selected_by_id_host_tag_and_path() {
    let a = Env::with_repo(&SMALL_CHUNKS);
    let (one, two) = (a.path("one"), a.path("two"));
    fs::create_dir_all(&one).expect("mkdir");
    fs::create_dir_all(&two).expect("mkdir");
    fs::write(one.join("f"), b"one").expect("write");
    fs::write(two.join("f"), b"two").expect("write");
    let x = a.backup_json(&[s(&one), "--host", "h1", "--tag", "x"]);
    let y = a.backup_json(&[s(&two), "--host", "h2"]);
    let z = a.backup_json(&[s(&one), "--host", "h1", "--tag", "z"]);
    let id = |v: &serde_json::Value| v["snapshot_id"].as_str().expect("id").to_string();

    let b = Env::with_repo(&[]);
    let by_host = copy_json(&b, &a, &["--host", "h2"]);
    assert_eq!(by_host["copied"][0]["source_id"], y["snapshot_id"]);
    assert_eq!(copied(&by_host), 1);
    let by_tag = copy_json(&b, &a, &["--tag", "z"]);
    assert_eq!(by_tag["copied"][0]["source_id"], z["snapshot_id"]);
    assert_eq!(copied(&by_tag), 1);
    let by_path = copy_json(&b, &a, &["--path", s(&one)]);
    assert_eq!(by_path["copied"][0]["source_id"], x["snapshot_id"]);
    assert_eq!(copied(&by_path), 1, "z is already there: {by_path}");
    assert_eq!(by_path["already_there"][0], z["snapshot_id"]);

    let c = Env::with_repo(&[]);
    let prefix = &id(&x)[..10];
    let by_id = copy_json(&c, &a, &[prefix, "latest"]);
    let sources: Vec<&serde_json::Value> = by_id["copied"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| &p["source_id"])
        .collect();
    assert_eq!(sources, [&x["snapshot_id"], &z["snapshot_id"]]);
    let none = copy_run(&c, &a, &["0000000000"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(stderr(&none).contains("0000000000"), "{}", stderr(&none));
}

#[test]
fn wrong_source_password_is_a_clear_error() {
    let a = Env::with_repo(&[]);
    let b = Env::with_repo(&[]);
    let wrong = b.path("wrong");
    common::write_private(&wrong, "not the password\n");
    let out = b.run(&[
        "copy",
        "--from-repo",
        s(&a.repo),
        "--from-password-file",
        s(&wrong),
    ]);
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("source repository")
            && err.contains(s(&a.repo))
            && err.contains("wrong password"),
        "{err}"
    );

    // The variables are chosen as the main password's: two at once is a usage
    // error naming both; a flag wins over them.
    let out = b
        .cmd()
        .args(["copy", "--from-repo", s(&a.repo)])
        .env("CAIRN_FROM_PASSWORD", common::PASSWORD)
        .env("CAIRN_FROM_PASSWORD_FILE", &wrong)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("CAIRN_FROM_PASSWORD_FILE") && err.contains("CAIRN_FROM_PASSWORD "),
        "{err}"
    );
    let out = b
        .cmd()
        .args(["copy", "--from-repo", s(&a.repo), "--from-password-file"])
        .arg(&a.password_file)
        .env("CAIRN_FROM_PASSWORD_FILE", &wrong)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = b
        .cmd()
        .args(["copy", "--from-repo", s(&a.repo)])
        .env("CAIRN_FROM_PASSWORD", common::PASSWORD)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    // Without --from-repo there is nothing to copy from.
    let out = b.run(&["copy"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A snapshot file that can't be read, and a snapshot one of whose blobs can't
/// be, are reported and skipped; the rest is copied; exit 1.
#[test]
fn unreadable_snapshots_and_blobs_fail_only_their_snapshot() {
    let a = Env::with_repo(&SMALL_CHUNKS);
    let (one, two, three) = (a.path("one"), a.path("two"), a.path("three"));
    for (i, d) in [&one, &two, &three].into_iter().enumerate() {
        fs::create_dir_all(d).expect("mkdir");
        common::random_files(d, 10 + i as u64, 2, 50 << 10, |k| format!("f{k}"));
    }
    let good = a.backup_json(&[s(&one)]);
    let damaged_blob = a.backup_json(&[s(&two)]);
    let damaged_file = a.backup_json(&[s(&three)]);

    // A byte of one of two's blobs flipped in its pack.
    let ra = open(&a);
    let index = ra.load_index(&mut |_, _| {}).expect("index");
    let sid = cairn::id::SnapshotId::from_name(damaged_blob["snapshot_id"].as_str().unwrap())
        .expect("id");
    let snap = ra.load_snapshot(&sid).expect("snapshot");
    let sel = cairn::walk::resolve(&ra, &index, &snap.tree, &format!("{}/f0", two.display()))
        .expect("f0");
    let cairn::walk::Selection::Node { node, .. } = sel else {
        panic!("f0 is a file")
    };
    let blob = node.content[0];
    let (pack, entry) = index.get(BlobKind::Data, &blob).expect("in index");
    let hex = pack.to_hex();
    let pack_path = a.repo.join("data").join(&hex[..2]).join(&hex);
    flip(&pack_path, entry.offset as usize + 40);
    // And the third snapshot's file damaged.
    let name = damaged_file["snapshot_id"].as_str().expect("id");
    flip(&a.repo.join("snapshots").join(name), 60);

    let b = Env::with_repo(&[]);
    let out = copy_run(&b, &a, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&blob.to_hex()) && err.contains(&hex),
        "the error names the blob and its pack: {err}"
    );
    assert!(err.contains(&name[..8]), "{err}");
    let list = snapshots(&b);
    assert_eq!(list.len(), 1, "{}", stdout(&out));
    assert_eq!(list[0]["original"], good["snapshot_id"]);
    common::restore_matches(&b, "latest", &one);
    check_clean(&b);
}

fn flip(p: &Path, at: usize) {
    let mut bytes = fs::read(p).expect("read");
    bytes[at] ^= 0x01;
    fs::write(p, bytes).expect("write");
}

/// Packs under their final names in `repo`.
fn packs(repo: &Path) -> Vec<PathBuf> {
    common::all_files(&repo.join("data"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 64)
        })
        .collect()
}

fn pack_bytes(repo: &Path) -> u64 {
    packs(repo)
        .iter()
        .map(|p| fs::metadata(p).expect("meta").len())
        .sum()
}

/// Runs `child` a step at a time (stopped with SIGSTOP between steps) until
/// `repo` holds `n` packs, and leaves it stopped: whatever happens next lands
/// mid-copy however fast the machine is.
fn stop_after_packs(child: &mut std::process::Child, repo: &Path, n: usize) {
    let pid = Pid::from_raw(child.id() as i32);
    loop {
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        if packs(repo).len() >= n {
            return;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("cairn exited ({status}) before {n} packs were written");
        }
        kill(pid, Signal::SIGCONT).expect("SIGCONT");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Ctrl-C (SIGINT) mid-copy: exit 130, no snapshot, and what was written is
/// indexed, so nothing is left for the next run to adopt.
#[test]
fn an_interrupted_copy_exits_130_and_indexes_what_it_wrote() {
    let a = Env::with_repo(&["--pack-size", "1", "--chunker-params", "64K,128K,512K"]);
    let src = a.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    common::random_files(&src, 78, 16, 1 << 20, |i| format!("part-{i:02}.bin"));
    a.backup_json(&[s(&src)]);
    let b = Env::with_repo(&["--pack-size", "1"]);
    let mut child = b
        .cmd()
        .args([
            "copy",
            "-q",
            "--from-repo",
            s(&a.repo),
            "--from-password-file",
            s(&a.password_file),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    stop_after_packs(&mut child, &b.repo, 3);
    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGINT).expect("SIGINT");
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    assert!(common::all_files(&b.repo.join("snapshots")).is_empty());
    let resumed = copy_json(&b, &a, &[]);
    assert_eq!(n(&resumed, "packs_adopted"), 0, "{resumed}");
    assert_eq!(copied(&resumed), 1);
    common::restore_matches(&b, "latest", &src);
}

/// A copy SIGKILLed part way (stepped with SIGSTOP, so the kill lands mid-copy
/// however fast the machine): the next run adopts what was written and sends
/// only the rest; the result restores and checks clean.
#[test]
fn a_killed_copy_resumes_without_sending_again() {
    let a = Env::with_repo(&["--pack-size", "1", "--chunker-params", "64K,128K,512K"]);
    let src = a.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    common::random_files(&src, 77, 24, 1 << 20, |i| format!("part-{i:02}.bin"));
    a.backup_json(&[s(&src)]);
    // Re-chunked into an unrelated repository, and blob for blob into one that
    // shares A's ids.
    for shared in [false, true] {
        let new_repo = || {
            if !shared {
                return Env::with_repo(&["--pack-size", "1"]);
            }
            let env = Env::new();
            env.ok(&[
                "init",
                "--kdf-memory",
                "1024",
                "--kdf-iterations",
                "1",
                "--pack-size",
                "1",
                "--from-repo",
                s(&a.repo),
                "--from-password-file",
                s(&a.password_file),
            ]);
            env
        };
        let b = new_repo();
        let mut child = b
            .cmd()
            .args([
                "copy",
                "-q",
                "--from-repo",
                s(&a.repo),
                "--from-password-file",
                s(&a.password_file),
            ])
            .spawn()
            .expect("spawn");
        stop_after_packs(&mut child, &b.repo, 6);
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        assert!(common::all_files(&b.repo.join("snapshots")).is_empty());
        let stored = pack_bytes(&b.repo);

        let resumed = copy_json(&b, &a, &[]);
        assert_eq!(copied(&resumed), 1);
        let reference = new_repo();
        let whole = n(&copy_json(&reference, &a, &[]), "bytes_sent");
        let sent = n(&resumed, "bytes_sent");
        assert!(
            sent + stored <= whole + (512 << 10) && sent < whole,
            "after {stored} bytes stored by the killed run, the re-run sent {sent}; \
             a whole copy sends {whole}: {resumed}"
        );
        assert_eq!(resumed["rechunked"], !shared);
        assert!(n(&resumed, "packs_adopted") >= 1, "{resumed}");
        common::restore_matches(&b, "latest", &src);
        check_clean(&b);
    }
}

/// The library: an interrupted copy commits nothing and says so.
#[test]
fn an_interrupted_copy_commits_nothing() {
    let a = Env::with_repo(&SMALL_CHUNKS);
    let b = Env::with_repo(&[]);
    let src = a.path("src");
    dataset(&src, 5);
    a.backup_json(&[s(&src)]);
    let (ra, rb) = (Arc::new(open(&a)), Arc::new(open(&b)));
    let ids: Vec<_> = ra
        .list_snapshots()
        .expect("list")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(true);
    let r = cairn::copy::copy(&ra, &rb, &ids, &Default::default(), &stop, &|_| {});
    assert!(matches!(r, Err(cairn::Error::Interrupted)), "{r:?}");
    assert!(rb.list_snapshots().expect("list").is_empty());

    let go = std::sync::atomic::AtomicBool::new(false);
    let r = cairn::copy::copy(&ra, &rb, &ids, &Default::default(), &go, &|_| {}).expect("copy");
    assert_eq!(r.copied.len(), 1);
    assert!(r.rechunked);
    assert!(r.failed.is_empty() && r.already_there.is_empty());
}

/// Data packs of `env` (packs of data blobs), by the index.
fn data_packs(env: &Env) -> Vec<(PathBuf, u32)> {
    let repo = open(env);
    let mut out = Vec::new();
    for id in repo
        .list_ids(
            cairn::backend::FileType::Index,
            cairn::id::IndexId::from_name,
        )
        .expect("index ids")
    {
        for p in repo.load_index_file(&id).expect("index file").packs {
            if let Some(first) = p.blobs.iter().find(|e| e.kind == BlobKind::Data) {
                let hex = p.id.to_hex();
                out.push((
                    env.repo.join("data").join(&hex[..2]).join(&hex),
                    first.offset,
                ));
            }
        }
    }
    out
}

/// Re-chunking a later snapshot in a run of its own: files unchanged since the
/// snapshot copied before take that copy's blobs without being read again. The
/// proof: with the data the first snapshot alone holds damaged in the source,
/// the later snapshot still copies (and into a repository without the earlier
/// copy, it doesn't).
#[test]
fn a_later_snapshot_copied_in_another_run_reads_only_what_changed() {
    let a = Env::with_repo(&SMALL_CHUNKS);
    let src = a.path("src");
    dataset(&src, 6);
    let first = a.backup_json(&[s(&src)]);
    let b = Env::with_repo(&OTHER_CHUNKS);
    let first_id = first["snapshot_id"].as_str().expect("id");
    assert_eq!(copied(&copy_json(&b, &a, &[first_id])), 1);

    let before = data_packs(&a);
    fs::write(src.join("models").join("new.bin"), b"new data").expect("write");
    a.backup_json(&[s(&src)]);
    for (pack, offset) in &before {
        flip(pack, *offset as usize + 40);
    }
    let fresh = Env::with_repo(&OTHER_CHUNKS);
    let out = copy_run(&fresh, &a, &["latest"]);
    assert_eq!(out.status.code(), Some(1), "the damage is real");

    let later = copy_json(&b, &a, &["latest"]);
    assert_eq!(copied(&later), 1, "{later}");
    assert!(n(&later, "bytes_new") < 16 << 10, "{later}");
    common::restore_matches(&b, "latest", &src);
    check_clean(&b);
}
