//! The key files of an opened repository (format-spec/README.md, "Key files"):
//! listing them, adding one for a new password or for a generated secret, removing
//! one, and the order in which `open` tries them. Every key file wraps the same
//! master key, so none of this touches the data.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::backend::local::sync_dir;
use crate::backend::{Backend, FileType};
use crate::crypto::{self, KdfParams};
use crate::error::{Error, IoContext, Result};
use crate::id::KeyId;
use crate::keyfile::{KEY_FILE_MAX_LEN, KeyFile};
use crate::repository::{Repository, check_name};

/// Argon2 parameters for the key file of a generated secret. The secret already
/// has 256 bits of entropy, so stretching it would gain nothing; cheap derivation
/// lets an unattended backup open the repository in about a millisecond.
pub const GENERATED_KDF_MEMORY_KIB: u32 = 1024;
pub const GENERATED_KDF_ITERATIONS: u32 = 1;
/// Random bytes in a generated secret, written as twice as many hex digits.
pub const GENERATED_SECRET_LEN: usize = 32;

/// One file under `keys/`: decoded, or the reason it could not be.
pub struct KeyEntry {
    pub id: KeyId,
    /// This key opened the repository.
    pub current: bool,
    pub file: Result<KeyFile>,
}

/// Ids of the files under `keys/`. Other names are not key files (§2 of the spec).
pub fn key_ids(backend: &dyn Backend) -> Result<Vec<KeyId>> {
    Ok(backend
        .list(FileType::Key)?
        .iter()
        .filter_map(|e| KeyId::from_name(&e.name).ok())
        .collect())
}

/// Reads one key file, checks its name against its content hash and decodes it.
/// Derives nothing: the KDF parameters are checked against the caps here.
pub fn load_key_file(backend: &dyn Backend, id: &KeyId) -> Result<KeyFile> {
    let name = id.to_hex();
    let bytes = backend.read(FileType::Key, &name, KEY_FILE_MAX_LEN)?;
    check_name(&bytes, &name, "key file")?;
    KeyFile::decode(&bytes, id)
}

/// Puts key files in the order `open` tries them: cheapest derivation first, ties
/// by id. A generated key then opens at once instead of waiting behind a password
/// key's second of Argon2, and a password pays at most the few milliseconds of the
/// cheap keys tried before its own.
pub fn sort_for_opening(keys: &mut [(KeyId, u64)]) {
    keys.sort_by_key(|&(id, cost)| (cost, id));
}

/// Parameters no more expensive than a generated secret's. They don't stretch a
/// password at all, so they are fit only for a high-entropy secret.
pub fn is_minimal(kdf: &KdfParams) -> bool {
    kdf.cost() <= u64::from(GENERATED_KDF_MEMORY_KIB) * u64::from(GENERATED_KDF_ITERATIONS)
}

impl Repository {
    /// Every file under `keys/`, with the ones that can't be read or decoded (or
    /// that belong to another repository) carrying their error.
    pub fn list_keys(&self) -> Result<Vec<KeyEntry>> {
        Ok(key_ids(self.backend())?
            .into_iter()
            .map(|id| KeyEntry {
                id,
                current: id == self.key_id(),
                file: load_key_file(self.backend(), &id)
                    .and_then(|kf| kf.check_repo(&id, self.repo_id()).map(|()| kf)),
            })
            .collect())
    }

