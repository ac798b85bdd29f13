-- The dashboards' functions (sql/420_dashboards.sql) on a small known world: exact values per
-- bucket, filters, bad and hostile input, and that observe_reader can call every one.
-- test/python/test_dashboards.py runs every panel of the generated dashboards as Grafana would.
BEGIN;
SELECT plan(89);

-- The world starts at b, a whole hour two hours ago: 10-minute buckets b, b+10m, ... b+60m.
CREATE FUNCTION pg_temp.b() RETURNS timestamptz LANGUAGE sql STABLE
AS $$ SELECT date_trunc('hour', now()) - interval '2 hours' $$;

SELECT monitoring.capture_errors(jsonb_build_array(
    jsonb_build_object('exception_type', 'ValueError', 'message', 'bad input', 'environment', 'production',
                       'service', 'api', 'user', '{"id": "u1"}'::jsonb, 'tags', '{"tenant": "acme"}'::jsonb,
                       'transaction', '/orders', 'timestamp', pg_temp.b() + interval '5 minutes'),
    jsonb_build_object('exception_type', 'ValueError', 'message', 'bad input', 'environment', 'production',
                       'service', 'api', 'user', '{"id": "u1"}'::jsonb, 'transaction', '/orders',
                       'timestamp', pg_temp.b() + interval '15 minutes'),
    jsonb_build_object('exception_type', 'ValueError', 'message', 'bad input', 'environment', 'production',
                       'service', 'api', 'user', '{"id": "u3"}'::jsonb, 'transaction', '/orders',
                       'timestamp', pg_temp.b() + interval '15 minutes 30 seconds'),
    jsonb_build_object('exception_type', 'KeyError', 'message', 'no such key', 'environment', 'staging',
                       'service', 'worker', 'user', '{"id": "u2"}'::jsonb,
                       'timestamp', pg_temp.b() + interval '25 minutes'),
    jsonb_build_object('exception_type', 'psycopg.errors.InsufficientPrivilege', 'message', 'permission denied for table payroll',
                       'environment', 'production', 'service', 'api', 'timestamp', pg_temp.b() + interval '35 minutes'),
    jsonb_build_object('exception_type', 'HTTPError', 'message', 'upstream refused us', 'environment', 'production',
                       'service', 'api', 'tags', '{"http.status_code": "403"}'::jsonb,
                       'timestamp', pg_temp.b() + interval '45 minutes'),
    jsonb_build_object('exception_type', 'HTTPError', 'message', 'upstream lost it', 'environment', 'production',
                       'service', 'api', 'tags', '{"http.status_code": "404"}'::jsonb,
                       'timestamp', pg_temp.b() + interval '46 minutes')));

-- Three requests (server spans), a database call and an internal span inside the first, and
-- u2's request of yesterday (so that u2 is not new).
SELECT * FROM monitoring.ingest_spans(jsonb_build_array(
    jsonb_build_object('trace_id', 'a1000000000000000000000000000001', 'span_id', 'a100000000000001', 'name', 'getUser',
                       'kind', 'server', 'start_time', pg_temp.b() + interval '5 minutes',
                       'end_time', pg_temp.b() + interval '5 minutes 100 ms',
                       'attributes', '{"enduser.id": "u1", "tenant.id": "acme", "graphql.operation.type": "query"}'::jsonb,
                       'resource', '{"service.name": "api", "deployment.environment": "production"}'::jsonb),
    jsonb_build_object('trace_id', 'a1000000000000000000000000000001', 'span_id', 'a100000000000002',
                       'parent_span_id', 'a100000000000001', 'name', 'SELECT users', 'kind', 'client',
                       'start_time', pg_temp.b() + interval '5 minutes', 'end_time', pg_temp.b() + interval '5 minutes 20 ms',
                       'attributes', '{"db.system": "postgresql"}'::jsonb,
                       'resource', '{"service.name": "api", "deployment.environment": "production"}'::jsonb),
    jsonb_build_object('trace_id', 'a1000000000000000000000000000001', 'span_id', 'a100000000000003',
                       'parent_span_id', 'a100000000000001', 'name', 'render', 'kind', 'internal',
                       'start_time', pg_temp.b() + interval '5 minutes', 'end_time', pg_temp.b() + interval '5 minutes 9 s',
                       'resource', '{"service.name": "api", "deployment.environment": "production"}'::jsonb),
    jsonb_build_object('trace_id', 'a2000000000000000000000000000002', 'span_id', 'a200000000000001', 'name', 'getUser',
                       'kind', 'server', 'start_time', pg_temp.b() + interval '6 minutes',
                       'end_time', pg_temp.b() + interval '6 minutes 300 ms', 'status_code', 'error',
                       'attributes', '{"enduser.id": "u1", "tenant.id": "acme", "graphql.operation.type": "query"}'::jsonb,
                       'resource', '{"service.name": "api", "deployment.environment": "production"}'::jsonb),
    jsonb_build_object('trace_id', 'a3000000000000000000000000000003', 'span_id', 'a300000000000001', 'name', 'payOrder',
                       'kind', 'server', 'start_time', pg_temp.b() + interval '7 minutes',
                       'end_time', pg_temp.b() + interval '7 minutes 50 ms',
                       'attributes', '{"user.id": "u2", "tenant": "globex", "graphql.operation.type": "mutation"}'::jsonb,
                       'resource', '{"service.name": "worker", "deployment.environment": "staging"}'::jsonb),
    jsonb_build_object('trace_id', 'a4000000000000000000000000000004', 'span_id', 'a400000000000001', 'name', 'payOrder',
                       'kind', 'server', 'start_time', pg_temp.b() - interval '1 day',
                       'end_time', pg_temp.b() - interval '1 day' + interval '10 ms',
                       'attributes', '{"user.id": "u2"}'::jsonb,
                       'resource', '{"service.name": "worker", "deployment.environment": "staging"}'::jsonb)));

