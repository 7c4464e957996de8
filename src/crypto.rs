//! Key hierarchy and authenticated encryption (format-spec/README.md, "Keys" and
//! "Encryption").
//!
//! A random [`MasterKey`] holds the encryption key, the blob-id key and the chunker
//! seed. Each stored file (or pack) draws a random 32-byte session id; its objects are
//! sealed with AES-256-GCM-SIV under `derive_key(SUBKEY_CONTEXT, enc_key || session)`
//! and a fresh random 96-bit nonce. Fresh subkeys per file keep the number of
//! messages per key far below the nonce-collision bound however large the repository
//! grows.

use aes_gcm_siv::aead::{Aead, AeadInOut, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};
use crate::id::BlobId;

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object adds to its plaintext: nonce in front, tag behind.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
pub const SESSION_ID_LEN: usize = 32;
pub const MASTER_KEY_LEN: usize = 72;

const SUBKEY_CONTEXT: &str = "cairn 2026-11-24 v1 session subkey";
const COMMITMENT_CONTEXT: &str = "cairn 2026-11-29 v1 key commitment";
pub const COMMITMENT_LEN: usize = 32;

/// The repository's secrets. Not `Debug`, not `Clone`: it is zeroized on drop and
/// never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    enc_key: [u8; 32],
    id_key: [u8; 32],
    chunker_seed: u64,
}

impl MasterKey {
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        random_bytes(&mut bytes[..])?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A new key for a repository that shares blob ids and chunk boundaries with
    /// `other` (so that `copy` between the two moves blobs as they are), but has its
    /// own encryption key.
    pub fn generate_sharing_ids_with(other: &MasterKey) -> Result<Self> {
        let mut key = Self::generate()?;
        key.id_key = other.id_key;
        key.chunker_seed = other.chunker_seed;
        Ok(key)
    }

    /// Layout: enc_key (32) || id_key (32) || chunker_seed (8, little endian).
    pub fn from_bytes(b: &[u8; MASTER_KEY_LEN]) -> Self {
        let mut enc_key = [0u8; 32];
        let mut id_key = [0u8; 32];
        let mut seed = [0u8; 8];
        enc_key.copy_from_slice(&b[0..32]);
        id_key.copy_from_slice(&b[32..64]);
        seed.copy_from_slice(&b[64..72]);
        Self {
            enc_key,
            id_key,
            chunker_seed: u64::from_le_bytes(seed),
        }
    }

    pub fn to_bytes(&self) -> Zeroizing<[u8; MASTER_KEY_LEN]> {
        let mut out = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        out[0..32].copy_from_slice(&self.enc_key);
        out[32..64].copy_from_slice(&self.id_key);
        out[64..72].copy_from_slice(&self.chunker_seed.to_le_bytes());
        out
    }

    /// Keyed BLAKE3 of a blob's plaintext. Keyed, so that read access to the
    /// repository does not reveal whether a known file is stored in it.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    pub fn session(&self, session_id: &[u8; SESSION_ID_LEN]) -> SessionKey {
        let mut material = Zeroizing::new([0u8; 32 + SESSION_ID_LEN]);
        material[..32].copy_from_slice(&self.enc_key);
        material[32..].copy_from_slice(session_id);
        let subkey = Zeroizing::new(blake3::derive_key(SUBKEY_CONTEXT, &material[..]));
        SessionKey {
            cipher: Aes256GcmSiv::new((&*subkey).into()),
        }
    }
}

/// AES-256-GCM-SIV under one session subkey.
pub struct SessionKey {
    cipher: Aes256GcmSiv,
}

