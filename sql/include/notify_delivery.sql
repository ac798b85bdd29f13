-- Delivery of queued notifications (included by sql/200_notifications.sql and by the upgrade
-- scripts, hence CREATE OR REPLACE).
--
-- dispatch_notifications() is a procedure so that it can commit between its steps:
--   1. claim due messages (FOR UPDATE SKIP LOCKED): status sending, attempts + 1, and a claim
--      that expires at next_attempt_at; COMMIT, so the claim survives whatever happens next;
--   2. send them (PL/Python senders in parallel, custom functions one by one), then record
--      every attempt in tb_error_notification_log and set each message sent, pending again
--      (exponential backoff with jitter) or dead; COMMIT.
-- A dispatcher killed during step 2 leaves its messages claimed until the claim expires;
-- the next dispatcher sends them again with the same idempotency key (at least once). Two
-- dispatchers never hold the same message: a claim is taken only once it has expired.

-- @plpython plpython/notify_send.py
COMMENT ON FUNCTION monitoring._send_notifications(jsonb, integer) IS
    'PL/Python senders (email, slack, webhook, pagerduty): sends a JSON array of messages, in parallel per destination; returns one result each';

CREATE OR REPLACE FUNCTION monitoring._notification_settings()
    RETURNS monitoring.notification_settings
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings monitoring.notification_settings;
BEGIN
    SELECT * INTO settings FROM monitoring.notification_settings;
    IF NOT FOUND THEN
        INSERT INTO monitoring.notification_settings DEFAULT VALUES ON CONFLICT DO NOTHING;
        SELECT * INTO STRICT settings FROM monitoring.notification_settings;
    END IF;
    RETURN settings;
END
$$;
COMMENT ON FUNCTION monitoring._notification_settings() IS 'The delivery settings row, made with the defaults at first use';

CREATE OR REPLACE FUNCTION monitoring._claim_notifications(p_limit integer, p_dispatcher text, p_claim_token uuid)
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings monitoring.notification_settings := monitoring._notification_settings();
    claimed integer;
BEGIN
    -- A claim that expired on its last attempt: its dispatcher died or overran claim_timeout.
    WITH expired AS (
        UPDATE monitoring.notification_queue q
        SET status = 'dead', claim_token = NULL,
            last_error = 'claim expired on attempt ' || q.attempts || ' of ' || settings.max_attempts
                         || ' (dispatcher ' || COALESCE(q.claimed_by, '?') || ' stopped or overran claim_timeout)'
        WHERE q.status = 'sending' AND q.next_attempt_at <= now() AND q.attempts >= settings.max_attempts
        RETURNING q.*
    )
    INSERT INTO monitoring.tb_error_notification_log
        (config_id, error_id, channel_type, status, error_message, queue_id, idempotency_key, attempt,
         notification_trigger, dispatcher)
    SELECT e.config_id, e.error_id, COALESCE(c.channel_type, '?'), 'failed', e.last_error, e.queue_id,
           e.idempotency_key, e.attempts, e.notification_trigger, e.claimed_by
    FROM expired e
    LEFT JOIN monitoring.tb_error_notification_config c ON c.config_id = e.config_id;

    WITH due AS (
        SELECT q.queue_id FROM monitoring.notification_queue q
        WHERE q.status IN ('pending', 'sending') AND q.next_attempt_at <= now()
        ORDER BY q.next_attempt_at
        LIMIT LEAST(p_limit, settings.batch_size)
        FOR UPDATE SKIP LOCKED
    )
    UPDATE monitoring.notification_queue q
    SET status = 'sending', attempts = q.attempts + 1, claimed_by = p_dispatcher, claim_token = p_claim_token,
        next_attempt_at = now() + settings.claim_timeout
    FROM due
    WHERE q.queue_id = due.queue_id;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    RETURN claimed;
END
$$;
COMMENT ON FUNCTION monitoring._claim_notifications(integer, text, uuid) IS
    'Step 1 of dispatch_notifications(): claims due messages (SKIP LOCKED) under a token; dead-letters claims expired on their last attempt';

