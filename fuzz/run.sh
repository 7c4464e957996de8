#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS (default 30) each, as
# many at a time as FUZZ_JOBS (default 2), and fails if any of them crashes,
# leaks past its memory limit or hangs, naming the target and the input that did
# it. Usage: bash fuzz/run.sh [SECONDS] [TARGET...]
#
# Each target starts from the committed corpus (minimized/<target>) and the
# hand-made seeds (seeds/<target>); what it finds goes to corpus/<target>, which
# is local (see minimize.sh to fold it into minimized/). Needs the nightly
# toolchain and cargo-fuzz (.ci/run installs both).
set -euo pipefail
cd "$(dirname "$0")"
# The fuzz build has its own directory whatever the caller's CARGO_TARGET_DIR.
export CARGO_TARGET_DIR="$PWD/target"
secs="${1:-30}"
shift || true
jobs="${FUZZ_JOBS:-2}"
targets="${*:-$(cargo +nightly fuzz list)}"

# Release, as the build directory is seeded; FUZZ_BUILD="-O -a" adds debug
# assertions and overflow checks (worth it for long local runs, but a full
# rebuild the first time).
read -r -a build <<<"${FUZZ_BUILD:--O}"
cargo +nightly fuzz build "${build[@]}"
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin="target/$triple/release"

# Per-target libFuzzer options. Every target: -timeout (one input running that
# long is a hang), -rss_limit_mb (and with it the malloc limit: one allocation
# that large is a failure too).
options() {
    case "$1" in
        # Restores, checks and prunes a repository per input: slower, and it
        # must stay well within the limits.
        # Structure-aware targets read many bytes per input: without
        # -len_control=0 libFuzzer keeps a slow target's inputs a few bytes long.
        hostile_repo) echo "-timeout=20 -rss_limit_mb=1024 -len_control=0 -max_len=2048" ;;
        backend_names) echo "-timeout=20 -rss_limit_mb=2048 -len_control=0 -max_len=512" ;;
        *) echo "-timeout=20 -rss_limit_mb=2048" ;;
    esac
}

mkdir -p logs
run() {
    local t="$1" log="logs/$1.log"
    mkdir -p "corpus/$t" "artifacts/$t" "minimized/$t" "seeds/$t"
    # shellcheck disable=SC2046
    if "$bin/$t" "corpus/$t" "minimized/$t" "seeds/$t" $(options "$t") \
        -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        >"$log" 2>&1; then
        local runs
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
        echo "$t: ok, $runs runs"
        return 0
    fi
    local artifact
    artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -1 | sed 's/^Test unit written to //')
    echo "FUZZ FAILURE in target $t: $(grep -m1 -oE 'ERROR: libFuzzer: [a-z-]+|panicked at .*' "$log" || echo 'see the log')"
    if [ -n "$artifact" ]; then
        echo "  input: fuzz/$artifact"
        echo "  reproduce: cargo +nightly fuzz run -O $t fuzz/$artifact"
    fi
    echo "  log: fuzz/$log; the message:"
    grep -A4 -m1 'panicked at\|^==[0-9]*==ERROR' "$log" | sed 's/^/    /' || true
    grep -m1 -A2 'SUMMARY' "$log" | sed 's/^/    /' || true
    return 1
}

status=0
set -- $targets
while [ $# -gt 0 ]; do
    pids=()
    for _ in $(seq "$jobs"); do
        [ $# -gt 0 ] || break
        run "$1" & pids+=($!)
        shift
    done
    for p in "${pids[@]}"; do
        wait "$p" || status=1
    done
done
if [ $status -ne 0 ]; then
    echo "fuzzing failed: see FUZZ FAILURE above; fuzz/README.md says how to turn a crash into a regression test"
fi
exit $status
