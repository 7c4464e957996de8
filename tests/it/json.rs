//! `--json` output against docs/json.md: for each command, its output parses,
//! and every message has exactly the fields the document lists for it (all of
//! them but those marked optional, and none it doesn't list).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::common::{self, Env};

/// A message's documented fields: name → optional.
type Fields = BTreeMap<String, bool>;

/// (command, message) → fields, read from docs/json.md. `message` is a
/// `message_type`, `document` or `array element`.
fn documented() -> BTreeMap<(String, String), Fields> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json.md");
    let text = fs::read_to_string(&path).expect("docs/json.md");
    let mut specs: BTreeMap<(String, String), Fields> = BTreeMap::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            let (cmds, msg) = h
                .rsplit_once(": ")
                .unwrap_or_else(|| panic!("heading without ': ' in docs/json.md: {h}"));
            let msg = ticked(msg).into_iter().next().unwrap_or(msg.to_string());
            current = ticked(cmds).into_iter().map(|c| (c, msg.clone())).collect();
            assert!(!current.is_empty(), "heading names no command: {h}");
            for k in &current {
                assert!(
                    specs.insert(k.clone(), Fields::new()).is_none(),
                    "{k:?} documented twice"
                );
            }
        } else if line.starts_with("## ") {
            current.clear();
        } else if line.starts_with("| `") {
            if current.is_empty() {
                continue;
            }
            let mut cells = line.split('|').map(str::trim).collect::<Vec<_>>();
            cells.retain(|c| !c.is_empty());
            let optional = cells
                .get(1)
                .is_some_and(|m| m.starts_with("optional:") || m.starts_with("optional ("));
            for name in ticked(cells[0]) {
                for k in &current {
                    specs
                        .entry(k.clone())
                        .or_default()
                        .insert(name.clone(), optional);
                }
            }
        }
    }
    specs
}

/// The `backticked` words of a text.
fn ticked(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Checks one object against the fields documented for (command, message).
fn conforms(specs: &BTreeMap<(String, String), Fields>, command: &str, msg: &str, v: &Value) {
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("{command}: {msg} is not an object: {v}"));
    let key = (command.to_string(), msg.to_string());
    let fields = specs
        .get(&key)
        .unwrap_or_else(|| panic!("docs/json.md documents no {msg:?} for `{command}`: {v}"));
    let have: BTreeSet<&str> = o
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "message_type")
        .collect();
    for k in &have {
        assert!(
            fields.contains_key(*k),
            "`{command}` {msg}: field {k:?} is not in docs/json.md: {v}"
        );
    }
    for (k, optional) in fields {
        assert!(
            *optional || have.contains(k.as_str()),
            "`{command}` {msg}: documented field {k:?} is missing: {v}"
        );
    }
}

/// Checks one JSON line of `command` against docs/json.md: for commands this
/// module can't drive itself (`mount` stays in the foreground).
pub(crate) fn assert_documented(command: &str, v: &Value) {
    let t = v["message_type"]
        .as_str()
        .unwrap_or_else(|| panic!("`{command}`: no message_type: {v}"));
    conforms(&documented(), command, t, v);
}

/// Checks a command's whole standard output: one document, or JSON lines
/// each with a `message_type` (a `summary` is looked up under its
/// `command`). Returns the parsed lines (or the document alone).
fn check_output(command: &str, text: &str) -> Vec<Value> {
    let specs = documented();
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() == 1 {
        let v: Value =
            serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("`{command}`: {e}: {text}"));
        match &v {
            Value::Array(items) => {
                for i in items {
                    conforms(&specs, command, "array element", i);
                }
                return vec![v];
            }
            Value::Object(o) if !o.contains_key("message_type") => {
                conforms(&specs, command, "document", &v);
                return vec![v];
            }
            _ => {}
        }
    }
    assert!(!lines.is_empty(), "`{command}` printed nothing with --json");
    lines
        .iter()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("`{command}`: {e}: {l}"));
            let t = v["message_type"]
                .as_str()
                .unwrap_or_else(|| panic!("`{command}`: no message_type: {l}"));
            let by = if t == "summary" {
                v["command"].as_str().unwrap_or(command)
            } else {
                command
            };
            conforms(&specs, by, t, &v);
            v
        })
        .collect()
}

