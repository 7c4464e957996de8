//! Key files under `keys/` (format-spec/README.md, "Key files"): the master key
//! wrapped by a key derived from a password with Argon2id.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{self, KdfParams, MASTER_KEY_LEN, MasterKey, SessionKey};
use crate::error::{Error, Result};
use crate::format::{self, FileKind, SealKind};
use crate::id::{KeyId, RepoId};

pub const KEY_FILE_MAX_LEN: u64 = 64 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    pub repo_id: RepoId,
    /// RFC 3339 creation time, informational.
    pub created: String,
    pub hostname: String,
    pub username: String,
    pub kdf: KdfParams,
    /// nonce || AES-256-GCM-SIV(master key) || tag.
    #[serde(with = "serde_bytes")]
    pub wrapped: Vec<u8>,
}

impl KeyFile {
    pub fn create(
        key: &MasterKey,
        repo_id: RepoId,
        password: &[u8],
        kdf: KdfParams,
    ) -> Result<Self> {
        let kek = crypto::derive_wrapping_key(password, &kdf)?;
        let wrapped = SessionKey::from_raw(&kek).seal(
            &format::aad(&repo_id, SealKind::MasterKey, None),
            &key.to_bytes()[..],
        )?;
        Ok(Self {
            repo_id,
            created: crate::snapshot::now_rfc3339(),
            hostname: crate::snapshot::hostname(),
            username: crate::snapshot::username(),
            kdf,
            wrapped,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        format::write_prefix(&mut out, FileKind::Key);
        out.extend_from_slice(&format::to_msgpack(self));
        out
    }

    /// Parses and validates without deriving anything: the KDF parameters are
    /// checked against the caps here, before any memory is allocated for them.
    pub fn decode(bytes: &[u8], id: &KeyId) -> Result<Self> {
        let what = || format!("key file {id}");
        let rest = format::check_prefix(bytes, FileKind::Key, &what)?;
        let kf: KeyFile = format::from_msgpack(rest, &what)?;
        kf.kdf.validate(&what())?;
        if kf.wrapped.len() != MASTER_KEY_LEN + crypto::SEAL_OVERHEAD {
            return Err(Error::corrupt(
                what(),
                "wrapped master key has the wrong length",
            ));
        }
        Ok(kf)
    }

    /// A key file that names another repository is corrupt here.
    pub fn check_repo(&self, id: &KeyId, repo_id: &RepoId) -> Result<()> {
        if &self.repo_id != repo_id {
            return Err(Error::corrupt(
                format!("key file {id}"),
                format!("it belongs to repository {}, not {}", self.repo_id, repo_id),
            ));
        }
        Ok(())
    }

    /// `Ok(None)` when the password is not this key's; `Err` for a key file that
    /// belongs to another repository.
    pub fn unwrap_key(
        &self,
        password: &[u8],
        id: &KeyId,
        repo_id: &RepoId,
    ) -> Result<Option<MasterKey>> {
        self.check_repo(id, repo_id)?;
        let kek = crypto::derive_wrapping_key(password, &self.kdf)?;
        let aad = format::aad(repo_id, SealKind::MasterKey, None);
        match SessionKey::from_raw(&kek).open(&aad, &self.wrapped, &|| String::new()) {
            Ok(plain) => {
                let plain = Zeroizing::new(plain);
                let arr: &[u8; MASTER_KEY_LEN] = plain.as_slice().try_into().map_err(|_| {
                    Error::corrupt(format!("key file {id}"), "master key has the wrong length")
                })?;
                Ok(Some(MasterKey::from_bytes(arr)))
            }
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_wrong_password() {
        let key = MasterKey::generate().unwrap();
        let repo = RepoId([1; 32]);
        let kf = KeyFile::create(&key, repo, b"secret", KdfParams::new(64, 1).unwrap()).unwrap();
        let bytes = kf.encode();
        let id = KeyId::of_stored(&bytes);
        let back = KeyFile::decode(&bytes, &id).unwrap();
        let got = back.unwrap_key(b"secret", &id, &repo).unwrap().unwrap();
        assert_eq!(*got.to_bytes(), *key.to_bytes());
        assert!(back.unwrap_key(b"wrong", &id, &repo).unwrap().is_none());
        assert!(back.unwrap_key(b"secret", &id, &RepoId([2; 32])).is_err());
    }

    #[test]
    fn oversized_kdf_params_are_refused_at_decode() {
        let key = MasterKey::generate().unwrap();
        let mut kf =
            KeyFile::create(&key, RepoId([1; 32]), b"pw", KdfParams::new(64, 1).unwrap()).unwrap();
        kf.kdf.memory_kib = u32::MAX;
        let bytes = kf.encode();
        assert!(KeyFile::decode(&bytes, &KeyId::of_stored(&bytes)).is_err());
    }
}
