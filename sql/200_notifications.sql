-- Notifications: rules are rows (tb_error_notification_config, the seeds' table), evaluated
-- by the capture in the same transaction as the occurrence; a match becomes a row of
-- notification_queue (a transactional outbox) and a pg_notify on channel
-- pg_observe_notification. dispatch_notifications() claims due rows, sends them with the
-- PL/Python senders and logs every attempt in tb_error_notification_log (partitioned).
--
-- Functions of this capability set search_path to pg_catalog, pg_temp and use plain operators:
-- only pg_catalog's operators and functions can be found (pg_temp is never searched for them).

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'observe_dispatcher') THEN
        CREATE ROLE observe_dispatcher NOLOGIN;
    END IF;
END
$roles$;
COMMENT ON ROLE observe_dispatcher IS
    'pg_observe: may run dispatch_notifications() (the worker and the pg_cron job); reads channel secrets only through it';
GRANT observe_dispatcher TO observe_admin;

-- Severity names a rule may use: the levels of tb_error_occurrence plus the usual aliases
-- (the seed writes ARRAY['error', 'critical']).
CREATE FUNCTION monitoring._notification_levels(p_severity text[])
    RETURNS text[]
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.array_agg(DISTINCT CASE pg_catalog.lower(s)
               WHEN 'critical' THEN 'fatal' WHEN 'warn' THEN 'warning' WHEN 'err' THEN 'error'
               ELSE pg_catalog.lower(s) END)
    FROM pg_catalog.unnest(p_severity) s
$$;
COMMENT ON FUNCTION monitoring._notification_levels(text[]) IS
    'Rule severities as occurrence levels: lower case, critical -> fatal, warn -> warning';

CREATE TABLE monitoring.tb_error_notification_config (
    config_id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    description               text,
    -- which errors (NULL or an empty array: any)
    error_type                text,
    error_fingerprint         text,
    severity                  text[],
    environment               text[],
    -- where to
    channel_type              text        NOT NULL DEFAULT 'webhook',
    channel_config            jsonb       NOT NULL DEFAULT '{}',
    -- when
    min_occurrence_count      integer     NOT NULL DEFAULT 1,
    notify_on_occurrence      integer[],
    first_seen_only           boolean     NOT NULL DEFAULT false,
    notify_on_regression      boolean     NOT NULL DEFAULT true,
    frequency_count           integer,
    frequency_window_minutes  integer,
    user_count                integer,
    user_window_minutes       integer,
    rate_limit_minutes        integer     NOT NULL DEFAULT 0,
    enabled                   boolean     NOT NULL DEFAULT true,
    created_at                timestamptz NOT NULL DEFAULT pg_catalog.now(),
    severity_levels           text[]      GENERATED ALWAYS AS (monitoring._notification_levels(severity)) STORED,
    CONSTRAINT tb_error_notification_config_severity_known
        CHECK (severity_levels <@ ARRAY['debug', 'info', 'warning', 'error', 'fatal']),
    CONSTRAINT tb_error_notification_config_channel_named CHECK (channel_type ~ '^[A-Za-z0-9_.-]{1,63}$'),
    CONSTRAINT tb_error_notification_config_config_object CHECK (jsonb_typeof(channel_config) = 'object'),
    CONSTRAINT tb_error_notification_config_min_count CHECK (min_occurrence_count >= 1),
    CONSTRAINT tb_error_notification_config_thresholds CHECK (0 < ALL (notify_on_occurrence)),
    CONSTRAINT tb_error_notification_config_rate_limit CHECK (rate_limit_minutes >= 0),
    CONSTRAINT tb_error_notification_config_frequency
        CHECK ((frequency_count IS NULL) = (frequency_window_minutes IS NULL)
               AND frequency_count >= 1 AND frequency_window_minutes >= 1),
    CONSTRAINT tb_error_notification_config_users
        CHECK ((user_count IS NULL) = (user_window_minutes IS NULL) AND user_count >= 1 AND user_window_minutes >= 1)
);
COMMENT ON TABLE monitoring.tb_error_notification_config IS
    'Notification rules (seed-compatible): which errors, which channel, and when; evaluated by every capture';
