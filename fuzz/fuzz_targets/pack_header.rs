//! The plaintext of a pack header: entries are validated against the blob area.
#![no_main]
use cairn::pack::{PACK_DATA_START, decode_header_plaintext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, plain)) = data.split_first_chunk::<4>() else {
        return;
    };
    let header_start = u64::from(u32::from_le_bytes(*head));
    if let Ok(entries) = decode_header_plaintext(plain, header_start, &|| "fuzz".into()) {
        for e in entries {
            assert!(u64::from(e.offset) >= PACK_DATA_START as u64);
            assert!(u64::from(e.offset) + u64::from(e.length) <= header_start);
        }
    }
});
