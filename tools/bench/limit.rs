//! The "limit" figure of the benchmark: how fast this machine can read, chunk,
//! hash, compress and encrypt the given files with cairn's own primitives, on all
//! cores, with nothing else (no walk bookkeeping, no dedup index, no pack or index
//! writes). A backup can't beat it; the benchmark reports cairn/limit.
//!
//! Usage: limit PATH... (prints `bytes seconds` on one line)

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use cairn::config::ChunkerParams;
use cairn::crypto::MasterKey;
use cairn::id::RepoId;
use cairn::pack::BlobKind;

fn files(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let m = std::fs::symlink_metadata(p)?;
    if m.is_dir() {
        for e in std::fs::read_dir(p)? {
            files(&e?.path(), out)?;
        }
    } else if m.is_file() {
        out.push(p.to_path_buf());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut all = Vec::new();
    for arg in std::env::args_os().skip(1) {
        files(Path::new(&arg), &mut all)?;
    }
    let key = MasterKey::generate()?;
    let repo = RepoId([7; 32]);
    let chunker = cairn::chunker::Chunker::new(ChunkerParams::default(), key.chunker_seed());
    // Large files are cut into segments processed independently, so that one big
    // file keeps every core busy too (segment edges shift a few chunk boundaries,
    // which does not matter for a speed bound).
    const SEGMENT: u64 = 64 << 20;
    let mut work: Vec<(PathBuf, u64, u64)> = Vec::new();
    for p in &all {
        let len = std::fs::metadata(p)?.len();
        let mut off = 0;
        loop {
            let n = SEGMENT.min(len - off);
            work.push((p.clone(), off, n));
            off += n;
            if off >= len {
                break;
            }
        }
    }
    let start = Instant::now();
    let total: u64 = work
        .par_iter()
        .map(|(path, off, len)| -> u64 {
            use std::os::unix::fs::FileExt;
            let Ok(f) = std::fs::File::open(path) else {
                return 0;
            };
            let mut data = vec![0u8; *len as usize];
            if f.read_exact_at(&mut data, *off).is_err() {
                return 0;
            }
            let session = key.session(&[1; 32]);
            chunker
                .cuts(&data)
                .iter()
                .map(|&(o, l)| {
                    let chunk = &data[o..o + l];
                    let id = key.blob_id(chunk);
                    let payload = cairn::format::encode_payload(chunk, 3);
                    let sealed = session.seal(
                        &cairn::format::aad(&repo, BlobKind::Data.seal_kind(), Some(&id)),
                        &payload,
                    );
                    std::hint::black_box(sealed.map(|s| s.len()).unwrap_or(0));
                    l as u64
                })
                .sum()
        })
        .sum();
    println!("{total} {:.3}", start.elapsed().as_secs_f64());
    Ok(())
}