/// Runs `cairn --json ARGS` in `env` expecting exit code `code`; checks and
/// returns what it printed.
fn json(env: &Env, code: i32, command: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    assert_eq!(
        out.status.code(),
        Some(code),
        "cairn {all:?}:\n{}{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    check_output(command, &common::stdout(&out))
}

fn types(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|v| v["message_type"].as_str())
        .collect()
}

/// A repository with two snapshots of a small tree (a file changed between).
fn two_snapshots() -> (Env, std::path::PathBuf) {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    common::random_files(&src, 31, 6, 20_000, |i| format!("f{i}.bin"));
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    fs::write(src.join("sub/note.txt"), "first\n").expect("write");
    std::os::unix::fs::symlink("f0.bin", src.join("link")).expect("symlink");
    let s = src.to_str().expect("utf-8");
    env.ok(&["backup", s]);
    fs::write(src.join("sub/note.txt"), "second\n").expect("write");
    env.ok(&["backup", s]);
    (env, src)
}

#[test]
fn the_document_is_well_formed() {
    let specs = documented();
    // Every command of the overview table has at least one message documented.
    for cmd in [
        "init",
        "backup",
        "restore",
        "copy",
        "ls",
        "check",
        "drill",
        "forget",
        "prune",
        "repair index",
        "repair snapshots",
        "repair packs",
        "unlock",
        "key add",
        "key remove",
        "plan validate",
        "plan run",
        "plan status",
        "generate",
        "snapshots",
        "key list",
        "cat",
        "plan schedule",
        "version",
        "diff",
        "find",
        "stats",
        "dump",
        "tag",
        "rewrite",
        "key passwd",
        "snapshots --group-by",
        "mount",
    ] {
        assert!(
            specs.keys().any(|(c, _)| c == cmd),
            "docs/json.md has no section for `{cmd}`"
        );
    }
    for (k, fields) in &specs {
        assert!(!fields.is_empty(), "{k:?}: no fields listed");
    }
}