-- Calls a custom channel's function: (notification jsonb, config jsonb) returning boolean,
-- or a row whose first columns are success boolean and an error text.
CREATE OR REPLACE FUNCTION monitoring._send_with_function(p_function regprocedure, p_notification jsonb, p_config jsonb)
    RETURNS jsonb
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    answer jsonb;
    started timestamptz := clock_timestamp();
    ok boolean;
    error_text text;
BEGIN
    BEGIN
        EXECUTE format('SELECT to_jsonb(r) FROM %s($1, $2) r', p_function::oid::regproc) INTO answer
            USING p_notification, p_config;
        IF jsonb_typeof(answer) = 'boolean' THEN
            ok := answer::text::boolean;
        ELSIF jsonb_typeof(answer) = 'object' THEN
            ok := (SELECT e.value::text::boolean FROM jsonb_each(answer) WITH ORDINALITY e(key, value, n)
                   WHERE jsonb_typeof(e.value) = 'boolean' ORDER BY e.n LIMIT 1);
            error_text := COALESCE(answer ->> 'error', answer ->> 'error_message', answer ->> 'message');
        END IF;
        IF ok IS NULL THEN
            ok := false;
            error_text := format('%s returned %s, not success and an error text', p_function, COALESCE(answer::text, 'NULL'));
        END IF;
    EXCEPTION WHEN OTHERS THEN
        ok := false;
        error_text := format('%s raised: %s', p_function, SQLERRM);
    END;
    RETURN jsonb_build_object(
        'ok', ok, 'error', CASE WHEN NOT ok THEN COALESCE(left(error_text, 500), 'failed without an error text') END,
        'recipient', COALESCE(p_config ->> 'to', p_config ->> 'recipient', p_function::oid::regproc::text),
        'attempted', true,
        'duration_ms', extract(epoch FROM clock_timestamp() - started) * 1000);
END
$$;
COMMENT ON FUNCTION monitoring._send_with_function(regprocedure, jsonb, jsonb) IS
    'Sends one notification through a custom channel function; its errors become a failed attempt';

CREATE OR REPLACE FUNCTION monitoring._deliver_notifications(p_claim_token uuid, p_dispatcher text)
    RETURNS jsonb
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings monitoring.notification_settings := monitoring._notification_settings();
    builtin jsonb;
    results jsonb := '[]'::jsonb;
    message record;
    outcome jsonb;
BEGIN
    -- The rule's channel_config is laid over the channel's settings.
    SELECT jsonb_agg(jsonb_build_object(
               'id', q.queue_id, 'channel_type', COALESCE(ch.sender, c.channel_type),
               'config', COALESCE(ch.settings, '{}') || c.channel_config,
               'notification', q.payload || jsonb_build_object('attempt', q.attempts),
               'timeout', extract(epoch FROM settings.send_timeout)) ORDER BY q.queue_id)
    INTO builtin
    FROM monitoring.notification_queue q
    JOIN monitoring.tb_error_notification_config c ON c.config_id = q.config_id
    LEFT JOIN monitoring.notification_channel ch ON ch.channel_type = c.channel_type
    WHERE q.claim_token = p_claim_token AND q.status = 'sending'
      AND COALESCE(ch.sender, c.channel_type) IN ('email', 'slack', 'webhook', 'pagerduty');
    IF builtin IS NOT NULL THEN
        results := monitoring._send_notifications(builtin, settings.max_parallel);
    END IF;

    FOR message IN
        SELECT q.queue_id, q.payload || jsonb_build_object('attempt', q.attempts) AS notification,
               c.channel_type, ch.function_name, COALESCE(ch.settings, '{}') || c.channel_config AS config
        FROM monitoring.notification_queue q
        JOIN monitoring.tb_error_notification_config c ON c.config_id = q.config_id
        LEFT JOIN monitoring.notification_channel ch ON ch.channel_type = c.channel_type
        WHERE q.claim_token = p_claim_token AND q.status = 'sending'
          AND COALESCE(ch.sender, c.channel_type) NOT IN ('email', 'slack', 'webhook', 'pagerduty')
        ORDER BY q.queue_id
    LOOP
        IF message.function_name IS NULL THEN
            outcome := jsonb_build_object('ok', false, 'attempted', true, 'error', format(
                'no channel %L: register it in monitoring.notification_channel', message.channel_type));
        ELSE
            outcome := monitoring._send_with_function(message.function_name, message.notification, message.config);
        END IF;
        results := results || jsonb_build_array(outcome || jsonb_build_object('id', message.queue_id));
    END LOOP;

    RETURN monitoring._record_notification_results(p_claim_token, p_dispatcher, results, settings);
