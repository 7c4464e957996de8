//! The `config` file (format-spec/README.md, "config").

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

use crate::crypto::{MasterKey, SEAL_OVERHEAD, SESSION_ID_LEN, random_array};
use crate::error::{Error, Result};
use crate::format::{self, FileKind, SealKind};
use crate::id::RepoId;

pub const CONFIG_MAX_LEN: u64 = 64 * 1024;

/// FastCDC v2020 parameters; the seed is part of the master key, not of this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        Self {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Parses `MIN,AVG,MAX` in bytes, with optional K/M suffixes (powers of 1024).
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let [min, avg, max] = parts.as_slice() else {
            return Err(Error::invalid(format!(
                "chunker params {s:?}: expected MIN,AVG,MAX, e.g. 512K,1M,8M"
            )));
        };
        let p = Self {
            min_size: parse_size(min)?,
            avg_size: parse_size(avg)?,
            max_size: parse_size(max)?,
        };
        p.validate()
            .map_err(|e| Error::invalid(format!("chunker params {s:?}: {e}")))?;
        Ok(p)
    }

    /// The bounds FastCDC v2020 accepts; the chunker would panic outside them, so
    /// values read from a config file are checked here first.
    pub fn validate(&self) -> std::result::Result<(), String> {
        use fastcdc::v2020 as f;
        let Self {
            min_size: min,
            avg_size: avg,
            max_size: max,
        } = *self;
        if !(f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&min) {
            return Err(format!(
                "min {min} outside {}..={}",
                f::MINIMUM_MIN,
                f::MINIMUM_MAX
            ));
        }
        if !(f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&avg) {
            return Err(format!(
                "avg {avg} outside {}..={}",
                f::AVERAGE_MIN,
                f::AVERAGE_MAX
            ));
        }
        if !(f::MAXIMUM_MIN..=f::MAXIMUM_MAX).contains(&max) {
            return Err(format!(
                "max {max} outside {}..={}",
                f::MAXIMUM_MIN,
                f::MAXIMUM_MAX
            ));
        }
        if !(min <= avg && avg <= max) {
            return Err(format!("need min <= avg <= max, got {min}, {avg}, {max}"));
        }
        Ok(())
    }
}

pub fn parse_size(s: &str) -> Result<u32> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1024u64),
        Some('m' | 'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            Error::invalid(format!(
                "{s:?} is not a size (bytes, or a number with K or M)"
            ))
        })
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    pub repo_id: RepoId,
    pub chunker: ChunkerParams,
    /// zstd level for new blobs; 0 stores everything raw.
    pub compression: i32,
    /// Target size of a pack in bytes.
    pub pack_size: u32,
}

pub const DEFAULT_COMPRESSION: i32 = 3;
/// zstd levels a repository or a backup may use.
pub const COMPRESSION_LEVELS: std::ops::RangeInclusive<i32> = -7..=22;

/// A zstd level given for one backup (a plan class's `compression`).
pub fn check_compression(level: i32) -> crate::Result<()> {
    if COMPRESSION_LEVELS.contains(&level) {
        Ok(())
    } else {
        Err(crate::Error::invalid(format!(
            "zstd level {level} outside -7..=22"
        )))
    }
}
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
pub const MIN_PACK_SIZE: u32 = 1024 * 1024;
pub const MAX_PACK_SIZE: u32 = 1024 * 1024 * 1024;

