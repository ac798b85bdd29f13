-- Privileges of notifications (see 900_privileges.sql for the matrix). Channel configs hold
-- secrets: readers get every rule column but channel_config (and the redacted view), nothing
-- of notification_channel but its names; the dispatcher reaches secrets only through the
-- definer functions it may call.
GRANT SELECT (config_id, description, error_type, error_fingerprint, severity, environment, channel_type,
              min_occurrence_count, notify_on_occurrence, first_seen_only, notify_on_regression,
              frequency_count, frequency_window_minutes, user_count, user_window_minutes,
              rate_limit_minutes, enabled, created_at, severity_levels)
    ON monitoring.tb_error_notification_config TO observe_reader;
GRANT SELECT (channel_type, sender, function_name, description, created_at)
    ON monitoring.notification_channel TO observe_reader;
GRANT SELECT ON monitoring.notification_rules, monitoring.notification_queue, monitoring.notification_queue_status,
                monitoring.notification_state, monitoring.tb_error_notification_log, monitoring.notification_settings
    TO observe_reader;
GRANT EXECUTE ON FUNCTION monitoring._redact_channel_config(jsonb) TO observe_reader;

GRANT USAGE ON SCHEMA monitoring TO observe_dispatcher;
GRANT EXECUTE ON PROCEDURE monitoring.dispatch_notifications(integer, text, integer, integer, integer)
    TO observe_dispatcher;
GRANT EXECUTE ON FUNCTION monitoring._claim_notifications(integer, text, uuid),
                          monitoring._deliver_notifications(uuid, text)
    TO observe_dispatcher;
REVOKE ALL ON PROCEDURE monitoring.dispatch_notifications(integer, text, integer, integer, integer) FROM PUBLIC;
