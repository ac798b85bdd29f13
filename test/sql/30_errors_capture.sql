-- Minimal error capture (the foundation's demo path): capture_error() and a plain INSERT
-- store an occurrence, group it by fingerprint, and the seeds' monitoring.errors shows it.
BEGIN;
SELECT plan(12);

SELECT isa_ok(monitoring.capture_error('{"exception_type": "ValueError", "message": "bad value 42", "environment": "test"}'),
              'uuid', 'capture_error() returns the occurrence id');
SELECT lives_ok($$SELECT monitoring.capture_error('{"exception_type": "ValueError", "message": "bad value 7", "environment": "test"}')$$,
                'a second occurrence with another number');
SELECT is((SELECT occurrence_count::int FROM monitoring.tb_error_log WHERE error_type = 'ValueError'), 2,
          'numbers in the message do not split the group');
SELECT is((SELECT count(DISTINCT fingerprint)::int FROM monitoring.errors WHERE exception_type = 'ValueError'), 1,
          'monitoring.errors shows one fingerprint');

-- The seed's query runs unchanged.
SELECT is((SELECT occurrences::int FROM (
    SELECT fingerprint, exception_type, COUNT(*) as occurrences, MAX(occurred_at) as last_seen
    FROM monitoring.errors
    WHERE occurred_at > NOW() - INTERVAL '24 hours' AND resolved_at IS NULL
    GROUP BY fingerprint, exception_type
    ORDER BY occurrences DESC LIMIT 20) q WHERE exception_type = 'ValueError'), 2, 'seed 000 top-errors query');

-- Bad input: a clear error for what is not an event, a repair for what is merely odd.
SELECT throws_ok($$SELECT monitoring.capture_error('[1, 2]')$$, '22023',
                 'capture_error expects a JSON object, got array', 'an array is rejected clearly');
SELECT throws_ok($$SELECT monitoring.capture_error(NULL)$$, '22023',
                 'capture_error expects a JSON object, got NULL', 'NULL is rejected clearly');
SELECT throws_ok($$SELECT monitoring.capture_error('{not json')$$, '22P02', NULL, 'invalid JSON is an error of the cast');
SELECT monitoring.capture_error('{"message": "no type", "environment": "no-type-probe"}');
SELECT is((SELECT exception_type FROM monitoring.tb_error_occurrence WHERE environment = 'no-type-probe'), 'Error',
          'a missing exception type becomes Error');
SELECT monitoring.capture_error('{"exception_type": "Clock", "timestamp": "2099-01-01T00:00:00Z"}');
SELECT is((SELECT client_timestamp FROM monitoring.tb_error_occurrence WHERE exception_type = 'Clock'),
          '2099-01-01T00:00:00Z'::timestamptz, 'a timestamp in 2099 is kept as the client''s');
SELECT ok((SELECT occurred_at <= now() + interval '1 second' FROM monitoring.tb_error_occurrence
           WHERE exception_type = 'Clock'), 'and the occurrence is filed at the time received');
SELECT monitoring.capture_error('{"exception_type": "Clock2", "timestamp": "yesterday-ish"}');
SELECT is((SELECT client_timestamp FROM monitoring.tb_error_occurrence WHERE exception_type = 'Clock2'),
          NULL, 'an unreadable timestamp is dropped, the event kept');

SELECT * FROM finish();
ROLLBACK;
