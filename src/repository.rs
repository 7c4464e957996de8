//! An opened repository: backend + master key + config. Reading and writing of the
//! sealed files (index, snapshots, locks) and of blobs goes through here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, FileType};
use crate::cache::Cache;
use crate::chunker::Chunker;
use crate::config::{self, ChunkerParams, Config};
use crate::crypto::{KdfParams, MasterKey, SESSION_ID_LEN};
use crate::error::{Error, Result};
use crate::format::{self, FileKind, SealKind};
use crate::id::{BlobId, IndexId, KeyId, PackId, RepoId, SnapshotId};
use crate::index::{INDEX_MAX_LEN, Index, IndexFile};
use crate::keyfile::KeyFile;
use crate::pack::{self, BlobKind, FinishedPack, PACK_DATA_START, PackSpool};
use crate::snapshot::{SNAPSHOT_MAX_LEN, Snapshot};
use crate::tree::{Tree, TreeView};

/// Options of `init`.
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub compression: i32,
    pub pack_size: u32,
    /// `None`: [`KdfParams::recommended`].
    pub kdf: Option<KdfParams>,
    /// Share blob ids and chunk boundaries with this existing repository's key.
    pub share_ids_with: Option<MasterKey>,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            chunker: ChunkerParams::default(),
            compression: config::DEFAULT_COMPRESSION,
            pack_size: config::DEFAULT_PACK_SIZE,
            kdf: None,
            share_ids_with: None,
        }
    }
}

/// Readable snapshots (oldest first) and unreadable ones with their errors.
pub type Snapshots = (Vec<(SnapshotId, Snapshot)>, Vec<(SnapshotId, Error)>);

pub struct Repository {
    backend: Arc<dyn Backend>,
    key: MasterKey,
    config: Config,
    key_id: KeyId,
    sessions: Mutex<HashMap<PackId, [u8; SESSION_ID_LEN]>>,
    cache: Option<Cache>,
    /// Without the cache, on object storage: the last few tree packs read
    /// whole, so that walking trees costs a request per pack rather than per
    /// tree ([`TREE_PACKS_HELD`] at most, each at most a pack).
    tree_packs: Mutex<std::collections::VecDeque<(PackId, Arc<Vec<u8>>)>>,
}

/// Tree packs [`Repository`] keeps in memory when it reads object storage
/// without the cache.
const TREE_PACKS_HELD: usize = 4;
/// Larger tree packs (a repository made with a large `--pack-size`) are read
/// a blob at a time instead.
const TREE_PACK_HELD_MAX: u64 = 64 << 20;

/// Bytes per read when a tree pack on a local disk is copied into the cache:
/// below the size read with O_DIRECT (and its 4 MiB staging buffer).
const CACHE_COPY_PIECE: u64 = 256 << 10;

