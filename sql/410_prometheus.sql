-- Prometheus exposition of pg_observe's figures (docs/prometheus.md).
--
-- monitoring.prometheus_metrics() returns the text format 0.0.4: for every family of
-- _prometheus_families() one "# HELP" and one "# TYPE" line, then its samples, contiguous.
-- The samples come from one function per section; each reads only small or bounded data, so
-- that a scrape costs the same with ten or ten million stored rows:
--   errors         the groups (error_groups: tb_error_log and pending deltas), never the occurrences
--   notifications  the queue (small), the delivery log of the last hour (sent_at index),
--                  the dispatchers' heartbeats
--   traces         entry spans of the last complete minute (start_time prunes to one
--                  partition and the start_time index bounds the read)
--   metrics        the rollup watermark and the newest complete minute of metric_rollups_1m
--                  (within the last 5 minutes); never the raw points
--   partitions     monitoring.partition_health, and pg_class estimates for stored rows
--   database       pg_stat_* and pg_settings
--   health         monitoring.health(), one gauge per check
--   cache          the counter rows of cache_counters (namespaces x live backends, small), the
--                  newest cache_stats_history sample and pg_class figures; never cache_entries
--                  (cache_stats counts it: 0.1 s per million entries)
-- Label values that come from users' data (environments, services, tables, metric names) are
-- bounded: the 20 largest groups by name, the rest folded into "(other)" (see each section).