END
$$;
COMMENT ON FUNCTION monitoring._deliver_notifications(uuid, text) IS
    'Step 2 of dispatch_notifications(): sends the messages claimed under a token and records the results';

CREATE OR REPLACE FUNCTION monitoring._record_notification_results(
    p_claim_token uuid, p_dispatcher text, p_results jsonb, p_settings monitoring.notification_settings)
    RETURNS jsonb
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    summary jsonb;
BEGIN
    WITH result AS (
        SELECT * FROM jsonb_to_recordset(p_results)
            AS r(id bigint, ok boolean, attempted boolean, error text, recipient text, status_code integer,
                 duration_ms double precision)
    ), updated AS (
        UPDATE monitoring.notification_queue q
        SET status = CASE WHEN r.ok THEN 'sent'
                          WHEN r.attempted AND q.attempts >= p_settings.max_attempts THEN 'dead'
                          ELSE 'pending' END,
            -- a message not attempted (its destination failed first) keeps its attempt
            attempts = CASE WHEN r.attempted OR r.ok THEN q.attempts ELSE q.attempts - 1 END,
            sent_at = CASE WHEN r.ok THEN clock_timestamp() END,
            last_error = CASE WHEN r.ok THEN NULL ELSE COALESCE(r.error, 'failed') END,
            next_attempt_at = CASE
                WHEN r.ok THEN q.next_attempt_at
                WHEN NOT r.attempted THEN clock_timestamp() + p_settings.retry_base
                -- exponential backoff with jitter: base * 2^(attempt - 1), capped, times 0.75 to 1.25
                ELSE clock_timestamp() + LEAST(p_settings.retry_max,
                                               p_settings.retry_base * power(2, LEAST(q.attempts - 1, 30)))
                                         * (0.75 + random() * 0.5) END,
            claim_token = NULL
        FROM result r
        WHERE q.queue_id = r.id AND q.claim_token = p_claim_token
        RETURNING q.queue_id, q.config_id, q.error_id, q.idempotency_key, q.attempts, q.notification_trigger,
                  q.status, r.ok, r.attempted, r.error, r.recipient, r.status_code, r.duration_ms
    ), logged AS (
        INSERT INTO monitoring.tb_error_notification_log
            (config_id, error_id, sent_at, channel_type, recipient, status, error_message, queue_id, idempotency_key,
             attempt, notification_trigger, status_code, duration_ms, dispatcher)
        SELECT u.config_id, u.error_id, clock_timestamp(), COALESCE(c.channel_type, '?'), u.recipient,
               CASE WHEN u.ok THEN 'sent' ELSE 'failed' END, CASE WHEN NOT u.ok THEN u.error END, u.queue_id,
               u.idempotency_key, u.attempts, u.notification_trigger, u.status_code, u.duration_ms, p_dispatcher
        FROM updated u
        LEFT JOIN monitoring.tb_error_notification_config c ON c.config_id = u.config_id
        WHERE u.ok OR u.attempted
        RETURNING 1
    )
    SELECT jsonb_build_object(
               'sent', count(*) FILTER (WHERE u.ok),
               'failed', count(*) FILTER (WHERE NOT u.ok AND u.attempted),
               'deferred', count(*) FILTER (WHERE NOT u.ok AND NOT u.attempted),
               'dead', count(*) FILTER (WHERE u.status = 'dead'),
               'logged', (SELECT count(*) FROM logged))
    INTO summary
    FROM updated u;
    RETURN summary;
