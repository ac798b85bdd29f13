-- Trace analysis for dashboards and the terminal: every filter is on start_time first, so
-- that only the partitions of the window are read.

CREATE FUNCTION monitoring.slowest_operations(p_since interval DEFAULT '1 hour', p_environment text DEFAULT NULL,
                                              p_service text DEFAULT NULL, p_min_count bigint DEFAULT 10,
                                              p_limit integer DEFAULT 20)
    RETURNS TABLE (service text, operation_name text, request_count bigint, error_count bigint,
                   p50_ms double precision, p95_ms double precision, p99_ms double precision,
                   max_ms double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.service, s.operation_name, pg_catalog.count(*),
           pg_catalog.count(*) FILTER (WHERE s.status_code = 2),
           pg_catalog.percentile_cont(0.50) WITHIN GROUP (ORDER BY s.duration_ms),
           pg_catalog.percentile_cont(0.95) WITHIN GROUP (ORDER BY s.duration_ms),
           pg_catalog.percentile_cont(0.99) WITHIN GROUP (ORDER BY s.duration_ms),
           pg_catalog.max(s.duration_ms)
    FROM monitoring.spans s
    WHERE s.start_time > pg_catalog.now() - p_since
      AND (p_environment IS NULL OR s.environment = p_environment)
      AND (p_service IS NULL OR s.service = p_service)
    GROUP BY s.service, s.operation_name
    HAVING pg_catalog.count(*) >= p_min_count
    ORDER BY 7 DESC, 3 DESC
    LIMIT p_limit
$$;
COMMENT ON FUNCTION monitoring.slowest_operations(interval, text, text, bigint, integer) IS
    'Operations by p99 duration over the last p_since: count, errors (status error), p50/p95/p99/max in ms';

-- Requests are entry spans: a server or consumer span, or a root span.
CREATE FUNCTION monitoring.request_rate(p_since interval DEFAULT '1 hour', p_bucket interval DEFAULT '1 minute',
                                        p_environment text DEFAULT NULL, p_service text DEFAULT NULL)
    RETURNS TABLE (bucket timestamptz, service text, requests bigint, requests_per_second double precision,
                   failed_requests bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.date_bin(p_bucket, s.start_time, '2000-01-01 00:00:00+00'::timestamptz) AS bucket, s.service,
           pg_catalog.count(*),
           pg_catalog.count(*)::double precision /
               pg_catalog.date_part('epoch', p_bucket),
           pg_catalog.count(*) FILTER (WHERE s.status_code = 2)
    FROM monitoring.spans s
    WHERE s.start_time > pg_catalog.now() - p_since
      AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
      AND (p_environment IS NULL OR s.environment = p_environment)
      AND (p_service IS NULL OR s.service = p_service)
    GROUP BY 1, 2
    ORDER BY 1, 2
$$;
COMMENT ON FUNCTION monitoring.request_rate(interval, interval, text, text) IS
    'Requests (server, consumer and root spans) per bucket and service, per second, and how many failed';

-- An operation failed when its span has status error or an error was captured in it
-- (same trace and span id). Errors are read in the same window (plus the longest span), so
-- that their partitions are pruned too.
CREATE FUNCTION monitoring.operation_error_rates(p_since interval DEFAULT '1 hour', p_environment text DEFAULT NULL,
                                                 p_min_count bigint DEFAULT 10)
    RETURNS TABLE (service text, operation_name text, requests bigint, failed bigint, captured_errors bigint,
                   traces_with_errors bigint, error_rate_pct numeric)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH window_spans AS (
        SELECT s.trace_id, s.span_id, s.service, s.operation_name, s.status_code
        FROM monitoring.spans s
        WHERE s.start_time > pg_catalog.now() - p_since
          AND (p_environment IS NULL OR s.environment = p_environment)
    ), window_errors AS (
        SELECT o.trace_id, o.span_id, pg_catalog.count(*) AS n
        FROM monitoring.tb_error_occurrence o
        WHERE o.trace_id IS NOT NULL
          AND o.occurred_at > pg_catalog.now() - p_since
                                                   - interval '1 hour'
        GROUP BY o.trace_id, o.span_id
    ), trace_errors AS (
        SELECT e.trace_id FROM window_errors e GROUP BY e.trace_id
    )
    SELECT s.service, s.operation_name, pg_catalog.count(*),
           pg_catalog.count(*) FILTER (WHERE s.status_code = 2 OR e.n IS NOT NULL),
           COALESCE(pg_catalog.sum(e.n), 0)::bigint,
           pg_catalog.count(DISTINCT s.trace_id) FILTER (WHERE t.trace_id IS NOT NULL),
           pg_catalog.round(100.0 *
                   pg_catalog.count(*) FILTER (WHERE s.status_code = 2 OR e.n IS NOT NULL)
                   / pg_catalog.count(*), 2)
    FROM window_spans s
    LEFT JOIN window_errors e ON e.trace_id = s.trace_id
                             AND e.span_id = s.span_id
    LEFT JOIN trace_errors t ON t.trace_id = s.trace_id
    GROUP BY s.service, s.operation_name
    HAVING pg_catalog.count(*) >= p_min_count
    ORDER BY 7 DESC, 3 DESC
$$;
COMMENT ON FUNCTION monitoring.operation_error_rates(interval, text, bigint) IS
    'Per operation: spans, failed ones (status error or an error captured in the span), captured errors, traces with an error, failure rate in %';

-- A trace as a tree: depth-first, children in start order, each span with the errors and
-- entity changes recorded in it. Errors and changes without a span of the trace go to the
-- first root. Hostile data can neither loop nor hide spans: a span id is shown once, a span
-- already on the path is not visited again, and spans whose parents form a cycle are roots.
CREATE FUNCTION monitoring.trace_timeline(p_trace_id text)
    RETURNS TABLE (depth integer, span_id text, parent_span_id text, service text, operation_name text,
                   kind text, start_time timestamptz, start_offset_ms double precision,
                   duration_ms double precision, status_code smallint, status_message text,
                   errors jsonb, changes jsonb)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE trace AS (
        -- a span id sent twice with different start times is shown once (the first)
        SELECT DISTINCT ON (s.span_id) s.* FROM monitoring.spans s
        WHERE s.trace_id = monitoring._otel_trace_id(p_trace_id)
        ORDER BY s.span_id, s.start_time
    ), roots AS (
        SELECT t.* FROM trace t
        WHERE t.parent_span_id IS NULL
           OR NOT EXISTS (SELECT FROM trace p WHERE p.span_id = t.parent_span_id)
    ), tree AS (
        SELECT r.span_id, 0 AS depth,
               ARRAY[pg_catalog.to_char(r.start_time AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS')
                     || r.span_id] AS sort_path,
               ARRAY[r.span_id] AS visited, r.start_time
        FROM roots r
        UNION ALL
        SELECT c.span_id, p.depth + 1,
               p.sort_path ||
                   (pg_catalog.to_char(c.start_time AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS')
                    || c.span_id),
               p.visited || c.span_id, c.start_time
        FROM tree p
        JOIN trace c ON c.parent_span_id = p.span_id
        WHERE NOT c.span_id = ANY (p.visited) AND p.depth < 1000
    ), ordered AS (
        SELECT t.span_id, t.depth, t.sort_path, t.start_time FROM tree t
        UNION ALL
        -- spans no root leads to (their parents form a cycle): shown as roots of their own
        SELECT u.span_id, 0, ARRAY[pg_catalog.to_char(u.start_time AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS') || u.span_id],
               u.start_time
        FROM trace u WHERE NOT EXISTS (SELECT FROM tree t WHERE t.span_id = u.span_id)
    ), first_root AS (
        SELECT o.span_id FROM ordered o WHERE o.depth = 0 ORDER BY o.sort_path LIMIT 1
    ), trace_errors AS (
        SELECT COALESCE((SELECT t.span_id FROM trace t WHERE t.span_id = e.span_id LIMIT 1),
                        (SELECT f.span_id FROM first_root f)) AS span_id,
               pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                   'occurrence_id', e.occurrence_id, 'error_id', e.error_id, 'exception_type', e.exception_type,
                   'message', e.message, 'occurred_at', e.occurred_at) ORDER BY e.occurred_at) AS errors
        FROM monitoring.tb_error_occurrence e
        WHERE e.trace_id = monitoring._otel_trace_id(p_trace_id)
        GROUP BY 1
    ), trace_changes AS (
        SELECT COALESCE((SELECT t.span_id FROM trace t WHERE t.span_id = c.span_id LIMIT 1),
                        (SELECT f.span_id FROM first_root f)) AS span_id,
               pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                   'entity_name', c.entity_name, 'entity_id', c.entity_id, 'change_type', c.change_type,
                   'changed_at', c.changed_at) ORDER BY c.changed_at) AS changes
        FROM monitoring.tb_entity_change_log c
        WHERE c.trace_id = monitoring._otel_trace_id(p_trace_id)
        GROUP BY 1
    )
    SELECT o.depth, s.span_id, s.parent_span_id, s.service, s.operation_name, s.kind, s.start_time,
           (EXTRACT(epoch FROM s.start_time - (SELECT pg_catalog.min(t.start_time) FROM trace t)) * 1000)::double precision,
           s.duration_ms, s.status_code, s.status_message,
           COALESCE(e.errors, '[]'), COALESCE(ch.changes, '[]')
    FROM ordered o
    JOIN trace s ON s.span_id = o.span_id AND s.start_time = o.start_time
    LEFT JOIN trace_errors e ON e.span_id = o.span_id
    LEFT JOIN trace_changes ch ON ch.span_id = o.span_id
    ORDER BY o.sort_path
$$;
COMMENT ON FUNCTION monitoring.trace_timeline(text) IS
    'One trace as a tree (depth-first, in start order) with offsets from its start and the errors and entity changes recorded in each span';
