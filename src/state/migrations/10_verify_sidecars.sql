-- bookferry state DB, schema version 10: `verify` of a folder migration made with `--sidecars`
-- keeps each placed book's sidecar verdict in its pass, beside the book's own, so a verify that
-- was interrupted goes on where it stopped instead of looking at every book's sidecars again (a
-- PDF's cover is rendered again to compare it).
--   sidecars:        NULL: not looked at (no sidecars in this migration, a name-and-size skip,
--                    or a book whose own verdict is not `ok`: left to that verdict);
--                    `ok`: the `.opf` and `.jpg` are as bookferry writes them;
--                    `not_as_written`: missing, torn, not the cover, or not this book's.
--   sidecars_detail: what was found, one line (`T - A.jpg is missing; …`), for people.
ALTER TABLE verified ADD COLUMN sidecars TEXT CHECK (sidecars IN ('ok', 'not_as_written'));
ALTER TABLE verified ADD COLUMN sidecars_detail TEXT;