    /// Writes a new key file wrapping this repository's master key under
    /// `password`. The password that opened the repository keeps working.
    pub fn add_key(self: &Arc<Self>, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        let _lock = crate::lock::acquire(self, false)?;
        let (id, bytes) = self.new_key_file(password, kdf)?;
        self.backend().write(FileType::Key, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    fn new_key_file(&self, password: &[u8], kdf: KdfParams) -> Result<(KeyId, Vec<u8>)> {
        let bytes = KeyFile::create(self.key(), *self.repo_id(), password, kdf)?.encode();
        Ok((KeyId::of_stored(&bytes), bytes))
    }

    /// Creates `secret_file` (never overwriting anything) holding a fresh random
    /// secret as 64 hex digits and a newline, readable by its owner only, then adds
    /// a key file with minimal KDF parameters whose password is those hex digits.
    /// The secret is durable before the key file exists, so a crash can leave a
    /// secret that opens nothing but never a key whose secret is lost.
    pub fn add_generated_key(self: &Arc<Self>, secret_file: &Path) -> Result<KeyId> {
        let _lock = crate::lock::acquire(self, false)?;
        let kdf = KdfParams::new(GENERATED_KDF_MEMORY_KIB, GENERATED_KDF_ITERATIONS)?;
        let secret = write_secret_file(secret_file)?;
        let (id, bytes) = match self.new_key_file(secret.as_bytes(), kdf) {
            Ok(k) => k,
            Err(e) => return Err(discard_secret(secret_file, e)),
        };
        match self.backend().write(FileType::Key, &id.to_hex(), &bytes) {
            Ok(()) => Ok(id),
            // The write can fail after the key file is in place (syncing its
            // directory, say): then the secret opens the repository and must stay.
            Err(e) if load_key_file(self.backend(), &id).is_ok() => Err(Error::invalid(format!(
                "{e}; the key file {id} was written all the same, so keep the secret file {}: \
                 it opens the repository",
                secret_file.display()
            ))),
            // A secret file that opens nothing would only mislead.
            Err(e) => Err(discard_secret(secret_file, e)),
        }
    }

    /// The key whose id starts with `prefix` (case-insensitive), if exactly one does.
    pub fn resolve_key(&self, prefix: &str) -> Result<KeyId> {
        let lower = prefix.to_ascii_lowercase();
        if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "{prefix:?} is not a key id or a prefix of one (hex digits, as `cairn key list` shows)"
            )));
        }
        let hits: Vec<KeyId> = key_ids(self.backend())?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&lower))
            .collect();
        let repo = self.backend().location();
        match hits.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::UnknownKey {
                repo,
                prefix: prefix.to_string(),
            }),
            more => Err(Error::AmbiguousKey {
                repo,
                prefix: prefix.to_string(),
                count: more.len(),
            }),
        }
    }

    /// Deletes the key file whose id starts with `prefix`. The key that opened the
    /// repository is refused, and under the exclusive lock the key that opened it
    /// must still be there and intact, so the last working key can never go (not
    /// even when two removals race, each opened with the key the other removes).
    pub fn remove_key(self: &Arc<Self>, prefix: &str) -> Result<KeyId> {
        let _lock = crate::lock::acquire(self, true)?;
        let id = self.resolve_key(prefix)?;
        let current = self.key_id();
        if id == current {
            return Err(Error::RemoveCurrentKey(id));
        }
        load_key_file(self.backend(), &current)
            .and_then(|kf| kf.check_repo(&current, self.repo_id()))
            .map_err(|e| {
                Error::invalid(format!(
                    "the key file {current} that opened the repository can no longer be read \
                     ({e}), so key {id} is kept: it may be the last one that works"
                ))
            })?;
        self.backend().remove(FileType::Key, &id.to_hex())?;
        Ok(id)
    }
}

/// Whether `password` opening a key with parameters `kdf` is a generated secret
/// (`key add --generate`): 64 hex digits, and a derivation no dearer than a
/// generated key's. A typed password is neither.
pub fn is_generated_secret(password: &[u8], kdf: &KdfParams) -> bool {
    password.len() == 2 * GENERATED_SECRET_LEN
        && password.iter().all(u8::is_ascii_hexdigit)
        && is_minimal(kdf)
}

