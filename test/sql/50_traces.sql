-- Traces: ingest_spans() (flat spans) and ingest_otlp_traces() (OTLP/JSON), their repairs
-- and rejections, the seed's monitoring.traces and its queries, the analysis functions and
-- privileges. Everything runs in one transaction.
BEGIN;
SELECT plan(84);
SET LOCAL search_path = public, monitoring;

-- A flat span with sensible defaults; fields in p_extra override them.
CREATE FUNCTION pg_temp.span(p_trace text, p_span text, p_name text, p_start timestamptz, p_ms double precision,
                             p_extra jsonb DEFAULT '{}') RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('trace_id', p_trace, 'span_id', p_span, 'name', p_name,
                              'start_time', p_start, 'end_time', p_start + make_interval(secs => p_ms / 1000),
                              'resource', jsonb_build_object('service.name', 'shop')) || p_extra
$$;
CREATE FUNCTION pg_temp.counts(p_spans jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT format('%s/%s/%s', accepted, duplicates, rejected) FROM monitoring.ingest_spans(p_spans)
$$;

-- ---------------------------------------------------------------- flat spans
SELECT is(pg_temp.counts(jsonb_build_array(
    pg_temp.span('0af7651916cd43dd8448eb211c80319c', 'b7ad6b7169203331', 'GET /orders', now() - interval '10 minutes', 250,
                 '{"kind": "server", "attributes": {"http.method": "GET", "http.status_code": 200},
                   "resource": {"service.name": "shop", "deployment.environment": "staging"}}'),
    pg_temp.span('0af7651916cd43dd8448eb211c80319c', '00f067aa0ba902b7', 'db.query', now() - interval '10 minutes', 40,
                 '{"parent_span_id": "b7ad6b7169203331", "kind": 3, "status_code": "STATUS_CODE_ERROR",
                   "status_message": "deadlock", "attributes": {"db.system": "postgresql", "db.statement": "SELECT 1"}}'))),
    '2/0/0', 'ingest_spans() stores a batch and returns accepted/duplicates/rejected');
SELECT results_eq(
    $$SELECT span_id, parent_span_id, service, operation_name, kind, status_code, status_message, environment
      FROM monitoring.spans WHERE trace_id = '0af7651916cd43dd8448eb211c80319c' ORDER BY start_time, span_id$$,
    $$VALUES ('00f067aa0ba902b7', 'b7ad6b7169203331', 'shop', 'db.query', 'client', 2::smallint, 'deadlock', 'production'),
             ('b7ad6b7169203331', NULL, 'shop', 'GET /orders', 'server', 0::smallint, NULL, 'staging')$$,
    'ids, parent, service and environment from the resource, kind and status from numbers and enum names');
SELECT is((SELECT duration_ms FROM monitoring.spans WHERE span_id = 'b7ad6b7169203331'), 250::double precision,
          'duration_ms is end - start');
SELECT is(pg_temp.counts(jsonb_build_array(
    pg_temp.span('0af7651916cd43dd8448eb211c80319c', 'b7ad6b7169203331', 'GET /orders', now() - interval '10 minutes', 250,
                 '{"kind": "server"}'))),
    '0/1/0', 'a span sent again is stored once (a retrying exporter)');
SELECT is((SELECT count(*)::int FROM monitoring.spans WHERE span_id = 'b7ad6b7169203331'), 1, 'one row for the span');
-- A batch is stored without ON CONFLICT; one holding a stored span, or a span twice, is
-- stored again with it: the new spans kept, the others counted as duplicates.
SELECT is(pg_temp.counts(jsonb_build_array(
    pg_temp.span('0af7651916cd43dd8448eb211c80319c', 'b7ad6b7169203331', 'GET /orders', now() - interval '10 minutes', 250),
    pg_temp.span('5af7651916cd43dd8448eb211c80319c', 'c7ad6b7169203331', 'render', now() - interval '10 minutes', 5),
    pg_temp.span('5af7651916cd43dd8448eb211c80319c', 'c7ad6b7169203331', 'render', now() - interval '10 minutes', 5))),
    '1/2/0', 'a batch with a stored span and a span twice: the new span stored once, two duplicates');
SELECT is((SELECT count(*)::int FROM monitoring.spans WHERE span_id IN ('b7ad6b7169203331', 'c7ad6b7169203331')), 2,
          'one row for each span');

SELECT is(pg_temp.counts(jsonb_build_array(jsonb_build_object(
    'trace_id', '11111111111111111111111111111111', 'span_id', '2222222222222222', 'name', 'nanos',
    'start_time_unix_nano', (extract(epoch FROM date_trunc('second', now())) * 1000000000)::bigint::text || '',
    'end_time_unix_nano', (extract(epoch FROM date_trunc('second', now())) * 1000000000)::bigint + 1234567))),
    '1/0/0', 'times in Unix nanoseconds, as a string or a number');
SELECT is((SELECT duration_ms FROM monitoring.spans WHERE span_id = '2222222222222222'), 1.235::double precision,
          'nanoseconds keep microsecond precision');
-- Up to 9e18 the integer path, above it numeric: they agree at the boundary (the year 2255).
SELECT is(monitoring._otel_time('8999999999999999999', NULL), monitoring._otel_time('9000000000000000000', NULL),
          'the integer and the numeric paths round alike at their boundary');
SELECT is(ARRAY[monitoring._otel_time('1795428000000000500', NULL), monitoring._otel_time('10000000000000000500', NULL)],
          ARRAY['epoch'::timestamptz + interval '1795428000000001 microseconds', to_timestamp(10000000000) + interval '1 microsecond'],
          'both paths round half a microsecond up');
SELECT is(monitoring._otel_time('9000000000000000000', NULL), 'epoch'::timestamptz + interval '9000000000000000 microseconds',
          'a time past bigint''s range keeps its microseconds');

-- ---------------------------------------------------------------- repairs
SELECT is(pg_temp.counts(jsonb_build_array(
    pg_temp.span('5B8EFFF798038103D269B633813FC60C', 'EEE19B7EC3C1B174', 'upper', now(), 1),
    pg_temp.span('5b8efff7-9803-8103-d269-b633813fc60d', 'eee19b7ec3c1b175', 'uuid form', now(), 1),
    pg_temp.span('d269b633813fc60e', 'eee19b7ec3c1b176', '64-bit trace id', now(), 1),
    pg_temp.span('33333333333333333333333333333333', '4444444444444444', 'ends before it starts', now(), -5),
    jsonb_build_object('trace_id', '33333333333333333333333333333333', 'span_id', '4444444444444445',
                       'name', 'no end', 'start_time', now()),
    pg_temp.span('33333333333333333333333333333333', '4444444444444446', 'bad parent', now(), 1,
                 '{"parent_span_id": "not-hex", "kind": "sideways", "status_code": "meh"}'),
    pg_temp.span('33333333333333333333333333333333', '4444444444444447', repeat('n', 5000), now(), 1,
                 '{"attributes": ["not", "an", "object"]}'))),
    '7/0/0', 'repairable spans are stored');
SELECT results_eq(
    $$SELECT trace_id, repairs FROM monitoring.spans WHERE span_id IN ('eee19b7ec3c1b174', 'eee19b7ec3c1b175', 'eee19b7ec3c1b176')
      ORDER BY span_id$$,
    $$VALUES ('5b8efff798038103d269b633813fc60c', '{trace_id_normalized,span_id_normalized}'::text[]),
             ('5b8efff798038103d269b633813fc60d', '{trace_id_normalized}'::text[]),
             ('0000000000000000d269b633813fc60e', '{trace_id_normalized}'::text[])$$,
    'upper case, UUID form and 64-bit trace ids become 32 lower-case hex digits');
SELECT results_eq(
    $$SELECT span_id, duration_ms, end_time = start_time, repairs FROM monitoring.spans
      WHERE span_id IN ('4444444444444444', '4444444444444445') ORDER BY span_id$$,
    $$VALUES ('4444444444444444', 0::double precision, true, '{end_before_start}'::text[]),
             ('4444444444444445', 0::double precision, true, '{end_time_missing}'::text[])$$,
    'end before start or no end: a zero-length span, named in repairs');
SELECT results_eq(
    $$SELECT parent_span_id, kind, status_code, repairs FROM monitoring.spans WHERE span_id = '4444444444444446'$$,
    $$VALUES (NULL::text, 'unspecified', 0::smallint, '{parent_span_id_invalid_dropped,kind_unknown,status_code_unknown}'::text[])$$,
    'an invalid parent id, unknown kind and status are dropped and named');
SELECT results_eq(
    $$SELECT length(operation_name), attributes, repairs FROM monitoring.spans WHERE span_id = '4444444444444447'$$,
    $$VALUES (1024, '{"pg_observe.invalid_attributes": ["not", "an", "object"]}'::jsonb, '{name_truncated,attributes_not_object}'::text[])$$,
    'a 5,000-character name is cut to 1,024; attributes that are not an object are kept under a key');

-- Wrong clocks: far past, far future (nanoseconds past 2262, OTLP's fixed64 allows them).
SELECT is(pg_temp.counts(jsonb_build_array(
    pg_temp.span('55555555555555555555555555555555', '6666666666666661', 'from 1999', '1999-01-01 00:00:00+00', 20),
    jsonb_build_object('trace_id', '55555555555555555555555555555555', 'span_id', '6666666666666662', 'name', 'year 2500',
                       'start_time_unix_nano', '16725225600000000000', 'end_time_unix_nano', '16725225600500000000'))),
    '2/0/0', 'spans with a wrong clock are stored');
SELECT results_eq(
    $$SELECT span_id, start_time = now(), duration_ms, client_start_time, repairs FROM monitoring.spans
      WHERE trace_id = '55555555555555555555555555555555' ORDER BY span_id$$,
    $$VALUES ('6666666666666661', true, 20::double precision, '1999-01-01 00:00:00+00'::timestamptz, '{start_time_out_of_range}'::text[]),
             ('6666666666666662', true, 500::double precision, '2500-01-01 00:00:00+00'::timestamptz, '{start_time_out_of_range}'::text[])$$,
    'an implausible start moves to the time received, keeping the duration and the original time');

-- Values of every JSON type and size survive.
SELECT is(pg_temp.counts(jsonb_build_array(pg_temp.span('77777777777777777777777777777777', '8888888888888881', 'big', now(), 1,
    jsonb_build_object('attributes', jsonb_build_object('huge', repeat('x', 1048576), 'nested', '{"a": {"b": [1, 2, {"c": null}]}}'::jsonb,
                                                        'hostile', E'\'; DROP TABLE monitoring.spans; --\u202e', 'n', 1e300))))),
    '1/0/0', 'a 1 MB attribute, nested maps and hostile strings are stored');
SELECT results_eq(
    $$SELECT length(attributes->>'huge'), attributes->'nested', attributes->>'hostile' FROM monitoring.spans WHERE span_id = '8888888888888881'$$,
    $$VALUES (1048576, '{"a": {"b": [1, 2, {"c": null}]}}'::jsonb, E'\'; DROP TABLE monitoring.spans; --\u202e')$$,
    'and read back unchanged');

-- ---------------------------------------------------------------- rejections
SELECT is(pg_temp.counts(jsonb_build_array(
    pg_temp.span('abc', '9999999999999991', 'short trace id', now(), 1),
    pg_temp.span('zz000000000000000000000000000000', '9999999999999992', 'not hex', now(), 1),
    pg_temp.span('00000000000000000000000000000000', '9999999999999993', 'all zeros', now(), 1),
    pg_temp.span('99999999999999999999999999999999', '123', 'short span id', now(), 1),
    pg_temp.span('99999999999999999999999999999999', '9999999999999994', '', now(), 1),
    jsonb_build_object('trace_id', '99999999999999999999999999999999', 'span_id', '9999999999999995', 'name', 'no time'),
    jsonb_build_object('trace_id', '99999999999999999999999999999999', 'span_id', '9999999999999996', 'name', 'bad time',
                       'start_time', 'yesterday-ish'),
    jsonb_build_object('trace_id', '99999999999999999999999999999999', 'span_id', '9999999999999997', 'name', 'no such day',
                       'start_time', '2026-02-30T00:00:00Z'),
    '"a string"'::jsonb, 'null'::jsonb,
    pg_temp.span('99999999999999999999999999999999', '9999999999999998', 'the good one', now(), 1))),
    '1/0/10', 'bad spans are rejected one by one, the good one of the batch is stored');
SELECT results_eq(
    $$SELECT reason FROM monitoring.rejected_telemetry WHERE kind = 'span' ORDER BY rejected_id$$,
    $$VALUES ('trace_id abc is not 32 hex digits (nor all zeros)'),
             ('trace_id zz000000000000000000000000000000 is not 32 hex digits (nor all zeros)'),
             ('trace_id 00000000000000000000000000000000 is not 32 hex digits (nor all zeros)'),
             ('span_id 123 is not 16 hex digits (nor all zeros)'),
             ('a span needs a name'),
             ('start_time_unix_nano (digits) or start_time (ISO 8601) is missing or invalid'),
             ('start_time_unix_nano (digits) or start_time (ISO 8601) is missing or invalid'),
             ('date/time field value out of range: "2026-02-30T00:00:00Z"'),
             ('a span must be a JSON object'),
             ('a span must be a JSON object')$$,
    'each rejected span is kept in rejected_telemetry with its reason');
SELECT is((SELECT payload->>'name' FROM monitoring.rejected_telemetry WHERE reason LIKE 'span_id 123%'), 'short span id',
          'the rejected span is kept as it was sent');
SELECT throws_ok($$SELECT * FROM monitoring.ingest_spans('{"trace_id": "x"}')$$, '22023',
                 'ingest_spans() takes a JSON array of spans, got object', 'an object instead of an array: a clear error');
SELECT throws_ok($$SELECT * FROM monitoring.ingest_spans(NULL)$$, '22023',
                 'ingest_spans() takes a JSON array of spans, got NULL', 'NULL: a clear error');
SELECT throws_ok($$SELECT * FROM monitoring.ingest_spans('[{"name": "x"')$$, '22P02', NULL,
                 'invalid JSON fails at the cast, before anything is stored');
SELECT is(pg_temp.counts('[]'), '0/0/0', 'an empty batch stores nothing');

-- ---------------------------------------------------------------- OTLP/JSON
SELECT results_eq($$SELECT accepted, duplicates, rejected FROM monitoring.ingest_otlp_traces($j${
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}},
                                {"key": "deployment.environment.name", "value": {"stringValue": "qa"}}]},
    "scopeSpans": [{
      "scope": {"name": "io.opentelemetry.contrib", "version": "1.0"},
      "spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "aaaaaaaaaaaaaaa1", "parentSpanId": "",
        "name": "POST /pay", "kind": 2,
        "startTimeUnixNano": "1795428000000000000", "endTimeUnixNano": "1795428000125000000",
        "attributes": [{"key": "s", "value": {"stringValue": "x"}}, {"key": "i", "value": {"intValue": "9007199254740993"}},
                       {"key": "d", "value": {"doubleValue": 2.5}}, {"key": "nan", "value": {"doubleValue": "NaN"}},
                       {"key": "b", "value": {"boolValue": false}}, {"key": "bytes", "value": {"bytesValue": "3q2+7w=="}},
                       {"key": "arr", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "two"}]}}},
                       {"key": "map", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"arrayValue": {}}}]}}},
                       {"key": "empty", "value": {}}],
        "events": [{"timeUnixNano": "1795428000100000000", "name": "exception",
                    "attributes": [{"key": "exception.type", "value": {"stringValue": "CardDeclined"}}]}],
        "links": [{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}],
        "status": {"code": 2, "message": "card declined"}
      }, {
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "aaaaaaaaaaaaaaa2", "parentSpanId": "aaaaaaaaaaaaaaa1",
        "name": "charge", "kind": "SPAN_KIND_CLIENT",
        "startTimeUnixNano": 1795428000010000000, "endTimeUnixNano": 1795428000110000000,
        "status": {"code": "STATUS_CODE_OK"}
      }, {"traceId": "bad", "spanId": "aaaaaaaaaaaaaaa3", "name": "x", "startTimeUnixNano": "1"}]
    }]
  }, {
    "resource": {"attributes": []},
    "instrumentationLibrarySpans": [{"instrumentationLibrary": {"name": "old-sdk"},
      "spans": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "aaaaaaaaaaaaaaa4", "name": "legacy",
                 "startTimeUnixNano": "1795428000020000000", "endTimeUnixNano": "1795428000030000000"}]}]
  }]}$j$)$$,
    $$VALUES (3, 0, 1)$$, 'ingest_otlp_traces() stores an OTLP/JSON request (one bad span rejected)');
