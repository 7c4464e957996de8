//! Deduplication and confidentiality: what a backup adds, and what the stored bytes
//! reveal.

use std::fs;

use crate::common::{self, Env};

fn write_tree(root: &std::path::Path, seed: u64, files: usize) {
    let mut rng = common::rng(seed);
    for i in 0..files {
        let dir = root.join(format!("d{}", i % 4));
        fs::create_dir_all(&dir).expect("mkdir");
        let data = if i % 2 == 0 {
            common::random_bytes(&mut rng, 10_000 + i * 7_919)
        } else {
            common::text_bytes(&mut rng, 20_000 + i * 3_001)
        };
        fs::write(dir.join(format!("f{i}.bin")), data).expect("write");
    }
}

#[test]
fn second_backup_of_unchanged_data_adds_almost_nothing() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    write_tree(&src, 1, 40);
    let src_s = src.to_str().expect("utf-8 temp path");
    let first = env.backup_json(&[src_s]);
    assert_eq!(first["files_new"], 40);
    assert!(first["bytes_new"].as_u64().expect("bytes_new") > 500_000);

    let second = env.backup_json(&[src_s]);
    assert_eq!(second["files_unchanged"], 40, "{second}");
    assert_eq!(second["files_new"], 0);
    assert_eq!(second["bytes_read"], 0, "unchanged files must not be read");
    assert_eq!(second["data_blobs_new"], 0, "{second}");
    assert_eq!(second["dirs_changed"], 0, "{second}");
    // No tree stored again but those of the ancestors of the source (their
    // metadata, like /tmp's mtime, may change between runs): the source's five
    // trees are in the repository already. Only this catches a backup that
    // dedups within a run but not against what earlier snapshots stored.
    let ancestors = src.ancestors().count() as u64 - 1;
    assert!(
        second["tree_blobs_new"].as_u64().expect("tree_blobs_new") <= ancestors,
        "{second}"
    );
    // The snapshot file, and at most those trees.
    assert!(
        second["bytes_added"].as_u64().expect("bytes_added") < 16 * 1024,
        "{second}"
    );

    // --force reads everything again, and deduplication still stores nothing new.
    let forced = env.backup_json(&["--force", src_s]);
    assert!(forced["bytes_read"].as_u64().expect("bytes_read") > 500_000);
    assert_eq!(forced["data_blobs_new"], 0, "{forced}");
}

