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
