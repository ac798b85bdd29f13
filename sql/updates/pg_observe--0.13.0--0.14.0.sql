-- 0.13.0 -> 0.14.0: _cache_note() initialises its batch counts with a bigint[] instead of a
-- text literal that PL/pgSQL converted at every call (the warning plpgsql_check reported).
-- Changed functions come from the same files as a fresh install; make test compares an
-- upgraded database with a fresh one.

-- @include sql/include/cache_functions.sql

-- @include sql/900_privileges.sql
-- @include sql/910_privileges_errors.sql
-- @include sql/920_privileges_notifications.sql
-- @include sql/930_privileges_telemetry.sql
-- @include sql/940_privileges_operations.sql
-- @include sql/941_privileges_prometheus.sql
-- @include sql/942_privileges_dashboards.sql
-- @include sql/950_privileges_cache.sql
-- @include sql/990_reset_search_path.sql
