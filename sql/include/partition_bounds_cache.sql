-- Included by sql/300_telemetry.sql and by the 0.6.0 -> 0.7.0 upgrade, which made it.

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
