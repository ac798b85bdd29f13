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
    SET search_path = pg_catalog, pg_temp
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
    SET search_path = pg_catalog, pg_temp
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

-- @plpython plpython/otlp_traces.py
COMMENT ON FUNCTION monitoring._otlp_traces_to_spans(jsonb) IS
    'The spans of an OTLP/JSON ExportTraceServiceRequest as the flat spans ingest_spans() takes (structure only, no validation)';

CREATE OR REPLACE FUNCTION monitoring.ingest_otlp_traces(p_request jsonb)
    RETURNS TABLE (accepted integer, duplicates integer, rejected integer)
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
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
