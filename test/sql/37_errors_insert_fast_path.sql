-- The plain INSERT's fast path: a row whose stack is in the fingerprint cache and whose group
-- is unresolved is prepared by the row trigger alone (no call of the set-based functions),
-- and its counts are folded once by the statement trigger. Each test checks both that the
-- fast path was taken (pg_stat_xact_user_functions) and that the result is what the
-- set-based capture gives.
BEGIN;
SELECT plan(41);
SET LOCAL track_functions = 'all';

-- Calls of a function in this transaction so far.
CREATE FUNCTION pg_temp.calls(p_function text) RETURNS bigint LANGUAGE sql AS $$
    SELECT COALESCE((SELECT s.calls FROM pg_stat_xact_user_functions s
                     WHERE s.schemaname = 'monitoring' AND s.funcname = p_function), 0)
$$;
CREATE TEMP TABLE fast_frames AS SELECT $$[
    {"filename": "orders.py", "module": "app.orders", "function": "load", "lineno": 10, "in_app": true},
    {"filename": "orders.py", "module": "app.orders", "function": "save", "lineno": 20, "in_app": true}]$$::jsonb AS f;
CREATE TEMP TABLE calls_before (function_name text PRIMARY KEY, calls bigint);
CREATE FUNCTION pg_temp.mark() RETURNS void LANGUAGE sql AS $$
    DELETE FROM calls_before;
    INSERT INTO calls_before
    SELECT f, pg_temp.calls(f) FROM unnest('{_prepare_error_occurrences,_error_occurrence_fold,_scrub_occurrence,_fold_error_counters}'::text[]) f;
$$;
CREATE FUNCTION pg_temp.since_mark(p_function text) RETURNS bigint LANGUAGE sql AS $$
    SELECT pg_temp.calls(p_function) - (SELECT b.calls FROM calls_before b WHERE b.function_name = p_function)
$$;

-- A statement whose rows all go the set-based way leaves nothing for the statement trigger
-- to count, also as the session's first (the settings unset until then).
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, environment) VALUES ('SlowFirst', 'new', 'fast-test');
SELECT is(pg_temp.since_mark('_fold_error_counters'), 1::bigint,
          'a statement without fast-path rows: only the set-based row''s own count is folded');

-- The first event of the stack goes the set-based way: it makes the group and the cache entry.
SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'FastProbe', 'message', 'first',
    'frames', f, 'user', jsonb_build_object('id', 'u1'), 'environment', 'fast-test')) FROM fast_frames;
SELECT pg_temp.mark();

INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, user_info, environment, service, event_id)
SELECT 'FastProbe', 'order ' || n || ' failed', f, jsonb_build_object('id', 'u' || (n % 2 + 1)), 'fast-test', 'api',
       ('00000000-0000-4000-8000-00000000000' || n)::uuid
FROM fast_frames, generate_series(1, 3) n;
SELECT is(pg_temp.since_mark('_prepare_error_occurrences'), 0::bigint,
          'three rows of a known stack and an unresolved group: no set-based call');
SELECT is(pg_temp.since_mark('_error_occurrence_fold'), 1::bigint, 'the statement trigger folded their counts once');
SELECT results_eq(
    $$SELECT g.occurrence_count::int, g.affected_users::int, g.services, g.status
      FROM monitoring.tb_error_log g WHERE g.error_type = 'FastProbe'$$,
    $$VALUES (4, 2, '{api}'::text[], 'unresolved'::text)$$,
    'the group counts the rows (4 occurrences, users u1 and u2, the new service), in tb_error_log itself');
SELECT is((SELECT count(*)::int FROM monitoring.error_group_pending), 0, 'nothing is left pending');
SELECT is((SELECT count(DISTINCT error_id)::int FROM monitoring.tb_error_occurrence WHERE exception_type = 'FastProbe'), 1,
          'every row has the group''s error_id');

-- A retry of a stored event id is dropped, and not counted.
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment, event_id)
SELECT 'FastProbe', 'retry', f, 'fast-test', '00000000-0000-4000-8000-000000000001' FROM fast_frames;
SELECT is((SELECT count(*)::int FROM monitoring.tb_error_occurrence WHERE event_id = '00000000-0000-4000-8000-000000000001'), 1,
          'a retried event id is stored once');
