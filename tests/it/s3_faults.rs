//! The object-storage backend under faults: a proxy of our own
//! (tests/it/s3proxy.rs) between cairn and a real single-node Garage answers
//! chosen requests with throttling and server errors, resets or stalls, and
//! logs every request, so each test shows from the log what cairn sent: that
//! transient failures were retried for the same object, that permanent ones
//! were not, and in which order a backup commits its objects.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{self, Env, check_clean, restore_matches, snapshot_ids, stderr, stdout};
use crate::garage::Garage;
use crate::s3proxy::{Fault, Logged, Proxy, Request, render};

/// Small packs and chunks, so that a few MiB of data are many objects.
const SMALL_PACKS: &[&str] = &["--pack-size", "1", "--chunker-params", "64K,128K,512K"];

/// A Garage, the proxy in front of it, and an [`Env`] whose repository is
/// `PREFIX` in the bucket, reached through the proxy.
struct Rig {
    proxy: Proxy,
    env: Env,
    prefix: String,
    garage: Garage,
}

/// A [`Rig`] with a repository made through the proxy with small packs;
/// `vars` are added to every command's environment. `None` where Garage
/// can't run here (the test is skipped).
fn rig(test: &str, vars: &[(&str, &str)]) -> Option<Rig> {
    let garage = Garage::single(test)?;
    let proxy = Proxy::start(&garage.endpoint(0));
    let prefix = "faults".to_string();
    let mut env = garage.env(&prefix);
    env.repo = proxy.location(&prefix);
    env.vars
        .extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut init = vec!["init", "--kdf-memory", "1024", "--kdf-iterations", "1"];
    init.extend_from_slice(SMALL_PACKS);
    env.ok(&init);
    Some(Rig {
        proxy,
        env,
        prefix,
        garage,
    })
}

/// Seeded sources of about 7 MiB: 24 incompressible files of 300 kB (seven
/// or so data packs) and `notes` small text files.
fn source(dir: &Path, seed: u64, notes: usize) {
    fs::create_dir_all(dir.join("notes")).expect("creating the source's notes/");
    let mut rng = common::rng(seed);
    for i in 0..notes {
        let text = common::text_bytes(&mut rng, 300 + i * 37);
        fs::write(dir.join(format!("notes/n-{i}.txt")), text).expect("writing a note");
    }
    common::random_files(dir, seed, 24, 300_000, |i| format!("r{i}.bin"));
}

