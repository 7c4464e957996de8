//! Command-line conventions (issue #11): where the password comes from, what
//! `--path` means, usage errors, JSON output, counts, and `forget` under a lock.

use std::fs;
use std::path::Path;

use crate::common::{self, Env, stderr, stdout, write_private};
use crate::locks::HeldBackup;

fn file_names(dir: &Path) -> Vec<String> {
    common::all_files(dir)
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect()
}

fn snapshot_count(env: &Env) -> usize {
    common::all_files(&env.repo.join("snapshots")).len()
}

/// Item 13: with CAIRN_PASSWORD_FILE set, `--password-command` was ignored; a
/// flag now wins over the environment, and two sources at once are refused.
#[test]
fn a_password_flag_overrides_the_environment_and_two_sources_are_refused() {
    let env = Env::with_repo(&[]);
    let wrong = env.path("wrong-password");
    write_private(&wrong, "not the password\n");
    let right = env.password_file.to_str().expect("utf-8");
    let wrong_s = wrong.to_str().expect("utf-8");
    let cat_right = format!("cat {right}");

    // The user's case: the environment names a file, the command line a command.
    let out = env
        .bare_cmd()
        .env("CAIRN_PASSWORD_FILE", &wrong)
        .args(["--password-command", &cat_right, "snapshots"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    // Each flag over each variable.
    for (var, value) in [
        ("CAIRN_PASSWORD_FILE", wrong_s.to_string()),
        ("CAIRN_PASSWORD_COMMAND", format!("cat {wrong_s}")),
        ("CAIRN_PASSWORD", "not the password".to_string()),
    ] {
        for flag in [
            ["--password-file", right],
            ["--password-command", &cat_right],
        ] {
            let out = env
                .bare_cmd()
                .env(var, &value)
                .args(flag)
                .arg("snapshots")
                .output()
                .expect("run");
            assert!(
                out.status.success(),
                "{var} with {flag:?}: {}",
                stderr(&out)
            );
        }
        // Alone, each variable is used (and here it is wrong).
        let out = env
            .bare_cmd()
            .env(var, &value)
            .arg("snapshots")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(12), "{var}: {}", stderr(&out));
    }

    // Two flags: a usage error, whatever the order.
    for args in [
        ["--password-file", right, "--password-command", &cat_right],
        ["--password-command", &cat_right, "--password-file", right],
    ] {
        let out = env
            .bare_cmd()
            .args(args)
            .arg("snapshots")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("--password-file") && err.contains("--password-command"),
            "{err}"
        );
    }
    // Two variables and no flag: refused, naming both, instead of one ignored.
    let out = env
        .bare_cmd()
        .env("CAIRN_PASSWORD_FILE", right)
        .env("CAIRN_PASSWORD_COMMAND", format!("cat {wrong_s}"))
        .arg("snapshots")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("CAIRN_PASSWORD_FILE and CAIRN_PASSWORD_COMMAND are both set"),
        "{err}"
    );
    assert!(
        !err.contains(wrong_s),
        "the command's text was shown: {err}"
    );
    // Each other pair of variables too, each named.
    let value = |var: &str| match var {
        "CAIRN_PASSWORD_FILE" => right.to_string(),
        "CAIRN_PASSWORD_COMMAND" => cat_right.clone(),
        _ => common::PASSWORD.to_string(),
    };
    for (a, b) in [
        ("CAIRN_PASSWORD_FILE", "CAIRN_PASSWORD"),
        ("CAIRN_PASSWORD_COMMAND", "CAIRN_PASSWORD"),
    ] {
        let out = env
            .bare_cmd()
            .env(a, value(a))
            .env(b, value(b))
            .arg("snapshots")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{a} and {b}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("{a} and {b} are both set")), "{err}");
    }
    // A flag settles it.
    let out = env
        .bare_cmd()
        .env("CAIRN_PASSWORD", "not the password")
        .env("CAIRN_PASSWORD_COMMAND", format!("cat {wrong_s}"))
        .args(["--password-file", right, "snapshots"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Item 16: `restore latest --path /data/a` after a later backup of /data/b
/// failed with "not in the snapshot": `--path` chooses the snapshot, as in
/// restic, on every command that resolves one.
#[test]
fn path_chooses_which_snapshot_latest_is() {
    let env = Env::with_repo(&[]);
    let a = env.path("data/a");
    let b = env.path("data/b");
    fs::create_dir_all(&a).expect("mkdir");
    fs::create_dir_all(&b).expect("mkdir");
    fs::write(a.join("in-a.txt"), "a\n").expect("write");
    fs::write(b.join("in-b.txt"), "b\n").expect("write");
    let (a_s, b_s) = (a.to_str().expect("utf-8"), b.to_str().expect("utf-8"));
    env.ok(&["backup", a_s]);
    env.ok(&["backup", b_s]);

    let out = env.path("out");
    let out_s = out.to_str().expect("utf-8");
    env.ok(&["restore", "latest", "--path", a_s, "--target", out_s]);
    assert_eq!(file_names(&out), vec!["in-a.txt"]);

    // A trailing slash or a relative spelling names the same path.
    let listing = env.ok(&["ls", "latest", "--path", &format!("{a_s}/")]);
    assert!(
        listing.contains("in-a.txt") && !listing.contains("in-b.txt"),
        "{listing}"
    );
    let rel = env
        .cmd()
        .current_dir(env.path("data"))
        .args(["ls", "latest", "--path", "./a"])
        .output()
        .expect("run");
    assert!(stdout(&rel).contains("in-a.txt"), "{}", stderr(&rel));
    let snap: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat", "snapshot", "latest", "--path", a_s])).expect("json");
    assert_eq!(snap["paths"][0], a_s);
    // --host and --tag narrow the choice too.
    let out = env.run(&[
        "restore",
        "latest",
        "--host",
        "elsewhere",
        "--target",
        out_s,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("there are only 0 matching snapshots"),
        "{}",
        stderr(&out)
    );

    // A sub-tree is SNAPSHOT:PATH or --include; the old use of --path says so.
    let one = env.path("one");
    let one_s = one.to_str().expect("utf-8");
    let file = format!("{a_s}/in-a.txt");
    let out = env.run(&["restore", "latest", "--path", &file, "--target", one_s]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("--path chooses snapshots") && err.contains("SNAPSHOT:PATH"),
        "{err}"
    );
    env.ok(&[
        "restore",
        &format!("latest:{file}"),
        "--path",
        a_s,
        "--target",
        one_s,
    ]);
    assert!(one.join("in-a.txt").is_file());
    let inc = env.path("inc");
    env.ok(&[
        "restore",
        "latest",
        "--path",
        a_s,
        "--include",
        "in-a.txt",
        "--target",
        inc.to_str().expect("utf-8"),
    ]);
    assert_eq!(file_names(&inc), vec!["in-a.txt"]);

    // forget too: `latest --path A` is A's snapshot, though B's is newer.
    env.ok(&["forget", "latest", "--path", a_s]);
    let left: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    let left = left.as_array().expect("array");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["paths"][0], b_s);
}

/// Item 15: usage errors exit 2, ours as well as clap's; `--help` exits 0.
#[test]
fn usage_errors_exit_2() {
    let env = Env::with_repo(&[]);
    let cases: &[&[&str]] = &[
        &["--no-such-flag", "snapshots"],
        &["restore", "latest"],
        &["backup"],
        &["backup", "--stdin", "/etc"],
        &["forget"],
        &["forget", "abc", "--keep-last", "1"],
        &["forget", "--keep-within", "soon"],
        &["forget", "--keep-last", "1", "--group-by", "colour"],
        &["prune", "--max-unused", "150"],
        &["prune", "--max-repack-size", "lots"],
        &["cat", "snapshot"],
        &["ls", "latest:/a", "/b"],
    ];
    for args in cases {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty(), "{args:?} said nothing");
    }
    let out = env.bare_cmd().arg("--help").output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    // No repository at all is a usage error too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .env_remove("CAIRN_REPOSITORY")
        .arg("snapshots")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Errors that are not about the command line keep exit 1.
    let out = env.run(&["restore", "latest", "--target", "/nonexistent-x"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // The README's exceptions: limits checked later are errors (1), and they
    // too leave everything as it was.
    let fresh = Env::new();
    for flags in [
        &["--compression", "30"][..],
        &["--pack-size", "0"],
        &["--chunker-params", "1,2,3"],
        &["--kdf-lanes", "17"],
    ] {
        let mut args = vec!["init", "--kdf-memory", "1024", "--kdf-iterations", "1"];
        args.extend_from_slice(flags);
        let out = fresh.run(&args);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {}", stderr(&out));
        assert!(!fresh.repo.exists(), "{flags:?}: init wrote something");
    }
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), "f").expect("write");
    let s = src.to_str().expect("utf-8");
    env.ok(&["backup", "-q", s]);
    let before = common::all_files(&env.repo);
    let target = env.path("target");
    let t = target.to_str().expect("utf-8");
    let cases: &[&[&str]] = &[
        &["check", "--read-data-subset", "150%"],
        &["backup", "--exclude", "[", s],
        &["restore", "latest", "--target", t, "--include", "["],
        &["restore", "latest", "--target", t, "--exclude", "["],
    ];
    for args in cases {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        // A bad pattern is named by the flag it came from.
        for flag in ["--include", "--exclude"] {
            if args.contains(&flag) {
                let said = format!("{} pattern \"[\"", &flag[2..]);
                assert!(stderr(&out).contains(&said), "{args:?}: {}", stderr(&out));
            }
        }
        assert_eq!(common::all_files(&env.repo), before, "{args:?}");
        assert!(!target.exists(), "{args:?}: restored something");
    }
}

/// Item 15: one of a thing is "1 thing", not "1 things".
#[test]
fn counts_of_one_are_singular() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("only.txt"), "x\n").expect("write");
    let s = src.to_str().expect("utf-8");
    let backup = env.ok(&["backup", s]);
    let snaps = env.ok(&["snapshots"]);
    assert!(snaps.trim_end().ends_with("\n1 snapshot"), "{snaps}");
    let out = env.path("out");
    let restore = env.ok(&[
        "restore",
        &format!("latest:{s}"),
        "--target",
        out.to_str().expect("utf-8"),
    ]);
    assert!(
        restore.contains(": 1 file, 0 dirs, 0 symlinks, 0 hard links"),
        "{restore}"
    );
    let keys = env.ok(&["key", "list"]);
    assert!(keys.contains("1 key file;"), "{keys}");
    let check = env.ok(&["check"]);
    assert!(
        check.contains("checked 1 snapshot, 4 trees, 1 data blob, 1 index file,"),
        "{check}"
    );
    let wrong = env.path("wrong");
    write_private(&wrong, "nope\n");
    let out = env.run_with(&wrong, &["snapshots"]);
    assert!(
        stderr(&out).contains("the one key file in"),
        "{}",
        stderr(&out)
    );
    for bad in ["1 files", "1 snapshots", "1 entries", "(s)"] {
        for text in [&backup, &snaps, &restore, &keys, &check] {
            assert!(!text.contains(bad), "{bad:?} in {text}");
        }
    }
    env.ok(&["backup", s]);
    let forget = env.ok(&["forget", "--keep-last", "1"]);
    assert!(forget.contains("removed 1 snapshot\n"), "{forget}");
}

