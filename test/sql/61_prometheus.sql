-- Prometheus exposition: monitoring.prometheus_metrics() follows the text format (HELP and TYPE
-- once per family, samples contiguous, escaping), its figures match constructed data, label
-- values from users' data are escaped and bounded, it reads no raw table but the last
-- minute's spans, and only readers may call it.
-- Everything runs in one transaction: now() does not move, so the windows are predictable.
BEGIN;
SELECT plan(74);
SET LOCAL search_path = public, monitoring;

-- The exposition as lines, and the family each sample line falls under (the last TYPE above it).
CREATE FUNCTION pg_temp.lines(p_text text)
    RETURNS TABLE (n bigint, line text, kind text, name text, family text)
    LANGUAGE sql AS $$
    WITH l AS (
        SELECT x.n, x.line,
               CASE WHEN x.line LIKE '# HELP %' THEN 'help' WHEN x.line LIKE '# TYPE %' THEN 'type'
                    WHEN x.line = '' THEN 'empty' ELSE 'sample' END AS kind
        FROM regexp_split_to_table(rtrim(p_text, E'\n'), E'\n') WITH ORDINALITY x(line, n)
    ), named AS (
        SELECT l.*, CASE WHEN l.kind IN ('help', 'type') THEN split_part(l.line, ' ', 3)
                         ELSE substring(l.line FROM '^([a-zA-Z_:][a-zA-Z0-9_:]*)') END AS name,
               count(*) FILTER (WHERE l.kind = 'type') OVER (ORDER BY l.n) AS type_no
        FROM l
    )
    SELECT d.n, d.line, d.kind, d.name,
           (SELECT t.name FROM named t WHERE t.kind = 'type' AND t.type_no = d.type_no) AS family
    FROM named d
$$;
-- The value of one sample, by its exact name and label text ('' for none).
CREATE FUNCTION pg_temp.sample(p_text text, p_series text)
    RETURNS double precision LANGUAGE sql AS $$
    SELECT CASE split_part(l.line, ' ', -1) WHEN '+Inf' THEN 'Infinity' WHEN '-Inf' THEN '-Infinity'
                ELSE split_part(l.line, ' ', -1) END::double precision
    FROM pg_temp.lines(p_text) l
    WHERE l.kind = 'sample' AND left(l.line, length(p_series) + 1) = p_series || ' '
$$;

-- ---------------------------------------------------------------- format
CREATE TEMP TABLE empty_scrape AS SELECT monitoring.prometheus_metrics() AS body;
SELECT ok((SELECT body LIKE '# HELP pg_observe_info %' AND right(body, 1) = E'\n' FROM empty_scrape),
          'the exposition starts with a HELP line and ends with a newline');
SELECT is((SELECT count(*) FROM empty_scrape, pg_temp.lines(body) l WHERE l.kind = 'empty'), 0::bigint,
          'no empty lines');
SELECT is((SELECT array_agg(l.name ORDER BY l.n) FROM empty_scrape, pg_temp.lines(body) l WHERE l.kind = 'type'),
          (SELECT array_agg(f.family ORDER BY f.sort_order) FROM monitoring._prometheus_families() f),
          'one TYPE line per registered family, in the registry''s order');
SELECT is((SELECT array_agg(l.name ORDER BY l.n) FROM empty_scrape, pg_temp.lines(body) l WHERE l.kind = 'help'),
          (SELECT array_agg(f.family ORDER BY f.sort_order) FROM monitoring._prometheus_families() f),
          'one HELP line per registered family');
SELECT is((SELECT count(*) FROM empty_scrape, pg_temp.lines(body) h
           WHERE h.kind = 'help'
             AND NOT EXISTS (SELECT FROM pg_temp.lines(body) t WHERE t.n = h.n + 1 AND t.kind = 'type' AND t.name = h.name)),
          0::bigint, 'every HELP line is followed by the TYPE line of the same family');
SELECT is((SELECT count(DISTINCT f.family) FROM monitoring._prometheus_families() f), 
          (SELECT count(*) FROM monitoring._prometheus_families()), 'family names are unique');
SELECT is((SELECT count(*) FROM monitoring._prometheus_families() f
           WHERE f.family !~ '^pg_observe_[a-z0-9_]+$' OR f.metric_type NOT IN ('counter', 'gauge')
              OR (f.metric_type = 'counter') <> (f.family LIKE '%\_total')),
          0::bigint, 'families are pg_observe_ snake case; counters and only counters end in _total');
