//! Where the password comes from, and what cairn says about it: a password
//! command's text never appears in a message, and a password file that other
//! users can read is warned about (issue #10, item 12).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::{Env, stderr, stdout};

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The command may hold a secret (a token, `pass show NAME`): errors name the flag
/// and variable instead of echoing it.
#[test]
fn password_command_is_not_echoed_in_errors() {
    let env = Env::with_repo(&[]);
    let command = "exit 3 # token=hunter2-secret";
    let by_flag = env
        .bare_cmd()
        .args(["--password-command", command, "snapshots"])
        .output()
        .expect("run");
    let by_env = env
        .bare_cmd()
        .env("CAIRN_PASSWORD_COMMAND", command)
        .arg("snapshots")
        .output()
        .expect("run");
    for out in [by_flag, by_env] {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(
                "the password command (--password-command / CAIRN_PASSWORD_COMMAND) failed"
            ),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "the command was echoed: {err}");
    }
    // Nor does `--help` show the variable's value.
    for help in [&["--help"][..], &["backup", "--help"]] {
        let out = env
            .bare_cmd()
            .env("CAIRN_PASSWORD_COMMAND", command)
            .args(help)
            .output()
            .expect("run");
        assert!(out.status.success());
        assert!(
            !stdout(&out).contains("hunter2"),
            "{help:?} showed the command: {}",
            stdout(&out)
        );
    }
}

#[test]
fn password_file_readable_by_others_is_warned_about() {
    let env = Env::with_repo(&[]);
    let file = env.password_file.to_str().expect("utf-8").to_string();
    let warning = |mode: &str| {
        format!("warning: password file {file} is readable by other users (mode {mode})")
    };

    chmod(&env.password_file, 0o644);
    let out = env.run(&["snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&warning("0644")), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("chmod 600 {file}")),
        "{}",
        stderr(&out)
    );
    let quiet = env.run(&["--quiet", "snapshots"]);
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert!(!stderr(&quiet).contains("warning"), "{}", stderr(&quiet));

    chmod(&env.password_file, 0o640);
    let out = env
        .bare_cmd()
        .env("CAIRN_PASSWORD_FILE", &env.password_file)
        .arg("snapshots")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&warning("0640")), "{}", stderr(&out));

    chmod(&env.password_file, 0o600);
    let out = env.run(&["snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));

    // The new password of `key add` too.
    let new_pw = env.path("new-password");
    fs::write(&new_pw, "new one\n").expect("write");
    chmod(&new_pw, 0o604);
    let new_file = new_pw.to_str().expect("utf-8");
    let out = env.run(&[
        "key",
        "add",
        "--new-password-file",
        new_file,
        "--kdf-memory",
        "1024",
        "--kdf-iterations",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "warning: password file {new_file} is readable by other users (mode 0604)"
        )) && err.contains(&format!("chmod 600 {new_file}")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "only the new password file: {err}");
}
