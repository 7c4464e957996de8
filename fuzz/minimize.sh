#!/usr/bin/env bash
# Folds what fuzzing found (the local corpus/<target>) into the committed corpus
# (minimized/<target>) with `cargo fuzz cmin`: a subset of both that keeps all
# their edge coverage. Usage: bash fuzz/minimize.sh [TARGET...]
# Then check the size (`du -sb fuzz/minimized`: keep it under about 2 MB) and
# commit fuzz/minimized.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="$PWD/target"
targets="${*:-$(cargo +nightly fuzz list)}"
cargo +nightly fuzz build -O
for t in $targets; do
    work=$(mktemp -d)
    for d in "minimized/$t" "corpus/$t"; do
        if [ -d "$d" ]; then
            find "$d" -maxdepth 1 -type f -exec cp -t "$work" {} +
        fi
    done
    # Edge coverage only (-use_counters=0: not every hit count of every edge),
    # and no input over 4 KiB: the committed corpus must stay small.
    cargo +nightly fuzz cmin -O "$t" "$work" -- -use_counters=0 -max_len=4096 -timeout=20 \
        -rss_limit_mb=2048 \
        >"logs/cmin-$t.log" 2>&1 || { echo "$t: cmin failed, see fuzz/logs/cmin-$t.log"; exit 1; }
    rm -rf "minimized/$t"
    mkdir -p "minimized/$t"
    find "$work" -maxdepth 1 -type f -exec mv -t "minimized/$t" {} +
    rm -rf "$work"
    echo "$t: $(find "minimized/$t" -type f | wc -l) inputs, $(du -sb "minimized/$t" | cut -f1) bytes"
done
echo "total: $(du -sb minimized | cut -f1) bytes in $(find minimized -type f | wc -l) files"
