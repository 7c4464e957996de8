//! The envelope shared by every stored file (format-spec/README.md, "Common file
//! prefix", "Sealed files" and "Payload encoding").

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::cell::RefCell;
use std::io::Read;

use crate::chunker::Chunk;
use crate::crypto::{MasterKey, SESSION_ID_LEN, random_array};
use crate::error::{Error, Result};
use crate::id::{BlobId, RepoId};

/// PNG-style: a high byte (catches 7-bit transfers), the name, then CR LF, ^Z, LF
/// (catch newline conversion and `type` on DOS-like systems).
pub const MAGIC: [u8; 8] = [0x89, b'C', b'R', b'N', 0x0D, 0x0A, 0x1A, 0x0A];
pub const FORMAT_VERSION: u8 = 1;
pub const PREFIX_LEN: usize = MAGIC.len() + 2;

/// The kind byte of a stored file's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FileKind {
    Config = 1,
    Key = 2,
    Pack = 3,
    Index = 4,
    Snapshot = 5,
    Lock = 6,
    Record = 7,
}

/// The kind byte of the associated data of a sealed object. No two kinds of object
/// share one, so no object can be replayed as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SealKind {
    Config = 1,
    MasterKey = 2,
    PackHeader = 3,
    Index = 4,
    Snapshot = 5,
    Lock = 6,
    Record = 7,
    DataBlob = 16,
    TreeBlob = 17,
}

pub fn aad(repo: &RepoId, kind: SealKind, blob: Option<&BlobId>) -> Vec<u8> {
    let mut a = Vec::with_capacity(66);
    a.extend_from_slice(&repo.0);
    a.push(FORMAT_VERSION);
    a.push(kind as u8);
    if let Some(b) = blob {
        a.extend_from_slice(&b.0);
    }
    a
}

pub fn write_prefix(out: &mut Vec<u8>, kind: FileKind) {
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind as u8);
}

/// Checks magic, version and kind; returns the bytes after the prefix.
/// A version this cairn does not know is `UnsupportedVersion`, not `Corrupt`.
pub fn check_prefix<'a>(
    bytes: &'a [u8],
    kind: FileKind,
    what: &dyn Fn() -> String,
) -> Result<&'a [u8]> {
    let Some((prefix, rest)) = bytes.split_at_checked(PREFIX_LEN) else {
        return Err(Error::corrupt(
            what(),
            format!("{} bytes is too short for a cairn file", bytes.len()),
        ));
    };
    let (magic, vk) = prefix.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err(Error::corrupt(
            what(),
            "it does not start with the cairn magic bytes",
        ));
    }
    let (version, found_kind) = match vk {
        [v, k] => (*v, *k),
        _ => return Err(Error::corrupt(what(), "truncated prefix")),
    };
    if version != FORMAT_VERSION {
        if version > FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: what(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        return Err(Error::corrupt(
            what(),
            format!("format version {version} does not exist"),
        ));
    }
    if found_kind != kind as u8 {
        return Err(Error::corrupt(
            what(),
            format!(
                "file kind byte is {found_kind}, expected {} ({kind:?})",
                kind as u8
            ),
        ));
    }
    Ok(rest)
}

/// Stored bytes of a sealed file besides its payload: prefix, session id, nonce
/// and tag.
pub const SEALED_FILE_OVERHEAD: usize = PREFIX_LEN + SESSION_ID_LEN + crate::crypto::SEAL_OVERHEAD;

/// A sealed file: prefix || session id || nonce || ciphertext || tag.
pub fn seal_file(
    key: &MasterKey,
    repo: &RepoId,
    file: FileKind,
    seal: SealKind,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let session: [u8; SESSION_ID_LEN] = random_array()?;
    let sealed = key
        .session(&session)
        .seal(&aad(repo, seal, None), plaintext)?;
    let mut out = Vec::with_capacity(PREFIX_LEN + SESSION_ID_LEN + sealed.len());
    write_prefix(&mut out, file);
    out.extend_from_slice(&session);
    out.extend_from_slice(&sealed);
    Ok(out)
}