SELECT is((SELECT count(*) FROM monitoring._prometheus_families() f
           WHERE f.family ~ '(_ms|_milliseconds|_bytes_total|_percent|_ratio_pct)$' OR f.help = ''),
          0::bigint, 'base units (seconds, bytes) and a help text everywhere');

-- ---------------------------------------------------------------- escaping and values
SELECT is(monitoring._prometheus_escape(E'a\\b"c\nd'), E'a\\\\b\\"c\\nd',
          'label values escape backslash, double quote and newline');
SELECT is(monitoring._prometheus_escape(E'a\\b"c\nd', false), E'a\\\\b"c\\nd',
          'help texts escape backslash and newline, not quotes');
SELECT is(monitoring._prometheus_escape(E'tab\there\rü€😀'), E'tab\there\rü€😀',
          'other characters (tabs, carriage returns, any unicode) pass as they are');
SELECT is(monitoring._prometheus_sample('x_total', '{"b": "2", "a": "1"}', 3),
          E'x_total{a="1",b="2"} 3\n', 'a sample line: labels, a space, the value');
SELECT is(monitoring._prometheus_sample('x', NULL, 'NaN') || monitoring._prometheus_sample('x', '{}', 'Infinity')
          || monitoring._prometheus_sample('x', NULL, '-Infinity') || monitoring._prometheus_sample('x', NULL, NULL),
          E'x NaN\nx +Inf\nx -Inf\nx NaN\n', 'NaN, +Inf, -Inf as Prometheus spells them; no braces without labels');
SET LOCAL extra_float_digits = -15;
SELECT is(monitoring._prometheus_sample('x', NULL, 0.1::float8 + 0.2::float8) || monitoring._prometheus_sample('x', NULL, 1e300)
          || monitoring._prometheus_sample('x', NULL, 123456789012),
          E'x 0.30000000000000004\nx 1e+300\nx 123456789012\n',
          'values are exact whatever the session''s extra_float_digits');
RESET extra_float_digits;

-- ---------------------------------------------------------------- errors
SELECT monitoring.capture_errors(jsonb_build_array(
    jsonb_build_object('exception_type', 'PaymentError', 'message', 'declined', 'environment', 'production'),
    jsonb_build_object('exception_type', 'PaymentError', 'message', 'declined', 'environment', 'production'),
    jsonb_build_object('exception_type', 'PaymentError', 'message', 'declined', 'environment', E'we"ird\\env\nx ü€'),
    jsonb_build_object('exception_type', 'SlowDown', 'message', 'slow', 'level', 'warning', 'environment', 'staging')));
SELECT monitoring.resolve_error((SELECT error_fingerprint FROM monitoring.tb_error_log WHERE error_type = 'SlowDown'));
CREATE TEMP TABLE scrape AS SELECT monitoring.prometheus_metrics() AS body;
SELECT is(pg_temp.sample(body, 'pg_observe_error_occurrences_total{level="error"}'), 3::double precision,
          'occurrences per level: the groups'' counters') FROM scrape;
SELECT is(pg_temp.sample(body, 'pg_observe_error_occurrences_total{level="warning"}'), 1::double precision,
          'a resolved group''s occurrences still count') FROM scrape;
SELECT is(pg_temp.sample(body, 'pg_observe_error_occurrences_total{level="fatal"}'), 0::double precision,
          'every level is present, 0 without errors') FROM scrape;
SELECT is(pg_temp.sample(body, 'pg_observe_error_groups{level="error",status="unresolved",environment="production"}'),
          1::double precision, 'groups per environment, level and status') FROM scrape;
SELECT is(pg_temp.sample(body, 'pg_observe_error_groups{level="warning",status="resolved",environment="staging"}'),
          1::double precision, 'a resolved group counts under status resolved') FROM scrape;
SELECT is(pg_temp.sample(body, E'pg_observe_error_groups{level="error",status="unresolved",environment="we\\"ird\\\\env\\nx ü€"}'),
          1::double precision, 'a hostile environment name is escaped (quote, backslash, newline) and unicode kept')
FROM scrape;
SELECT is((SELECT count(*) FROM scrape, pg_temp.lines(body) l WHERE l.kind = 'sample' AND l.name IS DISTINCT FROM l.family),
          0::bigint, 'every sample line sits under its own family''s TYPE line (samples of a family are contiguous)');
