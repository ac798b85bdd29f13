-- Included by sql/020_maintenance.sql and by the upgrade scripts.

-- The jobs pg_observe needs, as one list, so that scheduling and cleanup agree.
CREATE OR REPLACE FUNCTION monitoring._maintenance_jobs()
    RETURNS TABLE (job_name text, schedule text, command text)
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('pg_observe_maintenance', '*/5 * * * *', 'SELECT monitoring.run_maintenance()'),
           -- the backstop of pg-observe worker: delivers notifications when no worker runs
           ('pg_observe_notifications', '* * * * *', 'CALL monitoring.dispatch_notifications()'),
           -- the backstop of pg-observe worker: captures queued errors when no worker runs
           ('pg_observe_error_queue', '* * * * *', 'CALL monitoring.drain_error_queue()'),
           -- pg_cron 1.4 has no sub-minute schedule: per-minute rollups run every minute
           ('pg_observe_metric_rollups', '* * * * *', 'SELECT monitoring.rollup_metrics()')
$$;
COMMENT ON FUNCTION monitoring._maintenance_jobs() IS 'pg_cron jobs that schedule_maintenance() registers';
