//! A small hostile repository built from the input, sealed properly under the
//! repository's own key (what a compromised host or a malicious sender could
//! write), then read by everything that walks it: `ls`'s tree walk, two restores
//! into one scratch target, `check --read-data`, `prune`, and `check` again.
//!
//! The input chooses data blobs; trees with odd names (`..`, `/`, NUL, empty,
//! non-UTF-8, duplicates, unsorted), every node kind, lying sizes, symlinks aimed
//! outside the target, kinds swapped (a data blob named as a subtree, a tree as
//! file content, a tree stored as a data blob), references to trees not yet
//! written (the nearest a content-addressed store comes to a cycle: a tree can
//! only name an ancestor by an id that nothing stores under that content); how
//! blobs spread over packs; index entries that lie (kind, lengths, offsets,
//! pack sizes, missing or unindexed packs); and the snapshots' roots.
//!
//! Asserted: no panic; nothing written outside the restore target (siblings of the
//! target and of its parent unchanged, and nothing written through a symlink the
//! snapshot planted); a repository that checks clean still checks clean after
//! prune. Memory and time are bounded by libFuzzer's `-rss_limit_mb` and
//! `-timeout` (see run.sh).
#![no_main]
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use cairn::backend::{Backend, FileType, LocalBackend};
use cairn::check::{ReadData, check};
use cairn::format;
use cairn::id::BlobId;
use cairn::index::{IndexFile, IndexPack};
use cairn::pack::{BlobKind, PackBuilder};
use cairn::prune::{PruneOptions, prune};
use cairn::repository::{InitOptions, Repository};
use cairn::restorer::{Overwrite, RestoreOptions, restore};
use cairn::snapshot::{Snapshot, Summary};
use cairn::tree::{Node, NodeKind, Timestamp, Tree, Xattr};
use cairn::walk;
use cairn_fuzz::{MemBackend, cheap_kdf, scratch_base, some_bytes, some_text};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const PASSWORD: &[u8] = b"fuzz";
/// Restores are skipped past this many entries (trees shared at several places
/// multiply): each run must stay in milliseconds.
const MAX_ENTRIES: usize = 300;

struct Place {
    _dir: tempfile::TempDir,
    base: PathBuf,
    /// A repository on disk, emptied before each run that uses it...
    repo: PathBuf,
    /// ...and one in memory (config and key file only), copied for the others.
    template: MemBackend,
}

impl Place {
    fn scratch(&self) -> PathBuf {
        self.base.join("scratch")
    }
    fn inside(&self) -> PathBuf {
        self.scratch().join("inside")
    }
    fn target(&self) -> PathBuf {
        self.inside().join("target")
    }
    fn outside(&self) -> PathBuf {
        self.scratch().join("outside")
    }
}

fn place() -> &'static Place {
    static PLACE: OnceLock<Place> = OnceLock::new();
    PLACE.get_or_init(|| {
        let dir = tempfile::tempdir_in(scratch_base()).expect("scratch dir");
        let base = dir.path().to_path_buf();
        let repo = base.join("repo");
        let opts = InitOptions {
            kdf: Some(cheap_kdf()),
            ..Default::default()
        };
        let local =
            Repository::init(Arc::new(LocalBackend::new(&repo)), PASSWORD, opts).expect("init");
        // The same repository in memory: its config and key file.
        let template = MemBackend::new();
        for t in [FileType::Config, FileType::Key] {
            for e in local.backend().list(t).expect("list") {
                let bytes = local.backend().read(t, &e.name, 1 << 20).expect("read");
                template.put(t, &e.name, bytes);
            }
        }
        Place {
            _dir: dir,
            base,
            repo,
            template,
        }
    })
}

/// A fresh scratch area.
fn reset_scratch(p: &Place) {
    let _ = fs::remove_dir_all(p.scratch());
    fs::create_dir_all(p.inside()).expect("mkdir");
    fs::create_dir_all(p.outside()).expect("mkdir");
    fs::write(p.inside().join("sibling"), b"sibling").expect("write");
    fs::write(p.outside().join("keep"), b"keep").expect("write");
}

/// Back to an empty repository on disk.
fn reset_local(backend: &LocalBackend) {
    for t in [
        FileType::Pack,
        FileType::Index,
        FileType::Snapshot,
        FileType::Lock,
        FileType::Record,
    ] {
        for e in backend.list(t).expect("list") {
            backend.remove(t, &e.name).expect("remove");
        }
    }
    for e in backend.list_temporary().expect("list temporary") {
        backend.remove_temporary(&e.name).expect("remove temporary");
    }
}