SELECT is((SELECT count(*) FROM scrape, pg_temp.lines(body) l
           WHERE l.kind = 'sample'
             AND l.line !~ '^[a-z0-9_]+(\{[a-z_]+="([^"\\]|\\[\\"n])*"(,[a-z_]+="([^"\\]|\\[\\"n])*")*\})? (NaN|[+-]Inf|-?[0-9.]+(e[+-][0-9]+)?)$'),
          0::bigint, 'every sample line is name{label="escaped",...} value') ;
SELECT is(pg_temp.sample(body, 'pg_observe_error_groups_new_last_hour{level="error"}'), 1::double precision,
          'groups first seen in the last hour') FROM scrape;

-- At most 20 environments by name; the rest fold into "(other)".
SELECT monitoring.capture_errors((SELECT jsonb_agg(jsonb_build_object('exception_type', 'E' || i, 'message', 'm',
                                                                      'environment', 'env-' || i))
                                  FROM generate_series(1, 30) i));
SELECT is((SELECT count(DISTINCT substring(l.line FROM 'environment="([^"]*)"'))
           FROM pg_temp.lines(monitoring.prometheus_metrics()) l WHERE l.name = 'pg_observe_error_groups'),
          21::bigint, '33 environments show as the 20 largest and (other)');

-- ---------------------------------------------------------------- notifications
INSERT INTO monitoring.tb_error_notification_config (config_id, channel_type, channel_config, description, enabled)
VALUES ('00000000-0000-0000-0000-00000000c0f1', 'webhook', '{"url": "http://127.0.0.1:9/hook"}', 'prometheus test', false);
INSERT INTO monitoring.notification_queue (idempotency_key, config_id, error_id, notification_trigger, payload, status, queued_at)
SELECT gen_random_uuid(), '00000000-0000-0000-0000-00000000c0f1', g.error_id, 'test', '{}', s.status, now() - s.age
FROM (VALUES ('pending', interval '10 minutes'), ('pending', interval '1 minute'), ('dead', interval '1 day')) s(status, age)
CROSS JOIN (SELECT error_id FROM monitoring.tb_error_log LIMIT 1) g;
INSERT INTO monitoring.tb_error_notification_log (config_id, error_id, sent_at, channel_type, status, duration_ms)
SELECT '00000000-0000-0000-0000-00000000c0f1', g.error_id, now() - d.age, d.channel, d.status, d.ms
FROM (VALUES (interval '5 minutes', 'webhook', 'sent', 100::float8), (interval '6 minutes', 'webhook', 'sent', 300),
             (interval '7 minutes', 'webhook', 'failed', 5000), (interval '2 hours', 'webhook', 'failed', 1)) d(age, channel, status, ms)
CROSS JOIN (SELECT error_id FROM monitoring.tb_error_log LIMIT 1) g;
TRUNCATE scrape;
INSERT INTO scrape SELECT monitoring.prometheus_metrics();
SELECT is(pg_temp.sample(body, 'pg_observe_notification_queue_messages{status="pending"}') * 10
          + pg_temp.sample(body, 'pg_observe_notification_queue_messages{status="dead"}'),
          21::double precision, 'queue messages by status') FROM scrape;
SELECT is(pg_temp.sample(body, 'pg_observe_notification_queue_oldest_pending_seconds'), 600::double precision,
          'age of the oldest pending message') FROM scrape;
SELECT is(pg_temp.sample(body, 'pg_observe_notification_deliveries_last_hour{status="sent",channel_type="webhook"}') * 10
          + pg_temp.sample(body, 'pg_observe_notification_deliveries_last_hour{status="failed",channel_type="webhook"}'),
          21::double precision, 'deliveries of the last hour (not older) by channel type and outcome') FROM scrape;
SELECT is(pg_temp.sample(body, 'pg_observe_notification_delivery_duration_seconds_last_hour{percentile="50",channel_type="webhook"}'),
          0.3::double precision, 'median delivery time in seconds') FROM scrape;

-- ---------------------------------------------------------------- traces
-- Entry spans of the last complete minute count; a child span and a span of an older minute do not.
INSERT INTO monitoring.spans (trace_id, span_id, parent_span_id, service, operation_name, kind, start_time, end_time,
                              duration_ms, status_code, attributes, environment, received_at)
