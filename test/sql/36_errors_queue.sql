-- The capture queue: queue_error() stores the event as sent and returns its id; the capture
-- runs later (process_error_queue()), filing events at their time of arrival; an event the
-- capture fails on is kept with the reason, the rest of its batch is stored. Also: ids too
-- long to index (trace, span, user) no longer make a capture fail.
BEGIN;
SELECT plan(39);

-- Writing
SELECT is(monitoring.queue_error('{"exception_type": "QueueProbe", "message": "first", "event_id": "0123456789ABCDEF0123456789abcdef"}'),
          '01234567-89ab-cdef-0123-456789abcdef'::uuid, 'the client''s event id is returned (any uuid spelling)');
CREATE TEMP TABLE returned AS
SELECT monitoring.queue_error('{"exception_type": "QueueProbe", "message": "second", "event_id": "not-a-uuid"}') AS id;
SELECT is((SELECT (event ->> 'event_id')::uuid FROM monitoring.error_queue WHERE event ->> 'message' = 'second'),
          (SELECT id FROM returned), 'an event without a usable id gets one, written into the queued event');
SELECT is(monitoring.queue_error('{"exception_type": "QueueBraces", "event_id": "{b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"}'),
          'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, 'an id in any spelling PostgreSQL reads as a uuid is the client''s');
DELETE FROM monitoring.error_queue WHERE event ->> 'exception_type' = 'QueueBraces';
SELECT throws_ok($$SELECT monitoring.queue_error('[1, 2]')$$, '22023',
                 'an error event must be a JSON object, got array', 'an array is refused with a clear error');
SELECT throws_ok($$SELECT monitoring.queue_error(NULL)$$, '22023', NULL, 'NULL is refused');
SELECT is((SELECT count(*)::int FROM monitoring.tb_error_occurrence WHERE exception_type = 'QueueProbe'), 0,
          'nothing is grouped before the queue is processed');
SELECT is((SELECT count(*)::int FROM monitoring.error_queue), 2, 'both events wait in the queue');

-- Processing: arrival time, order, limits
UPDATE monitoring.error_queue SET queued_at = now() - interval '10 minutes';
SELECT monitoring.queue_error(jsonb_build_object('exception_type', 'QueueProbe', 'message', 'third',
                                                 'event_id', '01234567-89ab-cdef-0123-456789abcdef'));
SELECT throws_ok($$SELECT monitoring.process_error_queue(0)$$, '22023', NULL, 'a batch of 0 is refused');
SELECT is(monitoring.process_error_queue(1), 1, 'a batch takes at most p_max_events');
SELECT is((SELECT message FROM monitoring.tb_error_occurrence WHERE exception_type = 'QueueProbe'),
          'first', 'the oldest event is taken first');
SELECT is(monitoring.process_error_queue(), 2, 'the rest is taken');
SELECT is((SELECT count(*)::int FROM monitoring.error_queue), 0, 'the queue is empty');
SELECT is((SELECT count(*)::int FROM monitoring.tb_error_occurrence WHERE exception_type = 'QueueProbe'), 2,
          'an event id queued twice is stored once');
SELECT is((SELECT sum(occurrence_count)::int FROM monitoring.error_groups WHERE error_type = 'QueueProbe'), 2,
          'the groups count what was stored');
SELECT is((SELECT received_at FROM monitoring.tb_error_occurrence WHERE message = 'second'),
          now() - interval '10 minutes', 'received_at is the time the event was queued');
SELECT is((SELECT occurred_at FROM monitoring.tb_error_occurrence WHERE message = 'second'),
          now() - interval '10 minutes', 'an event without a time is filed at its arrival');

-- The clock rule is applied against the arrival time, not the time of processing.
SELECT monitoring.queue_error(jsonb_build_object('exception_type', 'QueueClock', 'message', 'ahead',
                                                 'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')));
