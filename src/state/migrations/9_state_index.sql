-- bookferry state DB, schema version 9: one index of the rows by state, in id order with their
-- size (issue 23). Version 8's `files_state_size` (state, size) put a state's rows in size
-- order: every commit of a run, which moves neighbouring rows on to their next state, touched
-- entries all over it (a 100,000-file run wrote 13.9× the state DB's final size, 10.1× without
-- it). `files_state` now answers what both did: the claims (state, then id) and `status`'s
-- files and bytes by state (covering).
DROP INDEX files_state_size;
DROP INDEX files_state;
CREATE INDEX files_state ON files(state, id, size);