END
$$;
COMMENT ON FUNCTION monitoring._record_notification_results(uuid, text, jsonb, monitoring.notification_settings) IS
    'Marks claimed messages sent, pending again (backoff with jitter) or dead, and logs every attempt';

-- A procedure, to commit between claiming and sending (see the top of this file). It runs
-- as its caller with the caller's search_path: every name and operator is qualified.
CREATE OR REPLACE PROCEDURE monitoring.dispatch_notifications(
    p_max_messages integer DEFAULT 1000,
    p_dispatcher text DEFAULT NULL,
    INOUT sent integer DEFAULT NULL,
    INOUT failed integer DEFAULT NULL,
    INOUT dead integer DEFAULT NULL)
    LANGUAGE plpgsql
AS $$
DECLARE
    dispatcher text := COALESCE(p_dispatcher, pg_catalog.format('%s/%s', CURRENT_USER, pg_catalog.pg_backend_pid()));
    token uuid;
    claimed integer;
    processed integer := 0;
    outcome jsonb;
BEGIN
    sent := 0;
    failed := 0;
    dead := 0;
    LOOP
        token := pg_catalog.gen_random_uuid();
        claimed := monitoring._claim_notifications(p_max_messages OPERATOR(pg_catalog.-) processed, dispatcher, token);
        COMMIT;
        EXIT WHEN claimed OPERATOR(pg_catalog.=) 0;
        outcome := monitoring._deliver_notifications(token, dispatcher);
        COMMIT;
        sent := sent OPERATOR(pg_catalog.+) (outcome OPERATOR(pg_catalog.->>) 'sent')::integer;
        failed := failed OPERATOR(pg_catalog.+) (outcome OPERATOR(pg_catalog.->>) 'failed')::integer;
        dead := dead OPERATOR(pg_catalog.+) (outcome OPERATOR(pg_catalog.->>) 'dead')::integer;
        processed := processed OPERATOR(pg_catalog.+) claimed;
        EXIT WHEN processed OPERATOR(pg_catalog.>=) p_max_messages;
    END LOOP;
    -- The heartbeat health() reads, left even when nothing was due. Keyed by the name given,
    -- else by the role alone: the pg_cron backstop gets a new backend (pid) every minute.
    INSERT INTO monitoring.dispatcher_heartbeat AS h
        (dispatcher, last_seen_at, last_sent, last_failed, last_dead, calls)
    VALUES (pg_catalog.left(COALESCE(p_dispatcher, CURRENT_USER::text), 200), pg_catalog.clock_timestamp(),
            sent, failed, dead, 1)
    ON CONFLICT ON CONSTRAINT dispatcher_heartbeat_pkey DO UPDATE
        SET last_seen_at = EXCLUDED.last_seen_at, last_sent = EXCLUDED.last_sent,
            last_failed = EXCLUDED.last_failed, last_dead = EXCLUDED.last_dead,
            calls = h.calls OPERATOR(pg_catalog.+) 1;
END
$$;
COMMENT ON PROCEDURE monitoring.dispatch_notifications(integer, text, integer, integer, integer) IS
    'Sends due notifications (claim, commit, send, record, commit; repeated up to p_max_messages), then leaves a heartbeat in dispatcher_heartbeat; CALL it outside a transaction block. Run by pg-observe worker and the pg_cron job';

