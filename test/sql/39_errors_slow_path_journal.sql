-- 0.12.0: a plain INSERT's slow path (a new group, a regression, an ignore that runs out)
-- counts its rows at the statement's end like the fast path, unless the group is still
-- ignored; error_group_user has no foreign key, and triggers on tb_error_log delete the users
-- of deleted groups; user keys are compared byte-wise. Event ids are still checked as each
-- row comes: the retries below broke a version that left them to the statement's end.
BEGIN;
SELECT plan(31);
SET LOCAL track_functions = 'all';

-- Calls of monitoring's functions so far in this transaction, to count those of one statement.
CREATE TEMP TABLE calls_before AS
SELECT s.funcname::text AS function_name, s.calls FROM pg_stat_xact_user_functions s WHERE false;
CREATE FUNCTION pg_temp.mark() RETURNS void LANGUAGE sql AS $$
    DELETE FROM calls_before;
    INSERT INTO calls_before SELECT s.funcname, s.calls FROM pg_stat_xact_user_functions s WHERE s.schemaname = 'monitoring';
$$;
CREATE FUNCTION pg_temp.since_mark(p_function text) RETURNS bigint LANGUAGE sql AS $$
    SELECT COALESCE((SELECT s.calls FROM pg_stat_xact_user_functions s
                     WHERE s.schemaname = 'monitoring' AND s.funcname = p_function), 0)
         - COALESCE((SELECT b.calls FROM calls_before b WHERE b.function_name = p_function), 0)
$$;
CREATE TEMP TABLE slow_frames AS SELECT $$[
    {"filename": "vault.py", "module": "app.vault", "function": "open", "lineno": 10, "in_app": true},
    {"filename": "vault.py", "module": "app.vault", "function": "seal", "lineno": 20, "in_app": true}]$$::jsonb AS f;

-- A new stack: its first row makes the group (the slow path), the others find it; all four
-- are counted once, at the statement's end.
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, user_info, environment, service, release_version)
SELECT 'SlowJournal', 'n ' || n, f, jsonb_build_object('id', 'v' || n), 'slow-test', 'vault', '3.' || n
FROM slow_frames, generate_series(1, 4) n;
SELECT is(pg_temp.since_mark('_prepare_error_occurrences'), 1::bigint, 'the first row went the slow way');
SELECT is(pg_temp.since_mark('_count_error_occurrences'), 0::bigint, 'and was not counted on its own');
SELECT is(pg_temp.since_mark('_fold_error_capture_journal'), 1::bigint, 'the statement''s rows were counted once, at its end');
SELECT results_eq(
    $$SELECT occurrence_count::int, affected_users::int, services, release_version, environments FROM monitoring.tb_error_log
      WHERE error_type = 'SlowJournal'$$,
    $$VALUES (4, 4, '{vault}'::text[], '3.4'::text, '{slow-test}'::text[])$$,
    'the new group counts all four rows, their users, service, release and environment');
SELECT is((SELECT count(*)::int FROM monitoring.error_capture_journal), 0, 'the journal is empty after the statement');
SELECT is((SELECT count(*)::int FROM monitoring.error_group_pending), 0, 'and no delta waits');

-- A regression: the first row reopens the group (slow path), and is counted at the end.
SELECT monitoring.resolve_error(error_fingerprint) FROM monitoring.tb_error_log WHERE error_type = 'SlowJournal';
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, user_info, environment)
SELECT 'SlowJournal', 'again ' || n, f, jsonb_build_object('id', 'w' || n), 'slow-test'
FROM slow_frames, generate_series(1, 2) n;
SELECT is(pg_temp.since_mark('_count_error_occurrences'), 0::bigint, 'the regressed row was journaled too');
SELECT results_eq(
    $$SELECT status, occurrence_count::int, affected_users::int FROM monitoring.tb_error_log WHERE error_type = 'SlowJournal'$$,
    $$VALUES ('unresolved'::text, 6, 6)$$,
    'the group reopened and counts both rows and their users');
SELECT ok(EXISTS (SELECT FROM monitoring.error_activity a JOIN monitoring.tb_error_log g USING (error_id)
                  WHERE g.error_type = 'SlowJournal' AND a.action = 'regression'), 'the regression is recorded');

