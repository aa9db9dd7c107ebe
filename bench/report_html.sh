#!/usr/bin/env bash
# bench/report_html.sh — `bookferry report --format html` at scale. Run from the repo root:
# `bash bench/report_html.sh`.
#
# Prints figures; asserts nothing about time. It:
#   1. makes a schema-valid state DB the way bookferry does (a real one-file migration: the
#      schema, its migrations, the migration record and a run), then adds BENCH_ROWS rows
#      (default 200,000) by SQL with python3's sqlite3: a realistic mix over 3 more runs —
#      ~86% uploaded (3% of them with warnings), 10% skipped (duplicate, target_has_name_size,
#      target_has_content, source_gone), 2% failed (4 kinds), 2% pending (an interrupted run)
#      — and an `events` row for every move (about 5 per file: ~1M rows), spread over each
#      run's hours;
#   2. times `report --format html -o FILE` (wall, median of BENCH_REPEAT) and prints the
#      page's size;
#   3. loads the page in headless Chromium (BENCH_CHROMIUM, default /usr/bin/chromium;
#      skipped if missing): the page's own figures, from navigation start (performance.now()):
#      `data-rendered-ms` when its script has drawn everything, `data-loaded-ms` at the load
#      event; and the wall time of
#      `chromium --dump-dom` on the page against the same on an empty page, interleaved,
#      medians of BENCH_REPEAT.
#
# Environment (defaults): BENCH_ROWS=200000 BENCH_REPEAT=3 BENCH_DIR=${TMPDIR:-/tmp}
#   BENCH_MIX=realistic (or `problems`: 25% failed, 50% skipped, 25% uploaded with warnings,
#   every file list of the page full: its largest size)
#   BENCH_BIN (unset: `cargo build --release` and target/release/bookferry), BENCH_KEEP_PAGE=FILE
#   (unset: the page is removed with the rest) to look at the page afterwards; BENCH_KEEP_DB=FILE
#   likewise for the state DB.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${BENCH_ROWS:-200000}
REPEAT=${BENCH_REPEAT:-3}
CHROMIUM=${BENCH_CHROMIUM:-/usr/bin/chromium}
WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/bookferry-bench-html.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say() { echo "== $*" >&2; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now_ms() { date +%s%3N; }

if [ -n "${BENCH_BIN:-}" ]; then
    BIN=$BENCH_BIN
else
    say "building release…"
    cargo build --release --quiet
    BIN=${CARGO_TARGET_DIR:-target}/release/bookferry
fi
DB=$WORK/state.db

say "a real one-file migration (the schema, the migration record, run 1)…"
mkdir -p "$WORK/lib"
echo "seed" >"$WORK/lib/seed.txt"
"$BIN" -q --state "$DB" run --from "$WORK/lib" --to "$WORK/out" >/dev/null

say "adding $ROWS rows and their events…"
python3 - "$DB" "$ROWS" "${BENCH_MIX:-realistic}" <<'PY'
import random, sqlite3, sys, time
db, rows, mix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# realistic: 2% pending, 2% failed, 10% skipped, 86% uploaded (3% of them with warnings);
# problems (the page's largest): 25% failed, 50% skipped, 25% uploaded, all with warnings.
bounds, warn_p = ((0.02, 0.04, 0.14), 0.03) if mix == "realistic" else ((0.0, 0.25, 0.75), 1.0)
rnd = random.Random(20)
c = sqlite3.connect(db)
c.execute("PRAGMA journal_mode = WAL")
c.execute("PRAGMA synchronous = OFF")
t0 = c.execute("SELECT MAX(COALESCE(ended_at, heartbeat_at)) FROM runs").fetchone()[0] + 60_000
# Three runs: 2 h interrupted (exit 3), then 1 h with failures (exit 1), then 30 min (exit 1).
runs = []
start = t0
for (secs, code, outcome) in [(7200, 3, "interrupted"), (3600, 1, "failed_rows"), (1800, 1, "failed_rows")]:
    cur = c.execute(
        "INSERT INTO runs (command, started_at, ended_at, heartbeat_at, pid, host, version, arguments, exit_code, outcome)"
        " VALUES ('run', ?, ?, ?, 4242, 'bench', '0.1.0', ?, ?, ?)",
        (start, start + secs * 1000, start + secs * 1000,
         '["bookferry","--state","state.db","run","--from","/books","--to","https://books.example/"]', code, outcome))
    runs.append((cur.lastrowid, start, secs * 1000))
    start += secs * 1000 + 600_000
first_id = c.execute("SELECT COALESCE(MAX(id), 0) FROM files").fetchone()[0] + 1
skip_reasons = ["duplicate"] * 8 + ["target_has_name_size"] * 6 + ["target_has_content"] * 4 + ["source_gone"] * 2
fail_kinds = [("unreadable", "cannot open: Permission denied"), ("empty_file", "the file is empty (0 bytes)"),
              ("transient_exhausted", "503 Service Unavailable after 5 retries"), ("target_write", "No space left on device (os error 28)")]
files, events = [], []
uploaded_ids = []
stat = {}
for i in range(rows):
    fid = first_id + i
    author = f"Author {rnd.randrange(20000):05d}"
    title = f"A Book Title Of Some Length {i:06d}"
    ext = rnd.choice(["epub"] * 6 + ["pdf"] * 3 + ["mobi"])
    src = f"{author}/{title}/{title} - {author}.{ext}"
    size = rnd.randrange(100_000, 3_000_000)
    p = rnd.random()
    state, reason, kind, err, target, dup, warn = "uploaded", None, None, None, None, None, None
    if p < bounds[0]:
        state = "pending"
    elif p < bounds[1]:
        state = "failed"
        kind, msg = fail_kinds[rnd.randrange(4)]
        err = f"/books/{src}: {msg}"
    elif p < bounds[2]:
        state = "skipped"
        reason = rnd.choice(skip_reasons)
        if reason == "duplicate" and uploaded_ids:
            dup = rnd.choice(uploaded_ids[-5000:])
        elif reason == "duplicate":
            reason = "target_has_content"
        if reason in ("target_has_name_size", "target_has_content"):
            target = f"{author}/{title}.{ext}"
    else:
        target = f"{author}/{title}/{title} - {author}.{ext}"
        uploaded_ids.append(fid)
        if rnd.random() < warn_p:
            warn = "unreadable ZIP container: invalid Zip archive: Could not find EOCD\nno embedded title: title guessed from the file name"
    stat[state] = stat.get(state, 0) + 1
    # Which run finished it, and when: spread over that run's time.
    run_id, rstart, rlen = runs[0] if i < rows * 0.6 else runs[1] if i < rows * 0.9 else runs[2]
    at = rstart + int(rlen * rnd.random())
    files.append((fid, "dir", src, "/books/" + src, size, 0, ext, state, "%040x" % rnd.getrandbits(160) if state in ("uploaded", "skipped") else None,
                  warn, target, dup, reason, err, kind, run_id, at - 3_600_000, at, at))
    events.append((fid, runs[0][0], runs[0][1], None, "pending", None))
    path = {"uploaded": ["checked", "hashed", "metadata_cached", "uploaded"], "skipped": ["checked", "hashed", "skipped"],
            "failed": ["checked", "failed"], "pending": []}[state]
    prev = "pending"
    for k, s in enumerate(path):
        events.append((fid, run_id, at - (len(path) - 1 - k) * 50, prev, s, None))
        prev = s
c.executemany(
    "INSERT INTO files (id, source_kind, source_ref, path, size, mtime_ns, format, state, sha1, warnings, target_ref,"
    " duplicate_of, skip_reason, error, error_kind, run_id, created_at, updated_at, state_changed_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", files)
c.executemany("INSERT INTO events (file_id, run_id, at, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?, ?)", events)
for (rid, _, _) in runs:
    n = dict(c.execute("SELECT state, COUNT(*) FROM files WHERE run_id = ? GROUP BY state", (rid,)).fetchall())
    c.execute("UPDATE runs SET files_uploaded = ?, files_skipped = ?, files_failed = ?, files_scanned = ?,"
              " bytes_sent = (SELECT COALESCE(SUM(size), 0) FROM files WHERE run_id = ?1 AND state = 'uploaded')"
              " WHERE id = ?1".replace("?1", str(rid)),
              (n.get("uploaded", 0), n.get("skipped", 0), n.get("failed", 0), sum(n.values())))
c.commit()
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
print("rows:", rows, "by state:", stat, "events:", len(events), file=sys.stderr)
PY
"$BIN" --state "$DB" status | sed -n '1,14p' >&2

say "report --format html, $REPEAT times…"
PAGE=$WORK/report.html
times=()
for _ in $(seq "$REPEAT"); do
    t=$(now_ms)
    "$BIN" -q --state "$DB" report --format html -o "$PAGE"
    times+=($(($(now_ms) - t)))
done
REPORT_MS=$(printf '%s\n' "${times[@]}" | median)
SIZE=$(stat -c %s "$PAGE")
if [ -n "${BENCH_KEEP_PAGE:-}" ]; then cp "$PAGE" "$BENCH_KEEP_PAGE"; fi
if [ -n "${BENCH_KEEP_DB:-}" ]; then cp "$DB" "$BENCH_KEEP_DB"; fi

LOAD_MS="(no chromium)"
RENDER_MS="(no chromium)"
LOADED_MS="(no chromium)"
EMPTY_MS="(no chromium)"
if [ -x "$CHROMIUM" ]; then
    say "headless Chromium, $REPEAT interleaved loads of the page and of an empty page…"
    echo '<!DOCTYPE html><html><body></body></html>' >"$WORK/empty.html"
    load() {
        local dir t
        dir=$(mktemp -d "$WORK/profile.XXXXXX")
        t=$(now_ms)
        "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
            --disable-background-networking --disable-component-update --disable-sync \
            --user-data-dir="$dir" --dump-dom "file://$1" >"$WORK/dom.html" 2>/dev/null
        echo $(($(now_ms) - t))
        rm -rf "$dir"
    }
    page=() empty=() rendered=() loaded=()
    for _ in $(seq "$REPEAT"); do
        empty+=($(load "$WORK/empty.html"))
        page+=($(load "$PAGE"))
        grep -q 'data-rendered="yes"' "$WORK/dom.html" || { echo "the page did not render" >&2; exit 1; }
        rendered+=($(grep -o 'data-rendered-ms="[0-9]*"' "$WORK/dom.html" | grep -o '[0-9]*'))
        loaded+=($(grep -o 'data-loaded-ms="[0-9]*"' "$WORK/dom.html" | grep -o '[0-9]*'))
    done
    LOAD_MS=$(printf '%s\n' "${page[@]}" | median)
    EMPTY_MS=$(printf '%s\n' "${empty[@]}" | median)
    RENDER_MS=$(printf '%s\n' "${rendered[@]}" | median)
    LOADED_MS=$(printf '%s\n' "${loaded[@]}" | median)
fi

echo
echo "report --format html at $ROWS rows (${BENCH_MIX:-realistic} mix, + ~$((ROWS * 5)) events), medians of $REPEAT:"
printf '  %-52s %s ms\n' "bookferry report --format html (wall)" "$REPORT_MS"
printf '  %-52s %s bytes (%s MB)\n' "page size" "$SIZE" "$(awk "BEGIN {printf \"%.1f\", $SIZE / 1e6}")"
printf '  %-52s %s ms\n' "page drawn (its data-rendered-ms: performance.now())" "$RENDER_MS"
printf '  %-52s %s ms\n' "page loaded (its data-loaded-ms: the load event)" "$LOADED_MS"
printf '  %-52s %s ms\n' "chromium --dump-dom of the page (wall)" "$LOAD_MS"
printf '  %-52s %s ms\n' "chromium --dump-dom of an empty page (wall)" "$EMPTY_MS"
