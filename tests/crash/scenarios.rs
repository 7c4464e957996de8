//! The prepared repositories, one per operation, with the damage the repair
//! commands need, and what each snapshot must restore.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{self, Env, last_json};
use crate::harness::{self, Converge, Expect, Manifest, Scenario};

/// Small chunks in 1 MiB packs: a few MiB make many blobs and packs.
const INIT: [&str; 4] = ["--pack-size", "1", "--chunker-params", "64K,128K,512K"];

/// A repository with three snapshots: `src` (host alpha) twice, the second
/// after some files changed, were deleted and were added, and `other` (host
/// beta) once. `scale` multiplies the number of files.
pub struct Base {
    pub env: Env,
    pub src: PathBuf,
    pub first: String,
    pub second: String,
    /// Each snapshot's files, as its source held them.
    pub manifests: HashMap<String, Manifest>,
    /// Index files each backup wrote, in order.
    pub index_files: Vec<Vec<PathBuf>>,
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

fn write_random(path: &Path, rng: &mut rand::rngs::SmallRng, size: usize) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, common::random_bytes(rng, size)).expect("write");
}

fn index_files(env: &Env) -> Vec<PathBuf> {
    common::all_files(&env.repo.join("index"))
}

fn backup_of(env: &Env, host: &str, path: &Path, seen: &mut Vec<Vec<PathBuf>>) -> String {
    let before = index_files(env);
    let sum = env.backup_json(&["--host", host, s(path)]);
    seen.push(
        index_files(env)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect(),
    );
    sum["snapshot_id"]
        .as_str()
        .expect("snapshot_id")
        .to_string()
}

