//! 32-byte identifiers, one newtype per kind of object so they can't be mixed up.
//!
//! Stored files are named by the unkeyed BLAKE3 hash of their stored bytes
//! (format-spec/README.md, "File names"); blobs by the keyed hash of their plaintext
//! (see `crypto::MasterKey::blob_id`).

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(#[serde(with = "serde_id")] pub [u8; 32]);

        impl $name {
            pub const WHAT: &'static str = $what;

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex digits, as shown in listings.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// Parses a stored file's name: exactly 64 *lowercase* hex digits.
            /// Any other name, uppercase hex included, is not a cairn file
            /// (format-spec/README.md §2) and must be ignored, not read.
            pub fn from_name(s: &str) -> Result<Self> {
                if !is_file_name(s) {
                    return Err(Error::invalid(format!(
                        "{:?} is not the name of a stored {} file (64 lowercase hex digits)",
                        s, $what
                    )));
                }
                Self::from_hex(s)
            }

            /// Parses an id given by a user: 64 hex digits, either case.
            pub fn from_hex(s: &str) -> Result<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| {
                    Error::invalid(format!("{:?} is not a valid {} id (64 hex digits)", s, $what))
                })?;
                Ok(Self(out))
            }

            /// Id of stored bytes: the unkeyed BLAKE3 hash.
            pub fn of_stored(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
    };
}

/// Whether `s` can be a stored file's name: exactly 64 lowercase hex digits.
pub fn is_file_name(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

id_type!(
    /// A data or tree blob: keyed BLAKE3 of its plaintext.
    BlobId, "blob");
id_type!(
    /// A packfile: BLAKE3 of its bytes, also its file name under `data/`.
    PackId, "pack");
id_type!(
    /// An index file under `index/`.
    IndexId, "index");
id_type!(
    /// A snapshot file under `snapshots/`.
    SnapshotId, "snapshot");
id_type!(
    /// A key file under `keys/`.
    KeyId, "key");
id_type!(
    /// A lock file under `locks/`.
    LockId, "lock");
id_type!(
    /// A record of a check or restore drill under `records/`.
    RecordId, "record");
id_type!(
    /// The random repository id, fixed at `init`; part of every object's associated data.
    RepoId, "repository");

/// msgpack encoding of ids: a 32-byte `bin`, checked for length on decode.
mod serde_id {
    use serde::de::{Error as _, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    /// msgpack (not human-readable) gets `bin`; JSON output gets lowercase hex.
    pub fn serialize<S: Serializer>(id: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(id))
        } else {
            s.serialize_bytes(id)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = [u8; 32];
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("32 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<[u8; 32], E> {
                v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<[u8; 32], E> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(v, &mut out).map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(out)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<[u8; 32], A::Error> {
                let mut out = [0u8; 32];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = a
                        .next_element()?
                        .ok_or_else(|| A::Error::invalid_length(i, &self))?;
                }
                if a.next_element::<u8>()?.is_some() {
                    return Err(A::Error::invalid_length(33, &self));
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_bad_input() {
        let id = BlobId([7; 32]);
        assert_eq!(BlobId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(BlobId::from_hex("abc").is_err());
        assert!(BlobId::from_hex(&"zz".repeat(32)).is_err());
    }

    /// Stored names are lowercase only: an uppercase copy is not a cairn file.
    #[test]
    fn file_names_are_lowercase_hex_only() {
        let lower = "ab".repeat(32);
        assert_eq!(PackId::from_name(&lower).unwrap(), PackId([0xab; 32]));
        assert!(PackId::from_name(&lower.to_uppercase()).is_err());
        assert!(PackId::from_name(&"ab".repeat(31)).is_err());
        assert!(PackId::from_name(&format!("{lower}0")).is_err());
        assert!(PackId::from_name(&format!(".tmp-{}", &lower[5..])).is_err());
        // Users may type either case.
        assert_eq!(
            PackId::from_hex(&lower.to_uppercase()).unwrap(),
            PackId([0xab; 32])
        );
    }

    #[test]
    fn msgpack_rejects_wrong_length() {
        let bytes = rmp_serde::to_vec(&serde_bytes::Bytes::new(&[1u8; 31])).unwrap();
        assert!(rmp_serde::from_slice::<BlobId>(&bytes).is_err());
        let ok = rmp_serde::to_vec(&BlobId([3; 32])).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<BlobId>(&ok).unwrap(),
            BlobId([3; 32])
        );
    }
}
