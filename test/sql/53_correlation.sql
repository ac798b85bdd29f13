-- Seed 000's correlation queries, run unchanged (only the trace id placeholder of the last
-- one is filled in) on a small known world: two requests, one failing in its payment span,
-- an order changed by each, metrics around them. pytest repeats this with data from the real
-- OpenTelemetry SDK (test_correlation_e2e.py).
BEGIN;
SELECT plan(9);
SET LOCAL search_path = public, monitoring;

CREATE TABLE public.orders (id integer PRIMARY KEY, status text NOT NULL);
SELECT monitoring.track_changes('public.orders', 'order');

-- Request 1 (trace a1...): POST /checkout -> charge (fails: payment error), order 1 paid.
-- Request 2 (trace b2...): POST /checkout -> charge (fine), order 2 paid.
SELECT * FROM monitoring.ingest_spans(jsonb_build_array(
    jsonb_build_object('trace_id', 'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1', 'span_id', 'a100000000000001', 'name', 'POST /checkout',
                       'kind', 'server', 'start_time', now() - interval '2 minutes', 'end_time', now() - interval '2 minutes' + interval '1500 ms',
                       'status_code', 'error', 'attributes', '{"user_id": "u-1"}'::jsonb),
    jsonb_build_object('trace_id', 'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1', 'span_id', 'a100000000000002', 'parent_span_id', 'a100000000000001',
                       'name', 'charge', 'kind', 'client', 'start_time', now() - interval '2 minutes' + interval '100 ms',
                       'end_time', now() - interval '2 minutes' + interval '1400 ms', 'status_code', 'error'),
    jsonb_build_object('trace_id', 'b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2', 'span_id', 'b200000000000001', 'name', 'POST /checkout',
                       'kind', 'server', 'start_time', now() - interval '1 minute', 'end_time', now() - interval '1 minute' + interval '300 ms',
                       'attributes', '{"user_id": "u-2"}'::jsonb),
    jsonb_build_object('trace_id', 'b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2', 'span_id', 'b200000000000002', 'parent_span_id', 'b200000000000001',
                       'name', 'charge', 'kind', 'client', 'start_time', now() - interval '1 minute' + interval '50 ms',
                       'end_time', now() - interval '1 minute' + interval '250 ms')));

-- The changes, each inside its request's trace (as traced_transaction() does).
SELECT set_config('pg_observe.trace_id', 'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1', true),
       set_config('pg_observe.span_id', 'a100000000000002', true);
INSERT INTO orders VALUES (1, 'paid');
SELECT set_config('pg_observe.trace_id', 'b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2', true),
       set_config('pg_observe.span_id', 'b200000000000002', true);
INSERT INTO orders VALUES (2, 'paid');
SELECT set_config('pg_observe.trace_id', '', true), set_config('pg_observe.span_id', '', true);
-- The full correlation query joins changes within a second of the error.
UPDATE monitoring.tb_entity_change_log SET changed_at = now() - interval '2 minutes' + interval '1 second' WHERE entity_id = '1';

-- The error, in the payment span of request 1, with the order in its context.
SELECT monitoring.capture_errors(jsonb_build_array(
    jsonb_build_object('exception_type', 'PaymentError', 'message', 'card declined', 'fingerprint', jsonb_build_array('payment_processing_error'),
                       'trace_id', 'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1', 'span_id', 'a100000000000002',
                       'timestamp', now() - interval '2 minutes' + interval '1200 ms',
                       'context', '{"order_id": "1", "user_id": "u-1"}'::jsonb),
    jsonb_build_object('exception_type', 'OrderError', 'message', 'order stuck', 'fingerprint', jsonb_build_array('order_processing_error'),
                       'trace_id', 'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1', 'timestamp', now() - interval '2 minutes' + interval '1300 ms',
                       'context', '{"order_id": "1", "user_id": "u-1"}'::jsonb)));

SELECT results_eq($q$
-- Find traces for errors
SELECT
    e.fingerprint,
    e.message,
    e.occurred_at,
    t.operation_name,
    t.duration_ms,
    t.status_code,
    t.attributes
FROM monitoring.errors e
JOIN monitoring.traces t ON e.trace_id = t.trace_id
WHERE e.fingerprint = 'payment_processing_error'
ORDER BY e.occurred_at DESC
LIMIT 20;
$q$, $$SELECT 'payment_processing_error', 'card declined', now() - interval '2 minutes' + interval '1200 ms', o, d, 2::smallint, a
       FROM (VALUES ('POST /checkout', 1500::double precision, '{"user_id": "u-1"}'::jsonb),
                    ('charge', 1300::double precision, '{}'::jsonb)) v(o, d, a)$$,
    'seed: error + trace correlation, unchanged (one row per span of the error''s trace)');

SELECT results_eq($q$
-- Find business context for errors
SELECT
    e.fingerprint,
    e.message,
    e.context->>'order_id' as order_id,
    c.entity_name,
    c.entity_id,
    c.change_type,
    c.before_data,
    c.after_data,
    c.changed_at
FROM monitoring.errors e
JOIN tb_entity_change_log c ON e.context->>'order_id' = c.entity_id::text
WHERE e.fingerprint = 'order_processing_error'
  AND c.entity_name = 'order'
ORDER BY e.occurred_at DESC;
$q$, $$VALUES ('order_processing_error', 'order stuck', '1', 'order', '1', 'INSERT', NULL::jsonb, '{"id": 1, "status": "paid"}'::jsonb,
               now() - interval '2 minutes' + interval '1 second')$$,
    'seed: error + business event correlation, unchanged');

