-- Capture: capture_error(), capture_errors() and a plain INSERT store occurrences, group them,
-- accept the Sentry event shape and the seeds' flat shape, and store a repeated event id once.
BEGIN;
SELECT plan(25);

SELECT isa_ok(monitoring.capture_error('{"exception_type": "ValueError", "message": "bad value 42", "environment": "test"}'),
              'uuid', 'capture_error() returns the occurrence id');
SELECT lives_ok($$SELECT monitoring.capture_error('{"exception_type": "ValueError", "message": "bad value 7", "environment": "test"}')$$,
                'a second occurrence with another number');
SELECT is((SELECT occurrence_count::int FROM monitoring.error_groups WHERE error_type = 'ValueError'), 2,
          'numbers in the message do not split the group');
SELECT is((SELECT count(DISTINCT fingerprint)::int FROM monitoring.errors WHERE exception_type = 'ValueError'), 1,
          'monitoring.errors shows one fingerprint');
SELECT is((SELECT fingerprint_method FROM monitoring.tb_error_log WHERE error_type = 'ValueError'), 'message',
          'without frames the message makes the fingerprint');
SELECT is((SELECT fingerprint_version::int FROM monitoring.tb_error_log WHERE error_type = 'ValueError'), 2,
          'the algorithm version is stored with the group');
SELECT ok((SELECT fingerprint_inputs IS NOT NULL FROM monitoring.tb_error_log WHERE error_type = 'ValueError'),
          'and its inputs');

-- A plain INSERT is a capture too.
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, environment) VALUES ('KeyError', 'k1', 'test');
SELECT is((SELECT count(*)::int FROM monitoring.errors WHERE exception_type = 'KeyError' AND fingerprint IS NOT NULL), 1,
          'a plain INSERT is fingerprinted and grouped by the trigger');

-- The Sentry event shape.
SELECT monitoring.capture_error($${
  "event_id": "fc6d8c0c43fc4630ad850ee518f1b9d0",
  "timestamp": 1700000000.5,
  "level": "warning", "platform": "python", "logger": "app.payments",
  "transaction": "/checkout", "server_name": "web-1", "release": "2.4.1", "environment": "staging",
  "tags": {"region": "eu"}, "user": {"id": "u-17", "email": "ada@example.com"},
  "contexts": {"trace": {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}},
  "exception": {"values": [
    {"type": "TimeoutError", "value": "upstream timed out", "module": "socket",
     "stacktrace": {"frames": [{"filename": "net.py", "function": "read", "lineno": 3, "in_app": true}]}},
    {"type": "PaymentError", "value": "card declined", "module": "app.payments",
     "stacktrace": {"frames": [
        {"filename": "views.py", "abs_path": "/srv/app/views.py", "module": "app.views", "function": "checkout", "lineno": 10, "in_app": true},
        {"filename": "payments.py", "abs_path": "/srv/app/payments.py", "module": "app.payments", "function": "charge", "lineno": 42, "in_app": true, "context_line": "raise PaymentError(msg)"}]}}]}
}$$::jsonb);
SELECT results_eq(
    $$SELECT exception_type, message, level, environment, release_version, server_name, transaction_name, logger,
             trace_id, span_id, user_info->>'id', tags->>'region'
      FROM monitoring.tb_error_occurrence WHERE event_id = 'fc6d8c0c-43fc-4630-ad85-0ee518f1b9d0'$$,
    $$VALUES ('PaymentError', 'card declined', 'warning', 'staging', '2.4.1', 'web-1', '/checkout', 'app.payments',
              '4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7', 'u-17', 'eu')$$,
    'the Sentry shape maps to the occurrence columns');
SELECT is((SELECT jsonb_array_length(frames) FROM monitoring.tb_error_occurrence WHERE exception_type = 'PaymentError'), 2,
          'frames of the raised exception are kept');
SELECT is((SELECT jsonb_array_length(exception_chain) FROM monitoring.tb_error_occurrence WHERE exception_type = 'PaymentError'), 2,
          'the chain of exceptions is kept');
SELECT is((SELECT fingerprint_method FROM monitoring.tb_error_log WHERE error_type = 'PaymentError'), 'stack',
          'frames make a stack fingerprint');
SELECT is((SELECT client_timestamp FROM monitoring.tb_error_occurrence WHERE exception_type = 'PaymentError'),
          to_timestamp(1700000000.5), 'a Unix timestamp is read');

-- Repeated event ids are stored once: a client retrying a batch loses nothing and doubles nothing.
SELECT is(monitoring.capture_errors($$[
    {"event_id": "11111111111111111111111111111111", "exception_type": "Dup", "message": "one"},
    {"event_id": "11111111111111111111111111111111", "exception_type": "Dup", "message": "one"},
    {"event_id": "22222222222222222222222222222222", "exception_type": "Dup", "message": "two"}]$$), 2::bigint,
    'capture_errors() stores a batch and skips the repeated event id');
