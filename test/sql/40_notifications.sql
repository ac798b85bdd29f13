-- Notifications: rules (tb_error_notification_config, the seed's table) are evaluated by every
-- capture; a firing rule queues one row in notification_queue with the seed's webhook payload.
-- Covers the filters, thresholds, rate limits, first_seen_only, regressions, frequency and
-- user windows, rollback and idempotency, the seed's rule examples and troubleshooting
-- queries, bad input, hostile strings, privileges and the queue's helper functions.
-- dispatch_notifications() is never called here (it commits): pytest covers delivery.
--
-- Everything runs in one transaction, so now() never moves: "time passing" is simulated by
-- moving notification_state.throttled_until into the past. The same reason means a rule can
-- send at most one 'repeat' per group in this file (its idempotency key holds now()).
-- Every section first disables the rules of the sections before it.
BEGIN;
SELECT plan(82);
SET LOCAL search_path = public, monitoring;

-- What fired for a group: 'rule description:trigger', by description, then in queue order.
CREATE FUNCTION pg_temp.fired(p_fingerprint text) RETURNS text[] LANGUAGE sql AS $$
    SELECT COALESCE(array_agg(c.description || ':' || q.notification_trigger ORDER BY c.description, q.queue_id), '{}')
    FROM monitoring.notification_queue q
    JOIN monitoring.tb_error_notification_config c USING (config_id)
    JOIN monitoring.tb_error_log g USING (error_id)
    WHERE g.error_fingerprint = p_fingerprint
$$;
-- The thresholds queued for one rule and group, in queue order.
CREATE FUNCTION pg_temp.thresholds(p_description text, p_fingerprint text) RETURNS bigint[] LANGUAGE sql AS $$
    SELECT COALESCE(array_agg(q.threshold ORDER BY q.queue_id), '{}')
    FROM monitoring.notification_queue q
    JOIN monitoring.tb_error_notification_config c USING (config_id)
    JOIN monitoring.tb_error_log g USING (error_id)
    WHERE c.description = p_description AND g.error_fingerprint = p_fingerprint
$$;
-- How many rows a query (a seed query, trailing semicolon and comments included) returns.
CREATE FUNCTION pg_temp.rows_of(p_query text) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    EXECUTE format(E'SELECT count(*) FROM (%s\n) x', regexp_replace(p_query, ';\s*$', '')) INTO n;
    RETURN n;
END
$$;
-- Captures p_count events of one group (a single-part fingerprint names the group) in one batch.
CREATE FUNCTION pg_temp.cap(p_fingerprint text, p_count integer DEFAULT 1, p_extra jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE sql AS $$
    SELECT monitoring.capture_errors((
        SELECT jsonb_agg(jsonb_build_object('exception_type', 'Probe', 'message', 'probe',
                                            'fingerprint', jsonb_build_array(p_fingerprint)) || p_extra)
        FROM generate_series(1, p_count)))
$$;

------------------------------------------------------------------------------------------
-- A capture that matches a rule queues one notification with the seed's webhook payload.
INSERT INTO tb_error_notification_config (description, error_type, severity, environment, channel_type, channel_config)
VALUES ('basic', 'ValueError', ARRAY['error'], ARRAY['production'], 'webhook', '{"url": "https://hooks.example/x"}');
SELECT monitoring.capture_error($${"exception_type": "ValueError", "message": "bad value", "environment": "production",
    "level": "error", "fingerprint": ["basic_fp"], "user": {"id": "u1"}, "release": "1.2.3",
    "stack_trace": "Traceback (most recent call last):\n  File \"app.py\", line 3, in main\nValueError: bad value"}$$);
SELECT results_eq(
    $$SELECT q.status, q.notification_trigger, q.threshold::int FROM monitoring.notification_queue q
      JOIN monitoring.tb_error_notification_config c USING (config_id) WHERE c.description = 'basic'$$,
    $$VALUES ('pending', 'new', 1)$$,
    'a capture making a group queues one pending ''new'' notification at threshold 1');
SELECT ok((SELECT payload ?& ARRAY['error_id', 'error_fingerprint', 'error_type', 'error_message', 'severity',
                                   'occurrence_count', 'first_seen', 'last_seen', 'environment', 'release_version',
                                   'stack_trace', 'idempotency_key', 'notification_trigger']
           FROM monitoring.notification_queue WHERE notification_trigger = 'new' AND threshold = 1
             AND payload->>'error_fingerprint' = 'basic_fp'),
          'the payload has every field of the seed''s webhook payload, plus idempotency_key and notification_trigger');
SELECT results_eq(
    $$SELECT q.payload->>'error_fingerprint', q.payload->>'error_type', q.payload->>'error_message', q.payload->>'severity',
             (q.payload->>'occurrence_count')::int, q.payload->>'environment', q.payload->>'release_version',
             q.payload->>'stack_trace' = g.stack_trace, (q.payload->>'error_id')::uuid = g.error_id,
             (q.payload->>'first_seen')::timestamptz = g.first_seen, (q.payload->>'last_seen')::timestamptz = g.last_seen,
             (q.payload->>'idempotency_key')::uuid = q.idempotency_key, q.payload->>'notification_trigger'
      FROM monitoring.notification_queue q JOIN monitoring.tb_error_log g USING (error_id)
      WHERE g.error_fingerprint = 'basic_fp'$$,
    $$VALUES ('basic_fp', 'ValueError', 'bad value', 'error', 1, 'production', '1.2.3', true, true, true, true, true, 'new')$$,
    'the payload describes the group and the capture');
INSERT INTO tb_error_notification_config (description, error_fingerprint) VALUES ('by_insert', 'insert_fp');
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, client_fingerprint) VALUES ('KeyError', 'k', '{insert_fp}');
SELECT is(pg_temp.fired('insert_fp'), ARRAY['by_insert:new'], 'a plain INSERT into tb_error_occurrence queues too');

------------------------------------------------------------------------------------------
-- Filters: error_type and error_fingerprint exact, severity (critical means fatal),
-- environment, NULL or empty arrays meaning any, and enabled.
UPDATE tb_error_notification_config SET enabled = false;
INSERT INTO tb_error_notification_config (description, error_type, error_fingerprint, severity, environment, enabled) VALUES
    ('f_type', 'TypeA', NULL, NULL, NULL, true),
    ('f_fp', NULL, 'only_this_fp', NULL, NULL, true),
    ('f_critical', 'SevProbe', NULL, ARRAY['critical'], NULL, true),
    ('f_staging', 'EnvProbe', NULL, NULL, ARRAY['staging'], true),
    ('f_empty', 'EmptyProbe', NULL, '{}', '{}', true),
    ('f_off', 'TypeA', NULL, NULL, NULL, false);
SELECT pg_temp.cap('type_a', 1, '{"exception_type": "TypeA"}');
SELECT pg_temp.cap('type_a_lower', 1, '{"exception_type": "typea"}');
SELECT is(pg_temp.fired('type_a') || pg_temp.fired('type_a_lower'), ARRAY['f_type:new'],
          'error_type matches exactly (TypeA, not typea), and a disabled rule never fires');
SELECT pg_temp.cap('only_this_fp');
SELECT pg_temp.cap('only_this_fp_2');
SELECT is(pg_temp.fired('only_this_fp') || pg_temp.fired('only_this_fp_2'), ARRAY['f_fp:new'],
          'error_fingerprint matches one group exactly');
SELECT pg_temp.cap('sev_fatal', 1, '{"exception_type": "SevProbe", "level": "fatal"}');
SELECT pg_temp.cap('sev_error', 1, '{"exception_type": "SevProbe", "level": "error"}');
SELECT is(pg_temp.fired('sev_fatal') || pg_temp.fired('sev_error'), ARRAY['f_critical:new'],
          'severity critical matches level fatal, not level error');
SELECT pg_temp.cap('env_staging', 1, '{"exception_type": "EnvProbe", "environment": "staging"}');
SELECT pg_temp.cap('env_production', 1, '{"exception_type": "EnvProbe", "environment": "production"}');
SELECT is(pg_temp.fired('env_staging') || pg_temp.fired('env_production'), ARRAY['f_staging:new'],
          'environment matches the listed environments only');
SELECT pg_temp.cap('empty_arrays', 1, '{"exception_type": "EmptyProbe", "environment": "qa", "level": "warning"}');
SELECT is(pg_temp.fired('empty_arrays'), ARRAY['f_empty:new'], 'empty severity and environment arrays match anything');

------------------------------------------------------------------------------------------
-- Thresholds: min_occurrence_count plus notify_on_occurrence, each notified once, only the
-- highest one reached when a batch jumps over several; rate 0: nothing after them.
UPDATE tb_error_notification_config SET enabled = false;
INSERT INTO tb_error_notification_config (description, error_fingerprint, notify_on_occurrence, rate_limit_minutes)
VALUES ('thr', 'thr_fp', '{3,5,10}', 0);
SELECT pg_temp.cap('thr_fp');
SELECT pg_temp.cap('thr_fp');
SELECT is(pg_temp.thresholds('thr', 'thr_fp'), '{1}'::bigint[], 'count 1 fires threshold 1, count 2 nothing');
SELECT pg_temp.cap('thr_fp');
SELECT is(pg_temp.fired('thr_fp'), ARRAY['thr:new', 'thr:threshold'], 'count 3 fires ''threshold''');
SELECT pg_temp.cap('thr_fp', 4);
SELECT pg_temp.cap('thr_fp', 10);
SELECT is(pg_temp.thresholds('thr', 'thr_fp'), '{1,3,5,10}'::bigint[],
          'batches jumping 3 -> 7 -> 17 fire 5 and 10, once each');
UPDATE notification_state SET throttled_until = now() - interval '1 second';
SELECT pg_temp.cap('thr_fp', 5);
SELECT is(pg_temp.thresholds('thr', 'thr_fp'), '{1,3,5,10}'::bigint[],
          'rate_limit_minutes 0: nothing after the last threshold, even once the throttle ran out');
INSERT INTO tb_error_notification_config (description, error_fingerprint, notify_on_occurrence)
VALUES ('thr_jump', 'thr_jump_fp', '{2,4}');
SELECT pg_temp.cap('thr_jump_fp', 5);
SELECT results_eq($$SELECT pg_temp.fired('thr_jump_fp'), pg_temp.thresholds('thr_jump', 'thr_jump_fp')$$,
                  $$VALUES (ARRAY['thr_jump:new'], '{4}'::bigint[])$$,
                  'a batch of 5 making a group fires once, ''new'', at the highest threshold reached');

------------------------------------------------------------------------------------------
-- Seed strategy 1 (min 1, rate 0: first occurrence only) and strategy 2 (min 10, rate 60:
-- after 10, then hourly).
UPDATE tb_error_notification_config SET enabled = false;
INSERT INTO tb_error_notification_config (description, error_fingerprint, min_occurrence_count, rate_limit_minutes) VALUES
    ('strategy1', 's1_fp', 1, 0), ('strategy2', 's2_fp', 10, 60);
SELECT pg_temp.cap('s1_fp');
SELECT pg_temp.cap('s1_fp');
UPDATE notification_state SET throttled_until = now() - interval '1 second';
SELECT pg_temp.cap('s1_fp', 3);
SELECT is(pg_temp.fired('s1_fp'), ARRAY['strategy1:new'], 'strategy 1: the first occurrence only');
SELECT pg_temp.cap('s2_fp', 9);
SELECT is(pg_temp.fired('s2_fp'), '{}'::text[], 'strategy 2: nothing before the 10th occurrence');
SELECT pg_temp.cap('s2_fp');
SELECT pg_temp.cap('s2_fp');
SELECT results_eq(
    $$SELECT pg_temp.fired('s2_fp'), pg_temp.thresholds('strategy2', 's2_fp'),
             (SELECT s.throttled_until = now() + interval '60 minutes' FROM notification_state s
              JOIN tb_error_notification_config c USING (config_id) WHERE c.description = 'strategy2')$$,
    $$VALUES (ARRAY['strategy2:threshold'], '{10}'::bigint[], true)$$,
    'strategy 2: the 10th fires, then the group is throttled for 60 minutes (the 11th does not)');
UPDATE notification_state SET throttled_until = now() - interval '1 second';
SELECT pg_temp.cap('s2_fp');
SELECT is(pg_temp.fired('s2_fp'), ARRAY['strategy2:threshold', 'strategy2:repeat'],
          'strategy 2: an hour later, the next occurrence fires ''repeat''');
SELECT pg_temp.cap('s2_fp', 3);
SELECT is(pg_temp.fired('s2_fp'), ARRAY['strategy2:threshold', 'strategy2:repeat'], 'and is throttled again');

------------------------------------------------------------------------------------------
-- first_seen_only, regressions.
UPDATE tb_error_notification_config SET enabled = false;
INSERT INTO tb_error_notification_config (description, error_fingerprint, first_seen_only, notify_on_occurrence, rate_limit_minutes)
VALUES ('first_only', 'fso_fp', true, '{2,3}', 5);
SELECT pg_temp.cap('fso_fp', 2);
SELECT pg_temp.cap('fso_fp');
UPDATE notification_state SET throttled_until = now() - interval '1 second';
SELECT pg_temp.cap('fso_fp');
SELECT is(pg_temp.fired('fso_fp'), ARRAY['first_only:new'],
          'first_seen_only: only the capture that made the group, despite thresholds and a rate limit');

INSERT INTO tb_error_notification_config (description, error_fingerprint, notify_on_regression) VALUES
    ('reg', 'reg_fp', true), ('no_reg', 'reg_fp', false);
SELECT pg_temp.cap('reg_fp');
SELECT (monitoring.resolve_error(p_fingerprint => 'reg_fp')).status;
SELECT pg_temp.cap('reg_fp');
SELECT is(pg_temp.fired('reg_fp'), ARRAY['no_reg:new', 'reg:new', 'reg:regression'],
          'a resolved group captured again fires ''regression'' (not with notify_on_regression false)');
SELECT pg_temp.cap('reg_fp', 2);
SELECT is(pg_temp.fired('reg_fp'), ARRAY['no_reg:new', 'reg:new', 'reg:regression'], 'once');

------------------------------------------------------------------------------------------
-- Frequency and user windows.
UPDATE tb_error_notification_config SET enabled = false;
INSERT INTO tb_error_notification_config (description, error_fingerprint, frequency_count, frequency_window_minutes)
VALUES ('freq', 'freq_fp', 2, 10);
SELECT pg_temp.cap('freq_fp');
SELECT pg_temp.cap('freq_fp');
SELECT is(pg_temp.fired('freq_fp'), '{}'::text[], 'frequency 2 in 10 minutes: 2 occurrences are not more than 2');
SELECT pg_temp.cap('freq_fp');
SELECT results_eq(
    $$SELECT pg_temp.fired('freq_fp'),
             (SELECT s.throttled_until = now() + interval '10 minutes' FROM notification_state s
              JOIN tb_error_notification_config c USING (config_id) WHERE c.description = 'freq')$$,
    $$VALUES (ARRAY['freq:frequency'], true)$$,
    'the 3rd fires ''frequency'' and throttles the group for the window (rate 0 < 10 minutes)');
SELECT pg_temp.cap('freq_fp', 3);
SELECT is(pg_temp.fired('freq_fp'), ARRAY['freq:frequency'], 'no more within the window');

INSERT INTO tb_error_notification_config (description, error_fingerprint, user_count, user_window_minutes)
VALUES ('users', 'users_fp', 1, 30);
SELECT pg_temp.cap('users_fp', 1, '{"user": {"id": "u1"}}');
SELECT pg_temp.cap('users_fp', 2, '{"user": {"id": "u1"}}');
SELECT is(pg_temp.fired('users_fp'), '{}'::text[], 'user_count 1: three occurrences of one user are not enough');
SELECT pg_temp.cap('users_fp', 1, '{"user": {"id": "u2"}}');
SELECT is(pg_temp.fired('users_fp'), ARRAY['users:users'], 'a second user fires ''users''');

-- A plain INSERT is a capture too: its BEFORE ROW trigger evaluates the rules before the row
-- is stored, and the windows count that row all the same.
INSERT INTO tb_error_notification_config (description, error_fingerprint, frequency_count, frequency_window_minutes)
VALUES ('freq_insert', 'freq_insert_fp', 2, 10);
INSERT INTO tb_error_notification_config (description, error_fingerprint, user_count, user_window_minutes)
VALUES ('users_insert', 'users_insert_fp', 1, 30);
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, client_fingerprint)
SELECT 'FreqInsert', 'm', '{freq_insert_fp}' FROM generate_series(1, 3);
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, client_fingerprint, user_info) VALUES
    ('UsersInsert', 'm', '{users_insert_fp}', '{"id": "a"}'), ('UsersInsert', 'm', '{users_insert_fp}', '{"id": "b"}');
