//! Packfiles (format-spec/README.md, "Packfiles"):
//!
//! ```text
//! prefix (10) | session id (32) | blob 0 | ... | blob n-1 | sealed header | header length (u32 LE)
//! ```
//!
//! Each blob is `nonce || AES-256-GCM-SIV(payload) || tag` under the pack's session
//! subkey, with the blob id in its associated data. The header lists every blob.

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

use crate::backend::{Backend, FileType};
use rayon::prelude::*;

use crate::crypto::{
    MasterKey, NONCE_LEN, SEAL_OVERHEAD, SESSION_ID_LEN, SessionKey, TAG_LEN, random_array,
};
use crate::error::{Error, Result};
use crate::format::{self, FileKind, PREFIX_LEN, SealKind};
use crate::id::{BlobId, PackId, RepoId};

/// Offset of the first blob.
pub const PACK_DATA_START: usize = PREFIX_LEN + SESSION_ID_LEN;
/// Largest plaintext blob. Chunks are at most 16 MiB (the FastCDC cap); tree blobs
/// of huge directories may be larger, up to this.
pub const MAX_BLOB_LEN: u32 = 512 * 1024 * 1024;
/// Largest sealed pack header readers accept: about 100 bytes per entry, so 4
/// million blobs.
pub const MAX_HEADER_LEN: u32 = 400 * 1024 * 1024;
/// Writers close a pack at this many blobs whatever its size, so that its header
/// (about 48 bytes an entry, padded to at most twice that) stays far below
/// [`MAX_HEADER_LEN`] even in a 1 GiB pack of tiny blobs.
pub const MAX_PACK_BLOBS: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum BlobKind {
    Data,
    Tree,
}

impl From<BlobKind> for u8 {
    fn from(k: BlobKind) -> u8 {
        match k {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }
}

impl TryFrom<u8> for BlobKind {
    type Error = String;
    fn try_from(v: u8) -> std::result::Result<Self, String> {
        match v {
            0 => Ok(BlobKind::Data),
            1 => Ok(BlobKind::Tree),
            _ => Err(format!("unknown blob kind {v}")),
        }
    }
}

impl BlobKind {
    /// "data" or "tree", for messages.
    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Data => "data",
            BlobKind::Tree => "tree",
        }
    }

    pub fn seal_kind(self) -> SealKind {
        match self {
            BlobKind::Data => SealKind::DataBlob,
            BlobKind::Tree => SealKind::TreeBlob,
        }
    }
}

/// One blob of a pack, as listed in the pack header and the index.
/// Encoded as the msgpack array `[kind, id, offset, length, raw_length]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "EntryWire", from = "EntryWire")]
pub struct PackEntry {
    pub kind: BlobKind,
    pub id: BlobId,
    pub offset: u32,
    /// Stored (sealed) length.
    pub length: u32,
    /// Plaintext length of the blob.
    pub raw_length: u32,
}

/// Tuple structs are msgpack arrays whatever the encoder's struct mode.
#[derive(Serialize, Deserialize)]
struct EntryWire(BlobKind, BlobId, u32, u32, u32);

impl From<PackEntry> for EntryWire {
    fn from(e: PackEntry) -> Self {
        EntryWire(e.kind, e.id, e.offset, e.length, e.raw_length)
    }
}

impl From<EntryWire> for PackEntry {
    fn from(EntryWire(kind, id, offset, length, raw_length): EntryWire) -> Self {
        PackEntry {
            kind,
            id,
            offset,
            length,
            raw_length,
        }
    }
}

/// Decrypts, decompresses and re-hashes a stored blob. Returns the plaintext only if
/// its keyed hash is `entry.id`.
pub fn open_blob(
    key: &MasterKey,
    session: &SessionKey,
    repo: &RepoId,
    entry: &PackEntry,
    sealed: &[u8],
    pack: &PackId,
) -> Result<Vec<u8>> {
    let what = || format!("{:?} blob {} in pack {}", entry.kind, entry.id, pack);
    let payload = session.open(
        &format::aad(repo, entry.kind.seal_kind(), Some(&entry.id)),
        sealed,
        &what,
    )?;
    let plain = format::decode_payload(&payload, Some(entry.raw_length as usize), 0, &what)?;
    if key.blob_id(&plain) != entry.id {
        return Err(Error::corrupt(
            what(),
            "its content does not hash to its id",
        ));
    }
    Ok(plain)
}