SELECT is((SELECT attributes FROM monitoring.spans WHERE span_id = 'aaaaaaaaaaaaaaa1'),
          '{"s": "x", "i": 9007199254740993, "d": 2.5, "nan": "NaN", "b": false, "bytes": "3q2+7w==",
            "arr": [1, "two"], "map": {"k": []}, "empty": null}'::jsonb,
          'every AnyValue type: int64 exact, NaN kept as text, bytes as base64, arrays and maps nested');
SELECT results_eq(
    $$SELECT service, environment, kind, status_code, status_message, duration_ms, scope->>'name', events->0->>'name', links->0->>'span_id'
      FROM monitoring.spans WHERE span_id = 'aaaaaaaaaaaaaaa1'$$,
    $$VALUES ('checkout', 'qa', 'server', 2::smallint, 'card declined', 125::double precision, 'io.opentelemetry.contrib', 'exception', 'b7ad6b7169203331')$$,
    'resource, scope, kind, status, events and links');
SELECT results_eq(
    $$SELECT span_id, parent_span_id, kind, status_code, service FROM monitoring.spans
      WHERE trace_id = '5b8efff798038103d269b633813fc60c' AND span_id IN ('aaaaaaaaaaaaaaa2', 'aaaaaaaaaaaaaaa4') ORDER BY span_id$$,
    $$VALUES ('aaaaaaaaaaaaaaa2', 'aaaaaaaaaaaaaaa1', 'client', 1::smallint, 'checkout'),
             ('aaaaaaaaaaaaaaa4', NULL, 'internal', 0::smallint, 'unknown_service')$$,
    'enum names, numeric times, and the pre-0.15 instrumentationLibrarySpans');
