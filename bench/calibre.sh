#!/usr/bin/env bash
# bench/calibre.sh — filling a new calibre library: calibre's own bulk add vs bookferry.
# Run from anywhere: `bash bench/calibre.sh` (needs calibre: calibredb on the PATH).
#
# Prints figures and ratios; asserts nothing about time. On one make-corpus.py library
# (N files, ~256 KiB each, page cache warm), each run into a fresh, missing library folder:
#   calibredb add -r SRC --with-library LIB && sync -f LIB         (calibre's bulk add: the reference)
#   cp -r SRC LIB && sync -f LIB                                   (the bytes alone, no library: the
#                                                                   floor of any tool that copies them)
#   bookferry run --from SRC --to calibre:LIB && sync -f LIB       (copy mode, covers made)
#   bookferry run --from SRC --to calibre:LIB --no-covers && sync -f LIB
#   bookferry run --from SRC --to calibre:LIB --link hardlink && sync -f LIB
# For each: wall seconds (median of REPEAT interleaved runs), CPU seconds, the books and format
# files calibre lists in the result, books/s, and the ratio to calibredb (wall time; below 1 is
# faster). Every bookferry library is checked with `calibredb check_library` (any problem is a
# failure of the script).
#
# calibredb always makes covers (it renders each PDF's first page with pdftoppm): the goals are
# >= 100x its books/s with --no-covers and >= 30x with covers, both printed in the same run, side
# by side on the last line with the median time bookferry takes to make one PDF's cover (its
# first page rendered and encoded as JPEG; the render alone in brackets), measured one at a
# time over the corpus's PDFs (crates/bookferry-metadata/examples/pdf_cover_times.rs).
#
# calibredb skips files whose title and authors match a book already added (its default
# duplicate rule), bookferry puts them in the same book: the book counts are printed side by
# side so the comparison is of the same work.
#
# Environment (defaults): N=2000 (files: at 500 bookferry's whole run is ~0.3 s and its fixed
#   costs weigh; calibredb takes ~40 ms per book whatever N) AVG_KIB=256 REPEAT=1
#   BENCH_DIR=${TMPDIR:-/tmp} (temp files: about (1 + 3 x REPEAT) x N x AVG_KIB there, all
#   removed at exit). ext4 slows down creating files after many deletions (its inode allocator
#   skips recently freed inodes): on a machine that has been deleting test trees, a BENCH_DIR on
#   a fresh filesystem gives steadier figures, e.g. as root:
#     truncate -s 8G /tmp/fresh.img && mkfs.ext4 -q -F /tmp/fresh.img &&
#     mkdir -p /mnt/fresh && mount -o loop /tmp/fresh.img /mnt/fresh &&
#     losetup --direct-io=on "$(findmnt -n -o SOURCE /mnt/fresh)" && BENCH_DIR=/mnt/fresh …
#   (direct I/O: the loop device then does not cache every page a second time, which otherwise
#   costs kernel-thread CPU the tools compete with on 2 cores.)
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2000}
AVG_KIB=${AVG_KIB:-256}
REPEAT=${REPEAT:-1}
WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/bookferry-calibre-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SUMMARY=()

