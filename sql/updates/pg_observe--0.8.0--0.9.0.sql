-- 0.8.0 -> 0.9.0: batch cache calls without a write per call, and get_many/set_many in the
-- shape the client reads and writes fastest.
-- Changed functions come from the same files as a fresh install; make test compares an
-- upgraded database with a fresh one.

-- _cache_note() keeps the counts of batches in the session too (_cache_note_batch(), new);
-- cache_get_many_packed() is new; cache_set_many() inserts from its JSON object directly;
-- cache_delete_many() deletes with one statement, its plan held on the primary key.
-- @include sql/include/cache_functions.sql
COMMENT ON COLUMN monitoring.cache_stats.hits IS 'Reads that found a live entry (the last < 100 single-key and < 10,000 batch events, or 10 s, of each connection are pending)';

-- @include sql/900_privileges.sql
-- @include sql/910_privileges_errors.sql
-- @include sql/920_privileges_notifications.sql
-- @include sql/930_privileges_telemetry.sql
-- @include sql/940_privileges_operations.sql
-- @include sql/941_privileges_prometheus.sql
-- @include sql/942_privileges_dashboards.sql
-- @include sql/950_privileges_cache.sql
-- @include sql/990_reset_search_path.sql
