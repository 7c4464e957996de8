//! A pack header read from storage the way readers do (`pack::read_header`): the
//! session id from the first bytes, the header length from the last four, then
//! the sealed header from where that length says it starts. The stored bytes come
//! from the fuzzer, either as they are or as a pack whose header plaintext is
//! sealed under a fixed key (so the fuzzer gets past authentication), with its
//! trailer and its listed size possibly lying.
#![no_main]
use cairn::backend::{Backend, FileType};
use cairn::format::{self, FileKind, SealKind};
use cairn::id::{PackId, RepoId};
use cairn::pack::{PACK_DATA_START, header_from_bytes, open_blob, parse_session, read_header};
use cairn_fuzz::{MemBackend, fixed_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[mode, s0, s1, t0, t1, t2, t3], rest)) = data.split_first_chunk::<7>() else {
        return;
    };
    let key = fixed_key();
    let repo = RepoId([9; 32]);
    let stored = if mode & 1 == 0 {
        // The bytes as stored.
        rest.to_vec()
    } else {
        let split = usize::from(u16::from_le_bytes([s0, s1])).min(rest.len());
        let (area, header) = rest.split_at(split);
        let session_id = [3u8; 32];
        let mut pack = Vec::new();
        format::write_prefix(&mut pack, FileKind::Pack);
        pack.extend_from_slice(&session_id);
        pack.extend_from_slice(area);
        let sealed = key
            .session(&session_id)
            .seal_with_nonce(
                &[1; 12],
                &format::aad(&repo, SealKind::PackHeader, None),
                header,
            )
            .expect("seal");
        pack.extend_from_slice(&sealed);
        let trailer = if mode & 2 == 0 {
            sealed.len() as u32
        } else {
            // A trailer that lies about the header's length.
            u32::from_le_bytes([t0, t1, t2, t3])
        };
        pack.extend_from_slice(&trailer.to_le_bytes());
        pack
    };
    let len = stored.len() as u64;
    // The size a listing or an index gives may lie too.
    let size = match mode >> 2 & 3 {
        0 | 1 => len,
        2 => len.saturating_sub(u64::from(t0)),
        _ => len + u64::from(t0),
    };
    let backend = MemBackend::new();
    let id = PackId::of_stored(&stored);
    backend.put(FileType::Pack, &id.to_hex(), stored.clone());
    let from_storage = read_header(&backend, &key, &repo, &id, size);
    if size == len {
        // Read piecewise from storage or whole from memory, a pack says the same.
        let whole = header_from_bytes(&key, &repo, &id, &stored);
        match (&from_storage, &whole) {
            (Ok(a), Ok((_, b))) => assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            _ => panic!(
                "read_header and header_from_bytes disagree: {:?} / {:?}",
                from_storage.as_ref().map(|e| e.len()),
                whole.as_ref().map(|(_, e)| e.len())
            ),
        }
    }
    let Ok(entries) = from_storage else { return };
    // The trailer read_header went by: the last four bytes of the size it was given.
    let trailer = stored
        .get(size as usize - 4..size as usize)
        .and_then(|b| b.first_chunk::<4>())
        .map(|b| u64::from(u32::from_le_bytes(*b)))
        .expect("a header was read, so the trailer is there");
    let header_start = size - 4 - trailer;
    let session = key.session(&parse_session(&stored, &id).expect("a header was read"));
    for e in &entries {
        assert!(u64::from(e.offset) >= PACK_DATA_START as u64);
        assert!(u64::from(e.offset) + u64::from(e.length) <= header_start);
        if let Ok(blob) = backend.read_range(
            FileType::Pack,
            &id.to_hex(),
            u64::from(e.offset),
            u64::from(e.length),
        ) {
            let _ = open_blob(&key, &session, &repo, e, &blob, &id);
        }
    }
});
