#!/usr/bin/env bash
# bench/read_once.sh — bytes read from disk per byte placed, cold cache, for files over the
# in-memory limit (8 MiB), into a folder and a calibre library (issue 23: large files read once).
# Run from the repo root as root (it drops the page cache): `sudo bash bench/read_once.sh`.
#
# Each run starts with `echo 3 > /proc/sys/vm/drop_caches` (the binary is then read back in
# before the timed run) and counts the blocks the run read from disk (/usr/bin/time's %I, the
# kernel's ru_inblock, 512-byte units), against the library's size; beside it, the run's own
# count (`runs.bytes_read`). On a machine with memory to spare a second read of a file comes
# from the page cache: BENCH_MEMORY_MIB=N runs bookferry in a memory cgroup (v1) of N MiB, page
# cache included, as on a NAS whose library is larger than its memory.
#
# Environment (defaults): BENCH_LARGE_FILES=12 (each 20-40 MiB) BENCH_REPEAT=2
#   BENCH_MEMORY_MIB (unset: no limit) BENCH_DIR=${TMPDIR:-/tmp}
#   BENCH_BIN=target/release/bookferry (built if unset)
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "needs root (drop_caches)"; exit 1; }
FILES=${BENCH_LARGE_FILES:-12}
REPEAT=${BENCH_REPEAT:-2}
WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/bookferry-read-once.XXXXXX")
CG=""
cleanup() {
    if [ -n "$CG" ]; then
        echo $$ >/sys/fs/cgroup/memory/tasks 2>/dev/null || true
        rmdir "$CG" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
if [ -z "${BENCH_BIN:-}" ]; then
    cargo build --release --quiet
fi
BIN=$(realpath "${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/bookferry}")

python3 - "$WORK/lib" "$FILES" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root)
r = random.Random(5)
for i in range(n):
    # Text files: their metadata comes from the name, so only the copy reads them.
    with open(os.path.join(root, f"Big Book {i} - Some Author.txt"), "wb") as f:
        f.write(os.urandom((20 + r.randrange(21)) << 20))
EOF
bytes=$(du -sb "$WORK/lib" | cut -f1)
echo "library: $FILES files, $bytes bytes; $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${BENCH_MEMORY_MIB:-}" ]; then
    CG=/sys/fs/cgroup/memory/bookferry-read-once-$$
    mkdir "$CG"
    echo $((BENCH_MEMORY_MIB << 20)) >"$CG/memory.limit_in_bytes"
    echo $$ >"$CG/tasks"
    echo "in a memory cgroup of $BENCH_MEMORY_MIB MiB (page cache included)"
fi

for rep in $(seq "$REPEAT"); do
    for to in dir calibre; do
        out=$WORK/$to-$rep
        dest=$out
        [ "$to" = calibre ] && dest=calibre:$out
        sync
        echo 3 >/proc/sys/vm/drop_caches
        cat "$BIN" >/dev/null
        /usr/bin/time -f '%I %e' -o "$WORK/io" "$BIN" --state "$out.db" run --from "$WORK/lib" --to "$dest" -q \
            >/dev/null 2>"$WORK/err" || { echo "FAILED ($to): $(tail -n 3 "$WORK/err")"; continue; }
        read -r blocks secs <"$WORK/io"
        own=$(sqlite3 "$out.db" "SELECT bytes_read FROM runs WHERE command = 'run'" 2>/dev/null || echo '?')
        awk -v b="$blocks" -v t="$bytes" -v o="$own" -v s="$secs" -v to="$to" -v r="$rep" 'BEGIN {
            printf "%-7s round %d: %.3f bytes read from disk per byte placed, %.3f by its own count (runs.bytes_read), %.2f s\n",
                to, r, b * 512 / t, (o == "?" ? 0 : o / t), s }'
    done
done
