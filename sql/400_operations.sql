-- Operations: is pg_observe itself healthy (health(), partition_health), and how is the
-- database it lives in doing (the eight database-health views of seed 003, each with the
-- seed's name as an alias). docs/operations.md documents every column and threshold.

------------------------------------------------------------------------------------------
-- State health() reads besides the tables of the other capabilities.

-- Written by every dispatch_notifications() call (sql/include/notify_delivery.sql).
CREATE TABLE monitoring.dispatcher_heartbeat (
    dispatcher    text        PRIMARY KEY,
    last_seen_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_sent     integer     NOT NULL DEFAULT 0,
    last_failed   integer     NOT NULL DEFAULT 0,
    last_dead     integer     NOT NULL DEFAULT 0,
    calls         bigint      NOT NULL DEFAULT 1
);
COMMENT ON TABLE monitoring.dispatcher_heartbeat IS
    'Last call of each notification dispatcher (worker or pg_cron backstop), for health(); rows unseen for 7 days are removed by maintenance';
COMMENT ON COLUMN monitoring.dispatcher_heartbeat.dispatcher IS
    'The p_dispatcher label (the worker''s --name), else the calling role (the pg_cron backstop); at most 200 characters';
COMMENT ON COLUMN monitoring.dispatcher_heartbeat.last_sent IS 'Messages sent by the last call (last_failed, last_dead likewise)';
COMMENT ON COLUMN monitoring.dispatcher_heartbeat.calls IS 'Calls since the row was made';

-- The database's size, sampled by every run_maintenance() (task sample_database_size, the
-- last task): the growth health() and database_size report, and the time of the last
-- complete maintenance run. Small (one row per run, 30 days), so not partitioned.
CREATE TABLE monitoring.database_size_history (
    sampled_at  timestamptz PRIMARY KEY DEFAULT pg_catalog.now(),
    bytes       bigint      NOT NULL,
    CONSTRAINT database_size_history_bytes_positive CHECK (bytes >= 0)
);
COMMENT ON TABLE monitoring.database_size_history IS
    'pg_database_size() at every run_maintenance(), kept 30 days: database growth, and when maintenance last completed';
SELECT pg_catalog.pg_extension_config_dump('monitoring.database_size_history', '');

-- Thresholds of health(): one optional row; a NULL (or no row) means the default, which
-- lives in _health_thresholds() only. Read-only at read time, so health() works on a standby.
CREATE TABLE monitoring.health_settings (
    settings_id               boolean  PRIMARY KEY DEFAULT true,
    database_growth_warning   bigint,
    queue_lag_warning         interval,
    queue_lag_critical        interval,
    heartbeat_warning         interval,
    heartbeat_critical        interval,
    default_rows_critical     bigint,
    default_row_age_critical  interval,
    maintenance_warning       interval,
    maintenance_critical      interval,
    CONSTRAINT health_settings_one_row CHECK (settings_id),
    -- one CHECK per column, so that the error names the column refused
    CONSTRAINT health_settings_database_growth_warning_positive CHECK (database_growth_warning > 0),
    CONSTRAINT health_settings_queue_lag_warning_positive CHECK (queue_lag_warning > interval '0'),
    CONSTRAINT health_settings_queue_lag_critical_positive CHECK (queue_lag_critical > interval '0'),
    CONSTRAINT health_settings_heartbeat_warning_positive CHECK (heartbeat_warning > interval '0'),
    CONSTRAINT health_settings_heartbeat_critical_positive CHECK (heartbeat_critical > interval '0'),
    CONSTRAINT health_settings_default_rows_critical_positive CHECK (default_rows_critical > 0),
    CONSTRAINT health_settings_default_row_age_critical_positive CHECK (default_row_age_critical > interval '0'),
    CONSTRAINT health_settings_maintenance_warning_positive CHECK (maintenance_warning > interval '0'),
    CONSTRAINT health_settings_maintenance_critical_positive CHECK (maintenance_critical > interval '0')
    -- a warning above its critical threshold: trigger health_settings_validate (the defaults count)
);
COMMENT ON TABLE monitoring.health_settings IS
    'Overrides of health()''s thresholds (one row, every column optional: NULL keeps the default of _health_thresholds())';
