//! Counters that a long operation (backup, restore) updates as it goes. The library
//! only counts; the CLI decides how to show them (a progress bar on a terminal,
//! JSON status lines with `--json`, nothing with `--quiet`).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Progress {
    files_done: AtomicU64,
    bytes_done: AtomicU64,
    files_total: AtomicU64,
    bytes_total: AtomicU64,
    totals_final: AtomicBool,
    current: Mutex<String>,
}

/// A consistent-enough reading of the counters.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProgressView {
    pub files_done: u64,
    pub bytes_done: u64,
    pub files_total: u64,
    pub bytes_total: u64,
    /// False while the totals are still being counted.
    pub totals_final: bool,
    pub current_file: String,
}

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    /// One file (or other entry) done, of `bytes` bytes.
    pub fn done(&self, files: u64, bytes: u64) {
        self.files_done.fetch_add(files, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Adds to the totals (a scan in progress).
    pub fn found(&self, files: u64, bytes: u64) {
        self.files_total.fetch_add(files, Ordering::Relaxed);
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn set_totals_final(&self) {
        self.totals_final.store(true, Ordering::Relaxed);
    }

    pub fn set_current(&self, path: &Path) {
        if let Ok(mut c) = self.current.lock() {
            c.clear();
            c.push_str(&path.to_string_lossy());
        }
    }

    pub fn view(&self) -> ProgressView {
        ProgressView {
            files_done: self.files_done.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            files_total: self.files_total.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            totals_final: self.totals_final.load(Ordering::Relaxed),
            current_file: self.current.lock().map(|c| c.clone()).unwrap_or_default(),
        }
    }
}
