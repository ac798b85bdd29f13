-- Dashboards: one function per panel kind, so that a Grafana panel is one short call
-- (python-client/src/pg_observe/dashboards.py generates the dashboards; docs/grafana.md).
--
-- Every function takes the time range first (p_from, p_to: Grafana's $__timeFrom() and
-- $__timeTo()) and filters on the partition key of what it reads first (occurred_at,
-- start_time, bucket, changed_at), so that only the partitions of the range are read.
-- p_environment and p_service: NULL means all. Time series return "time" first, one row per
-- bucket of the range in time order (counts of empty buckets are 0); p_bucket is Grafana's
-- $__interval, widened so that a range has at most 1,000 buckets.

-- Grafana sends variables formatted with :percentencode (only [A-Za-z0-9-_.~%] reach the
-- SQL text, whatever the value and the Grafana version), and "All" as the custom value __all.
CREATE FUNCTION monitoring.dashboard_variable(p_value text)
    RETURNS text
    LANGUAGE plpgsql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    decoded bytea;
BEGIN
    IF p_value IS NULL OR p_value = '__all' THEN
        RETURN NULL;
    END IF;
    SELECT pg_catalog.string_agg(CASE WHEN m.part[1] IS NOT NULL
                                      THEN pg_catalog.decode(pg_catalog.substr(m.part[1], 2), 'hex')
                                      ELSE pg_catalog.convert_to(m.part[2], 'UTF8') END,
                                 ''::bytea ORDER BY m.n)
    INTO decoded
    FROM pg_catalog.regexp_matches(p_value, '(%[0-9A-Fa-f]{2})|(%|[^%]+)', 'g') WITH ORDINALITY AS m(part, n);
    RETURN COALESCE(pg_catalog.convert_from(decoded, 'UTF8'), '');
EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
    -- not UTF-8 once decoded (or a NUL byte): no stored value can equal it
    RETURN p_value;
END
$$;
COMMENT ON FUNCTION monitoring.dashboard_variable(text) IS
    'Decodes a Grafana variable sent as ${var:percentencode}; the "All" value __all gives NULL (no filter)';

-- The width of a time series' buckets: Grafana's $__interval, at least p_min, and wide enough
-- that the range has at most 1,000 buckets. Month or year intervals are taken as their seconds.
CREATE FUNCTION monitoring._dashboard_bucket(p_from timestamptz, p_to timestamptz, p_bucket interval,
                                             p_min interval DEFAULT '1 second')
    RETURNS interval
    LANGUAGE plpgsql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR NOT pg_catalog.isfinite(p_from) OR NOT pg_catalog.isfinite(p_to) THEN
        RAISE EXCEPTION 'a dashboard needs a finite time range, got % to %', p_from, p_to
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN pg_catalog.make_interval(secs => GREATEST(
        COALESCE(EXTRACT(epoch FROM p_bucket), 60),
        COALESCE(EXTRACT(epoch FROM p_min), 1),
        (EXTRACT(epoch FROM p_to) - EXTRACT(epoch FROM p_from)) / 1000,
        0.001)::double precision);
END
$$;
COMMENT ON FUNCTION monitoring._dashboard_bucket(timestamptz, timestamptz, interval, interval) IS
    'Bucket width of a dashboard time series: the requested one, at least p_min, at most 1,000 buckets in the range';

CREATE FUNCTION monitoring._dashboard_times(p_from timestamptz, p_to timestamptz, p_width interval)
    RETURNS SETOF timestamptz
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.generate_series(pg_catalog.date_bin(p_width, p_from, '2000-01-01 00:00:00+00'), p_to, p_width)
$$;
COMMENT ON FUNCTION monitoring._dashboard_times(timestamptz, timestamptz, interval) IS
    'Starts of the buckets of a time range (aligned as date_bin aligns them), so that empty buckets show as 0';

-- Variables ------------------------------------------------------------------------------

