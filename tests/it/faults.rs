//! Storage faults at every call of backup, restore, check and prune (issue 13
//! item 3): each operation is run once per storage call and per fault that call
//! can meet (EIO, a short read, a torn or unacknowledged write, a failed
//! remove), through the library on a fresh copy of a small repository. Each
//! time: the operation fails with an error naming the object (or, where the
//! design tolerates the fault, reports it and goes on), no snapshot is written
//! before the packs and index files it needs, the repository then checks
//! without errors (warnings and notes are what prune cleans up), and a run
//! without faults succeeds.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use cairn::backend::{Backend, FileType, LocalBackend};
use cairn::repository::Repository;

use crate::common::{self, Env, PASSWORD};
use crate::faulty::{Call, Fault, FaultyBackend, Op, chain};

/// What an operation said: the error it stopped with, and what it reported on
/// the way (warnings, and errors it went on after).
#[derive(Debug, Default)]
struct Outcome {
    error: Option<String>,
    reported: Vec<String>,
}

impl Outcome {
    fn from_result<T>(r: cairn::Result<T>, reported: Vec<String>) -> (Self, Option<T>) {
        match r {
            Ok(v) => (
                Self {
                    error: None,
                    reported,
                },
                Some(v),
            ),
            Err(e) => (
                Self {
                    error: Some(chain(&e)),
                    reported,
                },
                None,
            ),
        }
    }

    fn failed(&self) -> bool {
        self.error.is_some()
    }

    fn text(&self) -> String {
        let mut all = self.reported.clone();
        all.extend(self.error.clone());
        all.join("\n")
    }
}

fn open(b: Arc<dyn Backend>) -> cairn::Result<Arc<Repository>> {
    Ok(Arc::new(Repository::open(b, PASSWORD.as_bytes())?))
}

fn backup(b: Arc<dyn Backend>, src: &Path) -> Outcome {
    let reported = Mutex::new(Vec::new());
    let r = open(b).and_then(|repo| {
        let opts = cairn::archiver::BackupOptions {
            source: cairn::archiver::Source::Paths(vec![src.to_path_buf()]),
            host: Some("faults".into()),
            tags: vec![],
            excludes: vec![],
            one_file_system: false,
            parent: None,
            force: false,
            progress: None,
            compression: None,
        };
        let report = |e: cairn::archiver::Event| {
            let p = match e {
                cairn::archiver::Event::Error(p) | cairn::archiver::Event::Warning(p) => p,
            };
            reported
                .lock()
                .expect("lock")
                .push(format!("{}: {}", p.path, p.error));
        };
        cairn::archiver::backup(&repo, opts, &AtomicBool::new(false), &report)
    });
    Outcome::from_result(r, reported.into_inner().expect("lock")).0
}

/// Restores `latest:SRC` into `target` (with --verify); errors on files count
/// as failure.
fn restore(b: Arc<dyn Backend>, src: &Path, target: &Path) -> Outcome {
    let reported = Mutex::new(Vec::new());
    let r = open(b).and_then(|repo| {
        let sel = cairn::select::resolve(
            &repo,
            &format!("latest:{}", src.display()),
            &Default::default(),
        )?;
        let index = repo.load_index(&mut |id, e| {
            reported
                .lock()
                .expect("lock")
                .push(format!("index {id}: {}", chain(e)))
        })?;
        let path = sel.path.clone().expect("a path");
        let selection = cairn::walk::resolve(&repo, &index, &sel.snapshot.tree, &path)?;
        let opts = cairn::restorer::RestoreOptions {
            target: target.to_path_buf(),
            verify: true,
            ..Default::default()
        };
        let report = |e: cairn::restorer::Event| match e {
            cairn::restorer::Event::Error(m) | cairn::restorer::Event::Warning(m) => {
                reported.lock().expect("lock").push(m.to_string())
            }
            cairn::restorer::Event::Planned(..) => {}
        };
        cairn::restorer::restore(
            &repo,
            &index,
            &selection,
            &opts,
            &AtomicBool::new(false),
            &report,
        )
    });
    let (mut out, summary) = Outcome::from_result(r, reported.into_inner().expect("lock"));
    if let Some(s) = summary.filter(|s| !s.errors.is_empty()) {
        out.error = Some(s.errors.join("\n"));
    }
    out
}

