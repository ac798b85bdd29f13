\echo Use "CREATE EXTENSION pg_observe" to load this file. \quit
-- Released upgrade script of pg_observe 0.12.0 -> 0.13.0, kept as it shipped: do not edit.

-- sql/updates/pg_observe--0.12.0--0.13.0.sql
-- 0.12.0 -> 0.13.0: a faster cache (most of it in the Python client). No function changed;
-- make test compares an upgraded database with a fresh one.

-- A set no longer prepares a CHECK constraint at every call; the functions keep the invariant.
ALTER TABLE monitoring.cache_entries DROP CONSTRAINT cache_entries_value_typed;

-- sql/900_privileges.sql
-- The privilege matrix, in one place (docs/roles.md explains it). Applied again by every
-- upgrade script, so it always describes the whole extension.
--   writer: capture and record only; no reading of stored data, no secrets
--   reader: read stored data and views; no secrets, no changes
--   admin:  everything, including workflow, configuration and maintenance

REVOKE ALL ON ALL TABLES IN SCHEMA monitoring FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA monitoring FROM PUBLIC;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA monitoring TO observe_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA monitoring TO observe_admin;
GRANT EXECUTE ON FUNCTION monitoring.schedule_maintenance(), monitoring.unschedule_maintenance()
    TO observe_admin;

GRANT SELECT ON monitoring.time_series_config TO observe_reader;
GRANT EXECUTE ON FUNCTION monitoring._plpython_runtime() TO observe_reader;

-- sql/910_privileges_errors.sql
-- Privileges of error tracking (see 900_privileges.sql for the matrix).
GRANT SELECT ON monitoring.tb_error_log, monitoring.tb_error_occurrence, monitoring.errors, monitoring.error_groups,
                monitoring.error_activity, monitoring.error_fingerprint_rule, monitoring.error_scrub_key
    TO observe_reader;
GRANT EXECUTE ON FUNCTION monitoring.top_issues(interval, text, integer, boolean),
                          monitoring.issue_occurrences(text, interval, integer),
                          monitoring.error_trends(interval, interval),
                          monitoring.affected_users(interval, integer),
                          monitoring.first_vs_repeat_errors(interval),
                          monitoring._find_error_group(text), monitoring._user_key(jsonb, jsonb),
                          monitoring._uuid_or_null(text), monitoring.get_partition_stats()
    TO observe_reader;
