-- 0.11.0 -> 0.12.0: cheaper captures. A plain INSERT's slow path (new groups, regressions, new
-- stacks) counts its rows at the statement's end like the fast path; the users of a group are
-- kept without a foreign key and compared byte-wise (COLLATE "C"); _truncate() reads a text's
-- byte length before counting its characters.
-- Changed functions come from the same files as a fresh install; make test compares an
-- upgraded database with a fresh one.

-- error_group_user loses its foreign key (a query per new user at every fold); triggers on
-- tb_error_log delete a deleted group's users instead.
ALTER TABLE monitoring.error_group_user DROP CONSTRAINT error_group_user_error_id_fkey;
-- @include sql/include/errors_group_user_cleanup.sql

-- The user keys are compared byte-wise: the primary key of error_group_user and the fold's
-- DISTINCT no longer call the locale's collation for every comparison.
ALTER TABLE monitoring.error_group_user ALTER COLUMN user_key TYPE text COLLATE pg_catalog."C";
ALTER TABLE monitoring.error_capture_journal ALTER COLUMN user_key TYPE text COLLATE pg_catalog."C";

-- _truncate(): byte length first; the row trigger journals its slow path's rows.
-- @include sql/include/errors_functions.sql

-- @include sql/900_privileges.sql
-- @include sql/910_privileges_errors.sql
-- @include sql/920_privileges_notifications.sql
-- @include sql/930_privileges_telemetry.sql
-- @include sql/940_privileges_operations.sql
-- @include sql/941_privileges_prometheus.sql
-- @include sql/942_privileges_dashboards.sql
-- @include sql/950_privileges_cache.sql
-- @include sql/990_reset_search_path.sql