SELECT md5(i::text), substr(md5(i::text), 1, 16), CASE WHEN i = 6 THEN substr(md5('p'), 1, 16) END,
       'shop', 'GET /x', CASE WHEN i = 6 THEN 'internal' ELSE 'server' END,
       t.start, t.start + d.ms * interval '1 millisecond', d.ms, CASE WHEN i IN (2, 3) THEN 2 ELSE 0 END,
       jsonb_build_object('http.status_code', CASE WHEN i IN (2, 3) THEN 401 ELSE 200 END), E'pro"d',
       t.start + d.ms * interval '1 millisecond' + interval '2 seconds'
FROM generate_series(1, 7) i
CROSS JOIN LATERAL (SELECT (ARRAY[10, 20, 30, 40, 500, 9999, 9999])[i]::float8 AS ms) d
CROSS JOIN LATERAL (SELECT date_trunc('minute', now()) - CASE WHEN i = 7 THEN interval '90 seconds'
                                                             ELSE interval '30 seconds' END AS start) t;
TRUNCATE scrape;
INSERT INTO scrape SELECT monitoring.prometheus_metrics();
SELECT is(pg_temp.sample(body, 'pg_observe_trace_requests_last_minute{service="shop",environment="pro\"d"}'),
          5::double precision, 'requests of the last complete minute: entry spans only') FROM scrape;
SELECT is(pg_temp.sample(body, 'pg_observe_trace_failed_requests_last_minute{service="shop",environment="pro\"d"}')
          * 10 + pg_temp.sample(body, 'pg_observe_trace_slow_requests_last_minute{service="shop",environment="pro\"d"}'),
          21::double precision, 'failed (status error) and slow (> 0.1 s) requests') FROM scrape;
SELECT is(pg_temp.sample(body, 'pg_observe_trace_request_duration_seconds_last_minute{service="shop",percentile="50",environment="pro\"d"}'),
          0.03::double precision, 'median request duration in seconds') FROM scrape;
SELECT is(pg_temp.sample(body, 'pg_observe_trace_http_responses_last_minute{code="401",environment="pro\"d"}'),
          2::double precision, 'requests by HTTP status code') FROM scrape;
SELECT is(pg_temp.sample(body, 'pg_observe_trace_ingest_delay_seconds_last_minute{percentile="99"}'),
          2::double precision, 'delay from a request''s end to its arrival') FROM scrape;

-- ---------------------------------------------------------------- metrics
UPDATE monitoring.metric_rollup_state SET rolled_up_to = date_trunc('minute', now()),
                                          last_run_at = now() - interval '5 seconds';
INSERT INTO monitoring.metric_rollup_state (rolled_up_to, last_run_at)
SELECT date_trunc('minute', now()), now() - interval '5 seconds'
WHERE NOT EXISTS (SELECT FROM monitoring.metric_rollup_state);
INSERT INTO monitoring.metric_rollups_1m (bucket, series_key, metric_name, metric_type, labels, environment, service,
                                          sample_count, value_sum, value_min, value_max, value_last, p99)
VALUES (date_trunc('minute', now()) - interval '1 minute', gen_random_uuid(), 'graphql.query.complexity', 'histogram',
        '{"op": "a"}', 'production', 'api', 10, 1000, 5, 6000, 7, 5800),
       (date_trunc('minute', now()) - interval '1 minute', gen_random_uuid(), 'graphql.query.complexity', 'histogram',
        '{"op": "b"}', 'production', 'api', 5, 50, 5, 20, 7, 19),
       (date_trunc('minute', now()) - interval '2 minutes', gen_random_uuid(), 'graphql.query.complexity', 'histogram',
        '{"op": "a"}', 'production', 'api', 99, 99, 1, 1, 1, 1);
TRUNCATE scrape;
INSERT INTO scrape SELECT monitoring.prometheus_metrics();
SELECT is(pg_temp.sample(body, 'pg_observe_app_metric_samples_last_minute{type="histogram",metric="graphql.query.complexity",service="api",environment="production"}')
          * 10000 + pg_temp.sample(body, 'pg_observe_app_metric_max_last_minute{type="histogram",metric="graphql.query.complexity",service="api",environment="production"}'),
          156000::double precision, 'application metrics of the newest complete minute, label sets summed up') FROM scrape;