-- frequency_count 2: the 3rd plain INSERT fires, although the trigger runs before the row is stored
SELECT is(pg_temp.fired('freq_insert_fp'), ARRAY['freq_insert:frequency'], 'a 3rd plain INSERT fires ''frequency''');
-- user_count 1: the second user's plain INSERT fires
SELECT is(pg_temp.fired('users_insert_fp'), ARRAY['users_insert:users'], 'a 2nd user''s plain INSERT fires ''users''');

------------------------------------------------------------------------------------------
-- A rule made after a group passed its threshold does not fire for it; a rate-limited one
-- sends a 'repeat'; a threshold crossed later still fires. (The group's first_seen is moved
-- back: in one transaction the group and the rule would otherwise be made at the same now().)
UPDATE tb_error_notification_config SET enabled = false;
SELECT pg_temp.cap('old_fp', 3);
UPDATE tb_error_log SET first_seen = now() - interval '1 day' WHERE error_fingerprint = 'old_fp';
INSERT INTO tb_error_notification_config (description, error_fingerprint, notify_on_occurrence, rate_limit_minutes) VALUES
    ('old_min1', 'old_fp', NULL, 0), ('old_at2', 'old_fp', '{2}', 0), ('old_rate60', 'old_fp', NULL, 60),
    ('old_at5', 'old_fp', '{5}', 0);
