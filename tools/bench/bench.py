#!/usr/bin/env python3
"""Benchmark cairn against restic and borg (and optionally rustic and bupstash)
on the same generated data, in one run, and report ratios of medians.

Datasets (deterministic, generated once into the work directory):
  small       many small files: image-like (incompressible) and text-like
  checkpoint  one model checkpoint, then a second version with a few contiguous
              regions rewritten
  logs        compressible log files
  usr         a real tree nobody here wrote: a copy of parts of this machine's
              /usr (documentation, headers, Python's library, binaries), many
              small mostly compressible files
  many        100,000 small incompressible files (1-8 KiB of random bytes)

For each tool and dataset: first backup, unchanged re-backup, (checkpoint) backup
of the changed version and the bytes it added, (usr, many) a backup after files
came and went (10% added, 5% deleted) and the bytes it added, full restore (into a
tmpfs when run as root, see restore_target), check with full data
verification, repository size and peak RSS. The "limit" figure is the time to read,
chunk, hash, compress and encrypt the same bytes on all cores with nothing else
(tools/bench/limit.rs). The "disk" figure is the time to just write the
repository's bytes as fsynced 16 MiB files (O_DIRECT where possible): storing
costs that much whatever the tool. Before every backup the source is read once, so
that every tool sees the same page cache; before every restore and check the page
cache is dropped (as root), so that every tool reads its repository from disk.

With --garage, cairn and restic back up to, restore from and check repositories
in a single-node Garage (tools/bench/garage.py) started on loopback for the run,
each under its own prefix of one bucket, and the report is the "Object storage"
section of the results file (the rest of the file is kept).

Usage: python3 tools/bench/bench.py [--quick] [--runs N] [--workdir DIR]
                                    [--with-rustic] [--with-bupstash]
                                    [--only cairn,cairn-keyfile] [--out FILE]
       python3 tools/bench/bench.py --garage [--quick] [--runs N] [--only ...]
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where cargo puts the release build (CARGO_TARGET_DIR, as cargo itself reads it).
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
PASSWORD = "bench password"
# Variables every tool's commands get on top of the environment (--garage: the
# bucket's credentials and region, and cache directories in the work directory).
EXTRA_ENV = {}
# User and system CPU seconds of the last command sh() ran.
LAST_CPU = 0.0


def sh(cmd, env=None, cwd=None, check=True):
    """Runs cmd under GNU time; returns (seconds, peak RSS KiB, stdout).

    Dirty pages are flushed first: on ext4, an fsync commits the journal and so
    writes out every other dirty file too, which would charge one tool for the
    restore that ran before it."""
    global LAST_CPU
    os.sync()
    full = ["/usr/bin/time", "-f", "%e %M %U %S", "-o", "/tmp/cairn-bench-time"] + cmd
    p = subprocess.run(full, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    secs, rss, user, system = Path("/tmp/cairn-bench-time").read_text().split()[-4:]
    LAST_CPU = float(user) + float(system)
    return float(secs), int(rss), p.stdout


def ensure_tools(args):
    others = [t for t in ("restic", "borg") if not args.only or t in args.only.split(",")]
    if args.garage:
        others = [t for t in others if t != "borg"]
    missing = [t for t in others if shutil.which(t) is None]
    if shutil.which("/usr/bin/time") is None or not Path("/usr/bin/time").exists():
        missing.append("time")
    if missing:
        pkgs = {"restic": "restic", "borg": "borgbackup", "time": "time"}
        print(f"installing {missing} from Debian packages", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq"] + [pkgs[m] for m in missing], check=True)
    if args.with_rustic and shutil.which("rustic") is None:
        subprocess.run(["cargo", "install", "--locked", "rustic-rs"], check=True)
    if args.with_bupstash and shutil.which("bupstash") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "libsodium-dev", "pkg-config"], check=True)
        subprocess.run(["cargo", "install", "--locked", "bupstash"], check=True)
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--bin", "cairn", "--example", "limit"],
                   cwd=ROOT, check=True)


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


WORDS = [b"epoch", b"loss", b"step", b"INFO", b"grad_norm", b"lr=3e-4", b"checkpoint", b"saved",
         b"batch", b"eval", b"WARN", b"tokens/s", b"rank", b"0.0021", b"shard"]


def text(rng, n):
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rng.choice(WORDS) for _ in range(12)) + b"\n"
    return bytes(out[:n])


def generate(work, quick):
    data = work / "data"
    marker = data / ".complete-quick" if quick else data / ".complete"
    if marker.exists():
        return data
    if data.exists():
        shutil.rmtree(data)
    rng = random.Random(2026)
    n_small = 5_000 if quick else 50_000
    print(f"generating {n_small} small files", flush=True)
    for i in range(n_small):
        d = data / "small" / f"shard{i % 100:03d}"
        if rng.random() < 0.4:
            write(d / f"img{i:06d}.jpg", rng.randbytes(rng.randint(8 << 10, 96 << 10)))
        else:
            write(d / f"rec{i:06d}.jsonl", text(rng, rng.randint(1 << 10, 16 << 10)))
    size = (256 if quick else 1024) << 20
    print(f"generating a {size >> 20} MiB checkpoint and its second version", flush=True)
    ck = data / "checkpoint" / "v1"
    ck.mkdir(parents=True)
    with open(ck / "model.ckpt", "wb") as f:
        for _ in range(size >> 24):
            f.write(rng.randbytes(16 << 20))
    v2 = data / "checkpoint" / "v2"
    v2.mkdir(parents=True)
    shutil.copyfile(ck / "model.ckpt", v2 / "model.ckpt")
    regions = []
    with open(v2 / "model.ckpt", "r+b") as f:
        for k in range(4):
            off = (size // 5) * (k + 1) + rng.randint(0, 1 << 20)
            n = 4 << 20
            f.seek(off)
            f.write(rng.randbytes(n))
            regions.append(n)
    (data / "checkpoint" / "rewritten").write_text(f"{len(regions)} {sum(regions)}")
    n_logs = 40 if quick else 200
    print(f"generating {n_logs} log files", flush=True)
    for i in range(n_logs):
        write(data / "logs" / f"train-{i:03d}.log", text(rng, 2 << 20))
    marker.write_text("ok")
    return data


# Parts of /usr copied for the "usr" dataset, where present (quick: the first).
REAL_TREE = ["/usr/include", "/usr/share", "/usr/lib/python3", "/usr/lib/python3.11",
             "/usr/lib/gcc", "/usr/bin"]


def generate_more(data, quick):
    """The datasets added after the first three, each with its own marker so that
    an existing work directory keeps the data it has."""
    marker = data / (".complete-many-quick" if quick else ".complete-many")
    if not marker.exists():
        many = data / "many"
        if many.exists():
            shutil.rmtree(many)
        rng = random.Random(2027)
        n = 10_000 if quick else 100_000
        print(f"generating {n} small incompressible files", flush=True)
        for i in range(n):
            write(many / f"d{i % 1000:03d}" / f"f{i:06d}.bin", rng.randbytes(rng.randint(1 << 10, 8 << 10)))
        marker.write_text("ok")
    marker = data / (".complete-usr-quick" if quick else ".complete-usr")
    if not marker.exists():
        usr = data / "usr"
        if usr.exists():
            shutil.rmtree(usr)
        parts = [p for p in REAL_TREE if Path(p).is_dir()][: 1 if quick else None]
        print(f"copying {', '.join(parts)} for the real tree", flush=True)
        for p in parts:
            dest = usr / p.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", p, str(dest.parent) + "/"], check=True)
        marker.write_text("ok")


class Churn:
    """Files coming and going between two backups, undone afterwards: every 20th
    file (in name order) moved out of the tree, and one new file for every 10th,
    written beside it: text for the real tree, random bytes for `many`, of the
    size of the file it sits beside (at most 64 KiB). Seeded, so every tool sees
    the same change."""

    def __init__(self, src, held, name):
        self.src, self.held, self.added, self.moved = Path(src), Path(held), [], []
        rng = random.Random(2028)
        files = sorted(p for p in self.src.rglob("*") if p.is_file() and not p.is_symlink())
        if self.held.exists():
            shutil.rmtree(self.held)
        for i, f in enumerate(files):
            if i % 10 == 5:
                size = min(f.stat().st_size, 64 << 10) or 1024
                new = f.with_name(f"churn-{i:06d}" + f.suffix)
                write(new, text(rng, size) if name == "usr" else rng.randbytes(size))
                self.added.append(new)
            if i % 20 == 0:
                dest = self.held / f"{i:06d}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(f), dest)
                self.moved.append((f, dest))

    def undo(self):
        for f in self.added:
            f.unlink()
        for f, dest in self.moved:
            shutil.move(str(dest), f)
        shutil.rmtree(self.held)


def restore_target(work, tool, name, run):
    """Where a restore goes: a tmpfs mounted for the run when running as root, so
    that what is timed is the tool reading, checking and writing out its data,
    not the filesystem. On ext4, creating tens of thousands of files within
    minutes of deleting as many (the previous tool's restore) spends most of
    its time in the kernel skipping recently freed inodes (`recently_deleted`,
    seen with perf: a 57k-file restore took 25-30 s instead of 2.5), which
    would charge each tool for the one before it."""
    mnt = work / "restore-tmpfs"
    if os.geteuid() == 0:
        mnt.mkdir(exist_ok=True)
        if not os.path.ismount(mnt):
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8g", "tmpfs", str(mnt)], check=True)
        return mnt / f"restore-{tool}-{name}-{run}"
    return work / f"restore-{tool}-{name}-{run}"


def warm(path):
    for p in Path(path).rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass


def du(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


class Tool:
    name = ""

    def __init__(self, repo, side=None):
        # A path, or an s3: location (a string: Path would fold its "//").
        self.repo = repo
        # Where files beside the repository go (a key file): the repository's
        # own path, or for an s3: location one in the work directory.
        self.side = Path(side if side is not None else repo)


class Cairn(Tool):
    name = "cairn"
    bin = str(TARGET / "release" / "cairn")

    def env(self):
        return dict(os.environ, **EXTRA_ENV, CAIRN_REPOSITORY=str(self.repo), CAIRN_PASSWORD=PASSWORD)

    def init(self):
        sh([self.bin, "init", "-q"], env=self.env())

    def backup(self, src):
        # --json: the summary line carries the in-memory index figure.
        return sh([self.bin, "backup", "--json", str(src)], env=self.env())

    def restore(self, src, target):
        return sh([self.bin, "restore", "-q", "latest", "--target", str(target)], env=self.env())

    def check(self):
        return sh([self.bin, "check", "-q", "--read-data"], env=self.env())


class CairnKeyFile(Cairn):
    """cairn opened with a generated key file (`cairn key add --generate`), the way an
    unattended backup runs: the secret has 256 bits of entropy, so its key file needs
    no password stretching. The password key made by `init` stays, unused."""
    name = "cairn-keyfile"

    def key(self):
        return Path(str(self.side) + ".key")

    def env(self):
        return dict(os.environ, **EXTRA_ENV, CAIRN_REPOSITORY=str(self.repo), CAIRN_PASSWORD_FILE=str(self.key()))

    def init(self):
        if self.key().exists():
            self.key().unlink()  # left by an earlier run
        setup = dict(os.environ, **EXTRA_ENV, CAIRN_REPOSITORY=str(self.repo), CAIRN_PASSWORD=PASSWORD)
        sh([self.bin, "init", "-q"], env=setup)
        sh([self.bin, "key", "add", "-q", "--generate", str(self.key())], env=setup)


class Restic(Tool):
    name = "restic"

    def env(self):
        return dict(os.environ, **EXTRA_ENV, RESTIC_REPOSITORY=str(self.repo), RESTIC_PASSWORD=PASSWORD)

    def init(self):
        sh(["restic", "init", "-q"], env=self.env())

    def backup(self, src):
        return sh(["restic", "backup", "-q", "--host", "bench", str(src)], env=self.env())

    def restore(self, src, target):
        return sh(["restic", "restore", "-q", "latest", "--target", str(target)], env=self.env())

    def check(self):
        return sh(["restic", "check", "-q", "--read-data"], env=self.env())


class Rustic(Tool):
    name = "rustic"

    def env(self):
        return dict(os.environ, RUSTIC_REPOSITORY=str(self.repo), RUSTIC_PASSWORD=PASSWORD)

    def init(self):
        sh(["rustic", "init"], env=self.env())

    def backup(self, src):
        return sh(["rustic", "backup", "--host", "bench", str(src)], env=self.env())

    def restore(self, src, target):
        return sh(["rustic", "restore", "latest", str(target)], env=self.env())

    def check(self):
        return sh(["rustic", "check", "--read-data"], env=self.env())


class Bupstash(Tool):
    name = "bupstash"

    def env(self):
        return dict(os.environ, BUPSTASH_REPOSITORY=str(self.repo), BUPSTASH_KEY=str(self.repo) + ".key")

    def init(self):
        key = Path(str(self.repo) + ".key")
        if key.exists():
            key.unlink()  # left by an earlier run
        sh(["bupstash", "init"], env=self.env())
        sh(["bupstash", "new-key", "-o", str(key)], env=self.env())

    def backup(self, src):
        return sh(["bupstash", "put", str(src)], env=self.env())

    def restore(self, src, target):
        target.mkdir(parents=True, exist_ok=True)
        ids = subprocess.run(["bupstash", "list", "--format=jsonl1"], env=self.env(), check=True,
                             stdout=subprocess.PIPE, text=True).stdout.split("\n")
        last = [l for l in ids if l.strip()][-1]
        import json
        return sh(["bupstash", "restore", "--into", str(target), "id=" + json.loads(last)["id"]], env=self.env())

    def check(self):
        # bupstash has no full-data verification command; reading every item
        # back (get) is its equivalent, and restore above measures that already.
        return None


class Borg(Tool):
    name = "borg"

    def env(self):
        return dict(os.environ, BORG_PASSPHRASE=PASSWORD, BORG_REPO=str(self.repo),
                    BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes", BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")

    def init(self):
        sh(["borg", "init", "-e", "repokey-blake2", str(self.repo)], env=self.env())

    def backup(self, src):
        self.n = getattr(self, "n", 0) + 1
        return sh(["borg", "create", "--compression", "zstd,3", f"::a{self.n}", str(src)], env=self.env())

    def restore(self, src, target):
        target.mkdir(parents=True, exist_ok=True)
        return sh(["borg", "extract", f"::a{self.n}"], env=self.env(), cwd=target)

    def check(self):
        return sh(["borg", "check", "--verify-data"], env=self.env())


def limit(src):
    os.sync()
    out = subprocess.run([str(TARGET / "release" / "examples" / "limit"), str(src)],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return float(out.split()[1])


def drop_caches():
    """Empties the page cache (root only), so that a restore or check reads the
    repository from the device, as it would days after the backup. Without this,
    a tool that wrote its packs through the page cache would restore from memory
    while one that bypassed it (cairn) reads the disk. Returns whether it could."""
    global DROPPED
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        DROPPED = True
    except OSError:
        DROPPED = False
    return DROPPED


DROPPED = False


def disk_write(n_bytes, work):
    """Seconds to write n_bytes as 16 MiB files, each fsynced, as packs are
    written: what storing a first backup costs on this machine by itself. Uses
    O_DIRECT where the filesystem takes it (the cheaper way, which cairn uses)."""
    import mmap
    d = work / "disk-write"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    block = mmap.mmap(-1, 16 << 20)  # page-aligned, as O_DIRECT needs
    block.write(random.Random(1).randbytes(16 << 20))
    direct = getattr(os, "O_DIRECT", 0)
    os.sync()
    start = time.monotonic()
    i = 0
    while n_bytes > 0:
        n = min(n_bytes, len(block))
        path = d / f"f{i}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | direct, 0o600)
            os.write(fd, memoryview(block)[:(n + 4095) // 4096 * 4096])
            os.ftruncate(fd, n)
        except OSError:
            direct = 0
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, memoryview(block)[:n])
        os.fsync(fd)
        os.close(fd)
        n_bytes -= n
        i += 1
    secs = time.monotonic() - start
    block.close()
    shutil.rmtree(d)
    return secs


def run_dataset(tool_cls, name, data, work, results, run):
    repo = work / f"repo-{tool_cls.name}-{name}-{run}"
    target = restore_target(work, tool_cls.name, name, run)
    for p in (repo, target):
        if p.exists():
            shutil.rmtree(p)
    t = tool_cls(repo)
    t.init()
    rec = lambda op, v: results.setdefault((name, op, tool_cls.name), []).append(v)
    src = data / name if name != "checkpoint" else data / "checkpoint" / "v1"
    warm(src)
    secs, rss, _ = t.backup(src)
    rec("first backup (s)", secs)
    rec("peak RSS first backup (MiB)", rss / 1024)
    warm(src)
    secs, rss, out = t.backup(src)
    rec("unchanged re-backup (s)", secs)
    rec("peak RSS unchanged re-backup (MiB)", rss / 1024)
    if tool_cls is Cairn:
        import json
        summary = [json.loads(l) for l in out.splitlines() if '"summary"' in l][-1]
        if summary.get("index_blobs"):
            rec("in-memory index (bytes/blob)", summary["index_memory_bytes"] / summary["index_blobs"])
    if name == "checkpoint":
        # The second version replaces the first in place, as a training run would.
        before = du(repo)
        shutil.copyfile(data / "checkpoint" / "v2" / "model.ckpt", src / "model.ckpt")
        warm(src)
        secs, rss, _ = t.backup(src)
        rec("changed checkpoint backup (s)", secs)
        rec("changed checkpoint added (MiB)", (du(repo) - before) / (1 << 20))
        shutil.copyfile(data / "checkpoint" / "v1-pristine.ckpt", src / "model.ckpt")
    if name in ("usr", "many"):
        # The size before the churn is the one compared: the churn's snapshot is
        # the one restored and checked below, though.
        before = du(repo)
        rec("repository size (MiB)", before / (1 << 20))
        churn = Churn(src, work / "churn-held", name)
        try:
            warm(src)
            secs, rss, _ = t.backup(src)
            rec("backup after churn (s)", secs)
            rec("churn added (MiB)", (du(repo) - before) / (1 << 20))
        finally:
            churn.undo()
    else:
        rec("repository size (MiB)", du(repo) / (1 << 20))
    drop_caches()
    secs, rss, _ = t.restore(src, target)
    rec("full restore (s)", secs)
    rec("peak RSS restore (MiB)", rss / 1024)
    drop_caches()
    checked = t.check()
    if checked is not None:
        rec("check --read-data (s)", checked[0])
    shutil.rmtree(repo)
    shutil.rmtree(target)


def settle(g):
    """Waits (up to 20 s) until the Garage server is idle: background work
    left by one command (metadata table updates) should not be charged to the
    next one."""
    deadline = time.monotonic() + 20
    last = g.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = g.cpu_seconds()
        if now - last < 0.02:
            return
        last = now


def run_garage_dataset(tool_cls, name, data, work, results, run, g, requests):
    """run_dataset's steps against a prefix of the Garage bucket: first backup,
    full restore and check --read-data, each with its wall time, peak RSS, the
    client's and the server's CPU time and the S3 requests it made."""
    prefix = f"{tool_cls.name}-{name}-{run}"
    side = work / f"s3-{prefix}"
    target = work / f"s3-restore-{prefix}"
    caches = [work / "cache-cairn", work / "cache-restic"]
    for p in [target] + caches:
        if p.exists():
            shutil.rmtree(p)
    t = tool_cls(g.location(prefix), side)
    t.init()
    rec = lambda op, v: results.setdefault((name, op, tool_cls.name), []).append(v)

    def measured(step, fn):
        settle(g)
        before_cpu, before_req = g.cpu_seconds(), g.s3_requests()
        secs, rss, _ = fn()
        after_cpu, after_req = g.cpu_seconds(), g.s3_requests()
        made = {k: v - before_req.get(k, 0) for k, v in after_req.items() if v - before_req.get(k, 0)}
        rec(f"{step} (s)", secs)
        rec(f"peak RSS {step} (MiB)", rss / 1024)
        rec(f"client CPU {step} (s)", LAST_CPU)
        rec(f"Garage CPU {step} (s)", after_cpu - before_cpu)
        rec(f"S3 requests {step}", sum(made.values()))
        requests[(name, step, tool_cls.name)] = made

    src = data / name if name != "checkpoint" else data / "checkpoint" / "v1"
    warm(src)
    measured("first backup", lambda: t.backup(src))
    objects = g.list(prefix)
    rec("repository size (MiB)", sum(size for _, size in objects) / (1 << 20))
    rec("objects in repository", len(objects))
    drop_caches()
    measured("full restore", lambda: t.restore(src, target))
    if du(target) != du(src):
        print(f"WARNING: {tool_cls.name} restored {du(target)} bytes of {name}'s {du(src)}", flush=True)
    drop_caches()
    measured("check --read-data", t.check)
    g.delete_prefix(prefix)
    for p in [target, side.with_name(side.name + ".key")] + caches:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def main_garage(args, data):
    """--garage: one single-node Garage for the whole run; cairn (both ways of
    opening) and restic on the same datasets, each under its own prefix."""
    import garage
    global EXTRA_ENV
    if args.with_rustic or args.with_bupstash:
        sys.exit("--garage runs cairn and restic only (borg, and bupstash, have no S3 backend)")
    work = Path(args.workdir)
    load_start = os.getloadavg()[0]
    started = time.monotonic()
    g = garage.Garage(work)
    try:
        EXTRA_ENV = dict(g.env(), CAIRN_CACHE_DIR=str(work / "cache-cairn"),
                         RESTIC_CACHE_DIR=str(work / "cache-restic"))
        tools = [Cairn, CairnKeyFile, Restic]
        if args.only:
            tools = [t for t in tools if t.name in args.only.split(",")]
        results, requests = {}, {}
        datasets = ["small", "checkpoint", "logs"]
        for run in range(args.runs):
            for name in datasets:
                for tool in tools:
                    print(f"run {run + 1}/{args.runs}: {name} with {tool.name} on Garage", flush=True)
                    run_garage_dataset(tool, name, data, work, results, run, g, requests)
                src = data / name if name != "checkpoint" else data / "checkpoint" / "v1"
                warm(src)
                results.setdefault((name, "first backup (s)", "limit"), []).append(limit(src))
        setup = {"garage": g.version(), "db": garage.DB_ENGINE, "load": (load_start, os.getloadavg()[0]),
                 "minutes": (time.monotonic() - started) / 60}
    finally:
        g.stop()
        g.remove()
    import json
    raw = work / "garage-results.json"
    raw.write_text(json.dumps([{"dataset": d, "measure": op, "tool": n, "runs": v}
                               for (d, op, n), v in results.items()], indent=1))
    print(f"every run's figures: {raw}", flush=True)
    report_garage(results, requests, datasets, [t.name for t in tools], args, setup)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small datasets, for a smoke run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/cairn-bench")
    ap.add_argument("--with-rustic", action="store_true")
    ap.add_argument("--with-bupstash", action="store_true")
    ap.add_argument("--only", help="comma-separated tool names to run (e.g. cairn,cairn-keyfile); "
                    "the report then has no columns for the others")
    ap.add_argument("--garage", action="store_true",
                    help="cairn and restic against a single-node Garage on loopback (object storage)")
    ap.add_argument("--out", default=str(ROOT / "tools" / "bench" / "RESULTS.md"))
    ap.add_argument("--datasets", default="small,checkpoint,logs,usr,many",
                    help="comma-separated datasets to run (default: all five)")
    args = ap.parse_args()
    ensure_tools(args)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    data = generate(work, args.quick)
    generate_more(data, args.quick)
    pristine = data / "checkpoint" / "v1-pristine.ckpt"
    if not pristine.exists():
        shutil.copyfile(data / "checkpoint" / "v1" / "model.ckpt", pristine)
    if args.garage:
        return main_garage(args, data)
    tools = [Cairn, CairnKeyFile, Restic, Borg]
    if args.with_rustic:
        tools.append(Rustic)
    if args.with_bupstash:
        tools.append(Bupstash)
    if args.only:
        wanted = args.only.split(",")
        tools = [t for t in tools if t.name in wanted]
    results = {}
    datasets = args.datasets.split(",")
    for run in range(args.runs):
        for name in datasets:
            for tool in tools:
                print(f"run {run + 1}/{args.runs}: {name} with {tool.name}", flush=True)
                run_dataset(tool, name, data, work, results, run)
            src = data / name if name != "checkpoint" else data / "checkpoint" / "v1"
            warm(src)
            results.setdefault((name, "first backup (s)", "limit"), []).append(limit(src))
            repo_mib = statistics.median(results[(name, "repository size (MiB)", "cairn")])
            results.setdefault((name, "write the repository's bytes (s)", "disk"), []).append(
                disk_write(int(repo_mib * (1 << 20)), work))
    rewritten = (data / "checkpoint" / "rewritten").read_text().split()
    report(results, datasets, [t.name for t in tools], args, rewritten)
    mnt = work / "restore-tmpfs"
    if os.path.ismount(mnt):
        subprocess.run(["umount", str(mnt)], check=False)


def report(results, datasets, names, args, rewritten):
    med = {k: statistics.median(v) for k, v in results.items()}
    peers = [n for n in names if not n.startswith("cairn")] + ["limit"]
    lines = [
        "# cairn benchmark",
        "",
        f"`python3 tools/bench/bench.py {' '.join(sys.argv[1:])}` on "
        f"{os.cpu_count()} cores; medians of {args.runs} runs. Ratios below 1 mean cairn is faster "
        "(or smaller). Versions: " + ", ".join(versions()) + ".",
        "",
    ]
    if "usr" in datasets:
        usr = Path(args.workdir) / "data" / "usr"
        files = [p for p in usr.rglob("*") if p.is_file() and not p.is_symlink()]
        lines += [
            f"The real tree (`usr`): {len(files)} files, "
            f"{sum(p.stat().st_size for p in files) / (1 << 20):.0f} MiB, copied from this machine's "
            + ", ".join(f"`{p}`" for p in REAL_TREE if Path(p).is_dir()) + ". The churn adds one "
            "file for every tenth and moves every twentieth away (`Churn` in bench.py).",
            "",
        ]
    lines += [
        f"The changed checkpoint rewrites {rewritten[0]} regions, {int(rewritten[1]) >> 20} MiB in all.",
        "",
        ("The page cache was dropped before every restore and check, so each tool read its repository "
         "from disk" + (", and restored into a tmpfs (see `restore_target` in bench.py)."
                        if os.geteuid() == 0 else ".") if DROPPED else
         "The page cache could not be dropped (not root): restores and checks of tools that write "
         "through the page cache read from memory, cairn's from disk."),
        "",
        "| dataset | measure | " + " | ".join(names) + " | limit | disk | "
        + " | ".join(f"cairn/{o}" for o in peers) + " |",
        "|---|---|" + "---|" * (len(names) + 2 + len(peers)),
    ]
    ops = []
    for (d, op, _t) in results:
        if (d, op) not in ops:
            ops.append((d, op))
    for d, op in ops:
        row = [d, op]
        for n in names + ["limit", "disk"]:
            v = med.get((d, op, n))
            row.append("" if v is None else f"{v:.2f}")
        c = med.get((d, op, "cairn"))
        for other in peers:
            o = med.get((d, op, other))
            row.append(f"{c / o:.2f}" if c is not None and o else "")
        lines.append("| " + " | ".join(row) + " |")
    if CairnKeyFile.name in names:
        kf = CairnKeyFile.name
        lines += [
            "",
            f"## {kf}: cairn opened with a generated key file",
            "",
            "The `cairn` column opens the repository with a password, as `init` sets it up: every "
            "command first derives the key with Argon2id (by default 64 MiB, 3 passes, 4 lanes), "
            "and that is included above. An unattended backup would rather use a key file made by "
            "`cairn key add --generate`: a random 256-bit secret, which needs no stretching. These "
            "are the same steps opened that way.",
            "",
            f"| dataset | measure | {kf} | " + " | ".join(f"{kf}/{o}" for o in peers) + " |",
            "|---|---|---|" + "---|" * len(peers),
        ]
        for d, op in ops:
            c = med.get((d, op, kf))
            if c is None or "index" in op:
                continue
            row = [d, op, f"{c:.2f}"]
            for other in peers:
                o = med.get((d, op, other))
                row.append(f"{c / o:.2f}" if o else "")
            lines.append("| " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n"
    # The object-storage section (--garage) is another run's, and the targets
    # section is written by hand about a run: both kept.
    kept = ""
    for heading in (TARGETS_HEADING, GARAGE_HEADING):
        _, section, _ = split_section(args.out, heading)
        if section:
            kept += "\n" + section
    Path(args.out).write_text(text + kept)
    print(text)


GARAGE_HEADING = "## Object storage (single-node Garage on loopback)"
TARGETS_HEADING = "## Against the targets (written by hand)"


def split_section(path, heading):
    """(before, section, after) of a file around the section under heading,
    which runs to the next heading of its level; section is "" if absent."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return "", "", ""
    start = text.find("\n" + heading + "\n")
    if start < 0:
        return text, "", ""
    start += 1
    end = text.find("\n## ", start + len(heading))
    end = len(text) if end < 0 else end + 1
    return text[:start], text[start:end], text[end:]


def report_garage(results, requests, datasets, names, args, setup):
    med = {k: statistics.median(v) for k, v in results.items()}
    peers = [n for n in names if not n.startswith("cairn")] + ["limit"]
    head = names[0] if names else "cairn"
    steps = ["first backup", "full restore", "check --read-data"]
    main_ops = []
    for step in steps:
        main_ops += [f"{step} (s)", f"peak RSS {step} (MiB)"]
        if step == "first backup":
            main_ops += ["repository size (MiB)", "objects in repository"]
    fmt = lambda op, v: f"{v:.0f}" if op.startswith(("objects", "S3 requests")) else f"{v:.2f}"
    version = setup["garage"].split()[1].split(":")[-1] if len(setup["garage"].split()) > 1 else setup["garage"]
    lines = [
        GARAGE_HEADING,
        "",
        f"`python3 tools/bench/bench.py --garage{' --quick' if args.quick else ''}"
        f"{' --only ' + args.only if args.only else ''} --runs {args.runs}` on "
        f"{os.cpu_count()} cores; medians of {args.runs} runs. Ratios below 1 mean cairn is faster "
        "(or smaller). Versions: "
        + ", ".join([v for v in versions() if v.startswith("restic")] + [f"Garage {version}"]) + ".",
        "",
        f"Setup: one Garage {version} node started by the benchmark (replication factor 1, "
        f"`db_engine = \"{setup['db']}\"`, block compression off since both tools send encrypted "
        "data, Garage's other defaults: 1 MiB blocks, no fsync of data or metadata), its metadata "
        "and data directories in the work directory, on the same disk as the sources and restores. "
        "The tools reach it over loopback HTTP (`s3:http://127.0.0.1:PORT/bench/PREFIX`, path-style, "
        "signature v4), each repository under its own prefix of one bucket, deleted after its run. "
        "cairn keeps up to 8 requests in flight, restic its default 5 connections. Both keep their "
        "local caches (index, snapshots, trees) in the work directory, emptied after each run. "
        "No network latency or bandwidth limit is simulated: the client and the server share the "
        f"machine's {os.cpu_count()} cores, so bulk transfers are bounded by CPU (the client's "
        "hashing, compression and encryption plus the server's HTTP, checksums and block writes), "
        "and sequences of small requests by loopback round trips. The `limit` column is the "
        "client's share alone (read, chunk, hash, compress, encrypt on all cores).",
        "",
        f"The run took {setup['minutes']:.0f} minutes; the 1-minute load average was "
        f"{setup['load'][0]:.1f} when it started and {setup['load'][1]:.1f} when it ended (other work on "
        "the machine adds to the figures' spread).",
        "",
        ("The page cache was dropped before every restore and check, so each tool's repository "
         "(Garage's block files) was read from disk." if DROPPED else
         "The page cache could not be dropped (not root): Garage served restores and checks from "
         "memory."),
        "",
        "| dataset | measure | " + " | ".join(names) + " | limit | "
        + " | ".join(f"{head}/{o}" for o in peers) + " |",
        "|---|---|" + "---|" * (len(names) + 1 + len(peers)),
    ]
    for d in datasets:
        for op in main_ops:
            if not any((d, op, n) in med for n in names):
                continue
            row = [d, op] + ["" if med.get((d, op, n)) is None else fmt(op, med[(d, op, n)])
                             for n in names + ["limit"]]
            c = med.get((d, op, head))
            for other in peers:
                o = med.get((d, op, other))
                row.append(f"{c / o:.2f}" if c is not None and o else "")
            lines.append("| " + " | ".join(row) + " |")
    kf = CairnKeyFile.name
    if kf in names and head != kf:
        lines += [
            "",
            f"### {kf}: cairn opened with a generated key file",
            "",
            "The same steps with the repository opened by a key file from `cairn key add --generate` "
            "(no Argon2id derivation), as an unattended backup would.",
            "",
            f"| dataset | measure | {kf} | " + " | ".join(f"{kf}/{o}" for o in peers) + " |",
            "|---|---|---|" + "---|" * len(peers),
        ]
        for d in datasets:
            for op in main_ops:
                c = med.get((d, op, kf))
                if c is None or op.startswith(("objects", "repository")):
                    continue
                row = [d, op, fmt(op, c)]
                for other in peers:
                    o = med.get((d, op, other))
                    row.append(f"{c / o:.2f}" if o else "")
                lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "### Where the time goes",
        "",
        "Per step: wall time (median, and the fastest and slowest run), the client's CPU time "
        "(user + system, GNU time) and the Garage server's over the same interval (from /proc), "
        "medians, and the S3 requests the server counted (its metrics; the last run's, by kind). "
        "Client plus server CPU time near twice the wall time means both cores were busy; well "
        "below it, the step was waiting.",
        "",
        "| dataset | step | tool | wall (s) | wall min–max (s) | client CPU (s) | Garage CPU (s) | requests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in datasets:
        for step in steps:
            for n in names:
                if (d, f"{step} (s)", n) not in med:
                    continue
                made = requests.get((d, step, n), {})
                kinds = ", ".join(f"{k} {v}" for k, v in sorted(made.items(), key=lambda kv: -kv[1]))
                walls = results[(d, f"{step} (s)", n)]
                lines.append(f"| {d} | {step} | {n} | {med[(d, f'{step} (s)', n)]:.2f} | "
                             f"{min(walls):.2f}–{max(walls):.2f} | "
                             f"{med[(d, f'client CPU {step} (s)', n)]:.2f} | "
                             f"{med[(d, f'Garage CPU {step} (s)', n)]:.2f} | "
                             f"{sum(made.values())}: {kinds} |")
    section = "\n".join(lines) + "\n"
    before, _, after = split_section(args.out, GARAGE_HEADING)
    if before and not before.endswith("\n\n"):
        before = before.rstrip("\n") + "\n\n"
    Path(args.out).write_text(before + section + ("\n" + after if after else ""))
    print(section)


def versions():
    out = []
    for cmd in (["restic", "version"], ["borg", "--version"], ["rustic", "--version"], ["bupstash", "version"]):
        try:
            out.append(subprocess.run(cmd, stdout=subprocess.PIPE, text=True).stdout.strip().split(" compiled")[0])
        except OSError:
            pass  # not installed: not run either
    return out


if __name__ == "__main__":
    main()
