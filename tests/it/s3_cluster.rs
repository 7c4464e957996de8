//! A bucket on a 3-node Garage cluster with replication factor 3, and several
//! hosts backing up into one bucket: what object storage adds to what can go
//! wrong. Processes are stepped with SIGSTOP (common::stop_when), so the
//! moments things happen at are certain without timing.

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};

use cairn::backend::{Backend, FileType};

use crate::common::{self, Env, restore_matches, stderr, stdout};
use crate::garage::Garage;

const SMALL: [&str; 4] = ["--pack-size", "1", "--chunker-params", "64K,128K,512K"];

fn data(dir: &Path, seed: u64, files: usize) {
    fs::create_dir_all(dir).expect("mkdir");
    common::random_files(dir, seed, files, 400_000, |i| format!("f{i:03}.bin"));
}

fn spawn_backup(env: &Env, args: &[&str]) -> Child {
    env.cmd()
        .arg("backup")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backup")
}

fn resume(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
}

fn snapshots(env: &Env) -> Vec<(String, String)> {
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    listed
        .as_array()
        .expect("array")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().expect("id").to_string(),
                s["paths"][0].as_str().expect("path").to_string(),
            )
        })
        .collect()
}

/// `check --read-data` finds no error. Notes (packs a killed backup left for
/// the next one to adopt) are fine here.
fn check_clean(env: &Env) {
    let out = env.run(&["check", "--read-data"]);
    assert!(
        out.status.success(),
        "check --read-data: {:?}\n{}\n{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
}

/// Every snapshot restores its path byte for byte from the directory it names.
fn all_restore(env: &Env) {
    for (id, path) in snapshots(env) {
        restore_matches(env, &id, Path::new(&path));
    }
}

/// One node of three is SIGKILLed in the middle of a backup: a replica's loss
/// leaves a write quorum, and the backup completes; the loss of the node cairn
/// talks to fails the backup cleanly (the error names an object), and the next
/// backup, through another node, succeeds. Once the nodes are back, the
/// repository checks clean with every byte read, through each node, and every
/// snapshot restores.
#[test]
fn a_three_node_cluster_loses_a_node_in_the_middle_of_a_backup() {
    let Some(mut g) = Garage::cluster(
        "s3_cluster::a_three_node_cluster_loses_a_node_in_the_middle_of_a_backup",
        3,
        3,
    ) else {
        return;
    };
    let mut env = g.env_with_repo("rf3", &SMALL);
    let objects = g.backend(1, "rf3");
    let packs = || objects.list(FileType::Pack).map(|l| l.len()).unwrap_or(0);

    // A replica dies after the backup has written some packs.
    let a = env.path("a");
    data(&a, 1, 24);
    let mut child = spawn_backup(&env, &[a.to_str().expect("utf-8")]);
    common::stop_when(&mut child, "three packs are stored", || packs() >= 3);
    g.kill(2);
    resume(&child);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "a backup that lost a replica failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Back before the next node goes: two of three must stay up for quorum.
    g.restart(2);

    // The node cairn talks to dies part way: the backup fails, saying which
    // object it could not store or read, and commits no snapshot.
    let b = env.path("b");
    data(&b, 2, 24);
    let before = snapshots(&env).len();
    let written_before = packs();
    let err_file = env.path("b-stderr");
    let mut child = env
        .cmd()
        .arg("backup")
        .arg(&b)
        // Short retries: the node that is gone stays gone for this run.
        .env("CAIRN_S3_RETRIES", "2")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_file).expect("stderr file"))
        .spawn()
        .expect("spawn");
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        common::stop_when(&mut child, "two more packs are stored", || {
            packs() >= written_before + 2
        })
    }));
    let err = || fs::read_to_string(&err_file).unwrap_or_default();
    assert!(stopped.is_ok(), "the backup ended early: {}", err());
    g.kill(0);
    resume(&child);
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the backup went on without its endpoint");
    assert!(
        err().contains(&format!("s3:{}/cairn/rf3/", g.endpoint(0))),
        "the error names no object: {status:?} {}",
        err()
    );

    // The same repository through node 1: the snapshot that failed is not
    // there, and the next backup of the same data succeeds.
    env.repo = g.location_via(1, "rf3");
    assert_eq!(snapshots(&env).len(), before);
    env.ok(&["backup", b.to_str().expect("utf-8")]);
    assert_eq!(snapshots(&env).len(), before + 1);

    // The node back: clean through each node, and everything restores.
    g.restart(0);
    for node in 0..3 {
        env.repo = g.location_via(node, "rf3");
        check_clean(&env);
    }
    all_restore(&env);
}