impl SessionKey {
    /// A key used directly (the password-derived key that wraps the master key).
    pub fn from_raw(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256GcmSiv::new(key.into()),
        }
    }

    /// Returns `nonce || ciphertext || tag` with a fresh random nonce.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        self.seal_with_nonce(&nonce, aad, plaintext)
    }

    /// Deterministic sealing, for test vectors only; real writes use [`Self::seal`].
    pub fn seal_with_nonce(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let ct = self
            .cipher
            .encrypt(
                &Nonce::from(*nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::invalid("encryption failed (plaintext too large)"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Encrypts `msg` in place under `nonce` and returns the tag: the stored form is
    /// `nonce || msg || tag`, the same bytes [`Self::seal`] makes. Lets a pack seal
    /// its blobs in parallel where they lie, without copying them into one buffer.
    pub fn seal_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        msg: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .cipher
            .encrypt_inout_detached(&Nonce::from(*nonce), aad, msg.into())
            .map_err(|_| Error::invalid("encryption failed (plaintext too large)"))?;
        Ok(tag.into())
    }

    /// Verifies the tag and decrypts. `what` names the object for the error.
    pub fn open(&self, aad: &[u8], sealed: &[u8], what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Error::corrupt(
                what(),
                format!(
                    "{} bytes is too short to be an encrypted object",
                    sealed.len()
                ),
            ));
        }
        self.try_open(aad, sealed).ok_or_else(|| {
            Error::corrupt(
                what(),
                "authentication failed (the bytes were altered, or belong elsewhere)",
            )
        })
    }

    /// Verifies the tag and decrypts; `None` when the bytes don't authenticate
    /// under this key (or are too short to be a sealed object). For callers that
    /// try keys: to them a failure means "not this key", not damage.
    pub fn try_open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).ok()?;
        self.cipher.decrypt(&nonce, Payload { msg: ct, aad }).ok()
    }
}

/// A key file's commitment to its wrapping key (format-spec §9): BLAKE3
/// derive_key under its own context. AES-GCM-SIV is not key-committing (one
/// ciphertext can be made to verify under many keys); the commitment ties a key
/// file to exactly one wrapping key.
pub fn key_commitment(wrapping_key: &[u8; 32]) -> [u8; COMMITMENT_LEN] {
    blake3::derive_key(COMMITMENT_CONTEXT, wrapping_key)
}

/// Whether `commitment` is `wrapping_key`'s, compared in constant time
/// (`blake3::Hash` equality is), so that the comparison's time says nothing.
pub fn commitment_matches(wrapping_key: &[u8; 32], commitment: &[u8; COMMITMENT_LEN]) -> bool {
    blake3::Hash::from_bytes(key_commitment(wrapping_key)) == blake3::Hash::from_bytes(*commitment)
}

pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::getrandom(buf)
        .map_err(|e| Error::invalid(format!("the system random number generator failed: {e}")))
}

pub fn random_array<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    random_bytes(&mut out)?;
    Ok(out)
}

/// Argon2id parameters, stored in each key file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    #[serde(with = "serde_bytes")]
    pub salt: Vec<u8>,
}

/// Caps on Argon2 parameters (format-spec §17). Key files are attacker-controlled
/// and a planted one is derived with every password typed, so its cost is paid on
/// every attempt: the caps bound that at about 4 GiB·passes of work and 1 GiB of
/// memory, instead of letting a forged file make `open` allocate 100 GiB or spin
/// for a day. The default parameters (64 MiB, 3 passes, 4 lanes) are well
/// inside them.
pub const KDF_MAX_MEMORY_KIB: u32 = 1024 * 1024;
pub const KDF_MAX_ITERATIONS: u32 = 16;
/// Cap on memory × iterations in KiB·passes: 1 GiB × 4, or 256 MiB × 16.
pub const KDF_MAX_COST: u64 = 4 * 1024 * 1024;
pub const KDF_MAX_PARALLELISM: u32 = 16;
pub const KDF_SALT_LEN: usize = 32;
/// Defaults for a new password key: RFC 9106 §4's second recommended option
/// (64 MiB, 3 passes, 4 lanes), not the first (2 GiB). Every command that opens
/// the repository with a password pays for it, so it must stay small beside the
/// command's own time and memory; a key file (`key add --generate`) needs none.
/// The lanes are computed in parallel on the thread pool (the `argon2` crate's
/// `parallel` feature): on two cores a default key takes 0.07–0.08 s instead
/// of 0.11 s. They are stored so that any Argon2 implementation derives the
/// same key.
pub const KDF_DEFAULT_MEMORY_KIB: u32 = 64 * 1024;
pub const KDF_DEFAULT_ITERATIONS: u32 = 3;
pub const KDF_DEFAULT_LANES: u32 = 4;

