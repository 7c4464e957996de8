//! The local cache: what it keeps, that reads are served from it, that auditing
//! commands bypass it, and that it forgets what the repository forgot.

use std::fs;

use crate::common::{self, Env};

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
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
    let cache = fs::read_dir(env.path("cache"))
        .expect("cache dir")
        .flatten()
        .find(|e| e.path().is_dir())
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
    for p in names(&cache.join("tree-packs")) {
        assert!(packs.contains(&p), "cached tree pack {p} was pruned");
    }
}
