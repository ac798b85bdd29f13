-- 0.14.0 -> 0.15.0: cache_get_entry, the Python client's get, becomes a SQL function that
-- PostgreSQL inlines into the caller's query; it reads the new view cache_live_entries instead
-- of running as the owner, and counts through the new _cache_note_get(). _cache_note_one()
-- appends before it checks the length; _cache_note() keeps the counts of a read-only
-- transaction as batch counts. Changed functions come from the same files as a fresh
-- install; make test compares an upgraded database with a fresh one.

-- @include sql/include/cache_live_entries.sql
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