const _: () = assert!(
    KDF_DEFAULT_MEMORY_KIB <= KDF_MAX_MEMORY_KIB
        && KDF_DEFAULT_ITERATIONS <= KDF_MAX_ITERATIONS
        && KDF_DEFAULT_LANES <= KDF_MAX_PARALLELISM
        && KDF_DEFAULT_MEMORY_KIB as u64 * KDF_DEFAULT_ITERATIONS as u64 <= KDF_MAX_COST,
    "the default key derivation must stay within the caps"
);

impl KdfParams {
    /// Parameters for a new key with one lane, refused (with the reason) above
    /// the caps.
    pub fn new(memory_kib: u32, iterations: u32) -> Result<Self> {
        Self::with_lanes(memory_kib, iterations, 1)
    }

    /// Parameters for a new key, refused (with the reason) above the caps.
    pub fn with_lanes(memory_kib: u32, iterations: u32, lanes: u32) -> Result<Self> {
        let p = Self {
            memory_kib,
            iterations,
            parallelism: lanes,
            salt: random_array::<KDF_SALT_LEN>()?.to_vec(),
        };
        if let Some(reason) = p.over_cap().or_else(|| p.malformed()) {
            return Err(Error::invalid(reason));
        }
        Ok(p)
    }

    /// The default for a new password key (see [`KDF_DEFAULT_MEMORY_KIB`]).
    pub fn recommended() -> Result<Self> {
        Self::with_lanes(
            KDF_DEFAULT_MEMORY_KIB,
            KDF_DEFAULT_ITERATIONS,
            KDF_DEFAULT_LANES,
        )
    }

    /// How much work deriving takes, in KiB·passes: Argon2's time grows with
    /// memory × passes, whatever the number of lanes.
    pub fn cost(&self) -> u64 {
        u64::from(self.memory_kib) * u64::from(self.iterations)
    }

    /// Checks the parameters read from `what` (a key file) before anything is
    /// derived or allocated for them.
    pub fn validate(&self, what: &str) -> Result<()> {
        if let Some(reason) = self.over_cap() {
            return Err(Error::KdfOverCap {
                what: what.to_string(),
                reason,
            });
        }
        match self.malformed() {
            Some(reason) => Err(Error::corrupt(what, reason)),
            None => Ok(()),
        }
    }

    /// Why deriving with these parameters would cost more than the caps allow.
    fn over_cap(&self) -> Option<String> {
        if self.memory_kib > KDF_MAX_MEMORY_KIB {
            return Some(format!(
                "Argon2 memory {} is above the cap of {}",
                kib_text(u64::from(self.memory_kib)),
                kib_text(u64::from(KDF_MAX_MEMORY_KIB))
            ));
        }
        if self.iterations > KDF_MAX_ITERATIONS {
            return Some(format!(
                "{} Argon2 iterations are above the cap of {KDF_MAX_ITERATIONS}",
                self.iterations
            ));
        }
        if self.cost() > KDF_MAX_COST {
            return Some(format!(
                "Argon2 memory × iterations = {} × {} = {}·passes is above the cap of {}·passes \
                 (1 GiB × 4, or 256 MiB × 16)",
                kib_text(u64::from(self.memory_kib)),
                self.iterations,
                kib_text(self.cost()),
                kib_text(KDF_MAX_COST)
            ));
        }
        if self.parallelism > KDF_MAX_PARALLELISM {
            return Some(format!(
                "{} Argon2 lanes are above the cap of {KDF_MAX_PARALLELISM}",
                self.parallelism
            ));
        }
        None
    }

    /// What makes these parameters invalid whatever the caps.
    fn malformed(&self) -> Option<String> {
        if self.iterations == 0 {
            return Some("Argon2 iterations must be at least 1".into());
        }
        if self.parallelism == 0 {
            return Some("Argon2 parallelism must be at least 1".into());
        }
        if u64::from(self.memory_kib) < 8 * u64::from(self.parallelism) {
            return Some(format!(
                "Argon2 memory {} KiB is below 8 KiB per lane",
                self.memory_kib
            ));
        }
        if self.salt.len() != KDF_SALT_LEN {
            return Some(format!(
                "salt is {} bytes, expected {}",
                self.salt.len(),
                KDF_SALT_LEN
            ));
        }
        None
    }
}

