//! The read-only commands: `diff`, `find`, `stats` and `dump`, checked against
//! generated data whose answers the tests know (exact lines, counts and
//! sizes), and against the repository's own index and trees (`cat`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use crate::common::{self, Env};

fn write(p: &Path, bytes: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).expect("mkdir");
    }
    fs::write(p, bytes).expect("write");
}

fn set_mtime(p: &Path, secs: u64) {
    fs::File::open(p)
        .expect("open")
        .set_modified(UNIX_EPOCH + Duration::from_secs(secs))
        .expect("set mtime");
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn of_type<'a>(lines: &'a [Value], t: &str) -> Vec<&'a Value> {
    lines.iter().filter(|v| v["message_type"] == t).collect()
}

/// The tree `cat tree SPEC` prints.
fn cat_tree(env: &Env, spec: &str) -> Value {
    serde_json::from_str(&env.ok(&["cat", "tree", spec])).expect("cat tree")
}

fn node<'a>(tree: &'a Value, name: &str) -> &'a Value {
    tree["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {tree}"))
}

/// Every blob the index lists: (kind, id) → (pack, raw length). Kind 0 is data.
fn index_blobs(env: &Env) -> BTreeMap<(u64, String), (String, u64)> {
    let mut out = BTreeMap::new();
    for f in common::all_files(&env.repo.join("index")) {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        let idx: Value = serde_json::from_str(&env.ok(&["cat", "index", &name])).expect("index");
        for p in idx["packs"].as_array().expect("packs") {
            let pack = p["id"].as_str().expect("pack id").to_string();
            for b in p["blobs"].as_array().expect("blobs") {
                let kind = b[0].as_u64().expect("kind");
                let id = b[1].as_str().expect("blob id").to_string();
                out.insert((kind, id), (pack.clone(), b[4].as_u64().expect("raw")));
            }
        }
    }
    out
}

/// The lines between `diff`'s header and its totals.
fn change_lines(out: &str) -> Vec<String> {
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("comparing snapshot "), "{out}");
    lines[1..lines.len() - 1]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Two snapshots of `src` with one change of every kind between them, and
