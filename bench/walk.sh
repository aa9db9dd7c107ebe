#!/usr/bin/env bash
# bench/walk.sh — the scan of a source that is slow to list (issue 23): a folder tree served by
# a FUSE passthrough that waits BENCH_DELAY_MS per call (bench/slowfs.py), as a network
# filesystem waits on round trips, scanned with the walk alone (BOOKFERRY_WALK_THREADS=0) and
# with threads listing ahead (the default on FUSE and network filesystems), interleaved, each
# run into a fresh state DB. Also the same pair on the local filesystem. Prints the medians and
# the ratio. Needs root (mount), /dev/fuse and python3's mfusepy (`pip install mfusepy`).
#
# Environment (defaults): BENCH_FILES=3000 BENCH_DELAY_MS=1 BENCH_REPEAT=3
#   BENCH_DIR=${TMPDIR:-/tmp} BENCH_BIN=target/release/bookferry (built if unset)
set -euo pipefail
cd "$(dirname "$0")/.."

FILES=${BENCH_FILES:-3000}
DELAY=${BENCH_DELAY_MS:-1}
REPEAT=${BENCH_REPEAT:-3}
python3 -c 'import mfusepy' 2>/dev/null || { echo "needs python3 -m pip install mfusepy"; exit 1; }
WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/bookferry-walk.XXXXXX")
FUSE_PID=""
cleanup() {
    if [ -n "$FUSE_PID" ]; then
        umount "$WORK/slow" 2>/dev/null || fusermount -u "$WORK/slow" 2>/dev/null || true
        kill "$FUSE_PID" 2>/dev/null || true
        wait "$FUSE_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
if [ -z "${BENCH_BIN:-}" ]; then
    cargo build --release --quiet
fi
BIN=$(realpath "${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/bookferry}")

python3 tools/make-corpus.py "$WORK/lib" --files "$FILES" --seed 2323 --avg-kib 2 >/dev/null
mkdir "$WORK/slow"
python3 bench/slowfs.py "$WORK/lib" "$WORK/slow" "$DELAY" &
FUSE_PID=$!
for _ in $(seq 100); do
    mountpoint -q "$WORK/slow" && break
    sleep 0.1
done
mountpoint -q "$WORK/slow" || { echo "the FUSE mount did not come up"; exit 1; }

# Seconds of one `scan` of $1 with BOOKFERRY_WALK_THREADS=$2 ("" = the default), fresh DB.
scan_once() {
    local db
    db=$(mktemp -u "$WORK/state.XXXXXX.db")
    local start end
    start=$(date +%s.%N)
    if [ -n "$2" ]; then
        BOOKFERRY_WALK_THREADS=$2 "$BIN" --state "$db" scan --from "$1" -q >/dev/null
    else
        "$BIN" --state "$db" scan --from "$1" -q >/dev/null
    fi
    end=$(date +%s.%N)
    local n
    n=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from files').fetchone()[0])" "$db")
    rm -f "$db" "$db"-wal "$db"-shm
    echo "$(echo "$end - $start" | bc) $n"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

for place in slow lib; do
    : >"$WORK/alone.$place"
    : >"$WORK/ahead.$place"
    for _ in $(seq "$REPEAT"); do
        read -r t n < <(scan_once "$WORK/$place" 0)
        echo "$t" >>"$WORK/alone.$place"
        # The default on FUSE; asked for on the local filesystem (where the default is none).
        read -r t2 n2 < <(scan_once "$WORK/$place" "$([ "$place" = lib ] && echo 8)")
        echo "$t2" >>"$WORK/ahead.$place"
        [ "$n" = "$n2" ] || { echo "the two scans found $n and $n2 files"; exit 1; }
    done
    a=$(median <"$WORK/alone.$place")
    b=$(median <"$WORK/ahead.$place")
    label=$([ "$place" = slow ] && echo "FUSE, ${DELAY} ms per call" || echo "local filesystem")
    printf '%-28s %s files: walk alone %6.2f s, threads listing ahead %6.2f s, ratio %5.2fx\n' \
        "$label" "$n" "$a" "$b" "$(echo "$a / $b" | bc -l)"
done
