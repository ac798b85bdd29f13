-- Included by sql/310_traces.sql and by the upgrade scripts.
-- Span ingestion: one set-based statement per batch. What makes a span unstorable (no valid
-- ids, no name, no start time, not an object) is found by expressions, and the span goes to
-- rejected_telemetry; what can be repaired is repaired and named in the row's repairs.

-- The statement that stores one batch. The caller (ingest_spans) retries span by span when
-- a value the checks let through still fails (an impossible calendar date, say).
CREATE FUNCTION monitoring._store_spans(p_spans jsonb, OUT accepted integer, OUT duplicates integer,
                                        OUT rejected integer)
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
    SET timezone = 'UTC'
AS $$
DECLARE
    oldest timestamptz;
    newest timestamptz := pg_catalog.now() + interval '1 day';
BEGIN
    -- A start time older than the retention or over a day ahead is a wrong clock: such a
    -- span is stored at the time received (keeping its duration), the original kept.
    SELECT pg_catalog.now() - c.retention INTO oldest
    FROM monitoring.time_series_config c WHERE c.parent_table = 'monitoring.spans';
    oldest := COALESCE(oldest, '-infinity');

    WITH raw AS (
        SELECT e.value AS span,
               pg_catalog.jsonb_typeof(e.value) = 'object' AS is_object,
               monitoring._otel_trace_id(e.value ->> 'trace_id') AS trace_id,
               monitoring._otel_span_id(e.value ->> 'span_id') AS span_id,
               NULLIF(e.value ->> 'parent_span_id', '') AS parent_given,
               COALESCE(e.value ->> 'name', e.value ->> 'operation_name') AS name,
               monitoring._otel_time(e.value ->> 'start_time_unix_nano',
                                     e.value ->> 'start_time') AS start_given,
               monitoring._otel_time(e.value ->> 'end_time_unix_nano',
                                     e.value ->> 'end_time') AS end_given,
               pg_catalog.lower(pg_catalog.regexp_replace(e.value ->> 'kind', '^SPAN_KIND_', '', 'i')) AS kind_given,
               pg_catalog.lower(pg_catalog.regexp_replace(
                   COALESCE(e.value ->> 'status_code', e.value #>> '{status,code}'),
                   '^STATUS_CODE_', '', 'i')) AS status_given,
               e.value -> 'resource' AS resource_given
        FROM pg_catalog.jsonb_array_elements(p_spans) AS e
    ), checked AS MATERIALIZED (
        SELECT r.*,
               CASE
                   WHEN NOT r.is_object THEN 'a span must be a JSON object'
                   WHEN r.trace_id IS NULL THEN pg_catalog.format('trace_id %s is not 32 hex digits (nor all zeros)',
                       pg_catalog.left(COALESCE(r.span ->> 'trace_id', 'NULL'), 64))
                   WHEN r.span_id IS NULL THEN pg_catalog.format('span_id %s is not 16 hex digits (nor all zeros)',
                       pg_catalog.left(COALESCE(r.span ->> 'span_id', 'NULL'), 64))
                   WHEN COALESCE(r.name, '') = '' THEN 'a span needs a name'
                   WHEN r.start_given IS NULL THEN
                       'start_time_unix_nano (digits) or start_time (ISO 8601) is missing or invalid'
               END AS problem,
               r.start_given < oldest OR r.start_given > newest AS wrong_clock,
               CASE r.kind_given
                   WHEN '0' THEN 'unspecified' WHEN '1' THEN 'internal' WHEN '2' THEN 'server'
                   WHEN '3' THEN 'client' WHEN '4' THEN 'producer' WHEN '5' THEN 'consumer'
                   WHEN 'unspecified' THEN 'unspecified' WHEN 'internal' THEN 'internal' WHEN 'server' THEN 'server'
                   WHEN 'client' THEN 'client' WHEN 'producer' THEN 'producer' WHEN 'consumer' THEN 'consumer'
               END AS kind,
               CASE r.status_given
                   WHEN '0' THEN 0 WHEN 'unset' THEN 0 WHEN '1' THEN 1 WHEN 'ok' THEN 1 WHEN '2' THEN 2 WHEN 'error' THEN 2
               END::smallint AS status_code,
               COALESCE(r.end_given >= r.start_given, false) AS end_ok
        FROM raw r
    ), stored AS (
        INSERT INTO monitoring.spans AS s
            (trace_id, span_id, parent_span_id, trace_state, service, operation_name, kind, start_time, end_time,
             duration_ms, status_code, status_message, attributes, events, links, resource, scope, environment,
             repairs, client_start_time)
        SELECT c.trace_id, c.span_id, monitoring._otel_span_id(c.parent_given),
               c.span ->> 'trace_state',
               pg_catalog.left(COALESCE(NULLIF(c.span ->> 'service', ''),
                                        c.resource_given ->> 'service.name', 'unknown_service'), 256),
               pg_catalog.left(c.name, 1024),
               COALESCE(c.kind, CASE WHEN c.kind_given IS NULL THEN 'internal' ELSE 'unspecified' END),
               CASE WHEN c.wrong_clock THEN pg_catalog.now() ELSE c.start_given END,
               CASE WHEN NOT c.end_ok THEN c.start_given ELSE c.end_given END
                   + CASE WHEN c.wrong_clock
                                               THEN pg_catalog.now() - c.start_given
                                               ELSE interval '0' END,
               -- numeric, then one rounding: 1.235 ms stays 1.235
               CASE WHEN c.end_ok
                    THEN (EXTRACT(epoch FROM c.end_given - c.start_given) * 1000)::double precision
                    ELSE 0 END,
               COALESCE(c.status_code, 0),
               NULLIF(COALESCE(c.span ->> 'status_message',
                                          c.span #>> '{status,message}'), ''),
               CASE COALESCE(pg_catalog.jsonb_typeof(c.span -> 'attributes'), 'null')
                   WHEN 'object' THEN c.span -> 'attributes'
                   WHEN 'null' THEN '{}'
                   ELSE pg_catalog.jsonb_build_object('pg_observe.invalid_attributes', c.span -> 'attributes')
               END,
               CASE COALESCE(pg_catalog.jsonb_typeof(c.span -> 'events'), 'null')
                   WHEN 'array' THEN c.span -> 'events'
                   WHEN 'null' THEN '[]'
                   ELSE pg_catalog.jsonb_build_array(c.span -> 'events')
               END,
               CASE COALESCE(pg_catalog.jsonb_typeof(c.span -> 'links'), 'null')
                   WHEN 'array' THEN c.span -> 'links'
                   WHEN 'null' THEN '[]'
                   ELSE pg_catalog.jsonb_build_array(c.span -> 'links')
               END,
               CASE COALESCE(pg_catalog.jsonb_typeof(c.resource_given), 'null')
                   WHEN 'object' THEN c.resource_given
                   WHEN 'null' THEN '{}'
                   ELSE pg_catalog.jsonb_build_object('pg_observe.invalid_resource', c.resource_given)
               END,
               c.span -> 'scope',
               pg_catalog.left(COALESCE(NULLIF(c.span ->> 'environment', ''),
                                        c.resource_given ->> 'deployment.environment.name',
                                        c.resource_given ->> 'deployment.environment',
                                        'production'), 256),
               NULLIF(pg_catalog.array_remove(ARRAY[
                   CASE WHEN c.trace_id <> (c.span ->> 'trace_id') THEN 'trace_id_normalized' END,
                   CASE WHEN c.span_id <> (c.span ->> 'span_id') THEN 'span_id_normalized' END,
                   CASE WHEN c.parent_given IS NOT NULL AND monitoring._otel_span_id(c.parent_given) IS NULL
                        THEN 'parent_span_id_invalid_dropped' END,
                   CASE WHEN c.end_given IS NULL THEN 'end_time_missing'
                        WHEN NOT c.end_ok THEN 'end_before_start' END,
                   CASE WHEN c.wrong_clock THEN 'start_time_out_of_range' END,
                   CASE WHEN c.kind IS NULL AND c.kind_given IS NOT NULL THEN 'kind_unknown' END,
                   CASE WHEN c.status_code IS NULL AND c.status_given IS NOT NULL THEN 'status_code_unknown' END,
                   CASE WHEN pg_catalog.length(c.name) > 1024 THEN 'name_truncated' END,
                   CASE WHEN pg_catalog.jsonb_typeof(c.span -> 'attributes')
                             NOT IN ('object', 'null') THEN 'attributes_not_object' END
               ]::text[], NULL), '{}'),
               CASE WHEN c.wrong_clock THEN c.start_given END
        FROM checked c
        WHERE c.problem IS NULL
        ON CONFLICT DO NOTHING
        RETURNING 1
    ), kept AS (
        INSERT INTO monitoring.rejected_telemetry (kind, reason, payload)
        SELECT 'span', c.problem, c.span FROM checked c WHERE c.problem IS NOT NULL
        RETURNING 1
    )
    SELECT (SELECT pg_catalog.count(*) FROM stored)::integer,
           (SELECT pg_catalog.count(*) FROM checked c WHERE c.problem IS NULL)::integer
               - (SELECT pg_catalog.count(*) FROM stored)::integer,
           (SELECT pg_catalog.count(*) FROM kept)::integer
    INTO accepted, duplicates, rejected;
END
$$;
COMMENT ON FUNCTION monitoring._store_spans(jsonb) IS 'Body of ingest_spans(): stores one batch in one statement';

CREATE FUNCTION monitoring.ingest_spans(p_spans jsonb)
    RETURNS TABLE (accepted integer, duplicates integer, rejected integer)
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    span jsonb;
    one record;
BEGIN
    IF p_spans IS NULL OR pg_catalog.jsonb_typeof(p_spans) <> 'array' THEN
        RAISE EXCEPTION 'ingest_spans() takes a JSON array of spans, got %', COALESCE(pg_catalog.jsonb_typeof(p_spans), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Wrap a single span in an array: SELECT * FROM monitoring.ingest_spans(''[{...}]'')';
    END IF;
    BEGIN
        SELECT * INTO STRICT one FROM monitoring._store_spans(p_spans);
        accepted := one.accepted; duplicates := one.duplicates; rejected := one.rejected;
    EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded THEN
        -- A value that passed the checks still failed (a date like 2024-02-30): store the
        -- batch span by span, each in its own subtransaction, keeping the ones that fail.
        accepted := 0; duplicates := 0; rejected := 0;
        FOR span IN SELECT e.value FROM pg_catalog.jsonb_array_elements(p_spans) e LOOP
            BEGIN
                SELECT * INTO STRICT one FROM monitoring._store_spans(pg_catalog.jsonb_build_array(span));
                accepted := accepted + one.accepted;
                duplicates := duplicates + one.duplicates;
                rejected := rejected + one.rejected;
            EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded THEN
                INSERT INTO monitoring.rejected_telemetry (kind, reason, payload) VALUES ('span', SQLERRM, span);
                rejected := rejected + 1;
            END;
        END LOOP;
    END;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION monitoring.ingest_spans(jsonb) IS
    'Stores a JSON array of spans (docs/tracing.md has the shape); a bad span goes to rejected_telemetry, the rest is stored; returns the counts';

-- @plpython plpython/otlp_traces.py
COMMENT ON FUNCTION monitoring._otlp_traces_to_spans(jsonb) IS
    'The spans of an OTLP/JSON ExportTraceServiceRequest as the flat spans ingest_spans() takes (structure only, no validation)';

CREATE FUNCTION monitoring.ingest_otlp_traces(p_request jsonb)
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