-- Rollups of two minutes, two series each (api, worker).
INSERT INTO monitoring.metric_rollups_1m (bucket, series_key, metric_name, metric_type, labels, environment, service,
                                          sample_count, value_sum, value_min, value_max, value_last, p50, p90, p95, p99)
VALUES (pg_temp.b() + interval '1 minute', gen_random_uuid(), 'graphql.requests.total', 'counter', '{}', 'production', 'api', 1, 60, 60, 60, 60, NULL, NULL, NULL, NULL),
       (pg_temp.b() + interval '2 minutes', gen_random_uuid(), 'graphql.requests.total', 'counter', '{}', 'production', 'api', 1, 120, 120, 120, 120, NULL, NULL, NULL, NULL),
       (pg_temp.b() + interval '1 minute', gen_random_uuid(), 'graphql.requests.total', 'counter', '{}', 'production', 'worker', 1, 30, 30, 30, 30, NULL, NULL, NULL, NULL),
       (pg_temp.b() + interval '1 minute', gen_random_uuid(), 'db.pool.connections.active', 'gauge', '{}', 'production', 'api', 3, 12, 4, 4, 4, NULL, NULL, NULL, NULL),
       (pg_temp.b() + interval '1 minute', gen_random_uuid(), 'db.pool.connections.active', 'gauge', '{}', 'production', 'worker', 3, 18, 6, 6, 6, NULL, NULL, NULL, NULL),
       (pg_temp.b() + interval '2 minutes', gen_random_uuid(), 'db.pool.connections.active', 'gauge', '{}', 'production', 'api', 3, 6, 2, 2, 2, NULL, NULL, NULL, NULL),
       (pg_temp.b() + interval '2 minutes', gen_random_uuid(), 'db.pool.connections.active', 'gauge', '{}', 'production', 'worker', 3, 18, 6, 6, 6, NULL, NULL, NULL, NULL),
       (pg_temp.b() + interval '1 minute', gen_random_uuid(), 'graphql.request.duration_ms', 'histogram', '{}', 'production', 'api', 10, 200, 1, 90, 5, 20, 50, 60, 80),
       (pg_temp.b() + interval '2 minutes', gen_random_uuid(), 'graphql.request.duration_ms', 'histogram', '{}', 'production', 'api', 30, 1200, 1, 90, 5, 40, 70, 80, 90);

CREATE TABLE public.acl_entries (subject text, privilege text, PRIMARY KEY (subject, privilege));
CREATE TABLE public.items (id integer PRIMARY KEY, name text);
SELECT monitoring.track_changes('public.acl_entries', 'acl_entry');
SELECT monitoring.track_changes('public.items', 'item');
SELECT set_config('pg_observe.user_id', 'alice', true);
INSERT INTO public.items VALUES (1, 'a'), (2, 'b'), (3, 'c');
UPDATE public.items SET name = 'B' WHERE id = 2;
DELETE FROM public.items WHERE id = 3;
INSERT INTO public.acl_entries VALUES ('bob', 'admin');
SELECT set_config('pg_observe.user_id', '', true);

SELECT monitoring.resolve_error((SELECT error_fingerprint FROM monitoring.tb_error_log WHERE error_type = 'ValueError'),
                                NULL, 'dana');
SELECT monitoring.assign_error((SELECT error_fingerprint FROM monitoring.tb_error_log WHERE error_type = 'KeyError'),
                               'erin', 'dana');