/// Like `open_blob`, but returns the still-encoded payload (compressed or raw) along
/// with the verified plaintext length, so that a blob can move to another pack
/// without being compressed again. The content is still checked against its id.
pub fn open_blob_payload(
    key: &MasterKey,
    session: &SessionKey,
    repo: &RepoId,
    entry: &PackEntry,
    sealed: &[u8],
    pack: &PackId,
) -> Result<Vec<u8>> {
    let what = || format!("{:?} blob {} in pack {}", entry.kind, entry.id, pack);
    let payload = session.open(
        &format::aad(repo, entry.kind.seal_kind(), Some(&entry.id)),
        sealed,
        &what,
    )?;
    let plain = format::decode_payload(&payload, Some(entry.raw_length as usize), 0, &what)?;
    if key.blob_id(&plain) != entry.id {
        return Err(Error::corrupt(
            what(),
            "its content does not hash to its id",
        ));
    }
    Ok(payload)
}

/// A pack being assembled in memory. Blobs are kept as payloads and sealed by
/// [`PackBuilder::finish`], in parallel, where they lie in the finished pack; so
/// the thread that fills a pack does no encryption, and `finish` can run on the
/// pack writer's thread.
pub struct PackBuilder {
    session_id: [u8; SESSION_ID_LEN],
    session: SessionKey,
    blobs: Vec<(BlobKind, BlobId, Vec<u8>, u32)>,
    size: usize,
}

/// A sealed pack, kept as the pieces it is made of rather than one buffer: the
/// blobs are sealed where they lie, and the writer streams the pieces out. That
/// saves a pack-sized copy per pack in flight.
pub struct FinishedPack {
    pub id: PackId,
    pub entries: Vec<PackEntry>,
    /// Prefix and session id.
    head: Vec<u8>,
    blobs: Vec<SealedBlob>,
    /// Sealed header and its length.
    tail: Vec<u8>,
    len: u64,
}

/// `nonce || ciphertext || tag`, with the ciphertext in the payload's own buffer.
struct SealedBlob {
    nonce: [u8; NONCE_LEN],
    body: Vec<u8>,
    tag: [u8; TAG_LEN],
}

impl SealedBlob {
    /// Seals a blob's payload in its own buffer, under `nonce`.
    fn seal(
        session: &SessionKey,
        repo: &RepoId,
        kind: BlobKind,
        id: &BlobId,
        mut body: Vec<u8>,
        nonce: [u8; NONCE_LEN],
    ) -> Result<Self> {
        let aad = format::aad(repo, kind.seal_kind(), Some(id));
        let tag = session.seal_detached(&nonce, &aad, &mut body)?;
        Ok(Self { nonce, body, tag })
    }
}

impl FinishedPack {
    /// Size of the stored pack in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The stored bytes in order, as slices of the pack's pieces.
    pub fn parts(&self) -> Vec<&[u8]> {
        let mut parts = Vec::with_capacity(2 + 3 * self.blobs.len());
        parts.push(&self.head[..]);
        for b in &self.blobs {
            parts.extend([&b.nonce[..], &b.body[..], &b.tag[..]]);
        }
        parts.push(&self.tail[..]);
        parts
    }

    /// The stored bytes as one buffer (tests and inspection).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.parts().concat()
    }
}

impl PackBuilder {
    pub fn new(key: &MasterKey) -> Result<Self> {
        let session_id = random_array()?;
        Ok(Self {
            session: key.session(&session_id),
            session_id,
            blobs: Vec::new(),
            size: PACK_DATA_START,
        })
    }

    /// Adds `payload` (an encoded blob, see `format::encode_payload`) to the pack.
    pub fn add(&mut self, kind: BlobKind, id: BlobId, payload: Vec<u8>, raw_length: u32) {
        self.size += payload.len() + SEAL_OVERHEAD;
        self.blobs.push((kind, id, payload, raw_length));
    }

    /// Size of the pack's blob area so far, sealing overhead included.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Whether the pack should be written now: it reached the target size, or
    /// [`MAX_PACK_BLOBS`] blobs.
    pub fn is_full(&self, pack_size: u32) -> bool {
        self.size >= pack_size as usize || self.blobs.len() >= MAX_PACK_BLOBS
    }