CREATE FUNCTION monitoring._prometheus_families()
    RETURNS TABLE (family text, metric_type text, help text, sort_order integer)
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT f.family, f.metric_type, f.help, (pg_catalog.row_number() OVER ())::integer   -- in the order listed
    FROM (VALUES
        -- about pg_observe itself
        ('pg_observe_info', 'gauge', 'pg_observe''s installed version (always 1)'),
        -- errors
        ('pg_observe_error_occurrences_total', 'counter', 'Error occurrences captured, by the level of their group (group counters, not the occurrences table)'),
        ('pg_observe_error_groups', 'gauge', 'Error groups (issues) seen in each environment, by level and status; a group seen in several environments counts in each'),
        ('pg_observe_error_groups_new_last_hour', 'gauge', 'Error groups first seen in the last hour, by level'),
        -- notifications
        ('pg_observe_notification_queue_messages', 'gauge', 'Messages in monitoring.notification_queue, by status (dead: gave up, kept for keep_dead)'),
        ('pg_observe_notification_queue_oldest_pending_seconds', 'gauge', 'Age of the oldest pending or sending message of the queue (0 when none)'),
        ('pg_observe_notification_deliveries_last_hour', 'gauge', 'Delivery attempts of the last hour, by channel type and outcome (sent, failed)'),
        ('pg_observe_notification_delivery_duration_seconds_last_hour', 'gauge', 'Delivery attempt duration over the last hour, by channel type, at percentile 50 and 95'),
        ('pg_observe_dispatcher_last_seen_timestamp_seconds', 'gauge', 'Unix time of the last dispatch_notifications() call of each dispatcher'),
        ('pg_observe_dispatcher_calls_total', 'counter', 'dispatch_notifications() calls of each dispatcher'),
        -- traces
        ('pg_observe_trace_requests_last_minute', 'gauge', 'Requests (server, consumer and root spans) started in the last complete minute'),
        ('pg_observe_trace_failed_requests_last_minute', 'gauge', 'Requests of the last complete minute whose span has status error'),
        ('pg_observe_trace_slow_requests_last_minute', 'gauge', 'Requests of the last complete minute that took longer than 0.1 s'),
        ('pg_observe_trace_request_duration_seconds_last_minute', 'gauge', 'Request duration over the last complete minute at percentile 50, 95 and 99'),
        ('pg_observe_trace_http_responses_last_minute', 'gauge', 'Requests of the last complete minute by HTTP response status code (span attribute http.response.status_code or http.status_code)'),
        ('pg_observe_trace_ingest_delay_seconds_last_minute', 'gauge', 'Delay between a request''s end and its span''s arrival, over the last complete minute, at percentile 50, 95 and 99'),
        -- metrics
        ('pg_observe_metric_rollup_lag_seconds', 'gauge', 'Age of the rollup watermark: points received since are not in metric_rollups_1m yet'),
        ('pg_observe_metric_rollup_last_run_timestamp_seconds', 'gauge', 'Unix time of the last rollup_metrics() run'),
        ('pg_observe_app_metric_samples_last_minute', 'gauge', 'Points recorded in the newest complete rolled-up minute, per metric (all label sets together)'),
        ('pg_observe_app_metric_sum_last_minute', 'gauge', 'Sum of the values recorded in the newest complete rolled-up minute, per metric'),
        ('pg_observe_app_metric_max_last_minute', 'gauge', 'Largest value recorded in the newest complete rolled-up minute, per metric'),
        ('pg_observe_app_metric_p99_last_minute', 'gauge', 'Highest per-series p99 of a histogram metric in the newest complete rolled-up minute'),
        -- partitions and storage
        ('pg_observe_partitions', 'gauge', 'Partitions of each time-series table'),
        ('pg_observe_partitions_ahead', 'gauge', 'Partitions made ahead of the current one (0: new rows will soon land in the default partition)'),
        ('pg_observe_partition_default_rows', 'gauge', 'Rows waiting in the default partition of each time-series table'),
        ('pg_observe_partition_newest_end_timestamp_seconds', 'gauge', 'Unix time up to which partitions exist'),
        ('pg_observe_partition_status', 'gauge', 'Partition health of each time-series table: 0 ok, 1 warning, 2 critical'),
        ('pg_observe_stored_rows', 'gauge', 'Rows of each time-series table, estimated from the planner statistics (pg_class.reltuples)'),
        ('pg_observe_stored_bytes', 'gauge', 'Size of each time-series table with its indexes and TOAST, all partitions'),
        -- database health
        ('pg_observe_database_size_bytes', 'gauge', 'Size of the current database'),
        ('pg_observe_database_blocks_hit_total', 'counter', 'Blocks of the current database found in shared buffers'),
        ('pg_observe_database_blocks_read_total', 'counter', 'Blocks of the current database read from the operating system'),
        ('pg_observe_database_transactions_total', 'counter', 'Transactions of the current database, by outcome (commit, rollback)'),
        ('pg_observe_database_deadlocks_total', 'counter', 'Deadlocks detected in the current database'),
        ('pg_observe_connections', 'gauge', 'Client connections of the whole server, by state (active, idle, idle in transaction, other)'),
        ('pg_observe_connections_max', 'gauge', 'The server''s max_connections'),
        ('pg_observe_connections_waiting_on_locks', 'gauge', 'Client connections of the server waiting for a lock'),
        ('pg_observe_longest_query_seconds', 'gauge', 'Run time of the longest active query of the server running for over 1 s (0 when none)'),
        ('pg_observe_slow_queries', 'gauge', 'Active queries of the server running for more than 1 s'),
        ('pg_observe_table_seq_scans_total', 'counter', 'Sequential scans of the 20 tables (or partitions) with the most; a dropped table''s series ends'),
        ('pg_observe_table_live_tuples', 'gauge', 'Live rows of the 20 tables (or partitions) with the most dead rows'),
        ('pg_observe_table_dead_tuples', 'gauge', 'Dead rows (bloat until vacuumed) of the 20 tables (or partitions) with the most'),
        ('pg_observe_unused_indexes', 'gauge', 'Indexes never scanned since the statistics were reset, but those of constraints, of partitions and of pg_observe'),
        ('pg_observe_function_calls_total', 'counter', 'Calls of the 20 functions with the most total time (needs track_functions)'),
        ('pg_observe_function_seconds_total', 'counter', 'Total time spent in the 20 functions with the most (needs track_functions)'),
        -- health
        ('pg_observe_health_status', 'gauge', 'Status of each monitoring.health() check: 0 ok, 1 warning, 2 critical'),
        ('pg_observe_health_observed', 'gauge', 'The value each monitoring.health() check observed'),
        -- cache
        ('pg_observe_cache_up', 'gauge', 'Whether the cache table could be opened within 0.5 s and its counters read (0: locked by TRUNCATE, VACUUM FULL, ALTER, REINDEX..., or not readable by this role); absent on a standby'),
        ('pg_observe_cache_hits_total', 'counter', 'Cache reads that found a live entry, per namespace (the last < 100 calls or 10 s of each connection are pending)'),
        ('pg_observe_cache_misses_total', 'counter', 'Cache reads that found no live entry, per namespace'),
        ('pg_observe_cache_sets_total', 'counter', 'Cache entries written (set, set_many per key, incr, set_if_absent when it wrote), per namespace'),
        ('pg_observe_cache_evictions_total', 'counter', 'Expired cache entries deleted by expire_cache(), per namespace'),
        ('pg_observe_cache_entries', 'gauge', 'Cache entries per namespace, expired ones not yet deleted included, as of the newest cache_stats_history sample'),
        ('pg_observe_cache_expired_pending_entries', 'gauge', 'Expired cache entries expire_cache() has not deleted yet, per namespace, as of the newest cache_stats_history sample'),
        ('pg_observe_cache_bytes', 'gauge', 'Keys and values stored (compressed) per namespace, as of the newest cache_stats_history sample'),
        ('pg_observe_cache_sampled_timestamp_seconds', 'gauge', 'Unix time of the cache_stats_history sample (run_maintenance()) the per-namespace entries and bytes come from'),
        ('pg_observe_cache_table_rows', 'gauge', 'Rows of the cache table now, all namespaces, estimated from the planner statistics (pg_class.reltuples)'),
        ('pg_observe_cache_table_bytes', 'gauge', 'Size of the cache table now with its indexes and TOAST, dead space included'),
        -- last: measured once everything above is computed
        ('pg_observe_scrape_duration_seconds', 'gauge', 'Time monitoring.prometheus_metrics() took to compute everything above')
    ) AS f(family, metric_type, help)
$$;
COMMENT ON FUNCTION monitoring._prometheus_families() IS
    'The families prometheus_metrics() exposes, in order, with their type and help text';

