//! prune and forget as users meet them: convergence, damaged snapshots, leftovers
//! of killed processes, a full disk (issue #11).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{self, Env, stderr};

/// A repository with two snapshots in small packs; the first one forgotten, so
/// that prune has packs to delete and to repack.
fn forgotten_first() -> (Env, PathBuf) {
    let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "16K,64K,256K"]);
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    let mut rng = common::rng(77);
    for i in 0..4 {
        fs::write(
            src.join(format!("r{i}.bin")),
            common::random_bytes(&mut rng, 300_000),
        )
        .expect("write");
        fs::write(
            src.join("sub").join(format!("s{i}.txt")),
            format!("small {i}"),
        )
        .expect("write");
    }
    let s = src.to_str().expect("utf-8").to_string();
    env.ok(&["backup", &s]);
    fs::write(src.join("r0.bin"), common::random_bytes(&mut rng, 200_000)).expect("write");
    fs::remove_file(src.join("sub").join("s1.txt")).expect("rm");
    env.ok(&["backup", &s]);
    env.ok(&["forget", "--keep-last", "1"]);
    (env, src)
}

/// Every file of the repository but its locks, with its bytes' hash: what "no
/// file changed" compares.
fn files(env: &Env) -> BTreeMap<PathBuf, blake3::Hash> {
    common::all_files(&env.repo)
        .into_iter()
        .filter(|p| !p.starts_with(env.repo.join("locks")))
        .map(|p| {
            let h = blake3::hash(&fs::read(&p).expect("read"));
            (p, h)
        })
        .collect()
}

fn prune_json(env: &Env, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json", "prune"];
    args.extend_from_slice(extra);
    common::last_json(&env.ok(&args), "summary")
}

fn check_clean(env: &Env) -> String {
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "check not clean:\n{}", stderr(&out));
    stderr(&out)
}

/// Issue #11 item 8: a pack's padded header counted as unused space, so a small
/// pack was repacked by every prune, into the same again.
#[test]
fn a_second_prune_right_after_the_first_does_nothing() {
    let (env, src) = forgotten_first();
    let first = prune_json(&env, &["--max-unused", "0"]);
    assert!(
        first["packs_deleted"].as_u64() > Some(0) && first["packs_repacked"].as_u64() > Some(0),
        "{first}"
    );
    let before = files(&env);
    for threshold in ["0", "10"] {
        let again = prune_json(&env, &["--max-unused", threshold]);
        assert_eq!(again["nothing_to_do"], true, "{again}");
        for key in [
            "packs_deleted",
            "packs_repacked",
            "packs_written",
            "index_files_replaced",
        ] {
            assert_eq!(again[key], 0, "{key}: {again}");
        }
        assert_eq!(files(&env), before, "a second prune changed files");
        let human = env.ok(&["prune", "--max-unused", threshold]);
        assert!(human.contains("nothing to prune"), "{human}");
        assert_eq!(files(&env), before);
    }
    // After `--max-unused 0`, no unused blob is left.
    assert_eq!(prune_json(&env, &["--max-unused", "0"])["unused_blobs"], 0);
    check_clean(&env);
    common::restore_matches(&env, "latest", &src);
}

/// The snapshot files' names (their ids), oldest file first is not implied.
fn snapshot_ids(env: &Env) -> Vec<String> {
    common::all_files(&env.repo.join("snapshots"))
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect()
}

fn flip_middle(p: &Path) {
    let mut b = fs::read(p).expect("read");
    let i = b.len() / 2;
    b[i] ^= 0x01;
    fs::write(p, b).expect("write");
}

/// Two snapshots of `src`, the second with a changed file; returns the ids of
/// the first and the second.
fn two_snapshots() -> (Env, PathBuf, String, String) {
    let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "16K,64K,256K"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut rng = common::rng(78);
    for i in 0..3 {
        fs::write(
            src.join(format!("f{i}.bin")),
            common::random_bytes(&mut rng, 200_000),
        )
        .expect("write");
    }
    let s = src.to_str().expect("utf-8").to_string();
    let first = env.backup_json(&[&s])["snapshot_id"]
        .as_str()
        .expect("id")
        .to_string();
    fs::write(src.join("f0.bin"), common::random_bytes(&mut rng, 250_000)).expect("write");
    let second = env.backup_json(&[&s])["snapshot_id"]
        .as_str()
        .expect("id")
        .to_string();
    (env, src, first, second)
}

