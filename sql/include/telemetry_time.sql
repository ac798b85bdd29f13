-- Included by sql/300_telemetry.sql and by the upgrade scripts, hence CREATE OR REPLACE.
-- Times of the ingestion functions: how they are read, and which are plausible.
--
-- Unix nanoseconds (OTLP's fixed64: up to the year 2554, past the 2262 of a signed 64-bit
-- count) or ISO 8601 text; NULL when it is neither. A count that fits in bigint (every time
-- from 1970 to 2255: up to 19 digits, the 19th-digit ones below 9e18) takes the integer
-- path, rounded to the microsecond as the numeric path is; a larger one goes through
-- numeric, so that no microsecond is lost to floating point.
-- The integer path is what every span of this century takes: numeric costs six times as much.
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
                          secs => (pg_catalog.mod(p_unix_nano::numeric, 1000000000)
                                   OPERATOR(pg_catalog./) 1000000000.0)::double precision)
            END
        WHEN p_unix_nano IS NULL AND p_iso OPERATOR(pg_catalog.~)
             '^\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d{1,9})?)?)?\s*([Zz]|[+-]\d\d(:?\d\d)?)?$'
            THEN p_iso::timestamptz
    END
$$;
COMMENT ON FUNCTION monitoring._otel_time(text, text) IS
    'A time from Unix nanoseconds or ISO 8601 text (without an offset: UTC in the ingestion functions), NULL if neither';

-- The earliest time an ingestion function stores as sent: a row before the oldest partition
-- and the retention has a wrong clock (and is stored at the time received instead). Reading
-- the partitions' bounds costs 30 to 40 us a partition, on every batch: the session remembers
-- the oldest start with the partitions' count and newest oid, which change whenever a
-- partition is made or dropped. A forged setting only moves the bound of its own session.
CREATE OR REPLACE FUNCTION monitoring._oldest_plausible_time(p_parent regclass)
    RETURNS timestamptz
    LANGUAGE plpgsql
    VOLATILE   -- remembers in a session setting
    SET search_path = ''
AS $$
DECLARE
    setting_name text := 'pg_observe.oldest_partition_' OPERATOR(pg_catalog.||) p_parent::oid;
    remembered text := pg_catalog.current_setting(setting_name, true);
    kept_for interval;
    partitions text;
    oldest_start timestamptz;
BEGIN
    SELECT c.retention INTO kept_for FROM monitoring.time_series_config c WHERE c.parent_table OPERATOR(pg_catalog.=) p_parent::text;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT pg_catalog.count(*) OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) COALESCE(pg_catalog.max(i.inhrelid::bigint), 0)
    INTO partitions
    FROM pg_catalog.pg_inherits i WHERE i.inhparent OPERATOR(pg_catalog.=) p_parent;
    IF pg_catalog.split_part(remembered, '=', 1) OPERATOR(pg_catalog.=) partitions
       AND pg_catalog.split_part(remembered, '=', 2) OPERATOR(pg_catalog.~) '^-?[0-9]+(\.[0-9]+)?$' THEN
        oldest_start := pg_catalog.to_timestamp(pg_catalog.split_part(remembered, '=', 2)::double precision);
    ELSE
        oldest_start := monitoring._oldest_partition_start(p_parent);
        PERFORM pg_catalog.set_config(setting_name, partitions OPERATOR(pg_catalog.||) '='
                                      OPERATOR(pg_catalog.||) COALESCE(pg_catalog.date_part('epoch', oldest_start)::text, ''), false);
    END IF;
    RETURN COALESCE(GREATEST(pg_catalog.now() OPERATOR(pg_catalog.-) kept_for, oldest_start), '-infinity');
END
$$;
COMMENT ON FUNCTION monitoring._oldest_plausible_time(regclass) IS
    'The start of the oldest partition or now() - retention, whichever is later: older rows have a wrong clock';
