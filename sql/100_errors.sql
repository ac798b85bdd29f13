-- Error tracking storage: groups (tb_error_log, one row per fingerprint) and occurrences
-- (tb_error_occurrence, one row per event, partitioned monthly). The table names are the
-- seeds' names, so the seeds' queries run on the real tables; monitoring.errors is the
-- seeds' one-row-per-occurrence view over both. Nothing is stored twice.

CREATE TABLE monitoring.tb_error_log (
    error_id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    error_fingerprint    text        NOT NULL,
    fingerprint_version  smallint    NOT NULL DEFAULT 2,
    fingerprint_method   text        NOT NULL DEFAULT 'message',
    fingerprint_inputs   jsonb,
    error_type           text        NOT NULL,
    error_message        text        NOT NULL DEFAULT '',
    title                text        NOT NULL DEFAULT '',
    culprit              text,
    severity             text        NOT NULL DEFAULT 'error',
    occurrence_count     bigint      NOT NULL DEFAULT 0,
    affected_users       bigint      NOT NULL DEFAULT 0,
    first_seen           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_seen            timestamptz NOT NULL DEFAULT pg_catalog.now(),
    environment          text,
    environments         text[]      NOT NULL DEFAULT '{}',
    services             text[]      NOT NULL DEFAULT '{}',
    release_version      text,
    first_release        text,
    stack_trace          text,
    status               text        NOT NULL DEFAULT 'unresolved',
    resolved_at          timestamptz,
    resolved_by          text,
    resolved_in_release  text,
    regressed_at         timestamptz,
    ignored_until        timestamptz,
    ignored_until_count  bigint,
    assignee             text,
    CONSTRAINT tb_error_log_fingerprint_key UNIQUE (error_fingerprint),
    CONSTRAINT tb_error_log_status_check CHECK (status IN ('unresolved', 'resolved', 'ignored')),
    CONSTRAINT tb_error_log_severity_check
        CHECK (severity IN ('debug', 'info', 'warning', 'error', 'fatal')),
    CONSTRAINT tb_error_log_method_check
        CHECK (fingerprint_method IN ('explicit', 'rule', 'stack', 'message', 'fallback')),
    CONSTRAINT tb_error_log_resolved_has_time CHECK ((status = 'resolved') = (resolved_at IS NOT NULL)),
    CONSTRAINT tb_error_log_ignore_only_when_ignored
        CHECK (status = 'ignored' OR (ignored_until IS NULL AND ignored_until_count IS NULL))
);
COMMENT ON TABLE monitoring.tb_error_log IS 'Error groups (issues): one row per fingerprint';
COMMENT ON COLUMN monitoring.tb_error_log.error_fingerprint IS
    'Grouping key: sha256 of fingerprint_inputs, or the client''s own single-part fingerprint as given';
COMMENT ON COLUMN monitoring.tb_error_log.fingerprint_version IS
    'Version of the fingerprint algorithm that made this group, so the rules can change without silently splitting groups';
COMMENT ON COLUMN monitoring.tb_error_log.fingerprint_inputs IS 'The components that were hashed into the fingerprint';
COMMENT ON COLUMN monitoring.tb_error_log.occurrence_count IS
    'Occurrences folded so far; monitoring.error_groups adds those still pending (concurrent writers)';
COMMENT ON COLUMN monitoring.tb_error_log.status IS 'unresolved, resolved or ignored';
COMMENT ON COLUMN monitoring.tb_error_log.resolved_in_release IS
    'An occurrence from an older release does not reopen the group';
COMMENT ON COLUMN monitoring.tb_error_log.ignored_until IS 'Ignored until this time (NULL with status ignored: forever, or by count)';
COMMENT ON COLUMN monitoring.tb_error_log.ignored_until_count IS 'Ignored until occurrence_count reaches this';