-- Cheap sources only: the issues (one row per group), the last day of metric rollups and the
-- last 15 minutes of spans.
CREATE FUNCTION monitoring.dashboard_environments()
    RETURNS TABLE (environment text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT v.environment FROM (
        SELECT pg_catalog.unnest(g.environments) FROM monitoring.tb_error_log g
        WHERE g.last_seen > pg_catalog.now() - interval '30 days'
        UNION ALL
        SELECT r.environment FROM monitoring.metric_rollups_1m r WHERE r.bucket > pg_catalog.now() - interval '1 day'
        UNION ALL
        SELECT s.environment FROM monitoring.spans s WHERE s.start_time > pg_catalog.now() - interval '15 minutes'
    ) AS v(environment)
    WHERE v.environment IS NOT NULL
    ORDER BY 1
    LIMIT 1000
$$;
COMMENT ON FUNCTION monitoring.dashboard_environments() IS
    'Environments for the dashboards'' $environment variable: of issues seen in 30 days, metrics of a day, spans of 15 minutes';

CREATE FUNCTION monitoring.dashboard_services()
    RETURNS TABLE (service text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT v.service FROM (
        SELECT pg_catalog.unnest(g.services) FROM monitoring.tb_error_log g
        WHERE g.last_seen > pg_catalog.now() - interval '30 days'
        UNION ALL
        SELECT r.service FROM monitoring.metric_rollups_1m r WHERE r.bucket > pg_catalog.now() - interval '1 day'
        UNION ALL
        SELECT s.service FROM monitoring.spans s WHERE s.start_time > pg_catalog.now() - interval '15 minutes'
    ) AS v(service)
    WHERE v.service IS NOT NULL
    ORDER BY 1
    LIMIT 1000
$$;
COMMENT ON FUNCTION monitoring.dashboard_services() IS
    'Services for the dashboards'' $service variable: of issues seen in 30 days, metrics of a day, spans of 15 minutes';

-- Errors ---------------------------------------------------------------------------------

CREATE FUNCTION monitoring.dashboard_error_rate(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                                p_service text DEFAULT NULL, p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, occurrences bigint, issues bigint, affected_users bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), counted AS (
        SELECT pg_catalog.date_bin(b.w, o.occurred_at, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.count(*) AS occurrences, pg_catalog.count(DISTINCT o.error_id) AS issues,
               pg_catalog.count(DISTINCT monitoring._user_key(o.user_info, o.context)) AS users
        FROM width b, monitoring.tb_error_occurrence o
        WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
          AND (p_environment IS NULL OR o.environment = p_environment)
          AND (p_service IS NULL OR o.service = p_service)
        GROUP BY 1
    )
    SELECT t.t, COALESCE(c.occurrences, 0), COALESCE(c.issues, 0), COALESCE(c.users, 0)
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN counted c ON c.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_error_rate(timestamptz, timestamptz, text, text, interval) IS
    'Error occurrences per bucket, with the distinct issues and users they hit';

-- Occurrences of issues first seen in the range against those of issues known before it.
CREATE FUNCTION monitoring.dashboard_first_vs_repeat(p_from timestamptz, p_to timestamptz,
                                                     p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                     p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, new_issue_errors bigint, known_issue_errors bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), counted AS (
        SELECT pg_catalog.date_bin(b.w, o.occurred_at, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.count(*) FILTER (WHERE g.first_seen >= p_from) AS new_issue_errors,
               pg_catalog.count(*) FILTER (WHERE g.first_seen < p_from) AS known_issue_errors
        FROM width b, monitoring.tb_error_occurrence o
        JOIN monitoring.tb_error_log g ON g.error_id = o.error_id
        WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
          AND (p_environment IS NULL OR o.environment = p_environment)
          AND (p_service IS NULL OR o.service = p_service)
        GROUP BY 1
    )
    SELECT t.t, COALESCE(c.new_issue_errors, 0), COALESCE(c.known_issue_errors, 0)
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN counted c ON c.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_first_vs_repeat(timestamptz, timestamptz, text, text, interval) IS
    'Errors per bucket of issues first seen in the range against those of issues seen before it';

CREATE FUNCTION monitoring.dashboard_top_errors(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                                p_service text DEFAULT NULL, p_limit integer DEFAULT 10)
    RETURNS TABLE (fingerprint text, error_type text, title text, status text, occurrences bigint,
                   affected_users bigint, first_seen timestamptz, last_seen timestamptz, assignee text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT g.error_fingerprint, g.error_type, pg_catalog.left(g.title, 200), g.status, c.occurrences, c.users,
           c.first_seen, c.last_seen, g.assignee
    FROM (
        SELECT o.error_id, pg_catalog.count(*) AS occurrences,
               pg_catalog.count(DISTINCT monitoring._user_key(o.user_info, o.context)) AS users,
               pg_catalog.min(o.occurred_at) AS first_seen, pg_catalog.max(o.occurred_at) AS last_seen
        FROM monitoring.tb_error_occurrence o
        WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
          AND (p_environment IS NULL OR o.environment = p_environment)
          AND (p_service IS NULL OR o.service = p_service)
        GROUP BY o.error_id
    ) c
    JOIN monitoring.tb_error_log g ON g.error_id = c.error_id
    ORDER BY c.occurrences DESC, c.last_seen DESC, g.error_fingerprint
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_top_errors(timestamptz, timestamptz, text, text, integer) IS
    'The issues with the most occurrences in the range (any status), with users hit and current workflow state';

-- One function for the "errors by ..." panels: p_by names the dimension.
CREATE FUNCTION monitoring.dashboard_error_breakdown(p_from timestamptz, p_to timestamptz,
                                                     p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                     p_by text DEFAULT 'type', p_limit integer DEFAULT 10)
    RETURNS TABLE (key text, occurrences bigint, issues bigint, affected_users bigint)
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_by IS NULL OR p_by NOT IN ('environment', 'service', 'type', 'endpoint', 'level', 'release') THEN
        RAISE EXCEPTION 'dashboard_error_breakdown() breaks errors down by environment, service, type, endpoint, level or release, not %',
            COALESCE(pg_catalog.quote_literal(pg_catalog.left(p_by, 64)), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT COALESCE(CASE p_by
                        WHEN 'environment' THEN o.environment
                        WHEN 'service' THEN o.service
                        WHEN 'type' THEN o.exception_type
                        WHEN 'endpoint' THEN COALESCE(o.transaction_name,
                                                      pg_catalog.split_part(o.request ->> 'url', '?', 1))
                        WHEN 'level' THEN o.level
                        WHEN 'release' THEN o.release_version
                    END, '(none)') AS k,
           pg_catalog.count(*), pg_catalog.count(DISTINCT o.error_id),
           pg_catalog.count(DISTINCT monitoring._user_key(o.user_info, o.context))
    FROM monitoring.tb_error_occurrence o
    WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
      AND (p_environment IS NULL OR o.environment = p_environment)
      AND (p_service IS NULL OR o.service = p_service)
    GROUP BY 1
    ORDER BY 2 DESC, 1
    LIMIT GREATEST(p_limit, 0);
END
$$;
COMMENT ON FUNCTION monitoring.dashboard_error_breakdown(timestamptz, timestamptz, text, text, text, integer) IS
    'Errors in the range by environment, service, type, endpoint (transaction or request URL), level or release';

CREATE FUNCTION monitoring.dashboard_recent_errors(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                                   p_service text DEFAULT NULL, p_limit integer DEFAULT 50)
    RETURNS TABLE (occurred_at timestamptz, level text, environment text, service text, exception_type text,
                   message text, endpoint text, user_key text, fingerprint text, status text, trace_id text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.occurred_at, o.level, o.environment, o.service, o.exception_type, pg_catalog.left(o.message, 300),
           COALESCE(o.transaction_name, pg_catalog.split_part(o.request ->> 'url', '?', 1)),
           monitoring._user_key(o.user_info, o.context), g.error_fingerprint, g.status, o.trace_id
    FROM monitoring.tb_error_occurrence o
    JOIN monitoring.tb_error_log g ON g.error_id = o.error_id
    WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
      AND (p_environment IS NULL OR o.environment = p_environment)
      AND (p_service IS NULL OR o.service = p_service)
    ORDER BY o.occurred_at DESC
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_recent_errors(timestamptz, timestamptz, text, text, integer) IS
    'The latest error occurrences of the range, message cut to 300 characters';

CREATE FUNCTION monitoring.dashboard_issue_status(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                                  p_service text DEFAULT NULL)
    RETURNS TABLE (status text, issues bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT g.status, pg_catalog.count(*)
    FROM monitoring.tb_error_log g
    WHERE g.error_id IN (
        SELECT o.error_id FROM monitoring.tb_error_occurrence o
        WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
          AND (p_environment IS NULL OR o.environment = p_environment)
          AND (p_service IS NULL OR o.service = p_service))
    GROUP BY g.status
    ORDER BY CASE g.status WHEN 'unresolved' THEN 1 WHEN 'resolved' THEN 2 ELSE 3 END
$$;
COMMENT ON FUNCTION monitoring.dashboard_issue_status(timestamptz, timestamptz, text, text) IS
    'Issues that occurred in the range by their current status (unresolved, resolved, ignored)';

-- How long issues resolved in the range stayed open: from the group's first occurrence, or
-- from its last regression or reopening before the resolution.
CREATE FUNCTION monitoring.dashboard_resolution_time(p_from timestamptz, p_to timestamptz,
                                                     p_environment text DEFAULT NULL, p_service text DEFAULT NULL)
    RETURNS TABLE (resolved_issues bigint, median_hours double precision, p90_hours double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.count(*),
           pg_catalog.percentile_cont(0.5) WITHIN GROUP (ORDER BY r.hours),
           pg_catalog.percentile_cont(0.9) WITHIN GROUP (ORDER BY r.hours)
    FROM (
        SELECT EXTRACT(epoch FROM a.created_at - COALESCE(
                   (SELECT pg_catalog.max(b.created_at) FROM monitoring.error_activity b
                    WHERE b.error_id = a.error_id AND b.created_at < a.created_at
                      AND b.action IN ('regression', 'unresolve')),
                   g.first_seen))::double precision / 3600 AS hours
        FROM monitoring.error_activity a
        JOIN monitoring.tb_error_log g ON g.error_id = a.error_id
        WHERE a.action = 'resolve' AND a.created_at >= p_from AND a.created_at <= p_to
          AND (p_environment IS NULL OR p_environment = ANY (g.environments))
          AND (p_service IS NULL OR p_service = ANY (g.services))
    ) r
$$;
COMMENT ON FUNCTION monitoring.dashboard_resolution_time(timestamptz, timestamptz, text, text) IS
    'Issues resolved in the range and how long they were open (median and 90th percentile, hours)';

-- Failed access attempts: errors that say access was refused. The rule (docs/grafana.md):
-- SQLSTATE 42501, 28000 or 28P01 in a sqlstate/code tag or the message; an exception type
-- naming a permission, authorization or authentication failure; or HTTP status 401 or 403
-- in the tags or the Sentry response context.
CREATE FUNCTION monitoring.dashboard_failed_access(p_from timestamptz, p_to timestamptz,
                                                   p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                   p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, attempts bigint, users bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), counted AS (
        SELECT pg_catalog.date_bin(b.w, o.occurred_at, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.count(*) AS attempts,
               pg_catalog.count(DISTINCT monitoring._user_key(o.user_info, o.context)) AS users
        FROM width b, monitoring.tb_error_occurrence o
        WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
          AND (p_environment IS NULL OR o.environment = p_environment)
          AND (p_service IS NULL OR o.service = p_service)
          AND (o.exception_type ~* '(permission|forbidden|unauthori[sz]ed|access.?denied|insufficient.?privilege|not.?authenticated|authentication.?failed|invalid.?password)'
               OR o.message ~* '(permission denied|access denied|not authori[sz]ed|\m42501\M|\m28P01\M)'
               OR COALESCE(o.tags ->> 'sqlstate', o.tags ->> 'pgcode', o.context ->> 'sqlstate')
                      IN ('42501', '28000', '28P01')
               OR COALESCE(o.tags ->> 'http.status_code', o.tags ->> 'status_code',
                           o.context #>> '{contexts,response,status_code}', o.context ->> 'status_code')
                      IN ('401', '403'))
        GROUP BY 1
    )
    SELECT t.t, COALESCE(c.attempts, 0), COALESCE(c.users, 0)
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN counted c ON c.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_failed_access(timestamptz, timestamptz, text, text, interval) IS
    'Errors per bucket that record refused access (SQLSTATE 42501/28000/28P01, permission or auth exception types, HTTP 401/403), and the users';

-- Traces ---------------------------------------------------------------------------------
-- A request is an entry span: server or consumer, or a root (as request_rate() counts them).

CREATE FUNCTION monitoring.dashboard_requests(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                              p_service text DEFAULT NULL, p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, requests_per_second double precision, failed_per_second double precision,
                   error_rate_pct double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), counted AS (
        SELECT pg_catalog.date_bin(b.w, s.start_time, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.count(*) AS requests, pg_catalog.count(*) FILTER (WHERE s.status_code = 2) AS failed
        FROM width b, monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
        GROUP BY 1
    )
    SELECT t.t,
           COALESCE(c.requests, 0) / EXTRACT(epoch FROM b.w)::double precision,
           COALESCE(c.failed, 0) / EXTRACT(epoch FROM b.w)::double precision,
           CASE WHEN c.requests > 0 THEN 100.0 * c.failed / c.requests ELSE 0 END::double precision
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN counted c ON c.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_requests(timestamptz, timestamptz, text, text, interval) IS
    'Requests (server, consumer and root spans) per second per bucket, failed ones (status error) and the error rate in %';

CREATE FUNCTION monitoring.dashboard_latency(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                             p_service text DEFAULT NULL, p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, p50_ms double precision, p95_ms double precision, p99_ms double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), measured AS (
        SELECT pg_catalog.date_bin(b.w, s.start_time, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY s.duration_ms) AS q
        FROM width b, monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
        GROUP BY 1
    )
    SELECT t.t, m.q[1], m.q[2], m.q[3]
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN measured m ON m.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_latency(timestamptz, timestamptz, text, text, interval) IS
    'Request duration percentiles (p50, p95, p99, ms) per bucket; empty buckets give NULL (a gap)';

-- Requests as a heatmap: how many fell in each duration class (column names are the classes'
-- upper bounds in ms, as Grafana's heatmap reads pre-bucketed data).
CREATE FUNCTION monitoring.dashboard_request_heatmap(p_from timestamptz, p_to timestamptz,
                                                     p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                     p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, "10" bigint, "50" bigint, "100" bigint, "250" bigint, "500" bigint,
                   "1000" bigint, "2500" bigint, "5000" bigint, "+Inf" bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), counted AS (
        SELECT pg_catalog.date_bin(b.w, s.start_time, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms <= 10) AS c10,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 10 AND s.duration_ms <= 50) AS c50,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 50 AND s.duration_ms <= 100) AS c100,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 100 AND s.duration_ms <= 250) AS c250,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 250 AND s.duration_ms <= 500) AS c500,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 500 AND s.duration_ms <= 1000) AS c1000,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 1000 AND s.duration_ms <= 2500) AS c2500,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 2500 AND s.duration_ms <= 5000) AS c5000,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 5000) AS cinf
        FROM width b, monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
        GROUP BY 1
    )
    SELECT t.t, COALESCE(c.c10, 0), COALESCE(c.c50, 0), COALESCE(c.c100, 0), COALESCE(c.c250, 0),
           COALESCE(c.c500, 0), COALESCE(c.c1000, 0), COALESCE(c.c2500, 0), COALESCE(c.c5000, 0),
           COALESCE(c.cinf, 0)
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN counted c ON c.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_request_heatmap(timestamptz, timestamptz, text, text, interval) IS
    'Requests per bucket and duration class (columns: upper bounds in ms), for a Grafana heatmap';

-- Operations (entry spans by name). p_order: requests, p99_ms or error_rate_pct.
CREATE FUNCTION monitoring.dashboard_operations(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                                p_service text DEFAULT NULL, p_order text DEFAULT 'requests',
                                                p_limit integer DEFAULT 10)
    RETURNS TABLE (service text, operation_name text, requests bigint, failed bigint, error_rate_pct double precision,
                   p50_ms double precision, p95_ms double precision, p99_ms double precision, max_ms double precision)
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_order IS NULL OR p_order NOT IN ('requests', 'p99_ms', 'error_rate_pct') THEN
        RAISE EXCEPTION 'dashboard_operations() orders by requests, p99_ms or error_rate_pct, not %',
            COALESCE(pg_catalog.quote_literal(pg_catalog.left(p_order, 64)), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT o.service, o.operation_name, o.requests, o.failed, o.rate, o.q[1], o.q[2], o.q[3], o.longest
    FROM (
        SELECT s.service, s.operation_name, pg_catalog.count(*) AS requests,
               pg_catalog.count(*) FILTER (WHERE s.status_code = 2) AS failed,
               (100.0 * pg_catalog.count(*) FILTER (WHERE s.status_code = 2) / pg_catalog.count(*))::double precision AS rate,
               pg_catalog.percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY s.duration_ms) AS q,
               pg_catalog.max(s.duration_ms) AS longest
        FROM monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
        GROUP BY s.service, s.operation_name
    ) o
    ORDER BY CASE p_order WHEN 'requests' THEN o.requests::double precision
                          WHEN 'p99_ms' THEN o.q[3]
                          ELSE o.rate END DESC,
             o.requests DESC, o.service, o.operation_name
    LIMIT GREATEST(p_limit, 0);
END
$$;
COMMENT ON FUNCTION monitoring.dashboard_operations(timestamptz, timestamptz, text, text, text, integer) IS
    'Requests by service and operation in the range: count, failed, error rate, p50/p95/p99/max ms; top by requests, p99_ms or error_rate_pct';

CREATE FUNCTION monitoring.dashboard_operation_types(p_from timestamptz, p_to timestamptz,
                                                     p_environment text DEFAULT NULL, p_service text DEFAULT NULL)
    RETURNS TABLE (operation_type text, requests bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(NULLIF(s.attributes ->> 'graphql.operation.type', ''), s.kind), pg_catalog.count(*)
    FROM monitoring.spans s
    WHERE s.start_time >= p_from AND s.start_time <= p_to
      AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
      AND (p_environment IS NULL OR s.environment = p_environment)
      AND (p_service IS NULL OR s.service = p_service)
    GROUP BY 1
    ORDER BY 2 DESC, 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_operation_types(timestamptz, timestamptz, text, text) IS
    'Requests by GraphQL operation type (span attribute graphql.operation.type), else by span kind';

CREATE FUNCTION monitoring.dashboard_span_status(p_from timestamptz, p_to timestamptz,
                                                 p_environment text DEFAULT NULL, p_service text DEFAULT NULL)
    RETURNS TABLE (status text, spans bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE s.status_code WHEN 0 THEN 'unset' WHEN 1 THEN 'ok' ELSE 'error' END, pg_catalog.count(*)
    FROM monitoring.spans s
    WHERE s.start_time >= p_from AND s.start_time <= p_to
      AND (p_environment IS NULL OR s.environment = p_environment)
      AND (p_service IS NULL OR s.service = p_service)
    GROUP BY s.status_code
    ORDER BY s.status_code
$$;
COMMENT ON FUNCTION monitoring.dashboard_span_status(timestamptz, timestamptz, text, text) IS
    'Spans of the range by status (unset, ok, error)';

-- Database calls are spans with OpenTelemetry's db.system (or db.system.name) attribute.
CREATE FUNCTION monitoring.dashboard_db_queries(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                                p_service text DEFAULT NULL, p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, queries_per_second double precision, failed_per_second double precision,
                   p50_ms double precision, p95_ms double precision, p99_ms double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), measured AS (
        SELECT pg_catalog.date_bin(b.w, s.start_time, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.count(*) AS queries, pg_catalog.count(*) FILTER (WHERE s.status_code = 2) AS failed,
               pg_catalog.percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY s.duration_ms) AS q
        FROM width b, monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.attributes ? 'db.system' OR s.attributes ? 'db.system.name')
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
        GROUP BY 1
    )
    SELECT t.t,
           COALESCE(m.queries, 0) / EXTRACT(epoch FROM b.w)::double precision,
           COALESCE(m.failed, 0) / EXTRACT(epoch FROM b.w)::double precision,
           m.q[1], m.q[2], m.q[3]
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN measured m ON m.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_db_queries(timestamptz, timestamptz, text, text, interval) IS
    'Database calls (spans with db.system) per second per bucket, failed ones, and their p50/p95/p99 duration in ms';

-- Users and tenants ----------------------------------------------------------------------
-- A request's user is its span attribute enduser.id, else user.id; its tenant tenant.id, else
-- tenant. An error's user is what _user_key() takes (user id, e-mail, name, ip, context
-- user_id); its tenant the tag tenant.id, else tenant.

CREATE FUNCTION monitoring.dashboard_users(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                           p_service text DEFAULT NULL, p_limit integer DEFAULT 20)
    RETURNS TABLE (user_id text, tenant text, requests bigint, operations bigint, failed bigint,
                   error_rate_pct double precision, last_seen timestamptz)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT u.user_id, (pg_catalog.array_agg(u.tenant ORDER BY u.start_time DESC) FILTER (WHERE u.tenant IS NOT NULL))[1],
           pg_catalog.count(*), pg_catalog.count(DISTINCT u.operation_name),
           pg_catalog.count(*) FILTER (WHERE u.status_code = 2),
           (100.0 * pg_catalog.count(*) FILTER (WHERE u.status_code = 2) / pg_catalog.count(*))::double precision,
           pg_catalog.max(u.start_time)
    FROM (
        SELECT COALESCE(s.attributes ->> 'enduser.id', s.attributes ->> 'user.id') AS user_id,
               COALESCE(s.attributes ->> 'tenant.id', s.attributes ->> 'tenant') AS tenant,
               s.operation_name, s.status_code, s.start_time
        FROM monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
    ) u
    WHERE u.user_id IS NOT NULL
    GROUP BY u.user_id
    ORDER BY 3 DESC, 1
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_users(timestamptz, timestamptz, text, text, integer) IS
    'Users (span attribute enduser.id or user.id) by requests in the range: tenant, distinct operations, failed, error rate';

CREATE FUNCTION monitoring.dashboard_user_errors(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                                 p_service text DEFAULT NULL, p_limit integer DEFAULT 20)
    RETURNS TABLE (user_key text, tenant text, errors bigint, issues bigint, last_error timestamptz)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT u.user_key, (pg_catalog.array_agg(u.tenant ORDER BY u.occurred_at DESC) FILTER (WHERE u.tenant IS NOT NULL))[1],
           pg_catalog.count(*), pg_catalog.count(DISTINCT u.error_id), pg_catalog.max(u.occurred_at)
    FROM (
        SELECT monitoring._user_key(o.user_info, o.context) AS user_key,
               COALESCE(o.tags ->> 'tenant.id', o.tags ->> 'tenant') AS tenant, o.error_id, o.occurred_at
        FROM monitoring.tb_error_occurrence o
        WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
          AND (p_environment IS NULL OR o.environment = p_environment)
          AND (p_service IS NULL OR o.service = p_service)
    ) u
    WHERE u.user_key IS NOT NULL
    GROUP BY u.user_key
    ORDER BY 3 DESC, 1
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_user_errors(timestamptz, timestamptz, text, text, integer) IS
    'Users hit by errors in the range: tenant (tag tenant.id or tenant), errors, distinct issues, latest error';

CREATE FUNCTION monitoring.dashboard_tenants(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                             p_service text DEFAULT NULL, p_limit integer DEFAULT 20)
    RETURNS TABLE (tenant text, active_users bigint, requests bigint, failed bigint, error_rate_pct double precision,
                   p95_ms double precision, errors bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH requests AS (
        SELECT COALESCE(s.attributes ->> 'tenant.id', s.attributes ->> 'tenant') AS tenant,
               pg_catalog.count(DISTINCT COALESCE(s.attributes ->> 'enduser.id', s.attributes ->> 'user.id')) AS users,
               pg_catalog.count(*) AS requests, pg_catalog.count(*) FILTER (WHERE s.status_code = 2) AS failed,
               pg_catalog.percentile_cont(0.95) WITHIN GROUP (ORDER BY s.duration_ms) AS p95
        FROM monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
          AND COALESCE(s.attributes ->> 'tenant.id', s.attributes ->> 'tenant') IS NOT NULL
        GROUP BY 1
    ), errors AS (
        SELECT COALESCE(o.tags ->> 'tenant.id', o.tags ->> 'tenant') AS tenant, pg_catalog.count(*) AS errors
        FROM monitoring.tb_error_occurrence o
        WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
          AND (p_environment IS NULL OR o.environment = p_environment)
          AND (p_service IS NULL OR o.service = p_service)
          AND COALESCE(o.tags ->> 'tenant.id', o.tags ->> 'tenant') IS NOT NULL
        GROUP BY 1
    )
    SELECT COALESCE(r.tenant, e.tenant), COALESCE(r.users, 0), COALESCE(r.requests, 0), COALESCE(r.failed, 0),
           CASE WHEN r.requests > 0 THEN 100.0 * r.failed / r.requests ELSE 0 END::double precision,
           r.p95, COALESCE(e.errors, 0)
    FROM requests r
    FULL JOIN errors e ON e.tenant = r.tenant
    ORDER BY 3 DESC, 7 DESC, 1
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_tenants(timestamptz, timestamptz, text, text, integer) IS
    'Tenants (span attribute or error tag tenant.id or tenant) side by side: active users, requests, failures, p95 ms, errors';

-- New users: users whose first request in the range has no request in p_lookback before the
-- range (the span retention bounds what can be known; a week by default keeps it cheap).
CREATE FUNCTION monitoring.dashboard_new_users(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                               p_service text DEFAULT NULL, p_bucket interval DEFAULT '1 hour',
                                               p_lookback interval DEFAULT '7 days')
    RETURNS TABLE ("time" timestamptz, new_users bigint, active_users bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), seen AS (
        SELECT COALESCE(s.attributes ->> 'enduser.id', s.attributes ->> 'user.id') AS user_id,
               pg_catalog.date_bin(b.w, s.start_time, '2000-01-01 00:00:00+00') AS bucket
        FROM width b, monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
          AND COALESCE(s.attributes ->> 'enduser.id', s.attributes ->> 'user.id') IS NOT NULL
        GROUP BY 1, 2
    ), firsts AS (
        SELECT f.user_id, pg_catalog.min(f.bucket) AS bucket FROM seen f
        WHERE NOT EXISTS (
            SELECT FROM monitoring.spans p
            WHERE p.start_time >= p_from - GREATEST(p_lookback, interval '0') AND p.start_time < p_from
              AND (p.kind IN ('server', 'consumer') OR p.parent_span_id IS NULL)
              AND (p_environment IS NULL OR p.environment = p_environment)
              AND (p_service IS NULL OR p.service = p_service)
              AND COALESCE(p.attributes ->> 'enduser.id', p.attributes ->> 'user.id') = f.user_id)
        GROUP BY f.user_id
    ), new_users AS (
        SELECT f.bucket, pg_catalog.count(*) AS n FROM firsts f GROUP BY f.bucket
    ), active_users AS (
        SELECT a.bucket, pg_catalog.count(*) AS n FROM seen a GROUP BY a.bucket
    )
    SELECT t.t, COALESCE(n.n, 0), COALESCE(a.n, 0)
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN new_users n ON n.bucket = t.t
    LEFT JOIN active_users a ON a.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_new_users(timestamptz, timestamptz, text, text, interval, interval) IS
    'Users per bucket: first seen (no request in p_lookback before the range) and active';

-- Metrics (from the per-minute rollups) ---------------------------------------------------
-- Buckets are at least a minute. Applications name their metrics; the dashboards use seed
-- 000's names (graphql.requests.total, graphql.request.duration_ms, db.pool.connections.*).

CREATE FUNCTION monitoring.dashboard_metric_rate(p_from timestamptz, p_to timestamptz,
                                                 p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                 p_bucket interval DEFAULT '1 minute',
                                                 p_metric text DEFAULT 'graphql.requests.total')
    RETURNS TABLE ("time" timestamptz, per_second double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket, interval '1 minute') AS w
    ), summed AS (
        SELECT pg_catalog.date_bin(b.w, r.bucket, '2000-01-01 00:00:00+00') AS bucket, pg_catalog.sum(r.value_sum) AS total
        FROM width b, monitoring.metric_rollups_1m r
        WHERE r.bucket >= pg_catalog.date_trunc('minute', p_from) AND r.bucket <= p_to
          AND r.metric_name = p_metric AND r.metric_type = 'counter'
          AND (p_environment IS NULL OR r.environment = p_environment)
          AND (p_service IS NULL OR r.service = p_service)
        GROUP BY 1
    )
    SELECT t.t, COALESCE(m.total, 0) / EXTRACT(epoch FROM b.w)::double precision
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN summed m ON m.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_metric_rate(timestamptz, timestamptz, text, text, interval, text) IS
    'A counter''s increase per second per bucket, summed over its series (labels, services), from metric_rollups_1m';

-- A gauge: per minute the sum of its series' last readings (e.g. every pod's pool), per bucket
-- the mean of those minutes.
CREATE FUNCTION monitoring.dashboard_metric_gauge(p_from timestamptz, p_to timestamptz,
                                                  p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                  p_bucket interval DEFAULT '1 minute',
                                                  p_metric text DEFAULT 'db.pool.connections.active')
    RETURNS TABLE ("time" timestamptz, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket, interval '1 minute') AS w
    ), minutes AS (
        SELECT r.bucket AS minute, pg_catalog.sum(r.value_last) AS total
        FROM monitoring.metric_rollups_1m r
        WHERE r.bucket >= pg_catalog.date_trunc('minute', p_from) AND r.bucket <= p_to
          AND r.metric_name = p_metric AND r.metric_type = 'gauge'
          AND (p_environment IS NULL OR r.environment = p_environment)
          AND (p_service IS NULL OR r.service = p_service)
        GROUP BY r.bucket
    ), averaged AS (
        SELECT pg_catalog.date_bin(b.w, m.minute, '2000-01-01 00:00:00+00') AS bucket, pg_catalog.avg(m.total) AS value
        FROM width b, minutes m
        GROUP BY 1
    )
    SELECT t.t, a.value
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN averaged a ON a.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_metric_gauge(timestamptz, timestamptz, text, text, interval, text) IS
    'A gauge per bucket: the sum of its series'' last reading per minute, averaged over the bucket''s minutes (NULL without data)';

-- Percentiles of several minutes cannot be combined exactly: each is the mean of the minutes'
-- percentiles weighted by their observations (exact for one series and one-minute buckets).
CREATE FUNCTION monitoring.dashboard_metric_histogram(p_from timestamptz, p_to timestamptz,
                                                      p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                      p_bucket interval DEFAULT '1 minute',
                                                      p_metric text DEFAULT 'graphql.request.duration_ms')
    RETURNS TABLE ("time" timestamptz, observations bigint, p50 double precision, p95 double precision,
                   p99 double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket, interval '1 minute') AS w
    ), combined AS (
        SELECT pg_catalog.date_bin(b.w, r.bucket, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.sum(r.sample_count) AS n,
               pg_catalog.sum(r.p50 * r.sample_count) / pg_catalog.sum(r.sample_count) AS p50,
               pg_catalog.sum(r.p95 * r.sample_count) / pg_catalog.sum(r.sample_count) AS p95,
               pg_catalog.sum(r.p99 * r.sample_count) / pg_catalog.sum(r.sample_count) AS p99
        FROM width b, monitoring.metric_rollups_1m r
        WHERE r.bucket >= pg_catalog.date_trunc('minute', p_from) AND r.bucket <= p_to
          AND r.metric_name = p_metric AND r.metric_type = 'histogram'
          AND (p_environment IS NULL OR r.environment = p_environment)
          AND (p_service IS NULL OR r.service = p_service)
        GROUP BY 1
    )
    SELECT t.t, COALESCE(c.n, 0)::bigint, c.p50, c.p95, c.p99
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN combined c ON c.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_metric_histogram(timestamptz, timestamptz, text, text, interval, text) IS
    'A histogram per bucket: observations and p50/p95/p99 (observation-weighted mean of the minutes'' percentiles)';

-- Audit (the entity change log and the issue workflow) ------------------------------------
-- The change log has no environment or service: its panels ignore those variables.

CREATE FUNCTION monitoring.dashboard_audit_events(p_from timestamptz, p_to timestamptz, p_limit integer DEFAULT 100)
    RETURNS TABLE (changed_at timestamptz, entity_name text, entity_id text, change_type text, changed_columns text,
                   changed_by text, application_user text, table_name text, trace_id text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.changed_at, c.entity_name, pg_catalog.left(c.entity_id, 200), c.change_type,
           pg_catalog.array_to_string(c.changed_columns, ', '), c.changed_by, c.application_user, c.table_name,
           c.trace_id
    FROM monitoring.tb_entity_change_log c
    WHERE c.changed_at >= p_from AND c.changed_at <= p_to
    ORDER BY c.changed_at DESC, c.change_id DESC
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_audit_events(timestamptz, timestamptz, integer) IS
    'The latest entity changes of the range (who, what, which columns), without the row data';

CREATE FUNCTION monitoring.dashboard_audit_event_types(p_from timestamptz, p_to timestamptz,
                                                       p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, inserts bigint, updates bigint, deletes bigint, truncates bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), counted AS (
        SELECT pg_catalog.date_bin(b.w, c.changed_at, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.count(*) FILTER (WHERE c.change_type = 'INSERT') AS inserts,
               pg_catalog.count(*) FILTER (WHERE c.change_type = 'UPDATE') AS updates,
               pg_catalog.count(*) FILTER (WHERE c.change_type = 'DELETE') AS deletes,
               pg_catalog.count(*) FILTER (WHERE c.change_type = 'TRUNCATE') AS truncates
        FROM width b, monitoring.tb_entity_change_log c
        WHERE c.changed_at >= p_from AND c.changed_at <= p_to
        GROUP BY 1
    )
    SELECT t.t, COALESCE(c.inserts, 0), COALESCE(c.updates, 0), COALESCE(c.deletes, 0), COALESCE(c.truncates, 0)
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN counted c ON c.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_audit_event_types(timestamptz, timestamptz, interval) IS
    'Entity changes per bucket by type (INSERT, UPDATE, DELETE, TRUNCATE)';

-- Admin actions: the issue workflow (resolve, ignore, assign, ... and by whom).
CREATE FUNCTION monitoring.dashboard_admin_actions(p_from timestamptz, p_to timestamptz,
                                                   p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                   p_limit integer DEFAULT 100)
    RETURNS TABLE (created_at timestamptz, actor text, action text, fingerprint text, title text, details text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.created_at, a.actor, a.action, g.error_fingerprint, pg_catalog.left(g.title, 200),
           pg_catalog.left(a.details::text, 300)
    FROM monitoring.error_activity a
    JOIN monitoring.tb_error_log g ON g.error_id = a.error_id
    WHERE a.created_at >= p_from AND a.created_at <= p_to
      AND a.action NOT IN ('first_seen', 'regression')
      AND (p_environment IS NULL OR p_environment = ANY (g.environments))
      AND (p_service IS NULL OR p_service = ANY (g.services))
    ORDER BY a.created_at DESC, a.activity_id DESC
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_admin_actions(timestamptz, timestamptz, text, text, integer) IS
    'Workflow actions people took on issues in the range (resolve, unresolve, ignore, unignore, assign, unassign), by whom';

-- Permission changes: changes to tracked tables whose entity or table name speaks of roles,
-- permissions, privileges, grants, ACLs or memberships.
CREATE FUNCTION monitoring.dashboard_permission_changes(p_from timestamptz, p_to timestamptz,
                                                        p_limit integer DEFAULT 100)
    RETURNS TABLE (changed_at timestamptz, entity_name text, entity_id text, change_type text, changed_columns text,
                   changed_by text, application_user text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.changed_at, c.entity_name, pg_catalog.left(c.entity_id, 200), c.change_type,
           pg_catalog.array_to_string(c.changed_columns, ', '), c.changed_by, c.application_user
    FROM monitoring.tb_entity_change_log c
    WHERE c.changed_at >= p_from AND c.changed_at <= p_to
      AND (c.entity_name ~* '(role|permission|privilege|grant|acl|membership)'
           OR c.table_name ~* '(role|permission|privilege|grant|acl|membership)')
    ORDER BY c.changed_at DESC, c.change_id DESC
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_permission_changes(timestamptz, timestamptz, integer) IS
    'Changes to tracked tables whose entity or table name speaks of roles, permissions, privileges, grants, ACLs or memberships';

-- Who changes what: the change log records writes (not reads), by application user and role.
CREATE FUNCTION monitoring.dashboard_changes_by_actor(p_from timestamptz, p_to timestamptz, p_limit integer DEFAULT 20)
    RETURNS TABLE (actor text, database_role text, entity_name text, inserts bigint, updates bigint, deletes bigint,
                   last_change timestamptz)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(c.application_user, c.changed_by), c.changed_by, c.entity_name,
           pg_catalog.count(*) FILTER (WHERE c.change_type = 'INSERT'),
           pg_catalog.count(*) FILTER (WHERE c.change_type = 'UPDATE'),
           pg_catalog.count(*) FILTER (WHERE c.change_type IN ('DELETE', 'TRUNCATE')),
           pg_catalog.max(c.changed_at)
    FROM monitoring.tb_entity_change_log c
    WHERE c.changed_at >= p_from AND c.changed_at <= p_to
    GROUP BY 1, 2, 3
    ORDER BY pg_catalog.count(*) DESC, 1, 3
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_changes_by_actor(timestamptz, timestamptz, integer) IS
    'Entity changes in the range per actor (application user, else database role) and entity';

-- Time since the newest change (identity order: the newest rows of each partition's key).
CREATE FUNCTION monitoring.dashboard_audit_lag()
    RETURNS TABLE (seconds_since_last_change double precision, changes_last_hour bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    -- changes of a transaction still running are later than its now(): no negative lag
    -- (GREATEST ignores a NULL, so no change at all stays NULL only through the CASE)
    SELECT CASE WHEN l.newest IS NOT NULL
                THEN GREATEST(EXTRACT(epoch FROM pg_catalog.now() - l.newest), 0)::double precision END,
           (SELECT pg_catalog.count(*) FROM monitoring.tb_entity_change_log c
            WHERE c.changed_at > pg_catalog.now() - interval '1 hour')
    FROM (SELECT pg_catalog.max(n.changed_at) AS newest FROM (
              SELECT c.changed_at FROM monitoring.tb_entity_change_log c
              ORDER BY c.change_id DESC LIMIT 100) n) l
$$;
COMMENT ON FUNCTION monitoring.dashboard_audit_lag() IS
    'Seconds since the newest entity change (NULL when there is none) and the changes of the last hour';

-- Compliance: is the audit trail being written and kept. Reads H1's partition_health.
CREATE FUNCTION monitoring.dashboard_compliance_status()
    RETURNS TABLE (check_name text, status text, detail text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'change tracking',
           CASE WHEN pg_catalog.count(*) > 0 THEN 'ok' ELSE 'warning' END,
           CASE WHEN pg_catalog.count(*) > 0
                THEN pg_catalog.left(pg_catalog.format('%s tables tracked: %s', pg_catalog.count(*),
                         pg_catalog.string_agg(t.entity_name, ', ' ORDER BY t.entity_name)), 300)
                ELSE 'no table is tracked: SELECT monitoring.track_changes(''schema.table'')' END
    FROM monitoring.tracked_tables t
    UNION ALL
    SELECT 'change log retention',
           CASE WHEN c.retention IS NULL OR c.retention >= interval '1 year' THEN 'ok' ELSE 'warning' END,
           CASE WHEN c.retention IS NULL THEN 'changes are kept forever'
                ELSE pg_catalog.format('changes are kept %s (audit trails are commonly kept a year or more)',
                                       c.retention) END
    FROM monitoring.time_series_config c
    WHERE c.parent_table = 'monitoring.tb_entity_change_log'
    UNION ALL
    SELECT 'change log partitions', p.status,
           pg_catalog.format('%s partitions, %s made ahead, %s rows waiting in the default partition',
                             p.partitions, p.partitions_ahead, p.default_partition_rows)
    FROM monitoring.partition_health p
    WHERE p.parent_table = 'monitoring.tb_entity_change_log'
$$;
COMMENT ON FUNCTION monitoring.dashboard_compliance_status() IS
    'Audit trail checks (ok/warning/critical): tables tracked, change log retention (a year or more), change log partitions';

-- PostgreSQL's counters for this database since its statistics were reset (pg_stat_database
-- keeps no history: these are totals and averages, not time series).
CREATE FUNCTION monitoring.dashboard_database_activity()
    RETURNS TABLE (commits bigint, rollbacks bigint, rollback_pct double precision, deadlocks bigint,
                   conflicts bigint, temp_bytes bigint, rows_returned bigint, rows_fetched bigint,
                   rows_inserted bigint, rows_updated bigint, rows_deleted bigint, sessions bigint,
                   sessions_per_minute double precision, stats_since timestamptz)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.xact_commit, d.xact_rollback,
           (100.0 * d.xact_rollback / NULLIF(d.xact_commit + d.xact_rollback, 0))::double precision,
           d.deadlocks, d.conflicts, d.temp_bytes, d.tup_returned, d.tup_fetched, d.tup_inserted, d.tup_updated,
           d.tup_deleted, d.sessions,
           (d.sessions / NULLIF(EXTRACT(epoch FROM pg_catalog.now()
                                        - COALESCE(d.stats_reset, pg_catalog.pg_postmaster_start_time())) / 60, 0))::double precision,
           COALESCE(d.stats_reset, pg_catalog.pg_postmaster_start_time())
    FROM pg_catalog.pg_stat_database d
    WHERE d.datname = pg_catalog.current_database()
$$;
COMMENT ON FUNCTION monitoring.dashboard_database_activity() IS
    'This database since its statistics reset: commits, rollbacks (and %), deadlocks, rows read and written, sessions and sessions per minute';