-- Escaping of the text format: label values escape backslash, double quote and newline; help
-- texts backslash and newline. PostgreSQL text holds no NUL.
CREATE FUNCTION monitoring._prometheus_escape(p_value text, p_quote boolean DEFAULT true)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    STRICT
    PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_quote
                THEN pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(p_value, E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n')
                ELSE pg_catalog.replace(pg_catalog.replace(p_value, E'\\', E'\\\\'), E'\n', E'\\n') END
$$;
COMMENT ON FUNCTION monitoring._prometheus_escape(text, boolean) IS
    'Escapes a label value (backslash, double quote, newline) or, with p_quote false, a help text (backslash, newline)';

-- One sample line: name{label="value",...} value. Labels in the order jsonb keeps them; a
-- NULL label value is written empty (Prometheus reads an empty value as no label).
CREATE FUNCTION monitoring._prometheus_sample(p_family text, p_labels jsonb, p_value double precision)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    SET extra_float_digits = 1   -- shortest exact text of a double, whatever the session says
AS $$
    SELECT p_family
           || COALESCE('{' || (SELECT pg_catalog.string_agg(
                                   l.key || '="' || COALESCE(monitoring._prometheus_escape(l.value), '') || '"', ','
                                   ORDER BY l.ordinality)
                               FROM pg_catalog.jsonb_each_text(COALESCE(p_labels, '{}')) WITH ORDINALITY l) || '}', '')
           || ' '
           || CASE WHEN p_value IS NULL OR p_value = 'NaN' THEN 'NaN'
                   WHEN p_value = 'Infinity' THEN '+Inf'
                   WHEN p_value = '-Infinity' THEN '-Inf'
                   ELSE p_value::text END
           || E'\n'
$$;
COMMENT ON FUNCTION monitoring._prometheus_sample(text, jsonb, double precision) IS
    'One sample line of the text format, labels escaped, NaN/+Inf/-Inf spelled as Prometheus does';

-- ---------------------------------------------------------------- errors
-- From the groups only (error_groups: folded counters plus pending deltas, exact). A group
-- belongs to one level for life (its first occurrence's), so the counter per level only grows
-- (deleting groups looks like a counter reset). Environment and status are not labels of the
-- counter: a group's status changes and its occurrences are not split by environment, so
-- counts would jump between series. Environments are bounded to the 20 with the most groups.
CREATE FUNCTION monitoring._prometheus_error_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH grp AS (
        SELECT g.error_id, g.severity, g.status, g.environments, g.first_seen, g.occurrence_count AS occurrences
        FROM monitoring.error_groups g
    ), levels (level, rank) AS (
        VALUES ('debug', 1), ('info', 2), ('warning', 3), ('error', 4), ('fatal', 5)
    ), per_level AS (
        SELECT g.severity, pg_catalog.sum(g.occurrences) AS occurrences,
               pg_catalog.count(*) FILTER (WHERE g.first_seen > pg_catalog.now() - interval '1 hour') AS new_groups
        FROM grp g GROUP BY g.severity
    ), seen AS (
        SELECT g.error_id, g.severity, g.status, e.environment
        FROM grp g CROSS JOIN LATERAL pg_catalog.unnest(g.environments) AS e(environment)
    ), environment_rank AS (
        SELECT s.environment, pg_catalog.row_number() OVER (ORDER BY pg_catalog.count(*) DESC, s.environment) AS rank
        FROM seen s GROUP BY s.environment
    )
    SELECT 'pg_observe_error_occurrences_total', pg_catalog.jsonb_build_object('level', l.level),
           COALESCE(p.occurrences, 0)::double precision
    FROM levels l LEFT JOIN per_level p ON p.severity = l.level
    UNION ALL
    SELECT 'pg_observe_error_groups',
           pg_catalog.jsonb_build_object('environment', CASE WHEN r.rank <= 20 THEN s.environment ELSE '(other)' END,
                                         'level', s.severity, 'status', s.status),
           pg_catalog.count(DISTINCT s.error_id)::double precision
    FROM seen s JOIN environment_rank r ON r.environment = s.environment
    GROUP BY CASE WHEN r.rank <= 20 THEN s.environment ELSE '(other)' END, s.severity, s.status
    UNION ALL
    SELECT 'pg_observe_error_groups_new_last_hour', pg_catalog.jsonb_build_object('level', l.level),
           COALESCE(p.new_groups, 0)::double precision
    FROM levels l LEFT JOIN per_level p ON p.severity = l.level
$$;
COMMENT ON FUNCTION monitoring._prometheus_error_samples() IS
    'Prometheus samples of the errors section: occurrences per level, groups per environment/level/status, new groups';

-- ---------------------------------------------------------------- notifications
-- The queue is small (sent and dead messages expire); the delivery log is read for the last
-- hour only, through its sent_at index. Channel types and dispatchers are bounded to 20.
CREATE FUNCTION monitoring._prometheus_notification_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH statuses (status) AS (
        VALUES ('pending'), ('sending'), ('sent'), ('dead')
    ), queue AS (
        SELECT q.status, pg_catalog.count(*) AS messages,
               pg_catalog.min(q.queued_at) FILTER (WHERE q.status IN ('pending', 'sending')) AS oldest_pending
        FROM monitoring.notification_queue q GROUP BY q.status
    ), deliveries AS (
        SELECT l.channel_type, l.status, l.duration_ms
        FROM monitoring.tb_error_notification_log l
        WHERE l.sent_at > pg_catalog.now() - interval '1 hour' AND l.sent_at <= pg_catalog.now()
    ), channel_rank AS (
        SELECT d.channel_type, pg_catalog.row_number() OVER (ORDER BY pg_catalog.count(*) DESC, d.channel_type) AS rank
        FROM deliveries d GROUP BY d.channel_type
    ), ranked AS (
        SELECT CASE WHEN r.rank <= 20 THEN d.channel_type ELSE '(other)' END AS channel_type, d.status, d.duration_ms
        FROM deliveries d JOIN channel_rank r ON r.channel_type = d.channel_type
    )
    SELECT 'pg_observe_notification_queue_messages', pg_catalog.jsonb_build_object('status', s.status),
           COALESCE(q.messages, 0)::double precision
    FROM statuses s LEFT JOIN queue q ON q.status = s.status
    UNION ALL
    SELECT 'pg_observe_notification_queue_oldest_pending_seconds', NULL,
           COALESCE(pg_catalog.date_part('epoch', pg_catalog.now() - (SELECT pg_catalog.min(q.oldest_pending) FROM queue q)), 0)
    UNION ALL
    SELECT 'pg_observe_notification_deliveries_last_hour',
           pg_catalog.jsonb_build_object('channel_type', r.channel_type, 'status', r.status),
           pg_catalog.count(*)::double precision
    FROM ranked r GROUP BY r.channel_type, r.status
    UNION ALL
    SELECT 'pg_observe_notification_delivery_duration_seconds_last_hour',
           pg_catalog.jsonb_build_object('channel_type', d.channel_type, 'percentile', q.percentile),
           q.ms / 1000
    FROM (SELECT r.channel_type,
                 pg_catalog.percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY r.duration_ms) AS ms
          FROM ranked r WHERE r.duration_ms IS NOT NULL GROUP BY r.channel_type) d
    CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(ARRAY['50', '95']), pg_catalog.unnest(d.ms)) AS q(percentile, ms)
