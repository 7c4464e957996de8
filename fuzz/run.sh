#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, two at a time.
# Needs the nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
# Crashes land in fuzz/artifacts/<target>/; rerun one with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
targets=$(cargo +nightly fuzz list)
cargo +nightly fuzz build -O
status=0
run() {
    local t="$1"
    mkdir -p "corpus/$t"
    if cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"logs/$t.log" 2>&1; then
        echo "$t: ok ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$') runs)"
    else
        echo "$t: FAILED, see fuzz/logs/$t.log"
        return 1
    fi
}
mkdir -p logs
set -- $targets
while [ $# -gt 0 ]; do
    run "$1" & a=$!
    b=""
    if [ $# -gt 1 ]; then run "$2" & b=$!; fi
    wait $a || status=1
    if [ -n "$b" ]; then wait $b || status=1; fi
    shift; [ $# -gt 0 ] && shift
done
exit $status