pub fn open_file(
    key: &MasterKey,
    repo: &RepoId,
    file: FileKind,
    seal: SealKind,
    bytes: &[u8],
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    let rest = check_prefix(bytes, file, what)?;
    let Some((session, sealed)) = rest.split_first_chunk::<SESSION_ID_LEN>() else {
        return Err(Error::corrupt(what(), "too short to hold a session id"));
    };
    key.session(session)
        .open(&aad(repo, seal, None), sealed, what)
}

/// Padded objects (pack headers, index files) are stored with a length that is a
/// power of two and at least this (format-spec §6): the length then tells an
/// observer of the storage only the order of magnitude of what they list.
pub const PAD_MIN: usize = 4096;

/// The stored length of a padded object whose unpadded stored length is `len`.
pub fn padded_len(len: usize) -> usize {
    len.max(PAD_MIN).next_power_of_two()
}

/// The magic of a zstd skippable frame (the first of the 16 such magics), which
/// every zstd decoder skips: the padding of a compressed payload.
const ZSTD_SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
const SKIPPABLE_HEADER: usize = 8;

/// Pads `payload` (see [`encode_payload`]) so that, with `overhead` more stored
/// bytes around it, it is stored in [`padded_len`] bytes: zero bytes after a raw
/// body (readers parse one msgpack value and ignore what follows), one zstd
/// skippable frame after a compressed one. Only for payloads that are a single
/// msgpack value, never for blobs (whose decoded length must be exact).
pub fn pad_payload(payload: &mut Vec<u8>, overhead: usize) {
    let stored = payload.len() + overhead;
    let mut target = padded_len(stored);
    match payload.first() {
        Some(&PAYLOAD_ZSTD) => {
            // A skippable frame needs room for its own 8-byte header.
            if target - stored < SKIPPABLE_HEADER && target != stored {
                target = padded_len(target + 1);
            }
            let gap = target - stored;
            if gap == 0 {
                return;
            }
            let data = u32::try_from(gap - SKIPPABLE_HEADER).unwrap_or(u32::MAX);
            payload.extend_from_slice(&ZSTD_SKIPPABLE_MAGIC.to_le_bytes());
            payload.extend_from_slice(&data.to_le_bytes());
            payload.resize(payload.len() + data as usize, 0);
        }
        _ => payload.resize(target - overhead, 0),
    }
}

/// Payload encoding byte: the first plaintext byte of every blob and sealed file.
pub const PAYLOAD_RAW: u8 = 0;
pub const PAYLOAD_ZSTD: u8 = 1;

/// Data at least this large is sampled before it is compressed...
const PROBE_MIN: usize = 64 * 1024;
/// ...at its start, middle and end, this many bytes each.
const PROBE_SAMPLE: usize = 8 * 1024;

/// Whether every sample of `data` fails to shrink by 1/64 under zstd: then the
/// whole is very likely incompressible (encrypted, already compressed, or noise
/// like model weights), and compressing it would cost far more than the probe.
fn looks_incompressible(data: &[u8], level: i32) -> bool {
    if data.len() < PROBE_MIN {
        return false;
    }
    let last = data.len() - PROBE_SAMPLE;
    [0, last / 2, last].iter().all(|&at| {
        data.get(at..at + PROBE_SAMPLE).is_some_and(|sample| {
            compress(sample, level).is_none_or(|c| c.len() >= sample.len() - sample.len() / 64)
        })
    })
}

/// Compresses with zstd at `level`; keeps the data raw if that does not make it
/// smaller, or if samples of it don't compress (level 0 means "don't try").
pub fn encode_payload(data: &[u8], level: i32) -> Vec<u8> {
    compressed_payload(data, level).unwrap_or_else(|| {
        let mut out = Vec::with_capacity(data.len() + 1);
        out.push(PAYLOAD_RAW);
        out.extend_from_slice(data);
        out
    })
}