SELECT throws_ok($$SELECT * FROM monitoring.ingest_otlp_traces('[]')$$, '22023', NULL,
                 'ingest_otlp_traces() refuses what is not an object');
SELECT results_eq($$SELECT accepted, rejected FROM monitoring.ingest_otlp_traces('{}')$$, $$VALUES (0, 0)$$,
                  'an empty request stores nothing');
SELECT results_eq($$SELECT accepted, rejected FROM monitoring.ingest_otlp_traces('{"resourceSpans": [{"scopeSpans": [{"spans": [1, "x"]}]}]}')$$,
                  $$VALUES (0, 2)$$, 'spans that are not objects are kept as rejected');
SELECT lives_ok($$SELECT * FROM monitoring.ingest_otlp_traces('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c",
                  "spanId": "aaaaaaaaaaaaaaa5", "name": "deep", "startTimeUnixNano": "1795428000020000000",
                  "attributes": [{"key": "d", "value": {"doubleValue": 1e400}}]}]}]}]}')$$,
                'a double too large for a float is kept as text, not lost');

SELECT results_eq($$SELECT accepted, rejected FROM monitoring.ingest_otlp_traces('{"resourceSpans": 5}')$$, $$VALUES (0, 0)$$,
                  'resourceSpans that is not an array holds no spans');
