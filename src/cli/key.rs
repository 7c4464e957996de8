//! `cairn key list|add|remove|passwd`: the library's `keys` module behind flags.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use cairn::crypto::KdfParams;
use cairn::keyfile::KeyFile;
use cairn::keys::{KeyEntry, is_minimal};

use super::output::count;
use super::{GlobalArgs, KdfArgs, open_uncached, output, password};

#[derive(Subcommand)]
pub enum KeyCmd {
    /// List the key files; `*` marks the one that opened the repository
    List,
    /// Add a key: a new password, or with --generate a secret file for unattended use
    Add(AddArgs),
    /// Remove a key file (not the one that opened the repository)
    Remove(RemoveArgs),
    /// Change the password of the key that opened the repository: a new key
    /// replaces it (other keys are untouched)
    Passwd(PasswdArgs),
}

#[derive(Args)]
pub struct PasswdArgs {
    /// Read the new password from this file (all of it but a final newline)
    /// instead of asking twice
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    #[command(flatten)]
    kdf: KdfArgs,
}

#[derive(Args)]
pub struct AddArgs {
    /// Read the new password from this file (all of it but a final newline)
    /// instead of asking twice
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    #[command(flatten)]
    kdf: KdfArgs,
    /// Instead of a password, create FILE (mode 0600; an existing file is refused)
    /// holding a random 256-bit secret, and add a key it opens. Use it as
    /// --password-file FILE. No password stretching is needed for such a secret,
    /// so it opens the repository in about a millisecond.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["new_password_file", "kdf_memory", "kdf_iterations", "kdf_lanes"]
    )]
    generate: Option<PathBuf>,
}

#[derive(Args)]
pub struct RemoveArgs {
    /// The key's id, or a unique prefix of it
    id: String,
}

pub fn run(g: &GlobalArgs, cmd: KeyCmd) -> Result<ExitCode> {
    match cmd {
        KeyCmd::List => list(g),
        KeyCmd::Add(a) => add(g, a),
        KeyCmd::Remove(a) => remove(g, a),
        KeyCmd::Passwd(a) => passwd(g, a),
    }
}

fn kdf_text(kdf: &KdfParams) -> String {
    let mut s = format!(
        "argon2id {}, {} iteration{}",
        output::bytes(u64::from(kdf.memory_kib) * 1024),
        kdf.iterations,
        if kdf.iterations == 1 { "" } else { "s" }
    );
    if kdf.parallelism != 1 {
        s.push_str(&format!(", {} lanes", kdf.parallelism));
    }
    if is_minimal(kdf) {
        s.push_str(" (minimal: fit only for a generated secret)");
    }
    s
}

fn kdf_json(kdf: &KdfParams) -> serde_json::Value {
    serde_json::json!({
        "algorithm": "argon2id", "memory_kib": kdf.memory_kib,
        "iterations": kdf.iterations, "parallelism": kdf.parallelism,
        "minimal": is_minimal(kdf),
    })
}

fn entry_json(k: &KeyEntry) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": k.id.to_hex(), "short_id": k.id.short(), "current": k.current,
    });
    if let Some(o) = v.as_object_mut() {
        match &k.file {
            Ok(kf) => {
                o.insert("created".into(), kf.created.clone().into());
                o.insert("hostname".into(), kf.hostname.clone().into());
                o.insert("username".into(), kf.username.clone().into());
                o.insert("kdf".into(), kdf_json(&kf.kdf));
            }
            Err(e) => {
                o.insert("error".into(), e.to_string().into());
            }
        }
    }
    v
}

fn entry_line(k: &KeyEntry) -> String {
    let mark = if k.current { '*' } else { ' ' };
    match &k.file {
        Ok(KeyFile {
            created,
            hostname,
            username,
            kdf,
            ..
        }) => format!(
            "{mark} {:<8}  {:<19}  {:<24}  {}",
            k.id.short(),
            printable(&output::local_time(created)),
            printable(&format!("{username}@{hostname}")),
            kdf_text(kdf)
        ),
        Err(e) => format!(
            "{mark} {:<8}  unreadable: {}",
            k.id.short(),
            printable(&e.to_string())
        ),
    }
}

/// Key files are not authenticated: their text fields could hold terminal
/// control sequences, which [`output::printable`] shows escaped.
fn printable(s: &str) -> String {
    output::printable(s).into_owned()
}