impl Repository {
    /// Replaces the key that opened the repository (with `current`) by a new key
    /// for `password`; returns (new key, old key). Under the exclusive lock, in
    /// an order that never leaves this user without a working key: the new key
    /// file is written, read back and opened with `password` (it must unwrap this
    /// repository's master key), and only then is the old one deleted. Killed in
    /// between, both passwords work. Refuses a generated secret's key: the secret
    /// file is what unattended jobs use, and a password can't replace it there.
    pub fn change_password(
        self: &Arc<Self>,
        current: &[u8],
        password: &[u8],
        kdf: KdfParams,
    ) -> Result<(KeyId, KeyId)> {
        let lock = crate::lock::acquire(self, true)?;
        let old = self.key_id();
        let old_file = load_key_file(self.backend(), &old)
            .and_then(|kf| kf.check_repo(&old, self.repo_id()).map(|()| kf))
            .map_err(|e| {
                Error::invalid(format!(
                    "the key file {old} that opened the repository can no longer be read ({e}); \
                     nothing was changed"
                ))
            })?;
        if is_generated_secret(current, &old_file.kdf) {
            return Err(Error::invalid(format!(
                "key {} was opened with a generated secret file, which has no password to \
                 change; to replace the secret, `cairn key add --generate NEW_FILE`, switch \
                 to it, then `cairn key remove {}`; to add a password, `cairn key add`",
                old.short(),
                old.short()
            )));
        }
        let (id, bytes) = self.new_key_file(password, kdf)?;
        self.backend().write(FileType::Key, &id.to_hex(), &bytes)?;
        let opens = load_key_file(self.backend(), &id)
            .and_then(|kf| kf.unwrap_key(password, &id, self.repo_id()));
        let verified = match opens {
            Ok(Some(key)) if *key.to_bytes() == *self.key().to_bytes() => Ok(()),
            Ok(_) => Err("the new password doesn't open it".to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = verified {
            let removed = match self.backend().remove(FileType::Key, &id.to_hex()) {
                Ok(()) => "it was removed again".to_string(),
                Err(e) => format!("removing it failed too ({e}): `cairn key remove {id}`"),
            };
            return Err(Error::invalid(format!(
                "the new key file {id} did not check out when read back ({why}); {removed}; \
                 the old password still works"
            )));
        }
        lock.still_valid()?;
        self.backend().remove(FileType::Key, &old.to_hex())?;
        Ok((id, old))
    }
}

/// Removes a secret file whose key could not be written, and returns `e`.
fn discard_secret(secret_file: &Path, e: Error) -> Error {
    match fs::remove_file(secret_file) {
        Ok(()) => e,
        Err(rm) => Error::invalid(format!(
            "{e}; the secret file {} opens nothing and could not be removed: {rm}",
            secret_file.display()
        )),
    }
}

/// Creates `path` with mode 0600 (its missing parent directories with 0700) and a
/// new secret in it, durably. Returns the secret without its newline.
fn write_secret_file(path: &Path) -> Result<Zeroizing<String>> {
    let mut raw = Zeroizing::new([0u8; GENERATED_SECRET_LEN]);
    crypto::random_bytes(&mut raw[..])?;
    let secret = Zeroizing::new(hex::encode(&raw[..]));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Directories created here must be durable too, each in its parent.
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .at(dir)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    let mut f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Error::SecretFileExists(path.to_path_buf()));
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut text = Zeroizing::new(Vec::with_capacity(secret.len() + 1));
    text.extend_from_slice(secret.as_bytes());
    text.push(b'\n');
    let written = f
        .write_all(&text)
        .and_then(|()| f.sync_all())
        .at(path)
        .and_then(|()| sync_dir(dir));
    if let Err(e) = written {
        drop(f);
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use super::*;
    use crate::backend::LocalBackend;
    use crate::repository::InitOptions;

    fn repo_with(dir: &Path, password: &[u8], kdf: KdfParams) -> Arc<Repository> {
        let opts = InitOptions {
            kdf: Some(kdf),
            ..Default::default()
        };
        Arc::new(
            Repository::init(
                Arc::new(LocalBackend::new(dir.join("repo"))),
                password,
                opts,
            )
            .unwrap(),
        )
    }

    fn reopen(dir: &Path, password: &[u8]) -> Result<Repository> {
        Repository::open(Arc::new(LocalBackend::new(dir.join("repo"))), password)
    }

    fn key_file(memory_kib: u32, iterations: u32) -> KeyFile {
        let key = crypto::MasterKey::generate().unwrap();
        let kdf = KdfParams::new(memory_kib, iterations).unwrap();
        KeyFile::create(&key, crate::id::RepoId([1; 32]), b"pw", kdf).unwrap()
    }

    #[test]
    fn opening_order_is_cheapest_kdf_first_then_id() {
        let files = [
            (KeyId([1; 32]), key_file(64 * 1024, 3)),
            (KeyId([9; 32]), key_file(1024, 1)),
            (KeyId([2; 32]), key_file(8, 16)),
            (KeyId([3; 32]), key_file(1024, 1)),
            (KeyId([0; 32]), key_file(2048, 1)),
        ];
        let mut keys: Vec<(KeyId, u64)> =
            files.iter().map(|(id, kf)| (*id, kf.kdf.cost())).collect();
        sort_for_opening(&mut keys);
        let order: Vec<u8> = keys.iter().map(|(id, _)| id.0[0]).collect();
        assert_eq!(order, [2, 3, 9, 0, 1]);
        assert!(is_minimal(&files[1].1.kdf));
        assert!(!is_minimal(&files[4].1.kdf));
    }

    /// The password key is expensive; the generated key, tried first, opens the
    /// repository, and the password still does too.
    /// The key that opened the repository is replaced: the old password fails,
    /// the new one opens the same master key, other keys are untouched; a
    /// generated secret's key is refused and left as it is.
    #[test]
    fn a_password_change_replaces_only_the_opening_key() {
        let dir = tempfile::tempdir().unwrap();
        let cheap = KdfParams::new(64, 1).unwrap();
        let repo = repo_with(dir.path(), b"old", cheap.clone());
        let other = repo.add_key(b"other", cheap.clone()).unwrap();
        let (new, old) = repo.change_password(b"old", b"new", cheap.clone()).unwrap();
        assert_eq!(old, repo.key_id());
        assert!(matches!(
            reopen(dir.path(), b"old"),
            Err(Error::WrongPassword { .. })
        ));
        let reopened = reopen(dir.path(), b"new").unwrap();
        assert_eq!(reopened.key_id(), new);
        assert_eq!(*reopened.key().to_bytes(), *repo.key().to_bytes());
        assert_eq!(reopen(dir.path(), b"other").unwrap().key_id(), other);
        assert_eq!(key_ids(repo.backend()).unwrap().len(), 2);

        let secret_path = dir.path().join("repo.key");
        Arc::new(reopened).add_generated_key(&secret_path).unwrap();
        let text = fs::read_to_string(&secret_path).unwrap();
        let secret = text.trim_end().as_bytes();
        let by_secret = Arc::new(reopen(dir.path(), secret).unwrap());
        let refused = by_secret.change_password(secret, b"typed", cheap);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("generated secret")),
            "{:?}",
            refused.err()
        );
        assert_eq!(key_ids(repo.backend()).unwrap().len(), 3);
        assert!(!is_generated_secret(
            b"old",
            &KdfParams::new(64, 1).unwrap()
        ));
    }

