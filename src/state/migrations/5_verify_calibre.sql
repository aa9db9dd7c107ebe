-- bookferry state DB, schema version 5: `verify` of a calibre target tells a format file calibre
-- itself rewrote (metadata embedded on edit or download, a polish) from a damaged one, so
-- `verified.target` may also say `changed_by_calibre`. SQLite cannot change a CHECK in place:
-- the table is made again with the wider CHECK (its columns as version 4 left them) and its
-- rows copied over.
CREATE TABLE verified_v5 (
    file_id     INTEGER PRIMARY KEY REFERENCES files(id),
    pass_id     INTEGER NOT NULL REFERENCES verify_passes(id),
    target      TEXT NOT NULL CHECK (target IN
                  ('ok', 'missing', 'changed', 'unreadable', 'changed_by_calibre')),
    source      TEXT CHECK (source IN ('ok', 'missing', 'changed', 'unreadable')), -- NULL: not checked
    detail      TEXT,                   -- what differs, one line
    checked_at  INTEGER NOT NULL,
    checked_as  TEXT NOT NULL DEFAULT 'placed'
                  CHECK (checked_as IN ('placed', 'name_size_skip')),  -- what kind of row was checked
    compared_ref TEXT                   -- name_size_skip: the target file compared with (relative path)
);
INSERT INTO verified_v5 (file_id, pass_id, target, source, detail, checked_at, checked_as,
                         compared_ref)
    SELECT file_id, pass_id, target, source, detail, checked_at, checked_as, compared_ref
    FROM verified;
DROP TABLE verified;
ALTER TABLE verified_v5 RENAME TO verified;
CREATE INDEX verified_pass ON verified(pass_id);