SELECT is(monitoring.capture_errors('[{"event_id": "22222222222222222222222222222222", "exception_type": "Dup"}]'), 0::bigint,
          'sending the same event again stores nothing');
SELECT is((SELECT sum(occurrence_count)::int FROM monitoring.error_groups WHERE error_type = 'Dup'), 2, 'counted once each');
SELECT is(monitoring.capture_errors('[]'), 0::bigint, 'an empty batch is fine');

-- Counters: environments, services, releases, affected users.
SELECT monitoring.capture_errors($$[
    {"exception_type": "Counted", "message": "m", "environment": "prod", "service": "api", "release": "1.0", "user": {"id": "a"}},
    {"exception_type": "Counted", "message": "m", "environment": "prod", "service": "worker", "release": "1.1", "user": {"id": "b"}},
    {"exception_type": "Counted", "message": "m", "environment": "staging", "release": "1.2", "context": {"user_id": "a"}}]$$);
SELECT results_eq(
    $$SELECT occurrence_count::int, affected_users::int, environments, services, first_release, last_release
      FROM monitoring.error_groups WHERE error_type = 'Counted'$$,
    $$VALUES (3, 2, ARRAY['prod', 'staging'], ARRAY['api', 'worker'], '1.0', '1.2')$$,
    'one statement updates count, users, environments, services and releases once');
SELECT is((SELECT count(*)::int FROM monitoring.error_activity a JOIN monitoring.tb_error_log g USING (error_id)
           WHERE g.error_type = 'Counted' AND a.action = 'first_seen'), 1, 'a new group records first_seen once');
-- Deltas left pending by a busy row are folded with the next capture's: sums added, arrays merged.
INSERT INTO monitoring.error_group_pending (error_id, occurrences, new_users, first_seen, last_seen, environment,
                                           environments, services, release_version)
SELECT error_id, 5, 1, now() - interval '1 hour', now() - interval '1 hour', 'qa', '{qa,prod}'::text[], '{batch}'::text[], '0.9'
FROM monitoring.tb_error_log WHERE error_type = 'Counted'
UNION ALL
SELECT error_id, 2, 0, now() - interval '2 hours', now() - interval '2 hours', 'qa', '{qa}'::text[], '{cron,batch}'::text[], NULL
FROM monitoring.tb_error_log WHERE error_type = 'Counted';
SELECT monitoring.capture_errors('[{"exception_type": "Counted", "message": "m", "environment": "prod", "service": "api"}]');
SELECT results_eq(
    $$SELECT occurrence_count::int, affected_users::int, environments, services
      FROM monitoring.error_groups WHERE error_type = 'Counted'$$,
    $$VALUES (11, 3, ARRAY['prod', 'qa', 'staging'], ARRAY['api', 'batch', 'cron', 'worker'])$$,
    'pending deltas and a capture fold into the group together: counts added, environments and services merged');
SELECT is((SELECT count(*)::int FROM monitoring.error_group_pending p JOIN monitoring.tb_error_log g USING (error_id)
           WHERE g.error_type = 'Counted'), 0, 'and the pending deltas are gone');

-- Rolling back a capture leaves nothing.
SAVEPOINT before_rollback;
SELECT monitoring.capture_error('{"exception_type": "RolledBack"}');
ROLLBACK TO SAVEPOINT before_rollback;
SELECT is((SELECT count(*)::int FROM monitoring.tb_error_log WHERE error_type = 'RolledBack'), 0, 'a rolled back capture leaves no group');

-- Explicit fingerprints: a single readable part stays readable (the seeds' 'payment_timeout_error').
SELECT monitoring.capture_error('{"exception_type": "Timeout", "message": "a", "fingerprint": ["payment_timeout_error"]}');
SELECT monitoring.capture_error('{"exception_type": "OtherType", "message": "b", "fingerprint": ["payment_timeout_error"]}');
SELECT is((SELECT occurrence_count::int FROM monitoring.error_groups WHERE fingerprint = 'payment_timeout_error'), 2,
          'an explicit fingerprint groups different errors together, under its own name');
SELECT monitoring.capture_error('{"exception_type": "Split", "message": "x", "fingerprint": ["{{ default }}", "tenant-a"]}');
SELECT monitoring.capture_error('{"exception_type": "Split", "message": "x", "fingerprint": ["{{ default }}", "tenant-b"]}');
SELECT is((SELECT count(*)::int FROM monitoring.tb_error_log WHERE error_type = 'Split'), 2,
          '{{ default }} plus a part splits a group');
SELECT is((SELECT count(*)::int FROM monitoring.tb_error_log WHERE error_type = 'Split' AND fingerprint_method = 'explicit'), 2,
          'both are explicit fingerprints');

SELECT * FROM finish();
ROLLBACK;