SELECT pg_temp.cap('old_fp');
SELECT is(pg_temp.fired('old_fp'), ARRAY['old_rate60:repeat'],
          'a new rule: no threshold already passed by an old group, only the rate-limited rule''s repeat');
SELECT pg_temp.cap('old_fp');
SELECT is(pg_temp.fired('old_fp'), ARRAY['old_at5:threshold', 'old_rate60:repeat'], 'a threshold crossed later fires');

------------------------------------------------------------------------------------------
-- Transactions: a rolled back capture queues nothing; a repeated event id is counted and
-- queued once.
UPDATE tb_error_notification_config SET enabled = false;
INSERT INTO tb_error_notification_config (description, error_fingerprint) VALUES ('rollback', 'rb_fp');
SAVEPOINT before_capture;
SELECT pg_temp.cap('rb_fp');
SELECT is(pg_temp.fired('rb_fp'), ARRAY['rollback:new'], 'inside the transaction the capture has queued');
ROLLBACK TO SAVEPOINT before_capture;
SELECT is((SELECT count(*)::int FROM notification_queue q JOIN tb_error_notification_config c USING (config_id)
           WHERE c.description = 'rollback')
        + (SELECT count(*)::int FROM notification_state s JOIN tb_error_notification_config c USING (config_id)
           WHERE c.description = 'rollback'), 0,
          'rolling the capture back leaves no queue row and no state');

