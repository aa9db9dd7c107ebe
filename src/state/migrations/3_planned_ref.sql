-- bookferry state DB, schema version 3: where a transfer was about to place a file.
--
-- `files.planned_ref` is written (in a small transaction of its own, one per group of files)
-- just before a folder target places a row, and cleared when the row's move to a final state
-- is recorded. A run killed in between leaves it set: the next run adopts the file it finds
-- there (or at the first free ` (2)`, ` (3)`, … name after it, as the transfer chooses) as
-- this row's placement when it holds the row's content, and never a file it did not plan.
ALTER TABLE files ADD COLUMN planned_ref TEXT;  -- relative path, before any ` (N)` suffix
