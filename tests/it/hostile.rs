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
    pub fn snapshot(mut self, root: BlobId) -> SnapshotId {
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
