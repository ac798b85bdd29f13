-- 0.6.0 -> 0.7.0: faster capture and span ingestion. Changed functions come from the same
-- files as a fresh install; make test compares an upgraded database with a fresh one.

-- Span and metric times of this century took the slow numeric path, and every batch read
-- every partition's bounds.
-- The oldest partition's start of each time-series table, as _oldest_plausible_time() last
-- read it, with the partition set it read it from (count, sum and highest oid of the
-- partitions: making, dropping or attaching one changes them). Reading the bounds costs about
-- 2 ms a batch with 10 partitions; this is one lookup. UNLOGGED: a cache. Only the owner
-- writes it (the ingestion functions run as the owner): no caller can forge a bound.
CREATE UNLOGGED TABLE monitoring.partition_bounds_cache (
    parent_table text PRIMARY KEY,
    partitions   text NOT NULL,
    oldest_start timestamptz
);
COMMENT ON TABLE monitoring.partition_bounds_cache IS
    'Cache of the oldest partition start per time-series table, keyed by the partition set; written by _oldest_plausible_time()';
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
