-- Error tracking storage: groups (tb_error_log, one row per fingerprint) and occurrences
-- (tb_error_occurrence, one row per event, partitioned monthly). The table names are the
-- seeds' names, so the seeds' queries run on the real tables; monitoring.errors is the
-- seeds' one-row-per-occurrence view over both. Nothing is stored twice.

CREATE TABLE monitoring.tb_error_log (
    error_id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    error_fingerprint    text        NOT NULL,
    fingerprint_version  smallint    NOT NULL DEFAULT 1,
    error_type           text        NOT NULL,
    error_message        text        NOT NULL DEFAULT '',
    severity             text        NOT NULL DEFAULT 'error',
    occurrence_count     bigint      NOT NULL DEFAULT 0,
    first_seen           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_seen            timestamptz NOT NULL DEFAULT pg_catalog.now(),
    environment          text,
    release_version      text,
    stack_trace          text,
    status               text        NOT NULL DEFAULT 'unresolved',
    resolved_at          timestamptz,
    assignee             text,
    CONSTRAINT tb_error_log_fingerprint_key UNIQUE (error_fingerprint),
    CONSTRAINT tb_error_log_status_check CHECK (status IN ('unresolved', 'resolved', 'ignored')),
    CONSTRAINT tb_error_log_severity_check
        CHECK (severity IN ('debug', 'info', 'warning', 'error', 'fatal')),
    CONSTRAINT tb_error_log_resolved_has_time CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);
COMMENT ON TABLE monitoring.tb_error_log IS 'Error groups (issues): one row per fingerprint';
COMMENT ON COLUMN monitoring.tb_error_log.error_fingerprint IS 'Grouping key computed by the capture trigger';
COMMENT ON COLUMN monitoring.tb_error_log.fingerprint_version IS
    'Version of the fingerprint algorithm that made this group, so the rules can change without silently splitting groups';
COMMENT ON COLUMN monitoring.tb_error_log.status IS 'unresolved, resolved or ignored';

