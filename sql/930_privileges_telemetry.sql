-- Privileges of traces, metrics and business events (see 900_privileges.sql for the matrix).
-- Writers store through the definer functions or by INSERT into the seed's tables; they read
-- nothing. The change log is written by its definer trigger only.
GRANT SELECT ON monitoring.spans, monitoring.traces, monitoring.metrics, monitoring.metric_rollups_1m,
                monitoring.metric_rollup_state, monitoring.tb_entity_change_log, monitoring.tracked_tables,
                monitoring.rejected_telemetry
    TO observe_reader;
GRANT EXECUTE ON FUNCTION monitoring.slowest_operations(interval, text, text, bigint, integer),
                          monitoring.request_rate(interval, interval, text, text),
                          monitoring.operation_error_rates(interval, text, bigint),
                          monitoring.trace_timeline(text),
                          monitoring._otel_trace_id(text), monitoring._otel_span_id(text),
                          monitoring._otel_time(text, text)
    TO observe_reader;

GRANT INSERT ON monitoring.spans, monitoring.traces, monitoring.metrics TO observe_writer;
GRANT EXECUTE ON FUNCTION monitoring.ingest_spans(jsonb), monitoring.ingest_otlp_traces(jsonb),
                          monitoring.record_metrics(jsonb)
    TO observe_writer;

-- Every role that writes a tracked table runs the change-log triggers, which call this; it
-- refuses any caller but them (see sql/330_entity_changes.sql).
GRANT EXECUTE ON FUNCTION monitoring._append_entity_change(regclass, text, jsonb, jsonb, name, text, text[]) TO PUBLIC;
-- and may reach it by name; every table and other function stays closed to PUBLIC
GRANT USAGE ON SCHEMA monitoring TO PUBLIC;

-- A SECURITY DEFINER trigger function attached to a table of one's own would run that table's
-- code (casts, defaults) as pg_observe's owner: only the owner may attach them.
DO $revoke_definer_triggers$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'monitoring'::regnamespace AND p.prosecdef
                AND p.prorettype = 'trigger'::regtype
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM observe_admin', fn);
    END LOOP;
END
$revoke_definer_triggers$;
