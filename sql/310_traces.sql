-- Traces: one row per OpenTelemetry span, partitioned daily by start_time (30 days).
-- monitoring.traces is seed 000's name and columns over it: the seed's table made trace_id
-- its primary key, which allows one span per trace.

CREATE TABLE monitoring.spans (
    trace_id           text             NOT NULL,
    span_id            text             NOT NULL,
    parent_span_id     text,
    trace_state        text,
    service            text             NOT NULL DEFAULT 'unknown_service',
    operation_name     text             NOT NULL,
    kind               text             NOT NULL DEFAULT 'internal',
    start_time         timestamptz      NOT NULL,
    end_time           timestamptz      NOT NULL,
    duration_ms        double precision NOT NULL,
    status_code        smallint         NOT NULL DEFAULT 0,
    status_message     text,
    attributes         jsonb            NOT NULL DEFAULT '{}',
    events             jsonb            NOT NULL DEFAULT '[]',
    links              jsonb            NOT NULL DEFAULT '[]',
    resource           jsonb            NOT NULL DEFAULT '{}',
    scope              jsonb,
    environment        text             NOT NULL DEFAULT 'production',
    repairs            text[],
    client_start_time  timestamptz,
    received_at        timestamptz      NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT spans_pkey PRIMARY KEY (trace_id, span_id, start_time),
    -- lengths and unbounded patterns: a bounded {32} costs the regex engine four times as much
    CONSTRAINT spans_trace_id_check CHECK (length(trace_id) = 32 AND trace_id ~ '^[0-9a-f]+$'),
    CONSTRAINT spans_span_id_check CHECK (length(span_id) = 16 AND span_id ~ '^[0-9a-f]+$'),
    CONSTRAINT spans_parent_span_id_check CHECK (length(parent_span_id) = 16 AND parent_span_id ~ '^[0-9a-f]+$'),
    CONSTRAINT spans_kind_check CHECK (kind IN ('unspecified', 'internal', 'server', 'client', 'producer', 'consumer')),
    CONSTRAINT spans_status_code_check CHECK (status_code IN (0, 1, 2)),
    CONSTRAINT spans_duration_check CHECK (duration_ms >= 0)
) PARTITION BY RANGE (start_time);
COMMENT ON TABLE monitoring.spans IS
    'OpenTelemetry spans, one row each, partitioned daily by start_time (pg_partman, 30 days); a span sent twice is stored once';
COMMENT ON COLUMN monitoring.spans.trace_id IS '32 lower-case hex digits; joins errors (tb_error_occurrence.trace_id) and changes';
COMMENT ON COLUMN monitoring.spans.span_id IS '16 lower-case hex digits';
COMMENT ON COLUMN monitoring.spans.parent_span_id IS 'The parent span; NULL for a root span';
COMMENT ON COLUMN monitoring.spans.service IS 'The resource''s service.name';
COMMENT ON COLUMN monitoring.spans.operation_name IS 'The span''s name (at most 1,024 characters: longer ones are cut)';
COMMENT ON COLUMN monitoring.spans.kind IS 'unspecified, internal, server, client, producer or consumer';
COMMENT ON COLUMN monitoring.spans.duration_ms IS 'end_time - start_time in milliseconds';
COMMENT ON COLUMN monitoring.spans.status_code IS 'OpenTelemetry status: 0 unset, 1 ok, 2 error';
COMMENT ON COLUMN monitoring.spans.attributes IS 'Span attributes as a JSON object';
COMMENT ON COLUMN monitoring.spans.events IS 'Span events: [{name, time_unix_nano, attributes}]';
COMMENT ON COLUMN monitoring.spans.links IS 'Links to other spans: [{trace_id, span_id, trace_state, attributes}]';
COMMENT ON COLUMN monitoring.spans.resource IS 'Resource attributes (service.name, deployment.environment, host.name, ...)';
COMMENT ON COLUMN monitoring.spans.scope IS 'Instrumentation scope: {name, version}';
COMMENT ON COLUMN monitoring.spans.environment IS 'The resource''s deployment.environment[.name], else production';
COMMENT ON COLUMN monitoring.spans.repairs IS 'What ingestion repaired in this span (see docs/tracing.md), NULL if nothing';
COMMENT ON COLUMN monitoring.spans.client_start_time IS
    'The start time as sent, when it was implausible and start_time was moved to the time received';

CREATE INDEX spans_start_time_idx ON monitoring.spans (start_time);
CREATE INDEX spans_operation_name_idx ON monitoring.spans (operation_name, start_time);

CREATE VIEW monitoring.traces AS
SELECT trace_id, span_id, parent_span_id, operation_name, start_time, end_time, duration_ms, status_code,
       status_message, attributes, events, links, resource, environment, received_at AS created_at,
       service, kind
FROM monitoring.spans;
COMMENT ON VIEW monitoring.traces IS
    'Seed 000''s monitoring.traces: one row per span (not per trace) with the seed''s columns, over monitoring.spans';

-- @include sql/include/traces_ingest.sql

SELECT monitoring._create_time_series(
    p_parent_table => 'monitoring.spans',
    p_control_column => 'start_time',
    p_partition_interval => interval '1 day',
    p_retention => interval '30 days',
    p_premake => 4,
    p_original_time_column => 'client_start_time');