/// `check --read-data`; problems of severity error count as failure.
fn check(b: Arc<dyn Backend>) -> Outcome {
    let problems = Mutex::new(Vec::new());
    let r = open(b).and_then(|repo| {
        cairn::check::check(
            &repo,
            cairn::check::ReadData::All,
            &AtomicBool::new(false),
            &|p: &cairn::check::Problem| problems.lock().expect("lock").push(p.clone()),
        )
    });
    let problems = problems.into_inner().expect("lock");
    let text = |p: &cairn::check::Problem| format!("{:?}: {}: {}", p.severity, p.object, p.message);
    let reported = problems.iter().map(text).collect();
    let (mut out, _) = Outcome::from_result(r, reported);
    let errors: Vec<String> = problems
        .iter()
        .filter(|p| p.severity == cairn::check::Severity::Error)
        .map(text)
        .collect();
    if out.error.is_none() && !errors.is_empty() {
        out.error = Some(errors.join("\n"));
    }
    out
}

fn prune(b: Arc<dyn Backend>) -> Outcome {
    let reported = Mutex::new(Vec::new());
    let r = open(b).and_then(|repo| {
        let opts = cairn::prune::PruneOptions {
            max_unused_percent: 0.0,
            ..Default::default()
        };
        cairn::prune::prune(&repo, &opts, &AtomicBool::new(false), &|m: &str| {
            reported.lock().expect("lock").push(m.to_string())
        })
    });
    Outcome::from_result(r, reported.into_inner().expect("lock")).0
}

/// Whether `text` names the object of `call`: its file name (or the short
/// form of its id), `config`, or the directory a listing failed in.
fn names_object(text: &str, call: &Call, repo: &Path) -> bool {
    if call.t == FileType::Config {
        // A config whose sealed part is cut short can't be told from one the key
        // doesn't belong to, and must read as a wrong password (format-spec §9;
        // `health::corruption_matrix` pins the same for a truncated file).
        return text.contains("config")
            || call.fault == Some(Fault::Short) && text.contains("wrong password");
    }
    if call.name.is_empty() {
        let dir = repo.join(call.t.dir());
        return text.contains(dir.to_str().expect("utf-8"));
    }
    let name = call.name.rsplit('/').next().expect("name");
    text.contains(&name[..8.min(name.len())])
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).expect("copy");
        }
    }
}

/// The repository's files but locks and temporary files, with their hashes.
fn stored(repo: &Path) -> BTreeMap<PathBuf, blake3::Hash> {
    common::all_files(repo)
        .into_iter()
        .filter(|p| !p.starts_with(repo.join("locks")))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .map(|p| {
            let h = blake3::hash(&fs::read(&p).expect("read"));
            (p, h)
        })
        .collect()
}

fn snapshot_count(repo: &Path) -> usize {
    common::all_files(&repo.join("snapshots")).len()
}

/// Removes the locks this process left (a lock whose removal failed): once the
/// process exits they are provably stale and the next command removes them, as
/// `errors::lock_of_a_dead_process_on_this_host_is_removed` shows. Returns how
/// many there were.
fn drop_own_locks(repo: &Path) -> usize {
    let files = common::all_files(&repo.join("locks"));
    for f in &files {
        fs::remove_file(f).expect("rm lock");
    }
    files.len()
}

/// Faults a run may survive without failing: an unreadable lock file (shared
/// operations go on beside one, format-spec §15), and the removal of its own
/// lock at the end (the lock is then stale with its process).
fn tolerated_silently(call: &Call) -> bool {
    call.t == FileType::Lock && matches!(call.op, Op::Read | Op::Remove | Op::List)
        || call.t == FileType::Lock && call.op == Op::Write && call.fault == Some(Fault::Unacked)
}