fn utf8(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

fn backup_id(env: &Env, src: &Path) -> String {
    env.backup_json(&[utf8(src)])["snapshot_id"]
        .as_str()
        .expect("the backup summary has a snapshot_id")
        .to_string()
}

fn is_pack(r: &Request) -> bool {
    r.path.contains("/data/")
}

fn is_index(r: &Request) -> bool {
    r.path.contains("/index/")
}

fn is_snapshot(r: &Request) -> bool {
    r.path.contains("/snapshots/")
}

/// A GET of part of a pack: how restore and check read packs.
fn is_pack_range(r: &Request) -> bool {
    is_pack(r) && r.range.is_some()
}

/// Every request of `log` that got a fault was sent again afterwards (same
/// method, object, query and range), and that attempt succeeded.
fn assert_each_fault_retried(log: &[Logged]) {
    for e in log.iter().filter(|e| e.fault.is_some()) {
        assert!(
            log.iter()
                .any(|r| r.seq > e.seq && r.request.same_as(&e.request) && r.succeeded()),
            "no successful retry of {e}\n{}",
            render(log)
        );
    }
}

fn transient_kinds() -> Vec<Fault> {
    vec![
        Fault::Status(503),
        Fault::Status(500),
        Fault::Status(429),
        Fault::Reset,
    ]
}

/// Arms `faults`, one each, for requests with `method` that `matches`
/// accepts, each on a different object (or listing): the first such request
/// gets the first fault, the first on another object the second, and so on.
/// Retries of a faulted request go through.
fn arm_on_different_objects(
    proxy: &Proxy,
    method: &str,
    matches: fn(&Request) -> bool,
    faults: Vec<Fault>,
) {
    let hit = Arc::new(Mutex::new(HashSet::new()));
    for fault in faults {
        let hit = Arc::clone(&hit);
        proxy.fail(
            method,
            move |r| {
                matches(r)
                    && hit
                        .lock()
                        .expect("a rule panicked before")
                        .insert(r.subject())
            },
            1,
            fault,
        );
    }
}

/// The faults of `log` and how many different objects (or listings) they
/// were on.
fn faults_and_subjects(log: &[Logged]) -> (Vec<Fault>, usize) {
    let faulted: Vec<&Logged> = log.iter().filter(|e| e.fault.is_some()).collect();
    let subjects: HashSet<String> = faulted.iter().map(|e| e.request.subject()).collect();
    (
        faulted.iter().filter_map(|e| e.fault.clone()).collect(),
        subjects.len(),
    )
}

fn failure(what: &str, out: &Output) -> String {
    format!(
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

/// Throttling (503 SlowDown, 429), server errors (500) and connection resets
/// on pack uploads and on listings are retried, each for the same object,
/// and the backup succeeds; what it stored restores byte for byte and passes
/// `check --read-data`.
#[test]
fn transient_faults_on_pack_uploads_and_listings_are_retried() {
    let Some(rig) = rig(
        "s3_faults::transient_faults_on_pack_uploads_and_listings_are_retried",
        &[],
    ) else {
        return;
    };
    let (proxy, env) = (&rig.proxy, &rig.env);
    let src = env.path("src");
    source(&src, 1, 40);

    arm_on_different_objects(proxy, "PUT", is_pack, transient_kinds());
    arm_on_different_objects(
        proxy,
        "GET",
        Request::is_list,
        vec![Fault::Status(503), Fault::Reset],
    );
    let mark = proxy.mark();
    let id = backup_id(env, &src);
    let log = proxy.log_since(mark);
    eprintln!("backup:\n{}", render(&log));

    assert_eq!(proxy.faults_left(), 0, "faults not used:\n{}", render(&log));
    let (on_packs, packs) = faults_and_subjects(
        &log.iter()
            .filter(|e| !e.request.is_list())
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(on_packs, transient_kinds(), "{}", render(&log));
    assert_eq!(packs, 4, "four different packs:\n{}", render(&log));
    let (on_lists, lists) = faults_and_subjects(
        &log.iter()
            .filter(|e| e.request.is_list())
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        on_lists,
        [Fault::Status(503), Fault::Reset],
        "{}",
        render(&log)
    );
    assert_eq!(lists, 2, "two different listings:\n{}", render(&log));
    assert_each_fault_retried(&log);

    proxy.clear();
    restore_matches(env, &id, &src);
    check_clean(env);
}

/// The same transient faults on the ranged GETs that read packs are retried
/// by restore (which still restores every byte) and by `check --read-data`
/// (which still finds nothing wrong).
#[test]
fn transient_faults_on_pack_reads_are_retried_by_restore_and_check() {
    let Some(rig) = rig(
        "s3_faults::transient_faults_on_pack_reads_are_retried_by_restore_and_check",
        &[],
    ) else {
        return;
    };
    let (proxy, env) = (&rig.proxy, &rig.env);
    let src = env.path("src");
    source(&src, 2, 40);
    let id = backup_id(env, &src);

    for (what, run) in [
        (
            "restore",
            &(|| restore_matches(env, &id, &src)) as &dyn Fn(),
        ),
        ("check --read-data", &|| check_clean(env)),
    ] {
        arm_on_different_objects(proxy, "GET", is_pack_range, transient_kinds());
        let mark = proxy.mark();
        run();
        let log = proxy.log_since(mark);
        eprintln!("{what}:\n{}", render(&log));
        assert_eq!(
            proxy.faults_left(),
            0,
            "{what}: faults not used:\n{}",
            render(&log)
        );
        let (faults, packs) = faults_and_subjects(&log);
        assert_eq!(faults, transient_kinds(), "{what}:\n{}", render(&log));
        assert_eq!(packs, 4, "{what}: four different packs:\n{}", render(&log));
        assert_each_fault_retried(&log);
        proxy.clear();
    }
    check_clean(env);
    restore_matches(env, &id, &src);
}

/// A response that never comes is abandoned after CAIRN_S3_TIMEOUT and the
/// request sent again: a pack upload during backup and a pack read during
/// restore each stall for 4 s under a 1 s timeout, and both commands succeed.
/// The log shows the retry arriving while the stalled request was still
/// unanswered, so no clock is read to show it.
#[test]
fn stalled_requests_are_abandoned_after_the_timeout_and_retried() {
    let Some(rig) = rig(
        "s3_faults::stalled_requests_are_abandoned_after_the_timeout_and_retried",
        &[("CAIRN_S3_TIMEOUT", "1")],
    ) else {
        return;
    };
    let (proxy, env) = (&rig.proxy, &rig.env);
    let src = env.path("src");
    source(&src, 3, 20);
    let stall = Fault::Stall(Duration::from_secs(4));

    let assert_abandoned_and_retried = |what: &str, log: &[Logged]| {
        eprintln!("{what}:\n{}", render(log));
        let stalled = log
            .iter()
            .find(|e| e.fault == Some(stall.clone()))
            .unwrap_or_else(|| panic!("{what}: nothing stalled:\n{}", render(log)));
        let retries: Vec<&Logged> = log
            .iter()
            .filter(|r| r.seq > stalled.seq && r.request.same_as(&stalled.request))
            .collect();
        let first = retries
            .first()
            .unwrap_or_else(|| panic!("{what}: {stalled} was not retried:\n{}", render(log)));
        assert!(
            stalled.done.is_none_or(|d| first.seq < d),
            "{what}: the retry {first} came after {stalled} was answered:\n{}",
            render(log)
        );
        assert!(
            retries.iter().any(|r| r.succeeded()),
            "{what}: no retry succeeded:\n{}",
            render(log)
        );
    };

    proxy.fail("PUT", is_pack, 1, stall.clone());
    let mark = proxy.mark();
    let id = backup_id(env, &src);
    assert_abandoned_and_retried("backup", &proxy.log_since(mark));

    proxy.fail("GET", is_pack_range, 1, stall.clone());
    let mark = proxy.mark();
    restore_matches(env, &id, &src);
    assert_abandoned_and_retried("restore", &proxy.log_since(mark));
    assert_eq!(proxy.faults_left(), 0);
}

/// A 403 is permanent: a pack upload refused with AccessDenied fails the
/// backup at once, with a message naming the object and saying to check the
/// credentials, and the refused request was sent exactly once.
#[test]
fn a_refused_pack_upload_fails_the_backup_without_retrying() {
    let Some(rig) = rig(
        "s3_faults::a_refused_pack_upload_fails_the_backup_without_retrying",
        &[],
    ) else {
        return;
    };
    let (proxy, env) = (&rig.proxy, &rig.env);
    let src = env.path("src");
    source(&src, 4, 20);

    proxy.fail_path("PUT", "/data/", 1, Fault::Status(403));
    let mark = proxy.mark();
    let out = env.run(&["backup", utf8(&src)]);
    let log = proxy.log_since(mark);
    eprintln!("backup:\n{}\n{}", render(&log), stderr(&out));
    assert!(!out.status.success(), "{}", failure("backup", &out));
    let refused = log
        .iter()
        .find(|e| e.fault.is_some())
        .unwrap_or_else(|| panic!("no 403 was given:\n{}", render(&log)));
    let object = refused
        .request
        .key()
        .strip_prefix(&format!("{}/", rig.prefix))
        .expect("the object is under the prefix");
    assert!(object.starts_with("data/"), "{refused}");
    let err = stderr(&out);
    assert!(err.contains(object), "{object} not named:\n{err}");
    assert!(err.contains("check the credentials"), "{err}");
    assert!(
        !err.contains(&rig.garage.secret),
        "the secret key leaked:\n{err}"
    );
    let attempts = log
        .iter()
        .filter(|e| e.request.same_as(&refused.request))
        .count();
    assert_eq!(attempts, 1, "a 403 was retried:\n{}", render(&log));
    assert!(
        !log.iter()
            .any(|e| is_snapshot(&e.request) && e.request.method == "PUT"),
        "a snapshot was committed:\n{}",
        render(&log)
    );
}

/// Against Garage itself: a wrong secret key fails with a message naming the
/// object refused and saying to check the credentials, without the secret;
/// through the proxy the same command is seen to send one request, not
/// retry it. A bucket that does not exist is reported as such, by `init` and
/// by a command opening a repository.
#[test]
fn wrong_credentials_and_a_missing_bucket_are_reported_not_retried() {
    let Some(garage) = Garage::single(
        "s3_faults::wrong_credentials_and_a_missing_bucket_are_reported_not_retried",
    ) else {
        return;
    };
    let prefix = "creds";
    let good = garage.env_with_repo(prefix, &[]);
    let wrong_secret = "0123456789abcdef".repeat(4);
    let mut bad = garage.env(prefix);
    for (k, v) in &mut bad.vars {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = wrong_secret.clone();
        }
    }
    let config = format!("{}/config", good.repo.display());
    for args in [&["snapshots"][..], &["backup", utf8(good.dir.path())]] {
        let out = bad.run(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{}", failure("wrong secret", &out));
        assert!(err.contains(&config), "{config} not named:\n{err}");
        assert!(err.contains("check the credentials"), "{err}");
        assert!(
            !err.contains(&wrong_secret) && !err.contains(&garage.secret),
            "a secret key leaked:\n{err}"
        );
    }

    let proxy = Proxy::start(&garage.endpoint(0));
    bad.repo = proxy.location(prefix);
    let out = bad.run(&["snapshots"]);
    assert!(!out.status.success(), "{}", failure("wrong secret", &out));
    let log = proxy.log();
    assert_eq!(
        log.len(),
        1,
        "one refused request, not retried:\n{}",
        render(&log)
    );
    assert_eq!(log[0].status, Some(403), "{}", render(&log));

    let mut missing = garage.env("x");
    missing.repo = format!("s3:{}/nosuchbucket/x", garage.endpoint(0)).into();
    for args in [
        &["init", "--kdf-memory", "1024", "--kdf-iterations", "1"][..],
        &["snapshots"],
    ] {
        let out = missing.run(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{}", failure("missing bucket", &out));
        assert!(err.contains("does not exist"), "{args:?}: {err}");
        assert!(err.contains("nosuchbucket"), "{args:?}: {err}");
        assert!(
            !err.contains(&garage.secret),
            "the secret key leaked:\n{err}"
        );
    }
}

/// No snapshot is committed before its data and index: with every index
/// upload failing (503, retried twice), the backup fails, saying it gave up
/// after 2 retries, no snapshot object was PUT and `snapshots` lists none
/// new; the next backup, fault-free, adopts the packs the failed one stored
/// instead of sending them again, succeeds, and the repository checks clean.
#[test]
fn a_backup_whose_index_uploads_fail_commits_no_snapshot() {
    let Some(rig) = rig(
        "s3_faults::a_backup_whose_index_uploads_fail_commits_no_snapshot",
        &[("CAIRN_S3_RETRIES", "2")],
    ) else {
        return;
    };
    let (proxy, env) = (&rig.proxy, &rig.env);
    let src = env.path("src");
    source(&src, 5, 20);
    backup_id(env, &src);
    let before = snapshot_ids(env);
    // New data, so that the next backup has packs and an index to write.
    common::random_files(&src, 55, 6, 300_000, |i| format!("new-{i}.bin"));

    proxy.fail("PUT", is_index, usize::MAX, Fault::Status(503));
    let mark = proxy.mark();
    let out = env.run(&["backup", utf8(&src)]);
    let log = proxy.log_since(mark);
    eprintln!("backup:\n{}\n{}", render(&log), stderr(&out));
    assert!(!out.status.success(), "{}", failure("backup", &out));
    let index_puts: Vec<&Logged> = log
        .iter()
        .filter(|e| e.request.method == "PUT" && is_index(&e.request))
        .collect();
    assert!(!index_puts.is_empty(), "no index PUT:\n{}", render(&log));
    assert!(index_puts.iter().all(|e| e.status == Some(503)));
    // One attempt and CAIRN_S3_RETRIES=2 retries, for each index file.
    let mut attempts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &index_puts {
        *attempts.entry(e.request.key()).or_default() += 1;
    }
    assert!(
        attempts.values().all(|&n| n == 3),
        "{attempts:?}\n{}",
        render(&log)
    );
    assert!(
        !log.iter()
            .any(|e| e.request.method == "PUT" && is_snapshot(&e.request)),
        "a snapshot was PUT though its index was not stored:\n{}",
        render(&log)
    );
    let err = stderr(&out);
    assert!(err.contains("index/"), "the index object not named:\n{err}");
    assert!(err.contains("gave up after 2 retries"), "{err}");

    proxy.clear();
    assert_eq!(snapshot_ids(env), before, "a snapshot appeared");
    let stored: HashSet<&str> = log
        .iter()
        .filter(|e| e.request.method == "PUT" && is_pack(&e.request) && e.succeeded())
        .map(|e| e.request.key())
        .collect();
    assert!(!stored.is_empty(), "no pack stored:\n{}", render(&log));
    let mark = proxy.mark();
    let id = backup_id(env, &src);
    let next = proxy.log_since(mark);
    // The failed run's packs are adopted (indexed as found), not sent again.
    assert!(
        !next
            .iter()
            .any(|e| e.request.method == "PUT" && stored.contains(e.request.key())),
        "packs uploaded again:\n{}",
        render(&next)
    );
    assert_eq!(snapshot_ids(env).len(), before.len() + 1);
    check_clean(env);
    restore_matches(env, &id, &src);
}

/// A backup PUTs its snapshot only after every pack and index file of the
/// run was stored: each of those uploads is held back 100 ms, so a snapshot
/// PUT sent before they were answered would arrive while they were held.
#[test]
fn snapshots_are_put_after_the_packs_and_index_they_name() {
    let Some(rig) = rig(
        "s3_faults::snapshots_are_put_after_the_packs_and_index_they_name",
        &[],
    ) else {
        return;
    };
    let (proxy, env) = (&rig.proxy, &rig.env);
    let src = env.path("src");
    source(&src, 6, 40);
    proxy.fail(
        "PUT",
        |r| is_pack(r) || is_index(r),
        usize::MAX,
        Fault::Stall(Duration::from_millis(100)),
    );

    for round in 0..2 {
        if round == 1 {
            common::random_files(&src, 66, 4, 300_000, |i| format!("more-{i}.bin"));
        }
        let mark = proxy.mark();
        backup_id(env, &src);
        let log = proxy.log_since(mark);
        eprintln!("round {round}:\n{}", render(&log));
        let puts = |f: fn(&Request) -> bool| -> Vec<&Logged> {
            log.iter()
                .filter(|e| e.request.method == "PUT" && f(&e.request))
                .collect()
        };
        let (stored, snapshots) = (puts(|r| is_pack(r) || is_index(r)), puts(is_snapshot));
        assert!(
            puts(is_pack).len() >= 2 && puts(is_index).len() == 1 && snapshots.len() == 1,
            "round {round}:\n{}",
            render(&log)
        );
        for s in &snapshots {
            for d in &stored {
                assert!(
                    d.succeeded() && d.done.is_some_and(|done| done < s.seq),
                    "round {round}: {s} was sent before {d} was answered:\n{}",
                    render(&log)
                );
            }
        }
    }
    check_clean(env);
}

/// Requests by kind, for counting: `LIST dir/`, or the method and the
/// object's directory (`GET data`, `HEAD config`).
fn census<'a>(
    entries: impl IntoIterator<Item = &'a Logged>,
    prefix: &str,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for e in entries {
        let r = &e.request;
        let kind = if r.is_list() {
            let p = r.param("prefix").unwrap_or_default();
            let dir = p.strip_prefix(&format!("{prefix}/")).unwrap_or(&p);
            format!("LIST {dir}")
        } else {
            let key = r.key().strip_prefix(&format!("{prefix}/")).unwrap_or("?");
            let dir = key.split_once('/').map_or(key, |(d, _)| d);
            format!("{} {dir}", r.method)
        };
        *counts.entry(kind).or_default() += 1;
    }
    counts
}

/// The requests an unchanged re-backup may make: it opens the repository
/// (config, key file), takes its lock and reads it back, lists, commits its
/// snapshot and drops its lock. Of objects it did not write itself it GETs
/// the config, the key file (twice: once to order the keys by cost, once to
/// open), and at most `snapshots` snapshots; no pack, no index file.
///
/// GETs of objects the run wrote itself are counted apart: a backup reads
/// back the tail of each pack and index file it wrote before committing
/// (`Saver::verify_written`), and even an unchanged source gets new trees
/// when a directory above it changed (/tmp, as other tests make their
/// directories).
fn assert_unchanged_rebackup_is_cheap(what: &str, log: &[Logged], prefix: &str, snapshots: usize) {
    let written: HashSet<&str> = log
        .iter()
        .filter(|e| e.request.method == "PUT")
        .map(|e| e.request.key())
        .collect();
    let (own, others): (Vec<&Logged>, Vec<&Logged>) = log
        .iter()
        .filter(|e| e.request.method == "GET" && !e.request.is_list())
        .partition(|e| written.contains(e.request.key()));
    let all = census(log, prefix);
    let gets = census(others.iter().copied(), prefix);
    eprintln!("{what}: all requests: {all:?}");
    eprintln!("{what}: GETs of objects it did not write: {gets:?}");
    eprintln!(
        "{what}: GETs of objects it wrote: {:?}",
        census(own.iter().copied(), prefix)
    );
    let get = |dir: &str| gets.get(&format!("GET {dir}")).copied().unwrap_or(0);
    let shown = || format!("{gets:?}\n{}", render(log));
    assert_eq!(get("data"), 0, "{what}: packs read: {}", shown());
    assert_eq!(get("index"), 0, "{what}: index files read: {}", shown());
    assert!(get("snapshots") <= snapshots, "{what}: {}", shown());
    assert!(
        get("config") <= 1 && get("keys") <= 2,
        "{what}: {}",
        shown()
    );
    assert!(
        others.len() <= 3 + snapshots,
        "{what}: {} GETs: {}",
        others.len(),
        shown()
    );
    // The README says "about 20 requests" (21 measured: listings, the config
    // and key, its lock and its snapshot).
    assert!(
        log.len() <= 25 + snapshots,
        "{what}: {} requests in all: {all:?}",
        log.len()
    );
}

/// With the local cache warm, an unchanged re-backup of a few hundred files
/// GETs no pack, index file, snapshot or tree: of objects, only the config,
/// the key file and its own lock. The cache is warmed by `ls`, a reader
/// (the next test shows a backup's own writes warm it too); reading the parent's trees
/// through it also keeps the test independent of what this re-backup writes
/// (new trees for the directories above the source when, say, /tmp changed).
#[test]
fn an_unchanged_rebackup_with_a_warm_cache_gets_no_packs() {
    let Some(rig) = rig(
        "s3_faults::an_unchanged_rebackup_with_a_warm_cache_gets_no_packs",
        &[],
    ) else {
        return;
    };
    let (proxy, env) = (&rig.proxy, &rig.env);
    let src = env.path("src");
    source(&src, 7, 300);
    backup_id(env, &src);
    env.ok(&["ls", "latest"]);
    let mark = proxy.mark();
    let out = env.backup_json(&[utf8(&src)]);
    assert_eq!(out["files_new"], 0, "{out}");
    assert_eq!(out["files_changed"], 0, "{out}");
    assert_unchanged_rebackup_is_cheap("re-backup", &proxy.log_since(mark), &rig.prefix, 0);
}

/// The first unchanged re-backup after a backup is as cheap: the index files,
/// snapshot and tree packs that backup wrote are what the next one reads, and
/// writes go through to the local cache, so none is fetched back.
#[test]
fn an_unchanged_rebackup_right_after_a_backup_gets_no_packs() {
    let Some(rig) = rig(
        "s3_faults::an_unchanged_rebackup_right_after_a_backup_gets_no_packs",
        &[],
    ) else {
        return;
    };
    let (proxy, env) = (&rig.proxy, &rig.env);
    let src = env.path("src");
    source(&src, 7, 300);
    backup_id(env, &src);
    let mark = proxy.mark();
    backup_id(env, &src);
    assert_unchanged_rebackup_is_cheap("re-backup", &proxy.log_since(mark), &rig.prefix, 1);
}

/// `check` (which reads a bucket without the local cache) walks the trees of
/// a snapshot of 120 directories with a request per tree pack, not per tree:
/// each tree pack is fetched whole, once, and verified; the trees are read
/// from it.
#[test]
fn check_reads_each_tree_pack_once_not_each_tree() {
    let Some(rig) = rig(
        "s3_faults::check_reads_each_tree_pack_once_not_each_tree",
        &[],
    ) else {
        return;
    };
    let (proxy, env) = (&rig.proxy, &rig.env);
    let src = env.path("src");
    for i in 0..120 {
        let d = src.join(format!("d{i:03}"));
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join("f"), format!("file {i}")).expect("write");
    }
    backup_id(env, &src);
    let mark = proxy.mark();
    env.ok(&["check"]);
    let log = proxy.log_since(mark);
    let pack_gets: Vec<&Logged> = log
        .iter()
        .filter(|e| e.request.method == "GET" && is_pack(&e.request) && !e.request.is_list())
        .collect();
    let packs: HashSet<&str> = pack_gets.iter().map(|e| e.request.key()).collect();
    // Per tree pack: its first bytes (the session key) and the whole pack.
    assert!(
        pack_gets.len() <= 2 * packs.len(),
        "{} GETs of {} packs for 121 trees:\n{}",
        pack_gets.len(),
        packs.len(),
        render(&log)
    );
}

/// Packs larger than 32 MiB (a repository made with `--pack-size 40`) go up as
/// multipart uploads (the log shows the upload created, its parts and its
/// completion), and read back whole: restore and `check --read-data` are clean.
#[test]
fn a_large_pack_is_a_multipart_upload() {
    use cairn::backend::Backend as _;
    let Some(garage) = Garage::single("s3_faults::a_large_pack_is_a_multipart_upload") else {
        return;
    };
    let proxy = Proxy::start(&garage.endpoint(0));
    let mut env = garage.env("large");
    env.repo = proxy.location("large");
    env.ok(&[
        "init",
        "--kdf-memory",
        "1024",
        "--kdf-iterations",
        "1",
        "--pack-size",
        "40",
    ]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("big.bin"), common::xorshift(77, 45 << 20)).expect("write");
    let id = backup_id(&env, &src);
    let log = proxy.log();
    let on_packs = |pred: &dyn Fn(&Request) -> bool| {
        log.iter()
            .filter(|e| is_pack(&e.request) && pred(&e.request) && e.succeeded())
            .count()
    };
    let created = on_packs(&|r| r.method == "POST" && r.param("uploads").is_some());
    let parts = on_packs(&|r| r.method == "PUT" && r.param("partNumber").is_some());
    let completed = on_packs(&|r| r.method == "POST" && r.param("uploadId").is_some());
    assert!(
        created >= 1 && parts >= 2 * created && completed == created,
        "{created} uploads created, {parts} parts, {completed} completed:\n{}",
        render(&log)
    );
    let largest = garage
        .backend(0, "large")
        .list(cairn::backend::FileType::Pack)
        .expect("list")
        .iter()
        .map(|e| e.size)
        .max()
        .unwrap_or(0);
    assert!(largest > 32 << 20, "the largest pack has {largest} bytes");
    restore_matches(&env, &id, &src);
    check_clean(&env);
}
