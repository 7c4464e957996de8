//! prune and forget as users meet them: convergence, damaged snapshots, leftovers
//! of killed processes, a full disk (issue #11).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{self, Env, stderr};

/// A repository with two snapshots in small packs; the first one forgotten, so
/// that prune has packs to delete and to repack.
fn forgotten_first() -> (Env, PathBuf) {
    let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "16K,64K,256K"]);
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    let mut rng = common::rng(77);
    for i in 0..4 {
        fs::write(
            src.join(format!("r{i}.bin")),
            common::random_bytes(&mut rng, 300_000),
        )
        .expect("write");
        fs::write(
            src.join("sub").join(format!("s{i}.txt")),
            format!("small {i}"),
        )
        .expect("write");
    }
    let s = src.to_str().expect("utf-8").to_string();
    env.ok(&["backup", &s]);
    fs::write(src.join("r0.bin"), common::random_bytes(&mut rng, 200_000)).expect("write");
    fs::remove_file(src.join("sub").join("s1.txt")).expect("rm");
    env.ok(&["backup", &s]);
    env.ok(&["forget", "--keep-last", "1"]);
    (env, src)
}

/// Every file of the repository but its locks, with its bytes' hash: what "no
/// file changed" compares.
fn files(env: &Env) -> BTreeMap<PathBuf, blake3::Hash> {
    common::all_files(&env.repo)
        .into_iter()
        .filter(|p| !p.starts_with(env.repo.join("locks")))
        .map(|p| {
            let h = blake3::hash(&fs::read(&p).expect("read"));
            (p, h)
        })
        .collect()
}

fn prune_json(env: &Env, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json", "prune"];
    args.extend_from_slice(extra);
    common::last_json(&env.ok(&args), "prune")
}

fn restore_matches(env: &Env, spec: &str, src: &Path) {
    let out = env.path(&format!("restored-{}", files(env).len()));
    let _ = fs::remove_dir_all(&out);
    env.ok(&[
        "restore",
        &format!("{spec}:{}", src.display()),
        "--target",
        out.to_str().expect("utf-8"),
        "--verify",
    ]);
    for f in common::all_files(src) {
        let rel = f.strip_prefix(src).expect("prefix");
        assert_eq!(
            fs::read(&f).expect("src"),
            fs::read(out.join(rel)).expect("restored"),
            "{}",
            rel.display()
        );
    }
}

fn check_clean(env: &Env) -> String {
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "check not clean:\n{}", stderr(&out));
    stderr(&out)
}

/// Issue #11 item 8: a pack's padded header counted as unused space, so a small
/// pack was repacked by every prune, into the same again.
#[test]
fn a_second_prune_right_after_the_first_does_nothing() {
    let (env, src) = forgotten_first();
    let first = prune_json(&env, &["--max-unused", "0"]);
    assert!(
        first["packs_deleted"].as_u64() > Some(0) && first["packs_repacked"].as_u64() > Some(0),
        "{first}"
    );
    let before = files(&env);
    for threshold in ["0", "10"] {
        let again = prune_json(&env, &["--max-unused", threshold]);
        assert_eq!(again["nothing_to_do"], true, "{again}");
        for key in [
            "packs_deleted",
            "packs_repacked",
            "packs_written",
            "index_files_replaced",
        ] {
            assert_eq!(again[key], 0, "{key}: {again}");
        }
        assert_eq!(files(&env), before, "a second prune changed files");
        let human = env.ok(&["prune", "--max-unused", threshold]);
        assert!(human.contains("nothing to prune"), "{human}");
        assert_eq!(files(&env), before);
    }
    // After `--max-unused 0`, no unused blob is left.
    assert_eq!(prune_json(&env, &["--max-unused", "0"])["unused_blobs"], 0);
    check_clean(&env);
    restore_matches(&env, "latest", &src);
}