    /// Lays the blobs out in a random order — so that a pack does not hold a file's
    /// chunks in file order, which would help fingerprinting by sizes — seals them
    /// in place in parallel, then seals the header.
    pub fn finish(self, repo: &RepoId) -> Result<FinishedPack> {
        let Self {
            session_id,
            session,
            mut blobs,
            size: _,
        } = self;
        shuffle(&mut blobs)?;
        let mut nonces = vec![[0u8; NONCE_LEN]; blobs.len()];
        crate::crypto::random_bytes(nonces.as_flattened_mut())?;
        let head = pack_head(&session_id);
        let mut offset = u32::try_from(head.len()).map_err(|_| too_big())?;
        let mut entries = Vec::with_capacity(blobs.len());
        for (kind, id, payload, raw_length) in &blobs {
            let length = u32::try_from(payload.len() + SEAL_OVERHEAD)
                .map_err(|_| Error::invalid("blob larger than 4 GiB"))?;
            entries.push(PackEntry {
                kind: *kind,
                id: *id,
                offset,
                length,
                raw_length: *raw_length,
            });
            offset = offset.checked_add(length).ok_or_else(too_big)?;
        }
        let sealed = blobs
            .into_par_iter()
            .zip(nonces)
            .map(|((kind, id, body, _), nonce)| {
                SealedBlob::seal(&session, repo, kind, &id, body, nonce)
            })
            .collect::<Result<Vec<_>>>()?;
        let tail = pack_tail(&session, repo, &entries)?;
        let mut pack = FinishedPack {
            id: PackId([0; 32]),
            entries,
            head,
            blobs: sealed,
            tail,
            len: 0,
        };
        let (id, len) = hash_parts(&pack.parts()).map_err(sink_error)?;
        pack.len = len;
        pack.id = PackId(id);
        Ok(pack)
    }
}

fn too_big() -> Error {
    Error::invalid("pack larger than 4 GiB")
}

/// A pack's first bytes: prefix and session id.
fn pack_head(session_id: &[u8; SESSION_ID_LEN]) -> Vec<u8> {
    let mut head = Vec::with_capacity(PACK_DATA_START);
    format::write_prefix(&mut head, FileKind::Pack);
    head.extend_from_slice(session_id);
    head
}

/// A pack's last bytes: the sealed header listing `entries`, and its length.
fn pack_tail(session: &SessionKey, repo: &RepoId, entries: &[PackEntry]) -> Result<Vec<u8>> {
    let header = encode_header(entries)?;
    let mut tail = session.seal(&format::aad(repo, SealKind::PackHeader, None), &header)?;
    let header_len = u32::try_from(tail.len()).map_err(|_| too_big())?;
    tail.extend_from_slice(&header_len.to_le_bytes());
    Ok(tail)
}

/// Bytes a [`PackSpool`] buffers before appending them to its file.
const SPOOL_BUFFER: usize = 256 * 1024;

/// A pack being assembled in a temporary file (the spool) rather than in memory.
/// Each batch of blobs is sealed (in parallel) as it is added and appended to the
/// spool, so memory holds a batch, not a pack. [`PackSpool::write_to`] then writes
/// the pack, reading the blobs back in a random order (§11.1: a pack does not hold
/// a file's chunks in file order).
///
/// The spool holds only sealed blobs: nothing in it is readable without the key.
/// It is an unnamed file (the saver makes it in `TMPDIR`), gone when closed.
pub struct PackSpool {
    session_id: [u8; SESSION_ID_LEN],
    session: SessionKey,
    file: std::fs::File,
    /// Where the spool lives, for messages.
    dir: std::path::PathBuf,
    /// Sealed bytes not yet appended to `file`.
    buffer: Vec<u8>,
    /// Bytes appended to `file`.
    appended: u64,
    /// Each blob's kind, id, place in the spool and sealed and plaintext lengths.
    blobs: Vec<(BlobKind, BlobId, u64, u32, u32)>,
}

/// An error of a spool file in `dir`, saying what it is and how to put it
/// elsewhere.
pub fn spool_error(dir: &std::path::Path, doing: &str, e: std::io::Error) -> Error {
    Error::io(
        dir,
        std::io::Error::new(
            e.kind(),
            format!(
                "{doing} the spool file of a pack being built (packs are built in the \
                 temporary directory; TMPDIR chooses another): {e}"
            ),
        ),
    )
}

/// A blob for [`PackSpool::add`]: kind, id, encoded payload (see
/// `format::encode_payload`) and plaintext length.
pub type NewBlob = (BlobKind, BlobId, Vec<u8>, u32);

