//! `cairn plan validate`: the example plan passes; each kind of mistake is
//! reported at its line and column; all mistakes of a file are reported at
//! once; the plan file is found where the README says.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::{Env, last_json, stderr, stdout, write_private};

/// A valid plan: two repositories, one class. Paths are relative to the plan
/// file's directory, where [`env`] creates `pw` and `src`.
const BASE: &str = r#"[repository.main]
path = "repo"
password_file = "pw"

[repository.copy]
path = "copy"
password_file = "pw"

[class.docs]
paths = ["src"]
every = "1h"
keep = { daily = 7 }
repository = "main"
copy_to = ["copy"]
"#;

fn env() -> Env {
    let env = Env::new();
    write_private(&env.path("pw"), "secret\n");
    std::fs::create_dir(env.path("src")).expect("mkdir src");
    std::fs::create_dir(env.path("other")).expect("mkdir other");
    env
}

/// `cairn plan ...` with HOME inside the scratch directory, so that no plan
/// file of the machine's user is found.
fn cairn(env: &Env) -> Command {
    let mut c = env.bare_cmd();
    c.env("HOME", env.path("home"));
    c.arg("plan");
    c
}

fn validate(env: &Env, text: &str) -> Output {
    let file = env.path("cairn.toml");
    std::fs::write(&file, text).expect("write plan");
    cairn(env)
        .arg("validate")
        .arg("--plan")
        .arg(&file)
        .output()
        .expect("running cairn")
}

/// `LINE:COLUMN` (from 1, columns in characters) of the first `needle` in `text`.
fn pos(text: &str, needle: &str) -> String {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the plan"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    format!("{line}:{col}")
}

/// Asserts that validating `text` fails and reports, at the position of
/// `needle`, an error whose message contains `part`.
fn assert_mistake(text: &str, needle: &str, part: &str) {
    let env = env();
    let out = validate(&env, text);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    let want = format!("cairn.toml:{}: error: ", pos(text, needle));
    assert!(
        err.lines().any(|l| l.contains(&want) && l.contains(part)),
        "no line with {want:?} and {part:?} in:\n{err}"
    );
}

fn with_class(extra: &str) -> String {
    format!("{BASE}\n{extra}")
}

#[test]
fn base_plan_validates_and_summarises_its_classes() {
    let env = env();
    let out = validate(&env, BASE);
    assert!(out.status.success(), "stderr:\n{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("1 class, 2 repositories"), "{text}");
    assert!(text.contains("docs:"), "{text}");
    assert!(
        text.contains("every 1h into main, copied to copy"),
        "{text}"
    );
}

#[test]
fn example_plan_validates() {
    let env = env();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cairn.example.toml"),
    )
    .expect("reading docs/cairn.example.toml");
    // Its password files live under /etc/cairn; the test's under the scratch dir.
    let etc = env.path("etc");
    std::fs::create_dir(&etc).expect("mkdir");
    write_private(&etc.join("nas.key"), "nas secret\n");
    write_private(&etc.join("offsite.key"), "offsite secret\n");
    let text = example.replace("/etc/cairn/", &format!("{}/", etc.display()));
    assert_ne!(
        text, example,
        "the example names no /etc/cairn/ password file"
    );
    let out = validate(&env, &text);
    assert!(out.status.success(), "stderr:\n{}", stderr(&out));
    let summary = stdout(&out);
    assert!(summary.contains("3 classes, 2 repositories"), "{summary}");
    for want in [
        "critical: /data/users, /data/models every 1h into nas, copied to offsite",
        "db: output of `pg_dump app` as app.sql every 1d into nas",
        "general: /var/log/train every 1w into nas",
    ] {
        assert!(summary.contains(want), "{want:?} not in:\n{summary}");
    }
    // Machine-readable too.
    let file = env.path("cairn.toml");
    let out = cairn(&env)
        .args(["validate", "--json", "--plan"])
        .arg(&file)
        .output()
        .expect("running cairn");
    assert!(out.status.success());
    let v = last_json(&stdout(&out), "summary");
    assert_eq!(v["errors"], 0);
    // The README: its shortest interval is an hour, so a timer every 15 minutes.
    let out = cairn(&env)
        .args(["schedule", "--systemd", "--plan"])
        .arg(&file)
        .output()
        .expect("running cairn");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("OnCalendar=*-*-* *:00/15:00"),
        "{}",
        stdout(&out)
    );
    assert_eq!(v["classes"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["classes"][0]["name"], "critical");
    assert_eq!(v["classes"][0]["every_seconds"], 3600);
}