/// Item 15: `ls --json` gives times as RFC 3339 strings, like `snapshots
/// --json`, one JSON line per entry with its message type.
#[test]
fn ls_json_times_are_rfc3339() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let f = src.join("f.txt");
    fs::write(&f, "x\n").expect("write");
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
    fs::File::options()
        .write(true)
        .open(&f)
        .expect("open")
        .set_modified(mtime)
        .expect("mtime");
    env.ok(&["backup", src.to_str().expect("utf-8")]);
    let snaps: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    assert!(chrono::DateTime::parse_from_rfc3339(snaps[0]["time"].as_str().expect("time")).is_ok());
    let lines: Vec<serde_json::Value> = env
        .ok(&["ls", "--json", "latest"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(lines.iter().all(|v| v["message_type"] == "node"));
    let node = lines
        .iter()
        .find(|v| v["name"] == "f.txt")
        .expect("f.txt listed");
    for k in ["mtime", "atime", "ctime"] {
        let t = node[k].as_str().unwrap_or_else(|| panic!("{k}: {node}"));
        assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{k}: {t}");
    }
    let m = chrono::DateTime::parse_from_rfc3339(node["mtime"].as_str().expect("mtime"))
        .expect("rfc3339");
    assert_eq!(m.timestamp(), 1_700_000_000);
    assert_eq!(m.timestamp_subsec_nanos(), 123_456_789);
}

/// Item 15: while a backup can't know its total (standard input still open),
/// its JSON status lines say so instead of giving a total of 0.
#[test]
fn json_status_says_the_total_is_unknown_until_counted() {
    use std::io::{BufRead, Write};
    let env = Env::with_repo(&[]);
    let mut child = env
        .cmd()
        .args(["--json", "backup", "--stdin", "--stdin-filename", "s.bin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&[7u8; 100_000]).expect("write");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    // The first status line comes while standard input is still open.
    let status: serde_json::Value = loop {
        let line = lines.next().expect("a status line").expect("read");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        if v["message_type"] == "status" {
            break v;
        }
    };
    assert_eq!(status["totals_final"], false, "{status}");
    assert!(status["bytes_total"].is_null(), "{status}");
    assert!(status["files_total"].is_null(), "{status}");
    assert!(status["percent_done"].is_null(), "{status}");
    drop(stdin);
    let rest: Vec<String> = lines.map(|l| l.expect("read")).collect();
    assert!(child.wait().expect("wait").success());
    let summary = common::last_json(&rest.join("\n"), "summary");
    assert_eq!(summary["total_bytes"], 100_000);
}

/// Item 10: `forget` refused by a lock printed its plan ("remove …") as if
/// carried out, then exited 11. It now takes the lock before it plans.
#[test]
fn forget_refused_by_a_lock_prints_no_plan() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), "a").expect("write");
    let s = src.to_str().expect("utf-8");
    env.ok(&["backup", s]);
    env.ok(&["backup", s]);

    let held = HeldBackup::start(&env, &[], &[]);
    for json in [false, true] {
        let mut args = vec!["forget", "--keep-last", "1"];
        if json {
            args.push("--json");
        }
        let out = env.run(&args);
        assert_eq!(
            out.status.code(),
            Some(11),
            "json {json}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert_eq!(stdout(&out), "", "a refused forget printed a plan");
        assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    }
    // A dry run changes nothing, so it needs no lock, and says what it would do.
    let dry = env.ok(&["forget", "--keep-last", "1", "--dry-run"]);
    assert!(dry.contains("would remove 1 snapshot\n"), "{dry}");
    assert_eq!(snapshot_count(&env), 2);

    let out = held.finish(b"held data");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot_count(&env), 3);
    let done = env.ok(&["forget", "--keep-last", "1"]);
    assert!(done.contains("removed 1 snapshot\n"), "{done}");
    assert_eq!(snapshot_count(&env), 2);
    assert!(crate::locks::lock_names(&env).is_empty());
}

