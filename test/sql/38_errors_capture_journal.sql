-- 0.11.0: a plain INSERT or COPY without notification rules counts its fast-path rows once at
-- the statement's end (error_capture_journal); every capture reads the scrub words and rule
-- flags from error_capture_state, which triggers on the three tables keep; the scrub pre-test
-- and the scrubber agree on key separators, case, digits and depth.
BEGIN;
SELECT plan(42);
SET LOCAL track_functions = 'all';

CREATE FUNCTION pg_temp.calls(p_function text) RETURNS bigint LANGUAGE sql AS $$
    SELECT COALESCE((SELECT s.calls FROM pg_stat_xact_user_functions s
                     WHERE s.schemaname = 'monitoring' AND s.funcname = p_function), 0)
$$;
CREATE TEMP TABLE calls_before (function_name text PRIMARY KEY, calls bigint);
CREATE FUNCTION pg_temp.mark() RETURNS void LANGUAGE sql AS $$
    DELETE FROM calls_before;
    INSERT INTO calls_before
    SELECT f, pg_temp.calls(f) FROM unnest('{_prepare_error_occurrences,_fold_error_capture_journal,_count_error_facts,_fold_error_counters,_fold_own_error_counters}'::text[]) f;
$$;
CREATE FUNCTION pg_temp.since_mark(p_function text) RETURNS bigint LANGUAGE sql AS $$
    SELECT pg_temp.calls(p_function) - (SELECT b.calls FROM calls_before b WHERE b.function_name = p_function)
$$;
CREATE TEMP TABLE journal_frames AS SELECT $$[
    {"filename": "ledger.py", "module": "app.ledger", "function": "post", "lineno": 10, "in_app": true},
    {"filename": "ledger.py", "module": "app.ledger", "function": "book", "lineno": 20, "in_app": true}]$$::jsonb AS f;
-- The group and the cache entry come from a first capture.
SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'JournalProbe', 'message', 'first',
    'frames', f, 'user', jsonb_build_object('id', 'u0'), 'environment', 'journal-test')) FROM journal_frames;
CREATE TEMP TABLE probe AS SELECT error_id FROM monitoring.tb_error_log WHERE error_type = 'JournalProbe';

-- error_capture_state, refreshed by the install
SELECT results_eq(
    $$SELECT fingerprint_cache_usable, notification_rules, 'password' = ANY (scrub_words), refreshed_at IS NOT NULL
      FROM monitoring.error_capture_state$$,
    $$VALUES (true, false, true, true)$$,
    'the capture state: cache usable, no notification rule, the built-in scrub words');

-- Many rows of a known stack: one fact each in the journal, counted once at the end.
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, user_info, environment, service, release_version)
SELECT 'JournalProbe', 'n ' || n, f, jsonb_build_object('id', 'u' || (n % 3)), 'journal-test', 'ledger', '1.' || (n % 2)
FROM journal_frames, generate_series(1, 50) n;
SELECT is(pg_temp.since_mark('_prepare_error_occurrences'), 0::bigint, 'fifty rows on the fast path');
SELECT is(pg_temp.since_mark('_fold_error_capture_journal'), 1::bigint, 'the journal is counted once, at the statement''s end');
SELECT is(pg_temp.since_mark('_fold_error_counters'), 1::bigint, 'with one fold for the statement');
SELECT results_eq(
    $$SELECT occurrence_count::int, affected_users::int, services, release_version FROM monitoring.tb_error_log
      WHERE error_type = 'JournalProbe'$$,
    $$VALUES (51, 3, '{ledger}'::text[], '1.1'::text)$$,
    'occurrences, users u0 u1 u2, the service and the last release are counted');
SELECT is((SELECT count(*)::int FROM monitoring.error_capture_journal), 0, 'the journal is empty after the statement');
SELECT is((SELECT count(*)::int FROM monitoring.error_group_pending), 0, 'and nothing went to the pending deltas');