CREATE OR REPLACE FUNCTION monitoring.retry_notifications(p_queue_ids bigint[] DEFAULT NULL)
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    requeued integer;
BEGIN
    UPDATE monitoring.notification_queue q
    SET status = 'pending', attempts = 0, next_attempt_at = now(), claim_token = NULL
    WHERE q.status = 'dead' AND (p_queue_ids IS NULL OR q.queue_id = ANY (p_queue_ids));
    GET DIAGNOSTICS requeued = ROW_COUNT;
    IF requeued > 0 THEN
        PERFORM pg_notify('pg_observe_notification', 'queued');
    END IF;
    RETURN requeued;
END
$$;
COMMENT ON FUNCTION monitoring.retry_notifications(bigint[]) IS
    'Puts dead notifications (all, or these queue ids) back in the queue with fresh attempts; returns how many';

CREATE OR REPLACE FUNCTION monitoring.test_notification(p_config_id uuid)
    RETURNS bigint
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rule monitoring.tb_error_notification_config;
    group_row monitoring.tb_error_log;
    key uuid := gen_random_uuid();
    queued bigint;
BEGIN
    SELECT * INTO rule FROM monitoring.tb_error_notification_config c WHERE c.config_id = p_config_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no notification rule %', p_config_id USING ERRCODE = 'no_data_found';
    END IF;
    -- a real group (the log references one): the most recent, or a test group made once
    SELECT * INTO group_row FROM monitoring.tb_error_log g ORDER BY g.last_seen DESC LIMIT 1;
    IF NOT FOUND THEN
        INSERT INTO monitoring.tb_error_log (error_fingerprint, error_type, error_message, title)
        VALUES ('pg_observe_test_notification', 'TestNotification', 'A test notification from pg_observe',
                'TestNotification: A test notification from pg_observe')
        RETURNING * INTO group_row;
    END IF;
    INSERT INTO monitoring.notification_queue
        (idempotency_key, config_id, error_id, notification_trigger, payload)
    VALUES (key, rule.config_id, group_row.error_id, 'test', jsonb_build_object(
        'idempotency_key', key, 'notification_trigger', 'test', 'config_id', rule.config_id,
        'error_id', group_row.error_id, 'error_fingerprint', group_row.error_fingerprint,
        'error_type', group_row.error_type, 'error_message', 'Test notification: ' || group_row.error_message,
        'title', group_row.title, 'severity', group_row.severity, 'occurrence_count', group_row.occurrence_count,
        'first_seen', group_row.first_seen, 'last_seen', group_row.last_seen,
        'environment', group_row.environment, 'release_version', group_row.release_version,
        'stack_trace', monitoring._truncate(group_row.stack_trace, 8000), 'queued_at', now()))
    RETURNING queue_id INTO queued;
    PERFORM pg_notify('pg_observe_notification', 'queued');
    RETURN queued;
END
$$;
COMMENT ON FUNCTION monitoring.test_notification(uuid) IS
    'Queues a test notification for a rule (about the most recent group), to check a channel end to end; returns its queue id';

CREATE OR REPLACE FUNCTION monitoring._expire_notification_queue()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings monitoring.notification_settings := monitoring._notification_settings();
    removed bigint;
BEGIN
    DELETE FROM monitoring.notification_queue q
    WHERE (q.status = 'sent' AND q.sent_at < now() - settings.keep_sent)
       OR (q.status = 'dead' AND q.queued_at < now() - settings.keep_dead);
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN format('%s notifications removed from the queue', removed);
END
$$;
COMMENT ON FUNCTION monitoring._expire_notification_queue() IS
    'Maintenance task: removes sent notifications after keep_sent and dead ones after keep_dead (the log keeps every attempt)';

CREATE OR REPLACE VIEW monitoring.notification_queue_status AS
SELECT q.status, count(*) AS messages, min(q.queued_at) AS oldest_queued_at,
       min(q.next_attempt_at) FILTER (WHERE q.status = 'pending') AS next_attempt_at,
       max(q.attempts) AS max_attempts_so_far
FROM monitoring.notification_queue q
GROUP BY q.status;
COMMENT ON VIEW monitoring.notification_queue_status IS 'Notification queue by status: how many, oldest, next due';