/// Item 14: new password keys use RFC 9106's second recommended setting;
/// `--kdf-*` choose others, and keys keep what they were made with.
#[test]
fn new_password_keys_default_to_rfc9106_second_recommendation() {
    let env = Env::new();
    env.ok(&["init"]);
    let kdfs = |env: &Env| -> Vec<serde_json::Value> {
        let v: serde_json::Value =
            serde_json::from_str(&env.ok(&["key", "list", "--json"])).expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .map(|k| k["kdf"].clone())
            .collect()
    };
    let first = &kdfs(&env)[0];
    assert_eq!(first["memory_kib"], 65536, "{first}");
    assert_eq!(first["iterations"], 3, "{first}");
    assert_eq!(first["parallelism"], 4, "{first}");
    let listed = env.ok(&["key", "list"]);
    assert!(
        listed.contains("argon2id 64.0 MiB, 3 iterations, 4 lanes"),
        "{listed}"
    );

    let new_pw = env.path("new-password");
    write_private(&new_pw, "another password\n");
    let new_s = new_pw.to_str().expect("utf-8");
    env.ok(&[
        "key",
        "add",
        "--new-password-file",
        new_s,
        "--kdf-memory",
        "2048",
        "--kdf-iterations",
        "2",
        "--kdf-lanes",
        "2",
    ]);
    let all = kdfs(&env);
    assert!(
        all.iter()
            .any(|k| k["memory_kib"] == 2048 && k["iterations"] == 2 && k["parallelism"] == 2),
        "{all:?}"
    );
    // The key made by init kept its parameters, and both open the repository.
    assert!(all.iter().any(|k| k == first), "{all:?}");
    env.ok_with(&new_pw, &["snapshots"]);
    // Lanes need 8 KiB of memory each, and are capped.
    let out = env.run(&["init", "--kdf-memory", "16", "--kdf-lanes", "4"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("8 KiB per lane"), "{}", stderr(&out));
}

/// Every line of a JSON-lines command is one JSON object with a `message_type`.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?} in\n{text}"));
            assert!(v["message_type"].is_string(), "no message_type: {l}");
            v
        })
        .collect()
}