/// What is under `dir` but `skip` (not following symlinks): path → (kind bits,
/// size and content of files).
fn snapshot_of(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, (u32, u64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let path = e.path();
            if path == skip {
                continue;
            }
            let Ok(m) = fs::symlink_metadata(&path) else {
                continue;
            };
            let content = if m.is_file() {
                fs::read(&path).unwrap_or_default()
            } else {
                Vec::new()
            };
            if m.is_dir() {
                todo.push(path.clone());
            }
            // A directory's size changes with its entries (the target appears
            // in its parent): only a file's is compared.
            let size = if m.is_file() { m.len() } else { 0 };
            out.insert(path, (m.mode() & 0o170000, size, content));
        }
    }
    out
}

/// Which blob a node or snapshot names.
#[derive(Clone, Copy, Debug)]
enum Ref {
    Data(usize),
    Tree(usize),
    /// Tree `i` or a later one, named before it is written: no stored blob has
    /// this id under this content.
    Ahead(usize),
    Missing,
}

/// True one time in `n`, and false once the input is used up: what is hostile
/// must be chosen, so that a short input still builds a repository to read.
fn rarely(u: &mut Unstructured, n: u32) -> Result<bool> {
    Ok(u.int_in_range(1..=n)? == n)
}

/// A reference of the expected kind, mostly; now and then one that isn't.
fn a_ref(u: &mut Unstructured, want: BlobKind, data: usize, trees: usize) -> Result<Ref> {
    if u.ratio(7, 8)? {
        match want {
            BlobKind::Data if data > 0 => return Ok(Ref::Data(u.choose_index(data)?)),
            BlobKind::Tree if trees > 0 => return Ok(Ref::Tree(u.choose_index(trees)?)),
            _ => {}
        }
    }
    Ok(match u.int_in_range(0..=3)? {
        0 if data > 0 => Ref::Data(u.choose_index(data)?),
        1 if trees > 0 => Ref::Tree(u.choose_index(trees)?),
        2 => Ref::Missing,
        _ => Ref::Ahead(trees + u.int_in_range(0..=2)?),
    })
}

struct Store {
    /// Plaintexts stored as data blobs, then as tree blobs, in order.
    data: Vec<BlobId>,
    trees: Vec<BlobId>,
    blobs: Vec<(BlobKind, BlobId, Vec<u8>)>,
}

impl Store {
    fn id(&self, r: Ref, key: &cairn::crypto::MasterKey) -> BlobId {
        match r {
            Ref::Data(i) => self.data[i],
            Ref::Tree(i) => self.trees[i],
            Ref::Ahead(i) => key.blob_id(format!("tree {i}, not written yet").as_bytes()),
            Ref::Missing => BlobId([0x5a; 32]),
        }
    }

    /// The true size of a file of these blobs, as far as the store knows them.
    fn size_of(&self, content: &[BlobId]) -> u64 {
        content
            .iter()
            .filter_map(|id| {
                self.blobs
                    .iter()
                    .find(|(k, b, _)| *k == BlobKind::Data && b == id)
            })
            .map(|(_, _, plain)| plain.len() as u64)
            .sum()
    }
}

/// Mostly a name a restore can create (so that trees decode and get restored),
/// now and then one it must refuse.
fn a_name(u: &mut Unstructured) -> Result<Vec<u8>> {
    const SAFE: [&[u8]; 10] = [
        b"a",
        b"b",
        b"c",
        b"d",
        b"e",
        b"f",
        b"\xff\xfe",
        b"-",
        b" ",
        b"\n",
    ];
    const UNSAFE: [&[u8]; 5] = [b"..", b".", b"", b"x/y", b"n\0ul"];
    Ok(match u.int_in_range(0..=15)? {
        13 => some_bytes(u, 40)?,
        14 => vec![b'l'; 255 + usize::from(u.int_in_range(0..=1u8)?)],
        15 => u.choose(&UNSAFE)?.to_vec(),
        _ => u.choose(&SAFE)?.to_vec(),
    })
}

