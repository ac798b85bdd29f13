-- Fingerprinting in the trigger: raw stack traces of several languages are parsed, line
-- numbers and machine paths do not split groups, rules override, scrubbing filters secrets.
BEGIN;
SELECT plan(14);

-- Python traceback as text: same code on two machines, other line numbers -> one group.
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, stack_trace) VALUES
('ZeroDivisionError', 'division by zero', E'Traceback (most recent call last):\n  File "/home/alice/app/orders.py", line 10, in handler\n    total = compute(order)\n  File "/home/alice/app/orders.py", line 42, in compute\n    return a / b\nZeroDivisionError: division by zero'),
('ZeroDivisionError', 'division by zero', E'Traceback (most recent call last):\n  File "/srv/app/orders.py", line 11, in handler\n    total = compute(order)\n  File "/srv/app/orders.py", line 44, in compute\n    return a / b\nZeroDivisionError: division by zero');
SELECT is((SELECT count(*)::int FROM monitoring.tb_error_log WHERE error_type = 'ZeroDivisionError'), 1,
          'Python: other paths and line numbers, one group');
SELECT is((SELECT fingerprint_method FROM monitoring.tb_error_log WHERE error_type = 'ZeroDivisionError'), 'stack',
          'Python: grouped by the parsed stack');
SELECT is((SELECT frames->-1->>'function' FROM monitoring.tb_error_occurrence WHERE exception_type = 'ZeroDivisionError' LIMIT 1),
          'compute', 'Python: parsed frames are stored, innermost last');

-- Another function is another group.
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, stack_trace) VALUES
('ZeroDivisionError', 'division by zero', E'Traceback (most recent call last):\n  File "/srv/app/orders.py", line 11, in handler\n    total = refund(order)\n  File "/srv/app/orders.py", line 60, in refund\n    return a / b\nZeroDivisionError: division by zero');
SELECT is((SELECT count(*)::int FROM monitoring.tb_error_log WHERE error_type = 'ZeroDivisionError'), 2,
          'a different function is a different group');

-- JavaScript (V8), Java with a cause, Go panic, Ruby: each parsed into frames.
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, stack_trace) VALUES
('TypeError', 'x is undefined', E'TypeError: x is undefined\n    at charge (/app/src/orders.js:42:13)\n    at handle (/app/src/server.js:10:5)'),
('java.lang.IllegalStateException', 'bad', E'java.lang.IllegalStateException: bad\n\tat com.acme.Orders.charge(Orders.java:42)\n\tat com.acme.Api.handle(Api.java:10)\nCaused by: java.io.IOException: disk full\n\tat com.acme.Disk.write(Disk.java:7)\n\t... 2 more'),
('panic', 'runtime error: index out of range', E'panic: runtime error: index out of range [3] with length 2\n\ngoroutine 1 [running]:\nmain.charge(0x1, 0x2)\n\t/app/main.go:42 +0x1d\nmain.main()\n\t/app/main.go:10 +0x25'),
('RuntimeError', 'boom', E'/app/orders.rb:42:in `charge\': boom (RuntimeError)\n\tfrom /app/server.rb:10:in `handle\'');
SELECT ok((SELECT frames->-1->>'function' = 'charge' FROM monitoring.tb_error_occurrence WHERE exception_type = 'TypeError'),
          'JavaScript V8 frames parsed');
SELECT ok((SELECT jsonb_array_length(frames) >= 2 FROM monitoring.tb_error_occurrence WHERE exception_type = 'java.lang.IllegalStateException'),
          'Java frames parsed');
SELECT ok((SELECT frames->-1->>'function' LIKE '%charge%' FROM monitoring.tb_error_occurrence WHERE exception_type = 'panic'),
          'Go panic frames parsed');
SELECT ok((SELECT frames->-1->>'function' = 'charge' FROM monitoring.tb_error_occurrence WHERE exception_type = 'RuntimeError'),
          'Ruby frames parsed');

-- Server-side rules: first matching rule by position wins.
INSERT INTO monitoring.error_fingerprint_rule (position, match_type, match_message, fingerprint)
VALUES (10, 'ConnectionError', '*database*', ARRAY['database-down']);
INSERT INTO monitoring.error_fingerprint_rule (position, match_type, title)
VALUES (20, 'Titled*', 'A friendly title');
SELECT monitoring.capture_error('{"exception_type": "ConnectionError", "message": "database db1 unreachable"}');
SELECT monitoring.capture_error('{"exception_type": "ConnectionError", "message": "database db2 refused"}');
SELECT is((SELECT occurrence_count::int FROM monitoring.error_groups WHERE fingerprint =
              (SELECT error_fingerprint FROM monitoring.tb_error_log WHERE fingerprint_method = 'rule')), 2,
          'a fingerprint rule groups matching errors together');
SELECT monitoring.capture_error('{"exception_type": "TitledError", "message": "whatever"}');
SELECT is((SELECT title FROM monitoring.tb_error_log WHERE error_type = 'TitledError'), 'A friendly title',
          'a title-only rule names the group');

-- Scrubbing before storage.
SELECT monitoring.capture_error($${"exception_type": "Leak", "message": "card 4111 1111 1111 1111 declined",
    "context": {"password": "hunter2", "nested": {"Api-Key": "abc", "note": "fine"}, "list": [{"token": "t"}]},
    "request": {"headers": {"Authorization": "Bearer x", "Accept": "json"}}}$$);
SELECT is((SELECT message FROM monitoring.tb_error_occurrence WHERE exception_type = 'Leak'), 'card [Filtered] declined',
          'a card number in the message is filtered');
SELECT is((SELECT context FROM monitoring.tb_error_occurrence WHERE exception_type = 'Leak'),
          '{"password": "[Filtered]", "nested": {"Api-Key": "[Filtered]", "note": "fine"}, "list": [{"token": "[Filtered]"}]}'::jsonb,
          'secret keys are filtered at any depth, other values kept');
SELECT is((SELECT request->'headers' FROM monitoring.tb_error_occurrence WHERE exception_type = 'Leak'),
          '{"Authorization": "[Filtered]", "Accept": "json"}'::jsonb, 'request headers are scrubbed');
INSERT INTO monitoring.error_scrub_key (key_word) VALUES ('tenant_secret_code');
SELECT monitoring.capture_error('{"exception_type": "Leak2", "context": {"TenantSecretCode": "42"}}');
SELECT is((SELECT context->>'TenantSecretCode' FROM monitoring.tb_error_occurrence WHERE exception_type = 'Leak2'), '[Filtered]',
          'the key list is configurable');

SELECT * FROM finish();
ROLLBACK;