CREATE TABLE monitoring.tb_error_occurrence (
    occurrence_id     uuid        NOT NULL DEFAULT gen_random_uuid(),
    error_id          uuid        NOT NULL,
    occurred_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    client_timestamp  timestamptz,
    received_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    event_id          uuid,
    exception_type    text        NOT NULL,
    message           text        NOT NULL DEFAULT '',
    stack_trace       text,
    frames            jsonb,
    context           jsonb,
    tags              jsonb,
    user_info         jsonb,
    request           jsonb,
    environment       text        NOT NULL DEFAULT 'production',
    release_version   text,
    service           text,
    level             text        NOT NULL DEFAULT 'error',
    trace_id          text,
    span_id           text,
    CONSTRAINT tb_error_occurrence_pkey PRIMARY KEY (occurrence_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
COMMENT ON TABLE monitoring.tb_error_occurrence IS
    'Error occurrences: one row per captured event, partitioned monthly by occurred_at (pg_partman)';
COMMENT ON COLUMN monitoring.tb_error_occurrence.error_id IS 'Group (tb_error_log) of this occurrence, set by the capture trigger';
COMMENT ON COLUMN monitoring.tb_error_occurrence.occurred_at IS
    'When it happened: the client''s time, unless that was implausible (then the time received)';
COMMENT ON COLUMN monitoring.tb_error_occurrence.client_timestamp IS 'The client''s own timestamp, as sent';
COMMENT ON COLUMN monitoring.tb_error_occurrence.received_at IS 'When the database stored it';

CREATE INDEX tb_error_occurrence_error_id_idx ON monitoring.tb_error_occurrence (error_id, occurred_at DESC);
CREATE INDEX tb_error_occurrence_trace_id_idx ON monitoring.tb_error_occurrence (trace_id)
    WHERE trace_id IS NOT NULL;

-- Normalises a message so that ids and numbers do not split a group.
CREATE FUNCTION monitoring._normalize_message(p_message text)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = ''
AS $$
    SELECT pg_catalog.regexp_replace(
        pg_catalog.regexp_replace(
            pg_catalog.left(COALESCE(p_message, ''), 1000),
            '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}', '<uuid>', 'g'),
        '\d+(\.\d+)?', '<num>', 'g')
$$;
COMMENT ON FUNCTION monitoring._normalize_message(text) IS 'Message with UUIDs and numbers replaced by placeholders';

-- Before each occurrence row: find or create its group, and count it.
CREATE FUNCTION monitoring._error_occurrence_group()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    fingerprint text := pg_catalog.md5(NEW.exception_type OPERATOR(pg_catalog.||) pg_catalog.chr(10)
                        OPERATOR(pg_catalog.||) monitoring._normalize_message(NEW.message));
BEGIN
    INSERT INTO monitoring.tb_error_log AS g
        (error_fingerprint, error_type, error_message, severity, occurrence_count, first_seen, last_seen,
         environment, release_version, stack_trace)
    VALUES (fingerprint, NEW.exception_type, NEW.message, NEW.level, 1, NEW.occurred_at, NEW.occurred_at,
            NEW.environment, NEW.release_version, NEW.stack_trace)
    ON CONFLICT (error_fingerprint) DO UPDATE
        SET occurrence_count = g.occurrence_count OPERATOR(pg_catalog.+) 1,
            last_seen = GREATEST(g.last_seen, excluded.last_seen),
            first_seen = LEAST(g.first_seen, excluded.first_seen),
            environment = excluded.environment,
            release_version = COALESCE(excluded.release_version, g.release_version)
    RETURNING g.error_id INTO NEW.error_id;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION monitoring._error_occurrence_group() IS
    'Trigger: fingerprints an occurrence, upserts its group in tb_error_log and links the row to it';

CREATE TRIGGER error_occurrence_group
    BEFORE INSERT ON monitoring.tb_error_occurrence
    FOR EACH ROW EXECUTE FUNCTION monitoring._error_occurrence_group();

SELECT monitoring._create_time_series(
    p_parent_table => 'monitoring.tb_error_occurrence',
    p_control_column => 'occurred_at',
    p_partition_interval => interval '1 month',
    p_retention => interval '6 months',
    p_premake => 4,
    p_original_time_column => 'client_timestamp');

-- Captures one event given as JSON (the client's write call). Returns the occurrence id.
CREATE FUNCTION monitoring.capture_error(p_event jsonb)
    RETURNS uuid
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    occurrence uuid := gen_random_uuid();
    client_time timestamptz;
BEGIN
    IF p_event IS NULL OR pg_catalog.jsonb_typeof(p_event) OPERATOR(pg_catalog.<>) 'object' THEN
        RAISE EXCEPTION 'capture_error expects a JSON object, got %', COALESCE(pg_catalog.jsonb_typeof(p_event), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        client_time := (p_event OPERATOR(pg_catalog.->>) 'timestamp')::timestamptz;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
        client_time := NULL;
    END;
    INSERT INTO monitoring.tb_error_occurrence
        (occurrence_id, occurred_at, client_timestamp, exception_type, message, stack_trace, frames, context,
         environment, release_version, service, level, trace_id, span_id)
    VALUES (occurrence,
            COALESCE(client_time, pg_catalog.now()),
            client_time,
            COALESCE(NULLIF(p_event OPERATOR(pg_catalog.->>) 'exception_type', ''), 'Error'),
            COALESCE(p_event OPERATOR(pg_catalog.->>) 'message', ''),
            p_event OPERATOR(pg_catalog.->>) 'stack_trace',
            p_event OPERATOR(pg_catalog.->) 'frames',
            p_event OPERATOR(pg_catalog.->) 'context',
            COALESCE(p_event OPERATOR(pg_catalog.->>) 'environment', 'production'),
            p_event OPERATOR(pg_catalog.->>) 'release',
            p_event OPERATOR(pg_catalog.->>) 'service',
            COALESCE(p_event OPERATOR(pg_catalog.->>) 'level', 'error'),
            p_event OPERATOR(pg_catalog.->>) 'trace_id',
            p_event OPERATOR(pg_catalog.->>) 'span_id');
    RETURN occurrence;
END
$$;
COMMENT ON FUNCTION monitoring.capture_error(jsonb) IS
    'Stores one error event given as a JSON object (exception_type, message, stack_trace, frames, context, environment, release, service, level, trace_id, span_id, timestamp)';

-- The seeds' one-row-per-occurrence view.
CREATE VIEW monitoring.errors AS
SELECT o.occurrence_id AS id,
       g.error_fingerprint AS fingerprint,
       o.exception_type,
       o.message,
       o.stack_trace,
       o.context,
       o.environment,
       o.trace_id,
       o.span_id,
       o.occurred_at,
       g.resolved_at,
       g.status = 'ignored' AS ignored,
       g.assignee,
       o.error_id,
       o.release_version,
       o.service,
       o.level
FROM monitoring.tb_error_occurrence o
JOIN monitoring.tb_error_log g ON g.error_id = o.error_id;
COMMENT ON VIEW monitoring.errors IS
    'One row per error occurrence with its group''s fingerprint and workflow state (the seeds'' monitoring.errors)';
