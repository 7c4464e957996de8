//! Repositories in object storage, against a real single-node Garage
//! (tests/it/garage.rs): everything that works on a local repository works on a
//! bucket, and storage errors name the object and say what to do.

use std::fs;
use std::path::Path;

use cairn::backend::{Backend, FileType};

use crate::common::{self, Env, check_clean, restore_matches, snapshot_ids, stderr};
use crate::garage::Garage;

/// Seeded sources: small text files, a few random ones, and one file larger
/// than a pack.
fn source(dir: &Path, seed: u64) {
    fs::create_dir_all(dir.join("sub/deeper")).expect("mkdir");
    let mut rng = common::rng(seed);
    for i in 0..40 {
        let text = common::text_bytes(&mut rng, 2000 + i * 97);
        fs::write(dir.join(format!("sub/note-{i}.txt")), text).expect("write");
    }
    common::random_files(&dir.join("sub/deeper"), seed, 5, 300_000, |i| {
        format!("r{i}.bin")
    });
    fs::write(dir.join("big.bin"), common::xorshift(seed, 3 << 20)).expect("write");
}

#[test]
fn a_bucket_repository_backs_up_restores_checks_and_prunes() {
    let Some(g) = Garage::single("s3::a_bucket_repository_backs_up_restores_checks_and_prunes")
    else {
        return;
    };
    // Small packs and chunks, so the data spans many objects.
    let env = g.env_with_repo(
        "hosts/one",
        &["--pack-size", "1", "--chunker-params", "64K,128K,512K"],
    );
    let src = env.path("src");
    source(&src, 1);
    let src_text = src.to_str().expect("utf-8");

    let first = env.backup_json(&[src_text]);
    let first_id = first["snapshot_id"].as_str().expect("id").to_string();
    restore_matches(&env, &first_id, &src);
    check_clean(&env);

    // A change, a second snapshot; the first is forgotten and pruned.
    fs::write(src.join("big.bin"), common::xorshift(99, 2 << 20)).expect("write");
    fs::remove_dir_all(src.join("sub/deeper")).expect("rm");
    let second = env.backup_json(&[src_text]);
    let second_id = second["snapshot_id"].as_str().expect("id").to_string();
    let packs_before = g
        .backend(0, "hosts/one")
        .list(FileType::Pack)
        .expect("list")
        .len();
    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    let packs_after = g
        .backend(0, "hosts/one")
        .list(FileType::Pack)
        .expect("list")
        .len();
    assert!(
        packs_after < packs_before,
        "prune freed nothing: {packs_before} → {packs_after}"
    );
    assert_eq!(snapshot_ids(&env), vec![second_id.clone()]);
    restore_matches(&env, &second_id, &src);
    check_clean(&env);
}

