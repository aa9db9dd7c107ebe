#!/usr/bin/env bash
# bench/scale.sh — bookferry at scale: the per-file cost of many small files, and a library of a
# million. Run from anywhere: `bash bench/scale.sh`. A benchmark for a developer's machine, not
# part of CI; it prints figures and ratios measured side by side, and asserts nothing.
#
# Part 1 (always): SCALE_FILES small files (make-corpus.py --avg-kib SCALE_KIB --dup-rate 0,
# real EPUB/PDF/FB2/CBZ/TXT) into a folder, SCALE_REPEAT interleaved rounds, each run into a
# fresh folder (nothing deleted between timed runs: ext4 creates files slowly right after many
# deletes; as root, on an ext4 filesystem of its own made for part 1, since ext4 allocates inodes
# several times slower on a filesystem that has seen millions of deletes: 36% of a run's CPU
# samples there, issue 23's session 20), page cache warm (bench/warm.sh):
#   cp -r SRC DST && sync -f DST                           (the reference)
#   bookferry --state S run --from SRC --to DST -q         (copy mode, default layout)
#   rclone copy --transfers 8 SRC DST && sync -f DST       (skipped without rclone)
#   bookferry … --layout '{source_path}.{ext}'             (the source's tree, as cp and rclone
#                                                           make it: no folder per book)
# The default layout makes an author and a title folder for each book (~2 per file here, where
# cp makes one per source folder); the last line times making just those folders (mkdir -p of
# each placed file's folder, one process), to show what the layout costs on its own.
# and for bookferry: CPU µs per file (user + system), peak RSS, the rate of the first and the
# last tenth of the files (from the state DB's `uploaded` events), the state DB's final size per
# file, and the bytes written for the state DB: the state DB lives on an ext4 filesystem of its
# own on a loop device (root only) and the figure is the loop device's written sectors
# (/sys/block/loopN/stat) from before the run to after a `sync -f` of it — WAL, checkpoints and
# the filesystem's journal included.
#
# Part 2 (SCALE_MILLION=1): SCALE_MILLION_FILES tiny distinct .txt files (a generator of its
# own, 1000 folders) into a folder (with a `kill -9` at ~30% and a resumed run), a calibre
# library, and the upload protocol's test server; for each the wall time and peak RSS, and for
# the folder: `status` while the run goes, `report --failed`, `retry-failed` with nothing failed,
# a rerun with nothing to do (a rescan of every file), and `retry-failed` of 100 failed rows: the
# time until the first of them moves, from the state DB's events. Needs ~3 M free inodes and
# ~15 GB.
#
# Environment (defaults): SCALE_FILES=100000 SCALE_KIB=4 SCALE_SEED=2323 SCALE_REPEAT=3
#   SCALE_MILLION=0 SCALE_MILLION_FILES=1000000 BENCH_DIR=${TMPDIR:-/tmp} (all removed at exit)
set -euo pipefail
cd "$(dirname "$0")/.."

FILES=${SCALE_FILES:-100000}
KIB=${SCALE_KIB:-4}
SEED=${SCALE_SEED:-2323}
REPEAT=${SCALE_REPEAT:-3}
MILLION=${SCALE_MILLION:-0}
MFILES=${SCALE_MILLION_FILES:-1000000}
WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/bookferry-scale.XXXXXX")
MNT=$WORK/statefs
LOOP=""
DATA=$WORK/datafs
DATA_LOOP=""
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    drop_data_fs
    if [ -n "$LOOP" ]; then
        umount "$MNT" 2>/dev/null || true
        losetup -d "$LOOP" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '%s\n' "$*"; }

