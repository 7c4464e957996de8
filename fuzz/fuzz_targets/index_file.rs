//! Sealed index files read the way every command reads them
//! (`Repository::load_index`): the stored file is checked against its name,
//! unsealed, its payload decoded with the index cap (`INDEX_MAX_LEN`) as the
//! bound, parsed, validated and merged into the in-memory index. The input is the
//! payload (encoding byte, then raw or zstd msgpack), sealed under the
//! repository's key so that the fuzzer gets past authentication.
#![no_main]
use std::sync::{Arc, OnceLock};

use cairn::backend::FileType;
use cairn::format::{self, FileKind, SealKind};
use cairn::id::IndexId;
use cairn::pack::PACK_DATA_START;
use cairn::repository::{InitOptions, Repository};
use cairn_fuzz::{MemBackend, cheap_kdf};
use libfuzzer_sys::fuzz_target;

fn repo() -> &'static (Arc<MemBackend>, Repository) {
    static REPO: OnceLock<(Arc<MemBackend>, Repository)> = OnceLock::new();
    REPO.get_or_init(|| {
        let backend = Arc::new(MemBackend::new());
        let opts = InitOptions {
            kdf: Some(cheap_kdf()),
            ..Default::default()
        };
        let repo = Repository::init(backend.clone(), b"fuzz", opts).expect("init");
        (backend, repo)
    })
}

fuzz_target!(|data: &[u8]| {
    let (backend, repo) = repo();
    backend.clear(FileType::Index);
    let sealed = format::seal_file(
        repo.key(),
        repo.repo_id(),
        FileKind::Index,
        SealKind::Index,
        data,
    )
    .expect("seal");
    let id = IndexId::of_stored(&sealed);
    backend.put(FileType::Index, &id.to_hex(), sealed);

    let single = repo.load_index_file(&id);
    let mut unreadable = Vec::new();
    let index = repo
        .load_index(&mut |id, e| unreadable.push((*id, e.to_string())))
        .expect("damage is reported, not an error");
    match single {
        Ok(f) => {
            assert!(unreadable.is_empty());
            assert_eq!(index.files(), &[id]);
            for p in &f.packs {
                for e in &p.blobs {
                    assert!(u64::from(e.offset) >= PACK_DATA_START as u64);
                    assert!(u64::from(e.offset) + u64::from(e.length) <= p.size);
                    // Every listed blob is found by (kind, id), as itself; a blob
                    // listed twice may be found in either place.
                    let (_, found) = index.get(e.kind, &e.id).expect("indexed blob found");
                    assert_eq!((found.kind, found.id), (e.kind, e.id));
                }
            }
            assert!(index.blob_count() <= f.blob_count());
        }
        Err(_) => {
            assert_eq!(unreadable.len(), 1);
            assert!(index.files().is_empty());
            assert_eq!(index.blob_count(), 0);
        }
    }
});