COMMENT ON COLUMN monitoring.health_settings.database_growth_warning IS 'database_growth: warning above this many bytes per hour (default 10 MB)';
COMMENT ON COLUMN monitoring.health_settings.queue_lag_warning IS
    'notification_backlog: warning when a due message has waited longer (default 5 minutes; critical: queue_lag_critical, 30 minutes)';
COMMENT ON COLUMN monitoring.health_settings.heartbeat_warning IS
    'dispatcher_heartbeat: warning when no dispatcher ran for longer (default 5 minutes; critical: heartbeat_critical, 30 minutes)';
COMMENT ON COLUMN monitoring.health_settings.default_rows_critical IS
    'default_partition: critical above this many rows (default 10000; any row is a warning)';
COMMENT ON COLUMN monitoring.health_settings.default_row_age_critical IS
    'default_partition: critical when a row''s time is older than this (default 1 hour: maintenance should have moved it)';
COMMENT ON COLUMN monitoring.health_settings.maintenance_warning IS
    'maintenance_last_run: warning when run_maintenance() last completed longer ago (default 15 minutes; critical: maintenance_critical, 1 hour)';
SELECT pg_catalog.pg_extension_config_dump('monitoring.health_settings', '');

-- @include sql/include/operations_health.sql

CREATE TRIGGER health_settings_validate
    BEFORE INSERT OR UPDATE ON monitoring.health_settings
    FOR EACH ROW EXECUTE FUNCTION monitoring._health_settings_validate();
COMMENT ON TRIGGER health_settings_validate ON monitoring.health_settings IS
    'Refuses a warning threshold above its critical one, a NULL read as its default';

-- One row per time-series table, the shape other capabilities (Prometheus, dashboards) read.
CREATE VIEW monitoring.partition_health AS
SELECT h.parent_table, h.partition_interval, h.retention, h.premake, h.partitions, h.oldest_partition_start,
       h.newest_partition_end, h.partitions_ahead, h.default_partition_rows, h.status
FROM monitoring._partition_health() h;
COMMENT ON VIEW monitoring.partition_health IS
    'Per time-series table: partitions, premade ahead of the current one, rows waiting in the default partition, and status ok/warning/critical';