# Unmount and drop part 1's filesystem (dropping it is faster than deleting its files, and
# leaves no deletes behind on the work dir's filesystem).
drop_data_fs() {
    if [ -n "$DATA_LOOP" ]; then
        umount "$DATA" 2>/dev/null || true
        losetup -d "$DATA_LOOP" 2>/dev/null || true
        rm -f "$WORK/datafs.img"
        DATA_LOOP=""
    fi
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f", ms / 1000 }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# timed CMD…: runs it with output discarded; leaves wall ms in $MS, user+system CPU seconds in
# $CPU and peak RSS (KiB) in $RSS.
timed() {
    local start
    start=$(now_ms)
    /usr/bin/time -f '%U %S %M' -o "$WORK/time" "$@" >/dev/null 2>"$WORK/stderr" || {
        say "FAILED: $*"
        cat "$WORK/stderr"
        exit 1
    }
    MS=$(($(now_ms) - start))
    read -r u s RSS < <(tail -n 1 "$WORK/time")
    CPU=$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')
}

# Sectors written to the loop device so far (field 7 of its stat), in bytes.
loop_written() { awk '{ printf "%.0f\n", $7 * 512 }' "/sys/block/$(basename "$LOOP")/stat"; }

# The state DB's rates: files/s of the first and of the last tenth of the files to reach
# `uploaded` (by their events' times, from the run's start).
tenth_rates() {
    python3 - "$1" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
start = db.execute("SELECT MIN(started_at) FROM runs").fetchone()[0]
at = [r[0] for r in db.execute("SELECT at FROM events WHERE to_state = 'uploaded' ORDER BY at")]
n = len(at)
k = max(n // 10, 1)
first = k / max((at[k - 1] - start) / 1000, 1e-3)
last = k / max((at[-1] - at[n - k - 1]) / 1000, 1e-3) if n > k else first
print(f"{first:.0f} {last:.0f}")
EOF
}

db_size() { du -cb "$1"* 2>/dev/null | tail -n 1 | cut -f1; }

# retry_failures STATE TARGET prepare: fail every 10,000th uploaded row as a transfer failure
# (its copy removed from TARGET; `failed` from `metadata_cached`, `target_write`), print how
# many. retry_failures STATE TARGET measure: ms from the newest retry-failed run's start to the
# first move of a row it put back, and to the last such row's final state.
retry_failures() {
    python3 - "$@" <<'EOF'
import os, sqlite3, sys
db, target, mode = sys.argv[1:4]
c = sqlite3.connect(db)
if mode == "prepare":
    rows = c.execute("SELECT target_ref FROM files WHERE state = 'uploaded' AND id % 10000 = 0").fetchall()
    for (ref,) in rows:
        os.remove(os.path.join(target, ref))
    c.execute("""UPDATE files SET state = 'failed', failed_from = 'metadata_cached',
                 error_kind = 'target_write', error = source_ref || ': refused (bench)', target_ref = NULL
                 WHERE state = 'uploaded' AND id % 10000 = 0""")
    c.commit()
    print(len(rows))
else:
    run, start = c.execute("SELECT id, started_at FROM runs WHERE command = 'retry-failed' ORDER BY id DESC LIMIT 1").fetchone()
    put_back = "SELECT file_id FROM events WHERE run_id = ?1 AND from_state = 'failed'"
    first = c.execute(f"""SELECT MIN(at) FROM events WHERE run_id = ?1 AND from_state IS NOT NULL
                          AND from_state <> 'failed' AND file_id IN ({put_back})""", (run,)).fetchone()[0]
    last = c.execute(f"""SELECT MAX(at) FROM events WHERE run_id = ?1
                         AND to_state IN ('uploaded', 'skipped', 'failed') AND file_id IN ({put_back})""", (run,)).fetchone()[0]
    print(first - start if first else -1, last - start if last else -1)
EOF
}

# --------------------------------------------------------------------------------------- setup
[ -x /usr/bin/time ] || { say "needs GNU time (/usr/bin/time): apt-get install -y time"; exit 1; }
say "building release…"
cargo build --release --quiet
BIN=$(realpath "${CARGO_TARGET_DIR:-target}/release/bookferry")
source bench/warm.sh
say "work dir $WORK ($(df -h --output=avail "$WORK" | tail -n 1 | tr -d ' ') free, $(df --output=iavail "$WORK" | tail -n 1 | tr -d ' ') inodes); $(nproc) CPUs; load average $(load)"
say "(other processes on the machine skew every figure: run it on an idle machine)"

mkdir -p "$MNT"
if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null; then
    truncate -s 8G "$WORK/statefs.img"
    mkfs.ext4 -q -F "$WORK/statefs.img"
    LOOP=$(losetup --find --show "$WORK/statefs.img")
    mount "$LOOP" "$MNT"
    say "state DBs on $LOOP (ext4 of its own), mounted at $MNT: bytes written are its block counters"
else
    say "not root: state DBs on the work dir, bytes written for them not measured"
fi

# ---------------------------------------------------------------------------- 1. small files
say ""
say "== 1. $FILES small files (make-corpus.py --avg-kib $KIB --dup-rate 0), $REPEAT interleaved rounds, fresh folders"
mkdir -p "$DATA"
if [ -n "$LOOP" ]; then
    # Room for the corpus and every copy of it (a file and, for bookferry, a folder per book).
    copies=$((REPEAT * 4 + 1))
    truncate -s $((FILES * 24 * copies / 1024 + 1024))M "$WORK/datafs.img"
    mkfs.ext4 -q -F -N $((FILES * 2 * copies + 100000)) "$WORK/datafs.img"
    DATA_LOOP=$(losetup --find --show "$WORK/datafs.img")
    mount "$DATA_LOOP" "$DATA"
    say "corpus and copies on $DATA_LOOP (a new ext4), mounted at $DATA"
fi
SRC=$DATA/small
python3 tools/make-corpus.py "$SRC" --files "$FILES" --seed "$SEED" --avg-kib "$KIB" --dup-rate 0 >/dev/null
n_src=$(find "$SRC" -type f | wc -l)
say "corpus: $n_src files, $(($(du -sk "$SRC" | cut -f1) / 1024)) MiB"
OUT=$DATA/out
mkdir -p "$OUT"
TOOLS=(cp bookferry bookferry-tree)
command -v rclone >/dev/null && TOOLS+=(rclone) || say "rclone not found: its row is skipped"
declare -A WALL
BF_CPU=() BF_RSS=() BF_FIRST=() BF_LAST=() BF_DBW=() BF_DB=()
for round in $(seq 1 "$REPEAT"); do
    n=${#TOOLS[@]}
    for i in $(seq 0 $((n - 1))); do
        tool=${TOOLS[$(((i + round - 1) % n))]}
        dest=$OUT/$tool-$round
        sync
        warm_corpus "$SRC"
        warm_memory
        case $tool in
        cp) timed bash -c 'cp -r "$1" "$2" && sync -f "$2"' _ "$SRC" "$dest" ;;
        rclone) timed bash -c 'rclone copy -q --transfers 8 "$1" "$2" && sync -f "$2"' _ "$SRC" "$dest" ;;
        bookferry-tree)
            timed "$BIN" --state "$MNT/state-tree-$round.db" run --from "$SRC" --to "$dest" -q \
                --layout '{source_path}.{ext}'
            ;;
        bookferry)
            state=$MNT/state-$round.db
            [ -n "$LOOP" ] && { sync -f "$MNT"; w0=$(loop_written); }
            timed "$BIN" --state "$state" run --from "$SRC" --to "$dest" -q
            if [ -n "$LOOP" ]; then
                sync -f "$MNT"
                BF_DBW+=($(($(loop_written) - w0)))
            fi
            BF_CPU+=("$CPU") BF_RSS+=("$RSS")
            read -r first last < <(tenth_rates "$state")
            BF_FIRST+=("$first") BF_LAST+=("$last")
            BF_DB+=("$(db_size "$state")")
            ;;
        esac
        WALL[$tool]="${WALL[$tool]:-} $MS"
        say "  round $round: $tool $(secs "$MS") s"
    done
