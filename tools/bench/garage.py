"""A single-node Garage for bench.py --garage: started on free loopback ports
with its metadata and data directories under the benchmark's work directory,
one bucket and one key allowed to use it, and a minimal S3 client (AWS
signature version 4, standard library only) to measure and delete what each
tool stored under its prefix.

The setup follows tests/it/garage.rs: config TOML, `garage server`,
`garage node id -q`, `garage layout assign`/`apply`, `garage bucket create`,
`garage key create`, `garage bucket allow`.
"""

import datetime
import hashlib
import hmac
import http.client
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

VERSION = "2.5.0"
REGION = "garage"
BUCKET = "bench"
KEY_NAME = "bench"
# LMDB is Garage's default and recommended metadata engine (the tests use
# SQLite, which needs no tuning for many short-lived clusters).
DB_ENGINE = "lmdb"


def binary():
    """$CAIRN_TEST_GARAGE, `garage` on PATH, or where .ci/run installs it."""
    if os.environ.get("CAIRN_TEST_GARAGE"):
        return os.environ["CAIRN_TEST_GARAGE"]
    on_path = shutil.which("garage")
    if on_path:
        return on_path
    p = Path.home() / ".cache" / "cairn-ci" / f"garage-{VERSION}" / "bin" / "garage"
    return str(p) if p.is_file() else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Garage:
    def __init__(self, work):
        self.bin = binary()
        if self.bin is None:
            raise SystemExit(f"--garage: no garage binary (set CAIRN_TEST_GARAGE, or install Garage "
                             f"{VERSION}: `cargo install --locked garage --version {VERSION}`)")
        self.dir = Path(work) / "garage"
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.s3_port, self.rpc_port, self.admin_port = free_port(), free_port(), free_port()
        self.config = self.dir / "garage.toml"
        # Blocks are not compressed: both tools send encrypted, incompressible
        # data, on which zstd would only spend the CPU the client needs.
        self.config.write_text(f"""metadata_dir = "{self.dir / 'meta'}"
data_dir = "{self.dir / 'data'}"
db_engine = "{DB_ENGINE}"
replication_factor = 1
compression_level = "none"
rpc_bind_addr = "127.0.0.1:{self.rpc_port}"
rpc_public_addr = "127.0.0.1:{self.rpc_port}"
rpc_secret = "{os.urandom(32).hex()}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{self.s3_port}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{self.admin_port}"
""")
        os.chmod(self.config, 0o600)
        self.log = open(self.dir / "log", "ab")
        self.proc = subprocess.Popen([self.bin, "-c", str(self.config), "server"],
                                     env=dict(os.environ, RUST_LOG="warn"),
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        try:
            self._setup()
        except BaseException:
            self.stop()
            raise

    def _setup(self):
        deadline = time.monotonic() + 60
        while self.cli(["status"], check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("garage did not come up:\n" + (self.dir / "log").read_text()[-2000:])
            time.sleep(0.1)
        node = self.cli(["node", "id", "-q"]).stdout.strip().split("@")[0]
        self.cli(["layout", "assign", "-z", "z0", "-c", "1G", node])
        self.cli(["layout", "apply", "--version", "1"])
        deadline = time.monotonic() + 60
        while self.cli(["bucket", "create", BUCKET], check=False).returncode != 0:
            if time.monotonic() > deadline:
                self.cli(["bucket", "create", BUCKET])  # fails, with its message
            time.sleep(0.2)
        out = self.cli(["key", "create", KEY_NAME]).stdout

        def field(name):
            m = re.search(rf"^{name}\s*(\S+)", out, re.M)
            if not m:
                raise SystemExit(f"no {name!r} in `garage key create` output:\n{out}")
            return m.group(1)

        self.key_id, self.secret = field("Key ID:"), field("Secret key:")
        self.cli(["bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_NAME])

    def cli(self, args, check=True):
        p = subprocess.run([self.bin, "-c", str(self.config)] + args, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if check and p.returncode != 0:
            raise SystemExit(f"garage {' '.join(args)} failed:\n{p.stdout}{p.stderr}")
        return p

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def version(self):
        return self.cli(["--version"]).stdout.split("\n")[0].strip()

    def endpoint(self):
        return f"http://127.0.0.1:{self.s3_port}"

    def location(self, prefix):
        return f"s3:{self.endpoint()}/{BUCKET}/{prefix}"

    def env(self):
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_DEFAULT_REGION": REGION}

    def cpu_seconds(self):
        """User plus system CPU time the server has used so far, all threads."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def s3_requests(self):
        """S3 API requests served so far, by endpoint (PutObject, GetObject, ...),
        from the admin API's Prometheus metrics."""
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=30)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        out = {}
        for m in re.finditer(r'^api_s3_request_counter\{[^}]*api_endpoint="(\w+)"[^}]*\}\s+(\d+)', text, re.M):
            out[m.group(1)] = out.get(m.group(1), 0) + int(m.group(2))
        return out

    # A minimal S3 client: list and delete, signed with AWS signature v4.

    def _request(self, conn, method, path, query=()):
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        quote = lambda s: urllib.parse.quote(s, safe="-_.~")
        canonical_query = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(query))
        canonical_path = urllib.parse.quote(path, safe="/-_.~")
        payload = hashlib.sha256(b"").hexdigest()
        host = f"127.0.0.1:{self.s3_port}"
        headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
        signed = ";".join(sorted(headers))
        canonical = "\n".join([method, canonical_path, canonical_query]
                              + [f"{k}:{headers[k]}" for k in sorted(headers)] + ["", signed, payload])
        scope = f"{day}/{REGION}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        k = ("AWS4" + self.secret).encode()
        for part in (day, REGION, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.key_id}/{scope}, "
                                    f"SignedHeaders={signed}, Signature={sig}")
        url = canonical_path + ("?" + canonical_query if canonical_query else "")
        conn.request(method, url, headers=headers)
        r = conn.getresponse()
        body = r.read()
        if r.status >= 300:
            raise SystemExit(f"S3 {method} {url}: HTTP {r.status}\n{body[:2000].decode(errors='replace')}")
        return body

    def list(self, prefix):
        """[(key, size)] of every object under prefix/."""
        conn = http.client.HTTPConnection("127.0.0.1", self.s3_port, timeout=60)
        ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
        out, token = [], None
        while True:
            q = [("list-type", "2"), ("prefix", prefix.rstrip("/") + "/")]
            if token:
                q.append(("continuation-token", token))
            root = ET.fromstring(self._request(conn, "GET", f"/{BUCKET}", q))
            for c in root.iter(ns + "Contents"):
                out.append((c.find(ns + "Key").text, int(c.find(ns + "Size").text)))
            token = root.findtext(ns + "NextContinuationToken")
            if root.findtext(ns + "IsTruncated") != "true" or not token:
                break
        conn.close()
        return out

    def delete_prefix(self, prefix):
        """Deletes every object under prefix/ (Garage frees the blocks later)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.s3_port, timeout=60)
        for key, _ in self.list(prefix):
            self._request(conn, "DELETE", f"/{BUCKET}/{key}")
        conn.close()
