#!/usr/bin/env bash
# bench/ab.sh OLD_BIN NEW_BIN — two bookferry binaries side by side, interleaved, on the same
# corpus: is a change no slower? Prints each run's wall time, the medians and the median of the
# rounds' own new/old ratios (a round's runs are seconds apart, so the VM's drift between rounds
# cancels), and the median CPU time (user + system) of each. Asserts nothing.
#
# Each round runs, in alternating order (old first in odd rounds, new first in even ones):
#   folder copy:  bookferry run --from SRC --to DIR --keep-duplicates && sync -f DIR
#   calibre fill: bookferry run --from SRC --to calibre:LIB && sync -f LIB
# each into a fresh folder (no deletes between timed runs: on ext4 creating files right after
# deleting many is slower), after bench/warm.sh's warm_corpus and warm_memory (page cache and
# memory as a physical machine would have them) and a sync.
#
# Environment (defaults): AB_FILES=2000 AB_KIB=256 AB_ROUNDS=7 AB_SEED=7 AB_KINDS="copy calibre"
#   BENCH_DIR=${TMPDIR:-/tmp} (about 2 x AB_ROUNDS x AB_FILES x AB_KIB of space, removed at exit).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$(realpath "$1")
NEW=$(realpath "$2")
FILES=${AB_FILES:-2000}
KIB=${AB_KIB:-256}
ROUNDS=${AB_ROUNDS:-7}
SEED=${AB_SEED:-7}
KINDS=${AB_KINDS:-copy calibre}
WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/bookferry-ab.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

. bench/warm.sh
python3 tools/make-corpus.py "$WORK/src" --files "$FILES" --seed "$SEED" --avg-kib "$KIB" >/dev/null

# run KIND BIN NAME: one timed run into a fresh destination; prints the wall time in ms.
run() {
    local kind=$1 bin=$2 name=$3 dest start
    dest="$WORK/out/$name"
    mkdir -p "$WORK/out"
    sync
    warm_corpus "$WORK/src"
    warm_memory
    start=$(now_ms)
    case $kind in
        copy) /usr/bin/time -f '%U %S' -o "$WORK/cpu" \
            "$bin" --state "$dest.db" run --from "$WORK/src" --to "$dest" --keep-duplicates -q ;;
        calibre) /usr/bin/time -f '%U %S' -o "$WORK/cpu" \
            "$bin" --state "$dest.db" run --from "$WORK/src" --to "calibre:$dest" -q ;;
    esac
    sync -f "$WORK/out"
    echo "$(($(now_ms) - start)) $(awk '{ printf "%d", ($1 + $2) * 1000 }' "$WORK/cpu")"
}

echo "old: $OLD"
echo "new: $NEW"
echo "corpus: $FILES files, ~$KIB KiB each, seed $SEED; $ROUNDS rounds"
for kind in $KINDS; do
    olds=() news=() ratios=() ocpus=() ncpus=()
    for r in $(seq 1 "$ROUNDS"); do
        if [ $((r % 2)) -eq 1 ]; then
            read -r o oc < <(run "$kind" "$OLD" "$kind-old-$r"); read -r n nc < <(run "$kind" "$NEW" "$kind-new-$r")
        else
            read -r n nc < <(run "$kind" "$NEW" "$kind-new-$r"); read -r o oc < <(run "$kind" "$OLD" "$kind-old-$r")
        fi
        olds+=("$o"); news+=("$n"); ocpus+=("$oc"); ncpus+=("$nc")
        ratios+=("$(awk -v a="$n" -v b="$o" 'BEGIN { printf "%.3f", a / b }')")
        echo "$kind round $r: old $o ms (cpu $oc), new $n ms (cpu $nc)"
    done
    mo=$(median "${olds[@]}"); mn=$(median "${news[@]}"); mr=$(median "${ratios[@]}")
    co=$(median "${ocpus[@]}"); cn=$(median "${ncpus[@]}")
    echo "$kind: median old $mo ms, new $mn ms; new/old of medians $(awk -v a="$mn" -v b="$mo" 'BEGIN { printf "%.3f", a / b }'), median of round ratios $mr; cpu ms old $co, new $cn ($(awk -v a="$cn" -v b="$co" 'BEGIN { printf "%.3f", a / b }'))"
done
