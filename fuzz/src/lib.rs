//! What several fuzz targets share: a fixed key, an in-memory backend, cheap key
//! derivation, and a place for scratch directories.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use cairn::backend::{Backend, Entry, FileType};
use cairn::crypto::{KdfParams, MASTER_KEY_LEN, MasterKey};
use cairn::error::{Error, Result};

/// The master key targets seal under, so that the fuzzer gets past authentication.
pub fn fixed_key() -> MasterKey {
    MasterKey::from_bytes(&[7; MASTER_KEY_LEN])
}

/// Key derivation at the smallest cost Argon2 allows: every execution may derive.
pub fn cheap_kdf() -> KdfParams {
    KdfParams::new(8, 1).expect("8 KiB, 1 pass is within the caps")
}

/// Where targets make their scratch directories: a tmpfs when there is one, so
/// that the fsyncs of the local backend cost nothing.
pub fn scratch_base() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAIRN_FUZZ_TMP") {
        return dir.into();
    }
    let shm = PathBuf::from("/dev/shm");
    if tempfile::tempdir_in(&shm).is_ok() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// A backend held in memory: every file of every type, by name. Reads and
/// listings behave as the trait promises (size caps, exact ranges), so the code
/// above it runs as it would on a disk, only faster.
#[derive(Default)]
pub struct MemBackend {
    files: Mutex<HashMap<(FileType, String), Vec<u8>>>,
}

impl MemBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `bytes` under `name`, whatever the name (the trait's `write` is for
    /// writers; this is for forging).
    pub fn put(&self, t: FileType, name: &str, bytes: Vec<u8>) {
        self.files
            .lock()
            .expect("backend lock")
            .insert((t, name.to_string()), bytes);
    }

    /// A backend holding copies of this one's files.
    pub fn copy(&self) -> MemBackend {
        let files = self.files.lock().expect("backend lock").clone();
        MemBackend {
            files: Mutex::new(files),
        }
    }

    pub fn clear(&self, t: FileType) {
        self.files
            .lock()
            .expect("backend lock")
            .retain(|(ft, _), _| *ft != t);
    }

    fn get(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        self.files
            .lock()
            .expect("backend lock")
            .get(&(t, name.to_string()))
            .cloned()
            .ok_or_else(|| {
                Error::io(
                    name,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                )
            })
    }
}

impl Backend for MemBackend {
    fn location(&self) -> String {
        "memory".into()
    }

    fn create(&self) -> Result<()> {
        Ok(())
    }

    fn is_repository(&self) -> Result<bool> {
        Ok(self.get(FileType::Config, "config").is_ok())
    }

    fn list(&self, t: FileType) -> Result<Vec<Entry>> {
        let mut out: Vec<Entry> = self
            .files
            .lock()
            .expect("backend lock")
            .iter()
            .filter(|((ft, _), _)| *ft == t)
            .map(|((_, name), bytes)| Entry {
                name: name.clone(),
                size: bytes.len() as u64,
                modified: Some(SystemTime::now()),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, t: FileType, name: &str, max_len: u64) -> Result<Vec<u8>> {
        let bytes = self.get(t, name)?;
        if bytes.len() as u64 > max_len {
            return Err(Error::corrupt(name.to_string(), "larger than its cap"));
        }
        Ok(bytes)
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let bytes = self.get(t, name)?;
        let range = usize::try_from(offset).ok().zip(
            offset
                .checked_add(len)
                .and_then(|e| usize::try_from(e).ok()),
        );
        range
            .and_then(|(start, end)| bytes.get(start..end))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::corrupt(name.to_string(), "range past the end"))
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.put(t, name, data.to_vec());
        Ok(())
    }

    fn remove(&self, t: FileType, name: &str) -> Result<()> {
        self.files
            .lock()
            .expect("backend lock")
            .remove(&(t, name.to_string()));
        Ok(())
    }
}

/// Up to `max` bytes of the input. (`Vec<u8>`'s `Arbitrary` may take all that
/// is left, leaving every later choice at its default.)
pub fn some_bytes(
    u: &mut libfuzzer_sys::arbitrary::Unstructured,
    max: usize,
) -> libfuzzer_sys::arbitrary::Result<Vec<u8>> {
    let n = u.int_in_range(0..=max)?.min(u.len());
    Ok(u.bytes(n)?.to_vec())
}

/// [`some_bytes`] as text, lossily.
pub fn some_text(
    u: &mut libfuzzer_sys::arbitrary::Unstructured,
    max: usize,
) -> libfuzzer_sys::arbitrary::Result<String> {
    Ok(String::from_utf8_lossy(&some_bytes(u, max)?).into_owned())
}
