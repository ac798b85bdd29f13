-- The seeds' error queries (000 "Query Examples", 001 "Query Examples" and "Features") and
-- partition functions ("Production-Scale Error Storage") run unchanged, with monitoring on
-- the search path.
BEGIN;
SELECT plan(14);
SET LOCAL search_path = monitoring, public;

SELECT capture_errors($$[
  {"exception_type": "PaymentError", "message": "timeout", "fingerprint": ["payment_timeout_error"], "environment": "production", "context": {"user_id": "u1"}},
  {"exception_type": "PaymentError", "message": "timeout", "fingerprint": ["payment_timeout_error"], "environment": "production", "context": {"user_id": "u2"}},
  {"exception_type": "DbError", "message": "conn refused", "fingerprint": ["database_connection_error"], "environment": "production", "context": {"user_id": "u1"}, "trace_id": "abc"}]$$);

SELECT results_eq($q$
    SELECT fingerprint, exception_type, message, COUNT(*) as occurrences, COUNT(DISTINCT context->>'user_id') as affected_users
    FROM monitoring.errors
    WHERE occurred_at > NOW() - INTERVAL '24 hours' AND resolved_at IS NULL
    GROUP BY fingerprint, exception_type, message
    ORDER BY occurrences DESC
    LIMIT 20$q$,
    $$VALUES ('payment_timeout_error', 'PaymentError', 'timeout', 2::bigint, 2::bigint),
             ('database_connection_error', 'DbError', 'conn refused', 1::bigint, 1::bigint)$$,
    'seed 000: top errors in last 24 hours');
SELECT lives_ok($q$
    SELECT date_trunc('hour', occurred_at) as hour, fingerprint, COUNT(*) as count
    FROM monitoring.errors WHERE occurred_at > NOW() - INTERVAL '7 days'
    GROUP BY hour, fingerprint ORDER BY hour DESC, count DESC$q$, 'seed 000: error trends (hourly)');
SELECT results_eq($q$
    SELECT context->>'user_id' as user_id, COUNT(DISTINCT fingerprint) as unique_errors, COUNT(*) as total_errors
    FROM monitoring.errors
    WHERE occurred_at > NOW() - INTERVAL '24 hours' AND context->>'user_id' IS NOT NULL
    GROUP BY context->>'user_id' ORDER BY total_errors DESC, user_id LIMIT 50$q$,
    $$VALUES ('u1', 2::bigint, 2::bigint), ('u2', 1::bigint, 1::bigint)$$, 'seed 000: users affected by errors');
SELECT results_eq($q$
    SELECT fingerprint, COUNT(*) as occurrences
    FROM monitoring.errors WHERE environment = 'production' AND resolved_at IS NULL
    GROUP BY fingerprint ORDER BY occurrences DESC$q$,
    $$VALUES ('payment_timeout_error', 2::bigint), ('database_connection_error', 1::bigint)$$, 'seed 001: grouped by fingerprint');
SELECT is((SELECT count(*)::int FROM (
    SELECT id, fingerprint, message, exception_type, stack_trace, context, occurred_at
    FROM monitoring.errors WHERE fingerprint = 'payment_timeout_error' ORDER BY occurred_at DESC LIMIT 10) q), 2,
    'seed 001: full stack trace capture query');
SELECT lives_ok($q$
    SELECT context->>'user_id' as user_id, COUNT(*) as error_count, array_agg(DISTINCT exception_type) as error_types
    FROM monitoring.errors WHERE occurred_at > NOW() - INTERVAL '7 days'
    GROUP BY context->>'user_id' ORDER BY error_count DESC LIMIT 20$q$, 'seed 001: errors by user');
SELECT lives_ok($q$
    SELECT date_trunc('hour', occurred_at) as hour, COUNT(*) as error_count
    FROM monitoring.errors WHERE occurred_at > NOW() - INTERVAL '24 hours' GROUP BY hour ORDER BY hour$q$,
    'seed 001: error rate over time');
SELECT results_eq($q$
    SELECT error_fingerprint, error_type, occurrence_count FROM tb_error_log ORDER BY occurrence_count DESC, error_type$q$,
    $$VALUES ('payment_timeout_error', 'PaymentError', 2::bigint), ('database_connection_error', 'DbError', 1::bigint)$$,
    'tb_error_log: one row per group with the seed''s columns');
SELECT lives_ok($q$SELECT * FROM tb_error_occurrence WHERE occurred_at > NOW() - INTERVAL '7 days'$q$,
                'seed 000: tb_error_occurrence query');

-- The seed's partition functions, delegating to pg_partman.
SELECT matches(create_error_occurrence_partition(CURRENT_DATE + 400), '^tb_error_occurrence_p\d{4}_\d{2}$',
               'create_error_occurrence_partition(date) returns the partition''s name');
SELECT ok(EXISTS (SELECT FROM pg_class WHERE relname = 'tb_error_occurrence_p' || to_char(CURRENT_DATE + 400, 'YYYY_MM')),
          'and the partition exists');
SELECT is((SELECT count(*)::int FROM ensure_error_occurrence_partitions(3)), 4,
          'ensure_error_occurrence_partitions(3) reports this month and the next three');
SELECT lives_ok($$SELECT * FROM drop_old_error_occurrence_partitions(6)$$, 'drop_old_error_occurrence_partitions(6)');
SELECT ok((SELECT count(*) > 0 FROM get_partition_stats() WHERE table_name = 'tb_error_occurrence'), 'get_partition_stats()');

SELECT * FROM finish();
ROLLBACK;
