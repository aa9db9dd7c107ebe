-- bookferry state DB, schema version 11: the contents this migration placed, indexed in bulk
-- (issue 23). The index `files_blake3` (version 7) took a random page for nearly every row a
-- commit hashed: a 100,000-file run wrote ~10× the state DB's final size, half of it that
-- index. `contents_placed` holds (BLAKE3, row id) of the rows `uploaded`, filled in BLAKE3
-- order from `contents_unindexed`, where a trigger notes each row that moves to `uploaded`
-- (`state::placed_contents::merge`, when a command opens the DB and when a run ends). An
-- entry is only an answer while its row is `uploaded` with that BLAKE3. `files_sha1` (version
-- 1) went unused since version 7 looks duplicates up by BLAKE3, and cost the same per row for
-- a target that needs a SHA-1. Queries by `files.blake3` or `files.sha1` still work; by
-- BLAKE3 among the placed rows, `contents_placed` is the index.
CREATE TABLE contents_placed (
    blake3  TEXT NOT NULL,
    file_id INTEGER NOT NULL,
    PRIMARY KEY (blake3, file_id)
) WITHOUT ROWID;
CREATE TABLE contents_unindexed (
    file_id INTEGER PRIMARY KEY
);
INSERT INTO contents_placed (blake3, file_id)
    SELECT blake3, id FROM files
    WHERE state = 'uploaded' AND blake3 IS NOT NULL AND blake3 <> ''
    ORDER BY blake3, id;
CREATE TRIGGER files_placed_content AFTER UPDATE OF state, blake3 ON files
    WHEN NEW.state = 'uploaded'
BEGIN
    INSERT OR IGNORE INTO contents_unindexed (file_id) VALUES (NEW.id);
END;
DROP INDEX IF EXISTS files_blake3;
DROP INDEX IF EXISTS files_sha1;
