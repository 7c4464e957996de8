//! Payload decoding (raw or zstd) must stay within its bounds whatever the frame claims.
#![no_main]
use cairn::format::decode_payload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&len, payload)) = data.split_first() else {
        return;
    };
    let exact = usize::from(len) * 97;
    if let Ok(out) = decode_payload(payload, Some(exact), 0, &|| "fuzz".into()) {
        assert_eq!(out.len(), exact);
    }
    if let Ok(out) = decode_payload(payload, None, 1 << 16, &|| "fuzz".into()) {
        assert!(out.len() <= 1 << 16);
    }
});
