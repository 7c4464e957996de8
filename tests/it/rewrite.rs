//! `cairn tag`, `cairn rewrite`, `cairn key passwd` and `snapshots --group-by /
//! --compact`: snapshots replaced by new ones that name what they replace, data
//! removed from existing snapshots, a password changed.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn::backend::LocalBackend;
use cairn::id::{BlobId, SnapshotId};
use cairn::pack::BlobKind;
use cairn::repository::Repository;
use cairn::walk::Selection;

use crate::common::{self, Env, last_json, stderr, stdout};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// `cat snapshot ID --json`, parsed.
fn snapshot(env: &Env, id: &str) -> serde_json::Value {
    serde_json::from_str(&env.ok(&["cat", "snapshot", id, "--json"])).expect("cat snapshot --json")
}

fn tags(v: &serde_json::Value) -> Vec<String> {
    v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t.as_str().expect("a tag is a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The JSON lines of `out` whose message_type is `kind`.
fn lines(out: &str, kind: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message_type"] == kind)
        .collect()
}

fn backup_id(env: &Env, args: &[&str]) -> String {
    let summary = env.backup_json(args);
    summary["snapshot_id"]
        .as_str()
        .unwrap_or_else(|| panic!("snapshot_id in {summary}"))
        .to_string()
}

/// A source tree: a few random files in `data/`, a secret file beside them,
/// and a `private/` directory of two files.
fn source(env: &Env, seed: u64) -> PathBuf {
    let src = env.path("src");
    for d in ["data", "private"] {
        fs::create_dir_all(src.join(d)).expect("mkdir");
    }
    common::random_files(&src.join("data"), seed, 5, 40 << 10, |i| {
        format!("f{i}.bin")
    });
    common::random_files(&src, seed + 1, 1, 20 << 10, |_| "secret.txt".into());
    common::random_files(&src.join("private"), seed + 2, 2, 10 << 10, |i| {
        format!("p{i}")
    });
    src
}

fn open(env: &Env) -> Repository {
    Repository::open(
        Arc::new(LocalBackend::new(&env.repo)),
        common::PASSWORD.as_bytes(),
    )
    .expect("open")
}

/// The data blobs of the file at `path` in snapshot `id`.
fn file_blobs(env: &Env, id: &str, path: &Path) -> Vec<BlobId> {
    let repo = open(env);
    let index = repo.load_index(&mut |_, _| {}).expect("index");
    let snap = repo
        .load_snapshot(&SnapshotId::from_name(id).expect("id"))
        .expect("snapshot");
    match cairn::walk::resolve(&repo, &index, &snap.tree, s(path)).expect("resolve") {
        Selection::Node { node, .. } => node.content,
        Selection::Dir { .. } => panic!("{} is a directory", path.display()),
    }
}

fn snapshot_file_exists(env: &Env, id: &str) -> bool {
    env.repo.join("snapshots").join(id).exists()
}

/// Tag changes: exact tags, the old file gone, `replaces` and `original` set;
/// a change that changes nothing writes nothing; bad flags are usage errors.
#[test]
fn tag_add_remove_and_set_replace_the_snapshot() {
    let env = Env::with_repo(&[]);
    let src = source(&env, 1);
    let first = backup_id(&env, &["--tag", "a", s(&src)]);

    let out = env.ok(&["tag", &first[..8], "--add", "b", "--add", "c", "--json"]);
    let tagged = lines(&out, "tagged");
    assert_eq!(tagged.len(), 1, "{out}");
    assert_eq!(tagged[0]["snapshot_id"], first.as_str());
    assert_eq!(tagged[0]["changed"], true);
    assert_eq!(tags(&tagged[0]), ["a", "b", "c"]);
    let second = tagged[0]["new_snapshot_id"]
        .as_str()
        .expect("new id")
        .to_string();
    let summary = last_json(&out, "summary");
    assert_eq!(summary["command"], "tag");
    assert_eq!(
        (summary["changed"].as_u64(), summary["unchanged"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(!snapshot_file_exists(&env, &first));
    assert_eq!(common::snapshot_ids(&env), [second.as_str()]);
    let v = snapshot(&env, &second);
    assert_eq!(tags(&v), ["a", "b", "c"]);
    assert_eq!(v["replaces"], first.as_str());
    assert_eq!(v["original"], first.as_str());
    assert!(v["parent"].is_null());

    // Removing keeps `original` (the first snapshot), `replaces` the last.
    let out = env.ok(&["tag", "latest", "--remove", "a", "--json"]);
    let third = last_json(&out, "tagged")["new_snapshot_id"]
        .as_str()
        .expect("new id")
        .to_string();
    let v = snapshot(&env, &third);
    assert_eq!(tags(&v), ["b", "c"]);
    assert_eq!(v["replaces"], second.as_str());
    assert_eq!(v["original"], first.as_str());
    assert_eq!(common::snapshot_ids(&env), [third.as_str()]);

    let out = env.ok(&["tag", &third, "--set", "x", "--set", "y"]);
    assert!(out.contains("tags x, y"), "{out}");
    let fourth = common::snapshot_ids(&env).remove(0);
    assert_eq!(tags(&snapshot(&env, &fourth)), ["x", "y"]);
    assert_eq!(snapshot(&env, &fourth)["original"], first.as_str());

    // Nothing changes: no new file.
    let out = env.ok(&["tag", "latest", "--add", "y", "--remove", "zz", "--json"]);
    let t = last_json(&out, "tagged");
    assert_eq!(t["changed"], false);
    assert!(t["new_snapshot_id"].is_null());
    assert_eq!(last_json(&out, "summary")["unchanged"], 1);
    assert_eq!(common::snapshot_ids(&env), [fourth.as_str()]);

    // `--set ''` clears every tag.
    env.ok(&["tag", "latest", "--set", ""]);
    let last = common::snapshot_ids(&env).remove(0);
    assert!(tags(&snapshot(&env, &last)).is_empty());

    for bad in [
        vec!["tag", "latest"],
        vec!["tag", "latest", "--set", "a", "--add", "b"],
        vec!["tag", "latest", "--add", "a", "--remove", "a"],
        vec!["tag", "latest", "--add", ""],
        vec!["tag", "latest:/x", "--add", "a"],
        vec!["tag", "--add", "a"],
    ] {
        let out = env.run(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
    assert_eq!(common::snapshot_ids(&env), [last]);
}

/// A tagged snapshot stays the same backup for `copy`: tagging a copy, or the
/// source, and copying again copies nothing.
#[test]
fn a_tag_change_does_not_travel_by_copy() {
    let a = Env::with_repo(&[]);
    let src = source(&a, 2);
    let id = backup_id(&a, &[s(&src)]);
    let b = Env::with_repo(&[]);
    let copy = |to: &Env, from: &Env| {
        let out = to.ok(&[
            "copy",
            "--from-repo",
            s(&from.repo),
            "--from-password-file",
            s(&from.password_file),
            "--json",
        ]);
        last_json(&out, "summary")
    };
    let first = copy(&b, &a);
    assert_eq!(first["copied"].as_array().map(Vec::len), Some(1));
    let copied = common::snapshot_ids(&b).remove(0);

    b.ok(&["tag", "latest", "--add", "copied"]);
    let retagged = common::snapshot_ids(&b).remove(0);
    assert_ne!(retagged, copied);
    let v = snapshot(&b, &retagged);
    assert_eq!(v["original"], id.as_str(), "the copy's original is kept");
    assert_eq!(v["replaces"], copied.as_str());
    let again = copy(&b, &a);
    assert_eq!(again["copied"].as_array().map(Vec::len), Some(0), "{again}");
    assert_eq!(again["already_there"], serde_json::json!([id]));

    // Tagged in the source: still the same backup, so not copied again, and
    // the destination's tags stay its own.
    a.ok(&["tag", "latest", "--add", "source-side"]);
    let again = copy(&b, &a);
    assert_eq!(again["copied"].as_array().map(Vec::len), Some(0), "{again}");
    assert_eq!(common::snapshot_ids(&b), [retagged.as_str()]);
    assert_eq!(tags(&snapshot(&b, &retagged)), ["copied"]);
}

/// Files of `src` (relative), but those under `skip`.
fn files_but(src: &Path, skip: &[&str]) -> Vec<PathBuf> {
    common::all_files(src)
        .into_iter()
        .map(|f| f.strip_prefix(src).expect("prefix").to_path_buf())
        .filter(|r| !skip.iter().any(|s| r.starts_with(s)))
        .collect()
}

/// `rewrite --forget` removes a secret file and a directory from two snapshots
/// and leaves a third (where nothing matches) alone; after `prune` the secret's
/// blobs are gone from the index, `check --read-data` is clean, and the
/// rewritten snapshot restores everything else byte for byte.
#[test]
fn rewrite_forget_then_prune_removes_a_secret() {
    let env = Env::with_repo(&[]);
    let src = source(&env, 3);
    let one = backup_id(&env, &[s(&src)]);
    fs::write(src.join("data/f0.bin"), b"changed between the backups").expect("write");
    let two = backup_id(&env, &[s(&src)]);
    let elsewhere = env.path("elsewhere");
    fs::create_dir_all(&elsewhere).expect("mkdir");
    fs::write(elsewhere.join("notes"), b"nothing secret").expect("write");
    let other = backup_id(&env, &[s(&elsewhere)]);
    let secret_blobs = file_blobs(&env, &two, &src.join("secret.txt"));
    let private_blobs = file_blobs(&env, &two, &src.join("private/p0"));
    let entries_before = snapshot(&env, &two)["summary"]["entries"]
        .as_u64()
        .expect("entries");
    let bytes_before = snapshot(&env, &two)["summary"]["total_bytes"]
        .as_u64()
        .expect("total_bytes");

    let out = env.ok(&[
        "rewrite",
        &one,
        &two,
        &other,
        "--exclude",
        "secret.txt",
        "--exclude",
        &format!("{}/private", s(&src)),
        "--forget",
        "--json",
    ]);
    let done = lines(&out, "rewritten");
    assert_eq!(done.len(), 3, "{out}");
    let mut new_ids = Vec::new();
    for (r, old) in done.iter().zip([&one, &two]) {
        assert_eq!(r["snapshot_id"], old.as_str());
        assert_eq!(
            (r["changed"].as_bool(), r["forgotten"].as_bool()),
            (Some(true), Some(true))
        );
        assert_eq!(r["dry_run"], false);
        // secret.txt, private/ and its two files.
        assert_eq!(r["entries_removed"], 4, "{r}");
        assert_eq!(r["files_removed"], 3);
        assert_eq!(r["bytes_removed"], (20 << 10) + 2 * (10 << 10));
        let removed: Vec<(&str, &str)> = r["removed"]
            .as_array()
            .expect("removed")
            .iter()
            .map(|x| {
                (
                    x["path"].as_str().expect("path"),
                    x["kind"].as_str().expect("kind"),
                )
            })
            .collect();
        let private = format!("{}/private", s(&src));
        let secret = format!("{}/secret.txt", s(&src));
        assert_eq!(
            removed,
            [(private.as_str(), "dir"), (secret.as_str(), "file")]
        );
        assert_eq!(r["removed"][0]["entries"], 3);
        assert_eq!(r["removed"][0]["files"], 2);
        assert_eq!(r["removed"][0]["bytes"], 2 * (10 << 10));
        assert_eq!(r["removed"][1]["files"], 1);
        assert_eq!(r["removed"][1]["bytes"], 20 << 10);
        assert!(r["removed"][1].get("path_bytes").is_none());
        assert_eq!(r["removed"][0]["uncounted"], false);
        assert_eq!(r["entries"], entries_before - 4);
        if *old == two {
            assert_eq!(r["total_bytes"], bytes_before - (40 << 10));
        }
        new_ids.push(r["new_snapshot_id"].as_str().expect("new id").to_string());
    }
    let untouched = &done[2];
    assert_eq!(untouched["snapshot_id"], other.as_str());
    assert_eq!(untouched["changed"], false);
    assert!(untouched["new_snapshot_id"].is_null());
    assert_eq!(untouched["removed"], serde_json::json!([]));
    let summary = last_json(&out, "summary");
    assert_eq!(summary["command"], "rewrite");
    assert_eq!(summary["snapshots"], 3);
    assert_eq!(summary["rewritten"], 2);
    assert_eq!(summary["snapshots_removed"], 2);
    assert_eq!(summary["entries_removed"], 8);
    assert_eq!(summary["bytes_removed"], 2 * (40 << 10));
    assert_eq!(summary["dry_run"], false);
    assert!(summary["bytes_added"].as_u64() > Some(0));
    assert!(summary["tree_blobs_new"].as_u64() > Some(0));

    let mut ids = common::snapshot_ids(&env);
    ids.sort();
    let mut want = vec![other.clone(), new_ids[0].clone(), new_ids[1].clone()];
    want.sort();
    assert_eq!(
        ids, want,
        "the old snapshots are gone, the other one untouched"
    );
    for (new, old) in new_ids.iter().zip([&one, &two]) {
        let v = snapshot(&env, new);
        let was = snapshot(&env, &other);
        assert_eq!(v["replaces"], old.as_str());
        assert_eq!(v["original"], old.as_str());
        assert_eq!(v["hostname"], was["hostname"]);
        assert_eq!(v["paths"], serde_json::json!([s(&src)]));
        assert_eq!(
            v["excludes"],
            serde_json::json!(["secret.txt", format!("{}/private", s(&src))])
        );
        assert_eq!(v["summary"]["entries"], entries_before - 4);
        if new == &new_ids[1] {
            assert_eq!(v["summary"]["total_bytes"], bytes_before - (40 << 10));
        }
    }
    // The old second snapshot's time is kept, and with it the order.
    assert_eq!(common::snapshot_ids(&env)[1], new_ids[1]);

    let indexed = |b: &BlobId| {
        let index = open(&env).load_index(&mut |_, _| {}).expect("index");
        index.contains(BlobKind::Data, b)
    };
    assert!(
        secret_blobs.iter().chain(&private_blobs).all(indexed),
        "kept until prune"
    );
    env.ok(&["prune"]);
    common::check_clean(&env);
    let repo = open(&env);
    let index = repo.load_index(&mut |_, _| {}).expect("index");
    for b in secret_blobs.iter().chain(&private_blobs) {
        assert!(
            !index.contains(BlobKind::Data, b),
            "blob {b} is still indexed"
        );
    }

    let target = env.path("restored");
    env.ok(&[
        "restore",
        &format!("{}:{}", new_ids[1], s(&src)),
        "--target",
        s(&target),
        "--verify",
    ]);
    let kept = files_but(&src, &["secret.txt", "private"]);
    assert_eq!(kept.len(), 5);
    for rel in &kept {
        assert_eq!(
            fs::read(src.join(rel)).expect("src"),
            fs::read(target.join(rel)).expect("restored"),
            "{}",
            rel.display()
        );
    }
    assert_eq!(files_but(&target, &[]), kept, "nothing else came back");
    assert!(!target.join("private").exists());
}

/// Without `--forget` both snapshots stay, and the rewritten one (of the same
/// time, naming the other as `replaces`) is `latest`. A dry run writes no file;
/// a snapshot nothing matches in is left alone.
#[test]
fn rewrite_dry_run_and_without_forget() {
    let env = Env::with_repo(&[]);
    let src = source(&env, 4);
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.tmp");
    fs::write(src.join("data").join(odd), b"latin-1 name").expect("write");
    let id = backup_id(&env, &[s(&src)]);
    let files = || {
        let mut all = common::all_files(&env.repo);
        all.retain(|p| !p.starts_with(env.repo.join("locks")));
        all
    };
    let before = files();

    let out = env.ok(&[
        "rewrite",
        "latest",
        "-e",
        "secret.txt",
        "--dry-run",
        "--verbose",
    ]);
    assert!(
        out.contains(&format!(
            "snapshot {}: would remove 1 entry (1 file, 20.0 KiB)",
            &id[..8]
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("  {}/secret.txt (file, 20.0 KiB)", s(&src))),
        "{out}"
    );
    let out = env.ok(&[
        "rewrite",
        "latest",
        "-e",
        "secret.txt",
        "--dry-run",
        "--json",
    ]);
    let r = last_json(&out, "rewritten");
    assert_eq!(
        (r["dry_run"].as_bool(), r["changed"].as_bool()),
        (Some(true), Some(true))
    );
    assert!(r["new_snapshot_id"].is_null());
    let summary = last_json(&out, "summary");
    assert_eq!(
        (
            summary["tree_blobs_new"].as_u64(),
            summary["bytes_added"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(summary["dry_run"], true);
    // A name that isn't UTF-8 comes with its bytes.
    let out = env.ok(&["rewrite", "latest", "-e", "*.tmp", "--dry-run", "--json"]);
    let r = last_json(&out, "rewritten");
    let mut raw = src.join("data").as_os_str().as_bytes().to_vec();
    raw.extend_from_slice(b"/caf\xe9.tmp");
    assert_eq!(r["removed"][0]["path_bytes"], serde_json::json!(raw), "{r}");
    assert_eq!(r["removed"][0]["bytes"], 12);
    let out = env.ok(&["rewrite", "latest", "-e", "no-such-name"]);
    assert!(out.contains("nothing matches, left as it is"), "{out}");
    assert_eq!(
        files(),
        before,
        "a dry run, and a rewrite that matches nothing, write nothing"
    );

    let patterns = env.path("patterns");
    fs::write(&patterns, "# what must go\nprivate\n\nsecret.txt\n").expect("write");
    let out = env.ok(&["rewrite", &id, "--exclude-file", s(&patterns), "--json"]);
    let r = last_json(&out, "rewritten");
    assert_eq!(r["forgotten"], false);
    let new = r["new_snapshot_id"].as_str().expect("new id").to_string();
    assert_eq!(common::snapshot_ids(&env), [id.clone(), new.clone()]);
    let latest: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat", "snapshot", "latest", "--json"])).expect("json");
    assert_eq!(latest["replaces"], id.as_str());
    let listed = env.ok(&["ls", "latest"]);
    assert!(
        !listed.contains("secret.txt") && !listed.contains("private"),
        "{listed}"
    );
    assert!(env.ok(&["ls", &id]).contains("secret.txt"));

    let out = env.run(&["rewrite", "latest"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = env.run(&["rewrite", "latest", "-e", "a["]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// `key passwd` replaces the key that opened the repository: the old password
/// then fails with exit 12, the new one opens, another key is untouched; a
/// generated secret's key is refused.
#[test]
fn key_passwd_replaces_the_opening_key() {
    let env = Env::with_repo(&[]);
    let other = env.path("other-password");
    common::write_private(&other, "another one\n");
    env.ok(&[
        "key",
        "add",
        "--new-password-file",
        s(&other),
        "--kdf-memory",
        "1024",
        "--kdf-iterations",
        "1",
    ]);
    let keys = |pw: &Path| -> Vec<serde_json::Value> {
        serde_json::from_str(&env.ok_with(pw, &["key", "list", "--json"])).expect("json")
    };
    let before = keys(&env.password_file);
    let old = before
        .iter()
        .find(|k| k["current"] == true)
        .expect("current")["id"]
        .clone();
    let new_pw = env.path("new-password");
    common::write_private(&new_pw, "a new password\n");
    let out = env.ok(&[
        "key",
        "passwd",
        "--new-password-file",
        s(&new_pw),
        "--kdf-memory",
        "1024",
        "--kdf-iterations",
        "1",
        "--json",
    ]);
    let changed = last_json(&out, "key_changed");
    assert_eq!(changed["old_id"], old);
    let new_id = changed["id"].as_str().expect("id").to_string();
    assert_eq!(changed["short_id"], &new_id[..8]);
    assert_eq!(changed["old_short_id"], &old.as_str().expect("id")[..8]);

    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    let after = keys(&new_pw);
    assert_eq!(after.len(), 2);
    assert!(
        after
            .iter()
            .any(|k| k["id"] == new_id.as_str() && k["current"] == true)
    );
    assert!(!after.iter().any(|k| k["id"] == old));
    let by_other = keys(&other);
    assert!(
        by_other
            .iter()
            .any(|k| k["current"] == true && k["id"] != new_id.as_str())
    );

    let secret = env.path("secret.key");
    env.ok_with(&new_pw, &["key", "add", "--generate", s(&secret)]);
    let out = env.run_with(
        &secret,
        &["key", "passwd", "--new-password-file", s(&new_pw)],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("generated secret"),
        "{}",
        stderr(&out)
    );
    assert_eq!(keys(&new_pw).len(), 3, "nothing was changed");
}

/// `snapshots --group-by` prints a header and a table per group, in the order
/// of the groups' keys; `--compact` drops size and paths; `--json` with
/// `--group-by` gives the groups.
#[test]
fn snapshots_group_by_and_compact() {
    let env = Env::with_repo(&[]);
    let src = source(&env, 5);
    let a1 = backup_id(&env, &["--host", "alpha", "--tag", "t", s(&src)]);
    let b1 = backup_id(&env, &["--host", "beta", s(&src)]);
    let a2 = backup_id(&env, &["--host", "alpha", "--tag", "t", s(&src)]);
    let time = |id: &str| {
        let t = snapshot(&env, id)["time"]
            .as_str()
            .expect("time")
            .to_string();
        chrono::DateTime::parse_from_rfc3339(&t)
            .expect("rfc3339")
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let row = |id: &str, host: &str, tags: &str| {
        format!("{:<8}  {}  {:<16}  {}", &id[..8], time(id), host, tags)
            .trim_end()
            .to_string()
    };
    let header = format!("{:<8}  {:<19}  {:<16}  tags", "id", "time", "host");

    let out = env.ok(&["snapshots", "--group-by", "host", "--compact"]);
    let want = [
        "host alpha:".to_string(),
        header.clone(),
        row(&a1, "alpha", "t"),
        row(&a2, "alpha", "t"),
        String::new(),
        "host beta:".to_string(),
        header.clone(),
        row(&b1, "beta", ""),
        "3 snapshots in 2 groups".to_string(),
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), want, "{out}");

    let out = env.ok(&["snapshots", "--compact"]);
    let want = [
        header.clone(),
        row(&a1, "alpha", "t"),
        row(&b1, "beta", ""),
        row(&a2, "alpha", "t"),
        "3 snapshots".into(),
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), want, "{out}");

    let out = env.ok(&["snapshots", "--group-by", "host,paths,tags"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("host alpha, paths [{}], tags [t]:", s(&src))
    );
    assert!(lines[1].starts_with("id        time"), "{out}");
    assert!(lines[1].ends_with("  paths"), "{out}");
    assert!(
        lines[2].starts_with(&a1[..8]) && lines[2].ends_with(s(&src)),
        "{out}"
    );
    assert_eq!(
        lines[5],
        format!("host beta, paths [{}], tags []:", s(&src))
    );
    assert_eq!(lines.last(), Some(&"3 snapshots in 2 groups"));

    let groups: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--group-by", "host,tags", "--json"]))
            .expect("json");
    let groups = groups.as_array().expect("array");
    assert_eq!(groups.len(), 2);
    assert_eq!(
        groups[0]["group_key"],
        serde_json::json!({"host": "alpha", "paths": null, "tags": ["t"]})
    );
    let ids: Vec<&str> = groups[0]["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [a1.as_str(), a2.as_str()]);
    assert_eq!(groups[1]["group_key"]["host"], "beta");
    assert_eq!(groups[1]["group_key"]["tags"], serde_json::json!([]));
    assert_eq!(groups[1]["snapshots"][0]["short_id"], &b1[..8]);
    assert_eq!(groups[1]["snapshots"][0]["hostname"], "beta");

    // Without --group-by, the JSON is the plain list it always was.
    let plain: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    assert_eq!(plain.as_array().map(Vec::len), Some(3));
    assert_eq!(plain[0]["id"], a1.as_str());

    let out = env.run(&["snapshots", "--group-by", "hostname"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}
