//! Record payloads (format-spec §20): decoding never panics, and a decoded
//! record re-encodes to bytes that decode to the same record.
#![no_main]
use cairn::record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let what = || "fuzz".to_string();
    if let Ok(r) = record::decode(data, &what) {
        let again = record::encode(&r);
        let back = record::decode(&again, &what).expect("re-encoded record decodes");
        // NaN seconds can't compare equal to themselves.
        if !r.seconds.is_nan() {
            assert_eq!(back, r);
        }
        // Bounding keeps what fits and never grows past the caps.
        let bounded = record::bound_problems(&r.problems);
        assert!(bounded.len() <= record::MAX_PROBLEMS + 1);
    }
});