SELECT is(pg_temp.sample(body, 'pg_observe_metric_rollup_lag_seconds'),
          date_part('epoch', now() - date_trunc('minute', now())), 'rollup lag: age of the watermark') FROM scrape;
UPDATE monitoring.metric_rollup_state SET rolled_up_to = now() - interval '1 hour';
SELECT is((SELECT count(*) FROM pg_temp.lines(monitoring.prometheus_metrics()) l
           WHERE l.kind = 'sample' AND l.name LIKE 'pg_observe_app_metric%'),
          0::bigint, 'stale rollups (over 5 minutes old) are left out, not shown as current');

-- ---------------------------------------------------------------- partitions, database, health
SELECT is((SELECT count(*) FROM scrape, pg_temp.lines(body) l WHERE l.kind = 'sample' AND l.name = 'pg_observe_stored_rows'),
          (SELECT count(*) FROM monitoring.time_series_config), 'stored rows for every time-series table') ;
SELECT is((SELECT count(*) FROM scrape, pg_temp.lines(body) l WHERE l.kind = 'sample' AND l.name = 'pg_observe_partition_status'),
          (SELECT count(*) FROM monitoring.partition_health), 'partition status for every row of partition_health');
SELECT is((SELECT count(*) FROM scrape, pg_temp.lines(body) l WHERE l.kind = 'sample' AND l.name = 'pg_observe_health_status'),
          (SELECT count(*) FROM monitoring.health()), 'one health status per health() check');
SELECT is((SELECT pg_temp.sample(body, 'pg_observe_connections_max') FROM scrape),
          current_setting('max_connections')::double precision, 'max_connections');
-- promtool's lint: only summaries may have a "quantile" label (the families are gauges).
SELECT is((SELECT count(*) FROM scrape, pg_temp.lines(body) l WHERE l.kind = 'sample' AND l.line ~ '[{,]quantile="'),
          0::bigint, 'no sample has a quantile label (percentile instead: these are gauges, not summaries)');
SELECT is((SELECT count(*) FROM scrape, pg_temp.lines(body) l
           WHERE l.kind = 'sample' AND l.name LIKE 'pg_observe_trace_request_duration%' AND l.line ~ '[{,]percentile="'),
          3::bigint, 'request duration at percentiles 50, 95, 99');
-- Sequential scans per table, the 20 with the most (a sum over tables would fall when a
-- partition is dropped: a false counter reset).
SELECT is((SELECT array_agg(substring(l.line FROM 'schema="([^"]*)"') || '.' || substring(l.line FROM 'table="([^"]*)"')
                            || ' ' || split_part(l.line, ' ', -1) ORDER BY l.line)
           FROM scrape, pg_temp.lines(body) l WHERE l.kind = 'sample' AND l.name = 'pg_observe_table_seq_scans_total'),
          (SELECT array_agg(t.schemaname || '.' || t.relname || ' ' || t.seq_scan ORDER BY t.line)
           FROM (SELECT u.schemaname, u.relname, u.seq_scan,
                        format('pg_observe_table_seq_scans_total{table="%s",schema="%s"} %s', u.relname, u.schemaname, u.seq_scan) AS line
                 FROM pg_stat_user_tables u WHERE u.seq_scan > 0
                 ORDER BY u.seq_scan DESC, u.schemaname, u.relname LIMIT 20) t),
          'sequential scans: one counter per table, the 20 tables with the most');
SELECT is((SELECT count(*) FROM monitoring._prometheus_families() f
           WHERE f.metric_type = 'counter' AND f.family ~ 'seq_scan' AND f.family <> 'pg_observe_table_seq_scans_total'),
          0::bigint, 'no sequential-scan counter summed over tables');

-- ---------------------------------------------------------------- no raw tables
-- The source never names the occurrences, the metric points or the change log; spans only in
-- the traces section.
SELECT is((SELECT array_agg(p.proname ORDER BY p.proname) FROM pg_proc p
           WHERE p.pronamespace = 'monitoring'::regnamespace AND p.proname LIKE '%prometheus%'
             AND (p.prosrc ~ 'monitoring\.(tb_error_occurrence|tb_entity_change_log|metrics|rejected_telemetry|errors|traces)\M'
                  OR (p.prosrc ~ 'monitoring\.spans\M' AND p.proname <> '_prometheus_trace_samples'))),
          NULL, 'no prometheus function reads occurrences, metric points, the change log or (but traces) spans');
