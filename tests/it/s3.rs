//! Repositories in object storage, against a real single-node Garage
//! (tests/it/garage.rs): everything that works on a local repository works on a
//! bucket, and storage errors name the object and say what to do.

use std::fs;
use std::path::Path;

use cairn::backend::{Backend, FileType};

use crate::common::{self, Env, restore_matches, stderr};
use crate::garage::Garage;

/// Seeded sources: small text files, a few random ones, and one file larger
/// than a pack.
fn source(dir: &Path, seed: u64) {
    fs::create_dir_all(dir.join("sub/deeper")).expect("mkdir");
    let mut rng = common::rng(seed);
    for i in 0..40 {
        let text = common::text_bytes(&mut rng, 2000 + i * 97);
        fs::write(dir.join(format!("sub/note-{i}.txt")), text).expect("write");
    }
    common::random_files(&dir.join("sub/deeper"), seed, 5, 300_000, |i| {
        format!("r{i}.bin")
    });
    fs::write(dir.join("big.bin"), common::xorshift(seed, 3 << 20)).expect("write");
}

fn snapshot_ids(env: &Env) -> Vec<String> {
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    listed
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

fn check_clean(env: &Env) {
    let out = env.run(&["check", "--read-data"]);
    assert!(
        out.status.success() && stderr(&out).is_empty(),
        "check --read-data: {:?}\n{}\n{}",
        out.status.code(),
        common::stdout(&out),
        stderr(&out)
    );
}

#[test]
fn a_bucket_repository_backs_up_restores_checks_and_prunes() {
    let Some(g) = Garage::single("s3::a_bucket_repository_backs_up_restores_checks_and_prunes")
    else {
        return;
    };
    // Small packs and chunks, so the data spans many objects.
    let env = g.env_with_repo(
        "hosts/one",
        &["--pack-size", "1", "--chunker-params", "64K,128K,512K"],
    );
    let src = env.path("src");
    source(&src, 1);
    let src_text = src.to_str().expect("utf-8");

    let first = env.backup_json(&[src_text]);
    let first_id = first["snapshot_id"].as_str().expect("id").to_string();
    restore_matches(&env, &first_id, &src);
    check_clean(&env);

    // A change, a second snapshot; the first is forgotten and pruned.
    fs::write(src.join("big.bin"), common::xorshift(99, 2 << 20)).expect("write");
    fs::remove_dir_all(src.join("sub/deeper")).expect("rm");
    let second = env.backup_json(&[src_text]);
    let second_id = second["snapshot_id"].as_str().expect("id").to_string();
    let packs_before = g
        .backend(0, "hosts/one")
        .list(FileType::Pack)
        .expect("list")
        .len();
    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    let packs_after = g
        .backend(0, "hosts/one")
        .list(FileType::Pack)
        .expect("list")
        .len();
    assert!(
        packs_after < packs_before,
        "prune freed nothing: {packs_before} → {packs_after}"
    );
    assert_eq!(snapshot_ids(&env), vec![second_id.clone()]);
    restore_matches(&env, &second_id, &src);
    check_clean(&env);
}