SELECT throws_ok(format('SELECT * FROM monitoring.ingest_otlp_traces(%L)',
                        '{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "a", "value": ' || repeat('[', 3000) || repeat(']', 3000) || '}]}]}]}]}'),
                 '22023', 'plpy.Error: the OTLP request is nested too deeply to be read', 'a request nested 3,000 deep: a clear error');
SELECT results_eq(format($$SELECT accepted FROM monitoring.ingest_otlp_traces('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c",
                  "spanId": "aaaaaaaaaaaaaaa6", "name": "huge int", "startTimeUnixNano": "1795428000020000000",
                  "attributes": [{"key": "n", "value": {"intValue": %s}}]}]}]}]}')$$, repeat('7', 5000)), $$VALUES (1)$$,
                  'a 5,000-digit integer is kept (as text), not a failed request');

-- ---------------------------------------------------------------- the seed's monitoring.traces
SELECT has_view('monitoring', 'traces', 'monitoring.traces exists');
SELECT columns_are('monitoring', 'traces',
    ARRAY['trace_id', 'span_id', 'parent_span_id', 'operation_name', 'start_time', 'end_time', 'duration_ms', 'status_code',
          'status_message', 'attributes', 'events', 'links', 'resource', 'environment', 'created_at', 'service', 'kind'],
    'monitoring.traces has the seed''s columns (and service, kind)');