SELECT results_eq($q$
-- Complete observability picture
SELECT
    e.fingerprint,
    e.message,
    e.occurred_at,
    t.operation_name,
    t.duration_ms,
    t.status_code,
    c.entity_name,
    c.change_type,
    e.context->>'user_id' as user_id,
    COUNT(*) OVER (PARTITION BY e.fingerprint) as error_count
FROM monitoring.errors e
LEFT JOIN monitoring.traces t ON e.trace_id = t.trace_id
LEFT JOIN tb_entity_change_log c
    ON t.trace_id = c.trace_id::text
    AND c.changed_at BETWEEN e.occurred_at - INTERVAL '1 second'
                         AND e.occurred_at + INTERVAL '1 second'
WHERE e.occurred_at > NOW() - INTERVAL '24 hours'
  AND e.resolved_at IS NULL
ORDER BY e.occurred_at DESC;
$q$, $$SELECT f, m, now() - interval '2 minutes' + x, o, d, s, 'order', 'INSERT', 'u-1', 2::bigint
       FROM (VALUES ('order_processing_error', 'order stuck', interval '1300 ms', 'POST /checkout', 1500::double precision, 2::smallint),
                    ('order_processing_error', 'order stuck', interval '1300 ms', 'charge', 1300::double precision, 2::smallint),
                    ('payment_processing_error', 'card declined', interval '1200 ms', 'POST /checkout', 1500::double precision, 2::smallint),
                    ('payment_processing_error', 'card declined', interval '1200 ms', 'charge', 1300::double precision, 2::smallint)
            ) v(f, m, x, o, d, s)$$,
    'seed: full correlation query, unchanged');

SELECT results_eq($q$
-- Operations with highest error rate
SELECT
    t.operation_name,
    COUNT(DISTINCT t.trace_id) as total_requests,
    COUNT(DISTINCT e.id) as errors,
    ROUND(100.0 * COUNT(DISTINCT e.id) / COUNT(DISTINCT t.trace_id), 2) as error_rate_pct
FROM monitoring.traces t
LEFT JOIN monitoring.errors e ON t.trace_id = e.trace_id
WHERE t.start_time > NOW() - INTERVAL '1 hour'
GROUP BY t.operation_name
HAVING COUNT(DISTINCT t.trace_id) > 1
ORDER BY error_rate_pct DESC;
$q$, $$VALUES ('POST /checkout', 2::bigint, 2::bigint, 100.00::numeric), ('charge', 2::bigint, 2::bigint, 100.00::numeric)$$,
    'seed: operations with highest error rate, unchanged but for HAVING > 1 instead of > 10 (two requests here)');
-- The seed counts every error of a trace against every operation of it; operation_error_rates()
-- counts an error against the span it was captured in.
SELECT results_eq($$SELECT operation_name, requests, failed, captured_errors FROM monitoring.operation_error_rates('1 hour', NULL, 1) ORDER BY 1$$,
                  $$VALUES ('POST /checkout', 2::bigint, 1::bigint, 0::bigint), ('charge', 2::bigint, 1::bigint, 1::bigint)$$,
                  'operation_error_rates(): each error against its own span');

SELECT results_eq(replace($q$
-- Trace timeline with events
SELECT
    t.trace_id,
    t.operation_name,
    t.start_time,
    t.duration_ms,
    e.exception_type,
    e.message,
    c.entity_name,
    c.change_type
FROM monitoring.traces t
LEFT JOIN monitoring.errors e ON t.trace_id = e.trace_id
LEFT JOIN tb_entity_change_log c ON t.trace_id = c.trace_id::text
WHERE t.trace_id = 'your-trace-id-here'
ORDER BY t.start_time;
$q$, 'your-trace-id-here', 'b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2'),
    $$VALUES ('b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2', 'POST /checkout', now() - interval '1 minute', 300::double precision, NULL, NULL, 'order', 'INSERT'),
             ('b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2', 'charge', now() - interval '1 minute' + interval '50 ms', 200::double precision, NULL, NULL, 'order', 'INSERT')$$,
    'seed: trace timeline with events, unchanged but for the trace id');
SELECT results_eq($$SELECT depth, operation_name, jsonb_array_length(errors), jsonb_array_length(changes)
                    FROM monitoring.trace_timeline('a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1')$$,
                  $$VALUES (0, 'POST /checkout', 1, 0), (1, 'charge', 1, 1)$$,
                  'trace_timeline(): the error and the change in the span they happened in, the span-less error at the root');

-- Errors store trace ids as spans do, whatever the client sent, so that the joins match.
SELECT monitoring.capture_error('{"exception_type": "E", "message": "upper", "trace_id": "B2B2B2B2B2B2B2B2B2B2B2B2B2B2B2B2", "span_id": "B200000000000001"}');
INSERT INTO monitoring.tb_error_occurrence (exception_type, message, trace_id, span_id)
VALUES ('E', 'uuid form', 'b2b2b2b2-b2b2-b2b2-b2b2-b2b2b2b2b2b2', 'b200000000000001');
SELECT results_eq($$SELECT message, trace_id, span_id FROM monitoring.tb_error_occurrence WHERE message IN ('upper', 'uuid form') ORDER BY 1$$,
                  $$VALUES ('upper', 'b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2', 'b200000000000001'),
                           ('uuid form', 'b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2', 'b200000000000001')$$,
                  'errors get trace and span ids in the spans'' form (capture and plain INSERT)');
SELECT is((SELECT count(*)::int FROM monitoring.errors e JOIN monitoring.traces t ON e.trace_id = t.trace_id
           WHERE e.message IN ('upper', 'uuid form')), 4, 'and join their trace''s spans');

SELECT * FROM finish();
ROLLBACK;