-- Ignored until 2 more: the ignored rows are counted one by one (each reads the count), so
-- the third row of the statement finds the ignore run out; the rest go the fast way.
SELECT monitoring.ignore_error(error_fingerprint, NULL, 2) FROM monitoring.tb_error_log WHERE error_type = 'SlowJournal';
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment)
SELECT 'SlowJournal', 'ignored ' || n, f, 'slow-test'
FROM slow_frames, generate_series(1, 5) n;
SELECT is(pg_temp.since_mark('_count_error_occurrences'), 2::bigint, 'the two rows of the ignored group were counted on their own');
SELECT is(pg_temp.since_mark('_prepare_error_occurrences'), 3::bigint, 'the third row went the slow way and ended the ignore');
SELECT results_eq(
    $$SELECT status, occurrence_count::int FROM monitoring.tb_error_log WHERE error_type = 'SlowJournal'$$,
    $$VALUES ('unresolved'::text, 11)$$,
    'unignored after two more, and all five rows counted');

-- Event ids on the fast path: an id twice in one statement keeps its first row, a retry in a
-- later statement keeps none; neither is counted.
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment, event_id)
SELECT 'SlowJournal', 'evt ' || n, f, 'slow-test', ('00000000-0000-4000-8000-00000000010' || (n % 2))::uuid
FROM slow_frames, generate_series(1, 4) n;
SELECT is(pg_temp.since_mark('_prepare_error_occurrences'), 0::bigint, 'four rows with event ids on the fast path');
SELECT results_eq(
    $$SELECT message FROM monitoring.tb_error_occurrence WHERE message LIKE 'evt %' ORDER BY message$$,
    $$VALUES ('evt 1'::text), ('evt 2')$$,
    'two ids, each twice in the statement: their first rows are kept');
SELECT is((SELECT occurrence_count::int FROM monitoring.tb_error_log WHERE error_type = 'SlowJournal'), 13,
          'and counted once each');
SELECT is((SELECT count(*)::int FROM monitoring.error_event_seen
           WHERE event_id IN ('00000000-0000-4000-8000-000000000100', '00000000-0000-4000-8000-000000000101')), 2,
          'both ids are registered');
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment, event_id)
SELECT 'SlowJournal', m, f, 'slow-test', id::uuid
FROM slow_frames, (VALUES ('evt retry', '00000000-0000-4000-8000-000000000101'),
                          ('evt new', '00000000-0000-4000-8000-000000000102')) v(m, id);
SELECT results_eq(
    $$SELECT message FROM monitoring.tb_error_occurrence WHERE message IN ('evt retry', 'evt new')$$,
    $$VALUES ('evt new'::text)$$,
    'a retried id in a later statement is dropped, a new one kept');
SELECT is((SELECT message FROM monitoring.tb_error_occurrence WHERE event_id = '00000000-0000-4000-8000-000000000101'),
          'evt 1', 'the original row of the retried id is still there');
SELECT is((SELECT occurrence_count::int FROM monitoring.tb_error_log WHERE error_type = 'SlowJournal'), 14,
          'only the new one is counted');
-- One id on a fast-path row and, later in the statement, on a row of a new stack (the slow
-- path): one row is kept, and one counted.
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment, event_id)
SELECT t, 'evt mixed', f, 'slow-test', '00000000-0000-4000-8000-000000000103'
FROM slow_frames, (VALUES (1, 'SlowJournal'), (2, 'SlowMixed')) v(n, t) ORDER BY n;
SELECT results_eq(
    $$SELECT (SELECT count(*)::int FROM monitoring.tb_error_occurrence WHERE event_id = '00000000-0000-4000-8000-000000000103'),
             (SELECT occurrence_count::int FROM monitoring.tb_error_log WHERE error_type = 'SlowJournal')
             + COALESCE((SELECT occurrence_count::int FROM monitoring.tb_error_log WHERE error_type = 'SlowMixed'), 0)$$,
    $$VALUES (1, 15)$$,
    'an id on both paths in one statement: one row stored and counted');