SELECT is((SELECT count(*)::int FROM monitoring.traces WHERE trace_id = '0af7651916cd43dd8448eb211c80319c'), 2,
          'many spans per trace (the seed''s primary key on trace_id allowed one)');
SELECT lives_ok($$INSERT INTO monitoring.traces (trace_id, span_id, operation_name, start_time, end_time, duration_ms, environment)
                  VALUES ('abababababababababababababababab', 'abababababababab', 'seed insert', now(), now(), 0, 'production')$$,
                'rows can be inserted through monitoring.traces');
SELECT throws_ok($$INSERT INTO monitoring.spans (trace_id, span_id, operation_name, start_time, end_time, duration_ms)
                   VALUES ('not-hex', 'abababababababab', 'x', now(), now(), 0)$$, '23514', NULL,
                 'a direct INSERT with a bad id fails its check constraint');

-- Seed 000's performance queries, unchanged.
INSERT INTO monitoring.spans (trace_id, span_id, service, operation_name, kind, start_time, end_time, duration_ms, status_code, attributes)
SELECT lpad(to_hex(g), 32, 'c'), lpad(to_hex(g), 16, 'd'), 'shop', CASE WHEN g % 2 = 0 THEN 'GET /fast' ELSE 'GET /slow' END,
       'server', now() - interval '5 minutes', now() - interval '5 minutes' + make_interval(secs => g / 1000.0),
       CASE WHEN g % 2 = 0 THEN g ELSE g * 10 END, CASE WHEN g % 10 = 1 THEN 2 ELSE 0 END,
       jsonb_build_object('db.system', 'postgresql', 'db.statement', 'SELECT ' || g % 3)
FROM generate_series(1, 100) g;
SELECT results_eq($$SELECT operation_name, request_count, round(p50_ms::numeric, 6), round(p95_ms::numeric, 6),
                          round(p99_ms::numeric, 6), max_ms FROM (
-- Slowest operations (P99)
SELECT
    operation_name,
    COUNT(*) as request_count,
    percentile_cont(0.50) WITHIN GROUP (ORDER BY duration_ms) as p50_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) as p95_ms,
    percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) as p99_ms,
    MAX(duration_ms) as max_ms
