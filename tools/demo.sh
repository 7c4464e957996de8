#!/usr/bin/env bash
# The README's quick start: build cairn, back up this project's sources into a new
# repository, add a key file, change a file, back up again with the key file,
# restore with verification, and compare; then run a backup plan that backs the
# sources up into that repository, copies them to a second (cold) one, checks
# both and rehearses a restore from each.
set -euo pipefail
cd "$(dirname "$0")/.."

# The default (dev) profile: its dependencies are built optimized and are the same
# build `cargo test` uses afterwards, so the two quick-start commands compile them once.
# cargo shows its progress; the target directory is cargo's own choice (CARGO_TARGET_DIR
# or the build.target-dir setting are honoured).
echo "== cargo build (first time: about 2 minutes on 2 cores)"
cargo build --locked --bin cairn
target_dir=$(cargo metadata --locked --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
cairn="$target_dir/debug/cairn"
[ -x "$cairn" ] || { echo "demo: built cairn not found at $cairn" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CAIRN_REPOSITORY="$work/repo"
export CAIRN_PASSWORD="quick start password"
# The cache (and what cairn remembers of each repository) in the scratch dir too.
export CAIRN_CACHE_DIR="$work/cache"

echo "== cairn init ($CAIRN_REPOSITORY)"
"$cairn" init
# A copy of the sources, so that the demo can change a file without touching them.
mkdir -p "$work/data"
cp -r src tests format-spec Cargo.toml Cargo.lock "$work/data/"
echo
echo "== cairn backup $work/data (first)"
"$cairn" backup "$work/data"
echo
echo "== cairn key add --generate (a key file for unattended backups)"
"$cairn" key add --generate "$work/repo.key"
echo
echo "== cairn backup (again, one file changed, opened with the key file)"
echo "// changed $(date)" >> "$work/data/src/lib.rs"
env -u CAIRN_PASSWORD CAIRN_PASSWORD_FILE="$work/repo.key" "$cairn" backup "$work/data"
echo
echo "== cairn snapshots"
"$cairn" snapshots
echo
echo "== cairn restore latest --verify"
"$cairn" restore "latest:$work/data" --target "$work/restored" --verify
diff -r "$work/data" "$work/restored"
echo
echo "restored tree is identical to the source"
echo
echo "== cairn plan run (a plan: the sources hourly, copied to a cold repository)"
printf 'cold copy password\n' > "$work/cold.pw"
chmod 600 "$work/cold.pw"
env -u CAIRN_PASSWORD "$cairn" -r "$work/cold" --password-file "$work/cold.pw" init --quiet
cat > "$work/cairn.toml" <<'PLAN'
[repository.hot]
path = "repo"
password_file = "repo.key"

[repository.cold]
path = "cold"
password_file = "cold.pw"

[class.sources]
paths = ["data"]
every = "1h"
keep = { hourly = 24, daily = 7 }
repository = "hot"
copy_to = ["cold"]
check = { every = "1d", read_data_subset = "10%" }
drill = { every = "7d", files = 20 }
PLAN
"$cairn" plan validate --plan "$work/cairn.toml"
"$cairn" plan run --plan "$work/cairn.toml"
echo
echo "== cairn plan status"
"$cairn" plan status --plan "$work/cairn.toml"