fn types(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .map(|v| v["message_type"].as_str().expect("type").to_string())
        .collect()
}

fn is_rfc3339(v: &serde_json::Value) -> bool {
    v.as_str()
        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
}

/// docs/json.md's table, command by command: which commands print one JSON
/// document and which print JSON lines, the message types of those lines, the
/// `command` of each summary, and how a name that isn't UTF-8 is written.
#[test]
fn json_output_has_the_shapes_docs_json_lists() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let init = env.ok(&[
        "init",
        "--json",
        "--kdf-memory",
        "1024",
        "--kdf-iterations",
        "1",
    ]);
    assert_eq!(types(&json_lines(&init)), ["initialized"]);

    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a.txt"), "a\n").expect("write");
    let odd = std::ffi::OsStr::from_bytes(b"odd-\xff");
    fs::write(src.join(odd), "odd\n").expect("write");
    let s = src.to_str().expect("utf-8");
    for _ in 0..2 {
        let backup = json_lines(&env.ok(&["backup", "--json", s]));
        assert_eq!(types(&backup).last().map(String::as_str), Some("summary"));
        assert!(backup.last().expect("summary")["packs_adopted"].is_u64());
    }

    // One document: snapshots, key list, cat.
    let snaps: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("one document");
    let snaps = snaps.as_array().expect("an array of snapshots");
    assert_eq!(snaps.len(), 2);
    for snap in snaps {
        let (id, short) = (
            snap["id"].as_str().expect("id"),
            snap["short_id"].as_str().expect("short_id"),
        );
        assert!(id.starts_with(short) && short.len() < id.len(), "{snap}");
        assert!(is_rfc3339(&snap["time"]), "{snap}");
    }
    let keys: serde_json::Value =
        serde_json::from_str(&env.ok(&["key", "list", "--json"])).expect("one document");
    let key = &keys.as_array().expect("an array of keys")[0];
    assert_eq!(key["kdf"]["memory_kib"], 1024, "{key}");
    assert!(is_rfc3339(&key["created"]), "{key}");
    let config: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat", "--json", "config"])).expect("one document");
    assert!(config["repo_id"].is_string(), "{config}");

    // ls: a node per entry; a name that isn't UTF-8 is its bytes, and its path
    // gets path_bytes beside it.
    let nodes = json_lines(&env.ok(&["ls", "--json", "latest"]));
    assert!(types(&nodes).iter().all(|t| t == "node"));
    let odd_node = nodes
        .iter()
        .find(|n| n["name"].is_array())
        .expect("the odd name as an array of bytes");
    let name: Vec<u8> = odd_node["name"]
        .as_array()
        .expect("bytes")
        .iter()
        .map(|b| u8::try_from(b.as_u64().expect("a byte")).expect("a byte"))
        .collect();
    assert_eq!(name, b"odd-\xff");
    let path_bytes: Vec<u8> = odd_node["path_bytes"]
        .as_array()
        .expect("path_bytes")
        .iter()
        .map(|b| u8::try_from(b.as_u64().expect("a byte")).expect("a byte"))
        .collect();
    assert_eq!(path_bytes, src.join(odd).as_os_str().as_bytes());
    let plain = nodes
        .iter()
        .find(|n| n["name"] == "a.txt")
        .expect("a.txt listed");
    assert!(plain.get("path_bytes").is_none(), "{plain}");

    let out = env.path("out");
    let restore = json_lines(&env.ok(&[
        "restore",
        "--json",
        "latest",
        "--target",
        out.to_str().expect("utf-8"),
    ]));
    assert_eq!(types(&restore).last().map(String::as_str), Some("summary"));

    let check = json_lines(&env.ok(&["check", "--json"]));
    assert_eq!(types(&check).last().map(String::as_str), Some("summary"));
    assert_eq!(
        check.last().expect("summary")["next_steps"],
        serde_json::json!([])
    );

    // Key add and remove.
    let new_pw = env.path("new-password");
    write_private(&new_pw, "another password\n");
    let added = json_lines(&env.ok(&[
        "key",
        "add",
        "--json",
        "--new-password-file",
        new_pw.to_str().expect("utf-8"),
        "--kdf-memory",
        "1024",
        "--kdf-iterations",
        "1",
    ]));
    assert_eq!(types(&added), ["key_added"]);
    let id = added[0]["id"].as_str().expect("id");
    let removed = json_lines(&env.ok(&["key", "remove", "--json", id]));
    assert_eq!(types(&removed), ["key_removed"]);

    // forget: a forget_group per group, then its summary; prune's summary.
    let forget = json_lines(&env.ok(&["forget", "--json", "--keep-last", "1"]));
    assert_eq!(types(&forget), ["forget_group", "summary"]);
    assert_eq!(forget[1]["command"], "forget");
    for snap in forget[0]["snapshots"].as_array().expect("snapshots") {
        assert!(is_rfc3339(&snap["time"]), "{snap}");
    }
    let prune = json_lines(&env.ok(&["prune", "--json"]));
    assert_eq!(types(&prune), ["summary"]);
    assert_eq!(prune[0]["command"], "prune");
    env.ok(&["backup", "-q", s]);
    let both = json_lines(&env.ok(&["forget", "--json", "--keep-last", "1", "--prune"]));
    assert_eq!(
        both.iter()
            .filter(|v| v["message_type"] == "summary")
            .map(|v| v["command"].as_str().expect("command"))
            .collect::<Vec<_>>(),
        ["forget", "prune"]
    );

    for what in ["index", "snapshots", "packs"] {
        let repair = json_lines(&env.ok(&["repair", what, "--json"]));
        assert_eq!(types(&repair).last().map(String::as_str), Some("summary"));
        assert_eq!(
            repair.last().expect("summary")["command"],
            format!("repair {what}")
        );
    }

    // unlock: a lock line per lock looked at, kept or removed.
    let held = HeldBackup::start(&env, &[], &[]);
    let kept = json_lines(&env.ok(&["unlock", "--json"]));
    assert_eq!(types(&kept), ["lock", "summary"]);
    assert_eq!(kept[0]["removed"], false, "{}", kept[0]);
    let gone = json_lines(&env.ok(&["unlock", "--json", "--remove-all"]));
    assert_eq!(types(&gone), ["lock", "summary"]);
    assert_eq!(gone[0]["removed"], true, "{}", gone[0]);
    drop(held.finish(b"held"));
}

