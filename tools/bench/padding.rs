//! What padding pack headers and index files costs in a repository (format-spec
//! §6): `cargo run --release --example padding -- REPO PASSWORD_FILE`.
//!
//! For every pack it reads the header length in the clear and the header itself,
//! and re-encodes the entries to get the unpadded length; for every index file
//! it opens the payload and measures it without its padding. It prints the bytes
//! of each, the padding, and the padding's share of the repository.

use std::path::PathBuf;
use std::sync::Arc;

use cairn::backend::{FileType, LocalBackend};
use cairn::crypto::SEAL_OVERHEAD;
use cairn::format::{self, FileKind, SealKind};
use cairn::id::{IndexId, PackId};
use cairn::repository::Repository;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, repo_path, password_file] = args.as_slice() else {
        return Err("usage: padding REPO PASSWORD_FILE".into());
    };
    let mut password = std::fs::read(password_file)?;
    while password.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        password.pop();
    }
    let backend = Arc::new(LocalBackend::new(PathBuf::from(repo_path)));
    let repo = Repository::open(backend, &password)?;
    let b = repo.backend();

    let (mut pack_bytes, mut headers, mut header_padding, mut packs) = (0u64, 0u64, 0u64, 0u64);
    for e in b.list(FileType::Pack)? {
        let id = PackId::from_name(&e.name)?;
        let tail = b.read_range(FileType::Pack, &e.name, e.size - 4, 4)?;
        let stored = u64::from(u32::from_le_bytes(tail.as_slice().try_into()?));
        let entries = cairn::pack::read_header(b, repo.key(), repo.repo_id(), &id, e.size)?;
        let unpadded = (SEAL_OVERHEAD + 1 + rmp_serde::to_vec(&entries)?.len()) as u64;
        packs += 1;
        pack_bytes += e.size;
        headers += stored;
        header_padding += stored - unpadded;
    }

    let (mut index_bytes, mut index_padding, mut index_files) = (0u64, 0u64, 0u64);
    for e in b.list(FileType::Index)? {
        let id = IndexId::from_name(&e.name)?;
        let bytes = b.read(FileType::Index, &e.name, e.size)?;
        let what = || format!("index {id}");
        let payload = format::open_file(
            repo.key(),
            repo.repo_id(),
            FileKind::Index,
            SealKind::Index,
            &bytes,
            &what,
        )?;
        let body = payload.get(1..).unwrap_or_default();
        let unpadded_body = match payload.first() {
            Some(&format::PAYLOAD_ZSTD) => zstd::zstd_safe::find_frame_compressed_size(body)
                .map_err(|code| format!("{}: zstd error {code}", what()))?,
            _ => {
                let f = repo.load_index_file(&id)?;
                format::to_msgpack(&f).len()
            }
        };
        index_files += 1;
        index_bytes += e.size;
        index_padding += (body.len() - unpadded_body) as u64;
    }

    let total: u64 = FileType::all()
        .into_iter()
        .map(|t| b.list(t).map(|l| l.iter().map(|e| e.size).sum::<u64>()))
        .sum::<Result<u64, _>>()?;
    let pct = |n: u64| 100.0 * n as f64 / total.max(1) as f64;
    println!("repository: {total} bytes");
    println!(
        "packs: {packs}, {pack_bytes} bytes; headers {headers} bytes, of which padding {header_padding} ({:.3}% of the repository)",
        pct(header_padding)
    );
    println!(
        "index files: {index_files}, {index_bytes} bytes, of which padding {index_padding} ({:.3}% of the repository)",
        pct(index_padding)
    );
    println!(
        "padding in all: {} bytes, {:.3}% of the repository",
        header_padding + index_padding,
        pct(header_padding + index_padding)
    );
    Ok(())
}
