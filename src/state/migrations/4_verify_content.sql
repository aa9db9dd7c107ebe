-- bookferry state DB, schema version 4: what `verify --content` compared (README "Did it all
-- arrive?").
--
-- A row skipped because the target had a file of its name and size (`target_has_name_size`) was
-- never read; `verify --content` reads the source file and the target's file(s) of that name and
-- size. Its verdict is a `verified` row like any other (`target`: `ok` same content, `changed`
-- other content — the book was never migrated —, `missing` no such file any more), marked so,
-- with the target file it was compared with. That file is recorded here and never as the row's
-- `files.target_ref`: bookferry did not place it and never writes over it.
ALTER TABLE verified ADD COLUMN checked_as TEXT NOT NULL DEFAULT 'placed'
    CHECK (checked_as IN ('placed', 'name_size_skip'));  -- what kind of row was checked
ALTER TABLE verified ADD COLUMN compared_ref TEXT;  -- name_size_skip: the target file compared with (relative path)
