//! Whole packfiles, sealed properly under a fixed key so that the fuzzer reaches the
//! header parser and the blob reader behind authentication. The input is split into
//! a blob area and a header plaintext.
#![no_main]
use cairn::crypto::{MASTER_KEY_LEN, MasterKey};
use cairn::format::{self, FileKind, SealKind};
use cairn::id::{PackId, RepoId};
use cairn::pack::{header_from_bytes, open_blob};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((split, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_le_bytes(*split)).min(rest.len());
    let (area, header) = rest.split_at(split);
    let key = MasterKey::from_bytes(&[7; MASTER_KEY_LEN]);
    let repo = RepoId([9; 32]);
    let session_id = [3u8; 32];
    let session = key.session(&session_id);
    let mut pack = Vec::new();
    format::write_prefix(&mut pack, FileKind::Pack);
    pack.extend_from_slice(&session_id);
    pack.extend_from_slice(area);
    let sealed = session
        .seal_with_nonce(
            &[1; 12],
            &format::aad(&repo, SealKind::PackHeader, None),
            header,
        )
        .expect("seal");
    pack.extend_from_slice(&sealed);
    pack.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    let id = PackId([0; 32]);
    if let Ok((session, entries)) = header_from_bytes(&key, &repo, &id, &pack) {
        for e in entries {
            let start = e.offset as usize;
            let end = start + e.length as usize;
            let blob = pack
                .get(start..end)
                .expect("validated entries lie inside the pack");
            let _ = open_blob(&key, &session, &repo, &e, blob, &id);
        }
    }
    // The same bytes with a corrupted trailer or as an unsealed pack.
    let _ = header_from_bytes(&key, &repo, &id, data);
});
