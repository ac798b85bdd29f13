-- Metrics: record_metrics(), its rejections and repairs, the seed's monitoring.metrics and
-- its queries, the per-minute rollups and their watermark, storage and privileges.
-- Everything runs in one transaction: now() does not move, so "received a while ago" is
-- simulated by moving received_at back.
BEGIN;
SELECT plan(41);
SET LOCAL search_path = public, monitoring;

CREATE FUNCTION pg_temp.record(p_points jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT format('%s/%s', accepted, rejected) FROM monitoring.record_metrics(p_points)
$$;

-- ---------------------------------------------------------------- recording
SELECT is(pg_temp.record($$[
    {"metric_name": "graphql.requests.total", "metric_type": "counter", "metric_value": 3,
     "labels": {"operation": "getUser", "status": "success"}, "service": "api"},
    {"name": "db.pool.connections.active", "type": "gauge", "value": 7, "labels": {"pool": "primary"}},
    {"name": "graphql.request.duration_ms", "type": "histogram", "values": [12.5, 3, 40, 7.25], "labels": {"operation": "getOrders"},
     "environment": "staging"}
]$$), '6/0', 'record_metrics() stores counters, gauges and histogram values (one row per observation)');
SELECT results_eq(
    $$SELECT metric_name, metric_type, metric_value, labels, environment, service FROM monitoring.metrics ORDER BY id$$,
    $$VALUES ('graphql.requests.total', 'counter', 3::double precision, '{"operation": "getUser", "status": "success"}'::jsonb, 'production', 'api'),
             ('db.pool.connections.active', 'gauge', 7::double precision, '{"pool": "primary"}'::jsonb, 'production', NULL),
             ('graphql.request.duration_ms', 'histogram', 12.5::double precision, '{"operation": "getOrders"}'::jsonb, 'staging', NULL),
             ('graphql.request.duration_ms', 'histogram', 3::double precision, '{"operation": "getOrders"}'::jsonb, 'staging', NULL),
             ('graphql.request.duration_ms', 'histogram', 40::double precision, '{"operation": "getOrders"}'::jsonb, 'staging', NULL),
             ('graphql.request.duration_ms', 'histogram', 7.25::double precision, '{"operation": "getOrders"}'::jsonb, 'staging', NULL)$$,
    'names, types, values, labels, environment (default production) and service');
SELECT ok((SELECT bool_and("timestamp" = now()) FROM monitoring.metrics), 'without a timestamp a point is stamped now()');
SELECT is(pg_temp.record(format('[{"name": "t", "type": "gauge", "value": 1, "timestamp": "%s"}]',
                                to_char(now() - interval '2 hours', 'YYYY-MM-DD"T"HH24:MI:SS.US') )::jsonb),
          '1/0', 'an ISO timestamp without an offset is read as UTC');
SELECT is((SELECT "timestamp" FROM monitoring.metrics WHERE metric_name = 't'),
          date_trunc('microseconds', (now() AT TIME ZONE 'UTC' - interval '2 hours') AT TIME ZONE 'UTC'), 'and kept');

-- ---------------------------------------------------------------- bad input
SELECT is(pg_temp.record(jsonb_build_array(
    '{"name": "nan", "type": "gauge", "value": "NaN"}'::jsonb,
    '{"name": "inf", "type": "gauge", "value": "Infinity"}'::jsonb,
    '{"name": "big", "type": "gauge", "value": 1e400}'::jsonb,
    '{"name": "text", "type": "gauge", "value": "12"}'::jsonb,
    '{"name": "none", "type": "gauge"}'::jsonb,
    '{"type": "gauge", "value": 1}'::jsonb,
    '{"name": "", "type": "gauge", "value": 1}'::jsonb,
    jsonb_build_object('name', repeat('m', 2000), 'type', 'gauge', 'value', 1),
    '{"name": "t", "type": "summary", "value": 1}'::jsonb,
    '{"name": "t", "value": 1}'::jsonb,
    '{"name": "t", "type": "gauge", "value": 1, "labels": ["a"]}'::jsonb,
    jsonb_build_object('name', 't', 'type', 'gauge', 'value', 1,
                       'labels', (SELECT jsonb_object_agg('k' || g, g) FROM generate_series(1, 10000) g)),
    '{"name": "t", "type": "gauge", "value": 1, "timestamp": "last tuesday"}'::jsonb,
    '{"name": "t", "type": "histogram", "values": []}'::jsonb,
    '{"name": "t", "type": "histogram", "values": [1, "x"]}'::jsonb,
    '"not an object"'::jsonb,
    '{"name": "ok", "type": "counter", "value": 1}'::jsonb)),
    '1/16', 'bad points are rejected one by one; the good one of the batch is stored');
SELECT results_eq(
    $$SELECT reason FROM monitoring.rejected_telemetry WHERE kind = 'metric' ORDER BY rejected_id$$,
    $$VALUES ('metric_value must be a number of at most 1e300 in magnitude (NaN, infinities and text are not)'),
             ('metric_value must be a number of at most 1e300 in magnitude (NaN, infinities and text are not)'),
             ('metric_value must be a number of at most 1e300 in magnitude (NaN, infinities and text are not)'),
             ('metric_value must be a number of at most 1e300 in magnitude (NaN, infinities and text are not)'),
             ('metric_value must be a number of at most 1e300 in magnitude (NaN, infinities and text are not)'),
             ('a metric point needs a metric_name'),
             ('a metric point needs a metric_name'),
             ('metric_name is longer than 1,024 bytes'),
             ('metric_type summary is not counter, gauge or histogram'),
             ('metric_type NULL is not counter, gauge or histogram'),
             ('labels must be a JSON object'),
             ('labels has 10000 keys: at most 256'),
             ('timestamp is not ISO 8601 text'),
             ('values is empty'),
             ('metric_value must be a number of at most 1e300 in magnitude (NaN, infinities and text are not)'),
             ('a metric point must be a JSON object')$$,
    'each rejected point is kept with its reason');
SELECT is((SELECT jsonb_array_length(payload->'values') FROM monitoring.rejected_telemetry WHERE reason = 'values is empty'), 0,
          'the rejected point is kept as sent');
SELECT is(pg_temp.record(jsonb_build_array(jsonb_build_object('name', 'labels.max', 'type', 'gauge', 'value', 1,
              'labels', (SELECT jsonb_object_agg('k' || g, g) FROM generate_series(1, 256) g)))), '1/0',
          '256 label keys are accepted');
SELECT is(pg_temp.record('[{"name": "clock", "type": "gauge", "value": 1, "timestamp": "1999-12-31T23:59:59Z"},
                           {"name": "clock", "type": "gauge", "value": 2, "timestamp": "2999-01-01T00:00:00+02:00"}]'),
          '2/0', 'points with a wrong clock are stored');
SELECT results_eq($$SELECT metric_value, "timestamp" = now(), client_timestamp FROM monitoring.metrics WHERE metric_name = 'clock' ORDER BY 1$$,
                  $$VALUES (1::double precision, true, '1999-12-31 23:59:59+00'::timestamptz),
                           (2::double precision, true, '2998-12-31 22:00:00+00'::timestamptz)$$,
                  'at the time received, the original kept in client_timestamp');
SELECT is(pg_temp.record(jsonb_build_array(jsonb_build_object('name', E'hostile\'; DROP TABLE monitoring.metrics; --',
              'type', 'counter', 'value', -1e300, 'labels', jsonb_build_object(E'k\u202e', repeat('v', 100000))))), '1/0',
          'hostile names, huge negative values and 100 kB label values are stored');
SELECT throws_ok($$SELECT * FROM monitoring.record_metrics('{}')$$, '22023',
                 'record_metrics() takes a JSON array of points, got object', 'an object instead of an array: a clear error');
SELECT throws_ok($$SELECT * FROM monitoring.record_metrics(NULL)$$, '22023', NULL, 'NULL: a clear error');
SELECT throws_ok($$INSERT INTO monitoring.metrics (metric_name, metric_type, metric_value, environment) VALUES ('x', 'gauge', 'NaN', 'p')$$,
                 '23514', NULL, 'a direct INSERT of NaN fails its check');

-- Points that once broke the rollups: huge labels and sums beyond double precision.
SELECT is(pg_temp.record(jsonb_build_array(
    jsonb_build_object('name', 'big.labels', 'type', 'gauge', 'value', 1,
                       'labels', jsonb_build_object('k', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200) i))),
    '{"name": "big.values", "type": "counter", "values": [1e300, 1e300]}'::jsonb,
    '{"name": "too.big", "type": "counter", "value": 1e301}'::jsonb)), '3/1',
    '6 kB of labels and values of 1e300 are stored; 1e301 is not');
