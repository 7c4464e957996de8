//! The ten-byte prefix every stored file starts with.
#![no_main]
use cairn::format::{FileKind, check_prefix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for kind in [
        FileKind::Config,
        FileKind::Key,
        FileKind::Pack,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Lock,
    ] {
        if let Ok(rest) = check_prefix(data, kind, &|| "fuzz".into()) {
            assert_eq!(rest.len() + cairn::format::PREFIX_LEN, data.len());
        }
    }
});