COMMENT ON COLUMN monitoring.tb_error_notification_config.error_type IS 'Exception type to match exactly; NULL: any';
COMMENT ON COLUMN monitoring.tb_error_notification_config.error_fingerprint IS 'One group (tb_error_log.error_fingerprint); NULL: any';
COMMENT ON COLUMN monitoring.tb_error_notification_config.severity IS
    'Levels to match (debug, info, warning, error, fatal; critical means fatal); NULL or empty: any';
COMMENT ON COLUMN monitoring.tb_error_notification_config.environment IS 'Environments to match; NULL or empty: any';
COMMENT ON COLUMN monitoring.tb_error_notification_config.channel_type IS
    'email, slack, webhook, pagerduty, or a channel registered in notification_channel';
COMMENT ON COLUMN monitoring.tb_error_notification_config.channel_config IS
    'Channel settings for this rule, laid over the channel''s own (notification_channel.settings); may hold secrets';
COMMENT ON COLUMN monitoring.tb_error_notification_config.min_occurrence_count IS
    'Notify when the group''s count reaches this (1: its first occurrence)';
COMMENT ON COLUMN monitoring.tb_error_notification_config.notify_on_occurrence IS
    'More counts to notify at, e.g. {1,10,100,1000}';
COMMENT ON COLUMN monitoring.tb_error_notification_config.first_seen_only IS
    'Notify only for the occurrence that creates a group (and regressions, if notify_on_regression)';
COMMENT ON COLUMN monitoring.tb_error_notification_config.notify_on_regression IS 'Notify when a resolved group comes back';
COMMENT ON COLUMN monitoring.tb_error_notification_config.frequency_count IS
    'Notify when a group has more than this many occurrences in frequency_window_minutes (replaces the count thresholds)';
COMMENT ON COLUMN monitoring.tb_error_notification_config.user_count IS
    'Notify when more than this many distinct users hit a group in user_window_minutes (replaces the count thresholds)';
COMMENT ON COLUMN monitoring.tb_error_notification_config.rate_limit_minutes IS
    'Per-group throttle: after a notification, at most one more per this many minutes while the group keeps occurring; 0: none after the thresholds';
COMMENT ON COLUMN monitoring.tb_error_notification_config.severity_levels IS 'severity, normalised to occurrence levels';

CREATE INDEX tb_error_notification_config_enabled_idx ON monitoring.tb_error_notification_config (config_id) WHERE enabled;

-- Channels: the senders behind each channel_type and their shared settings (SMTP server,
-- credentials, default webhook): secrets belong here, readable by admins and the dispatcher.
CREATE TABLE monitoring.notification_channel (
    channel_type   text        PRIMARY KEY,
    sender         text        NOT NULL,
    settings       jsonb       NOT NULL DEFAULT '{}',
    function_name  regprocedure,
    description    text,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT notification_channel_named CHECK (channel_type ~ '^[A-Za-z0-9_.-]{1,63}$'),
    CONSTRAINT notification_channel_sender_check CHECK (sender IN ('email', 'slack', 'webhook', 'pagerduty', 'function')),
    CONSTRAINT notification_channel_function_given CHECK ((sender = 'function') = (function_name IS NOT NULL)),
    CONSTRAINT notification_channel_settings_object CHECK (jsonb_typeof(settings) = 'object')
);
COMMENT ON TABLE monitoring.notification_channel IS
    'Notification channels: the sender of each channel_type and its shared settings, secrets included (admins only)';
COMMENT ON COLUMN monitoring.notification_channel.sender IS
    'email, slack, webhook, pagerduty (PL/Python senders) or function (function_name is called)';
COMMENT ON COLUMN monitoring.notification_channel.function_name IS
    'Custom sender: a function (notification jsonb, config jsonb) returning (success boolean, error text) or boolean';
-- No rows at install (so that pg_dump restores them without conflicts): a rule whose
-- channel_type is email, slack, webhook or pagerduty and has no row here uses that sender
-- with the rule's channel_config alone.

