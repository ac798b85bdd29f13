-- 0.2.0 -> 0.3.0: set-based capture with a fingerprint cache.
-- The capture functions prepare a whole batch in a few statements; the statement trigger
-- that counted occurrences is gone (the capture functions and the row trigger count).
-- Changed and new functions come from the same files as a fresh install (CREATE OR REPLACE);
-- make test compares an upgraded database with a fresh one.

DROP TRIGGER error_occurrence_count ON monitoring.tb_error_occurrence;
DROP TRIGGER error_occurrence_prepare ON monitoring.tb_error_occurrence;
DROP FUNCTION monitoring._error_occurrence_count();
DROP FUNCTION monitoring._event_to_occurrence(jsonb);
DROP FUNCTION monitoring._fold_error_counters(uuid[]);   -- now also takes the fresh deltas

-- @include sql/include/errors_fingerprint_cache.sql
-- @include sql/include/errors_functions.sql
-- @include sql/include/errors_capture_trigger.sql
-- @include sql/900_privileges.sql
-- @include sql/910_privileges_errors.sql
-- @include sql/990_reset_search_path.sql