-- A new stack in the middle of the statement (the set-based path, whose own INSERT of no rows
-- runs inside the trigger) does not end the statement's journal.
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment)
SELECT CASE WHEN n = 2 THEN 'JournalNew' ELSE 'JournalProbe' END, 'mixed ' || n, f, 'journal-test'
FROM journal_frames, generate_series(1, 3) n;
SELECT is(pg_temp.since_mark('_prepare_error_occurrences'), 1::bigint, 'one row went the set-based way');
SELECT is(pg_temp.since_mark('_fold_error_capture_journal'), 1::bigint, 'the journal was counted once, at the end');
SELECT is((SELECT count(*)::int FROM monitoring.error_group_pending), 0, 'the row after it was journaled too (no delta)');
SELECT is((SELECT occurrence_count::int FROM monitoring.tb_error_log WHERE error_type = 'JournalProbe'), 53,
          'both fast rows are counted');

-- A savepoint: its rows are counted at its statement's end, and rolled back with it.
SAVEPOINT before_rows;
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment)
SELECT 'JournalProbe', 'in a savepoint', f, 'journal-test' FROM journal_frames;
SELECT is((SELECT occurrence_count::int FROM monitoring.tb_error_log WHERE error_id = (SELECT error_id FROM probe)), 54,
          'a row inserted in a savepoint is counted');
ROLLBACK TO SAVEPOINT before_rows;
SELECT is((SELECT occurrence_count::int FROM monitoring.tb_error_log WHERE error_type = 'JournalProbe'), 53,
          'and its count goes with the rollback');
SELECT is((SELECT count(*)::int FROM monitoring.error_capture_journal), 0, 'leaving no fact behind');

-- The statement setting set by hand, for an INSERT straight into a partition (no statement
-- trigger runs): the facts wait in the journal, and the maintenance fold counts them.
SET LOCAL pg_observe.capture_statement = 'on';
DO $$
BEGIN
    EXECUTE format($i$INSERT INTO %s (exception_type, message, frames, environment)
                      SELECT 'JournalProbe', 'forged', f, 'journal-test' FROM journal_frames$i$,
                   (SELECT tableoid::regclass FROM monitoring.tb_error_occurrence WHERE message = 'n 1'));
END
$$;
SELECT is((SELECT count(*)::int FROM monitoring.error_capture_journal), 1, 'a forged statement mark leaves its fact in the journal');
SELECT is(monitoring._fold_all_error_counters(), '0 groups folded', 'the maintenance task');
SELECT is((SELECT count(*)::int FROM monitoring.error_capture_journal), 0, 'counts it');
SELECT is((SELECT occurrence_count::int FROM monitoring.tb_error_log WHERE error_id = (SELECT error_id FROM probe)), 54,
          'once: nothing is lost');
SET LOCAL pg_observe.capture_statement = '';

-- The mark turned off by hand in the middle of a statement: the AFTER trigger runs all the
-- same and counts the statement's facts; no other transaction's are touched. (The last row,
-- a new stack, goes the set-based way and leaves no delta: in 68bec7d no statement trigger
-- ran then, and the first three rows' facts stayed in the journal.)
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment)
SELECT CASE WHEN n = 4 THEN 'JournalToggled' ELSE 'JournalProbe' END,
       'toggled ' || n || set_config('pg_observe.capture_statement', CASE WHEN n = 4 THEN 'off' ELSE 'on' END, true),
       f, 'journal-test'
FROM journal_frames, generate_series(1, 4) n;
SELECT is((SELECT count(*)::int FROM monitoring.error_capture_journal), 0, 'a mark turned off mid-statement leaves no fact behind');
SELECT is((SELECT occurrence_count::int FROM monitoring.error_groups WHERE error_id = (SELECT error_id FROM probe)), 57,
          'and the three fast rows are counted');

