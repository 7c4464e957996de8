//! Shared helpers for integration tests: a scratch directory with a repository and
//! a password file, the `cairn` binary, and seeded data generators.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use std::sync::Arc;

use cairn::backend::{Backend, Entry, FileType, LocalBackend};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Env {
    pub dir: tempfile::TempDir,
    /// A directory, or an `s3:` location (tests/it/garage.rs).
    pub repo: PathBuf,
    pub password_file: PathBuf,
    /// Environment variables every command gets (object storage credentials).
    pub vars: Vec<(String, String)>,
}

impl Env {
    /// A scratch directory; the repository path inside it does not exist yet.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        let password_file = dir.path().join("password");
        write_private(&password_file, &format!("{PASSWORD}\n"));
        Self {
            dir,
            repo,
            password_file,
            vars: Vec::new(),
        }
    }

    /// A new repository with cheap key derivation (tests only) and `extra` init flags.
    pub fn with_repo(extra: &[&str]) -> Self {
        let env = Self::new();
        let mut args = vec!["init", "--kdf-memory", "1024", "--kdf-iterations", "1"];
        args.extend_from_slice(extra);
        env.ok(&args);
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `cairn -r REPO --password-file F`, with no CAIRN_* variables inherited.
    pub fn cmd(&self) -> Command {
        self.cmd_with(&self.password_file)
    }

    /// Like [`Env::cmd`], with another password file.
    pub fn cmd_with(&self, password_file: &Path) -> Command {
        let mut c = self.bare_cmd();
        c.arg("--password-file").arg(password_file);
        c
    }

    /// `cairn -r REPO` with no password source and no CAIRN_* variables inherited.
    pub fn bare_cmd(&self) -> Command {
        self.bare_cmd_through(&[])
    }

    /// [`Env::bare_cmd`] started through `wrapper`: a program and its arguments
    /// that end by running the command line that follows (`unshare ...`, say).
    pub fn bare_cmd_through(&self, wrapper: &[&str]) -> Command {
        let cairn = env!("CARGO_BIN_EXE_cairn");
        let mut c = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(cairn);
                c
            }
            None => Command::new(cairn),
        };
        for (k, _) in std::env::vars_os() {
            let k_text = k.to_string_lossy();
            if k_text.starts_with("CAIRN_") || k_text.starts_with("AWS_") {
                c.env_remove(k);
            }
        }
        c.envs(self.vars.iter().map(|(k, v)| (k, v)));
        c.env("CAIRN_CACHE_DIR", self.dir.path().join("cache"));
        c.arg("-r").arg(&self.repo);
        c.stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(&self.password_file, args)
    }

    /// Like [`Env::run`], with another password file.
    pub fn run_with(&self, password_file: &Path, args: &[&str]) -> Output {
        self.cmd_with(password_file)
            .args(args)
            .output()
            .expect("running cairn")
    }

    /// Runs and asserts exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with(&self.password_file, args)
    }

    /// Like [`Env::ok`], with another password file.
    pub fn ok_with(&self, password_file: &Path, args: &[&str]) -> String {
        let out = self.run_with(password_file, args);
        assert!(
            out.status.success(),
            "cairn {args:?} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// `backup --json` and the parsed summary line.
    pub fn backup_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["backup", "--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        last_json(&out, "summary")
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last JSON line of `out` whose message_type is `kind`.
pub fn last_json(out: &str, kind: &str) -> serde_json::Value {
    out.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message_type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} line in output:\n{out}"))
}

/// Writes `contents` to a new file readable by its owner only, as a password file
/// should be.
pub fn write_private(path: &Path, contents: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create private file");
    f.write_all(contents.as_bytes())
        .expect("write private file");
}

/// xorshift64 with the output taken from bits 32..40: fixed forever, unlike
/// library generators, for data that frozen fixtures and vectors depend on.
pub fn xorshift(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

pub fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

/// Incompressible bytes (image-like).
pub fn random_bytes(rng: &mut SmallRng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

/// Writes `n` files of `size` random bytes into `dir`, named by `name(i)`, all
/// from one generator seeded with `seed`.
pub fn random_files(dir: &Path, seed: u64, n: usize, size: usize, name: impl Fn(usize) -> String) {
    let mut rng = rng(seed);
    for i in 0..n {
        std::fs::write(dir.join(name(i)), random_bytes(&mut rng, size)).expect("write");
    }
}

/// Compressible text (log-like).
pub fn text_bytes(rng: &mut SmallRng, n: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "epoch",
        "loss",
        "step",
        "INFO",
        "grad_norm",
        "lr",
        "0.001",
        "checkpoint",
        "saved",
        "batch",
        "eval",
        "WARN",
    ];
    let mut s = Vec::with_capacity(n + 16);
    while s.len() < n {
        s.extend_from_slice(WORDS[rng.gen_range(0..WORDS.len())].as_bytes());
        s.push(if rng.gen_ratio(1, 8) { b'\n' } else { b' ' });
    }
    s.truncate(n);
    s
}

/// Whether this filesystem keeps `user.*` extended attributes.
pub fn user_xattrs_supported(dir: &Path) -> bool {
    let probe = dir.join(".xattr-probe");
    std::fs::write(&probe, b"").expect("probe");
    let ok = xattr::set(&probe, "user.probe", b"1").is_ok();
    std::fs::remove_file(&probe).expect("rm probe");
    ok
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// All files under `dir` (recursively), for scanning the repository's bytes.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let t = e.file_type().expect("file type");
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A local repository whose writes go through `hook`, which makes them (or fails,
/// or does more): the tests' fault injection. Everything else goes straight to
/// the local backend.
pub struct HookedBackend<H> {
    pub inner: LocalBackend,
    pub hook: H,
}

impl<H> HookedBackend<H>
where
    H: Fn(&LocalBackend, FileType, &str, &[u8]) -> cairn::Result<()> + Send + Sync,
{
    pub fn new(repo: &Path, hook: H) -> Self {
        Self {
            inner: LocalBackend::new(repo),
            hook,
        }
    }
}

impl<H> Backend for HookedBackend<H>
where
    H: Fn(&LocalBackend, FileType, &str, &[u8]) -> cairn::Result<()> + Send + Sync,
{
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
        (self.hook)(&self.inner, t, name, data)
    }
    fn remove(&self, t: FileType, name: &str) -> cairn::Result<()> {
        self.inner.remove(t, name)
    }
}

/// Opens the repository through `backend` with the test password and backs up
/// `src` with default options, as `cairn backup SRC` would.
pub fn backup_through(
    backend: Arc<dyn Backend>,
    src: &Path,
) -> cairn::Result<cairn::archiver::BackupResult> {
    let repo = Arc::new(cairn::repository::Repository::open(
        backend,
        PASSWORD.as_bytes(),
    )?);
    let opts = cairn::archiver::BackupOptions {
        source: cairn::archiver::Source::Paths(vec![src.to_path_buf()]),
        host: None,
        tags: vec![],
        excludes: vec![],
        one_file_system: false,
        parent: None,
        force: false,
        progress: None,
        compression: None,
    };
    cairn::archiver::backup(
        &repo,
        opts,
        &std::sync::atomic::AtomicBool::new(false),
        &|_| {},
    )
}

/// Restores `SPEC:SRC` with `--verify` into a new directory and checks that every
/// file of `src` came back byte for byte.
pub fn restore_matches(env: &Env, spec: &str, src: &Path) {
    let out = tempfile::tempdir_in(env.dir.path()).expect("restore dir");
    let target = out.path().join("restored");
    env.ok(&[
        "restore",
        &format!("{spec}:{}", src.display()),
        "--target",
        target.to_str().expect("utf-8"),
        "--verify",
    ]);
    for f in all_files(src) {
        let rel = f.strip_prefix(src).expect("prefix");
        assert_eq!(
            std::fs::read(&f).expect("src"),
            std::fs::read(target.join(rel)).expect("restored"),
            "{}",
            rel.display()
        );
    }
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
pub struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A small tmpfs at `at`, or why there can't be one here.
pub fn mount_tmpfs(at: &Path, size: &str) -> Result<Mount, String> {
    if !is_root() {
        return Err("mounting a tmpfs needs root".into());
    }
    std::fs::create_dir_all(at).expect("mkdir");
    match std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .output()
    {
        Ok(o) if o.status.success() => Ok(Mount(at.to_path_buf())),
        Ok(o) => Err(format!(
            "cannot mount a tmpfs here ({})",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run mount ({e})")),
    }
}

/// [`mount_tmpfs`], or `None` after printing why the test skips.
pub fn tmpfs_or_skip(at: &Path, size: &str) -> Option<Mount> {
    mount_tmpfs(at, size)
        .map_err(|why| eprintln!("skipping: {why}"))
        .ok()
}

/// Binds `from` over the file `at` (root only): reads of `at` then meet
/// whatever `from` gives, such as an I/O error.
pub fn bind_file(from: &Path, at: &Path) -> Result<Mount, String> {
    if !is_root() {
        return Err("a bind mount needs root".into());
    }
    match std::process::Command::new("mount")
        .arg("--bind")
        .arg(from)
        .arg(at)
        .output()
    {
        Ok(o) if o.status.success() => Ok(Mount(at.to_path_buf())),
        Ok(o) => Err(format!(
            "cannot bind-mount here ({})",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run mount ({e})")),
    }
}

/// Forgets what this user's cairn saw in the repository (`cairn::seen`), as a
/// machine that never opened it: for tests that remove repository files by
/// hand to stage what another cairn, or damage, would leave.
pub fn unsee(env: &Env) {
    let dir = env.dir.path().join("cache").join("seen");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("removing the seen state");
    }
}

/// Steps `child` with SIGSTOP and SIGCONT until `reached()` holds, and leaves it
/// stopped there (waited for as stopped, so it is not still running on another
/// core): whatever the caller does next, a kill say, lands while the child is
/// mid-operation at that point, however fast the machine. Panics if the child
/// exits first.
pub fn stop_when(child: &mut std::process::Child, what: &str, reached: impl Fn() -> bool) {
    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    loop {
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        match waitpid(pid, Some(WaitPidFlag::WUNTRACED)).expect("waitpid") {
            WaitStatus::Stopped(..) => {}
            other => panic!("the child ended ({other:?}) before {what}"),
        }
        if reached() {
            return;
        }
        kill(pid, Signal::SIGCONT).expect("SIGCONT");
        // Short steps: on a quiet machine the last stretch of a command (a
        // prune's final deletions and its exit, say) can take well under a
        // millisecond, and a state passed within one step is missed.
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

/// The pack files under `repo`.
pub fn pack_names(repo: &Path) -> std::collections::BTreeSet<String> {
    all_files(&repo.join("data"))
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".tmp-"))
        .collect()
}

/// The ids of the repository's snapshots, oldest first (`snapshots --json`).
pub fn snapshot_ids(env: &Env) -> Vec<String> {
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("snapshots --json");
    listed
        .as_array()
        .expect("snapshots --json is an array")
        .iter()
        .map(|s| s["id"].as_str().expect("a snapshot has an id").to_string())
        .collect()
}

/// `check --read-data` succeeds and reports nothing on stderr.
pub fn check_clean(env: &Env) {
    let out = env.run(&["check", "--read-data"]);
    assert!(
        out.status.success() && stderr(&out).is_empty(),
        "check --read-data: {:?}\n{}\n{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
}

/// Every directory (as `name/`, with no bytes) and every other entry's bytes
/// under `root`, by path relative to it.
pub fn tree_contents(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.expect("entry").path();
            let t = std::fs::symlink_metadata(&p).expect("lstat").file_type();
            if t.is_dir() {
                out.insert(format!("{}/", rel(root, &p)), Vec::new());
                stack.push(p);
            } else {
                out.insert(rel(root, &p), std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

/// Restores the latest snapshot into `into` (under the test's directory) and
/// returns [`tree_contents`] of where `src` came back.
pub fn restored_contents(
    env: &Env,
    into: &str,
    src: &Path,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let target = env.path(into);
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    let src = src.to_str().expect("utf-8");
    tree_contents(&target.join(src.trim_start_matches('/')))
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .expect("under root")
        .display()
        .to_string()
}
