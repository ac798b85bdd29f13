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

