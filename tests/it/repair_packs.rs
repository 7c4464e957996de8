//! `repair packs` as users meet it: a byte flipped on disk in a data pack is found
//! by `check --read-data`, which says what to type; the repair salvages every
//! intact blob; a backup of the intact source stores the lost one again and heals
//! every snapshot; and then everything checks clean and restores byte for byte.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{self, Env, last_json, stderr, stdout};

/// Twelve random files of 150-260 kB in 1 MiB packs of small chunks, backed up;
/// then a thirteenth added and backed up again: two snapshots sharing most blobs.
/// Returns also a data pack of the first backup (so both snapshots use it), with
/// the blobs its header lists.
fn two_snapshots(seed: u64) -> (Env, PathBuf, String, (PathBuf, Vec<serde_json::Value>)) {
    let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "16K,64K,256K"]);
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    let mut rng = common::rng(seed);
    for i in 0..12 {
        let dir = if i % 2 == 0 {
            src.clone()
        } else {
            src.join("sub")
        };
        fs::write(
            dir.join(format!("f{i:02}.bin")),
            common::random_bytes(&mut rng, 150_000 + i * 10_000),
        )
        .expect("write");
    }
    let s = src.to_str().expect("utf-8").to_string();
    env.ok(&["backup", &s]);
    let first = data_packs(&env).remove(0);
    fs::write(src.join("f12.bin"), common::random_bytes(&mut rng, 200_000)).expect("write");
    env.ok(&["backup", &s]);
    (env, src, s, first)
}

/// The data packs, with the blobs each one's header lists.
fn data_packs(env: &Env) -> Vec<(PathBuf, Vec<serde_json::Value>)> {
    common::all_files(&env.repo.join("data"))
        .into_iter()
        .filter_map(|p| {
            let name = name_of(&p);
            let v: serde_json::Value =
                serde_json::from_str(&env.ok(&["cat", "pack", &name])).expect("json");
            let blobs = v["blobs"].as_array().expect("blobs").clone();
            blobs
                .iter()
                .all(|b| b["type"] == "data")
                .then_some((p, blobs))
        })
        .collect()
}

fn name_of(p: &Path) -> String {
    p.file_name().expect("name").to_string_lossy().into_owned()
}

/// Flips one byte in the middle of a blob's sealed bytes.
fn flip_inside(pack: &Path, blob: &serde_json::Value) {
    let offset =
        blob["offset"].as_u64().expect("offset") + blob["length"].as_u64().expect("len") / 2;
    let mut b = fs::read(pack).expect("read");
    b[offset as usize] ^= 0x40;
    fs::write(pack, b).expect("write");
}