/// What each faulted run must leave, given the operation that ran.
struct Run<'a> {
    what: &'a str,
    /// The pristine repository, copied before each run.
    pristine: &'a Path,
    scratch: &'a Path,
    /// Runs the operation on a repository through a backend; `iteration` names
    /// a fresh directory for whatever the operation writes outside it.
    op: &'a dyn Fn(Arc<dyn Backend>, &Path) -> Outcome,
    /// Whether the operation writes to the repository (beyond its lock).
    writes: bool,
    /// Checks after a successful run without faults.
    after: &'a dyn Fn(&Path),
}

impl Run<'_> {
    /// Runs the operation once per call and fault; returns the (op, type) pairs
    /// that met a fault.
    fn every_fault(&self) -> BTreeSet<(Op, String)> {
        let count_repo = self.scratch.join("count");
        copy_dir(self.pristine, &count_repo);
        let counting = Arc::new(FaultyBackend::new(&count_repo, None));
        let out = (self.op)(counting.clone(), &self.scratch.join("count-io"));
        assert!(
            !out.failed(),
            "{}: without faults: {}",
            self.what,
            out.text()
        );
        let calls = counting.log();
        assert_ordered(self.what, &calls);
        let mut covered = BTreeSet::new();
        let mut runs = 0;
        for (n, call) in calls.iter().enumerate() {
            for &fault in call.op.faults() {
                runs += 1;
                let label = format!("{} #{runs}: {fault:?} at call {n}", self.what);
                let repo = self.scratch.join(format!("r{runs}"));
                copy_dir(self.pristine, &repo);
                if let Some(met) = self.one(&label, &repo, n, fault, runs) {
                    covered.insert((met.op, format!("{:?}", met.t)));
                }
                fs::remove_dir_all(&repo).expect("rm");
            }
        }
        eprintln!("{}: {} calls, {runs} faulted runs", self.what, calls.len());
        covered
    }

    fn one(&self, label: &str, repo: &Path, n: usize, fault: Fault, run: usize) -> Option<Call> {
        let before = stored(repo);
        let snaps = snapshot_count(repo);
        let b = Arc::new(FaultyBackend::new(repo, Some((n, fault))));
        let out = (self.op)(b.clone(), &self.scratch.join(format!("io{run}")));
        let log = b.log();
        assert_ordered(label, &log);
        // With threads, call n may be another call than in the counting run,
        // one that can't meet this fault: then nothing was injected.
        let met = b.faulted();
        if let Some(call) = &met {
            let label = format!("{label} ({:?} {:?} {})", call.op, call.t, call.name);
            if out.failed() {
                // The error, or a warning before it (an index file left out,
                // whose blobs then look missing), names the object.
                assert!(
                    names_object(&out.text(), call, repo),
                    "{label}: the error does not name the object:\n{}",
                    out.text()
                );
            } else if call.op == Op::Write && !tolerated_silently(call) {
                panic!("{label}: a failed write went unnoticed:\n{}", out.text());
            } else if call.fault == Some(Fault::Short) {
                // Bytes short of what was asked, none of them needed (a repack
                // moving only the blobs before the cut, say): every blob is
                // authenticated on its own, and the checks below prove the result.
            } else if matches!(call.op, Op::Read | Op::ReadRange)
                && log
                    .iter()
                    .skip_while(|c| c.fault.is_none())
                    .any(|c| c.ok && c.t == call.t && c.name == call.name)
            {
                // Read again, successfully (restore reads blob by blob where a
                // pack's range fails): the result is checked below.
            } else if !tolerated_silently(call) {
                assert!(
                    names_object(&out.text(), call, repo),
                    "{label}: the fault was neither an error nor reported:\n{}",
                    out.text()
                );
            }
            // A snapshot only from a run that got as far as writing it.
            let written = log
                .iter()
                .any(|c| c.op == Op::Write && c.t == FileType::Snapshot);
            if out.failed() && !(written && call.t == FileType::Snapshot) {
                assert_eq!(snapshot_count(repo), snaps, "{label}: snapshot written");
            }
        }
        if !self.writes {
            assert_eq!(stored(repo), before, "{label}: a read-only operation wrote");
        }
        let label = format!("{label} then");
        drop_own_locks(repo);
        if self.writes {
            let c = check(Arc::new(LocalBackend::new(repo)));
            assert!(!c.failed(), "{label} check:\n{}", c.text());
        }
        let again = (self.op)(
            Arc::new(LocalBackend::new(repo)),
            &self.scratch.join(format!("again{run}")),
        );
        assert!(
            !again.failed(),
            "{label} a run without faults:\n{}",
            again.text()
        );
        assert_eq!(drop_own_locks(repo), 0, "{label}: lock left by a clean run");
        if self.writes {
            let c = check(Arc::new(LocalBackend::new(repo)));
            assert!(!c.failed(), "{label} check after the rerun:\n{}", c.text());
        }
        (self.after)(repo);
        met
    }
}

