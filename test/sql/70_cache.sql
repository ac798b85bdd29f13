-- The cache (issue 7): storage, every function, TTL (lazy expiry is tested with rows whose
-- expires_at lies in the past: now() does not move in a transaction), Redis glob patterns and
-- their escaping, bad input, statistics, maintenance and privileges. Concurrency, the client
-- and crash restarts are in test/python/test_cache.py.
BEGIN;
SELECT plan(232);

-- ---------------------------------------------------------------- storage
SELECT has_table('monitoring', 'cache_entries', 'the cache table exists');
SELECT is((SELECT relpersistence::text FROM pg_class WHERE oid = 'monitoring.cache_entries'::regclass), 'u',
          'cache_entries is UNLOGGED');
SELECT is((SELECT relpersistence::text FROM pg_class WHERE oid = 'monitoring.cache_counters'::regclass), 'u',
          'cache_counters is UNLOGGED');
SELECT is((SELECT reloptions FROM pg_class WHERE oid = 'monitoring.cache_entries'::regclass), '{fillfactor=50}'::text[],
          'cache_entries pages are filled to half, so that pruning after overwrites has half the entries to go through');
SELECT is((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
           WHERE a.attrelid = 'monitoring.cache_stats'::regclass AND a.attnum > 0),
          ARRAY['namespace', 'entries', 'expired_pending', 'hits', 'misses', 'sets', 'evictions', 'bytes'],
          'monitoring.cache_stats has the columns the exposition and the dashboard read');
SELECT col_is_pk('monitoring', 'cache_entries', ARRAY['key', 'namespace'],
                 'the primary key is (key, namespace): a lookup compares keys alone on its way down the index');
SELECT is((SELECT collname::text FROM pg_collation c JOIN pg_attribute a ON a.attcollation = c.oid
           WHERE a.attrelid = 'monitoring.cache_entries'::regclass AND a.attname = 'key'), 'C',
          'keys compare bytewise (collation C), as Redis keys do');
SELECT is((SELECT count(*)::int FROM monitoring.maintenance_task
           WHERE (task_name, function_name) IN (('expire_cache', 'monitoring.expire_cache'),
                                                ('fold_cache_counters', 'monitoring._fold_cache_counters'))),
          2, 'expire_cache and the counter fold are maintenance tasks of run_maintenance()');

-- ---------------------------------------------------------------- set, get, overwrite
SELECT lives_ok($$SELECT monitoring.cache_set('user:123', '{"name": "Ada", "roles": ["admin"]}', interval '1 hour')$$,
                'cache_set stores a JSON value with a TTL');
SELECT is(monitoring.cache_get('user:123'), '{"name": "Ada", "roles": ["admin"]}'::jsonb, 'cache_get returns it');
SELECT is(monitoring.cache_get('user:999'), NULL, 'an absent key is NULL');
SELECT lives_ok($$SELECT monitoring.cache_set('user:123', '"replaced"')$$, 'a set replaces');
SELECT is(monitoring.cache_get('user:123'), '"replaced"'::jsonb, 'with the new value');
SELECT is(monitoring.cache_ttl('user:123'), -1::double precision, 'and the new TTL (none: -1, as Redis)');
SELECT is(monitoring.cache_ttl('user:999'), -2::double precision, 'an absent key has TTL -2, as in Redis');
SELECT lives_ok($$SELECT monitoring.cache_set('json-null', 'null')$$, 'the JSON null can be stored');
SELECT is(monitoring.cache_get('json-null'), 'null'::jsonb, 'and comes back as the JSON null, not SQL NULL');
SELECT throws_ok($$SELECT monitoring.cache_set('k', NULL)$$, '22004', 'a cache value must not be NULL',
                 'an SQL NULL value is an error');
SELECT lives_ok($$SELECT monitoring.cache_set('k', '1', NULL, 'other-app')$$, 'namespaces: the same key elsewhere');
SELECT is(monitoring.cache_get('k'), NULL, 'is not seen in the default namespace');
SELECT is(monitoring.cache_get('k', 'other-app'), '1'::jsonb, 'but in its own');
SELECT lives_ok($$SELECT monitoring.cache_set_many('{"ns:a": 1, "ns:b": 2}', NULL, 'ns-one'),
                       monitoring.cache_set_many('{"ns:a": 10, "ns:b": 20}', NULL, 'ns-two')$$,
                'the same keys in two namespaces');
SELECT results_eq($$SELECT key, value FROM monitoring.cache_get_many('{ns:a,ns:b}', 'ns-two') ORDER BY key$$,
                  $$VALUES ('ns:a', '10'::jsonb), ('ns:b', '20'::jsonb)$$, 'cache_get_many reads its own namespace only');
SELECT is(monitoring.cache_delete_pattern('ns:*', 'ns-one'), 2::bigint, 'a pattern deletes in its own namespace');
SELECT is((SELECT count(*)::int FROM monitoring.cache_get_many('{ns:a,ns:b}', 'ns-two')), 2, 'and nothing of another');
SELECT is(monitoring.cache_delete_many('{ns:a,ns:b}', 'ns-one'), 0,
          'cache_delete_many finds nothing where the pattern deleted, though another namespace has the keys');

-- ---------------------------------------------------------------- bytes and text
SELECT lives_ok($$SELECT monitoring.cache_set_bytes('blob', '\x00ff00'::bytea)$$, 'cache_set_bytes stores bytes (NUL included)');
SELECT results_eq($$SELECT value, value_bytes, value_type FROM monitoring.cache_get_entry('blob')$$,
                  $$VALUES (NULL::jsonb, '\x00ff00'::bytea, 'bytes')$$, 'cache_get_entry returns them with their type');
SELECT lives_ok($$SELECT monitoring.cache_set_bytes('nul-text', convert_to('a', 'UTF8') || '\x00'::bytea, NULL, 'default', 'text')$$,
                'text that JSON cannot hold (a NUL) is stored as UTF-8 bytes of type text');
SELECT is((SELECT value_type FROM monitoring.cache_get_entry('nul-text')), 'text', 'typed text');
SELECT throws_ok($$SELECT monitoring.cache_get('blob')$$, '42809', NULL, 'cache_get on bytes is a clear error, not a silent NULL');
SELECT throws_ok($$SELECT monitoring.cache_set_bytes('b', '\x01', NULL, 'default', 'json')$$, '22023',
                 'p_value_type must be bytes or text, got json', 'cache_set_bytes checks its type');
