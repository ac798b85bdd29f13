-- 0.1.0 -> 0.2.0: error capture (tb_error_log, tb_error_occurrence, capture_error, errors).
-- New objects come from the same pieces as a fresh install, so the two cannot drift;
-- test/upgrade compares an upgraded database with a fresh one.

-- @include sql/100_errors.sql
-- @include sql/900_privileges.sql
-- @include sql/910_privileges_errors.sql
-- @include sql/990_reset_search_path.sql
