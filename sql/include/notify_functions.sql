-- Notification rules, evaluated by the capture (included by sql/200_notifications.sql and
-- by the upgrade scripts, hence CREATE OR REPLACE).
--
-- The capture functions and the plain INSERT's trigger call _queue_error_notifications()
-- once per capture, after the groups' counters are up to date. For each (enabled rule, group of the batch)
-- that matches, one statement decides whether the rule fires, and why:
--   regression  the group was reopened by this capture (notify_on_regression);
--   new         the capture made the group (first_seen_only, or a first threshold of 1);
--   frequency / users  more than N occurrences / users in the window (throttled);
--   threshold   the count reached a threshold (min_occurrence_count, notify_on_occurrence)
--               higher than the last one notified;
--   repeat      rate_limit_minutes > 0 and the throttle ran out while the group occurs.
-- Firing goes through notification_state with INSERT ... ON CONFLICT DO UPDATE ... WHERE:
-- two captures racing on one group serialise there (only when a rule fires) and only one
-- of them enqueues. The queue row's idempotency key is unique as well.

CREATE OR REPLACE FUNCTION monitoring._notification_key(p_config_id uuid, p_error_id uuid, p_trigger text, p_detail text)
    RETURNS uuid
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.md5(pg_catalog.concat_ws('/', p_config_id, p_error_id, p_trigger, p_detail))::uuid
$$;
COMMENT ON FUNCTION monitoring._notification_key(uuid, uuid, text, text) IS
    'Idempotency key of a notification: stable for one rule, group and triggering event';

-- Occurrences (or distinct users) of a group in the last p_minutes, counting at most
-- p_limit + 1 of them. p_pending: this capture's rows when they are not stored yet (the
-- plain INSERT's BEFORE trigger). A function of its own, so that the rules' statement does
-- not carry scans of every partition in its plan.
CREATE OR REPLACE FUNCTION monitoring._notification_window_count(
    p_error_id uuid, p_minutes integer, p_limit integer, p_distinct_users boolean,
    p_pending monitoring.tb_error_occurrence[])
    RETURNS bigint
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    since timestamptz := now() - make_interval(mins => p_minutes);
    found_count bigint;
BEGIN
    IF p_distinct_users THEN
        SELECT count(DISTINCT u.user_key) INTO found_count FROM (
            SELECT monitoring._user_key(o.user_info, o.context) AS user_key
            FROM monitoring.tb_error_occurrence o
            WHERE o.error_id = p_error_id AND o.occurred_at >= since
            UNION ALL
            SELECT monitoring._user_key(n.user_info, n.context)
            FROM unnest(p_pending) n
            WHERE n.error_id = p_error_id AND n.occurred_at >= since
        ) u;
    ELSE
        SELECT count(*) INTO found_count FROM (
            SELECT FROM monitoring.tb_error_occurrence o
            WHERE o.error_id = p_error_id AND o.occurred_at >= since
            LIMIT p_limit + 1) w;
        found_count := found_count + (SELECT count(*) FROM unnest(p_pending) n
                                      WHERE n.error_id = p_error_id AND n.occurred_at >= since);
    END IF;
    RETURN found_count;
END
$$;
COMMENT ON FUNCTION monitoring._notification_window_count(uuid, integer, integer, boolean, monitoring.tb_error_occurrence[]) IS
    'Occurrences or distinct users of a group in a recent window, for frequency and affected-user rules';