INSERT INTO tb_error_notification_config (description, error_type, notify_on_occurrence) VALUES ('dup', 'Dup', '{2}');
SELECT monitoring.capture_error('{"event_id": "4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a", "exception_type": "Dup", "fingerprint": ["dup_fp"]}');
SELECT is(monitoring.capture_error('{"event_id": "4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a", "exception_type": "Dup", "fingerprint": ["dup_fp"]}'),
          NULL::uuid, 'the same event id again stores nothing');
SELECT monitoring.capture_errors($$[
    {"event_id": "5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b", "exception_type": "Dup", "fingerprint": ["dup_fp2"]},
    {"event_id": "5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b", "exception_type": "Dup", "fingerprint": ["dup_fp2"]}]$$);
SELECT results_eq(
    $$SELECT g.error_fingerprint, q.notification_trigger, q.threshold::int, (q.payload->>'occurrence_count')::int
      FROM notification_queue q JOIN tb_error_log g USING (error_id) JOIN tb_error_notification_config c USING (config_id)
      WHERE c.description = 'dup' ORDER BY 1$$,
    $$VALUES ('dup_fp', 'new', 1, 1), ('dup_fp2', 'new', 1, 1)$$,
    'a repeated event id (again, or twice in a batch) is queued once and never reaches threshold 2');