INSERT INTO monitoring.maintenance_task (task_name, function_name, run_order) VALUES
    ('expire_dispatcher_heartbeats', 'monitoring._expire_dispatcher_heartbeats', 50),
    -- last, so that its sample marks a completed run (health's maintenance_last_run)
    ('sample_database_size', 'monitoring._sample_database_size', 1000);

-- pg_dump does not save the values of an extension's sequences, so after a restore the
-- identity columns would hand out ids the restored rows already have (a capture would fail
-- on error_activity's key). Run once after restoring data (docs/operations.md).
CREATE FUNCTION monitoring.resync_sequences()
    RETURNS TABLE (sequence_name text, table_name text, last_value bigint)
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owned record;
    top bigint;
BEGIN
    FOR owned IN
        SELECT s.oid::regclass AS seq, t.oid::regclass AS tbl, a.attname
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
        JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
          AND d.deptype IN ('a', 'i') AND t.relnamespace = 'monitoring'::regnamespace AND NOT t.relispartition
        ORDER BY 1::text
    LOOP
        EXECUTE pg_catalog.format('SELECT pg_catalog.max(%I) FROM %s', owned.attname, owned.tbl) INTO top;
        IF top > COALESCE(pg_catalog.pg_sequence_last_value(owned.seq), 0) THEN
            PERFORM pg_catalog.setval(owned.seq, top);
        END IF;
        sequence_name := owned.seq::text;
        table_name := owned.tbl::text;
        last_value := pg_catalog.pg_sequence_last_value(owned.seq);
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION monitoring.resync_sequences() IS
    'After restoring data: moves every identity/serial sequence of monitoring past the largest id stored (pg_dump does not save an extension''s sequence values)';

------------------------------------------------------------------------------------------
-- The database-health views of seed 003. Canonical names, then the seed's names as aliases.
-- Readable by observe_reader, whose pg_monitor membership shows every session and query.

-- @include sql/include/operations_ratings.sql

CREATE VIEW monitoring.query_performance AS
SELECT q.queryid, q.query, q.username, q.calls, q.rows, q.total_exec_ms, q.mean_exec_ms, q.min_exec_ms,
       q.max_exec_ms, q.stddev_exec_ms, q.shared_blks_hit, q.shared_blks_read, q.cache_hit_ratio, q.note
FROM monitoring._query_performance() q;
COMMENT ON VIEW monitoring.query_performance IS
    'Top 100 statements of this database by total execution time (pg_stat_statements); one row with a note instead where pg_stat_statements is unavailable';

CREATE VIEW monitoring.index_usage AS
SELECT s.schemaname::text AS schema_name, s.relname::text AS table_name, s.indexrelname::text AS index_name,
       s.idx_scan AS index_scans, s.idx_tup_read AS tuples_read, s.idx_tup_fetch AS tuples_fetched,
       pg_catalog.pg_relation_size(s.indexrelid) AS index_size_bytes,
       pg_catalog.pg_size_pretty(pg_catalog.pg_relation_size(s.indexrelid)) AS index_size,
       (i.indisunique OR i.indisprimary OR i.indisexclusion) AS enforces_constraint,
       monitoring._index_usage_category(s.idx_scan) AS usage_category
FROM pg_catalog.pg_stat_user_indexes s
JOIN pg_catalog.pg_index i ON i.indexrelid = s.indexrelid;
COMMENT ON VIEW monitoring.index_usage IS
    'Every index of user tables: scans since the statistics reset, size, and NEVER_USED / RARELY_USED (< 100 scans) / FREQUENTLY_USED';

CREATE VIEW monitoring.table_stats AS
SELECT t.schemaname::text AS schema_name, t.relname::text AS table_name, t.seq_scan, t.seq_tup_read, t.idx_scan,
       t.n_live_tup AS live_tuples, t.n_dead_tup AS dead_tuples,
       pg_catalog.round(100.0 * t.n_dead_tup / NULLIF(t.n_live_tup + t.n_dead_tup, 0), 2) AS dead_tuple_ratio,
       t.n_tup_ins AS inserts, t.n_tup_upd AS updates, t.n_tup_del AS deletes, t.n_tup_hot_upd AS hot_updates,
       t.n_mod_since_analyze AS modified_since_analyze,
       t.last_vacuum, t.last_autovacuum, t.last_analyze, t.last_autoanalyze,
       t.vacuum_count, t.autovacuum_count, t.analyze_count, t.autoanalyze_count,
       pg_catalog.pg_table_size(t.relid) AS table_size_bytes,
       pg_catalog.pg_indexes_size(t.relid) AS indexes_size_bytes,
       pg_catalog.pg_total_relation_size(t.relid) AS total_size_bytes,
       pg_catalog.pg_size_pretty(pg_catalog.pg_total_relation_size(t.relid)) AS total_size,
       monitoring._bloat_status(t.n_live_tup, t.n_dead_tup) AS bloat_status
FROM pg_catalog.pg_stat_user_tables t
JOIN pg_catalog.pg_class c ON c.oid = t.relid
WHERE c.relkind <> 'p';
COMMENT ON VIEW monitoring.table_stats IS
    'Every user table (partitions included, partitioned parents left out): scans, live/dead tuples and dead ratio (%), writes, vacuum/analyze, sizes, bloat_status';

CREATE VIEW monitoring.function_performance AS
SELECT f.schemaname::text AS schema_name, f.funcname::text AS function_name,
       f.funcid::pg_catalog.regprocedure::text AS function_signature, f.calls,
       f.total_time AS total_ms, f.self_time AS self_ms,
       f.total_time / NULLIF(f.calls, 0) AS mean_ms,
       monitoring._function_rating(f.total_time / NULLIF(f.calls, 0)) AS rating,
       NULL::text AS note
FROM pg_catalog.pg_stat_user_functions f
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       'track_functions is none: no function is timed. Run ALTER SYSTEM SET track_functions = ''pl'' (or ''all''); '
       'SELECT pg_reload_conf(); as a superuser, or ALTER DATABASE ' || pg_catalog.quote_ident(pg_catalog.current_database())
       || ' SET track_functions = ''pl'''
WHERE pg_catalog.current_setting('track_functions') = 'none';
COMMENT ON VIEW monitoring.function_performance IS
    'Timed user functions (pg_stat_user_functions): calls, total/self/mean ms, rating EXCELLENT < 50 ms, GOOD < 100, ACCEPTABLE < 200, SLOW; a note row while track_functions is none';

CREATE VIEW monitoring.connections AS
WITH client AS (
    SELECT a.datname, a.state, a.wait_event_type, a.state_change
    FROM pg_catalog.pg_stat_activity a
    WHERE a.backend_type = 'client backend' AND a.datname IS NOT NULL
), per_database AS (
    SELECT c.datname::text AS database, pg_catalog.count(*) AS total,
           pg_catalog.count(*) FILTER (WHERE c.state = 'active') AS active,
           pg_catalog.count(*) FILTER (WHERE c.state = 'idle') AS idle,
           pg_catalog.count(*) FILTER (WHERE c.state LIKE 'idle in transaction%') AS idle_in_transaction,
           pg_catalog.count(*) FILTER (WHERE c.wait_event_type = 'Lock') AS waiting_on_locks,
           pg_catalog.max(pg_catalog.date_part('epoch', pg_catalog.statement_timestamp() - c.state_change))
               FILTER (WHERE c.state = 'idle') AS max_idle_seconds,
           pg_catalog.max(pg_catalog.date_part('epoch', pg_catalog.statement_timestamp() - c.state_change))
               FILTER (WHERE c.state LIKE 'idle in transaction%') AS max_idle_in_transaction_seconds
    FROM client c
    GROUP BY c.datname
)
SELECT d.database, d.total, d.active, d.idle, d.idle_in_transaction, d.waiting_on_locks, d.max_idle_seconds,
       d.max_idle_in_transaction_seconds,
       (pg_catalog.sum(d.total) OVER ())::bigint AS server_total,
       pg_catalog.current_setting('max_connections')::integer AS max_connections,
       pg_catalog.round(100.0 * pg_catalog.sum(d.total) OVER ()
                        / pg_catalog.current_setting('max_connections')::integer, 1) AS server_usage_pct,
       monitoring._connection_pool_status((pg_catalog.sum(d.total) OVER ())::bigint, d.total, d.idle,
                                          pg_catalog.current_setting('max_connections')::integer) AS pool_status
FROM per_database d;
COMMENT ON VIEW monitoring.connections IS
    'Client connections per database: total, active, idle, idle in transaction, waiting on locks, longest idle; pool_status HEALTHY / TOO_MANY / UNDERUTILIZED against max_connections';

CREATE VIEW monitoring.database_size AS
WITH user_schema AS (
    SELECT n.oid FROM pg_catalog.pg_namespace n
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
)
SELECT pg_catalog.current_database()::text AS database,
       pg_catalog.pg_database_size(pg_catalog.current_database()) AS size_bytes,
       pg_catalog.pg_size_pretty(pg_catalog.pg_database_size(pg_catalog.current_database())) AS size,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c JOIN user_schema s ON s.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition) AS table_count,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c JOIN user_schema s ON s.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND c.relispartition) AS partition_count,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c JOIN user_schema s ON s.oid = c.relnamespace
        WHERE c.relkind IN ('i', 'I') AND NOT c.relispartition) AS index_count,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p JOIN user_schema s ON s.oid = p.pronamespace)
           AS function_count,
       monitoring._database_growth(interval '24 hours') AS growth_bytes_per_hour;
