#!/usr/bin/env bash
# bench/engine.sh — bookferry engine benchmark. Run from the repo root: `bash bench/engine.sh`.
#
# Prints figures and ratios; asserts nothing about time. It measures:
#   1. scan: `bookferry scan` of trees of 1-byte .txt files in 1000 folders (10%, 30% and 100%
#      of BENCH_SCAN_FILES): rows/s of the first scan, time of a second (incremental, nothing
#      changed) scan, and peak RSS (/usr/bin/time "Maximum resident set size") of each;
#   2. state DB: `cargo bench --bench state_db` (benches/state_db.rs): scan inserts, claims and
#      pending→checked→hashed→metadata_cached→uploaded transitions/s through the writer;
#   3. copy: on a make-corpus.py library (BENCH_COPY_FILES files, ~256 KiB each), page cache
#      warm, median of BENCH_REPEAT (at least 7) interleaved rounds, each run into a fresh folder
#      with nothing deleted until the end (the order within a round alternates), of
#        cp -r SRC DST && sync -f DST                        (the reference)
#        bookferry run --from SRC --to DST --keep-duplicates (copy mode: it also hashes every
#                                                             byte, parses metadata and syncs)
#        the same with --layout '{source_path}.{ext}'        (the same tree as cp makes)
#        the same with --dry-run                             (all of bookferry's own work,
#                                                             and not a byte written)
#        rclone copy SRC DST && sync -f DST                  (skipped if rclone is missing)
#        cp -al SRC DST && sync -f DST, and bookferry run --link hardlink  (files/s)
#      Each tool's figures: median wall time, the per-round ratio to cp, and CPU seconds
#      (user + sys) per GB copied;
#   4. a summary table.
#
# Environment (defaults): BENCH_SCAN_FILES=100000 BENCH_STATE_ROWS=$BENCH_SCAN_FILES
#   BENCH_COPY_FILES=2000 BENCH_REPEAT=7 BENCH_DIR=${TMPDIR:-/tmp} (where temp files go; the
#   copy runs need about (4 x BENCH_REPEAT + 1) x 0.5 GB there, all removed at exit; as root they
#   run on a new ext4 filesystem made there, in a sparse file on a loop device).
#   BENCH_ONLY=scan,state,copy (default: all three) runs only the sections named.
#   BENCH_COPY_TOOLS="cp bookferry" (default: every tool below) times only those copy tools
#   (cp, the reference, is always one): e.g. the interleaved cp / bookferry pairs alone.
#   BENCH_WRITE_MBPS=N (unset: no limit) caps writes to BENCH_DIR's disk at N MB/s during the
#   copy runs, for every tool alike (root and cgroup v1 blkio: blkio.throttle.write_bps_device
#   of the root group; removed at exit). The engine issue's reference (cp -r + sync of a
#   2,000-file, 505 MB corpus in ~0.7 s) is a disk slower than this VM's: 1000 gives that here.
set -euo pipefail
cd "$(dirname "$0")/.."

