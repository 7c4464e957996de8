//! Storage: a directory of immutable, content-addressed files behind a small trait
//! (list, read range, write once, remove). Everything above it — encryption, caching,
//! fault injection in tests — is layered on top.

pub mod local;
#[cfg(feature = "s3")]
pub mod s3;
pub mod s3location;

use std::time::SystemTime;

use crate::error::Result;

pub use local::LocalBackend;
#[cfg(feature = "s3")]
pub use s3::S3Backend;
pub use s3location::S3Location;

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The backend for a repository location as users write it: `s3:…` is object
/// storage ([`S3Location::parse`]), anything else a local directory (write
/// `./s3:x` for a directory of that name).
pub fn open(location: &Path) -> Result<Arc<dyn Backend>> {
    match location.to_str().filter(|s| S3Location::is_s3(s)) {
        #[cfg(feature = "s3")]
        Some(s) => Ok(Arc::new(S3Backend::new(S3Location::parse(s)?)?)),
        #[cfg(not(feature = "s3"))]
        Some(s) => {
            S3Location::parse(s)?;
            Err(crate::error::Error::invalid(format!(
                "{s}: this cairn was built without object storage (cargo feature `s3`)"
            )))
        }
        None => Ok(Arc::new(LocalBackend::new(location))),
    }
}

/// Whether a location names object storage.
pub fn is_remote(location: &Path) -> bool {
    location.to_str().is_some_and(S3Location::is_s3)
}

/// The kinds of stored file, each in its own directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    Config,
    Key,
    Pack,
    Index,
    Snapshot,
    Lock,
    /// Records of checks and restore drills (format-spec §20).
    Record,
}

impl FileType {
    pub fn dir(self) -> &'static str {
        match self {
            FileType::Config => "",
            FileType::Key => "keys",
            FileType::Pack => "data",
            FileType::Index => "index",
            FileType::Snapshot => "snapshots",
            FileType::Lock => "locks",
            FileType::Record => "records",
        }
    }

    pub fn all() -> [FileType; 7] {
        [
            FileType::Config,
            FileType::Key,
            FileType::Pack,
            FileType::Index,
            FileType::Snapshot,
            FileType::Lock,
            FileType::Record,
        ]
    }
}

/// One listed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    /// When the file was last written, by the storage's clock (a local file's
    /// mtime, an object's LastModified); `None` where the storage doesn't say.
    /// Locks use it (an unreadable lock is judged stale by it, format-spec §15),
    /// and prune, to tell the age of leftover temporary files (§2).
    pub modified: Option<SystemTime>,
}

pub trait Backend: Send + Sync {
    /// A human-readable location, for messages.
    fn location(&self) -> String;

    /// Creates the empty layout. Fails if a repository (or anything else) is there.
    fn create(&self) -> Result<()>;

    /// Whether a `config` file exists.
    fn is_repository(&self) -> Result<bool>;

    /// Lists the files of one type, with their sizes and modification times;
    /// temporary files of unfinished writes are skipped.
    fn list(&self, t: FileType) -> Result<Vec<Entry>>;

    /// Reads a whole file, refusing files larger than `max_len` before reading them.
    fn read(&self, t: FileType, name: &str, max_len: u64) -> Result<Vec<u8>>;

    /// Reads exactly `len` bytes at `offset`; a short file is an error.
    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;

    /// Writes a new file durably: when this returns, the file is complete under its
    /// name and survives a crash. A crash before that leaves no file of that name.
    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()>;

    /// [`Self::write`] of the concatenation of `parts`, for a file kept as pieces
    /// (a sealed pack). Backends that can stream the pieces override this.
    fn write_parts(&self, t: FileType, name: &str, parts: &[&[u8]]) -> Result<()> {
        self.write(t, name, &parts.concat())
    }

    /// [`Self::write`] of a file whose name is known only once its bytes are (a
    /// pack, named by their hash): `fill` writes the bytes in order and returns
    /// the name. The default gathers the bytes in memory, room for `size_hint`
    /// of them made at once; a local disk writes them to a temporary file and
    /// renames it. An error of the sink is an `io::Error` wrapping the
    /// [`crate::error::Error`] that names the file.
    fn write_streamed(
        &self,
        t: FileType,
        size_hint: usize,
        fill: &mut dyn FnMut(&mut dyn std::io::Write) -> Result<String>,
    ) -> Result<String> {
        let mut bytes = Vec::with_capacity(size_hint);
        let name = fill(&mut bytes)?;
        self.write_owned(t, &name, bytes)?;
        Ok(name)
    }

    /// [`Self::write`] of bytes the caller no longer needs: storage that would
    /// copy them into a request (object storage) takes them as they are.
    fn write_owned(&self, t: FileType, name: &str, data: Vec<u8>) -> Result<()> {
        self.write(t, name, &data)
    }

    fn remove(&self, t: FileType, name: &str) -> Result<()>;

    /// Temporary files of writes that never finished (a process killed between
    /// creating its temporary file and renaming it), named by their path inside the
    /// repository (`data/3f/.tmp-…`), with sizes and file times. Storage that
    /// writes a file in one step has none.
    fn list_temporary(&self) -> Result<Vec<Entry>> {
        Ok(Vec::new())
    }

    /// Removes a file [`Self::list_temporary`] listed, by that name.
    fn remove_temporary(&self, name: &str) -> Result<()> {
        Err(crate::error::Error::invalid(format!(
            "{name:?}: {} keeps no temporary files",
            self.location()
        )))
    }

    /// How many requests the pipelines should keep in flight (pack uploads and
    /// pack reads): 1 where each costs no round trip (a local disk), more where
    /// latency, not bandwidth, bounds one stream (object storage).
    fn concurrency(&self) -> usize {
        1
    }

    /// Whether files a command writes should also go into the local cache (index
    /// files, snapshots, tree packs), so the next command doesn't fetch them
    /// back: where each read is a round trip (object storage). On a local disk
    /// the cache fills on reads only, so a file damaged after it was written
    /// is still noticed by the next command that reads it.
    fn write_through_cache(&self) -> bool {
        false
    }

    /// Key files and config that users other than the owner may read, with
    /// their modes: offline password-guessing material, warned about. Storage
    /// without file modes has none.
    fn exposed_secrets(&self) -> Vec<(PathBuf, u32)> {
        Vec::new()
    }

    /// Bytes the storage can still take, where it can tell: prune checks it before
    /// repacking, which needs room before it frees any.
    fn free_space(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}
