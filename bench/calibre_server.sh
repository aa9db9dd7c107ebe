#!/usr/bin/env bash
# bench/calibre_server.sh — adding books to a live library through calibre-server:
# `calibredb add -r --with-library http://…` vs bookferry's `--to calibre+http://…`, and the
# server's own limit. Run from anywhere: `bash bench/calibre_server.sh` (needs calibre).
#
# Prints figures and ratios; asserts nothing about time. One make-corpus.py library
# (--files 150 --seed 6262 --avg-kib 16, from ../shared/tools or $MAKE_CORPUS; nothing of it is
# copied into the repo). Each tool adds it into a new, empty library served by a
# `calibre-server --enable-local-write` on 127.0.0.1 started for it:
#   calibredb add -r SRC --with-library http://127.0.0.1:PORT   (the server reads every file's
#                                                                metadata again: the reference)
#   bookferry run --from SRC --to calibre+http://127.0.0.1:PORT  (`add empty` with the metadata,
#                                                                then `add_format`)
#   the server's limit: the same two calls per book, every request body built beforehand, sent
#   by a minimal Python client at 1, 2, 4 and 8 at once; the best books/s is the limit.
# For each: wall seconds, books in the library after, books/s; then bookferry's ratio to
# calibredb (goal ≥ 5) and its fraction of the server's limit (goal ≥ 0.8).
#
# calibre's writer lock is machine-wide: the bench takes the calibre test lock
# ($TMPDIR/bookferry-calibre-tests.lock) for its whole length, so it never overlaps a calibre test.
# Environment (defaults): FILES=150 SEED=6262 AVG_KIB=16 BENCH_DIR=${TMPDIR:-/tmp}.
set -euo pipefail
cd "$(dirname "$0")/.."

FILES=${FILES:-150}
SEED=${SEED:-6262}
AVG_KIB=${AVG_KIB:-16}
MAKE_CORPUS=${MAKE_CORPUS:-../shared/tools/make-corpus.py}
WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/bookferry-server-bench.XXXXXX")
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill -9 "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '%s\n' "$*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f", ms / 1000 }'; }
per_s() { awk -v n="$1" -v ms="$2" 'BEGIN { printf "%.1f", n * 1000 / (ms > 0 ? ms : 1) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / (b > 0 ? b : 1) }'; }

if ! command -v calibre-server >/dev/null; then
    say "calibre-server not found: install calibre (apt-get install -y calibre)"
    exit 1
fi
[ -f "$MAKE_CORPUS" ] || MAKE_CORPUS=tools/make-corpus.py
say "building release…"
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/bookferry
export CALIBRE_CONFIG_DIRECTORY=$WORK/calibre-config

exec 9>"${TMPDIR:-/tmp}/bookferry-calibre-tests.lock"
say "waiting for the calibre test lock…"
flock 9