FROM monitoring.traces
WHERE start_time > NOW() - INTERVAL '1 hour'
GROUP BY operation_name
HAVING COUNT(*) > 10
ORDER BY p99_ms DESC
LIMIT 20
) seed_query$$, $$VALUES ('GET /slow', 50::bigint, 500::numeric, 941::numeric, 980.2::numeric, 990::double precision),
             ('GET /fast', 50::bigint, 51::numeric, 95.1::numeric, 99.02::numeric, 100::double precision)$$,
    'seed: slowest operations (P99), unchanged');
SELECT results_eq($$
-- Database query performance
SELECT
    attributes->>'db.statement' as query,
    COUNT(*) as execution_count,
    AVG(duration_ms) as avg_duration_ms,
    MAX(duration_ms) as max_duration_ms
FROM monitoring.traces
WHERE start_time > NOW() - INTERVAL '1 hour'
  AND attributes->>'db.system' = 'postgresql'
GROUP BY attributes->>'db.statement'
ORDER BY avg_duration_ms DESC
LIMIT 20;
$$, $$SELECT attributes->>'db.statement', count(*), avg(duration_ms), max(duration_ms) FROM monitoring.spans
      WHERE attributes->>'db.system' = 'postgresql' AND start_time > now() - interval '1 hour'
      GROUP BY 1 ORDER BY 3 DESC$$,
    'seed: database query performance, unchanged');

-- ---------------------------------------------------------------- analysis functions
SELECT results_eq($$SELECT operation_name, request_count, error_count, round(p99_ms::numeric, 6) FROM monitoring.slowest_operations('1 hour')
                    WHERE service = 'shop' AND operation_name = 'GET /slow'$$,
                  $$VALUES ('GET /slow', 50::bigint, 10::bigint, 980.2::numeric)$$,
                  'slowest_operations(): counts, errors and p99 per operation');
SELECT is((SELECT sum(requests)::int FROM monitoring.request_rate('1 hour', '1 minute') WHERE service = 'shop'),
          (SELECT count(*)::int FROM monitoring.spans WHERE service = 'shop' AND start_time > now() - interval '1 hour'
             AND (kind IN ('server', 'consumer') OR parent_span_id IS NULL)),
          'request_rate() counts entry spans');
SELECT is((SELECT round(requests_per_second::numeric, 6) FROM monitoring.request_rate('1 hour', '1 minute')
           WHERE service = 'shop' ORDER BY requests DESC LIMIT 1),
          (SELECT round(max(requests) / 60.0, 6) FROM monitoring.request_rate('1 hour', '1 minute') WHERE service = 'shop'),
          'request_rate(): per second over the bucket');
-- An error captured in one span of the fast operation.
SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'TimeoutError', 'message', 'slow backend',
    'trace_id', lpad(to_hex(2), 32, 'c'), 'span_id', lpad(to_hex(2), 16, 'd')));
SELECT results_eq($$SELECT operation_name, requests, failed, captured_errors, traces_with_errors, error_rate_pct
                    FROM monitoring.operation_error_rates('1 hour') WHERE operation_name LIKE 'GET /%s%' ORDER BY 1$$,
                  $$VALUES ('GET /fast', 50::bigint, 1::bigint, 1::bigint, 1::bigint, 2.00::numeric),
                           ('GET /slow', 50::bigint, 10::bigint, 0::bigint, 0::bigint, 20.00::numeric)$$,
                  'operation_error_rates(): status errors and captured errors per operation');

-- A trace as a tree: root, two children in start order, a grandchild; a span whose parent
-- is missing is a root too; a cycle cannot loop.
SELECT is(pg_temp.counts(jsonb_build_array(
    pg_temp.span('12121212121212121212121212121212', '1000000000000001', 'root', now() - interval '1 minute', 100),
    pg_temp.span('12121212121212121212121212121212', '1000000000000003', 'second child', now() - interval '1 minute' + interval '50 ms', 20,
                 '{"parent_span_id": "1000000000000001"}'),
    pg_temp.span('12121212121212121212121212121212', '1000000000000002', 'first child', now() - interval '1 minute' + interval '10 ms', 30,
                 '{"parent_span_id": "1000000000000001"}'),
    pg_temp.span('12121212121212121212121212121212', '1000000000000004', 'grandchild', now() - interval '1 minute' + interval '12 ms', 5,
                 '{"parent_span_id": "1000000000000002"}'),
    pg_temp.span('12121212121212121212121212121212', '1000000000000005', 'orphan', now() - interval '1 minute' + interval '90 ms', 1,
                 '{"parent_span_id": "1000000000000099"}'),
    pg_temp.span('12121212121212121212121212121212', '1000000000000006', 'cycle a', now() - interval '1 minute' + interval '95 ms', 1,
                 '{"parent_span_id": "1000000000000007"}'),
    pg_temp.span('12121212121212121212121212121212', '1000000000000007', 'cycle b', now() - interval '1 minute' + interval '96 ms', 1,
                 '{"parent_span_id": "1000000000000006"}'))),
    '7/0/0', 'a trace of seven spans');
SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'KeyError', 'message', 'in the grandchild',
    'trace_id', '12121212121212121212121212121212', 'span_id', '1000000000000004'));
SELECT monitoring.capture_error(jsonb_build_object('exception_type', 'KeyError', 'message', 'no span given',
    'trace_id', '12121212121212121212121212121212'));
SELECT results_eq($$SELECT depth, operation_name, start_offset_ms, jsonb_array_length(errors)
                    FROM monitoring.trace_timeline('12121212121212121212121212121212')$$,
                  $$VALUES (0, 'root', 0::double precision, 1), (1, 'first child', 10::double precision, 0),
                           (2, 'grandchild', 12::double precision, 1), (1, 'second child', 50::double precision, 0),
                           (0, 'orphan', 90::double precision, 0), (0, 'cycle a', 95::double precision, 0),
                           (0, 'cycle b', 96::double precision, 0)$$,
                  'trace_timeline(): depth-first in start order, offsets, errors in their span (or the first root); spans in a cycle are roots');
SELECT is((SELECT count(*)::int FROM monitoring.trace_timeline('5B8EFFF798038103D269B633813FC60C')),
          (SELECT count(*)::int FROM monitoring.spans WHERE trace_id = '5b8efff798038103d269b633813fc60c'),
          'trace_timeline() accepts the id in upper case');
SELECT is((SELECT count(*)::int FROM monitoring.trace_timeline('nonsense')), 0, 'an invalid trace id gives no rows');

-- A span id sent many times with other start times: shown once, and no exponential walk.
SELECT is(pg_temp.counts((SELECT jsonb_agg(pg_temp.span('14141414141414141414141414141414', lpad(to_hex(i + 1), 16, '0'),
                                                        'chain ' || i, now() - interval '30 seconds' + d * interval '1 microsecond', 1,
                                                        CASE WHEN i > 0 THEN jsonb_build_object('parent_span_id', lpad(to_hex(i), 16, '0'))
                                                             ELSE '{}' END))
                          FROM generate_series(0, 29) i, generate_series(0, 1) d)),
          '60/0/0', 'thirty span ids, each sent with two start times');
SELECT is((SELECT count(*)::int FROM monitoring.trace_timeline('14141414141414141414141414141414')), 30,
          'trace_timeline() shows each span id once (and returns at once)');
-- Ids must be JSON strings; a long name in a multi-byte script is cut to fit its index.
SELECT is(pg_temp.counts(jsonb_build_array(
    '{"trace_id": 12345678901234567890123456789012, "span_id": "1515151515151515", "name": "numeric trace id", "start_time": "2026-11-23T10:00:00Z"}'::jsonb,
    pg_temp.span('15151515151515151515151515151515', '1515151515151516', repeat('名', 1100), now(), 1))),
    '1/0/1', 'a trace id given as a JSON number is rejected; a 1,100-character CJK name is stored');
SELECT results_eq($$SELECT length(operation_name), octet_length(operation_name) <= 2048, repairs FROM monitoring.spans
                    WHERE span_id = '1515151515151516'$$,
                  $$VALUES (512, true, '{name_truncated}'::text[])$$, 'cut to at most 2,048 bytes');

-- ---------------------------------------------------------------- storage
SELECT is((SELECT retention FROM monitoring.time_series_config WHERE parent_table = 'monitoring.spans'), interval '30 days',
          'spans are kept 30 days by default');
SELECT is((SELECT partition_interval FROM monitoring.time_series_config WHERE parent_table = 'monitoring.spans'), interval '1 day',
          'spans are partitioned daily');
SELECT ok((SELECT count(*) FROM pg_inherits WHERE inhparent = 'monitoring.spans'::regclass) >= 5,
          'daily partitions are premade');
SELECT is((SELECT count(*)::int FROM monitoring.spans s WHERE s.tableoid = monitoring._default_partition('monitoring.spans')), 0,
          'no span went to the default partition');
SELECT lives_ok($$SELECT monitoring.set_retention('monitoring.spans', interval '14 days')$$, 'retention changes with one call');
SELECT is((SELECT retention FROM monitoring.time_series_config WHERE parent_table = 'monitoring.spans'), interval '14 days',
          'and is recorded');
