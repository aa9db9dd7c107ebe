-- bookferry state DB, schema version 8: two indexes for the questions `status` asks while a run
-- goes (issue 23). At 1,000,000 files each of them read every row of `files` (~900 MB): counts
-- and bytes by state looked up each row's size through `files_state`, and the files with
-- warnings were a full scan. Both are now answered from an index alone.
CREATE INDEX files_state_size ON files(state, size);
CREATE INDEX files_warned ON files(id) WHERE warnings <> '';
