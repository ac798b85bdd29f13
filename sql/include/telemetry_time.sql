-- Included by sql/300_telemetry.sql and by the upgrade scripts, hence CREATE OR REPLACE.
--
-- Unix nanoseconds (OTLP's fixed64: up to the year 2554, past the 2262 of a signed 64-bit
-- count) or ISO 8601 text; NULL when it is neither. A count that fits in bigint (every time
-- from 1970 to 2255: up to 19 digits, the 19th-digit ones below 9e18) takes the integer
-- path; a larger one goes through numeric, so that no microsecond is lost to floating point.
-- Both round half a microsecond up (0.6.0 rounded through floating point, which could go
-- either way at exactly half). The integer path is what every span of this century takes:
-- before 0.7.0 it ended at 18 digits (2001), and numeric costs six times as much.
CREATE OR REPLACE FUNCTION monitoring._otel_time(p_unix_nano text, p_iso text)
    RETURNS timestamptz
    LANGUAGE sql
    STABLE
    PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN p_unix_nano OPERATOR(pg_catalog.~) '^[0-9]+$' THEN
            CASE WHEN pg_catalog.length(p_unix_nano) OPERATOR(pg_catalog.<) 19
                      OR (pg_catalog.length(p_unix_nano) OPERATOR(pg_catalog.=) 19
                          AND pg_catalog.left(p_unix_nano, 1) OPERATOR(pg_catalog.<>) '9')
                 THEN 'epoch'::timestamptz OPERATOR(pg_catalog.+)
                      (((p_unix_nano::bigint OPERATOR(pg_catalog.+) 500) OPERATOR(pg_catalog./) 1000) OPERATOR(pg_catalog.*) interval '1 microsecond')
                 WHEN pg_catalog.length(p_unix_nano) OPERATOR(pg_catalog.<=) 20
                 THEN pg_catalog.to_timestamp(pg_catalog.div(p_unix_nano::numeric, 1000000000)::double precision)
                      OPERATOR(pg_catalog.+) pg_catalog.make_interval(
                          secs => (pg_catalog.round(pg_catalog.mod(p_unix_nano::numeric, 1000000000) OPERATOR(pg_catalog./) 1000)
                                   OPERATOR(pg_catalog./) 1000000)::double precision)
            END
        WHEN p_unix_nano IS NULL AND p_iso OPERATOR(pg_catalog.~)
             '^\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d{1,9})?)?)?\s*([Zz]|[+-]\d\d(:?\d\d)?)?$'
            THEN p_iso::timestamptz
    END
$$;
COMMENT ON FUNCTION monitoring._otel_time(text, text) IS
    'A time from Unix nanoseconds or ISO 8601 text (without an offset: UTC in the ingestion functions), NULL if neither';


-- The earliest time an ingestion function stores as sent: a row before the oldest partition
-- and the retention has a wrong clock (and is stored at the time received instead). The
-- oldest partition's start comes from partition_bounds_cache while the partition set is the
-- one it was read from. Called by the ingestion functions, which run as the owner.
CREATE OR REPLACE FUNCTION monitoring._oldest_plausible_time(p_parent regclass)
    RETURNS timestamptz
    LANGUAGE plpgsql
    VOLATILE   -- refreshes partition_bounds_cache
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kept_for interval;
    partitions text;
    cache_hit boolean;
    oldest_start timestamptz;
BEGIN
    -- One statement: the retention, the partition set as it is now, and the cached bound.
    SELECT c.retention, p.partitions, b.partitions OPERATOR(pg_catalog.=) p.partitions, b.oldest_start
    INTO kept_for, partitions, cache_hit, oldest_start
    FROM monitoring.time_series_config c
    CROSS JOIN LATERAL (
        SELECT pg_catalog.concat_ws(':', pg_catalog.count(*), pg_catalog.sum(i.inhrelid::bigint),
                                    pg_catalog.max(i.inhrelid::bigint)) AS partitions
        FROM pg_catalog.pg_inherits i WHERE i.inhparent OPERATOR(pg_catalog.=) p_parent) p
    LEFT JOIN monitoring.partition_bounds_cache b ON b.parent_table OPERATOR(pg_catalog.=) c.parent_table
    WHERE c.parent_table OPERATOR(pg_catalog.=) p_parent::text;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF cache_hit IS NOT TRUE THEN
        oldest_start := monitoring._oldest_partition_start(p_parent);
        INSERT INTO monitoring.partition_bounds_cache AS b (parent_table, partitions, oldest_start)
        VALUES (p_parent::text, partitions, oldest_start)
        ON CONFLICT (parent_table) DO UPDATE SET partitions = excluded.partitions, oldest_start = excluded.oldest_start;
    END IF;
    RETURN COALESCE(GREATEST(pg_catalog.now() OPERATOR(pg_catalog.-) kept_for, oldest_start), '-infinity');
END
$$;
COMMENT ON FUNCTION monitoring._oldest_plausible_time(regclass) IS
    'The start of the oldest partition or now() - retention, whichever is later: older rows have a wrong clock';
