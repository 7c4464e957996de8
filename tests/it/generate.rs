//! `cairn generate`: completions a shell accepts and that know the commands,
//! and man pages that render, one per command.

use std::fs;
use std::process::Command;

use crate::common::{self, Env};

/// Every subcommand `cairn --help` lists.
fn commands(env: &Env) -> Vec<String> {
    let help = env.ok(&["--help"]);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // Wrapped descriptions are indented further.
        .filter(|l| !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn completions_parse_in_bash_and_name_every_command() {
    let env = Env::new();
    let dir = env.path("completions");
    let out = env.ok(&["generate", "completions", dir.to_str().expect("utf-8")]);
    assert!(out.contains("3 files written"), "{out}");
    let names = commands(&env);
    assert!(names.len() >= 15, "{names:?}");
    for file in ["cairn.bash", "_cairn", "cairn.fish"] {
        let text = fs::read_to_string(dir.join(file)).expect(file);
        for c in &names {
            assert!(text.contains(c.as_str()), "{file} doesn't know `{c}`");
        }
    }
    // bash parses the script and, once it is sourced, completes `cairn ba` to
    // `backup`.
    let script = format!(
        "source {}\nCOMP_WORDS=(cairn ba); COMP_CWORD=1; COMP_LINE='cairn ba'; \
         COMP_POINT=8\n_cairn cairn ba cairn\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
        dir.join("cairn.bash").display()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash");
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(common::stdout(&out).trim(), "backup");
    for (shell, file) in [("zsh", "_cairn"), ("fish", "cairn.fish")] {
        match Command::new(shell).arg("-n").arg(dir.join(file)).output() {
            Ok(o) => assert!(o.status.success(), "{shell}: {}", common::stderr(&o)),
            Err(_) => eprintln!("{shell} is not installed: its script was not parsed"),
        }
    }
    // --shell picks one.
    let one = env.path("bash-only");
    env.ok(&[
        "generate",
        "completions",
        one.to_str().expect("utf-8"),
        "--shell",
        "bash",
    ]);
    let files: Vec<_> = fs::read_dir(&one).expect("dir").collect();
    assert_eq!(files.len(), 1);
}

#[test]
fn man_pages_render_for_every_command() {
    let env = Env::new();
    let dir = env.path("man");
    env.ok(&["generate", "man", dir.to_str().expect("utf-8")]);
    let mut pages = vec![
        "cairn.1".to_string(),
        "cairn-key-add.1".into(),
        "cairn-plan-run.1".into(),
    ];
    pages.extend(commands(&env).iter().map(|c| format!("cairn-{c}.1")));
    for page in &pages {
        let path = dir.join(page);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page} is not a man page");
    }
    // The backup page documents its flags, as --help does.
    let backup = fs::read_to_string(dir.join("cairn-backup.1")).expect("page");
    for flag in ["exclude", "one\\-file\\-system", "stdin"] {
        assert!(backup.contains(flag), "cairn-backup.1 lacks {flag}");
    }
    match Command::new("groff")
        .args(["-man", "-Tutf8"])
        .arg(dir.join("cairn-backup.1"))
        .output()
    {
        Ok(o) => {
            assert!(o.status.success(), "groff: {}", common::stderr(&o));
            assert!(common::stdout(&o).contains("cairn-backup"));
        }
        Err(_) => eprintln!("groff is not installed: the page was not rendered"),
    }
}

#[test]
fn version_names_the_format() {
    let env = Env::new();
    let out = env.ok(&["version"]);
    assert!(
        out.starts_with(&format!("cairn {}\n", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(out.contains("repository format version 1"), "{out}");
}
