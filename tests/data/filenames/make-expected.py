#!/usr/bin/env python3
"""Make expected.json: what calibre shows for files named the way people name them.

Each row copies a template (templates/, see make-templates.py) to its name in a temporary
folder, adds it with `calibredb add` into a scratch library (calibre's default settings: a
config folder of its own), and records the title and authors `calibredb list --for-machine`
then shows. Run:  python3 tests/data/filenames/make-expected.py  (takes calibre's test lock).

The names are in names.json ([relative path, template] pairs); bookferry's table test
(crates/bookferry-metadata/tests/names.rs) compares its own guess with every row.
"""
import fcntl, json, os, shutil, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def calibre_rows(pairs, work):
    """[(rel, template)] → [{name, template, title, authors}] as calibredb add/list give them."""
    env = dict(os.environ, CALIBRE_CONFIG_DIRECTORY=os.path.join(work, "config"))
    lib = os.path.join(work, "lib")
    ids = []
    for i, (rel, template) in enumerate(pairs):
        # Each file in a folder of its own, so names never collide.
        path = os.path.join(work, "in", str(i), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copy(os.path.join(HERE, "templates", template), path)
        out = subprocess.run(["calibredb", "--with-library", lib, "add", "-d", path],
                             env=env, capture_output=True, text=True, check=True).stdout
        added = [l for l in out.splitlines() if l.startswith("Added book ids:")]
        ids.append(int(added[-1].split(":")[1].strip()))
    out = subprocess.run(["calibredb", "--with-library", lib, "list", "--for-machine",
                          "--fields", "title,authors"],
                         env=env, capture_output=True, text=True, check=True).stdout
    by_id = {b["id"]: b for b in json.loads(out)}
    rows = []
    for (rel, template), book_id in zip(pairs, ids):
        b = by_id[book_id]
        rows.append(dict(name=rel, template=template, title=b["title"],
                         authors=b["authors"].split(" & ")))
    return rows


def main():
    pairs = json.load(open(os.path.join(HERE, "names.json"), encoding="utf-8"))
    lock = open(os.path.join(tempfile.gettempdir(), "bookferry-calibre-tests.lock"), "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    with tempfile.TemporaryDirectory() as work:
        rows = calibre_rows(pairs, work)
    version = subprocess.run(["calibredb", "--version"], capture_output=True, text=True).stdout.strip()
    doc = dict(made_by="python3 tests/data/filenames/make-expected.py", calibre=version, rows=rows)
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(rows)} rows from {version}", file=sys.stderr)


if __name__ == "__main__":
    main()