$$;
COMMENT ON FUNCTION monitoring._prometheus_notification_samples() IS
    'Prometheus samples of the notifications section: queue by status, backlog age, last hour''s deliveries';

-- Dispatchers (monitoring.dispatcher_heartbeat): the 20 seen last.
CREATE FUNCTION monitoring._prometheus_dispatcher_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH recent AS (
        SELECT h.dispatcher, h.last_seen_at, h.calls
        FROM monitoring.dispatcher_heartbeat h
        ORDER BY h.last_seen_at DESC, h.dispatcher
        LIMIT 20
    )
    SELECT 'pg_observe_dispatcher_last_seen_timestamp_seconds'::text,
           pg_catalog.jsonb_build_object('dispatcher', r.dispatcher),
           pg_catalog.date_part('epoch', r.last_seen_at)
    FROM recent r
    UNION ALL
    SELECT 'pg_observe_dispatcher_calls_total', pg_catalog.jsonb_build_object('dispatcher', r.dispatcher),
           r.calls::double precision
    FROM recent r
$$;
COMMENT ON FUNCTION monitoring._prometheus_dispatcher_samples() IS
    'Prometheus samples of the notification dispatchers: last call time and calls, for the 20 seen last';

-- ---------------------------------------------------------------- traces
-- Entry spans (server, consumer, root) that started in the last complete minute: the
-- start_time bounds prune to that minute's partition and read it through the start_time
-- index, so the cost follows the request rate, not the table. Spans still in flight at the
-- scrape arrive later and are not counted: the figures are of the minute as received by then.
-- (environment, service) pairs are bounded to the 20 with the most requests.
CREATE FUNCTION monitoring._prometheus_trace_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH requests AS (
        SELECT s.environment, s.service, s.duration_ms, s.status_code,
               pg_catalog.date_part('epoch', s.received_at - s.end_time) AS delay_seconds,
               COALESCE(s.attributes ->> 'http.response.status_code', s.attributes ->> 'http.status_code') AS http_code
        FROM monitoring.spans s
        WHERE s.start_time >= pg_catalog.date_trunc('minute', pg_catalog.now()) - interval '1 minute'
          AND s.start_time < pg_catalog.date_trunc('minute', pg_catalog.now())
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
    ), pair_rank AS (
        SELECT r.environment, r.service,
               pg_catalog.row_number() OVER (ORDER BY pg_catalog.count(*) DESC, r.environment, r.service) AS rank
        FROM requests r GROUP BY r.environment, r.service
    ), ranked AS (
        SELECT CASE WHEN k.rank <= 20 THEN r.environment ELSE '(other)' END AS environment,
               CASE WHEN k.rank <= 20 THEN r.service ELSE '(other)' END AS service,
               r.duration_ms, r.status_code, r.delay_seconds, r.http_code
        FROM requests r JOIN pair_rank k ON k.environment = r.environment AND k.service = r.service
    ), per_pair AS (
        SELECT pg_catalog.jsonb_build_object('environment', r.environment, 'service', r.service) AS labels,
               pg_catalog.count(*) AS requests,
               pg_catalog.count(*) FILTER (WHERE r.status_code = 2) AS failed,
               pg_catalog.count(*) FILTER (WHERE r.duration_ms > 100) AS slow,
               pg_catalog.percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY r.duration_ms) AS ms
        FROM ranked r GROUP BY r.environment, r.service
    ), percentiles (percentile, position) AS (
        VALUES ('50', 1), ('95', 2), ('99', 3)
    )
    SELECT 'pg_observe_trace_requests_last_minute', p.labels, p.requests::double precision FROM per_pair p
    UNION ALL
    SELECT 'pg_observe_trace_failed_requests_last_minute', p.labels, p.failed::double precision FROM per_pair p
    UNION ALL
    SELECT 'pg_observe_trace_slow_requests_last_minute', p.labels, p.slow::double precision FROM per_pair p
    UNION ALL
    SELECT 'pg_observe_trace_request_duration_seconds_last_minute',
           p.labels || pg_catalog.jsonb_build_object('percentile', q.percentile), p.ms[q.position] / 1000
    FROM per_pair p CROSS JOIN percentiles q
    UNION ALL
    SELECT 'pg_observe_trace_http_responses_last_minute',
           pg_catalog.jsonb_build_object('environment', r.environment, 'code', r.http_code),
           pg_catalog.count(*)::double precision
    FROM ranked r
    WHERE r.http_code ~ '^[1-5][0-9][0-9]$'
    GROUP BY r.environment, r.http_code
    UNION ALL
    SELECT 'pg_observe_trace_ingest_delay_seconds_last_minute', pg_catalog.jsonb_build_object('percentile', q.percentile),
           d.delays[q.position]
    FROM (SELECT pg_catalog.percentile_cont(ARRAY[0.5, 0.95, 0.99])
                     WITHIN GROUP (ORDER BY GREATEST(r.delay_seconds, 0)) AS delays
          FROM requests r HAVING pg_catalog.count(*) > 0) d
    CROSS JOIN percentiles q