done
med_ms() { median ${WALL[$1]}; }
cp_ms=$(med_ms cp)
bf_ms=$(med_ms bookferry)
say ""
say "  median wall: cp -r + sync $(secs "$cp_ms") s; bookferry $(secs "$bf_ms") s = $(ratio "$bf_ms" "$cp_ms")× cp (goal ≤ 2)"
if [ -n "${WALL[rclone]:-}" ]; then
    rc_ms=$(med_ms rclone)
    say "  rclone copy --transfers 8 + sync $(secs "$rc_ms") s; bookferry = $(ratio "$bf_ms" "$rc_ms")× rclone (goal < 1)"
fi
tree_ms=$(med_ms bookferry-tree)
say "  bookferry --layout '{source_path}.{ext}' (the source's tree, as cp and rclone copy it): $(secs "$tree_ms") s = $(ratio "$tree_ms" "$cp_ms")× cp$([ -n "${WALL[rclone]:-}" ] && echo ", $(ratio "$tree_ms" "$rc_ms")× rclone")"
cpu=$(median "${BF_CPU[@]}")
say "  bookferry CPU: $cpu s = $(awk -v c="$cpu" -v n="$n_src" 'BEGIN { printf "%.0f", c * 1e6 / n }') µs per file; peak RSS $(($(median "${BF_RSS[@]}") / 1024)) MiB"
first=$(median "${BF_FIRST[@]}")
last=$(median "${BF_LAST[@]}")
say "  bookferry rate: first tenth $first files/s, last tenth $last files/s = $(ratio "$last" "$first")× (goal ≥ 0.8)"
db=$(median "${BF_DB[@]}")
say "  state DB: $((db / 1024 / 1024)) MiB = $((db / n_src)) bytes per file (goal ≤ 1024)"
if [ ${#BF_DBW[@]} -gt 0 ]; then
    dbw=$(median "${BF_DBW[@]}")
    say "  written for the state DB: $((dbw / 1024 / 1024)) MiB = $(ratio "$dbw" "$db")× its final size (goal ≤ 4)"
fi
# What the default layout's folders cost alone: the folders of round 1's placed files, made
# afresh (one process, mkdir of each new folder), page cache warm, then synced.
n_dirs=$(find "$OUT/bookferry-1" -type d | wc -l)
(cd "$OUT/bookferry-1" && find . -type d) >"$WORK/dirs"
sync
timed python3 -c '
import os, sys
root = sys.argv[1]
for line in open(sys.argv[2]):
    os.makedirs(os.path.join(root, line.rstrip("\n")), exist_ok=True)
os.sync()' "$OUT/folders-only" "$WORK/dirs"
say "  the default layout's $n_dirs folders alone (mkdir, then sync): $(secs "$MS") s = $(ratio "$MS" "$cp_ms")× cp's whole run; the source has $(find "$SRC" -type d | wc -l)"

[ "$MILLION" = 1 ] || { say ""; say "(SCALE_MILLION=1 adds the $MFILES-file part)"; exit 0; }

# ------------------------------------------------------------------------------- 2. a million
say ""
say "== 2. $MFILES tiny files"
BIG=$WORK/million
python3 - "$BIG" "$MFILES" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range(1000):
    os.makedirs(os.path.join(root, "a%04d" % d))
for i in range(n):
    with open(os.path.join(root, "a%04d" % (i % 1000), "Author %d - Book %07d.txt" % (i % 5000, i)), "w") as f:
        f.write("Book %d\n%s\n" % (i, "lorem ipsum " * (5 + i % 20)))
EOF
say "corpus: $MFILES files in 1000 folders, $(($(du -sk "$BIG" | cut -f1) / 1024)) MiB"
if [ -n "$DATA_LOOP" ]; then drop_data_fs; else rm -rf "$SRC" "$OUT"; fi

# Folder: a run killed at ~30%, `status` timed while it goes, then resumed.
state=$MNT/million.db
dest=$WORK/m-folder
start=$(now_ms)
/usr/bin/time -f '%M' -o "$WORK/rss1" "$BIN" --state "$state" run --from "$BIG" --to "$dest" -q >/dev/null 2>&1 &
pid=$!
status_ms=""
while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    t0=$(now_ms)
    "$BIN" --state "$state" status --json >"$WORK/status.json" 2>/dev/null || true
    status_ms="$status_ms $(($(now_ms) - t0))"
    done_now=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["states"].get("uploaded", 0))' "$WORK/status.json" 2>/dev/null || echo 0)
    if [ "$done_now" -ge $((MFILES * 3 / 10)) ]; then
        pkill -9 -P "$pid" bookferry || kill -9 "$pid"
        break
    fi
done
wait "$pid" 2>/dev/null || true
killed_ms=$(($(now_ms) - start))
say "  folder: killed (kill -9) at $done_now files after $(secs "$killed_ms") s; status --json while it ran: median $(median $status_ms) ms, slowest $(printf '%s\n' $status_ms | sort -n | tail -n 1) ms (goal ≤ 1000)"
timed "$BIN" --state "$state" run --from "$BIG" --to "$dest" -q
say "  folder: resumed run $(secs "$MS") s, peak RSS $((RSS / 1024)) MiB (goal ≤ 200); first run's peak RSS $(($(tail -n 1 "$WORK/rss1") / 1024)) MiB"
placed=$(find "$dest" -type f | wc -l)
up=$(sqlite3 "$state" "SELECT COUNT(*) FROM files WHERE state = 'uploaded'")
say "  folder: $up rows uploaded, $placed files in the folder (each file once: both must be $MFILES)"
timed "$BIN" --state "$state" report --failed
say "  report --failed: $(secs "$MS") s (goal ≤ 2)"
timed "$BIN" --state "$state" retry-failed
say "  retry-failed (nothing failed): $(secs "$MS") s (goal ≤ 2)"
sync
warm_memory
timed "$BIN" --state "$state" run -q
say "  rerun with nothing to do (rescan of $MFILES files, warm cache): $(secs "$MS") s, peak RSS $((RSS / 1024)) MiB (goal ≤ 30 s)"
# retry-failed with failures: every 10,000th row made a transfer failure (its copy removed, the
# row `failed` from `metadata_cached`, `target_write`), as a target that refused some writes
# leaves them. "To start" is from the command's start to the first move of a retried row (its
# first event after being put back), from the state DB's events; then the time to the last
# retried row's end, and the whole command (which rescans the source after them).
n_failed=$(retry_failures "$state" "$dest" prepare)
timed "$BIN" --state "$state" retry-failed -q
read -r first_ms last_ms < <(retry_failures "$state" "$dest" measure)
up=$(sqlite3 "$state" "SELECT COUNT(*) FROM files WHERE state = 'uploaded'")
say "  retry-failed ($n_failed failed rows): first retried row moved after $(secs "$first_ms") s (goal ≤ 2), all $n_failed done after $(secs "$last_ms") s, the command (rescan included) $(secs "$MS") s; $up rows uploaded"
say "  state DB: $(($(db_size "$state") / 1024 / 1024)) MiB = $(($(db_size "$state") / MFILES)) bytes per file"
rm -rf "$dest"

# A calibre library.
# (calibre's writer lock is one per machine: wait for the test suites' calibre lock first.)
if command -v calibredb >/dev/null; then
    timed flock /tmp/bookferry-calibre-tests.lock "$BIN" --state "$MNT/million-calibre.db" run --from "$BIG" --to "calibre:$WORK/m-calibre" -q
    say "  calibre library: $(secs "$MS") s, peak RSS $((RSS / 1024)) MiB (goal ≤ 200); books: $(sqlite3 "$WORK/m-calibre/metadata.db" 'SELECT COUNT(*) FROM books')"
    rm -rf "$WORK/m-calibre"
else
    say "  calibre library: skipped (no calibredb)"
fi

# The upload protocol's test server (the bench build of tests/support/protocol_server.rs).
cargo build --release --quiet --example protocol-server
"${CARGO_TARGET_DIR:-target}/release/examples/protocol-server" >"$WORK/server.out" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q '^listening on' "$WORK/server.out" && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$WORK/server.out")
timed "$BIN" --state "$MNT/million-http.db" run --from "$BIG" --to "$url" -q
say "  upload test server ($url): $(secs "$MS") s, peak RSS $((RSS / 1024)) MiB (goal ≤ 200)"
say ""
say "load average at end: $(load)"
