//! Config, snapshot, lock and record files behind authentication: the input is sealed under
//! a fixed key as each kind of file's payload, then decoded the way readers do.
#![no_main]
use cairn::config::Config;
use cairn::crypto::{MASTER_KEY_LEN, MasterKey};
use cairn::format::{self, FileKind, SealKind};
use cairn::id::RepoId;
use cairn::lock::Lock;
use cairn::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_bytes(&[5; MASTER_KEY_LEN]);
    let repo = RepoId([2; 32]);
    let session_id = [4u8; 32];
    let session = key.session(&session_id);
    let what = || "fuzz".to_string();
    let seal = |kind: SealKind| {
        session
            .seal_with_nonce(&[6; 12], &format::aad(&repo, kind, None), data)
            .expect("seal")
    };

    let mut config = Vec::new();
    format::write_prefix(&mut config, FileKind::Config);
    config.extend_from_slice(&repo.0);
    config.extend_from_slice(&session_id);
    config.extend_from_slice(&seal(SealKind::Config));
    if let Ok(c) = Config::decode(&config, &key) {
        assert_eq!(c.repo_id, repo);
        assert!(c.validate().is_ok());
    }
    if let Ok(sealed) = Config::parse_sealed(data) {
        let _ = sealed.open(&key);
    }
    let _ = Config::decode(data, &key);

    for (file, kind) in [
        (FileKind::Snapshot, SealKind::Snapshot),
        (FileKind::Lock, SealKind::Lock),
        (FileKind::Record, SealKind::Record),
    ] {
        let mut f = Vec::new();
        format::write_prefix(&mut f, file);
        f.extend_from_slice(&session_id);
        f.extend_from_slice(&seal(kind));
        let payload = format::open_file(&key, &repo, file, kind, &f, &what).expect("opens");
        if let Ok(plain) = format::decode_payload(&payload, None, 1 << 20, &what) {
            match file {
                FileKind::Snapshot => {
                    let _ = format::from_msgpack::<Snapshot>(&plain, &what);
                }
                FileKind::Record => {
                    let _ = cairn::record::decode(&plain, &what);
                }
                _ => {
                    let _ = format::from_msgpack::<Lock>(&plain, &what);
                }
            }
        }
    }
});