$$;
COMMENT ON FUNCTION monitoring._prometheus_trace_samples() IS
    'Prometheus samples of the traces section: requests, failures, slow requests, latency, HTTP codes and ingest delay of the last complete minute';

-- ---------------------------------------------------------------- metrics
-- The rollup watermark, and the applications' metrics of the newest minute the rollups have
-- completed (the minute before the watermark's), if it lies within the last 5 minutes: stale
-- figures are left out rather than shown as current (pg_observe_metric_rollup_lag_seconds
-- says why). All label sets of a metric are summed up; the 50 metrics with the most points.
CREATE FUNCTION monitoring._prometheus_metric_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH state AS (
        SELECT st.rolled_up_to, st.last_run_at FROM monitoring.metric_rollup_state st
    ), minute AS (
        SELECT pg_catalog.date_trunc('minute', st.rolled_up_to) - interval '1 minute' AS bucket FROM state st
    ), per_metric AS (
        SELECT r.metric_name, r.metric_type, r.environment, COALESCE(r.service, '') AS service,
               pg_catalog.sum(r.sample_count) AS samples, pg_catalog.sum(r.value_sum) AS total,
               pg_catalog.max(r.value_max) AS maximum, pg_catalog.max(r.p99) AS p99
        FROM monitoring.metric_rollups_1m r
        WHERE r.bucket = (SELECT m.bucket FROM minute m)
          AND r.bucket >= pg_catalog.date_trunc('minute', pg_catalog.now()) - interval '5 minutes'
        GROUP BY r.metric_name, r.metric_type, r.environment, COALESCE(r.service, '')
        ORDER BY 5 DESC, 1, 3, 4
        LIMIT 50
    ), labelled AS (
        SELECT pg_catalog.jsonb_build_object('metric', p.metric_name, 'type', p.metric_type,
                                             'environment', p.environment, 'service', p.service) AS labels, p.*
        FROM per_metric p
    )
    SELECT 'pg_observe_metric_rollup_lag_seconds', NULL::jsonb,
           GREATEST(pg_catalog.date_part('epoch', pg_catalog.now() - st.rolled_up_to), 0)
    FROM state st
    UNION ALL
    SELECT 'pg_observe_metric_rollup_last_run_timestamp_seconds', NULL, pg_catalog.date_part('epoch', st.last_run_at)
    FROM state st
    UNION ALL
    SELECT 'pg_observe_app_metric_samples_last_minute', l.labels, l.samples::double precision FROM labelled l
    UNION ALL
    SELECT 'pg_observe_app_metric_sum_last_minute', l.labels, l.total FROM labelled l
    UNION ALL
    SELECT 'pg_observe_app_metric_max_last_minute', l.labels, l.maximum FROM labelled l
    UNION ALL
    SELECT 'pg_observe_app_metric_p99_last_minute', l.labels, l.p99 FROM labelled l WHERE l.p99 IS NOT NULL
$$;
COMMENT ON FUNCTION monitoring._prometheus_metric_samples() IS
    'Prometheus samples of the metrics section: rollup lag, and per metric the newest complete rolled-up minute';

-- ---------------------------------------------------------------- partitions and storage
-- monitoring.partition_health per table; stored rows are pg_class estimates (exact counts
-- would read every partition), sizes come from the files.
-- time_series_config is admins' data: a row may name anything ('app.secrets', 'a.b.c.d', 10 kB
-- of text). _partition_health() resolves a row to a table only when it is spelled exactly as
-- a partitioned table of pg_observe in schema monitoring (never parsing it: to_regclass would
-- raise and break the whole scrape); other rows get their status (a warning) and no figure.
CREATE FUNCTION monitoring._prometheus_partition_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH health AS (
        SELECT h.*, pg_catalog.jsonb_build_object('table', h.parent_table) AS labels
        FROM monitoring._partition_health() h
    ), storage AS (
        SELECT h.parent_table, pg_catalog.sum(GREATEST(k.reltuples, 0)) AS row_estimate,
               pg_catalog.sum(pg_catalog.pg_total_relation_size(k.oid)) AS bytes
        FROM health h
        CROSS JOIN LATERAL pg_catalog.pg_partition_tree(h.parent_oid) t
        JOIN pg_catalog.pg_class k ON k.oid = t.relid
        WHERE h.parent_oid IS NOT NULL AND t.isleaf
        GROUP BY h.parent_table
    )
    SELECT 'pg_observe_partitions'::text, h.labels, h.partitions::double precision
    FROM health h WHERE h.partitions IS NOT NULL
    UNION ALL
    SELECT 'pg_observe_partitions_ahead', h.labels, h.partitions_ahead::double precision
    FROM health h WHERE h.partitions_ahead IS NOT NULL
    UNION ALL
    SELECT 'pg_observe_partition_default_rows', h.labels, h.default_partition_rows::double precision
    FROM health h WHERE h.default_partition_rows IS NOT NULL
    UNION ALL
    SELECT 'pg_observe_partition_newest_end_timestamp_seconds', h.labels,
           pg_catalog.date_part('epoch', h.newest_partition_end)
    FROM health h WHERE h.newest_partition_end IS NOT NULL
    UNION ALL
    SELECT 'pg_observe_partition_status', h.labels,
           CASE h.status WHEN 'ok' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END::double precision
    FROM health h
    UNION ALL
    SELECT 'pg_observe_stored_rows', pg_catalog.jsonb_build_object('table', s.parent_table), s.row_estimate::double precision
    FROM storage s
    UNION ALL
    SELECT 'pg_observe_stored_bytes', pg_catalog.jsonb_build_object('table', s.parent_table), s.bytes::double precision
    FROM storage s
