//! Real Garage clusters for the object-storage tests: each test starts its own
//! `garage server` processes on free loopback ports, with a temporary data
//! directory, and creates a key and a bucket through the `garage` CLI.
//!
//! The binary is found as `$CAIRN_TEST_GARAGE`, on PATH, or where .ci/run
//! installs it. Where there is none the tests say so and pass, unless
//! `CAIRN_TEST_REQUIRE_GARAGE=1` (set by .ci/run), where that is a failure.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Env;

/// The Garage version .ci/run installs, and where.
pub const GARAGE_VERSION: &str = "2.5.0";
pub const REGION: &str = "garage";
pub const BUCKET: &str = "cairn";

pub fn garage_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CAIRN_TEST_GARAGE") {
        return Some(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("garage");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let p = home.join(format!(
        ".cache/cairn-ci/garage-{GARAGE_VERSION}/bin/garage"
    ));
    p.is_file().then_some(p)
}

/// The binary, or `None` (having said why) where the test can't run here.
fn binary_or_skip(test: &str) -> Option<PathBuf> {
    match garage_binary() {
        Some(p) => Some(p),
        None if std::env::var("CAIRN_TEST_REQUIRE_GARAGE").as_deref() == Ok("1") => {
            panic!("{test}: no garage binary, and CAIRN_TEST_REQUIRE_GARAGE=1")
        }
        None => {
            eprintln!(
                "{test}: skipped: no garage binary (install it with `cargo install --locked \
                 garage --version {GARAGE_VERSION}`, or set CAIRN_TEST_GARAGE)"
            );
            None
        }
    }
}

/// A loopback port no other Garage of this test run was given and nothing
/// listens on. Ports come from below the kernel's ephemeral range, so neither
/// `bind(":0")` elsewhere (the fault proxy) nor an outgoing connection can be
/// handed one between this check and Garage binding it; asking the kernel for
/// port 0 here instead once gave one node's S3 port to another's admin API.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|v| v.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    // The window: below the ephemeral range if there is room, else above it.
    let (start, len) = if low >= 11_000 {
        (low - 10_000, 10_000)
    } else if high <= 55_000 {
        (high + 1, 10_000)
    } else {
        return std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
    };
    // Another test process starts elsewhere in the window.
    let offset = std::process::id() % len;
    for _ in 0..len {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = start + (offset + n) % len;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {start}..{}", start + len)
}

pub struct Node {
    pub config: PathBuf,
    pub s3_port: u16,
    pub rpc_port: u16,
    pub id: String,
    child: Option<Child>,
    log: PathBuf,
}

pub struct Garage {
    bin: PathBuf,
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub key_id: String,
    pub secret: String,
}

impl Garage {
    /// One node, replication factor 1.
    pub fn single(test: &str) -> Option<Garage> {
        Self::cluster(test, 1, 1)
    }