/// Invariant (a) of format-spec §16, from the calls: once a snapshot is
/// written, no pack or index file is written after it.
fn assert_ordered(label: &str, calls: &[Call]) {
    if let Some(at) = calls
        .iter()
        .position(|c| c.op == Op::Write && c.t == FileType::Snapshot)
    {
        let late: Vec<&Call> = calls[at..]
            .iter()
            .filter(|c| c.op == Op::Write && matches!(c.t, FileType::Pack | FileType::Index))
            .collect();
        assert!(
            late.is_empty(),
            "{label}: written after the snapshot: {late:?}"
        );
    }
}

/// A repository with one snapshot of `src`, and `src` changed since: a backup
/// then writes packs, an index file and a snapshot.
fn small_repository() -> (Env, PathBuf) {
    let env = Env::with_repo(&["--pack-size", "1", "--chunker-params", "16K,64K,256K"]);
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    common::random_files(&src, 131, 3, 150_000, |i| format!("r{i}.bin"));
    fs::write(src.join("sub/small.txt"), b"small\n").expect("write");
    env.ok(&[
        "backup",
        "-q",
        "--host",
        "faults",
        src.to_str().expect("utf-8"),
    ]);
    (env, src)
}

fn restores_whole(repo: &Path, src: &Path, target: &Path) {
    let out = restore(Arc::new(LocalBackend::new(repo)), src, target);
    assert!(!out.failed(), "restore: {}", out.text());
    for f in common::all_files(src) {
        let rel = f.strip_prefix(src).expect("prefix");
        assert!(
            fs::read(&f).expect("src") == fs::read(target.join(rel)).expect("restored"),
            "{} differs",
            rel.display()
        );
    }
}

/// Where the faulted runs copy the repository: in memory where there is a
/// tmpfs (hundreds of runs, each syncing its writes, would otherwise spend most
/// of their time waiting for the disk; the faults don't depend on it).
fn scratch_dir(env: &Env) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() { shm } else { env.dir.path() };
    tempfile::Builder::new()
        .prefix("cairn-faults-")
        .tempdir_in(base)
        .expect("scratch")
}

fn must_cover(what: &str, covered: &BTreeSet<(Op, String)>, want: &[(Op, &str)]) {
    for (op, t) in want {
        assert!(
            covered.contains(&(*op, t.to_string())),
            "{what}: no fault met {op:?} {t}; met {covered:?}"
        );
    }
}

#[test]
fn backup_meets_a_fault_at_every_storage_call() {
    let (env, src) = small_repository();
    common::random_files(&src, 132, 2, 120_000, |i| format!("new{i}.bin"));
    let shm = scratch_dir(&env);
    let scratch = shm.path().to_path_buf();
    let covered = Run {
        what: "backup",
        pristine: &env.repo,
        scratch: &scratch,
        op: &|b, _| backup(b, &src),
        writes: true,
        after: &|repo| restores_whole(repo, &src, &scratch.join("restored").join(rand_name())),
    }
    .every_fault();
    must_cover(
        "backup",
        &covered,
        &[
            (Op::Read, "Config"),
            (Op::Read, "Key"),
            (Op::Read, "Index"),
            (Op::Read, "Snapshot"),
            (Op::ReadRange, "Pack"),
            (Op::Write, "Pack"),
            (Op::Write, "Index"),
            (Op::Write, "Snapshot"),
            (Op::Write, "Lock"),
            (Op::List, "Index"),
            (Op::List, "Pack"),
            (Op::List, "Snapshot"),
            (Op::Remove, "Lock"),
        ],
    );
}