-- A retry that repeats the row's own key too (an idempotent re-send, a COPY run twice, a line
-- twice in one statement): dropped as a retry, with or without ON CONFLICT, never an error,
-- and the stored row stays.
INSERT INTO monitoring.tb_error_occurrence (occurrence_id, occurred_at, exception_type, message, frames, environment, event_id)
SELECT '11111111-1111-4111-8111-111111111111', now() - interval '1 hour', 'SlowJournal', 'keyed original', f, 'slow-test',
       '22222222-2222-4222-8222-222222222222' FROM slow_frames;
SELECT lives_ok($$
    INSERT INTO monitoring.tb_error_occurrence (occurrence_id, occurred_at, exception_type, message, frames, environment, event_id)
    SELECT '11111111-1111-4111-8111-111111111111', now() - interval '1 hour', 'SlowJournal', 'keyed retry', f, 'slow-test',
           '22222222-2222-4222-8222-222222222222' FROM slow_frames, generate_series(1, 2)$$,
    'a repeated row with its own key is no duplicate-key error');
INSERT INTO monitoring.tb_error_occurrence (occurrence_id, occurred_at, exception_type, message, frames, environment, event_id)
SELECT '11111111-1111-4111-8111-111111111111', now() - interval '1 hour', 'SlowJournal', 'keyed retry', f, 'slow-test',
       '22222222-2222-4222-8222-222222222222' FROM slow_frames
ON CONFLICT DO NOTHING;
SELECT results_eq(
    $$SELECT message FROM monitoring.tb_error_occurrence WHERE event_id = '22222222-2222-4222-8222-222222222222'$$,
    $$VALUES ('keyed original'::text)$$,
    'the keyed original is stored once and kept, through retries with and without ON CONFLICT');
SELECT is((SELECT occurrence_count::int FROM monitoring.tb_error_log WHERE error_type = 'SlowJournal'), 16,
          'and counted once');

-- With a notification rule, the slow path counts each row as it comes (the rule reads counts).
INSERT INTO monitoring.tb_error_notification_config (error_type, channel_type, channel_config)
VALUES ('SlowRuled', 'webhook', '{"url": "http://127.0.0.1:9/none"}');
SELECT pg_temp.mark();
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, user_info, environment)
SELECT 'SlowRuled', 'ruled ' || n, f, jsonb_build_object('id', 'r' || n), 'slow-test' FROM slow_frames, generate_series(1, 2) n;
SELECT is(pg_temp.since_mark('_count_error_occurrences'), 1::bigint, 'with a rule, the new group''s row is counted at once');
SELECT is((SELECT occurrence_count::int FROM monitoring.tb_error_log WHERE error_type = 'SlowRuled'), 2, 'both rows counted');
DELETE FROM monitoring.tb_error_notification_config WHERE error_type = 'SlowRuled';

-- error_group_user: no foreign key, byte-wise keys, the users go with their group.
SELECT hasnt_fk('monitoring', 'error_group_user', 'error_group_user has no foreign key (the triggers stand in)');
SELECT is((SELECT c.collname::text FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
           WHERE a.attrelid = 'monitoring.error_group_user'::regclass AND a.attname = 'user_key'), 'C',
          'user keys are compared byte-wise');
SELECT is((SELECT count(*)::int FROM monitoring.error_group_user u JOIN monitoring.tb_error_log g USING (error_id)
           WHERE g.error_type = 'SlowJournal'), 6, 'the group has its six users');
DELETE FROM monitoring.tb_error_log WHERE error_type = 'SlowJournal';
SELECT is((SELECT count(*)::int FROM monitoring.error_group_user u
           WHERE NOT EXISTS (SELECT FROM monitoring.tb_error_log g WHERE g.error_id = u.error_id)), 0,
          'deleting a group deletes its users');
SELECT cmp_ok((SELECT count(*)::int FROM monitoring.error_group_user), '>', 0, 'other groups keep theirs');
SET LOCAL client_min_messages = warning;   -- the cascade names each table
TRUNCATE monitoring.tb_error_log CASCADE;
SELECT is((SELECT count(*)::int FROM monitoring.error_group_user), 0, 'truncating the groups empties the users');

SELECT * FROM finish();
ROLLBACK;
