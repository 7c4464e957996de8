//! Where the code must do what format-spec/README.md says: compression level 0
//! for every stored file, names that are not cairn files, an unreadable index
//! file, and the largest blob a writer may store.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use cairn::backend::{FileType, LocalBackend};
use cairn::format::{self, FileKind, SealKind};
use cairn::pack::{BlobKind, MAX_BLOB_LEN};
use cairn::repository::Repository;

use crate::common::{self, Env, PASSWORD, stderr};

fn open(env: &Env) -> Arc<Repository> {
    let backend = Arc::new(LocalBackend::new(&env.repo));
    Arc::new(Repository::open(backend, PASSWORD.as_bytes()).expect("open"))
}

/// The payload encoding byte of a sealed file (§6): 0 raw, 1 zstd.
fn encoding_of(repo: &Repository, kind: FileKind, seal: SealKind, path: &Path) -> u8 {
    let bytes = fs::read(path).expect("read");
    let what = || path.display().to_string();
    let payload =
        format::open_file(repo.key(), repo.repo_id(), kind, seal, &bytes, &what).expect("open");
    payload[0]
}

fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    common::all_files(dir)
}

/// §6: "Writers ... MUST store encoding 0 when ... the level is 0" — for index,
/// snapshot and lock files too, not only blobs.
#[test]
fn compression_level_0_stores_every_sealed_file_raw() {
    for (level, want) in [("0", format::PAYLOAD_RAW), ("3", format::PAYLOAD_ZSTD)] {
        let env = Env::with_repo(&["--compression", level]);
        let src = env.path("src");
        fs::create_dir_all(&src).expect("mkdir");
        let mut rng = common::rng(7);
        for i in 0..40 {
            // Many similar entries: an index and a snapshot that zstd does shrink.
            fs::write(
                src.join(format!("log-{i:03}.txt")),
                common::text_bytes(&mut rng, 3000),
            )
            .expect("write");
        }
        env.ok(&[
            "backup",
            src.to_str().expect("utf-8"),
            "--tag",
            &"t".repeat(400),
        ]);
        let repo = open(&env);
        let snapshots = files_in(&env.repo.join("snapshots"));
        let indexes = files_in(&env.repo.join("index"));
        assert_eq!((snapshots.len(), indexes.len()), (1, 1));
        assert_eq!(
            encoding_of(&repo, FileKind::Snapshot, SealKind::Snapshot, &snapshots[0]),
            want,
            "snapshot at level {level}"
        );
        if level == "0" {
            // Index entries are mostly random ids; only level 0 is certain.
            assert_eq!(
                encoding_of(&repo, FileKind::Index, SealKind::Index, &indexes[0]),
                want,
                "index at level {level}"
            );
        }
        let _guard = cairn::lock::acquire(&repo, false).expect("lock");
        let locks = files_in(&env.repo.join("locks"));
        assert_eq!(locks.len(), 1);
        let lock = encoding_of(&repo, FileKind::Lock, SealKind::Lock, &locks[0]);
        if level == "0" {
            assert_eq!(lock, format::PAYLOAD_RAW, "lock at level 0");
        }
    }
}

/// §2: names that are not 64 lowercase hex digits are not cairn files. Uppercase
/// copies and strays in every directory are ignored by every command, noted by
/// `check`, and left alone by `prune`.
#[test]
fn names_that_are_not_lowercase_ids_are_ignored() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), "some data").expect("write");
    let s = src.to_str().expect("utf-8");
    env.ok(&["backup", s]);
    // An uppercase name of a file that exists in lowercase, and one that doesn't.
    let strays = [
        env.repo.join("index").join("AB".repeat(32)),
        env.repo.join("snapshots").join("CD".repeat(32)),
        env.repo.join("keys").join("EF".repeat(32)),
        env.repo.join("locks").join("0A".repeat(32)),
        env.repo.join("data/ab").join("AB".repeat(32)),
    ];
    for p in &strays {
        fs::write(p, b"not a cairn file").expect("write");
    }
    let snap = files_in(&env.repo.join("snapshots"))
        .into_iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().bytes().all(|b| !b.is_ascii_uppercase()))
        })
        .expect("snapshot");
    let name = snap
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let upper = env.repo.join("snapshots").join(name.to_uppercase());
    fs::copy(&snap, &upper).expect("copy");

    env.ok(&["backup", s]);
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    assert_eq!(list.as_array().expect("array").len(), 2, "{list}");
    let check = env.run(&["check"]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(
        stderr(&check).contains("unexpected file name"),
        "{}",
        stderr(&check)
    );
    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    for p in strays.iter().chain([&upper]) {
        assert!(p.exists(), "{} was touched", p.display());
    }
    env.ok(&["check", "--read-data"]);
}

