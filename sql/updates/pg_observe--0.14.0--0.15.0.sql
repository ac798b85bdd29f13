-- 0.14.0 -> 0.15.0: cache_get_entry, the Python client's get, becomes a SQL function that
-- PostgreSQL inlines into the caller's query; it reads the new view cache_live_entries instead
-- of running as the owner, and counts through the new _cache_note_get(). _cache_note_one()
-- appends before it checks the length; _cache_note() keeps the counts of a read-only
-- transaction as batch counts. Changed functions come from the same files as a fresh
-- install; make test compares an upgraded database with a fresh one.
--
-- Every function that set search_path to '' sets it to pg_catalog, pg_temp: with pg_temp left
-- out of the path, PostgreSQL searches the session's temporary schema first for tables and
-- types, so a temporary domain named text could have run its CHECK, a function of the
-- caller's, as the owner inside a SECURITY DEFINER function. Named last, it comes after
-- pg_catalog (PostgreSQL's documentation on SECURITY DEFINER says the same).

-- @include sql/include/cache_live_entries.sql
-- @include sql/include/cache_functions.sql

-- The PL/Python functions again: their bodies carry their header, which names the search_path.
-- @plpython plpython/plpython_runtime.py
-- @plpython plpython/scrub.py
-- @plpython plpython/fingerprint.py
-- @plpython plpython/notify_send.py
-- @plpython plpython/otlp_traces.py

DO $search_path$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'monitoring'::regnamespace AND 'search_path=""' = ANY (p.proconfig)
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', fn);
    END LOOP;
END
$search_path$;

-- @include sql/900_privileges.sql
-- @include sql/910_privileges_errors.sql
-- @include sql/920_privileges_notifications.sql
-- @include sql/930_privileges_telemetry.sql
-- @include sql/940_privileges_operations.sql
-- @include sql/941_privileges_prometheus.sql
-- @include sql/942_privileges_dashboards.sql
-- @include sql/950_privileges_cache.sql
-- @include sql/990_reset_search_path.sql
