-- 0.4.0 -> 0.5.0: traces, metrics and business events, correlated by trace_id.
-- New objects come from the same files as a fresh install; make test compares an upgraded
-- database with a fresh one.

-- @include sql/include/maintenance_jobs.sql
-- A failing maintenance task no longer undoes the partition maintenance.
-- @include sql/include/maintenance_run.sql
-- @include sql/300_telemetry.sql
-- @include sql/310_traces.sql
-- @include sql/320_metrics.sql
-- @include sql/330_entity_changes.sql
-- @include sql/340_trace_queries.sql
-- The capture stores trace and span ids as spans do (lower-case hex).
-- @include sql/include/errors_functions.sql

-- A database that had the maintenance job scheduled gets the rollup job too.
DO $schedule$
DECLARE
    scheduled boolean := false;
BEGIN
    IF monitoring._cron_schema() IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT FROM cron.job WHERE jobname = ''pg_observe_maintenance'')' INTO scheduled;
    END IF;
    IF scheduled THEN
        PERFORM monitoring.schedule_maintenance();
    END IF;
END
$schedule$;

-- @include sql/900_privileges.sql
-- @include sql/910_privileges_errors.sql
-- @include sql/920_privileges_notifications.sql
-- @include sql/930_privileges_telemetry.sql
-- @include sql/990_reset_search_path.sql
