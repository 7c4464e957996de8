//! Key files come from an untrusted directory: decoding validates the KDF
//! parameters before anything is derived.
#![no_main]
use cairn::crypto::{KDF_MAX_COST, KDF_MAX_ITERATIONS, KDF_MAX_MEMORY_KIB};
use cairn::id::KeyId;
use cairn::keyfile::KeyFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(kf) = KeyFile::decode(data, &KeyId([0; 32])) {
        assert!(kf.kdf.memory_kib <= KDF_MAX_MEMORY_KIB);
        assert!(kf.kdf.iterations <= KDF_MAX_ITERATIONS);
        assert!(kf.kdf.cost() <= KDF_MAX_COST);
    }
});
