//! Opening a plan's repositories with the password sources the plan names.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::{PasswordSource, RepositorySpec};
use crate::error::{Error, Result};
use crate::repository::Repository;

/// A password as given: everything but one final newline (`\n` or `\r\n`).
pub fn strip_newline(mut s: Vec<u8>) -> Vec<u8> {
    if s.last() == Some(&b'\n') {
        s.pop();
        if s.last() == Some(&b'\r') {
            s.pop();
        }
    }
    s
}

/// The repository's password, from its file or command. The command's text is
/// never put in a message: it may hold a secret.
pub fn password(spec: &RepositorySpec) -> Result<Zeroizing<Vec<u8>>> {
    let pw = match &spec.password {
        PasswordSource::File(p) => std::fs::read(p).map_err(|source| Error::Io {
            path: p.clone(),
            source,
        })?,
        PasswordSource::Command(cmd) => {
            let out = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|source| Error::Io {
                    path: "sh".into(),
                    source,
                })?;
            if !out.status.success() {
                return Err(Error::invalid(format!(
                    "the password command of repository {:?} failed ({})",
                    spec.name, out.status
                )));
            }
            out.stdout
        }
    };
    let pw = Zeroizing::new(strip_newline(pw));
    if pw.is_empty() {
        return Err(Error::invalid(format!(
            "the password of repository {:?} is empty",
            spec.name
        )));
    }
    Ok(pw)
}

/// Opens the plan's repository `spec`; with `cache_base`, with the local cache
/// (for backups, copies and drills; checks open without it).
pub fn open(spec: &RepositorySpec, cache_base: Option<&Path>) -> Result<Arc<Repository>> {
    let backend = crate::backend::open(&spec.path)?;
    if !backend.is_repository()? {
        return Err(Error::NotARepository(spec.path.display().to_string()));
    }
    let pw = password(spec)?;
    let mut repo = Repository::open(backend, &pw)?;
    if let Some(base) = cache_base {
        repo.enable_cache(base);
    }
    Ok(Arc::new(repo))
}