fn a_link_target(u: &mut Unstructured, p: &Place) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let abs = |q: PathBuf| q.as_os_str().as_bytes().to_vec();
    Ok(match u.int_in_range(0..=7)? {
        0 => b"../../outside".to_vec(),
        1 => b"../../outside/keep".to_vec(),
        2 => abs(p.outside()),
        3 => abs(p.inside()),
        4 => abs(p.base.clone()),
        5 => b"..".to_vec(),
        6 => b"/".to_vec(),
        _ => some_bytes(u, 40)?,
    })
}

fn a_time(u: &mut Unstructured) -> Result<Timestamp> {
    Ok(match u.int_in_range(0..=15)? {
        15 => Timestamp(u.arbitrary()?, u.arbitrary()?),
        11..=14 => Timestamp(u.arbitrary()?, u.int_in_range(0..=999_999_999)?),
        _ => Timestamp(1_700_000_000, 0),
    })
}

fn a_node(
    u: &mut Unstructured,
    p: &Place,
    store: &Store,
    key: &cairn::crypto::MasterKey,
) -> Result<Node> {
    const KINDS: [NodeKind; 7] = [
        NodeKind::File,
        NodeKind::Dir,
        NodeKind::Symlink,
        NodeKind::Fifo,
        NodeKind::Chardev,
        NodeKind::Blockdev,
        NodeKind::Socket,
    ];
    let kind = *u.choose(&KINDS)?;
    let (data, trees) = (store.data.len(), store.trees.len());
    let mut content = Vec::new();
    let mut subtree = None;
    match kind {
        NodeKind::File => {
            for _ in 0..u.int_in_range(0..=3)? {
                content.push(store.id(a_ref(u, BlobKind::Data, data, trees)?, key));
            }
        }
        NodeKind::Dir => subtree = Some(store.id(a_ref(u, BlobKind::Tree, data, trees)?, key)),
        _ => {}
    }
    // Now and then, fields that don't fit the kind.
    if rarely(u, 16)? {
        subtree = Some(store.id(a_ref(u, BlobKind::Tree, data, trees)?, key));
    }
    let true_size = store.size_of(&content);
    Ok(Node {
        name: a_name(u)?,
        kind,
        mode: if u.arbitrary()? {
            u.arbitrary()?
        } else {
            0o755
        },
        uid: u.arbitrary()?,
        gid: u.arbitrary()?,
        user: if rarely(u, 4)? {
            Some(some_text(u, 16)?.into())
        } else {
            None
        },
        group: None,
        mtime: a_time(u)?,
        atime: a_time(u)?,
        ctime: a_time(u)?,
        size: match u.int_in_range(0..=2)? {
            0 => true_size,
            1 => u.arbitrary()?,
            _ => u.int_in_range(0..=200)?,
        },
        inode: u.int_in_range(0..=3)?,
        device: 1,
        links: u.int_in_range(1..=3)?,
        // Only /dev/null, /dev/zero or nothing: a restore that wrote into a
        // device instead of replacing it must not reach a real one.
        rdev: *u.choose(&[0u64, libc_makedev(1, 3), libc_makedev(1, 5)])?,
        link_target: if kind == NodeKind::Symlink || rarely(u, 16)? {
            Some(a_link_target(u, p)?)
        } else {
            None
        },
        content,
        subtree,
        xattrs: (0..u.int_in_range(0..=2)?)
            .map(|_| {
                Ok(Xattr {
                    name: u
                        .choose(&[&b"user.fuzz"[..], b"trusted.fuzz", b"", b"bogus"])?
                        .to_vec(),
                    value: some_bytes(u, 16)?,
                })
            })
            .collect::<Result<_>>()?,
    })
}

fn libc_makedev(major: u64, minor: u64) -> u64 {
    (major << 8) | minor
}