/// Issue #11 items 2 and 3: the newest snapshot's file is damaged. prune deletes
/// nothing (only that snapshot knows which data it needs) and names the exact
/// command; `latest` is an error rather than quietly the older snapshot; the
/// damaged snapshot is removed by a prefix of its file name.
#[test]
fn a_damaged_snapshot_stops_prune_and_latest_until_forgotten_by_prefix() {
    let (env, src, first, second) = two_snapshots();
    flip_middle(&env.repo.join("snapshots").join(&second));
    let before = files(&env);

    for args in [
        &["prune"][..],
        &["prune", "--dry-run"],
        &["prune", "--max-unused", "0"],
    ] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("`cairn forget {second}`")), "{err}");
        assert!(err.contains("deleted nothing"), "{err}");
        assert_eq!(files(&env), before, "{args:?} changed the repository");
    }

    let target = env.path("latest");
    for args in [
        vec![
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf-8"),
        ],
        vec!["ls", "latest"],
        vec!["cat", "snapshot", "latest"],
    ] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("latest is unknown") && err.contains(&second),
            "{args:?}: {err}"
        );
    }
    assert!(!target.exists(), "restore latest wrote something");
    // Named by id, the readable snapshot restores, with a word about the other.
    let out = env.run(&[
        "restore",
        &format!("{}:{}", &first[..8], src.display()),
        "--target",
        env.path("by-id").to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&second[..8]), "{}", stderr(&out));

    // forget by a prefix of the damaged file's name.
    let out = env.run(&["forget", &second[..10]]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("unreadable"), "{}", stderr(&out));
    assert_eq!(snapshot_ids(&env), std::slice::from_ref(&first));
    check_clean(&env);
    let p = prune_json(&env, &["--max-unused", "0"]);
    assert!(
        p["packs_deleted"].as_u64() > Some(0) || p["packs_repacked"].as_u64() > Some(0),
        "{p}"
    );
    check_clean(&env);
    let out = env.run(&["cat", "snapshot", "latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Issue #11 item 2: `repair snapshots --forget` removes snapshot files too
/// damaged to read; without `--forget`, or with `--dry-run`, they stay.
#[test]
fn repair_snapshots_forget_removes_unreadable_snapshot_files() {
    let (env, _src, first, second) = two_snapshots();
    flip_middle(&env.repo.join("snapshots").join(&first));
    for args in [
        &["repair", "snapshots"][..],
        &["repair", "snapshots", "--forget", "--dry-run"],
    ] {
        let out = env.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(&first), "{}", stderr(&out));
        assert_eq!(snapshot_ids(&env).len(), 2, "{args:?} removed a snapshot");
    }
    let out = env.run(&["repair", "snapshots", "--forget"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        common::stdout(&out).contains("1 snapshot is unreadable; 1 removed"),
        "{}",
        common::stdout(&out)
    );
    assert_eq!(snapshot_ids(&env), [second]);
    check_clean(&env);
}

/// Issue #11 item 3: a repaired snapshot keeps the original's time; `latest`
/// must be the repaired one whichever id is smaller. Ids are random, so the
/// setup is repeated until the repaired snapshot's id sorts first (each try has
/// an even chance).
#[test]
fn latest_after_repair_snapshots_is_the_repaired_one() {
    for _ in 0..16 {
        let env = Env::with_repo(&[]);
        let src = env.path("src");
        fs::create_dir_all(&src).expect("mkdir");
        fs::write(src.join("a.txt"), "lost soon").expect("write");
        let original = env.backup_json(&[src.to_str().expect("utf-8")])["snapshot_id"]
            .as_str()
            .expect("id")
            .to_string();
        // Lose the data pack (the one whose header lists a data blob).
        for p in common::all_files(&env.repo.join("data")) {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            let v: serde_json::Value =
                serde_json::from_str(&env.ok(&["cat", "pack", &name])).expect("json");
            if v["blobs"]
                .as_array()
                .expect("blobs")
                .iter()
                .any(|b| b["type"] == "data")
            {
                fs::remove_file(&p).expect("rm");
            }
        }
        env.ok(&["repair", "index"]);
        env.ok(&["repair", "snapshots"]);
        let repaired: Vec<String> = snapshot_ids(&env)
            .into_iter()
            .filter(|id| *id != original)
            .collect();
        assert_eq!(repaired.len(), 1);
        if repaired[0] > original {
            continue;
        }
        let latest: serde_json::Value =
            serde_json::from_str(&env.ok(&["cat", "snapshot", "latest"])).expect("json");
        assert_eq!(latest["parent"], original.as_str(), "{latest}");
        assert!(
            latest["tags"]
                .as_array()
                .expect("tags")
                .iter()
                .any(|t| t == "repaired"),
            "{latest}"
        );
        let target = env.path("out");
        env.ok(&[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf-8"),
        ]);
        // forget --keep-last 1 keeps the repaired one too.
        env.ok(&["forget", "--keep-last", "1"]);
        assert_eq!(snapshot_ids(&env), repaired);
        return;
    }
    panic!("in 16 tries the repaired snapshot's id never sorted before the original's");
}

/// `.tmp-*` files anywhere in the repository.
fn temp_files(env: &Env) -> Vec<PathBuf> {
    common::all_files(&env.repo)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .collect()
}

fn age(p: &Path, by: std::time::Duration) {
    fs::File::options()
        .write(true)
        .open(p)
        .expect("open")
        .set_modified(std::time::SystemTime::now() - by)
        .expect("set mtime");
}

/// Issue #11 item 4: a backup SIGKILLed while writing a pack leaves its
/// temporary file. check warns about it (count and size; not damage), prune
/// keeps it while it is young (a live writer's could look the same) and removes
/// it once older than the lock staleness window; a fresh one planted beside it
/// stays.
#[test]
fn temporary_files_of_a_killed_backup_are_reported_and_pruned_once_old() {
    let env = Env::with_repo(&["--pack-size", "4"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    common::random_files(&src, 79, 8, 8 << 20, |i| format!("big{i}.bin"));
    // Kill the backup the moment a temporary file shows up.
    let mut left = Vec::new();
    for _ in 0..10 {
        let mut child = env
            .cmd()
            .args(["backup", "-q", src.to_str().expect("utf-8")])
            .spawn()
            .expect("spawn");
        let start = std::time::Instant::now();
        while temp_files(&env).is_empty()
            && child.try_wait().expect("wait").is_none()
            && start.elapsed() < std::time::Duration::from_secs(60)
        {}
        let _ = child.kill();
        let _ = child.wait();
        left = temp_files(&env);
        if !left.is_empty() {
            break;
        }
    }
    assert!(!left.is_empty(), "no try left a temporary file behind");
    let bytes: u64 = left
        .iter()
        .map(|p| fs::metadata(p).expect("stat").len())
        .sum();

    let out = env.run(&["check"]);
    assert!(
        out.status.success(),
        "leftovers are not damage: {}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("warning: temporary files: {} left", left.len()))
            && err.contains(&format!("{bytes} bytes")),
        "{err}"
    );
    assert!(
        common::stdout(&out).contains("(1 warning)"),
        "{}",
        common::stdout(&out)
    );

    // Young: kept.
    let p = prune_json(&env, &[]);
    assert_eq!(p["temp_files_removed"], 0, "{p}");
    assert_eq!(
        p["temp_files_kept"].as_u64(),
        Some(left.len() as u64),
        "{p}"
    );
    assert_eq!(temp_files(&env), left);

    // Older than the window (30 minutes): removed; a fresh one planted now stays.
    for p in &left {
        age(p, std::time::Duration::from_secs(31 * 60));
    }
    let fresh = env.repo.join("index").join(".tmp-00112233aabbccdd");
    fs::write(&fresh, b"a write in progress").expect("plant");
    let dry = prune_json(&env, &["--dry-run"]);
    assert_eq!(
        dry["temp_files_removed"].as_u64(),
        Some(left.len() as u64),
        "{dry}"
    );
    assert_eq!(
        temp_files(&env).len(),
        left.len() + 1,
        "dry run removed files"
    );
    let p = prune_json(&env, &[]);
    assert_eq!(
        p["temp_files_removed"].as_u64(),
        Some(left.len() as u64),
        "{p}"
    );
    assert_eq!(p["bytes_temp_removed"].as_u64(), Some(bytes), "{p}");
    assert_eq!(p["temp_files_kept"], 1, "{p}");
    assert_eq!(temp_files(&env), std::slice::from_ref(&fresh));
    fs::remove_file(&fresh).expect("rm");
    let out = env.run(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("temporary"), "{}", stderr(&out));
    // What the killed backup left is usable: a new backup completes and restores.
    env.ok(&["backup", "-q", src.to_str().expect("utf-8")]);
    common::restore_matches(&env, "latest", &src);
}

fn free_bytes(p: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(p).expect("statvfs");
    #[allow(clippy::useless_conversion)]
    let free = u64::from(st.blocks_available()) * u64::from(st.fragment_size());
    free
}

/// Writes `filler` until the filesystem is full, then gives back `leave` bytes.
fn fill(filler: &Path, leave: u64) {
    use std::io::Write;
    let mut f = fs::File::create(filler).expect("create filler");
    let block = vec![0x5a; 64 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling: {e}"),
        }
    }
    let _ = f.sync_all();
    let len = f.metadata().expect("stat").len();
    f.set_len(len.saturating_sub(leave)).expect("truncate");
}

/// Files of 3 MiB, kept and dropped in turn, in 1 MiB packs: after the first
/// snapshot is forgotten, some packs are wholly unused and the packs across a
/// file boundary are partly used, more than a pack's worth in all.
fn kept_and_dropped_in_turn(env: &Env) -> PathBuf {
    env.ok(&[
        "init",
        "--kdf-memory",
        "1024",
        "--kdf-iterations",
        "1",
        "--pack-size",
        "1",
        "--chunker-params",
        "16K,64K,256K",
    ]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut rng = common::rng(80);
    for name in ["a-keep", "b-drop", "c-keep", "d-drop"] {
        fs::write(src.join(name), common::random_bytes(&mut rng, 3 << 20)).expect("write");
    }
    let s = src.to_str().expect("utf-8").to_string();
    env.ok(&["backup", "-q", &s]);
    for name in ["b-drop", "d-drop"] {
        fs::remove_file(src.join(name)).expect("rm");
    }
    env.ok(&["backup", "-q", &s]);
    env.ok(&["forget", "-q", "--keep-last", "1"]);
    src
}

/// Issue #11 item 7: on a full disk prune can't repack (that needs room first),
/// but it deletes the wholly unused packs — the new index first, then the old
/// index files, then the packs — says what needs more room, and leaves a clean
/// repository. With room again, the next prune repacks.
#[test]
fn prune_on_a_full_disk_frees_unused_packs_and_says_what_needs_room() {
    let mut env = Env::new();
    let mnt = env.path("mnt");
    let Some(_mount) = common::tmpfs_or_skip(&mnt, "40m") else {
        return;
    };
    env.repo = mnt.join("repo");
    let src = kept_and_dropped_in_turn(&env);
    let plan = prune_json(&env, &["--max-unused", "0", "--dry-run"]);
    assert!(
        plan["packs_deleted"].as_u64() > Some(0) && plan["packs_repacked"].as_u64() > Some(0),
        "the setup needs packs to delete and to repack: {plan}"
    );

    // Full, but for less than any pack: a backup that ran out of room leaves that.
    let filler = mnt.join("filler");
    fill(&filler, 256 * 1024);
    let free_before = free_bytes(&mnt);
    assert!(free_before < 1 << 20, "{free_before}");

    let out = env.run(&["--json", "prune", "--max-unused", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let p = common::last_json(&common::stdout(&out), "summary");
    assert_eq!(p["packs_deleted"], plan["packs_deleted"], "{p}");
    assert_eq!(p["packs_repacked"], 0, "{p}");
    assert_eq!(p["packs_written"], 0, "{p}");
    assert_eq!(p["packs_not_repacked"], plan["packs_repacked"], "{p}");
    assert!(
        p["bytes_needed_for_repack"].as_u64() > Some(free_before),
        "{p}"
    );
    assert!(
        free_bytes(&mnt) >= free_before + p["bytes_deleted"].as_u64().expect("n"),
        "prune freed less than it says"
    );
    let notes = check_clean(&env);
    assert!(!notes.contains("not in any index"), "{notes}");
    common::restore_matches(&env, "latest", &src);

    // Full again: only the repack is left, and it still doesn't fit. Nothing is
    // rewritten, and the user hears what needs room.
    fs::remove_file(&filler).expect("rm filler");
    fill(&filler, 256 * 1024);
    let before = files(&env);
    let human = env.run(&["prune", "--max-unused", "0"]);
    assert!(human.status.success(), "{}", stderr(&human));
    assert_eq!(
        files(&env),
        before,
        "a prune that could do nothing changed files"
    );
    assert!(
        stderr(&human).contains("free some and run `cairn prune` again")
            && common::stdout(&human).contains("unrepacked for lack of room"),
        "{}\n{}",
        common::stdout(&human),
        stderr(&human)
    );
    let notes = check_clean(&env);
    assert!(!notes.contains("not in any index"), "{notes}");
    common::restore_matches(&env, "latest", &src);

    // Room again: the next prune repacks, and then there is nothing left to do.
    fs::remove_file(&filler).expect("rm filler");
    let p = prune_json(&env, &["--max-unused", "0"]);
    assert!(p["packs_repacked"].as_u64() > Some(0), "{p}");
    assert_eq!(p["packs_not_repacked"], 0, "{p}");
    assert_eq!(
        prune_json(&env, &["--max-unused", "0"])["nothing_to_do"],
        true
    );
    check_clean(&env);
    common::restore_matches(&env, "latest", &src);
}

/// Issue #11 item 7, when the storage says nothing of its free space and fills
/// up during the repack: the packs this prune wrote are removed again, the packs
/// to repack stay, and the wholly unused ones are still deleted.
#[test]
fn prune_whose_repack_runs_out_of_room_still_deletes_unused_packs() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use cairn::backend::FileType;

    let env = Env::new();
    let src = kept_and_dropped_in_turn(&env);
    let pack_writes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&pack_writes);
    let backend = common::HookedBackend::new(
        &env.repo,
        move |inner: &cairn::backend::LocalBackend, t: FileType, name: &str, data: &[u8]| {
            use cairn::backend::Backend;
            // The first new pack fits; the second finds the disk full.
            if t == FileType::Pack && counted.fetch_add(1, Ordering::SeqCst) >= 1 {
                return Err(cairn::Error::io(
                    inner.path(t, name),
                    std::io::Error::from_raw_os_error(libc::ENOSPC),
                ));
            }
            inner.write(t, name, data)
        },
    );
    let repo = Arc::new(
        cairn::repository::Repository::open(Arc::new(backend), common::PASSWORD.as_bytes())
            .expect("open"),
    );
    let opts = cairn::prune::PruneOptions {
        max_unused_percent: 0.0,
        ..Default::default()
    };
    let messages = std::sync::Mutex::new(Vec::<String>::new());
    let s = cairn::prune::prune(
        &repo,
        &opts,
        &std::sync::atomic::AtomicBool::new(false),
        &|m: &str| messages.lock().expect("lock").push(m.to_string()),
    )
    .expect("prune");
    assert!(
        pack_writes.load(Ordering::SeqCst) >= 2,
        "the repack wrote one pack at most"
    );
    assert!(s.packs_deleted > 0, "{s:?}");
    assert!(s.packs_not_repacked > 0 && s.packs_repacked == 0, "{s:?}");
    assert_eq!((s.packs_written, s.bytes_written), (0, 0), "{s:?}");
    let said = messages.lock().expect("lock").join("\n");
    assert!(said.contains("storage is full"), "{said}");
    drop(repo);
    // The pack that was written is gone again, nothing else is unindexed.
    let notes = check_clean(&env);
    assert!(!notes.contains("not in any index"), "{notes}");
    common::restore_matches(&env, "latest", &src);
}

/// Two index files that describe one pack differently (each lists a different
/// part of its blobs; `check` reports it as an error): prune found every blob in
/// the union of the index, but planned from the first description alone, so the
/// blobs only the other lists had no home and were dropped from the new index
/// (or, with nothing kept, the pack was deleted). Prune must lose nothing.
#[test]
fn prune_with_a_pack_described_differently_by_two_index_files_loses_nothing() {
    use cairn::backend::{FileType, LocalBackend};
    use cairn::id::IndexId;
    use cairn::index::IndexFile;
    use cairn::pack::BlobKind;
    use std::sync::Arc;

    let (env, src) = forgotten_first();
    let repo = Arc::new(
        cairn::repository::Repository::open(
            Arc::new(LocalBackend::new(&env.repo)),
            common::PASSWORD.as_bytes(),
        )
        .expect("open"),
    );
    // The index file naming a data pack of two or more blobs is replaced by two
    // files, each naming that pack with about half of its blobs.
    let ids = repo
        .list_ids(FileType::Index, IndexId::from_name)
        .expect("list");
    let (file_id, mut file, at) = ids
        .iter()
        .find_map(|id| {
            let f = repo.load_index_file(id).expect("index");
            let at = f.packs.iter().position(|p| {
                p.blobs.len() >= 2 && p.blobs.iter().all(|e| e.kind == BlobKind::Data)
            })?;
            Some((*id, f, at))
        })
        .expect("a data pack with two blobs");
    let mut other = file.packs[at].clone();
    let half = other.blobs.len() / 2;
    file.packs[at].blobs.truncate(half);
    other.blobs.drain(..half);
    repo.save_index(&file).expect("save");
    repo.save_index(&IndexFile { packs: vec![other] })
        .expect("save");
    repo.backend()
        .remove(FileType::Index, &file_id.to_hex())
        .expect("remove");
    drop(repo);
    // Staged by hand, as no cairn command would leave it: not a loss to report.
    common::unsee(&env);

    let before = files(&env);
    let out = env.run(&["prune", "--max-unused", "0"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("describe pack") && stderr(&out).contains("repair index"),
        "{}",
        stderr(&out)
    );
    assert_eq!(files(&env), before, "a refused prune changed files");
    common::restore_matches(&env, "latest", &src);
    env.ok(&["repair", "index"]);
    check_clean(&env);
    prune_json(&env, &["--max-unused", "0"]);
    check_clean(&env);
    common::restore_matches(&env, "latest", &src);
}

/// A snapshot file written by a newer cairn is not damage: `check` reports it
/// but must not tell the user to `forget` it (which would drop a good snapshot,
/// and its data at the next prune); a damaged one it does name.
#[test]
fn check_suggests_forget_for_damaged_snapshots_only_not_newer_ones() {
    let (env, _src, first, second) = two_snapshots();
    let snaps = env.repo.join("snapshots");
    // As a newer cairn would write it: another version byte, under its new name.
    let path = snaps.join(&second);
    let mut bytes = fs::read(&path).expect("read");
    bytes[8] = 2;
    fs::remove_file(&path).expect("remove");
    let newer = hex::encode(blake3::hash(&bytes).as_bytes());
    fs::write(snaps.join(&newer), bytes).expect("write");
    flip_middle(&snaps.join(&first));

    let out = env.run(&["check", "--json"]);
    assert!(!out.status.success());
    let summary = common::last_json(&common::stdout(&out), "summary");
    let forget: Vec<String> = summary["next_steps"]
        .as_array()
        .expect("next_steps")
        .iter()
        .filter_map(|s| s["command"].as_str())
        .filter(|c| c.starts_with("cairn forget"))
        .map(String::from)
        .collect();
    assert_eq!(forget, [format!("cairn forget {first}")], "{summary}");
}

/// `prune` removes a `.tmp-*` file only when it is more than 30 minutes old by
/// the storage's clock and by the host's: a host whose clock runs an hour ahead
/// keeps a fresh one (a live writer's), and one whose clock runs an hour behind
/// keeps one the storage dates 31 minutes back. Needs libfaketime.
#[test]
fn temporary_files_are_old_only_by_both_clocks() {
    use crate::locks::FAKETIME;
    if !Path::new(FAKETIME).exists() {
        eprintln!("skipped: {FAKETIME} is missing (Debian package faketime)");
        return;
    }
    let env = Env::with_repo(&[]);
    let tmp = env.repo.join("data").join(".tmp-00112233aabbccdd");
    fs::create_dir_all(tmp.parent().expect("data")).expect("mkdir");
    fs::write(&tmp, b"a pack being written").expect("plant");
    let prune_at = |offset: &str| -> serde_json::Value {
        let out = env
            .cmd()
            .env("LD_PRELOAD", FAKETIME)
            .env("FAKETIME", offset)
            .args(["--json", "prune"])
            .output()
            .expect("run");
        assert!(out.status.success(), "{offset}: {}", stderr(&out));
        common::last_json(&common::stdout(&out), "summary")
    };
    let p = prune_at("+1h");
    assert_eq!(p["temp_files_removed"], 0, "host an hour ahead: {p}");
    assert!(tmp.exists(), "a fresh temporary file was removed");

    age(&tmp, std::time::Duration::from_secs(31 * 60));
    let p = prune_at("-1h");
    assert_eq!(p["temp_files_removed"], 0, "host an hour behind: {p}");
    assert!(tmp.exists(), "removed by the storage's clock alone");

    let p = prune_json(&env, &[]);
    assert_eq!(p["temp_files_removed"], 1, "{p}");
    assert!(!tmp.exists());
}