SELECT is((SELECT count(*)::int FROM monitoring.cache_get_entry('user:999')), 0, 'cache_get_entry: no row for an absent key');
SELECT results_eq($$SELECT value, value_type FROM monitoring.cache_get_entry('user:123')$$,
                  $$VALUES ('"replaced"'::jsonb, 'json')$$, 'cache_get_entry returns JSON entries too');
SELECT lives_ok($$SELECT monitoring.cache_set('blob', '2')$$, 'a JSON set over bytes');
SELECT results_eq($$SELECT value, value_bytes, value_type FROM monitoring.cache_get_entry('blob')$$,
                  $$VALUES ('2'::jsonb, NULL::bytea, 'json')$$, 'leaves no bytes behind');
-- No CHECK constraint (PostgreSQL prepares it anew at every set): the functions keep the invariant.
SELECT is((SELECT count(*)::int FROM pg_catalog.pg_constraint
           WHERE conrelid = 'monitoring.cache_entries'::regclass AND contype = 'c'), 0,
          'cache_entries has no CHECK constraint to prepare at every set');
SELECT is((SELECT count(*)::int FROM monitoring.cache_entries
           WHERE NOT (value_type = 'json' AND value IS NOT NULL AND value_bytes IS NULL
                      OR value_type IN ('bytes', 'text') AND value IS NULL AND value_bytes IS NOT NULL)), 0,
          'every row the functions wrote (JSON over bytes, bytes over JSON, text) holds exactly its typed value');

-- ---------------------------------------------------------------- TTL
SELECT lives_ok($$SELECT monitoring.cache_set('session:abc', '{"u": 1}', interval '15 minutes')$$, 'a TTL of 15 minutes');
SELECT ok(monitoring.cache_ttl('session:abc') BETWEEN 899 AND 900, 'cache_ttl counts its seconds down from 900');
SELECT throws_ok($$SELECT monitoring.cache_set('t0', '1', interval '0')$$, '22023', 'a cache TTL must be positive, got 00:00:00',
                 'a TTL of zero is an error (Redis: SET ... EX 0 fails too)');
SELECT throws_ok($$SELECT monitoring.cache_set('t-', '1', interval '-5 seconds')$$, '22023', NULL, 'a negative TTL is an error');
SELECT throws_ok($$SELECT monitoring.cache_set('t-', '1', interval '1 day -25 hours')$$, '22023', NULL,
                 'a TTL that adds up to less than zero is an error');
SELECT is(monitoring.cache_get('t0'), NULL, 'and nothing was stored');
SELECT lives_ok($$SELECT monitoring.cache_set('t100y', '1', interval '100 years')$$, 'a TTL of a hundred years is fine');
SELECT ok((SELECT expires_at FROM monitoring.cache_get_entry('t100y')) > now() + interval '99 years',
          'and expires a hundred years from now');
SELECT throws_ok($$SELECT monitoring.cache_set('tmax', '1', interval '300000 years')$$, '22008', 'timestamp out of range',
                 'a TTL beyond the year 294276 is PostgreSQL''s timestamp error');
SELECT lives_ok($$SELECT monitoring.cache_set('tsub', '1', interval '1 microsecond' * 500000)$$, 'sub-second TTLs are fine');

-- Lazy expiry: expired rows are written directly (the functions refuse such TTLs).
INSERT INTO monitoring.cache_entries (namespace, key, value, expires_at) VALUES
    ('default', 'expired:1', '"stale"', clock_timestamp() - interval '1 second'),
    ('default', 'expired:2', '41', clock_timestamp() - interval '1 hour'),
    ('default', 'expired:3', '"stale"', clock_timestamp() - interval '1 hour'),
    ('default', 'expired:4', '"stale"', clock_timestamp() - interval '1 hour');
SELECT is(monitoring.cache_get('expired:1'), NULL, 'lazy expiry: cache_get never returns an expired entry');
SELECT is((SELECT count(*)::int FROM monitoring.cache_get_entry('expired:1')), 0, 'nor cache_get_entry');
SELECT is((SELECT count(*)::int FROM monitoring.cache_get_many('{expired:1,user:123}')), 1, 'nor cache_get_many');
SELECT is((SELECT count(*)::int FROM monitoring.cache_keys('expired:*')), 0, 'nor cache_keys');
SELECT is(monitoring.cache_ttl('expired:1'), -2::double precision, 'its TTL is that of an absent key');
SELECT is(monitoring.cache_expire('expired:1', interval '1 hour'), false, 'cache_expire cannot revive it');
SELECT is(monitoring.cache_incr('expired:2', 5), 5::bigint, 'cache_incr on an expired integer starts again from 0');
SELECT is(monitoring.cache_set_if_absent('expired:3', '"mine"'), true, 'cache_set_if_absent: an expired key is absent');
SELECT is(monitoring.cache_delete('expired:4'), false, 'cache_delete of an expired key: false (it was not there)');
SELECT is((SELECT count(*)::int FROM monitoring.cache_entries WHERE key = 'expired:4'), 0, 'but the row is gone');
SELECT lives_ok($$SELECT monitoring.cache_set('expired:1', '"fresh"')$$, 'a set over an expired row');
SELECT is(monitoring.cache_get('expired:1'), '"fresh"'::jsonb, 'makes it live again');

-- ---------------------------------------------------------------- keys: bad input
SELECT lives_ok($$SELECT monitoring.cache_set('', '"empty key"')$$, 'a key of 0 bytes is allowed (as in Redis)');
SELECT is(monitoring.cache_get(''), '"empty key"'::jsonb, 'and read back');
SELECT lives_ok($$SELECT monitoring.cache_set(repeat('k', 1024), '1')$$, 'a key of 1024 bytes is allowed');
SELECT throws_ok($$SELECT monitoring.cache_set(repeat('k', 1025), '1')$$, '54000',
                 'a cache key of 1025 bytes is longer than the limit of 1024 bytes', 'a longer key is a clear error');