-- Variables -------------------------------------------------------------------------------
SELECT is(monitoring.dashboard_variable('__all'), NULL, 'the All value __all is no filter');
SELECT is(monitoring.dashboard_variable(NULL), NULL, 'NULL is no filter');
SELECT results_eq(
    $$SELECT monitoring.dashboard_variable(v) FROM unnest(ARRAY['production', 'a%20b', '%27%3B%20DROP%20TABLE%20x%3B%20--',
        '%5C%27%22', '%E2%82%AC%F0%9D%84%9E', '100%', 'a%2', '%25', '', '__all_', '%5F%5Fall']) WITH ORDINALITY u(v, n) ORDER BY n$$,
    $$VALUES ('production'), ('a b'), ('''; DROP TABLE x; --'), ('\''"'), ('€𝄞'), ('100%'), ('a%2'), ('%'), (''),
             ('__all_'), ('__all')$$,
    'percent-encoded values decode to what Grafana encoded; a lone % stays');
SELECT results_eq($$SELECT monitoring.dashboard_variable('%FF%FE'), monitoring.dashboard_variable('%00'),
                           monitoring.dashboard_variable('a%C3')$$,
                  $$VALUES ('%FF%FE', '%00', 'a%C3')$$,
                  'what is no UTF-8 text once decoded (or a NUL) stays as sent, and so matches nothing');
SELECT is(length(monitoring.dashboard_variable(repeat('%41', 100000))), 100000, 'a 300 kB value decodes');

SELECT set_eq('SELECT environment FROM monitoring.dashboard_environments()', ARRAY['production', 'staging'],
              '$environment lists the environments seen');
SELECT set_eq('SELECT service FROM monitoring.dashboard_services()', ARRAY['api', 'worker'],
              '$service lists the services seen');

-- Buckets ---------------------------------------------------------------------------------
SELECT is(monitoring._dashboard_bucket(now() - interval '1 hour', now(), interval '1 minute'), interval '1 minute',
          'the bucket asked for');
SELECT is(monitoring._dashboard_bucket(now() - interval '30 days', now(), interval '1 second'), interval '43 minutes 12 seconds',
          'at most 1,000 buckets in a range');
SELECT is(monitoring._dashboard_bucket(now() - interval '1 hour', now(), interval '1 second', interval '1 minute'),
          interval '1 minute', 'at least the minimum (a minute for metric rollups)');
SELECT is(monitoring._dashboard_bucket(now() - interval '1 hour', now(), NULL), interval '1 minute', 'NULL: a minute');
SELECT is(monitoring._dashboard_bucket(now() - interval '1000 years', now(), interval '1 year'), interval '8766 hours',
          'a year (Grafana''s 1y) is its seconds: date_bin takes no months');
SELECT throws_ok($$SELECT monitoring._dashboard_bucket('-infinity', now(), '1 minute')$$, '22023', NULL,
                 'an infinite range is refused with a message');
SELECT throws_ok($$SELECT * FROM monitoring.dashboard_error_rate(NULL, now())$$, '22023', NULL,
                 'a range without a start is refused');
SELECT is((SELECT count(*)::int FROM monitoring.dashboard_requests(now(), now() - interval '1 hour')), 0,
          'a reversed range has no buckets');
SELECT cmp_ok((SELECT count(*)::int FROM monitoring.dashboard_error_rate('0001-01-01', '9999-12-31', NULL, NULL, '1 ms')),
              '<=', 1001, 'ten thousand years in milliseconds give at most 1,001 buckets');

-- Every time series: one row per bucket, in time order ----------------------------------
SELECT is((SELECT array_agg(f."time") FROM monitoring.dashboard_error_rate(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes') f),
          (SELECT array_agg(t ORDER BY t) FROM generate_series(pg_temp.b(), pg_temp.b() + interval '1 hour', interval '10 minutes') t),
          'dashboard_error_rate: a row per bucket in time order, empty ones included');
SELECT is((SELECT array_agg(x) FROM (
              SELECT count(*) FROM monitoring.dashboard_first_vs_repeat(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes')
              UNION ALL SELECT count(*) FROM monitoring.dashboard_failed_access(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes')
              UNION ALL SELECT count(*) FROM monitoring.dashboard_requests(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes')
              UNION ALL SELECT count(*) FROM monitoring.dashboard_latency(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes')
              UNION ALL SELECT count(*) FROM monitoring.dashboard_request_heatmap(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes')
              UNION ALL SELECT count(*) FROM monitoring.dashboard_db_queries(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes')
              UNION ALL SELECT count(*) FROM monitoring.dashboard_new_users(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes')
              UNION ALL SELECT count(*) FROM monitoring.dashboard_metric_rate(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes')
              UNION ALL SELECT count(*) FROM monitoring.dashboard_metric_gauge(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes')
              UNION ALL SELECT count(*) FROM monitoring.dashboard_metric_histogram(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes')
              UNION ALL SELECT count(*) FROM monitoring.dashboard_audit_event_types(pg_temp.b(), pg_temp.b() + interval '1 hour', '10 minutes')) c(x)),
          array_fill(7::bigint, ARRAY[11]), 'every time series has the range''s 7 buckets');

-- Errors ----------------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT "time" - pg_temp.b(), occurrences, issues, affected_users
      FROM monitoring.dashboard_error_rate(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes')$$,
    $$VALUES (interval '0', 1::bigint, 1::bigint, 1::bigint), ('10 minutes', 2, 1, 2), ('20 minutes', 1, 1, 1),
             ('30 minutes', 1, 1, 0), ('40 minutes', 2, 2, 0), ('50 minutes', 0, 0, 0), ('60 minutes', 0, 0, 0)$$,
    'error rate: occurrences, issues and users per bucket');
SELECT results_eq(
    $$SELECT occurrences FROM monitoring.dashboard_error_rate(pg_temp.b(), pg_temp.b() + interval '1 hour', 'staging', NULL, '10 minutes')$$,
    $$VALUES (0::bigint), (0), (1), (0), (0), (0), (0)$$, 'error rate of one environment');
SELECT results_eq(
    $$SELECT occurrences FROM monitoring.dashboard_error_rate(pg_temp.b(), pg_temp.b() + interval '1 hour', 'production', 'worker', '10 minutes')$$,
    $$VALUES (0::bigint), (0), (0), (0), (0), (0), (0)$$, 'error rate of an environment and a service with no errors');
SELECT results_eq(
    $$SELECT new_issue_errors, known_issue_errors
      FROM monitoring.dashboard_first_vs_repeat(pg_temp.b() + interval '10 minutes', pg_temp.b() + interval '20 minutes', NULL, NULL, '10 minutes')$$,
    $$VALUES (0::bigint, 2::bigint), (0, 0)$$, 'first vs repeat: errors of an issue first seen before the range are known ones');
SELECT results_eq(
    $$SELECT fingerprint IS NOT NULL, error_type, status, occurrences, affected_users, assignee
      FROM monitoring.dashboard_top_errors(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, 2)$$,
    $$VALUES (true, 'ValueError', 'resolved', 3::bigint, 2::bigint, NULL::text),
             (true, 'HTTPError', 'unresolved', 1, 0, NULL)$$,
    'top errors: by occurrences, with status and users; p_limit');
SELECT results_eq(
    $$SELECT key, occurrences, issues FROM monitoring.dashboard_error_breakdown(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, 'endpoint')$$,
    $$VALUES ('(none)', 4::bigint, 4::bigint), ('/orders', 3, 1)$$, 'errors by endpoint (transaction), none as (none)');
SELECT results_eq(
    $$SELECT key, occurrences FROM monitoring.dashboard_error_breakdown(pg_temp.b(), pg_temp.b() + interval '1 hour', 'production', 'api', 'type', 2)$$,
    $$VALUES ('ValueError', 3::bigint), ('HTTPError', 2)$$, 'errors by type, filtered and limited');
SELECT throws_ok($$SELECT * FROM monitoring.dashboard_error_breakdown(now() - interval '1 hour', now(), NULL, NULL, 'message; DROP')$$,
                 '22023', NULL, 'an unknown breakdown is refused');
SELECT results_eq(
    $$SELECT exception_type, endpoint, user_key FROM monitoring.dashboard_recent_errors(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, 3)$$,
    $$VALUES ('HTTPError', NULL::text, NULL::text), ('HTTPError', NULL, NULL), ('psycopg.errors.InsufficientPrivilege', NULL, NULL)$$,
    'recent errors: newest first, limited');
SELECT results_eq(
    $$SELECT status, issues FROM monitoring.dashboard_issue_status(pg_temp.b(), pg_temp.b() + interval '1 hour')$$,
    $$VALUES ('unresolved', 4::bigint), ('resolved', 1)$$, 'issues of the range by status');
SELECT results_eq(
    $$SELECT resolved_issues, round(median_hours::numeric, 6) FROM monitoring.dashboard_resolution_time(now() - interval '1 hour', now() + interval '1 hour')$$,
    $$SELECT 1::bigint, round((extract(epoch FROM now() - (pg_temp.b() + interval '5 minutes')) / 3600)::numeric, 6)$$,
    'resolution time: from the first occurrence to the resolution');
SELECT results_eq(
    $$SELECT resolved_issues FROM monitoring.dashboard_resolution_time(now() - interval '1 hour', now() + interval '1 hour', 'staging')$$,
    $$VALUES (0::bigint)$$, 'resolution time of an environment where nothing was resolved: one row, 0');
SELECT results_eq(
    $$SELECT attempts, users FROM monitoring.dashboard_failed_access(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '1 hour') LIMIT 1$$,
    $$VALUES (2::bigint, 0::bigint)$$, 'failed access: the SQLSTATE 42501 error and the HTTP 403, not the 404');

-- Traces ----------------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT requests_per_second, failed_per_second, round(error_rate_pct::numeric, 2)
      FROM monitoring.dashboard_requests(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes') LIMIT 2$$,
    $$VALUES (3 / 600.0::double precision, 1 / 600.0::double precision, 33.33), (0, 0, 0)$$,
    'requests per second: server spans only, failed ones and the error rate');
SELECT results_eq(
    $$SELECT requests_per_second FROM monitoring.dashboard_requests(pg_temp.b(), pg_temp.b() + interval '1 hour', 'staging', 'worker', '10 minutes') LIMIT 1$$,
    $$VALUES (1 / 600.0::double precision)$$, 'requests of an environment and service');
SELECT results_eq(
    $$SELECT round(p50_ms), round(p99_ms) FROM monitoring.dashboard_latency(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes') LIMIT 2$$,
    $$VALUES (100::double precision, 296::double precision), (NULL, NULL)$$, 'latency percentiles of requests; NULL where none');
SELECT results_eq(
    $$SELECT "10", "50", "100", "250", "500", "+Inf" FROM monitoring.dashboard_request_heatmap(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes') LIMIT 1$$,
    $$VALUES (0::bigint, 1::bigint, 1::bigint, 0::bigint, 1::bigint, 0::bigint)$$, 'heatmap: requests per duration class');
SELECT results_eq(
    $$SELECT operation_name, requests, failed, error_rate_pct FROM monitoring.dashboard_operations(pg_temp.b(), pg_temp.b() + interval '1 hour')$$,
    $$VALUES ('getUser', 2::bigint, 1::bigint, 50::double precision), ('payOrder', 1, 0, 0)$$, 'top operations by requests');
SELECT results_eq(
    $$SELECT operation_name FROM monitoring.dashboard_operations(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, 'p99_ms', 1)$$,
    $$VALUES ('getUser')$$, 'slowest operation by p99');
SELECT throws_ok($$SELECT * FROM monitoring.dashboard_operations(now() - interval '1 hour', now(), NULL, NULL, '1; SELECT 1')$$,
                 '22023', NULL, 'an unknown order is refused');
SELECT results_eq(
    $$SELECT operation_type, requests FROM monitoring.dashboard_operation_types(pg_temp.b(), pg_temp.b() + interval '1 hour')$$,
    $$VALUES ('query', 2::bigint), ('mutation', 1)$$, 'operation types from graphql.operation.type');
SELECT results_eq(
    $$SELECT status, spans FROM monitoring.dashboard_span_status(pg_temp.b(), pg_temp.b() + interval '1 hour')$$,
    $$VALUES ('unset', 4::bigint), ('error', 1)$$, 'spans by status');
SELECT results_eq(
    $$SELECT queries_per_second, p50_ms FROM monitoring.dashboard_db_queries(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes') LIMIT 1$$,
    $$VALUES (1 / 600.0::double precision, 20::double precision)$$, 'database calls: spans with db.system');

-- Users -----------------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT user_id, tenant, requests, operations, failed, error_rate_pct FROM monitoring.dashboard_users(pg_temp.b(), pg_temp.b() + interval '1 hour')$$,
    $$VALUES ('u1', 'acme', 2::bigint, 1::bigint, 1::bigint, 50::double precision), ('u2', 'globex', 1, 1, 0, 0)$$,
    'users from enduser.id or user.id, tenants from tenant.id or tenant');
SELECT results_eq(
    $$SELECT user_key, tenant, errors, issues FROM monitoring.dashboard_user_errors(pg_temp.b(), pg_temp.b() + interval '1 hour')$$,
    $$VALUES ('u1', 'acme', 2::bigint, 1::bigint), ('u2', NULL, 1, 1), ('u3', NULL, 1, 1)$$, 'users hit by errors, tenant from the tag');
SELECT results_eq(
    $$SELECT tenant, active_users, requests, failed, errors FROM monitoring.dashboard_tenants(pg_temp.b(), pg_temp.b() + interval '1 hour')$$,
    $$VALUES ('acme', 1::bigint, 2::bigint, 1::bigint, 1::bigint), ('globex', 1, 1, 0, 0)$$, 'tenants side by side');
SELECT results_eq(
    $$SELECT new_users, active_users FROM monitoring.dashboard_new_users(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '1 hour') LIMIT 1$$,
    $$VALUES (1::bigint, 2::bigint)$$, 'u2 was seen yesterday: one new user of two');
SELECT results_eq(
    $$SELECT new_users FROM monitoring.dashboard_new_users(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '1 hour', '1 hour') LIMIT 1$$,
    $$VALUES (2::bigint)$$, 'with an hour of look-back both are new');

-- Metrics ---------------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT per_second FROM monitoring.dashboard_metric_rate(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes') LIMIT 2$$,
    $$VALUES (210 / 600.0::double precision), (0)$$, 'a counter per second, summed over its series');
SELECT results_eq(
    $$SELECT per_second FROM monitoring.dashboard_metric_rate(pg_temp.b(), pg_temp.b() + interval '1 hour', 'production', 'api', '10 minutes', 'graphql.requests.total') LIMIT 1$$,
    $$VALUES (180 / 600.0::double precision)$$, 'a counter of one service');
SELECT results_eq(
    $$SELECT value FROM monitoring.dashboard_metric_gauge(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes') LIMIT 2$$,
    $$VALUES (9::double precision), (NULL)$$, 'a gauge: sum of the series per minute, mean over the bucket; NULL without data');
SELECT results_eq(
    $$SELECT observations, p50, p99 FROM monitoring.dashboard_metric_histogram(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 minutes') LIMIT 1$$,
    $$VALUES (40::bigint, 35::double precision, 87.5::double precision)$$, 'a histogram: percentiles weighted by observations');
SELECT is((SELECT count(*)::int FROM monitoring.dashboard_metric_rate(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, '10 seconds')),
          61, 'metric buckets are at least a minute');

-- Audit -----------------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT entity_name, entity_id, change_type, changed_columns, application_user
      FROM monitoring.dashboard_audit_events(now() - interval '1 hour', now() + interval '1 hour', 3)$$,
    $$VALUES ('acl_entry', '["bob", "admin"]', 'INSERT', NULL::text, 'alice'), ('item', '3', 'DELETE', NULL, 'alice'),
             ('item', '2', 'UPDATE', 'name', 'alice')$$,
    'recent audit events, newest first');
SELECT results_eq(
    $$SELECT sum(inserts)::int, sum(updates)::int, sum(deletes)::int, sum(truncates)::int
      FROM monitoring.dashboard_audit_event_types(now() - interval '1 hour', now() + interval '1 hour', '1 hour')$$,
    $$VALUES (4, 1, 1, 0)$$, 'changes by type');
SELECT results_eq(
    $$SELECT actor, action FROM monitoring.dashboard_admin_actions(now() - interval '1 hour', now() + interval '1 hour') ORDER BY action$$,
    $$VALUES ('dana', 'assign'), ('dana', 'resolve')$$, 'admin actions: the workflow, not first_seen');
SELECT results_eq(
    $$SELECT actor FROM monitoring.dashboard_admin_actions(now() - interval '1 hour', now() + interval '1 hour', 'staging', 'worker')$$,
    $$VALUES ('dana')$$, 'admin actions on issues of an environment and service');
SELECT results_eq(
    $$SELECT entity_name, change_type FROM monitoring.dashboard_permission_changes(now() - interval '1 hour', now() + interval '1 hour')$$,
    $$VALUES ('acl_entry', 'INSERT')$$, 'permission changes: entities that speak of ACLs, roles, grants');
SELECT results_eq(
    $$SELECT actor, entity_name, inserts, updates, deletes FROM monitoring.dashboard_changes_by_actor(now() - interval '1 hour', now() + interval '1 hour')$$,
    $$VALUES ('alice', 'item', 3::bigint, 1::bigint, 1::bigint), ('alice', 'acl_entry', 1, 0, 0)$$, 'changes by actor and entity');
SELECT results_eq(
    $$SELECT check_name, status FROM monitoring.dashboard_compliance_status()$$,
    $$VALUES ('change tracking', 'ok'), ('change log retention', 'ok'), ('change log partitions', 'ok')$$,
    'compliance status: tracked tables, retention, partitions');
SELECT ok((SELECT seconds_since_last_change = 0 AND changes_last_hour = 6 FROM monitoring.dashboard_audit_lag()),
          'audit lag: seconds since the newest change, changes of the last hour');
DELETE FROM monitoring.tb_entity_change_log;
SELECT results_eq($$SELECT seconds_since_last_change, changes_last_hour FROM monitoring.dashboard_audit_lag()$$,
                  $$VALUES (NULL::float8, 0::bigint)$$, 'no change at all: no lag (NULL, not 0)');

-- The cache (sql/500_cache.sql): samples of cumulative counters ------------------------------
-- a: 100/100 at b (and 5 hits an hour before), 700/200 at b+10m, then a restart (300/0 at
-- b+20m). z appears at b+10m (it had no counts before: all of them are new).
DELETE FROM monitoring.cache_stats_history;
INSERT INTO monitoring.cache_stats_history (sampled_at, namespace, entries, expired_pending, hits, misses, sets, evictions, bytes)
VALUES (pg_temp.b() - interval '1 hour', 'a', 1, 0, 5, 0, 1, 0, 100),
       (pg_temp.b(), 'a', 10, 0, 100, 100, 10, 0, 1000),
       (pg_temp.b() + interval '10 minutes', 'a', 70, 3, 700, 200, 70, 6, 7000),
       (pg_temp.b() + interval '10 minutes', 'z', 60, 0, 0, 60, 60, 0, 600),
       (pg_temp.b() + interval '20 minutes', 'a', 20, 0, 300, 0, 0, 0, 2000),
       (pg_temp.b() + interval '20 minutes', 'z', 120, 0, 0, 120, 120, 0, 1200);
SELECT results_eq(
    $$SELECT "time" - pg_temp.b(), hits_per_second, round(misses_per_second::numeric, 4)::float8, sets_per_second,
             evictions_per_second, round(hit_ratio_pct::numeric, 2)::float8
      FROM monitoring.dashboard_cache_activity(pg_temp.b(), pg_temp.b() + interval '30 minutes', NULL, '10 minutes')$$,
    $$VALUES (interval '0', 1.0::float8, 0.2667::float8, 0.2::float8, 0.01::float8, 78.95::float8),
             (interval '10 minutes', 0.5, 0.1, 0.1, 0, 83.33),
             (interval '20 minutes', NULL, NULL, NULL, NULL, NULL),
             (interval '30 minutes', NULL, NULL, NULL, NULL, NULL)$$,
    'cache activity: counter differences per second per bucket, a restart counts from zero, no sample no value');
SELECT results_eq(
    $$SELECT "time" - pg_temp.b(), hits_per_second FROM monitoring.dashboard_cache_activity(
          pg_temp.b(), pg_temp.b() + interval '30 minutes', NULL, '20 minutes')$$,
    $$VALUES (interval '0', 0.75::float8), (interval '20 minutes', NULL)$$,
    'a bucket over two intervals: their counts over their time');
SELECT results_eq(
    $$SELECT "time" - pg_temp.b(), hits_per_second FROM monitoring.dashboard_cache_activity(
          pg_temp.b() + interval '5 minutes', pg_temp.b() + interval '10 minutes', NULL, '5 minutes')$$,
    $$VALUES (interval '5 minutes', 1.0::float8), (interval '10 minutes', 0.5)$$,
    'a bucket inside an interval gets its rate (the sample before the range is read)');
SELECT results_eq(
    $$SELECT "time" - pg_temp.b(), hits_per_second, misses_per_second, hit_ratio_pct FROM monitoring.dashboard_cache_activity(
          pg_temp.b(), pg_temp.b() + interval '10 minutes', 'z', '10 minutes')$$,
    $$VALUES (interval '0', 0::float8, 0.1::float8, 0::float8), (interval '10 minutes', 0, 0.1, 0)$$,
    'p_namespace: one namespace; a new one counts from zero');
SELECT results_eq(
    $$SELECT "time" - pg_temp.b(), entries, expired_pending, bytes FROM monitoring.dashboard_cache_size(
          pg_temp.b(), pg_temp.b() + interval '20 minutes', NULL, '10 minutes')$$,
    $$VALUES (interval '0', 130::float8, 3::float8, 7600::float8), (interval '10 minutes', 140, 0, 3200),
             (interval '20 minutes', NULL, NULL, NULL)$$,
    'cache size: entries and bytes summed over namespaces, each sample for the interval before it');
SELECT is((SELECT entries FROM monitoring.dashboard_cache_size(pg_temp.b(), pg_temp.b() + interval '10 minutes', NULL,
                                                               '20 minutes')),
          135::float8, 'a bucket over two intervals: their sizes weighted by time');
SELECT results_eq(
    $$SELECT * FROM monitoring.dashboard_cache_namespace_stats(pg_temp.b(), pg_temp.b() + interval '30 minutes')$$,
    $$VALUES ('a'::text, 900::bigint, 100::bigint, 90::float8, 60::bigint, 6::bigint, 20::bigint, 2000::bigint),
             ('z', 0, 120, 0, 120, 0, 120, 1200)$$,
    'per namespace: the range''s counts (not the interval ending at p_from), the last sizes, most reads first');
SELECT results_eq(
    $$SELECT namespace FROM monitoring.dashboard_cache_namespace_stats(pg_temp.b(), pg_temp.b() + interval '30 minutes', 'z', 1)$$,
    $$VALUES ('z'::text)$$, 'filtered by namespace and limited');
SELECT results_eq(
    $$SELECT round(hit_ratio_pct::numeric, 3)::float8, hits, misses, entries, expired_pending, bytes, seconds_since_sample > 0
      FROM monitoring.dashboard_cache_summary(pg_temp.b(), pg_temp.b() + interval '30 minutes')$$,
    $$VALUES (80.357::float8, 900::bigint, 220::bigint, 140::bigint, 0::bigint, 3200::bigint, true)$$,
    'cache summary: the range''s hit ratio and reads, the sizes of its last sample');
SELECT results_eq(
    $$SELECT hit_ratio_pct, entries FROM monitoring.dashboard_cache_summary(pg_temp.b(), pg_temp.b() + interval '30 minutes', 'a')$$,
    $$VALUES (90::float8, 20::bigint)$$, 'cache summary of one namespace');
SELECT results_eq(
    $$SELECT * FROM monitoring.dashboard_cache_summary(pg_temp.b(), pg_temp.b() + interval '30 minutes', 'it''s ; --')$$,
    $$VALUES (NULL::float8, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::float8)$$,
    'an unknown namespace: one row of NULLs (no data)');
SELECT is((SELECT count(*)::int FROM monitoring.dashboard_cache_activity(pg_temp.b(), pg_temp.b() + interval '30 minutes', v, '10 minutes')
           WHERE hits_per_second IS NOT NULL),
          0, 'a hostile namespace is a value: ' || left(v, 20))
FROM unnest(ARRAY[$$'; DROP TABLE monitoring.cache_stats_history; --$$, '%', E'\\', repeat('x', 1000000)]) v;
SELECT throws_ok($$SELECT * FROM monitoring.dashboard_cache_activity('-infinity', now())$$, '22023', NULL,
                 'the cache activity needs a finite range');
SELECT is((SELECT count(*)::int FROM monitoring.dashboard_cache_namespace_stats(pg_temp.b(), now(), NULL, -1)), 0,
          'a negative limit gives no rows');
SELECT ok((SELECT count(*) BETWEEN 1000 AND 1001 FROM monitoring.dashboard_cache_activity(now() - interval '7 days', now(), NULL, '1 second')),
          'a week asked in seconds is 1,000 buckets (and the partial last one)');
SELECT results_eq($$SELECT * FROM monitoring.dashboard_cache_namespaces()$$, $$VALUES ('a'::text), ('z')$$,
                  'the $namespace variable: namespaces sampled in the last day');

-- Hostile values --------------------------------------------------------------------------
SELECT is((SELECT sum(occurrences)::int FROM monitoring.dashboard_error_rate(pg_temp.b(), pg_temp.b() + interval '1 hour',
                                                                             v, v, '10 minutes')),
          0, 'a hostile filter value is a value: ' || left(v, 20))
FROM unnest(ARRAY[$$'; DROP TABLE monitoring.spans; --$$, E'\\'' OR 1=1 --', '%', '_', repeat('x', 1000000)]) v;
SELECT is((SELECT count(*)::int FROM monitoring.dashboard_top_errors(pg_temp.b(), pg_temp.b() + interval '1 hour', NULL, NULL, -1)),
          0, 'a negative limit gives no rows');

-- observe_reader calls every dashboard function -----------------------------------------
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc p
           WHERE p.pronamespace = 'monitoring'::regnamespace AND p.proname ~ '^_?dashboard_'
             AND NOT has_function_privilege('observe_reader', p.oid, 'EXECUTE')),
          NULL, 'observe_reader may execute every dashboard function');
SELECT is((SELECT array_agg(p.proname::text ORDER BY 1) FROM pg_proc p
           WHERE p.pronamespace = 'monitoring'::regnamespace AND p.proname ~ '^_?dashboard_' AND p.prosecdef),
          NULL, 'no dashboard function is SECURITY DEFINER');
SET LOCAL ROLE observe_reader;
SELECT lives_ok($$
    SELECT count(*) FROM monitoring.dashboard_error_rate(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_first_vs_repeat(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_top_errors(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_error_breakdown(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_recent_errors(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_issue_status(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_resolution_time(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_failed_access(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_requests(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_latency(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_request_heatmap(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_operations(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_operation_types(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_span_status(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_db_queries(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_users(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_user_errors(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_tenants(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_new_users(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_metric_rate(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_metric_gauge(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_metric_histogram(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_audit_events(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_audit_event_types(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_admin_actions(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_permission_changes(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_changes_by_actor(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_audit_lag();
    SELECT count(*) FROM monitoring.dashboard_compliance_status();
    SELECT count(*) FROM monitoring.dashboard_database_activity();
    SELECT count(*) FROM monitoring.dashboard_environments();
    SELECT count(*) FROM monitoring.dashboard_services();
    SELECT count(*) FROM monitoring.dashboard_cache_namespaces();
    SELECT count(*) FROM monitoring.dashboard_cache_activity(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_cache_size(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_cache_namespace_stats(now() - interval '1 day', now());
    SELECT count(*) FROM monitoring.dashboard_cache_summary(now() - interval '1 day', now());
$$, 'observe_reader runs every dashboard function');
SELECT results_eq($$SELECT rollback_pct >= 0, sessions_per_minute >= 0 FROM monitoring.dashboard_database_activity()$$,
                  $$VALUES (true, true)$$, 'database activity: one row for this database, as a reader');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
