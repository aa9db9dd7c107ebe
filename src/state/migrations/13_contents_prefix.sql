-- bookferry state DB, schema version 13: `contents_placed` (version 11) keyed by the first 16
-- hex digits of the BLAKE3 (64 bits of it), `blake3_prefix`, in place of all 64. The table is a
-- look-up that every answer of which is confirmed against its row (still `uploaded`, with that
-- whole BLAKE3), so a shorter key finds the same rows; an entry took 84 bytes of a 100,000-file
-- state DB (1,405 bytes per file in all) and takes ~26. Find the placed rows of a content with
-- `SELECT f.* FROM contents_placed p JOIN files f ON f.id = p.file_id
--  WHERE p.blake3_prefix = substr(?1, 1, 16) AND f.state = 'uploaded' AND f.blake3 = ?1`.
CREATE TABLE contents_placed_by_prefix (
    blake3_prefix TEXT NOT NULL,   -- substr(files.blake3, 1, 16)
    file_id       INTEGER NOT NULL,
    PRIMARY KEY (blake3_prefix, file_id)
) WITHOUT ROWID;
INSERT INTO contents_placed_by_prefix (blake3_prefix, file_id)
    SELECT substr(blake3, 1, 16), file_id FROM contents_placed ORDER BY 1, 2;
DROP TRIGGER IF EXISTS files_unplaced_content;
DROP TABLE contents_placed;
ALTER TABLE contents_placed_by_prefix RENAME TO contents_placed;
CREATE TRIGGER files_unplaced_content AFTER UPDATE OF blake3 ON files
    WHEN OLD.blake3 IS NOT NULL AND OLD.blake3 IS NOT NEW.blake3
BEGIN
    DELETE FROM contents_placed WHERE blake3_prefix = substr(OLD.blake3, 1, 16) AND file_id = OLD.id;
END;
