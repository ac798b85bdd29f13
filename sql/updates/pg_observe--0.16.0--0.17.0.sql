-- 0.16.0 -> 0.17.0: monitoring.cache_entries gets fillfactor 50, so that a page holds half
-- as many entries and the pruning that every overwrite of an entry brings about (a HOT update
-- leaves the old version on the page) has half as many to go through. Pages written before
-- the upgrade keep their fill until they are rewritten (VACUUM FULL, or the cache emptied).

ALTER TABLE monitoring.cache_entries SET (fillfactor = 50);

-- cache_set_many checks its keys' length in its INSERT, no longer by a query of its own. Changed
-- functions come from the same files as a fresh install; make test compares an upgraded
-- database with a fresh one.
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