UPDATE monitoring.metrics SET received_at = now() - interval '2 minutes' WHERE metric_name IN ('big.labels', 'big.values');
SELECT matches(monitoring.rollup_metrics(), 'series-minutes rolled up$', 'and roll up');
-- A maintenance task that fails is reported; it does not undo the partition maintenance.
CREATE FUNCTION pg_temp.failing_task() RETURNS text LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'task broke'; END $$;
INSERT INTO monitoring.maintenance_task (task_name, function_name, run_order) VALUES ('failing', 'pg_temp.failing_task', 1);
SET LOCAL client_min_messages = error;   -- the task's warning
SELECT results_eq($$SELECT result FROM monitoring.run_maintenance() WHERE task = 'failing'$$,
                  $$VALUES ('failed: task broke')$$, 'a failing maintenance task is reported and the rest runs');
RESET client_min_messages;
DELETE FROM monitoring.maintenance_task WHERE task_name = 'failing';
DELETE FROM monitoring.metric_rollup_state;   -- the rollup tests below start afresh
TRUNCATE monitoring.metric_rollups_1m;

-- ---------------------------------------------------------------- the seed's monitoring.metrics
SELECT columns_are('monitoring', 'metrics',
    ARRAY['id', 'metric_name', 'metric_type', 'metric_value', 'labels', 'timestamp', 'environment', 'service',
          'client_timestamp', 'received_at'],
    'monitoring.metrics has the seed''s columns (and service, client_timestamp, received_at)');