-- p_stored: whether p_rows are in tb_error_occurrence already (capture functions) or are
-- being inserted (the plain INSERT's BEFORE trigger).
CREATE OR REPLACE FUNCTION monitoring._queue_error_notifications(p_rows monitoring.tb_error_occurrence[], p_stored boolean)
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- an array parameter: see errors_functions.sql
AS $$
DECLARE
    pending monitoring.tb_error_occurrence[] := CASE WHEN p_stored THEN '{}' ELSE p_rows END;
    fired jsonb;
    queued integer;
BEGIN
    IF NOT EXISTS (SELECT FROM monitoring.tb_error_notification_config c WHERE c.enabled) THEN
        RETURN 0;
    END IF;
    -- The steady state: every group of the capture is below the count and before the time
    -- its watch names, was not reopened now, or is ignored. Nothing can fire.
    IF NOT EXISTS (
        SELECT FROM (SELECT DISTINCT n.error_id, n.environment, n.level FROM unnest(p_rows) n
                     WHERE n.error_id IS NOT NULL) b
        JOIN monitoring.tb_error_log g ON g.error_id = b.error_id
        LEFT JOIN monitoring.notification_watch w
               ON w.error_id = b.error_id AND w.environment = b.environment AND w.level = b.level
        WHERE g.status <> 'ignored'
          AND (w.error_id IS NULL OR g.regressed_at = now() OR w.next_at <= now()
               OR g.occurrence_count + COALESCE((SELECT sum(p.occurrences) FROM monitoring.error_group_pending p
                                                 WHERE p.error_id = b.error_id), 0) >= w.next_count)) THEN
        RETURN 0;
    END IF;

    -- Read-only first: most evaluations fire nothing, and then nothing is written.
    WITH batch AS (
        -- the latest event per group, environment and level (rules filter on those two)
        SELECT DISTINCT ON (n.error_id, n.environment, n.level)
               n.error_id, n.environment, n.level, n.occurrence_id, n.occurred_at, n.release_version,
               n.service, n.server_name, n.trace_id,
               count(*) OVER (PARTITION BY n.error_id) AS batch_rows
        FROM unnest(p_rows) n
        WHERE n.error_id IS NOT NULL
        ORDER BY n.error_id, n.environment, n.level, n.occurred_at DESC
    ), matched AS (
        SELECT DISTINCT ON (c.config_id, b.error_id)
               c.config_id, c.created_at AS rule_created_at, c.min_occurrence_count, c.notify_on_occurrence,
               c.first_seen_only, c.notify_on_regression, c.frequency_count, c.frequency_window_minutes,
               c.user_count, c.user_window_minutes, c.rate_limit_minutes,
               c.error_type AS rule_error_type, c.error_fingerprint AS rule_fingerprint, b.*
        FROM batch b
        JOIN monitoring.tb_error_notification_config c
          ON c.enabled
         AND (c.severity_levels IS NULL OR cardinality(c.severity_levels) = 0 OR b.level = ANY (c.severity_levels))
         AND (c.environment IS NULL OR cardinality(c.environment) = 0 OR b.environment = ANY (c.environment))
        ORDER BY c.config_id, b.error_id, b.occurred_at DESC
    ), counted AS (
        SELECT m.*, g.error_fingerprint, g.error_type, g.error_message, g.title, g.culprit,
               g.affected_users + COALESCE(p.new_users, 0) AS affected_users,
               g.first_seen, g.last_seen, g.stack_trace, g.status, g.release_version AS group_release,
               g.regressed_at, g.regressed_at = now() AND g.status = 'unresolved' AS regressed_now,
               g.occurrence_count + COALESCE(p.occurrences, 0) AS count_after
        FROM matched m
        JOIN monitoring.tb_error_log g ON g.error_id = m.error_id
        -- the deltas not folded yet, read once for both counts
        CROSS JOIN LATERAL (SELECT sum(q.occurrences) AS occurrences, sum(q.new_users) AS new_users
                            FROM monitoring.error_group_pending q WHERE q.error_id = m.error_id) p
        WHERE (m.rule_error_type IS NULL OR m.rule_error_type = g.error_type)
          AND (m.rule_fingerprint IS NULL OR m.rule_fingerprint = g.error_fingerprint)
          AND g.status <> 'ignored'   -- an ignored issue does not page anyone
    ), decided AS (
        SELECT x.*, CASE WHEN d.fired IN ('frequency', 'users') THEN NULL ELSE r.reached END AS reached, d.fired,
               now() + make_interval(mins => CASE WHEN d.fired IN ('frequency', 'users')
                                                  THEN GREATEST(x.rate_limit_minutes, x.frequency_window_minutes,
                                                                x.user_window_minutes)
                                                  ELSE x.rate_limit_minutes END) AS throttled_until
        FROM counted x
        LEFT JOIN monitoring.notification_state s ON s.error_id = x.error_id AND s.config_id = x.config_id
        CROSS JOIN LATERAL (
            SELECT max(t) AS reached
            FROM unnest(COALESCE(x.notify_on_occurrence, '{}') || x.min_occurrence_count) t
            WHERE t <= x.count_after
        ) r
        CROSS JOIN LATERAL (
            SELECT CASE
                WHEN x.regressed_now AND x.notify_on_regression
                     AND s.last_regressed_at IS DISTINCT FROM x.regressed_at THEN 'regression'
                WHEN x.first_seen_only THEN
                    CASE WHEN x.count_after <= x.batch_rows AND s.error_id IS NULL THEN 'new' END
                WHEN x.frequency_count IS NOT NULL OR x.user_count IS NOT NULL THEN
                    CASE WHEN s.throttled_until > now() THEN NULL
                         WHEN x.frequency_count < monitoring._notification_window_count(
                                  x.error_id, x.frequency_window_minutes, x.frequency_count, false, pending)
                         THEN 'frequency'
                         WHEN x.user_count < monitoring._notification_window_count(
                                  x.error_id, x.user_window_minutes, x.user_count, true, pending)
                         THEN 'users'
                    END
                -- A group made after the rule, or one that already has state here, gets
                -- the highest threshold it reached; an older group only a crossing now.
                WHEN r.reached > COALESCE(s.last_threshold, 0)
                     AND (s.error_id IS NOT NULL OR x.count_after - x.batch_rows < r.reached
                          OR x.first_seen >= x.rule_created_at) THEN
                    CASE WHEN x.count_after <= x.batch_rows THEN 'new' ELSE 'threshold' END
                WHEN x.rate_limit_minutes > 0 AND x.count_after >= x.min_occurrence_count
                     AND COALESCE(s.throttled_until, '-infinity') <= now() THEN 'repeat'
            END AS fired
        ) d
        WHERE d.fired IS NOT NULL
    )
    SELECT jsonb_agg(to_jsonb(d)) INTO fired FROM decided d;
    IF fired IS NOT NULL THEN
        queued := monitoring._enqueue_error_notifications(fired);
    END IF;
    PERFORM monitoring._watch_error_notifications(p_rows);
    RETURN COALESCE(queued, 0);
END
$$;
COMMENT ON FUNCTION monitoring._queue_error_notifications(monitoring.tb_error_occurrence[], boolean) IS
    'Evaluates the enabled notification rules for the groups of a capture and enqueues what fires (same transaction), then pg_notify';

-- Writes what _queue_error_notifications decided to fire: notification_state first (the
-- gate against a racing capture), then the queue, then pg_notify. Returns how many queued.
CREATE OR REPLACE FUNCTION monitoring._enqueue_error_notifications(p_fired jsonb)
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    queued integer;
BEGIN
    WITH decided AS (
        SELECT * FROM jsonb_to_recordset(p_fired) AS d(
            config_id uuid, error_id uuid, fired text, reached bigint, regressed_at timestamptz,
            throttled_until timestamptz, occurrence_id uuid, occurred_at timestamptz, environment text, level text,
            release_version text, service text, server_name text, trace_id text, error_fingerprint text,
            error_type text, error_message text, title text, culprit text, affected_users bigint,
            first_seen timestamptz, last_seen timestamptz, stack_trace text, status text, group_release text,
            count_after bigint)
    ), gated AS (
        INSERT INTO monitoring.notification_state AS s
            (error_id, config_id, last_trigger, last_threshold, last_regressed_at, last_notified_at, throttled_until)
        SELECT d.error_id, d.config_id, d.fired, COALESCE(d.reached, 0),
               CASE WHEN d.fired = 'regression' THEN d.regressed_at END, now(), d.throttled_until
        FROM decided d
        ON CONFLICT (error_id, config_id) DO UPDATE
        SET last_trigger = excluded.last_trigger,
            last_threshold = GREATEST(s.last_threshold, excluded.last_threshold),
            last_regressed_at = COALESCE(excluded.last_regressed_at, s.last_regressed_at),
            last_notified_at = excluded.last_notified_at,
            throttled_until = excluded.throttled_until,
            notifications = s.notifications + 1
        -- checked again against the row, which another capture may just have changed
        WHERE CASE excluded.last_trigger
                  WHEN 'regression' THEN s.last_regressed_at IS DISTINCT FROM excluded.last_regressed_at
                  WHEN 'new' THEN false
                  WHEN 'threshold' THEN s.last_threshold < excluded.last_threshold
                  ELSE s.throttled_until <= now()
              END
        RETURNING s.error_id, s.config_id
    ), keyed AS (
        SELECT d.*, monitoring._notification_key(d.config_id, d.error_id, d.fired,
                   CASE d.fired WHEN 'new' THEN '' WHEN 'threshold' THEN d.reached::text
                                WHEN 'regression' THEN d.regressed_at::text
                                ELSE clock_timestamp()::text END) AS idempotency_key
        FROM decided d
        JOIN gated g ON g.error_id = d.error_id AND g.config_id = d.config_id
    ), queued AS (
        INSERT INTO monitoring.notification_queue
            (idempotency_key, config_id, error_id, occurrence_id, notification_trigger, threshold, payload)
        SELECT k.idempotency_key, k.config_id, k.error_id, k.occurrence_id, k.fired, k.reached,
               jsonb_build_object(
                   'idempotency_key', k.idempotency_key, 'notification_trigger', k.fired, 'threshold', k.reached,
                   'config_id', k.config_id, 'error_id', k.error_id, 'error_fingerprint', k.error_fingerprint,
                   'error_type', k.error_type, 'error_message', k.error_message, 'title', k.title,
                   'culprit', k.culprit, 'severity', k.level, 'occurrence_count', k.count_after,
                   'affected_users', k.affected_users, 'first_seen', k.first_seen,
                   'last_seen', GREATEST(k.last_seen, k.occurred_at), 'environment', k.environment,
                   'release_version', COALESCE(k.release_version, k.group_release), 'service', k.service,
                   'server_name', k.server_name, 'occurrence_id', k.occurrence_id, 'trace_id', k.trace_id,
                   'status', k.status, 'stack_trace', monitoring._truncate(k.stack_trace, 8000),
                   'queued_at', now())
        FROM keyed k
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING 1
    )
    SELECT count(*) INTO queued FROM queued;

    IF queued > 0 THEN
        -- delivered at commit; identical payloads of one transaction are sent once
        PERFORM pg_notify('pg_observe_notification', 'queued');
    END IF;
    RETURN queued;
END
$$;
COMMENT ON FUNCTION monitoring._enqueue_error_notifications(jsonb) IS
    'Records the notifications a capture fires (state, queue with a unique idempotency key, pg_notify); returns how many were queued';

-- After an evaluation: per group, environment and level of the capture, the lowest count
-- threshold above the group's count and the earliest time a throttled or windowed rule may
-- fire again, over every enabled rule that matches. Groups no rule matches get infinity.
CREATE OR REPLACE FUNCTION monitoring._watch_error_notifications(p_rows monitoring.tb_error_occurrence[])
    RETURNS void
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- an array parameter: see errors_functions.sql
AS $$
BEGIN
    INSERT INTO monitoring.notification_watch AS w (error_id, environment, level, next_count, next_at)
    SELECT b.error_id, b.environment, b.level,
           COALESCE(min(n.next_count), 9223372036854775807),
           COALESCE(min(n.next_at), 'infinity')
    FROM (SELECT DISTINCT r.error_id, r.environment, r.level FROM unnest(p_rows) r WHERE r.error_id IS NOT NULL) b
    JOIN monitoring.tb_error_log g ON g.error_id = b.error_id
    LEFT JOIN monitoring.tb_error_notification_config c
           ON c.enabled
          AND (c.severity_levels IS NULL OR cardinality(c.severity_levels) = 0 OR b.level = ANY (c.severity_levels))
          AND (c.environment IS NULL OR cardinality(c.environment) = 0 OR b.environment = ANY (c.environment))
          AND (c.error_type IS NULL OR c.error_type = g.error_type)
          AND (c.error_fingerprint IS NULL OR c.error_fingerprint = g.error_fingerprint)
    LEFT JOIN monitoring.notification_state s ON s.error_id = b.error_id AND s.config_id = c.config_id
    LEFT JOIN LATERAL (
        SELECT
            CASE WHEN c.first_seen_only OR c.frequency_count IS NOT NULL OR c.user_count IS NOT NULL THEN NULL
                 ELSE (SELECT min(t) FROM unnest(COALESCE(c.notify_on_occurrence, '{}') || c.min_occurrence_count) t
                       WHERE t > g.occurrence_count) END AS next_count,
            CASE WHEN c.first_seen_only THEN NULL
                 WHEN c.frequency_count IS NOT NULL OR c.user_count IS NOT NULL OR c.rate_limit_minutes > 0
                 THEN COALESCE(s.throttled_until, now()) END AS next_at
        WHERE c.config_id IS NOT NULL
    ) n ON true
    GROUP BY b.error_id, b.environment, b.level
    ON CONFLICT (error_id, environment, level) DO UPDATE
    SET next_count = excluded.next_count, next_at = excluded.next_at;
END
$$;
COMMENT ON FUNCTION monitoring._watch_error_notifications(monitoring.tb_error_occurrence[]) IS
    'Remembers, per group, environment and level, the count and time below which no rule can fire (notification_watch)';

CREATE OR REPLACE FUNCTION monitoring._forget_notification_watch()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM monitoring.notification_watch;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._forget_notification_watch() IS 'Trigger: the rules changed, every watch is forgotten';

CREATE OR REPLACE FUNCTION monitoring._forget_group_notification_watch()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM monitoring.notification_watch w WHERE w.error_id = OLD.error_id;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._forget_group_notification_watch() IS
    'Trigger: a group''s notification state changed (a throttle moved, say): its watches are forgotten';

-- Seeds' channel configs keep secrets (tokens, passwords, webhook URLs) in the rule: readers
-- see the rules through this redaction only. Recursive: a secret may sit at any depth.
CREATE OR REPLACE FUNCTION monitoring._redact_channel_config(p_config jsonb)
    RETURNS jsonb
    LANGUAGE plpgsql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    redacted jsonb;
BEGIN
    CASE jsonb_typeof(p_config)
    WHEN 'object' THEN
        SELECT COALESCE(jsonb_object_agg(e.key,
                   CASE WHEN jsonb_typeof(e.value) = 'null' THEN e.value
                        WHEN e.key ~* '(pass|secret|token|auth|key|webhook_url|signature|credential|sid)'
                        THEN '"[Filtered]"'::jsonb
                        -- every header value may be a credential
                        WHEN e.key ~* '^headers$' AND jsonb_typeof(e.value) = 'object'
                        THEN (SELECT jsonb_object_agg(h.key, '[Filtered]') FROM jsonb_each(e.value) h)
                        ELSE monitoring._redact_channel_config(e.value) END), '{}'::jsonb)
        INTO redacted
        FROM jsonb_each(p_config) e;
    WHEN 'array' THEN
        SELECT COALESCE(jsonb_agg(monitoring._redact_channel_config(v) ORDER BY n), '[]'::jsonb) INTO redacted
        FROM jsonb_array_elements(p_config) WITH ORDINALITY a(v, n);
    WHEN 'string' THEN
        -- a URL keeps scheme, host and path: no credentials, no query string
        redacted := CASE WHEN p_config #>> '{}' ~* '^[a-z][a-z0-9+.-]*://'
                         THEN to_jsonb(regexp_replace(regexp_replace(p_config #>> '{}', '//[^/@]*@', '//'), '[?#].*$', ''))
                         ELSE p_config END;
    ELSE
        redacted := p_config;
    END CASE;
    RETURN redacted;
END
$$;
COMMENT ON FUNCTION monitoring._redact_channel_config(jsonb) IS
    'A channel config with secret-looking values (at any depth), header values, URL credentials and query strings replaced';

CREATE OR REPLACE VIEW monitoring.notification_rules AS
SELECT c.config_id, c.description, c.error_type, c.error_fingerprint, c.severity, c.environment, c.channel_type,
       monitoring._redact_channel_config(c.channel_config) AS channel_config,
       c.min_occurrence_count, c.notify_on_occurrence, c.first_seen_only, c.notify_on_regression,
       c.frequency_count, c.frequency_window_minutes, c.user_count, c.user_window_minutes,
       c.rate_limit_minutes, c.enabled, c.created_at
FROM monitoring.tb_error_notification_config c;
COMMENT ON VIEW monitoring.notification_rules IS
    'Notification rules with secrets redacted from channel_config: what readers and dashboards see';