CREATE TABLE monitoring.tb_error_occurrence (
    occurrence_id       uuid        NOT NULL DEFAULT gen_random_uuid(),
    error_id            uuid,
    occurred_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    client_timestamp    timestamptz,
    received_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    event_id            uuid,
    exception_type      text        NOT NULL DEFAULT 'Error',
    message             text        NOT NULL DEFAULT '',
    stack_trace         text,
    frames              jsonb,
    exception_chain     jsonb,
    client_fingerprint  text[],
    context             jsonb,
    tags                jsonb,
    user_info           jsonb,
    request             jsonb,
    environment         text        NOT NULL DEFAULT 'production',
    release_version     text,
    service             text,
    server_name         text,
    transaction_name    text,
    logger              text,
    level               text        NOT NULL DEFAULT 'error',
    trace_id            text,
    span_id             text,
    CONSTRAINT tb_error_occurrence_pkey PRIMARY KEY (occurrence_id, occurred_at),
    CONSTRAINT tb_error_occurrence_level_check CHECK (level IN ('debug', 'info', 'warning', 'error', 'fatal'))
) PARTITION BY RANGE (occurred_at);
COMMENT ON TABLE monitoring.tb_error_occurrence IS
    'Error occurrences: one row per captured event, partitioned monthly by occurred_at (pg_partman); INSERT here is a capture';
COMMENT ON COLUMN monitoring.tb_error_occurrence.error_id IS 'Group (tb_error_log) of this occurrence, set by the capture trigger';
COMMENT ON COLUMN monitoring.tb_error_occurrence.occurred_at IS
    'When it happened: the client''s time, unless that was implausible (then the time received)';
COMMENT ON COLUMN monitoring.tb_error_occurrence.client_timestamp IS 'The client''s own timestamp, as sent';
COMMENT ON COLUMN monitoring.tb_error_occurrence.received_at IS 'When the database stored it';
COMMENT ON COLUMN monitoring.tb_error_occurrence.event_id IS 'The client''s event id: an event id already stored is not stored again';
COMMENT ON COLUMN monitoring.tb_error_occurrence.frames IS 'Structured frames of the main exception, innermost last (parsed from stack_trace when not given)';
COMMENT ON COLUMN monitoring.tb_error_occurrence.exception_chain IS 'Chained exceptions (causes), Sentry order: the raised one last';
COMMENT ON COLUMN monitoring.tb_error_occurrence.client_fingerprint IS 'Fingerprint parts sent by the client ({{ default }} allowed)';

CREATE INDEX tb_error_occurrence_error_id_idx ON monitoring.tb_error_occurrence (error_id, occurred_at DESC);
CREATE INDEX tb_error_occurrence_occurred_at_idx ON monitoring.tb_error_occurrence (occurred_at DESC);
CREATE INDEX tb_error_occurrence_trace_id_idx ON monitoring.tb_error_occurrence (trace_id)
    WHERE trace_id IS NOT NULL;

-- Counters of concurrent captures waiting to be folded into tb_error_log (see the trigger).
CREATE TABLE monitoring.error_group_pending (
    error_id     uuid        NOT NULL REFERENCES monitoring.tb_error_log ON DELETE CASCADE,
    occurrences  bigint      NOT NULL,
    new_users    bigint      NOT NULL DEFAULT 0,
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    environment  text,
    environments text[]      NOT NULL DEFAULT '{}',
    services     text[]      NOT NULL DEFAULT '{}',
    release_version text
);
CREATE INDEX error_group_pending_error_id_idx ON monitoring.error_group_pending (error_id);
COMMENT ON TABLE monitoring.error_group_pending IS
    'Counter deltas written when another transaction holds a group''s row; folded by the next capture or run_maintenance()';

-- No foreign key to tb_error_log: nearly every occurrence of a busy service brings a user
-- new to its group, and the key's check cost a query per user (3 µs of a 100,000-row COPY's
-- rows, about a third of the fold). The triggers below delete a deleted group's users.
CREATE TABLE monitoring.error_group_user (
    error_id    uuid        NOT NULL,
    user_key    text        COLLATE pg_catalog."C" NOT NULL,   -- compared byte-wise: a key, not prose
    first_seen  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (error_id, user_key)
);
COMMENT ON TABLE monitoring.error_group_user IS 'Distinct users per group (user id, e-mail, ip or context.user_id), for affected_users';
-- @include sql/include/errors_group_user_cleanup.sql

CREATE TABLE monitoring.error_activity (
    activity_id  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    error_id     uuid        NOT NULL REFERENCES monitoring.tb_error_log ON DELETE CASCADE,
    action       text        NOT NULL,
    actor        text,
    details      jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT error_activity_action_check CHECK (action IN
        ('first_seen', 'resolve', 'unresolve', 'ignore', 'unignore', 'assign', 'unassign', 'regression'))
);
CREATE INDEX error_activity_error_id_idx ON monitoring.error_activity (error_id, created_at DESC);
COMMENT ON TABLE monitoring.error_activity IS 'Who changed an issue''s state, when and how (resolve, ignore, assign, regression, ...)';