SELECT is((SELECT occurrence_count::int FROM monitoring.tb_error_log WHERE error_type = 'FastProbe'), 4, 'and not counted again');
SELECT is(pg_temp.since_mark('_prepare_error_occurrences'), 0::bigint, 'on the fast path');

-- A retry of a row that goes the set-based way (a client fingerprint) is dropped as well.
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, client_fingerprint, event_id)
VALUES ('SlowRetry', 'once', '{slow-retry}', '00000000-0000-4000-8000-0000000000ee');
SELECT lives_ok($$INSERT INTO monitoring.tb_error_occurrence (exception_type, message, client_fingerprint, event_id)
                  VALUES ('SlowRetry', 'twice', '{slow-retry}', '00000000-0000-4000-8000-0000000000ee')$$,
                'a retried event id on the set-based path is no error');
SELECT is((SELECT count(*)::int FROM monitoring.tb_error_occurrence WHERE exception_type = 'SlowRetry'), 1,
          'and is stored once');

-- The same limits as the set-based capture; the inserter's error_id is not trusted.
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (error_id, exception_type, message, frames, environment, trace_id, span_id, context)
SELECT gen_random_uuid(), 'FastProbe', repeat('m', 10000), f, 'fast-test', 'ABCDEF0123456789ABCDEF0123456789',
       '0123456789ABCDEF', '"not an object"'
FROM fast_frames;
SELECT results_eq(
    $$SELECT length(o.message) > 8192 AND o.message LIKE '%…[truncated 1808 characters]', o.trace_id, o.span_id, o.context,
             o.error_id = g.error_id
      FROM monitoring.tb_error_occurrence o JOIN monitoring.tb_error_log g ON g.error_type = o.exception_type
      WHERE o.exception_type = 'FastProbe' AND o.message LIKE 'mmm%'$$,
    $$VALUES (true, 'abcdef0123456789abcdef0123456789'::text, '0123456789abcdef'::text, '{"value": "not an object"}'::jsonb, true)$$,
    'message cut with its marker, ids in lower case, a non-object context wrapped, the group''s error_id');
SELECT is(pg_temp.since_mark('_prepare_error_occurrences'), 0::bigint, 'on the fast path');

-- Secrets and card numbers are scrubbed on the fast path too.
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment, context)
SELECT 'FastProbe', 'card 4111 1111 1111 1111 declined', f, 'fast-test', '{"password": "hunter2", "path": "/pay"}'
FROM fast_frames;
SELECT results_eq(
    $$SELECT o.message, o.context FROM monitoring.tb_error_occurrence o
      WHERE o.exception_type = 'FastProbe' AND o.context ? 'password'$$,
    $$VALUES ('card [Filtered] declined'::text, '{"password": "[Filtered]", "path": "/pay"}'::jsonb)$$,
    'a password and a card number are filtered');
SELECT is(pg_temp.since_mark('_scrub_occurrence'), 1::bigint, 'by the scrubber');
SELECT is(pg_temp.since_mark('_prepare_error_occurrences'), 0::bigint, 'on the fast path');

-- The card test is the scrubber's own pattern, word boundaries included: a UUID whose digit
-- groups run together is no card and costs no scrubber call; a card after a JSON escape is.
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment, context)
SELECT 'FastProbe', 'uuid', f, 'fast-test', '{"request_id": "8f3a1234-5678-4012-9456-1234567890ab"}' FROM fast_frames;
SELECT is(pg_temp.since_mark('_scrub_occurrence'), 0::bigint, 'a UUID request id does not call the scrubber');
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment, context)
SELECT 'FastProbe', 'escaped', f, 'fast-test', jsonb_build_object('note', E'paid with\n4111111111111111') FROM fast_frames;
SELECT is((SELECT context ->> 'note' FROM monitoring.tb_error_occurrence WHERE message = 'escaped'), E'paid with\n[Filtered]',
          'a card number after a newline in a JSON string is filtered');
SELECT is((SELECT context ->> 'request_id' FROM monitoring.tb_error_occurrence WHERE message = 'uuid'),
          '8f3a1234-5678-4012-9456-1234567890ab', 'and the UUID is kept as sent');

