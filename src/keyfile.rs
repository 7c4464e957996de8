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

use crate::crypto::{self, COMMITMENT_LEN, KdfParams, MASTER_KEY_LEN, MasterKey, SessionKey};
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
    /// Commitment to the wrapping key (`crypto::key_commitment`). Written in every
    /// new key file; absent in those written before it existed, which the tag
    /// alone then decides (format-spec §9).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub commitment: Option<[u8; COMMITMENT_LEN]>,
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
            commitment: Some(crypto::key_commitment(&kek)),
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

    /// `Ok(None)` when the password is not this key's: its commitment (checked
    /// first, in constant time) or else its tag doesn't verify. `Err` for a key
    /// file that belongs to another repository. A key that unwraps may still not
    /// be this repository's (a planted one): the config decides that.
    pub fn unwrap_key(
        &self,
        password: &[u8],
        id: &KeyId,
        repo_id: &RepoId,
    ) -> Result<Option<MasterKey>> {
        self.check_repo(id, repo_id)?;
        let kek = crypto::derive_wrapping_key(password, &self.kdf)?;
        if let Some(commitment) = &self.commitment {
            if !crypto::commitment_matches(&kek, commitment) {
                return Ok(None);
            }
        }
        let aad = format::aad(repo_id, SealKind::MasterKey, None);
        let Some(plain) = SessionKey::from_raw(&kek).try_open(&aad, &self.wrapped) else {
            return Ok(None);
        };
        let plain = Zeroizing::new(plain);
        let arr: &[u8; MASTER_KEY_LEN] = plain.as_slice().try_into().map_err(|_| {
            Error::corrupt(format!("key file {id}"), "master key has the wrong length")
        })?;
        Ok(Some(MasterKey::from_bytes(arr)))
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

    /// Issue #10, item 5: a key file commits to its wrapping key. One whose
    /// commitment doesn't match doesn't open even though its tag verifies; one
    /// without a commitment (written before it existed) is decided by the tag.
    #[test]
    fn commitment_is_written_and_checked_before_the_tag() {
        let key = MasterKey::generate().unwrap();
        let repo = RepoId([1; 32]);
        let kf = KeyFile::create(&key, repo, b"secret", KdfParams::new(64, 1).unwrap()).unwrap();
        let kek = crypto::derive_wrapping_key(b"secret", &kf.kdf).unwrap();
        assert_eq!(kf.commitment, Some(crypto::key_commitment(&kek)));
        let id = KeyId([0; 32]);

        let mut altered = kf.clone();
        if let Some(c) = altered.commitment.as_mut() {
            c[31] ^= 1;
        }
        let bytes = altered.encode();
        let back = KeyFile::decode(&bytes, &id).unwrap();
        assert!(back.unwrap_key(b"secret", &id, &repo).unwrap().is_none());

        let mut legacy = kf.clone();
        legacy.commitment = None;
        let bytes = legacy.encode();
        let back = KeyFile::decode(&bytes, &id).unwrap();
        assert!(back.commitment.is_none());
        let got = back.unwrap_key(b"secret", &id, &repo).unwrap().unwrap();
        assert_eq!(*got.to_bytes(), *key.to_bytes());
        assert!(back.unwrap_key(b"wrong", &id, &repo).unwrap().is_none());
    }

    /// A commitment that isn't 32 bytes makes the key file corrupt.
    #[test]
    fn commitment_of_the_wrong_length_is_corrupt() {
        #[derive(Serialize)]
        struct Short<'a> {
            #[serde(flatten)]
            kf: &'a KeyFile,
            #[serde(with = "serde_bytes")]
            commitment: &'a [u8],
        }
        let key = MasterKey::generate().unwrap();
        let mut kf =
            KeyFile::create(&key, RepoId([1; 32]), b"pw", KdfParams::new(64, 1).unwrap()).unwrap();
        kf.commitment = None;
        let mut bytes = Vec::new();
        format::write_prefix(&mut bytes, FileKind::Key);
        bytes.extend_from_slice(
            &rmp_serde::to_vec_named(&Short {
                kf: &kf,
                commitment: &[7; 31],
            })
            .unwrap(),
        );
        let err = KeyFile::decode(&bytes, &KeyId([0; 32])).err().unwrap();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
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
