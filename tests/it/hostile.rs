//! Repositories a reader must not trust: built through the library with the
//! repository's own key (as a compromised host or a malicious sender could), then
//! read with the real binary. Also legitimate data that looks like such a thing.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use cairn::archiver::saver::Saver;
use cairn::backend::LocalBackend;
use cairn::format;
use cairn::id::{BlobId, SnapshotId};
use cairn::pack::BlobKind;
use cairn::repository::Repository;
use cairn::snapshot::{Snapshot, Summary};
use cairn::tree::{Node, NodeKind, Timestamp, Tree};

use crate::common::{Env, PASSWORD, stderr, stdout};

/// Writes blobs, trees and snapshots of the test's choosing into a repository.
pub struct Forge {
    pub repo: Arc<Repository>,
    saver: Saver,
}

impl Forge {
    pub fn new(env: &Env) -> Self {
        let backend = Arc::new(LocalBackend::new(&env.repo));
        let repo = Arc::new(Repository::open(backend, PASSWORD.as_bytes()).expect("open"));
        let index = Arc::new(repo.load_index(&mut |_, _| {}).expect("index"));
        let saver = Saver::new(Arc::clone(&repo), index);
        Self { repo, saver }
    }

    pub fn blob(&mut self, kind: BlobKind, plain: &[u8]) -> BlobId {
        let id = self.repo.key().blob_id(plain);
        let level = self.repo.config().compression;
        self.saver
            .add(kind, id, format::encode_payload(plain, level), plain.len())
            .expect("add blob");
        id
    }

    /// Stores `nodes` as a tree blob exactly as given (not sorted).
    pub fn raw_tree(&mut self, nodes: Vec<Node>) -> BlobId {
        self.blob(BlobKind::Tree, &format::to_msgpack(&Tree { nodes }))
    }

    /// Makes everything written so far durable, then commits a snapshot of `root`.
    pub fn snapshot(self, root: BlobId) -> SnapshotId {
        self.snapshot_of_host(root, "forge")
    }

    pub fn snapshot_of_host(self, root: BlobId, host: &str) -> SnapshotId {
        self.snapshot_edited(root, |s| s.hostname = host.into())
    }

    /// Commits a snapshot of `root` after `edit` has had its way with it.
    pub fn snapshot_edited(mut self, root: BlobId, edit: impl FnOnce(&mut Snapshot)) -> SnapshotId {
        self.saver.finish().expect("finish");
        let now = cairn::snapshot::now_rfc3339();
        let snap = Snapshot {
            time: now.clone(),
            hostname: "forge".into(),
            username: "forge".into(),
            uid: 0,
            gid: 0,
            paths: vec!["/forged".into()],
            tags: vec![],
            tree: root,
            parent: None,
            original: None,
            replaces: None,
            excludes: vec![],
            program_version: "forge".into(),
            summary: Summary {
                started: now.clone(),
                finished: now,
                ..Default::default()
            },
            errors: vec![],
            warnings: vec![],
        };
        let mut snap = snap;
        edit(&mut snap);
        self.repo.save_snapshot(&snap).expect("snapshot").0
    }
}

pub fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: if kind == NodeKind::Dir { 0o755 } else { 0o644 },
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        user: None,
        group: None,
        mtime: Timestamp(1_700_000_000, 0),
        atime: Timestamp(1_700_000_000, 0),
        ctime: Timestamp(1_700_000_000, 0),
        size: 0,
        inode: 0,
        device: 0,
        links: 1,
        rdev: 0,
        link_target: (kind == NodeKind::Symlink).then(|| b"target".to_vec()),
        content: vec![],
        subtree: None,
        xattrs: vec![],
    }
}

pub fn dir(name: &[u8], subtree: BlobId) -> Node {
    Node {
        subtree: Some(subtree),
        ..node(name, NodeKind::Dir)
    }
}

pub fn file(name: &[u8], content: Vec<BlobId>, size: u64) -> Node {
    Node {
        content,
        size,
        ..node(name, NodeKind::File)
    }
}

fn restore_into(env: &Env, target: &Path) -> std::process::Output {
    env.run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ])
}

/// The bytes of an empty directory's tree blob: a file holding exactly these
/// bytes has the same blob id as the tree. Backed up side by side, the two must
/// stay two objects, and the backup must check clean and restore exactly.
#[test]
fn a_file_with_the_bytes_of_an_empty_tree_is_stored_as_data() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("empty")).expect("mkdir");
    let tree_bytes = Tree::default().encode();
    assert_eq!(tree_bytes.len(), 8, "the empty tree's encoding");
    fs::write(src.join("looks-like-a-tree"), &tree_bytes).expect("write");
    // Both orders of first sight: the file before the directory, and after.
    fs::write(src.join("a-first"), &tree_bytes).expect("write");
    let src_str = src.to_str().expect("utf-8");
    env.ok(&["backup", src_str]);
    env.ok(&["check", "--read-data"]);
    let out = env.path("out");
    let r = restore_into(&env, &out);
    assert!(r.status.success(), "{}", stderr(&r));
    let restored = out.join(src.strip_prefix("/").expect("absolute"));
    for f in ["looks-like-a-tree", "a-first"] {
        assert_eq!(fs::read(restored.join(f)).expect("read"), tree_bytes, "{f}");
    }
    assert!(restored.join("empty").is_dir());
    assert_eq!(fs::read_dir(restored.join("empty")).expect("ls").count(), 0);
}

