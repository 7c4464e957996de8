//! Reading a stored file at any offset: the blobs that cover the range are
//! found from their lengths in the index, and only those are read and
//! decrypted, through a small cache of decrypted blobs shared by all files.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::error::Error;
use crate::id::BlobId;
use crate::index::Index;
use crate::pack::BlobKind;
use crate::repository::Repository;

/// Counts for the mount's summary.
#[derive(Default)]
pub struct Stats {
    pub reads: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Blobs read from the repository and decrypted.
    pub blobs_read: AtomicU64,
    /// Blob reads served by the cache.
    pub cache_hits: AtomicU64,
    pub read_errors: AtomicU64,
}

/// Decrypted blobs, least recently used dropped first once their bytes pass
/// the budget.
pub struct BlobCache {
    inner: Mutex<Cached>,
    budget: usize,
}

struct Cached {
    blobs: LruCache<BlobId, Arc<Vec<u8>>>,
    bytes: usize,
}

impl BlobCache {
    pub fn new(budget: usize) -> Self {
        Self {
            inner: Mutex::new(Cached {
                blobs: LruCache::unbounded(),
                bytes: 0,
            }),
            budget,
        }
    }

    fn get(&self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        self.inner.lock().ok()?.blobs.get(id).cloned()
    }

    fn put(&self, id: BlobId, data: Arc<Vec<u8>>) {
        let Ok(mut c) = self.inner.lock() else {
            return;
        };
        c.bytes += data.len();
        if let Some(old) = c.blobs.put(id, data) {
            c.bytes -= old.len();
        }
        // The newest blob stays even alone over the budget: the read that
        // asked for it goes on with it.
        while c.bytes > self.budget && c.blobs.len() > 1 {
            match c.blobs.pop_lru() {
                Some((_, old)) => c.bytes -= old.len(),
                None => break,
            }
        }
    }
}

/// A file opened for reading: where each of its blobs starts.
pub struct OpenFile {
    content: Vec<BlobId>,
    /// End offset of each blob the index lists, in order, up to the first it
    /// doesn't (whose id is `missing`).
    ends: Vec<u64>,
    missing: Option<BlobId>,
}

/// What a read could not do, for the warning: the blob and why.
pub struct ReadError {
    pub blob: BlobId,
    pub error: Error,
}

impl OpenFile {
    pub fn new(index: &Index, content: &[BlobId]) -> Self {
        let mut ends = Vec::with_capacity(content.len());
        let mut end = 0u64;
        let mut missing = None;
        for id in content {
            match index.get(BlobKind::Data, id) {
                Some((_, e)) => {
                    end += u64::from(e.raw_length);
                    ends.push(end);
                }
                None => {
                    missing = Some(*id);
                    break;
                }
            }
        }
        Self {
            content: content.to_vec(),
            ends,
            missing,
        }
    }

    /// The file's length by its blobs, when the index lists them all.
    pub fn length(&self) -> Option<u64> {
        match self.missing {
            Some(_) => None,
            None => Some(self.ends.last().copied().unwrap_or(0)),
        }
    }

    /// Up to `len` bytes from `offset`; fewer only at the end of the file.
    pub fn read_at(
        &self,
        repo: &Repository,
        index: &Index,
        cache: &BlobCache,
        stats: &Stats,
        offset: u64,
        len: usize,
    ) -> std::result::Result<Vec<u8>, ReadError> {
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        // The first blob that ends after `offset`.
        let mut i = self.ends.partition_point(|&end| end <= offset);
        while out.len() < len {
            let (Some(&end), Some(id)) = (self.ends.get(i), self.content.get(i)) else {
                return match self.missing {
                    Some(blob) => Err(ReadError {
                        blob,
                        error: Error::Missing {
                            what: format!("data blob {blob}"),
                            reason: "no index file lists it; run `cairn check`".into(),
                        },
                    }),
                    None => Ok(out),
                };
            };
            let start = if i == 0 {
                0
            } else {
                self.ends.get(i - 1).copied().unwrap_or(0)
            };
            let data = blob(repo, index, cache, stats, id, end - start)?;
            let from = usize::try_from(at - start).unwrap_or(usize::MAX);
            let want = len - out.len();
            let part = data
                .get(from..)
                .map(|rest| &rest[..rest.len().min(want)])
                .unwrap_or_default();
            out.extend_from_slice(part);
            at += part.len() as u64;
            i += 1;
        }
        Ok(out)
    }
}

/// Blob `id` decrypted, from the cache or the repository; its length must be
/// the `expected` one the index gave, or the file's offsets would be wrong.
fn blob(
    repo: &Repository,
    index: &Index,
    cache: &BlobCache,
    stats: &Stats,
    id: &BlobId,
    expected: u64,
) -> std::result::Result<Arc<Vec<u8>>, ReadError> {
    if let Some(data) = cache.get(id) {
        stats.cache_hits.fetch_add(1, Ordering::Relaxed);
        return Ok(data);
    }
    let fail = |error| ReadError { blob: *id, error };
    let data = repo.read_blob(index, BlobKind::Data, id).map_err(fail)?;
    if data.len() as u64 != expected {
        return Err(fail(Error::corrupt(
            format!("data blob {id}"),
            format!(
                "it holds {} bytes, its index entry says {expected}",
                data.len()
            ),
        )));
    }
    stats.blobs_read.fetch_add(1, Ordering::Relaxed);
    let data = Arc::new(data);
    cache.put(*id, Arc::clone(&data));
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keeps_recent_blobs_within_its_budget() {
        let c = BlobCache::new(10);
        let id = |n: u8| BlobId([n; 32]);
        c.put(id(1), Arc::new(vec![0; 4]));
        c.put(id(2), Arc::new(vec![0; 4]));
        assert!(c.get(&id(1)).is_some());
        c.put(id(3), Arc::new(vec![0; 4]));
        assert!(c.get(&id(2)).is_none(), "least recently used goes first");
        assert!(c.get(&id(1)).is_some() && c.get(&id(3)).is_some());
        c.put(id(4), Arc::new(vec![0; 50]));
        assert!(c.get(&id(4)).is_some(), "an oversized newest blob stays");
        assert!(c.get(&id(1)).is_none() && c.get(&id(3)).is_none());
    }
}