/// [`encode_payload`] of a chunk, reusing the chunk's buffer when it stays raw.
pub fn encode_chunk(chunk: Chunk, level: i32) -> Vec<u8> {
    compressed_payload(chunk.data(), level).unwrap_or_else(|| {
        let mut out = chunk.into_buffer();
        if let Some(first) = out.first_mut() {
            *first = PAYLOAD_RAW;
        }
        out
    })
}

/// The zstd payload of `data`, if compressing is worth it.
fn compressed_payload(data: &[u8], level: i32) -> Option<Vec<u8>> {
    if level == 0 || looks_incompressible(data, level) {
        return None;
    }
    let compressed = compress(data, level)?;
    if compressed.len() >= data.len() {
        return None;
    }
    let mut out = Vec::with_capacity(compressed.len() + 1);
    out.push(PAYLOAD_ZSTD);
    out.extend_from_slice(&compressed);
    Some(out)
}

thread_local! {
    /// One zstd compression context per thread, kept between calls: creating one
    /// per chunk cost a tenth of a small-file backup's CPU time.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if !matches!(&*cell, Some((l, _)) if *l == level) {
            *cell = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, c) = cell.as_mut()?;
        c.compress(data).ok()
    })
}

/// Decompresses a frame that must produce exactly `len` bytes, never more.
fn decompress_exact(body: &[u8], len: usize) -> std::result::Result<Vec<u8>, String> {
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let d = cell.as_mut().ok_or("no zstd decompressor")?;
        // The output buffer is exactly `len` bytes: a frame claiming more fails.
        d.decompress(body, len).map_err(|e| e.to_string())
    })
}

/// Decodes a payload. With `exact_len` (blobs, whose length the index records) the
/// result must have exactly that length; otherwise it may not exceed `cap`.
/// Decompression never produces more than the bound, whatever the frame claims.
pub fn decode_payload(
    payload: &[u8],
    exact_len: Option<usize>,
    cap: usize,
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    let Some((&method, body)) = payload.split_first() else {
        return Err(Error::corrupt(what(), "empty payload"));
    };
    let limit = exact_len.unwrap_or(cap);
    let out = match method {
        PAYLOAD_RAW => {
            if body.len() > limit {
                return Err(Error::corrupt(
                    what(),
                    format!("{} bytes exceeds the limit of {limit}", body.len()),
                ));
            }
            body.to_vec()
        }
        PAYLOAD_ZSTD if exact_len.is_some() => decompress_exact(body, limit)
            .map_err(|e| Error::corrupt(what(), format!("zstd decompression failed: {e}")))?,
        PAYLOAD_ZSTD => {
            let decoder = zstd::stream::read::Decoder::new(body)
                .map_err(|e| Error::corrupt(what(), format!("zstd: {e}")))?;
            let mut out = Vec::with_capacity(exact_len.unwrap_or(0));
            decoder
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Error::corrupt(what(), format!("zstd decompression failed: {e}")))?;
            if out.len() > limit {
                return Err(Error::corrupt(
                    what(),
                    format!("decompresses to more than {limit} bytes"),
                ));
            }
            out
        }
        other => {
            return Err(Error::corrupt(
                what(),
                format!("unknown payload encoding {other}"),
            ));
        }
    };
    if let Some(n) = exact_len {
        if out.len() != n {
            return Err(Error::corrupt(
                what(),
                format!("decodes to {} bytes, index says {n}", out.len()),
            ));
        }
    }
    Ok(out)
}

/// msgpack decode with the object named in the error.
pub fn from_msgpack<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
    what: &dyn Fn() -> String,
) -> Result<T> {
    rmp_serde::from_slice(bytes)
        .map_err(|e| Error::corrupt(what(), format!("undecodable msgpack: {e}")))
}