    #[test]
    fn generated_key_opens_beside_an_expensive_password_key() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with(dir.path(), b"pw", KdfParams::new(64 * 1024, 3).unwrap());
        let password_key = repo.key_id();
        let secret_path = dir.path().join("conf/dir/repo.key");
        let generated = repo.add_generated_key(&secret_path).unwrap();

        let text = fs::read_to_string(&secret_path).unwrap();
        let secret = text.strip_suffix('\n').unwrap();
        assert_eq!(secret.len(), 2 * GENERATED_SECRET_LEN);
        assert!(
            secret
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        );
        let mode = fs::metadata(&secret_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let parent = fs::metadata(dir.path().join("conf")).unwrap().permissions();
        assert_eq!(parent.mode() & 0o777, 0o700);

        let by_secret = reopen(dir.path(), secret.as_bytes()).unwrap();
        assert_eq!(by_secret.key_id(), generated);
        assert_eq!(*by_secret.key().to_bytes(), *repo.key().to_bytes());
        assert_eq!(reopen(dir.path(), b"pw").unwrap().key_id(), password_key);

        let listed = repo.list_keys().unwrap();
        assert_eq!(listed.len(), 2);
        let gen_entry = listed.iter().find(|k| k.id == generated).unwrap();
        assert!(is_minimal(&gen_entry.file.as_ref().unwrap().kdf));
        assert!(listed.iter().any(|k| k.id == password_key && k.current));
    }