SELECT ok(EXISTS (SELECT FROM pg_indexes WHERE schemaname = 'monitoring' AND tablename = 'spans'
                  AND indexdef LIKE '%(trace_id, span_id, start_time)%'), 'trace_id leads an index: joins by trace_id use it');
SELECT is((SELECT count(*)::int FROM monitoring.spans WHERE trace_id = 'abababababababababababababababab'), 1, 'seed-style rows are there');
SELECT lives_ok($$DELETE FROM monitoring.traces WHERE start_time < NOW() - INTERVAL '30 days'$$,
                'seed: the retention DELETE on monitoring.traces runs unchanged');

-- ---------------------------------------------------------------- privileges
SET LOCAL ROLE observe_writer;
SELECT is(pg_temp.counts(jsonb_build_array(pg_temp.span('13131313131313131313131313131313', '1300000000000001', 'writer', now(), 1))),
          '1/0/0', 'the writer ingests spans');
SELECT results_eq($$SELECT accepted FROM monitoring.ingest_otlp_traces('{"resourceSpans": []}')$$, $$VALUES (0)$$,
                  'the writer ingests OTLP');
SELECT throws_ok($$SELECT count(*) FROM monitoring.spans$$, '42501', NULL, 'the writer cannot read spans');
SELECT throws_ok($$SELECT count(*) FROM monitoring.rejected_telemetry$$, '42501', NULL, 'nor rejected ones');
SELECT throws_ok($$SELECT * FROM monitoring.slowest_operations()$$, '42501', NULL, 'nor the analysis functions');
RESET ROLE;
SET LOCAL ROLE observe_reader;
SELECT ok((SELECT count(*) FROM monitoring.traces) > 0, 'the reader reads traces');
SELECT ok((SELECT count(*) FROM monitoring.trace_timeline('12121212121212121212121212121212')) = 7, 'and timelines');
SELECT throws_ok($$SELECT * FROM monitoring.ingest_spans('[]')$$, '42501', NULL, 'the reader cannot ingest');
SELECT throws_ok($$DELETE FROM monitoring.spans$$, '42501', NULL, 'nor delete');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM information_schema.role_routine_grants
           WHERE routine_schema = 'monitoring' AND routine_name IN ('ingest_spans', 'ingest_otlp_traces') AND grantee = 'PUBLIC'), 0,
          'PUBLIC cannot ingest');
SELECT ok((SELECT prosecdef FROM pg_proc WHERE oid = 'monitoring.ingest_spans(jsonb)'::regprocedure),
          'ingest_spans() runs as the owner (writers need no table rights)');

-- The oldest plausible time follows the partitions.
SELECT is(monitoring._oldest_plausible_time('monitoring.spans'), monitoring._oldest_partition_start('monitoring.spans'),
          'the oldest plausible start of a span is its oldest partition''s (younger than the retention)');
DO $$
BEGIN
    EXECUTE format('SELECT %I.create_partition_time(''monitoring.spans'', ARRAY[date_trunc(''day'', now()) - interval ''6 days''])',
                   monitoring._partman_schema());
END
$$;
SET LOCAL search_path = public, monitoring;   -- pg_partman 4.7 leaves its own behind
SELECT is(monitoring._oldest_plausible_time('monitoring.spans'), date_trunc('day', now()) - interval '6 days',
          'a partition made since the last batch moves the bound at once');
SELECT is((SELECT oldest_start FROM monitoring.partition_bounds_cache WHERE parent_table = 'monitoring.spans'),
          date_trunc('day', now()) - interval '6 days', 'the bound is cached with the partition set it was read from');
UPDATE monitoring.partition_bounds_cache SET oldest_start = '2000-01-01' WHERE parent_table = 'monitoring.spans';
SELECT is(monitoring._oldest_plausible_time('monitoring.spans'),
          now() - (SELECT retention FROM monitoring.time_series_config WHERE parent_table = 'monitoring.spans'),
          'while the partitions are the same the cached bound is used (here older than the retention, which decides)');
UPDATE monitoring.partition_bounds_cache SET oldest_start = '2000-01-01', partitions = '1:2:3' WHERE parent_table = 'monitoring.spans';
SELECT is(monitoring._oldest_plausible_time('monitoring.spans'), date_trunc('day', now()) - interval '6 days',
          'a cache row of another partition set is read again');
SET LOCAL ROLE observe_writer;
SELECT throws_ok($$UPDATE monitoring.partition_bounds_cache SET oldest_start = now()$$, '42501', NULL,
                 'writers cannot forge the cached bound');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