impl PackSpool {
    /// A new, empty pack, spooled to `file` (empty, readable and writable) in `dir`.
    pub fn new(key: &MasterKey, file: std::fs::File, dir: std::path::PathBuf) -> Result<Self> {
        let session_id = random_array()?;
        Ok(Self {
            session: key.session(&session_id),
            session_id,
            file,
            dir,
            buffer: Vec::with_capacity(SPOOL_BUFFER),
            appended: 0,
            blobs: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// At least the length of the pack [`Self::write_to`] will write: its
    /// header's entries take about 50 bytes each, padded to at most twice
    /// that, and to at least 4 KiB in all.
    pub fn size_hint(&self) -> usize {
        let blobs = self.appended as usize + self.buffer.len();
        PACK_DATA_START + blobs + 112 * self.blobs.len() + format::PAD_MIN + SEAL_OVERHEAD + 4
    }

    /// Seals `batch` in parallel, each blob in its own buffer, and appends it.
    pub fn add(&mut self, repo: &RepoId, batch: Vec<NewBlob>) -> Result<()> {
        let mut nonces = vec![[0u8; NONCE_LEN]; batch.len()];
        crate::crypto::random_bytes(nonces.as_flattened_mut())?;
        let session = &self.session;
        let sealed = batch
            .into_par_iter()
            .zip(nonces)
            .map(|((kind, id, body, raw_length), nonce)| {
                let blob = SealedBlob::seal(session, repo, kind, &id, body, nonce)?;
                Ok((kind, id, raw_length, blob))
            })
            .collect::<Result<Vec<_>>>()?;
        for (kind, id, raw_length, blob) in sealed {
            let length = u32::try_from(blob.body.len() + SEAL_OVERHEAD)
                .map_err(|_| Error::invalid("blob larger than 4 GiB"))?;
            let at = self.appended + self.buffer.len() as u64;
            self.blobs.push((kind, id, at, length, raw_length));
            for part in [&blob.nonce[..], &blob.body[..], &blob.tag[..]] {
                if self.buffer.len() + part.len() > SPOOL_BUFFER {
                    self.append()?;
                }
                if part.len() >= SPOOL_BUFFER {
                    self.append_bytes(part)?;
                } else {
                    self.buffer.extend_from_slice(part);
                }
            }
        }
        Ok(())
    }

    fn append(&mut self) -> Result<()> {
        let buffer = std::mem::take(&mut self.buffer);
        self.append_bytes(&buffer)?;
        self.buffer = buffer;
        self.buffer.clear();
        Ok(())
    }

    fn append_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(bytes, self.appended)
            .map_err(|e| self.spool_error("writing", e))?;
        self.appended += bytes.len() as u64;
        Ok(())
    }

    fn spool_error(&self, doing: &str, e: std::io::Error) -> Error {
        spool_error(&self.dir, doing, e)
    }

    /// Writes the whole pack to `sink`: head, the blobs in a random order, and the
    /// sealed header. Returns its id (the hash of what was written), its length
    /// and its entries in pack order.
    pub fn write_to(
        mut self,
        repo: &RepoId,
        sink: &mut dyn std::io::Write,
    ) -> Result<(PackId, u64, Vec<PackEntry>)> {
        use std::os::unix::fs::FileExt;
        self.append()?;
        self.buffer = Vec::new();
        shuffle(&mut self.blobs)?;
        let head = pack_head(&self.session_id);
        let mut offset = u32::try_from(head.len()).map_err(|_| too_big())?;
        let mut entries = Vec::with_capacity(self.blobs.len());
        for &(kind, id, _, length, raw_length) in &self.blobs {
            entries.push(PackEntry {
                kind,
                id,
                offset,
                length,
                raw_length,
            });
            offset = offset.checked_add(length).ok_or_else(too_big)?;
        }
        let tail = pack_tail(&self.session, repo, &entries)?;
        let mut out = HashedWriter::new(sink);
        out.put(&head).map_err(sink_error)?;
        let mut stage = vec![0u8; HASH_STAGE];
        for &(_, _, at, length, _) in &self.blobs {
            let mut at = at;
            let mut rest = length as usize;
            while rest > 0 {
                let n = rest.min(stage.len());
                let piece = stage.get_mut(..n).ok_or_else(too_big)?;
                self.file
                    .read_exact_at(piece, at)
                    .map_err(|e| self.spool_error("reading", e))?;
                out.put(piece).map_err(sink_error)?;
                at += n as u64;
                rest -= n;
            }
        }
        out.put(&tail).map_err(sink_error)?;
        let (id, len) = out.finish().map_err(sink_error)?;
        Ok((PackId(id), len, entries))
    }
}

/// An error of the sink a pack is written to; it names where it writes.
fn sink_error(e: std::io::Error) -> Error {
    match e.downcast::<Error>() {
        Ok(e) => e,
        Err(e) => Error::invalid(format!("writing a pack: {e}")),
    }
}

/// Writes to a sink and hashes what it wrote, in stages of [`HASH_STAGE`]
/// bytes (see [`hash_parts`] for why).
struct HashedWriter<'a> {
    sink: &'a mut dyn std::io::Write,
    hasher: blake3::Hasher,
    stage: Vec<u8>,
    len: u64,
}

impl<'a> HashedWriter<'a> {
    fn new(sink: &'a mut dyn std::io::Write) -> Self {
        Self {
            sink,
            hasher: blake3::Hasher::new(),
            stage: Vec::with_capacity(HASH_STAGE),
            len: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.len += bytes.len() as u64;
        if self.stage.len() + bytes.len() > HASH_STAGE {
            self.flush_stage()?;
        }
        if bytes.len() >= HASH_STAGE {
            self.hasher.update(bytes);
            return self.sink.write_all(bytes);
        }
        self.stage.extend_from_slice(bytes);
        Ok(())
    }

    fn flush_stage(&mut self) -> std::io::Result<()> {
        self.hasher.update(&self.stage);
        self.sink.write_all(&self.stage)?;
        self.stage.clear();
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<([u8; 32], u64)> {
        self.flush_stage()?;
        self.sink.flush()?;
        Ok((*self.hasher.finalize().as_bytes(), self.len))
    }
}

/// Bytes gathered before each BLAKE3 update in [`hash_parts`].
const HASH_STAGE: usize = 256 * 1024;

/// BLAKE3 of the concatenation of `parts`, and its length. BLAKE3 is fast on
/// long inputs, whose 1 KiB chunks it hashes side by side in SIMD lanes; fed a
/// pack's pieces one by one (a 12-byte nonce, a blob of a few KiB, a 16-byte
/// tag) it compressed one 64-byte block at a time, and hashing a pack of small
/// files' blobs took a sixth of a first backup's CPU time. The pieces are
/// copied into a buffer first, which costs far less.
fn hash_parts(parts: &[&[u8]]) -> std::io::Result<([u8; 32], u64)> {
    let mut sink = std::io::sink();
    let mut out = HashedWriter::new(&mut sink);
    for part in parts {
        out.put(part)?;
    }
    out.finish()
}

/// The header's payload: raw msgpack entries, padded so that the sealed header
/// (the one length in a pack that is in the clear) is a power of two of at least
/// 4 KiB (format-spec §11.1): it tells an observer of the storage the order of
/// magnitude of the number of blobs, not the number.
fn encode_header(entries: &[PackEntry]) -> Result<Vec<u8>> {
    let mut out = vec![format::PAYLOAD_RAW];
    let list = rmp_serde::to_vec(entries)
        .map_err(|e| Error::invalid(format!("encoding a pack header: {e}")))?;
    out.extend_from_slice(&list);
    format::pad_payload(&mut out, SEAL_OVERHEAD);
    if out.len() + SEAL_OVERHEAD > MAX_HEADER_LEN as usize {
        return Err(Error::invalid(format!(
            "a pack header of {} entries would pass the {MAX_HEADER_LEN}-byte limit",
            entries.len()
        )));
    }
    Ok(out)
}

fn shuffle<T>(v: &mut [T]) -> Result<()> {
    let mut rnd = vec![0u8; v.len() * 8];
    crate::crypto::random_bytes(&mut rnd)?;
    for i in (1..v.len()).rev() {
        let r = rnd
            .get(i * 8..i * 8 + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0);
        v.swap(i, (r % (i as u64 + 1)) as usize);
    }
    Ok(())
}

/// The session id of a pack, from its first bytes.
pub fn parse_session(start: &[u8], pack: &PackId) -> Result<[u8; SESSION_ID_LEN]> {
    let what = || format!("pack {pack}");
    let rest = format::check_prefix(start, FileKind::Pack, &what)?;
    rest.first_chunk::<SESSION_ID_LEN>()
        .copied()
        .ok_or_else(|| Error::corrupt(what(), "too short to hold a session id"))
}

/// Decrypts and validates a pack header: every entry must lie inside the blob area,
/// entries must not overlap, and lengths must be within the format's limits.
pub fn decode_header(
    session: &SessionKey,
    repo: &RepoId,
    sealed: &[u8],
    header_start: u64,
    pack: &PackId,
) -> Result<Vec<PackEntry>> {
    let what = || format!("header of pack {pack}");
    let plain = session.open(
        &format::aad(repo, SealKind::PackHeader, None),
        sealed,
        &what,
    )?;
    decode_header_plaintext(&plain, header_start, &what)
}

/// Parses and validates the plaintext of a pack header (after authentication).
pub fn decode_header_plaintext(
    plain: &[u8],
    header_start: u64,
    what: &dyn Fn() -> String,
) -> Result<Vec<PackEntry>> {
    let msg = format::decode_payload(plain, None, MAX_HEADER_LEN as usize, what)?;
    let entries: Vec<PackEntry> = format::from_msgpack(&msg, what)?;
    validate_entries(&entries, header_start).map_err(|r| Error::corrupt(what(), r))?;
    Ok(entries)
}

/// Checks that entries tile part of `[PACK_DATA_START, data_end)` without overlap.
pub fn validate_entries(entries: &[PackEntry], data_end: u64) -> std::result::Result<(), String> {
    let mut spans: Vec<(u64, u64)> = Vec::with_capacity(entries.len());
    for e in entries {
        let start = u64::from(e.offset);
        let end = start + u64::from(e.length);
        if start < PACK_DATA_START as u64 || end > data_end {
            return Err(format!(
                "blob {} at {}+{} lies outside the blob area",
                e.id, e.offset, e.length
            ));
        }
        if (e.length as usize) < SEAL_OVERHEAD + 1 {
            return Err(format!(
                "blob {} has an impossible stored length {}",
                e.id, e.length
            ));
        }
        if e.raw_length > MAX_BLOB_LEN {
            return Err(format!(
                "blob {} claims {} bytes, over the {} limit",
                e.id, e.raw_length, MAX_BLOB_LEN
            ));
        }
        spans.push((start, end));
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        if let [a, b] = w {
            if b.0 < a.1 {
                return Err(format!("blobs at offsets {} and {} overlap", a.0, b.0));
            }
        }
    }
    Ok(())
}

/// Decodes the header of a whole pack held in memory; returns the pack's session
/// key with the entries, ready for `open_blob`.
pub fn header_from_bytes(
    key: &MasterKey,
    repo: &RepoId,
    pack: &PackId,
    bytes: &[u8],
) -> Result<(SessionKey, Vec<PackEntry>)> {
    check_pack_len(bytes, pack)?;
    let session = key.session(&parse_session(bytes, pack)?);
    let entries = header_with_session(&session, repo, pack, bytes)?;
    Ok((session, entries))
}

/// A whole pack must hold its prefix, session id and header length.
fn check_pack_len(bytes: &[u8], pack: &PackId) -> Result<()> {
    let size = bytes.len();
    if size < PACK_DATA_START + 4 {
        return Err(Error::corrupt(
            format!("pack {pack}"),
            format!("{size} bytes is too short for a pack"),
        ));
    }
    Ok(())
}

/// The session id stored in a pack's first bytes, whatever its prefix says: for
/// salvaging a pack whose prefix is damaged (each blob still authenticates, so a
/// wrong session id only makes every blob fail).
pub fn raw_session_id(bytes: &[u8]) -> Option<[u8; SESSION_ID_LEN]> {
    bytes
        .get(PREFIX_LEN..PACK_DATA_START)
        .and_then(|s| s.try_into().ok())
}

/// Decodes the header of a whole pack held in memory with a known session key,
/// without looking at the prefix.
pub fn header_with_session(
    session: &SessionKey,
    repo: &RepoId,
    pack: &PackId,
    bytes: &[u8],
) -> Result<Vec<PackEntry>> {
    check_pack_len(bytes, pack)?;
    let what = || format!("pack {pack}");
    let size = bytes.len();
    let min = PACK_DATA_START + 4;
    let (body, tail) = bytes.split_at(size - 4);
    let header_len = tail
        .first_chunk::<4>()
        .map(|b| u32::from_le_bytes(*b))
        .unwrap_or(0);
    if header_len > MAX_HEADER_LEN || header_len as usize > size - min {
        return Err(Error::corrupt(
            what(),
            format!("header length {header_len} does not fit in a {size}-byte pack"),
        ));
    }
    let header_start = body.len() - header_len as usize;
    let sealed = body.get(header_start..).unwrap_or_default();
    decode_header(session, repo, sealed, header_start as u64, pack)
}

/// Reads and decodes the header of a stored pack of `size` bytes.
pub fn read_header(
    backend: &dyn Backend,
    key: &MasterKey,
    repo: &RepoId,
    pack: &PackId,
    size: u64,
) -> Result<Vec<PackEntry>> {
    let what = || format!("pack {pack}");
    let name = pack.to_hex();
    let min = PACK_DATA_START as u64 + 4;
    if size < min {
        return Err(Error::corrupt(
            what(),
            format!("{size} bytes is too short for a pack"),
        ));
    }
    let start = backend.read_range(FileType::Pack, &name, 0, PACK_DATA_START as u64)?;
    let session = key.session(&parse_session(&start, pack)?);
    let tail = backend.read_range(FileType::Pack, &name, size - 4, 4)?;
    let header_len = tail
        .first_chunk::<4>()
        .map(|b| u32::from_le_bytes(*b))
        .unwrap_or(0);
    if header_len > MAX_HEADER_LEN || u64::from(header_len) > size - min {
        return Err(Error::corrupt(
            what(),
            format!("header length {header_len} does not fit in a {size}-byte pack"),
        ));
    }
    let header_start = size - 4 - u64::from(header_len);
    let sealed = backend.read_range(FileType::Pack, &name, header_start, u64::from(header_len))?;
    decode_header(&session, repo, &sealed, header_start, pack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_read_back() {
        let key = MasterKey::generate().unwrap();
        let repo = RepoId([3; 32]);
        let mut b = PackBuilder::new(&key).unwrap();
        let blobs: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100 + i as usize]).collect();
        for data in &blobs {
            let id = key.blob_id(data);
            b.add(
                BlobKind::Data,
                id,
                format::encode_payload(data, 3),
                data.len() as u32,
            );
        }
        let p = b.finish(&repo).unwrap();
        let bytes = p.to_bytes();
        assert_eq!(p.len(), bytes.len() as u64);
        assert_eq!(p.id, PackId::of_stored(&bytes));
        let session = key.session(&parse_session(&bytes, &p.id).unwrap());
        let n = bytes.len();
        let hl = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) as usize;
        assert_eq!(
            hl,
            format::PAD_MIN,
            "20 entries: the smallest padded header"
        );
        let hs = n - 4 - hl;
        let entries = decode_header(&session, &repo, &bytes[hs..n - 4], hs as u64, &p.id).unwrap();
        assert_eq!(entries, p.entries);
        for e in &entries {
            let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            let plain = open_blob(&key, &session, &repo, e, sealed, &p.id).unwrap();
            assert_eq!(key.blob_id(&plain), e.id);
            // The same bytes presented as a tree blob, or under another id, fail.
            let mut as_tree = *e;
            as_tree.kind = BlobKind::Tree;
            assert!(open_blob(&key, &session, &repo, &as_tree, sealed, &p.id).is_err());
        }
    }

