//! The key files of an opened repository (format-spec/README.md, "Key files"):
//! listing them, adding one for a new password or for a generated secret, removing
//! one, and the order in which `open` tries them. Every key file wraps the same
//! master key, so none of this touches the data.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

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
        .filter_map(|e| KeyId::from_hex(&e.name).ok())
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

/// How much work deriving with `kdf` takes, relative to other parameters: Argon2's
/// time grows with memory × passes.
pub fn kdf_cost(kdf: &KdfParams) -> u64 {
    u64::from(kdf.memory_kib) * u64::from(kdf.iterations)
}

/// Puts key files in the order `open` tries them: cheapest derivation first, ties
/// by id. A generated key then opens at once instead of waiting behind a password
/// key's second of Argon2, and a password pays at most the few milliseconds of the
/// cheap keys tried before its own.
pub fn sort_for_opening(keys: &mut [(KeyId, KeyFile)]) {
    keys.sort_by_key(|(id, kf)| (kdf_cost(&kf.kdf), *id));
}

/// Parameters no more expensive than a generated secret's. They don't stretch a
/// password at all, so they are fit only for a high-entropy secret.
pub fn is_minimal(kdf: &KdfParams) -> bool {
    kdf_cost(kdf) <= u64::from(GENERATED_KDF_MEMORY_KIB) * u64::from(GENERATED_KDF_ITERATIONS)
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
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        let bytes = KeyFile::create(self.key(), *self.repo_id(), password, kdf)?.encode();
        let id = KeyId::of_stored(&bytes);
        self.backend().write(FileType::Key, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    /// Creates `secret_file` (never overwriting anything) holding a fresh random
    /// secret as 64 hex digits and a newline, readable by its owner only, then adds
    /// a key file with minimal KDF parameters whose password is those hex digits.
    /// The secret is durable before the key file exists, so a crash can leave a
    /// secret that opens nothing but never a key whose secret is lost.
    pub fn add_generated_key(&self, secret_file: &Path) -> Result<KeyId> {
        let secret = write_secret_file(secret_file)?;
        let added = KdfParams::new(GENERATED_KDF_MEMORY_KIB, GENERATED_KDF_ITERATIONS)
            .and_then(|kdf| self.add_key(secret.as_bytes(), kdf));
        match added {
            Ok(id) => Ok(id),
            // A secret file that opens nothing would only mislead.
            Err(e) => match fs::remove_file(secret_file) {
                Ok(()) => Err(e),
                Err(rm) => Err(Error::invalid(format!(
                    "{e}; the secret file {} opens nothing and could not be removed: {rm}",
                    secret_file.display()
                ))),
            },
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
    /// repository is refused, so the last key can never go.
    pub fn remove_key(&self, prefix: &str) -> Result<KeyId> {
        let id = self.resolve_key(prefix)?;
        if id == self.key_id() {
            return Err(Error::RemoveCurrentKey(id));
        }
        self.backend().remove(FileType::Key, &id.to_hex())?;
        Ok(id)
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
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .at(dir)?;
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

    fn repo_with(dir: &Path, password: &[u8], kdf: KdfParams) -> Repository {
        let opts = InitOptions {
            kdf: Some(kdf),
            ..Default::default()
        };
        Repository::init(
            Arc::new(LocalBackend::new(dir.join("repo"))),
            password,
            opts,
        )
        .unwrap()
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
        let mut keys = vec![
            (KeyId([1; 32]), key_file(64 * 1024, 3)),
            (KeyId([9; 32]), key_file(1024, 1)),
            (KeyId([2; 32]), key_file(8, 64)),
            (KeyId([3; 32]), key_file(1024, 1)),
            (KeyId([0; 32]), key_file(2048, 1)),
        ];
        sort_for_opening(&mut keys);
        let order: Vec<u8> = keys.iter().map(|(id, _)| id.0[0]).collect();
        assert_eq!(order, [2, 3, 9, 0, 1]);
        assert!(is_minimal(&keys[1].1.kdf));
        assert!(!is_minimal(&keys[3].1.kdf));
    }

    /// The password key is expensive; the generated key, tried first, opens the
    /// repository, and the password still does too.
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
}
