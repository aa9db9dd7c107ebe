-- bookferry state DB, schema version 12: an entry of `contents_placed` (version 11) leaves with
-- its content. When a row's BLAKE3 changes or is cleared (the rescan of a changed source file),
-- the trigger `files_unplaced_content` deletes the row's entry for its old BLAKE3, by the
-- table's key. Before, each merge deleted the entries of every row it indexed with a query that
-- read all of `contents_placed` (1,000,000 entries: 0.09 s warm, 0.59 s cold, once per run).
-- Entries a version-11 DB holds for rows whose BLAKE3 has changed since are deleted here, once.
DELETE FROM contents_placed
    WHERE NOT EXISTS (
        SELECT 1 FROM files f WHERE f.id = contents_placed.file_id AND f.blake3 = contents_placed.blake3
    );
CREATE TRIGGER files_unplaced_content AFTER UPDATE OF blake3 ON files
    WHEN OLD.blake3 IS NOT NULL AND OLD.blake3 IS NOT NEW.blake3
BEGIN
    DELETE FROM contents_placed WHERE blake3 = OLD.blake3 AND file_id = OLD.id;
END;
