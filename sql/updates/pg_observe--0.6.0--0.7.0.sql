-- 0.6.0 -> 0.7.0: faster capture and span ingestion. Changed functions come from the same
-- files as a fresh install; make test compares an upgraded database with a fresh one.

-- Span and metric times of this century took the slow numeric path, and every batch read
-- every partition's bounds.
-- @include sql/include/partition_bounds_cache.sql
-- @include sql/include/telemetry_time.sql
-- Span batches are stored without ON CONFLICT unless one holds a span stored already: the
-- retry is _store_bisecting()'s, which takes a new argument.
DROP FUNCTION monitoring._store_bisecting(jsonb, text);
DROP FUNCTION monitoring._store_spans(jsonb);
-- @include sql/include/telemetry_store.sql
-- @include sql/include/traces_ingest.sql

-- Batch capture: no spill to disk, a cheaper depth test, counters folded in one pass.
-- @include sql/include/errors_functions.sql

-- @include sql/900_privileges.sql
-- @include sql/910_privileges_errors.sql
-- @include sql/920_privileges_notifications.sql
-- @include sql/930_privileges_telemetry.sql
-- @include sql/940_privileges_operations.sql
-- @include sql/941_privileges_prometheus.sql
-- @include sql/942_privileges_dashboards.sql
-- @include sql/950_privileges_cache.sql
-- @include sql/990_reset_search_path.sql
