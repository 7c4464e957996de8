//! `cairn key`: adding password keys and generated secret files, listing, removing,
//! and opening a repository that has several keys (some of them damaged).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cairn::crypto::{KdfParams, MasterKey};
use cairn::id::{KeyId, RepoId};
use cairn::keyfile::KeyFile;

use crate::common::{self, Env, PASSWORD, stderr, stdout};

/// Password keys in tests are cheap to derive, like `Env::with_repo`'s.
const CHEAP: [&str; 4] = ["--kdf-memory", "1024", "--kdf-iterations", "1"];

/// Names of the files under `keys/`.
fn key_files(env: &Env) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(env.repo.join("keys"))
        .expect("keys dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `key add --new-password-file FILE` with cheap key derivation.
fn key_add_args(file: &Path) -> Vec<&str> {
    let mut args = vec![
        "key",
        "add",
        "--new-password-file",
        file.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(&CHEAP);
    args
}

fn add_password_key(env: &Env, password: &str) -> (std::path::PathBuf, String) {
    let file = env.path(&format!("pw-{password}"));
    fs::write(&file, format!("{password}\n")).expect("password file");
    let mut args = key_add_args(&file);
    args.push("--json");
    let added = common::last_json(&env.ok(&args), "key_added");
    let id = added["id"].as_str().expect("id").to_string();
    (file, id)
}

fn list_json(env: &Env, password_file: &Path) -> Vec<serde_json::Value> {
    let out = env.ok_with(password_file, &["key", "list", "--json"]);
    serde_json::from_str::<Vec<serde_json::Value>>(&out).expect("key list JSON")
}

fn current_id(list: &[serde_json::Value]) -> String {
    let current: Vec<&serde_json::Value> = list.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(current.len(), 1, "{list:?}");
    current[0]["id"].as_str().expect("id").to_string()
}

fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    let mut rng = common::rng(7);
    fs::write(src.join("a.bin"), common::random_bytes(&mut rng, 300_000)).expect("write");
    fs::write(src.join("sub/b.log"), common::text_bytes(&mut rng, 50_000)).expect("write");
    src
}

#[test]
fn added_password_opens_and_the_old_one_still_does() {
    let env = Env::with_repo(&[]);
    let first = current_id(&list_json(&env, &env.password_file));
    let (pw2, second) = add_password_key(&env, "second password");
    assert_ne!(first, second);
    assert_eq!(key_files(&env), {
        let mut v = vec![first.clone(), second.clone()];
        v.sort();
        v
    });

    let src = source(&env);
    env.ok_with(&pw2, &["backup", src.to_str().expect("utf-8")]);
    for pw in [&pw2, &env.password_file] {
        let snaps = env.ok_with(pw, &["snapshots", "--json"]);
        let snaps: Vec<serde_json::Value> = serde_json::from_str(&snaps).expect("JSON");
        assert_eq!(snaps.len(), 1);
    }

    let by_old = list_json(&env, &env.password_file);
    assert_eq!(by_old.len(), 2);
    assert_eq!(current_id(&by_old), first);
    let by_new = list_json(&env, &pw2);
    assert_eq!(current_id(&by_new), second);
    for k in &by_new {
        assert_eq!(k["kdf"]["memory_kib"], 1024, "{k}");
        assert_eq!(k["kdf"]["iterations"], 1, "{k}");
    }

    let text = env.ok_with(&pw2, &["key", "list"]);
    let marked: Vec<&str> = text.lines().filter(|l| l.starts_with("* ")).collect();
    assert_eq!(marked.len(), 1, "{text}");
    assert!(marked[0].contains(&second[..8]), "{text}");
    assert!(text.contains(&first[..8]), "{text}");
    assert!(text.contains("1.0 MiB, 1 iteration"), "{text}");
}

#[test]
fn generated_secret_file_backs_up_and_restores() {
    let env = Env::with_repo(&[]);
    let secret = env.path("conf/cairn/repo.key");
    let secret_arg = secret.to_str().expect("utf-8");
    let out = env.run(&["key", "add", "--generate", secret_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning") && stderr(&out).contains(secret_arg),
        "{}",
        stderr(&out)
    );

    let text = fs::read_to_string(&secret).expect("secret file");
    let hex = text.strip_suffix('\n').expect("ends with a newline");
    assert_eq!(hex.len(), 64, "{text:?}");
    assert!(
        hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{text:?}"
    );
    let mode = fs::metadata(&secret).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");

    let src = source(&env);
    env.ok_with(&secret, &["backup", src.to_str().expect("utf-8")]);
    let target = env.path("restored");
    // Through the environment, as a cron job would.
    let out = env
        .bare_cmd()
        .env("CAIRN_PASSWORD_FILE", &secret)
        .args([
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf-8"),
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = target.join(src.strip_prefix("/").expect("absolute"));
    for rel in ["a.bin", "sub/b.log"] {
        assert!(
            fs::read(src.join(rel)).expect("source") == fs::read(restored.join(rel)).expect(rel),
            "{rel} differs after restore"
        );
    }

    let listed = list_json(&env, &secret);
    let generated = current_id(&listed);
    let entry = listed.iter().find(|k| k["id"] == generated).expect("entry");
    assert_eq!(entry["kdf"]["minimal"], true, "{entry}");
    assert_eq!(entry["kdf"]["memory_kib"], 1024, "{entry}");
}

#[test]
fn generate_refuses_an_existing_file() {
    let env = Env::with_repo(&[]);
    let before = key_files(&env);
    let taken = env.path("taken.key");
    fs::write(&taken, "precious\n").expect("write");
    let out = env.run(&["key", "add", "--generate", taken.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("taken.key"), "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&taken).expect("read"), "precious\n");
    assert_eq!(key_files(&env), before);
}

#[test]
fn wrong_current_password_adds_nothing() {
    let env = Env::with_repo(&[]);
    let before = key_files(&env);
    let wrong = env.path("wrong");
    fs::write(&wrong, "not the password\n").expect("write");
    let new_pw = env.path("new");
    fs::write(&new_pw, "new one\n").expect("write");
    let out = env.run_with(&wrong, &key_add_args(&new_pw));
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    let secret = env.path("never.key");
    let out = env.run_with(
        &wrong,
        &["key", "add", "--generate", secret.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(
        !secret.exists(),
        "secret written although nothing was added"
    );
    assert_eq!(key_files(&env), before);
}

#[test]
fn generate_conflicts_with_password_flags() {
    let env = Env::with_repo(&[]);
    for extra in [
        &["--new-password-file", "x"][..],
        &["--kdf-memory", "2048"][..],
        &["--kdf-iterations", "2"][..],
    ] {
        let mut args = vec!["key", "add", "--generate", "g.key"];
        args.extend_from_slice(extra);
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot be used with"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn remove_refuses_the_current_key_and_removes_another_by_prefix() {
    let env = Env::with_repo(&[]);
    let first = current_id(&list_json(&env, &env.password_file));
    let (pw2, second) = add_password_key(&env, "second");

    let out = env.run(&["key", "remove", &first[..6]]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("open the repository with another key"),
        "{}",
        stderr(&out)
    );
    assert_eq!(key_files(&env).len(), 2);

    let out = env.run(&["key", "remove", "zz"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let unknown = "000000000000";
    let out = env.run(&["key", "remove", unknown]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no key file"), "{}", stderr(&out));

    let removed = env.ok(&["key", "remove", &second[..8].to_ascii_uppercase()]);
    assert!(removed.contains(&second), "{removed}");
    assert_eq!(key_files(&env), vec![first.clone()]);
    let out = env.run_with(&pw2, &["snapshots"]);
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));

    // The new password may remove the first key, once it is the one opening.
    let (pw3, third) = add_password_key(&env, "third");
    env.ok_with(&pw3, &["key", "remove", &first[..8]]);
    assert_eq!(key_files(&env), vec![third]);
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
}

#[test]
fn ambiguous_prefix_removes_nothing() {
    let env = Env::with_repo(&[]);
    // Keys until two share a first hex digit (at most 17).
    let digit = loop {
        let names = key_files(&env);
        let shared = names
            .iter()
            .map(|n| &n[..1])
            .find(|d| names.iter().filter(|n| n.starts_with(*d)).count() > 1);
        if let Some(d) = shared {
            break d.to_string();
        }
        add_password_key(&env, &format!("pw{}", names.len()));
    };
    let before = key_files(&env);
    let out = env.run(&["key", "remove", &digit]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("ambiguous"), "{}", stderr(&out));
    assert_eq!(key_files(&env), before);
}

#[test]
fn damaged_extra_key_file_is_listed_and_does_not_block_opening() {
    let env = Env::with_repo(&[]);
    let (_, second) = add_password_key(&env, "second");
    // One key file garbled in place (its name no longer matches), and one that
    // is named after its content but isn't a key file.
    let garbled = env.repo.join("keys").join(&second);
    let mut bytes = fs::read(&garbled).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&garbled, &bytes).expect("write");
    let junk = b"not a key file".to_vec();
    let junk_id = blake3::hash(&junk).to_hex().to_string();
    fs::write(env.repo.join("keys").join(&junk_id), &junk).expect("write");

    // Not a key file name at all: ignored, as the spec says of such names.
    fs::write(env.repo.join("keys/README"), "notes").expect("write");

    env.ok(&["snapshots"]);
    // A wrong password says that some key files were not tried.
    let wrong = env.path("wrong");
    fs::write(&wrong, "wrong\n").expect("write");
    let out = env.run_with(&wrong, &["snapshots"]);
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2 of them could not be read"),
        "{}",
        stderr(&out)
    );

    let out = env.run(&["key", "list", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("2 key files could not be read"));
    let list: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(list.len(), 3);
    for id in [&second, &junk_id] {
        let entry = list.iter().find(|k| k["id"] == id.as_str()).expect(id);
        assert!(
            entry["error"].as_str().is_some_and(|e| e.contains(&id[..])),
            "{entry}"
        );
    }
    let out = env.run(&["key", "list"]);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{}  unreadable", &junk_id[..8])),
        "{text}"
    );

    // A damaged key can be removed like any other.
    env.ok(&["key", "remove", &junk_id[..10]]);
    env.ok(&["key", "remove", &second[..10]]);
    assert_eq!(list_json(&env, &env.password_file).len(), 1);
}

/// A new password file holding more than one line is refused: typed later, such a
/// password would never match.
#[test]
fn new_password_with_a_line_break_is_refused() {
    let env = Env::with_repo(&[]);
    let file = env.path("two-lines");
    fs::write(&file, "secret\n# written on Monday\n").expect("write");
    let out = env.run(&key_add_args(&file));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("line break"), "{}", stderr(&out));
    assert_eq!(key_files(&env).len(), 1);
}

/// The repository id, in the clear in the config (spec §8).
fn repo_id(env: &Env) -> RepoId {
    let config = fs::read(env.repo.join("config")).expect("config");
    RepoId(config[10..42].try_into().expect("32 bytes"))
}

/// A key file for this repository wrapping a random master key under `password`:
/// what anyone who can write to `keys/` can make.
fn planted_key(env: &Env, password: &str, kdf: KdfParams) -> KeyFile {
    let stranger = MasterKey::generate().expect("master key");
    KeyFile::create(&stranger, repo_id(env), password.as_bytes(), kdf).expect("key file")
}

/// Writes `kf` under `keys/` by the hash of its bytes; returns its id.
fn plant(env: &Env, kf: &KeyFile) -> String {
    let bytes = kf.encode();
    let id = KeyId::of_stored(&bytes).to_hex();
    // Mode 0600 like real key files, so the only difference is the content.
    let path = env.repo.join("keys").join(&id);
    fs::write(&path, bytes).expect("plant key file");
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    id
}

fn cheap_kdf() -> KdfParams {
    KdfParams::new(8, 1).expect("cheap parameters")
}

/// Issue #10, item 4: a planted key file may cost each password attempt at most
/// 1 GiB, 16 passes, 16 lanes and 4 GiB·passes of Argon2. Above that it is refused, named, before
/// anything is derived; beside a working key it is passed over.
#[test]
fn key_file_above_the_kdf_caps_is_refused_without_deriving() {
    let env = Env::with_repo(&[]);
    let [real] = key_files(&env).try_into().expect("one key file");
    let aside = env.path("real-key");
    for (memory_kib, iterations, lanes, cap) in [
        (1024 * 1024 + 1024, 1, 4, "above the cap of 1 GiB"),
        (1024, 17, 4, "above the cap of 16"),
        (512 * 1024, 16, 4, "above the cap of 4 GiB·passes"),
        (1024, 1, 17, "17 Argon2 lanes are above the cap of 16"),
    ] {
        let mut kf = planted_key(&env, PASSWORD, cheap_kdf());
        kf.kdf.memory_kib = memory_kib;
        kf.kdf.iterations = iterations;
        kf.kdf.parallelism = lanes;
        let planted = plant(&env, &kf);
        env.ok(&["snapshots"]);

        fs::rename(env.repo.join("keys").join(&real), &aside).expect("move aside");
        let out = env.run(&["snapshots"]);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{memory_kib} × {iterations}: {err}"
        );
        assert!(
            err.contains(&format!("key file {planted}")) && err.contains(cap),
            "{memory_kib} × {iterations}: {err}"
        );
        fs::rename(&aside, env.repo.join("keys").join(&real)).expect("move back");
        fs::remove_file(env.repo.join("keys").join(&planted)).expect("remove planted");
    }
}

/// `init` and `key add` refuse parameters above the caps before asking for any
/// password, naming the flags and the cap.
#[test]
fn init_and_key_add_refuse_kdf_parameters_above_the_caps() {
    let too_costly: [(&[&str], &str); 4] = [
        (
            &["--kdf-memory", "1049600", "--kdf-iterations", "1"],
            "--kdf-memory 1049600 --kdf-iterations 1 --kdf-lanes 4: Argon2 memory 1025 MiB is \
             above the cap of 1 GiB",
        ),
        (
            &["--kdf-memory", "1024", "--kdf-iterations", "17"],
            "17 Argon2 iterations are above the cap of 16",
        ),
        (
            &["--kdf-memory", "524288", "--kdf-iterations", "16"],
            "512 MiB × 16 = 8 GiB·passes is above the cap of 4 GiB·passes",
        ),
        (&["--kdf-iterations", "17"], "--kdf-iterations 17"),
    ];
    let env = Env::new();
    for (flags, said) in too_costly {
        let mut args = vec!["init"];
        args.extend_from_slice(flags);
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(said), "{flags:?}: {}", stderr(&out));
        assert!(!env.repo.exists(), "{flags:?}: init wrote something");
    }

    let env = Env::with_repo(&[]);
    let before = key_files(&env);
    let new_pw = env.path("new");
    fs::write(&new_pw, "new one\n").expect("write");
    for (flags, said) in too_costly {
        let mut args = vec![
            "key",
            "add",
            "--new-password-file",
            new_pw.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(flags);
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(said), "{flags:?}: {}", stderr(&out));
    }
    assert_eq!(key_files(&env), before);
}

/// Issue #10, item 5: with a key file planted for a guessed password (and the real
/// key removed or damaged by the same hand), a run with the right guess answered
/// "config is corrupt" (exit 1) and any other "wrong password" (exit 12), so the
/// owner's own runs confirmed the guess. Both now read the same.
#[test]
fn planted_key_for_a_guessed_password_reads_as_a_wrong_password() {
    let env = Env::with_repo(&[]);
    let [real] = key_files(&env).try_into().expect("one key file");
    let guess = "summer2026";
    plant(&env, &planted_key(&env, guess, cheap_kdf()));
    let guessed = env.path("guessed");
    common::write_private(&guessed, &format!("{guess}\n"));
    let wrong = env.path("wrong");
    common::write_private(&wrong, "plainly wrong\n");

    let same_answer = |when: &str| {
        let by_guess = env.run_with(&guessed, &["snapshots"]);
        let by_wrong = env.run_with(&wrong, &["snapshots"]);
        for out in [&by_guess, &by_wrong] {
            assert_eq!(out.status.code(), Some(12), "{when}: {}", stderr(out));
            assert!(
                stderr(out).contains("wrong password"),
                "{when}: {}",
                stderr(out)
            );
            assert_eq!(stderr(out).lines().count(), 1, "{when}: {}", stderr(out));
        }
        assert_eq!(stderr(&by_guess), stderr(&by_wrong), "{when}");
        assert_eq!(stdout(&by_guess), stdout(&by_wrong), "{when}");
    };
    // Beside the real key, the right password still opens.
    same_answer("real key present");
    env.ok(&["snapshots"]);

    let real_path = env.repo.join("keys").join(&real);
    let aside = env.path("real-key");
    fs::rename(&real_path, &aside).expect("move aside");
    same_answer("planted key alone");
    common::write_private(&real_path, "damaged");
    same_answer("real key damaged");
    fs::rename(&aside, &real_path).expect("move back");
    env.ok(&["snapshots"]);
}

/// A key file commits to its wrapping key: with the commitment altered it doesn't
/// open even under the right password, although its tag would verify; without a
/// commitment (as key files written before it existed) the tag alone decides.
#[test]
fn key_file_with_an_altered_commitment_does_not_open() {
    let env = Env::with_repo(&[]);
    let [real] = key_files(&env).try_into().expect("one key file");
    let real_path = env.repo.join("keys").join(&real);
    let bytes = fs::read(&real_path).expect("read key file");
    let mut kf = KeyFile::decode(&bytes, &KeyId::from_hex(&real).expect("id")).expect("decode");
    let commitment = kf
        .commitment
        .as_mut()
        .expect("a new key file has a commitment");
    commitment[0] ^= 1;
    let altered = plant(&env, &kf);
    fs::remove_file(&real_path).expect("remove the original");
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));

    kf.commitment = None;
    plant(&env, &kf);
    fs::remove_file(env.repo.join("keys").join(&altered)).expect("remove altered");
    env.ok(&["snapshots"]);
}