fn list(g: &GlobalArgs) -> Result<ExitCode> {
    let repo = open_uncached(g)?;
    let keys = repo.list_keys()?;
    let bad = keys.iter().filter(|k| k.file.is_err()).count();
    if g.json {
        output::print_json(&keys.iter().map(entry_json).collect::<Vec<_>>())?;
    } else {
        println!("  {:<8}  {:<19}  {:<24}  kdf", "id", "created", "user@host");
        for k in &keys {
            println!("{}", entry_line(k));
        }
        if !g.quiet {
            println!(
                "{}; * opened the repository",
                count(keys.len(), "key file", "key files")
            );
        }
    }
    if bad > 0 {
        bail!(
            "{} could not be read; `cairn check` reports {}, \
             `cairn key remove ID` removes one",
            count(bad, "key file", "key files"),
            if bad == 1 { "it" } else { "them" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn add(g: &GlobalArgs, a: AddArgs) -> Result<ExitCode> {
    // Refuse bad flags and a taken path before asking for any password.
    let kdf = a.kdf.params()?;
    if let Some(path) = &a.generate {
        if path.symlink_metadata().is_ok() {
            return Err(cairn::Error::SecretFileExists(path.clone()).into());
        }
    }
    let repo = open_uncached(g)?;
    let location = repo.backend().location();
    let id = match &a.generate {
        Some(path) => repo
            .add_generated_key(path)
            .with_context(|| format!("adding a generated key to {location}"))?,
        None => {
            let pw = password::get_new(a.new_password_file.as_deref(), g.quiet)?;
            repo.add_key(&pw, kdf)
                .with_context(|| format!("adding a key to {location}"))?
        }
    };
    if g.json {
        output::print_json(&serde_json::json!({
            "message_type": "key_added", "id": id.to_hex(), "short_id": id.short(),
            "secret_file": a.generate.as_ref().map(|p| p.display().to_string()),
        }))?;
    } else if !g.quiet {
        println!("added key {} ({id})", id.short());
    }
    if let Some(path) = &a.generate {
        if !g.quiet {
            eprintln!(
                "warning: anyone who holds {p} can read and write this repository; keep it \
                 as safe as the password. Use it with --password-file {p} (or \
                 CAIRN_PASSWORD_FILE).",
                p = path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(g: &GlobalArgs, a: RemoveArgs) -> Result<ExitCode> {
    let repo = open_uncached(g)?;
    let id = repo.remove_key(&a.id)?;
    if g.json {
        output::print_json(&serde_json::json!({
            "message_type": "key_removed", "id": id.to_hex(), "short_id": id.short(),
        }))?;
    } else if !g.quiet {
        println!("removed key {} ({id})", id.short());
    }
    Ok(ExitCode::SUCCESS)
}

fn passwd(g: &GlobalArgs, a: PasswdArgs) -> Result<ExitCode> {
    let kdf = a.kdf.params()?;
    let (repo, current) = open_keeping_password(g)?;
    // A generated secret's key is refused (by `change_password`, under the
    // lock); say so before asking for a new password twice.
    let opened_by_secret = repo.list_keys()?.into_iter().any(|k| {
        k.current
            && k.file
                .as_ref()
                .is_ok_and(|f| cairn::keys::is_generated_secret(&current, &f.kdf))
    });
    if opened_by_secret {
        let id = repo.key_id();
        anyhow::bail!(
            "key {} was opened with a generated secret file, which has no password to change; \
             to replace the secret, `cairn key add --generate NEW_FILE`, switch to it, then \
             `cairn key remove {}`; to add a password, `cairn key add`",
            id.short(),
            id.short()
        );
    }
    let new_pw = password::get_new(a.new_password_file.as_deref(), g.quiet)?;
    let location = repo.backend().location();
    let (id, old) = repo
        .change_password(&current, &new_pw, kdf)
        .with_context(|| format!("changing the password of {location}"))?;
    if g.json {
        output::print_json(&serde_json::json!({
            "message_type": "key_changed", "id": id.to_hex(), "short_id": id.short(),
            "old_id": old.to_hex(), "old_short_id": old.short(),
        }))?;
    } else if !g.quiet {
        println!(
            "changed the password: key {} replaced by key {} ({id})",
            old.short(),
            id.short()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// [`super::open_uncached`], keeping the password that opened the repository:
/// `passwd` tells a generated secret from a typed password by it.
fn open_keeping_password(
    g: &GlobalArgs,
) -> Result<(
    std::sync::Arc<cairn::repository::Repository>,
    zeroize::Zeroizing<Vec<u8>>,
)> {
    let path = super::repo_path(g)?;
    let backend = cairn::backend::open(&path)?;
    // Before asking for a password: no point prompting for a typo'd path.
    if !backend.is_repository()? {
        return Err(cairn::Error::NotARepository(path.display().to_string()).into());
    }
    let pw = password::get(g, false)?;
    let repo = std::sync::Arc::new(cairn::repository::Repository::open(backend, &pw)?);
    super::warn_if_missing(g, &repo, &path);
    Ok((repo, pw))
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(printable("ana@host-1 ü"), "ana@host-1 ü");
        assert_eq!(printable("x\u{1b}[2Jy\n"), "x\\u{1b}[2Jy\\u{a}");
    }
}