SELECT lives_ok($$INSERT INTO monitoring.metrics (metric_name, metric_type, metric_value, labels, environment)
                  VALUES ('db.queries.count', 'counter', 4, '{"route": "/orders"}', 'production')$$,
                'the seed''s INSERT works (id and timestamp default)');
SELECT lives_ok($$DELETE FROM monitoring.metrics WHERE timestamp < NOW() - INTERVAL '7 days'$$,
                'seed: the retention DELETE runs unchanged');

-- ---------------------------------------------------------------- rollups
TRUNCATE monitoring.metrics;
INSERT INTO monitoring.metrics (metric_name, metric_type, metric_value, labels, "timestamp", received_at)
SELECT 'lat', 'histogram', g, '{"op": "a"}'::jsonb, date_trunc('minute', now()) - interval '10 minutes' + g * interval '100 ms',
       now() - interval '5 minutes'
FROM generate_series(1, 100) g
UNION ALL
SELECT 'req', 'counter', 2, '{}'::jsonb, date_trunc('minute', now()) - interval '10 minutes' + g * interval '1 second', now() - interval '5 minutes'
FROM generate_series(1, 30) g
UNION ALL
SELECT 'pool', 'gauge', g, '{}'::jsonb, date_trunc('minute', now()) - interval '10 minutes' + g * interval '1 second', now() - interval '5 minutes'
FROM generate_series(1, 5) g
UNION ALL  -- a point still inside the last minute: not read yet
SELECT 'req', 'counter', 100, '{}'::jsonb, date_trunc('minute', now()) - interval '9 minutes', now();
SELECT matches(monitoring.rollup_metrics(), '^1 minutes, 3 series-minutes rolled up$', 'rollup_metrics() rolls up the minutes received');
SELECT results_eq(
    $$SELECT metric_name, sample_count, value_sum, value_min, value_max, value_last, round(p50::numeric, 6),
             round(p90::numeric, 6), round(p95::numeric, 6), round(p99::numeric, 6)
      FROM monitoring.metric_rollups_1m ORDER BY metric_name$$,
    $$VALUES ('lat', 100::bigint, 5050::double precision, 1::double precision, 100::double precision, 100::double precision,
              50.5::numeric, 90.1::numeric, 95.05::numeric, 99.01::numeric),
             ('pool', 5::bigint, 15::double precision, 1::double precision, 5::double precision, 5::double precision,
              NULL::numeric, NULL::numeric, NULL::numeric, NULL::numeric),
             ('req', 30::bigint, 60::double precision, 2::double precision, 2::double precision, 2::double precision,
              NULL, NULL, NULL, NULL)$$,
    'count, sum, min, max, last, and percentiles for histograms only');
SELECT is((SELECT bucket FROM monitoring.metric_rollups_1m WHERE metric_name = 'lat'), date_trunc('minute', now()) - interval '10 minutes',
          'the bucket is the minute');
SELECT is((SELECT rolled_up_to FROM monitoring.metric_rollup_state), now() - interval '1 minute', 'the watermark is a minute before now');
SELECT is(monitoring.rollup_metrics(), 'nothing new', 'a second run in the same instant has nothing to do');
-- Late data: a point for the rolled-up minute received after the watermark updates it.
UPDATE monitoring.metrics SET received_at = now() - interval '30 seconds' WHERE metric_value = 100 AND metric_name = 'req';
UPDATE monitoring.metric_rollup_state SET rolled_up_to = now() - interval '2 minutes';
INSERT INTO monitoring.metrics (metric_name, metric_type, metric_value, labels, "timestamp", received_at)
VALUES ('req', 'counter', 5, '{}', date_trunc('minute', now()) - interval '10 minutes' + interval '59 seconds', now() - interval '90 seconds');
SELECT matches(monitoring.rollup_metrics(), '^1 minutes, 3 series-minutes rolled up$', 'a late point re-rolls its minute (every series of it)');
SELECT results_eq($$SELECT sample_count, value_sum FROM monitoring.metric_rollups_1m WHERE metric_name = 'req'
                    AND bucket = date_trunc('minute', now()) - interval '10 minutes'$$,
                  $$VALUES (31::bigint, 65::double precision)$$, 'the minute is recomputed from all its points, not added twice');