------------------------------------------------------------------------------------------
-- Seed 000: every INSERT INTO tb_error_notification_config example runs unchanged.
UPDATE tb_error_notification_config SET enabled = false;
SELECT lives_ok($seed$
INSERT INTO tb_error_notification_config (
    config_id,
    error_type,              -- Filter by error type (NULL = all)
    severity,                -- Filter by severity (array)
    environment,             -- Filter by environment (array)
    channel_type,            -- 'email', 'slack', 'webhook'
    channel_config,          -- Channel-specific JSON config
    rate_limit_minutes,      -- Minutes between notifications (0 = no limit)
    min_occurrence_count,    -- Only notify after N occurrences
    enabled
) VALUES (
    gen_random_uuid(),
    'ValueError',                                    -- Only ValueError errors
    ARRAY['error', 'critical'],                     -- Critical/error severity
    ARRAY['production'],                            -- Production only
    'email',
    jsonb_build_object(
        'to', ARRAY['team@myapp.com', 'oncall@myapp.com'],
        'subject', 'Production Error: {error_type}'
    ),
    60,                                             -- Max 1 notification per hour
    1,                                              -- Notify on first occurrence
    true
);
$seed$, 'seed: the email rule');
SELECT lives_ok($seed$
INSERT INTO tb_error_notification_config (
    config_id,
    error_fingerprint,       -- Specific error (NULL = all matching type/severity)
    severity,
    environment,
    channel_type,
    channel_config,
    rate_limit_minutes,
    enabled
) VALUES (
    gen_random_uuid(),
    NULL,                    -- All errors matching filters
    ARRAY['critical'],       -- Critical only
    ARRAY['production', 'staging'],
    'slack',
    jsonb_build_object(
        'webhook_url', 'https://hooks.slack.com/services/YOUR/WEBHOOK/URL',
        'channel', '#alerts',
        'username', 'FraiseQL Error Bot'
    ),
    30,                      -- Max 1 notification per 30 minutes
    true
);
$seed$, 'seed: the Slack rule');
SELECT lives_ok($seed$
INSERT INTO tb_error_notification_config (
    config_id,
    error_type,
    channel_type,
    channel_config,
    rate_limit_minutes,
    enabled
) VALUES (
    gen_random_uuid(),
    'PaymentError',
    'webhook',
    jsonb_build_object(
        'url', 'https://api.myapp.com/webhooks/errors',
        'method', 'POST',                           -- POST, PUT, PATCH
        'headers', jsonb_build_object(
            'Authorization', 'Bearer secret_token',
            'X-Custom-Header', 'value'
        )
    ),
    0,                       -- No rate limiting
    true
);
$seed$, 'seed: the webhook rule');
SELECT lives_ok($seed$
-- Config 1: Notify immediately on first occurrence
INSERT INTO tb_error_notification_config (
    error_fingerprint, min_occurrence_count, rate_limit_minutes, channel_config
) VALUES (
    'critical_bug_fingerprint', 1, 0, '{"webhook_url": "..."}'
);

-- Config 2: Notify again at 10th occurrence
INSERT INTO tb_error_notification_config (
    error_fingerprint, min_occurrence_count, rate_limit_minutes, channel_config
) VALUES (
    'critical_bug_fingerprint', 10, 0, '{"webhook_url": "..."}'
);

-- Config 3: Notify hourly after 100 occurrences
INSERT INTO tb_error_notification_config (
    error_fingerprint, min_occurrence_count, rate_limit_minutes, channel_config
) VALUES (
    'critical_bug_fingerprint', 100, 60, '{"webhook_url": "..."}'
);
$seed$, 'seed: strategy 3 (multiple thresholds via multiple configs), all three inserts');
SELECT lives_ok($seed$
-- Production: Immediate alerts
INSERT INTO tb_error_notification_config (
    environment, rate_limit_minutes, channel_type
) VALUES (
    ARRAY['production'], 0, 'slack'
);

-- Staging: Daily digest
INSERT INTO tb_error_notification_config (
    environment, rate_limit_minutes, channel_type
) VALUES (
    ARRAY['staging'], 1440, 'email'  -- 24 hours
);
$seed$, 'seed: strategy 4 (environment-specific), both inserts');
SELECT lives_ok($seed$
INSERT INTO tb_error_notification_config (
    config_id,
    severity,
    channel_type,
    channel_config,
    enabled
) VALUES (
    gen_random_uuid(),
    ARRAY['critical'],
    'twilio_sms',                -- Custom channel type
    jsonb_build_object(
        'to', '+1234567890',
        'account_sid', 'AC...',
        'auth_token', 'your_token',
        'from_number', '+0987654321'
    ),
    true
);
$seed$, 'seed: the Twilio rule (a custom channel type)');

-- ... and each one queues for a matching capture.
SELECT pg_temp.cap('seed_value', 1, '{"exception_type": "ValueError", "environment": "production", "level": "error"}');
SELECT pg_temp.cap('seed_crash', 1, '{"exception_type": "Crash", "environment": "staging", "level": "fatal"}');
SELECT pg_temp.cap('seed_payment', 1, '{"exception_type": "PaymentError", "environment": "dev"}');
SELECT set_eq(
    $$SELECT c.channel_type, g.error_fingerprint, q.notification_trigger
      FROM notification_queue q JOIN tb_error_notification_config c USING (config_id) JOIN tb_error_log g USING (error_id)
      WHERE c.enabled AND (c.error_type IS NOT NULL OR c.severity IS NOT NULL)$$,
    $$VALUES ('email', 'seed_value', 'new'), ('slack', 'seed_crash', 'new'), ('twilio_sms', 'seed_crash', 'new'),
             ('webhook', 'seed_payment', 'new')$$,
    'seed rules: email (ValueError, error, production), Slack and Twilio (critical, staging) and webhook (PaymentError) queue');
SELECT pg_temp.cap('critical_bug_fingerprint', 1, '{"environment": "dev"}');
SELECT pg_temp.cap('critical_bug_fingerprint', 9, '{"environment": "dev"}');
SELECT pg_temp.cap('critical_bug_fingerprint', 90, '{"environment": "dev"}');
SELECT results_eq(
    $$SELECT c.min_occurrence_count, c.channel_type, q.notification_trigger, q.threshold::int
      FROM notification_queue q JOIN tb_error_notification_config c USING (config_id)
      WHERE c.error_fingerprint = 'critical_bug_fingerprint' ORDER BY 1$$,
    $$VALUES (1, 'webhook', 'new', 1), (10, 'webhook', 'threshold', 10), (100, 'webhook', 'threshold', 100)$$,
    'seed strategy 3: the three rules fire at the 1st, 10th and 100th occurrence');
SELECT pg_temp.cap('seed_env_production', 1, '{"environment": "production"}');
SELECT pg_temp.cap('seed_env_staging', 1, '{"environment": "staging"}');
SELECT results_eq(
    $$SELECT g.error_fingerprint, c.channel_type, q.notification_trigger, s.throttled_until - now()
      FROM notification_queue q JOIN tb_error_notification_config c USING (config_id) JOIN tb_error_log g USING (error_id)
      JOIN notification_state s USING (error_id, config_id)
      WHERE g.error_fingerprint LIKE 'seed_env_%' AND c.enabled AND c.environment IS NOT NULL ORDER BY 1$$,
    $$VALUES ('seed_env_production', 'slack', 'new', interval '0'), ('seed_env_staging', 'email', 'new', interval '1 day')$$,
    'seed strategy 4: production alerts on Slack, staging by email at most once a day');

-- The seed's troubleshooting queries, unchanged but for the error id.
SELECT is((SELECT count(*)::int FROM (
   SELECT * FROM tb_error_notification_config WHERE enabled = true
   ) q), 9, 'troubleshooting 1: the enabled rules (the nine seed rules)');
