//! The drill's scratch directory: made fresh for each drill, private (0700),
//! and removed afterwards however the drill ends — also when it fails, returns
//! an error or is interrupted (dropping it removes it).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

pub(super) struct Scratch {
    /// The directory made for this drill (canonical).
    dir: PathBuf,
    /// `--target` when this drill created it: removed too, if left empty.
    made_parent: Option<PathBuf>,
    removed: bool,
}

impl Scratch {
    /// A new directory under `parent` (created if missing; refused if it exists
    /// and holds anything), or under the system's temporary directory.
    pub(super) fn create(parent: Option<&Path>) -> Result<Self> {
        let mut made_parent = None;
        let base = match parent {
            Some(p) => {
                match fs::read_dir(p) {
                    Ok(mut entries) => {
                        if entries.next().is_some() {
                            return Err(Error::invalid(format!(
                                "{}: the drill target must be empty or not exist yet (the drill \
                                 restores into a new directory inside it and removes it \
                                 afterwards); choose another --target",
                                p.display()
                            )));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::create_dir_all(p).at(p)?;
                        made_parent = Some(p.to_path_buf());
                    }
                    Err(e) => return Err(Error::io(p, e)),
                }
                p.to_path_buf()
            }
            None => std::env::temp_dir(),
        };
        let dir = tempfile::Builder::new()
            .prefix("cairn-drill-")
            .tempdir_in(&base)
            .at(&base)?
            .keep();
        let mut scratch = Self {
            dir: dir.clone(),
            made_parent,
            removed: false,
        };
        // The restorer names the canonical path in its messages.
        scratch.dir = fs::canonicalize(&dir).at(&dir)?;
        Ok(scratch)
    }

    pub(super) fn path(&self) -> &Path {
        &self.dir
    }

    /// Removes the directory and everything restored in it, and `--target` if
    /// this drill made it.
    pub(super) fn remove(mut self) -> Result<()> {
        self.removed = true;
        remove_all(&self.dir)?;
        if let Some(p) = &self.made_parent {
            // Only if empty: something else may have been put there meanwhile.
            let _ = fs::remove_dir(p);
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.removed {
            let _ = remove_all(&self.dir);
            if let Some(p) = &self.made_parent {
                let _ = fs::remove_dir(p);
            }
        }
    }
}

/// `rm -rf`, first giving its owner full access to every directory: restored
/// directories carry the snapshot's modes, and one without write or search
/// permission would keep its contents from being removed.
fn remove_all(dir: &Path) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        // Never follows a symlink: only real directories are opened up.
        let Ok(m) = fs::symlink_metadata(&d) else {
            continue;
        };
        if !m.is_dir() {
            continue;
        }
        if m.permissions().mode() & 0o700 != 0o700 {
            let _ = fs::set_permissions(&d, fs::Permissions::from_mode(0o700));
        }
        if let Ok(entries) = fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_non_empty_target_and_removes_what_it_made() {
        let base = tempfile::tempdir().unwrap();
        let full = base.path().join("full");
        fs::create_dir(&full).unwrap();
        fs::write(full.join("keep"), "x").unwrap();
        assert!(Scratch::create(Some(&full)).is_err());
        assert!(full.join("keep").exists());

        let new = base.path().join("new");
        let s = Scratch::create(Some(&new)).unwrap();
        let locked = s.path().join("a/b");
        fs::create_dir_all(&locked).unwrap();
        fs::write(locked.join("f"), "x").unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(s.path().join("a"), fs::Permissions::from_mode(0o000)).unwrap();
        s.remove().unwrap();
        assert!(!new.exists(), "the target it made is gone too");

        let empty = base.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let s = Scratch::create(Some(&empty)).unwrap();
        let inner = s.path().to_path_buf();
        drop(s);
        assert!(!inner.exists());
        assert!(empty.is_dir(), "a target it didn't make stays");
    }
}