/// A directory whose subtree names a *data* blob that happens to parse as a tree
/// must not be listed or restored as that tree: readers ask for a tree blob.
#[test]
fn a_data_blob_is_never_read_as_a_tree() {
    let env = Env::with_repo(&[]);
    let mut f = Forge::new(&env);
    let planted = f.blob(
        BlobKind::Data,
        &format::to_msgpack(&Tree {
            nodes: vec![file(b"planted", vec![], 0)],
        }),
    );
    let root = f.raw_tree(vec![dir(b"d", planted)]);
    f.snapshot(root);

    let ls = env.run(&["ls", "latest"]);
    assert!(!stdout(&ls).contains("planted"), "{}", stdout(&ls));
    assert!(!ls.status.success());
    assert!(
        stderr(&ls).contains(&format!("tree blob {planted}")),
        "{}",
        stderr(&ls)
    );
    let out = env.path("out");
    let r = restore_into(&env, &out);
    assert!(!r.status.success());
    assert!(!out.join("d/planted").exists());
    let check = env.run(&["check"]);
    assert!(!check.status.success());
    assert!(
        stderr(&check).contains("only a data blob has that id"),
        "{}",
        stderr(&check)
    );
}

/// A chain of `depth` directories named `d`, with one empty file at the bottom.
fn forge_chain(env: &Env, depth: usize) {
    let mut f = Forge::new(env);
    let mut below = f.raw_tree(vec![file(b"bottom", vec![], 0)]);
    for _ in 0..depth {
        below = f.raw_tree(vec![dir(b"d", below)]);
    }
    f.snapshot(below);
}

/// Trees nested 30,000 deep (a forged repository): every command that walks
/// trees ends with a clear error or report instead of overflowing its stack, and
/// `repair snapshots` cuts the snapshot down to what can be restored.
#[test]
fn trees_nested_thirty_thousand_deep_end_in_clear_errors() {
    let env = Env::with_repo(&[]);
    forge_chain(&env, 30_000);

    let ls = env.run(&["ls", "latest"]);
    assert_eq!(ls.status.code(), Some(1), "{}", stderr(&ls));
    assert!(
        stderr(&ls).contains("nest more than 4096 levels deep"),
        "{}",
        stderr(&ls)
    );
    let out = env.path("out");
    let r = restore_into(&env, &out);
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("longer than the 4096 bytes"),
        "{}",
        stderr(&r)
    );
    assert!(out.join("d/d/d").is_dir(), "what fits is restored");
    let check = env.run(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    assert!(
        stderr(&check).contains("nest 30001 levels deep"),
        "{}",
        stderr(&check)
    );
    env.ok(&["prune", "--dry-run"]);

    env.ok(&["repair", "snapshots", "--forget"]);
    let ls = env.ok(&["ls", "latest"]);
    assert_eq!(ls.lines().filter(|l| l.ends_with("/d")).count(), 4095);
    env.ok(&["check"]);
    env.ok(&["prune"]);
    env.ok(&["check", "--read-data"]);
}

/// The deepest tree the format allows is walked by every command.
#[test]
fn trees_nested_as_deep_as_allowed_are_read() {
    let env = Env::with_repo(&[]);
    forge_chain(&env, 4095);
    let ls = env.ok(&["ls", "latest"]);
    assert!(ls.lines().any(|l| l.ends_with("/bottom")), "{ls}");
    env.ok(&["check"]);
    env.ok(&["repair", "snapshots", "--dry-run"]);
}

/// Names, link targets, owners and host names from a repository can't drive the
/// terminal of whoever lists it: human output escapes control characters, JSON
/// output keeps the exact bytes.
#[test]
fn control_characters_from_a_repository_are_escaped_on_the_terminal() {
    let env = Env::with_repo(&[]);
    let mut f = Forge::new(&env);
    let clear = b"\x1b[2J\x1b]0;owned\x07name";
    let mut link = node(b"link\x1b[31m", NodeKind::Symlink);
    link.link_target = Some(b"\x1b[1;1Htarget".to_vec());
    let mut owned = file(clear, vec![BlobId([9; 32])], 10);
    owned.user = Some("r\x1b[8moot".into());
    let mut nodes = vec![owned, link, file(b"evil\xe2\x80\xaegpj.exe", vec![], 0)];
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let root = f.raw_tree(nodes);
    f.snapshot_edited(root, |s| {
        s.hostname = "host\x1b[2J".into();
        s.time = "\x1b]0;pwn\x07 not a time".into();
        s.tags = vec!["t\x1b[8m".into()];
    });

    for args in [
        &["ls", "latest"][..],
        &["ls", "-l", "latest"],
        &["snapshots"],
        &["forget", "--keep-last", "1", "--dry-run"],
    ] {
        let out = env.run(args);
        for text in [stdout(&out), stderr(&out)] {
            assert!(
                !text.contains('\x1b'),
                "{args:?} printed an escape: {text:?}"
            );
            assert!(!text.contains('\u{202e}'), "{args:?}: {text:?}");
        }
    }
    let long = env.ok(&["ls", "-l", "latest"]);
    assert!(
        long.contains("\\u{1b}[2J\\u{1b}]0;owned\\u{7}name"),
        "{long}"
    );
    assert!(long.contains("-> \\u{1b}[1;1Htarget"), "{long}");
    assert!(long.contains("r\\u{1b}[8moot"), "{long}");
    let snaps = env.ok(&["snapshots"]);
    assert!(snaps.contains("host\\u{1b}[2J"), "{snaps}");
    // The file's blob is missing: restore's error names it, escaped.
    let r = restore_into(&env, &env.path("out"));
    assert!(!r.status.success());
    assert!(!stderr(&r).contains('\x1b'), "{:?}", stderr(&r));
    assert!(stderr(&r).contains("\\u{1b}[2J"), "{}", stderr(&r));
    // JSON keeps the exact name.
    let json = env.ok(&["ls", "--json", "latest"]);
    let names: Vec<String> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    assert!(
        names.contains(&String::from_utf8(clear.to_vec()).expect("utf-8")),
        "{names:?}"
    );
}