SELECT is((SELECT count(*)::int FROM monitoring.metric_rollups_1m), 3, 'one row per series and minute');
SELECT ok(EXISTS (SELECT FROM monitoring.maintenance_task WHERE function_name = 'monitoring.rollup_metrics'),
          'run_maintenance() runs the rollups');
SELECT ok(EXISTS (SELECT FROM monitoring._maintenance_jobs() WHERE command = 'SELECT monitoring.rollup_metrics()' AND schedule = '* * * * *'),
          'schedule_maintenance() schedules them every minute');
SELECT ok(EXISTS (SELECT FROM monitoring.run_maintenance() WHERE task = 'rollup_metrics'), 'run_maintenance() reports the rollup');

-- Seed 000's "Trace + Metrics" correlation over these points.
INSERT INTO monitoring.spans (trace_id, span_id, operation_name, start_time, end_time, duration_ms, attributes)
VALUES ('f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0', 'f0f0f0f0f0f0f0f0', 'GET /report', date_trunc('minute', now()) - interval '10 minutes',
        date_trunc('minute', now()) - interval '9 minutes 58 seconds', 2000, '{"user_id": "u-7"}');
INSERT INTO monitoring.metrics (metric_name, metric_type, metric_value, "timestamp")
VALUES ('db.queries.count', 'counter', 3, date_trunc('minute', now()) - interval '9 minutes 59 seconds'),
       ('db.queries.count', 'counter', 4, date_trunc('minute', now()) - interval '9 minutes 59 seconds'),
       ('db.queries.count', 'counter', 50, date_trunc('minute', now()) - interval '5 minutes');
SELECT results_eq($$
-- Find slow requests with metrics
SELECT
    t.trace_id,
    t.operation_name,
    t.duration_ms,
    m.metric_value as db_query_count,
    t.attributes->>'user_id' as user_id
FROM monitoring.traces t
LEFT JOIN LATERAL (
    SELECT SUM(metric_value) as metric_value
    FROM monitoring.metrics
    WHERE metric_name = 'db.queries.count'
      AND timestamp BETWEEN t.start_time AND t.end_time
) m ON true
WHERE t.duration_ms > 1000  -- Slower than 1 second
ORDER BY t.duration_ms DESC
LIMIT 50;
$$, $$VALUES ('f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0', 'GET /report', 2000::double precision, 7::double precision, 'u-7')$$,
    'seed: trace + metrics correlation, unchanged');

-- ---------------------------------------------------------------- storage
SELECT results_eq($$SELECT parent_table, partition_interval, retention FROM monitoring.time_series_config
                    WHERE parent_table IN ('monitoring.metrics', 'monitoring.metric_rollups_1m') ORDER BY 1$$,
                  $$VALUES ('monitoring.metric_rollups_1m', interval '1 day', interval '90 days'),
                           ('monitoring.metrics', interval '1 day', interval '7 days')$$,
                  'raw points daily for 7 days, rollups daily for 90 days');
SELECT is((SELECT count(*)::int FROM monitoring.metrics m WHERE m.tableoid = monitoring._default_partition('monitoring.metrics')), 0,
          'no point went to the default partition');

-- ---------------------------------------------------------------- privileges
SET LOCAL ROLE observe_writer;
SELECT is(pg_temp.record('[{"name": "w", "type": "counter", "value": 1}]'), '1/0', 'the writer records metrics');
SELECT lives_ok($$INSERT INTO monitoring.metrics (metric_name, metric_type, metric_value) VALUES ('w', 'gauge', 1)$$,
                'the writer may INSERT as in the seed');
SELECT throws_ok($$SELECT count(*) FROM monitoring.metrics$$, '42501', NULL, 'the writer cannot read metrics');
SELECT throws_ok($$SELECT monitoring.rollup_metrics()$$, '42501', NULL, 'nor run the rollups');
RESET ROLE;
SET LOCAL ROLE observe_reader;
SELECT ok((SELECT count(*) FROM monitoring.metric_rollups_1m) > 0, 'the reader reads rollups');
SELECT throws_ok($$SELECT * FROM monitoring.record_metrics('[]')$$, '42501', NULL, 'the reader cannot record');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