    /// `n` nodes in one cluster, each in its own zone, with replication factor
    /// `replication`; a key allowed to read and write bucket [`BUCKET`].
    pub fn cluster(test: &str, n: usize, replication: usize) -> Option<Garage> {
        let bin = binary_or_skip(test)?;
        let dir = tempfile::tempdir().expect("tempdir");
        let secret: String = crate::common::xorshift(free_port().into(), 32)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut g = Garage {
            bin,
            dir,
            nodes: Vec::new(),
            key_id: String::new(),
            secret: String::new(),
        };
        for i in 0..n {
            let node_dir = g.dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let (s3_port, rpc_port, admin_port) = (free_port(), free_port(), free_port());
            let config = node_dir.join("garage.toml");
            let text = format!(
                r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = {replication}
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
"#,
                meta = node_dir.join("meta").display(),
                data = node_dir.join("data").display(),
            );
            crate::common::write_private(&config, &text);
            let mut node = Node {
                config,
                s3_port,
                rpc_port,
                id: String::new(),
                child: None,
                log: node_dir.join("log"),
            };
            g.spawn(&mut node);
            g.nodes.push(node);
        }
        for i in 0..n {
            g.wait_up(i);
            let out = g.garage(i, &["node", "id", "-q"]);
            let id = out.trim().split('@').next().unwrap_or("").to_string();
            assert_eq!(id.len(), 64, "garage node id: {out:?}");
            g.nodes[i].id = id;
        }
        for i in 1..n {
            let addr = format!("{}@127.0.0.1:{}", g.nodes[i].id, g.nodes[i].rpc_port);
            g.garage(0, &["node", "connect", &addr]);
        }
        for i in 0..n {
            let (zone, id) = (format!("z{i}"), g.nodes[i].id.clone());
            g.garage(0, &["layout", "assign", "-z", &zone, "-c", "1G", &id]);
        }
        g.garage(0, &["layout", "apply", "--version", "1"]);
        // The bucket and key tables need the layout on every node first.
        g.retry(0, &["bucket", "create", BUCKET]);
        let out = g.garage(0, &["key", "create", "cairn-test"]);
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name:?} in `garage key create` output:\n{out}"))
        };
        g.key_id = field("Key ID:");
        g.secret = field("Secret key:");
        g.garage(
            0,
            &[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                BUCKET,
                "--key",
                "cairn-test",
            ],
        );
        Some(g)
    }

    fn spawn(&self, node: &mut Node) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("garage log");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting garage server");
        node.child = Some(child);
    }

    fn wait_up(&self, i: usize) {
        let start = Instant::now();
        loop {
            let out = self
                .command(i, &["status"])
                .output()
                .expect("garage status");
            let s3_listens =
                std::net::TcpStream::connect(("127.0.0.1", self.nodes[i].s3_port)).is_ok();
            if out.status.success() && s3_listens {
                // A server that could not bind its port logs this and runs on.
                let log = self.log(i);
                assert!(
                    !log.contains("exited with error"),
                    "garage node {i} lost one of its servers:\n{log}"
                );
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "garage node {i} did not come up:\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn command(&self, i: usize, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("-c").arg(&self.nodes[i].config).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `garage` on node `i`'s config; asserts success, returns stdout.
    pub fn garage(&self, i: usize, args: &[&str]) -> String {
        let out = self.command(i, args).output().expect("running garage");
        assert!(
            out.status.success(),
            "garage {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`Self::garage`], retried for up to a minute while the cluster settles.
    fn retry(&self, i: usize, args: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let out = self.command(i, args).output().expect("running garage");
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "garage {args:?} kept failing:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3_port)
    }

    /// `s3:http://127.0.0.1:PORT/BUCKET/PREFIX`, through node `i`.
    pub fn location_via(&self, i: usize, prefix: &str) -> PathBuf {
        PathBuf::from(format!("s3:{}/{BUCKET}/{prefix}", self.endpoint(i)))
    }

    pub fn location(&self, prefix: &str) -> PathBuf {
        self.location_via(0, prefix)
    }

    /// The variables cairn needs for this cluster.
    pub fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
            ("AWS_DEFAULT_REGION".into(), REGION.into()),
        ]
    }

    /// An [`Env`] whose repository is `prefix` in the bucket (not created).
    pub fn env(&self, prefix: &str) -> Env {
        let mut env = Env::new();
        env.repo = self.location(prefix);
        env.vars = self.vars();
        env
    }

    /// [`Self::env`] with a repository made with cheap key derivation.
    pub fn env_with_repo(&self, prefix: &str, extra: &[&str]) -> Env {
        let env = self.env(prefix);
        let mut args = vec!["init", "--kdf-memory", "1024", "--kdf-iterations", "1"];
        args.extend_from_slice(extra);
        env.ok(&args);
        env
    }

    /// A backend on `prefix` in the bucket through node `i`, for changing
    /// objects behind cairn's back (the test's own S3 client).
    pub fn backend(&self, i: usize, prefix: &str) -> cairn::backend::S3Backend {
        let loc = self.location_via(i, prefix);
        let loc = cairn::backend::S3Location::parse(&loc.to_string_lossy()).expect("location");
        cairn::backend::S3Backend::with_settings(
            loc,
            cairn::backend::s3::S3Settings {
                access_key_id: Some(self.key_id.clone()),
                secret_access_key: Some(self.secret.clone()),
                region: Some(REGION.into()),
            },
        )
        .expect("backend")
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again (after [`Self::kill`]) and waits until it answers.
    pub fn restart(&mut self, i: usize) {
        let mut node = std::mem::replace(
            &mut self.nodes[i],
            Node {
                config: PathBuf::new(),
                s3_port: 0,
                rpc_port: 0,
                id: String::new(),
                child: None,
                log: PathBuf::new(),
            },
        );
        self.spawn(&mut node);
        self.nodes[i] = node;
        self.wait_up(i);
        // Reconnect at once rather than at the peers' next scheduled attempt
        // (tens of seconds).
        for j in 0..self.nodes.len() {
            if j != i && self.nodes[j].child.is_some() {
                let addr = format!("{}@127.0.0.1:{}", self.nodes[j].id, self.nodes[j].rpc_port);
                let _ = self.command(i, &["node", "connect", &addr]).output();
                let back = format!("{}@127.0.0.1:{}", self.nodes[i].id, self.nodes[i].rpc_port);
                let _ = self.command(j, &["node", "connect", &back]).output();
            }
        }
        self.wait_connected();
    }

    /// Waits until every running node lists every running node as healthy (a
    /// restarted node has rejoined), for up to a minute.
    pub fn wait_connected(&self) {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect();
        let start = Instant::now();
        loop {
            let all = live.iter().all(|&i| {
                let Ok(out) = self.command(i, &["status"]).output() else {
                    return false;
                };
                let text = String::from_utf8_lossy(&out.stdout);
                let healthy = text
                    .split("==== HEALTHY NODES ====")
                    .nth(1)
                    .map(|s| s.split("====").next().unwrap_or(""))
                    .unwrap_or("");
                live.iter()
                    .all(|&j| healthy.contains(self.nodes[j].id.get(..16).unwrap_or("?")))
            });
            if all {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the nodes did not reconnect"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.nodes[i]
            .config
            .parent()
            .unwrap_or(Path::new("/"))
            .join("data")
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