/// A subtree reached both near the root and at the end of a long chain: `check`
/// visits it once, but must measure the snapshot by its deepest path, as `ls`
/// and `restore` meet it.
#[test]
fn a_subtree_shared_at_two_depths_is_measured_by_the_deeper() {
    let env = Env::with_repo(&[]);
    let mut f = Forge::new(&env);
    let mut shared = f.raw_tree(vec![file(b"bottom", vec![], 0)]);
    for _ in 0..10 {
        shared = f.raw_tree(vec![dir(b"t", shared)]);
    }
    let mut chain = shared;
    for _ in 0..4090 {
        chain = f.raw_tree(vec![dir(b"a", chain)]);
    }
    let root = f.raw_tree(vec![dir(b"a", chain), dir(b"b", shared)]);
    f.snapshot(root);
    let check = env.run(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    assert!(
        stderr(&check).contains("nest 4102 levels deep"),
        "{}",
        stderr(&check)
    );
    let ls = env.run(&["ls", "latest"]);
    assert_eq!(ls.status.code(), Some(1), "{}", stderr(&ls));
}

/// `tree` (a tree blob of the repository) stored again with the directory
/// at `path` below it changed by `edit`; the trees above it are stored again
/// to point at it.
fn edit_tree_at(
    f: &mut Forge,
    index: &cairn::index::Index,
    tree: BlobId,
    path: &[&[u8]],
    edit: &dyn Fn(&mut Vec<Node>),
) -> BlobId {
    let mut t = f.repo.load_tree(index, &tree).expect("tree");
    match path.split_first() {
        Some((head, rest)) => {
            let n = t
                .nodes
                .iter_mut()
                .find(|n| n.name == *head)
                .expect("on the path");
            let below = n.subtree.expect("a directory");
            n.subtree = Some(edit_tree_at(f, index, below, rest, edit));
        }
        None => edit(&mut t.nodes),
    }
    f.raw_tree(t.nodes)
}

/// A parent snapshot whose tree has one node that can't be used (a file
/// with a subtree): a re-backup says which tree is damaged, reads that entry
/// again and reuses the others; the new snapshot checks clean and restores.
#[test]
fn a_damaged_node_in_a_parent_tree_costs_only_that_entry() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir(&src).expect("mkdir");
    for name in ["a", "b", "c"] {
        fs::write(src.join(name), name.repeat(5000)).expect("write");
    }
    let s = src.to_str().expect("utf-8");
    env.backup_json(&[s]);

    let mut f = Forge::new(&env);
    let index = f.repo.load_index(&mut |_, _| {}).expect("index");
    let (_, real) = f.repo.list_snapshots().expect("list").pop().expect("one");
    let path: Vec<&[u8]> = src
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.as_encoded_bytes()),
            _ => None,
        })
        .collect();
    let root = edit_tree_at(&mut f, &index, real.tree, &path, &|nodes| {
        let b = nodes.iter_mut().find(|n| n.name == b"b").expect("b");
        b.subtree = Some(BlobId([9; 32]));
    });
    let forged = f.snapshot_edited(root, |s| {
        let tree = s.tree;
        *s = real.clone();
        s.tree = tree;
    });

    let out = env.run(&["backup", "--json", "--parent", &forged.to_string(), s]);
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{o}\n{e}");
    let summary = crate::common::last_json(&o, "summary");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["files_unchanged"], 2, "{summary}");
    let said = format!("{o}{e}");
    assert!(
        said.contains("parent tree ")
            && said.contains("reading that entry instead")
            && said.contains("\\\"b\\\" has fields that don't fit its kind"),
        "{said}"
    );
    crate::common::restore_matches(&env, "latest", &src);
    // Without the forged snapshot, the repository is clean.
    env.ok(&["forget", &forged.to_string()]);
    crate::common::check_clean(&env);
}