/// One damaged index file must not stop backups and restores (they lose only
/// the deduplication against it), while commands that delete refuse.
#[test]
fn an_unreadable_index_file_does_not_stop_backups_or_restores() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut rng = common::rng(11);
    fs::write(src.join("a.bin"), common::random_bytes(&mut rng, 200_000)).expect("write");
    let s = src.to_str().expect("utf-8");
    env.ok(&["backup", s]);
    // Garbage under a valid name (its own hash): it passes the name check and
    // fails authentication.
    let garbage = b"\x89CRN\r\n\x1a\n\x01\x04 this is not an index".to_vec();
    let name = hex::encode(blake3::hash(&garbage).as_bytes());
    fs::write(env.repo.join("index").join(&name), &garbage).expect("write");

    fs::write(src.join("b.bin"), common::random_bytes(&mut rng, 100_000)).expect("write");
    let out = env.run(&["backup", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("index {name}")) && stderr(&out).contains("unreadable"),
        "{}",
        stderr(&out)
    );
    let target = env.path("out");
    let r = env.run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let restored = target.join(src.strip_prefix("/").expect("absolute"));
    for f in ["a.bin", "b.bin"] {
        assert_eq!(
            fs::read(restored.join(f)).expect("restored"),
            fs::read(src.join(f)).expect("source")
        );
    }
    let check = env.run(&["check"]);
    assert!(!check.status.success());
    assert!(stderr(&check).contains(&name), "{}", stderr(&check));
    let prune = env.run(&["prune"]);
    assert!(!prune.status.success());
    assert!(
        stderr(&prune).contains("repair index"),
        "{}",
        stderr(&prune)
    );
    let repair = env.run(&["repair", "snapshots"]);
    assert!(!repair.status.success());
    assert!(
        stderr(&repair).contains("repair index"),
        "{}",
        stderr(&repair)
    );
    env.ok(&["repair", "index"]);
    env.ok(&["check", "--read-data"]);
}

/// §17: readers refuse a blob over MAX_BLOB_LEN (and the whole index file that
/// lists it), so writers must never store one.
#[test]
fn writers_refuse_a_blob_larger_than_readers_accept() {
    let env = Env::with_repo(&[]);
    let repo = open(&env);
    let index = Arc::new(repo.load_index(&mut |_, _| {}).expect("index"));
    let mut saver = cairn::archiver::saver::Saver::new(Arc::clone(&repo), index);
    let payload = format::encode_payload(b"x", 0);
    let id = repo.key().blob_id(b"x");
    for kind in [BlobKind::Data, BlobKind::Tree] {
        let err = saver
            .add(kind, id, payload.clone(), MAX_BLOB_LEN as usize + 1)
            .expect_err("too large");
        assert!(err.to_string().contains("larger than"), "{err}");
    }
    saver
        .add(BlobKind::Data, id, payload, 1)
        .expect("a blob within the limit");
    saver.finish().expect("finish");
    assert!(
        repo.backend()
            .list(FileType::Pack)
            .expect("list")
            .iter()
            .all(|e| e.size < 4096 + 200),
        "nothing but the small blob (and a 4 KiB padded header) was written"
    );
}

/// Runs cairn under umask 000, where anything not created with an explicit mode
/// would be readable (and writable) by everyone.
fn ok_under_open_umask(env: &Env, args: &[&str]) -> String {
    use std::os::unix::process::CommandExt;
    let mut cmd = env.cmd();
    cmd.args(args);
    // SAFETY: umask is async-signal-safe and touches nothing but this child.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let out = cmd.output().expect("run cairn");
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    common::stdout(&out)
}