-- The state follows the tables it is made of.
INSERT INTO monitoring.error_scrub_key (key_word) VALUES ('ledger_pin');
SELECT ok((SELECT 'ledgerpin' = ANY (scrub_words) FROM monitoring.error_capture_state),
          'a new scrub word is in the state, as the patterns read it (lower case, no separators)');
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment, context)
SELECT 'JournalProbe', 'pin', f, 'journal-test', '{"Ledger-PIN": "1234", "path": "/book"}' FROM journal_frames;
SELECT is((SELECT context FROM monitoring.tb_error_occurrence WHERE message = 'pin'),
          '{"Ledger-PIN": "[Filtered]", "path": "/book"}'::jsonb, 'and the fast path filters a value under it');
SELECT is(pg_temp.since_mark('_prepare_error_occurrences'), 0::bigint, 'on the fast path');
DELETE FROM monitoring.error_scrub_key WHERE key_word = 'ledger_pin';
SELECT ok((SELECT NOT 'ledgerpin' = ANY (scrub_words) FROM monitoring.error_capture_state), 'a deleted word leaves the state');

-- A state row deleted by hand comes back with the next capture (and with maintenance).
DELETE FROM monitoring.error_capture_state;
SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'JournalProbe', 'message', 'state gone',
    'frames', f, 'environment', 'journal-test', 'context', '{"password": "x"}'::jsonb)) FROM journal_frames;
SELECT is((SELECT context FROM monitoring.tb_error_occurrence WHERE message = 'state gone'), '{"password": "[Filtered]"}'::jsonb,
          'without the state row the capture still filters secrets');
SELECT is((SELECT count(*)::int FROM monitoring.error_capture_state), 1, 'and the row is back');
SELECT ok(EXISTS (SELECT FROM monitoring.maintenance_task WHERE function_name = 'monitoring._refresh_error_capture_state'),
          'maintenance refreshes the state too');

INSERT INTO monitoring.error_fingerprint_rule (match_message, fingerprint) VALUES ('ledger *', '{ledger}');
SELECT is((SELECT fingerprint_cache_usable FROM monitoring.error_capture_state), false,
          'a rule that reads the message turns the fingerprint cache off');
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment)
SELECT 'JournalProbe', 'ledger closed', f, 'journal-test' FROM journal_frames;
SELECT is(pg_temp.since_mark('_prepare_error_occurrences'), 1::bigint, 'so a known stack goes the set-based way');
SELECT is((SELECT g.fingerprint_method FROM monitoring.tb_error_occurrence o JOIN monitoring.tb_error_log g USING (error_id)
           WHERE o.message = 'ledger closed'), 'rule', 'and the rule groups it');
UPDATE monitoring.error_fingerprint_rule SET enabled = false WHERE match_message = 'ledger *';
SELECT is((SELECT fingerprint_cache_usable FROM monitoring.error_capture_state), true, 'disabled, the cache is usable again');

INSERT INTO monitoring.tb_error_notification_config (description, error_type, min_occurrence_count, channel_type, channel_config)
VALUES ('journal rule', 'JournalProbe', 1000, 'webhook', '{"url": "https://hooks.example/journal"}');
SELECT is((SELECT notification_rules FROM monitoring.error_capture_state), true, 'an enabled notification rule is in the state');
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment)
SELECT 'JournalProbe', 'with rules ' || n, f, 'journal-test' FROM journal_frames, generate_series(1, 2) n;
SELECT is(pg_temp.since_mark('_fold_own_error_counters'), 1::bigint,
          'with rules, rows leave counter deltas as they come, folded at the end');
SELECT is((SELECT occurrence_count::int FROM monitoring.error_groups WHERE error_id = (SELECT error_id FROM probe)),
          (SELECT count(*)::int FROM monitoring.tb_error_occurrence WHERE error_id = (SELECT error_id FROM probe)),
          'and every row is counted');
DELETE FROM monitoring.tb_error_notification_config WHERE description = 'journal rule';
SELECT is((SELECT notification_rules FROM monitoring.error_capture_state), false, 'without it, the state says so');