#[test]
fn keys_unlock_and_repair_work_on_a_bucket() {
    let Some(g) = Garage::single("s3::keys_unlock_and_repair_work_on_a_bucket") else {
        return;
    };
    let env = g.env_with_repo(
        "maint",
        &["--pack-size", "1", "--chunker-params", "64K,128K,512K"],
    );
    let src = env.path("src");
    source(&src, 2);
    let src_text = src.to_str().expect("utf-8");
    let id = env.backup_json(&[src_text])["snapshot_id"]
        .as_str()
        .expect("id")
        .to_string();

    // A second password, used, then removed.
    let other = env.path("other-password");
    common::write_private(&other, "another password\n");
    env.ok(&[
        "key",
        "add",
        "--new-password-file",
        other.to_str().expect("utf-8"),
        "--kdf-memory",
        "1024",
        "--kdf-iterations",
        "1",
    ]);
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok_with(&other, &["key", "list", "--json"])).expect("json");
    let keys = listed.as_array().expect("keys");
    assert_eq!(keys.len(), 2, "{listed}");
    let first = keys
        .iter()
        .find(|k| k["current"] == false)
        .and_then(|k| k["id"].as_str())
        .expect("the other key");
    env.ok_with(&other, &["key", "remove", first]);
    let out = env.run(&["snapshots"]);
    assert_eq!(
        out.status.code(),
        Some(12),
        "the first password no longer opens it"
    );

    // An index object lost behind cairn's back: check names it, repair index
    // rebuilds it from the packs.
    let backend = g.backend(0, "maint");
    for e in backend.list(FileType::Index).expect("list") {
        backend.remove(FileType::Index, &e.name).expect("remove");
    }
    common::unsee(&env);
    let out = env.run_with(&other, &["check"]);
    assert!(!out.status.success(), "check missed the lost index");
    env.ok_with(&other, &["repair", "index"]);
    let out = env.run_with(&other, &["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A byte flipped in the middle of the largest pack, behind cairn's back:
    // check --read-data names it, repair packs salvages the rest of it and
    // removes it, and a backup of the same data stores again what was lost.
    let largest = backend
        .list(FileType::Pack)
        .expect("list")
        .into_iter()
        .max_by_key(|e| e.size)
        .expect("a pack");
    let mut bytes = backend
        .read(FileType::Pack, &largest.name, largest.size)
        .expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    backend
        .write(FileType::Pack, &largest.name, &bytes)
        .expect("overwrite");
    let out = env.run_with(&other, &["check", "--read-data"]);
    assert!(
        !out.status.success(),
        "check --read-data missed the flipped byte"
    );
    assert!(stderr(&out).contains(&largest.name), "{}", stderr(&out));
    env.ok_with(&other, &["repair", "packs"]);
    assert!(
        !backend
            .list(FileType::Pack)
            .expect("list")
            .iter()
            .any(|e| e.name == largest.name),
        "the damaged pack is still there"
    );
    env.ok_with(&other, &["backup", src_text]);
    let out = env.run_with(&other, &["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A lock left by a backup SIGKILLed while it held it: `unlock` sees its
    // process is gone and removes it, and prune runs.
    let mut child = env
        .cmd_with(&other)
        .args(["backup", src_text])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    common::stop_when(&mut child, "its lock is written", || {
        !backend.list(FileType::Lock).expect("list").is_empty()
    });
    let _ = child.kill();
    let _ = child.wait();
    env.ok_with(&other, &["unlock"]);
    assert!(backend.list(FileType::Lock).expect("list").is_empty());
    env.ok_with(&other, &["prune"]);

    let mut tmp = Env::new();
    tmp.repo = env.repo.clone();
    tmp.vars = env.vars.clone();
    tmp.password_file = other.clone();
    restore_matches(&tmp, &id, &src);
}

/// A local repository and a bucket, copied both ways: unrelated keys (re-chunked)
/// and, with `init --from-repo`, shared ids (blob for blob).
#[test]
fn snapshots_copy_between_a_directory_and_a_bucket_both_ways() {
    let Some(g) = Garage::single("s3::snapshots_copy_between_a_directory_and_a_bucket_both_ways")
    else {
        return;
    };
    let local = Env::with_repo(&["--chunker-params", "64K,128K,512K"]);
    let src = local.path("src");
    source(&src, 3);
    let src_text = src.to_str().expect("utf-8");
    let id = local.backup_json(&[src_text])["snapshot_id"]
        .as_str()
        .expect("id")
        .to_string();

    let copy = |to: &Env, from: &Env| {
        to.ok(&[
            "copy",
            "--from-repo",
            from.repo.to_str().expect("utf-8"),
            "--from-password-file",
            from.password_file.to_str().expect("utf-8"),
        ])
    };
    let init_from = |to: &Env, from: &Env| {
        to.ok(&[
            "init",
            "--kdf-memory",
            "1024",
            "--kdf-iterations",
            "1",
            "--from-repo",
            from.repo.to_str().expect("utf-8"),
            "--from-password-file",
            from.password_file.to_str().expect("utf-8"),
        ])
    };

    // Local → a bucket made with init --from-repo: blob for blob.
    let twin = g.env("twin");
    init_from(&twin, &local);
    copy(&twin, &local);
    restore_matches(&twin, &snapshot_ids(&twin)[0], &src);
    check_clean(&twin);

    // Local → bucket (unrelated repository: re-chunked).
    let cold = g.env_with_repo("cold", &[]);
    // The source's variables are the destination's here: one bucket.
    copy(&cold, &local);
    let copied = snapshot_ids(&cold);
    assert_eq!(copied.len(), 1);
    restore_matches(&cold, &copied[0], &src);
    check_clean(&cold);
    // Twice copies nothing.
    copy(&cold, &local);
    assert_eq!(snapshot_ids(&cold).len(), 1);

    // Bucket → a new local repository sharing its ids: blob for blob.
    let mut back = Env::new();
    back.vars = g.vars();
    init_from(&back, &cold);
    copy(&back, &cold);
    let ids = snapshot_ids(&back);
    assert_eq!(ids.len(), 1);
    restore_matches(&back, &ids[0], &src);
    check_clean(&back);
    // The copy back to where it came from is recognised: nothing new.
    let mut local_again = Env::new();
    local_again.repo = local.repo.clone();
    local_again.password_file = local.password_file.clone();
    local_again.vars = g.vars();
    copy(&local_again, &cold);
    assert_eq!(snapshot_ids(&local_again), vec![id]);
}

/// A plan whose cold copy is a bucket: backup to the local repository, copy to
/// the bucket, check and drill it there, and `plan status` reads both.
#[test]
fn a_plan_copies_to_a_bucket_and_checks_and_drills_it() {
    let Some(g) = Garage::single("s3::a_plan_copies_to_a_bucket_and_checks_and_drills_it") else {
        return;
    };
    let hot = Env::with_repo(&[]);
    let cold = g.env_with_repo("plan-cold", &[]);
    let src = hot.path("src");
    source(&src, 4);
    let plan = hot.path("cairn.toml");
    fs::write(
        &plan,
        format!(
            r#"[repository.hot]
path = "{hot}"
password_file = "{hot_pw}"

[repository.cold]
path = "{cold}"
password_file = "{cold_pw}"

[class.data]
paths = ["{src}"]
every = "1d"
repository = "hot"
copy_to = ["cold"]
check = {{ every = "1d", read_data_subset = "100%" }}
drill = {{ every = "1d", files = 10 }}
"#,
            hot = hot.repo.display(),
            hot_pw = hot.password_file.display(),
            cold = cold.repo.display(),
            cold_pw = cold.password_file.display(),
            src = src.display(),
        ),
    )
    .expect("plan");
    let plan_cmd = |args: &[&str]| {
        let mut c = hot.bare_cmd();
        c.env("HOME", hot.path("home"));
        c.envs(g.vars());
        c.arg("plan").arg("--plan").arg(&plan).args(args);
        c.output().expect("plan")
    };
    let out = plan_cmd(&["validate"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        common::stdout(&out),
        stderr(&out)
    );
    let out = plan_cmd(&["run", "--json"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        common::stdout(&out),
        stderr(&out)
    );
    let text = common::stdout(&out);
    for step in ["backup", "copy", "check", "drill"] {
        assert!(
            text.lines().any(|l| l.contains("\"plan_step\"")
                && l.contains(&format!("\"step\":\"{step}\""))
                && l.contains("\"status\":\"ok\"")),
            "no successful {step} step:\n{text}"
        );
    }
    let ids = snapshot_ids(&cold);
    assert_eq!(ids.len(), 1);
    restore_matches(&cold, &ids[0], &src);
    let out = plan_cmd(&["status"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        common::stdout(&out),
        stderr(&out)
    );
    let table = common::stdout(&out);
    let cold_row = table
        .lines()
        .find(|l| l.contains("cold (copy)"))
        .unwrap_or_else(|| panic!("no row for the bucket:\n{table}"));
    // State, last check and last drill: all "ok".
    let oks = cold_row.split_whitespace().filter(|w| *w == "ok").count();
    assert_eq!(oks, 3, "{table}");
}

/// Mistakes in the connection settings are named, with what to do: a wrong
/// region, a location with credentials in it (refused without echoing them),
/// `init` where something is already stored, and a repository prefix that
/// holds nothing.
#[test]
fn connection_mistakes_say_what_to_fix() {
    let Some(g) = Garage::single("s3::connection_mistakes_say_what_to_fix") else {
        return;
    };
    let env = g.env_with_repo("region", &[]);
    let mut wrong = g.env("region");
    wrong.password_file = env.password_file.clone();
    for (k, v) in &mut wrong.vars {
        if k == "AWS_DEFAULT_REGION" {
            *v = "us-west-2".into();
        }
    }
    let out = wrong.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("set AWS_DEFAULT_REGION"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("/region/config"), "{}", stderr(&out));

    let mut inline = g.env("x");
    inline.repo = format!("s3:http://{}:{}@127.0.0.1:1/b/p", g.key_id, g.secret).into();
    let out = inline.run(&["snapshots"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("credentials in it"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(&g.secret), "the secret was echoed");

    // init refuses a prefix that holds anything (here: a repository).
    let out = env.run(&["init", "--kdf-memory", "1024", "--kdf-iterations", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    let empty = g.env("nothing-here");
    let out = empty.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a cairn repository"),
        "{}",
        stderr(&out)
    );
}
