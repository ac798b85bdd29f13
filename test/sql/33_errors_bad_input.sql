-- Bad input: a clear error, or a documented repair; never a lost event, never a broken
-- partition maintenance.
BEGIN;
SELECT plan(22);

SELECT throws_ok($$SELECT monitoring.capture_error('[1, 2]')$$, '22023',
                 'an error event must be a JSON object, got array', 'an array is rejected clearly');
SELECT throws_ok($$SELECT monitoring.capture_error(NULL)$$, '22023',
                 'an error event must be a JSON object, got NULL', 'NULL is rejected clearly');
SELECT throws_ok($$SELECT monitoring.capture_error('{not json')$$, '22P02', NULL, 'invalid JSON is an error of the cast');
SELECT throws_ok($$SELECT monitoring.capture_error(E'{"message": "nul \\u0000 byte"}')$$, '22P05', NULL,
                 'a NUL byte is refused by PostgreSQL (the client replaces it before sending)');
SELECT throws_ok($$SELECT monitoring.capture_error(convert_from('\x7b226d657373616765223a2022ff227d'::bytea, 'UTF8')::jsonb)$$,
                 '22021', NULL, 'invalid UTF-8 is refused by PostgreSQL before it reaches the table');
SELECT throws_ok($$SELECT monitoring.capture_errors('{"a": 1}')$$, '22023',
                 'capture_errors expects a JSON array of events, got object', 'a batch must be an array');
SELECT throws_ok($$SELECT monitoring.capture_errors('[1]')$$, '22023', NULL, 'a batch of non-objects is rejected whole');

SELECT monitoring.capture_error('{"message": "no type", "environment": "no-type-probe"}');
SELECT is((SELECT exception_type FROM monitoring.tb_error_occurrence WHERE environment = 'no-type-probe'), 'Error',
          'a missing exception type becomes Error');
SELECT monitoring.capture_error('{"exception_type": 42, "message": ["not", "a", "string"], "level": "LOUD", "environment": "types-probe", "tags": "x"}');
SELECT results_eq($$SELECT exception_type, message, level, tags FROM monitoring.tb_error_occurrence WHERE environment = 'types-probe'$$,
                  $$VALUES ('42', '["not", "a", "string"]', 'error', NULL::jsonb)$$, 'wrong types are read as text or dropped');

SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'Huge', 'message', repeat('m', 10 * 1024 * 1024),
                                                   'stack_trace', repeat('s', 10 * 1024 * 1024)));
SELECT ok((SELECT length(message) < 9000 AND message LIKE '%[truncated 10477568 characters]' FROM monitoring.tb_error_occurrence WHERE exception_type = 'Huge'),
          'a 10 MB message is truncated with a marker');
SELECT ok((SELECT length(stack_trace) < 300000 AND stack_trace LIKE '%…[truncated %' FROM monitoring.tb_error_occurrence WHERE exception_type = 'Huge'),
          'a 10 MB stack trace is truncated with a marker');

-- context nested 10,000 levels deep
SELECT lives_ok($$SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'Deep', 'context',
                   (repeat('{"a":', 10000) || '1' || repeat('}', 10000))::jsonb))$$,
                'a context nested 10,000 levels deep is stored');
SELECT ok((SELECT context::text LIKE '%nested too deep%' FROM monitoring.tb_error_occurrence WHERE exception_type = 'Deep'),
          'and cut below the depth limit with a marker');

SELECT monitoring.capture_error('{"exception_type": "Ctx", "context": "just a string"}');
SELECT is((SELECT context FROM monitoring.tb_error_occurrence WHERE exception_type = 'Ctx'), '{"value": "just a string"}'::jsonb,
          'a non-object context is wrapped');

SELECT monitoring.capture_error('{"exception_type": "Clock", "timestamp": "2099-01-01T00:00:00Z"}');
SELECT is((SELECT client_timestamp FROM monitoring.tb_error_occurrence WHERE exception_type = 'Clock'),
          '2099-01-01T00:00:00Z'::timestamptz, 'a timestamp in 2099 is kept as the client''s');
SELECT ok((SELECT occurred_at BETWEEN now() - interval '1 minute' AND now() + interval '1 minute' FROM monitoring.tb_error_occurrence WHERE exception_type = 'Clock'),
          'and the occurrence is filed at the time received');
SELECT monitoring.capture_error('{"exception_type": "Clock1970", "timestamp": "1970-01-01T00:00:00Z"}');
SELECT ok((SELECT occurred_at > now() - interval '1 minute' AND client_timestamp = '1970-01-01T00:00:00Z' FROM monitoring.tb_error_occurrence WHERE exception_type = 'Clock1970'),
          'a timestamp in 1970 likewise');
-- A plain INSERT with a far-future time goes through the default partition's guard first,
-- then the capture trigger once: filed now, original kept, counted once.
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, occurred_at)
VALUES ('GuardProbe', 'm', '2099-01-01');
SELECT results_eq(
    $$SELECT o.tableoid::regclass::text <> 'monitoring.tb_error_occurrence_default', o.client_timestamp, g.occurrence_count::int
      FROM monitoring.tb_error_occurrence o JOIN monitoring.error_groups g USING (error_id) WHERE o.exception_type = 'GuardProbe'$$,
    $$VALUES (true, '2099-01-01'::timestamptz, 1)$$,
    'a raw INSERT in 2099 lands in a real partition, keeps its time, is counted once');
SELECT monitoring.capture_error('{"exception_type": "Clock2", "timestamp": "yesterday-ish"}');
SELECT is((SELECT client_timestamp FROM monitoring.tb_error_occurrence WHERE exception_type = 'Clock2'),
          NULL, 'an unreadable timestamp is dropped, the event kept');

SELECT lives_ok($$SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'ManyParts',
                     'fingerprint', (SELECT jsonb_agg('part-' || i) FROM generate_series(1, 10000) i)))$$,
                'a fingerprint of 10,000 parts is stored');
SELECT is((SELECT cardinality(client_fingerprint) FROM monitoring.tb_error_occurrence WHERE exception_type = 'ManyParts'), 100,
          'only its first 100 parts are kept');
SELECT lives_ok($$SELECT * FROM monitoring.run_maintenance()$$, 'maintenance still runs after all of that');

SELECT * FROM finish();
ROLLBACK;