python3 "$MAKE_CORPUS" "$WORK/src" --files "$FILES" --seed "$SEED" --avg-kib "$AVG_KIB" >/dev/null
FILES_MADE=$(find "$WORK/src" -type f | wc -l)
say "corpus: $FILES_MADE files, $(du -sh "$WORK/src" | cut -f1) (make-corpus --files $FILES --seed $SEED --avg-kib $AVG_KIB)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A new, empty library served on a free port: sets LIB, PORT, SERVER_PID.
serve_new() {
    LIB=$WORK/lib-$1
    mkdir -p "$LIB"
    calibredb list --with-library "$LIB" >/dev/null
    PORT=$(free_port)
    calibre-server --enable-local-write --listen-on 127.0.0.1 --port "$PORT" \
        --disable-use-bonjour "$LIB" >"$WORK/server-$1.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$PORT/ajax/library-info" >/dev/null && return 0
        sleep 0.1
    done
    say "calibre-server did not start: $(tail -3 "$WORK/server-$1.log")"
    exit 1
}
stop_server() {
    kill -9 "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}
books_in() { calibredb list --with-library "http://127.0.0.1:$PORT" --for-machine -f title | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

# ------------------------------------------------------------------------- calibredb add -r
serve_new calibredb
t0=$(now_ms)
calibredb add -r "$WORK/src" --with-library "http://127.0.0.1:$PORT" >/dev/null 2>&1
CDB_MS=$(($(now_ms) - t0))
CDB_BOOKS=$(books_in)
stop_server
say "calibredb add -r --with-library http://…   $(secs $CDB_MS) s  $CDB_BOOKS books  $(per_s "$CDB_BOOKS" $CDB_MS) books/s"

# ------------------------------------------------------------------------------- bookferry
serve_new bookferry
t0=$(now_ms)
"$BIN" -q --state "$WORK/state.db" run --from "$WORK/src" --to "calibre+http://127.0.0.1:$PORT"
BF_MS=$(($(now_ms) - t0))
BF_BOOKS=$(books_in)
stop_server
say "bookferry --to calibre+http://…             $(secs $BF_MS) s  $BF_BOOKS books  $(per_s "$BF_BOOKS" $BF_MS) books/s"

# -------------------------------------------------------------------- the server's own limit
# The books bookferry made (title, authors, format), as the request bodies: `add empty` in
# JSON, `add_format` in msgpack, all built before the clock starts.
sqlite3_rows() {
    python3 - "$WORK/state.db" <<'EOF'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for path, fmt, md in db.execute("SELECT path, format, metadata FROM files WHERE state = 'uploaded'"):
    print(json.dumps([path, fmt, md]))
EOF
}
sqlite3_rows >"$WORK/books.jsonl"
best=0
for c in 1 2 4 8; do
    serve_new "limit-$c"
    ms=$(python3 - "$PORT" "$c" "$WORK/books.jsonl" <<'EOF'
import http.client, json, struct, sys, threading, time
port, conc, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
CANARY = "jPoAv3zOyHvQ5JFNYg4hJ9"
def mp_str(s):
    b = s.encode(); n = len(b)
    return (bytes([0xa0 | n]) if n < 32 else b"\xd9" + bytes([n]) if n < 256 else b"\xda" + struct.pack(">H", n)) + b
def mp_bin(b):
    return b"\xc6" + struct.pack(">I", len(b)) + b
books = []
for i, line in enumerate(open(path)):
    src, fmt, md = json.loads(line)
    md = json.loads(md) if md else {}
    mi = {"title": md.get("title") or src, "authors": md.get("authors") or ["Unknown"],
          "identifiers": {"bookferry": "bench%d" % i}}
    empty = json.dumps(["empty", {CANARY: 2, "v": mi}]).encode()
    name = src.rsplit("/", 1)[-1]
    data = open(src, "rb").read()
    books.append((empty, lambda book, n=name, d=data, f=fmt: b"\x94\xd3" + struct.pack(">q", book) + b"\x92" + mp_str(n) + mp_bin(d) + mp_str(f.upper()) + b"\xc2"))
# add_format's body needs the book id: all but those 8 bytes are built now.
books = [(e, f(0)) for e, f in books]
lock = threading.Lock()
queue = list(range(len(books)))
def worker():
    conn = http.client.HTTPConnection("127.0.0.1", port)
    while True:
        with lock:
            if not queue:
                return
            i = queue.pop()
        empty, fmt_body = books[i]
        conn.request("POST", "/cdb/cmd/add/0", empty, {"Content-Type": "application/json"})
        book = json.loads(conn.getresponse().read())["result"][0][0]
        body = fmt_body[:2] + struct.pack(">q", book) + fmt_body[10:]
        conn.request("POST", "/cdb/cmd/add_format/0", body, {"Content-Type": "application/x-msgpack"})
        conn.getresponse().read()
t0 = time.monotonic()
ts = [threading.Thread(target=worker) for _ in range(conc)]
[t.start() for t in ts]
[t.join() for t in ts]
print(int((time.monotonic() - t0) * 1000))
EOF
)
    n=$(books_in)
    stop_server
    rate=$(per_s "$n" "$ms")
    say "server limit, $c at once (pre-built calls)   $(secs "$ms") s  $n books  $rate books/s"
    if awk -v a="$rate" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$rate; fi
done

say ""
BF_RATE=$(per_s "$BF_BOOKS" $BF_MS)
CDB_RATE=$(per_s "$CDB_BOOKS" $CDB_MS)
say "bookferry vs calibredb add -r (books/s):   $(ratio "$BF_RATE" "$CDB_RATE")x   (goal ≥ 5)"
say "bookferry's fraction of the server's limit: $(ratio "$BF_RATE" "$best")   (limit $best books/s; goal ≥ 0.8)"
say "server limit vs calibredb add -r:           $(ratio "$best" "$CDB_RATE")x"