SELECT bag_eq(replace($seed$
   SELECT
       e.error_type,
       e.severity,
       e.environment,
       c.error_type as config_error_type,
       c.severity as config_severity,
       c.environment as config_environment
   FROM tb_error_log e
   CROSS JOIN tb_error_notification_config c
   WHERE e.error_id = 'your-error-id'
     AND c.enabled = true;
$seed$, 'your-error-id', (SELECT error_id::text FROM tb_error_log WHERE error_fingerprint = 'seed_value')),
    $$VALUES ('ValueError', 'error', 'production', 'ValueError', '{error,critical}'::text[], '{production}'::text[]),
             ('ValueError', 'error', 'production', NULL, '{critical}', '{production,staging}'),
             ('ValueError', 'error', 'production', 'PaymentError', NULL, NULL),
             ('ValueError', 'error', 'production', NULL, NULL, NULL),
             ('ValueError', 'error', 'production', NULL, NULL, NULL),
             ('ValueError', 'error', 'production', NULL, NULL, NULL),
             ('ValueError', 'error', 'production', NULL, NULL, '{production}'),
             ('ValueError', 'error', 'production', NULL, NULL, '{staging}'),
             ('ValueError', 'error', 'production', NULL, '{critical}', NULL)$$,
    'troubleshooting 2: an error against every enabled rule''s filters');

-- Delivery attempts, logged as dispatch_notifications() would (it is not called here).
INSERT INTO tb_error_notification_log (config_id, error_id, channel_type, recipient, status, error_message)
SELECT c.config_id, g.error_id, c.channel_type, v.recipient, v.status, v.error_message
FROM (VALUES ('email', 'team@myapp.com', 'sent', NULL), ('email', 'team@myapp.com', 'failed', 'SMTP connection refused'),
             ('slack', '#alerts', 'failed', 'HTTP 404: no_team')) v(channel_type, recipient, status, error_message)
JOIN tb_error_notification_config c ON c.channel_type = v.channel_type AND (c.error_type = 'ValueError' OR c.severity = '{critical}')
CROSS JOIN tb_error_log g WHERE g.error_fingerprint = 'seed_value';
SELECT is(pg_temp.rows_of(replace($seed$
   SELECT * FROM tb_error_notification_log
   WHERE error_id = 'your-error-id'
   ORDER BY sent_at DESC;
$seed$, 'your-error-id', (SELECT error_id::text FROM tb_error_log WHERE error_fingerprint = 'seed_value'))), 3,
    'troubleshooting 3: the delivery attempts of one error');
SELECT bag_eq($seed$
   SELECT error_message, COUNT(*) as count
   FROM tb_error_notification_log
   WHERE status = 'failed'
     AND sent_at > NOW() - INTERVAL '24 hours'
   GROUP BY error_message
   ORDER BY count DESC;
$seed$, $$VALUES ('SMTP connection refused', 1::bigint), ('HTTP 404: no_team', 1::bigint)$$,
    'troubleshooting 4: delivery errors');