SELECT throws_ok($$SELECT monitoring.cache_set(repeat('é', 513), '1')$$, '54000', NULL, 'the limit is in bytes, not characters');
SELECT throws_ok($$SELECT monitoring.cache_set(repeat('k', 1024 * 1024), '1')$$, '54000',
                 'a cache key of 1048576 bytes is longer than the limit of 1024 bytes', 'a key of 1 MB is the same clear error');
SELECT is(monitoring.cache_get(repeat('k', 1024 * 1024)), NULL, 'reading a 1 MB key is a miss (it cannot exist)');
SELECT is(monitoring.cache_delete(repeat('k', 1024 * 1024)), false, 'deleting it: nothing');
SELECT throws_ok($$SELECT monitoring.cache_set(NULL, '1')$$, '22004', 'a cache key must not be NULL', 'a NULL key is an error');
SELECT throws_ok($$SELECT monitoring.cache_get(NULL)$$, '22004', 'a cache key must not be NULL', 'also when reading');
SELECT throws_ok($$SELECT monitoring.cache_set('k' || chr(0), '1')$$, '54000', 'null character not permitted',
                 'a NUL byte cannot even be put in text: PostgreSQL''s own error');
SELECT throws_ok($$SELECT monitoring.cache_set('k', '1', NULL, '')$$, '22023', 'a cache namespace must be 1 to 64 bytes long, got 0 bytes',
                 'an empty namespace is an error');
SELECT throws_ok($$SELECT monitoring.cache_set('k', '1', NULL, repeat('n', 65))$$, '22023', NULL, 'so is one of 65 bytes');
SELECT is(monitoring.cache_get('k', repeat('n', 65)), NULL, 'reading one is a miss (it cannot exist)');
SELECT throws_ok($$SELECT monitoring.cache_get('k', NULL)$$, '22023', NULL, 'and a NULL namespace');
SELECT lives_ok($$SELECT monitoring.cache_set(E'key with spaces\nand a newline; DROP TABLE x; --', '"hostile"')$$,
                'hostile keys are just keys');
SELECT is(monitoring.cache_get(E'key with spaces\nand a newline; DROP TABLE x; --'), '"hostile"'::jsonb, 'and read back');
SELECT throws_ok($$SELECT monitoring.cache_set('k', '{not json')$$, '22P02', NULL, 'a value that is not JSON is refused');

-- ---------------------------------------------------------------- batches
SELECT is(monitoring.cache_set_many('{"product:1": {"p": 1}, "product:2": [2], "product:3": "three"}', interval '30 minutes'),
          3, 'cache_set_many(JSON object) stores every member');
SELECT results_eq($$SELECT key, value FROM monitoring.cache_get_many('{product:1,product:2,product:3,product:4}') ORDER BY key$$,
                  $$VALUES ('product:1', '{"p": 1}'::jsonb), ('product:2', '[2]'), ('product:3', '"three"')$$,
                  'cache_get_many returns the live ones, in one call');
SELECT ok((SELECT bool_and(expires_at BETWEEN clock_timestamp() + interval '29 minutes' AND clock_timestamp() + interval '30 minutes')
           FROM monitoring.cache_get_many('{product:1,product:2,product:3}')), 'with the batch''s TTL');
SELECT is(monitoring.cache_set_many('{}'::jsonb), 0, 'an empty object stores nothing');
SELECT throws_ok($$SELECT monitoring.cache_set_many('[1, 2]'::jsonb)$$, '22023',
                 'cache_set_many takes a JSON object of key: value, got array', 'an array instead of an object is an error');
SELECT is(monitoring.cache_set_many_arrays(ARRAY['dup', 'other', 'dup'], ARRAY['1', '2', '3']::jsonb[]), 2,
          'arrays: a key given twice is stored once');
SELECT is(monitoring.cache_get('dup'), '3'::jsonb, 'with its last value');
SELECT is(monitoring.cache_set_many_arrays(ARRAY['m:json', 'm:bytes', 'm:text'], ARRAY['{"a": 1}', NULL, NULL]::jsonb[], NULL, 'default',
                                    ARRAY[NULL, '\x0001', convert_to('tëxt', 'UTF8')]::bytea[], ARRAY['json', 'bytes', 'text']),
          3, 'arrays: JSON, bytes and text in one call');
SELECT results_eq($$SELECT key, value, value_bytes, value_type FROM monitoring.cache_get_many('{m:json,m:bytes,m:text}') ORDER BY key$$,
                  $$VALUES ('m:bytes', NULL::jsonb, '\x0001'::bytea, 'bytes'), ('m:json', '{"a": 1}', NULL, 'json'),
                           ('m:text', NULL, convert_to('tëxt', 'UTF8'), 'text')$$, 'each with its type');
SELECT throws_ok($$SELECT monitoring.cache_set_many_arrays(ARRAY['a'], ARRAY['1', '2']::jsonb[])$$, '22023', NULL,
                 'more values than keys is an error');
SELECT throws_ok($$SELECT monitoring.cache_set_many_arrays(ARRAY['a', 'b'], ARRAY['1']::jsonb[])$$, '22004',
                 'key 2 (''b'') has no value (NULL or missing)', 'fewer values than keys is an error');
SELECT throws_ok($$SELECT monitoring.cache_set_many_arrays(ARRAY['a', NULL], ARRAY['1', '2']::jsonb[])$$, '22004', NULL, 'a NULL key in a batch');
SELECT throws_ok($$SELECT monitoring.cache_set_many_arrays(ARRAY['a', repeat('k', 2000)], ARRAY['1', '2']::jsonb[])$$, '54000', NULL,
                 'an oversize key in a batch');
SELECT throws_ok($$SELECT monitoring.cache_set_many_arrays(ARRAY['a'], ARRAY[NULL]::jsonb[], NULL, 'default', ARRAY['\x01']::bytea[], ARRAY['pickle'])$$,
                 '22023', NULL, 'an unknown value type in a batch');
SELECT is(monitoring.cache_get('a'), NULL, 'a failed batch stores nothing');
SELECT is((SELECT count(*)::int FROM monitoring.cache_get_many('{}')), 0, 'cache_get_many of no keys: no rows');
SELECT is((SELECT count(*)::int FROM monitoring.cache_get_many('{product:1,product:1}')), 1, 'a key asked twice comes once');
SELECT throws_ok($$SELECT * FROM monitoring.cache_get_many(ARRAY['a', NULL])$$, '22004', 'cache keys must not be NULL',
                 'a NULL key in cache_get_many');