-- Python's \b takes a combining mark for no word character, so the scrubber filters a card
-- that follows one; the pre-test must flag it too.
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment, context)
SELECT 'FastProbe', 'paid का4111111111111111 ok', f, 'fast-test', '{"note": "ที4111111111111111"}' FROM fast_frames;
SELECT results_eq(
    $$SELECT message, context ->> 'note' FROM monitoring.tb_error_occurrence WHERE message LIKE 'paid %'$$,
    $$VALUES ('paid का[Filtered] ok'::text, 'ที[Filtered]'::text)$$,
    'a card after a combining mark is filtered, in the message and in the context');

-- A raw traceback seen before: the frames parsed for the cache come with the row.
SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'FastText', 'message', 'boom 1', 'stack_trace',
    E'Traceback (most recent call last):\n  File "/srv/app/orders.py", line 3, in load\n    x()\nFastText: boom 1'));
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, stack_trace)
VALUES ('FastText', 'boom 2', E'Traceback (most recent call last):\n  File "/srv/app/orders.py", line 3, in load\n    x()\nFastText: boom 2');
SELECT is((SELECT frames #>> '{0,function}' FROM monitoring.tb_error_occurrence WHERE message = 'boom 2'), 'load',
          'a raw traceback gets the frames parsed from it');
SELECT is((SELECT occurrence_count::int FROM monitoring.tb_error_log WHERE error_type = 'FastText'), 2, 'in the same group');
SELECT is(pg_temp.since_mark('_prepare_error_occurrences'), 0::bigint, 'on the fast path');

-- A resolved group is reopened: that row goes the set-based way.
SELECT monitoring.resolve_error((SELECT error_fingerprint FROM monitoring.tb_error_log WHERE error_type = 'FastProbe'));
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment)
SELECT 'FastProbe', 'again', f, 'fast-test' FROM fast_frames;
SELECT results_eq(
    $$SELECT g.status, g.regressed_at IS NOT NULL FROM monitoring.tb_error_log g WHERE g.error_type = 'FastProbe'$$,
    $$VALUES ('unresolved'::text, true)$$, 'a plain INSERT into a resolved group reopens it as regressed');
SELECT is(pg_temp.since_mark('_prepare_error_occurrences'), 1::bigint, 'through the set-based path');

-- A row inserted into a partition directly: no statement trigger of the parent runs, so its
-- delta waits; the views count it, and the maintenance task folds it.
SELECT pg_temp.mark();
DO $$
BEGIN
    EXECUTE format($i$INSERT INTO %s (exception_type, message, frames, environment)
                      SELECT 'FastProbe', 'direct', f, 'fast-test' FROM fast_frames$i$,
                   (SELECT tableoid::regclass FROM monitoring.tb_error_occurrence WHERE message = 'again'));
END
$$;
SELECT is((SELECT occurrences::int FROM monitoring.error_group_pending), 1, 'a row inserted into its partition leaves a delta');
SELECT is((SELECT occurrence_count::int FROM monitoring.error_groups WHERE error_type = 'FastProbe'),
          (SELECT occurrence_count::int + 1 FROM monitoring.tb_error_log WHERE error_type = 'FastProbe'),
          'which error_groups counts already');
SELECT is(monitoring._fold_all_error_counters(), '1 groups folded', 'the maintenance task folds it');
SELECT is((SELECT count(*)::int FROM monitoring.error_group_pending), 0, 'and nothing is left');

-- A notification rule fires on the fast path as on the set-based one.
INSERT INTO monitoring.tb_error_notification_config
    (description, error_type, min_occurrence_count, notify_on_regression, channel_type, channel_config)
VALUES ('fast threshold', 'FastProbe', 100, false, 'webhook', '{"url": "https://hooks.example/fast"}');
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment, user_info)
SELECT 'FastProbe', 'burst ' || n, f, 'fast-test', jsonb_build_object('id', 'burst ' || n)
FROM fast_frames, generate_series(1, 100 - (SELECT occurrence_count::int FROM monitoring.tb_error_log WHERE error_type = 'FastProbe')) n;
SELECT results_eq(
    $$SELECT q.notification_trigger, q.threshold::int FROM monitoring.notification_queue q
      JOIN monitoring.tb_error_notification_config c USING (config_id) WHERE c.description = 'fast threshold'$$,
    $$VALUES ('threshold'::text, 100)$$, 'the row that makes 100 occurrences fires the threshold, once');
