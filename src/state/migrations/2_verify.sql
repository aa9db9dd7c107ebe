-- Schema migration: what `bookferry verify` found (see README "Did it all arrive?").

-- One verification pass over the migration's rows. A pass that did not end (interrupted,
-- killed) is continued by the next `verify` with the same options.
CREATE TABLE verify_passes (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id),  -- the `verify` run that began it
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,                -- NULL while going, or if interrupted
    source      INTEGER NOT NULL,       -- 1: --source (source files checked too)
    content     INTEGER NOT NULL        -- 1: --content (name-and-size skips looked inside)
);

-- The latest verdict on each file checked (one row per file, replaced by each pass).
CREATE TABLE verified (
    file_id     INTEGER PRIMARY KEY REFERENCES files(id),
    pass_id     INTEGER NOT NULL REFERENCES verify_passes(id),
    target      TEXT NOT NULL CHECK (target IN ('ok', 'missing', 'changed', 'unreadable')),
    source      TEXT CHECK (source IN ('ok', 'missing', 'changed', 'unreadable')), -- NULL: not checked
    detail      TEXT,                   -- what differs, one line
    checked_at  INTEGER NOT NULL
);
CREATE INDEX verified_pass ON verified(pass_id);