SELECT is(monitoring.cache_delete_many('{product:1,product:2,nope}'), 2, 'cache_delete_many returns how many were there');
SELECT is(monitoring.cache_get('product:1'), NULL, 'and they are gone');
SELECT throws_ok($$SELECT monitoring.cache_delete_many(NULL)$$, '22004', NULL, 'cache_delete_many(NULL) is an error');
SELECT monitoring.cache_set_many_arrays(ARRAY(SELECT 'many:' || g FROM generate_series(1, 1500) g),
                                        ARRAY(SELECT to_jsonb(g) FROM generate_series(1, 1500) g));
SELECT is(monitoring.cache_delete_many(ARRAY(SELECT 'many:' || g FROM generate_series(1, 1600) g)), 1500,
          'cache_delete_many of 1500 keys, 100 of them absent');
SELECT is((SELECT count(*)::int FROM monitoring.cache_entries WHERE key LIKE 'many:%'), 0, 'and they are gone');

-- get_many as the client reads it: one row, JSON entries as one object, the others as arrays
SELECT results_eq($$SELECT json_values::jsonb, other_keys, other_values, other_types
                    FROM monitoring.cache_get_many_packed('{m:text,m:json,nope,m:bytes,m:json}')$$,
                  $$VALUES ('{"m:json": {"a": 1}}'::jsonb, '{m:bytes,m:text}'::text[],
                            ARRAY['\x0001', convert_to('tëxt', 'UTF8')]::bytea[], '{bytes,text}'::text[])$$,
                  'cache_get_many_packed: JSON entries as one object, bytes and text as arrays, misses left out');
SELECT results_eq($$SELECT json_values::text, other_keys, other_values, other_types FROM monitoring.cache_get_many_packed('{nope}')$$,
                  $$VALUES ('{}', '{}'::text[], '{}'::bytea[], '{}'::text[])$$, 'no live key: an empty object and empty arrays');
SELECT monitoring.cache_set_many_arrays(ARRAY[E'q"uo\\te\n', 'ü:€'], ARRAY['"x"', 'null']::jsonb[]);
SELECT is((SELECT json_values::jsonb FROM monitoring.cache_get_many_packed(ARRAY[E'q"uo\\te\n', 'ü:€'])),
          jsonb_build_object(E'q"uo\\te\n', 'x', 'ü:€', NULL), 'keys with quotes, backslashes, newlines and non-ASCII are JSON-escaped');
SELECT throws_ok($$SELECT * FROM monitoring.cache_get_many_packed(ARRAY['a', NULL])$$, '22004', 'cache keys must not be NULL',
                 'a NULL key in cache_get_many_packed');
SELECT throws_ok($$SELECT * FROM monitoring.cache_get_many_packed('{a}', repeat('n', 65))$$, '22023', NULL,
                 'an oversize namespace in cache_get_many_packed');
SELECT throws_ok($$SELECT monitoring.cache_set_many(jsonb_build_object('a', 1, repeat('k', 1025), 2))$$, '54000',
                 'a cache key of 1025 bytes is longer than the limit of 1024 bytes',
                 'cache_set_many: an oversize key is an error');
SELECT is(monitoring.cache_get('a'), NULL, 'and the batch stores nothing');
SELECT is(monitoring.cache_set_many(jsonb_build_object('b', 1, repeat('k', 1024), 2)) + monitoring.cache_delete_many(ARRAY['b', repeat('k', 1024)]),
          4, 'cache_set_many: a key of 1024 bytes is stored');
SELECT throws_ok($$SELECT monitoring.cache_set_many('{"a": 1}', interval '-1 second')$$, '22023', NULL,
                 'cache_set_many: a negative TTL is an error');
SELECT is(monitoring.cache_set_many('{"jn": null}'), 1, 'cache_set_many: a JSON null is a value');
SELECT is(monitoring.cache_get('jn'), 'null'::jsonb, 'stored as the JSON null');

-- ---------------------------------------------------------------- incr, set_if_absent, expire, delete
SELECT is(monitoring.cache_incr('counter'), 1::bigint, 'cache_incr on a new key: 1');
SELECT is(monitoring.cache_incr('counter', 41), 42::bigint, 'cache_incr by 41: 42');
SELECT is(monitoring.cache_incr('counter', -50), -8::bigint, 'negative increments');
SELECT is(monitoring.cache_get('counter'), '-8'::jsonb, 'the value is a JSON number');
SELECT is(monitoring.cache_incr('rate:1.2.3.4', 1, interval '1 minute'), 1::bigint, 'a TTL applies when the counter is created');
SELECT ok(monitoring.cache_ttl('rate:1.2.3.4') BETWEEN 59 AND 60, 'it is set');
SELECT lives_ok($$SELECT monitoring.cache_incr('rate:1.2.3.4', 1, interval '1 hour')$$, 'a later increment');
SELECT ok(monitoring.cache_ttl('rate:1.2.3.4') <= 60, 'keeps the expiry (as Redis INCR does)');
SELECT throws_ok($$SELECT monitoring.cache_incr('user:123')$$, '42809', 'cache entry ''user:123'' does not hold an integer, but a JSON string',
                 'cache_incr of a string is a clear error');
