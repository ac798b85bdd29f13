-- Included by sql/200_notifications.sql and by the 0.10.0 -> 0.11.0 upgrade, which made it.
-- Whether notification rules are enabled is part of error_capture_state
-- (sql/include/errors_capture_tables.sql): a capture without rules counts a statement's rows
-- at its end, with rules every row as it comes.
CREATE TRIGGER notification_rules_capture_state
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON monitoring.tb_error_notification_config
    FOR EACH STATEMENT EXECUTE FUNCTION monitoring._error_capture_settings_changed();
ALTER TABLE monitoring.tb_error_notification_config ENABLE ALWAYS TRIGGER notification_rules_capture_state;
SELECT monitoring._refresh_error_capture_state();
