-- The time-series pattern: pg_partman registration, premade partitions, the default
-- partition's time guard (a wrong clock never fails an insert nor blocks maintenance),
-- moving rows out of the default, and retention.
BEGIN;
SELECT plan(23);

-- A scratch table through the same helper every pg_observe table uses.
CREATE TABLE monitoring.ts_probe (
    id bigint GENERATED ALWAYS AS IDENTITY,
    at_day date GENERATED ALWAYS AS ((at AT TIME ZONE 'UTC')::date) STORED,
    at timestamptz NOT NULL DEFAULT now(),
    original_at timestamptz,
    payload text
) PARTITION BY RANGE (at);
SELECT lives_ok(
    $$SELECT monitoring._create_time_series('monitoring.ts_probe', 'at', interval '1 day', interval '3 days', 3, 'original_at')$$,
    '_create_time_series() makes a table pg_partman-managed');

SELECT is((SELECT count(*)::int FROM public.part_config WHERE parent_table = 'monitoring.ts_probe'), 1,
          'registered in pg_partman''s part_config');
SELECT is((SELECT retention FROM public.part_config WHERE parent_table = 'monitoring.ts_probe'), '3 days',
          'retention copied to pg_partman');
SELECT ok((SELECT NOT retention_keep_table AND infinite_time_partitions FROM public.part_config
           WHERE parent_table = 'monitoring.ts_probe'), 'expired partitions are dropped, premade from now()');
SELECT isnt(monitoring._default_partition('monitoring.ts_probe'), NULL, 'it has a default partition');
SELECT is((SELECT count(*)::int FROM pg_trigger
           WHERE tgrelid = monitoring._default_partition('monitoring.ts_probe')
             AND tgname = '_pg_observe_default_guard'), 1, 'the default partition carries the time guard');
SELECT ok(EXISTS (SELECT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                  WHERE i.inhparent = 'monitoring.ts_probe'::regclass
                    AND c.relname = 'ts_probe_p' || to_char(now() + interval '3 days', 'YYYY_MM_DD')),
          'partitions are premade three days ahead');

-- Wrong clocks: far future, far past, NULL. Each insert succeeds, lands in a real partition
-- at the time received, and keeps the original time.
INSERT INTO monitoring.ts_probe (at, payload) VALUES
    ('2099-01-01', 'future'), ('1970-01-01', 'past'), (NULL, 'null'),
    ('infinity', 'infinity'), ('-infinity', 'minus infinity');
SELECT is((SELECT count(*)::int FROM monitoring.ts_probe), 5, 'no row with a wrong clock is lost');
SELECT is((SELECT count(*)::int FROM ONLY monitoring.ts_probe_default), 0, 'none of them stays in the default partition');
SELECT ok((SELECT bool_and(at_day = (at AT TIME ZONE 'UTC')::date) FROM monitoring.ts_probe),
          'generated columns are computed from the repaired time');
SELECT ok((SELECT bool_and(at BETWEEN now() - interval '1 second' AND now() + interval '1 second') FROM monitoring.ts_probe),
          'their time became the time received');
SELECT results_eq(
    $$SELECT payload, original_at FROM monitoring.ts_probe ORDER BY id$$,
    $$VALUES ('future', '2099-01-01'::timestamptz), ('past', '1970-01-01'::timestamptz), ('null', NULL::timestamptz),
             ('infinity', 'infinity'::timestamptz), ('minus infinity', '-infinity'::timestamptz)$$,
    'the original time is kept');

-- Inserting straight into the default partition is repaired as well.
INSERT INTO monitoring.ts_probe_default (at, payload) VALUES ('2150-06-01', 'direct');
SELECT is((SELECT count(*)::int FROM ONLY monitoring.ts_probe_default), 0, 'a direct insert into the default is moved too');

-- gotcha 5: a plausible row whose partition is missing stays in the default, and must not
-- make maintenance fail when pg_partman creates that partition.
SELECT lives_ok(format('DROP TABLE monitoring.%I', 'ts_probe_p' || to_char(now() + interval '1 day', 'YYYY_MM_DD')),
                'drop tomorrow''s partition to simulate a gap');
INSERT INTO monitoring.ts_probe (at, payload) VALUES (now() + interval '1 day', 'tomorrow');
SELECT is((SELECT count(*)::int FROM ONLY monitoring.ts_probe_default), 1, 'a plausible time with a missing partition waits in the default');
SELECT is((SELECT original_at FROM monitoring.ts_probe WHERE payload = 'tomorrow'), NULL, 'and keeps its time');
SELECT lives_ok($$SELECT * FROM monitoring.run_maintenance()$$, 'run_maintenance() succeeds with data in the default');
SELECT is((SELECT count(*)::int FROM ONLY monitoring.ts_probe_default), 0, 'it moved the row out of the default');
SELECT is((SELECT tableoid::regclass::text FROM monitoring.ts_probe WHERE payload = 'tomorrow'),
          'monitoring.ts_probe_p' || to_char(now() + interval '1 day', 'YYYY_MM_DD'),
          'into the recreated partition');

-- Retention: partitions entirely older than 3 days are dropped by run_maintenance().
SELECT ok(NOT EXISTS (SELECT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                      WHERE i.inhparent = 'monitoring.ts_probe'::regclass
                        AND c.relname = 'ts_probe_p' || to_char(now() - interval '4 days', 'YYYY_MM_DD')),
          'a partition older than the retention is dropped');

-- set_retention(): one call changes it, and pg_partman follows.
SELECT lives_ok($$SELECT monitoring.set_retention('monitoring.ts_probe', interval '30 days')$$, 'set_retention()');
SELECT is((SELECT retention FROM public.part_config WHERE parent_table = 'monitoring.ts_probe'), '30 days',
          'pg_partman has the new retention');
SELECT throws_like($$SELECT monitoring.set_retention('pg_class', interval '1 day')$$,
                 '%pg_class is not a pg_observe time-series table',
                 'set_retention() on another table is a clear error');

SELECT * FROM finish();
ROLLBACK;