SELECT lives_ok($$SELECT monitoring.cache_set('float', '1.5')$$, 'a float');
SELECT throws_ok($$SELECT monitoring.cache_incr('float')$$, '42809', NULL, 'is not an integer either');
SELECT throws_ok($$SELECT monitoring.cache_incr('m:bytes')$$, '42809', NULL, 'nor are bytes');
SELECT lives_ok($$SELECT monitoring.cache_set('big', '9223372036854775807')$$, 'the largest bigint');
SELECT throws_ok($$SELECT monitoring.cache_incr('big')$$, '22003', NULL, 'cannot be incremented: overflow is an error');
SELECT is(monitoring.cache_get('big'), '9223372036854775807'::jsonb, 'and leaves the value alone');
SELECT is(monitoring.cache_set_if_absent('lock:job', '"worker-1"', interval '30 seconds'), true, 'cache_set_if_absent takes a free lock');
SELECT is(monitoring.cache_set_if_absent('lock:job', '"worker-2"', interval '30 seconds'), false, 'and not a held one');
SELECT is(monitoring.cache_get('lock:job'), '"worker-1"'::jsonb, 'the holder stays');
SELECT is(monitoring.cache_expire('lock:job', interval '5 minutes'), true, 'cache_expire sets a new TTL');
SELECT ok(monitoring.cache_ttl('lock:job') > 250, 'it is in force');
SELECT is(monitoring.cache_expire('lock:job', NULL), true, 'cache_expire with NULL removes the TTL (PERSIST)');
SELECT is(monitoring.cache_ttl('lock:job'), -1::double precision, 'no expiry any more');
SELECT is(monitoring.cache_expire('nope', interval '1 minute'), false, 'cache_expire of an absent key: false');
SELECT is(monitoring.cache_delete('lock:job'), true, 'cache_delete: true when the key was there');
SELECT is(monitoring.cache_delete('lock:job'), false, 'false the second time');

-- ---------------------------------------------------------------- patterns
CREATE TEMP TABLE glob_keys (key text) ON COMMIT DROP;
INSERT INTO glob_keys VALUES ('a%b'), ('a_b'), ('axb'), ('a\b'), ('a*b'), ('a?b'), ('ab'), ('a[b'), ('x.y'), ('xzy'), ('x(y');
SELECT monitoring.cache_set_many_arrays(ARRAY(SELECT 'g:' || key FROM glob_keys), ARRAY(SELECT '1'::jsonb FROM glob_keys), NULL, 'globs');
SELECT monitoring.cache_set('g:a%b', '1', NULL, 'globs-other');
CREATE FUNCTION pg_temp.matching(p_pattern text) RETURNS text[] LANGUAGE sql AS $$
    SELECT COALESCE(array_agg(k ORDER BY k COLLATE "C"), '{}') FROM monitoring.cache_keys('g:' || p_pattern, 'globs') k