/// Runs `cairn ARGS` stopped (SIGSTOP) most of the time, so that it runs for
/// seconds however fast the machine is; returns its JSON lines.
fn run_slowly(env: &Env, args: &[&str]) -> Vec<serde_json::Value> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut child = env
        .cmd()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let pid = Pid::from_raw(child.id() as i32);
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        std::thread::sleep(std::time::Duration::from_millis(5));
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        let _ = kill(pid, Signal::SIGSTOP);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let _ = kill(pid, Signal::SIGCONT);
        assert!(started.elapsed().as_secs() < 300, "{args:?} never ended");
    }
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    json_lines(&stdout(&out))
}

/// docs/json.md: a directory backup that runs long enough counts its sources,
/// and its status lines then give the totals (`totals_final` true, numbers and
/// a percentage); before that, `null`. A restore prints status lines too.
#[test]
fn json_status_of_a_long_backup_gets_final_totals() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut rng = common::rng(7);
    for i in 0..40 {
        fs::write(
            src.join(format!("f{i:02}.bin")),
            common::random_bytes(&mut rng, 1 << 20),
        )
        .expect("write");
    }
    let lines = run_slowly(&env, &["--json", "backup", src.to_str().expect("utf-8")]);
    let statuses: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["message_type"] == "status")
        .collect();
    assert!(!statuses.is_empty(), "no status line: {lines:?}");
    for s in &statuses {
        assert_eq!(s["action"], "backup", "{s}");
        if s["totals_final"] == false {
            assert!(
                s["files_total"].is_null() && s["bytes_total"].is_null(),
                "{s}"
            );
            assert!(s["percent_done"].is_null(), "{s}");
        }
    }
    let counted = statuses
        .iter()
        .find(|s| s["totals_final"] == true)
        .unwrap_or_else(|| panic!("totals never final: {statuses:?}"));
    assert_eq!(counted["files_total"], 40, "{counted}");
    assert_eq!(counted["bytes_total"], 40 << 20, "{counted}");
    assert!(counted["percent_done"].is_number(), "{counted}");
    assert_eq!(types(&lines).last().map(String::as_str), Some("summary"));

    let target = env.path("target");
    let lines = run_slowly(
        &env,
        &[
            "--json",
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf-8"),
        ],
    );
    let statuses: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["message_type"] == "status")
        .collect();
    assert!(!statuses.is_empty(), "no restore status line: {lines:?}");
    for s in &statuses {
        assert_eq!(s["action"], "restore", "{s}");
        for k in [
            "seconds_elapsed",
            "files_done",
            "bytes_done",
            "bytes_per_second",
        ] {
            assert!(s[k].is_number(), "{k}: {s}");
        }
    }
    assert_eq!(types(&lines).last().map(String::as_str), Some("summary"));
}

