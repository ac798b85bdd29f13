-- Operations: health() moving every check from ok to warning and critical by building the
-- state it looks for (missing partitions, rows in a default partition, a stale maintenance
-- run, queue backlog, dead notifications, failed deliveries, a stale dispatcher, fast
-- growth, a check that fails), partition_health, the thresholds in health_settings, the
-- ratings of the database-health views with plain numbers, the views' shapes and rows (with
-- and without pg_stat_statements), and what each role may see.
-- pg_cron, real dispatcher calls and real slow queries need commits: test/python/test_health.py.
BEGIN;
SELECT plan(145);

-- The status of one health() row (NULL when there is no such row).
CREATE FUNCTION pg_temp.health(p_check text) RETURNS text LANGUAGE sql AS $$
    SELECT h.status FROM monitoring.health() h WHERE h.check_name = p_check
$$;
CREATE FUNCTION pg_temp.observed(p_check text) RETURNS double precision LANGUAGE sql AS $$
    SELECT h.observed FROM monitoring.health() h WHERE h.check_name = p_check
$$;
-- Drops the newest children of a time-series table until p_keep are left ahead of the
-- current one; p_keep -1 drops the current one too.
CREATE FUNCTION pg_temp.keep_ahead(p_parent regclass, p_keep integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    child regclass;
BEGIN
    FOR child IN SELECT c.oid::regclass FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = p_parent AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
                 ORDER BY c.relname DESC
                 LIMIT (SELECT h.partitions_ahead - p_keep FROM monitoring.partition_health h
                        WHERE h.parent_table = p_parent::text) LOOP
        EXECUTE format('DROP TABLE %s', child);
    END LOOP;
END
$$;

-- Whether a statement is refused by a CHECK (23514).
CREATE FUNCTION pg_temp.refused(p_sql text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE p_sql;
    RETURN false;
EXCEPTION WHEN check_violation THEN
    RETURN true;
END
$$;

------------------------------------------------------------------------------------------
-- Shapes.
SELECT columns_are('monitoring', 'partition_health',
    ARRAY['parent_table', 'partition_interval', 'retention', 'premake', 'partitions', 'oldest_partition_start',
          'newest_partition_end', 'partitions_ahead', 'default_partition_rows', 'status'],
    'partition_health has the contract''s columns');
SELECT columns_are('monitoring', 'dispatcher_heartbeat',
    ARRAY['dispatcher', 'last_seen_at', 'last_sent', 'last_failed', 'last_dead', 'calls'],
    'dispatcher_heartbeat has the contract''s columns');
SELECT is((SELECT pg_get_function_result('monitoring.health()'::regprocedure)),
          'TABLE(check_name text, status text, detail text, observed double precision)',
          'health() returns the contract''s columns');
SELECT columns_are('monitoring', 'query_performance',
    ARRAY['queryid', 'query', 'username', 'calls', 'rows', 'total_exec_ms', 'mean_exec_ms', 'min_exec_ms',
          'max_exec_ms', 'stddev_exec_ms', 'shared_blks_hit', 'shared_blks_read', 'cache_hit_ratio', 'note'],
    'query_performance columns');
SELECT columns_are('monitoring', 'index_usage',
    ARRAY['schema_name', 'table_name', 'index_name', 'index_scans', 'tuples_read', 'tuples_fetched',
          'index_size_bytes', 'index_size', 'enforces_constraint', 'usage_category'],
    'index_usage columns');
SELECT columns_are('monitoring', 'table_stats',
    ARRAY['schema_name', 'table_name', 'seq_scan', 'seq_tup_read', 'idx_scan', 'live_tuples', 'dead_tuples',
          'dead_tuple_ratio', 'inserts', 'updates', 'deletes', 'hot_updates', 'modified_since_analyze',
          'last_vacuum', 'last_autovacuum', 'last_analyze', 'last_autoanalyze', 'vacuum_count',
          'autovacuum_count', 'analyze_count', 'autoanalyze_count', 'table_size_bytes', 'indexes_size_bytes',
          'total_size_bytes', 'total_size', 'bloat_status'],
    'table_stats columns');
SELECT columns_are('monitoring', 'function_performance',
    ARRAY['schema_name', 'function_name', 'function_signature', 'calls', 'total_ms', 'self_ms', 'mean_ms',
          'rating', 'note'],
    'function_performance columns');
SELECT columns_are('monitoring', 'connections',
    ARRAY['database', 'total', 'active', 'idle', 'idle_in_transaction', 'waiting_on_locks', 'max_idle_seconds',
          'max_idle_in_transaction_seconds', 'server_total', 'max_connections', 'server_usage_pct', 'pool_status'],
    'connections columns');
SELECT columns_are('monitoring', 'database_size',
    ARRAY['database', 'size_bytes', 'size', 'table_count', 'partition_count', 'index_count', 'function_count',
          'growth_bytes_per_hour'],
    'database_size columns');
SELECT columns_are('monitoring', 'slow_queries',
    ARRAY['pid', 'database', 'username', 'application_name', 'client_addr', 'query_start', 'duration_seconds',
          'severity', 'wait_event_type', 'wait_event', 'state', 'query'],
    'slow_queries columns');
SELECT columns_are('monitoring', 'cache_hit_ratio',
    ARRAY['scope', 'name', 'blocks_read', 'blocks_hit', 'hit_ratio_pct', 'target_pct', 'rating'],
    'cache_hit_ratio columns');
SELECT is(
    (SELECT array_agg(a.alias ORDER BY a.alias) FROM (VALUES
        ('monitoring_query_performance', 'query_performance'), ('monitoring_index_usage', 'index_usage'),
        ('monitoring_table_stats', 'table_stats'), ('monitoring_rpc_performance', 'function_performance'),
        ('monitoring_connections', 'connections'), ('monitoring_database_size', 'database_size'),
        ('monitoring_slow_queries', 'slow_queries'), ('monitoring_cache_hit_ratio', 'cache_hit_ratio')) a (alias, canonical)
     WHERE (SELECT array_agg(c.column_name::text || ':' || c.data_type ORDER BY c.ordinal_position)
            FROM information_schema.columns c WHERE c.table_schema = 'monitoring' AND c.table_name = a.alias)
         = (SELECT array_agg(c.column_name::text || ':' || c.data_type ORDER BY c.ordinal_position)
            FROM information_schema.columns c WHERE c.table_schema = 'monitoring' AND c.table_name = a.canonical)),
    ARRAY['monitoring_cache_hit_ratio', 'monitoring_connections', 'monitoring_database_size', 'monitoring_index_usage',
          'monitoring_query_performance', 'monitoring_rpc_performance', 'monitoring_slow_queries',
          'monitoring_table_stats'],
    'each seed-named alias has its canonical view''s columns');

------------------------------------------------------------------------------------------
-- A fresh install: partitions fine, nothing queued, maintenance never ran, no pg_cron here.
SELECT is((SELECT count(*)::int FROM monitoring.partition_health),
          (SELECT count(*)::int FROM monitoring.time_series_config), 'partition_health: a row per time-series table');
SELECT results_eq(
    $$SELECT parent_table, status, partitions_ahead, default_partition_rows::int FROM monitoring.partition_health
      ORDER BY parent_table$$,
    $$SELECT parent_table, 'ok', premake, 0 FROM monitoring.time_series_config ORDER BY parent_table$$,
    'after install every table has premake partitions ahead, an empty default and status ok');
SELECT ok((SELECT bool_and(oldest_partition_start < now() AND newest_partition_end > now() AND partitions > premake)
           FROM monitoring.partition_health), 'partitions span now()');
SELECT is((SELECT count(*)::int FROM monitoring.health() WHERE status NOT IN ('ok', 'warning', 'critical')), 0,
          'every status is ok, warning or critical');
SELECT is((SELECT count(*)::int FROM (SELECT check_name FROM monitoring.health() GROUP BY 1 HAVING count(*) > 1) d), 0,
          'check names are unique');
SELECT is((SELECT array_agg(DISTINCT split_part(check_name, ':', 1) ORDER BY split_part(check_name, ':', 1))
           FROM monitoring.health()),
          ARRAY['database_growth', 'dead_notifications', 'default_partition', 'dispatcher_heartbeat', 'error_queue_backlog',
                'failed_deliveries', 'failed_error_events', 'maintenance_last_run', 'maintenance_schedule',
                'notification_backlog', 'partitions_ahead'],
          'the checks of a database without pg_cron');
SELECT is((SELECT count(*)::int FROM monitoring.health() WHERE check_name LIKE 'partitions_ahead:%' AND status = 'ok'),
          (SELECT count(*)::int FROM monitoring.time_series_config), 'partitions_ahead: one ok row per table');
SELECT is(pg_temp.observed('partitions_ahead:monitoring.spans'), 4::double precision,
          'partitions_ahead observes how many partitions are ahead');
SELECT is(pg_temp.health('maintenance_last_run'), 'warning', 'maintenance_last_run: warning before any run');
SELECT matches((SELECT detail FROM monitoring.health() WHERE check_name = 'maintenance_schedule'),
               '^maintenance not scheduled: pg_cron is not installed in database .*cron\.schedule_in_database',
               'maintenance_schedule: without pg_cron, says so and how to schedule');
SELECT is(pg_temp.health('maintenance_schedule'), 'warning', 'maintenance_schedule: warning while nothing runs maintenance');
SELECT is(pg_temp.health('notification_backlog'), 'ok', 'notification_backlog: ok with an empty queue');
SELECT is(pg_temp.health('dispatcher_heartbeat'), 'ok', 'dispatcher_heartbeat: ok without enabled rules');

------------------------------------------------------------------------------------------
-- Maintenance: the size sample (its last task) marks a completed run.
SELECT is((SELECT array_agg(task ORDER BY task) FROM monitoring.run_maintenance()
           WHERE task IN ('sample_database_size', 'expire_dispatcher_heartbeats')),
          ARRAY['expire_dispatcher_heartbeats', 'sample_database_size'], 'run_maintenance() runs both new tasks');
SELECT is((SELECT count(*)::int FROM monitoring.database_size_history WHERE sampled_at = now()
                                                                         AND bytes > 1000000),
          1, 'it sampled the database size');
SELECT is(pg_temp.health('maintenance_last_run'), 'ok', 'maintenance_last_run: ok right after a run');
SELECT is(pg_temp.health('maintenance_schedule'), 'ok', 'maintenance_schedule: ok while another scheduler runs maintenance');
UPDATE monitoring.database_size_history SET sampled_at = now() - interval '20 minutes';
SELECT is(pg_temp.health('maintenance_last_run'), 'warning', 'maintenance_last_run: warning after 20 minutes');
SELECT is(pg_temp.health('maintenance_schedule'), 'warning', 'maintenance_schedule: warning again');
UPDATE monitoring.database_size_history SET sampled_at = now() - interval '2 hours';
SELECT is(pg_temp.health('maintenance_last_run'), 'critical', 'maintenance_last_run: critical after 2 hours');
SELECT ok(pg_temp.observed('maintenance_last_run') BETWEEN 7199 AND 7201, 'it observes the seconds since the run');
INSERT INTO monitoring.health_settings (maintenance_warning, maintenance_critical) VALUES ('1 hour', '3 hours');
SELECT is(pg_temp.health('maintenance_last_run'), 'warning', 'health_settings moves the thresholds');
DELETE FROM monitoring.health_settings;
-- expiry of old samples and heartbeats
INSERT INTO monitoring.database_size_history VALUES (now() - interval '31 days', 1), (now() - interval '29 days', 2);
INSERT INTO monitoring.dispatcher_heartbeat (dispatcher, last_seen_at) VALUES ('gone', now() - interval '8 days'),
                                                                             ('recent', now() - interval '6 days');
SELECT * FROM monitoring.run_maintenance();
SELECT is((SELECT array_agg(bytes ORDER BY sampled_at) FROM monitoring.database_size_history
           WHERE sampled_at < now() - interval '1 day'), ARRAY[2::bigint], 'size samples are kept 30 days');
SELECT is((SELECT array_agg(dispatcher) FROM monitoring.dispatcher_heartbeat), ARRAY['recent'],
          'heartbeats unseen for 7 days are forgotten');
DELETE FROM monitoring.dispatcher_heartbeat;
DELETE FROM monitoring.database_size_history;

------------------------------------------------------------------------------------------
-- Partitions premade ahead: drop them one by one.
SELECT pg_temp.keep_ahead('monitoring.spans', 2);
SELECT is(pg_temp.health('partitions_ahead:monitoring.spans'), 'ok', 'partitions_ahead: ok with 2 of 4 ahead');
SELECT pg_temp.keep_ahead('monitoring.spans', 1);
SELECT is(pg_temp.health('partitions_ahead:monitoring.spans'), 'warning', 'partitions_ahead: warning with 1 of 4 ahead');
SELECT is((SELECT status FROM monitoring.partition_health WHERE parent_table = 'monitoring.spans'), 'warning',
          'partition_health: warning too');
SELECT is(pg_temp.health('partitions_ahead:monitoring.metrics'), 'ok', 'other tables stay ok');
SELECT pg_temp.keep_ahead('monitoring.spans', 0);
SELECT is(pg_temp.health('partitions_ahead:monitoring.spans'), 'critical', 'partitions_ahead: critical with none ahead');
SELECT is((SELECT partitions_ahead FROM monitoring.partition_health WHERE parent_table = 'monitoring.spans'), 0,
          'partition_health counts 0 ahead');
SELECT pg_temp.keep_ahead('monitoring.spans', -1);
SELECT matches((SELECT detail FROM monitoring.health() WHERE check_name = 'partitions_ahead:monitoring.spans'),
               '^no partition covers now\(\)', 'partitions_ahead: critical, and says so, without a current partition');
SELECT * FROM monitoring.run_maintenance();
SELECT is(pg_temp.health('partitions_ahead:monitoring.spans'), 'ok', 'run_maintenance() premakes them again: ok');

------------------------------------------------------------------------------------------
-- Rows in a default partition. The guard would repair these times: replica mode skips it,
-- as a restore or a logical replica would.
SET LOCAL session_replication_role = replica;
INSERT INTO monitoring.metrics_default (id, metric_name, metric_type, metric_value, "timestamp")
VALUES (-1, 'health.probe', 'gauge', 1, now() + interval '30 days');
SET LOCAL session_replication_role = origin;
SELECT is(pg_temp.health('default_partition:monitoring.metrics'), 'warning', 'default_partition: warning with one row');
SELECT is(pg_temp.observed('default_partition:monitoring.metrics'), 1::double precision, 'it observes the row count');
SELECT is((SELECT (default_partition_rows, status)::text FROM monitoring.partition_health
           WHERE parent_table = 'monitoring.metrics'), '(1,warning)', 'partition_health: the exact count, warning');
INSERT INTO monitoring.health_settings (default_rows_critical) VALUES (1);
SET LOCAL session_replication_role = replica;
INSERT INTO monitoring.metrics_default (id, metric_name, metric_type, metric_value, "timestamp")
VALUES (-2, 'health.probe', 'gauge', 1, now() + interval '31 days');
SET LOCAL session_replication_role = origin;
SELECT is(pg_temp.health('default_partition:monitoring.metrics'), 'critical',
          'default_partition: critical above default_rows_critical');
DELETE FROM monitoring.health_settings;
SELECT is(pg_temp.health('default_partition:monitoring.metrics'), 'warning', '2 rows are a warning by default');
SET LOCAL session_replication_role = replica;
INSERT INTO monitoring.metrics_default (id, metric_name, metric_type, metric_value, "timestamp")
VALUES (-3, 'health.probe', 'gauge', 1, '2001-01-01');
SET LOCAL session_replication_role = origin;
SELECT is(pg_temp.health('default_partition:monitoring.metrics'), 'critical',
          'default_partition: critical when a row is older than an hour');
SELECT is((SELECT status FROM monitoring.partition_health WHERE parent_table = 'monitoring.metrics'), 'critical',
          'partition_health: critical too');
DELETE FROM monitoring.metrics_default;

------------------------------------------------------------------------------------------
-- The notification queue, the delivery log and the dispatcher.
INSERT INTO monitoring.tb_error_notification_config (description, error_type, channel_config)
VALUES ('health probe', 'HealthProbe', '{"url": "http://127.0.0.1:9/never"}');
SELECT monitoring.capture_error('{"exception_type": "HealthProbe", "message": "probe", "fingerprint": ["health-probe"]}');
SELECT is((SELECT count(*)::int FROM monitoring.notification_queue WHERE status = 'pending'), 1, 'one notification queued');
SELECT is(pg_temp.health('notification_backlog'), 'ok', 'notification_backlog: ok when just due');
SELECT matches((SELECT detail FROM monitoring.health() WHERE check_name = 'notification_backlog'),
               '^1 notifications due', 'it counts the due messages');
UPDATE monitoring.notification_queue SET next_attempt_at = now() - interval '10 minutes';
SELECT is(pg_temp.health('notification_backlog'), 'warning', 'notification_backlog: warning when due for 10 minutes');
SELECT ok(pg_temp.observed('notification_backlog') BETWEEN 599 AND 601, 'it observes the seconds waited');
UPDATE monitoring.notification_queue SET next_attempt_at = now() - interval '40 minutes';
SELECT is(pg_temp.health('notification_backlog'), 'critical', 'notification_backlog: critical after 40 minutes');
UPDATE monitoring.notification_queue SET next_attempt_at = now() + interval '40 minutes';
SELECT is(pg_temp.health('notification_backlog'), 'ok', 'a message waiting for its retry is not a backlog');
SELECT is(pg_temp.health('dead_notifications'), 'ok', 'dead_notifications: ok');
UPDATE monitoring.notification_queue SET status = 'dead', last_error = 'HTTP 500';
SELECT is(pg_temp.health('dead_notifications'), 'warning', 'dead_notifications: warning with a dead message');
SELECT is(pg_temp.observed('dead_notifications'), 1::double precision, 'it observes how many');

-- delivery log: 2 sent and 1 failed in the last hour, one failure two hours ago
INSERT INTO monitoring.tb_error_notification_log (config_id, error_id, sent_at, channel_type, status, error_message)
SELECT q.config_id, q.error_id, now() - interval '2 hours', 'webhook', 'failed', 'old failure'
FROM monitoring.notification_queue q;
SELECT is(pg_temp.health('failed_deliveries'), 'ok', 'failed_deliveries: a failure older than an hour does not count');
INSERT INTO monitoring.tb_error_notification_log (config_id, error_id, sent_at, channel_type, status, error_message)
SELECT q.config_id, q.error_id, now() - interval '1 minute', 'webhook', s.status, s.error_message
FROM monitoring.notification_queue q,
     (VALUES ('sent', NULL), ('sent', NULL), ('failed', 'HTTP 503 from receiver')) s (status, error_message);
SELECT is(pg_temp.health('failed_deliveries'), 'warning', 'failed_deliveries: warning with fewer failed than sent');
SELECT matches((SELECT detail FROM monitoring.health() WHERE check_name = 'failed_deliveries'),
               'HTTP 503 from receiver', 'it shows the last failure');
INSERT INTO monitoring.tb_error_notification_log (config_id, error_id, sent_at, channel_type, status, error_message)
SELECT q.config_id, q.error_id, now() - interval '1 minute', 'webhook', 'failed', 'HTTP 503'
FROM monitoring.notification_queue q, generate_series(1, 2);
SELECT is(pg_temp.health('failed_deliveries'), 'critical', 'failed_deliveries: critical with more failed than sent');
SELECT is(pg_temp.observed('failed_deliveries'), 3::double precision, 'it observes the failures of the last hour');

SELECT is(pg_temp.health('dispatcher_heartbeat'), 'warning', 'dispatcher_heartbeat: warning with a rule and no dispatcher');
INSERT INTO monitoring.dispatcher_heartbeat (dispatcher, last_seen_at) VALUES ('worker@test', now());
SELECT is(pg_temp.health('dispatcher_heartbeat'), 'ok', 'dispatcher_heartbeat: ok just after a call');
UPDATE monitoring.dispatcher_heartbeat SET last_seen_at = now() - interval '10 minutes';
SELECT is(pg_temp.health('dispatcher_heartbeat'), 'warning', 'dispatcher_heartbeat: warning after 10 minutes');
UPDATE monitoring.dispatcher_heartbeat SET last_seen_at = now() - interval '1 hour';
SELECT is(pg_temp.health('dispatcher_heartbeat'), 'critical', 'dispatcher_heartbeat: critical after an hour');
INSERT INTO monitoring.dispatcher_heartbeat (dispatcher, last_seen_at) VALUES ('cron', now() - interval '1 minute');
SELECT is(pg_temp.health('dispatcher_heartbeat'), 'ok', 'the newest dispatcher counts');
UPDATE monitoring.tb_error_notification_config SET enabled = false;
UPDATE monitoring.dispatcher_heartbeat SET last_seen_at = now() - interval '1 day';
SELECT is(pg_temp.health('dispatcher_heartbeat'), 'ok', 'no dispatcher is needed without enabled rules');

------------------------------------------------------------------------------------------
-- Database growth, from the size samples.
DELETE FROM monitoring.database_size_history;
SELECT is(pg_temp.health('database_growth'), 'ok', 'database_growth: ok without history');
INSERT INTO monitoring.database_size_history VALUES (now() - interval '30 minutes', 1000000000), (now(), 2000000000);
SELECT is(pg_temp.observed('database_growth'), NULL, 'less than an hour of samples measures nothing');
DELETE FROM monitoring.database_size_history;
INSERT INTO monitoring.database_size_history VALUES (now() - interval '20 hours', 1000000000),
                                                    (now() - interval '10 hours', 1050000000), (now(), 1100000000);
SELECT is(pg_temp.observed('database_growth'), 5000000::double precision, 'growth per hour over the samples');
SELECT is(pg_temp.health('database_growth'), 'ok', 'database_growth: ok at 5 MB an hour');
SELECT is((SELECT growth_bytes_per_hour FROM monitoring.database_size), 5000000::double precision,
          'database_size shows the same growth');
UPDATE monitoring.database_size_history SET bytes = 1500000000 WHERE sampled_at = now();
SELECT is(pg_temp.health('database_growth'), 'warning', 'database_growth: warning at 25 MB an hour');
INSERT INTO monitoring.health_settings (database_growth_warning) VALUES (30000000);
SELECT is(pg_temp.health('database_growth'), 'ok', 'a higher database_growth_warning makes it ok');
DELETE FROM monitoring.health_settings;

------------------------------------------------------------------------------------------
-- A failing check becomes a critical row; the others still answer.
ALTER TABLE monitoring.dispatcher_heartbeat RENAME TO dispatcher_heartbeat_moved;
SELECT is(pg_temp.health('dispatcher'), 'critical', 'a check that raises is a critical row named after it');
SELECT matches((SELECT detail FROM monitoring.health() WHERE check_name = 'dispatcher'),
               'the check failed: .*dispatcher_heartbeat', 'with the error text');
SELECT is(pg_temp.health('notification_backlog'), 'ok', 'the other checks still run');
ALTER TABLE monitoring.dispatcher_heartbeat_moved RENAME TO dispatcher_heartbeat;

------------------------------------------------------------------------------------------
-- Bad input: the thresholds are checked, hostile pg_cron schedules are daily.
SELECT throws_ok($$INSERT INTO monitoring.health_settings (queue_lag_warning, queue_lag_critical) VALUES ('1 hour', '1 minute')$$,
                 '23514', NULL, 'a warning threshold above its critical one is refused');
SELECT throws_ok($$INSERT INTO monitoring.health_settings (database_growth_warning) VALUES (-1)$$,
                 '23514', NULL, 'a negative threshold is refused');
SELECT throws_ok($$INSERT INTO monitoring.health_settings (settings_id) VALUES (false)$$,
                 '23514', NULL, 'health_settings has one row');
-- a NULL threshold is its default: the warning is compared with the critical value in effect
SELECT throws_ok($$INSERT INTO monitoring.health_settings (queue_lag_critical) VALUES ('-1 hour')$$,
                 '23514', 'health_settings: queue_lag_warning (00:05:00) is above queue_lag_critical (-01:00:00)',
                 'a negative critical threshold is refused (below the default warning)');
SELECT throws_ok($$INSERT INTO monitoring.health_settings (queue_lag_critical) VALUES ('1 minute')$$,
                 '23514', 'health_settings: queue_lag_warning (00:05:00) is above queue_lag_critical (00:01:00)',
                 'a critical threshold below the default warning is refused');
SELECT throws_ok($$INSERT INTO monitoring.health_settings (heartbeat_warning) VALUES ('1 hour')$$,
                 '23514', 'health_settings: heartbeat_warning (01:00:00) is above heartbeat_critical (00:30:00)',
                 'a warning threshold above the default critical is refused');
SELECT throws_ok($$INSERT INTO monitoring.health_settings (maintenance_warning, maintenance_critical) VALUES ('2 hours', NULL)$$,
                 '23514', NULL, 'maintenance_warning above the default maintenance_critical is refused');
INSERT INTO monitoring.health_settings (maintenance_warning, maintenance_critical) VALUES ('2 hours', '3 hours');
SELECT throws_ok($$UPDATE monitoring.health_settings SET maintenance_critical = NULL$$,
                 '23514', NULL, 'an UPDATE back to a default below the warning is refused too');
SELECT lives_ok($$UPDATE monitoring.health_settings SET maintenance_warning = NULL, maintenance_critical = NULL$$,
                'back to both defaults is fine');
DELETE FROM monitoring.health_settings;
-- every critical threshold must be positive on its own (its CHECK, without the trigger's help)
ALTER TABLE monitoring.health_settings DISABLE TRIGGER health_settings_validate;
SELECT is((SELECT array_agg(c ORDER BY c) FROM unnest(ARRAY['queue_lag_critical', 'heartbeat_critical',
                                                                'maintenance_critical', 'default_row_age_critical']) c
           WHERE NOT pg_temp.refused(format('INSERT INTO monitoring.health_settings (%I) VALUES (''-1 hour'')', c))
              OR NOT pg_temp.refused(format('INSERT INTO monitoring.health_settings (%I) VALUES (''0'')', c))),
          NULL, 'a zero or negative critical interval is refused by a CHECK');
SELECT ok(pg_temp.refused('INSERT INTO monitoring.health_settings (default_rows_critical) VALUES (0)'),
          'a zero default_rows_critical is refused');
ALTER TABLE monitoring.health_settings ENABLE TRIGGER health_settings_validate;
SELECT is((SELECT count(*)::int FROM monitoring.health_settings), 0, 'nothing refused was stored');
SELECT throws_ok($$INSERT INTO monitoring.database_size_history VALUES (now(), -5)$$, '23514', NULL,
                 'a negative size is refused');
SELECT is(ARRAY[monitoring._cron_interval('* * * * *'), monitoring._cron_interval('*/5 * * * *'),
                monitoring._cron_interval(' */15  *  * * * '), monitoring._cron_interval('30 seconds'),
                monitoring._cron_interval('0 3 * * *'), monitoring._cron_interval('*/0 * * * *'),
                monitoring._cron_interval('*/99999999999999999999 * * * *'), monitoring._cron_interval(repeat('*/5 ', 100000)),
                monitoring._cron_interval(E'*/5 * * * *\n; DROP TABLE x'), monitoring._cron_interval(NULL)],
          ARRAY[interval '1 minute', '5 minutes', '15 minutes', '30 seconds', '1 day', '1 day', '1 day', '1 day',
                '1 day', '1 day'],
          '_cron_interval: every minute, every N minutes, N seconds; anything else (zero, huge, hostile) daily');

------------------------------------------------------------------------------------------
-- The ratings of seed 003, at their edges.
SELECT is(ARRAY[monitoring._index_usage_category(0), monitoring._index_usage_category(1),
                monitoring._index_usage_category(99), monitoring._index_usage_category(100)],
          ARRAY['NEVER_USED', 'RARELY_USED', 'RARELY_USED', 'FREQUENTLY_USED'], 'index usage categories');
SELECT is(ARRAY[monitoring._bloat_status(10, 49), monitoring._bloat_status(200, 50), monitoring._bloat_status(199, 50),
                monitoring._bloat_status(117, 50), monitoring._bloat_status(116, 50), monitoring._bloat_status(0, 0)],
          ARRAY['OK', 'OK', 'WARNING', 'WARNING', 'CRITICAL', 'OK'],
          'bloat: WARNING above 20 %, CRITICAL above 30 % dead, OK under 50 dead tuples');
SELECT is(ARRAY[monitoring._function_rating(0), monitoring._function_rating(49.9), monitoring._function_rating(50),
                monitoring._function_rating(99.9), monitoring._function_rating(100), monitoring._function_rating(199.9),
                monitoring._function_rating(200), monitoring._function_rating(NULL)],
          ARRAY['EXCELLENT', 'EXCELLENT', 'GOOD', 'GOOD', 'ACCEPTABLE', 'ACCEPTABLE', 'SLOW', NULL],
          'function ratings: EXCELLENT < 50 ms, GOOD < 100, ACCEPTABLE < 200, SLOW');
SELECT is(ARRAY[monitoring._connection_pool_status(80, 10, 1, 100), monitoring._connection_pool_status(79, 40, 31, 100),
                monitoring._connection_pool_status(79, 40, 30, 100), monitoring._connection_pool_status(20, 20, 20, 100),
                monitoring._connection_pool_status(26, 26, 26, 100), monitoring._connection_pool_status(1, 1, 0, 0)],
          ARRAY['TOO_MANY', 'UNDERUTILIZED', 'HEALTHY', 'HEALTHY', 'UNDERUTILIZED', NULL],
          'pool status: TOO_MANY at 80 % of max_connections, UNDERUTILIZED when mostly idle and holding 25 %');
SELECT is(ARRAY[monitoring._slow_query_severity(0.5), monitoring._slow_query_severity(1),
                monitoring._slow_query_severity(1.01), monitoring._slow_query_severity(10),
                monitoring._slow_query_severity(10.5), monitoring._slow_query_severity(60),
                monitoring._slow_query_severity(61)],
          ARRAY['NORMAL', 'NORMAL', 'SLOW', 'SLOW', 'WARNING', 'WARNING', 'CRITICAL'],
          'slow query severities: SLOW > 1 s, WARNING > 10 s, CRITICAL > 60 s');
SELECT is(ARRAY[monitoring._cache_hit_rating(99, 95), monitoring._cache_hit_rating(98.99, 95),
                monitoring._cache_hit_rating(95, 95), monitoring._cache_hit_rating(94.99, 95),
                monitoring._cache_hit_rating(98, 98), monitoring._cache_hit_rating(97.99, 98),
                monitoring._cache_hit_rating(NULL, 98)],
          ARRAY['EXCELLENT', 'GOOD', 'GOOD', 'NEEDS_TUNING', 'GOOD', 'NEEDS_TUNING', NULL],
          'cache hit ratings: EXCELLENT from 99 %, GOOD from the target, else NEEDS_TUNING');

------------------------------------------------------------------------------------------
-- The views' rows.
SELECT results_eq(
    $$SELECT queryid IS NULL, note ~ '^pg_stat_statements is not installed in database .*CREATE EXTENSION pg_stat_statements'
      FROM monitoring.query_performance$$,
    $$VALUES (true, true)$$,
    'query_performance: without the extension, one row with a note saying what to run');
CREATE EXTENSION pg_stat_statements;
SELECT 'a statement for pg_stat_statements';
SELECT ok((SELECT count(*) BETWEEN 1 AND 100 AND bool_and(note IS NULL AND calls > 0 AND query IS NOT NULL)
           FROM monitoring.query_performance), 'query_performance: with the extension, up to 100 statements, no note');
SELECT ok((SELECT bool_and(total_exec_ms >= mean_exec_ms AND max_exec_ms >= min_exec_ms
                           AND (cache_hit_ratio IS NULL OR cache_hit_ratio BETWEEN 0 AND 100))
           FROM monitoring.query_performance), 'query_performance: consistent times and cache ratios');
SELECT ok((SELECT array_agg(total_exec_ms) = array_agg(total_exec_ms ORDER BY total_exec_ms DESC)
           FROM monitoring.query_performance), 'query_performance: by total time, largest first');
SELECT ok((SELECT count(*) > 0 AND bool_and(usage_category IN ('NEVER_USED', 'RARELY_USED', 'FREQUENTLY_USED'))
           FROM monitoring.index_usage WHERE schema_name = 'monitoring'), 'index_usage: every index of pg_observe, categorised');
SELECT ok((SELECT enforces_constraint FROM monitoring.index_usage WHERE index_name = 'dispatcher_heartbeat_pkey'),
          'index_usage: a primary key enforces a constraint');
SELECT ok((SELECT count(*) > 0 AND bool_and(bloat_status IN ('OK', 'WARNING', 'CRITICAL') AND total_size_bytes >= table_size_bytes)
           FROM monitoring.table_stats WHERE schema_name = 'monitoring'), 'table_stats: pg_observe''s tables, with sizes');
SELECT is((SELECT count(*)::int FROM monitoring.table_stats WHERE table_name = 'spans'), 0,
          'table_stats: partitioned parents are left out (their partitions are there)');
SET LOCAL track_functions = 'none';
SELECT ok((SELECT note ~ '^track_functions is none' FROM monitoring.function_performance WHERE function_name IS NULL),
          'function_performance: a note row while track_functions is none');
SET LOCAL track_functions = 'pl';
SELECT is((SELECT count(*)::int FROM monitoring.function_performance WHERE note IS NOT NULL), 0,
          'function_performance: no note once functions are timed');
SELECT ok((SELECT total >= 1 AND active >= 1 AND pool_status IN ('HEALTHY', 'TOO_MANY', 'UNDERUTILIZED')
                  AND max_connections = current_setting('max_connections')::int AND server_total >= total
           FROM monitoring.connections WHERE database = current_database()), 'connections: this session is counted');
-- within 5%: autovacuum may add a visibility map or free space map between the two readings
SELECT ok((SELECT abs(size_bytes - pg_database_size(current_database())) <= pg_database_size(current_database()) / 20
                  AND table_count > 10 AND partition_count > 10
                  AND index_count > 10 AND function_count > 10
           FROM monitoring.database_size), 'database_size: one row, size and counts');
SELECT is((SELECT count(*)::int FROM monitoring.slow_queries WHERE pid = pg_backend_pid()), 0,
          'slow_queries: leaves out the session reading it');
SELECT ok((SELECT count(*) = 1 AND bool_and(hit_ratio_pct BETWEEN 0 AND 100 AND target_pct = 95)
           FROM monitoring.cache_hit_ratio WHERE scope = 'database' AND name = current_database()),
          'cache_hit_ratio: one database row, target 95');
SELECT ok((SELECT bool_and(target_pct = 98 AND blocks_read + blocks_hit > 0) FROM monitoring.cache_hit_ratio
           WHERE scope = 'table'), 'cache_hit_ratio: table rows, target 98, only tables read');

------------------------------------------------------------------------------------------
-- After a restore the sequences lag behind the ids stored: resync_sequences() moves them on.
SELECT setval('monitoring.error_activity_activity_id_seq', 1, false);
SELECT ok((SELECT last_value >= (SELECT max(activity_id) FROM monitoring.error_activity)
           FROM monitoring.resync_sequences() WHERE sequence_name = 'monitoring.error_activity_activity_id_seq'),
          'resync_sequences() moves a sequence past the largest id stored');
SELECT lives_ok($$SELECT monitoring.capture_error('{"exception_type": "AfterResync", "message": "m", "fingerprint": ["resync"]}')$$,
                'a capture making a group (an error_activity row) works again');
SELECT is((SELECT count(*)::int FROM monitoring.resync_sequences() WHERE table_name = 'monitoring.notification_queue'), 1,
          'it covers every identity column of pg_observe');

------------------------------------------------------------------------------------------
-- time_series_config is admin-writable, and health() reads as its owner: a row naming a
-- table that is not pg_observe's, or a column that is not a time, is reported, never read.
CREATE SCHEMA health_probe_app;
CREATE TABLE health_probe_app.secrets (pw text, at timestamptz) PARTITION BY LIST (pw);
CREATE TABLE health_probe_app.secrets_default PARTITION OF health_probe_app.secrets DEFAULT;
INSERT INTO health_probe_app.secrets VALUES ('hunter2', now());
GRANT USAGE ON SCHEMA health_probe_app TO observe_admin;
SET LOCAL ROLE observe_admin;
INSERT INTO monitoring.time_series_config (parent_table, control_column, partition_interval) VALUES
    ('health_probe_app.secrets', 'pw', '1 day'),             -- the reviewer's leak: min(pw)::timestamptz
    ('health_probe_app.secrets_default', 'at', '1 day'),     -- a time column, still not pg_observe's
    ('monitoring.tb_error_log', 'title', '1 day'),           -- pg_observe's, not partitioned, text column
    ('monitoring.spans_default', 'start_time', '1 day'),     -- a partition, not a parent
    (E'monitoring.x''); SELECT pg_sleep(60); --\n' || repeat('y', 10000), E'a"b\'c', '1 day');
RESET ROLE;
SET LOCAL ROLE observe_reader;
SELECT is((SELECT count(*)::int FROM monitoring.health() WHERE detail LIKE '%hunter2%'), 0,
          'reader: health() does not show the value of another table''s row');
SELECT is((SELECT count(*)::int FROM monitoring._partition_health() h WHERE h.problem LIKE '%hunter2%'), 0,
          'reader: nor does _partition_health()');
SELECT results_eq(
    $$SELECT split_part(check_name, ':', 1), status, detail LIKE 'not checked: %', observed
      FROM monitoring.health() WHERE check_name LIKE '%:health_probe_app.secrets' ORDER BY 1$$,
    $$VALUES ('default_partition', 'warning', true, NULL::double precision),
             ('partitions_ahead', 'warning', true, NULL)$$,
    'reader: the foreign table is a warning naming it, left unread');
SELECT is((SELECT array_agg(parent_table ORDER BY parent_table) FROM monitoring.partition_health
           WHERE status = 'warning' AND partitions IS NULL AND default_partition_rows IS NULL),
          (SELECT array_agg(parent_table ORDER BY parent_table) FROM monitoring.time_series_config
           WHERE created_at = now()),
          'partition_health: every such row is a warning without figures');
SELECT is((SELECT count(*)::int FROM monitoring.health()
           WHERE check_name LIKE 'partitions_ahead:monitoring.%' AND status = 'ok'
             AND detail LIKE '% partitions premade ahead, % in all'),
          (SELECT count(*)::int FROM monitoring.time_series_config WHERE created_at < now()),
          'the tables of pg_observe are still checked, one row each');
SELECT is((SELECT count(*)::int FROM monitoring.health() WHERE check_name = 'partitions'), 0,
          'no bad row collapses the partition checks into one failed row');
SELECT is(pg_temp.health('default_partition:monitoring.metrics'), 'ok', 'default_partition: still checked per table');
RESET ROLE;
-- a time column of a table of pg_observe: read (count and oldest time only)
UPDATE monitoring.time_series_config SET control_column = 'end_time' WHERE parent_table = 'monitoring.spans';
SELECT is(pg_temp.health('default_partition:monitoring.spans'), 'ok', 'another time column of a table of pg_observe is read');
UPDATE monitoring.time_series_config SET control_column = 'start_time' WHERE parent_table = 'monitoring.spans';
DELETE FROM monitoring.time_series_config WHERE created_at = now();
DROP TABLE health_probe_app.secrets;
DROP SCHEMA health_probe_app;

------------------------------------------------------------------------------------------
-- Roles: readers see everything here but secrets; writers and dispatchers see none of it.
SET LOCAL ROLE observe_reader;
SELECT lives_ok($$SELECT * FROM monitoring.health()$$, 'reader: health()');
SELECT lives_ok($$SELECT * FROM monitoring.partition_health$$, 'reader: partition_health (default partition counts)');
SELECT lives_ok(
    $$SELECT (SELECT count(*) FROM monitoring.query_performance) + (SELECT count(*) FROM monitoring.index_usage)
           + (SELECT count(*) FROM monitoring.table_stats) + (SELECT count(*) FROM monitoring.function_performance)
           + (SELECT count(*) FROM monitoring.connections) + (SELECT count(*) FROM monitoring.database_size)
           + (SELECT count(*) FROM monitoring.slow_queries) + (SELECT count(*) FROM monitoring.cache_hit_ratio)$$,
    'reader: the eight views');
SELECT lives_ok(
    $$SELECT (SELECT count(*) FROM monitoring.monitoring_query_performance) + (SELECT count(*) FROM monitoring.monitoring_index_usage)
           + (SELECT count(*) FROM monitoring.monitoring_table_stats) + (SELECT count(*) FROM monitoring.monitoring_rpc_performance)
           + (SELECT count(*) FROM monitoring.monitoring_connections) + (SELECT count(*) FROM monitoring.monitoring_database_size)
           + (SELECT count(*) FROM monitoring.monitoring_slow_queries) + (SELECT count(*) FROM monitoring.monitoring_cache_hit_ratio)
           + (SELECT count(*) FROM monitoring.dispatcher_heartbeat) + (SELECT count(*) FROM monitoring.database_size_history)
           + (SELECT count(*) FROM monitoring.health_settings)$$,
    'reader: the seed-named aliases and the tables of health()');
SELECT is((SELECT count(*)::int FROM monitoring.query_performance WHERE query = '<insufficient privilege>'), 0,
          'reader: pg_monitor shows every statement''s text');
SELECT is((SELECT count(*)::int FROM monitoring.health() WHERE detail LIKE 'the check failed%'), 0,
          'reader: every check of health() works for a reader');
SELECT throws_ok($$SELECT settings FROM monitoring.notification_channel$$, '42501', NULL,
                 'reader: channel secrets stay unreadable');
SELECT throws_ok($$SELECT channel_config FROM monitoring.tb_error_notification_config$$, '42501', NULL,
                 'reader: rule secrets stay unreadable');
SELECT throws_ok($$INSERT INTO monitoring.health_settings (database_growth_warning) VALUES (1)$$, '42501', NULL,
                 'reader: cannot change the thresholds');
SELECT throws_ok($$SELECT monitoring._health_queue()$$, '42501', NULL,
                 'reader: the checks run through health() only');
RESET ROLE;
SET LOCAL ROLE observe_writer;
SELECT throws_ok($$SELECT * FROM monitoring.health()$$, '42501', NULL, 'writer: no health()');
SELECT throws_ok($$SELECT * FROM monitoring.partition_health$$, '42501', NULL, 'writer: no partition_health');
SELECT throws_ok($$SELECT * FROM monitoring.connections$$, '42501', NULL, 'writer: no database-health views');
RESET ROLE;
SET LOCAL ROLE observe_dispatcher;
SELECT throws_ok($$SELECT * FROM monitoring.health()$$, '42501', NULL, 'dispatcher: no health()');
SELECT lives_ok($$INSERT INTO monitoring.dispatcher_heartbeat (dispatcher) VALUES ('role probe')
                  ON CONFLICT ON CONSTRAINT dispatcher_heartbeat_pkey DO UPDATE SET calls = dispatcher_heartbeat.calls + 1$$,
                'dispatcher: may leave its heartbeat');
RESET ROLE;
SET LOCAL ROLE observe_admin;
SELECT lives_ok($$INSERT INTO monitoring.health_settings (database_growth_warning) VALUES (1)$$, 'admin: sets thresholds');
SELECT lives_ok($$SELECT * FROM monitoring.health()$$, 'admin: health()');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