/// Two hosts back up into one bucket at once (each with its own cache and
/// host name): first with one paused while the other runs start to finish, then
/// both running freely. Every backup succeeds, the repository checks clean
/// with every byte read, and every snapshot restores.
#[test]
fn two_hosts_back_up_into_one_bucket_at_once() {
    let Some(g) = Garage::single("s3_cluster::two_hosts_back_up_into_one_bucket_at_once") else {
        return;
    };
    let first = g.env_with_repo("shared", &SMALL);
    let mut second = g.env("shared");
    second.password_file = first.password_file.clone();
    let (a, b) = (first.path("a"), second.path("b"));
    data(&a, 10, 16);
    data(&b, 11, 16);
    // Some files in common, stored by whichever host gets there first.
    for i in 0..4 {
        fs::copy(
            a.join(format!("f{i:03}.bin")),
            b.join(format!("shared{i}.bin")),
        )
        .expect("copy");
    }
    let objects = g.backend(0, "shared");
    let packs = || objects.list(FileType::Pack).map(|l| l.len()).unwrap_or(0);
    let (a_text, b_text) = (a.to_str().expect("utf-8"), b.to_str().expect("utf-8"));

    let mut one = spawn_backup(&first, &["--host", "host-one", a_text]);
    common::stop_when(&mut one, "host one has stored packs", || packs() >= 2);
    second.ok(&["backup", "--host", "host-two", b_text]);
    resume(&one);
    let out = one.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // New data, both hosts at once.
    let (a2, b2) = (first.path("a2"), second.path("b2"));
    data(&a2, 20, 8);
    data(&b2, 21, 8);
    let one = spawn_backup(&first, &["--host", "host-one", a2.to_str().expect("utf-8")]);
    let two = spawn_backup(
        &second,
        &["--host", "host-two", b2.to_str().expect("utf-8")],
    );
    for child in [one, two] {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(snapshots(&first).len(), 4);
    check_clean(&first);
    all_restore(&first);
    assert!(objects.list(FileType::Lock).expect("locks").is_empty());
}

/// A backup into a bucket SIGKILLed part way (after some packs are stored,
/// before any index names them): the repository stays consistent,
/// the next backup of the same data adopts what was stored instead of sending
/// it again, and the repository checks clean with every snapshot restoring.
#[test]
fn a_backup_into_a_bucket_killed_part_way_resumes() {
    let Some(g) = Garage::single("s3_cluster::a_backup_into_a_bucket_killed_part_way_resumes")
    else {
        return;
    };
    let env = g.env_with_repo("killed", &SMALL);
    let src = env.path("src");
    data(&src, 30, 24);
    let objects = g.backend(0, "killed");
    let packs = || objects.list(FileType::Pack).map(|l| l.len()).unwrap_or(0);
    let src_text = src.to_str().expect("utf-8");

    let mut child = spawn_backup(&env, &[src_text]);
    common::stop_when(&mut child, "four packs are stored", || packs() >= 4);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let stored = packs();
    assert!(
        snapshots(&env).is_empty(),
        "a killed backup committed a snapshot"
    );
    check_clean(&env);

    let summary = env.backup_json(&[src_text]);
    let adopted = summary["packs_adopted"].as_u64().expect("packs_adopted");
    let (added, total) = (
        summary["bytes_added"].as_u64().expect("bytes_added"),
        summary["total_bytes"].as_u64().expect("total_bytes"),
    );
    // Each stored pack holds about 1 MiB of the data; all but the last few
    // (a pack may have been half written, or unindexed tree packs) are reused.
    assert!(
        adopted >= 3,
        "{adopted} packs adopted of {stored} stored: {summary}"
    );
    assert!(
        added + 3 * (1 << 20) <= total,
        "the data stored before the kill was sent again: {summary}"
    );
    check_clean(&env);
    all_restore(&env);
}
