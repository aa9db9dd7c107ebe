-- bookferry state DB, schema version 1 (PRAGMA user_version = 1).
--
-- This file is the migration to version 1 and the documentation of the public schema: users
-- query it with `sqlite3 bookferry.db`. Later versions add migrations in src/state/migrations/
-- (2: verify.sql, 3: `files.planned_ref`, 4: `verified.checked_as`, `verified.compared_ref`, 5: `verified.target`
-- may be `changed_by_calibre`); this file's SQL is never edited once released.
-- From version 7 (7_blake3_content.sql) `files.sha1` is NULL where no SHA-1 was needed (see
-- that file): BLAKE3 is the content identity, SHA-1 is computed for an HTTP target or on request.
-- Version 8 (8_read_indexes.sql) adds two indexes only: `files_state_size`, `files_warned`.
-- Version 9 (9_state_index.sql) replaces `files_state` and `files_state_size` with one index,
-- `files_state` on (state, id, size).
-- Version 10 (10_verify_sidecars.sql) adds `verified.sidecars` and `verified.sidecars_detail`:
-- a `--sidecars` migration's verify keeps each book's sidecar verdict in its pass.
-- Version 11 (11_contents_placed.sql) adds `contents_placed` (BLAKE3, file id of the placed
-- rows, filled in bulk from `contents_unindexed`, which a trigger fills) and drops the
-- indexes `files_blake3` and `files_sha1`.
-- Version 12 (12_contents_unplaced.sql) adds the trigger `files_unplaced_content`: a row's
-- `contents_placed` entry is deleted when its BLAKE3 changes or is cleared.
-- Version 13 (13_contents_prefix.sql) keys `contents_placed` by `blake3_prefix`, the first 16
-- hex digits of the BLAKE3, in place of the whole BLAKE3.
--
-- Times are Unix epoch milliseconds (UTC); query them with
-- `datetime(col / 1000, 'unixepoch')`.

-- One migration (source → target) per state DB, and its recorded options.
CREATE TABLE migration (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    source      TEXT NOT NULL,          -- canonical source spec, e.g. `dir:/books`
    target      TEXT NOT NULL,          -- canonical target spec, e.g. `dir:/srv/library`
    options     TEXT NOT NULL,          -- JSON: layout, link mode, formats, … (no secrets)
    created_at  INTEGER NOT NULL
);

-- Every invocation that may change rows: `scan`, `run`, `retry-failed`.
CREATE TABLE runs (
    id              INTEGER PRIMARY KEY,
    command         TEXT NOT NULL,      -- scan | run | retry-failed
    started_at      INTEGER NOT NULL,
    ended_at        INTEGER,            -- NULL while running, or if the process died
    heartbeat_at    INTEGER NOT NULL,   -- refreshed while the run is alive
    pid             INTEGER NOT NULL,
    host            TEXT NOT NULL,
    version         TEXT NOT NULL,      -- bookferry version
    arguments       TEXT NOT NULL,      -- JSON array of the command line, secrets removed
    exit_code       INTEGER,            -- see README "Exit codes"; NULL if the run died
    outcome         TEXT,               -- finished | failed_rows | interrupted | died | …
    files_scanned   INTEGER NOT NULL DEFAULT 0,
    files_hashed    INTEGER NOT NULL DEFAULT 0,
    files_uploaded  INTEGER NOT NULL DEFAULT 0,
    files_skipped   INTEGER NOT NULL DEFAULT 0,
    files_failed    INTEGER NOT NULL DEFAULT 0,
    bytes_read      INTEGER NOT NULL DEFAULT 0,   -- bytes read from source files
    bytes_sent      INTEGER NOT NULL DEFAULT 0    -- bytes written/sent to the target
);

-- One row per source file.
CREATE TABLE files (
    id               INTEGER PRIMARY KEY,
    source_kind      TEXT NOT NULL CHECK (source_kind IN ('dir', 'calibre')),
    source_ref       TEXT NOT NULL UNIQUE,  -- dir: path relative to the source root; calibre: `book_id/format`
    path             TEXT NOT NULL,         -- absolute path of the file
    size             INTEGER NOT NULL,      -- bytes, at scan time
    mtime_ns         INTEGER NOT NULL,      -- modification time at scan, ns since epoch
    format           TEXT NOT NULL,         -- lowercase extension: epub, pdf, fb2.zip, …
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN
                       ('pending', 'checked', 'hashed', 'metadata_cached', 'uploaded', 'skipped', 'failed')),
    sha1             TEXT,                  -- 40 lowercase hex, set in `hashed`
    blake3           TEXT,                  -- 64 lowercase hex, set in `hashed`
    metadata         TEXT,                  -- JSON (see README), set in `metadata_cached` or at scan (calibre)
    metadata_origin  TEXT CHECK (metadata_origin IN ('calibre', 'embedded', 'filename')),
    warnings         TEXT,                  -- problems met reading the file (not fatal), newline-separated
    target_ref       TEXT,                  -- where it went: target path or server id
    duplicate_of     INTEGER REFERENCES files(id), -- `skipped` as a content duplicate of that row
    skip_reason      TEXT,                  -- why `skipped`: target_has_name_size | target_has_content | duplicate | target_has_book | book_has_format | source_gone | excluded
    attempts         INTEGER NOT NULL DEFAULT 0,   -- transfer attempts over all runs
    error            TEXT,                  -- last error message (one line, names the file)
    error_kind       TEXT,                  -- source_missing | unreadable | empty_file | target_write | …
    failed_from      TEXT,                  -- the state the row failed from (retry-failed returns it there)
    source_gone      INTEGER NOT NULL DEFAULT 0, -- 1: migrated, but no longer in the source
    run_id           INTEGER REFERENCES runs(id), -- the run that holds (or last held) the row
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    state_changed_at INTEGER NOT NULL
);
CREATE INDEX files_state ON files(state, id);
CREATE INDEX files_sha1 ON files(sha1) WHERE sha1 IS NOT NULL;

-- Every state change of every row, written in the same transaction as the change.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    file_id     INTEGER NOT NULL REFERENCES files(id),
    run_id      INTEGER REFERENCES runs(id),
    at          INTEGER NOT NULL,
    from_state  TEXT,                       -- NULL when the row was created
    to_state    TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX events_file ON events(file_id, id);

-- Folders fully walked by a scan that has not finished yet (lets an interrupted scan resume).
CREATE TABLE scan_progress (
    dir  TEXT PRIMARY KEY                   -- relative to the source root; '' is the root
);

-- Progress by state, with bytes.
CREATE VIEW progress AS
SELECT state, COUNT(*) AS files, COALESCE(SUM(size), 0) AS bytes
FROM files GROUP BY state;

-- Failures with their reasons.
CREATE VIEW failures AS
SELECT id, source_ref, error_kind, error, failed_from, attempts,
       datetime(updated_at / 1000, 'unixepoch') AS failed_at
FROM files WHERE state = 'failed';

-- Throughput of each run.
CREATE VIEW run_throughput AS
SELECT id AS run_id, command, datetime(started_at / 1000, 'unixepoch') AS started,
       ROUND((COALESCE(ended_at, heartbeat_at) - started_at) / 1000.0, 1) AS seconds,
       files_uploaded, files_skipped, files_failed, bytes_sent,
       ROUND(files_uploaded * 60000.0 / MAX(1, COALESCE(ended_at, heartbeat_at) - started_at), 1) AS files_per_min,
       ROUND(bytes_sent / 1048576.0 * 1000.0 / MAX(1, COALESCE(ended_at, heartbeat_at) - started_at), 2) AS mib_per_s,
       outcome, exit_code
FROM runs;
