-- Privileges of error tracking (see 900_privileges.sql for the matrix).
GRANT SELECT ON monitoring.tb_error_log, monitoring.tb_error_occurrence, monitoring.errors, monitoring.error_groups,
                monitoring.error_activity, monitoring.error_fingerprint_rule, monitoring.error_scrub_key
    TO observe_reader;
GRANT EXECUTE ON FUNCTION monitoring.top_issues(interval, text, integer, boolean),
                          monitoring.issue_occurrences(text, interval, integer),
                          monitoring.error_trends(interval, interval),
                          monitoring.affected_users(interval, integer),
                          monitoring.first_vs_repeat_errors(interval),
                          monitoring._find_error_group(text), monitoring._user_key(jsonb, jsonb),
                          monitoring._uuid_or_null(text), monitoring.get_partition_stats()
    TO observe_reader;
GRANT INSERT ON monitoring.tb_error_occurrence TO observe_writer;
GRANT EXECUTE ON FUNCTION monitoring.capture_error(jsonb), monitoring.capture_errors(jsonb) TO observe_writer;
-- The capture queue: writers queue, and any of them (or the worker's dispatcher role) may
-- drain it. The queue's rows are not readable but by admins: they are events as sent.
GRANT EXECUTE ON FUNCTION monitoring.queue_error(jsonb), monitoring.process_error_queue(integer) TO observe_writer;
GRANT EXECUTE ON PROCEDURE monitoring.drain_error_queue(integer, integer) TO observe_writer, observe_dispatcher, observe_admin;
GRANT EXECUTE ON FUNCTION monitoring.process_error_queue(integer) TO observe_dispatcher;
REVOKE ALL ON PROCEDURE monitoring.drain_error_queue(integer, integer) FROM PUBLIC;