$$;
COMMENT ON FUNCTION monitoring._prometheus_partition_samples() IS
    'Prometheus samples of the partitions section: partition_health per table, estimated rows and bytes stored';

-- ---------------------------------------------------------------- database health
-- From the database-health views of sql/400_operations.sql (connections, slow_queries,
-- cache_hit_ratio, database_size, function_performance), so that a figure means the same
-- here as in psql and the dashboards; from pg_stat_* where no view has it cheaply (the views
-- of tables and indexes compute every relation's size). Connections and slow queries are the
-- whole server's, the rest the current database's. Table and function names: 20 at most.
-- Sequential scans are counted per table, never summed over tables: pg_partman's retention
-- drops partitions every day, and a sum would fall (a false counter reset, so a rate() spike);
-- a dropped table's series just ends.
CREATE FUNCTION monitoring._prometheus_database_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH db AS (
        SELECT d.xact_commit, d.xact_rollback, d.deadlocks
        FROM pg_catalog.pg_stat_database d WHERE d.datname = pg_catalog.current_database()
    ), cache AS (
        SELECT c.blocks_hit, c.blocks_read FROM monitoring.cache_hit_ratio c WHERE c.scope = 'database'
    ), connections AS (
        SELECT pg_catalog.sum(c.active) AS active, pg_catalog.sum(c.idle) AS idle,
               pg_catalog.sum(c.idle_in_transaction) AS idle_in_transaction,
               pg_catalog.sum(c.total - c.active - c.idle - c.idle_in_transaction) AS other,
               pg_catalog.sum(c.waiting_on_locks) AS waiting_on_locks,
               pg_catalog.max(c.max_connections) AS max_connections
        FROM monitoring.connections c
    ), slow AS (
        SELECT pg_catalog.count(*) AS queries, COALESCE(pg_catalog.max(q.duration_seconds), 0) AS longest
        FROM monitoring.slow_queries q
    ), bloat AS (
        SELECT t.schemaname, t.relname, t.n_live_tup, t.n_dead_tup
        FROM pg_catalog.pg_stat_user_tables t
        WHERE t.n_dead_tup > 0
        ORDER BY t.n_dead_tup DESC, t.schemaname, t.relname
        LIMIT 20
    ), scanned AS (
        SELECT t.schemaname, t.relname, t.seq_scan
        FROM pg_catalog.pg_stat_user_tables t
        WHERE t.seq_scan > 0
        ORDER BY t.seq_scan DESC, t.schemaname, t.relname
        LIMIT 20
    ), functions AS (
        SELECT f.schema_name, f.function_name, pg_catalog.sum(f.calls) AS calls, pg_catalog.sum(f.total_ms) AS total_ms
        FROM monitoring.function_performance f
        WHERE f.function_name IS NOT NULL
        GROUP BY f.schema_name, f.function_name
        ORDER BY 4 DESC, 1, 2
        LIMIT 20
    )
    SELECT 'pg_observe_database_size_bytes', NULL::jsonb, d.size_bytes::double precision FROM monitoring.database_size d
    UNION ALL
    SELECT 'pg_observe_database_blocks_hit_total', NULL, c.blocks_hit::double precision FROM cache c
    UNION ALL
    SELECT 'pg_observe_database_blocks_read_total', NULL, c.blocks_read::double precision FROM cache c
    UNION ALL
    SELECT 'pg_observe_database_transactions_total', pg_catalog.jsonb_build_object('outcome', 'commit'),
           db.xact_commit::double precision FROM db
    UNION ALL
    SELECT 'pg_observe_database_transactions_total', pg_catalog.jsonb_build_object('outcome', 'rollback'),
           db.xact_rollback::double precision FROM db
    UNION ALL
    SELECT 'pg_observe_database_deadlocks_total', NULL, db.deadlocks::double precision FROM db
    UNION ALL
    SELECT 'pg_observe_connections', pg_catalog.jsonb_build_object('state', s.state), COALESCE(s.n, 0)::double precision
    FROM connections c
    CROSS JOIN LATERAL (VALUES ('active', c.active), ('idle', c.idle), ('idle in transaction', c.idle_in_transaction),
                               ('other', c.other)) AS s(state, n)
    UNION ALL
    SELECT 'pg_observe_connections_max', NULL, pg_catalog.current_setting('max_connections')::double precision
    UNION ALL
    SELECT 'pg_observe_connections_waiting_on_locks', NULL, COALESCE(c.waiting_on_locks, 0)::double precision
    FROM connections c
    UNION ALL
    SELECT 'pg_observe_longest_query_seconds', NULL, s.longest FROM slow s
    UNION ALL
    SELECT 'pg_observe_slow_queries', NULL, s.queries::double precision FROM slow s
    UNION ALL
    SELECT 'pg_observe_table_seq_scans_total', pg_catalog.jsonb_build_object('schema', s.schemaname, 'table', s.relname),
           s.seq_scan::double precision FROM scanned s
    UNION ALL
    SELECT 'pg_observe_table_live_tuples', pg_catalog.jsonb_build_object('schema', b.schemaname, 'table', b.relname),
           b.n_live_tup::double precision FROM bloat b
    UNION ALL
    SELECT 'pg_observe_table_dead_tuples', pg_catalog.jsonb_build_object('schema', b.schemaname, 'table', b.relname),
           b.n_dead_tup::double precision FROM bloat b
    UNION ALL
    SELECT 'pg_observe_unused_indexes', NULL,
           (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_user_indexes i
            JOIN pg_catalog.pg_index x ON x.indexrelid = i.indexrelid
            JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
            WHERE i.idx_scan = 0 AND NOT (x.indisunique OR x.indisprimary OR x.indisexclusion)
              AND NOT c.relispartition AND i.schemaname <> 'monitoring')::double precision
    UNION ALL
    SELECT 'pg_observe_function_calls_total', pg_catalog.jsonb_build_object('schema', f.schema_name, 'function', f.function_name),
           f.calls::double precision FROM functions f
    UNION ALL
    SELECT 'pg_observe_function_seconds_total', pg_catalog.jsonb_build_object('schema', f.schema_name, 'function', f.function_name),
           f.total_ms / 1000 FROM functions f
$$;
COMMENT ON FUNCTION monitoring._prometheus_database_samples() IS
    'Prometheus samples of the database health section, from pg_stat_* (connections are server-wide)';

-- ---------------------------------------------------------------- health
CREATE FUNCTION monitoring._prometheus_health_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    VOLATILE   -- as monitoring.health() may be
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH checks AS (
        SELECT h.check_name, h.status, h.observed FROM monitoring.health() h
    )
    SELECT 'pg_observe_health_status'::text, pg_catalog.jsonb_build_object('check', c.check_name),
           CASE c.status WHEN 'ok' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END::double precision
    FROM checks c
    UNION ALL
    SELECT 'pg_observe_health_observed', pg_catalog.jsonb_build_object('check', c.check_name), c.observed
    FROM checks c WHERE c.observed IS NOT NULL
$$;
COMMENT ON FUNCTION monitoring._prometheus_health_samples() IS
    'Prometheus samples of monitoring.health(): each check''s status (0 ok, 1 warning, 2 critical) and observed value';

-- ---------------------------------------------------------------- cache
-- Never cache_entries itself: cache_stats counts its rows (0.1 s per million entries, and more
-- with every scrape of every Prometheus), so the figures come from
--   - cache_counters (one row per namespace and live backend, plus the folded ones): hits,
--     misses, sets, evictions. Backends only add to their rows and _fold_cache_counters() moves
--     ended backends' rows into backend_pid 0 in one statement, so a namespace's sum never
--     falls; it restarts at zero after a crash (UNLOGGED) or when an admin deletes the rows,
--     which Prometheus reads as a counter reset;
--   - the newest cache_stats_history sample (written by every run_maintenance(), that is the
--     one scan of the cache it makes anyway): entries, expired_pending, bytes per namespace,
--     with the sample's time;
--   - pg_class: the table's row estimate and its size now (no scan).
-- Namespaces: the 20 with the most reads and writes, the others summed into "(other)".
-- pg_observe_cache_up says whether the cache can be used: the table is opened (as every cache
-- call does) under a lock_timeout of 0.5 s, so a TRUNCATE, VACUUM FULL, ALTER TABLE or REINDEX
-- that holds it, which makes every cache call wait, shows as 0 instead of blocking or failing
-- the scrape; a role that may not read the counters shows 0 too. A standby has no cache
-- (UNLOGGED tables cannot be read during recovery): no cache figure at all there.
CREATE FUNCTION monitoring._prometheus_cache_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '500ms'
AS $$
DECLARE
    table_bytes bigint;
BEGIN
    IF pg_catalog.pg_is_in_recovery() THEN
        RETURN;
    END IF;
    -- Take every lock the figures need first: once held (to the end of the transaction, but
    -- for the table size, read here), the query below cannot wait.
    BEGIN
        table_bytes := pg_catalog.pg_total_relation_size('monitoring.cache_entries'::pg_catalog.regclass);
        PERFORM FROM monitoring.cache_counters c LIMIT 1;
        PERFORM FROM monitoring.cache_stats_history h LIMIT 1;
    EXCEPTION WHEN lock_not_available OR insufficient_privilege OR undefined_table THEN
        family := 'pg_observe_cache_up';
        value := 0;
        RETURN NEXT;
        RETURN;
    END;

    RETURN QUERY
    WITH counted AS (
        SELECT c.namespace, pg_catalog.sum(c.hits) AS hits, pg_catalog.sum(c.misses) AS misses,
               pg_catalog.sum(c.sets) AS sets, pg_catalog.sum(c.evictions) AS evictions
        FROM monitoring.cache_counters c
        GROUP BY c.namespace
    ), sampled AS (
        SELECT h.namespace, h.entries, h.expired_pending, h.bytes, h.sampled_at
        FROM monitoring.cache_stats_history h
        WHERE h.sampled_at = (SELECT pg_catalog.max(l.sampled_at) FROM monitoring.cache_stats_history l)
    ), spaces AS (
        SELECT COALESCE(k.namespace, s.namespace) AS namespace, k.hits, k.misses, k.sets, k.evictions,
               s.entries, s.expired_pending, s.bytes
        FROM counted k FULL JOIN sampled s ON s.namespace = k.namespace
    ), ranked AS (
        SELECT CASE WHEN pg_catalog.row_number() OVER (
                             ORDER BY COALESCE(p.hits + p.misses + p.sets, 0) DESC, COALESCE(p.entries, 0) DESC, p.namespace) <= 20
                    THEN p.namespace ELSE '(other)' END AS namespace,
               p.hits, p.misses, p.sets, p.evictions, p.entries, p.expired_pending, p.bytes
        FROM spaces p
    ), per_namespace AS (
        -- sums of NULLs stay NULL: no counter row, or not in the sample, gives no sample line
        SELECT pg_catalog.jsonb_build_object('namespace', r.namespace) AS labels,
               pg_catalog.sum(r.hits) AS hits, pg_catalog.sum(r.misses) AS misses, pg_catalog.sum(r.sets) AS sets,
               pg_catalog.sum(r.evictions) AS evictions, pg_catalog.sum(r.entries) AS entries,
               pg_catalog.sum(r.expired_pending) AS expired_pending, pg_catalog.sum(r.bytes) AS bytes
        FROM ranked r
        GROUP BY r.namespace
    )
    SELECT 'pg_observe_cache_up'::text, NULL::jsonb, 1::double precision
    UNION ALL
    SELECT f.family, n.labels, f.figure::double precision
    FROM per_namespace n
    CROSS JOIN LATERAL (VALUES ('pg_observe_cache_hits_total', n.hits), ('pg_observe_cache_misses_total', n.misses),
                               ('pg_observe_cache_sets_total', n.sets), ('pg_observe_cache_evictions_total', n.evictions),
                               ('pg_observe_cache_entries', n.entries),
                               ('pg_observe_cache_expired_pending_entries', n.expired_pending),
                               ('pg_observe_cache_bytes', n.bytes)) AS f(family, figure)
    WHERE f.figure IS NOT NULL
    UNION ALL
    SELECT 'pg_observe_cache_sampled_timestamp_seconds', NULL, pg_catalog.date_part('epoch', pg_catalog.max(s.sampled_at))
    FROM sampled s HAVING pg_catalog.count(*) > 0
    UNION ALL
    SELECT 'pg_observe_cache_table_rows', NULL, GREATEST(k.reltuples, 0)::double precision
    FROM pg_catalog.pg_class k WHERE k.oid = 'monitoring.cache_entries'::pg_catalog.regclass
    UNION ALL
    SELECT 'pg_observe_cache_table_bytes', NULL, table_bytes::double precision;
END
$$;
COMMENT ON FUNCTION monitoring._prometheus_cache_samples() IS
    'Prometheus samples of the cache: up, hit/miss/set/eviction counters and the last sample''s entries and bytes per namespace (20 at most), the table''s size; never scans the cache';

-- ---------------------------------------------------------------- the exposition
-- Every family of the registry, HELP and TYPE once, its samples sorted by labels; the scrape
-- duration last, measured once everything else is computed.
CREATE FUNCTION monitoring.prometheus_metrics()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    body text;
BEGIN
    WITH samples AS MATERIALIZED (
        SELECT 'pg_observe_info' AS family, pg_catalog.jsonb_build_object('version', e.extversion) AS labels,
               1::double precision AS value
        FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_observe'
        UNION ALL SELECT * FROM monitoring._prometheus_error_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_notification_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_dispatcher_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_trace_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_metric_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_partition_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_database_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_health_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_cache_samples()
    )
    SELECT pg_catalog.string_agg(
               '# HELP ' || f.family || ' ' || monitoring._prometheus_escape(f.help, false) || E'\n'
               || '# TYPE ' || f.family || ' ' || f.metric_type || E'\n'
               || COALESCE((SELECT pg_catalog.string_agg(monitoring._prometheus_sample(s.family, s.labels, s.value), ''
                                                         ORDER BY s.labels::text)
                            FROM samples s WHERE s.family = f.family), ''),
               '' ORDER BY f.sort_order)
    INTO body
    FROM monitoring._prometheus_families() f
    WHERE f.family <> 'pg_observe_scrape_duration_seconds';

    SELECT body || '# HELP ' || f.family || ' ' || monitoring._prometheus_escape(f.help, false) || E'\n'
           || '# TYPE ' || f.family || ' ' || f.metric_type || E'\n'
           || monitoring._prometheus_sample(f.family, NULL,
                                            pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - started))
    INTO body
    FROM monitoring._prometheus_families() f
    WHERE f.family = 'pg_observe_scrape_duration_seconds';
    RETURN body;
END
$$;
COMMENT ON FUNCTION monitoring.prometheus_metrics() IS
    'pg_observe''s figures in the Prometheus text format 0.0.4 (errors, notifications, traces, metrics, partitions, database health, health checks, cache); serve it with pg-observe exporter';