-- And in fact: the scans one call makes, from this transaction's statistics.
CREATE TEMP TABLE scans_before AS
SELECT relid, COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) AS scans FROM pg_stat_xact_user_tables;
CREATE TEMP TABLE scanned_scrape AS SELECT monitoring.prometheus_metrics() AS body;
CREATE TEMP TABLE scanned AS
SELECT c.relid::regclass::text AS partition, i.inhparent::regclass::text AS parent
FROM pg_stat_xact_user_tables c
JOIN pg_inherits i ON i.inhrelid = c.relid
LEFT JOIN scans_before b ON b.relid = c.relid
WHERE COALESCE(c.seq_scan, 0) + COALESCE(c.idx_scan, 0) > COALESCE(b.scans, 0)
  AND c.relname NOT LIKE '%\_default';
SELECT is((SELECT array_agg(partition) FROM scanned
           WHERE parent IN ('monitoring.tb_error_occurrence', 'monitoring.metrics', 'monitoring.tb_entity_change_log',
                            'monitoring.rejected_telemetry')),
          NULL, 'one call scans no partition of occurrences, metric points, change log or rejected telemetry');
SELECT cmp_ok((SELECT count(*) FROM scanned WHERE parent = 'monitoring.spans'), '<=', 1::bigint,
              'and at most one partition of spans (the last minute''s)');

-- ---------------------------------------------------------------- admins' bad time_series_config rows
-- observe_admin may write time_series_config: a row naming a table of a schema readers may not
-- use, an improper name, 10 kB of text, quotes and newlines must not break readers' scrapes.
CREATE SCHEMA prom_app;
CREATE TABLE prom_app.secrets (t timestamptz NOT NULL) PARTITION BY RANGE (t);
SET LOCAL ROLE observe_reader;
SELECT throws_ok($$SELECT to_regclass('prom_app.secrets')$$, '42501', NULL,
                 'the hazard: resolving the name of a table in a schema the reader may not use raises');
SELECT throws_ok($$SELECT to_regclass('a.b.c.d')$$, '42601', NULL, 'and so does an improper name');
RESET ROLE;
SET LOCAL ROLE observe_admin;
INSERT INTO monitoring.time_series_config (parent_table, control_column, partition_interval)
VALUES ('prom_app.secrets', 't', '1 day'), ('a.b.c.d', 't', '1 day'), (repeat('x', 10240), 't', '1 day'),
       (E'mon"itor\\ing\n.spans', 'start_time', '1 day'), ('monitoring."spans"', 'start_time', '1 day');
RESET ROLE;
SET LOCAL ROLE observe_reader;
CREATE TEMP TABLE bad_config_scrape (body text);
SELECT lives_ok($$INSERT INTO bad_config_scrape SELECT monitoring.prometheus_metrics()$$,
                'observe_reader''s scrape succeeds with those rows');
RESET ROLE;
SELECT is((SELECT count(*) FROM bad_config_scrape, pg_temp.lines(body) l
           WHERE l.kind = 'sample'
             AND l.line !~ '^[a-z0-9_]+(\{[a-z_]+="([^"\\]|\\[\\"n])*"(,[a-z_]+="([^"\\]|\\[\\"n])*")*\})? (NaN|[+-]Inf|-?[0-9.]+(e[+-][0-9]+)?)$'),
          0::bigint, 'every sample line is still name{label="escaped",...} value');
SELECT is((SELECT array_agg(pg_temp.sample(body, 'pg_observe_partition_status{table="' || monitoring._prometheus_escape(t) || '"}') ORDER BY t)
           FROM bad_config_scrape, unnest(ARRAY['prom_app.secrets', 'a.b.c.d', repeat('x', 10240), E'mon"itor\\ing\n.spans',
                                                'monitoring."spans"']) t),
          ARRAY[1, 1, 1, 1, 1]::double precision[], 'each bad row is a partition warning (1), its name escaped whole');
SELECT ok((SELECT strpos(body, E'\npg_observe_partition_status{table="mon\\"itor\\\\ing\\n.spans"} 1\n') > 0 FROM bad_config_scrape),
          'a quote, a backslash and a newline in the name are escaped');
