#!/usr/bin/env bash
# bench/verify_rclone.sh — `bookferry verify` against `rclone check` on the same folder pair.
# Run from the repo root: `bash bench/verify_rclone.sh`. Prints figures; asserts nothing.
#
# A make-corpus.py library (BENCH_FILES files, seed 7, ~256 KiB each: make-corpus.py's default) is migrated
# into a folder with --layout '{source_path}.{ext}' --keep-duplicates, so the target is the
# source's tree and rclone can pair the files. Then, page cache warm (both trees read right
# before each timed run, bench/warm.sh), BENCH_ROUNDS interleaved rounds (the order alternates
# each round) of:
#   bookferry verify                 reads each placed file once and hashes it (SHA-1 and
#                                    BLAKE3, compared with the state DB's digests); writes a
#                                    verdict per file to the state DB
#   rclone check SRC DST             lists both sides and hashes both (MD5, the local backend's
#                                    common hash), comparing sizes and hashes
#   rclone check --download SRC DST  reads both sides and compares their bytes
# Medians and the ratios rclone/verify. The issue asks verify to be at least 1.5x faster than
# `rclone check`.
#
# Environment (defaults): BENCH_FILES=2000 BENCH_ROUNDS=5 BENCH_AVG_KIB=256
#   BENCH_DIR=${TMPDIR:-/tmp} (temp files, removed at exit).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/warm.sh
source bench/warm.sh

FILES=${BENCH_FILES:-2000}
ROUNDS=${BENCH_ROUNDS:-5}
AVG_KIB=${BENCH_AVG_KIB:-256}
WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/bookferry-verify-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

say() { printf '%s\n' "$*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.3f", ms / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / (b > 0 ? b : 1) }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

command -v rclone >/dev/null || { say "rclone is not installed: nothing to compare with"; exit 1; }
say "building release…"
cargo build --release --quiet --bin bookferry
BIN=${CARGO_TARGET_DIR:-target}/release/bookferry
SRC=$WORK/lib
DST=$WORK/out
DB=$WORK/state.db
python3 tools/make-corpus.py "$SRC" --files "$FILES" --seed 7 --avg-kib "$AVG_KIB" >/dev/null
say "corpus: $(find "$SRC" -type f | wc -l) files, $(du -sh "$SRC" | cut -f1); $(rclone version | head -1)"
"$BIN" -q --state "$DB" run --from "$SRC" --to "$DST" --layout '{source_path}.{ext}' \
    --keep-duplicates
# Both tools must agree that the pair matches before they are timed.
"$BIN" -q --state "$DB" verify >/dev/null || { say "verify does not find the pair equal"; exit 1; }
rclone check -q "$SRC" "$DST" || { say "rclone check does not find the pair equal"; exit 1; }

run_verify() { "$BIN" -q --state "$DB" verify >/dev/null; }
run_rclone() { rclone check -q "$SRC" "$DST"; }
run_rclone_download() { rclone check -q --download "$SRC" "$DST"; }
TOOLS=(verify rclone rclone_download)
declare -A TIMES
for round in $(seq 1 "$ROUNDS"); do
    order=("${TOOLS[@]}")
    if [ $((round % 2)) = 0 ]; then order=(rclone_download rclone verify); fi
    for tool in "${order[@]}"; do
        warm_corpus "$SRC"
        warm_corpus "$DST"
        start=$(now_ms)
        "run_$tool"
        ms=$(($(now_ms) - start))
        TIMES[$tool]="${TIMES[$tool]:-} $ms"
    done
    say "round $round: verify $(echo "${TIMES[verify]}" | awk '{print $NF}') ms," \
        "rclone check $(echo "${TIMES[rclone]}" | awk '{print $NF}') ms," \
        "rclone check --download $(echo "${TIMES[rclone_download]}" | awk '{print $NF}') ms"
done
# shellcheck disable=SC2086
V=$(median ${TIMES[verify]})
# shellcheck disable=SC2086
R=$(median ${TIMES[rclone]})
# shellcheck disable=SC2086
D=$(median ${TIMES[rclone_download]})
say ""
say "median of $ROUNDS rounds, $FILES files, page cache warm, $(nproc) cores:"
say "  bookferry verify                 $(secs "$V") s"
say "  rclone check                     $(secs "$R") s   ($(ratio "$R" "$V")x verify's time)"
say "  rclone check --download          $(secs "$D") s   ($(ratio "$D" "$V")x verify's time)"