say() { printf '%s\n' "$*"; }
row() { SUMMARY+=("$(printf '%-44s %s' "$1" "$2")"); }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f", ms / 1000 }'; }
per_s() { awk -v n="$1" -v ms="$2" 'BEGIN { printf "%.1f", n * 1000 / (ms > 0 ? ms : 1) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / (b > 0 ? b : 1) }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# ---------------------------------------------------------------------------------- setup
if ! command -v calibredb >/dev/null; then
    say "calibredb not found: install calibre (apt-get install -y calibre)"
    exit 1
fi
if [ ! -x /usr/bin/time ]; then
    say "installing GNU time (for CPU seconds)…"
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq time; else sudo apt-get install -y -qq time; fi
fi
say "building release…"
cargo build --release --quiet
cargo build --release --quiet -p bookferry-metadata --example pdf_cover_times
BIN=${CARGO_TARGET_DIR:-target}/release/bookferry
RENDER=${CARGO_TARGET_DIR:-target}/release/examples/pdf_cover_times
# calibre keeps its settings here, not in the user's home.
export CALIBRE_CONFIG_DIRECTORY=$WORK/calibre-config
load() { cut -d' ' -f1-3 /proc/loadavg; }
say "temp dir $WORK ($(df -h --output=avail "$WORK" | tail -n 1 | tr -d ' ') free); $(nproc) CPUs; load average $(load)"
say "$(calibredb --version); bookferry $("$BIN" --version | cut -d' ' -f2)"
say "(other processes on the machine skew every figure below: run it on an idle machine)"

SRC=$WORK/corpus
python3 tools/make-corpus.py "$SRC" --files "$N" --avg-kib "$AVG_KIB" --seed 3 >/dev/null
corpus_kib=$(du -sk "$SRC" | cut -f1)
say "corpus: $((corpus_kib / 1024)) MiB in $(find "$SRC" -type f | wc -l) files"
# Page cache and memory warm before every run (bench/warm.sh says why).
source bench/warm.sh
warm_corpus "$SRC"

# ---------------------------------------------------------------------------------- runs
fill_calibredb() { calibredb add -r "$SRC" --with-library "$1" && sync -f "$1"; }
fill_cp() { cp -r "$SRC" "$1" && sync -f "$1"; }
fill_bookferry() { "$BIN" --state "$1.db" run --from "$SRC" --to "calibre:$1" -q && sync -f "$1"; }
fill_bookferry_nocovers() {
    "$BIN" --state "$1.db" run --from "$SRC" --to "calibre:$1" -q --no-covers && sync -f "$1"
}
fill_bookferry_hardlink() {
    "$BIN" --state "$1.db" run --from "$SRC" --to "calibre:$1" -q --link hardlink && sync -f "$1"
}
TOOLS=(calibredb cp bookferry bookferry_nocovers bookferry_hardlink)
export SRC BIN
export -f fill_calibredb fill_cp fill_bookferry fill_bookferry_nocovers fill_bookferry_hardlink

# Books and format files calibre lists in a library.
books_in() {
    calibredb list --for-machine --fields formats --with-library "$1" |
        python3 -c 'import json, sys; b = json.load(sys.stdin); print(len(b), sum(len(x.get("formats", [])) for x in b))'
}
# check_library prints its section headers always; any other line is a problem.
problems_in() {
    calibredb check_library --with-library "$1" | grep -v -x -F \
        -e 'Vacuuming database...' -e 'Invalid titles' -e 'Extra titles' -e 'Invalid authors' \
        -e 'Extra authors' -e 'Missing book formats' -e 'Extra book formats' \
        -e 'Unknown files in books' -e 'Missing cover files' -e 'Cover files not in database' \
        -e 'Folders raising exception' | grep -v '^[[:space:]]*$' || true
}

say ""
say "== fill a new library from $N files: median of $REPEAT interleaved run(s), page cache warm"
declare -A TIMES CPU BOOKS FILES MED MEDCPU
mkdir "$WORK/out"
for rep in $(seq "$REPEAT"); do
    for t in "${TOOLS[@]}"; do
        lib=$WORK/out/$t-$rep
        # Let the previous run's writeback finish (and ext4's 5 s window in which it skips
        # recently freed inodes pass), so each run starts from the same quiet disk.
        sync
        sleep 6
        warm_corpus "$SRC"
        warm_memory
        start=$(now_ms)
        /usr/bin/time -f '%e %U %S' -o "$WORK/cpu" bash -c "fill_$t \"\$1\"" _ "$lib" >"$WORK/$t.log" 2>&1 ||
            { say "FAILED: fill_$t $lib"; cat "$WORK/$t.log"; exit 1; }
        TIMES[$t]+="$(($(now_ms) - start)) "
        CPU[$t]+="$(awk '{ printf "%.0f", ($2 + $3) * 1000 }' "$WORK/cpu") "
        if [ "$t" = cp ]; then
            # Not a library: its files stand for books.
            BOOKS[$t]=$(find "$lib" -type f | wc -l) FILES[$t]=${BOOKS[$t]}
            continue
        fi
        read -r b f < <(books_in "$lib")
        BOOKS[$t]=$b FILES[$t]=$f
        if [ "$t" != calibredb ]; then
            problems=$(problems_in "$lib")
            if [ -n "$problems" ]; then
                say "FAILED: check_library found problems in the $t library:"
                say "$problems"
                exit 1
            fi
        fi
    done
done
for t in "${TOOLS[@]}"; do
    # shellcheck disable=SC2086 # word splitting of the list of times is intended
    MED[$t]=$(median ${TIMES[$t]})
    # shellcheck disable=SC2086
    MEDCPU[$t]=$(median ${CPU[$t]})
    checked=""
    [ "$t" = calibredb ] || [ "$t" = cp ] || checked="; check_library: clean"
    say "$t: $(secs "${MED[$t]}") s median wall (runs, ms: ${TIMES[$t]% }), $(secs "${MEDCPU[$t]}") CPU-s (runs, ms: ${CPU[$t]% })," \
        "${BOOKS[$t]} books / ${FILES[$t]} format files = $(per_s "${BOOKS[$t]}" "${MED[$t]}") books/s$checked"
done

say ""
say "== bookferry's PDF cover time (render + JPEG), one at a time, page cache warm"
RENDER_LINE=$(find "$SRC" -type f -iname '*.pdf' -print0 | xargs -0 "$RENDER" 2>/dev/null | tail -n 1)
say "$RENDER_LINE"

# ---------------------------------------------------------------------------------- summary
say ""
say "== summary ($N files, $((corpus_kib / 1024)) MiB, $(nproc) CPUs, load average now $(load))"
for t in "${TOOLS[@]}"; do
    line="$(secs "${MED[$t]}") s, $(per_s "${BOOKS[$t]}" "${MED[$t]}") books/s (${BOOKS[$t]} books, ${FILES[$t]} files), CPU $(secs "${MEDCPU[$t]}") s"
    if [ "$t" = cp ]; then
        speedup=$(awk -v a="$(per_s "${BOOKS[$t]}" "${MED[$t]}")" -v b="$(per_s "${BOOKS[calibredb]}" "${MED[calibredb]}")" 'BEGIN { printf "%.0f", a / (b > 0 ? b : 1) }')
        line+="; files/s ${speedup}x calibredb's books/s: the most a tool that copies the bytes reaches"
    elif [ "$t" != calibredb ]; then
        speedup=$(awk -v a="$(per_s "${BOOKS[$t]}" "${MED[$t]}")" -v b="$(per_s "${BOOKS[calibredb]}" "${MED[calibredb]}")" 'BEGIN { printf "%.0f", a / (b > 0 ? b : 1) }')
        goal=30
        [ "$t" = bookferry_nocovers ] && goal=100
        line+="; books/s ${speedup}x calibredb's (goal >= ${goal}x); wall $(ratio "${MED[$t]}" "${MED[calibredb]}"), CPU $(ratio "${MEDCPU[$t]}" "${MEDCPU[calibredb]}") of calibredb's; wall $(ratio "${MED[$t]}" "${MED[cp]}")x cp's"
    fi
    case $t in
        calibredb) name="calibredb add -r (+ sync -f)" ;;
        cp) name="cp -r + sync -f (the bytes alone)" ;;
        bookferry) name="bookferry run --to calibre: (copy, covers)" ;;
        bookferry_nocovers) name="bookferry run --to calibre: --no-covers" ;;
        bookferry_hardlink) name="bookferry run --to calibre: --link hardlink" ;;
    esac
    row "$name" "$line"
done
printf '%s\n' "${SUMMARY[@]}"
printf '%-44s %s\n' "bookferry PDF cover (one at a time)" "$RENDER_LINE"
# The two goals and the cost of a PDF cover on one line.
speedup_of() {
    awk -v a="$(per_s "${BOOKS[$1]}" "${MED[$1]}")" -v b="$(per_s "${BOOKS[calibredb]}" "${MED[calibredb]}")" \
        'BEGIN { printf "%.0f", a / (b > 0 ? b : 1) }'
}
cover_ms=$(sed -n 's/.*median \([0-9.]*\) ms per PDF (render \([0-9.]*\) ms).*/\1 ms (render \2 ms)/p' <<<"$RENDER_LINE")
printf '%-44s %s\n' "goals (books/s vs calibredb, wall)" \
    "covers $(speedup_of bookferry)x (>= 30x), --no-covers $(speedup_of bookferry_nocovers)x (>= 100x; cp -r + sync alone $(speedup_of cp)x); PDF cover ${cover_ms:-?} median per PDF"