impl Config {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.version != u32::from(format::FORMAT_VERSION) {
            return Err(format!("config says format version {}", self.version));
        }
        self.chunker.validate()?;
        if !COMPRESSION_LEVELS.contains(&self.compression) {
            return Err(format!("zstd level {} outside -7..=22", self.compression));
        }
        if !(MIN_PACK_SIZE..=MAX_PACK_SIZE).contains(&self.pack_size) {
            return Err(format!(
                "pack size {} outside {MIN_PACK_SIZE}..={MAX_PACK_SIZE}",
                self.pack_size
            ));
        }
        Ok(())
    }

    /// prefix || repository id || session id || sealed(payload(msgpack)).
    /// The repository id is in the clear so that it can be bound into the
    /// associated data of everything, this file included.
    pub fn encode(&self, key: &MasterKey) -> Result<Vec<u8>> {
        let plain = format::encode_payload(&format::to_msgpack(self), 0);
        let session: [u8; SESSION_ID_LEN] = random_array()?;
        let sealed = key
            .session(&session)
            .seal(&format::aad(&self.repo_id, SealKind::Config, None), &plain)?;
        let mut out = Vec::new();
        format::write_prefix(&mut out, FileKind::Config);
        out.extend_from_slice(&self.repo_id.0);
        out.extend_from_slice(&session);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Checks everything that can be checked without a key (prefix, version,
    /// lengths) and returns the parts; damage found here is reported as such.
    pub fn parse_sealed(bytes: &[u8]) -> Result<SealedConfig<'_>> {
        let rest = format::check_prefix(bytes, FileKind::Config, &|| "config".into())?;
        let Some((id, rest)) = rest.split_first_chunk::<32>() else {
            return Err(Error::corrupt(
                "config",
                "too short to hold the repository id",
            ));
        };
        let Some((session, sealed)) = rest.split_first_chunk::<SESSION_ID_LEN>() else {
            return Err(Error::corrupt("config", "too short to hold a session id"));
        };
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Error::corrupt(
                "config",
                format!(
                    "{} bytes is too short to be an encrypted object",
                    sealed.len()
                ),
            ));
        }
        Ok(SealedConfig {
            repo_id: RepoId(*id),
            session,
            sealed,
        })
    }

    /// Decodes with a key known to be this repository's: failing to
    /// authenticate is corruption here.
    pub fn decode(bytes: &[u8], key: &MasterKey) -> Result<Self> {
        Self::parse_sealed(bytes)?.open(key)?.ok_or_else(|| {
            Error::corrupt(
                "config",
                "authentication failed (the bytes were altered, or belong elsewhere)",
            )
        })
    }
}

/// A config whose key-independent parts are checked, not yet authenticated.
pub struct SealedConfig<'a> {
    /// In the clear, so that the associated data can be built before any key is
    /// known; bound into it, so altering it is detected when the config is opened.
    pub repo_id: RepoId,
    session: &'a [u8; SESSION_ID_LEN],
    sealed: &'a [u8],
}

impl SealedConfig<'_> {
    /// `Ok(None)`: the config does not authenticate under `key`, so `key` is not
    /// this repository's (or the sealed bytes were altered: the two can't be told
    /// apart). `Err`: it authenticates but is not a valid config.
    pub fn open(&self, key: &MasterKey) -> Result<Option<Config>> {
        let what = || "config".to_string();
        let aad = format::aad(&self.repo_id, SealKind::Config, None);
        let Some(plain) = key.session(self.session).try_open(&aad, self.sealed) else {
            return Ok(None);
        };
        let msg = format::decode_payload(&plain, None, CONFIG_MAX_LEN as usize, &what)?;
        let config: Config = format::from_msgpack(&msg, &what)?;
        if config.repo_id != self.repo_id {
            return Err(Error::corrupt(
                "config",
                "sealed repository id differs from the one in the clear",
            ));
        }
        config.validate().map_err(|r| Error::corrupt("config", r))?;
        Ok(Some(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunker_params_parse_and_validate() {
        let p = ChunkerParams::parse("512K,1M,8M").unwrap();
        assert_eq!(p, ChunkerParams::default());
        assert!(ChunkerParams::parse("1M,512K,8M").is_err());
        assert!(ChunkerParams::parse("1,2").is_err());
        assert!(ChunkerParams::parse("1K,2K,64M").is_err());
        assert!(ChunkerParams::parse("x,y,z").is_err());
    }

    #[test]
    fn config_round_trip() {
        let key = MasterKey::generate().unwrap();
        let c = Config {
            version: 1,
            repo_id: RepoId([5; 32]),
            chunker: ChunkerParams::default(),
            compression: 3,
            pack_size: DEFAULT_PACK_SIZE,
        };
        let bytes = c.encode(&key).unwrap();
        assert_eq!(Config::parse_sealed(&bytes).unwrap().repo_id, c.repo_id);
        assert_eq!(Config::decode(&bytes, &key).unwrap(), c);
        let mut bad = bytes.clone();
        bad[12] ^= 1; // inside the clear repository id, which is authenticated
        assert!(Config::decode(&bad, &key).is_err());
        let sealed = Config::parse_sealed(&bad).unwrap();
        assert!(sealed.open(&key).unwrap().is_none());
        let other = MasterKey::generate().unwrap();
        assert!(
            Config::parse_sealed(&bytes)
                .unwrap()
                .open(&other)
                .unwrap()
                .is_none()
        );
        // Too short to hold a sealed object: seen without any key.
        assert!(Config::parse_sealed(&bytes[..10 + 32 + 32 + 27]).is_err());
    }
}