/// `1 GiB`, `256 MiB`, `1025 KiB (1.0 MiB)`: exact, and readable.
fn kib_text(kib: u64) -> String {
    const MIB: u64 = 1024;
    const GIB: u64 = 1024 * 1024;
    if kib >= GIB && kib % GIB == 0 {
        format!("{} GiB", kib / GIB)
    } else if kib >= MIB && kib % MIB == 0 {
        format!("{} MiB", kib / MIB)
    } else if kib >= MIB {
        format!("{kib} KiB ({:.1} MiB)", kib as f64 / MIB as f64)
    } else {
        format!("{kib} KiB")
    }
}

/// Argon2id(password, salt, params) → 32-byte key that wraps the master key.
/// Callers validate `params` first; this re-checks so that no path skips the caps.
pub fn derive_wrapping_key(password: &[u8], params: &KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    params.validate("key derivation parameters")?;
    let argon_params = argon2::Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|e| Error::invalid(format!("invalid Argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon_params,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password, &params.salt, &mut out[..])
        .map_err(|e| Error::invalid(format!("key derivation failed: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let key = MasterKey::from_bytes(&[9u8; MASTER_KEY_LEN]);
        let s = key.session(&[1u8; 32]);
        let sealed = s.seal(b"aad", b"hello").unwrap();
        assert_eq!(s.open(b"aad", &sealed, &|| "x".into()).unwrap(), b"hello");
        assert!(s.open(b"other", &sealed, &|| "x".into()).is_err());
        let nonce: [u8; NONCE_LEN] = sealed[..12].try_into().unwrap();
        let mut msg = b"hello".to_vec();
        let tag = s.seal_detached(&nonce, b"aad", &mut msg).unwrap();
        assert_eq!(
            [&nonce[..], &msg, &tag].concat(),
            sealed,
            "detached sealing makes the same bytes"
        );
        let other = key.session(&[2u8; 32]);
        assert!(other.open(b"aad", &sealed, &|| "x".into()).is_err());
        assert!(s.open(b"aad", &sealed[..10], &|| "x".into()).is_err());
    }

    #[test]
    fn kdf_caps_refuse_before_allocating() {
        let mut p = KdfParams::new(64, 1).unwrap();
        p.memory_kib = u32::MAX;
        assert!(derive_wrapping_key(b"pw", &p).is_err());
        let mut p = KdfParams::new(64, 1).unwrap();
        p.iterations = 1_000_000;
        assert!(p.validate("k").is_err());
        let mut p = KdfParams::new(64, 1).unwrap();
        p.salt = vec![0; 3];
        assert!(p.validate("k").is_err());
    }

    /// Issue #10, item 4: caps of 4 GiB and 64 passes let a planted key file cost
    /// ~30 s and 4 GiB per password attempt. Checked without deriving anything.
    #[test]
    fn kdf_caps_are_1_gib_16_passes_and_4_gib_passes() {
        const GIB: u32 = 1024 * 1024;
        let with = |memory_kib: u32, iterations: u32| KdfParams {
            memory_kib,
            iterations,
            parallelism: 1,
            salt: vec![0; KDF_SALT_LEN],
        };
        for (m, i) in [(GIB, 4), (GIB / 4, 16), (GIB, 1), (8, 16), (GIB / 4, 10)] {
            assert!(with(m, i).validate("k").is_ok(), "{m} KiB × {i}");
        }
        for (m, i) in [
            (GIB + 1, 1),
            (4 * GIB, 1),
            (8, 17),
            (64, 64),
            (GIB, 5),
            (GIB / 2, 16),
            (GIB / 4 + 1, 16),
        ] {
            let err = with(m, i).validate("key file 00ff").unwrap_err();
            assert!(matches!(err, Error::KdfOverCap { .. }), "{m} × {i}: {err}");
            let msg = err.to_string();
            assert!(
                msg.contains("key file 00ff") && msg.contains("cap"),
                "{msg}"
            );
        }
        let msg = with(GIB / 2, 16).validate("k").unwrap_err().to_string();
        assert!(
            msg.contains("512 MiB × 16 = 8 GiB·passes") && msg.contains("4 GiB·passes"),
            "{msg}"
        );
        // A new key above the caps is refused in the same words.
        let err = KdfParams::new(GIB + 1, 1).err().unwrap().to_string();
        assert!(err.contains("above the cap of 1 GiB"), "{err}");
        assert!(KdfParams::new(GIB / 4, 17).is_err());
        assert!(KdfParams::new(GIB / 4, 0).is_err());
    }
}
