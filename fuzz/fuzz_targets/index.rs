//! The plaintext of index files.
#![no_main]
use cairn::index::{IndexBuilder, IndexFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = IndexFile::decode(data, &|| "fuzz".into()) {
        let mut b = IndexBuilder::new();
        b.add_file(&f);
        let index = b.build();
        for p in &f.packs {
            for e in &p.blobs {
                // Looked up by (kind, id), every listed blob is found, as itself.
                let (_, found) = index.get(e.kind, &e.id).expect("indexed blob found");
                assert_eq!((found.kind, found.id), (e.kind, e.id));
            }
        }
    }
});