-- (renamed columns around it: the query has two columns called error_message, which bag_eq's table cannot hold)
SELECT bag_eq(format(E'SELECT * FROM (%s\n) q(sent_at, channel_type, recipient, status, delivery_error, error_type, error_message)',
                     rtrim($seed$
-- Recent notification deliveries
SELECT
    n.sent_at,
    n.channel_type,
    n.recipient,
    n.status,              -- 'sent', 'failed'
    n.error_message,       -- NULL if successful
    e.error_type,
    e.error_message
FROM tb_error_notification_log n
JOIN tb_error_log e ON n.error_id = e.error_id
ORDER BY n.sent_at DESC
LIMIT 50;
$seed$, E';\n')), $$VALUES (now(), 'email', 'team@myapp.com', 'sent', NULL, 'ValueError', 'probe'),
                 (now(), 'email', 'team@myapp.com', 'failed', 'SMTP connection refused', 'ValueError', 'probe'),
                 (now(), 'slack', '#alerts', 'failed', 'HTTP 404: no_team', 'ValueError', 'probe')$$,
    'seed delivery status: recent notification deliveries');
SELECT bag_eq($seed$
-- Failed notifications (troubleshooting)
SELECT
    n.sent_at,
    n.channel_type,
    n.error_message as delivery_error,
    e.error_type,
    COUNT(*) OVER (PARTITION BY n.channel_type) as failures_by_channel
FROM tb_error_notification_log n
JOIN tb_error_log e ON n.error_id = e.error_id
WHERE n.status = 'failed'
  AND n.sent_at > NOW() - INTERVAL '24 hours'
ORDER BY n.sent_at DESC;
$seed$, $$VALUES (now(), 'email', 'SMTP connection refused', 'ValueError', 1::bigint),
                 (now(), 'slack', 'HTTP 404: no_team', 'ValueError', 1::bigint)$$,
    'seed delivery status: failed notifications');
SELECT bag_eq($seed$
-- Notification volume by channel
SELECT
    channel_type,
    COUNT(*) as total_sent,
    COUNT(*) FILTER (WHERE status = 'sent') as successful,
    COUNT(*) FILTER (WHERE status = 'failed') as failed,
    ROUND(100.0 * COUNT(*) FILTER (WHERE status = 'sent') / COUNT(*), 2) as success_rate
FROM tb_error_notification_log
WHERE sent_at > NOW() - INTERVAL '7 days'
GROUP BY channel_type;
$seed$, $$VALUES ('email', 2::bigint, 1::bigint, 1::bigint, 50.00), ('slack', 1::bigint, 0::bigint, 1::bigint, 0.00)$$,
    'seed delivery status: notification volume by channel');
SELECT ok((SELECT relkind = 'p' FROM pg_class WHERE oid = 'monitoring.tb_error_notification_log'::regclass)
          AND EXISTS (SELECT FROM monitoring.time_series_config
                      WHERE parent_table = 'monitoring.tb_error_notification_log' AND control_column = 'sent_at')
          AND (SELECT bool_and(tableoid <> 'monitoring.tb_error_notification_log'::regclass) FROM tb_error_notification_log),
          'the log is partitioned by sent_at, registered in time_series_config, and rows land in a partition');

------------------------------------------------------------------------------------------
-- Bad rules get a clear error (check_violation).
SELECT throws_ok($$INSERT INTO tb_error_notification_config (severity) VALUES (ARRAY['error', 'urgent'])$$, '23514',
    'new row for relation "tb_error_notification_config" violates check constraint "tb_error_notification_config_severity_known"',
    'an unknown severity');
SELECT throws_ok($$INSERT INTO tb_error_notification_config (rate_limit_minutes) VALUES (-1)$$, '23514',
    'new row for relation "tb_error_notification_config" violates check constraint "tb_error_notification_config_rate_limit"',
    'a negative rate_limit_minutes');
SELECT throws_ok($$INSERT INTO tb_error_notification_config (min_occurrence_count) VALUES (0)$$, '23514',
    'new row for relation "tb_error_notification_config" violates check constraint "tb_error_notification_config_min_count"',
    'min_occurrence_count 0');
SELECT throws_ok($$INSERT INTO tb_error_notification_config (notify_on_occurrence) VALUES ('{1,0,10}')$$, '23514',
    'new row for relation "tb_error_notification_config" violates check constraint "tb_error_notification_config_thresholds"',
    'notify_on_occurrence with 0');
SELECT throws_ok($$INSERT INTO tb_error_notification_config (notify_on_occurrence) VALUES ('{-5}')$$, '23514',
    'new row for relation "tb_error_notification_config" violates check constraint "tb_error_notification_config_thresholds"',
    'notify_on_occurrence with a negative count');
SELECT throws_ok($$INSERT INTO tb_error_notification_config (frequency_count) VALUES (5)$$, '23514',
    'new row for relation "tb_error_notification_config" violates check constraint "tb_error_notification_config_frequency"',
    'frequency_count without frequency_window_minutes');
SELECT throws_ok($$INSERT INTO tb_error_notification_config (channel_type) VALUES ('my channel')$$, '23514',
    'new row for relation "tb_error_notification_config" violates check constraint "tb_error_notification_config_channel_named"',
    'a channel_type with a space');
SELECT throws_ok(format('INSERT INTO tb_error_notification_config (channel_type) VALUES (%L)', repeat('c', 100)), '23514',
    'new row for relation "tb_error_notification_config" violates check constraint "tb_error_notification_config_channel_named"',
    'a channel_type of 100 characters');
SELECT throws_ok($$INSERT INTO tb_error_notification_config (channel_type) VALUES ('x; DROP TABLE y')$$, '23514',
    'new row for relation "tb_error_notification_config" violates check constraint "tb_error_notification_config_channel_named"',
    'a hostile channel_type');
SELECT throws_ok($$INSERT INTO tb_error_notification_config (channel_config) VALUES ('[{"to": "a@example.com"}]')$$, '23514',
    'new row for relation "tb_error_notification_config" violates check constraint "tb_error_notification_config_config_object"',
    'a channel_config that is a JSON array');

------------------------------------------------------------------------------------------
-- Hostile strings in errors queue with the payload intact; long texts are cut with a marker.
UPDATE tb_error_notification_config SET enabled = false;
INSERT INTO tb_error_notification_config (description, error_type) VALUES ('hostile', $h$'; DROP TABLE y; --$h$), ('big', 'Big');
SELECT monitoring.capture_error(jsonb_build_object('exception_type', $h$'; DROP TABLE y; --$h$, 'fingerprint', '["hostile_fp"]'::jsonb,
    'message', E'it''s "quoted" $$ \\ \\u0000\nline 2\r\n\t<b>{error_type}</b> \u2603 \U0001F6A8'));
SELECT results_eq(
    $$SELECT q.payload->>'error_type', q.payload->>'error_message' FROM notification_queue q
      JOIN tb_error_notification_config c USING (config_id) WHERE c.description = 'hostile'$$,
    $v$VALUES ($h$'; DROP TABLE y; --$h$, E'it''s "quoted" $$ \\ \\u0000\nline 2\r\n\t<b>{error_type}</b> \u2603 \U0001F6A8')$v$,
    'quotes, backslashes, an escaped \u0000, newlines, braces and emoji reach the payload unchanged');
SELECT throws_ok($$SELECT monitoring.capture_error('{"exception_type": "Nul", "message": "a\u0000b"}')$$, '22P05', NULL,
                 'a JSON \u0000 (NUL) cannot become text: a clear error before anything is stored');
SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'Big', 'fingerprint', '["big_fp"]'::jsonb,
    'message', repeat('m', 1048576),
    'stack_trace', 'Traceback (most recent call last):' || repeat(E'\n  File "app.py", line 1, in handler', 30000)));
SELECT results_eq(
    $$SELECT length(q.payload->>'stack_trace') BETWEEN 8000 AND 8064,
             left(q.payload->>'stack_trace', 8000) = left(g.stack_trace, 8000),
             q.payload->>'stack_trace' ~ '…\[truncated \d+ characters\]$'
      FROM notification_queue q JOIN tb_error_log g USING (error_id) WHERE g.error_fingerprint = 'big_fp'$$,
    $$VALUES (true, true, true)$$,
    'a 1 MB stack trace is queued cut to 8000 characters plus a marker');
SELECT results_eq(
    $$SELECT q.payload->>'error_message' = g.error_message, length(q.payload->>'error_message') < 8300,
             left(q.payload->>'error_message', 8192) = repeat('m', 8192)
      FROM notification_queue q JOIN tb_error_log g USING (error_id) WHERE g.error_fingerprint = 'big_fp'$$,
    $$VALUES (true, true, true)$$,
    'a 1 MB message is queued as the group stores it (cut by the capture)');

------------------------------------------------------------------------------------------
-- Privileges: channel configs hold secrets.
UPDATE tb_error_notification_config SET enabled = false;
INSERT INTO tb_error_notification_config (description, channel_type, channel_config, enabled) VALUES
    ('secrets', 'email', $$ {"to": "ops@example.com", "auth_token": "tok-123", "smtp_password": "pw-456",
                            "headers": {"Authorization": "Bearer x"},
                            "webhook_url": "https://hooks.slack.com/services/T0/B0/XYZ"} $$, false),
    ('nested_secret', 'email', '{"smtp": {"host": "mail.example.com", "password": "nested-s3cret"}}', false);
INSERT INTO tb_error_notification_config (description, error_type, notify_on_occurrence) VALUES ('by_writer', 'WriterProbe', '{2}');

SET LOCAL ROLE observe_reader;
SELECT lives_ok($$SELECT config_id, description, error_type, error_fingerprint, severity, environment, channel_type,
                         min_occurrence_count, notify_on_occurrence, first_seen_only, notify_on_regression,
                         frequency_count, frequency_window_minutes, user_count, user_window_minutes,
                         rate_limit_minutes, enabled, created_at, severity_levels
                  FROM monitoring.tb_error_notification_config$$, 'reader reads every rule column but channel_config');
SELECT throws_ok($$SELECT channel_config FROM monitoring.tb_error_notification_config$$, '42501', NULL,
                 'reader cannot read channel_config');
SELECT is((SELECT channel_config FROM monitoring.notification_rules WHERE description = 'secrets'),
          '{"to": "ops@example.com", "auth_token": "[Filtered]", "smtp_password": "[Filtered]",
            "headers": {"Authorization": "[Filtered]"}, "webhook_url": "[Filtered]"}'::jsonb,
          'reader sees channel configs through notification_rules, secrets filtered');