SELECT is(pg_temp.since_mark('_prepare_error_occurrences'), 0::bigint, 'on the fast path');

-- With a notification rule enabled (the one above), a long statement folds every 1,000 rows
-- as well as at its end, so that the deltas the rules add up stay few.
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment)
SELECT 'FastProbe', 'bulk ' || n, f, 'fast-test' FROM fast_frames, generate_series(1, 1500) n;
SELECT is(pg_temp.since_mark('_fold_error_counters'), 2::bigint, '1,500 rows: folded after the 1,000th and at the end');
SELECT is((SELECT count(*)::int FROM monitoring.error_group_pending), 0, 'nothing is left pending');

-- The setting is anyone's to set: nonsense in it does not fail the INSERT nor lose a count.
SET LOCAL pg_observe.capture_pending = 'nonsense''; --';
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment)
SELECT 'FastProbe', 'after nonsense', f, 'fast-test' FROM fast_frames;
SELECT is((SELECT count(*)::int FROM monitoring.tb_error_occurrence WHERE message = 'after nonsense'), 1,
          'a row inserted after nonsense in pg_observe.capture_pending is stored');
SELECT is((SELECT occurrence_count::int FROM monitoring.error_groups WHERE error_type = 'FastProbe'),
          (SELECT count(*)::int FROM monitoring.tb_error_occurrence WHERE exception_type = 'FastProbe'),
          'and every row of the group is counted');

-- The notification's payload counts the users still in pending deltas.
SELECT is((SELECT (q.payload ->> 'affected_users')::int FROM monitoring.notification_queue q
           JOIN monitoring.tb_error_notification_config c USING (config_id) WHERE c.description = 'fast threshold'),
          (SELECT count(DISTINCT user_key)::int FROM monitoring.error_group_user u
           JOIN monitoring.tb_error_log g USING (error_id) WHERE g.error_type = 'FastProbe'),
          'the threshold notification names every affected user so far');

-- Rows that wait in the default partition (their month's partition missing) are moved by
-- run_maintenance() with an INSERT: the trigger must let them through as stored already,
-- neither dropping a known event id nor counting a row twice.
CREATE TEMP TABLE this_month AS
SELECT tableoid::regclass::text AS partition_name FROM monitoring.tb_error_occurrence WHERE message = 'again';
SELECT lives_ok(format('DROP TABLE %s', (SELECT partition_name FROM this_month)), 'drop this month''s partition to simulate a gap');
SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'FastProbe', 'message', 'in default', 'frames', f,
    'environment', 'fast-test', 'event_id', '00000000-0000-4000-8000-0000000000dd')) FROM fast_frames;
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment)
SELECT 'FastProbe', 'in default too', f, 'fast-test' FROM fast_frames;
CREATE TEMP TABLE count_before AS
SELECT occurrence_count FROM monitoring.error_groups WHERE error_type = 'FastProbe';
SELECT is((SELECT count(*)::int FROM monitoring.tb_error_occurrence WHERE message LIKE 'in default%'
           AND tableoid = monitoring._default_partition('monitoring.tb_error_occurrence')), 2, 'two rows wait in the default');
SELECT lives_ok($$SELECT * FROM monitoring.run_maintenance()$$, 'run_maintenance() moves them');
SELECT results_eq(
    $$SELECT message, tableoid = monitoring._default_partition('monitoring.tb_error_occurrence')
      FROM monitoring.tb_error_occurrence WHERE message LIKE 'in default%' ORDER BY message$$,
    $$VALUES ('in default'::text, false), ('in default too', false)$$,
    'both are in the recreated partition, the one with a known event id too');
SELECT is((SELECT occurrence_count FROM monitoring.error_groups WHERE error_type = 'FastProbe'),
          (SELECT occurrence_count FROM count_before), 'and the move counted nothing twice');

SELECT * FROM finish();
ROLLBACK;