#[test]
fn syntax_error_is_reported_at_its_place() {
    let text = BASE.replace("[class.docs]", "[class.docs");
    // Where the `]` is missing: line 9, after the 11 characters of `[class.docs`.
    let env = env();
    let out = validate(&env, &text);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cairn.toml:9:12: error: unclosed table, expected `]`"),
        "{err}"
    );
    // Nothing else is checked in a file that doesn't parse.
    assert_eq!(err.matches(": error: ").count(), 1, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn unknown_keys_are_refused_wherever_they_are() {
    assert_mistake(
        &BASE.replace(
            "password_file = \"pw\"\n\n[repository.copy]",
            "password_file = \"pw\"\ncolour = 1\n\n[repository.copy]",
        ),
        "colour",
        "unknown field `colour`",
    );
    assert_mistake(
        &with_class("[clas.x]\npaths = [\"other\"]\n"),
        "clas.x",
        "unknown field `clas`",
    );
    assert_mistake(
        &BASE.replace("every = \"1h\"", "every = \"1h\"\nretention = 3"),
        "retention",
        "unknown field `retention`",
    );
    assert_mistake(
        &BASE.replace(
            "keep = { daily = 7 }",
            "keep = { daily = 7, fortnightly = 2 }",
        ),
        "fortnightly",
        "unknown field `fortnightly`",
    );
}

#[test]
fn bad_durations_are_reported_at_their_value() {
    assert_mistake(
        &BASE.replace("\"1h\"", "\"1x\""),
        "\"1x\"",
        "not an interval",
    );
    assert_mistake(
        &BASE.replace("\"1h\"", "\"1y\""),
        "\"1y\"",
        "no fixed length",
    );
    assert_mistake(
        &BASE.replace("\"1h\"", "\"0m\""),
        "\"0m\"",
        "shorter than the minimum, 1m",
    );
    assert_mistake(
        &BASE.replace("keep = { daily = 7 }", "keep = { within = \"3q\" }"),
        "\"3q\"",
        "keep.within",
    );
    // `m` would be minutes in `every` but months in forget's rules: refused.
    assert_mistake(
        &BASE.replace("keep = { daily = 7 }", "keep = { within = \"6m\" }"),
        "\"6m\"",
        "write months as `mo`",
    );
    assert_mistake(
        &BASE.replace("copy_to", "check = { every = \"soon\" }\ncopy_to"),
        "\"soon\"",
        "not an interval",
    );
}

#[test]
fn bad_values_are_reported_at_their_value() {
    assert_mistake(
        &BASE.replace("copy_to", "compression = 30\ncopy_to"),
        "30",
        "not a zstd level",
    );
    assert_mistake(
        &BASE.replace(
            "copy_to",
            "drill = { every = \"1d\", percent = 150.0 }\ncopy_to",
        ),
        "150.0",
        "not in (0, 100]",
    );
    assert_mistake(
        &BASE.replace("copy_to", "drill = { every = \"1d\", files = 0 }\ncopy_to"),
        "0 }",
        "restores nothing",
    );
    assert_mistake(
        &BASE.replace(
            "copy_to",
            "check = { every = \"1d\", read_data_subset = \"120%\" }\ncopy_to",
        ),
        "\"120%\"",
        "read_data_subset",
    );
    assert_mistake(
        &BASE.replace("daily = 7", "daily = -1"),
        "-1",
        "invalid value",
    );
}

#[test]
fn a_class_needs_paths_or_a_command_but_not_both() {
    assert_mistake(
        &with_class("[class.empty]\nevery = \"1d\"\nrepository = \"main\"\n"),
        "empty]",
        "neither paths nor command",
    );
    assert_mistake(
        &with_class(
            "[class.both]\npaths = [\"other\"]\ncommand = \"pg_dump\"\nevery = \"1d\"\nrepository = \"main\"\n",
        ),
        "\"pg_dump\"",
        "both paths (line 17) and command",
    );
    assert_mistake(
        &BASE.replace("copy_to", "stdin_filename = \"x.sql\"\ncopy_to"),
        "\"x.sql\"",
        "stdin_filename goes with command",
    );
    assert_mistake(
        &with_class(
            "[class.db]\ncommand = \"pg_dump\"\nexclude = [\"*.tmp\"]\nevery = \"1d\"\nrepository = \"main\"\n",
        ),
        "\"*.tmp\"]",
        "exclude applies to paths",
    );
}

#[test]
fn repositories_must_exist_and_copies_go_elsewhere() {
    assert_mistake(
        &BASE.replace("repository = \"main\"", ""),
        "docs]",
        "has no repository",
    );
    assert_mistake(
        &BASE.replace("repository = \"main\"", "repository = \"mian\""),
        "\"mian\"",
        "no repository named \"mian\" (defined: copy, main)",
    );
    assert_mistake(
        &BASE.replace("copy_to = [\"copy\"]", "copy_to = [\"copy\", \"cold\"]"),
        "\"cold\"",
        "copy_to names no repository \"cold\"",
    );
    assert_mistake(
        &BASE.replace("copy_to = [\"copy\"]", "copy_to = [\"main\"]"),
        "\"main\"]",
        "copies to its own repository",
    );
    // Another name for the same place is no copy either.
    assert_mistake(
        &BASE.replace("path = \"copy\"", "path = \"./repo/\""),
        "\"copy\"]",
        "at the same path",
    );
}

#[test]
fn password_files_must_be_readable_and_private() {
    assert_mistake(
        &BASE.replacen("password_file = \"pw\"", "password_file = \"nope\"", 1),
        "\"nope\"",
        "password file",
    );
    assert_mistake(
        &BASE.replacen("password_file = \"pw\"", "password_file = \"src\"", 1),
        "\"src\"",
        "is a directory",
    );
    assert_mistake(
        &BASE.replacen("password_file = \"pw\"\n", "", 1),
        "main]",
        "has no password_file or password_command",
    );
    // Readable by others: a warning, as for --password-file; still valid.
    let env = env();
    std::fs::set_permissions(env.path("pw"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let out = validate(&env, BASE);
    assert!(out.status.success(), "stderr:\n{}", stderr(&out));
    let want = format!("cairn.toml:{}: warning: ", pos(BASE, "\"pw\""));
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains(&want) && l.contains("readable by other users")),
        "{err}"
    );
}

#[test]
fn a_path_in_two_classes_is_refused_after_normalising() {
    let text = with_class(
        "[class.again]\npaths = [\"other\", \"./src/\"]\nevery = \"1d\"\nrepository = \"main\"\n",
    );
    assert_mistake(
        &text,
        "\"./src/\"",
        "is already backed up by class \"docs\" (line 10)",
    );
}

#[test]
fn keep_rules_that_keep_nothing_are_refused() {
    assert_mistake(
        &BASE.replace("keep = { daily = 7 }", "keep = {}"),
        "{}",
        "keep nothing",
    );
    assert_mistake(
        &BASE.replace(
            "keep = { daily = 7 }",
            "keep = { daily = 0, within = \"0d\" }",
        ),
        "{ daily = 0",
        "keep nothing",
    );
    // Tags no snapshot of the class carries keep none of them.
    assert_mistake(
        &BASE.replace("keep = { daily = 7 }", "keep = { tags = [\"release\"] }"),
        "{ tags",
        "keep nothing",
    );
    // Its own tags do.
    let env = env();
    let text = BASE.replace(
        "keep = { daily = 7 }",
        "tags = [\"release\"]\nkeep = { tags = [\"release\"] }",
    );
    let out = validate(&env, &text);
    assert!(out.status.success(), "stderr:\n{}", stderr(&out));
}

#[test]
fn drills_and_checks_must_make_sense() {
    assert_mistake(
        &BASE.replace("copy_to", "drill = { every = \"30m\", files = 5 }\ncopy_to"),
        "\"30m\"",
        "more often than a backup",
    );
    assert_mistake(
        &BASE.replace(
            "copy_to",
            "drill = { every = \"1d\", files = 5, percent = 5.0 }\ncopy_to",
        ),
        "5.0",
        "files or percent, not both",
    );
    assert_mistake(
        &BASE.replace("copy_to", "drill = { every = \"1d\" }\ncopy_to"),
        "{ every = \"1d\" }",
        "needs files = N or percent = X",
    );
}

#[test]
fn every_mistake_of_a_file_is_reported_at_once() {
    let text = r#"[repository.main]
path = "repo"
password_file = "missing-pw"
colour = "blue"

[class.a]
paths = ["src"]
every = "1x"
keep = { daily = 0, fortnightly = 3 }
repository = "main"
bogus = 1

[class.b]
paths = ["./src/"]
every = "1h"
keep = {}
repository = "nas"
compression = 30
drill = { every = "1d", files = 0 }
"#;
    let env = env();
    let out = validate(&env, text);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let expected = [
        ("\"missing-pw\"", "can't be read"),
        ("colour", "unknown field `colour`"),
        ("\"1x\"", "not an interval"),
        ("fortnightly", "unknown field `fortnightly`"),
        ("bogus", "unknown field `bogus`"),
        ("\"./src/\"", "already backed up by class \"a\""),
        ("{}", "keep nothing"),
        ("\"nas\"", "no repository named \"nas\""),
        ("30", "not a zstd level"),
        ("0 }", "restores nothing"),
    ];
    for (needle, part) in expected {
        let want = format!("cairn.toml:{}: error: ", pos(text, needle));
        assert!(
            err.lines().any(|l| l.contains(&want) && l.contains(part)),
            "no {want:?} with {part:?} in:\n{err}"
        );
    }
    assert_eq!(err.matches(": error: ").count(), expected.len(), "{err}");
    assert!(err.contains("has 10 mistakes"), "{err}");

    // The same, machine-readable: one record per mistake, in file order.
    let out = cairn(&env)
        .args(["validate", "--json", "--plan"])
        .arg(env.path("cairn.toml"))
        .output()
        .expect("running cairn");
    assert_eq!(out.status.code(), Some(1));
    let records: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .filter(|v: &serde_json::Value| v["severity"] == "error")
        .collect();
    assert_eq!(records.len(), expected.len());
    assert_eq!(
        (&records[0]["line"], &records[0]["column"]),
        (&3.into(), &17.into())
    );
    assert_eq!(last_json(&stdout(&out), "summary")["errors"], 10);
}

#[test]
fn plan_file_is_found_by_flag_then_variable_then_default_places() {
    let env = env();
    let valid = |name: &str| {
        BASE.replace("\"repo\"", &format!("\"{}\"", env.path("repo").display()))
            .replace(
                "\"copy\"\n",
                &format!("\"{}\"\n", env.path("copy").display()),
            )
            .replace("\"pw\"", &format!("\"{}\"", env.path("pw").display()))
            .replace("[\"src\"]", &format!("[\"{}\"]", env.path("src").display()))
            .replace("docs", name)
    };
    let flag = env.path("flag.toml");
    let var = env.path("var.toml");
    let cwd = env.path("cwd");
    let user = env.path("home/.config/cairn");
    std::fs::create_dir_all(&cwd).expect("mkdir");
    std::fs::create_dir_all(&user).expect("mkdir");
    std::fs::write(&flag, valid("fromflag")).expect("write");
    std::fs::write(&var, valid("fromvar")).expect("write");
    std::fs::write(cwd.join("cairn.toml"), valid("fromcwd")).expect("write");
    std::fs::write(user.join("cairn.toml"), valid("fromhome")).expect("write");

    let run = |flag: Option<&Path>, var: Option<&Path>| {
        let mut c = cairn(&env);
        c.current_dir(&cwd).arg("validate");
        if let Some(f) = flag {
            c.arg("--plan").arg(f);
        }
        if let Some(v) = var {
            c.env("CAIRN_PLAN", v);
        }
        let out = c.output().expect("running cairn");
        assert!(out.status.success(), "stderr:\n{}", stderr(&out));
        stdout(&out)
    };
    let out = run(Some(&flag), Some(&var));
    assert!(
        out.contains("fromflag:") && out.contains("given by --plan"),
        "{out}"
    );
    let out = run(None, Some(&var));
    assert!(
        out.contains("fromvar:") && out.contains("given by CAIRN_PLAN"),
        "{out}"
    );
    let out = run(None, None);
    assert!(
        out.contains("fromcwd:") && out.contains("plan cairn.toml"),
        "{out}"
    );
    std::fs::remove_file(cwd.join("cairn.toml")).expect("rm");
    let out = run(None, None);
    assert!(out.contains("fromhome:"), "{out}");
    assert!(
        out.contains(&user.join("cairn.toml").display().to_string()),
        "{out}"
    );

    // A file named by the flag is used or refused, never replaced by another.
    let mut c = cairn(&env);
    let out = c
        .current_dir(&cwd)
        .args(["validate", "--plan", "absent.toml"])
        .output()
        .expect("running cairn");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("absent.toml"), "{}", stderr(&out));
}

