-- 0.3.0 -> 0.4.0: notifications (rules, outbox queue, dispatcher, PL/Python senders, delivery log).
-- The capture now evaluates the notification rules (_count_error_occurrences), and the
-- pg_cron jobs include the notification backstop. New and changed objects come from the same
-- files as a fresh install; make test compares an upgraded database with a fresh one.

-- The drop_old_*_partitions() functions now share one body.
DROP FUNCTION monitoring._drop_old_error_occurrence_partitions(integer, text);
-- @include sql/include/time_series_retention.sql
-- @include sql/include/maintenance_jobs.sql
-- @include sql/include/errors_functions.sql
-- @include sql/200_notifications.sql

-- A database that had the maintenance job scheduled gets the notification job too.
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
-- @include sql/990_reset_search_path.sql
