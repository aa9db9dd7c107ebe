-- bookferry state DB, schema version 7: BLAKE3 is the content identity.
-- `files.blake3` is set in `hashed` for every row; `files.sha1` only where the target needs a
-- SHA-1 (an HTTP server, which knows content by it) or `run --hash sha1` asked for one, and NULL
-- elsewhere (rows hashed before this version keep theirs). A row's digests are those of its
-- columns that are not NULL. Duplicates within a migration are looked up by BLAKE3.
CREATE INDEX files_blake3 ON files(blake3) WHERE blake3 IS NOT NULL;
