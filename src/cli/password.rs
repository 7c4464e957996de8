//! Where the password comes from: --password-file or --password-command, else one
//! of CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND and CAIRN_PASSWORD, else a
//! prompt on the terminal (no echo). The source repository of `copy` and
//! `init --from-repo` has the same with `from-password` and CAIRN_FROM_PASSWORD.

use std::io::IsTerminal;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

use cairn::plan::open::strip_newline;

use super::{FromRepoArgs, GlobalArgs, usage};

fn from_file(path: &Path, quiet: bool) -> Result<Zeroizing<Vec<u8>>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading password file {}", path.display()))?;
    if !quiet {
        warn_if_readable_by_others(path);
    }
    Ok(Zeroizing::new(strip_newline(bytes)))
}

/// Anyone who can read a password file can open the repository. Only regular
/// files: a pipe (`--password-file <(pass show …)`) is nobody else's to read.
fn warn_if_readable_by_others(path: &Path) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o7777;
    if meta.is_file() && mode & 0o044 != 0 {
        eprintln!(
            "warning: password file {p} is readable by other users (mode {mode:04o}); \
             anyone who can read it can open the repository: `chmod 600 {p}`",
            p = path.display()
        );
    }
}

fn from_command(cmd: &str, names: &Names) -> Result<Zeroizing<Vec<u8>>> {
    // Named in errors by its flag, never by its text, which may hold a secret
    // (`pass show …`, a token on the command line).
    let label = format!(
        "the {} command (--{}-command / {}_COMMAND)",
        names.what, names.flag, names.var
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {label}"))?;
    if !out.status.success() {
        bail!("{label} failed ({})", out.status);
    }
    Ok(Zeroizing::new(strip_newline(out.stdout)))
}

/// Asks on the terminal without echo; a second time to confirm a new password.
fn prompt(label: &str, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
    let mut first = Zeroizing::new(
        rpassword::prompt_password(format!("{label}: ")).context("reading the password")?,
    );
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password(format!("repeat the {label}: "))
                .context("reading the password")?,
        );
        if *again != *first {
            bail!("the passwords do not match");
        }
    }
    Ok(Zeroizing::new(std::mem::take(&mut *first).into_bytes()))
}

fn can_prompt() -> bool {
    std::io::stdin().is_terminal() || std::io::stderr().is_terminal()
}

fn non_empty(pw: Zeroizing<Vec<u8>>, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    if pw.is_empty() {
        bail!("the {what} is empty");
    }
    Ok(pw)
}

/// A new password with a line break in it is almost surely a file with more than
/// the password in it; typed later, it would never match.
fn one_line(pw: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>> {
    if pw.iter().any(|&b| b == b'\n' || b == b'\r') {
        bail!(
            "the new password contains a line break; a password file must hold the password \
             alone (a final newline is fine)"
        );
    }
    Ok(pw)
}

/// Where the repository password comes from.
enum Source {
    File(PathBuf),
    Command(String),
    Value(Zeroizing<Vec<u8>>),
    Prompt,
}

/// How one repository's password sources are named: the flags
/// `--{flag}-file` and `--{flag}-command`, the variables `{var}_FILE`,
/// `{var}_COMMAND` and `{var}`.
struct Names {
    what: &'static str,
    flag: &'static str,
    var: &'static str,
}

const MAIN: Names = Names {
    what: "password",
    flag: "password",
    var: "CAIRN_PASSWORD",
};

/// The repository `copy` reads from, or `init --from-repo` shares ids with.
const FROM: Names = Names {
    what: "source repository password",
    flag: "from-password",
    var: "CAIRN_FROM_PASSWORD",
};

/// Chooses the password source: a flag wins over the environment (clap refuses
/// both flags at once), and two variables set at once are refused rather than one
/// silently ignored: the one cairn picked might open the repository with another
/// key than the user meant, or fail with a misleading "wrong password". Empty
/// variables count as unset.
fn source(file: Option<&PathBuf>, command: Option<&String>, names: &Names) -> Result<Source> {
    if let Some(f) = file {
        return Ok(Source::File(f.clone()));
    }
    if let Some(c) = command {
        return Ok(Source::Command(c.clone()));
    }
    let (file_var, command_var) = (
        format!("{}_FILE", names.var),
        format!("{}_COMMAND", names.var),
    );
    let vars = [file_var.as_str(), command_var.as_str(), names.var];
    let set: Vec<(&str, std::ffi::OsString)> = vars
        .iter()
        .filter_map(|k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(|v| (*k, v))
        })
        .collect();
    let flags = format!("--{0}-file or --{0}-command", names.flag);
    match set.as_slice() {
        [] if can_prompt() => Ok(Source::Prompt),
        [] => bail!(
            "no {} given: use --{}-file, --{}-command, {}, {} or {} (no terminal to ask on)",
            names.what,
            names.flag,
            names.flag,
            vars[0],
            vars[1],
            vars[2]
        ),
        [(k, v)] => Ok(if *k == vars[0] {
            Source::File(PathBuf::from(v))
        } else if *k == vars[1] {
            Source::Command(v.to_string_lossy().into_owned())
        } else {
            Source::Value(Zeroizing::new(v.clone().into_vec()))
        }),
        many => {
            let list: Vec<&str> = many.iter().map(|(k, _)| *k).collect();
            let (all, but) = if list.len() == 2 {
                ("both", "one of them")
            } else {
                ("all", "all but one")
            };
            Err(usage(format!(
                "{} are {all} set, and cairn won't guess which {} to use: unset \
                 {but}, or give {flags} (a flag overrides the environment)",
                list.join(" and "),
                names.what
            )))
        }
    }
}

fn read(source: Source, names: &Names, quiet: bool, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
    let pw = match source {
        Source::File(f) => from_file(&f, quiet)?,
        Source::Command(c) => from_command(&c, names)?,
        Source::Value(v) => v,
        Source::Prompt => prompt(
            if names.flag == MAIN.flag {
                "repository password"
            } else {
                names.what
            },
            confirm,
        )?,
    };
    non_empty(pw, names.what)
}

/// The password of the repository `--from-repo` names.
pub fn get_from(f: &FromRepoArgs, quiet: bool) -> Result<Zeroizing<Vec<u8>>> {
    let s = source(
        f.from_password_file.as_ref(),
        f.from_password_command.as_ref(),
        &FROM,
    )?;
    read(s, &FROM, quiet, false)
}

/// The repository password. `confirm` (a new repository's): ask twice on a
/// terminal, and refuse one with a line break in it.
pub fn get(g: &GlobalArgs, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
    let s = source(g.password_file.as_ref(), g.password_command.as_ref(), &MAIN)?;
    let pw = read(s, &MAIN, g.quiet, confirm)?;
    if confirm { one_line(pw) } else { Ok(pw) }
}

/// The password for a new key file: from `file` (all of it but a final newline),
/// else asked twice on the terminal. `quiet`: no warning about the file's mode.
pub fn get_new(file: Option<&Path>, quiet: bool) -> Result<Zeroizing<Vec<u8>>> {
    let pw = match file {
        Some(f) => from_file(f, quiet)?,
        None if can_prompt() => prompt("new password", true)?,
        None => bail!("no new password given: use --new-password-file (no terminal to ask on)"),
    };
    one_line(non_empty(pw, "new password")?)
}