fn rand_name() -> String {
    hex::encode(cairn::crypto::random_array::<8>().expect("random"))
}

#[test]
fn restore_meets_a_fault_at_every_storage_call() {
    let (env, src) = small_repository();
    let shm = scratch_dir(&env);
    let scratch = shm.path().to_path_buf();
    let covered = Run {
        what: "restore",
        pristine: &env.repo,
        scratch: &scratch,
        op: &|b, io| {
            let target = io.join("target");
            let out = restore(b, &src, &target);
            if !target.exists() {
                assert!(out.failed(), "no target and no error");
                return out;
            }
            // What is in place under its own name is whole, or reported: a file
            // that failed is never left looking restored.
            {
                for f in common::all_files(&target) {
                    let rel = f.strip_prefix(&target).expect("prefix");
                    let named = out.text().contains(rel.to_str().expect("utf-8"));
                    assert!(
                        named || fs::read(&f).ok() == fs::read(src.join(rel)).ok(),
                        "{} restored damaged and not reported:\n{}",
                        rel.display(),
                        out.text()
                    );
                }
            }
            out
        },
        writes: false,
        after: &|_| {},
    }
    .every_fault();
    must_cover(
        "restore",
        &covered,
        &[
            (Op::Read, "Config"),
            (Op::Read, "Key"),
            (Op::Read, "Index"),
            (Op::Read, "Snapshot"),
            (Op::ReadRange, "Pack"),
            (Op::Write, "Lock"),
            (Op::List, "Snapshot"),
            (Op::Remove, "Lock"),
        ],
    );
}

#[test]
fn check_meets_a_fault_at_every_storage_call() {
    let (env, _src) = small_repository();
    let shm = scratch_dir(&env);
    let scratch = shm.path().to_path_buf();
    let covered = Run {
        what: "check",
        pristine: &env.repo,
        scratch: &scratch,
        op: &|b, _| check(b),
        writes: false,
        after: &|_| {},
    }
    .every_fault();
    must_cover(
        "check",
        &covered,
        &[
            (Op::Read, "Config"),
            (Op::Read, "Key"),
            (Op::Read, "Index"),
            (Op::Read, "Snapshot"),
            (Op::ReadRange, "Pack"),
            (Op::Write, "Lock"),
            (Op::List, "Pack"),
            (Op::Remove, "Lock"),
        ],
    );
}

#[test]
fn prune_meets_a_fault_at_every_storage_call() {
    let (env, src) = small_repository();
    // A second snapshot with one file replaced, the first forgotten: prune
    // deletes a pack, repacks another, and replaces the index.
    fs::remove_file(src.join("r0.bin")).expect("rm");
    common::random_files(&src, 133, 1, 100_000, |_| "r9.bin".into());
    env.ok(&[
        "backup",
        "-q",
        "--host",
        "faults",
        src.to_str().expect("utf-8"),
    ]);
    env.ok(&["forget", "-q", "--keep-last", "1"]);
    let shm = scratch_dir(&env);
    let scratch = shm.path().to_path_buf();
    let covered = Run {
        what: "prune",
        pristine: &env.repo,
        scratch: &scratch,
        op: &|b, _| prune(b),
        writes: true,
        after: &|repo| restores_whole(repo, &src, &scratch.join("restored").join(rand_name())),
    }
    .every_fault();
    must_cover(
        "prune",
        &covered,
        &[
            (Op::Read, "Snapshot"),
            (Op::Read, "Index"),
            (Op::ReadRange, "Pack"),
            (Op::Write, "Pack"),
            (Op::Write, "Index"),
            (Op::Write, "Lock"),
            (Op::Remove, "Index"),
            (Op::Remove, "Pack"),
            (Op::Remove, "Lock"),
            (Op::List, "Pack"),
        ],
    );
}