SCAN_FILES=${BENCH_SCAN_FILES:-100000}
STATE_ROWS=${BENCH_STATE_ROWS:-$SCAN_FILES}
COPY_FILES=${BENCH_COPY_FILES:-2000}
REPEAT=${BENCH_REPEAT:-7}
ONLY=${BENCH_ONLY:-scan,state,copy}
section() { [[ ",$ONLY," == *",$1,"* ]]; }
WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/bookferry-bench.XXXXXX")
THROTTLE_FILE=/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device
THROTTLED=""
DATA_LOOP=""
cleanup() {
    if [ -n "$THROTTLED" ]; then echo "$THROTTLED 0" >"$THROTTLE_FILE" || true; fi
    if [ -n "$DATA_LOOP" ]; then
        umount "$WORK/data" 2>/dev/null || true
        losetup -d "$DATA_LOOP" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
SUMMARY=()

say() { printf '%s\n' "$*"; }
row() { SUMMARY+=("$(printf '%-48s %s' "$1" "$2")"); }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f", ms / 1000 }'; }
per_s() { awk -v n="$1" -v ms="$2" 'BEGIN { printf "%.0f", n * 1000 / (ms > 0 ? ms : 1) }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# Run a command with its output discarded, leaving its wall time (ms) in $MS and its peak RSS
# (KiB, /usr/bin/time's "Maximum resident set size") in $RSS.
measure() {
    local start
    start=$(now_ms)
    /usr/bin/time -f '%M' -o "$WORK/rss" "$@" >/dev/null || { say "FAILED: $*"; exit 1; }
    MS=$(($(now_ms) - start))
    RSS=$(tail -n 1 "$WORK/rss")
}

# ---------------------------------------------------------------------------------- setup
if [ ! -x /usr/bin/time ]; then
    say "installing GNU time (for peak RSS)…"
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq time; else sudo apt-get install -y -qq time; fi
fi
say "building release…"
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/bookferry
load() { cut -d' ' -f1-3 /proc/loadavg; }
say "temp dir $WORK ($(df -h --output=avail "$WORK" | tail -n 1 | tr -d ' ') free); $(nproc) CPUs; load average $(load)"
say "(other processes on the machine skew every figure below: run it on an idle machine)"

# ---------------------------------------------------------------------------------- 1. scan
if section scan; then
say ""
say "== 1. scan: trees of 1-byte .txt files in 1000 folders"
for n in $((SCAN_FILES / 10)) $((SCAN_FILES * 3 / 10)) "$SCAN_FILES"; do
    tree=$WORK/tree$n
    python3 - "$tree" "$n" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range(1000):
    os.makedirs(os.path.join(root, "d%04d" % d))
for i in range(n):
    with open(os.path.join(root, "d%04d" % (i % 1000), "book%07d.txt" % i), "wb") as f:
        f.write(b"x")
EOF
    db=$WORK/scan$n.db
    measure "$BIN" --state "$db" scan --from "$tree" -q
    first_ms=$MS first_rss=$RSS
    measure "$BIN" --state "$db" scan --from "$tree" -q
    say "$n files: first scan $(secs "$first_ms") s = $(per_s "$n" "$first_ms") rows/s, peak RSS $((first_rss / 1024)) MiB;" \
        "second scan (no change) $(secs "$MS") s = $(per_s "$n" "$MS") rows/s, peak RSS $((RSS / 1024)) MiB"
    row "scan $n files: first scan" "$(per_s "$n" "$first_ms") rows/s ($(secs "$first_ms") s, RSS $((first_rss / 1024)) MiB)"
    row "scan $n files: second scan, no change" "$(secs "$MS") s (RSS $((RSS / 1024)) MiB)"
done
fi

# ---------------------------------------------------------------------------------- 2. state DB
if section state; then
say ""
say "== 2. state DB: cargo bench --bench state_db ($STATE_ROWS rows)"
BENCH_STATE_ROWS=$STATE_ROWS cargo bench --quiet --bench state_db | tee "$WORK/state_db.out"
summary=$(grep '^SUMMARY' "$WORK/state_db.out" || true)
field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$summary"; }
row "state DB: scan_store::write_batch" "$(field scan_rows_per_s) rows/s"
row "state DB: claims through the writer" "$(field claim_rows_per_s) rows/s"
row "state DB: transitions through the writer" "$(field transitions_per_s) transitions/s (goal >= 20000)"
row "state DB: peak RSS ($STATE_ROWS rows)" "$(($(field peak_rss_kib) / 1024)) MiB"
fi

# ---------------------------------------------------------------------------------- 3. copy
# Every run writes to a fresh folder and nothing is deleted before the end: on ext4, files
# created within a minute of deleting many others are slow to create (the inode allocator
# skips "recently deleted" inodes), which would punish whichever tool runs after a cleanup.
if section copy; then
if [ "$REPEAT" -lt 7 ]; then
    say "BENCH_REPEAT=$REPEAT: a median of fewer than 7 rounds is not the measurement (pairs here spread 0.7-1.7x)"
fi
say ""
say "== 3. copy: $COPY_FILES-file corpus, median of $REPEAT interleaved runs, page cache warm"
# As root, the corpus and every copy go to an ext4 filesystem of their own (a sparse loop
# device with direct I/O, so its pages are not cached twice; one filesystem, so hard links work),
# made for this run and dropped whole at exit: on a filesystem that has seen millions of deletes,
# ext4's inode allocation was 36% of a run's CPU samples (issue 23, session 20), and it weighs on
# bookferry (a file and a folder per book) more than on cp. Elsewhere they go under BENCH_DIR,
# which should then be a fresh filesystem.
mkdir "$WORK/data"
if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null && command -v mkfs.ext4 >/dev/null; then
    # Room for the corpus and up to four copies a round (~260 KiB a file), sparse.
    truncate -s $((COPY_FILES * 260 * (4 * REPEAT + 2) + 1048576))K "$WORK/datafs.img"
    mkfs.ext4 -q -F "$WORK/datafs.img"
    DATA_LOOP=$(losetup --find --show --direct-io=on "$WORK/datafs.img")
    mount "$DATA_LOOP" "$WORK/data"
    say "corpus and copies on $DATA_LOOP (a new ext4 filesystem), mounted at $WORK/data"
fi
SRC=$WORK/data/corpus
python3 tools/make-corpus.py "$SRC" --files "$COPY_FILES" --avg-kib 256 --seed 3 >/dev/null
corpus_kib=$(du -sk "$SRC" | cut -f1)
say "corpus: $((corpus_kib / 1024)) MiB in $(find "$SRC" -type f | wc -l) files"
# Page cache and memory warm before every run (bench/warm.sh says why).
source bench/warm.sh
warm_corpus "$SRC"

copy_cp() { cp -r "$SRC" "$1" && sync -f "$1"; }
copy_bookferry() { "$BIN" --state "$1.db" run --from "$SRC" --to "$1" --keep-duplicates -q; }
# The same tree as cp makes (default layout: a folder per book, ~1 mkdir per file).
copy_bookferry_srcpath() {
    "$BIN" --state "$1.db" run --from "$SRC" --to "$1" --keep-duplicates -q --layout '{source_path}.{ext}'
}
# Reads, hashes, parses and records every file, and writes nothing to the target: what the
# copy costs on top of cp's own work.
copy_bookferry_dryrun() {
    "$BIN" --state "$1.db" run --from "$SRC" --to "$1" --keep-duplicates -q --dry-run
}
copy_rclone() { rclone copy -q "$SRC" "$1" && sync -f "$1"; }
copy_cp_al() { cp -al "$SRC" "$1" && sync -f "$1"; }
copy_bookferry_hardlink() {
    "$BIN" --state "$1.db" run --from "$SRC" --to "$1" --keep-duplicates -q --link hardlink
}
TOOLS=(cp bookferry bookferry_srcpath bookferry_dryrun rclone cp_al bookferry_hardlink)
if ! command -v rclone >/dev/null; then
    say "rclone not installed: skipped"
    TOOLS=(cp bookferry bookferry_srcpath bookferry_dryrun cp_al bookferry_hardlink)
fi
if [ -n "${BENCH_COPY_TOOLS:-}" ]; then
    chosen=(cp)
    for t in $BENCH_COPY_TOOLS; do
        [[ " ${TOOLS[*]} " == *" $t "* ]] || { say "BENCH_COPY_TOOLS: no copy tool $t (${TOOLS[*]})"; exit 1; }
        [ "$t" = cp ] || chosen+=("$t")
    done
    TOOLS=("${chosen[@]}")
fi
has_tool() { [[ " ${TOOLS[*]} " == *" $1 "* ]]; }
if [ -n "${BENCH_WRITE_MBPS:-}" ]; then
    # Throttling acts on whole disks: a partition's writes are counted on its disk.
    dev=$(findmnt -n -o SOURCE --target "$WORK")
    disk=$(lsblk -no PKNAME "$dev" 2>/dev/null | head -n 1)
    [ -n "$disk" ] && dev=/dev/$disk
    majmin=$(lsblk -dno MAJ:MIN "$dev" | tr -d ' ')
    if [ ! -w "$THROTTLE_FILE" ] || [ -z "$majmin" ]; then
        say "BENCH_WRITE_MBPS needs root and cgroup v1 blkio ($THROTTLE_FILE) and a block device under $WORK"
        exit 1
    fi
    echo "$majmin $((BENCH_WRITE_MBPS * 1000000))" >"$THROTTLE_FILE"
    THROTTLED=$majmin
    say "writes to $dev ($majmin) capped at $BENCH_WRITE_MBPS MB/s for the copy runs"
fi
writers=0 # tools that write a copy of the corpus (hard links and dry runs write next to none)
for t in "${TOOLS[@]}"; do
    case $t in cp | bookferry | bookferry_srcpath | rclone) writers=$((writers + 1)) ;; esac
done
need_kib=$((corpus_kib * (REPEAT * writers + 1)))
avail_kib=$(df -k --output=avail "$WORK" | tail -n 1)
if [ "$avail_kib" -lt "$need_kib" ]; then
    say "need $((need_kib / 1048576)) GiB free in $WORK, have $((avail_kib / 1048576)) GiB: set BENCH_DIR or lower BENCH_REPEAT"
    exit 1
fi

declare -A TIMES CPU PLACED MED MEDCPU
# CPU seconds per GB (10^9 bytes) of the corpus, from CPU milliseconds.
cpu_per_gb() { awk -v ms="$1" -v kib="$corpus_kib" 'BEGIN { printf "%.2f", ms / 1000 / (kib * 1024 / 1e9) }'; }
export SRC BIN
export -f copy_cp copy_bookferry copy_bookferry_srcpath copy_bookferry_dryrun copy_rclone copy_cp_al \
    copy_bookferry_hardlink
OUT=$WORK/data/out
mkdir "$OUT"
for rep in $(seq "$REPEAT"); do
    # The order alternates from round to round, so no tool always runs right after another.
    order=("${TOOLS[@]}")
    if [ $((rep % 2)) = 0 ]; then
        order=()
        for ((i = ${#TOOLS[@]} - 1; i >= 0; i--)); do order+=("${TOOLS[i]}"); done
    fi
    for t in "${order[@]}"; do
        out=$OUT/$t-$rep
        # Let the previous run's writeback and ext4's background work settle (without a pause,
        # every tool after the first run of a round ran 2-3x slower here, cp included), then
        # read the corpus back into the page cache.
        sync
        sleep 6
        warm_corpus "$SRC"
        warm_memory
        start=$(now_ms)
        /usr/bin/time -f '%U %S' -o "$WORK/cpu" bash -c "copy_$t \"\$1\"" _ "$out" >/dev/null ||
            { say "FAILED: copy_$t $out"; exit 1; }
        TIMES[$t]+="$(($(now_ms) - start)) "
        CPU[$t]+="$(awk '{ printf "%.0f", ($1 + $2) * 1000 }' "$WORK/cpu") "
        # (a dry run makes no target folder)
        PLACED[$t]=$( (find "$out" -type f 2>/dev/null || true) | wc -l)
    done
done
for t in "${TOOLS[@]}"; do
    # shellcheck disable=SC2086 # word splitting of the list of times is intended
    MED[$t]=$(median ${TIMES[$t]})
    # shellcheck disable=SC2086
    MEDCPU[$t]=$(median ${CPU[$t]})
    say "$t: $(secs "${MED[$t]}") s median wall (runs, ms: ${TIMES[$t]}), $(secs "${MEDCPU[$t]}") CPU-s (user+sys)" \
        "= $(cpu_per_gb "${MEDCPU[$t]}") CPU-s per GB (CPU ms: ${CPU[$t]}), ${PLACED[$t]} files in the target"
done
# Wall-time ratio of the medians; the median of each round's own ratio (the runs of one round
# are seconds apart, so it cancels the machine's drift from round to round); CPU-time ratio
# (steadier when other processes share the machine).
vs_cp() {
    local ratios paired
    # shellcheck disable=SC2086 # word splitting of the lists of times is intended
    ratios=$(paste -d' ' <(printf '%s\n' ${TIMES[$1]}) <(printf '%s\n' ${TIMES[cp]}) |
        awk '{ printf "%.2f\n", $1 / ($2 > 0 ? $2 : 1) }')
    paired=$(sort -n <<<"$ratios" | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] }')
    awk -v a="${MED[$1]}" -v b="${MED[cp]}" -v c="${MEDCPU[$1]}" -v d="${MEDCPU[cp]}" -v p="$paired" \
        -v r="$(tr '\n' ' ' <<<"$ratios" | sed 's/ $//')" \
        'BEGIN { printf "%.2f (median of the rounds\047 ratios %s, rounds: %s; CPU %.2f s, %.1fx cp)", a / b, p, r, c / 1000, c / (d > 0 ? d : 1) }'
}
row "copy runs: disk under $OUT" "$(findmnt -n -o SOURCE --target "$OUT")${DATA_LOOP:+ (a new ext4)}${THROTTLED:+, writes capped at $BENCH_WRITE_MBPS MB/s}"
row "copy rounds (each run into a fresh folder)" "$REPEAT, order alternating, nothing deleted between runs"
row "cp -r + sync -f" "$(secs "${MED[cp]}") s (CPU $(secs "${MEDCPU[cp]}") s = $(cpu_per_gb "${MEDCPU[cp]}") s/GB)"
has_tool bookferry &&
    row "bookferry run (copy, default layout)" "$(secs "${MED[bookferry]}") s; /cp = $(vs_cp bookferry) (goal <= 1.1); CPU $(cpu_per_gb "${MEDCPU[bookferry]}") s/GB"
has_tool bookferry_srcpath &&
    row "bookferry run (copy, --layout {source_path})" "$(secs "${MED[bookferry_srcpath]}") s; /cp = $(vs_cp bookferry_srcpath)"
has_tool bookferry_dryrun &&
    row "bookferry run --dry-run (no byte written)" "$(secs "${MED[bookferry_dryrun]}") s; /cp = $(vs_cp bookferry_dryrun)"
if [ -n "${MED[rclone]:-}" ]; then
    row "rclone copy + sync -f" "$(secs "${MED[rclone]}") s; /cp = $(vs_cp rclone)"
elif ! command -v rclone >/dev/null; then
    row "rclone copy" "skipped (rclone not installed)"
fi
has_tool cp_al &&
    row "cp -al + sync -f (hardlinks)" "$(per_s "$COPY_FILES" "${MED[cp_al]}") files/s ($(secs "${MED[cp_al]}") s)"
has_tool bookferry_hardlink &&
    row "bookferry run --link hardlink" "$(per_s "$COPY_FILES" "${MED[bookferry_hardlink]}") files/s ($(secs "${MED[bookferry_hardlink]}") s)"
fi

# ---------------------------------------------------------------------------------- 4. summary
say ""
say "== summary (bookferry $("$BIN" --version | cut -d' ' -f2), $(nproc) CPUs, load average now $(load))"
printf '%s\n' "${SUMMARY[@]}"