    /// A spooled pack is a pack like any other: its id is the hash of its
    /// bytes, its header lists every blob, each blob opens; the blobs are not
    /// in the order they were added; and blobs larger than the read stage and
    /// the spool's buffer come through whole.
    #[test]
    fn a_spooled_pack_reads_back_with_its_blobs_in_a_random_order() {
        let key = MasterKey::generate().unwrap();
        let repo = RepoId([5; 32]);
        let dir = tempfile::tempdir().unwrap();
        let file = tempfile::tempfile_in(dir.path()).unwrap();
        let mut spool = PackSpool::new(&key, file, dir.path().to_path_buf()).unwrap();
        let mut rng = 7u64;
        let mut added = Vec::new();
        for batch in 0..4 {
            let mut blobs = Vec::new();
            for i in 0..16usize {
                // Mostly small; one per batch is 1.5 MiB of noise, larger than
                // the spool's buffer and the read stage.
                let len = if i == 3 {
                    3 << 19
                } else {
                    10 + batch * 100 + i
                };
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng as u8
                    })
                    .collect();
                let id = key.blob_id(&data);
                added.push(id);
                blobs.push((
                    BlobKind::Data,
                    id,
                    format::encode_payload(&data, 3),
                    len as u32,
                ));
            }
            spool.add(&repo, blobs).unwrap();
        }
        assert_eq!(spool.len(), 64);
        let mut bytes = Vec::new();
        let hint = spool.size_hint();
        let (id, len, entries) = spool.write_to(&repo, &mut bytes).unwrap();
        assert_eq!(len, bytes.len() as u64);
        assert!(
            hint >= bytes.len(),
            "size hint {hint} below {}",
            bytes.len()
        );
        assert_eq!(id, PackId::of_stored(&bytes));
        let session = key.session(&parse_session(&bytes, &id).unwrap());
        let n = bytes.len();
        let hl = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) as usize;
        let hs = n - 4 - hl;
        let header = decode_header(&session, &repo, &bytes[hs..n - 4], hs as u64, &id).unwrap();
        assert_eq!(header, entries);
        let mut order = Vec::new();
        for e in &entries {
            let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            let plain = open_blob(&key, &session, &repo, e, sealed, &id).unwrap();
            assert_eq!(key.blob_id(&plain), e.id);
            assert_eq!(plain.len() as u32, e.raw_length);
            order.push(e.id);
        }
        assert_ne!(order, added, "the blobs lie in the order they were added");
        order.sort();
        added.sort();
        assert_eq!(order, added);
    }

    /// A spool that can't be written is an error naming where it is.
    #[test]
    fn a_spool_that_cannot_be_written_names_its_directory() {
        let key = MasterKey::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let read_only = std::fs::File::open(&path).unwrap();
        let mut spool = PackSpool::new(&key, read_only, dir.path().to_path_buf()).unwrap();
        let mut data = vec![0u8; 2 << 20];
        crate::crypto::random_bytes(&mut data).unwrap();
        let blob = (
            BlobKind::Data,
            key.blob_id(&data),
            format::encode_payload(&data, 0),
            2 << 20,
        );
        let e = spool
            .add(&RepoId([5; 32]), vec![blob])
            .unwrap_err()
            .to_string();
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        assert!(e.contains("spool"), "{e}");
    }

    /// The staged hash equals the hash of the concatenation, whatever the
    /// pieces: tiny ones, ones that cross a stage boundary, and ones longer
    /// than a stage.
    #[test]
    fn hashing_a_pack_in_pieces_hashes_its_bytes() {
        let mut seed = 7u64;
        let mut piece = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 56) as u8
                })
                .collect()
        };
        let lens = [
            0,
            12,
            4000,
            16,
            HASH_STAGE - 5,
            30,
            HASH_STAGE,
            1,
            3 * HASH_STAGE + 7,
            HASH_STAGE / 2,
            HASH_STAGE / 2 + 1,
        ];
        let pieces: Vec<Vec<u8>> = lens.iter().map(|&n| piece(n)).collect();
        let parts: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let whole = parts.concat();
        let (id, len) = hash_parts(&parts).unwrap();
        assert_eq!(len, whole.len() as u64);
        assert_eq!(id, *blake3::hash(&whole).as_bytes());
        assert_eq!(hash_parts(&[]).unwrap().0, *blake3::hash(b"").as_bytes());
    }

    /// The header length in the clear is a power of two of at least 4 KiB, so it
    /// gives away the number of blobs only to within a factor of two.
    #[test]
    fn header_lengths_fall_in_power_of_two_buckets() {
        let key = MasterKey::generate().unwrap();
        let repo = RepoId([3; 32]);
        let mut seen = Vec::new();
        for n in [1usize, 80, 90, 170, 700, 3000] {
            let mut b = PackBuilder::new(&key).unwrap();
            for i in 0..n {
                let data = (i as u32).to_le_bytes();
                b.add(
                    BlobKind::Data,
                    key.blob_id(&data),
                    format::encode_payload(&data, 0),
                    4,
                );
            }
            let bytes = b.finish(&repo).unwrap().to_bytes();
            let hl = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
            assert!(
                hl.is_power_of_two() && hl >= format::PAD_MIN,
                "{n} blobs: {hl}"
            );
            let (_, entries) =
                header_from_bytes(&key, &repo, &PackId::of_stored(&bytes), &bytes).unwrap();
            assert_eq!(entries.len(), n);
            seen.push(hl);
        }
        assert_eq!(seen[0], seen[1], "1 and 80 blobs look alike");
        assert!(seen[5] > seen[1]);
    }

    #[test]
    fn overlapping_or_outside_entries_are_rejected() {
        let e = |offset, length| PackEntry {
            kind: BlobKind::Data,
            id: BlobId([0; 32]),
            offset,
            length,
            raw_length: 1,
        };
        assert!(validate_entries(&[e(42, 40)], 100).is_ok());
        assert!(validate_entries(&[e(10, 40)], 100).is_err());
        assert!(validate_entries(&[e(42, 80)], 100).is_err());
        assert!(validate_entries(&[e(42, 40), e(60, 30)], 200).is_err());
        assert!(validate_entries(&[e(42, 5)], 200).is_err());
    }
}