#[test]
fn no_plan_file_anywhere_names_the_places_looked_at() {
    let env = env();
    let cwd = env.path("other");
    let out = cairn(&env)
        .current_dir(&cwd)
        .arg("validate")
        .output()
        .expect("running cairn");
    if Path::new("/etc/cairn/cairn.toml").exists() {
        return; // this machine has a plan; it would be found
    }
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no plan file"), "{err}");
    assert!(err.contains("cairn.toml, "), "{err}");
    assert!(err.contains("/home/.config/cairn/cairn.toml"), "{err}");
    assert!(err.contains("/etc/cairn/cairn.toml"), "{err}");
}

/// A password file that is a FIFO (`<(pass show ...)` written into a plan) is
/// not opened: opening it would wait for a writer, and validation would hang.
#[test]
fn a_fifo_password_file_does_not_hang_validation() {
    let env = env();
    let fifo = env.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    std::fs::write(
        env.path("cairn.toml"),
        BASE.replacen("password_file = \"pw\"", "password_file = \"fifo\"", 1),
    )
    .expect("write plan");
    let mut child = cairn(&env)
        .arg("validate")
        .arg("--plan")
        .arg(env.path("cairn.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("running cairn");
    // A hang guard, not a measurement: validation takes milliseconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let status = status.expect("plan validate hung on a FIFO password file");
    assert!(status.success(), "{status:?}");
}

/// The README's warnings: a repository not created yet, a source path that
/// doesn't exist and paths of two classes that overlap are each reported at
/// their place as `warning:`, and the plan is still valid (exit 0).
#[test]
fn warnings_are_reported_at_their_place_and_do_not_fail_validation() {
    let env = env();
    std::fs::create_dir(env.path("src/sub")).expect("mkdir");
    let text = format!(
        "{}\n[class.sub]\npaths = [\"src/sub\"]\nevery = \"1d\"\nrepository = \"main\"\n",
        BASE.replace("paths = [\"src\"]", "paths = [\"src\", \"nothere\"]")
    );
    let out = validate(&env, &text);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(stdout(&out).contains("is valid"), "{}", stdout(&out));
    for (needle, said) in [
        ("\"repo\"", "does not exist"),
        ("\"nothere\"", "does not exist (yet)"),
        ("\"src/sub\"", "overlaps"),
    ] {
        let want = format!("cairn.toml:{}: warning: ", pos(&text, needle));
        let line = err
            .lines()
            .find(|l| l.contains(&want))
            .unwrap_or_else(|| panic!("no warning at {want}: {err}"));
        assert!(line.contains(said), "{line}");
    }
    assert!(!err.contains(": error: "), "{err}");
}

/// A plan runs commands as whoever runs it: a plan file others can change is
/// refused by every plan command, naming the file and its mode.
#[test]
fn a_plan_file_others_can_change_is_refused() {
    let env = env();
    let file = env.path("cairn.toml");
    std::fs::write(&file, BASE).expect("write plan");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    for args in [&["validate"][..], &["run", "--dry-run"][..]] {
        let out = cairn(&env)
            .args(args)
            .arg("--plan")
            .arg(&file)
            .output()
            .expect("running cairn");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("can be changed by other users (mode 0666)") && err.contains("cairn.toml"),
            "{args:?}: {err}"
        );
    }
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    // Its directory too, unless sticky (as /tmp is).
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let out = validate(&env, BASE);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the plan file's directory"),
        "{}",
        stderr(&out)
    );
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod");
    let out = validate(&env, BASE);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
}