/// Builds the repository's contents and returns the snapshots' roots.
fn forge(u: &mut Unstructured, p: &Place, repo: &Repository) -> Result<()> {
    let key = repo.key();
    let mut store = Store {
        data: Vec::new(),
        trees: Vec::new(),
        blobs: Vec::new(),
    };
    for _ in 0..u.int_in_range(0..=3)? {
        let plain: Vec<u8> = some_bytes(u, 64)?;
        let id = key.blob_id(&plain);
        store.data.push(id);
        store.blobs.push((BlobKind::Data, id, plain));
    }
    for _ in 0..u.int_in_range(1..=5)? {
        let mut tree = Tree::default();
        for _ in 0..u.int_in_range(0..=4)? {
            tree.nodes.push(a_node(u, p, &store, key)?);
        }
        if u.ratio(7, 8)? {
            tree.nodes.sort_by(|a, b| a.name.cmp(&b.name));
            if u.ratio(3, 4)? {
                tree.nodes.dedup_by(|a, b| a.name == b.name);
            }
        }
        let bytes = format::to_msgpack(&tree);
        let id = key.blob_id(&bytes);
        store.trees.push(id);
        match u.int_in_range(0..=15)? {
            // Stored as data only, or as both kinds.
            13 => store.blobs.push((BlobKind::Data, id, bytes)),
            14 => {
                store.blobs.push((BlobKind::Data, id, bytes.clone()));
                store.blobs.push((BlobKind::Tree, id, bytes));
            }
            // Not stored at all.
            15 => {}
            _ => store.blobs.push((BlobKind::Tree, id, bytes)),
        }
    }
    // Blobs into up to three packs, sealed with their true ids, or under another
    // blob's id (which no reader may accept).
    let npacks = u.int_in_range(1..=3usize)?;
    let mut builders: Vec<PackBuilder> = (0..npacks)
        .map(|_| PackBuilder::new(key).expect("pack builder"))
        .collect();
    for (kind, id, plain) in &store.blobs {
        let b = u.choose_index(npacks)?;
        let mut id = *id;
        if rarely(u, 32)? {
            if let Some((_, other, _)) = store.blobs.first() {
                id = *other;
            }
        }
        let level = if u.arbitrary()? { 0 } else { 3 };
        let len = plain.len() as u32;
        builders[b].add(*kind, id, format::encode_payload(plain, level), len);
    }
    let mut index = IndexFile::default();
    for b in builders {
        if b.is_empty() {
            continue;
        }
        let pack = b.finish(repo.repo_id()).expect("finish pack");
        if !rarely(u, 16)? {
            repo.write_pack(&pack).expect("write pack");
        }
        if rarely(u, 16)? {
            continue; // an unindexed pack
        }
        index.packs.push(IndexPack {
            id: pack.id,
            size: pack.len(),
            blobs: pack.entries.clone(),
        });
    }
    // Index entries that lie (in one run in four).
    let lies = if rarely(u, 4)? {
        u.int_in_range(1..=3)?
    } else {
        0
    };
    for _ in 0..lies {
        if index.packs.is_empty() {
            break;
        }
        let pi = u.choose_index(index.packs.len())?;
        let np = index.packs.len();
        let pack = &mut index.packs[pi];
        match u.int_in_range(0..=6)? {
            0 => pack.size = u.arbitrary()?,
            1 if np > 1 => {
                let other = (pi + 1) % np;
                let id = index.packs[other].id;
                index.packs[pi].id = id;
            }
            _ if !pack.blobs.is_empty() => {
                let ei = u.choose_index(pack.blobs.len())?;
                let e = &mut pack.blobs[ei];
                match u.int_in_range(0..=4)? {
                    0 => {
                        e.kind = match e.kind {
                            BlobKind::Data => BlobKind::Tree,
                            BlobKind::Tree => BlobKind::Data,
                        }
                    }
                    1 => e.raw_length = u.arbitrary()?,
                    2 => e.offset = e.offset.wrapping_add(u.int_in_range(1..=64)?),
                    3 => e.length = u.arbitrary()?,
                    _ => {
                        let dup = *e;
                        pack.blobs.push(dup);
                    }
                }
            }
            _ => {}
        }
    }
    if !index.packs.is_empty() {
        if rarely(u, 4)? && index.packs.len() > 1 {
            let second = IndexFile {
                packs: index.packs.split_off(1),
            };
            repo.save_index(&second).expect("save index");
        }
        repo.save_index(&index).expect("save index");
    }
    for _ in 0..u.int_in_range(1..=2)? {
        // Mostly the last tree written, which may name all the others.
        let root = match store.trees.last() {
            Some(&last) if u.ratio(3, 4)? => last,
            _ => store.id(
                a_ref(u, BlobKind::Tree, store.data.len(), store.trees.len())?,
                key,
            ),
        };
        let time = if rarely(u, 4)? {
            some_text(u, 40)?
        } else {
            "2026-01-01T00:00:00Z".to_string()
        };
        let snap = Snapshot {
            time,
            hostname: "fuzz".into(),
            username: "fuzz".into(),
            uid: 0,
            gid: 0,
            paths: vec!["/fuzz".into()],
            tags: vec![],
            tree: root,
            parent: None,
            original: None,
            replaces: None,
            excludes: vec![],
            program_version: "fuzz".into(),
            summary: Summary::default(),
            errors: vec![],
            warnings: vec![],
        };
        repo.save_snapshot(&snap).expect("save snapshot");
    }
    Ok(())
}