#[test]
fn init_and_version() {
    let env = Env::new();
    let lines = json(
        &env,
        0,
        "init",
        &["init", "--kdf-memory", "1024", "--kdf-iterations", "1"],
    );
    assert_eq!(types(&lines), ["initialized"]);
    assert!(lines[0]["shares_ids_with"].is_null());
    let v = json(&env, 0, "version", &["version"]);
    assert_eq!(v[0]["format_version"], 1);
    assert_eq!(v[0]["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn backup_with_status_error_and_summary() {
    use std::io::{BufRead, Write};
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    common::random_files(&src, 5, 3, 1000, |i| format!("f{i}"));
    let missing = env.path("not-there");
    let lines = json(
        &env,
        3,
        "backup",
        &[
            "backup",
            src.to_str().expect("utf-8"),
            missing.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(types(&lines), ["error", "summary"]);
    assert_eq!(lines[1]["errors"], 1);
    assert_eq!(lines[1]["files_new"], 3);

    // A status line comes while standard input is still open.
    let mut child = env
        .cmd()
        .args(["--json", "backup", "--stdin", "--stdin-filename", "s.bin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&[1u8; 10_000]).expect("write");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = out.next().expect("a line").expect("read");
    drop(stdin);
    let mut text = first.clone();
    for l in out {
        text.push('\n');
        text.push_str(&l.expect("read"));
    }
    assert!(child.wait().expect("wait").success());
    let lines = check_output("backup", &text);
    assert_eq!(types(&lines).first(), Some(&"status"));
    assert_eq!(types(&lines).last(), Some(&"summary"));
}

#[test]
fn restore_with_dry_run_and_summary() {
    let (env, _) = two_snapshots();
    let target = env.path("target");
    let t = target.to_str().expect("utf-8");
    let plan = json(
        &env,
        0,
        "restore",
        &["restore", "latest", "--target", t, "--dry-run"],
    );
    assert!(types(&plan).contains(&"dry_run"));
    assert_eq!(plan.last().expect("summary")["dry_run"], true);
    let done = json(&env, 0, "restore", &["restore", "latest", "--target", t]);
    assert_eq!(types(&done), ["summary"]);
    assert_eq!(done[0]["files"], 7);
    assert_eq!(done[0]["symlinks"], 1);
}

#[test]
fn copy_lines_and_summary() {
    let (from, _) = two_snapshots();
    let to = Env::with_repo(&[]);
    let args = [
        "copy",
        "--from-repo",
        from.repo.to_str().expect("utf-8"),
        "--from-password-file",
        from.password_file.to_str().expect("utf-8"),
    ];
    let lines = json(&to, 0, "copy", &args);
    let copied: Vec<_> = lines
        .iter()
        .filter(|v| v["message_type"] == "copied")
        .collect();
    assert_eq!(copied.len(), 2);
    let again = json(&to, 0, "copy", &args);
    let summary = again.last().expect("summary");
    assert_eq!(summary["already_there"].as_array().map(Vec::len), Some(2));
}

#[test]
fn snapshots_ls_and_cat() {
    let (env, _) = two_snapshots();
    let list = json(&env, 0, "snapshots", &["snapshots"]);
    let snaps = list[0].as_array().expect("array");
    assert_eq!(snaps.len(), 2);
    assert!(snaps[1]["parent"].is_string(), "{}", snaps[1]);
    let nodes = json(&env, 0, "ls", &["ls", "latest"]);
    assert!(types(&nodes).iter().all(|t| *t == "node"));
    let link = nodes
        .iter()
        .find(|n| n["kind"] == "symlink")
        .expect("the symlink");
    assert!(link["link_target"].is_array() || link["link_target"].is_string());
    let config = json(&env, 0, "cat", &["cat", "config"]);
    assert_eq!(config[0]["version"], 1);
    // A snapshot printed by `cat` is the `snapshots` element without its ids.
    let specs = documented();
    let out = env.ok(&["--json", "cat", "snapshot", "latest"]);
    let mut v: Value = serde_json::from_str(&out).expect("json");
    v["id"] = "x".into();
    v["short_id"] = "x".into();
    conforms(&specs, "snapshots", "array element", &v);
}

#[test]
fn check_problems_summary_and_accepted_loss() {
    let (env, _) = two_snapshots();
    let clean = json(&env, 0, "check", &["check", "--read-data"]);
    assert_eq!(types(&clean), ["summary"]);
    assert!(clean[0]["bytes_read"].as_u64().is_some_and(|b| b > 0));
    // A snapshot file lost behind cairn's back: problems, next steps, exit 1.
    let snaps = env.repo.join("snapshots");
    let victim = fs::read_dir(&snaps)
        .expect("snapshots dir")
        .next()
        .expect("a snapshot")
        .expect("entry")
        .path();
    fs::remove_file(&victim).expect("remove");
    let damaged = json(&env, 1, "check", &["check"]);
    assert!(types(&damaged).contains(&"problem"), "{damaged:?}");
    let accepted = json(&env, 0, "check", &["check", "--accept-missing"]);
    assert_eq!(types(&accepted).first(), Some(&"accepted_missing"));
    common::unsee(&env);
}

#[test]
fn drill_mismatch_and_summary() {
    let (env, src) = two_snapshots();
    let ok = json(&env, 0, "drill", &["drill", "latest", "--all"]);
    assert_eq!(ok.last().expect("summary")["ok"], true);
    fs::write(src.join("sub/note.txt"), "changed since\n").expect("write");
    let bad = json(
        &env,
        1,
        "drill",
        &["drill", "latest", "--all", "--compare-source"],
    );
    let m = bad
        .iter()
        .find(|v| v["message_type"] == "mismatch")
        .expect("a mismatch");
    assert_eq!(m["at_source"], true, "{m}");
}

#[test]
fn forget_prune_and_repairs() {
    let (env, _) = two_snapshots();
    let lines = json(
        &env,
        0,
        "forget",
        &["forget", "--keep-last", "1", "--prune"],
    );
    assert_eq!(types(&lines), ["forget_group", "summary", "summary"]);
    assert_eq!(lines[1]["command"], "forget");
    assert_eq!(lines[2]["command"], "prune");
    assert_eq!(json(&env, 0, "prune", &["prune"])[0]["command"], "prune");
    for what in ["index", "snapshots", "packs"] {
        let r = json(&env, 0, &format!("repair {what}"), &["repair", what]);
        assert_eq!(
            r.last().expect("summary")["command"],
            format!("repair {what}")
        );
    }
}

#[test]
fn unlock_lines_and_summary() {
    let env = Env::with_repo(&[]);
    let none = json(&env, 0, "unlock", &["unlock"]);
    assert_eq!(types(&none), ["summary"]);
    assert_eq!(none[0]["locks_seen"], 0);
    let held = crate::locks::HeldBackup::start(&env, &[], &[]);
    let kept = json(&env, 0, "unlock", &["unlock"]);
    assert_eq!(types(&kept), ["lock", "summary"]);
    assert_eq!(kept[1]["locks_removed"], 0);
    drop(held.finish(b"held"));
}

#[test]
fn key_add_list_remove() {
    let env = Env::with_repo(&[]);
    let other = env.path("other-password");
    common::write_private(&other, "another one\n");
    let added = json(
        &env,
        0,
        "key add",
        &[
            "key",
            "add",
            "--new-password-file",
            other.to_str().expect("utf-8"),
            "--kdf-memory",
            "1024",
            "--kdf-iterations",
            "1",
        ],
    );
    let id = added[0]["id"].as_str().expect("id").to_string();
    let list = json(&env, 0, "key list", &["key", "list"]);
    assert_eq!(list[0].as_array().map(Vec::len), Some(2));
    let removed = json(&env, 0, "key remove", &["key", "remove", &id]);
    assert_eq!(removed[0]["id"], id.as_str());
}

#[test]
fn plan_commands() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    common::random_files(&src, 9, 2, 1000, |i| format!("f{i}"));
    let plan = env.path("cairn.toml");
    fs::write(
        &plan,
        format!(
            "[repository.main]\npath = \"{}\"\npassword_file = \"{}\"\n\n\
             [class.data]\npaths = [\"{}\"]\nevery = \"1d\"\nrepository = \"main\"\n\
             keep = {{ daily = 2 }}\n",
            env.repo.display(),
            env.password_file.display(),
            src.display()
        ),
    )
    .expect("plan");
    let p = plan.to_str().expect("utf-8");
    let valid = json(&env, 0, "plan validate", &["plan", "validate", "--plan", p]);
    assert_eq!(types(&valid), ["summary"]);
    let run = json(&env, 0, "plan run", &["plan", "run", "--plan", p]);
    assert!(types(&run).contains(&"plan_step"));
    assert!(types(&run).contains(&"plan_class"));
    let status = json(&env, 0, "plan status", &["plan", "status", "--plan", p]);
    assert_eq!(types(&status), ["plan_status", "summary"]);
    let cron = json(
        &env,
        0,
        "plan schedule",
        &["plan", "schedule", "--plan", p, "--cron"],
    );
    assert!(
        cron[0]["crontab_line"]
            .as_str()
            .is_some_and(|l| l.contains("plan run"))
    );
    let units = json(
        &env,
        0,
        "plan schedule",
        &["plan", "schedule", "--plan", p, "--systemd"],
    );
    assert!(
        units[0]["timer"]
            .as_str()
            .is_some_and(|t| t.contains("[Timer]"))
    );
    // A mistake: a plan_problem line, exit 1.
    fs::write(&plan, "[class.x]\nevery = \"sometimes\"\n").expect("plan");
    let bad = json(&env, 1, "plan validate", &["plan", "validate", "--plan", p]);
    assert!(types(&bad).contains(&"plan_problem"));
}

#[test]
fn generate_lines_and_summary() {
    let env = Env::new();
    let dir = env.path("completions");
    let d = dir.to_str().expect("utf-8");
    let lines = json(
        &env,
        0,
        "generate",
        &["generate", "completions", d, "--shell", "bash"],
    );
    assert_eq!(types(&lines), ["generated", "summary"]);
    assert_eq!(lines[1]["files"], 1);
    assert!(dir.join("cairn.bash").is_file());
}

#[test]
fn diff_find_stats_and_dump() {
    let (env, src) = two_snapshots();
    let diff = json(
        &env,
        0,
        "diff",
        &["diff", "--metadata", "latest~1", "latest"],
    );
    assert!(types(&diff).contains(&"change"), "{diff:?}");
    assert_eq!(diff.last().expect("summary")["modified"], 1);
    let found = json(&env, 0, "find", &["find", "*.txt"]);
    assert_eq!(types(&found), ["match", "match", "summary"]);
    // A data blob of f0.bin, from the tree, found by id.
    let tree: Value =
        serde_json::from_str(&env.ok(&["cat", "tree", &format!("latest:{}", src.display())]))
            .expect("tree");
    let blob = tree["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == "f0.bin")
        .and_then(|n| n["content"][0].as_str())
        .expect("a blob of f0.bin")
        .to_string();
    let by_blob = json(&env, 0, "find", &["find", "--blob", &blob]);
    assert!(types(&by_blob).contains(&"match"), "{by_blob:?}");
    for mode in ["restore-size", "files-by-contents", "raw-data"] {
        let s = json(&env, 0, "stats", &["stats", "--mode", mode]);
        assert_eq!(s[0]["mode"], mode);
    }
    let target = env.path("dump.tar");
    let sub = format!("latest:{}/sub", src.display());
    let dumped = json(
        &env,
        0,
        "dump",
        &["dump", &sub, "--target", target.to_str().expect("utf-8")],
    );
    assert_eq!(dumped[0]["archive"], "tar");
    assert!(target.is_file());
}

#[test]
fn tag_rewrite_key_passwd_and_groups() {
    let (env, _) = two_snapshots();
    let tagged = json(&env, 0, "tag", &["tag", "latest", "--add", "t"]);
    assert_eq!(types(&tagged), ["tagged", "summary"]);
    assert_eq!(tagged[0]["changed"], true);
    let same = json(&env, 0, "tag", &["tag", "latest", "--add", "t"]);
    assert!(same[0]["new_snapshot_id"].is_null());
    // The replacement carries `replaces` and `original`, as documented.
    let list = json(&env, 0, "snapshots", &["snapshots"]);
    assert!(list[0][1]["replaces"].is_string(), "{}", list[0]);
    let groups = json(
        &env,
        0,
        "snapshots --group-by",
        &["snapshots", "--group-by", "host,tags"],
    );
    assert_eq!(groups[0].as_array().map(Vec::len), Some(2));

    let dry = json(
        &env,
        0,
        "rewrite",
        &["rewrite", "latest", "-e", "note.txt", "--dry-run"],
    );
    assert_eq!(types(&dry), ["rewritten", "summary"]);
    assert_eq!(dry[0]["removed"][0]["kind"], "file");
    let done = json(
        &env,
        0,
        "rewrite",
        &["rewrite", "latest", "latest~1", "-e", "sub", "--forget"],
    );
    assert_eq!(done.last().expect("summary")["snapshots_removed"], 2);

    let new_pw = env.path("new-password");
    common::write_private(&new_pw, "another\n");
    let p = new_pw.to_str().expect("utf-8");
    let changed = json(
        &env,
        0,
        "key passwd",
        &[
            "key",
            "passwd",
            "--new-password-file",
            p,
            "--kdf-memory",
            "1024",
            "--kdf-iterations",
            "1",
        ],
    );
    assert_eq!(types(&changed), ["key_changed"]);
}