SELECT monitoring.queue_error(jsonb_build_object('exception_type', 'QueueClock', 'message', 'behind',
                                                 'timestamp', to_char((now() - interval '15 minutes') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')));
UPDATE monitoring.error_queue SET queued_at = now() - interval '10 minutes';
SELECT monitoring.process_error_queue();
SELECT is((SELECT occurred_at FROM monitoring.tb_error_occurrence WHERE message = 'ahead'), now() - interval '10 minutes',
          'a time 10 minutes after the arrival is the client''s clock: filed at the arrival');
SELECT is((SELECT client_timestamp FROM monitoring.tb_error_occurrence WHERE message = 'ahead'), now(),
          '... and the client''s time is kept');
SELECT is((SELECT occurred_at FROM monitoring.tb_error_occurrence WHERE message = 'behind'), now() - interval '15 minutes',
          'a plausible time is kept');

-- Failures: one bad event does not hold up its batch, and is kept with the reason.
CREATE FUNCTION pg_temp.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.message = 'poison' THEN
        RAISE EXCEPTION 'poisoned event' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER zz_refuse_poison BEFORE INSERT ON monitoring.tb_error_occurrence
    FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse_poison();
SELECT monitoring.queue_error(jsonb_build_object('exception_type', 'QueuePoison', 'message', 'ok ' || i))
FROM generate_series(1, 3) i;
SELECT monitoring.queue_error('{"exception_type": "QueuePoison", "message": "poison"}');
SELECT monitoring.queue_error(jsonb_build_object('exception_type', 'QueuePoison', 'message', 'ok ' || i))
FROM generate_series(4, 6) i;
SELECT is(monitoring.process_error_queue(), 7, 'a batch with a failing event is taken whole');
SELECT is((SELECT count(*)::int FROM monitoring.tb_error_occurrence WHERE exception_type = 'QueuePoison'), 6,
          'the other six are stored');
SELECT results_eq($$SELECT sqlstate, reason, event ->> 'message' FROM monitoring.error_queue_failed$$,
                  $$VALUES ('23514'::text, 'poisoned event'::text, 'poison'::text)$$,
                  'the failing one is kept in error_queue_failed with PostgreSQL''s error');
SELECT is((SELECT status FROM monitoring.health() WHERE check_name = 'failed_error_events'), 'warning',
          'health() warns of a failed event');

-- A transient failure returns the whole batch to the queue instead of failing events.
CREATE OR REPLACE FUNCTION pg_temp.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'deadlock, say' USING ERRCODE = 'deadlock_detected';
END
$$;
SELECT monitoring.queue_error('{"exception_type": "QueueTransient", "message": "transient"}');
SELECT throws_ok($$SELECT monitoring.process_error_queue()$$, '40P01', 'deadlock, say',
                 'a transient error is raised, not recorded as a failed event');
SELECT is((SELECT count(*)::int FROM monitoring.error_queue), 1, '... and the event is still queued');
DROP TRIGGER zz_refuse_poison ON monitoring.tb_error_occurrence;

SELECT is(monitoring.retry_failed_errors(), 1::bigint, 'retry_failed_errors() queues the failed event again');
SELECT is(monitoring._process_error_queue_task(), '2 queued events processed', 'run_maintenance''s task drains the queue');
SELECT is((SELECT count(*)::int FROM monitoring.tb_error_occurrence WHERE message IN ('poison', 'transient')), 2,
          'both are stored once the cause is gone');

-- Backlog
SELECT monitoring.queue_error('{"exception_type": "QueueBacklog"}');
UPDATE monitoring.error_queue SET queued_at = now() - interval '6 minutes';
SELECT is((SELECT status FROM monitoring.health() WHERE check_name = 'error_queue_backlog'), 'warning',
          'health() warns when the oldest queued event waited more than queue_lag_warning');

-- Privileges: writers queue and drain but cannot read what is queued (events as sent,
-- before scrubbing); readers cannot queue.
SET LOCAL ROLE observe_writer;
SELECT lives_ok($$SELECT monitoring.queue_error('{"exception_type": "QueueByWriter"}')$$, 'a writer can queue');
SELECT lives_ok($$SELECT monitoring.process_error_queue()$$, 'a writer can process the queue');
SELECT throws_ok($$SELECT * FROM monitoring.error_queue$$, '42501', NULL, 'a writer cannot read the queue');
SELECT throws_ok($$SELECT * FROM monitoring.error_queue_failed$$, '42501', NULL, 'nor the failed events');
RESET ROLE;
SET LOCAL ROLE observe_reader;
SELECT throws_ok($$SELECT monitoring.queue_error('{}')$$, '42501', NULL, 'a reader cannot queue');
SELECT throws_ok($$SELECT * FROM monitoring.error_queue$$, '42501', NULL, 'nor read the queue');
RESET ROLE;
SET LOCAL ROLE observe_dispatcher;
SELECT lives_ok($$SELECT monitoring.process_error_queue()$$, 'the worker''s dispatcher role can process the queue');
RESET ROLE;

-- Ids too long to index are cut (trace, span) or hashed (user) instead of failing the capture.
SELECT lives_ok($$SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'LongIds',
                     'trace_id', 'zz' || repeat('x', 10000), 'span_id', repeat('y', 10000),
                     'user', jsonb_build_object('id', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200) i))))$$,
                'a 10 kB trace id, span id and user id are stored');
SELECT ok((SELECT length(trace_id) < 200 AND trace_id LIKE 'zzxxx%truncated%' AND length(span_id) < 200
           FROM monitoring.tb_error_occurrence WHERE exception_type = 'LongIds'),
          'the trace and span ids are cut to 128 characters with a marker');
SELECT is((SELECT user_key FROM monitoring.error_group_user u JOIN monitoring.tb_error_log g USING (error_id)
           WHERE g.error_type = 'LongIds'),
          'md5:' || md5((SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200) i)),
          'a user key over 256 bytes is counted by its md5');

SELECT * FROM finish();
ROLLBACK;
