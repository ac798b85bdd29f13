-- 0.7.0 -> 0.8.0: the capture queue (queue_error(): one INSERT, grouped later in batches),
-- and a huge trace id or user id no longer fails a capture.
-- Changed functions come from the same files as a fresh install; make test compares an
-- upgraded database with a fresh one.

-- @include sql/include/errors_queue_tables.sql
-- The capture functions take each event's time of arrival (the queue's).
DROP FUNCTION monitoring._store_error_occurrences(jsonb);
DROP FUNCTION monitoring._events_to_occurrences(jsonb);
-- The batch capture inserts its rows as it prepares them (a new argument).
DROP FUNCTION monitoring._prepare_error_occurrences(monitoring.tb_error_occurrence[]);
-- @include sql/include/errors_functions.sql
-- @include sql/include/errors_queue.sql
-- A writer could pass the capture trigger by setting pg_observe.capture_prepared itself.
-- @include sql/include/errors_capture_trigger.sql
-- A pg_cron job drains the queue every minute (schedule_maintenance() registers it).
-- @include sql/include/maintenance_jobs.sql
-- health() reports the queue's backlog and its failed events.
-- @include sql/include/operations_health.sql

-- @include sql/900_privileges.sql
-- @include sql/910_privileges_errors.sql
-- @include sql/920_privileges_notifications.sql
-- @include sql/930_privileges_telemetry.sql
-- @include sql/940_privileges_operations.sql
-- @include sql/941_privileges_prometheus.sql
-- @include sql/942_privileges_dashboards.sql
-- @include sql/950_privileges_cache.sql
-- @include sql/990_reset_search_path.sql