-- The pre-test and the scrubber agree: what one path filters, the other does too.
-- Separators: spaces, tabs, line breaks, - and _ join a key word; a form feed or a no-break
-- space does not (the pre-test reads JSON text, where those are escapes or other characters).
SELECT results_eq(
    $$SELECT monitoring._scrub(x::text, ARRAY['password'])::jsonb FROM (VALUES
        ('{"pass word": "a", "pass\tword": "b", "PASS-WORD": "c"}'::jsonb),
        (jsonb_build_object(E'pass\fword', 'd', E'pass\u00a0word', 'e', E'to\u212aen', 'f'))) v(x)$$,
    $$VALUES ('{"pass word": "[Filtered]", "pass\tword": "[Filtered]", "PASS-WORD": "[Filtered]"}'::jsonb),
             (jsonb_build_object(E'pass\fword', 'd', E'pass\u00a0word', 'e', E'to\u212aen', 'f'))$$,
    'the scrubber joins key words over spaces, tabs, - and _, not over a form feed or a no-break space');
SELECT is(monitoring._scrub(jsonb_build_object(E'to\u212aen', 'f', E'tenant_P\u0130', 'g')::text, ARRAY['token', 'tenant_pi'])::jsonb,
          jsonb_build_object(E'to\u212aen', 'f', E'tenant_P\u0130', 'g'),
          'nor folds a letter outside A to Z into one inside (the Kelvin sign, a dotted capital I)');
SELECT is(monitoring._scrub('{"price": 10.50, "big": 1e400, "n": 123456789012345678901234567890, "token": "t"}', ARRAY['token']),
          '{"price": 10.50, "big": 1e400, "n": 123456789012345678901234567890, "token": "[Filtered]"}',
          'numbers come back as written when a secret is filtered');
-- Digits: ASCII only; an ASCII card after a non-ASCII letter is filtered.
SELECT results_eq(
    $$SELECT monitoring._scrub(to_jsonb(x)::text, '{}')::jsonb FROM (VALUES
        (E'\uff14\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11'),
        ('café4111111111111111')) v(x)$$,
    $$VALUES (to_jsonb(E'\uff14\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11'::text)),
             ('"café[Filtered]"'::jsonb)$$,
    'full-width digits are no card; ASCII digits after é are');
-- Depth: the scrubber cuts the 65th level of what it is given, and it is given the context
-- inside an object: 64 openers in the context reach it, and the fast path filters them too.
CREATE TEMP TABLE deep AS
SELECT (repeat('{"a": ', 63) || '{"leaf": 1}' || repeat('}', 63))::jsonb AS doc;
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment, context)
SELECT 'JournalProbe', 'deep fast', f, 'journal-test', doc FROM journal_frames, deep;
SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'JournalProbe', 'message', 'deep captured',
    'frames', f, 'environment', 'journal-test', 'context', doc)) FROM journal_frames, deep;
SELECT is((SELECT count(DISTINCT context)::int FROM monitoring.tb_error_occurrence WHERE message LIKE 'deep %'), 1,
          'a context 64 levels deep is stored alike by the fast path and by capture_error()');
SELECT ok((SELECT context::text LIKE '%[Filtered: nested too deep]%' FROM monitoring.tb_error_occurrence WHERE message = 'deep fast'),
          'cut where the scrubber cuts');
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment, context)
SELECT 'JournalProbe', 'sep fast', f, 'journal-test', jsonb_build_object(E'pass\fword', 'kept', 'pass word', 'gone') FROM journal_frames;
SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'JournalProbe', 'message', 'sep captured', 'frames', f,
    'environment', 'journal-test', 'context', jsonb_build_object(E'pass\fword', 'kept', 'pass word', 'gone'))) FROM journal_frames;
SELECT results_eq(
    $$SELECT o.context FROM monitoring.tb_error_occurrence o WHERE o.message IN ('sep fast', 'sep captured')$$,
    $$VALUES (jsonb_build_object(E'pass\fword', 'kept', 'pass word', '[Filtered]')),
             (jsonb_build_object(E'pass\fword', 'kept', 'pass word', '[Filtered]'))$$,
    'both paths store the same: the spaced key filtered, the form-fed one kept');

SELECT * FROM finish();
ROLLBACK;