$$;
SELECT is(pg_temp.matching('a%b'), '{g:a%b}', 'a % in a pattern matches only a %: never more');
SELECT is(pg_temp.matching('a_b'), '{g:a_b}', 'an _ only an _');
SELECT is(pg_temp.matching('a?b'), '{g:a%b,g:a*b,g:a?b,g:a[b,g:a\\b,g:a_b,g:axb}', '? is any one character');
SELECT is(pg_temp.matching('a*'), '{g:a%b,g:a*b,g:a?b,g:a[b,g:a\\b,g:a_b,g:ab,g:axb}', '* any characters, none included');
SELECT is(pg_temp.matching('a\*b'), '{g:a*b}', '\* is a literal star');
SELECT is(pg_temp.matching('a\?b'), '{g:a?b}', '\? a literal question mark');
SELECT is(pg_temp.matching('a\\b'), '{g:a\\b}', '\\ a literal backslash');
SELECT is(pg_temp.matching('a\[b'), '{g:a[b}', '\[ a literal bracket');
SELECT is(pg_temp.matching('a[%_]b'), '{g:a%b,g:a_b}', '[%_] is a class of literal characters');
SELECT is(pg_temp.matching('a[^%_*?\\[]b'), '{g:axb}', '[^...] its complement (escaped members included)');
SELECT is(pg_temp.matching('[a-a][w-z]b'), '{g:axb}', 'ranges');
SELECT is(pg_temp.matching('[a-a][z-w]b'), '{g:axb}', 'reversed ranges are swapped, as in Redis');
SELECT is(pg_temp.matching('x.y'), '{g:x.y}', '. is a literal');
SELECT is(pg_temp.matching('[x].y'), '{g:x.y}', 'regex characters in a class pattern are literals (. is not any character)');
SELECT is(pg_temp.matching('[x](y'), '{g:x(y}', 'a ( too');
SELECT is(pg_temp.matching('a[]b'), '{}', 'an empty class matches nothing');
SELECT is(pg_temp.matching('a[b'), '{g:ab}', 'an unterminated class ends at the end of the pattern, as in Redis');
SELECT is((SELECT count(*)::int FROM monitoring.cache_keys('*', 'globs')), 11, 'a pattern of only * is every key of the namespace');
SELECT is((SELECT count(*)::int FROM monitoring.cache_keys('***', 'globs')), 11, 'as are several *');
SELECT is((SELECT count(*)::int FROM monitoring.cache_keys('?????', 'globs')), 10, '????? is every key of five characters');
SELECT is((SELECT count(*)::int FROM monitoring.cache_keys('', 'default')), 1, 'the empty pattern matches the empty key only');
SELECT is((SELECT count(*)::int FROM monitoring.cache_keys('g:*', 'globs', 3)), 3, 'cache_keys takes a limit');
SELECT is(monitoring.cache_delete_pattern('g:a_b', 'globs'), 1::bigint, 'cache_delete_pattern: a key with _ deletes only itself');
SELECT is(monitoring.cache_delete_pattern('g:a%b', 'globs'), 1::bigint, 'and with %');
SELECT is(monitoring.cache_delete_pattern('*', 'globs'), 9::bigint, '* deletes the rest of the namespace');
SELECT is(monitoring.cache_get('g:a%b', 'globs-other'), '1'::jsonb, 'and nothing of another namespace');
SELECT lives_ok($$SELECT monitoring.cache_set('k', '1', NULL, $n$'; DROP TABLE monitoring.cache_entries; --$n$)$$,
                'a hostile namespace is just a namespace');
SELECT is(monitoring.cache_delete_pattern('*', $n$'; DROP TABLE monitoring.cache_entries; --$n$), 1::bigint,
          'also for the pattern functions (their dynamic SQL takes values as parameters only)');
SELECT throws_ok($$SELECT monitoring.cache_delete_pattern(NULL)$$, '22004', 'a cache key pattern must not be NULL', 'a NULL pattern');
SELECT throws_ok($$SELECT monitoring.cache_delete_pattern(repeat('*', 5000))$$, '54000', NULL, 'a pattern over 4096 bytes');
SELECT is(monitoring.cache_delete_pattern('[]'), 0::bigint, 'a pattern that matches nothing deletes nothing');

-- ---------------------------------------------------------------- statistics
SELECT monitoring.cache_flush_stats();   -- what this session counted so far goes in
DELETE FROM monitoring.cache_counters;
SELECT monitoring.cache_set('s:1', '1', NULL, 'stats');
SELECT monitoring.cache_get('s:1', 'stats');
SELECT monitoring.cache_get('s:2', 'stats');
SELECT * FROM monitoring.cache_get_entry('s:1', 'stats');
SELECT * FROM monitoring.cache_get_many('{s:1,s:2,s:3}', 'stats');
SELECT monitoring.cache_set_many('{"s:4": 4, "s:5": 5}', NULL, 'stats');
SELECT is((SELECT count(*)::int FROM monitoring.cache_counters), 0, 'counts wait in the session: no write per call');
SELECT monitoring.cache_flush_stats();
SELECT results_eq($$SELECT hits, misses, sets FROM monitoring.cache_stats WHERE namespace = 'stats'$$,
                  $$VALUES (3::bigint, 3::bigint, 3::bigint)$$,
                  'cache_flush_stats() adds them: 3 hits, 3 misses, 3 sets');
SET LOCAL track_functions = 'all';   -- calls of _cache_note() show in pg_stat_xact_user_functions
CREATE TEMP TABLE note_calls AS
SELECT COALESCE((SELECT calls FROM pg_stat_xact_user_functions
                 WHERE schemaname = 'monitoring' AND funcname = '_cache_note'), 0) AS before;
SELECT monitoring.cache_set_bytes('w:b', '\x00ff', NULL, 'stats-writes');
SELECT monitoring.cache_incr('w:n', 1, NULL, 'stats-writes');
SELECT monitoring.cache_set_if_absent('w:l', '1', NULL, 'stats-writes');
SELECT monitoring.cache_set_if_absent('w:l', '2', NULL, 'stats-writes');   -- taken: writes nothing
SELECT * FROM monitoring.cache_get_many_packed('{w:b,w:n,w:b,w:x,w:x}', 'stats-writes');
SELECT is((SELECT calls FROM pg_stat_xact_user_functions WHERE schemaname = 'monitoring' AND funcname = '_cache_note')
          - (SELECT before FROM note_calls), 1::bigint,
          'only the first write of a new namespace calls _cache_note(); the other writes and the batch count inline');
SELECT monitoring.cache_flush_stats();
SELECT results_eq($$SELECT hits, misses, sets FROM monitoring.cache_stats WHERE namespace = 'stats-writes'$$,
                  $$VALUES (2::bigint, 1::bigint, 3::bigint)$$,
                  'bytes, an increment and a lock taken count a set each (a lock not taken none); a batch counts each key once');
-- cache_get_entry inlined (in FROM) and not (in the select list, a plain SQL function call)
SELECT monitoring.cache_set_many('{"i:1": 1, "i:2": 2, "i:3": 3}', NULL, 'stats-inline');
SELECT is((SELECT count(*)::int FROM generate_series(1, 7) g, monitoring.cache_get_entry('i:' || g, 'stats-inline')), 3,
          'cache_get_entry in FROM, once per key: 3 found of 7');
SELECT is((SELECT count(*)::int FROM (SELECT monitoring.cache_get_entry('i:' || g, 'stats-inline') FROM generate_series(1, 7) g) s), 3,
          'and in the select list');
SELECT monitoring.cache_flush_stats();
SELECT results_eq($$SELECT hits, misses FROM monitoring.cache_stats WHERE namespace = 'stats-inline'$$,
                  $$VALUES (6::bigint, 8::bigint)$$, 'both count every hit and every miss once');
CREATE TEMP TABLE repeated_keys AS SELECT 'i:' || (g % 3 + 1) AS k FROM generate_series(1, 3000) g;
ANALYZE repeated_keys;
SELECT is((SELECT count(*)::int FROM repeated_keys r, LATERAL monitoring.cache_get_entry(r.k, 'stats-inline')), 3000,
          'a lateral join over 3 keys repeated 3,000 times');
SELECT monitoring.cache_flush_stats();
SELECT is((SELECT hits FROM monitoring.cache_stats WHERE namespace = 'stats-inline'), 3006::bigint,
          'counts 3,000 hits: no result cached per key (Memoize)');
SELECT monitoring.cache_get_entry('i:1', 'stats-inline') FROM generate_series(1, 99);
SELECT is(length(current_setting('pg_observe.cache_pending')), 10 + 99, '99 events wait as letters');
SELECT * FROM monitoring.cache_get_entry('nope', 'stats-inline');
SELECT results_eq($$SELECT hits, misses FROM monitoring.cache_stats WHERE namespace = 'stats-inline'$$,
                  $$VALUES (3105::bigint, 9::bigint)$$, 'the 100th adds them, itself included');
SELECT is(length(current_setting('pg_observe.cache_pending')), 10, 'and empties the list');
SELECT set_config('pg_observe.cache_pending', left(current_setting('pg_observe.cache_pending'), 10) || repeat('h', 120), false);
SELECT * FROM monitoring.cache_get_entry('nope', 'stats-inline');
SELECT results_eq($$SELECT hits, misses FROM monitoring.cache_stats WHERE namespace = 'stats-inline'$$,
                  $$VALUES (3225::bigint, 10::bigint)$$, 'an over-long list (forged) is added with the event, not twice');
SELECT set_config('pg_observe.cache_pending', '1000000000', false);   -- 2001: older than 10 s
SELECT * FROM monitoring.cache_get_entry('i:1', 'stats-inline');
SELECT is((SELECT hits FROM monitoring.cache_stats WHERE namespace = 'stats-inline'), 3226::bigint,
          'an old list is added by the next event');
SELECT ok(left(current_setting('pg_observe.cache_pending'), 10)::bigint >= extract(epoch FROM now())::bigint - 1,
          'which starts a new one');
SELECT monitoring.cache_get('s:1', 'stats');
SELECT monitoring.cache_get('nope', 'stats-2');   -- another namespace: the pending hit is added
SELECT is((SELECT hits FROM monitoring.cache_stats WHERE namespace = 'stats'), 4::bigint,
          'counting for another namespace adds the pending counts');
SELECT monitoring.cache_get('s:1', 'stats-2') FROM generate_series(1, 120);
SELECT is((SELECT misses FROM monitoring.cache_stats WHERE namespace = 'stats-2'), 100::bigint,
          'at 100 events a session adds its counts by itself');
SELECT monitoring.cache_flush_stats();
SELECT is((SELECT misses FROM monitoring.cache_stats WHERE namespace = 'stats-2'), 121::bigint, 'cache_flush_stats() the rest');
SELECT set_config('pg_observe.cache_pending', '9999999999' || repeat('m', 50) || 'forged', false);
SELECT monitoring.cache_flush_stats();
SELECT is((SELECT misses FROM monitoring.cache_stats WHERE namespace = 'stats-2'), 121::bigint,
          'a malformed pending setting is dropped, not counted');
SELECT monitoring.cache_get_many(ARRAY(SELECT 'bk:' || g FROM generate_series(1, 300) g), 'stats-2');   -- starts the pending list
SELECT monitoring.cache_flush_stats();
SELECT * FROM monitoring.cache_get_many_packed(ARRAY(SELECT 'bk:' || g FROM generate_series(1, 300) g), 'stats-2');
SELECT monitoring.cache_set_many((SELECT jsonb_object_agg('bk:' || g, g) FROM generate_series(1, 200) g), NULL, 'stats-2');
SELECT * FROM monitoring.cache_get_many(ARRAY(SELECT 'bk:' || g FROM generate_series(1, 250) g), 'stats-2');
SELECT results_eq($$SELECT hits, misses, sets FROM monitoring.cache_stats WHERE namespace = 'stats-2'$$,
                  $$VALUES (0::bigint, 421::bigint, 0::bigint)$$, 'batches wait in the session too: no write per batch');
SELECT is(current_setting('pg_observe.cache_pending_batch'), '200,350,200', 'as hits, misses and sets of batches');
SELECT monitoring.cache_flush_stats();
SELECT results_eq($$SELECT hits, misses, sets FROM monitoring.cache_stats WHERE namespace = 'stats-2'$$,
                  $$VALUES (200::bigint, 771::bigint, 200::bigint)$$, 'cache_flush_stats() adds them');
SELECT monitoring.cache_get_many(ARRAY(SELECT 'bk:' || g FROM generate_series(1, 10000) g), 'stats-2');
SELECT results_eq($$SELECT hits, misses FROM monitoring.cache_stats WHERE namespace = 'stats-2'$$,
                  $$VALUES (400::bigint, 10571::bigint)$$, 'a batch of 10,000 events is added at once');
SELECT set_config('pg_observe.cache_pending_batch', '5,5,x', false);
SELECT monitoring.cache_get_many('{bk:1}', 'stats-2');
SELECT monitoring.cache_flush_stats();
SELECT is((SELECT hits FROM monitoring.cache_stats WHERE namespace = 'stats-2'), 401::bigint,
          'a malformed batch setting is dropped, not counted');
INSERT INTO monitoring.cache_entries (namespace, key, value, expires_at)
SELECT 'stats', 'old:' || g, '1', clock_timestamp() - interval '1 minute' FROM generate_series(1, 25) g;
SELECT results_eq($$SELECT entries, expired_pending FROM monitoring.cache_stats WHERE namespace = 'stats'$$,
                  $$VALUES (28::bigint, 25::bigint)$$, 'cache_stats: entries, and how many of them are expired');
SELECT ok((SELECT bytes FROM monitoring.cache_stats WHERE namespace = 'stats') > 28 * 4, 'and their bytes');
SELECT is(monitoring.expire_cache(10), '25 expired cache entries deleted', 'expire_cache deletes them in batches of p_batch');
SELECT results_eq($$SELECT entries, expired_pending, evictions FROM monitoring.cache_stats WHERE namespace = 'stats'$$,
                  $$VALUES (3::bigint, 0::bigint, 25::bigint)$$, 'and counts them as evictions');
INSERT INTO monitoring.cache_entries (namespace, key, value, expires_at)
SELECT 'stats', 'old:' || g, '1', clock_timestamp() - interval '1 minute' FROM generate_series(1, 25) g;
SELECT is(monitoring.expire_cache(10, 2), '20 expired cache entries deleted (more may remain: the next run goes on)',
          'p_max_batches bounds a run');
SELECT throws_ok($$SELECT monitoring.expire_cache(0)$$, '22023', NULL, 'p_batch must be positive');
SELECT ok((SELECT count(*) = 1 FROM monitoring.run_maintenance() WHERE task = 'expire_cache' AND result LIKE '5 expired%'),
          'run_maintenance() runs expire_cache');
INSERT INTO monitoring.cache_counters (namespace, backend_pid, hits) VALUES ('stats', 2147483646, 1000);
SELECT is(monitoring._fold_cache_counters(), '1 cache counter rows of ended backends folded',
          '_fold_cache_counters folds the rows of backends that ended');
SELECT results_eq($$SELECT backend_pid, hits FROM monitoring.cache_counters WHERE namespace = 'stats' AND backend_pid <> pg_backend_pid()$$,
                  $$VALUES (0, 1000::bigint)$$, 'into backend_pid 0');
SELECT is((SELECT hits FROM monitoring.cache_stats WHERE namespace = 'stats'), 1004::bigint, 'the view sums every row');

-- ---------------------------------------------------------------- history (the dashboard's time series)
SELECT ok((SELECT s.run_order > f.run_order FROM monitoring.maintenance_task s, monitoring.maintenance_task f
           WHERE s.task_name = 'sample_cache_stats' AND s.function_name = 'monitoring._sample_cache_stats'
             AND f.task_name = 'fold_cache_counters'),
          'sample_cache_stats is a maintenance task, run after the fold');
DELETE FROM monitoring.cache_stats_history;
INSERT INTO monitoring.cache_stats_history (sampled_at, namespace, entries, expired_pending, hits, misses, sets, evictions, bytes)
VALUES (now() - interval '8 days', 'stats', 1, 0, 1, 1, 1, 0, 10),
       (now() - interval '6 days', 'stats', 1, 0, 1, 1, 1, 0, 10);
SELECT is(monitoring._sample_cache_stats(),
          (SELECT count(*) FROM monitoring.cache_stats) || ' cache namespaces sampled, 1 samples older than 7 days removed',
          '_sample_cache_stats samples every namespace and removes samples older than 7 days');
SELECT set_eq($$SELECT namespace, entries, expired_pending, hits, misses, sets, evictions, bytes
                FROM monitoring.cache_stats_history WHERE sampled_at = now()$$,
              $$SELECT * FROM monitoring.cache_stats$$, 'a sample is cache_stats as it is');
SELECT is((SELECT array_agg(sampled_at - now() ORDER BY sampled_at) FROM monitoring.cache_stats_history
           WHERE namespace = 'stats' AND sampled_at < now()),
          ARRAY[interval '-6 days'], 'the 6-day-old sample is kept, the 8-day-old one gone');
SELECT monitoring.cache_get('s:1', 'stats');
SELECT monitoring.cache_flush_stats();
SELECT lives_ok($$SELECT monitoring._sample_cache_stats()$$, 'a second sample in one transaction replaces the first');
SELECT is((SELECT hits FROM monitoring.cache_stats_history WHERE sampled_at = now() AND namespace = 'stats'),
          (SELECT hits FROM monitoring.cache_stats WHERE namespace = 'stats'), 'with the newer counts');
SELECT is((SELECT array_agg(task ORDER BY n) FROM monitoring.run_maintenance() WITH ORDINALITY AS m(task, target, result, n)
           WHERE task IN ('expire_cache', 'fold_cache_counters', 'sample_cache_stats')),
          ARRAY['expire_cache', 'fold_cache_counters', 'sample_cache_stats'], 'run_maintenance() samples after expiring and folding');
SELECT is((SELECT relpersistence FROM pg_class WHERE oid = 'monitoring.cache_stats_history'::regclass), 'p'::"char",
          'the history is a logged table (a crash or a standby keeps it)');
SELECT ok(NOT EXISTS (SELECT FROM pg_extension e WHERE e.extname = 'pg_observe'
                      AND 'monitoring.cache_stats_history'::regclass = ANY (e.extconfig)),
          'and not dumped: derived from counters a dump does not keep');

-- ---------------------------------------------------------------- privileges, by acting as each role
CREATE FUNCTION pg_temp.plan_of(p_query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE 'EXPLAIN (COSTS OFF) ' || p_query;
END
$$;
-- a leaky function: it sees every row the planner hands it (and makes them all pass)
CREATE FUNCTION pg_temp.leak(p_key text) RETURNS boolean LANGUAGE plpgsql COST 0.0001 AS $$
BEGIN
    IF p_key = 'expired:live' THEN
        RAISE EXCEPTION 'leaked an expired row';
    END IF;
    RETURN p_key = 'w';
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.plan_of(text), pg_temp.leak(text) TO observe_writer;
SELECT monitoring.cache_set('expired:live', '"stale"', interval '1 microsecond');
SELECT pg_sleep(0.01);
SET LOCAL ROLE observe_writer;
SELECT lives_ok($$SELECT monitoring.cache_set('w', '"from the app"')$$, 'observe_writer uses the cache functions');
SELECT is(monitoring.cache_get('w'), '"from the app"'::jsonb, 'reads through them');
SELECT throws_ok($$SELECT * FROM monitoring.cache_entries$$, '42501', NULL, 'but cannot read the table directly');
SELECT is((SELECT value FROM monitoring.cache_get_entry('w')), '"from the app"'::jsonb, 'cache_get_entry runs as the writer');
SELECT ok(NOT EXISTS (SELECT FROM pg_temp.plan_of($$SELECT * FROM monitoring.cache_get_entry('w')$$) l
                      WHERE l LIKE '%Function Scan%'),
          'inlined into the query: no function scan, the SELECT runs as part of the caller''s plan');
SELECT ok(EXISTS (SELECT FROM pg_temp.plan_of($$SELECT * FROM monitoring.cache_get_entry('w')$$) l
                  WHERE l LIKE '%Index Cond: ((key = %AND (namespace = %'),
          'which finds the key by the primary key');
SELECT is((SELECT count(*)::int FROM monitoring.cache_live_entries WHERE key IN ('w', 'expired:live')), 1,
          'the writer reads cache_live_entries: live entries only');
SELECT is((SELECT count(*)::int FROM monitoring.cache_live_entries WHERE pg_temp.leak(key)), 1,
          'a function of its own in WHERE sees no expired row (security_barrier)');
SELECT throws_ok($$SELECT * FROM monitoring.cache_get_entry(NULL)$$, '22004', 'a cache key must not be NULL',
                 'a NULL key is still an error');
SELECT throws_ok($$SELECT monitoring._cache_note('default', 1000000, 0, 0)$$, '42501', NULL,
                 'the writer cannot add counts of its choosing');
SELECT throws_ok($$SELECT monitoring._cache_note_get('k', 'default', NULL)$$, '22004', NULL,
                 'nor a NULL event through _cache_note_get (one event per call)');
SELECT throws_ok($$INSERT INTO monitoring.cache_counters (namespace, backend_pid, hits) VALUES ('x', 1, 1)$$, '42501', NULL,
                 'nor write the counters');
SELECT throws_ok($$INSERT INTO monitoring.cache_entries (namespace, key, value) VALUES ('default', 'x', '1')$$, '42501', NULL,
                 'nor write it (every write passes the checks)');
SELECT throws_ok($$SELECT monitoring.expire_cache()$$, '42501', NULL, 'nor run the maintenance');
SELECT throws_ok($$SELECT * FROM monitoring.cache_stats_history$$, '42501', NULL, 'nor read the history (a reader''s)');
RESET ROLE;
SET LOCAL ROLE observe_reader;
SELECT lives_ok($$SELECT * FROM monitoring.cache_stats$$, 'observe_reader reads cache_stats');
SELECT lives_ok($$SELECT * FROM monitoring.cache_stats_history$$, 'and its history');
SELECT throws_ok($$SELECT monitoring._sample_cache_stats()$$, '42501', NULL, 'but does not sample it');
SELECT throws_ok($$SELECT monitoring.cache_get('w')$$, '42501', NULL, 'but no cached value');
SELECT throws_ok($$SELECT * FROM monitoring.cache_get_entry('w')$$, '42501', NULL, 'not through cache_get_entry');
SELECT throws_ok($$SELECT * FROM monitoring.cache_live_entries$$, '42501', NULL, 'nor cache_live_entries');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
