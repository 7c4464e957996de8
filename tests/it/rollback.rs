//! Deletion and rollback detection (`cairn::seen`): snapshot or index files
//! this user saw that are gone, with no cairn command having recorded their
//! removal, make every command warn and `check` fail until accepted.

use std::path::Path;
use std::process::Output;

use crate::common::{self, Env, stderr, stdout};

const LOST: &str = "no cairn command recorded removing them";

/// A repository with two snapshots, both seen by this user.
fn two_snapshots() -> (Env, String) {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    std::fs::create_dir(&src).expect("mkdir");
    common::random_files(&src, 5, 3, 10_000, |i| format!("f{i}"));
    let s = src.to_str().expect("utf-8").to_string();
    env.ok(&["backup", &s]);
    std::fs::write(src.join("f0"), "changed").expect("write");
    env.ok(&["backup", &s]);
    env.ok(&["snapshots"]);
    (env, s)
}

fn snapshot_files(env: &Env) -> Vec<std::path::PathBuf> {
    common::all_files(&env.repo.join("snapshots"))
}

/// `cairn ARGS` as another machine: its own cache, so its own record of what
/// it saw.
fn elsewhere(env: &Env, args: &[&str]) -> Output {
    env.cmd()
        .env("CAIRN_CACHE_DIR", env.path("other-machine"))
        .args(args)
        .output()
        .expect("running cairn")
}

fn name(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string()
}

#[test]
fn a_snapshot_deleted_behind_cairns_back_is_reported_until_accepted() {
    let (env, _) = two_snapshots();
    let victim = snapshot_files(&env).remove(0);
    std::fs::remove_file(&victim).expect("rm");
    let short = &name(&victim)[..8];
    // Every command warns, naming it; again at the next command.
    for args in [&["snapshots"][..], &["ls", "latest"][..]] {
        let out = env.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(LOST) && err.contains(short), "{args:?}: {err}");
    }
    // Even with --quiet.
    let out = env.run(&["snapshots", "--quiet"]);
    assert!(stderr(&out).contains(short), "{}", stderr(&out));
    // check fails, says it, and says what to run.
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(short), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cairn check --accept-missing"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&["check", "--json"]);
    let summary = common::last_json(&stdout(&out), "summary");
    assert!(summary["errors"].as_u64().unwrap_or(0) >= 1, "{summary}");
    // Accepted: silence, and check is clean; --json names what was accepted.
    let out = env.run(&["check", "--accept-missing", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let accepted = common::last_json(&stdout(&out), "accepted_missing");
    assert_eq!(
        accepted["snapshots"],
        serde_json::json!([name(&victim)]),
        "{accepted}"
    );
    let out = env.run(&["snapshots"]);
    assert!(!stderr(&out).contains(LOST), "{}", stderr(&out));
    let out = env.run(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_repository_put_back_to_an_older_state_is_reported() {
    let (env, s) = two_snapshots();
    let old = env.path("old-copy");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&env.repo)
        .arg(&old)
        .status()
        .expect("cp");
    assert!(cp.success());
    env.ok(&["backup", &s]);
    let newest: Vec<String> = snapshot_files(&env)
        .iter()
        .map(|p| name(p))
        .filter(|n| !old.join("snapshots").join(n).exists())
        .collect();
    assert_eq!(newest.len(), 1);
    env.ok(&["snapshots"]);
    // The storage serves the old copy.
    std::fs::remove_dir_all(&env.repo).expect("rm");
    std::fs::rename(&old, &env.repo).expect("mv");
    let out = env.run(&["snapshots"]);
    let err = stderr(&out);
    assert!(err.contains(LOST), "{err}");
    assert!(err.contains(&newest[0][..8]), "{err}");
    // The new snapshot's index file is gone too.
    assert!(err.contains("index file"), "{err}");
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
}

/// Another machine's forget and prune write removal records: this machine
/// sees their snapshots and index files go without a warning.
#[test]
fn forget_and_prune_elsewhere_are_not_losses() {
    let (env, _) = two_snapshots();
    let out = elsewhere(&env, &["forget", "--keep-last", "1", "--prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot_files(&env).len(), 1);
    let out = env.run(&["snapshots"]);
    assert!(out.status.success());
    assert!(!stderr(&out).contains(LOST), "{}", stderr(&out));
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Repairs too: repair index replaces every index file.
    let out = elsewhere(&env, &["repair", "index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The removal records are what vouches for a removal: deleting them with the
/// snapshots (something that can write to the storage but holds no key) is
/// still a loss.
#[test]
fn removal_records_deleted_with_the_snapshots_are_still_a_loss() {
    let (env, _) = two_snapshots();
    let before: Vec<String> = snapshot_files(&env).iter().map(|p| name(p)).collect();
    let out = elsewhere(&env, &["forget", "--keep-last", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for f in common::all_files(&env.repo.join("records")) {
        std::fs::remove_file(f).expect("rm record");
    }
    let gone: Vec<&String> = before
        .iter()
        .filter(|n| !env.repo.join("snapshots").join(n.as_str()).exists())
        .collect();
    assert_eq!(gone.len(), 1);
    let out = env.run(&["snapshots"]);
    assert!(
        stderr(&out).contains(LOST) && stderr(&out).contains(&gone[0][..8]),
        "{}",
        stderr(&out)
    );
}

/// The first look at a repository has nothing to compare with; a user who
/// never saw a snapshot isn't warned about it.
#[test]
fn a_first_look_warns_about_nothing() {
    let (env, _) = two_snapshots();
    let victim = snapshot_files(&env).remove(0);
    std::fs::remove_file(&victim).expect("rm");
    let out = elsewhere(&env, &["snapshots"]);
    assert!(out.status.success());
    assert!(!stderr(&out).contains(LOST), "{}", stderr(&out));
}

/// A loss found must be reported even when the record of what this user saw
/// can't be rewritten (a full or read-only cache directory): the loss was
/// found, and the old record, which still lists the files, stays.
#[test]
fn a_loss_is_reported_even_when_the_seen_state_cant_be_saved() {
    let (env, _) = two_snapshots();
    let seen = env.path("cache").join("seen");
    let state = common::all_files(&seen)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a state file");
    // The state's temporary file can't be created: every save fails.
    std::fs::create_dir(state.with_extension("json.tmp")).expect("mkdir");
    let victim = snapshot_files(&env).remove(0);
    std::fs::remove_file(&victim).expect("rm");
    let short = &name(&victim)[..8];
    let out = env.run(&["snapshots", "--quiet"]);
    assert!(stderr(&out).contains(short), "{}", stderr(&out));
    let out = env.run(&["check", "--quiet"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(short), "{}", stderr(&out));
}

/// Prune deletes nothing while a loss is unaccepted: the lost snapshots' data
/// may be in packs only they used.
#[test]
fn prune_refuses_while_a_loss_is_unaccepted() {
    let (env, _) = two_snapshots();
    let victim = snapshot_files(&env).remove(0);
    std::fs::remove_file(&victim).expect("rm");
    let packs = common::all_files(&env.repo.join("data"));
    for args in [
        &["prune"][..],
        &["forget", "--keep-last", "1", "--prune"][..],
    ] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("prune refuses to delete anything"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(common::all_files(&env.repo.join("data")), packs, "{args:?}");
    }
    env.ok(&["check", "--accept-missing"]);
    env.ok(&["prune"]);
}
