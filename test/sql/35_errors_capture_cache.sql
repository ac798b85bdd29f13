-- The set-based capture: the fingerprint cache gives the same groups as the full algorithm,
-- is not used when rules could depend on more than the stack, is emptied when rules change;
-- a plain INSERT cannot skip the capture by bringing its own error_id.
BEGIN;
SELECT plan(13);

CREATE TEMP TABLE stack_event AS SELECT $${
    "exception_type": "CacheProbe", "environment": "cache-test",
    "frames": [{"filename": "app.py", "module": "app.orders", "function": "load", "lineno": 10, "in_app": true},
               {"filename": "app.py", "module": "app.orders", "function": "save", "lineno": 20, "in_app": true}]}$$::jsonb AS e;

SELECT monitoring.capture_error(e || '{"message": "first 1"}') FROM stack_event;
SELECT is((SELECT count(*)::int FROM monitoring.error_fingerprint_cache), 1, 'a stack fingerprint is remembered');
SELECT monitoring.capture_error(e || '{"message": "second 2", "frames": [{"filename": "app.py", "module": "app.orders", "function": "load", "lineno": 11, "in_app": true}, {"filename": "app.py", "module": "app.orders", "function": "save", "lineno": 99, "in_app": true}]}')
FROM stack_event;
SELECT is((SELECT count(*)::int FROM monitoring.tb_error_log WHERE error_type = 'CacheProbe'), 1,
          'other line numbers and messages: one group (the second from the full algorithm, another cache key)');
SELECT monitoring.capture_error(e || '{"message": "third 3"}') FROM stack_event;
SELECT is((SELECT occurrence_count::int FROM monitoring.error_groups WHERE error_type = 'CacheProbe'), 3,
          'a cache hit lands in the same group');
SELECT is((SELECT fingerprint_method FROM monitoring.tb_error_log WHERE error_type = 'CacheProbe'), 'stack',
          'and the group is a stack fingerprint');

-- The cached result is what the full algorithm gives.
SELECT is((SELECT c.result ->> 'fingerprint' FROM monitoring.error_fingerprint_cache c
           WHERE c.input_key = monitoring._fingerprint_cache_key(
               (SELECT r FROM monitoring._events_to_occurrences(jsonb_build_array((SELECT e FROM stack_event))) r), true)),
          (SELECT monitoring._fingerprint_occurrence(
               (SELECT r FROM monitoring._events_to_occurrences(jsonb_build_array((SELECT e FROM stack_event))) r)) ->> 'fingerprint'),
          'the cached fingerprint equals the computed one');

-- A raw stack trace: the Python traceback's last line (the message) does not split the key.
SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'TextProbe', 'message', 'order ' || n || ' failed',
    'stack_trace', E'Traceback (most recent call last):\n  File "/srv/app/orders.py", line 3, in load\n    x()\nTextProbe: order ' || n || ' failed'))
FROM generate_series(1, 3) n;
SELECT is((SELECT count(*)::int FROM monitoring.error_fingerprint_cache WHERE result ->> 'exception_type' = 'TextProbe'), 1,
          'three tracebacks that differ only in their message share one cache entry');
SELECT is((SELECT occurrence_count::int FROM monitoring.error_groups WHERE error_type = 'TextProbe'), 3, 'and one group');
SELECT ok((SELECT bool_and(jsonb_array_length(frames) = 1) FROM monitoring.tb_error_occurrence WHERE exception_type = 'TextProbe'),
          'each keeps the frames parsed from its text, from the cache too');

-- Rules: a change empties the cache; a rule on the message makes the capture skip the cache.
INSERT INTO monitoring.error_fingerprint_rule (match_type, match_message, fingerprint)
VALUES ('CacheProbe', 'special*', ARRAY['cache-probe-special']);
SELECT is((SELECT count(*)::int FROM monitoring.error_fingerprint_cache), 0, 'a rule change empties the cache');
SELECT monitoring.capture_error(e || '{"message": "special case"}') FROM stack_event;
SELECT monitoring.capture_error(e || '{"message": "ordinary case"}') FROM stack_event;
SELECT is((SELECT array_agg(fingerprint_method ORDER BY fingerprint_method) FROM monitoring.tb_error_log WHERE error_type = 'CacheProbe'),
          ARRAY['rule', 'stack'], 'with a message rule, the same stack goes by the rule or by the stack, as its message says');
SELECT is((SELECT count(*)::int FROM monitoring.error_fingerprint_cache), 0, 'and nothing is cached while such a rule is enabled');

-- A plain INSERT that brings an error_id of its own is still captured (grouped, counted).
INSERT INTO monitoring.tb_error_occurrence (error_id, exception_type, message, environment)
SELECT error_id, 'SneakyInsert', 'm', 'cache-test' FROM monitoring.tb_error_log WHERE error_type = 'TextProbe';
SELECT is((SELECT g.error_type FROM monitoring.tb_error_occurrence o JOIN monitoring.tb_error_log g USING (error_id)
           WHERE o.exception_type = 'SneakyInsert'), 'SneakyInsert',
          'an error_id given by a plain INSERT is replaced by the one the capture finds');


-- Nor can a writer pass the trigger by setting pg_observe.capture_prepared itself.
SELECT error_id AS text_probe_group FROM monitoring.tb_error_log WHERE error_type = 'TextProbe' \gset
SET LOCAL ROLE observe_writer;
SET LOCAL pg_observe.capture_prepared = on;
INSERT INTO monitoring.tb_error_occurrence (error_id, exception_type, message, environment, context, received_at)
VALUES (:'text_probe_group', 'ForgedPrepared', 'm', 'cache-test', '{"password": "hunter2"}', '2000-01-01');
RESET pg_observe.capture_prepared;
RESET ROLE;
SELECT results_eq($$SELECT g.error_type, o.context ->> 'password', o.received_at = now()
                    FROM monitoring.tb_error_occurrence o JOIN monitoring.tb_error_log g USING (error_id)
                    WHERE o.exception_type = 'ForgedPrepared'$$,
                  $$VALUES ('ForgedPrepared'::text, '[Filtered]'::text, true)$$,
                  'a writer who sets pg_observe.capture_prepared is captured all the same: grouped, scrubbed, received now');

SELECT * FROM finish();
ROLLBACK;