/// Structs as msgpack maps keyed by field name: readable by tools, and fields can be
/// added later without breaking old readers.
pub fn to_msgpack<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain data types into a Vec cannot fail.
    rmp_serde::to_vec_named(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w() -> String {
        "test object".into()
    }

    /// `n` bytes of xorshift noise: incompressible.
    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Noise is stored raw without compressing it; text, and noise whose samples
    /// include a compressible stretch, are compressed; all round-trip.
    #[test]
    fn incompressible_data_is_stored_raw_after_sampling() {
        let noise = noise(1 << 20);
        let text: Vec<u8> = b"step=41 loss=0.2231 lr=3e-4\n".repeat(40_000);
        let mut half = noise.clone();
        half[noise.len() / 2..].fill(7);
        assert!(looks_incompressible(&noise, 3));
        assert_eq!(encode_payload(&noise, 3)[0], PAYLOAD_RAW);
        assert!(!looks_incompressible(&text, 3));
        assert_eq!(encode_payload(&text, 3)[0], PAYLOAD_ZSTD);
        assert!(!looks_incompressible(&half, 3));
        assert_eq!(encode_payload(&half, 3)[0], PAYLOAD_ZSTD);
        // Too small to sample: compression is simply tried.
        assert!(!looks_incompressible(&noise[..PROBE_MIN - 1], 3));
        for data in [&noise, &text, &half] {
            let p = encode_payload(data, 3);
            assert_eq!(&decode_payload(&p, Some(data.len()), 0, &w).unwrap(), data);
        }
    }

    /// Padding lands every stored length on a power of two of at least PAD_MIN,
    /// and the padded payload still decodes to the same value, compressed or not.
    #[test]
    fn padded_payloads_decode_to_the_same_value() {
        let values: Vec<Vec<u32>> = vec![
            vec![1, 2, 3],
            (0..20_000).collect(),
            noise(9000).into_iter().map(u32::from).collect(),
        ];
        for value in &values {
            let plain = to_msgpack(value);
            for level in [0, 3] {
                for overhead in [28, 70, 4089, 4095] {
                    let mut p = encode_payload(&plain, level);
                    let before = p.len();
                    pad_payload(&mut p, overhead);
                    let stored = p.len() + overhead;
                    assert!(stored.is_power_of_two() && stored >= PAD_MIN, "{stored}");
                    assert!(stored >= before + overhead);
                    let back = decode_payload(&p, None, 1 << 30, &w).unwrap();
                    let got: Vec<u32> = from_msgpack(&back, &w).unwrap();
                    assert_eq!(&got, value, "level {level}, overhead {overhead}");
                }
            }
        }
        assert_eq!(padded_len(1), PAD_MIN);
        assert_eq!(padded_len(PAD_MIN), PAD_MIN);
        assert_eq!(padded_len(PAD_MIN + 1), 2 * PAD_MIN);
    }

    #[test]
    fn prefix_errors_are_distinct() {
        let mut f = Vec::new();
        write_prefix(&mut f, FileKind::Index);
        assert!(check_prefix(&f, FileKind::Index, &w).is_ok());
        assert!(matches!(
            check_prefix(&f, FileKind::Snapshot, &w),
            Err(Error::Corrupt { .. })
        ));
        let mut newer = f.clone();
        newer[8] = 2;
        assert!(matches!(
            check_prefix(&newer, FileKind::Index, &w),
            Err(Error::UnsupportedVersion { .. })
        ));
        assert!(check_prefix(&f[..5], FileKind::Index, &w).is_err());
    }

    #[test]
    fn payload_round_trip_and_bounds() {
        let text = b"abcabcabcabcabcabcabcabcabcabcabcabcabc".repeat(100);
        let enc = encode_payload(&text, 3);
        assert_eq!(enc[0], PAYLOAD_ZSTD);
        assert_eq!(decode_payload(&enc, Some(text.len()), 0, &w).unwrap(), text);
        assert!(decode_payload(&enc, Some(text.len() - 1), 0, &w).is_err());
        assert!(decode_payload(&enc, None, 100, &w).is_err());
        let random = noise(1000);
        let enc = encode_payload(&random, 3);
        assert_eq!(enc[0], PAYLOAD_RAW);
        assert!(decode_payload(&[9, 1, 2], None, 10, &w).is_err());
        assert!(decode_payload(&[], None, 10, &w).is_err());
    }
}
