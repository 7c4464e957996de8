//! Error policy.
//!
//! The library returns [`Error`], a `thiserror` enum whose variants carry the path,
//! object id or offset involved, so that a message printed as-is tells the user what
//! broke and where. Parsers of stored bytes return [`Error::Corrupt`] naming the
//! object; a file written by a newer cairn is [`Error::UnsupportedVersion`], never
//! "corrupt". `anyhow` is used only in the binary, to add the command's context.
//! Nothing here is swallowed: a source file that could not be read during a backup
//! is counted, printed and recorded in the snapshot instead of being an error.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a path on the local machine (source, target or repository).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{0} is not a cairn repository (it has no `config` file); create one with `cairn init`"
    )]
    NotARepository(String),

    #[error("{0} already exists and is not empty; `cairn init` only creates new repositories")]
    RepositoryExists(String),

    #[error(
        "wrong password: {}{}",
        no_key_opens(*keys, repo),
        unreadable_note(*unreadable)
    )]
    WrongPassword {
        repo: String,
        keys: usize,
        /// Key files that could not be read or decoded, and so were not tried.
        unreadable: usize,
    },

    #[error(
        "{what} has format version {found}, but this cairn reads only version {supported}; \
         it was written by a newer cairn — upgrade cairn to read it"
    )]
    UnsupportedVersion {
        what: String,
        found: u8,
        supported: u8,
    },

    #[error("{what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },

    /// Key derivation parameters above the caps of format-spec §17, refused before
    /// anything is allocated or derived for them.
    #[error(
        "{what}: {reason}; cairn derives no key above its caps, so that a planted key \
         file can't make every password attempt that costly"
    )]
    KdfOverCap { what: String, reason: String },

    /// A record (format-spec §20) of a kind this cairn doesn't know: written by
    /// a newer cairn, and left alone.
    #[error(
        "{what} is of kind {kind:?}, which this cairn doesn't know; it was written by a newer \
         cairn and is left as it is"
    )]
    UnknownRecordKind { what: String, kind: String },

    #[error("{what} is missing from the repository: {reason}")]
    Missing { what: String, reason: String },

    #[error(
        "no key file in {repo}/keys has an id starting with {prefix:?}; `cairn key list` shows them"
    )]
    UnknownKey { repo: String, prefix: String },

    #[error(
        "{prefix:?} is ambiguous: {count} key files in {repo}/keys have ids starting with it; give more digits"
    )]
    AmbiguousKey {
        repo: String,
        prefix: String,
        count: usize,
    },

    #[error(
        "key {0} is the one this command opened the repository with, so it can't be removed \
         with it; open the repository with another key (its password or secret file) to \
         remove this one"
    )]
    RemoveCurrentKey(crate::id::KeyId),

    #[error(
        "{}: the file already exists; `cairn key add --generate` never overwrites a file, \
         so give a path that doesn't exist yet", .0.display()
    )]
    SecretFileExists(PathBuf),

    #[error("repository is locked: {0}")]
    Locked(String),

    /// Packs or index files a backup wrote were gone when it came to commit.
    #[error(
        "{} written by this backup {} gone (first: {first}): another process deleted {} \
         (a prune that took this backup's lock for stale?); the snapshot was not written; \
         run `cairn check`",
        gone_files(*packs, *index_files),
        if packs + index_files == 1 { "is" } else { "are" },
        if packs + index_files == 1 { "it" } else { "them" }
    )]
    WrittenFilesGone {
        packs: usize,
        index_files: usize,
        /// The first missing file, e.g. "pack 3fa2…".
        first: String,
    },

    /// Index files a backup loaded were replaced while it ran, and packs they
    /// named (which it may have deduplicated against) are gone.
    #[error(
        "the index was rewritten while this backup ran (a prune or repair that took its lock \
         for stale?) and {} it may rely on {} gone (first: pack {first}); the \
         snapshot was not written; run the backup again, and `cairn check`",
        crate::text::count(*.packs, "pack", "packs"),
        if *.packs == 1 { "is" } else { "are" }
    )]
    IndexRewritten {
        packs: usize,
        first: crate::id::PackId,
    },

    /// Snapshots prune can't read: their trees, and so the data they need, are
    /// unknown.
    #[error(
        "{} can't be read ({list}); prune can't tell which data {} need, \
         so it deleted nothing. If {} damaged beyond use, remove {} with \
         `{forget}` (or `cairn repair snapshots --forget`), then run prune again",
        crate::text::count(*.count, "snapshot", "snapshots"),
        if *.count == 1 { "it" } else { "they" },
        if *.count == 1 { "it is" } else { "they are" },
        if *.count == 1 { "it" } else { "them" }
    )]
    UnreadableSnapshots {
        count: usize,
        list: String,
        /// The exact command that removes them.
        forget: String,
    },

    /// None of the paths given to a backup exists.
    #[error("nothing to back up: {}", no_source(.0))]
    NoSource(Vec<PathBuf>),

    /// Something a snapshot needs can't be read in the repository `copy` reads
    /// from: that snapshot is not copied, the others are.
    #[error("snapshot {snapshot} can't be copied: {path}: {source}")]
    CopySource {
        snapshot: String,
        /// Where in the snapshot, or what.
        path: String,
        #[source]
        source: Box<Error>,
    },

    #[error("interrupted")]
    Interrupted,

    /// No `--plan`, no CAIRN_PLAN, and none of the default places has a plan file.
    #[error(
        "no plan file: give --plan FILE or set CAIRN_PLAN, or create one of {}",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    PlanNotFound { searched: Vec<PathBuf> },

    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    /// Whether the storage refused a write for lack of room (ENOSPC, or EDQUOT: a
    /// quota is full).
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, Error::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
                || source.kind() == io::ErrorKind::StorageFull)
    }
}

/// Adds the path to an `io::Result`.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

fn no_key_opens(keys: usize, repo: &str) -> String {
    if keys == 1 {
        format!("the one key file in {repo}/keys does not open with it")
    } else {
        format!("none of the {keys} key files in {repo}/keys opens with it")
    }
}

fn unreadable_note(n: usize) -> String {
    match n {
        0 => String::new(),
        n => format!(
            " ({n} of them could not be read, so the password may be right for a damaged \
             one; `cairn check` names them)"
        ),
    }
}

fn no_source(paths: &[PathBuf]) -> String {
    match paths {
        [one] => format!("{} does not exist", one.display()),
        many => {
            let list: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
            format!("none of {} exists", list.join(", "))
        }
    }
}

fn gone_files(packs: usize, index_files: usize) -> String {
    let n = |k: usize, what: &str| format!("{k} {what}{}", if k == 1 { "" } else { "s" });
    match (packs, index_files) {
        (p, 0) => n(p, "pack"),
        (0, i) => n(i, "index file"),
        (p, i) => format!("{} and {}", n(p, "pack"), n(i, "index file")),
    }
}