/// Every file of the repository but its locks, with its bytes.
fn repo_state(env: &Env) -> BTreeMap<PathBuf, Vec<u8>> {
    common::all_files(&env.repo)
        .into_iter()
        .filter(|p| !p.starts_with(env.repo.join("locks")))
        .map(|p| {
            let bytes = fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect()
}

fn check_json(env: &Env, read_data: bool) -> (bool, serde_json::Value, String) {
    let mut args = vec!["check", "--json"];
    if read_data {
        args.push("--read-data");
    }
    let out = env.run(&args);
    let text = stdout(&out);
    (out.status.success(), last_json(&text, "summary"), text)
}

fn commands(summary: &serde_json::Value) -> Vec<String> {
    summary["next_steps"]
        .as_array()
        .expect("next_steps")
        .iter()
        .map(|s| s["command"].as_str().expect("command").to_string())
        .collect()
}

/// Restores every snapshot and compares it with the source, file by file; a
/// snapshot taken before `f12.bin` existed must not have it.
fn every_snapshot_restores(env: &Env, src: &Path, s: &str) {
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    let ids: Vec<String> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_string())
        .collect();
    assert!(ids.len() >= 2, "{list}");
    for id in ids {
        let target = env.path(&format!("restore-{id}"));
        env.ok(&[
            "restore",
            &format!("{id}:{s}"),
            "--target",
            target.to_str().expect("utf-8"),
            "--verify",
        ]);
        let restored = common::all_files(&target);
        for f in common::all_files(src) {
            let rel = f.strip_prefix(src).expect("prefix");
            let back = target.join(rel);
            if !back.exists() && rel == Path::new("f12.bin") {
                continue;
            }
            assert_eq!(
                fs::read(&f).expect("src"),
                fs::read(&back).expect("restored"),
                "snapshot {id}: {}",
                rel.display()
            );
        }
        assert!(restored.len() >= 12, "snapshot {id}: {restored:?}");
    }
}

/// The scenario, healed by a plain backup (an unchanged file whose blobs
/// left the index must be read again, not taken from the parent snapshot) and by
/// `backup --force`; both go through the local cache, which still holds the
/// index files from before the repair.
#[test]
fn flipped_byte_in_a_data_blob_is_salvaged_and_a_backup_heals_every_snapshot() {
    for (seed, heal) in [(91u64, &[][..]), (92, &["--force"][..])] {
        let (env, src, s, (pack, blobs)) = two_snapshots(seed);
        let pack_id = name_of(&pack);
        flip_inside(&pack, &blobs[0]);

        // check --read-data names the pack and says what to type.
        let out = env.run(&["check", "--read-data"]);
        assert!(!out.status.success());
        let err = stderr(&out);
        let exact = format!("cairn repair packs {pack_id}");
        assert!(err.contains(&pack_id), "{err}");
        assert!(err.contains(&exact), "{err}");
        let (ok, summary, _) = check_json(&env, true);
        assert!(!ok);
        assert_eq!(commands(&summary)[0], exact, "{summary}");

        // A dry run changes nothing, and says what would happen.
        let before = repo_state(&env);
        let dry: serde_json::Value =
            serde_json::from_str(&env.ok(&["repair", "packs", "--dry-run", "--json"]))
                .expect("json");
        assert_eq!(
            repo_state(&env),
            before,
            "the dry run changed the repository"
        );
        assert_eq!(dry["packs"][0]["blobs_lost"], 1, "{dry}");

        // Without ids, repair packs reads every pack and repairs the damaged one.
        let rep: serde_json::Value =
            serde_json::from_str(&env.ok(&["repair", "packs", "--json"])).expect("json");
        let p = &rep["packs"][0];
        assert_eq!(rep["packs"].as_array().expect("packs").len(), 1, "{rep}");
        assert_eq!(p["pack"], pack_id.as_str());
        assert_eq!(p["blobs_lost"], 1, "{rep}");
        assert_eq!(
            p["lost"][0],
            format!("data {}", blobs[0]["id"].as_str().expect("id"))
        );
        assert_eq!(
            p["blobs_salvaged"].as_u64().expect("n") + p["blobs_elsewhere"].as_u64().expect("n"),
            blobs.len() as u64 - 1,
            "{rep}"
        );
        assert_eq!(p["removed"], true);
        assert_eq!(
            (
                dry["packs"][0]["blobs_salvaged"].clone(),
                dry["snapshots_missing_data"].clone()
            ),
            (
                p["blobs_salvaged"].clone(),
                rep["snapshots_missing_data"].clone()
            ),
            "the dry run foretold another outcome"
        );
        assert!(!pack.exists(), "the damaged pack is still there");
        // Both snapshots hold the damaged file.
        let missing = rep["snapshots_missing_data"].as_array().expect("list");
        assert_eq!(missing.len(), 2, "{rep}");
        assert!(
            commands(&rep).contains(&format!("cairn backup {s}")),
            "{rep}"
        );

        // Now check reports snapshots missing data, not a damaged pack.
        let (ok, summary, text) = check_json(&env, true);
        assert!(!ok);
        assert!(text.contains("missing from the index"), "{text}");
        assert!(!text.contains("damaged on storage"), "{text}");
        let steps = commands(&summary);
        assert!(
            !steps.iter().any(|c| c.starts_with("cairn repair packs")),
            "{steps:?}"
        );
        assert_eq!(steps[0], format!("cairn backup {s}"), "{steps:?}");
        assert!(steps.contains(&"cairn repair snapshots --forget".to_string()));

        // A backup of the intact source stores the lost blob again.
        let mut args = vec![s.as_str()];
        args.extend_from_slice(heal);
        env.backup_json(&args);
        let (ok, summary, text) = check_json(&env, true);
        assert!(ok, "not clean after the healing backup {heal:?}:\n{text}");
        assert!(commands(&summary).is_empty(), "{summary}");
        every_snapshot_restores(&env, &src, &s);
    }
}

/// A pack whose header no longer authenticates: its blobs are found through the
/// index and all of them are salvaged; nothing is lost.
#[test]
fn damaged_pack_header_is_salvaged_through_the_index() {
    let (env, src, s, (pack, blobs)) = two_snapshots(93);
    let pack_id = name_of(&pack);
    let mut b = fs::read(&pack).expect("read");
    let at = b.len() - 10;
    b[at] ^= 0x01;
    fs::write(&pack, b).expect("write");

    let (ok, summary, text) = check_json(&env, true);
    assert!(!ok);
    assert!(text.contains(&pack_id), "{text}");
    assert_eq!(
        commands(&summary)[0],
        format!("cairn repair packs {pack_id}")
    );

    // By a unique prefix, as a user would type it.
    let out = env.ok(&["repair", "packs", &pack_id[..12]]);
    assert!(
        out.contains(&format!("{} blobs salvaged", blobs.len()))
            || blobs.len() == 1 && out.contains("1 blob salvaged"),
        "{out}"
    );
    assert!(out.contains("0 lost"), "{out}");
    assert!(out.contains("no snapshot misses data"), "{out}");
    assert!(!pack.exists());
    let (ok, _, text) = check_json(&env, true);
    assert!(ok, "{text}");
    every_snapshot_restores(&env, &src, &s);
}

/// An intact pack named on the command line is left alone; an unknown id is an
/// error naming it.
#[test]
fn intact_or_unknown_packs_are_left_alone() {
    let (env, _src, _s, (pack, _)) = two_snapshots(94);
    let before = repo_state(&env);
    let out = env.run(&["repair", "packs", &name_of(&pack)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is intact; nothing to do"),
        "{}",
        stderr(&out)
    );
    assert_eq!(repo_state(&env), before);
    let out = env.run(&["repair", "packs", "ffffffffffffff"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ffffffffffffff"), "{}", stderr(&out));
    let out = env.run(&["repair", "packs", "not-hex"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a pack id"), "{}", stderr(&out));
    assert_eq!(repo_state(&env), before);
}

/// `repair packs` killed (SIGKILL) at whatever point it reached, several times:
/// the index never names a pack that is gone, and a final run finishes the job.
#[test]
fn repair_packs_killed_anywhere_then_rerun_finishes() {
    let (env, src, s, (pack, blobs)) = two_snapshots(95);
    flip_inside(&pack, &blobs[0]);
    for delay_ms in [5u64, 40, 120, 250] {
        let mut child = env
            .cmd()
            .args(["repair", "packs", "-q"])
            .spawn()
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let (_, _, text) = check_json(&env, false);
        assert!(
            !text.contains("missing, but index"),
            "delay {delay_ms} ms:\n{text}"
        );
    }
    env.ok(&["repair", "packs"]);
    assert!(!pack.exists());
    let (ok, summary, text) = check_json(&env, true);
    assert!(!ok);
    assert!(!text.contains("damaged on storage"), "{text}");
    assert_eq!(
        commands(&summary)[0],
        format!("cairn backup {s}"),
        "{summary}"
    );
    env.ok(&["backup", &s]);
    let (ok, _, text) = check_json(&env, true);
    assert!(ok, "{text}");
    every_snapshot_restores(&env, &src, &s);
}

/// A pack that hashes to its name but holds a blob that doesn't open (written so:
/// a bit flipped in memory before the pack was hashed) is damaged to `repair
/// packs`, which takes it out of the index before deleting it. Killed in between,
/// it leaves that pack unindexed; the next backup must not adopt it, or the
/// damaged blob is back in the index and new snapshots deduplicate against it.
#[test]
fn backup_does_not_adopt_a_pack_whose_blob_does_not_open() {
    let (env, src, s, (pack, blobs)) = two_snapshots(83);
    flip_inside(&pack, &blobs[0]);
    // Stored under the hash of its new bytes, as if written that way.
    let bytes = fs::read(&pack).expect("read");
    let name = hex::encode(blake3::hash(&bytes).as_bytes());
    fs::remove_file(&pack).expect("rm");
    let dir = env.repo.join("data").join(&name[..2]);
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join(&name), bytes).expect("write");
    // No index names any pack now (repair packs killed after deleting the index
    // files; the others are adopted back).
    for f in common::all_files(&env.repo.join("index")) {
        fs::remove_file(f).expect("rm index");
    }
    // Staged by hand (repair packs writes a removal record first): not a loss.
    common::unsee(&env);

    let out = env.run(&["backup", &s]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
    every_snapshot_restores(&env, &src, &s);
    // The pack is still damaged: check names it, and repair packs removes it.
    let out = env.run(&["check", "--read-data"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
    env.ok(&["repair", "packs"]);
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    every_snapshot_restores(&env, &src, &s);
}

/// A blob stored in two packs (as two concurrent backups leave it), intact in the
/// damaged pack the user names and damaged in the other: `repair packs` with the
/// named pack salvages it rather than counting on the damaged copy, so repairing
/// the other pack afterwards loses nothing.
#[test]
fn repair_of_a_named_pack_does_not_rely_on_a_damaged_copy_elsewhere() {
    use cairn::archiver::saver::Saver;
    use cairn::backend::local::LocalBackend;
    use cairn::index::Index;
    use cairn::pack::BlobKind;
    use cairn::repository::Repository;
    use std::sync::Arc;

    let (env, src, s, (pack_a, blobs_a)) = two_snapshots(95);
    assert!(blobs_a.len() >= 2, "pack {pack_a:?} holds one blob");
    let x = blobs_a[0]["id"].as_str().expect("id").to_string();
    // A second copy of blob x, in a pack of its own, with its own index file.
    {
        let backend = Arc::new(LocalBackend::new(&env.repo));
        let repo = Arc::new(Repository::open(backend, common::PASSWORD.as_bytes()).expect("open"));
        let index = repo.load_index(&mut |_, _| {}).expect("index");
        let id = cairn::id::BlobId::from_hex(&x).expect("blob id");
        let plain = repo.read_blob(&index, BlobKind::Data, &id).expect("read x");
        let mut saver = Saver::new(Arc::clone(&repo), Arc::new(Index::default()));
        let level = repo.config().compression;
        saver
            .add(
                BlobKind::Data,
                id,
                cairn::format::encode_payload(&plain, level),
                plain.len(),
            )
            .expect("add");
        saver.finish().expect("finish");
    }
    let pack_b = data_packs(&env)
        .into_iter()
        .find(|(p, b)| *p != pack_a && b.len() == 1 && b[0]["id"] == x.as_str())
        .expect("the second copy's pack");
    // x damaged in pack B; another blob damaged in pack A, x intact there.
    flip_inside(&pack_b.0, &pack_b.1[0]);
    flip_inside(&pack_a, &blobs_a[1]);

    let a = last_json(
        &env.ok(&["repair", "packs", "--json", &name_of(&pack_a)]),
        "summary",
    );
    assert_eq!(a["blobs_lost"], 1, "{a}");
    // x was salvaged from pack A: nothing of pack B is lost.
    let b = last_json(
        &env.ok(&["repair", "packs", "--json", &name_of(&pack_b.0)]),
        "summary",
    );
    assert_eq!(b["blobs_lost"], 0, "x lost with its damaged copy: {b}");
    // Only the other blob of pack A is lost; a backup of the source heals it.
    env.ok(&["backup", &s]);
    let (clean, summary, text) = check_json(&env, true);
    assert!(
        clean,
        "not clean after repairs and a backup: {summary}\n{text}"
    );
    every_snapshot_restores(&env, &src, &s);
}

/// A pack missing and another damaged: `check --read-data` lists the README's
/// steps in its order (repair index, repair packs ID, then check again and
/// repair snapshots --forget), and following them as written, up to the check
/// (which then names the backup that heals), leaves a repository that checks
/// clean and restores every snapshot, without forgetting anything.
#[test]
fn check_lists_every_next_step_in_order_and_following_them_heals() {
    let (env, src, s, (first, blobs)) = two_snapshots(91);
    let other = data_packs(&env)
        .into_iter()
        .map(|(p, _)| p)
        .find(|p| *p != first)
        .expect("a second data pack");
    fs::remove_file(&other).expect("remove a pack");
    flip_inside(&first, &blobs[blobs.len() / 2]);

    let (ok, summary, text) = check_json(&env, true);
    assert!(!ok, "{text}");
    let steps = commands(&summary);
    assert_eq!(
        steps,
        [
            "cairn repair index".to_string(),
            format!("cairn repair packs {}", name_of(&first)),
            "cairn check".to_string(),
            "cairn repair snapshots --forget".to_string(),
        ],
        "{text}"
    );
    for step in summary["next_steps"].as_array().expect("steps") {
        assert!(
            step["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{step}"
        );
    }
    // The same steps on the terminal, in the same order.
    let out = env.run(&["check", "--read-data"]);
    let err = stderr(&out);
    let mut at = 0;
    for step in &steps {
        at += err[at..]
            .find(step.as_str())
            .unwrap_or_else(|| panic!("{step:?} missing or out of order in:\n{err}"));
    }

    // Following them as written (the repository and password are ours to add),
    // up to `cairn check`, whose own steps are then followed the same way.
    let mut seen = Vec::new();
    for round in 0..3 {
        let (ok, summary, text) = check_json(&env, true);
        if ok {
            assert_eq!(commands(&summary), Vec::<String>::new());
            break;
        }
        assert!(
            round < 2,
            "still damaged after following the steps:\n{text}"
        );
        for step in commands(&summary) {
            if step == "cairn check" {
                break;
            }
            let words: Vec<&str> = step.split(' ').skip(1).collect();
            let out = env.run(&words);
            assert!(out.status.success(), "{step}: {}", stderr(&out));
            seen.push(step);
        }
    }
    assert!(seen.contains(&format!("cairn backup {s}")), "{seen:?}");
    every_snapshot_restores(&env, &src, &s);
}

/// "A pack that can't be read at all (an I/O error rather than damage) is left
/// as it is and makes the command fail." The pack's path is made to fail every
/// read by binding /proc/self/mem over it (root only); `repair packs` names it,
/// exits 1 and changes nothing, and once it reads again the repository is
/// whole.
#[test]
fn a_pack_that_cannot_be_read_is_left_alone_and_fails_the_command() {
    let (env, _src, _s, (first, _)) = two_snapshots(17);
    let state = |env: &Env| -> BTreeMap<PathBuf, Vec<u8>> {
        common::all_files(&env.repo)
            .into_iter()
            .filter(|p| !p.starts_with(env.repo.join("locks")) && *p != first)
            .map(|p| {
                let bytes = fs::read(&p).expect("read");
                (p, bytes)
            })
            .collect()
    };
    let before = state(&env);
    let pack_bytes = fs::read(&first).expect("read");
    let mount = match common::bind_file(Path::new("/proc/self/mem"), &first) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    for args in [
        &["repair", "packs"][..],
        &["repair", "packs", &name_of(&first)],
    ] {
        let out = env.run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("pack {} can't be read", name_of(&first)))
                && err.contains("left as it is"),
            "{args:?}: {err}"
        );
        assert_eq!(state(&env), before, "{args:?} changed the repository");
    }
    drop(mount);
    assert_eq!(fs::read(&first).expect("read"), pack_bytes);
    let (ok, _, text) = check_json(&env, true);
    assert!(ok, "{text}");
}

/// A pack the index names but `data/` lacks is `repair index`'s work: `repair
/// packs` says so and fails rather than sum up "none is damaged" with exit 0.
#[test]
fn repair_packs_with_a_pack_missing_points_to_repair_index() {
    let (env, _src, _s, (pack, _)) = two_snapshots(96);
    fs::remove_file(&pack).expect("remove pack");
    let out = env.run(&["repair", "packs"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("missing from data/: run `cairn repair index`"),
        "{}",
        stderr(&out)
    );
    env.ok(&["repair", "index"]);
    env.ok(&["repair", "packs"]);
}
