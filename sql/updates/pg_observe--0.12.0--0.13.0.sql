-- 0.12.0 -> 0.13.0: a faster cache (most of it in the Python client). No function changed;
-- make test compares an upgraded database with a fresh one.

-- A set no longer prepares a CHECK constraint at every call; the functions keep the invariant.
ALTER TABLE monitoring.cache_entries DROP CONSTRAINT cache_entries_value_typed;

-- @include sql/900_privileges.sql
-- @include sql/910_privileges_errors.sql
-- @include sql/920_privileges_notifications.sql
-- @include sql/930_privileges_telemetry.sql
-- @include sql/940_privileges_operations.sql
-- @include sql/941_privileges_prometheus.sql
-- @include sql/942_privileges_dashboards.sql
-- @include sql/950_privileges_cache.sql
-- @include sql/990_reset_search_path.sql