-- a secret one level down ({"smtp": {"password": ...}}) is filtered too
SELECT ok((SELECT channel_config::text NOT LIKE '%nested-s3cret%' FROM monitoring.notification_rules
           WHERE description = 'nested_secret'), 'a nested secret is filtered too');
SELECT throws_ok($$SELECT settings FROM monitoring.notification_channel$$, '42501', NULL,
                 'reader cannot read notification_channel.settings');
RESET ROLE;

SET LOCAL ROLE observe_writer;
SELECT throws_ok($$SELECT config_id FROM monitoring.tb_error_notification_config$$, '42501', NULL,
                 'writer cannot read the rules');
SELECT throws_ok($$SELECT queue_id FROM monitoring.notification_queue$$, '42501', NULL, 'writer cannot read the queue');
SELECT monitoring.capture_error('{"exception_type": "WriterProbe", "message": "w", "fingerprint": ["writer_fp"]}');
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, client_fingerprint) VALUES ('WriterProbe', 'w', '{writer_fp}');
RESET ROLE;
SELECT is(pg_temp.fired('writer_fp'), ARRAY['by_writer:new', 'by_writer:threshold'],
          'writer''s capture_error() and plain INSERT evaluate the rules and queue (definer rights)');

SELECT ok(has_function_privilege('observe_dispatcher',
              'monitoring.dispatch_notifications(integer,text,integer,integer,integer)', 'EXECUTE')
          AND NOT has_function_privilege('observe_reader',
              'monitoring.dispatch_notifications(integer,text,integer,integer,integer)', 'EXECUTE')
          AND NOT has_function_privilege('observe_writer',
              'monitoring.dispatch_notifications(integer,text,integer,integer,integer)', 'EXECUTE'),
          'the dispatcher role may run dispatch_notifications(); reader and writer may not');
SET LOCAL ROLE observe_dispatcher;
SELECT throws_ok($$SELECT settings FROM monitoring.notification_channel$$, '42501', NULL,
                 'dispatcher cannot read channel settings directly');
RESET ROLE;

------------------------------------------------------------------------------------------
-- Queue helpers.
SELECT results_eq(
    format($$SELECT notification_trigger, status, payload->>'notification_trigger', config_id
             FROM notification_queue WHERE queue_id = %s$$,
           monitoring.test_notification((SELECT config_id FROM tb_error_notification_config WHERE description = 'basic'))),
    $$SELECT 'test', 'pending', 'test', config_id FROM tb_error_notification_config WHERE description = 'basic'$$,
    'test_notification() queues a pending ''test'' notification for the rule');
SELECT throws_ok($$SELECT monitoring.test_notification('00000000-0000-0000-0000-000000000000')$$, 'P0002', NULL,
                 'test_notification() of an unknown rule is a clear error');
UPDATE notification_queue q SET status = 'dead', attempts = 8, last_error = 'HTTP 500'
FROM tb_error_notification_config c WHERE c.config_id = q.config_id AND c.description = 'thr';
SELECT is(monitoring.retry_notifications(), 4, 'retry_notifications() requeues the dead notifications');
SELECT results_eq(
    $$SELECT status, attempts, count(*)::int FROM notification_queue q JOIN tb_error_notification_config c USING (config_id)
      WHERE c.description = 'thr' GROUP BY 1, 2$$,
    $$VALUES ('pending', 0, 4)$$, 'as pending with fresh attempts');
SELECT throws_ok($$SELECT * FROM monitoring.drop_old_notification_log_partitions(0)$$, '22023', NULL,
                 'drop_old_notification_log_partitions(0) is refused');
SELECT lives_ok($$SELECT * FROM monitoring.drop_old_notification_log_partitions(6)$$,
                'drop_old_notification_log_partitions(6) runs');

SELECT * FROM finish();
ROLLBACK;
