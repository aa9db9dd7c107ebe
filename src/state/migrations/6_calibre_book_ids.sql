-- bookferry state DB: a calibre target's book ids (issue 22). How the migration numbers the books
-- it adds to a calibre library is decided when it first opens the library and recorded here, so a
-- resumed run keeps to it: `calibre_keep_ids` 1 when the library had no books (a calibre source
-- book then keeps its id), 0 when it had some (new ids, as calibre gives them), NULL until the
-- first open; `calibre_max_id_before` the highest book id the library had then (0: none), the
-- line between the user's books and this migration's. Both go back to NULL when the migration
-- is given another target.
ALTER TABLE migration ADD COLUMN calibre_keep_ids INTEGER;
ALTER TABLE migration ADD COLUMN calibre_max_id_before INTEGER;

-- calibre source book id → calibre target book id, for a calibre → calibre migration: one row
-- per source book with a file placed in (or found already in) a target book. `source_id` is
-- the `book_id` of the rows' `source_ref` (`book_id/format`); `target_id` the `(id)` that ends
-- the book folder of their `target_ref` (`Author/Title (id)/file`).
CREATE VIEW calibre_book_ids AS
SELECT DISTINCT
       CAST(substr(f.source_ref, 1, instr(f.source_ref, '/') - 1) AS INTEGER) AS source_id,
       CAST(substr(d.dir, length(rtrim(d.dir, '0123456789')) + 1) AS INTEGER) AS target_id
FROM files f
JOIN (SELECT id,
             -- the book folder without its closing `)`: `Author/Title (12`
             rtrim(rtrim(target_ref, replace(target_ref, '/', '')), '/)') AS dir
      FROM files WHERE target_ref IS NOT NULL) d ON d.id = f.id
WHERE f.source_ref GLOB '[0-9]*/?*'
  AND substr(f.source_ref, instr(f.source_ref, '/') + 1) = f.format
  AND d.dir GLOB '*/* ([0-9]*'
  AND (SELECT target FROM migration WHERE id = 1) LIKE 'calibre:%';
