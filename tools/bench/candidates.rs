//! What each way of making a repository smaller that issue #16 names would store
//! for a tree: `cargo run --release --example candidates -- DIR`.
//!
//! The tree's files are cut with cairn's chunker at the default parameters, and
//! identical chunks are counted once, as a repository stores them. Then, for
//! each candidate, the bytes the chunks would take as stored blobs: the zstd
//! frame (or the raw bytes, when that is not smaller, as cairn keeps them) plus
//! the payload byte and the seal's nonce and tag. Index entries and pack
//! headers are left out: they are the same for all candidates but the grouped
//! one, which would need a few more bytes per blob.
//!
//! - `per blob, zstd N`: one frame per blob at level N; level 3 is what cairn
//!   stores today.
//! - `per blob, dictionary`: one frame per blob at level 3, with a dictionary
//!   zstd trained on samples of the blobs under 128 KiB.
//! - `grouped`: blobs under 1 MiB compressed together, in walk order, as units
//!   of up to 4 MiB, the rest one frame each: "small blobs of one directory
//!   compressed as one unit", a format change that every reader of a blob
//!   would have to follow.
//! - `one stream`: the whole tree as one zstd stream, a bound no store that
//!   deduplicates and reads blobs on their own can reach.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn::chunker::Chunker;
use cairn::config::ChunkerParams;

/// Payload byte + nonce + tag of a sealed blob (format-spec §6).
const BLOB_OVERHEAD: usize = 1 + cairn::crypto::SEAL_OVERHEAD;

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let t = e.file_type()?;
        if t.is_dir() {
            files(&e.path(), out)?;
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

fn stored(frame: usize, raw: usize) -> usize {
    frame.min(raw) + BLOB_OVERHEAD
}

fn per_blob(chunks: &[Vec<u8>], c: &mut zstd::bulk::Compressor) -> std::io::Result<usize> {
    let mut total = 0;
    for ch in chunks {
        total += stored(c.compress(ch)?.len(), ch.len());
    }
    Ok(total)
}

fn mib(n: usize) -> f64 {
    n as f64 / (1 << 20) as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(dir) = std::env::args().nth(1) else {
        return Err("usage: candidates DIR".into());
    };
    let mut paths = Vec::new();
    files(Path::new(&dir), &mut paths)?;
    let chunker = Chunker::new(ChunkerParams::default(), 0);
    let mut seen = HashSet::new();
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut plain = 0usize;
    for p in &paths {
        let data = std::fs::read(p)?;
        for (start, len) in chunker.cuts(&data) {
            let ch = &data[start..start + len];
            plain += len;
            if seen.insert(*blake3::hash(ch).as_bytes()) {
                chunks.push(ch.to_vec());
            }
        }
    }
    let unique: usize = chunks.iter().map(Vec::len).sum();
    println!(
        "{}: {} files, {:.1} MiB, {} distinct chunks of {:.1} MiB",
        dir,
        paths.len(),
        mib(plain),
        chunks.len(),
        mib(unique)
    );
    let row = |name: &str, bytes: usize, started: Instant| {
        println!(
            "| {name} | {:.1} | {:.3} | {:.1} |",
            mib(bytes),
            bytes as f64 / unique as f64,
            started.elapsed().as_secs_f64()
        );
    };
    println!("| candidate | stored (MiB) | of the distinct bytes | seconds (one core) |");
    println!("|---|---|---|---|");
    for level in [3, 6, 9] {
        let t = Instant::now();
        let bytes = per_blob(&chunks, &mut zstd::bulk::Compressor::new(level)?)?;
        row(&format!("per blob, zstd {level}"), bytes, t);
    }
    for dict_size in [112 << 10, 1 << 20] {
        let t = Instant::now();
        // Up to 100 times the dictionary's size of samples, spread over the tree.
        let small: Vec<&[u8]> = chunks
            .iter()
            .filter(|c| c.len() < 128 << 10)
            .map(|c| &c[..c.len().min(16 << 10)])
            .collect();
        let budget = 100 * dict_size;
        let total: usize = small.iter().map(|s| s.len()).sum();
        let step = total.div_ceil(budget).max(1);
        let samples: Vec<&[u8]> = small.iter().step_by(step).copied().collect();
        let dict = zstd::dict::from_samples(&samples, dict_size)?;
        let mut c = zstd::bulk::Compressor::with_dictionary(3, &dict)?;
        // The dictionary is stored once, as a blob of its own.
        let bytes = per_blob(&chunks, &mut c)? + stored(dict.len(), dict.len());
        row(
            &format!("per blob, dictionary of {} KiB", dict_size >> 10),
            bytes,
            t,
        );
    }
    let t = Instant::now();
    let mut c = zstd::bulk::Compressor::new(3)?;
    let (mut bytes, mut unit) = (0usize, Vec::new());
    for ch in &chunks {
        if ch.len() >= 1 << 20 {
            bytes += stored(c.compress(ch)?.len(), ch.len());
            continue;
        }
        if unit.len() + ch.len() > 4 << 20 {
            bytes += stored(c.compress(&unit)?.len(), unit.len());
            unit.clear();
        }
        unit.extend_from_slice(ch);
    }
    if !unit.is_empty() {
        bytes += stored(c.compress(&unit)?.len(), unit.len());
    }
    row("grouped, units of up to 4 MiB", bytes, t);
    let t = Instant::now();
    let all = chunks.concat();
    row(
        "one stream, zstd 3",
        zstd::bulk::compress(&all, 3)?.len(),
        t,
    );
    Ok(())
}
