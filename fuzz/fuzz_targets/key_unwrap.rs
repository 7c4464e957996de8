//! Key files through to unwrapping the master key with a password. Either the
//! input is a key file as stored (decoded, its KDF parameters checked against the
//! caps, then derived at a clamped cost so that each run stays fast), or a real
//! key file is made for a password and then damaged as the input says: its
//! wrapped key, commitment, salt, repository id or encoded bytes altered, or the
//! wrong password tried. Whatever is altered, a key that unwraps is the one that
//! was wrapped.
#![no_main]
use cairn::crypto::{KDF_MAX_COST, MASTER_KEY_LEN, MasterKey};
use cairn::id::{KeyId, RepoId};
use cairn::keyfile::KeyFile;
use cairn_fuzz::{cheap_kdf, some_bytes};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Derivation costs the fuzzer can afford on every run: the decoded parameters
/// (already within the caps) are clamped to at most 128 KiB and 2 passes.
fn clamp(kf: &mut KeyFile) {
    assert!(kf.kdf.cost() <= KDF_MAX_COST);
    let lanes = kf.kdf.parallelism;
    kf.kdf.memory_kib = kf.kdf.memory_kib.clamp(8 * lanes, 128);
    kf.kdf.iterations = kf.kdf.iterations.min(2);
}

fn stored(data: &[u8]) {
    let Some((&pw_len, rest)) = data.split_first() else {
        return;
    };
    let (password, bytes) = rest.split_at(usize::from(pw_len).min(rest.len()));
    let id = KeyId::of_stored(bytes);
    let Ok(mut kf) = KeyFile::decode(bytes, &id) else {
        return;
    };
    clamp(&mut kf);
    let repo = kf.repo_id;
    let _ = kf.unwrap_key(password, &id, &repo);
    assert!(kf.unwrap_key(password, &id, &RepoId([0xee; 32])).is_err() || repo.0 == [0xee; 32]);
}

fn made(u: &mut Unstructured) -> Result<()> {
    let master: [u8; MASTER_KEY_LEN] = u.arbitrary()?;
    let key = MasterKey::from_bytes(&master);
    let password = some_bytes(u, 32)?;
    let repo = RepoId(u.arbitrary()?);
    let kf = KeyFile::create(&key, repo, &password, cheap_kdf()).expect("create");
    let mut altered = kf.clone();
    let mut tried = password.clone();
    let mut other_repo = repo;
    for _ in 0..u.int_in_range(0..=3)? {
        match u.int_in_range(0..=5)? {
            0 => {
                let i = u.choose_index(altered.wrapped.len())?;
                altered.wrapped[i] ^= u.int_in_range(1..=255)?;
            }
            1 => altered.commitment = None,
            2 => {
                if let Some(c) = altered.commitment.as_mut() {
                    c[u.choose_index(c.len())?] ^= 1;
                }
            }
            3 => {
                let i = u.choose_index(altered.kdf.salt.len())?;
                altered.kdf.salt[i] ^= 1;
            }
            4 => tried = some_bytes(u, 32)?,
            _ => other_repo = RepoId(u.arbitrary()?),
        }
    }
    let mut bytes = altered.encode();
    if u.arbitrary()? {
        let i = u.choose_index(bytes.len())?;
        bytes[i] = u.arbitrary()?;
    }
    let id = KeyId::of_stored(&bytes);
    let Ok(mut back) = KeyFile::decode(&bytes, &id) else {
        return Ok(());
    };
    clamp(&mut back);
    match back.unwrap_key(&tried, &id, &other_repo) {
        Ok(Some(got)) => {
            assert!(*got.to_bytes() == master, "a different key unwrapped");
            assert_eq!(other_repo, repo);
        }
        Ok(None) => {}
        Err(_) => assert!(back.repo_id != other_repo),
    }
    // Untouched, the key file opens with its password.
    if bytes == kf.encode() && tried == password && other_repo == repo {
        let got = KeyFile::decode(&bytes, &id)
            .expect("decodes")
            .unwrap_key(&password, &id, &repo)
            .expect("unwraps")
            .expect("the right password opens it");
        assert!(*got.to_bytes() == master);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, rest)) => stored(rest),
        Some((_, rest)) => {
            let _ = made(&mut Unstructured::new(rest));
        }
        None => {}
    }
});