/// Modes of every file and directory under `dir`, itself included.
fn modes_under(dir: &Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = fs::symlink_metadata(&d).expect("stat");
        out.push((d.clone(), m.permissions().mode() & 0o7777));
        if m.is_dir() {
            for e in fs::read_dir(&d).expect("read_dir") {
                stack.push(e.expect("entry").path());
            }
        }
    }
    out
}

/// DESIGN and spec §2: repository files are created 0600 and directories 0700,
/// whatever the umask, and stay so as the repository is written later; the local
/// cache too. A key file others can read is warned about.
#[test]
fn repository_and_cache_are_private_whatever_the_umask() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), "first").expect("write");
    let s = src.to_str().expect("utf-8");
    let secret = env.path("secret.key");
    for args in [
        &["init", "--kdf-memory", "1024", "--kdf-iterations", "1"][..],
        &["backup", s],
        &["key", "add", "--generate", secret.to_str().expect("utf-8")],
        &["backup", s, "--tag", "second"],
        &["forget", "--keep-last", "1", "--prune"],
        &["repair", "index"],
        &[
            "restore",
            "latest",
            "--target",
            env.path("out").to_str().expect("utf-8"),
        ],
    ] {
        ok_under_open_umask(&env, args);
        if args[0] == "backup" {
            fs::write(src.join("a"), "changed").expect("write");
        }
    }
    let cache = env.path("cache");
    let mut checked = 0;
    for (p, mode) in modes_under(&env.repo)
        .into_iter()
        .chain(modes_under(&cache).into_iter().filter(|(p, _)| p != &cache))
    {
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:04o}", p.display());
        checked += 1;
    }
    assert!(checked > 270, "only {checked} paths checked");
    assert_eq!(modes_under(&secret)[0].1, 0o600);

    use std::os::unix::fs::PermissionsExt;
    let key = fs::read_dir(env.repo.join("keys"))
        .expect("keys")
        .next()
        .expect("a key")
        .expect("entry")
        .path();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = env.run(&["snapshots"]);
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&key.display().to_string()) && err.contains("can be read by other users"),
        "{err}"
    );
}

/// §11.1, §12: the lengths an observer of the storage sees of pack headers and
/// index files are powers of two of at least 4 KiB, so they give away the number
/// of blobs only to within a factor of two; everything still reads back.
#[test]
fn pack_headers_and_index_files_are_padded_to_powers_of_two() {
    for level in ["0", "3"] {
        let env = Env::with_repo(&["--compression", level, "--pack-size", "1"]);
        let src = env.path("src");
        fs::create_dir_all(&src).expect("mkdir");
        let mut rng = common::rng(5);
        for i in 0..300 {
            let body = if i % 2 == 0 {
                common::text_bytes(&mut rng, 2000 + i * 7)
            } else {
                common::random_bytes(&mut rng, 5000 + i * 13)
            };
            fs::write(src.join(format!("f{i:03}")), body).expect("write");
        }
        env.ok(&["backup", src.to_str().expect("utf-8")]);
        let packs = files_in(&env.repo.join("data"));
        assert!(packs.len() >= 3, "{} packs", packs.len());
        for p in &packs {
            let bytes = fs::read(p).expect("read");
            let n = bytes.len();
            let header = u32::from_le_bytes(bytes[n - 4..].try_into().expect("4 bytes")) as usize;
            assert!(
                header.is_power_of_two() && header >= 4096,
                "{}: header length {header}",
                p.display()
            );
        }
        for p in files_in(&env.repo.join("index")) {
            let n = fs::metadata(&p).expect("stat").len();
            assert!(
                n.is_power_of_two() && n >= 4096,
                "{}: {n} bytes",
                p.display()
            );
        }
        env.ok(&["check", "--read-data"]);
        let out = env.path("out");
        env.ok(&[
            "restore",
            "latest",
            "--target",
            out.to_str().expect("utf-8"),
            "--verify",
        ]);
    }
}