/// A directory keeps its tree only when every entry in it is as it was: a changed
/// file, or only a changed mode, gives its directory and the ones above it new
/// trees, and the restored copy has the change.
#[test]
fn only_directories_holding_a_change_get_new_trees() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    write_tree(&src, 5, 40);
    let src_s = src.to_str().expect("utf-8 temp path");
    let first = env.backup_json(&[src_s]);
    assert_eq!(first["dirs_new"], 5, "{first}");
    let dirs = |s: &serde_json::Value| (s["dirs_unchanged"].as_u64(), s["dirs_changed"].as_u64());

    let same = env.backup_json(&[src_s]);
    assert_eq!(dirs(&same), (Some(5), Some(0)), "{same}");

    let f = src.join("d2/f2.bin");
    let mut data = fs::read(&f).expect("read");
    data.extend_from_slice(b"appended");
    fs::write(&f, &data).expect("write");
    let changed = env.backup_json(&[src_s]);
    assert_eq!(changed["files_changed"], 1, "{changed}");
    assert_eq!(dirs(&changed), (Some(3), Some(2)), "{changed}");

    let g = src.join("d1/f1.bin");
    fs::set_permissions(&g, fs::Permissions::from_mode(0o600)).expect("chmod");
    let chmod = env.backup_json(&[src_s]);
    // The ctime moved, so the file is read again; its content adds nothing.
    assert_eq!(chmod["files_changed"], 1, "{chmod}");
    assert_eq!(chmod["data_blobs_new"], 0, "{chmod}");
    assert_eq!(dirs(&chmod), (Some(3), Some(2)), "{chmod}");

    let out = env.path("out");
    env.ok(&[
        "restore",
        &format!("latest:{src_s}"),
        "--target",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(fs::read(out.join("d2/f2.bin")).expect("read"), data);
    let mode = fs::metadata(out.join("d1/f1.bin"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn changed_file_stores_only_changed_chunks() {
    // Small chunks so that a 16 MiB file has many of them.
    let env = Env::with_repo(&["--chunker-params", "16K,64K,256K"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut rng = common::rng(2);
    let mut data = common::random_bytes(&mut rng, 16 << 20);
    let file = src.join("checkpoint.bin");
    fs::write(&file, &data).expect("write");
    let src_s = src.to_str().expect("utf-8");
    env.backup_json(&[src_s]);

    // Rewrite 100 bytes in the middle: at most the chunk holding them changes, and
    // its neighbour if the cut point moved.
    data[8 << 20..(8 << 20) + 100].fill(0xAB);
    fs::write(&file, &data).expect("write");
    let s = env.backup_json(&[src_s]);
    assert_eq!(s["files_changed"], 1, "{s}");
    let new = s["bytes_new"].as_u64().expect("bytes_new");
    assert!(
        new > 0 && new <= 2 * 256 * 1024 + 64 * 1024,
        "rewrite stored {new} bytes: {s}"
    );

    // Insert 10 bytes at the start: content-defined chunking re-synchronizes.
    let mut shifted = b"0123456789".to_vec();
    shifted.extend_from_slice(&data);
    fs::write(&file, &shifted).expect("write");
    let s = env.backup_json(&[src_s]);
    let new = s["bytes_new"].as_u64().expect("bytes_new");
    assert!(
        new <= 2 * 256 * 1024 + 64 * 1024,
        "insertion stored {new} bytes: {s}"
    );

    // Both versions restore exactly.
    let out = env.path("out");
    env.ok(&[
        "restore",
        &format!("latest:{src_s}"),
        "--target",
        out.to_str().expect("utf-8"),
        "--verify",
    ]);
    assert_eq!(fs::read(out.join("checkpoint.bin")).expect("read"), shifted);
    let out1 = env.path("out1");
    env.ok(&[
        "restore",
        &format!("latest~1:{src_s}"),
        "--target",
        out1.to_str().expect("utf-8"),
    ]);
    assert_eq!(fs::read(out1.join("checkpoint.bin")).expect("read"), data);
}

/// Neither file contents nor file names appear in the repository's bytes, with or
/// without compression.
#[test]
fn no_plaintext_content_or_name_in_repository() {
    for compression in ["0", "3"] {
        let env = Env::with_repo(&["--compression", compression]);
        let src = env.path("src");
        let secret_dir = src.join("confidential-dirname-q7x");
        fs::create_dir_all(&secret_dir).expect("mkdir");
        let marker = b"PLAINTEXT-MARKER-4f1d9c-";
        let mut content = Vec::new();
        while content.len() < 200_000 {
            content.extend_from_slice(marker);
        }
        fs::write(secret_dir.join("secret-filename-k2v.txt"), &content).expect("write");
        let mut rng = common::rng(3);
        fs::write(
            secret_dir.join("random.bin"),
            common::random_bytes(&mut rng, 300_000),
        )
        .expect("write");
        env.backup_json(&["--tag", "tagvalue", src.to_str().expect("utf-8")]);

        let needles: [&[u8]; 4] = [
            marker,
            b"secret-filename-k2v",
            b"confidential-dirname-q7x",
            b"tagvalue",
        ];
        let random = common::random_bytes(&mut common::rng(3), 300_000);
        for f in common::all_files(&env.repo) {
            let bytes = fs::read(&f).expect("read repo file");
            for n in needles {
                assert!(
                    !bytes.windows(n.len()).any(|w| w == n),
                    "{:?} found in {} (compression {compression})",
                    String::from_utf8_lossy(n),
                    f.display()
                );
            }
            // A 64-byte window of the incompressible file is not stored verbatim either.
            let probe = &random[100_000..100_064];
            assert!(
                !bytes.windows(64).any(|w| w == probe),
                "raw content found in {}",
                f.display()
            );
        }
    }
}

/// A file whose blobs are no longer in the repository is read again even though
/// its metadata is unchanged, so a backup repairs a repository that lost them.
/// (Index files lost alone cost nothing: the backup adopts the packs they named,
/// see `resume`. Here the data packs go too; the tree packs stay, so the parent's
/// trees still say the files are unchanged.)
#[test]
fn backup_rereads_files_whose_blobs_are_missing() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    write_tree(&src, 4, 8);
    let src_s = src.to_str().expect("utf-8");
    env.backup_json(&[src_s]);
    let mut removed = 0;
    for f in common::all_files(&env.repo.join("data")) {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        let pack: serde_json::Value =
            serde_json::from_str(&env.ok(&["cat", "pack", &name])).expect("json");
        let blobs = pack["blobs"].as_array().expect("blobs");
        if blobs.iter().all(|b| b["type"] == "data") {
            fs::remove_file(f).expect("remove data pack");
            removed += 1;
        }
    }
    assert!(removed > 0);
    for f in common::all_files(&env.repo.join("index")) {
        fs::remove_file(f).expect("remove index file");
    }
    let out = env.run(&["backup", "--json", src_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = common::last_json(&String::from_utf8_lossy(&out.stdout), "summary");
    assert!(
        s["bytes_read"].as_u64().expect("bytes_read") > 100_000,
        "{s}"
    );
    assert_eq!(s["files_unchanged"], 0, "{s}");
    let target = env.path("out");
    env.ok(&[
        "restore",
        &format!("latest:{src_s}"),
        "--target",
        target.to_str().expect("utf-8"),
        "--verify",
    ]);
    for f in common::all_files(&src) {
        let rel = f.strip_prefix(&src).expect("prefix");
        assert_eq!(
            fs::read(&f).expect("src"),
            fs::read(target.join(rel)).expect("restored")
        );
    }
}