/// On a terminal, a backup whose total is still unknown (standard input still
/// open) shows a spinner with what is done so far, never a bar with an ETA.
/// The terminal is the one `script` (util-linux) provides.
#[test]
fn terminal_progress_is_a_spinner_until_the_total_is_known() {
    let script = Path::new("/usr/bin/script");
    if !script.exists() {
        eprintln!("skipped: /usr/bin/script is missing (util-linux)");
        return;
    }
    let env = Env::with_repo(&[]);
    let line = format!(
        "(head -c 100000 /dev/zero; sleep 1.5; head -c 1000 /dev/zero) | '{}' -r '{}' \
         --password-file '{}' backup --stdin --stdin-filename s.bin",
        env!("CARGO_BIN_EXE_cairn"),
        env.repo.display(),
        env.password_file.display()
    );
    let mut cmd = std::process::Command::new(script);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CAIRN_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(["-qec", &line, "/dev/null"])
        .env("CAIRN_CACHE_DIR", env.path("cache"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script");
    assert!(out.status.success(), "{}", stderr(&out));
    let screen = stdout(&out);
    assert!(
        screen.contains("counting the total"),
        "no spinner line on the terminal: {screen:?}"
    );
    assert!(
        !screen.contains("ETA"),
        "an ETA before the total was known: {screen:?}"
    );
    assert_eq!(snapshot_count(&env), 1);
}

/// Output into a pipe whose reader has gone ends quietly with the status
/// SIGPIPE would give (141), for plain and JSON output alike. SIGPIPE itself is
/// ignored, so that a connection to object storage breaking mid-write is an
/// error naming the object rather than a silent death (tests/it/s3_cluster.rs).
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir(&src).expect("mkdir");
    for i in 0..50 {
        fs::write(src.join(format!("f{i}")), b"x").expect("write");
    }
    env.ok(&["backup", src.to_str().expect("utf-8")]);
    for args in [
        vec!["ls", "latest"],
        vec!["ls", "latest", "--json"],
        vec!["snapshots"],
        vec!["snapshots", "--json"],
    ] {
        // The read end is closed before cairn starts: its first write fails.
        let (read, write) = nix::unistd::pipe().expect("pipe");
        drop(read);
        let out = env
            .cmd()
            .args(&args)
            .stdout(std::process::Stdio::from(write))
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}
