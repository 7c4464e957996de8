#!/usr/bin/env bash
# The README's quick start: build cairn, back up this project's sources into a new
# repository, add a key file, change a file, back up again with the key file,
# restore with verification, and compare.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --quiet
cairn="$PWD/target/release/cairn"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CAIRN_REPOSITORY="$work/repo"
export CAIRN_PASSWORD="quick start password"

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
