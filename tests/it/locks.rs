//! Locks under hostile or odd conditions (format-spec §15), and what a backup does
//! when its lock failed it: its packs deleted under it.

use std::fs;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use cairn::backend::{Backend, Entry, FileType, LocalBackend};
use cairn::repository::Repository;

use crate::common::{self, Env, PASSWORD, stderr};

/// Deletes every pack it has written once an index file is written: what a prune
/// that took the backup's lock for stale does between the backup's last pack and
/// its snapshot.
struct PrunedUnderneath {
    inner: LocalBackend,
    packs: Mutex<Vec<String>>,
}

impl Backend for PrunedUnderneath {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> cairn::Result<()> {
        self.inner.create()
    }
    fn is_repository(&self) -> cairn::Result<bool> {
        self.inner.is_repository()
    }
    fn list(&self, t: FileType) -> cairn::Result<Vec<Entry>> {
        self.inner.list(t)
    }
    fn read(&self, t: FileType, name: &str, max: u64) -> cairn::Result<Vec<u8>> {
        self.inner.read(t, name, max)
    }
    fn read_range(&self, t: FileType, name: &str, off: u64, len: u64) -> cairn::Result<Vec<u8>> {
        self.inner.read_range(t, name, off, len)
    }
    fn write(&self, t: FileType, name: &str, data: &[u8]) -> cairn::Result<()> {
        self.inner.write(t, name, data)?;
        let mut packs = self.packs.lock().expect("mutex");
        match t {
            FileType::Pack => packs.push(name.to_string()),
            FileType::Index => {
                for p in packs.drain(..) {
                    self.inner.remove(FileType::Pack, &p)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    fn remove(&self, t: FileType, name: &str) -> cairn::Result<()> {
        self.inner.remove(t, name)
    }
}

#[test]
fn backup_whose_packs_are_deleted_before_commit_fails_without_a_snapshot() {
    let env = Env::with_repo(&["--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut rng = common::rng(5);
    for i in 0..3 {
        fs::write(
            src.join(format!("{i}.bin")),
            common::random_bytes(&mut rng, 700 << 10),
        )
        .expect("write");
    }
    let backend = Arc::new(PrunedUnderneath {
        inner: LocalBackend::new(&env.repo),
        packs: Mutex::new(Vec::new()),
    });
    let repo = Arc::new(Repository::open(backend, PASSWORD.as_bytes()).expect("open"));
    let opts = cairn::archiver::BackupOptions {
        source: cairn::archiver::Source::Paths(vec![src.clone()]),
        host: None,
        tags: vec![],
        excludes: vec![],
        one_file_system: false,
        parent: None,
        force: false,
        progress: None,
    };
    let err = cairn::archiver::backup(&repo, opts, &AtomicBool::new(false), &|_| {})
        .err()
        .expect("a backup whose packs are gone must fail");
    assert!(
        matches!(err, cairn::Error::WrittenFilesGone { packs, .. } if packs >= 2),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("written by this backup are gone")
            && msg.contains("the snapshot was not written")
            && msg.contains("cairn check"),
        "{msg}"
    );
    drop(repo);
    assert!(common::all_files(&env.repo.join("snapshots")).is_empty());
    assert!(common::all_files(&env.repo.join("locks")).is_empty());
    // `check` finds the index naming missing packs, but no snapshot that needs them.
    let out = env.run(&["check"]);
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
}