fn errors_of_check(repo: &Arc<Repository>, read_data: ReadData) -> Option<u64> {
    let interrupt = AtomicBool::new(false);
    let report = |_: &cairn::check::Problem| {};
    check(repo, read_data, &interrupt, &report)
        .ok()
        .map(|s| s.errors)
}

fn read_back(u: &mut Unstructured, p: &Place, repo: &Arc<Repository>) -> Result<()> {
    let index = repo.load_index(&mut |_, _| {}).expect("load index");
    let (snapshots, _) = repo.list_snapshots_lenient().expect("list snapshots");
    let interrupt = AtomicBool::new(false);
    let report = |_: cairn::restorer::Event| {};
    for (_, snap) in &snapshots {
        let Ok(sel) = walk::resolve(repo, &index, &snap.tree, "/") else {
            continue;
        };
        // `ls`: every entry of the snapshot, depth first.
        let mut entries = 0usize;
        let walked = match &sel {
            walk::Selection::Dir { path, tree } => {
                walk::walk(repo, &index, tree, path, &mut |_, _| {
                    entries += 1;
                    // A tree shared at many places is walked at each: stop at the bound.
                    Ok(entries <= MAX_ENTRIES)
                })
            }
            walk::Selection::Node { .. } => Ok(()),
        };
        if walked.is_err() || entries > MAX_ENTRIES {
            continue;
        }
        let opts = RestoreOptions {
            target: p.target(),
            overwrite: *u.choose(&[
                Overwrite::Always,
                Overwrite::IfChanged,
                Overwrite::IfNewer,
                Overwrite::Never,
            ])?,
            delete: u.arbitrary()?,
            verify: u.arbitrary()?,
            ..Default::default()
        };
        let _ = restore(repo, &index, &sel, &opts, &interrupt, &report);
    }
    Ok(())
}

fn run(u: &mut Unstructured, p: &Place) -> Result<()> {
    reset_scratch(p);
    // Mostly in memory: on disk, the scans of the 256 pack directories by every
    // listing made a run take ten times as long.
    let backend: Arc<dyn Backend> = if rarely(u, 8)? {
        let local = LocalBackend::new(&p.repo);
        reset_local(&local);
        Arc::new(local)
    } else {
        Arc::new(p.template.copy())
    };
    let repo = Arc::new(Repository::open(backend, PASSWORD).expect("open"));
    let forged = forge(u, p, &repo);
    let before_outside = snapshot_of(&p.base, &p.target());
    let read = forged.and_then(|()| read_back(u, p, &repo));
    // Nothing outside the target changed: not the target's siblings, not the
    // outside directory, not the repository (but for its lock files, which come
    // and go), not the scratch area's parent.
    let after_outside = snapshot_of(&p.base, &p.target());
    let without_locks = |m: &BTreeMap<PathBuf, (u32, u64, Vec<u8>)>| -> Vec<PathBuf> {
        m.iter()
            .filter(|(k, _)| !k.starts_with(p.repo.join("locks")))
            .map(|(k, _)| k.clone())
            .collect()
    };
    assert_eq!(
        without_locks(&before_outside),
        without_locks(&after_outside),
        "a restore changed what is outside its target"
    );
    for (path, before) in &before_outside {
        if !path.starts_with(&p.repo) {
            assert_eq!(
                Some(before),
                after_outside.get(path),
                "{} changed",
                path.display()
            );
        }
    }
    read?;
    let before = errors_of_check(&repo, ReadData::All);
    let interrupt = AtomicBool::new(false);
    let _ = prune(&repo, &PruneOptions::default(), &interrupt, &|_| {});
    // Prune never damages a repository that was sound.
    if before == Some(0) {
        let after = errors_of_check(&repo, ReadData::All);
        assert_eq!(after, Some(0), "prune broke a sound repository");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data), place());
});