COMMENT ON VIEW monitoring.database_size IS
    'This database: size (bytes and pretty), tables, partitions, indexes and functions outside the system schemas, growth per hour over the last 24 h';

CREATE VIEW monitoring.slow_queries AS
SELECT a.pid, a.datname::text AS database, a.usename::text AS username, a.application_name,
       a.client_addr::text AS client_addr, a.query_start,
       pg_catalog.date_part('epoch', pg_catalog.statement_timestamp() - a.query_start) AS duration_seconds,
       monitoring._slow_query_severity(
           pg_catalog.date_part('epoch', pg_catalog.statement_timestamp() - a.query_start)) AS severity,
       a.wait_event_type, a.wait_event, a.state, a.query
FROM pg_catalog.pg_stat_activity a
WHERE a.backend_type = 'client backend' AND a.state = 'active'
  AND a.pid <> pg_catalog.pg_backend_pid()
  AND a.query_start < pg_catalog.statement_timestamp() - interval '1 second';
COMMENT ON VIEW monitoring.slow_queries IS
    'Statements running for more than 1 s on the server, with severity SLOW > 1 s, WARNING > 10 s, CRITICAL > 60 s and what they wait on';

CREATE VIEW monitoring.cache_hit_ratio AS
SELECT 'database'::text AS scope, d.datname::text AS name, d.blks_read AS blocks_read, d.blks_hit AS blocks_hit,
       pg_catalog.round(100.0 * d.blks_hit / NULLIF(d.blks_hit + d.blks_read, 0), 2) AS hit_ratio_pct,
       95::numeric AS target_pct,
       monitoring._cache_hit_rating(pg_catalog.round(100.0 * d.blks_hit / NULLIF(d.blks_hit + d.blks_read, 0), 2),
                                    95) AS rating