pub fn base(scale: usize, seed: u64) -> Base {
    let env = harness::scratch_repo(&INIT);
    let mut rng = common::rng(seed);
    let src = env.path("src");
    for d in 0..4 {
        for i in 0..3 * scale {
            let size = 100_000 + (i * 37_000 + d * 11_000) % 200_000;
            write_random(&src.join(format!("d{d}/f{i}.bin")), &mut rng, size);
        }
        for i in 0..4 {
            let p = src.join(format!("d{d}/logs/run-{i}.log"));
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(&p, common::text_bytes(&mut rng, 40_000)).expect("write");
        }
        // Many small files in many directories: trees to walk and rewrite.
        for k in 0..2 * scale {
            let dir = src.join(format!("d{d}/s{k}"));
            fs::create_dir_all(&dir).expect("mkdir");
            for i in 0..6 {
                fs::write(
                    dir.join(format!("{i}.txt")),
                    common::text_bytes(&mut rng, 3_000),
                )
                .expect("write");
            }
        }
    }
    let mut manifests = HashMap::new();
    let mut index = Vec::new();
    let first = backup_of(&env, "alpha", &src, &mut index);
    manifests.insert(first.clone(), harness::manifest(&src));

    // Changed, deleted and new files: the second snapshot shares much with the
    // first, and forgetting the first leaves packs partly unused.
    for i in 0..scale {
        write_random(&src.join(format!("d1/f{i}.bin")), &mut rng, 150_000);
        fs::remove_file(src.join(format!("d2/f{i}.bin"))).expect("remove");
        write_random(&src.join(format!("d3/new-{i}.bin")), &mut rng, 220_000);
    }
    let second = backup_of(&env, "alpha", &src, &mut index);
    manifests.insert(second.clone(), harness::manifest(&src));

    let other = env.path("other");
    for i in 0..2 * scale {
        write_random(&other.join(format!("o{i}.bin")), &mut rng, 180_000);
    }
    let third = backup_of(&env, "beta", &other, &mut index);
    manifests.insert(third.clone(), harness::manifest(&other));
    Base {
        env,
        src,
        first,
        second,
        manifests,
        index_files: index,
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// What the base's snapshots must restore, read from the prepared repository
/// itself: a damaged snapshot restores only part of its files, and what it
/// restores before the operation runs must survive any kill. Damaged snapshots
/// must restore in full once the operation has run, unless `partial_after`.
fn expect_from(base: &Base, partial_after: bool) -> Expect {
    // Every run starts with an empty cache, which the baseline must too: the
    // cache still holds intact copies of index files damaged since, and restore
    // would use them.
    let cache = base.env.dir.path().join("cache");
    if cache.exists() {
        fs::remove_dir_all(&cache).expect("remove the cache");
    }
    let mut e = Expect::default();
    for s in harness::snapshots(&base.env) {
        let id = s["id"].as_str().expect("id").to_string();
        let full = base.manifests.get(&id).expect("known snapshot").clone();
        let (ok, got) = harness::restore(&base.env, &id, s["paths"][0].as_str().expect("p"), &full);
        let good: Manifest = got
            .into_iter()
            .filter(|(f, _)| full.contains_key(f))
            .collect();
        if !ok || good != full {
            if partial_after {
                e.replaced.insert(id.clone());
            } else {
                e.complete.insert(id.clone(), full);
            }
        }
        e.before.insert(id, good);
    }
    e.check_errors = harness::check_errors(&base.env, false);
    e
}

fn scenario(
    name: &'static str,
    base: Base,
    args: Vec<String>,
    expect: Expect,
    converge: Converge,
) -> Scenario {
    let password = base.env.password_file.clone();
    Scenario {
        name,
        template: base.env,
        args,
        password,
        source: None,
        expect,
        converge,
    }
}

/// A backup of the base's source after 16 MiB of new files were added to it.
pub fn backup() -> Scenario {
    let base = base(2, 1);
    let mut rng = common::rng(101);
    for i in 0..32 {
        write_random(
            &base.src.join(format!("d4/big-{i}.bin")),
            &mut rng,
            512 << 10,
        );
    }
    let mut expect = expect_from(&base, false);
    assert!(expect.check_errors.is_empty() && expect.complete.is_empty());
    expect.new_of_path = Some((s(&base.src).to_string(), harness::manifest(&base.src)));
    let args = strings(&["backup", "--host", "alpha", s(&base.src)]);
    scenario("backup", base, args, expect, Converge::Backup)
}

/// `prune` after the first snapshot was forgotten: packs wholly unused are
/// deleted, packs partly used are repacked.
pub fn prune() -> Scenario {
    let base = base(8, 2);
    base.env.ok(&["forget", &base.first]);
    let expect = expect_from(&base, false);
    assert!(expect.check_errors.is_empty() && expect.complete.is_empty());
    let args = strings(&["prune", "--max-unused", "0"]);
    scenario("prune", base, args, expect, Converge::Idempotent)
}

/// `forget --keep-last 1 --prune`: the first snapshot goes, then its data.
pub fn forget_prune() -> Scenario {
    let base = base(8, 3);
    let mut expect = expect_from(&base, false);
    assert!(expect.check_errors.is_empty() && expect.complete.is_empty());
    expect.may_go.insert(base.first.clone());
    let args = strings(&["forget", "--keep-last", "1", "--prune", "--max-unused", "0"]);
    scenario("forget --prune", base, args, expect, Converge::Idempotent)
}

/// Flips a byte of `pack`'s sealed header (it ends 4 bytes before the end).
fn flip_header(pack: &Path) {
    let mut b = fs::read(pack).expect("read");
    let at = b.len() - 10;
    b[at] ^= 0x20;
    fs::write(pack, b).expect("write");
}

fn flip_at(file: &Path, at: usize) {
    let mut b = fs::read(file).expect("read");
    b[at] ^= 0x20;
    fs::write(file, b).expect("write");
}

/// `repair packs` of three packs whose headers were damaged on storage: every
/// blob is salvaged through the index, so nothing is lost.
pub fn repair_packs() -> Scenario {
    let base = base(8, 4);
    let packs = common::all_files(&base.env.repo.join("data"));
    for p in packs.iter().step_by(packs.len() / 3).take(3) {
        flip_header(p);
    }
    let expect = expect_from(&base, false);
    let args = strings(&["repair", "packs"]);
    scenario("repair packs", base, args, expect, Converge::Idempotent)
}

/// `repair index` after the first backup's index files were damaged and the
/// second's deleted: until it runs, the first two snapshots restore only what
/// the third backup's index reaches, and every pack of the first two backups
/// has its header read.
pub fn repair_index() -> Scenario {
    let base = base(8, 5);
    for f in &base.index_files[0] {
        flip_at(f, fs::metadata(f).expect("meta").len() as usize / 2);
    }
    for f in &base.index_files[1] {
        fs::remove_file(f).expect("remove index file");
    }
    let expect = expect_from(&base, false);
    assert!(
        !expect.complete.is_empty(),
        "the damage reaches no snapshot"
    );
    let args = strings(&["repair", "index"]);
    scenario("repair index", base, args, expect, Converge::Idempotent)
}

/// The pack holding `blob` (a hex id), and the blob's place in it.
fn pack_of(env: &Env, blob: &str) -> (PathBuf, u64, u64) {
    for p in common::all_files(&env.repo.join("data")) {
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        let v: serde_json::Value =
            serde_json::from_str(&env.ok(&["cat", "pack", &name])).expect("json");
        for b in v["blobs"].as_array().expect("blobs") {
            if b["id"] == blob {
                let off = b["offset"].as_u64().expect("offset");
                let len = b["length"].as_u64().expect("length");
                return (p, off, len);
            }
        }
    }
    panic!("no pack holds blob {blob}");
}

fn flip_blob(env: &Env, blob: &str) {
    let (pack, off, len) = pack_of(env, blob);
    flip_at(&pack, (off + len / 2) as usize);
}

fn node<'a>(tree: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    tree["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {tree}"))
}

/// `repair snapshots --forget` after the second snapshot lost a directory's
/// tree and a file's data (bytes flipped in their packs, which `repair packs`
/// then took out of the index): it is replaced by a snapshot without them.
pub fn repair_snapshots() -> Scenario {
    let base = base(8, 6);
    let env = &base.env;
    let root = |id: &str| -> serde_json::Value {
        serde_json::from_str(&env.ok(&["cat", "tree", &format!("{id}:{}", s(&base.src))]))
            .expect("json")
    };
    // d1 changed in the second backup: its tree is the second snapshot's alone.
    let d1 = node(&root(&base.second), "d1")["subtree"]
        .as_str()
        .expect("subtree")
        .to_string();
    assert_ne!(node(&root(&base.first), "d1")["subtree"], d1.as_str());
    let d3: serde_json::Value = serde_json::from_str(&env.ok(&[
        "cat",
        "tree",
        &format!("{}:{}/d3", base.second, s(&base.src)),
    ]))
    .expect("json");
    let chunk = node(&d3, "new-0.bin")["content"][0]
        .as_str()
        .expect("content")
        .to_string();
    flip_blob(env, &d1);
    flip_blob(env, &chunk);
    env.run(&["repair", "packs"]);
    let mut expect = expect_from(&base, true);
    assert!(
        expect.replaced.contains(&base.second) && expect.replaced.len() == 1,
        "the damage must reach the second snapshot alone"
    );
    // A snapshot whose tree misses a directory restores nothing at all (restore
    // stops at the missing tree); its repaired replacement restores all but
    // what was lost.
    let kept = base.manifests[&base.second]
        .iter()
        .filter(|(f, _)| !f.starts_with("d1") && *f != Path::new("d3/new-0.bin"))
        .map(|(f, h)| (f.clone(), *h))
        .collect();
    expect.repaired.insert(base.second.clone(), kept);
    let args = strings(&["repair", "snapshots", "--forget"]);
    scenario("repair snapshots", base, args, expect, Converge::Idempotent)
}

/// A small repository and a password file holding `password`.
fn with_password(base: &Base, name: &str, password: &str) -> PathBuf {
    let p = base.env.path(name);
    common::write_private(&p, &format!("{password}\n"));
    p
}

/// `key add` of a password key with the default (expensive) key derivation.
pub fn key_add() -> Scenario {
    let base = base(1, 7);
    let new_password = with_password(&base, "new-password", "a new password");
    let expect = expect_from(&base, false);
    let args = vec![
        "key".to_string(),
        "add".to_string(),
        "--new-password-file".to_string(),
        s(&new_password).to_string(),
    ];
    scenario(
        "key add",
        base,
        args,
        expect,
        Converge::KeyAdd { new_password },
    )
}

/// `key remove` of a second key, opened with a third whose key derivation takes
/// a while (so the run has moments to kill it at).
pub fn key_remove() -> Scenario {
    let base = base(1, 8);
    let victim = with_password(&base, "victim", "to be removed");
    let out = base.env.ok(&[
        "key",
        "add",
        "--json",
        "--new-password-file",
        s(&victim),
        "--kdf-memory",
        "1024",
        "--kdf-iterations",
        "1",
    ]);
    let id = last_json(&out, "key_added")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let opener = with_password(&base, "opener", "the remover");
    base.env.ok(&[
        "key",
        "add",
        "--new-password-file",
        s(&opener),
        "--kdf-memory",
        "16384",
        "--kdf-iterations",
        "2",
    ]);
    let expect = expect_from(&base, false);
    let args = strings(&["key", "remove", &id]);
    let mut sc = scenario("key remove", base, args, expect, Converge::KeyRemove { id });
    sc.password = opener;
    sc
}

/// `copy` of the base's three snapshots into an unrelated repository (so they
/// are re-chunked) that already holds a copy of the first.
pub fn copy() -> Scenario {
    let from = base(6, 9);
    let to = harness::scratch_repo(&["--pack-size", "1"]);
    let from_args = [
        "--from-repo",
        s(&from.env.repo),
        "--from-password-file",
        s(&from.env.password_file),
    ];
    let mut first = vec!["copy"];
    first.extend_from_slice(&from_args);
    first.push(&from.first);
    to.ok(&first);
    let mut expect = Expect::default();
    for snap in harness::snapshots(&to) {
        let id = snap["id"].as_str().expect("id").to_string();
        expect
            .before
            .insert(id, from.manifests[&from.first].clone());
    }
    assert_eq!(expect.before.len(), 1);
    expect.by_original = from.manifests.clone();
    let mut args = vec!["copy".to_string()];
    args.extend(from_args.iter().map(|a| a.to_string()));
    Scenario {
        name: "copy",
        password: to.password_file.clone(),
        template: to,
        args,
        source: Some(from.env),
        expect,
        converge: Converge::Idempotent,
    }
}