impl Repository {
    /// Creates a repository in an empty or missing location. The config file is
    /// written last: until it exists the location is not a repository, so an
    /// interrupted `init` leaves nothing that `open` would accept.
    pub fn init(backend: Arc<dyn Backend>, password: &[u8], opts: InitOptions) -> Result<Self> {
        let cfg = Config {
            version: u32::from(format::FORMAT_VERSION),
            repo_id: RepoId(crate::crypto::random_array()?),
            chunker: opts.chunker,
            compression: opts.compression,
            pack_size: opts.pack_size,
        };
        cfg.validate().map_err(Error::invalid)?;
        let kdf = match opts.kdf {
            Some(k) => k,
            None => KdfParams::recommended()?,
        };
        backend.create()?;
        let key = match &opts.share_ids_with {
            Some(other) => MasterKey::generate_sharing_ids_with(other)?,
            None => MasterKey::generate()?,
        };
        let kf = KeyFile::create(&key, cfg.repo_id, password, kdf)?.encode();
        let key_id = KeyId::of_stored(&kf);
        backend.write(FileType::Key, &key_id.to_hex(), &kf)?;
        backend.write(FileType::Config, "config", &cfg.encode(&key)?)?;
        Ok(Self::assemble(backend, key, cfg, key_id))
    }

    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Self> {
        if !backend.is_repository()? {
            return Err(Error::NotARepository(backend.location()));
        }
        let raw = backend.read(FileType::Config, "config", config::CONFIG_MAX_LEN)?;
        // Damage that no key is needed to see is reported as such, before any key
        // is tried; after that, the config only ever answers "not this key".
        let sealed_config = Config::parse_sealed(&raw)?;
        let repo_id = sealed_config.repo_id;
        let ids = crate::keys::key_ids(&*backend)?;
        if ids.is_empty() {
            return Err(Error::corrupt(
                format!("{}/keys", backend.location()),
                "there are no key files, so nothing can open the repository",
            ));
        }
        // Decode every key file first (cheap) keeping only its cost, then derive in
        // order of cost (see `keys::sort_for_opening`), reading each file again
        // when it is tried: memory holds one key file at a time, however many.
        let mut first_err = None;
        let mut unreadable = 0;
        let mut order = Vec::with_capacity(ids.len());
        for id in &ids {
            match crate::keys::load_key_file(&*backend, id) {
                Ok(kf) => order.push((*id, kf.kdf.cost())),
                Err(e) => {
                    unreadable += 1;
                    first_err.get_or_insert(e);
                }
            }
        }
        crate::keys::sort_for_opening(&mut order);
        for (id, _) in &order {
            let attempt = crate::keys::load_key_file(&*backend, id)
                .and_then(|kf| kf.unwrap_key(password, id, &repo_id));
            match attempt {
                // A key that unwraps but doesn't open the config (a planted key
                // file, or a damaged config) is passed over like a wrong password
                // and never reported otherwise: anyone who can write to keys/ can
                // plant a key for a guessed password, and a different answer would
                // confirm the guess (format-spec §9).
                Ok(Some(key)) => {
                    if let Some(cfg) = sealed_config.open(&key)? {
                        return Ok(Self::assemble(backend, key, cfg, *id));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    unreadable += 1;
                    first_err.get_or_insert(e);
                }
            }
        }
        // A damaged key file matters only when no other key opened the repository.
        // Which keys are unreadable doesn't depend on the password.
        match first_err {
            Some(e) if ids.len() == 1 => Err(e),
            _ => Err(Error::WrongPassword {
                repo: backend.location(),
                keys: ids.len(),
                unreadable,
            }),
        }
    }

    fn assemble(backend: Arc<dyn Backend>, key: MasterKey, config: Config, key_id: KeyId) -> Self {
        Self {
            backend,
            key,
            config,
            key_id,
            sessions: Mutex::new(HashMap::new()),
            cache: None,
            tree_packs: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Keeps index files, snapshots and tree packs in a local cache under `base`
    /// (see `cache`). Not for commands that audit or rewrite the repository.
    pub fn enable_cache(&mut self, base: &std::path::Path) {
        self.cache = Cache::open(base, self.repo_id());
    }

    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn repo_id(&self) -> &RepoId {
        &self.config.repo_id
    }

    pub fn chunker(&self) -> Chunker {
        Chunker::new(self.config.chunker, self.key.chunker_seed())
    }

    /// Seals `plaintext` (compressed at the repository's level when that helps;
    /// level 0 stores it raw, §6) and writes it under the hash of the stored
    /// bytes. Returns that name.
    pub fn save_sealed(
        &self,
        file: FileKind,
        seal: SealKind,
        t: FileType,
        plaintext: &[u8],
    ) -> Result<(String, u64)> {
        self.save_sealed_payload(file, seal, t, plaintext, false)
    }

    /// [`Self::save_sealed`], padding the file to a power of two of at least
    /// 4 KiB when `pad` (index files, whose size would otherwise tell how many
    /// blobs their packs hold; format-spec §6, §12).
    fn save_sealed_payload(
        &self,
        file: FileKind,
        seal: SealKind,
        t: FileType,
        plaintext: &[u8],
        pad: bool,
    ) -> Result<(String, u64)> {
        let mut payload = format::encode_payload(plaintext, self.config.compression);
        if pad {
            format::pad_payload(&mut payload, format::SEALED_FILE_OVERHEAD);
        }
        let bytes = format::seal_file(&self.key, self.repo_id(), file, seal, &payload)?;
        let name = hex::encode(blake3::hash(&bytes).as_bytes());
        self.backend.write(t, &name, &bytes)?;
        // Written through to the cache on object storage: the next command
        // would otherwise fetch back what this one just wrote, a round trip each.
        if let Some(c) = self.cache.as_ref().filter(|_| {
            matches!(t, FileType::Index | FileType::Snapshot) && self.backend.write_through_cache()
        }) {
            c.put(t, &name, &bytes);
        }
        Ok((name, bytes.len() as u64))
    }

    /// Reads, checks the name against the content hash, and unseals a file.
    pub fn load_sealed(
        &self,
        file: FileKind,
        seal: SealKind,
        t: FileType,
        name: &str,
        max_len: u64,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<u8>> {
        let cacheable = matches!(t, FileType::Index | FileType::Snapshot);
        let cached = self
            .cache
            .as_ref()
            .filter(|_| cacheable)
            .and_then(|c| c.get(t, name));
        let bytes = match cached {
            Some(b) => b,
            None => {
                let b = self.backend.read(t, name, max_len)?;
                check_name(&b, name, &what())?;
                if let Some(c) = self.cache.as_ref().filter(|_| cacheable) {
                    c.put(t, name, &b);
                }
                b
            }
        };
        let payload = format::open_file(&self.key, self.repo_id(), file, seal, &bytes, what)?;
        format::decode_payload(&payload, None, max_len as usize, what)
    }

    pub fn save_index(&self, f: &IndexFile) -> Result<(IndexId, u64)> {
        let (name, size) = self.save_sealed_payload(
            FileKind::Index,
            SealKind::Index,
            FileType::Index,
            &format::to_msgpack(f),
            true,
        )?;
        Ok((IndexId::from_name(&name)?, size))
    }

    pub fn load_index_file(&self, id: &IndexId) -> Result<IndexFile> {
        let what = || format!("index {id}");
        let plain = self.load_sealed(
            FileKind::Index,
            SealKind::Index,
            FileType::Index,
            &id.to_hex(),
            INDEX_MAX_LEN,
            &what,
        )?;
        IndexFile::decode(&plain, &what)
    }

    /// The ids of the stored files of type `t`. Names that are not 64 lowercase
    /// hex digits are not cairn files and are skipped (`check` notes them).
    pub fn list_ids<T>(&self, t: FileType, parse: fn(&str) -> Result<T>) -> Result<Vec<T>> {
        Ok(self
            .backend
            .list(t)?
            .iter()
            .filter(|e| crate::id::is_file_name(&e.name))
            .filter_map(|e| parse(&e.name).ok())
            .collect())
    }

    /// Loads every index file into memory. An index file that can't be read is
    /// passed to `unreadable` and left out: its blobs then look absent, so a
    /// backup stores them again and a restore reports the files that need them,
    /// while every other file stays usable. Commands that delete data (prune,
    /// repair) read the index files themselves and refuse instead.
    pub fn load_index(&self, unreadable: &mut dyn FnMut(&IndexId, &Error)) -> Result<Index> {
        let mut index = crate::index::IndexBuilder::new();
        let ids = self.list_ids(FileType::Index, IndexId::from_name)?;
        let mut loaded = Vec::with_capacity(ids.len());
        for id in &ids {
            match self.load_index_file(id) {
                Ok(f) => {
                    index.add_file(&f);
                    loaded.push(*id);
                }
                // Damage is left out, with a word. A read that failed (EIO, a NAS
                // that went away) is an error: leaving the file out would make
                // its blobs look absent for no reason.
                Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. })) => {
                    unreadable(id, &e)
                }
                Err(e) => return Err(e),
            }
        }
        let index = index.build().with_files(loaded);
        if let Some(c) = &self.cache {
            c.retain(FileType::Index, &ids.iter().map(|i| i.to_hex()).collect());
            c.retain(
                FileType::Pack,
                &index.packs().map(|(p, _)| p.to_hex()).collect(),
            );
        }
        Ok(index)
    }

    pub fn save_snapshot(&self, s: &Snapshot) -> Result<(SnapshotId, u64)> {
        let plain = format::to_msgpack(s);
        // Readers refuse a larger one (spec §17): never write it.
        if plain.len() as u64 > SNAPSHOT_MAX_LEN {
            return Err(Error::invalid(format!(
                "the snapshot would be {} bytes, more than the {SNAPSHOT_MAX_LEN} readers \
                 accept; it was not written",
                plain.len()
            )));
        }
        let (name, size) = self.save_sealed(
            FileKind::Snapshot,
            SealKind::Snapshot,
            FileType::Snapshot,
            &plain,
        )?;
        Ok((SnapshotId::from_name(&name)?, size))
    }

    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let what = || format!("snapshot {id}");
        let plain = self.load_sealed(
            FileKind::Snapshot,
            SealKind::Snapshot,
            FileType::Snapshot,
            &id.to_hex(),
            SNAPSHOT_MAX_LEN,
            &what,
        )?;
        format::from_msgpack(&plain, &what)
    }

