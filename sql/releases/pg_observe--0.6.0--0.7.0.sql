\echo Use "CREATE EXTENSION pg_observe" to load this file. \quit
-- Released upgrade script of pg_observe 0.6.0 -> 0.7.0, kept as it shipped: do not edit.

-- sql/updates/pg_observe--0.6.0--0.7.0.sql
-- 0.6.0 -> 0.7.0: faster capture and span ingestion. Changed functions come from the same
-- files as a fresh install; make test compares an upgraded database with a fresh one.

-- Span and metric times of this century took the slow numeric path, and every batch read
-- every partition's bounds.
-- sql/include/partition_bounds_cache.sql
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

-- sql/include/telemetry_time.sql
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
    SET search_path = ''
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

-- Span batches are stored without ON CONFLICT unless one holds a span stored already: the
-- retry is _store_bisecting()'s, which takes a new argument.
DROP FUNCTION monitoring._store_bisecting(jsonb, text);
DROP FUNCTION monitoring._store_spans(jsonb);
-- sql/include/telemetry_store.sql
-- Included by sql/300_telemetry.sql and by the upgrade scripts, hence CREATE OR REPLACE.

-- A batch whose statement fails even so (a value the checks let through, such as the date
-- 2024-02-30) is stored half by half, down to the one row that fails, which is kept in
-- rejected_telemetry with PostgreSQL's message: one bad row in n costs about 2 log2(n)
-- statements, not n. p_kind picks the store: span (_store_spans) or metric (_store_metrics).
-- Spans are inserted without ON CONFLICT (a speculative insertion per row costs an eighth of
-- the time); a batch that holds a stored span (an exporter's retry) or one span twice fails
-- with unique_violation and is stored again skipping them (p_skip_duplicates): one
-- subtransaction a batch, two for such a batch.
CREATE OR REPLACE FUNCTION monitoring._store_bisecting(p_batch jsonb, p_kind text, p_skip_duplicates boolean DEFAULT false,
                                                       OUT accepted integer, OUT duplicates integer,
                                                       OUT rejected integer)
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
AS $$
DECLARE
    n integer := pg_catalog.jsonb_array_length(p_batch);
    part record;
BEGIN
    BEGIN
        IF p_kind = 'span' THEN
            SELECT s.accepted, s.duplicates, s.rejected INTO STRICT accepted, duplicates, rejected
            FROM monitoring._store_spans(p_batch, p_skip_duplicates) s;
        ELSE
            SELECT m.accepted, 0, m.rejected INTO STRICT accepted, duplicates, rejected
            FROM monitoring._store_metrics(p_batch) m;
        END IF;
        RETURN;
    EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded THEN
        IF SQLSTATE = '23505' AND p_kind = 'span' AND NOT p_skip_duplicates THEN
            SELECT b.accepted, b.duplicates, b.rejected INTO STRICT accepted, duplicates, rejected
            FROM monitoring._store_bisecting(p_batch, p_kind, true) b;
            RETURN;
        END IF;
        IF n = 1 THEN
            INSERT INTO monitoring.rejected_telemetry (kind, reason, payload) VALUES (p_kind, SQLERRM, p_batch -> 0);
            accepted := 0; duplicates := 0; rejected := 1;
            RETURN;
        END IF;
    END;
    accepted := 0; duplicates := 0; rejected := 0;
    FOR part IN
        SELECT b.* FROM (VALUES (0, n / 2), (n / 2, n)) AS h(first, last)
        CROSS JOIN LATERAL monitoring._store_bisecting(
            (SELECT pg_catalog.jsonb_agg(e.value ORDER BY e.ordinality)
             FROM pg_catalog.jsonb_array_elements(p_batch) WITH ORDINALITY e
             WHERE e.ordinality > h.first AND e.ordinality <= h.last), p_kind, p_skip_duplicates) b
    LOOP
        accepted := accepted + part.accepted;
        duplicates := duplicates + part.duplicates;
        rejected := rejected + part.rejected;
    END LOOP;
END
$$;
COMMENT ON FUNCTION monitoring._store_bisecting(jsonb, text, boolean) IS
    'Stores a batch of spans or metric points; when its statement fails, each half on its own, down to the failing row';

-- sql/include/traces_ingest.sql
-- Included by sql/310_traces.sql and by the upgrade scripts, hence CREATE OR REPLACE.
-- Span ingestion: one set-based statement per batch. What makes a span unstorable (no valid
-- ids, no name, no start time, not an object) is found by expressions, and the span goes to
-- rejected_telemetry; what can be repaired is repaired and named in the row's repairs.

-- The fields of each span of a batch, with nothing decided yet: both statements of
-- _store_spans() read them. SQL the planner inlines (so no SET clause; every name is
-- schema-qualified).
CREATE OR REPLACE FUNCTION monitoring._span_fields(p_spans jsonb)
    RETURNS TABLE (span jsonb, is_object boolean, trace_id_given text, span_id_given text, trace_id text, span_id text,
                   parent_given text, parent_span_id text, name text,
                   start_given timestamptz, end_given timestamptz, kind_given text, status_given text,
                   resource_given jsonb, attributes_given jsonb, events_given jsonb, links_given jsonb)
    LANGUAGE sql
    STABLE
    PARALLEL SAFE
AS $$
    SELECT f.span, f.is_object, f.trace_id_given, f.span_id_given,
           monitoring._otel_trace_id(f.trace_id_given), monitoring._otel_span_id(f.span_id_given),
           f.parent_given, monitoring._otel_span_id(f.parent_given), f.name,
           monitoring._otel_time(f.start_nano, f.start_iso), monitoring._otel_time(f.end_nano, f.end_iso),
           f.kind_given, f.status_given, f.resource_given, f.attributes_given, f.events_given, f.links_given
    FROM (
    SELECT e.value AS span,
           pg_catalog.jsonb_typeof(e.value) OPERATOR(pg_catalog.=) 'object' AS is_object,
           -- ids are JSON strings: a number's digits would read as hex
           CASE WHEN pg_catalog.jsonb_typeof(e.value OPERATOR(pg_catalog.->) 'trace_id') OPERATOR(pg_catalog.=) 'string'
                THEN e.value OPERATOR(pg_catalog.->>) 'trace_id' END AS trace_id_given,
           CASE WHEN pg_catalog.jsonb_typeof(e.value OPERATOR(pg_catalog.->) 'span_id') OPERATOR(pg_catalog.=) 'string'
                THEN e.value OPERATOR(pg_catalog.->>) 'span_id' END AS span_id_given,
           NULLIF(e.value OPERATOR(pg_catalog.->>) 'parent_span_id', '') AS parent_given,
           COALESCE(e.value OPERATOR(pg_catalog.->>) 'name', e.value OPERATOR(pg_catalog.->>) 'operation_name') AS name,
           -- the times' text once: _otel_time() reads its argument five times
           e.value OPERATOR(pg_catalog.->>) 'start_time_unix_nano' AS start_nano,
           e.value OPERATOR(pg_catalog.->>) 'start_time' AS start_iso,
           e.value OPERATOR(pg_catalog.->>) 'end_time_unix_nano' AS end_nano,
           e.value OPERATOR(pg_catalog.->>) 'end_time' AS end_iso,
           pg_catalog.lower(e.value OPERATOR(pg_catalog.->>) 'kind') AS kind_given,
           pg_catalog.lower(COALESCE(e.value OPERATOR(pg_catalog.->>) 'status_code',
                                     e.value OPERATOR(pg_catalog.#>>) '{status,code}')) AS status_given,
           e.value OPERATOR(pg_catalog.->) 'resource' AS resource_given,
           e.value OPERATOR(pg_catalog.->) 'attributes' AS attributes_given,
           e.value OPERATOR(pg_catalog.->) 'events' AS events_given,
           e.value OPERATOR(pg_catalog.->) 'links' AS links_given
    FROM pg_catalog.jsonb_array_elements(p_spans) AS e
    OFFSET 0) f
    OFFSET 0   -- the ids below are read by the callers' filters and outputs: computed once
$$;
COMMENT ON FUNCTION monitoring._span_fields(jsonb) IS 'The fields of each span of a batch, as _store_spans() reads them';

-- The storable spans of a batch as the rows to store, repaired. A start time before p_oldest or
-- after p_newest is a wrong clock: such a span is stored at the time received (keeping its
-- duration), the original kept. SQL the planner inlines into _store_spans()'s INSERTs. The
-- "OFFSET 0" fences make each field be computed once per span (PostgreSQL repeats an
-- expression for every reference to it otherwise), without materializing the batch.
CREATE OR REPLACE FUNCTION monitoring._span_rows(p_spans jsonb, p_oldest timestamptz, p_newest timestamptz)
    RETURNS TABLE (trace_id text, span_id text, parent_span_id text, trace_state text, service text, operation_name text,
                   kind text, start_time timestamptz, end_time timestamptz, duration_ms double precision,
                   status_code smallint, status_message text, attributes jsonb, events jsonb, links jsonb,
                   resource jsonb, scope jsonb, environment text, repairs text[], client_start_time timestamptz)
    LANGUAGE sql
    STABLE
    PARALLEL SAFE
AS $$
    SELECT c.trace_id, c.span_id, c.parent_span_id,
           c.span OPERATOR(pg_catalog.->>) 'trace_state',
           pg_catalog.left(COALESCE(NULLIF(c.span OPERATOR(pg_catalog.->>) 'service', ''),
                                    c.resource_given OPERATOR(pg_catalog.->>) 'service.name', 'unknown_service'), 256),
           -- at most 1,024 characters and 2,048 bytes: the index on it holds 2,704
           pg_catalog.left(c.name, CASE WHEN pg_catalog.octet_length(pg_catalog.left(c.name, 1024)) OPERATOR(pg_catalog.<=) 2048
                                        THEN 1024 ELSE 512 END),
           COALESCE(c.kind, CASE WHEN c.kind_given IS NULL THEN 'internal' ELSE 'unspecified' END),
           CASE WHEN c.wrong_clock THEN pg_catalog.now() ELSE c.start_given END,
           CASE WHEN NOT c.end_ok THEN c.start_given ELSE c.end_given END
               OPERATOR(pg_catalog.+) CASE WHEN c.wrong_clock
                                           THEN pg_catalog.now() OPERATOR(pg_catalog.-) c.start_given
                                           ELSE interval '0' END,
           -- whole microseconds, then one division: 1.235 ms stays 1.235
           CASE WHEN c.end_ok
                THEN pg_catalog.round(pg_catalog.date_part('epoch', c.end_given OPERATOR(pg_catalog.-) c.start_given) OPERATOR(pg_catalog.*) 1000000) OPERATOR(pg_catalog./) 1000.0
                ELSE 0 END,
           COALESCE(c.status_code, 0),
           NULLIF(COALESCE(c.span OPERATOR(pg_catalog.->>) 'status_message',
                                      c.span OPERATOR(pg_catalog.#>>) '{status,message}'), ''),
           CASE COALESCE(pg_catalog.jsonb_typeof(c.attributes_given), 'null')
               WHEN 'object' THEN c.attributes_given
               WHEN 'null' THEN '{}'
               ELSE pg_catalog.jsonb_build_object('pg_observe.invalid_attributes', c.attributes_given)
           END,
           CASE COALESCE(pg_catalog.jsonb_typeof(c.events_given), 'null')
               WHEN 'array' THEN c.events_given
               WHEN 'null' THEN '[]'
               ELSE pg_catalog.jsonb_build_array(c.events_given)
           END,
           CASE COALESCE(pg_catalog.jsonb_typeof(c.links_given), 'null')
               WHEN 'array' THEN c.links_given
               WHEN 'null' THEN '[]'
               ELSE pg_catalog.jsonb_build_array(c.links_given)
           END,
           CASE COALESCE(pg_catalog.jsonb_typeof(c.resource_given), 'null')
               WHEN 'object' THEN c.resource_given
               WHEN 'null' THEN '{}'
               ELSE pg_catalog.jsonb_build_object('pg_observe.invalid_resource', c.resource_given)
           END,
           c.span OPERATOR(pg_catalog.->) 'scope',
           pg_catalog.left(COALESCE(NULLIF(c.span OPERATOR(pg_catalog.->>) 'environment', ''),
                                    c.resource_given OPERATOR(pg_catalog.->>) 'deployment.environment.name',
                                    c.resource_given OPERATOR(pg_catalog.->>) 'deployment.environment',
                                    'production'), 256),
           -- what was repaired; the array is built only when something was
           CASE WHEN c.trace_id OPERATOR(pg_catalog.<>) c.trace_id_given OR c.span_id OPERATOR(pg_catalog.<>) c.span_id_given
                     OR (c.parent_given IS NOT NULL AND c.parent_span_id IS NULL)
                     OR NOT c.end_ok OR c.wrong_clock OR (c.kind IS NULL AND c.kind_given IS NOT NULL)
                     OR (c.status_code IS NULL AND c.status_given IS NOT NULL) OR pg_catalog.octet_length(c.name) OPERATOR(pg_catalog.>) 1024
                     OR pg_catalog.jsonb_typeof(c.attributes_given) NOT IN ('object', 'null')
           THEN pg_catalog.array_remove(ARRAY[
               CASE WHEN c.trace_id OPERATOR(pg_catalog.<>) c.trace_id_given THEN 'trace_id_normalized' END,
               CASE WHEN c.span_id OPERATOR(pg_catalog.<>) c.span_id_given THEN 'span_id_normalized' END,
               CASE WHEN c.parent_given IS NOT NULL AND c.parent_span_id IS NULL
                    THEN 'parent_span_id_invalid_dropped' END,
               CASE WHEN c.end_given IS NULL THEN 'end_time_missing'
                    WHEN NOT c.end_ok THEN 'end_before_start' END,
               CASE WHEN c.wrong_clock THEN 'start_time_out_of_range' END,
               CASE WHEN c.kind IS NULL AND c.kind_given IS NOT NULL THEN 'kind_unknown' END,
               CASE WHEN c.status_code IS NULL AND c.status_given IS NOT NULL THEN 'status_code_unknown' END,
               CASE WHEN pg_catalog.length(c.name) OPERATOR(pg_catalog.>) 1024
                      OR pg_catalog.octet_length(pg_catalog.left(c.name, 1024)) OPERATOR(pg_catalog.>) 2048 THEN 'name_truncated' END,
               CASE WHEN pg_catalog.jsonb_typeof(c.attributes_given) NOT IN ('object', 'null')
                    THEN 'attributes_not_object' END
           ]::text[], NULL) END,
           CASE WHEN c.wrong_clock THEN c.start_given END
    FROM (
        SELECT f.*,
               f.start_given OPERATOR(pg_catalog.<) p_oldest OR f.start_given OPERATOR(pg_catalog.>) p_newest AS wrong_clock,
               -- OTLP's numbers, our names and the enum names of OTLP/JSON and protobuf
               CASE f.kind_given
                   WHEN 'server' THEN 'server' WHEN 'client' THEN 'client' WHEN 'internal' THEN 'internal'
                   WHEN 'producer' THEN 'producer' WHEN 'consumer' THEN 'consumer' WHEN 'unspecified' THEN 'unspecified'
                   WHEN '0' THEN 'unspecified' WHEN '1' THEN 'internal' WHEN '2' THEN 'server'
                   WHEN '3' THEN 'client' WHEN '4' THEN 'producer' WHEN '5' THEN 'consumer'
                   WHEN 'span_kind_unspecified' THEN 'unspecified' WHEN 'span_kind_internal' THEN 'internal'
                   WHEN 'span_kind_server' THEN 'server' WHEN 'span_kind_client' THEN 'client'
                   WHEN 'span_kind_producer' THEN 'producer' WHEN 'span_kind_consumer' THEN 'consumer'
               END AS kind,
               CASE f.status_given
                   WHEN 'unset' THEN 0 WHEN 'ok' THEN 1 WHEN 'error' THEN 2 WHEN '0' THEN 0 WHEN '1' THEN 1 WHEN '2' THEN 2
                   WHEN 'status_code_unset' THEN 0 WHEN 'status_code_ok' THEN 1 WHEN 'status_code_error' THEN 2
               END::smallint AS status_code,
               COALESCE(f.end_given OPERATOR(pg_catalog.>=) f.start_given, false) AS end_ok
        FROM monitoring._span_fields(p_spans) f
        -- storable: the opposite of every reason below
        WHERE f.is_object AND f.trace_id IS NOT NULL AND f.span_id IS NOT NULL AND f.name OPERATOR(pg_catalog.<>) ''
          AND f.start_given IS NOT NULL
        OFFSET 0
    ) c
$$;
COMMENT ON FUNCTION monitoring._span_rows(jsonb, timestamptz, timestamptz) IS
    'The storable spans of a batch as rows of monitoring.spans, repaired (inlined into _store_spans())';

-- Stores one batch: one INSERT of the storable spans, and only when some were not stored, a
-- second statement that keeps the unstorable ones with their reason. Without
-- p_skip_duplicates a span stored already fails the batch with unique_violation, and
-- _store_bisecting() stores it again with p_skip_duplicates (see there). When a value the
-- checks let through still fails (a date like 2024-02-30), _store_bisecting() retries by
-- halves.
CREATE OR REPLACE FUNCTION monitoring._store_spans(p_spans jsonb, p_skip_duplicates boolean DEFAULT false,
                                                   OUT accepted integer, OUT duplicates integer, OUT rejected integer)
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
    SET timezone = 'UTC'
AS $$
DECLARE
    -- A start before the oldest partition and the retention, or over a day ahead, is a wrong clock.
    oldest timestamptz := monitoring._oldest_plausible_time('monitoring.spans');
    newest timestamptz := pg_catalog.now() + interval '1 day';
BEGIN
    IF p_skip_duplicates THEN
        INSERT INTO monitoring.spans
            (trace_id, span_id, parent_span_id, trace_state, service, operation_name, kind, start_time, end_time,
             duration_ms, status_code, status_message, attributes, events, links, resource, scope, environment,
             repairs, client_start_time)
        SELECT * FROM monitoring._span_rows(p_spans, oldest, newest)
        ON CONFLICT DO NOTHING;
    ELSE
        INSERT INTO monitoring.spans
            (trace_id, span_id, parent_span_id, trace_state, service, operation_name, kind, start_time, end_time,
             duration_ms, status_code, status_message, attributes, events, links, resource, scope, environment,
             repairs, client_start_time)
        SELECT * FROM monitoring._span_rows(p_spans, oldest, newest);
    END IF;
    GET DIAGNOSTICS accepted = ROW_COUNT;

    rejected := 0;
    IF accepted < pg_catalog.jsonb_array_length(p_spans) THEN
        INSERT INTO monitoring.rejected_telemetry (kind, reason, payload)
        SELECT 'span', r.problem, r.span
        FROM (
            SELECT f.span,
                   CASE
                       WHEN NOT f.is_object THEN 'a span must be a JSON object'
                       WHEN f.trace_id IS NULL THEN pg_catalog.format('trace_id %s is not 32 hex digits (nor all zeros)',
                           pg_catalog.left(COALESCE(f.span ->> 'trace_id', 'NULL'), 64))
                       WHEN f.span_id IS NULL THEN pg_catalog.format('span_id %s is not 16 hex digits (nor all zeros)',
                           pg_catalog.left(COALESCE(f.span ->> 'span_id', 'NULL'), 64))
                       WHEN COALESCE(f.name, '') = '' THEN 'a span needs a name'
                       WHEN f.start_given IS NULL THEN
                           'start_time_unix_nano (digits) or start_time (ISO 8601) is missing or invalid'
                   END AS problem
            FROM monitoring._span_fields(p_spans) f
        ) r
        WHERE r.problem IS NOT NULL;
        GET DIAGNOSTICS rejected = ROW_COUNT;
    END IF;
    duplicates := pg_catalog.jsonb_array_length(p_spans) - accepted - rejected;
END
$$;
COMMENT ON FUNCTION monitoring._store_spans(jsonb, boolean) IS 'Body of ingest_spans(): stores one batch in one statement (two when some span is unstorable)';

CREATE OR REPLACE FUNCTION monitoring.ingest_spans(p_spans jsonb)
    RETURNS TABLE (accepted integer, duplicates integer, rejected integer)
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    IF p_spans IS NULL OR pg_catalog.jsonb_typeof(p_spans) <> 'array' THEN
        RAISE EXCEPTION 'ingest_spans() takes a JSON array of spans, got %', COALESCE(pg_catalog.jsonb_typeof(p_spans), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Wrap a single span in an array: SELECT * FROM monitoring.ingest_spans(''[{...}]'')';
    END IF;
    IF pg_catalog.jsonb_array_length(p_spans) = 0 THEN
        RETURN QUERY SELECT 0, 0, 0;
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM monitoring._store_bisecting(p_spans, 'span');
END
$$;
COMMENT ON FUNCTION monitoring.ingest_spans(jsonb) IS
    'Stores a JSON array of spans (docs/tracing.md has the shape); a bad span goes to rejected_telemetry, the rest is stored; returns the counts';

-- from plpython/otlp_traces.py
CREATE OR REPLACE FUNCTION monitoring._otlp_traces_to_spans(p_request jsonb) RETURNS jsonb LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = ''
AS $pyfn$
# pg_observe:function monitoring._otlp_traces_to_spans(p_request jsonb) RETURNS jsonb LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = ''  # noqa: E501
# pg_observe:entry convert_request(p_request)
"""Turns an OTLP/JSON ExportTraceServiceRequest into the flat spans of ingest_spans().

The OTLP/JSON encoding (opentelemetry-proto, docs/specification.md): resourceSpans[] with a
resource and scopeSpans[] (instrumentationLibrarySpans[] before OTLP 0.15), each with a scope
and spans[]; ids are hex strings, times are Unix nanoseconds as strings or numbers, enums are
integers (names accepted too), and attribute values are AnyValue objects. This converts the
structure only: validation (ids, times) stays in ingest_spans(), which keeps a span it cannot
store in rejected_telemetry. Whatever is not a span object is passed on as it is, to be kept
there too.
The input is JSON text (jsonb cast to text); the output is JSON text.
"""


import json
import math

try:  # inside PostgreSQL; outside (lint, unit tests) errors are plain exceptions
    import plpy
except ImportError:  # pragma: no cover
    plpy = None

MAX_DEPTH = 32
MAX_INT_DIGITS = 4000  # Python refuses to parse longer integers (sys.int_info.default_max_str_digits)


def _float_or_text(text: str) -> float | str:
    # jsonb holds 1e400, Python's float does not: such a number stays text rather than inf.
    value = float(text)
    return value if math.isfinite(value) else text


def any_value(value: object, depth: int = 0) -> object:
    """An OTLP AnyValue as a plain JSON value."""
    if not isinstance(value, dict):
        return value
    if depth > MAX_DEPTH:
        return "[nested too deep]"
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return value["boolValue"]
    if "intValue" in value:
        raw = value["intValue"]  # int64 as a string in OTLP/JSON
        try:
            return int(raw)
        except (TypeError, ValueError):
            return raw
    if "doubleValue" in value:
        raw = value["doubleValue"]
        if isinstance(raw, str):  # "NaN", "Infinity", "-Infinity", or a number as text
            try:
                return _float_or_text(raw)
            except ValueError:
                return raw
        return raw
    if "arrayValue" in value:
        items = (value["arrayValue"] or {}).get("values") or []
        return [any_value(item, depth + 1) for item in items] if isinstance(items, list) else items
    if "kvlistValue" in value:
        return key_values((value["kvlistValue"] or {}).get("values"), depth + 1)
    if "bytesValue" in value:
        return value["bytesValue"]  # base64, as OTLP/JSON carries it
    return None


def key_values(items: object, depth: int = 0) -> dict:
    """A list of OTLP KeyValue as one object (a later duplicate key wins, as in the SDKs)."""
    result: dict = {}
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                result[item["key"]] = any_value(item.get("value"), depth)
    return result


def _nanos(value: object) -> object:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def convert_span(span: object, resource: dict, scope: object) -> object:
    if not isinstance(span, dict):
        return span
    status = span.get("status") if isinstance(span.get("status"), dict) else {}
    events = span.get("events") if isinstance(span.get("events"), list) else []
    links = span.get("links") if isinstance(span.get("links"), list) else []
    flat = {
        "trace_id": span.get("traceId"),
        "span_id": span.get("spanId"),
        "parent_span_id": span.get("parentSpanId") or None,
        "trace_state": span.get("traceState") or None,
        "name": span.get("name"),
        "kind": span.get("kind"),
        "start_time_unix_nano": span.get("startTimeUnixNano"),
        "end_time_unix_nano": span.get("endTimeUnixNano"),
        "status_code": status.get("code"),
        "status_message": status.get("message") or None,
        "attributes": key_values(span.get("attributes")),
        "events": [
            {"name": event.get("name"), "time_unix_nano": _nanos(event.get("timeUnixNano")),
             "attributes": key_values(event.get("attributes"))}
            for event in events if isinstance(event, dict)
        ],
        "links": [
            {"trace_id": link.get("traceId"), "span_id": link.get("spanId"),
             "trace_state": link.get("traceState") or None, "attributes": key_values(link.get("attributes"))}
            for link in links if isinstance(link, dict)
        ],
        "resource": resource,
        "scope": scope,
    }
    return {key: value for key, value in flat.items() if value is not None}


def _int_or_text(text: str) -> int | str:
    return int(text) if len(text) <= MAX_INT_DIGITS else text


def _refuse(message: str) -> None:
    if plpy is not None:
        plpy.error(message, sqlstate="22023")
    raise ValueError(message)


def convert_request(p_request: str) -> str:
    try:
        request = json.loads(p_request, parse_float=_float_or_text, parse_int=_int_or_text)
    except RecursionError:
        _refuse("the OTLP request is nested too deeply to be read")
    groups = request.get("resourceSpans") if isinstance(request, dict) else None
    spans: list = []
    for resource_spans in groups if isinstance(groups, list) else []:
        if not isinstance(resource_spans, dict):
            continue
        resource_obj = resource_spans.get("resource") if isinstance(resource_spans.get("resource"), dict) else {}
        resource = key_values(resource_obj.get("attributes"))
        scope_groups = resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans") or []
        for scope_spans in scope_groups if isinstance(scope_groups, list) else []:
            if not isinstance(scope_spans, dict):
                continue
            scope_obj = scope_spans.get("scope") or scope_spans.get("instrumentationLibrary")
            scope = None
            if isinstance(scope_obj, dict) and (scope_obj.get("name") or scope_obj.get("version")):
                scope = {"name": scope_obj.get("name"), "version": scope_obj.get("version") or None}
            group = scope_spans.get("spans") or []
            group = group if isinstance(group, list) else [group]
            spans.extend(convert_span(span, resource, scope) for span in group)
    return json.dumps(spans, allow_nan=False, ensure_ascii=False)

return convert_request(p_request)
$pyfn$;
COMMENT ON FUNCTION monitoring._otlp_traces_to_spans(jsonb) IS
    'The spans of an OTLP/JSON ExportTraceServiceRequest as the flat spans ingest_spans() takes (structure only, no validation)';

CREATE OR REPLACE FUNCTION monitoring.ingest_otlp_traces(p_request jsonb)
    RETURNS TABLE (accepted integer, duplicates integer, rejected integer)
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    IF p_request IS NULL OR pg_catalog.jsonb_typeof(p_request) <> 'object' THEN
        RAISE EXCEPTION 'ingest_otlp_traces() takes an OTLP/JSON ExportTraceServiceRequest object, got %',
                        COALESCE(pg_catalog.jsonb_typeof(p_request), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The body of POST /v1/traces with Content-Type: application/json: {"resourceSpans": [...]}';
    END IF;
    RETURN QUERY SELECT * FROM monitoring.ingest_spans(monitoring._otlp_traces_to_spans(p_request));
END
$$;
COMMENT ON FUNCTION monitoring.ingest_otlp_traces(jsonb) IS
    'Stores the spans of an OTLP/JSON ExportTraceServiceRequest (what an OpenTelemetry SDK posts to /v1/traces); returns the counts';


-- Batch capture: no spill to disk, a cheaper depth test, counters folded in one pass.
-- sql/include/errors_functions.sql
-- Functions of error tracking (included by sql/100_errors.sql and by the upgrade scripts,
-- hence CREATE OR REPLACE).
--
-- The capture path is set-based: a batch of events is mapped, deduplicated, scrubbed,
-- fingerprinted and grouped by a few statements for the whole batch, not by a trigger per
-- row. Helpers called per row are either inlinable SQL (no SET clause, every name qualified)
-- or are called only for the rare rows that need them (scrubbing, fingerprint cache misses).
-- The capture functions force generic plans: their statements take arrays as parameters, and
-- with custom plans PostgreSQL would plan those large queries again at every call, which
-- costs more than running them.

-- Limits: what is longer is cut, with a marker saying how much was cut.
-- Inlinable SQL: called per row on the capture path.
CREATE OR REPLACE FUNCTION monitoring._truncate(p_text text, p_max integer)
    RETURNS text
    LANGUAGE sql
    STABLE   -- format() is stable: a function declared IMMUTABLE around it would not be inlined
    PARALLEL SAFE
AS $$
    SELECT CASE WHEN pg_catalog.length(p_text) OPERATOR(pg_catalog.<=) p_max THEN p_text
                ELSE pg_catalog.left(p_text, p_max) OPERATOR(pg_catalog.||)
                     pg_catalog.format('…[truncated %s characters]', pg_catalog.length(p_text) OPERATOR(pg_catalog.-) p_max)
           END
$$;
COMMENT ON FUNCTION monitoring._truncate(text, integer) IS 'Cuts text to a maximum length with a marker naming what was cut';

-- Reads a timestamp the way clients send it: ISO 8601 text or Unix seconds (Sentry).
CREATE OR REPLACE FUNCTION monitoring._event_time(p_value jsonb)
    RETURNS timestamptz
    LANGUAGE plpgsql
    IMMUTABLE
    SET search_path = ''
AS $$
BEGIN
    IF pg_catalog.jsonb_typeof(p_value) OPERATOR(pg_catalog.=) 'number' THEN
        RETURN pg_catalog.to_timestamp((p_value #>> '{}')::double precision);
    END IF;
    RETURN (p_value #>> '{}')::timestamptz;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;   -- unreadable: the event is kept, filed at the time received
END
$$;
COMMENT ON FUNCTION monitoring._event_time(jsonb) IS 'Timestamp from ISO 8601 text or Unix seconds; NULL when unreadable';

CREATE OR REPLACE FUNCTION monitoring._uuid_or_null(p_value text)
    RETURNS uuid
    LANGUAGE plpgsql
    IMMUTABLE
    SET search_path = ''
AS $$
BEGIN
    RETURN p_value::uuid;
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._uuid_or_null(text) IS 'The text as a uuid (with or without dashes), or NULL';

-- Turns a JSON array of events, in the Sentry shape or the seeds' flat shape, into
-- occurrence rows (one query for the whole array; plans kept per session by PL/pgSQL).
CREATE OR REPLACE FUNCTION monitoring._events_to_occurrences(p_events jsonb)
    RETURNS SETOF monitoring.tb_error_occurrence
    LANGUAGE plpgsql
    STABLE
    SET search_path = ''
    SET plan_cache_mode = force_generic_plan   -- see the note at the top
AS $$
DECLARE
    bad_position bigint;
    bad_type text;
BEGIN
    IF pg_catalog.jsonb_path_exists(p_events, 'strict $[*] ? (@.type() != "object")') THEN
        SELECT a.i, pg_catalog.jsonb_typeof(a.e) INTO bad_position, bad_type
        FROM pg_catalog.jsonb_array_elements(p_events) WITH ORDINALITY AS a(e, i)
        WHERE pg_catalog.jsonb_typeof(a.e) OPERATOR(pg_catalog.<>) 'object'
        LIMIT 1;
        RAISE EXCEPTION 'an error event must be a JSON object, got % (event % of the batch)', bad_type, bad_position
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    RETURN QUERY
    SELECT pg_catalog.gen_random_uuid(),
           NULL::uuid,
           -- Sentry's rule: a time more than 30 days old or more than a minute ahead is the
           -- client's clock, not the event's: file it at the time received, keep what was sent.
           CASE WHEN x.client_time BETWEEN pg_catalog.now() OPERATOR(pg_catalog.-) interval '30 days'
                                       AND pg_catalog.now() OPERATOR(pg_catalog.+) interval '1 minute'
                THEN x.client_time ELSE pg_catalog.now() END,
           x.client_time,
           pg_catalog.now(),
           CASE WHEN x.event_id IS NULL THEN NULL
                WHEN x.event_id OPERATOR(pg_catalog.~*)
                     '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN x.event_id::uuid
                ELSE monitoring._uuid_or_null(x.event_id) END,
           COALESCE(NULLIF(x.main OPERATOR(pg_catalog.->>) 'type', ''),
                    NULLIF(a.e OPERATOR(pg_catalog.->>) 'exception_type', ''), 'Error'),
           COALESCE(x.main OPERATOR(pg_catalog.->>) 'value',
                    CASE pg_catalog.jsonb_typeof(x.msg)
                        WHEN 'string' THEN x.msg #>> '{}'
                        WHEN 'object' THEN COALESCE(x.msg OPERATOR(pg_catalog.->>) 'formatted',
                                                    x.msg OPERATOR(pg_catalog.->>) 'message')
                        WHEN 'null' THEN NULL
                        ELSE x.msg #>> '{}'   -- a number or an array: kept as its JSON text
                    END,
                    a.e #>> '{logentry,formatted}', a.e #>> '{logentry,message}', ''),
           a.e OPERATOR(pg_catalog.->>) 'stack_trace',
           CASE WHEN pg_catalog.jsonb_typeof(x.frames) OPERATOR(pg_catalog.=) 'array' THEN x.frames END,
           CASE WHEN pg_catalog.jsonb_typeof(a.e #> '{exception,values}') OPERATOR(pg_catalog.=) 'array' THEN
               CASE WHEN pg_catalog.jsonb_array_length(a.e #> '{exception,values}') OPERATOR(pg_catalog.>) 1
                    THEN a.e #> '{exception,values}' END
           END,
           CASE WHEN pg_catalog.jsonb_typeof(a.e OPERATOR(pg_catalog.->) 'fingerprint') OPERATOR(pg_catalog.=) 'array'
                THEN ARRAY(SELECT pg_catalog.jsonb_array_elements_text(a.e OPERATOR(pg_catalog.->) 'fingerprint')) END,
           -- The seeds' flat "context" (a non-object one is wrapped); Sentry's "contexts" and
           -- "extra" are kept under their names.
           CASE WHEN a.e ? 'contexts' OR a.e ? 'extra' THEN
                    COALESCE(x.ctx, '{}'::jsonb) OPERATOR(pg_catalog.||) pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                        'contexts', a.e OPERATOR(pg_catalog.->) 'contexts', 'extra', a.e OPERATOR(pg_catalog.->) 'extra'))
                ELSE x.ctx END,
           CASE pg_catalog.jsonb_typeof(a.e OPERATOR(pg_catalog.->) 'tags')
               WHEN 'object' THEN a.e OPERATOR(pg_catalog.->) 'tags'
               WHEN 'array' THEN   -- Sentry's [[key, value], ...]
                   (SELECT pg_catalog.jsonb_object_agg(t OPERATOR(pg_catalog.->>) 0, t OPERATOR(pg_catalog.->) 1)
                    FROM pg_catalog.jsonb_array_elements(a.e OPERATOR(pg_catalog.->) 'tags') t
                    WHERE pg_catalog.jsonb_typeof(t) OPERATOR(pg_catalog.=) 'array'
                      AND (t OPERATOR(pg_catalog.->>) 0) IS NOT NULL)
           END,
           a.e OPERATOR(pg_catalog.->) 'user',
           a.e OPERATOR(pg_catalog.->) 'request',
           COALESCE(NULLIF(a.e OPERATOR(pg_catalog.->>) 'environment', ''), 'production'),
           a.e OPERATOR(pg_catalog.->>) 'release',
           COALESCE(a.e OPERATOR(pg_catalog.->>) 'service', a.e #>> '{tags,service}'),
           a.e OPERATOR(pg_catalog.->>) 'server_name',
           a.e OPERATOR(pg_catalog.->>) 'transaction',
           a.e OPERATOR(pg_catalog.->>) 'logger',
           CASE pg_catalog.lower(a.e OPERATOR(pg_catalog.->>) 'level')
               WHEN 'warn' THEN 'warning' WHEN 'critical' THEN 'fatal'
               WHEN 'debug' THEN 'debug' WHEN 'info' THEN 'info' WHEN 'warning' THEN 'warning'
               WHEN 'fatal' THEN 'fatal' ELSE 'error' END,
           COALESCE(a.e OPERATOR(pg_catalog.->>) 'trace_id', a.e #>> '{contexts,trace,trace_id}'),
           COALESCE(a.e OPERATOR(pg_catalog.->>) 'span_id', a.e #>> '{contexts,trace,span_id}')
    FROM pg_catalog.jsonb_array_elements(p_events) AS a(e)
    CROSS JOIN LATERAL (
        SELECT CASE WHEN pg_catalog.jsonb_typeof(a.e #> '{exception,values,-1}') OPERATOR(pg_catalog.=) 'object'
                    THEN a.e #> '{exception,values,-1}' END AS main,
               a.e OPERATOR(pg_catalog.->) 'message' AS msg,
               a.e OPERATOR(pg_catalog.->>) 'event_id' AS event_id,
               COALESCE(a.e #> '{exception,values,-1,stacktrace,frames}', a.e OPERATOR(pg_catalog.->) 'frames') AS frames,
               CASE WHEN a.e OPERATOR(pg_catalog.->) 'context' IS NULL
                      OR pg_catalog.jsonb_typeof(a.e OPERATOR(pg_catalog.->) 'context') OPERATOR(pg_catalog.=) 'object'
                    THEN a.e OPERATOR(pg_catalog.->) 'context'
                    ELSE pg_catalog.jsonb_build_object('value', a.e OPERATOR(pg_catalog.->) 'context') END AS ctx,
               CASE WHEN a.e ? 'timestamp' THEN monitoring._event_time(a.e OPERATOR(pg_catalog.->) 'timestamp') END AS client_time
        OFFSET 0   -- evaluated once per event, not once per reference
    ) x;
END
$$;
COMMENT ON FUNCTION monitoring._events_to_occurrences(jsonb) IS
    'Maps a JSON array of events (Sentry shape or flat shape) to tb_error_occurrence rows; a non-object event is an error';

-- The key under which a user counts as affected. Inlinable SQL.
CREATE OR REPLACE FUNCTION monitoring._user_key(p_user jsonb, p_context jsonb)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
AS $$
    SELECT COALESCE(p_user OPERATOR(pg_catalog.->>) 'id', p_user OPERATOR(pg_catalog.->>) 'email',
                    p_user OPERATOR(pg_catalog.->>) 'username', p_user OPERATOR(pg_catalog.->>) 'ip_address',
                    p_context OPERATOR(pg_catalog.->>) 'user_id')
$$;
COMMENT ON FUNCTION monitoring._user_key(jsonb, jsonb) IS 'User id, e-mail, name or ip of an event (or context.user_id)';

-- Is release a older than release b? Numeric parts compare as numbers (1.10 > 1.9).
CREATE OR REPLACE FUNCTION monitoring._release_older(a text, b text)
    RETURNS boolean
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = ''
AS $$
    SELECT CASE
        WHEN a IS NULL OR b IS NULL THEN false
        WHEN a ~ '\d' AND b ~ '\d' THEN
            ARRAY(SELECT m[1]::numeric FROM pg_catalog.regexp_matches(a, '(\d{1,30})', 'g') m)
            OPERATOR(pg_catalog.<) ARRAY(SELECT m[1]::numeric FROM pg_catalog.regexp_matches(b, '(\d{1,30})', 'g') m)
        ELSE a OPERATOR(pg_catalog.<) b
    END
$$;
COMMENT ON FUNCTION monitoring._release_older(text, text) IS 'true when release a is older than b (numeric parts compared as numbers)';

-- from plpython/scrub.py
CREATE OR REPLACE FUNCTION monitoring._scrub(p_value text, p_keys text[]) RETURNS text LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = ''
AS $pyfn$
# pg_observe:function monitoring._scrub(p_value text, p_keys text[]) RETURNS text LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = ''  # noqa: E501
# pg_observe:entry scrub_json(p_value, p_keys)
"""Replaces secrets in a JSON document with "[Filtered]" before it is stored.

- A value under a key that contains one of the configured words (case-insensitive, ignoring
  "-" and "_": "password" matches "Password", "db_password", "X-Password") is replaced whole.
- Credit-card-like numbers (13 to 19 digits, spaces or dashes allowed, passing the Luhn check)
  inside any string are replaced.
- Nesting deeper than MAX_DEPTH is cut: the subtree becomes "[Filtered: nested too deep]".
The input is JSON text (jsonb cast to text); the output is JSON text.
"""


import json
import re
import sys

FILTERED = "[Filtered]"
MAX_DEPTH = 64
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_SEPARATORS = re.compile(r"[-_\s]")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _scrub_cards(text: str) -> str:
    def repl(match: re.Match) -> str:
        digits = re.sub(r"[ -]", "", match.group(0))
        return FILTERED if 13 <= len(digits) <= 19 and _luhn_ok(digits) else match.group(0)

    return _CARD.sub(repl, text) if any(c.isdigit() for c in text) else text


def _secret_key(key: str, words: tuple) -> bool:
    k = _SEPARATORS.sub("", key.lower())
    return any(w in k for w in words)


def scrub(value: object, words: tuple, depth: int = 0) -> object:
    """Returns value with secrets replaced; never raises for JSON-shaped input."""
    if depth > MAX_DEPTH:
        return "[Filtered: nested too deep]"
    if isinstance(value, dict):
        return {
            k: (FILTERED if _secret_key(str(k), words) and v is not None else scrub(v, words, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub(v, words, depth + 1) for v in value]
    if isinstance(value, str):
        return _scrub_cards(value)
    return value


def scrub_json(p_value: str | None, p_keys: list | None) -> str | None:
    if p_value is None:
        return None
    # PostgreSQL accepts JSON nested far deeper than Python's default recursion limit.
    if sys.getrecursionlimit() < 25000:
        sys.setrecursionlimit(25000)
    words = tuple(_SEPARATORS.sub("", w.lower()) for w in (p_keys or []) if w)
    try:
        doc = json.loads(p_value)
    except (ValueError, RecursionError):
        return json.dumps("[Filtered: unreadable]")
    try:
        return json.dumps(scrub(doc, words), ensure_ascii=False)
    except RecursionError:
        return json.dumps("[Filtered: nested too deep]")

return scrub_json(p_value, p_keys)
$pyfn$;
COMMENT ON FUNCTION monitoring._scrub(text, text[]) IS 'Replaces values under secret keys and card numbers in JSON text with [Filtered]';

-- from plpython/fingerprint.py
CREATE OR REPLACE FUNCTION monitoring._fingerprint_events(p_events text, p_rules text) RETURNS text LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = ''
AS $pyfn$
# pg_observe:function monitoring._fingerprint_events(p_events text, p_rules text) RETURNS text LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = ''
# pg_observe:entry fingerprint_events_json(p_events, p_rules)
# ruff: noqa: E501
"""Error grouping: fingerprint algorithm version 2.

Every captured event gets a fingerprint, the hex SHA-256 of a list of string components
(``inputs``). Events with the same fingerprint form one group (issue). The components are
chosen by the first of these steps that applies:

1. **explicit** - the event's ``fingerprint``: a non-empty list of strings from the client
   (a single string counts as a list of one; numbers become strings, other elements are
   dropped). An element ``{{ default }}`` (any spacing inside the braces) is replaced by the
   components step 3 or 4 would compute. At most 100 parts are used, each cut to 1000
   characters. A list made only of ``{{ default }}`` elements is the same as no list.
2. **rule** - the first server-side rule (``p_rules``, in list order) whose match keys all
   match. Match keys are shell globs (``fnmatch``, case-sensitive; a key may also be a list
   of globs, any of which may match):
   ``type`` - the type of any exception of the chain; ``message`` - the message of any
   exception of the chain (the raw text, not parameterised); ``module``, ``function`` -
   any frame of any exception; ``path`` - any frame's ``abs_path`` or ``filename``;
   ``environment``, ``transaction``, ``logger``, ``level`` - the event's field;
   ``tags`` - an object of tag name -> glob, every one must match the event's tag.
   A rule without match keys matches every event; other keys are ignored; a key of the
   wrong type makes the rule never match. Outcome: ``fingerprint`` (list of strings,
   ``{{ default }}`` allowed) gives method "rule"; ``title`` sets ``group_title``. A rule
   with only a title keeps the default fingerprint (step 3 or 4) but still wins: later
   rules are not looked at. A rule with neither outcome is skipped. Rules are not looked
   at when step 1 applied.
3. **stack** - when at least one frame gives a component. For every exception of the chain,
   causes first and the raised (outermost) one last: its type (``<no type>`` if missing),
   then one ``where:function`` component per frame, outermost frame first. ``where`` is the
   frame's module, or else the base name of its file (no directory, no query string, JS
   bundler hashes removed: ``main.3f9a1c2b.js`` -> ``main.js``, ``index-BxWq3k2L.js`` ->
   ``index.js``); a missing part is ``?``. Only in-app frames (``in_app`` true) count; when
   no frame of that exception is in-app (or in_app is unknown for all), all its frames
   count. A component equal to the one before it (recursion) counts once. Line numbers,
   columns, context lines and directories never count. Generated names are normalised:
   Java ``$$Lambda$123/0x...`` -> ``$$Lambda``, ``$$EnhancerByCGLIB$$1a2b`` ->
   ``$$EnhancerByCGLIB``, ``$Proxy12`` -> ``$Proxy``, ``GeneratedMethodAccessor7`` ->
   ``GeneratedMethodAccessor``, other ``$<digits>`` -> ``$`` (anonymous classes, lambda
   methods); Go closures ``.func1.2`` -> ``.func``, ``gowrap1``/``deferwrap1`` -> without
   digits. (Goroutine ids and ``+0x`` offsets are never part of a frame.)
4. **message** - no usable frames: ``[type or "<no type>", line 1, line 2]`` where lines 1
   and 2 are the first two non-empty lines (stripped, each cut to 1000 characters) of the
   main message, parameterised by these replacements, in this order:
   e-mail -> ``<email>``; URL (``scheme://...``) -> ``<url>``; UUID -> ``<uuid>``;
   IPv4 and IPv6 address -> ``<ip>``; ISO date/time, ``10/03/2024``, ``03.10.2024``,
   ``Mar 10, 2024``, ``Tue, 10 Mar 2024 12:00:00 GMT``, ``12:30:45`` -> ``<date>``;
   ``0x...``, 8 or more hex characters with at least one digit and one letter a-f, and
   32/40/64-character hex hashes -> ``<hex>``; durations (``150ms``, ``2.5s``, ``3m``,
   ``1h2m3s``, ``5 seconds``) -> ``<duration>``; ``key=value``, ``key="quoted value"``,
   ``key='quoted'`` -> ``key=<value>``; decimal numbers -> ``<float>``; integers ->
   ``<int>``. (A run of digits only, like ``12345678``, is an integer, so that ids of
   every length group together.) For a Sentry ``logentry``/message object the unformatted
   ``message`` template is used when given, else ``formatted``.
5. **fallback** - no type, no message and no frames: ``["<no type>", "<no message>"]``.

The fingerprint is ``sha256("\\n".join(inputs).encode("utf-8"))`` in hex, so PostgreSQL
can recompute it: ``encode(sha256(convert_to(array_to_string(inputs, E'\\n'), 'UTF8')), 'hex')``.

Events may be flat (``exception_type``, ``message``, ``stack_trace``, ``frames``, ...) or
Sentry-shaped (``exception.values[]`` - the raised exception last, causes before it -
``message`` as a string or ``{"formatted", "message"}``, ``logentry``, ``stacktrace``,
``threads``, ``tags`` as an object or a list of ``[key, value]`` pairs). When both are
present the Sentry chain wins and the flat fields fill what its raised exception lacks.
When no frames were given, ``stack_trace`` text is parsed; its formats are recognised
automatically: Python tracebacks (with "During handling of the above exception" and "The
above exception was the direct cause" chains), V8/Node (``at f (file:1:2)``), Firefox and
Safari (``f@file:1:2``), Java/JVM (``Caused by:``, ``... 12 more``, ``Suppressed:`` blocks
skipped), .NET frames (``at A.B(args) in file:line 42``), Go panics and Ruby backtraces.
The text also gives the type and message when the event has none (or has the placeholder
type "Error"). Parsed frames get ``in_app`` from their path: false for site-packages,
dist-packages, /usr/lib/python, /usr/local/lib/python, .../lib/pythonX.Y/, <frozen ...>,
node_modules, node:..., internal/..., <anonymous>, /gems/, /ruby/, <internal:...>, Go's
/usr/local/go/, /usr/lib/go, .../src/runtime/, /pkg/mod/ and the runtime package, and
classes of java., javax., jdk., sun., com.sun., kotlin., kotlinx., scala., System.,
Microsoft.; true otherwise.

Limits, each a repair and never an error: only the first 64 KB of a message or stack text
is read; at most 500 frames per exception (the innermost 500 are kept) and 10 exceptions
per chain (the raised one and its 9 nearest causes); NUL characters are removed; result
strings are cut (title and culprit 200, frame fields 1000, type 512, message 64 KB). An
event that is not an object, or that fails in any unforeseen way, gets a fallback result.
Unparseable JSON for the whole batch is split into its top-level elements so that one bad
event does not cost the others their results.

Result per event: fingerprint, fingerprint_version (2), method, inputs, exception_type
(the raised exception's type, "Error" if missing), message (its message, "" if missing),
title ("Type: first message line, parameterised", at most 200 characters), culprit
("module in function" of the innermost in-app frame, else of the innermost frame, null
without frames), frames (the raised exception's frames, innermost last; keys filename,
abs_path, module, function, lineno, in_app, context_line) and group_title (a rule's
title, else null).

Standard library only, no plpy: the file is the body of monitoring._fingerprint_events().
"""

import fnmatch
import hashlib
import json
import math
import re

FINGERPRINT_VERSION = 2
MAX_TEXT = 65536
MAX_FRAMES = 500
MAX_CHAIN = 10
MAX_PARTS = 100
MAX_PART_LEN = 1000
MAX_FIELD = 1000
MAX_TYPE = 512
MAX_TITLE = 200
MAX_LINE = 1000
MAX_RULES = 1000
MAX_TAGS = 200
MAX_LINENO = 2147483647
MAX_FRAME_LINE = 4096  # longer lines are never frames (and never reach a backtracking regex)
NO_TYPE = "<no type>"
NO_MESSAGE = "<no message>"
DEFAULT_TYPE = "Error"
RESULT_KEYS = (
    "fingerprint", "fingerprint_version", "method", "inputs", "exception_type", "message",
    "title", "culprit", "frames", "group_title",
)
FRAME_KEYS = ("filename", "abs_path", "module", "function", "lineno", "in_app", "context_line")
_RULE_MATCH_KEYS = ("type", "message", "module", "function", "path", "environment", "transaction", "logger", "level")

_DEFAULT_PART = re.compile(r"\{\{\s*default\s*\}\}\Z")

# Parameterisation of messages (step 4), applied in this order.
_IPV6_GROUP = "[0-9A-Fa-f]{1,4}"
_IPV6 = (
    r"(?<![\w:.])(?=[0-9A-Fa-f:]*\d)(?:"
    + "|".join(
        (
            rf"(?:{_IPV6_GROUP}:){{7}}{_IPV6_GROUP}",
            rf"(?:{_IPV6_GROUP}:){{1,7}}:",
            rf"(?:{_IPV6_GROUP}:){{1,6}}:{_IPV6_GROUP}",
            rf"(?:{_IPV6_GROUP}:){{1,5}}(?::{_IPV6_GROUP}){{1,2}}",
            rf"(?:{_IPV6_GROUP}:){{1,4}}(?::{_IPV6_GROUP}){{1,3}}",
            rf"(?:{_IPV6_GROUP}:){{1,3}}(?::{_IPV6_GROUP}){{1,4}}",
            rf"(?:{_IPV6_GROUP}:){{1,2}}(?::{_IPV6_GROUP}){{1,5}}",
            rf"{_IPV6_GROUP}:(?::{_IPV6_GROUP}){{1,6}}",
            rf":(?::{_IPV6_GROUP}){{1,7}}",
        )
    )
    + r")(?:%\w+)?(?![\w:])"
)
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?"
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?"
_TIME = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[AaPp][Mm])?(?:\s?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}))?"
_DATE = (
    r"(?<![\w.:/-])(?:"
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?(?:\s?(?:Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?))?"
    r"|\d{1,2}/\d{1,2}/\d{2,4}|\d{4}/\d{1,2}/\d{1,2}|\d{1,2}\.\d{1,2}\.\d{4}"
    rf"|(?:{_WEEKDAY}\s+)?\d{{1,2}}\s+{_MONTH}\s+\d{{4}}"
    rf"|(?:{_WEEKDAY}\s+)?{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    rf")(?:(?:\s+|,\s*|T){_TIME})?(?![\w])"
    rf"|(?<![\w.:/-]){_TIME}(?![\w:])"
)
# (pattern, replacement, a string the line must contain, whether it must contain a digit)
_PARAMETERS = tuple(
    (re.compile(pattern), replacement, needs, needs_digit)
    for pattern, replacement, needs, needs_digit in (
        (r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+", "<email>", "@", False),
        (r"(?<![\w+.-])[A-Za-z][\w+.-]*://[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]]", "<url>", "://", False),
        (r"(?<![0-9A-Fa-f-])[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}(?![0-9A-Fa-f-])", "<uuid>", "-", True),
        (_IPV6, "<ip>", ":", True),
        (r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)", "<ip>", ".", True),
        (_DATE, "<date>", "", True),
        (r"(?<!\w)(?:0[xX][0-9A-Fa-f]+|[0-9A-Fa-f]{64}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{32}"
         r"|(?=[0-9A-Fa-f]*[A-Fa-f])(?=[0-9A-Fa-f]*\d)[0-9A-Fa-f]{8,})(?!\w)", "<hex>", "", False),
        (r"(?<![\w.])(?:(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|h|m|s)){2,}"
         r"|\d+(?:\.\d+)?(?:\s?(?:ns|us|µs|ms|msecs?|secs?|seconds?|mins?|minutes?|hours?|hrs?|days?)|[smhd]))(?!\w)",
         "<duration>", "", True),
        (r"(?<![\w.-])([A-Za-z_][\w.-]*)=(?!=)(?:\"[^\"\\]*(?:\\.[^\"\\]*)*\"|'[^'\\]*(?:\\.[^'\\]*)*'|[^\s,;&)\]}]+)",
         r"\1=<value>", "=", False),
        (r"(?<![\w.])\d+\.\d+(?:[eE][-+]?\d+)?(?!\w|\.\d)", "<float>", ".", True),
        (r"(?<!\w)\d+(?!\w)", "<int>", "", True),
    )
)
_DIGIT = re.compile(r"\d")

# Normalisation of frame names (step 3).
_JAVA_GENERATED = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"\$\$Lambda(?:\$\d+)?(?:/0x[0-9A-Fa-f]+)?", "$$Lambda"),
        (r"\$\$([A-Za-z]+)\$\$\w+", r"$$\1"),
        (r"\$HibernateProxy\$\w+", "$HibernateProxy"),
        (r"\$Proxy\d+", "$Proxy"),
        (r"(Generated(?:Serialization)?(?:Method|Constructor)Accessor)\d+", r"\1"),
        (r"/0x[0-9A-Fa-f]+", ""),
        (r"\$\d+", "$"),
    )
)
_GO_CLOSURE = re.compile(r"\.func\d+(?:\.\d+)*|(?<=\.)(gowrap|deferwrap)\d+")
_BUNDLE_HASH = re.compile(
    r"[.-](?:(?=[0-9A-Fa-f]*\d)[0-9A-Fa-f]{8,}"
    r"|(?=[\w-]{0,7}\d)(?=[\w-]{0,7}[A-Z])(?=[\w-]{0,7}[a-z])[\w-]{8})(?=\.)"
)

# Stack trace text.
_PY_FRAME = re.compile(r'^[ \t|]*File "([^"\n]*)", line (\d+)(?:, in (.*?))?\s*$')
_PY_SEPARATORS = (
    "During handling of the above exception, another exception occurred",
    "The above exception was the direct cause of the following exception",
)
_PY_EXCEPTION = re.compile(r"([A-Za-z_][\w.]*)(?::\s?(.*))?\Z", re.S)
_CARETS = re.compile(r"[\s^~]*\Z")
_JAVA_FRAME = re.compile(r"^\s*at ([^\s(]+)\(([^)]*)\)(?: in (.+?):line (\d+))?")
_JAVA_MODULE_PREFIX = re.compile(r"(?:[\w.-]+(?:@[\w.-]+)?)?/(?:[\w.-]*/)?(?=[\w$])")
_V8_FRAME = re.compile(
    r"^\s*at (?:(.+?) \(((?:.*:\d+)|<anonymous>|native|index \d+|unknown location)\)|(.+?:\d+(?::\d+)?))\s*\{?\s*$"
)
_V8_ALIAS = re.compile(r" \[as [^\]]*\]\Z")
_V8_EVAL = re.compile(r"\(([^()]*)\)")
_LOCATION = re.compile(r"(.*?)(?::(\d+))?(?::(\d+))?\Z", re.S)
_GECKO_FRAME = re.compile(r"^\s*([^@\s]*|(?:global|module|eval) code)@(.+?):(\d+)(?::(\d+))?\s*$")
_RUBY_FRAME = re.compile(r"^\s*(?:from\s+)?(.+?):(\d+):in\s+[`'](.*?)'(?::\s+(.*))?\s*$")
_RUBY_MESSAGE = re.compile(r"(.*?)\s*\(([A-Z][\w:]*)\)\Z", re.S)
_GO_PANIC = re.compile(r"(panic|fatal error): (.*)")
_GO_GOROUTINE = re.compile(r"goroutine \d+ \[[^\]]*\]:")
_GO_LOCATION = re.compile(r"^\s+(.+?):(\d+)(?: \+0x[0-9A-Fa-f]+)?\s*$")
_HEADER = re.compile(
    r"(?:Uncaught\s+)?(?:Exception in thread \"[^\"]*\"\s+)?([A-Za-z_$][\w$.]*)(?:\s\[([\w-]+)\])?(?::\s+(.*)|:)?\s*\Z"
)
_CAUSE_MARKERS = ("Caused by:", "[cause]:")
_NOT_APP_PATH = re.compile(
    r"site-packages|dist-packages|/usr/lib/python|/usr/local/lib/python|/lib/python\d+\.\d+/|<frozen |"
    r"node_modules|node:|^internal/|^<anonymous>|/gems/|/ruby/|<internal:|"
    r"/usr/local/go/|/usr/lib/go|/src/runtime/|/pkg/mod/"
)
_NOT_APP_CLASS = re.compile(r"(?:java|javax|jdk|sun|com\.sun|kotlin|kotlinx|scala|System|Microsoft)\.")

# Lenient JSON: the top-level items of an array or object, without parsing them.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')
_LONE_SURROGATE = re.compile(r"\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f]")
_JSON_KEY = re.compile(r'\s*("[^"\\]*(?:\\.[^"\\]*)*")\s*:')

_CACHE_LIMIT = 4096
_name_cache = {}
_file_cache = {}
_path_cache = {}
_glob_cache = {}
_param_cache = {}


# ---------------------------------------------------------------------------- coercion


def _text(value, limit):
    """A string from a JSON scalar, without NUL characters and cut to limit; None otherwise."""
    kind = type(value)
    if kind is not str:
        if kind is int:
            if value.bit_length() > 64:
                return None
            value = str(value)
        elif kind is float:
            if not math.isfinite(value):
                return None
            value = repr(value)
        else:
            return None
    if len(value) > limit:
        value = value[:limit]
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value


def _lineno(value):
    kind = type(value)
    if kind is int:
        return value if 0 <= value <= MAX_LINENO else None
    if kind is float:
        return int(value) if math.isfinite(value) and 0 <= value <= MAX_LINENO else None
    if kind is str and 0 < len(value) <= 10 and value.isdigit() and value.isascii():
        number = int(value)
        return number if number <= MAX_LINENO else None
    return None


def _flag(value):
    if value is True or value is False:
        return value
    if type(value) is str:
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    return None


def _frame(value):
    """A frame dict with exactly FRAME_KEYS, from whatever the client sent; None if not an object.
    (The hot path: clean strings, ints and booleans are taken as they are, without calls.)"""
    if type(value) is not dict:
        return None
    get = value.get
    filename, abs_path, module, function = get("filename"), get("abs_path"), get("module"), get("function")
    lineno, in_app, context_line = get("lineno"), get("in_app"), get("context_line")
    if filename is not None and (type(filename) is not str or len(filename) > MAX_FIELD or "\x00" in filename):
        filename = _text(filename, MAX_FIELD)
    if abs_path is not None and (type(abs_path) is not str or len(abs_path) > MAX_FIELD or "\x00" in abs_path):
        abs_path = _text(abs_path, MAX_FIELD)
    if module is not None and (type(module) is not str or len(module) > MAX_FIELD or "\x00" in module):
        module = _text(module, MAX_FIELD)
    if function is not None and (type(function) is not str or len(function) > MAX_FIELD or "\x00" in function):
        function = _text(function, MAX_FIELD)
    if context_line is not None and (
        type(context_line) is not str or len(context_line) > MAX_FIELD or "\x00" in context_line
    ):
        context_line = _text(context_line, MAX_FIELD)
    if lineno is not None and not (type(lineno) is int and 0 <= lineno <= MAX_LINENO):
        lineno = _lineno(lineno)
    if not (in_app is None or in_app is True or in_app is False):
        in_app = _flag(in_app)
    return {
        "filename": filename, "abs_path": abs_path, "module": module, "function": function,
        "lineno": lineno, "in_app": in_app, "context_line": context_line,
    }


def _frames_of(value):
    """Frames from a list of frames or a Sentry stacktrace object; None when there are none."""
    if type(value) is dict:
        value = value.get("frames")
    if type(value) is not list or not value:
        return None
    if len(value) > MAX_FRAMES:
        value = value[-MAX_FRAMES:]
    frames = [frame for frame in map(_frame, value) if frame is not None]
    return frames or None


def _thread_frames(value):
    """Frames of the crashed (else current, else only) thread of a Sentry threads interface."""
    if type(value) is dict:
        value = value.get("values")
    if type(value) is not list:
        return None
    threads = [t for t in value[:MAX_CHAIN * 10] if type(t) is dict and t.get("stacktrace") is not None]
    chosen = None
    for key in ("crashed", "current"):
        chosen = next((t for t in threads if t.get(key) is True), None)
        if chosen is not None:
            break
    if chosen is None and len(threads) == 1:
        chosen = threads[0]
    return _frames_of(chosen.get("stacktrace")) if chosen is not None else None


def _message_of(value):
    """(display, template) of a message given as a string or a {"formatted", "message"} object."""
    if type(value) is dict:
        formatted = _text(value.get("formatted"), MAX_TEXT)
        template = _text(value.get("message"), MAX_TEXT)
        return formatted or template, template or formatted
    text = _text(value, MAX_TEXT)
    return text, text


def _tags_of(value):
    if type(value) is dict:
        items = [item for _, item in zip(range(MAX_TAGS), value.items())]
    elif type(value) is list:
        items = []
        for pair in value[:MAX_TAGS]:
            if type(pair) in (list, tuple) and len(pair) == 2:
                items.append(pair)
            elif type(pair) is dict and "key" in pair:
                items.append((pair.get("key"), pair.get("value")))
    else:
        return {}
    tags = {}
    for key, val in items:
        key = _text(key, MAX_FIELD)
        val = _text(val, MAX_FIELD) if type(val) is not bool else ("true" if val else "false")
        if key is not None and val is not None:
            tags[key] = val
    return tags


def _link(exc_type, message, frames):
    return {"type": exc_type or None, "message": message or None, "frames": frames or None}


# ---------------------------------------------------------------------------- stack text


def _in_app_path(path):
    if not path:
        return False
    cached = _path_cache.get(path)
    if cached is None:
        if len(_path_cache) > _CACHE_LIMIT:
            _path_cache.clear()
        cached = _path_cache[path] = _NOT_APP_PATH.search(path) is None
    return cached


def _basename(path):
    cut = max(path.rfind("/"), path.rfind("\\"))
    return path[cut + 1:] if cut >= 0 else path


def _text_frame(path, lineno, function, module=None, in_app=None, context_line=None):
    if path is not None:
        path = path[:MAX_FIELD]
    return {
        "filename": _basename(path) if path else None,
        "abs_path": path or None,
        "module": module[:MAX_FIELD] if module else None,
        "function": function[:MAX_FIELD] if function else None,
        "lineno": _lineno(lineno),
        "in_app": _in_app_path(path) if in_app is None else in_app,
        "context_line": context_line,
    }


def _header(lines):
    """(type, message) from the lines before a block's frames ("TypeError: msg", ...)."""
    lines = [line.strip() for line in lines]
    lines = [line for line in lines if line]
    for index, line in enumerate(lines):
        match = _HEADER.match(line)
        if match is None:
            continue
        name, code, message = match.groups()
        if message is None and not line.endswith(":") and "." not in name and not name.endswith(
            ("Error", "Exception", "Throwable", "Panic", "Failure", "Fault")
        ):
            continue
        parts = [message] if message else []
        parts.extend(lines[index + 1:])
        message = "\n".join(parts)
        if code:
            message = f"[{code}] {message}" if message else f"[{code}]"
        return name, message
    return None, "\n".join(lines) or None


def _java_frame(line):
    match = _JAVA_FRAME.match(line) if len(line) <= MAX_FRAME_LINE else None
    if match is None:
        return None
    qualified, location, dotnet_path, dotnet_line = match.groups()
    prefix = _JAVA_MODULE_PREFIX.match(qualified)
    if prefix is not None:
        qualified = qualified[prefix.end():]
    cls, _, method = qualified.rpartition(".")
    if not cls:
        cls, method = None, qualified
    if dotnet_path is not None:
        path, lineno = dotnet_path, dotnet_line
    else:
        path, _, lineno = location.partition(":")
        if path in ("Native Method", "Unknown Source", "Unknown", "") or " " in path:
            path = None
    in_app = cls is None or _NOT_APP_CLASS.match(cls) is None
    if path is not None and dotnet_path is None:
        return {
            "filename": path[:MAX_FIELD], "abs_path": None, "module": cls[:MAX_FIELD] if cls else None,
            "function": method[:MAX_FIELD] or None, "lineno": _lineno(lineno), "in_app": in_app,
            "context_line": None,
        }
    return _text_frame(path, lineno, method, cls, in_app)


def _v8_frame(line):
    match = _V8_FRAME.match(line) if len(line) <= MAX_FRAME_LINE else None
    if match is None:
        return None
    function, location, bare = match.groups()
    if function is None:
        location = bare
    else:
        if function.startswith("async "):
            function = function[6:]
        function = _V8_ALIAS.sub("", function)
    if location.startswith("eval at "):
        inner = _V8_EVAL.findall(location)
        location = inner[-1] if inner else location
    if location in ("<anonymous>", "native", "unknown location") or location.startswith("index "):
        return _text_frame(None, None, function, in_app=False)
    path, lineno, _ = _LOCATION.match(location).groups()
    return _text_frame(path, lineno, function)


def _gecko_frame(line):
    match = _GECKO_FRAME.match(line) if len(line) <= MAX_FRAME_LINE else None
    if match is None:
        return None
    function, path, lineno, _ = match.groups()
    if function.startswith("async*"):
        function = function[6:]
    return _text_frame(path, lineno, function or None)


def _parse_blocks(lines, frame_parser):
    """Formats listing each exception's header then its frames innermost first, a cause after
    "Caused by:" (JVM, V8, Firefox/Safari, .NET). Returns links in Sentry order."""
    blocks = [([], [])]
    causes_first = False
    suppressed = None
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if suppressed is not None:
            if indent > suppressed:
                continue
            suppressed = None
        if stripped.startswith("Suppressed:"):
            suppressed = indent
            continue
        marker = next((m for m in _CAUSE_MARKERS if stripped.startswith(m)), None)
        if marker is not None or stripped.startswith("Wrapped by:"):
            if marker is None:
                causes_first = True
                marker = "Wrapped by:"
            blocks.append(([stripped[len(marker):]], []))
            continue
        frame = frame_parser(line)
        header, frames = blocks[-1]
        if frame is not None:
            frames.append(frame)
        elif not frames and not stripped.startswith("..."):
            header.append(stripped)
    links = []
    for header, frames in blocks:
        if not header and not frames:
            continue
        frames.reverse()
        exc_type, message = _header(header)
        links.append(_link(exc_type, message, frames))
    if not causes_first:
        links.reverse()
    return links


def _parse_python(lines):
    links = []
    frames = []
    exception = None
    last = None
    expect_context = False
    in_traceback = False
    for raw in lines:
        line = raw.rstrip()
        if not line:
            expect_context = False
            if exception is not None:
                exception.append("")
            continue
        match = _PY_FRAME.match(line) if len(line) <= MAX_FRAME_LINE else None
        if match is not None:
            if exception is not None:
                links.append(_python_link(frames, exception))
                frames, exception = [], None
            path, lineno, function = match.groups()
            last = _text_frame(path, lineno, function)
            frames.append(last)
            expect_context = in_traceback = True
            continue
        stripped = line.strip()
        if stripped.startswith(_PY_SEPARATORS):
            links.append(_python_link(frames, exception))
            frames, exception, expect_context = [], None, False
            continue
        if stripped.startswith("Traceback (most recent call last)"):
            if frames or exception is not None:
                links.append(_python_link(frames, exception))
                frames, exception = [], None
            in_traceback, expect_context = True, False
            continue
        if line[0] in " \t|":
            if expect_context and last is not None and _CARETS.match(stripped) is None:
                last["context_line"] = stripped[:MAX_FIELD]
            elif exception is not None:
                exception.append(stripped)
            expect_context = False
            continue
        expect_context = False
        if exception is not None:
            exception.append(line)
        elif in_traceback:
            exception = [line]
    if frames or exception is not None:
        links.append(_python_link(frames, exception))
    return [link for link in links if link["type"] or link["message"] or link["frames"]]


def _python_link(frames, exception):
    exc_type = message = None
    if exception:
        match = _PY_EXCEPTION.match(exception[0])
        if match is not None:
            exc_type, first = match.groups()
            rest = [first] if first else []
        else:
            rest = [exception[0]]
        message = "\n".join(rest + exception[1:]).strip() or None
    return _link(exc_type, message, frames)


def _parse_ruby(lines):
    blocks = []
    for line in lines:
        match = _RUBY_FRAME.match(line) if len(line) <= MAX_FRAME_LINE else None
        if match is None:
            stripped = line.strip()
            if not stripped:
                continue
            if not blocks or len(blocks[-1][2]) > 1:
                exc_type, message = _header([stripped])
                blocks.append([exc_type, message, []])
            else:
                block = blocks[-1]
                block[1] = f"{block[1]}\n{stripped}" if block[1] else stripped
            continue
        path, lineno, function, rest = match.groups()
        if rest is not None or not blocks:
            exc_type = message = None
            if rest is not None:
                found = _RUBY_MESSAGE.match(rest)
                message, exc_type = found.groups() if found is not None else (rest, None)
            blocks.append([exc_type, message, []])
        blocks[-1][2].append(_text_frame(path, lineno, function))
    links = []
    for exc_type, message, frames in reversed(blocks):
        frames.reverse()
        links.append(_link(exc_type, message, frames))
    return links


def _parse_go(lines):
    exc_type = None
    message = []
    index, count = 0, len(lines)
    while index < count:
        line = lines[index]
        index += 1
        if _GO_GOROUTINE.match(line):
            break
        match = _GO_PANIC.match(line)
        if match is not None and exc_type is None:
            exc_type = match.group(1)
            first = match.group(2).strip()
            if first.endswith(" [recovered]"):
                first = first[:-12]
            message.append(first)
        elif exc_type is not None and line.strip() and not line[0].isspace():
            message.append(line.strip())
    frames = []
    pending = None
    while index < count:
        line = lines[index]
        index += 1
        stripped = line.strip()
        if not stripped:
            if frames or pending is not None:
                break
            continue
        if line[0].isspace():
            match = _GO_LOCATION.match(line) if len(line) <= MAX_FRAME_LINE else None
            if match is not None and pending is not None:
                pending[1], pending[2] = match.group(1), match.group(2)
                frames.append(pending)
                pending = None
            continue
        if _GO_GOROUTINE.match(line):
            break
        if stripped.startswith("..."):
            continue
        if pending is not None:
            frames.append(pending)
        name = stripped
        if name.startswith("created by "):
            name = name[11:]
            cut = name.find(" in goroutine ")
            if cut > 0:
                name = name[:cut]
        if name.endswith(")"):
            cut = name.rfind("(")
            if cut > 0:
                name = name[:cut]
        pending = [name, None, None]
    if pending is not None:
        frames.append(pending)
    parsed = []
    for name, path, lineno in reversed(frames):
        slash = name.rfind("/")
        dot = name.find(".", slash + 1)
        module, function = (name[:dot], name[dot + 1:]) if dot > 0 else (None, name)
        runtime = module is not None and (module == "runtime" or module.startswith("runtime/"))
        parsed.append(_text_frame(path, lineno, function, module, False if runtime else None))
    return [_link(exc_type, "\n".join(message), parsed)]


def _detect_format(lines):
    for line in lines:
        if len(line) > MAX_FRAME_LINE:
            continue
        if 'File "' in line and _PY_FRAME.match(line):
            return "python"
        if line.startswith("Traceback (most recent call last)"):
            return "python"
        if "at " in line:
            if _JAVA_FRAME.match(line):
                return "java"
            if _V8_FRAME.match(line):
                return "v8"
        if _GO_GOROUTINE.match(line) or _GO_PANIC.match(line):
            return "go"
        if ":in " in line and _RUBY_FRAME.match(line):
            return "ruby"
        if "@" in line and _GECKO_FRAME.match(line):
            return "gecko"
    return None


def parse_stack_trace(text: str) -> list[dict]:
    """Exceptions (Sentry order: causes first, the raised one last) parsed from stack trace
    text; each a dict of type, message and frames (innermost last). [] when nothing is found."""
    if type(text) is not str or not text:
        return []
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT]
    if "\x00" in text:
        text = text.replace("\x00", "")
    lines = text.splitlines()
    kind = _detect_format(lines)
    if kind == "python":
        links = _parse_python(lines)
    elif kind == "java":
        links = _parse_blocks(lines, _java_frame)
    elif kind == "v8":
        links = _parse_blocks(lines, _v8_frame)
    elif kind == "gecko":
        links = _parse_blocks(lines, _gecko_frame)
    elif kind == "ruby":
        links = _parse_ruby(lines)
    elif kind == "go":
        links = _parse_go(lines)
    else:
        return []
    links = links[-MAX_CHAIN:]
    for link in links:
        frames = link["frames"]
        if frames and len(frames) > MAX_FRAMES:
            link["frames"] = frames[-MAX_FRAMES:]
        if link["type"]:
            link["type"] = link["type"][:MAX_TYPE]
    return links


# ---------------------------------------------------------------------------- event


def _links_from_exception(value):
    if type(value) is dict:
        value = value.get("values")
    if type(value) is not list:
        return []
    links = []
    for item in value[-MAX_CHAIN:]:
        if type(item) is not dict:
            continue
        frames = _frames_of(item.get("stacktrace"))
        links.append(_link(_text(item.get("type"), MAX_TYPE), _text(item.get("value"), MAX_TEXT), frames))
    return links


def _extract(event):
    """(chain, group message) of an event: the chain in Sentry order, the raised exception last."""
    get = event.get
    chain = _links_from_exception(get("exception"))
    flat_type = _text(get("exception_type"), MAX_TYPE)
    display, template = _message_of(get("message"))
    if not display:
        display, template = _message_of(get("logentry"))
    stacktrace = get("stacktrace")
    frames = _frames_of(get("frames"))
    if frames is None and type(stacktrace) is dict:
        frames = _frames_of(stacktrace)
    if frames is None and get("threads") is not None:
        frames = _thread_frames(get("threads"))
    if chain:
        main = chain[-1]
        if not main["type"] and flat_type:
            main["type"] = flat_type
        if main["message"]:
            template = main["message"]
        elif display:
            main["message"] = display
        if not main["frames"] and frames:
            main["frames"] = frames
    elif flat_type or display or frames:
        chain = [_link(flat_type, display, frames)]
    main = chain[-1] if chain else None
    has_frames = any(link["frames"] for link in chain)
    main_type = main["type"] if main is not None else None
    if not has_frames or main_type is None or main_type == DEFAULT_TYPE:
        text = get("stack_trace")
        if type(text) is not str:
            text = stacktrace if type(stacktrace) is str else get("traceback")
        parsed = parse_stack_trace(text) if type(text) is str and text else []
        if parsed:
            last = parsed[-1]
            if main is None:
                chain = parsed
            elif not has_frames and any(link["frames"] for link in parsed):
                # The parsed chain replaces the frameless one; the event's own fields win,
                # except the placeholder type "Error" over a type found in the text.
                if main_type and not (main_type == DEFAULT_TYPE and last["type"]):
                    last["type"] = main_type
                if main["message"]:
                    last["message"] = main["message"]
                chain = parsed
            else:
                if last["type"] and (main_type is None or main_type == DEFAULT_TYPE):
                    main["type"] = last["type"]
                if not main["message"] and last["message"]:
                    main["message"] = last["message"]
    if not template and chain:
        template = chain[-1]["message"]
    return chain, template


# ---------------------------------------------------------------------------- components


def _norm_name(name):
    """A module or function name without generated numbering (Java lambdas, proxies, Go closures)."""
    if "$" not in name and ".func" not in name and "wrap" not in name and "/0x" not in name and "Accessor" not in name:
        return name
    cached = _name_cache.get(name)
    if cached is None:
        cached = name
        if "$" in cached or "/0x" in cached or "Accessor" in cached:
            for pattern, replacement in _JAVA_GENERATED:
                cached = pattern.sub(replacement, cached)
        cached = _GO_CLOSURE.sub(lambda m: ".func" if m.group(1) is None else m.group(1), cached)
        if len(_name_cache) > _CACHE_LIMIT:
            _name_cache.clear()
        _name_cache[name] = cached
    return cached


def _norm_file(path):
    """The base name of a path or URL without query string, fragment or bundler hash."""
    cached = _file_cache.get(path)
    if cached is None:
        base = path
        for mark in ("?", "#"):
            cut = base.find(mark)
            if cut > 0:
                base = base[:cut]
        base = _basename(base.rstrip("/\\")) or base
        if len(base) >= 10 and base.count(".") + base.count("-") >= 2:
            base = _BUNDLE_HASH.sub("", base)
        if len(_file_cache) > _CACHE_LIMIT:
            _file_cache.clear()
        cached = _file_cache[path] = base
    return cached


def _frame_component(frame):
    module = frame["module"]
    if module:
        where = _norm_name(module)
    else:
        path = frame["filename"] or frame["abs_path"]
        where = _norm_file(path) if path else None
    function = frame["function"]
    if function:
        function = _norm_name(function)
    if not where and not function:
        return None
    return f"{where or '?'}:{function or '?'}"


def _stack_components(frames):
    app = [frame for frame in frames if frame["in_app"] is True]
    components = []
    previous = None
    for frame in app or frames:
        component = _frame_component(frame)
        if component is not None and component != previous:
            components.append(component)
            previous = component
    return components


def parameterize(line: str) -> str:
    """One message line with its variable parts replaced by <email>, <url>, ... <int>."""
    cached = _param_cache.get(line)
    if cached is not None:
        return cached
    original = line
    digit = _DIGIT.search(line) is not None
    for pattern, replacement, needs, needs_digit in _PARAMETERS:
        if (needs_digit and not digit) or (needs and needs not in line):
            continue
        line = pattern.sub(replacement, line)
    if len(_param_cache) > _CACHE_LIMIT:
        _param_cache.clear()
    _param_cache[original] = line
    return line


def _message_lines(message, count):
    lines = []
    if message:
        for line in message.splitlines():
            line = line.strip()
            if line:
                lines.append(line[:MAX_LINE])
                if len(lines) == count:
                    break
    return lines


def _default_inputs(chain, main_type, group_message):
    """(method, inputs) of steps 3 to 5."""
    components = []
    has_frames = False
    for link in chain:
        components.append(link["type"] or NO_TYPE)
        if link["frames"]:
            frame_components = _stack_components(link["frames"])
            if frame_components:
                has_frames = True
                components.extend(frame_components)
    if has_frames:
        return "stack", components
    lines = [parameterize(line) for line in _message_lines(group_message, 2)]
    if main_type or lines:
        return "message", [main_type or NO_TYPE, *(lines or [NO_MESSAGE])]
    return "fallback", [NO_TYPE, NO_MESSAGE]


def _explicit_parts(value):
    """Fingerprint parts as strings (at most MAX_PARTS, each cut); None when there are none."""
    if type(value) is str:
        value = [value]
    elif type(value) is not list:
        return None
    parts = []
    for item in value:
        part = _text(item, MAX_PART_LEN)
        if part is not None:
            parts.append(part)
            if len(parts) == MAX_PARTS:
                break
    return parts or None


def _is_default(part):
    return part.startswith("{{") and _DEFAULT_PART.match(part) is not None


def _expand(parts, default):
    inputs = []
    for part in parts:
        if _is_default(part):
            inputs.extend(default)
        else:
            inputs.append(part)
    return inputs


# ---------------------------------------------------------------------------- rules


def _glob(pattern):
    """A match function for a glob or a list of globs; None when the pattern is not one."""
    if type(pattern) is str:
        matcher = _glob_cache.get(pattern)
        if matcher is None:
            if len(_glob_cache) > _CACHE_LIMIT:
                _glob_cache.clear()
            matcher = _glob_cache[pattern] = re.compile(fnmatch.translate(pattern)).match
        return matcher
    if type(pattern) is list and pattern and all(type(p) is str for p in pattern):
        matchers = [_glob(p) for p in pattern[:100]]
        return lambda text: any(m(text) for m in matchers)
    return None


def compile_rules(rules: list[dict]) -> list[tuple]:
    """Rules as (matchers, tag matchers, fingerprint parts or None, title or None), in order;
    invalid rules and rules without an outcome are left out."""
    if type(rules) is dict:
        rules = [rules]
    if type(rules) is not list:
        return []
    compiled = []
    for rule in rules[:MAX_RULES]:
        if type(rule) is not dict:
            continue
        parts = _explicit_parts(rule.get("fingerprint"))
        title = _text(rule.get("title"), MAX_TITLE) or None
        if parts is None and title is None:
            continue
        matchers = []
        valid = True
        for key in _RULE_MATCH_KEYS:
            pattern = rule.get(key)
            if pattern is None:
                continue
            matcher = _glob(pattern)
            if matcher is None:
                valid = False
                break
            matchers.append((key, matcher))
        tag_matchers = []
        tags = rule.get("tags")
        if valid and tags is not None:
            if type(tags) is not dict:
                valid = False
            else:
                for name, pattern in tags.items():
                    matcher = _glob(pattern)
                    if matcher is None:
                        valid = False
                        break
                    tag_matchers.append((name, matcher))
        if valid:
            compiled.append((matchers, tag_matchers, parts, title))
    return compiled


def _candidates(key, event, chain, main_type, cache):
    values = cache.get(key)
    if values is not None:
        return values
    if key == "type":
        values = {link["type"] for link in chain if link["type"]}
        values.add(main_type)
    elif key == "message":
        values = {link["message"] or "" for link in chain} or {""}
    elif key in ("module", "function", "path"):
        values = set()
        for link in chain:
            for frame in link["frames"] or ():
                if key == "path":
                    values.add(frame["abs_path"])
                    values.add(frame["filename"])
                else:
                    values.add(frame[key])
        values.discard(None)
    else:
        value = _text(event.get(key), MAX_TEXT)
        values = {value} if value is not None else set()
    cache[key] = values
    return values


def _first_rule(rules, event, chain, main_type):
    cache = {}
    tags = None
    for rule in rules:
        matchers, tag_matchers, _, _ = rule
        matched = True
        for key, matcher in matchers:
            if not any(matcher(value) for value in _candidates(key, event, chain, main_type, cache)):
                matched = False
                break
        if matched and tag_matchers:
            if tags is None:
                tags = _tags_of(event.get("tags"))
            for name, matcher in tag_matchers:
                value = tags.get(name)
                if value is None or not matcher(value):
                    matched = False
                    break
        if matched:
            return rule
    return None


# ---------------------------------------------------------------------------- results


def _cut(text, limit):
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _culprit(frames):
    if not frames:
        return None
    frame = next((f for f in reversed(frames) if f["in_app"] is True), frames[-1])
    where = frame["module"] or frame["filename"] or frame["abs_path"]
    function = frame["function"]
    if where and function:
        return _cut(f"{where} in {function}", MAX_TITLE)
    return _cut(where or function, MAX_TITLE) if where or function else None


def _title(exc_type, message):
    lines = _message_lines(message, 1)
    first = parameterize(lines[0]) if lines else ""
    if exc_type and first:
        title = f"{exc_type}: {first}"
    else:
        title = exc_type or first or DEFAULT_TYPE
    return _cut(" ".join(title.split()), MAX_TITLE)


def _result(method, inputs, exc_type, message, frames, group_title):
    joined = "\n".join(inputs).encode("utf-8", "surrogatepass")
    return {
        "fingerprint": hashlib.sha256(joined).hexdigest(),
        "fingerprint_version": FINGERPRINT_VERSION,
        "method": method,
        "inputs": inputs,
        "exception_type": exc_type or DEFAULT_TYPE,
        "message": message or "",
        "title": _title(exc_type, message),
        "culprit": _culprit(frames),
        "frames": frames or [],
        "group_title": group_title,
    }


def _fallback_result():
    return _result("fallback", [NO_TYPE, NO_MESSAGE], None, None, None, None)


def _fingerprint(event, rules):
    if type(event) is not dict:
        return _fallback_result()
    chain, group_message = _extract(event)
    main = chain[-1] if chain else None
    main_type = main["type"] if main else None
    message = main["message"] if main else None
    frames = main["frames"] if main else None
    group_title = None
    default = None
    parts = _explicit_parts(event.get("fingerprint"))
    if parts is not None and all(_is_default(part) for part in parts):
        parts = None
    if parts is not None:
        method = "explicit"
        if any(_is_default(part) for part in parts):
            default = _default_inputs(chain, main_type, group_message)[1]
        inputs = _expand(parts, default)
    else:
        rule = _first_rule(rules, event, chain, main_type or DEFAULT_TYPE) if rules else None
        method, default = _default_inputs(chain, main_type, group_message)
        inputs = default
        if rule is not None:
            group_title = rule[3]
            if rule[2] is not None:
                method = "rule"
                inputs = _expand(rule[2], default)
    return _result(method, inputs, main_type, message, frames, group_title)


def _fingerprint_safe(event, rules):
    try:
        return _fingerprint(event, rules)
    except Exception:  # an event must never fail the batch
        return _fallback_result()


def fingerprint_event(event: dict, rules: list[dict]) -> dict:
    """The result object (see the module docstring) for one event dict and a list of rule dicts."""
    try:
        compiled = compile_rules(rules) if rules else []
    except Exception:
        compiled = []
    return _fingerprint_safe(event, compiled)


# ---------------------------------------------------------------------------- JSON entry


def _split_json(text):
    """Top-level item texts of a JSON array or object, found without parsing them."""
    items = []
    depth = 0
    start = 0
    for match in _JSON_TOKEN.finditer(text):
        char = text[match.start()]
        if char == '"':
            continue
        if char in "[{":
            depth += 1
            if depth == 1:
                start = match.end()
        elif char in "]}":
            if depth == 1:
                items.append(text[start:match.start()])
            depth -= 1
            if depth <= 0:
                break
        elif depth == 1:
            items.append(text[start:match.start()])
            start = match.end()
    else:
        if depth >= 1:  # truncated: the unfinished last item
            items.append(text[start:])
    return [item for item in items if item.strip()]


def _lenient_object(text):
    """An object whose members that fail to parse (too deep, huge numbers) are left out."""
    result = {}
    for member in _split_json(text):
        match = _JSON_KEY.match(member)
        if match is None:
            continue
        try:
            result[json.loads(match.group(1))] = json.loads(member[match.end():])
        except (ValueError, RecursionError):
            continue
    return result


def _lenient_value(text):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _lenient_object(text) if text.lstrip().startswith("{") else None


def _load_events(text):
    if text is None:
        return []
    if type(text) is list:
        return text
    if type(text) is not str:
        return [text]
    try:
        events = json.loads(text)
    except (ValueError, RecursionError):
        stripped = text.lstrip()
        if stripped.startswith("["):
            return [_lenient_value(item) for item in _split_json(stripped)]
        return [_lenient_value(stripped)]
    return events if type(events) is list else [events]


def _load_rules(text):
    if text is None or type(text) is list:
        return text or []
    try:
        return json.loads(text)
    except (ValueError, RecursionError, TypeError):
        return []


def _dump(results):
    out = json.dumps(results, separators=(",", ":"))
    if "\\ud" in out and _LONE_SURROGATE.search(out):  # lone surrogates (from "\ud800" escapes) are not valid in jsonb
        raw = json.dumps(results, ensure_ascii=False).encode("utf-8", "replace").decode("utf-8")
        out = json.dumps(json.loads(raw), separators=(",", ":"))
    return out


def fingerprint_events_json(p_events: str, p_rules: str) -> str:
    """JSON array of results, one per event of the JSON array p_events, in order. p_rules is
    a JSON array of rules (or null)."""
    try:
        rules = compile_rules(_load_rules(p_rules))
    except Exception:
        rules = []
    try:
        events = _load_events(p_events)
    except Exception:
        events = [None]
    return _dump([_fingerprint_safe(event, rules) for event in events])

return fingerprint_events_json(p_events, p_rules)
$pyfn$;
COMMENT ON FUNCTION monitoring._fingerprint_events(text, text) IS
    'Fingerprint algorithm version 2 (see docs/errors.md): explicit, rule, stack, message; parses raw stack traces';

CREATE OR REPLACE FUNCTION monitoring._fingerprint_rules()
    RETURNS text
    LANGUAGE plpgsql
    STABLE
    SET search_path = ''
AS $$
BEGIN
    RETURN (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
               'type', r.match_type, 'message', r.match_message, 'module', r.match_module,
               'function', r.match_function, 'path', r.match_path, 'environment', r.match_environment,
               'tags', r.match_tags, 'fingerprint', pg_catalog.to_jsonb(r.fingerprint), 'title', r.title))
               ORDER BY r.position, r.rule_id), '[]')::text
    FROM monitoring.error_fingerprint_rule r
    WHERE r.enabled);
END
$$;
COMMENT ON FUNCTION monitoring._fingerprint_rules() IS 'Enabled fingerprint rules as the JSON the fingerprint function reads';

-- Scrubs one occurrence: one PL/Python call for all its free-form fields, or one per field
-- when the whole could not be read (absurd nesting). Called only for rows the capture's
-- cheap test flags.
CREATE OR REPLACE FUNCTION monitoring._scrub_occurrence(p_row monitoring.tb_error_occurrence, p_keys text[])
    RETURNS monitoring.tb_error_occurrence
    LANGUAGE plpgsql
    IMMUTABLE
    SET search_path = ''
AS $$
DECLARE
    scrubbed jsonb := monitoring._scrub(pg_catalog.jsonb_build_object(
        'message', p_row.message, 'context', p_row.context, 'tags', p_row.tags, 'user', p_row.user_info,
        'request', p_row.request, 'stack_trace', p_row.stack_trace)::text, p_keys)::jsonb;
BEGIN
    IF pg_catalog.jsonb_typeof(scrubbed) OPERATOR(pg_catalog.<>) 'object' THEN
        scrubbed := pg_catalog.jsonb_build_object(
            'message', monitoring._scrub(pg_catalog.to_jsonb(p_row.message)::text, p_keys)::jsonb,
            'context', monitoring._scrub(p_row.context::text, p_keys)::jsonb,
            'tags', monitoring._scrub(p_row.tags::text, p_keys)::jsonb,
            'user', monitoring._scrub(p_row.user_info::text, p_keys)::jsonb,
            'request', monitoring._scrub(p_row.request::text, p_keys)::jsonb,
            'stack_trace', monitoring._scrub(pg_catalog.to_jsonb(p_row.stack_trace)::text, p_keys)::jsonb);
    END IF;
    p_row.message := COALESCE(scrubbed OPERATOR(pg_catalog.->>) 'message', '');
    p_row.context := NULLIF(scrubbed OPERATOR(pg_catalog.->) 'context', 'null');
    p_row.tags := NULLIF(scrubbed OPERATOR(pg_catalog.->) 'tags', 'null');
    p_row.user_info := NULLIF(scrubbed OPERATOR(pg_catalog.->) 'user', 'null');
    p_row.request := NULLIF(scrubbed OPERATOR(pg_catalog.->) 'request', 'null');
    p_row.stack_trace := scrubbed OPERATOR(pg_catalog.->>) 'stack_trace';
    RETURN p_row;
END
$$;
COMMENT ON FUNCTION monitoring._scrub_occurrence(monitoring.tb_error_occurrence, text[]) IS
    'Replaces secrets and card numbers in the free-form fields of one occurrence with [Filtered]';

-- The full fingerprint of one occurrence (PL/Python): called for fingerprint cache misses.
CREATE OR REPLACE FUNCTION monitoring._fingerprint_occurrence(p_row monitoring.tb_error_occurrence)
    RETURNS jsonb
    LANGUAGE plpgsql
    STABLE
    SET search_path = ''
AS $$
BEGIN
    RETURN (monitoring._fingerprint_events(
               pg_catalog.jsonb_build_array(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                   'exception_type', p_row.exception_type, 'message', p_row.message,
                   -- the raw text is parsed only when no structured frames came with the event
                   'stack_trace', CASE WHEN p_row.frames IS NULL THEN p_row.stack_trace END, 'frames', p_row.frames,
                   'exception', CASE WHEN p_row.exception_chain IS NOT NULL
                                     THEN pg_catalog.jsonb_build_object('values', p_row.exception_chain) END,
                   'fingerprint', pg_catalog.to_jsonb(p_row.client_fingerprint),
                   'environment', p_row.environment, 'tags', p_row.tags)))::text,
               monitoring._fingerprint_rules())::jsonb) OPERATOR(pg_catalog.->) 0;
END
$$;
COMMENT ON FUNCTION monitoring._fingerprint_occurrence(monitoring.tb_error_occurrence) IS
    'Runs fingerprint algorithm version 2 on one occurrence with the enabled rules';

-- The key of an occurrence in error_fingerprint_cache, or NULL when its fingerprint may
-- depend on more than its exception type and stack: a client fingerprint, a chain of
-- exceptions (their messages count), or rules that look at the message, environment or tags.
-- The key covers the type, the frames, and the raw stack trace when the algorithm reads it
-- (no frames, or the placeholder type "Error"), less a one-line message at its end (the
-- Python traceback's last line), which never changes the frames. Inlinable SQL.
CREATE OR REPLACE FUNCTION monitoring._fingerprint_cache_key(p_row monitoring.tb_error_occurrence, p_usable boolean)
    RETURNS uuid
    LANGUAGE sql
    STABLE
    PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_usable AND (p_row).client_fingerprint IS NULL AND (p_row).exception_chain IS NULL THEN
        pg_catalog.md5(pg_catalog.concat_ws(E'\x1f', 'fingerprint v2', (p_row).exception_type,
            pg_catalog.jsonb_hash_extended((p_row).frames, 0),
            CASE WHEN (p_row).frames IS NULL OR (p_row).exception_type OPERATOR(pg_catalog.=) 'Error' THEN
                CASE WHEN (p_row).message OPERATOR(pg_catalog.<>) '' AND pg_catalog.strpos((p_row).message, E'\n') OPERATOR(pg_catalog.=) 0
                          AND pg_catalog.right((p_row).stack_trace, pg_catalog.length((p_row).message)) OPERATOR(pg_catalog.=) (p_row).message
                     THEN pg_catalog.left((p_row).stack_trace, -pg_catalog.length((p_row).message)) OPERATOR(pg_catalog.||) E'\x1e'
                     ELSE (p_row).stack_trace END
            END))::uuid
    END
$$;
COMMENT ON FUNCTION monitoring._fingerprint_cache_key(monitoring.tb_error_occurrence, boolean) IS
    'Key of an occurrence in error_fingerprint_cache (NULL: not cacheable)';

-- Prepares occurrences for storage, set-based: drops repeated event ids (stored in the last
-- 30 days, or twice in this batch), applies the limits, scrubs what the cheap test flags,
-- fingerprints (from the cache, or in full for misses), finds or creates each group, and
-- reopens groups that regressed or whose ignore ran out. Returns the rows to store, each
-- with its error_id. Counting is left to _count_error_occurrences, after the INSERT.
CREATE OR REPLACE FUNCTION monitoring._prepare_error_occurrences(p_rows monitoring.tb_error_occurrence[])
    RETURNS SETOF monitoring.tb_error_occurrence
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
    SET plan_cache_mode = force_generic_plan   -- see the note at the top
AS $$
DECLARE
    scrub_keys text[];
    scrub_pattern text;
    cache_usable boolean;
    kept monitoring.tb_error_occurrence[];
    ids uuid[];
    prints text[];
    results jsonb[];
    grp record;
    reopening record;
BEGIN
    SELECT pg_catalog.array_agg(k.key_word), pg_catalog.string_agg(k.key_pattern, '|')
    INTO scrub_keys, scrub_pattern FROM monitoring.error_scrub_key k;

    -- Dedupe, limits, scrubbing. The scrubber (PL/Python) runs only for a row whose JSON
    -- fields hold a key word (the same separator-tolerant test the scrubber applies), whose
    -- text holds a long run of digits, or whose JSON has more openers than the depth limit:
    -- cheap tests in C that most events fail.
    WITH fresh AS (
        INSERT INTO monitoring.error_event_seen (event_id)
        SELECT DISTINCT r.event_id FROM pg_catalog.unnest(p_rows) r WHERE r.event_id IS NOT NULL
        ON CONFLICT DO NOTHING
        RETURNING event_id
    ), limited AS (
        SELECT DISTINCT ON (COALESCE(r.event_id, r.occurrence_id)) r.ordinality, ROW(
            r.occurrence_id, NULL, r.occurred_at, r.client_timestamp, pg_catalog.now(), r.event_id,
            monitoring._truncate(COALESCE(NULLIF(r.exception_type, ''), 'Error'), 512),
            monitoring._truncate(COALESCE(r.message, ''), 8192),
            monitoring._truncate(r.stack_trace, 262144),
            r.frames, r.exception_chain, r.client_fingerprint[1:100],
            CASE WHEN r.context IS NULL OR pg_catalog.jsonb_typeof(r.context) OPERATOR(pg_catalog.=) 'object'
                 THEN r.context ELSE pg_catalog.jsonb_build_object('value', r.context) END,
            r.tags, r.user_info, r.request, r.environment, r.release_version, r.service, r.server_name,
            r.transaction_name, r.logger, r.level,
            -- ids as spans store them (lower-case hex), so that the joins by trace id match;
            -- what is no id at all is kept as sent
            COALESCE(monitoring._otel_trace_id(r.trace_id), r.trace_id),
            COALESCE(monitoring._otel_span_id(r.span_id), r.span_id))::monitoring.tb_error_occurrence AS o
        FROM pg_catalog.unnest(p_rows) WITH ORDINALITY r
        WHERE r.event_id IS NULL OR r.event_id IN (SELECT f.event_id FROM fresh f)
        ORDER BY COALESCE(r.event_id, r.occurrence_id), r.ordinality
    )
    SELECT pg_catalog.array_agg(
               CASE WHEN d.objects OPERATOR(pg_catalog.~*) scrub_pattern
                      OR d.objects OPERATOR(pg_catalog.~) '\d(?:[ -]?\d){12,18}'
                      OR (l.o).message OPERATOR(pg_catalog.~) '\d(?:[ -]?\d){12,18}'
                      OR (l.o).stack_trace OPERATOR(pg_catalog.~) '\d(?:[ -]?\d){12,18}'
                      -- openers counted by bytes with replace(): translate() costs ten times as much
                      OR pg_catalog.octet_length(d.objects) OPERATOR(pg_catalog.-) pg_catalog.octet_length(
                         pg_catalog.replace(pg_catalog.replace(d.objects, '{', ''), '[', '')) OPERATOR(pg_catalog.>) 64
                    THEN monitoring._scrub_occurrence(l.o, scrub_keys)
                    ELSE l.o END
               ORDER BY l.ordinality)   -- the batch's order: the first occurrence makes a new group
    INTO kept
    FROM limited l
    CROSS JOIN LATERAL (
        SELECT pg_catalog.concat_ws(' ', (l.o).context, (l.o).tags, (l.o).user_info, (l.o).request) AS objects
        OFFSET 0
    ) d;

    -- Fingerprints: from the cache when the key allows it, else in full (PL/Python), and
    -- remembered when they depend on nothing but the key (method "stack").
    cache_usable := NOT EXISTS (
        SELECT FROM monitoring.error_fingerprint_rule r
        WHERE r.enabled AND (r.match_message IS NOT NULL OR r.match_environment IS NOT NULL OR r.match_tags IS NOT NULL));
    WITH keyed AS MATERIALIZED (
        SELECT o.occurrence_id, o.frames IS NULL AS without_frames,
               monitoring._fingerprint_cache_key(o, cache_usable) AS input_key, o
        FROM pg_catalog.unnest(kept) o
    ), looked AS (
        SELECT k.occurrence_id, k.input_key, k.without_frames, c.result AS cached,
               CASE WHEN c.result IS NULL THEN monitoring._fingerprint_occurrence(k.o) END AS computed
        FROM keyed k
        LEFT JOIN monitoring.error_fingerprint_cache c ON c.input_key OPERATOR(pg_catalog.=) k.input_key
    ), remembered AS (
        INSERT INTO monitoring.error_fingerprint_cache (input_key, result)
        SELECT DISTINCT ON (l.input_key) l.input_key,
               CASE WHEN l.without_frames THEN l.computed ELSE l.computed OPERATOR(pg_catalog.-) 'frames' END
        FROM looked l
        WHERE l.input_key IS NOT NULL AND l.cached IS NULL
          AND l.computed OPERATOR(pg_catalog.->>) 'method' OPERATOR(pg_catalog.=) 'stack'
        ON CONFLICT DO NOTHING
    ), fingerprinted AS (
        SELECT l.occurrence_id, COALESCE(l.cached, l.computed) AS fp FROM looked l
    )
    SELECT pg_catalog.array_agg(f.occurrence_id), pg_catalog.array_agg(f.fp),
           -- A client's own single-part fingerprint ("payment_timeout_error") is kept readable.
           pg_catalog.array_agg(CASE WHEN f.fp OPERATOR(pg_catalog.->>) 'method' OPERATOR(pg_catalog.=) 'explicit'
                                      AND pg_catalog.jsonb_array_length(f.fp OPERATOR(pg_catalog.->) 'inputs') OPERATOR(pg_catalog.=) 1
                                      AND pg_catalog.length(f.fp #>> '{inputs,0}') OPERATOR(pg_catalog.<=) 200
                                 THEN f.fp #>> '{inputs,0}' ELSE f.fp OPERATOR(pg_catalog.->>) 'fingerprint' END)
    INTO ids, results, prints
    FROM fingerprinted f;

    -- New groups, made from the earliest occurrence of each new fingerprint. A concurrent
    -- capture may create the same group a moment earlier: ON CONFLICT leaves it to that one,
    -- and the next statement (a new snapshot) sees it.
    WITH firsts AS (
        SELECT DISTINCT ON (f.fingerprint) f.fingerprint, f.fp, o.exception_type, o.message, o.level, o.occurred_at,
               o.environment, o.service, o.release_version, o.stack_trace
        FROM ROWS FROM (pg_catalog.unnest(ids), pg_catalog.unnest(results), pg_catalog.unnest(prints)) AS f(occurrence_id, fp, fingerprint)
        JOIN pg_catalog.unnest(kept) WITH ORDINALITY o ON o.occurrence_id OPERATOR(pg_catalog.=) f.occurrence_id
        WHERE NOT EXISTS (SELECT FROM monitoring.tb_error_log g WHERE g.error_fingerprint OPERATOR(pg_catalog.=) f.fingerprint)
        ORDER BY f.fingerprint, o.occurred_at, o.ordinality
    ), created AS (
        INSERT INTO monitoring.tb_error_log AS g
            (error_fingerprint, fingerprint_version, fingerprint_method, fingerprint_inputs, error_type,
             error_message, title, culprit, severity, first_seen, last_seen, environment, environments,
             services, release_version, first_release, stack_trace)
        SELECT n.fingerprint, (n.fp OPERATOR(pg_catalog.->>) 'fingerprint_version')::smallint,
               n.fp OPERATOR(pg_catalog.->>) 'method', n.fp OPERATOR(pg_catalog.->) 'inputs', n.exception_type,
               n.message, COALESCE(n.fp OPERATOR(pg_catalog.->>) 'group_title', n.fp OPERATOR(pg_catalog.->>) 'title', ''),
               n.fp OPERATOR(pg_catalog.->>) 'culprit', n.level, n.occurred_at, n.occurred_at, n.environment,
               ARRAY[n.environment], CASE WHEN n.service IS NULL THEN '{}' ELSE ARRAY[n.service] END,
               n.release_version, n.release_version, n.stack_trace
        FROM firsts n
        ON CONFLICT (error_fingerprint) DO NOTHING
        RETURNING g.error_id, g.release_version
    )
    INSERT INTO monitoring.error_activity (error_id, action, actor, details)
    SELECT c.error_id, 'first_seen', NULL, pg_catalog.jsonb_build_object('release', c.release_version)
    FROM created c;

    -- Regressions and ignores that ran out: only groups not unresolved, which is rare.
    FOR grp IN
        SELECT g.* FROM monitoring.tb_error_log g
        WHERE g.error_fingerprint OPERATOR(pg_catalog.=) ANY (prints) AND g.status OPERATOR(pg_catalog.<>) 'unresolved'
    LOOP
        IF grp.status OPERATOR(pg_catalog.=) 'resolved' THEN
            -- Reopened unless every occurrence comes from a release older than the fix.
            SELECT o.occurrence_id, o.release_version INTO reopening
            FROM ROWS FROM (pg_catalog.unnest(ids), pg_catalog.unnest(prints)) AS f(occurrence_id, fingerprint)
            JOIN pg_catalog.unnest(kept) o ON o.occurrence_id OPERATOR(pg_catalog.=) f.occurrence_id
            WHERE f.fingerprint OPERATOR(pg_catalog.=) grp.error_fingerprint
              AND NOT monitoring._release_older(o.release_version, grp.resolved_in_release)
            ORDER BY o.occurred_at
            LIMIT 1;
            IF FOUND THEN
                UPDATE monitoring.tb_error_log g
                SET status = 'unresolved', resolved_at = NULL, resolved_by = NULL, regressed_at = pg_catalog.now()
                WHERE g.error_id OPERATOR(pg_catalog.=) grp.error_id AND g.status OPERATOR(pg_catalog.=) 'resolved';
                IF FOUND THEN
                    INSERT INTO monitoring.error_activity (error_id, action, details)
                    VALUES (grp.error_id, 'regression', pg_catalog.jsonb_build_object(
                        'release', reopening.release_version, 'resolved_in_release', grp.resolved_in_release,
                        'occurrence_id', reopening.occurrence_id));
                END IF;
            END IF;
        ELSIF grp.ignored_until OPERATOR(pg_catalog.<=) pg_catalog.now()
              OR grp.ignored_until_count OPERATOR(pg_catalog.<=) (grp.occurrence_count OPERATOR(pg_catalog.+)
                 (SELECT COALESCE(pg_catalog.sum(p.occurrences), 0) FROM monitoring.error_group_pending p
                  WHERE p.error_id OPERATOR(pg_catalog.=) grp.error_id)) THEN
            UPDATE monitoring.tb_error_log g
            SET status = 'unresolved', ignored_until = NULL, ignored_until_count = NULL
            WHERE g.error_id OPERATOR(pg_catalog.=) grp.error_id AND g.status OPERATOR(pg_catalog.=) 'ignored';
            IF FOUND THEN
                INSERT INTO monitoring.error_activity (error_id, action, details)
                VALUES (grp.error_id, 'unignore', pg_catalog.jsonb_build_object('reason', 'ignore condition ran out'));
            END IF;
        END IF;
    END LOOP;

    RETURN QUERY
    SELECT o.occurrence_id, g.error_id, o.occurred_at, o.client_timestamp, o.received_at, o.event_id,
           o.exception_type, o.message, o.stack_trace,
           -- frames parsed from the raw stack trace when none came with the event
           COALESCE(o.frames, CASE WHEN pg_catalog.jsonb_array_length(f.fp OPERATOR(pg_catalog.->) 'frames') OPERATOR(pg_catalog.>) 0
                                   THEN f.fp OPERATOR(pg_catalog.->) 'frames' END),
           o.exception_chain, o.client_fingerprint, o.context, o.tags, o.user_info, o.request, o.environment,
           o.release_version, o.service, o.server_name, o.transaction_name, o.logger, o.level, o.trace_id, o.span_id
    FROM pg_catalog.unnest(kept) o
    JOIN ROWS FROM (pg_catalog.unnest(ids), pg_catalog.unnest(results), pg_catalog.unnest(prints)) AS f(occurrence_id, fp, fingerprint)
        ON f.occurrence_id OPERATOR(pg_catalog.=) o.occurrence_id
    LEFT JOIN monitoring.tb_error_log g ON g.error_fingerprint OPERATOR(pg_catalog.=) f.fingerprint;
END
$$;
COMMENT ON FUNCTION monitoring._prepare_error_occurrences(monitoring.tb_error_occurrence[]) IS
    'Capture, set-based: dedupes by event id, applies limits, scrubs, fingerprints, finds or creates groups, detects regressions';

-- Folds counter deltas into tb_error_log, set-based: the fresh deltas of a capture
-- (p_fresh) and those pending for these groups. It locks the groups' rows first, skipping
-- those another transaction holds: their fresh deltas are written to error_group_pending and
-- wait for the next fold. So no two transactions fold one group and no writer waits.
-- Returns how many groups were folded.
CREATE OR REPLACE FUNCTION monitoring._fold_error_counters(
    p_error_ids uuid[], p_fresh monitoring.error_group_pending[] DEFAULT '{}')
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
    SET plan_cache_mode = force_generic_plan   -- see the note at the top
AS $$
DECLARE
    free uuid[];
    folded_groups integer;
BEGIN
    -- Fixed order, so that two statements never wait on each other in a cycle.
    free := ARRAY(
        SELECT g.error_id FROM monitoring.tb_error_log g
        WHERE g.error_id OPERATOR(pg_catalog.=) ANY (p_error_ids)
        ORDER BY g.error_id
        FOR UPDATE SKIP LOCKED);
    INSERT INTO monitoring.error_group_pending
    SELECT f.* FROM pg_catalog.unnest(p_fresh) f WHERE f.error_id OPERATOR(pg_catalog.<>) ALL (free);

    WITH taken AS (
        DELETE FROM monitoring.error_group_pending p
        WHERE p.error_id OPERATOR(pg_catalog.=) ANY (free)
        RETURNING p.*
    ), deltas AS (
        SELECT t.* FROM taken t
        UNION ALL
        SELECT f.* FROM pg_catalog.unnest(p_fresh) f WHERE f.error_id OPERATOR(pg_catalog.=) ANY (free)
    ), merged_environments AS (   -- each group's in one pass, not a scan of deltas per group
        SELECT t.error_id, pg_catalog.array_agg(DISTINCT e) AS environments
        FROM deltas t, pg_catalog.unnest(t.environments) e WHERE e IS NOT NULL GROUP BY t.error_id
    ), merged_services AS (
        SELECT t.error_id, pg_catalog.array_agg(DISTINCT v) AS services
        FROM deltas t, pg_catalog.unnest(t.services) v WHERE v IS NOT NULL GROUP BY t.error_id
    ), summed AS (
        SELECT t.error_id, pg_catalog.sum(t.occurrences) AS occurrences, pg_catalog.sum(t.new_users) AS new_users,
               pg_catalog.min(t.first_seen) AS first_seen, pg_catalog.max(t.last_seen) AS last_seen,
               (pg_catalog.array_agg(t.environment ORDER BY t.last_seen DESC))[1] AS environment,
               (pg_catalog.array_agg(t.release_version ORDER BY t.last_seen DESC, t.release_version DESC)
                    FILTER (WHERE t.release_version IS NOT NULL))[1] AS release_version
        FROM deltas t
        GROUP BY t.error_id
    ), merged AS (
        SELECT s.*, COALESCE(me.environments, '{}') AS environments, COALESCE(ms.services, '{}') AS services
        FROM summed s
        LEFT JOIN merged_environments me ON me.error_id OPERATOR(pg_catalog.=) s.error_id
        LEFT JOIN merged_services ms ON ms.error_id OPERATOR(pg_catalog.=) s.error_id
    ), folded AS (
        UPDATE monitoring.tb_error_log g
        SET occurrence_count = g.occurrence_count OPERATOR(pg_catalog.+) s.occurrences,
            affected_users = g.affected_users OPERATOR(pg_catalog.+) s.new_users,
            first_seen = LEAST(g.first_seen, s.first_seen),
            last_seen = GREATEST(g.last_seen, s.last_seen),
            environment = CASE WHEN s.last_seen OPERATOR(pg_catalog.>=) g.last_seen THEN s.environment ELSE g.environment END,
            release_version = CASE WHEN s.last_seen OPERATOR(pg_catalog.>=) g.last_seen
                                   THEN COALESCE(s.release_version, g.release_version) ELSE g.release_version END,
            environments = CASE WHEN s.environments OPERATOR(pg_catalog.<@) g.environments THEN g.environments
                                ELSE ARRAY(SELECT DISTINCT x FROM pg_catalog.unnest(g.environments OPERATOR(pg_catalog.||) s.environments) x ORDER BY 1) END,
            services = CASE WHEN s.services OPERATOR(pg_catalog.<@) g.services THEN g.services
                            ELSE ARRAY(SELECT DISTINCT x FROM pg_catalog.unnest(g.services OPERATOR(pg_catalog.||) s.services) x ORDER BY 1) END
        FROM merged s
        WHERE g.error_id OPERATOR(pg_catalog.=) s.error_id
        RETURNING 1
    )
    SELECT pg_catalog.count(*)::integer INTO folded_groups FROM folded;
    RETURN folded_groups;
END
$$;
COMMENT ON FUNCTION monitoring._fold_error_counters(uuid[], monitoring.error_group_pending[]) IS
    'Adds fresh and pending counter deltas of these groups to tb_error_log; a busy group''s fresh delta waits as pending';

-- Counts stored occurrences per group (not per row) and folds the counts into every group
-- whose row is free. If another transaction holds a group's row (many writers on one
-- fingerprint), its delta waits in error_group_pending instead of the writer: the next
-- capture that gets the row, or run_maintenance(), folds it.
CREATE OR REPLACE FUNCTION monitoring._count_error_occurrences(p_rows monitoring.tb_error_occurrence[])
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
    SET plan_cache_mode = force_generic_plan   -- see the note at the top
AS $$
DECLARE
    folded_groups integer;
BEGIN
    WITH new_users AS (
        INSERT INTO monitoring.error_group_user (error_id, user_key)
        SELECT DISTINCT n.error_id, monitoring._user_key(n.user_info, n.context) FROM pg_catalog.unnest(p_rows) n
        WHERE n.error_id IS NOT NULL AND monitoring._user_key(n.user_info, n.context) IS NOT NULL
        ON CONFLICT DO NOTHING
        RETURNING error_id
    ), new_user_counts AS (   -- one pass, not a scan of new_users per group
        SELECT u.error_id, pg_catalog.count(*) AS new_users FROM new_users u GROUP BY u.error_id
    ), fresh AS (
        SELECT ROW(n.error_id, pg_catalog.count(*),
               COALESCE(pg_catalog.max(c.new_users), 0),
               pg_catalog.min(n.occurred_at), pg_catalog.max(n.occurred_at),
               (pg_catalog.array_agg(n.environment ORDER BY n.occurred_at DESC))[1],
               pg_catalog.array_agg(DISTINCT n.environment),
               COALESCE(pg_catalog.array_agg(DISTINCT n.service) FILTER (WHERE n.service IS NOT NULL), '{}'),
               -- "last release": the latest occurrence's; within one instant, the highest
               (pg_catalog.array_agg(n.release_version ORDER BY n.occurred_at DESC, n.release_version DESC)
                    FILTER (WHERE n.release_version IS NOT NULL))[1])::monitoring.error_group_pending AS delta
        FROM pg_catalog.unnest(p_rows) n
        LEFT JOIN new_user_counts c ON c.error_id OPERATOR(pg_catalog.=) n.error_id
        WHERE n.error_id IS NOT NULL
        GROUP BY n.error_id
    )
    SELECT monitoring._fold_error_counters(pg_catalog.array_agg((f.delta).error_id), pg_catalog.array_agg(f.delta))
    INTO folded_groups
    FROM fresh f;
    RETURN folded_groups;
END
$$;
COMMENT ON FUNCTION monitoring._count_error_occurrences(monitoring.tb_error_occurrence[]) IS
    'Counts occurrences, users, environments and releases per group without making writers wait; returns the groups folded now';

-- A plain INSERT into tb_error_occurrence is a capture too: this BEFORE ROW trigger prepares
-- and counts the row through the same set-based functions as capture_errors(). The capture
-- functions insert rows they have prepared already, with pg_observe.capture_prepared set,
-- and the trigger's WHEN clause lets those through without a function call.
CREATE OR REPLACE FUNCTION monitoring._error_occurrence_prepare()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    prepared monitoring.tb_error_occurrence;
BEGIN
    -- The trigger runs on the partition: its row type is the partition's, hence ROW(NEW.*).
    SELECT p.* INTO prepared FROM monitoring._prepare_error_occurrences(ARRAY[ROW(NEW.*)::monitoring.tb_error_occurrence]) p;
    IF NOT FOUND THEN
        RETURN NULL;   -- already stored: a retry of the same event
    END IF;
    PERFORM monitoring._count_error_occurrences(ARRAY[prepared]);
    PERFORM monitoring._queue_error_notifications(ARRAY[prepared], false);
    RETURN prepared;
END
$$;
COMMENT ON FUNCTION monitoring._error_occurrence_prepare() IS
    'Trigger: a plain INSERT is captured like capture_error() (dedupe, limits, scrubbing, fingerprint, group, counters)';

CREATE OR REPLACE FUNCTION monitoring._fold_all_error_counters()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
AS $$
BEGIN
    RETURN pg_catalog.format('%s groups folded', monitoring._fold_error_counters(
        ARRAY(SELECT DISTINCT p.error_id FROM monitoring.error_group_pending p)));
END
$$;
COMMENT ON FUNCTION monitoring._fold_all_error_counters() IS 'Maintenance task: folds every pending counter delta';

CREATE OR REPLACE FUNCTION monitoring._expire_error_event_ids()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
AS $$
DECLARE
    removed bigint;
BEGIN
    DELETE FROM monitoring.error_event_seen s WHERE s.seen_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) interval '30 days');
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN pg_catalog.format('%s event ids expired', removed);
END
$$;
COMMENT ON FUNCTION monitoring._expire_error_event_ids() IS 'Maintenance task: forgets event ids older than 30 days';

-- Capture: one event, or many in one round trip. Both prepare the rows set-based, insert
-- them (the row trigger lets prepared rows through), then count them per group.
CREATE OR REPLACE FUNCTION monitoring._store_error_occurrences(p_events jsonb)
    RETURNS monitoring.tb_error_occurrence[]
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
    SET plan_cache_mode = force_generic_plan   -- see the note at the top
    -- A batch of 1,000 realistic events is about 7 MB of rows: with the default 4 MB, every
    -- pass over them (unnest, sorts, the INSERT's input) spilled to a temporary file. This
    -- replaces the caller's setting for the call, a larger one too; each capturing connection
    -- may use up to 16 MB per sort or hash.
    SET work_mem = '16MB'
AS $$
DECLARE
    stored monitoring.tb_error_occurrence[];
BEGIN
    SELECT pg_catalog.array_agg(p) INTO stored
    FROM monitoring._prepare_error_occurrences(ARRAY(SELECT r FROM monitoring._events_to_occurrences(p_events) r)) p;
    IF stored IS NULL THEN
        RETURN '{}'::monitoring.tb_error_occurrence[];
    END IF;
    PERFORM pg_catalog.set_config('pg_observe.capture_prepared', 'on', true);
    INSERT INTO monitoring.tb_error_occurrence SELECT * FROM pg_catalog.unnest(stored);
    PERFORM pg_catalog.set_config('pg_observe.capture_prepared', 'off', true);
    PERFORM monitoring._count_error_occurrences(stored);
    -- The notification rules, with the counts up to date and in the same transaction: a
    -- rollback of the capture takes its notifications with it.
    PERFORM monitoring._queue_error_notifications(stored, true);
    RETURN stored;
END
$$;
COMMENT ON FUNCTION monitoring._store_error_occurrences(jsonb) IS
    'Prepares, inserts and counts a JSON array of events; returns the rows stored';

CREATE OR REPLACE FUNCTION monitoring.capture_error(p_event jsonb)
    RETURNS uuid
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    IF p_event IS NULL OR pg_catalog.jsonb_typeof(p_event) OPERATOR(pg_catalog.<>) 'object' THEN
        RAISE EXCEPTION 'an error event must be a JSON object, got %', COALESCE(pg_catalog.jsonb_typeof(p_event), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN ((monitoring._store_error_occurrences(pg_catalog.jsonb_build_array(p_event)))[1]).occurrence_id;
END
$$;
COMMENT ON FUNCTION monitoring.capture_error(jsonb) IS
    'Stores one error event (Sentry event JSON or the flat shape: exception_type, message, stack_trace, context, environment, trace_id, ...); returns the occurrence id (NULL for an event id already stored)';

CREATE OR REPLACE FUNCTION monitoring.capture_errors(p_events jsonb)
    RETURNS bigint
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    IF pg_catalog.jsonb_typeof(p_events) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'capture_errors expects a JSON array of events, got %',
            COALESCE(pg_catalog.jsonb_typeof(p_events), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN pg_catalog.cardinality(monitoring._store_error_occurrences(p_events));
END
$$;
COMMENT ON FUNCTION monitoring.capture_errors(jsonb) IS
    'Stores a JSON array of error events in one statement; returns how many were stored (repeated event ids are not)';


-- sql/900_privileges.sql
-- The privilege matrix, in one place (docs/roles.md explains it). Applied again by every
-- upgrade script, so it always describes the whole extension.
--   writer: capture and record only; no reading of stored data, no secrets
--   reader: read stored data and views; no secrets, no changes
--   admin:  everything, including workflow, configuration and maintenance

REVOKE ALL ON ALL TABLES IN SCHEMA monitoring FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA monitoring FROM PUBLIC;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA monitoring TO observe_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA monitoring TO observe_admin;
GRANT EXECUTE ON FUNCTION monitoring.schedule_maintenance(), monitoring.unschedule_maintenance()
    TO observe_admin;

GRANT SELECT ON monitoring.time_series_config TO observe_reader;
GRANT EXECUTE ON FUNCTION monitoring._plpython_runtime() TO observe_reader;

-- sql/910_privileges_errors.sql
-- Privileges of error tracking (see 900_privileges.sql for the matrix).
GRANT SELECT ON monitoring.tb_error_log, monitoring.tb_error_occurrence, monitoring.errors, monitoring.error_groups,
                monitoring.error_activity, monitoring.error_fingerprint_rule, monitoring.error_scrub_key
    TO observe_reader;
GRANT EXECUTE ON FUNCTION monitoring.top_issues(interval, text, integer, boolean),
                          monitoring.issue_occurrences(text, interval, integer),
                          monitoring.error_trends(interval, interval),
                          monitoring.affected_users(interval, integer),
                          monitoring.first_vs_repeat_errors(interval),
                          monitoring._find_error_group(text), monitoring._user_key(jsonb, jsonb),
                          monitoring._uuid_or_null(text), monitoring.get_partition_stats()
    TO observe_reader;
GRANT INSERT ON monitoring.tb_error_occurrence TO observe_writer;
GRANT EXECUTE ON FUNCTION monitoring.capture_error(jsonb), monitoring.capture_errors(jsonb) TO observe_writer;

-- sql/920_privileges_notifications.sql
-- Privileges of notifications (see 900_privileges.sql for the matrix). Channel configs hold
-- secrets: readers get every rule column but channel_config (and the redacted view), nothing
-- of notification_channel but its names; the dispatcher reaches secrets only through the
-- definer functions it may call.
GRANT SELECT (config_id, description, error_type, error_fingerprint, severity, environment, channel_type,
              min_occurrence_count, notify_on_occurrence, first_seen_only, notify_on_regression,
              frequency_count, frequency_window_minutes, user_count, user_window_minutes,
              rate_limit_minutes, enabled, created_at, severity_levels)
    ON monitoring.tb_error_notification_config TO observe_reader;
GRANT SELECT (channel_type, sender, function_name, description, created_at)
    ON monitoring.notification_channel TO observe_reader;
GRANT SELECT ON monitoring.notification_rules, monitoring.notification_queue, monitoring.notification_queue_status,
                monitoring.notification_state, monitoring.tb_error_notification_log, monitoring.notification_settings
    TO observe_reader;
GRANT EXECUTE ON FUNCTION monitoring._redact_channel_config(jsonb) TO observe_reader;

GRANT USAGE ON SCHEMA monitoring TO observe_dispatcher;
GRANT EXECUTE ON PROCEDURE monitoring.dispatch_notifications(integer, text, integer, integer, integer)
    TO observe_dispatcher;
GRANT EXECUTE ON FUNCTION monitoring._claim_notifications(integer, text, uuid),
                          monitoring._deliver_notifications(uuid, text)
    TO observe_dispatcher;
REVOKE ALL ON PROCEDURE monitoring.dispatch_notifications(integer, text, integer, integer, integer) FROM PUBLIC;

-- sql/930_privileges_telemetry.sql
-- Privileges of traces, metrics and business events (see 900_privileges.sql for the matrix).
-- Writers store through the definer functions or by INSERT into the seed's tables; they read
-- nothing. The change log is written by its definer trigger only.
GRANT SELECT ON monitoring.spans, monitoring.traces, monitoring.metrics, monitoring.metric_rollups_1m,
                monitoring.metric_rollup_state, monitoring.tb_entity_change_log, monitoring.tracked_tables,
                monitoring.rejected_telemetry
    TO observe_reader;
GRANT EXECUTE ON FUNCTION monitoring.slowest_operations(interval, text, text, bigint, integer),
                          monitoring.request_rate(interval, interval, text, text),
                          monitoring.operation_error_rates(interval, text, bigint),
                          monitoring.trace_timeline(text),
                          monitoring._otel_trace_id(text), monitoring._otel_span_id(text),
                          monitoring._otel_time(text, text)
    TO observe_reader;

GRANT INSERT ON monitoring.spans, monitoring.traces, monitoring.metrics TO observe_writer;
GRANT EXECUTE ON FUNCTION monitoring.ingest_spans(jsonb), monitoring.ingest_otlp_traces(jsonb),
                          monitoring.record_metrics(jsonb)
    TO observe_writer;

-- Every role that writes a tracked table runs the change-log triggers, which call this; it
-- refuses any caller but them (see sql/330_entity_changes.sql).
GRANT EXECUTE ON FUNCTION monitoring._append_entity_change(regclass, text, jsonb, jsonb, name, text, text[]) TO PUBLIC;
-- and may reach it by name; every table and other function stays closed to PUBLIC
GRANT USAGE ON SCHEMA monitoring TO PUBLIC;

-- A SECURITY DEFINER trigger function attached to a table of one's own would run that table's
-- code (casts, defaults) as pg_observe's owner: only the owner may attach them.
DO $revoke_definer_triggers$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'monitoring'::regnamespace AND p.prosecdef
                AND p.prorettype = 'trigger'::regtype
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM observe_admin', fn);
    END LOOP;
END
$revoke_definer_triggers$;

-- sql/940_privileges_operations.sql
-- Privileges of operations (see 900_privileges.sql for the matrix). Readers see every health
-- view and health(); the default partitions' row counts reach them through the definer
-- _partition_health() (a grant on a parent does not cover reading its partition directly),
-- the pg_cron tables through the definer health() (pg_cron shows a role its own jobs only).

GRANT SELECT ON monitoring.partition_health, monitoring.dispatcher_heartbeat, monitoring.database_size_history,
                monitoring.health_settings,
                monitoring.query_performance, monitoring.index_usage, monitoring.table_stats,
                monitoring.function_performance, monitoring.connections, monitoring.database_size,
                monitoring.slow_queries, monitoring.cache_hit_ratio,
                monitoring.monitoring_query_performance, monitoring.monitoring_index_usage,
                monitoring.monitoring_table_stats, monitoring.monitoring_rpc_performance,
                monitoring.monitoring_connections, monitoring.monitoring_database_size,
                monitoring.monitoring_slow_queries, monitoring.monitoring_cache_hit_ratio
    TO observe_reader;

-- Definers: closed to PUBLIC (900_privileges.sql already revokes; said again where it matters).
REVOKE ALL ON FUNCTION monitoring.health(), monitoring._partition_health() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION monitoring.health(), monitoring._partition_health() TO observe_reader;

-- A view's functions are called with the privileges of the role reading it.
GRANT EXECUTE ON FUNCTION monitoring._query_performance(), monitoring._database_growth(interval),
                          monitoring._index_usage_category(bigint), monitoring._bloat_status(bigint, bigint),
                          monitoring._function_rating(double precision),
                          monitoring._connection_pool_status(bigint, bigint, bigint, integer),
                          monitoring._slow_query_severity(double precision),
                          monitoring._cache_hit_rating(numeric, numeric)
    TO observe_reader;

-- dispatch_notifications() runs as its caller and leaves a heartbeat (INSERT ... ON CONFLICT
-- DO UPDATE reads the row it updates).
GRANT SELECT, INSERT, UPDATE ON monitoring.dispatcher_heartbeat TO observe_dispatcher;

-- sql/941_privileges_prometheus.sql
-- Privileges of the Prometheus exposition (see 900_privileges.sql for the matrix). The
-- functions run as their caller (no SECURITY DEFINER): a reader sees what it may read anyway,
-- and its pg_monitor membership shows every session in the connection figures.
GRANT EXECUTE ON FUNCTION monitoring.prometheus_metrics(),
                          monitoring._prometheus_families(),
                          monitoring._prometheus_escape(text, boolean),
                          monitoring._prometheus_sample(text, jsonb, double precision),
                          monitoring._prometheus_error_samples(),
                          monitoring._prometheus_notification_samples(),
                          monitoring._prometheus_dispatcher_samples(),
                          monitoring._prometheus_trace_samples(),
                          monitoring._prometheus_metric_samples(),
                          monitoring._prometheus_partition_samples(),
                          monitoring._prometheus_database_samples(),
                          monitoring._prometheus_health_samples(),
                          monitoring._prometheus_cache_samples()
    TO observe_reader;

-- The cache's hit, miss, set and eviction counters per namespace and backend: counts, no key
-- and no value (cache_entries stays unreadable to readers). Read directly because the view
-- cache_stats also counts every cached entry, too much for each scrape.
GRANT SELECT ON monitoring.cache_counters TO observe_reader;

-- sql/942_privileges_dashboards.sql
-- Privileges of the dashboards (see 900_privileges.sql for the matrix): Grafana's login is
-- an observe_reader. Every dashboard function runs as its caller (no SECURITY DEFINER) and
-- reads only what observe_reader may read.
GRANT EXECUTE ON FUNCTION monitoring.dashboard_variable(text),
                          monitoring._dashboard_bucket(timestamptz, timestamptz, interval, interval),
                          monitoring._dashboard_times(timestamptz, timestamptz, interval),
                          monitoring.dashboard_environments(),
                          monitoring.dashboard_services(),
                          monitoring.dashboard_error_rate(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_first_vs_repeat(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_top_errors(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_error_breakdown(timestamptz, timestamptz, text, text, text, integer),
                          monitoring.dashboard_recent_errors(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_issue_status(timestamptz, timestamptz, text, text),
                          monitoring.dashboard_resolution_time(timestamptz, timestamptz, text, text),
                          monitoring.dashboard_failed_access(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_requests(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_latency(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_request_heatmap(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_operations(timestamptz, timestamptz, text, text, text, integer),
                          monitoring.dashboard_operation_types(timestamptz, timestamptz, text, text),
                          monitoring.dashboard_span_status(timestamptz, timestamptz, text, text),
                          monitoring.dashboard_db_queries(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_users(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_user_errors(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_tenants(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_new_users(timestamptz, timestamptz, text, text, interval, interval),
                          monitoring.dashboard_metric_rate(timestamptz, timestamptz, text, text, interval, text),
                          monitoring.dashboard_metric_gauge(timestamptz, timestamptz, text, text, interval, text),
                          monitoring.dashboard_metric_histogram(timestamptz, timestamptz, text, text, interval, text),
                          monitoring.dashboard_audit_events(timestamptz, timestamptz, integer),
                          monitoring.dashboard_audit_event_types(timestamptz, timestamptz, interval),
                          monitoring.dashboard_admin_actions(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_permission_changes(timestamptz, timestamptz, integer),
                          monitoring.dashboard_changes_by_actor(timestamptz, timestamptz, integer),
                          monitoring.dashboard_audit_lag(),
                          monitoring.dashboard_compliance_status(),
                          monitoring.dashboard_database_activity(),
                          -- the cache's (sql/500_cache.sql)
                          monitoring._dashboard_cache_intervals(timestamptz, timestamptz, text),
                          monitoring.dashboard_cache_namespaces(),
                          monitoring.dashboard_cache_activity(timestamptz, timestamptz, text, interval),
                          monitoring.dashboard_cache_size(timestamptz, timestamptz, text, interval),
                          monitoring.dashboard_cache_namespace_stats(timestamptz, timestamptz, text, integer),
                          monitoring.dashboard_cache_summary(timestamptz, timestamptz, text)
    TO observe_reader;

-- sql/950_privileges_cache.sql
-- Privileges of the cache (see 900_privileges.sql for the matrix). The cache is the
-- applications' own, so it belongs to the role they already have, observe_writer: it may call
-- the cache functions (SECURITY DEFINER) and touch neither table, so that every write passes
-- the checks of keys, TTLs and values and is counted. Dashboards and exporters (observe_reader)
-- read monitoring.cache_stats, never the cached values (sessions, tokens, personal data).
-- Admins have everything (900_privileges.sql), expire_cache() included.
GRANT EXECUTE ON FUNCTION monitoring.cache_get(text, text),
                          monitoring.cache_get_entry(text, text),
                          monitoring.cache_get_many(text[], text),
                          monitoring.cache_ttl(text, text),
                          monitoring.cache_keys(text, text, integer),
                          monitoring.cache_set(text, jsonb, interval, text),
                          monitoring.cache_set_bytes(text, bytea, interval, text, text),
                          monitoring.cache_set_many_arrays(text[], jsonb[], interval, text, bytea[], text[]),
                          monitoring.cache_set_many(jsonb, interval, text),
                          monitoring.cache_incr(text, bigint, interval, text),
                          monitoring.cache_set_if_absent(text, jsonb, interval, text),
                          monitoring.cache_expire(text, interval, text),
                          monitoring.cache_delete(text, text),
                          monitoring.cache_delete_many(text[], text),
                          monitoring.cache_delete_pattern(text, text),
                          monitoring.cache_flush_stats()
    TO observe_writer;

-- The history holds counts and sizes per namespace, no key and no value.
GRANT SELECT ON monitoring.cache_stats, monitoring.cache_stats_history TO observe_reader;

-- sql/990_reset_search_path.sql
-- pg_partman's create_parent() above left the script's search_path set at session level
-- (it restores with a session-level set_config). Give the session its default back.
RESET search_path;