-- Delivery settings, one row, made with the defaults at first use (not at install, so that
-- pg_dump restores an edited row without a conflict).
CREATE TABLE monitoring.notification_settings (
    settings_id       boolean     PRIMARY KEY DEFAULT true,
    max_attempts      integer     NOT NULL DEFAULT 8,
    retry_base        interval    NOT NULL DEFAULT '30 seconds',
    retry_max         interval    NOT NULL DEFAULT '1 hour',
    claim_timeout     interval    NOT NULL DEFAULT '5 minutes',
    send_timeout      interval    NOT NULL DEFAULT '10 seconds',
    batch_size        integer     NOT NULL DEFAULT 100,
    max_parallel      integer     NOT NULL DEFAULT 8,
    keep_sent         interval    NOT NULL DEFAULT '7 days',
    keep_dead         interval    NOT NULL DEFAULT '30 days',
    CONSTRAINT notification_settings_one_row CHECK (settings_id),
    CONSTRAINT notification_settings_attempts CHECK (max_attempts BETWEEN 1 AND 100),
    CONSTRAINT notification_settings_retry CHECK (retry_base > interval '0' AND retry_max >= retry_base),
    CONSTRAINT notification_settings_timeouts
        CHECK (send_timeout BETWEEN interval '100 milliseconds' AND interval '60 seconds'
               AND claim_timeout >= interval '10 seconds'),
    CONSTRAINT notification_settings_batch CHECK (batch_size BETWEEN 1 AND 1000 AND max_parallel BETWEEN 1 AND 32)
);
COMMENT ON TABLE monitoring.notification_settings IS
    'Delivery settings (one row): attempts, exponential backoff, claim expiry, send timeout, batch size, parallel sends, queue retention';
COMMENT ON COLUMN monitoring.notification_settings.claim_timeout IS
    'A claimed message whose dispatcher died is claimed again after this; keep it above a batch''s sending time';

-- Per rule and group: what was notified last, so thresholds fire once and throttles hold.
CREATE TABLE monitoring.notification_state (
    error_id           uuid        NOT NULL REFERENCES monitoring.tb_error_log ON DELETE CASCADE,
    config_id          uuid        NOT NULL REFERENCES monitoring.tb_error_notification_config ON DELETE CASCADE,
    last_trigger       text        NOT NULL,
    last_threshold     bigint      NOT NULL DEFAULT 0,
    last_regressed_at  timestamptz,
    last_notified_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    throttled_until    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    notifications      bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (error_id, config_id)
);
COMMENT ON TABLE monitoring.notification_state IS
    'Per rule and group: the last notification, the highest count threshold notified, and the throttle';
CREATE INDEX notification_state_config_id_idx ON monitoring.notification_state (config_id);

-- What the next capture of a group (per environment and level) must reach before any rule
-- could fire: a count or a time. A capture below both skips the rules' evaluation, which
-- keeps the cost of many rules off the steady state. A cache: UNLOGGED, emptied whenever
-- the rules change, and forgotten per group when its notification state changes.
CREATE UNLOGGED TABLE monitoring.notification_watch (
    error_id     uuid        NOT NULL,
    environment  text        NOT NULL,
    level        text        NOT NULL,
    next_count   bigint      NOT NULL,
    next_at      timestamptz NOT NULL,
    PRIMARY KEY (error_id, environment, level)
);
COMMENT ON TABLE monitoring.notification_watch IS
    'Cache: per group, environment and level, the count and the time before which no notification rule can fire';

-- The outbox. A row per (rule, triggering event): its idempotency key is unique, so a retry
-- of the same capture or two captures racing enqueue it once.
CREATE TABLE monitoring.notification_queue (
    queue_id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key       uuid        NOT NULL,
    config_id             uuid        NOT NULL REFERENCES monitoring.tb_error_notification_config ON DELETE CASCADE,
    error_id              uuid        NOT NULL REFERENCES monitoring.tb_error_log ON DELETE CASCADE,
    occurrence_id         uuid,
    notification_trigger  text        NOT NULL,
    threshold             bigint,
    payload               jsonb       NOT NULL,
    status                text        NOT NULL DEFAULT 'pending',
    attempts              integer     NOT NULL DEFAULT 0,
    next_attempt_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    claimed_by            text,
    claim_token           uuid,
    last_error            text,
    queued_at             timestamptz NOT NULL DEFAULT pg_catalog.now(),
    sent_at               timestamptz,
    CONSTRAINT notification_queue_idempotency_key UNIQUE (idempotency_key),
    CONSTRAINT notification_queue_status_check CHECK (status IN ('pending', 'sending', 'sent', 'dead')),
    CONSTRAINT notification_queue_trigger_check
        CHECK (notification_trigger IN ('new', 'threshold', 'regression', 'repeat', 'frequency', 'users', 'test'))
);
COMMENT ON TABLE monitoring.notification_queue IS
    'Outbox of notifications: pending, sending (claimed until next_attempt_at), sent, or dead after max_attempts';