CREATE TABLE monitoring.error_fingerprint_rule (
    rule_id            integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    position           integer     NOT NULL DEFAULT 100,
    match_type         text,
    match_message      text,
    match_module       text,
    match_function     text,
    match_path         text,
    match_environment  text,
    match_tags         jsonb,
    fingerprint        text[],
    title              text,
    enabled            boolean     NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT error_fingerprint_rule_has_outcome CHECK (fingerprint IS NOT NULL OR title IS NOT NULL),
    CONSTRAINT error_fingerprint_rule_tags_object CHECK (match_tags IS NULL OR jsonb_typeof(match_tags) = 'object')
);
COMMENT ON TABLE monitoring.error_fingerprint_rule IS
    'Server-side grouping rules: glob patterns on type, message, module, function, path, environment, tags -> a fingerprint or a group title; lowest position first';

-- A case-insensitive regular expression that finds the word in JSON text with separators (or
-- JSON-escaped whitespace) between its letters: the capture trigger's cheap test for "could
-- the scrubber have anything to do here".
CREATE FUNCTION monitoring._scrub_word_pattern(p_word text)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.string_agg(pg_catalog.regexp_replace(c, '([^a-z0-9])', '\\\1'), '(?:[-_\s]|\\[tnr])*')
    FROM pg_catalog.regexp_split_to_table(pg_catalog.regexp_replace(pg_catalog.lower(p_word), '[-_\s]', '', 'g'), '') c
$$;
COMMENT ON FUNCTION monitoring._scrub_word_pattern(text) IS 'Regular expression finding a scrub word in JSON text, separators allowed';

CREATE TABLE monitoring.error_scrub_key (
    key_word     text    PRIMARY KEY,
    builtin      boolean NOT NULL DEFAULT false,
    key_pattern  text    GENERATED ALWAYS AS (monitoring._scrub_word_pattern(key_word)) STORED,
    CONSTRAINT error_scrub_key_not_empty CHECK (pg_catalog.regexp_replace(key_word, '[-_\s]', '', 'g') <> '')
);
COMMENT ON COLUMN monitoring.error_scrub_key.key_pattern IS 'The word as a separator-tolerant regular expression (generated)';
COMMENT ON TABLE monitoring.error_scrub_key IS
    'Values under keys containing these words (case and - _ ignored) are stored as [Filtered]';
INSERT INTO monitoring.error_scrub_key (key_word, builtin)
SELECT w, true FROM pg_catalog.unnest(ARRAY['password', 'passwd', 'pwd', 'secret', 'token', 'authorization',
    'cookie', 'api_key', 'apikey', 'credentials', 'private_key', 'session', 'credit_card', 'card_number', 'cvv',
    'ssn']) AS w;

-- Event ids seen recently, so that a retried send is stored once (kept 30 days).
CREATE TABLE monitoring.error_event_seen (
    event_id  uuid        PRIMARY KEY,
    seen_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE monitoring.error_event_seen IS 'Event ids stored in the last 30 days, to drop duplicates';

-- @include sql/include/errors_fingerprint_cache.sql
-- @include sql/include/errors_queue_tables.sql
-- @include sql/include/errors_capture_tables.sql

-- User data and configuration survive pg_dump (partitions of tb_error_occurrence are not
-- extension members, so pg_dump keeps them anyway).
SELECT pg_catalog.pg_extension_config_dump('monitoring.tb_error_log', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_group_pending', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_group_user', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_activity', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_fingerprint_rule', '');
-- pg_dump keeps a member sequence's value only when told to: restored ids must not be handed out again
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_activity_activity_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_fingerprint_rule_rule_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_scrub_key', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_event_seen', '');

-- @include sql/include/errors_functions.sql
-- @include sql/include/errors_queue.sql
-- @include sql/include/errors_workflow.sql
-- @include sql/include/errors_partitions.sql

-- @include sql/include/errors_capture_trigger.sql

SELECT monitoring._create_time_series(
    p_parent_table => 'monitoring.tb_error_occurrence',
    p_control_column => 'occurred_at',
    p_partition_interval => interval '1 month',
    p_retention => interval '6 months',
    p_premake => 4,
    p_original_time_column => 'client_timestamp');

INSERT INTO monitoring.maintenance_task (task_name, function_name, run_order) VALUES
    ('fold_error_counters', 'monitoring._fold_all_error_counters', 10),
    ('expire_error_event_ids', 'monitoring._expire_error_event_ids', 20);
