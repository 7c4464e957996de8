#!/bin/sh
# Peak RSS of `cairn restore` by number of files: runs the integration test
# restore::a_million_files_restore_in_bounded_memory (which stores a generated
# snapshot of empty and tiny files, restores it with a real `cairn` process and
# reads that process's peak RSS, VmHWM, from /proc) at each size given, by
# default 10k, 100k and 1M files. It restores into /dev/shm where there is one
# (else $TMPDIR), which needs about one inode per file.
set -eu
cd "$(dirname "$0")/../.."
[ $# -gt 0 ] || set -- 10000 100000 1000000
for n in "$@"; do
    CAIRN_TEST_RESTORE_FILES=$n cargo test -q --test it \
        restore::a_million_files_restore_in_bounded_memory -- --nocapture 2>&1 |
        grep '^restore of'
done
