//! The local cache: what it keeps, that reads are served from it, that auditing
//! commands bypass it, and that it forgets what the repository forgot.

use std::fs;

use crate::common::{self, Env};

/// The names in `dir`, sorted. A directory that can't be read is a failure, not
/// an empty list: two missing directories would otherwise compare equal, and a
/// loop over a missing one would check nothing.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn cache_serves_trees_and_is_bypassed_by_check() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    let mut rng = common::rng(5);
    fs::write(src.join("a.bin"), common::random_bytes(&mut rng, 100_000)).expect("write");
    fs::write(src.join("sub/b.txt"), b"b\n").expect("write");
    let s = src.to_str().expect("utf-8");
    env.ok(&["backup", s]);
    env.ok(&["ls", "latest"]);

    let snap: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    let repo_id = serde_json::from_str::<serde_json::Value>(&env.ok(&["cat", "config"]))
        .expect("json")["repo_id"]
        .as_str()
        .expect("repo id")
        .to_string();
    let cache = env.path("cache").join(&repo_id);
    assert_eq!(names(&cache.join("index")), names(&env.repo.join("index")));
    assert_eq!(
        names(&cache.join("snapshots")),
        vec![snap[0]["id"].as_str().expect("id").to_string()]
    );
    let tree_packs = names(&cache.join("tree-packs"));
    assert_eq!(tree_packs.len(), 1, "one tree pack, cached whole");

    // With the tree pack gone from the repository, listing still works from the
    // cache; without the cache it can't; check, which must see the repository's
    // own bytes, reports the loss.
    let pack = &tree_packs[0];
    fs::remove_file(env.repo.join("data").join(&pack[..2]).join(pack)).expect("rm pack");
    let listing = env.ok(&["ls", "latest"]);
    assert!(listing.contains("b.txt"), "{listing}");
    let uncached = env.run(&["--no-cache", "ls", "latest"]);
    assert!(!uncached.status.success());
    let check = env.run(&["check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains(&pack[..8])
            || String::from_utf8_lossy(&check.stderr).contains(&pack[..8]),
        "check names the missing pack"
    );
}

#[test]
fn cache_forgets_what_the_repository_forgot() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let s = src.to_str().expect("utf-8");
    fs::write(src.join("f"), b"one\n").expect("write");
    env.ok(&["backup", s]);
    fs::write(src.join("f"), b"two\n").expect("write");
    env.ok(&["backup", s]);
    env.ok(&[
        "restore",
        "latest",
        "--target",
        env.path("out").to_str().expect("utf-8"),
    ]);
    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    env.ok(&["snapshots"]);
    env.ok(&[
        "restore",
        "latest",
        "--target",
        env.path("out2").to_str().expect("utf-8"),
    ]);
    // The repository's own cache directory, named by its id (beside `seen/`,
    // whichever `read_dir` lists first).
    let cache = fs::read_dir(env.path("cache"))
        .expect("cache dir")
        .flatten()
        .find(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            e.path().is_dir() && name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .expect("repository cache")
        .path();
    assert_eq!(
        names(&cache.join("snapshots")),
        names(&env.repo.join("snapshots"))
    );
    assert_eq!(names(&cache.join("index")), names(&env.repo.join("index")));
    let packs: Vec<String> = common::all_files(&env.repo.join("data"))
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    let cached = names(&cache.join("tree-packs"));
    assert!(!cached.is_empty(), "the restore cached no tree pack");
    for p in cached {
        assert!(packs.contains(&p), "cached tree pack {p} was pruned");
    }
}

fn set_age(dir: &std::path::Path, age: std::time::Duration) {
    fs::File::open(dir)
        .expect("open dir")
        .set_modified(std::time::SystemTime::now() - age)
        .expect("set mtime");
}

const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Issue #11, item 17: caches of repositories that no longer exist stayed
/// forever. Those unused for 30 days go when cairn next opens a cache; one in
/// use by a running process stays, however old its mark.
#[test]
fn caches_unused_for_30_days_are_removed_but_not_one_in_use() {
    let env = Env::with_repo(&[]);
    let base = env.path("cache");
    env.ok(&["snapshots"]);
    let planted = |hex: char, age_days: u32| {
        let d = base.join(hex.to_string().repeat(64));
        fs::create_dir_all(d.join("index")).expect("mkdir");
        fs::write(d.join("index").join("x"), b"cached").expect("write");
        set_age(&d, DAY * age_days);
        d
    };
    let gone = planted('a', 31);
    let kept = planted('b', 29);
    let other = base.join("not-a-cache");
    fs::create_dir_all(&other).expect("mkdir");
    set_age(&other, DAY * 400);

    // A backup of another repository, running, with its cache in the same place.
    let env2 = Env::with_repo(&[]);
    let base_s = base.to_str().expect("utf-8");
    let before: Vec<String> = names(&base);
    let held = crate::locks::HeldBackup::start(&env2, &[], &[("CAIRN_CACHE_DIR", base_s)]);
    let in_use = names(&base)
        .into_iter()
        .find(|n| !before.contains(n))
        .map(|n| base.join(n))
        .expect("the held backup's cache");
    set_age(&in_use, DAY * 60);

    let own = names(&base);
    env.ok(&["snapshots"]);
    assert!(!gone.exists(), "unused for 31 days");
    assert!(kept.is_dir(), "used 29 days ago");
    assert!(other.is_dir(), "not named like a cache");
    assert!(in_use.is_dir(), "in use by a running backup");
    for n in own
        .iter()
        .filter(|n| n.len() == 64 && **n != gone.file_name().expect("name").to_string_lossy())
    {
        assert!(base.join(n).is_dir(), "{n} was removed");
    }
    let out = held.finish(b"data");
    assert!(out.status.success(), "{}", common::stderr(&out));
    // Once that process is done, an old mark is just old.
    set_age(&in_use, DAY * 60);
    env.ok(&["snapshots"]);
    assert!(!in_use.exists());
    assert!(kept.is_dir());
}

/// A cached tree pack cut short (a full disk while it was written, say) is
/// fetched again whole from the repository and replaced, and a flipped byte in
/// one is caught by the blob's tag: either way the listing is right.
#[test]
fn a_short_or_damaged_cached_tree_pack_is_replaced() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    fs::write(src.join("sub/b.txt"), b"b\n").expect("write");
    let s = src.to_str().expect("utf-8");
    env.ok(&["backup", s]);
    let listing = env.ok(&["ls", "latest"]);
    assert!(listing.contains("b.txt"), "{listing}");
    let repo_id = serde_json::from_str::<serde_json::Value>(&env.ok(&["cat", "config"]))
        .expect("json")["repo_id"]
        .as_str()
        .expect("repo id")
        .to_string();
    let packs = env.path("cache").join(&repo_id).join("tree-packs");
    let pack = packs.join(&names(&packs)[0]);
    let whole = fs::read(&pack).expect("read cached pack");

    fs::write(&pack, &whole[..10]).expect("cut the cached pack");
    assert_eq!(env.ok(&["ls", "latest"]), listing);
    let now = fs::read(&pack).expect("read");
    assert!(
        now == whole,
        "the cut copy was not replaced: {} bytes of {}",
        now.len(),
        whole.len()
    );

    let mut flipped = whole.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x40;
    fs::write(&pack, &flipped).expect("flip a byte");
    assert_eq!(env.ok(&["ls", "latest"]), listing);
}