SELECT is((SELECT count(*) FROM bad_config_scrape, pg_temp.lines(body) l
           WHERE l.kind = 'sample' AND l.name IN ('pg_observe_stored_rows', 'pg_observe_stored_bytes', 'pg_observe_partitions',
                                                   'pg_observe_partitions_ahead', 'pg_observe_partition_default_rows')
             AND l.line !~ '\{table="monitoring\.[a-z_0-9]+"\}'),
          0::bigint, 'no figure for them: stored rows and bytes, partitions only for pg_observe''s own tables');
SELECT is((SELECT count(*) FROM bad_config_scrape, pg_temp.lines(body) l WHERE l.kind = 'sample' AND l.name = 'pg_observe_stored_rows'),
          (SELECT count(*) FROM monitoring.time_series_config WHERE parent_table LIKE 'monitoring.%' AND parent_table <> 'monitoring."spans"'),
          'stored rows still for every table of pg_observe');

-- ---------------------------------------------------------------- cache
-- Counters from cache_counters (after the session's pending events are added), entries and
-- bytes from the newest cache_stats_history sample; the cache itself is never scanned.
SELECT monitoring.cache_set('k' || i, to_jsonb(i), NULL, E'we"ird\\ns\nx') FROM generate_series(1, 3) i;
SELECT monitoring.cache_get('k1', E'we"ird\\ns\nx'), monitoring.cache_get('k2', E'we"ird\\ns\nx'),
       monitoring.cache_get('absent', E'we"ird\\ns\nx');
SELECT monitoring.cache_set('short', '1', interval '1 millisecond', E'we"ird\\ns\nx');
SELECT pg_sleep(0.01);
SELECT monitoring.expire_cache();
SELECT monitoring.cache_flush_stats();
TRUNCATE scrape;
INSERT INTO scrape SELECT monitoring.prometheus_metrics();
SELECT is(ARRAY[pg_temp.sample(body, E'pg_observe_cache_hits_total{namespace="we\\"ird\\\\ns\\nx"}'),
                pg_temp.sample(body, E'pg_observe_cache_misses_total{namespace="we\\"ird\\\\ns\\nx"}'),
                pg_temp.sample(body, E'pg_observe_cache_sets_total{namespace="we\\"ird\\\\ns\\nx"}'),
                pg_temp.sample(body, E'pg_observe_cache_evictions_total{namespace="we\\"ird\\\\ns\\nx"}')],
          ARRAY[2, 1, 4, 1]::double precision[], 'hits, misses, sets, evictions of a namespace (its name escaped)')
FROM scrape;
SELECT is(pg_temp.sample(body, 'pg_observe_cache_up'), 1::double precision, 'the cache is up') FROM scrape;
SELECT is((SELECT count(*) FROM scrape, pg_temp.lines(body) l WHERE l.kind = 'sample' AND l.name = 'pg_observe_cache_entries'),
          (SELECT count(DISTINCT namespace) FROM monitoring.cache_stats_history
           WHERE sampled_at = (SELECT max(sampled_at) FROM monitoring.cache_stats_history)),
          'entries only from a cache_stats_history sample (none of this namespace yet)');
SELECT monitoring._sample_cache_stats();
TRUNCATE scrape;
INSERT INTO scrape SELECT monitoring.prometheus_metrics();
SELECT is(ARRAY[pg_temp.sample(body, E'pg_observe_cache_entries{namespace="we\\"ird\\\\ns\\nx"}'),
                pg_temp.sample(body, E'pg_observe_cache_expired_pending_entries{namespace="we\\"ird\\\\ns\\nx"}'),
                pg_temp.sample(body, 'pg_observe_cache_sampled_timestamp_seconds')],
          ARRAY[3, 0, date_part('epoch', now())]::double precision[], 'entries of the newest sample, and its time') FROM scrape;
SELECT is(pg_temp.sample(body, E'pg_observe_cache_bytes{namespace="we\\"ird\\\\ns\\nx"}'),
          (SELECT bytes FROM monitoring.cache_stats WHERE namespace = E'we"ird\\ns\nx')::double precision,
          'bytes as cache_stats counts them') FROM scrape;
SELECT is(pg_temp.sample(body, 'pg_observe_cache_table_bytes'),
          pg_total_relation_size('monitoring.cache_entries')::double precision, 'the table''s size now') FROM scrape;
-- counters do not fall when the rows of ended backends are folded
INSERT INTO monitoring.cache_counters (namespace, backend_pid, hits, misses, sets) VALUES ('folded', 2147483646, 7, 8, 9);
SELECT is(pg_temp.sample(monitoring.prometheus_metrics(), 'pg_observe_cache_hits_total{namespace="folded"}'), 7::double precision,
          'a backend''s counts');
SELECT monitoring._fold_cache_counters();
SELECT is((SELECT backend_pid FROM monitoring.cache_counters WHERE namespace = 'folded'), 0, 'folded into backend_pid 0');
SELECT is(pg_temp.sample(monitoring.prometheus_metrics(), 'pg_observe_cache_hits_total{namespace="folded"}'), 7::double precision,
          'the same count after the fold');
-- a call reads neither cache_entries nor cache_stats (which counts cache_entries)
CREATE TEMP TABLE cache_scans_before AS
SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) AS scans FROM pg_stat_xact_user_tables
WHERE relid = 'monitoring.cache_entries'::regclass;
CREATE TEMP TABLE cache_scanned_scrape AS SELECT monitoring.prometheus_metrics() AS body;
SELECT is((SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) FROM pg_stat_xact_user_tables
           WHERE relid = 'monitoring.cache_entries'::regclass),
          (SELECT scans FROM cache_scans_before), 'one call does not scan the cache');