GRANT INSERT ON monitoring.tb_error_occurrence TO observe_writer;
GRANT EXECUTE ON FUNCTION monitoring.capture_error(jsonb), monitoring.capture_errors(jsonb) TO observe_writer;
-- The capture queue: writers queue, and any of them (or the worker's dispatcher role) may
-- drain it. The queue's rows are not readable but by admins: they are events as sent.
GRANT EXECUTE ON FUNCTION monitoring.queue_error(jsonb), monitoring.process_error_queue(integer) TO observe_writer;
GRANT EXECUTE ON PROCEDURE monitoring.drain_error_queue(integer, integer) TO observe_writer, observe_dispatcher, observe_admin;
GRANT EXECUTE ON FUNCTION monitoring.process_error_queue(integer) TO observe_dispatcher;
REVOKE ALL ON PROCEDURE monitoring.drain_error_queue(integer, integer) FROM PUBLIC;

-- sql/920_privileges_notifications.sql
-- Privileges of notifications (see 900_privileges.sql for the matrix). Channel configs hold
-- secrets: readers get every rule column but channel_config (and the redacted view), nothing
-- of notification_channel but its names; the dispatcher reaches secrets only through the
-- definer functions it may call.
GRANT SELECT (config_id, description, error_type, error_fingerprint, severity, environment, channel_type,
              min_occurrence_count, notify_on_occurrence, first_seen_only, notify_on_regression,
              frequency_count, frequency_window_minutes, user_count, user_window_minutes,
              rate_limit_minutes, enabled, created_at, severity_levels)
    ON monitoring.tb_error_notification_config TO observe_reader;
GRANT SELECT (channel_type, sender, function_name, description, created_at)
    ON monitoring.notification_channel TO observe_reader;
GRANT SELECT ON monitoring.notification_rules, monitoring.notification_queue, monitoring.notification_queue_status,
                monitoring.notification_state, monitoring.tb_error_notification_log, monitoring.notification_settings
    TO observe_reader;
GRANT EXECUTE ON FUNCTION monitoring._redact_channel_config(jsonb) TO observe_reader;

GRANT USAGE ON SCHEMA monitoring TO observe_dispatcher;
GRANT EXECUTE ON PROCEDURE monitoring.dispatch_notifications(integer, text, integer, integer, integer)
    TO observe_dispatcher;
GRANT EXECUTE ON FUNCTION monitoring._claim_notifications(integer, text, uuid),
                          monitoring._deliver_notifications(uuid, text)
    TO observe_dispatcher;
REVOKE ALL ON PROCEDURE monitoring.dispatch_notifications(integer, text, integer, integer, integer) FROM PUBLIC;

-- sql/930_privileges_telemetry.sql
-- Privileges of traces, metrics and business events (see 900_privileges.sql for the matrix).
-- Writers store through the definer functions or by INSERT into the seed's tables; they read
-- nothing. The change log is written by its definer trigger only.
GRANT SELECT ON monitoring.spans, monitoring.traces, monitoring.metrics, monitoring.metric_rollups_1m,
                monitoring.metric_rollup_state, monitoring.tb_entity_change_log, monitoring.tracked_tables,
                monitoring.rejected_telemetry
    TO observe_reader;
GRANT EXECUTE ON FUNCTION monitoring.slowest_operations(interval, text, text, bigint, integer),
                          monitoring.request_rate(interval, interval, text, text),
                          monitoring.operation_error_rates(interval, text, bigint),
                          monitoring.trace_timeline(text),
                          monitoring._otel_trace_id(text), monitoring._otel_span_id(text),
                          monitoring._otel_time(text, text)
    TO observe_reader;

GRANT INSERT ON monitoring.spans, monitoring.traces, monitoring.metrics TO observe_writer;
GRANT EXECUTE ON FUNCTION monitoring.ingest_spans(jsonb), monitoring.ingest_otlp_traces(jsonb),
                          monitoring.record_metrics(jsonb)
    TO observe_writer;

-- Every role that writes a tracked table runs the change-log triggers, which call this; it
-- refuses any caller but them (see sql/330_entity_changes.sql).
GRANT EXECUTE ON FUNCTION monitoring._append_entity_change(regclass, text, jsonb, jsonb, name, text, text[]) TO PUBLIC;
-- and may reach it by name; every table and other function stays closed to PUBLIC
GRANT USAGE ON SCHEMA monitoring TO PUBLIC;

-- A SECURITY DEFINER trigger function attached to a table of one's own would run that table's
-- code (casts, defaults) as pg_observe's owner: only the owner may attach them.
DO $revoke_definer_triggers$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'monitoring'::regnamespace AND p.prosecdef
                AND p.prorettype = 'trigger'::regtype
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM observe_admin', fn);
    END LOOP;
END
$revoke_definer_triggers$;

-- sql/940_privileges_operations.sql
-- Privileges of operations (see 900_privileges.sql for the matrix). Readers see every health
-- view and health(); the default partitions' row counts reach them through the definer
-- _partition_health() (a grant on a parent does not cover reading its partition directly),
-- the pg_cron tables through the definer health() (pg_cron shows a role its own jobs only).

GRANT SELECT ON monitoring.partition_health, monitoring.dispatcher_heartbeat, monitoring.database_size_history,
                monitoring.health_settings,
                monitoring.query_performance, monitoring.index_usage, monitoring.table_stats,
                monitoring.function_performance, monitoring.connections, monitoring.database_size,
                monitoring.slow_queries, monitoring.cache_hit_ratio,
                monitoring.monitoring_query_performance, monitoring.monitoring_index_usage,
                monitoring.monitoring_table_stats, monitoring.monitoring_rpc_performance,
                monitoring.monitoring_connections, monitoring.monitoring_database_size,
                monitoring.monitoring_slow_queries, monitoring.monitoring_cache_hit_ratio
    TO observe_reader;

-- Definers: closed to PUBLIC (900_privileges.sql already revokes; said again where it matters).
REVOKE ALL ON FUNCTION monitoring.health(), monitoring._partition_health() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION monitoring.health(), monitoring._partition_health() TO observe_reader;

-- A view's functions are called with the privileges of the role reading it.
GRANT EXECUTE ON FUNCTION monitoring._query_performance(), monitoring._database_growth(interval),
                          monitoring._index_usage_category(bigint), monitoring._bloat_status(bigint, bigint),
                          monitoring._function_rating(double precision),
                          monitoring._connection_pool_status(bigint, bigint, bigint, integer),
                          monitoring._slow_query_severity(double precision),
                          monitoring._cache_hit_rating(numeric, numeric)
    TO observe_reader;

-- dispatch_notifications() runs as its caller and leaves a heartbeat (INSERT ... ON CONFLICT
-- DO UPDATE reads the row it updates).
GRANT SELECT, INSERT, UPDATE ON monitoring.dispatcher_heartbeat TO observe_dispatcher;

-- sql/941_privileges_prometheus.sql
-- Privileges of the Prometheus exposition (see 900_privileges.sql for the matrix). The
-- functions run as their caller (no SECURITY DEFINER): a reader sees what it may read anyway,
-- and its pg_monitor membership shows every session in the connection figures.
GRANT EXECUTE ON FUNCTION monitoring.prometheus_metrics(),
                          monitoring._prometheus_families(),
                          monitoring._prometheus_escape(text, boolean),
                          monitoring._prometheus_sample(text, jsonb, double precision),
                          monitoring._prometheus_error_samples(),
                          monitoring._prometheus_notification_samples(),
                          monitoring._prometheus_dispatcher_samples(),
                          monitoring._prometheus_trace_samples(),
                          monitoring._prometheus_metric_samples(),
                          monitoring._prometheus_partition_samples(),
                          monitoring._prometheus_database_samples(),
                          monitoring._prometheus_health_samples(),
                          monitoring._prometheus_cache_samples()
    TO observe_reader;

-- The cache's hit, miss, set and eviction counters per namespace and backend: counts, no key
-- and no value (cache_entries stays unreadable to readers). Read directly because the view
-- cache_stats also counts every cached entry, too much for each scrape.
GRANT SELECT ON monitoring.cache_counters TO observe_reader;

-- sql/942_privileges_dashboards.sql
-- Privileges of the dashboards (see 900_privileges.sql for the matrix): Grafana's login is
-- an observe_reader. Every dashboard function runs as its caller (no SECURITY DEFINER) and
-- reads only what observe_reader may read.
GRANT EXECUTE ON FUNCTION monitoring.dashboard_variable(text),
                          monitoring._dashboard_bucket(timestamptz, timestamptz, interval, interval),
                          monitoring._dashboard_times(timestamptz, timestamptz, interval),
                          monitoring.dashboard_environments(),
                          monitoring.dashboard_services(),
                          monitoring.dashboard_error_rate(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_first_vs_repeat(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_top_errors(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_error_breakdown(timestamptz, timestamptz, text, text, text, integer),
                          monitoring.dashboard_recent_errors(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_issue_status(timestamptz, timestamptz, text, text),
                          monitoring.dashboard_resolution_time(timestamptz, timestamptz, text, text),
                          monitoring.dashboard_failed_access(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_requests(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_latency(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_request_heatmap(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_operations(timestamptz, timestamptz, text, text, text, integer),
                          monitoring.dashboard_operation_types(timestamptz, timestamptz, text, text),
                          monitoring.dashboard_span_status(timestamptz, timestamptz, text, text),
                          monitoring.dashboard_db_queries(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_users(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_user_errors(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_tenants(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_new_users(timestamptz, timestamptz, text, text, interval, interval),
                          monitoring.dashboard_metric_rate(timestamptz, timestamptz, text, text, interval, text),
                          monitoring.dashboard_metric_gauge(timestamptz, timestamptz, text, text, interval, text),
                          monitoring.dashboard_metric_histogram(timestamptz, timestamptz, text, text, interval, text),
                          monitoring.dashboard_audit_events(timestamptz, timestamptz, integer),
                          monitoring.dashboard_audit_event_types(timestamptz, timestamptz, interval),
                          monitoring.dashboard_admin_actions(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_permission_changes(timestamptz, timestamptz, integer),
                          monitoring.dashboard_changes_by_actor(timestamptz, timestamptz, integer),
                          monitoring.dashboard_audit_lag(),
                          monitoring.dashboard_compliance_status(),
                          monitoring.dashboard_database_activity(),
                          -- the cache's (sql/500_cache.sql)
                          monitoring._dashboard_cache_intervals(timestamptz, timestamptz, text),
                          monitoring.dashboard_cache_namespaces(),
                          monitoring.dashboard_cache_activity(timestamptz, timestamptz, text, interval),
                          monitoring.dashboard_cache_size(timestamptz, timestamptz, text, interval),
                          monitoring.dashboard_cache_namespace_stats(timestamptz, timestamptz, text, integer),
                          monitoring.dashboard_cache_summary(timestamptz, timestamptz, text)
    TO observe_reader;

-- sql/950_privileges_cache.sql
-- Privileges of the cache (see 900_privileges.sql for the matrix). The cache is the
-- applications' own, so it belongs to the role they already have, observe_writer: it may call
-- the cache functions (SECURITY DEFINER) and touch neither table, so that every write passes
-- the checks of keys, TTLs and values and is counted. Dashboards and exporters (observe_reader)
-- read monitoring.cache_stats, never the cached values (sessions, tokens, personal data).
-- Admins have everything (900_privileges.sql), expire_cache() included.
GRANT EXECUTE ON FUNCTION monitoring.cache_get(text, text),
                          monitoring.cache_get_entry(text, text),
                          monitoring.cache_get_many(text[], text),
                          monitoring.cache_get_many_packed(text[], text),
                          monitoring.cache_ttl(text, text),
                          monitoring.cache_keys(text, text, integer),
                          monitoring.cache_set(text, jsonb, interval, text),
                          monitoring.cache_set_bytes(text, bytea, interval, text, text),
                          monitoring.cache_set_many_arrays(text[], jsonb[], interval, text, bytea[], text[]),
                          monitoring.cache_set_many(jsonb, interval, text),
                          monitoring.cache_incr(text, bigint, interval, text),
                          monitoring.cache_set_if_absent(text, jsonb, interval, text),
                          monitoring.cache_expire(text, interval, text),
                          monitoring.cache_delete(text, text),
                          monitoring.cache_delete_many(text[], text),
                          monitoring.cache_delete_pattern(text, text),
                          monitoring.cache_flush_stats()
    TO observe_writer;

-- The history holds counts and sizes per namespace, no key and no value.
GRANT SELECT ON monitoring.cache_stats, monitoring.cache_stats_history TO observe_reader;

-- sql/990_reset_search_path.sql
-- pg_partman's create_parent() above left the script's search_path set at session level
-- (it restores with a session-level set_config). Give the session its default back.
RESET search_path;