    /// All snapshots, oldest first; any unreadable snapshot is an error. For
    /// operations that must not overlook one (prune would delete its data).
    pub fn list_snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let (ok, mut bad) = self.list_snapshots_lenient()?;
        match bad.pop() {
            Some((_, e)) => Err(e),
            None => Ok(ok),
        }
    }

    /// Readable snapshots, oldest first, and the unreadable ones with their errors:
    /// one damaged snapshot must not hide the others from listing and restores.
    pub fn list_snapshots_lenient(&self) -> Result<Snapshots> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        let ids = self.list_ids(FileType::Snapshot, SnapshotId::from_name)?;
        if let Some(c) = &self.cache {
            c.retain(
                FileType::Snapshot,
                &ids.iter().map(|i| i.to_hex()).collect(),
            );
        }
        for id in ids {
            match self.load_snapshot(&id) {
                Ok(s) => out.push((id, s)),
                Err(e) => bad.push((id, e)),
            }
        }
        crate::snapshot::sort_oldest_first(&mut out);
        Ok((out, bad))
    }

    pub fn write_pack(&self, p: &FinishedPack) -> Result<()> {
        let name = p.id.to_hex();
        self.backend
            .write_parts(FileType::Pack, &name, &p.parts())?;
        // Tree packs are cached whole when read (`read_cached_tree`); one just
        // written goes there at once, so the next backup's walk of its parent
        // reads nothing back.
        if let Some(c) = self
            .cache
            .as_ref()
            .filter(|_| self.backend.write_through_cache())
        {
            if p.entries.first().is_some_and(|e| e.kind == BlobKind::Tree) {
                c.put(FileType::Pack, &name, &p.parts().concat());
            }
        }
        Ok(())
    }

    /// Writes a spooled pack (see [`PackSpool`]); returns its id, length and
    /// entries. A tree pack goes to the cache too, as in [`Self::write_pack`].
    pub fn write_spooled_pack(
        &self,
        spool: PackSpool,
        kind: BlobKind,
    ) -> Result<(PackId, u64, Vec<pack::PackEntry>)> {
        let mut cached =
            (kind == BlobKind::Tree && self.cache.is_some() && self.backend.write_through_cache())
                .then(Vec::new);
        let size_hint = spool.size_hint();
        let mut spool = Some(spool);
        let mut done = None;
        let repo_id = self.repo_id();
        let name = self
            .backend
            .write_streamed(FileType::Pack, size_hint, &mut |sink| {
                let spool = spool
                    .take()
                    .ok_or_else(|| Error::invalid("a pack's bytes were asked for twice"))?;
                let written = match cached.as_mut() {
                    Some(copy) => spool.write_to(repo_id, &mut Tee { sink, copy })?,
                    None => spool.write_to(repo_id, sink)?,
                };
                let name = written.0.to_hex();
                done = Some(written);
                Ok(name)
            })?;
        let done = done.ok_or_else(|| Error::invalid("a pack was not written"))?;
        if let (Some(c), Some(bytes)) = (self.cache.as_ref(), cached) {
            c.put(FileType::Pack, &name, &bytes);
        }
        Ok(done)
    }

    pub(crate) fn pack_session(&self, pack: &PackId) -> Result<crate::crypto::SessionKey> {
        let cached = self.sessions.lock().ok().and_then(|m| m.get(pack).copied());
        let sid = match cached {
            Some(s) => s,
            None => {
                let name = pack.to_hex();
                let cached = self
                    .cache
                    .as_ref()
                    .and_then(|c| c.read_range(FileType::Pack, &name, 0, PACK_DATA_START as u64));
                let start = match cached {
                    Some(s) => s,
                    None => {
                        self.backend
                            .read_range(FileType::Pack, &name, 0, PACK_DATA_START as u64)?
                    }
                };
                let s = pack::parse_session(&start, pack)?;
                if let Ok(mut m) = self.sessions.lock() {
                    m.insert(*pack, s);
                }
                s
            }
        };
        Ok(self.key.session(&sid))
    }

    /// Reads, authenticates, decompresses and re-hashes one blob of the kind the
    /// caller expects: a data blob is never read as a tree, nor a tree as data.
    pub fn read_blob(&self, index: &Index, kind: BlobKind, id: &BlobId) -> Result<Vec<u8>> {
        let (pack_id, entry) = index.get(kind, id).ok_or_else(|| Error::Missing {
            what: format!("{} blob {id}", kind.name()),
            reason: "no index file lists it; run `cairn check`".into(),
        })?;
        let session = self.pack_session(&pack_id)?;
        if entry.kind == BlobKind::Tree {
            if let Some(plain) = self.read_cached_tree(index, &pack_id, &entry, &session) {
                return Ok(plain);
            }
            if let Some(plain) = self.read_held_tree(index, &pack_id, &entry, &session) {
                return Ok(plain);
            }
        }
        let sealed = self.backend.read_range(
            FileType::Pack,
            &pack_id.to_hex(),
            u64::from(entry.offset),
            u64::from(entry.length),
        )?;
        pack::open_blob(
            &self.key,
            &session,
            self.repo_id(),
            &entry,
            &sealed,
            &pack_id,
        )
    }

    /// Like [`Self::read_blob`], but returns the blob's stored payload (compressed
    /// or raw, format-spec §6) and its plaintext length, once the plaintext is
    /// checked against the id: for storing the blob elsewhere without compressing
    /// it again.
    pub fn read_blob_payload(
        &self,
        index: &Index,
        kind: BlobKind,
        id: &BlobId,
    ) -> Result<(Vec<u8>, usize)> {
        let (pack_id, entry) = index.get(kind, id).ok_or_else(|| Error::Missing {
            what: format!("{} blob {id}", kind.name()),
            reason: "no index file lists it; run `cairn check`".into(),
        })?;
        let session = self.pack_session(&pack_id)?;
        let sealed = self.backend.read_range(
            FileType::Pack,
            &pack_id.to_hex(),
            u64::from(entry.offset),
            u64::from(entry.length),
        )?;
        let payload = pack::open_blob_payload(
            &self.key,
            &session,
            self.repo_id(),
            &entry,
            &sealed,
            &pack_id,
        )?;
        Ok((payload, entry.raw_length as usize))
    }

    /// A tree blob from the cached copy of its pack, fetching the whole pack into
    /// the cache first if needed. `None` (read from the repository instead) when
    /// there is no cache or anything about the cached copy is wrong.
    fn read_cached_tree(
        &self,
        index: &Index,
        pack_id: &PackId,
        entry: &crate::pack::PackEntry,
        session: &crate::crypto::SessionKey,
    ) -> Option<Vec<u8>> {
        let cache = self.cache.as_ref()?;
        let name = pack_id.to_hex();
        let (start, len) = (u64::from(entry.offset), u64::from(entry.length));
        let sealed = match cache.read_range(FileType::Pack, &name, start, len) {
            Some(sealed) => sealed,
            None => {
                let size = index.pack_size_of(entry.kind, &entry.id)?;
                // A cached copy too short for the blob is replaced.
                cache.remove(FileType::Pack, &name);
                // Copied in pieces and verified once, whole, by its name; each
                // blob is verified on read. A local disk is read a piece at a
                // time (a tree pack of 16 MiB is not held in memory whole);
                // object storage, where each request is a round trip, whole.
                let piece = match self.backend.concurrency() {
                    0 | 1 => CACHE_COPY_PIECE,
                    _ => size,
                };
                let read = |offset, len| {
                    self.backend
                        .read_range(FileType::Pack, &name, offset, len)
                        .ok()
                };
                if !cache.put_pieces(FileType::Pack, &name, size, piece, read) {
                    return None;
                }
                cache.read_range(FileType::Pack, &name, start, len)?
            }
        };
        match pack::open_blob(&self.key, session, self.repo_id(), entry, &sealed, pack_id) {
            Ok(plain) => Some(plain),
            Err(_) => {
                cache.remove(FileType::Pack, &name);
                None
            }
        }
    }

    /// Without the cache, on storage where each request is a round trip: a tree
    /// blob from its whole pack, read once and held in memory with the last few
    /// read. `None` (read the blob alone instead, and report what is wrong with
    /// it) when the cache is on, the storage is local, or the pack can't be
    /// read whole or doesn't hash to its name: commands that audit (`check`)
    /// still see exactly what is wrong with each blob.
    fn read_held_tree(
        &self,
        index: &Index,
        pack_id: &PackId,
        entry: &crate::pack::PackEntry,
        session: &crate::crypto::SessionKey,
    ) -> Option<Vec<u8>> {
        if self.cache.is_some() || self.backend.concurrency() <= 1 {
            return None;
        }
        let held = self
            .tree_packs
            .lock()
            .ok()?
            .iter()
            .find(|(p, _)| p == pack_id)
            .map(|(_, b)| Arc::clone(b));
        let bytes = match held {
            Some(b) => b,
            None => {
                let name = pack_id.to_hex();
                let size = index
                    .pack_size_of(entry.kind, &entry.id)
                    .filter(|s| *s <= TREE_PACK_HELD_MAX)?;
                let bytes = self.backend.read(FileType::Pack, &name, size).ok()?;
                check_name(&bytes, &name, "pack").ok()?;
                let bytes = Arc::new(bytes);
                let mut held = self.tree_packs.lock().ok()?;
                if held.len() >= TREE_PACKS_HELD {
                    held.pop_front();
                }
                held.push_back((*pack_id, Arc::clone(&bytes)));
                bytes
            }
        };
        let (start, len) = (
            usize::try_from(entry.offset).ok()?,
            usize::try_from(entry.length).ok()?,
        );
        let sealed = bytes.get(start..start.checked_add(len)?)?;
        pack::open_blob(&self.key, session, self.repo_id(), entry, sealed, pack_id).ok()
    }

    pub fn load_tree(&self, index: &Index, id: &BlobId) -> Result<Tree> {
        let bytes = self.read_blob(index, BlobKind::Tree, id)?;
        Tree::decode(&bytes, id)
    }

    /// A tree whose nodes are decoded one at a time (see [`TreeView`]).
    pub fn load_tree_view(&self, index: &Index, id: &BlobId) -> Result<TreeView> {
        let bytes = self.read_blob(index, BlobKind::Tree, id)?;
        TreeView::new(bytes, id)
    }
}

/// A stored file's name is the BLAKE3 hash of its bytes; a mismatch is storage
/// corruption, detectable without the password.
pub fn check_name(bytes: &[u8], name: &str, what: &str) -> Result<()> {
    let actual = hex::encode(blake3::hash(bytes).as_bytes());
    if actual != name {
        return Err(Error::corrupt(
            format!("{what} {name}"),
            format!("its content hashes to {actual}, not to its name"),
        ));
    }
    Ok(())
}

/// Writes to a sink and keeps a copy.
struct Tee<'a> {
    sink: &'a mut dyn std::io::Write,
    copy: &'a mut Vec<u8>,
}

impl std::io::Write for Tee<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.sink.write(bytes)?;
        self.copy.extend_from_slice(bytes.get(..n).unwrap_or(bytes));
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.flush()
    }
}