/// contents shared with an unchanged directory on purpose: a file added with
/// the contents of a file in it, and a file removed whose contents are there.
#[test]
fn diff_reports_each_kind_of_change_and_counts_blobs_one_side_only() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let mut rng = common::rng(15);
    let mut data = |n| common::random_bytes(&mut rng, n);
    let shared_p = data(100_000);
    let shared_q = data(100_000);
    write(&src.join("a_same/p.bin"), &shared_p);
    write(&src.join("a_same/q.bin"), &shared_q);
    write(&src.join("chmod.txt"), &data(3000));
    write(&src.join("f2dir"), &data(5000));
    write(&src.join("f2link"), &data(6000));
    write(&src.join("gone.txt"), &data(7000));
    write(&src.join("gone_dir/x"), &data(8000));
    write(&src.join("gone_dir/y"), &shared_q);
    write(&src.join("keep.txt"), &data(9000));
    write(&src.join("mod.txt"), &data(10_000));
    set_mtime(&src, 1_700_000_000);
    env.ok(&["backup", "-q", src.to_str().expect("utf-8")]);

    fs::set_permissions(src.join("chmod.txt"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::remove_file(src.join("f2dir")).expect("rm");
    let inner = data(11_000);
    write(&src.join("f2dir/inner.txt"), &inner);
    fs::remove_file(src.join("f2link")).expect("rm");
    std::os::unix::fs::symlink("keep.txt", src.join("f2link")).expect("symlink");
    fs::remove_file(src.join("gone.txt")).expect("rm");
    fs::remove_dir_all(src.join("gone_dir")).expect("rm");
    // Same size, other bytes: only the blob list tells.
    let modified = data(10_000);
    write(&src.join("mod.txt"), &modified);
    write(&src.join("new.txt"), &shared_p);
    let z = data(12_000);
    write(&src.join("new_dir/z"), &z);
    set_mtime(&src, 1_700_000_000);
    env.ok(&["backup", "-q", src.to_str().expect("utf-8")]);

    let s = src.display().to_string();
    let (old, new) = (format!("latest~1:{s}"), format!("latest:{s}"));
    let expected = [
        "T /f2dir/",
        "+ /f2dir/inner.txt",
        "T /f2link",
        "- /gone.txt",
        "- /gone_dir/",
        "- /gone_dir/x",
        "- /gone_dir/y",
        "M /mod.txt",
        "+ /new.txt",
        "+ /new_dir/",
        "+ /new_dir/z",
    ];
    // a_same/ is the same tree on both sides: the walk passes it over, and
    // the totals must look into it for the contents new.txt and y share.
    let same_tree = |spec: &str| node(&cat_tree(&env, spec), "a_same")["subtree"].clone();
    assert_eq!(same_tree(&old), same_tree(&new));
    let out = env.ok(&["diff", &old, &new]);
    assert_eq!(change_lines(&out), expected, "{out}");
    let totals = out.lines().last().expect("totals");
    assert!(
        totals.starts_with(
            "3 files, 1 dir, 0 others added; 3 files, 1 dir, 0 others removed; \
             1 modified, 2 type changed; data: 6 blobs"
        ),
        "{totals}"
    );

    let out = env.ok(&["diff", "--metadata", &old, &new]);
    let mut with_meta: Vec<&str> = expected.to_vec();
    with_meta.insert(0, "U /chmod.txt");
    assert_eq!(change_lines(&out), with_meta, "{out}");

    // JSON: the same changes, every documented field, and the summary.
    let lines = json_lines(&env.ok(&["diff", "--json", "--metadata", &old, &new]));
    let changes = of_type(&lines, "change");
    let as_text: Vec<String> = changes
        .iter()
        .map(|c| {
            let dir = c["kind"] == "dir";
            format!(
                "{} {}{}",
                c["modifier"].as_str().expect("modifier"),
                c["path"].as_str().expect("path"),
                if dir { "/" } else { "" }
            )
        })
        .collect();
    assert_eq!(as_text, with_meta);
    let by_path = |p: &str| {
        *changes
            .iter()
            .find(|c| c["path"] == p)
            .unwrap_or_else(|| panic!("no change for {p}"))
    };
    let t = by_path("/f2dir");
    assert_eq!(
        (&t["change"], &t["kind"], &t["old_kind"], &t["new_kind"]),
        (
            &Value::from("type_changed"),
            &Value::from("dir"),
            &Value::from("file"),
            &Value::from("dir")
        )
    );
    assert_eq!(by_path("/f2link")["new_kind"], "symlink");
    assert_eq!(by_path("/gone.txt")["change"], "removed");
    assert_eq!(by_path("/gone.txt")["new_kind"], Value::Null);
    assert_eq!(by_path("/new.txt")["change"], "added");
    assert_eq!(by_path("/new.txt")["old_kind"], Value::Null);
    assert_eq!(by_path("/mod.txt")["change"], "modified");
    assert_eq!(by_path("/chmod.txt")["change"], "metadata");
    assert_eq!(by_path("/chmod.txt")["modifier"], "U");

    let summary = of_type(&lines, "summary");
    assert_eq!(summary.len(), 1);
    let sum = summary[0];
    let ids = common::snapshot_ids(&env);
    assert_eq!(sum["command"], "diff");
    assert_eq!(sum["old_snapshot"], ids[0].as_str());
    assert_eq!(sum["new_snapshot"], ids[1].as_str());
    for (side, files, dirs) in [("added", 3, 1), ("removed", 3, 1)] {
        assert_eq!(sum[side]["files"], files, "{sum}");
        assert_eq!(sum[side]["dirs"], dirs, "{sum}");
        assert_eq!(sum[side]["others"], 0, "{sum}");
    }
    assert_eq!(
        (
            &sum["modified"],
            &sum["type_changed"],
            &sum["metadata_changed"],
            &sum["blobs_unknown_size"]
        ),
        (
            &Value::from(1),
            &Value::from(2),
            &Value::from(1),
            &Value::from(0)
        )
    );
    // Added: the new contents of mod.txt, inner.txt and z (new.txt's are in
    // the unchanged a_same/), and the new trees of the root, f2dir/ and
    // new_dir/. Removed: mod.txt's, gone.txt's, x's and the files that became
    // a directory and a symlink (y's are in a_same/), and the old root's and
    // gone_dir/'s trees. Trees are small: the bytes are the data's, plus less
    // than a few KiB.
    let added_data = (modified.len() + inner.len() + z.len()) as u64;
    let removed_data = 10_000 + 7000 + 8000 + 5000 + 6000;
    for (side, blobs, data) in [("added", 6, added_data), ("removed", 7, removed_data)] {
        assert_eq!(sum[side]["blobs"], blobs, "{side}: {sum}");
        let bytes = sum[side]["bytes"].as_u64().expect("bytes");
        assert!(
            bytes > data && bytes < data + 8192,
            "{side}: {bytes} bytes for {data} of data: {sum}"
        );
    }

    // The same snapshot twice: nothing, and nothing counted.
    let same = json_lines(&env.ok(&["diff", "--json", "latest", "latest"]));
    assert_eq!(same.len(), 1, "{same:?}");
    assert_eq!(same[0]["added"]["blobs"], 0);
    assert_eq!(same[0]["removed"]["bytes"], 0);

    // A file is not a directory to compare.
    let out = env.run(&["diff", &old, &format!("latest:{s}/keep.txt")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(common::stderr(&out).contains("is not a directory"));
}

/// Patterns on names and on paths, case, snapshot choice and grouping.
#[test]
fn find_matches_patterns_in_every_snapshot_newest_first() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    write(&src.join("logs/run.LOG"), b"one");
    write(&src.join("logs/old.log"), b"two!");
    write(&src.join("data/a.txt"), b"three");
    write(&src.join("deep/data/b.txt"), b"four4");
    env.ok(&["backup", "-q", src.to_str().expect("utf-8")]);
    fs::remove_file(src.join("logs/old.log")).expect("rm");
    write(&src.join("data/c.txt"), b"c");
    env.ok(&["backup", "-q", src.to_str().expect("utf-8")]);
    let ids = common::snapshot_ids(&env);
    let s = src.display().to_string();

    // Names: case matters unless -i.
    let lines = json_lines(&env.ok(&["find", "--json", "*.log"]));
    let matches: Vec<(String, String)> = of_type(&lines, "match")
        .iter()
        .map(|m| {
            (
                m["snapshot"].as_str().unwrap().into(),
                m["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(matches, [(ids[0].clone(), format!("{s}/logs/old.log"))]);
    let lines = json_lines(&env.ok(&["find", "--json", "-i", "*.log"]));
    let matches: Vec<(String, String)> = of_type(&lines, "match")
        .iter()
        .map(|m| {
            (
                m["snapshot"].as_str().unwrap().into(),
                m["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        matches,
        [
            (ids[1].clone(), format!("{s}/logs/run.LOG")),
            (ids[0].clone(), format!("{s}/logs/old.log")),
            (ids[0].clone(), format!("{s}/logs/run.LOG")),
        ],
        "newest snapshot first, tree order within one"
    );
    let m = of_type(&lines, "match")[2];
    assert_eq!(m["type"], "file");
    assert_eq!(m["size"], 3);
    let mode = fs::metadata(src.join("logs/run.LOG")).expect("stat").mode() & 0o7777;
    assert_eq!(m["mode"], mode);
    assert!(m["mtime"].as_str().is_some_and(|t| t.contains('T')), "{m}");
    assert_eq!(m["blobs"], serde_json::json!([]));
    assert_eq!(m["tree"], Value::Null);
    let sum = of_type(&lines, "summary")[0];
    assert_eq!(sum["command"], "find");
    assert_eq!(
        (
            &sum["snapshots"],
            &sum["snapshots_matched"],
            &sum["matches"]
        ),
        (&Value::from(2), &Value::from(2), &Value::from(3))
    );

    // A pattern with `/`: at any depth unless it starts with `/`; `*` stays
    // within one name.
    let out = env.ok(&["find", "-s", "latest", "data/*.txt"]);
    let paths: Vec<&str> = out
        .lines()
        .filter_map(|l| l.rsplit_once(' ').map(|(_, p)| p))
        .filter(|p| p.starts_with('/'))
        .collect();
    assert_eq!(
        paths,
        [
            format!("{s}/data/a.txt"),
            format!("{s}/data/c.txt"),
            format!("{s}/deep/data/b.txt")
        ]
    );
    assert!(
        out.starts_with(&format!("snapshot {} of [{s}]", &ids[1][..8])),
        "{out}"
    );
    assert!(out.ends_with("3 matches in 1 of 1 snapshot\n"), "{out}");
    let out = env.ok(&["find", "-s", "latest", &format!("{s}/data/*")]);
    assert_eq!(out.lines().count(), 4, "header, a.txt, c.txt, total: {out}");
    let out = env.ok(&["find", "-s", "latest", "/data/*.txt"]);
    assert!(out.ends_with("0 matches in 0 of 1 snapshot\n"), "{out}");
    // A directory matches too, shown as one.
    let out = env.ok(&["find", "-s", ids[0].as_str(), "logs"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("drwx") && l.ends_with(&format!("{s}/logs"))),
        "{out}"
    );

    let out = env.run(&["find"]);
    assert_eq!(out.status.code(), Some(2));
    let out = env.run(&["find", "[", "-s", "latest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::stderr(&out).contains("pattern \"[\""),
        "{}",
        common::stderr(&out)
    );
}

/// `--blob`, `--tree` and `--pack` find what the trees (read with `cat`) and
/// the index say uses them, in every snapshot.
#[test]
fn find_by_blob_tree_and_pack_agrees_with_the_trees_and_the_index() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let mut rng = common::rng(16);
    let twice = common::random_bytes(&mut rng, 20_000);
    write(&src.join("one/dup.bin"), &twice);
    write(&src.join("two/dup_again.bin"), &twice);
    write(
        &src.join("two/other.bin"),
        &common::random_bytes(&mut rng, 20_000),
    );
    env.ok(&["backup", "-q", src.to_str().expect("utf-8")]);
    write(&src.join("three/x"), b"new in the second snapshot");
    env.ok(&["backup", "-q", src.to_str().expect("utf-8")]);
    let ids = common::snapshot_ids(&env);
    let s = src.display().to_string();

    let one = cat_tree(&env, &format!("latest:{s}/one"));
    let blob = node(&one, "dup.bin")["content"][0]
        .as_str()
        .expect("blob id")
        .to_string();
    let lines = json_lines(&env.ok(&["find", "--json", "--blob", &blob[..12]]));
    let found: BTreeSet<(String, String)> = of_type(&lines, "match")
        .iter()
        .map(|m| {
            assert_eq!(m["blobs"], serde_json::json!([blob.as_str()]));
            assert_eq!(m["type"], "file");
            (
                m["snapshot"].as_str().unwrap().into(),
                m["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = ids
        .iter()
        .flat_map(|id| {
            [
                (id.clone(), format!("{s}/one/dup.bin")),
                (id.clone(), format!("{s}/two/dup_again.bin")),
            ]
        })
        .collect();
    assert_eq!(found, want);
    assert_eq!(
        of_type(&lines, "summary")[0]["unused"],
        serde_json::json!([])
    );

    // The tree of `two/` is the same in both snapshots.
    let top = cat_tree(&env, &format!("latest:{s}"));
    let two = node(&top, "two")["subtree"]
        .as_str()
        .expect("subtree")
        .to_string();
    let out = env.ok(&["find", "--tree", &two]);
    let hits: Vec<&str> = out.lines().filter(|l| l.contains("(tree ")).collect();
    assert_eq!(hits.len(), 2, "{out}");
    assert!(
        hits.iter()
            .all(|l| l.contains(&format!("{s}/two  (tree {}", &two[..8])))
    );
    // The root tree of the first snapshot is only there.
    let root = serde_json::from_str::<Value>(&env.ok(&["cat", "snapshot", &ids[0]]))
        .expect("snapshot")["tree"]
        .as_str()
        .expect("tree")
        .to_string();
    let lines = json_lines(&env.ok(&["find", "--json", "--tree", &root]));
    let m = of_type(&lines, "match");
    assert_eq!(m.len(), 1);
    assert_eq!(
        (&m[0]["snapshot"], &m[0]["path"]),
        (&Value::from(ids[0].as_str()), &Value::from("/"))
    );
    assert_eq!(m[0]["tree"], root.as_str());

    // A pack: every match uses one of its blobs (by the index), and every file
    // whose data is there is found.
    let index = index_blobs(&env);
    let (pack, _) = index.get(&(0, blob.clone())).expect("blob indexed").clone();
    let in_pack: BTreeSet<&String> = index
        .iter()
        .filter(|(_, (p, _))| *p == pack)
        .map(|((_, id), _)| id)
        .collect();
    let lines = json_lines(&env.ok(&["find", "--json", "--pack", &pack[..10]]));
    let matches = of_type(&lines, "match");
    assert!(!matches.is_empty());
    for m in &matches {
        let used: Vec<&str> = m["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap())
            .chain(m["tree"].as_str())
            .collect();
        assert!(!used.is_empty(), "{m}");
        assert!(used.iter().all(|b| in_pack.contains(&b.to_string())), "{m}");
    }
    let paths: BTreeSet<&str> = matches
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(format!("{s}/one/dup.bin").as_str()),
        "{paths:?}"
    );

    // A blob only the second snapshot uses, looked for in the first.
    let x = node(&cat_tree(&env, &format!("latest:{s}/three")), "x")["content"][0]
        .as_str()
        .expect("blob id")
        .to_string();
    let lines = json_lines(&env.ok(&["find", "--json", "-s", &ids[0], "--blob", &x]));
    assert!(of_type(&lines, "match").is_empty());
    let sum = of_type(&lines, "summary")[0];
    assert_eq!(sum["unused"], serde_json::json!([x.as_str()]));
    assert_eq!(
        (&sum["snapshots"], &sum["matches"]),
        (&Value::from(1), &Value::from(0))
    );

    // Prefixes must name one blob; an unknown one is an error.
    let out = env.run(&["find", "--blob", "zz"]);
    assert_eq!(out.status.code(), Some(1));
    let out = env.run(&["find", "--blob", &blob[..8], "*.bin"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Each mode's figures against data whose answer is known, and the
/// repository's totals against its files.
#[test]
fn stats_figures_match_known_data() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let mut rng = common::rng(17);
    let text = common::text_bytes(&mut rng, 300_000);
    let random = common::random_bytes(&mut rng, 50_000);
    write(&src.join("t1.log"), &text);
    write(&src.join("sub/t2.log"), &text);
    write(&src.join("sub/t3.log"), &text);
    write(&src.join("r.bin"), &random);
    fs::hard_link(src.join("r.bin"), src.join("sub/r_link.bin")).expect("link");
    write(&src.join("empty"), b"");
    std::os::unix::fs::symlink("r.bin", src.join("l")).expect("symlink");
    env.ok(&["backup", "-q", src.to_str().expect("utf-8")]);
    let s = src.display().to_string();
    let spec = format!("latest:{s}");

    let stats = |args: &[&str]| -> Value {
        let mut all = vec!["stats", "--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&env.ok(&all)).expect("stats --json is one document")
    };
    let r = stats(&[&spec]);
    assert_eq!(r["mode"], "restore-size");
    assert_eq!(r["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(
        (&r["files"], &r["dirs"], &r["others"]),
        (&Value::from(6), &Value::from(1), &Value::from(1))
    );
    // Three texts and the random file once: its second name is a hard link.
    let logical = 3 * text.len() as u64 + random.len() as u64;
    assert_eq!(r["bytes"], logical);
    assert_eq!(
        r["repository"],
        Value::Null,
        "no totals when snapshots are named"
    );

    let c = stats(&["--mode", "files-by-contents", &spec]);
    assert_eq!(c["mode"], "files-by-contents");
    assert_eq!(
        c["contents"], 3,
        "the text, the random bytes, the empty file"
    );
    assert_eq!(c["bytes"], (text.len() + random.len()) as u64);

    let d = stats(&["--mode", "raw-data", &spec]);
    let n = |k: &str| d[k].as_u64().unwrap_or_else(|| panic!("{k}: {d}"));
    assert!(
        n("stored_bytes") < n("plaintext_bytes"),
        "text compresses: {d}"
    );
    assert!(n("data_plaintext_bytes") >= (text.len() + random.len()) as u64);
    assert!(n("data_plaintext_bytes") <= n("plaintext_bytes"));
    assert_eq!(n("missing_blobs"), 0);
    // Files counted by name here: the hard link's bytes twice.
    assert_eq!(n("logical_bytes"), logical + random.len() as u64);
    let dedup = d["dedup_ratio"].as_f64().expect("dedup ratio");
    assert!(dedup >= 2.0, "three copies of most of the data: {d}");
    let ratio = d["compression_ratio"].as_f64().expect("ratio");
    let expected = n("plaintext_bytes") as f64 / n("stored_bytes") as f64;
    assert!((ratio - expected).abs() < 1e-9);
    assert_eq!(n("tree_blobs"), 2, "src and sub");

    // The same data again: everything counted twice but the blobs.
    env.ok(&["backup", "-q", "--force", src.to_str().expect("utf-8")]);
    let both = stats(&["--mode", "raw-data", "--path", &s]);
    assert_eq!(both["snapshots"].as_array().unwrap().len(), 2);
    for k in ["data_blobs", "data_plaintext_bytes"] {
        assert_eq!(both[k], d[k], "{k}");
    }
    assert_eq!(both["logical_bytes"], 2 * n("logical_bytes"));
    let twice = both["dedup_ratio"].as_f64().expect("dedup ratio");
    assert!((twice - 2.0 * dedup).abs() < 1e-9, "{both}");
    let all = stats(&[]);
    assert_eq!(all["bytes"], 2 * logical);
    let repo = &all["repository"];
    let packs = common::pack_names(&env.repo);
    assert_eq!(repo["packs"], packs.len());
    let on_disk: u64 = common::all_files(&env.repo.join("data"))
        .iter()
        .map(|f| fs::metadata(f).expect("stat").len())
        .sum();
    assert_eq!(repo["pack_bytes"], on_disk);
    let index = index_blobs(&env);
    let data_blobs = index.keys().filter(|(k, _)| *k == 0).count();
    assert_eq!(repo["data_blobs"], data_blobs);
    assert_eq!(repo["tree_blobs"], index.len() - data_blobs);
    let plain: u64 = index.values().map(|(_, raw)| raw).sum();
    assert_eq!(repo["plaintext_bytes"], plain);
    // The two snapshots use every blob there is.
    for k in ["data_blobs", "tree_blobs", "plaintext_bytes"] {
        assert_eq!(both[k], repo[k], "{k}");
    }

    // Text: the same figures, labelled.
    let out = env.ok(&["stats", &spec]);
    assert!(out.starts_with("1 snapshot (restore-size):\n"), "{out}");
    assert!(out.contains(&format!("({logical} bytes)")), "{out}");
    let out = env.ok(&["stats", "--mode", "raw-data"]);
    assert!(
        out.contains("dedup ratio:") && out.contains("repository:"),
        "{out}"
    );
    let out = env.run(&["stats", &format!("{spec}/r.bin")]);
    assert_eq!(out.status.code(), Some(1));
}

/// Long names, modes, a symlink, a hard link, a multi-blob file: `dump`'s
/// bytes are the file's, and its tar stream extracts (with GNU tar) to the
/// same tree.
#[test]
fn dump_writes_files_exactly_and_directories_as_tar() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let mut rng = common::rng(18);
    // Several blobs (chunks average 1 MiB), so their order matters.
    let big = common::random_bytes(&mut rng, 5 << 20);
    write(&src.join("big.bin"), &big);
    let long_dir = format!("{}/{}", "d".repeat(70), "e".repeat(70));
    let long_file = src.join(&long_dir).join(format!("{}.txt", "f".repeat(90)));
    write(&long_file, b"a name longer than 100 bytes");
    write(&src.join("run.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o751)).expect("chmod");
    write(&src.join("secret"), b"s");
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::symlink(
        format!("{long_dir}/../x/{}", "g".repeat(100)),
        src.join("far"),
    )
    .expect("symlink");
    fs::hard_link(src.join("secret"), src.join("secret2")).expect("link");
    for p in [src.join("run.sh"), src.join("big.bin"), src.clone()] {
        set_mtime(&p, 1_600_000_000);
    }
    env.ok(&["backup", "-q", src.to_str().expect("utf-8")]);
    let s = src.display().to_string();

    // A file: its bytes.
    let out = env
        .cmd()
        .args(["dump", "latest", &format!("{s}/big.bin")])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(out.stdout == big, "dumped bytes differ");
    let out = env.ok(&["dump", &format!("latest:{}", long_file.display())]);
    assert_eq!(out, "a name longer than 100 bytes");

    // A directory: a tar stream, by default.
    let tar = env
        .cmd()
        .args(["dump", "latest", &s])
        .output()
        .expect("run");
    assert!(tar.status.success(), "{}", common::stderr(&tar));
    let x = env.path("x");
    fs::create_dir(&x).expect("mkdir");
    let mut untar = std::process::Command::new("tar")
        .args(["-x", "-f", "-", "-C"])
        .arg(&x)
        .stdin(Stdio::piped())
        .spawn()
        .expect("tar");
    std::io::Write::write_all(untar.stdin.as_mut().expect("stdin"), &tar.stdout).expect("pipe");
    drop(untar.stdin.take());
    assert!(untar.wait().expect("tar").success());
    let got = x.join("src");
    for f in common::all_files(&src) {
        let rel = f.strip_prefix(&src).expect("prefix");
        let back = got.join(rel);
        assert_eq!(
            fs::read(&f).expect("src"),
            fs::read(&back).expect("extracted"),
            "{}",
            rel.display()
        );
        let (a, b) = (
            fs::metadata(&f).expect("stat"),
            fs::metadata(&back).expect("stat"),
        );
        assert_eq!(a.mode(), b.mode(), "{}", rel.display());
        assert_eq!(a.mtime(), b.mtime(), "{}", rel.display());
        assert_eq!((a.uid(), a.gid()), (b.uid(), b.gid()), "{}", rel.display());
    }
    assert_eq!(
        fs::read_link(got.join("far")).expect("readlink"),
        fs::read_link(src.join("far")).expect("readlink")
    );
    assert_eq!(
        fs::metadata(got.join("secret")).expect("stat").ino(),
        fs::metadata(got.join("secret2")).expect("stat").ino(),
        "the hard link is one"
    );
    assert_eq!(fs::metadata(&got).expect("stat").mtime(), 1_600_000_000);

    // Into a file, with a JSON summary; never over an existing one.
    let target = env.path("out.tar");
    let t = target.to_str().expect("utf-8");
    let sum = common::last_json(
        &env.ok(&["dump", "--json", "--target", t, &format!("latest:{s}")]),
        "summary",
    );
    assert_eq!(fs::read(&target).expect("target"), tar.stdout);
    assert_eq!(fs::metadata(&target).expect("stat").mode() & 0o777, 0o600);
    assert_eq!(sum["command"], "dump");
    assert_eq!(sum["target"], t);
    assert_eq!(sum["archive"], "tar");
    assert_eq!(
        (
            &sum["files"],
            &sum["dirs"],
            &sum["symlinks"],
            &sum["hardlinks"],
            &sum["specials"],
            &sum["skipped"]
        ),
        (
            &Value::from(4),
            &Value::from(3),
            &Value::from(1),
            &Value::from(1),
            &Value::from(0),
            &Value::from(0)
        )
    );
    assert_eq!(sum["bytes"], (big.len() + 28 + 18 + 1) as u64);
    let out = env.run(&["dump", "--target", t, &format!("latest:{s}/secret")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        fs::read(&target).expect("target"),
        tar.stdout,
        "left as it was"
    );
    let one = env.path("one");
    let sum = common::last_json(
        &env.ok(&[
            "dump",
            "--json",
            "--target",
            one.to_str().unwrap(),
            &format!("latest:{s}/run.sh"),
        ]),
        "summary",
    );
    assert_eq!(
        (&sum["archive"], &sum["bytes"]),
        (&Value::Null, &Value::from(18))
    );
    assert_eq!(fs::read(&one).expect("one"), b"#!/bin/sh\necho hi\n");

    // A single entry as an archive: the symlink itself.
    let out = env
        .cmd()
        .args(["dump", "--archive", "tar", &format!("latest:{s}/far")])
        .output()
        .expect("run");
    assert!(out.status.success());
    let listing = std::process::Command::new("tar")
        .args(["-t", "-v", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            std::io::Write::write_all(c.stdin.as_mut().unwrap(), &out.stdout)?;
            drop(c.stdin.take());
            c.wait_with_output()
        })
        .expect("tar -t");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(
        listing.starts_with('l') && listing.contains(&format!("far -> {long_dir}")),
        "{listing}"
    );

    // Not a file, no archive asked for: a usage error; --json needs --target.
    assert_eq!(
        env.run(&["dump", &format!("latest:{s}/far")]).status.code(),
        Some(2)
    );
    assert_eq!(
        env.run(&["dump", "--json", &format!("latest:{s}/secret")])
            .status
            .code(),
        Some(2)
    );
}

/// A reader that stops reading ends `dump` quietly, as a closed pipe ends
/// `cat`: exit 141, nothing on standard error.
#[test]
fn dump_into_a_closed_pipe_ends_quietly() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let mut rng = common::rng(19);
    write(
        &src.join("big.bin"),
        &common::random_bytes(&mut rng, 6 << 20),
    );
    env.ok(&["backup", "-q", src.to_str().expect("utf-8")]);
    for spec in [
        format!("latest:{}/big.bin", src.display()),
        format!("latest:{}", src.display()),
    ] {
        let mut child = env
            .cmd()
            .args(["dump", &spec])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut first = [0u8; 4096];
        child
            .stdout
            .as_mut()
            .expect("stdout")
            .read_exact(&mut first)
            .expect("read");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        assert_eq!(
            out.status.code(),
            Some(141),
            "{spec}: {}",
            common::stderr(&out)
        );
        assert_eq!(common::stderr(&out), "", "{spec}");
    }
    // The other three, whose read end is closed before they start.
    for args in [
        vec!["diff", "latest", "latest"],
        vec!["find", "--json", "*"],
        vec!["find", "*"],
        vec!["stats"],
        vec!["stats", "--json"],
    ] {
        let (read, write) = nix::unistd::pipe().expect("pipe");
        drop(read);
        let out = env
            .cmd()
            .args(&args)
            .stdout(Stdio::from(write))
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(141),
            "{args:?}: {}",
            common::stderr(&out)
        );
        assert_eq!(common::stderr(&out), "", "{args:?}");
    }
}

/// `dump` writes nothing to a terminal, a file's bytes no more than an archive:
/// what it writes comes from the repository as it is. Run under `script`,
/// which gives it a pseudo-terminal as standard output.
#[test]
fn dump_refuses_a_terminal() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    write(&src.join("note.txt"), b"\x1b]0;planted title\x07hello\n");
    env.ok(&["backup", "-q", src.to_str().expect("utf-8")]);
    for spec in [
        format!("latest:{}/note.txt", src.display()),
        format!("latest:{}", src.display()),
    ] {
        let line = format!(
            "{} -r {} --password-file {} dump {}",
            env!("CARGO_BIN_EXE_cairn"),
            env.repo.display(),
            env.password_file.display(),
            spec
        );
        let out = match std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env_remove("CAIRN_REPOSITORY")
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                eprintln!(
                    "dump_refuses_a_terminal: skipped: no `script` to run it on a terminal ({e})"
                );
                return;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{spec}: {text}");
        assert!(
            text.contains("standard output is a terminal"),
            "{spec}: {text}"
        );
        assert!(!text.contains("planted title"), "{spec}: {text}");
    }
}