FROM pg_catalog.pg_stat_database d
WHERE d.datname = pg_catalog.current_database()
UNION ALL
SELECT 'table', pg_catalog.format('%I.%I', t.schemaname, t.relname), t.heap_blks_read, t.heap_blks_hit,
       pg_catalog.round(100.0 * t.heap_blks_hit / NULLIF(t.heap_blks_hit + t.heap_blks_read, 0), 2),
       98,
       monitoring._cache_hit_rating(
           pg_catalog.round(100.0 * t.heap_blks_hit / NULLIF(t.heap_blks_hit + t.heap_blks_read, 0), 2), 98)
FROM pg_catalog.pg_statio_user_tables t
WHERE t.heap_blks_hit + t.heap_blks_read > 0;
COMMENT ON VIEW monitoring.cache_hit_ratio IS
    'Buffer cache hit ratio: one database row (all blocks, target > 95 %) and one row per table read (heap blocks, target > 98 %); EXCELLENT >= 99, GOOD >= target, else NEEDS_TUNING';

-- The seed's names (monitoring_rpc_performance is function_performance).
CREATE VIEW monitoring.monitoring_query_performance AS SELECT * FROM monitoring.query_performance;
COMMENT ON VIEW monitoring.monitoring_query_performance IS 'Seed 003 name of monitoring.query_performance';
CREATE VIEW monitoring.monitoring_index_usage AS SELECT * FROM monitoring.index_usage;
COMMENT ON VIEW monitoring.monitoring_index_usage IS 'Seed 003 name of monitoring.index_usage';
CREATE VIEW monitoring.monitoring_table_stats AS SELECT * FROM monitoring.table_stats;
COMMENT ON VIEW monitoring.monitoring_table_stats IS 'Seed 003 name of monitoring.table_stats';
CREATE VIEW monitoring.monitoring_rpc_performance AS SELECT * FROM monitoring.function_performance;
COMMENT ON VIEW monitoring.monitoring_rpc_performance IS 'Seed 003 name of monitoring.function_performance';
CREATE VIEW monitoring.monitoring_connections AS SELECT * FROM monitoring.connections;
COMMENT ON VIEW monitoring.monitoring_connections IS 'Seed 003 name of monitoring.connections';
CREATE VIEW monitoring.monitoring_database_size AS SELECT * FROM monitoring.database_size;
COMMENT ON VIEW monitoring.monitoring_database_size IS 'Seed 003 name of monitoring.database_size';
CREATE VIEW monitoring.monitoring_slow_queries AS SELECT * FROM monitoring.slow_queries;
COMMENT ON VIEW monitoring.monitoring_slow_queries IS 'Seed 003 name of monitoring.slow_queries';
CREATE VIEW monitoring.monitoring_cache_hit_ratio AS SELECT * FROM monitoring.cache_hit_ratio;
COMMENT ON VIEW monitoring.monitoring_cache_hit_ratio IS 'Seed 003 name of monitoring.cache_hit_ratio';
