-- Privileges of error tracking (see 900_privileges.sql for the matrix).
GRANT SELECT ON monitoring.tb_error_log, monitoring.tb_error_occurrence, monitoring.errors TO observe_reader;
GRANT INSERT ON monitoring.tb_error_occurrence TO observe_writer;
GRANT EXECUTE ON FUNCTION monitoring.capture_error(jsonb) TO observe_writer;
