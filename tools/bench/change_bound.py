#!/usr/bin/env python3
"""Checks the changed-checkpoint target exactly: backing up the second version of
the benchmark's checkpoint must add at most the rewritten bytes plus two chunks
per rewritten region, the chunks being the first version's chunks that hold each
region's first and last changed byte.

Run bench.py once first (it generates the data). Each trial uses a new repository,
so a new chunker seed and new chunk boundaries.

Usage: python3 tools/bench/change_bound.py [TRIALS] [WORKDIR]"""
import json, os, subprocess, sys, shutil
from pathlib import Path
ROOT = Path(__file__).resolve().parents[2]
C = str(ROOT / "target" / "release" / "cairn")
WORK = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/cairn-bench")
data = WORK / "data" / "checkpoint"
v1, v2 = data / "v1-pristine.ckpt", data / "v2" / "model.ckpt"
# differing byte ranges, at 4 KiB granularity
regions = []
B = 1 << 12
with open(v1, "rb") as a, open(v2, "rb") as b:
    off = 0; cur = None
    while True:
        x, y = a.read(1 << 22), b.read(1 << 22)
        if not x: break
        for i in range(0, len(x), B):
            d = x[i:i+B] != y[i:i+B]
            if d and cur is None: cur = off + i
            if not d and cur is not None: regions.append((cur, off + i)); cur = None
        off += len(x)
    if cur is not None: regions.append((cur, off))
def run(*args, env):
    return subprocess.run([C, *args], env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
def chunks(env, snap, d):
    tree = json.loads(run("cat", "tree", f"{snap}:{d}", env=env))
    node = [n for n in tree["nodes"] if n["name"] in ("model.ckpt", [ord(c) for c in "model.ckpt"])][0]
    return node["content"]
failed = False
for trial in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    repo = str(WORK / "bound-repo"); shutil.rmtree(repo, ignore_errors=True)
    src = WORK / "bound-src"; shutil.rmtree(src, ignore_errors=True); src.mkdir()
    env = dict(os.environ, CAIRN_REPOSITORY=repo, CAIRN_PASSWORD="x")
    run("init", "-q", "--kdf-memory", "1024", "--kdf-iterations", "1", env=env)
    shutil.copyfile(v1, src / "model.ckpt"); run("backup", "-q", str(src), env=env)
    shutil.copyfile(v2, src / "model.ckpt"); run("backup", "-q", str(src), env=env)
    sizes = {}
    for f in Path(repo, "index").iterdir():
        for p in json.loads(run("cat", "index", f.name, env=env))["packs"]:
            for bl in p["blobs"]:
                sizes[bl[1] if isinstance(bl, list) else bl["id"]] = bl[4] if isinstance(bl, list) else bl["raw_length"]
    c1, c2 = chunks(env, "latest~1", str(src)), chunks(env, "latest", str(src))
    old = set(c1)
    def spans(c):
        out, o = [], 0
        for i in c: out.append((o, o + sizes[i], i)); o += sizes[i]
        return out
    s1, s2 = spans(c1), spans(c2)
    new = [(a, b) for a, b, i in s2 if i not in old]
    total_new = sum(b - a for a, b in new)
    bound = 0
    for (ra, rb) in regions:
        # the v1 chunks that contain the first and the last changed byte
        first = next(b - a for a, b, _ in s1 if a <= ra < b)
        last = next(b - a for a, b, _ in s1 if a <= rb - 1 < b)
        bound += (rb - ra) + first + last
    print(f"trial {trial}: {len(regions)} regions, {sum(b-a for a,b in regions)/2**20:.2f} MiB rewritten; "
          f"new chunks {len(new)} = {total_new/2**20:.2f} MiB; bound (rewritten + the 2 boundary chunks per region) "
          f"{bound/2**20:.2f} MiB: {'OK' if total_new <= bound else 'EXCEEDED'}")
    if total_new > bound:
        failed = True
    shutil.rmtree(repo)
    shutil.rmtree(src)
sys.exit(1 if failed else 0)
