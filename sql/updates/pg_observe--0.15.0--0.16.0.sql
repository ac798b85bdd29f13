-- 0.15.0 -> 0.16.0: cache_get_many and cache_get_many_packed (the Python client's get_many)
-- count the distinct keys of a batch in byte order ("C"), about half the cost of that count
-- under a libc locale; the single-key writes of bytes and text, cache_incr and
-- cache_set_if_absent count through _cache_note_one() as cache_set does. Changed functions
-- come from the same files as a fresh install; make test compares an upgraded database with a
-- fresh one.

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