    #[test]
    fn generate_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with(dir.path(), b"pw", KdfParams::new(8, 1).unwrap());
        let path = dir.path().join("taken");
        fs::write(&path, "keep me").unwrap();
        let err = repo.add_generated_key(&path).unwrap_err();
        assert!(matches!(err, Error::SecretFileExists(_)), "{err}");
        assert!(err.to_string().contains("taken"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "keep me");
        assert_eq!(repo.list_keys().unwrap().len(), 1);
    }

    #[test]
    fn remove_resolves_prefixes_and_refuses_the_current_key() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with(dir.path(), b"pw", KdfParams::new(8, 1).unwrap());
        let current = repo.key_id();
        assert!(matches!(
            repo.remove_key(&current.to_hex()[..10]),
            Err(Error::RemoveCurrentKey(id)) if id == current
        ));
        // Seventeen keys: two of them share a first hex digit.
        let mut ids = vec![current];
        for i in 0..16u8 {
            let kdf = KdfParams::new(8, 1).unwrap();
            ids.push(repo.add_key(&[b'k', i], kdf).unwrap());
        }
        let digit = (0..16)
            .map(|d| format!("{d:x}"))
            .find(|d| ids.iter().filter(|id| id.to_hex().starts_with(d)).count() > 1)
            .unwrap();
        assert!(matches!(
            repo.resolve_key(&digit),
            Err(Error::AmbiguousKey { count, .. }) if count > 1
        ));
        assert!(repo.resolve_key("").is_err());
        assert!(repo.resolve_key("xyz").is_err());
        let other = ids[5];
        let prefix = other.to_hex()[..16].to_ascii_uppercase();
        assert_eq!(repo.remove_key(&prefix).unwrap(), other);
        assert!(matches!(
            repo.resolve_key(&prefix),
            Err(Error::UnknownKey { .. })
        ));
        assert!(matches!(
            reopen(dir.path(), &[b'k', 4]),
            Err(Error::WrongPassword { keys: 16, .. })
        ));
        assert_eq!(reopen(dir.path(), &[b'k', 5]).unwrap().key_id(), ids[6]);
    }

    /// Opened with key A, whose file has since gone (another process removed it):
    /// removing key B is refused, since B may be the last key that works.
    #[test]
    fn remove_keeps_the_other_key_when_the_current_one_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with(dir.path(), b"a", KdfParams::new(8, 1).unwrap());
        let a = repo.key_id();
        let b = repo.add_key(b"b", KdfParams::new(8, 1).unwrap()).unwrap();
        fs::remove_file(dir.path().join("repo/keys").join(a.to_hex())).unwrap();
        let err = repo.remove_key(&b.to_hex()).unwrap_err();
        assert!(err.to_string().contains(&a.to_hex()), "{err}");
        assert_eq!(reopen(dir.path(), b"b").unwrap().key_id(), b);
    }

    /// A cheap key file that unwraps under the password but holds another master
    /// key (planted, or from another repository) is passed over, not fatal; alone,
    /// it reads exactly as a wrong password (issue #10, item 5).
    #[test]
    fn a_key_that_does_not_open_the_config_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with(dir.path(), b"pw", KdfParams::new(64, 2).unwrap());
        let stranger = crypto::MasterKey::generate().unwrap();
        let planted = KeyFile::create(
            &stranger,
            *repo.repo_id(),
            b"pw",
            KdfParams::new(8, 1).unwrap(),
        )
        .unwrap()
        .encode();
        let id = KeyId::of_stored(&planted);
        fs::write(dir.path().join("repo/keys").join(id.to_hex()), &planted).unwrap();
        assert_eq!(reopen(dir.path(), b"pw").unwrap().key_id(), repo.key_id());
        // Alone, it is reported as a wrong password, like no key unwrapping.
        fs::remove_file(dir.path().join("repo/keys").join(repo.key_id().to_hex())).unwrap();
        let planted_err = reopen(dir.path(), b"pw").err().unwrap();
        assert!(
            matches!(
                planted_err,
                Error::WrongPassword {
                    keys: 1,
                    unreadable: 0,
                    ..
                }
            ),
            "{planted_err}"
        );
        let wrong_err = reopen(dir.path(), b"not it").err().unwrap();
        assert_eq!(planted_err.to_string(), wrong_err.to_string());
    }
}