-- 20 namespaces at most: those with the most reads and writes, the others summed into "(other)"
INSERT INTO monitoring.cache_counters (namespace, backend_pid, hits, misses, sets)
SELECT 'ns-' || i, 0, 1000 + i, 0, 0 FROM generate_series(1, 25) i;
TRUNCATE scrape;
INSERT INTO scrape SELECT monitoring.prometheus_metrics();
SELECT is((SELECT count(*) FROM scrape, pg_temp.lines(body) l WHERE l.kind = 'sample' AND l.name = 'pg_observe_cache_hits_total'),
          21::bigint, '27 namespaces show as 20 and (other)');
SELECT is(pg_temp.sample(body, 'pg_observe_cache_hits_total{namespace="(other)"}'),
          (SELECT sum(hits) FROM monitoring.cache_counters
           WHERE namespace IN ('ns-1', 'ns-2', 'ns-3', 'ns-4', 'ns-5', 'folded', E'we"ird\\ns\nx'))::double precision,
          '(other) sums the least active ones') FROM scrape;
SELECT is(pg_temp.sample(body, 'pg_observe_cache_hits_total{namespace="ns-25"}'), 1025::double precision,
          'the most active keep their name') FROM scrape;
-- the reader: counters yes, cached values no; a role that may not read the counters gets up 0
SET LOCAL ROLE observe_reader;
SELECT is(pg_temp.sample(monitoring.prometheus_metrics(), 'pg_observe_cache_hits_total{namespace="ns-25"}'), 1025::double precision,
          'observe_reader reads the cache figures');
SELECT throws_ok($$SELECT count(*) FROM monitoring.cache_entries$$, '42501', NULL, 'but not the cached values');
RESET ROLE;
REVOKE SELECT ON monitoring.cache_counters FROM observe_reader;
SET LOCAL ROLE observe_reader;
SELECT is((SELECT array_agg(l.line ORDER BY l.n) FROM pg_temp.lines(monitoring.prometheus_metrics()) l
           WHERE l.kind = 'sample' AND l.name LIKE 'pg_observe_cache%'),
          ARRAY['pg_observe_cache_up 0'], 'without the privilege: the scrape succeeds with pg_observe_cache_up 0 alone');
RESET ROLE;
GRANT SELECT ON monitoring.cache_counters TO observe_reader;

-- ---------------------------------------------------------------- privileges
SET LOCAL ROLE observe_reader;
SELECT ok(monitoring.prometheus_metrics() LIKE '%pg_observe_health_status{%', 'observe_reader may call it, health included');
RESET ROLE;
SET LOCAL ROLE observe_writer;
SELECT throws_ok('SELECT monitoring.prometheus_metrics()', '42501', NULL, 'observe_writer may not');
RESET ROLE;
SELECT is((SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'monitoring'::regnamespace
           AND p.proname LIKE '%prometheus%' AND (p.prosecdef OR NOT 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig))),
          0::bigint, 'no prometheus function is SECURITY DEFINER; every one sets search_path');

SELECT * FROM finish();
ROLLBACK;