COMMENT ON COLUMN monitoring.notification_queue.idempotency_key IS
    'Stable per rule and triggering event; sent with every attempt so receivers can drop duplicates';
COMMENT ON COLUMN monitoring.notification_queue.next_attempt_at IS
    'pending: when it is due (backoff); sending: when the claim expires and another dispatcher may take it';
CREATE INDEX notification_queue_due_idx ON monitoring.notification_queue (next_attempt_at)
    WHERE status IN ('pending', 'sending');
CREATE INDEX notification_queue_error_id_idx ON monitoring.notification_queue (error_id);
CREATE INDEX notification_queue_config_id_idx ON monitoring.notification_queue (config_id);

-- The delivery log: one row per attempt (seed columns first), partitioned monthly.
CREATE TABLE monitoring.tb_error_notification_log (
    notification_id       uuid        NOT NULL DEFAULT gen_random_uuid(),
    config_id             uuid        NOT NULL,
    error_id              uuid        NOT NULL,
    sent_at               timestamptz NOT NULL DEFAULT pg_catalog.now(),
    channel_type          text        NOT NULL,
    recipient             text,
    status                text        NOT NULL,
    error_message         text,
    queue_id              bigint,
    idempotency_key       uuid,
    attempt               integer,
    notification_trigger  text,
    status_code           integer,
    duration_ms           double precision,
    dispatcher            text,
    CONSTRAINT tb_error_notification_log_pkey PRIMARY KEY (notification_id, sent_at),
    CONSTRAINT tb_error_notification_log_status_check CHECK (status IN ('sent', 'failed'))
) PARTITION BY RANGE (sent_at);
COMMENT ON TABLE monitoring.tb_error_notification_log IS
    'Delivery log (seed-compatible): one row per attempt to send a notification, partitioned monthly (pg_partman)';
COMMENT ON COLUMN monitoring.tb_error_notification_log.status IS 'sent or failed (the queue row says whether it will be retried or is dead)';
COMMENT ON COLUMN monitoring.tb_error_notification_log.error_message IS 'Why the attempt failed; NULL if it was sent';
CREATE INDEX tb_error_notification_log_error_id_idx ON monitoring.tb_error_notification_log (error_id, sent_at DESC);
CREATE INDEX tb_error_notification_log_sent_at_idx ON monitoring.tb_error_notification_log (sent_at DESC);

SELECT monitoring._create_time_series('monitoring.tb_error_notification_log', 'sent_at', interval '1 month',
                                      interval '6 months');

SELECT pg_catalog.pg_extension_config_dump('monitoring.tb_error_notification_config', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.notification_channel', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.notification_settings', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.notification_state', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.notification_queue', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.notification_queue_queue_id_seq', '');

-- @include sql/include/notify_functions.sql
-- @include sql/include/notify_delivery.sql

INSERT INTO monitoring.maintenance_task (task_name, function_name, run_order) VALUES
    ('expire_notification_queue', 'monitoring._expire_notification_queue', 40);

CREATE TRIGGER notification_rules_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON monitoring.tb_error_notification_config
    FOR EACH STATEMENT EXECUTE FUNCTION monitoring._forget_notification_watch();
CREATE TRIGGER notification_state_changed
    AFTER UPDATE OR DELETE ON monitoring.notification_state
    FOR EACH ROW EXECUTE FUNCTION monitoring._forget_group_notification_watch();

-- @include sql/include/notify_capture_state.sql
