\echo Use "CREATE EXTENSION pg_observe" to load this file. \quit
-- Released upgrade script of pg_observe 0.14.0 -> 0.15.0, kept as it shipped: do not edit.

-- sql/updates/pg_observe--0.14.0--0.15.0.sql
-- 0.14.0 -> 0.15.0: cache_get_entry, the Python client's get, becomes a SQL function that
-- PostgreSQL inlines into the caller's query; it reads the new view cache_live_entries instead
-- of running as the owner, and counts through the new _cache_note_get(). _cache_note_one()
-- appends before it checks the length; _cache_note() keeps the counts of a read-only
-- transaction as batch counts. Changed functions come from the same files as a fresh
-- install; make test compares an upgraded database with a fresh one.
--
-- Every function that set search_path to '' sets it to pg_catalog, pg_temp: with pg_temp left
-- out of the path, PostgreSQL searches the session's temporary schema first for tables and
-- types, so a temporary domain named text could have run its CHECK, a function of the
-- caller's, as the owner inside a SECURITY DEFINER function. Named last, it comes after
-- pg_catalog (PostgreSQL's documentation on SECURITY DEFINER says the same).

-- sql/include/cache_live_entries.sql
-- The view cache_get_entry reads (included by sql/500_cache.sql and by the upgrade scripts,
-- hence CREATE OR REPLACE).

-- The live entries, for reading without a SECURITY DEFINER function (cache_get_entry, a SQL
-- function PostgreSQL inlines into the caller's query, reads here). A view reads with its
-- owner's privileges, so observe_writer may read it and still not the table; security_barrier
-- keeps a caller's own functions in a WHERE clause from seeing the expired rows it filters out
-- (the key and namespace conditions are leakproof, so they still reach the primary key).
CREATE OR REPLACE VIEW monitoring.cache_live_entries WITH (security_barrier) AS
SELECT e.namespace, e.key, e.value, e.value_bytes, e.value_type, e.expires_at
FROM monitoring.cache_entries e
WHERE e.expires_at IS NULL OR e.expires_at > pg_catalog.clock_timestamp();
COMMENT ON VIEW monitoring.cache_live_entries IS
    'The cache entries that have not expired, of every namespace (what cache_get_entry reads); observe_writer may read it, readers may not';

-- sql/include/cache_functions.sql
-- Functions of the cache (included by sql/500_cache.sql and by the upgrade scripts, hence
-- CREATE OR REPLACE). docs/cache.md is their reference.
--
-- Every function the applications call is SECURITY DEFINER but one: nobody but the owner (and
-- observe_admin) may touch the tables, so every write passes the key, TTL and value checks
-- and is counted. The hot writers are PL/pgSQL, whose plans a session keeps; a SQL function
-- that cannot be inlined (a SET clause) would be planned again at every call. The hot reader,
-- cache_get_entry, is a SQL function PostgreSQL inlines into the caller's query: it reads the
-- view cache_live_entries, which has the owner's privileges, so it needs neither SECURITY
-- DEFINER nor a SET search_path, either of which would keep it from being inlined.
--
-- Time: expiry is decided by clock_timestamp(), not by now(): an entry set with a TTL of one
-- second inside a transaction that lasts a minute is already gone when the transaction reads
-- it again, as in Redis.
--
-- Several rows are always locked in key order (sets, deletes, pattern deletes), so two
-- multi-key calls cannot deadlock each other.

-- ------------------------------------------------------------------------------------------
-- Checks and statistics

-- Raises the error of a bad key or namespace (NULL, too long); called where a check failed
-- or for the keys of a batch, so that the common path only compares lengths.
CREATE OR REPLACE FUNCTION monitoring._cache_check_key(p_key text, p_namespace text)
    RETURNS boolean
    LANGUAGE plpgsql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_namespace IS NULL OR pg_catalog.octet_length(p_namespace) NOT BETWEEN 1 AND 64 THEN
        RAISE EXCEPTION 'a cache namespace must be 1 to 64 bytes long, got %',
                        COALESCE(pg_catalog.octet_length(p_namespace) || ' bytes', 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_key IS NULL THEN
        RAISE EXCEPTION 'a cache key must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF pg_catalog.octet_length(p_key) > 1024 THEN
        RAISE EXCEPTION 'a cache key of % bytes is longer than the limit of 1024 bytes', pg_catalog.octet_length(p_key)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Hash long keys (sha256, say) and use the hash as the key.';
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION monitoring._cache_check_key(text, text) IS
    'Raises the error of a NULL or oversize cache key or namespace; true otherwise';

-- When an entry with this TTL expires; NULL (no TTL) never. Zero and negative TTLs are errors,
-- as in Redis (SET ... EX 0 fails): "expire now" is cache_delete().
CREATE OR REPLACE FUNCTION monitoring._cache_expires_at(p_ttl interval)
    RETURNS timestamptz
    LANGUAGE plpgsql
    VOLATILE   -- clock_timestamp()
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    at_now timestamptz := pg_catalog.clock_timestamp();
    expires timestamptz;
BEGIN
    IF p_ttl IS NULL THEN
        RETURN NULL;
    END IF;
    expires := at_now + p_ttl;   -- 'timestamp out of range' beyond the year 294276
    IF expires <= at_now THEN
        RAISE EXCEPTION 'a cache TTL must be positive, got %', p_ttl
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL for an entry that never expires; delete the key to drop it now.';
    END IF;
    RETURN expires;
END
$$;
COMMENT ON FUNCTION monitoring._cache_expires_at(interval) IS
    'Expiry time of a TTL from now; NULL for no TTL; an error for zero or negative';

-- Counting without a write per call. A backend keeps the events of one namespace in session
-- settings: pg_observe.cache_namespace; pg_observe.cache_pending, the Unix second of its first
-- event (10 digits) followed by one letter per single-key event (h hit, m miss, s set); and
-- pg_observe.cache_pending_batch, the hits, misses and sets of batches ("h,m,s"). cache_get,
-- cache_get_entry and cache_set append their letter inline (_cache_note_one, a few
-- microseconds); _cache_note() adds everything to the backend's own row of cache_counters once
-- 100 single events or 10,000 batch events are pending, once the first is 10 seconds old, or
-- when another namespace is counted. Settings follow the transaction: the events of a
-- rolled-back call are not counted. A session can forge counts through its own settings, into
-- its own backend's rows (a setting that is not well-formed is dropped): counts are statistics,
-- not a ledger.

CREATE OR REPLACE FUNCTION monitoring._cache_note(p_namespace text, p_hits bigint, p_misses bigint, p_sets bigint,
                                                  p_flush boolean DEFAULT false)
    RETURNS boolean
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pending_namespace text := pg_catalog.current_setting('pg_observe.cache_namespace', true);
    pending text := pg_catalog.current_setting('pg_observe.cache_pending', true);
    batch text := pg_catalog.current_setting('pg_observe.cache_pending_batch', true);
    batch_counts bigint[] := ARRAY[0, 0, 0]::bigint[];
    events bigint := p_hits + p_misses + p_sets;
    now_epoch bigint := pg_catalog.date_part('epoch', pg_catalog.now())::bigint;
BEGIN
    IF pg_catalog.octet_length(p_namespace) NOT BETWEEN 1 AND 64 THEN
        -- a namespace that cannot hold an entry is not counted, nor its (forged) pending list kept
        IF pending_namespace = p_namespace THEN
            pending := pg_catalog.set_config('pg_observe.cache_pending', '', false);
        END IF;
        RETURN true;
    END IF;
    IF pending !~ '^[0-9]{10}[hms]*$' OR pg_catalog.octet_length(pending_namespace) NOT BETWEEN 1 AND 64 THEN
        pending := NULL;   -- not ours, or forged: dropped
    ELSIF batch ~ '^[0-9]{1,15},[0-9]{1,15},[0-9]{1,15}$' THEN
        batch_counts := pg_catalog.string_to_array(batch, ',')::bigint[];
    END IF;
    -- _cache_note_one() appends before it looks at the length: a full list of this namespace
    -- holds this call's event already
    IF events = 1 AND pending_namespace = p_namespace AND pg_catalog.length(pending) >= 110 THEN
        p_hits := 0;
        p_misses := 0;
        p_sets := 0;
        events := 0;
        p_flush := true;
    END IF;
    -- (batches that fit are counted by _cache_note_batch() before they get here)
    IF NOT p_flush AND pending_namespace = p_namespace AND pg_catalog.length(pending) + events < 110
       AND pg_catalog.left(pending, 10)::bigint >= now_epoch - 10 THEN
        pending := pg_catalog.set_config('pg_observe.cache_pending',
                                         pending || pg_catalog.repeat('h', p_hits::integer)
                                         || pg_catalog.repeat('m', p_misses::integer) || pg_catalog.repeat('s', p_sets::integer),
                                         false);
        RETURN true;
    END IF;
    IF pending IS NOT NULL THEN   -- the letters as batch counts: what is added below, or kept
        batch_counts := ARRAY[batch_counts[1] + pg_catalog.length(pending) - pg_catalog.length(pg_catalog.replace(pending, 'h', '')),
                              batch_counts[2] + pg_catalog.length(pending) - pg_catalog.length(pg_catalog.replace(pending, 'm', '')),
                              batch_counts[3] + pg_catalog.length(pending) - pg_catalog.length(pg_catalog.replace(pending, 's', ''))];
    END IF;
    IF pg_catalog.current_setting('transaction_read_only') = 'on' THEN
        -- Read-only transactions (and standbys) cannot write: keep the counts in the session as
        -- batch counts, up to a bound, and start the letters anew (_cache_note_one() appends
        -- before it calls here). Events of another namespace than the pending one are dropped.
        IF pending IS NULL THEN
            batch_counts := ARRAY[p_hits, p_misses, p_sets];
            pending_namespace := pg_catalog.set_config('pg_observe.cache_namespace', p_namespace, false);
        ELSIF pending_namespace = p_namespace THEN
            batch_counts := ARRAY[batch_counts[1] + p_hits, batch_counts[2] + p_misses, batch_counts[3] + p_sets];
        END IF;
        IF batch_counts[1] + batch_counts[2] + batch_counts[3] < 1000000 THEN
            batch := pg_catalog.set_config('pg_observe.cache_pending_batch', pg_catalog.array_to_string(batch_counts, ','), false);
        END IF;
        pending := pg_catalog.set_config('pg_observe.cache_pending', pg_catalog.lpad(now_epoch::text, 10, '0'), false);
        RETURN false;
    END IF;
    -- Add what is pending with this call's events; a few events of another namespace start the
    -- next pending list instead.
    INSERT INTO monitoring.cache_counters AS c (namespace, backend_pid, hits, misses, sets)
    SELECT n.namespace, pg_catalog.pg_backend_pid(), pg_catalog.sum(n.hits), pg_catalog.sum(n.misses), pg_catalog.sum(n.sets)
    FROM (SELECT pending_namespace AS namespace, batch_counts[1] AS hits, batch_counts[2] AS misses, batch_counts[3] AS sets
          WHERE pending IS NOT NULL
          UNION ALL
          SELECT p_namespace, p_hits, p_misses, p_sets
          WHERE events >= 100 OR p_namespace = pending_namespace) n
    GROUP BY n.namespace
    HAVING pg_catalog.sum(n.hits) + pg_catalog.sum(n.misses) + pg_catalog.sum(n.sets) > 0
    ORDER BY n.namespace
    ON CONFLICT (namespace, backend_pid) DO UPDATE
        SET hits = c.hits + excluded.hits, misses = c.misses + excluded.misses, sets = c.sets + excluded.sets;
    pending := pg_catalog.set_config('pg_observe.cache_pending',
                                     pg_catalog.lpad(now_epoch::text, 10, '0')
                                     || CASE WHEN events < 100 AND p_namespace IS DISTINCT FROM pending_namespace
                                             THEN pg_catalog.repeat('h', p_hits::integer) || pg_catalog.repeat('m', p_misses::integer)
                                                  || pg_catalog.repeat('s', p_sets::integer)
                                             ELSE '' END,
                                     false);
    batch := pg_catalog.set_config('pg_observe.cache_pending_batch', '0,0,0', false);
    IF pending_namespace IS DISTINCT FROM p_namespace THEN
        pending_namespace := pg_catalog.set_config('pg_observe.cache_namespace', p_namespace, false);
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION monitoring._cache_note(text, bigint, bigint, bigint, boolean) IS
    'Counts cache hits, misses and sets in the session; adds them to cache_counters every 100 single events, 10,000 batch events or 10 seconds';

-- _cache_note() for a read of cache_get_entry, which runs as its caller: raises the error of a
-- NULL key or namespace, counts a hit or a miss. Always true: the event is dealt with.
CREATE OR REPLACE FUNCTION monitoring._cache_note_get(p_key text, p_namespace text, p_found boolean)
    RETURNS boolean
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_key IS NULL OR p_namespace IS NULL THEN
        PERFORM monitoring._cache_check_key(p_key, p_namespace);
    END IF;
    IF p_found IS NULL THEN
        RAISE EXCEPTION 'a read is found or not, got NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM monitoring._cache_note(p_namespace, p_found::integer, (NOT p_found)::integer, 0);
    RETURN true;
END
$$;
COMMENT ON FUNCTION monitoring._cache_note_get(text, text, boolean) IS
    'Checks a read''s key and namespace and counts its hit or miss through _cache_note(), for cache_get_entry''s callers';

-- The common case of _cache_note() for one event, as SQL the planner inlines into the read and
-- write functions (a plpgsql call would cost more than the count): one letter more in the
-- session's pending list while it is of this namespace and younger than 10 s. False when
-- _cache_note() must be called: after the 100th letter too, which is then in the list
-- already. Appending before looking at the length saves calls: each function of an
-- expression costs a privilege check at every execution (unless the user is a superuser).
-- No SET clause (it would prevent inlining): every name is schema-qualified.
CREATE OR REPLACE FUNCTION monitoring._cache_note_one(p_namespace text, p_event text)
    RETURNS boolean
    LANGUAGE sql
    VOLATILE
AS $$
    SELECT CASE
        WHEN pg_catalog.current_setting('pg_observe.cache_namespace', true) OPERATOR(pg_catalog.=) p_namespace
         AND pg_catalog.left(pg_catalog.current_setting('pg_observe.cache_pending', true), 10) COLLATE pg_catalog."C"
             OPERATOR(pg_catalog.>=) (pg_catalog.date_part('epoch', pg_catalog.now())::bigint OPERATOR(pg_catalog.-) 10)::pg_catalog.text
        THEN pg_catalog.length(pg_catalog.set_config('pg_observe.cache_pending',
                                                     pg_catalog.current_setting('pg_observe.cache_pending', true)
                                                     OPERATOR(pg_catalog.||) p_event,
                                                     false)) OPERATOR(pg_catalog.<) 110
        ELSE false
    END
$$;
COMMENT ON FUNCTION monitoring._cache_note_one(text, text) IS
    'Counts one cache event (h, m or s) in the session when _cache_note() has nothing else to do; false when it must be called';

-- The common case of _cache_note() for a batch, inlined likewise: the batch's counts added to
-- the session's pending batch counts while they are of this namespace, younger than 10 s and
-- under 10,000 events. False when _cache_note() must be called.
CREATE OR REPLACE FUNCTION monitoring._cache_note_batch(p_namespace text, p_hits bigint, p_misses bigint, p_sets bigint)
    RETURNS boolean
    LANGUAGE sql
    VOLATILE
AS $$
    SELECT CASE
        WHEN pg_catalog.current_setting('pg_observe.cache_namespace', true) OPERATOR(pg_catalog.=) p_namespace
         AND pg_catalog.current_setting('pg_observe.cache_pending', true) OPERATOR(pg_catalog.~) '^[0-9]{10}[hms]*$'
         AND pg_catalog.left(pg_catalog.current_setting('pg_observe.cache_pending', true), 10) COLLATE pg_catalog."C"
             OPERATOR(pg_catalog.>=) (pg_catalog.date_part('epoch', pg_catalog.now())::bigint OPERATOR(pg_catalog.-) 10)::pg_catalog.text
         AND pg_catalog.current_setting('pg_observe.cache_pending_batch', true) OPERATOR(pg_catalog.~) '^[0-9]{1,4},[0-9]{1,4},[0-9]{1,4}$'
         AND pg_catalog.split_part(pg_catalog.current_setting('pg_observe.cache_pending_batch', true), ',', 1)::bigint OPERATOR(pg_catalog.+) pg_catalog.split_part(pg_catalog.current_setting('pg_observe.cache_pending_batch', true), ',', 2)::bigint OPERATOR(pg_catalog.+) pg_catalog.split_part(pg_catalog.current_setting('pg_observe.cache_pending_batch', true), ',', 3)::bigint
             OPERATOR(pg_catalog.+) p_hits OPERATOR(pg_catalog.+) p_misses OPERATOR(pg_catalog.+) p_sets OPERATOR(pg_catalog.<) 10000
        THEN pg_catalog.set_config('pg_observe.cache_pending_batch',
                                   pg_catalog.concat_ws(',', pg_catalog.split_part(pg_catalog.current_setting('pg_observe.cache_pending_batch', true), ',', 1)::bigint OPERATOR(pg_catalog.+) p_hits,
                                                        pg_catalog.split_part(pg_catalog.current_setting('pg_observe.cache_pending_batch', true), ',', 2)::bigint OPERATOR(pg_catalog.+) p_misses,
                                                        pg_catalog.split_part(pg_catalog.current_setting('pg_observe.cache_pending_batch', true), ',', 3)::bigint OPERATOR(pg_catalog.+) p_sets),
                                   false) IS NOT NULL
        ELSE false
    END
$$;
COMMENT ON FUNCTION monitoring._cache_note_batch(text, bigint, bigint, bigint) IS
    'Counts a batch''s cache events in the session when _cache_note() has nothing else to do; false when it must be called';

CREATE OR REPLACE FUNCTION monitoring.cache_flush_stats()
    RETURNS void
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pending_namespace text := pg_catalog.current_setting('pg_observe.cache_namespace', true);
BEGIN
    IF pg_catalog.octet_length(pending_namespace) BETWEEN 1 AND 64 THEN
        PERFORM monitoring._cache_note(pending_namespace, 0, 0, 0, p_flush => true);
    END IF;
END
$$;
COMMENT ON FUNCTION monitoring.cache_flush_stats() IS
    'Adds the cache events this session has not added yet to cache_counters (otherwise done every 100 events or 10 s)';

-- ------------------------------------------------------------------------------------------
-- Reading

CREATE OR REPLACE FUNCTION monitoring.cache_get(p_key text, p_namespace text DEFAULT 'default')
    RETURNS jsonb
    LANGUAGE plpgsql
    VOLATILE   -- it counts
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_value jsonb;
    found_type text;
BEGIN
    IF p_key IS NULL OR p_namespace IS NULL THEN
        PERFORM monitoring._cache_check_key(p_key, p_namespace);
    END IF;
    SELECT e.value, e.value_type INTO found_value, found_type
    FROM monitoring.cache_entries e
    WHERE e.namespace = p_namespace AND e.key = p_key
      AND (e.expires_at IS NULL OR e.expires_at > pg_catalog.clock_timestamp());
    IF NOT monitoring._cache_note_one(p_namespace, CASE WHEN found_type IS NULL THEN 'm' ELSE 'h' END) THEN
        PERFORM monitoring._cache_note(p_namespace, (found_type IS NOT NULL)::integer, (found_type IS NULL)::integer, 0);
    END IF;
    IF found_type <> 'json' THEN
        RAISE EXCEPTION 'cache entry % holds %, not JSON', pg_catalog.quote_literal(p_key), found_type
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Read it with monitoring.cache_get_entry(), which returns bytes and text too.';
    END IF;
    RETURN found_value;
END
$$;
COMMENT ON FUNCTION monitoring.cache_get(text, text) IS
    'The JSON value of a live key, NULL when absent or expired (entries of bytes or text: use cache_get_entry)';

-- The Python client's get. A SQL function that PostgreSQL inlines into the caller's query: a
-- read costs the SELECT and the count, not a function call too (0.15.0: 13.1 to 14.2 µs of
-- backend CPU instead of 16.4 to 16.7, measured; docs/cache.md). Inlining wants a SQL
-- function that is neither SECURITY DEFINER, nor has a SET clause, nor is VOLATILE; hence the
-- view, and STABLE although it counts: its only writes are the session's counting settings
-- and, every 100 events, the session's row of cache_counters through _cache_note_get().
-- Every name is schema-qualified, as the caller's search_path is in force. The count is a
-- volatile condition on the fenced (OFFSET 0) lookup: it runs once, found or not, and keeps
-- PostgreSQL from caching the lookup's result per key in a lateral join (Memoize), which would
-- skip counts.
CREATE OR REPLACE FUNCTION monitoring.cache_get_entry(p_key text, p_namespace text DEFAULT 'default')
    RETURNS TABLE (value jsonb, value_bytes bytea, value_type text, expires_at timestamptz)
    LANGUAGE sql
    STABLE
AS $$
    SELECT f.value, f.value_bytes, f.value_type, f.expires_at
    FROM (SELECT e.value, e.value_bytes, e.value_type, e.expires_at
          FROM (VALUES (1)) AS one (x)
          LEFT JOIN monitoring.cache_live_entries e
                 ON e.namespace OPERATOR(pg_catalog.=) p_namespace AND e.key OPERATOR(pg_catalog.=) p_key
          OFFSET 0) f
    -- one condition, so that the count runs before the row is dropped; a NULL key or
    -- namespace goes to _cache_note_get, which raises its error
    WHERE CASE WHEN monitoring._cache_note_one(CASE WHEN p_key IS NOT NULL THEN p_namespace END,
                                               CASE WHEN f.value_type IS NULL THEN 'm' ELSE 'h' END)
                    OR monitoring._cache_note_get(p_key, p_namespace, f.value_type IS NOT NULL)
               THEN f.value_type IS NOT NULL
          END
$$;
COMMENT ON FUNCTION monitoring.cache_get_entry(text, text) IS
    'A live entry with its type (json, text or bytes) and expiry; no row when absent or expired';

CREATE OR REPLACE FUNCTION monitoring.cache_get_many(p_keys text[], p_namespace text DEFAULT 'default')
    RETURNS TABLE (key text, value jsonb, value_bytes bytea, value_type text, expires_at timestamptz)
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_count integer;
    wanted integer;
BEGIN
    PERFORM monitoring._cache_check_key('', p_namespace);
    IF p_keys IS NULL OR pg_catalog.array_position(p_keys, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'cache keys must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN QUERY
        SELECT e.key, e.value, e.value_bytes, e.value_type, e.expires_at
        FROM monitoring.cache_entries e
        WHERE e.namespace = p_namespace AND e.key = ANY (p_keys)
          AND (e.expires_at IS NULL OR e.expires_at > pg_catalog.clock_timestamp());
    GET DIAGNOSTICS found_count = ROW_COUNT;
    wanted := pg_catalog.cardinality(p_keys);
    IF found_count < wanted THEN   -- misses, or a key asked twice: count the keys once
        SELECT pg_catalog.count(DISTINCT k)::integer INTO wanted FROM pg_catalog.unnest(p_keys) k;
    END IF;
    IF NOT monitoring._cache_note_batch(p_namespace, found_count, wanted - found_count, 0) THEN
        PERFORM monitoring._cache_note(p_namespace, found_count, wanted - found_count, 0);
    END IF;
END
$$;
COMMENT ON FUNCTION monitoring.cache_get_many(text[], text) IS
    'The live entries among the keys, in one call (absent and expired keys have no row)';

-- get_many as the Python client reads it: one row, the JSON entries as one JSON object (one
-- parse on the client instead of one per row, the larger part of a batch read's cost), the
-- entries of bytes and text as three arrays.
CREATE OR REPLACE FUNCTION monitoring.cache_get_many_packed(p_keys text[], p_namespace text DEFAULT 'default')
    RETURNS TABLE (json_values json, other_keys text[], other_values bytea[], other_types text[])
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_count integer;
    wanted integer;
BEGIN
    IF p_namespace IS NULL OR pg_catalog.octet_length(p_namespace) NOT BETWEEN 1 AND 64 THEN
        PERFORM monitoring._cache_check_key('', p_namespace);   -- raises
    END IF;
    IF p_keys IS NULL OR pg_catalog.array_position(p_keys, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'cache keys must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT COALESCE(pg_catalog.json_object_agg(e.key, e.value) FILTER (WHERE e.value_type = 'json'), '{}'),
           COALESCE(pg_catalog.array_agg(e.key) FILTER (WHERE e.value_type <> 'json'), '{}'),
           COALESCE(pg_catalog.array_agg(e.value_bytes) FILTER (WHERE e.value_type <> 'json'), '{}'),
           COALESCE(pg_catalog.array_agg(e.value_type) FILTER (WHERE e.value_type <> 'json'), '{}'),
           pg_catalog.count(*)
    INTO json_values, other_keys, other_values, other_types, found_count
    FROM monitoring.cache_entries e
    WHERE e.namespace = p_namespace AND e.key = ANY (p_keys)
      AND (e.expires_at IS NULL OR e.expires_at > pg_catalog.clock_timestamp());
    wanted := pg_catalog.cardinality(p_keys);
    IF found_count < wanted THEN   -- misses, or a key asked twice: count the keys once
        SELECT pg_catalog.count(DISTINCT k)::integer INTO wanted FROM pg_catalog.unnest(p_keys) k;
    END IF;
    IF NOT monitoring._cache_note_batch(p_namespace, found_count, wanted - found_count, 0) THEN
        PERFORM monitoring._cache_note(p_namespace, found_count, wanted - found_count, 0);
    END IF;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION monitoring.cache_get_many_packed(text[], text) IS
    'cache_get_many in one row: JSON entries as one JSON object of key: value, bytes and text entries as arrays (what the Python client reads)';

-- Redis's TTL in seconds, with its conventions: -2 when absent or expired, -1 without expiry.
CREATE OR REPLACE FUNCTION monitoring.cache_ttl(p_key text, p_namespace text DEFAULT 'default')
    RETURNS double precision
    LANGUAGE plpgsql
    VOLATILE   -- clock_timestamp()
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    at_now timestamptz := pg_catalog.clock_timestamp();
    expires timestamptz;
BEGIN
    PERFORM monitoring._cache_check_key(p_key, p_namespace);
    SELECT e.expires_at INTO expires
    FROM monitoring.cache_entries e
    WHERE e.namespace = p_namespace AND e.key = p_key AND (e.expires_at IS NULL OR e.expires_at > at_now);
    IF NOT FOUND THEN
        RETURN -2;
    END IF;
    RETURN COALESCE(pg_catalog.date_part('epoch', expires - at_now), -1);
END
$$;
COMMENT ON FUNCTION monitoring.cache_ttl(text, text) IS
    'Seconds the key still lives; -1 when it never expires, -2 when it is absent (as Redis''s TTL)';

-- Glob patterns as Redis's KEYS and SCAN take them: * any characters, ? one character,
-- [abc] [^abc] [a-z] one of (or none of) a set, \x the character x. A pattern without [ ]
-- becomes a LIKE pattern (its literal prefix is then a range of the primary key), else an
-- anchored regular expression. Every other character stands for itself: % and _ of a key are
-- escaped, so they never match more than themselves. Unterminated [ closes at the end, as in
-- Redis; an empty class [] matches nothing (regex NULL and like NULL).
CREATE OR REPLACE FUNCTION monitoring._cache_glob(p_pattern text, OUT like_pattern text, OUT regex text,
                                                  OUT matches_nothing boolean)
    LANGUAGE plpgsql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    chars text[];
    n integer;
    i integer := 1;
    c text;
    negate boolean;
    members text;
    first_char text;
    last_char text;
    has_class boolean;
BEGIN
    IF p_pattern IS NULL THEN
        RAISE EXCEPTION 'a cache key pattern must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF pg_catalog.octet_length(p_pattern) > 4096 THEN
        RAISE EXCEPTION 'a cache key pattern of % bytes is longer than the limit of 4096 bytes', pg_catalog.octet_length(p_pattern)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    chars := pg_catalog.regexp_split_to_array(p_pattern, '');
    n := COALESCE(pg_catalog.array_length(chars, 1), 0);
    -- a [ after an escaping backslash is a literal: look for an unescaped one
    has_class := pg_catalog.strpos(pg_catalog.regexp_replace(p_pattern, '\\.', '', 'g'), '[') > 0;
    matches_nothing := false;
    IF NOT has_class THEN
        like_pattern := '';
        WHILE i <= n LOOP
            c := chars[i];
            IF c = '*' THEN
                like_pattern := like_pattern || '%';
            ELSIF c = '?' THEN
                like_pattern := like_pattern || '_';
            ELSE
                IF c = '\' AND i < n THEN   -- a trailing backslash is a literal backslash
                    i := i + 1;
                    c := chars[i];
                END IF;
                IF c IN ('%', '_', '\') THEN
                    like_pattern := like_pattern || '\';
                END IF;
                like_pattern := like_pattern || c;
            END IF;
            i := i + 1;
        END LOOP;
        RETURN;
    END IF;

    regex := '^';
    WHILE i <= n LOOP
        c := chars[i];
        IF c = '*' THEN
            regex := regex || '.*';
        ELSIF c = '?' THEN
            regex := regex || '.';
        ELSIF c = '[' THEN
            i := i + 1;
            negate := chars[i] IS NOT DISTINCT FROM '^';
            IF negate THEN
                i := i + 1;
            END IF;
            members := '';
            WHILE i <= n AND chars[i] <> ']' LOOP
                IF chars[i] = '\' AND i < n THEN
                    i := i + 1;
                    members := members || monitoring._cache_regex_member(chars[i]);
                ELSIF i + 2 <= n AND chars[i + 1] = '-' THEN
                    -- a range; reversed ends are swapped, as Redis does
                    first_char := LEAST(chars[i], chars[i + 2] COLLATE "C");
                    last_char := GREATEST(chars[i], chars[i + 2] COLLATE "C");
                    members := members || monitoring._cache_regex_member(first_char) || '-'
                               || monitoring._cache_regex_member(last_char);
                    i := i + 2;
                ELSE
                    members := members || monitoring._cache_regex_member(chars[i]);
                END IF;
                i := i + 1;
            END LOOP;
            IF members = '' AND NOT negate THEN
                matches_nothing := true;   -- [] or an unterminated [ with nothing in it
                regex := NULL;
                RETURN;
            END IF;
            regex := regex || CASE WHEN members = '' THEN '.'   -- [^] : any one character
                                   WHEN negate THEN '[^' || members || ']'
                                   ELSE '[' || members || ']' END;
        ELSE
            IF c = '\' AND i < n THEN
                i := i + 1;
                c := chars[i];
            END IF;
            -- an ASCII punctuation character is escaped; anything else stands for itself
            regex := regex || CASE WHEN c ~ '^[!-/:-@\[-`{-~]$' THEN '\' || c ELSE c END;
        END IF;
        i := i + 1;
    END LOOP;
    regex := regex || '$';
END
$$;
COMMENT ON FUNCTION monitoring._cache_glob(text) IS
    'Translates a Redis glob pattern into a LIKE pattern (% and _ escaped) or, with [classes], an anchored regex';

-- One character inside a regex bracket expression, escaped when it would mean something there.
CREATE OR REPLACE FUNCTION monitoring._cache_regex_member(p_char text)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_char IN ('\', ']', '[', '^', '-') THEN '\' || p_char ELSE p_char END
$$;
COMMENT ON FUNCTION monitoring._cache_regex_member(text) IS 'A character escaped for a regex bracket expression';

CREATE OR REPLACE FUNCTION monitoring.cache_keys(p_pattern text DEFAULT '*', p_namespace text DEFAULT 'default',
                                                 p_limit integer DEFAULT NULL)
    RETURNS SETOF text
    LANGUAGE plpgsql
    VOLATILE   -- clock_timestamp()
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    glob record := monitoring._cache_glob(p_pattern);
BEGIN
    PERFORM monitoring._cache_check_key('', p_namespace);
    IF p_limit < 0 THEN
        RAISE EXCEPTION 'p_limit must not be negative, got %', p_limit USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF glob.matches_nothing THEN
        RETURN;
    END IF;
    -- EXECUTE: the pattern is then a constant to the planner, which turns its literal prefix
    -- into a range of the primary key.
    RETURN QUERY EXECUTE
        'SELECT e.key FROM monitoring.cache_entries e'
        ' WHERE e.namespace = $1'
        || CASE WHEN glob.like_pattern IS NOT NULL THEN ' AND e.key LIKE $2' ELSE ' AND e.key ~ $2' END
        || ' AND (e.expires_at IS NULL OR e.expires_at > $3) ORDER BY e.key LIMIT $4'
        USING p_namespace, COALESCE(glob.like_pattern, glob.regex), pg_catalog.clock_timestamp(), p_limit;
END
$$;
COMMENT ON FUNCTION monitoring.cache_keys(text, text, integer) IS
    'Live keys matching a Redis glob pattern (* ? [abc] \x), in byte order, at most p_limit (NULL: all)';

-- ------------------------------------------------------------------------------------------
-- Writing

CREATE OR REPLACE FUNCTION monitoring.cache_set(p_key text, p_value jsonb, p_ttl interval DEFAULT NULL,
                                                p_namespace text DEFAULT 'default')
    RETURNS void
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    at_now timestamptz := pg_catalog.clock_timestamp();
    expires timestamptz := at_now + p_ttl;
BEGIN
    IF p_key IS NULL OR pg_catalog.octet_length(p_key) > 1024
       OR p_namespace IS NULL OR pg_catalog.octet_length(p_namespace) NOT BETWEEN 1 AND 64 THEN
        PERFORM monitoring._cache_check_key(p_key, p_namespace);
    END IF;
    IF p_value IS NULL THEN
        RAISE EXCEPTION 'a cache value must not be NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Store the JSON null (''null''::jsonb), or delete the key.';
    END IF;
    IF expires <= at_now THEN   -- _cache_expires_at() inline
        expires := monitoring._cache_expires_at(p_ttl);   -- raises its error
    END IF;
    INSERT INTO monitoring.cache_entries AS e (namespace, key, value, value_bytes, value_type, expires_at, updated_at)
    VALUES (p_namespace, p_key, p_value, NULL, 'json', expires, at_now)
    ON CONFLICT (namespace, key) DO UPDATE
        SET value = excluded.value, value_bytes = NULL, value_type = 'json',
            expires_at = excluded.expires_at, updated_at = excluded.updated_at;
    IF NOT monitoring._cache_note_one(p_namespace, 's') THEN
        PERFORM monitoring._cache_note(p_namespace, 0, 0, 1);
    END IF;
END
$$;
COMMENT ON FUNCTION monitoring.cache_set(text, jsonb, interval, text) IS
    'Stores a JSON value under a key, replacing any; p_ttl NULL: never expires (zero or negative: an error)';

CREATE OR REPLACE FUNCTION monitoring.cache_set_bytes(p_key text, p_value bytea, p_ttl interval DEFAULT NULL,
                                                      p_namespace text DEFAULT 'default', p_value_type text DEFAULT 'bytes')
    RETURNS void
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
BEGIN
    IF p_key IS NULL OR pg_catalog.octet_length(p_key) > 1024
       OR p_namespace IS NULL OR pg_catalog.octet_length(p_namespace) NOT BETWEEN 1 AND 64 THEN
        PERFORM monitoring._cache_check_key(p_key, p_namespace);
    END IF;
    IF p_value IS NULL THEN
        RAISE EXCEPTION 'a cache value must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF p_value_type IS NULL OR p_value_type NOT IN ('bytes', 'text') THEN
        RAISE EXCEPTION 'p_value_type must be bytes or text, got %', COALESCE(p_value_type, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO monitoring.cache_entries AS e (namespace, key, value, value_bytes, value_type, expires_at, updated_at)
    VALUES (p_namespace, p_key, NULL, p_value, p_value_type, monitoring._cache_expires_at(p_ttl), pg_catalog.clock_timestamp())
    ON CONFLICT (namespace, key) DO UPDATE
        SET value = NULL, value_bytes = excluded.value_bytes, value_type = excluded.value_type,
            expires_at = excluded.expires_at, updated_at = excluded.updated_at;
    PERFORM monitoring._cache_note(p_namespace, 0, 0, 1);
END
$$;
COMMENT ON FUNCTION monitoring.cache_set_bytes(text, bytea, interval, text, text) IS
    'Stores bytes under a key (p_value_type text: UTF-8 the client returns as a string); replaces any value';

-- The batch write: keys and values as arrays, value i being p_values[i] (JSON) or, where
-- p_value_types[i] is bytes or text, p_values_bytes[i]. A key given twice keeps its last value.
CREATE OR REPLACE FUNCTION monitoring.cache_set_many_arrays(p_keys text[], p_values jsonb[], p_ttl interval DEFAULT NULL,
                                                            p_namespace text DEFAULT 'default',
                                                            p_values_bytes bytea[] DEFAULT NULL,
                                                            p_value_types text[] DEFAULT NULL)
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    expires timestamptz := monitoring._cache_expires_at(p_ttl);
    stored integer;
    bad record;
BEGIN
    PERFORM monitoring._cache_check_key('', p_namespace);
    IF p_keys IS NULL THEN
        RAISE EXCEPTION 'p_keys must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF GREATEST(pg_catalog.cardinality(p_values), pg_catalog.cardinality(p_values_bytes),
                pg_catalog.cardinality(p_value_types)) > pg_catalog.cardinality(p_keys) THEN
        RAISE EXCEPTION 'cache_set_many_arrays: more values or types than the % keys', pg_catalog.cardinality(p_keys)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- ROWS FROM zips the arrays (the shorter padded with NULLs): one pass each
    SELECT u.i, u.key, u.value_type INTO bad
    FROM ROWS FROM (pg_catalog.unnest(p_keys), pg_catalog.unnest(p_values), pg_catalog.unnest(p_values_bytes),
                    pg_catalog.unnest(p_value_types)) WITH ORDINALITY AS u(key, value, value_bytes, value_type, i)
    WHERE u.key IS NULL OR pg_catalog.octet_length(u.key) > 1024
       OR CASE COALESCE(u.value_type, 'json') WHEN 'json' THEN u.value IS NULL
                                              WHEN 'bytes' THEN u.value_bytes IS NULL
                                              WHEN 'text' THEN u.value_bytes IS NULL
                                              ELSE true END
    LIMIT 1;
    IF FOUND THEN
        PERFORM monitoring._cache_check_key(bad.key, p_namespace);
        IF COALESCE(bad.value_type, 'json') NOT IN ('json', 'bytes', 'text') THEN
            RAISE EXCEPTION 'value type % of key % is not json, bytes or text', bad.value_type, bad.i
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RAISE EXCEPTION 'key % (%) has no value (NULL or missing)', bad.i, pg_catalog.quote_literal(bad.key)
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    INSERT INTO monitoring.cache_entries AS e (namespace, key, value, value_bytes, value_type, expires_at, updated_at)
    SELECT p_namespace, d.key, d.value, d.value_bytes, d.value_type, expires, pg_catalog.clock_timestamp()
    FROM (SELECT DISTINCT ON (u.key COLLATE "C") u.key,
                 CASE WHEN COALESCE(u.value_type, 'json') = 'json' THEN u.value END AS value,
                 CASE WHEN COALESCE(u.value_type, 'json') <> 'json' THEN u.value_bytes END AS value_bytes,
                 COALESCE(u.value_type, 'json') AS value_type
          FROM ROWS FROM (pg_catalog.unnest(p_keys), pg_catalog.unnest(p_values), pg_catalog.unnest(p_values_bytes),
                          pg_catalog.unnest(p_value_types)) WITH ORDINALITY AS u(key, value, value_bytes, value_type, i)
          ORDER BY u.key COLLATE "C", u.i DESC) d
    ORDER BY d.key COLLATE "C"   -- lock order: see the top of this file
    ON CONFLICT (namespace, key) DO UPDATE
        SET value = excluded.value, value_bytes = excluded.value_bytes, value_type = excluded.value_type,
            expires_at = excluded.expires_at, updated_at = excluded.updated_at;
    GET DIAGNOSTICS stored = ROW_COUNT;
    IF NOT monitoring._cache_note_batch(p_namespace, 0, 0, stored) THEN
        PERFORM monitoring._cache_note(p_namespace, 0, 0, stored);
    END IF;
    RETURN stored;
END
$$;
COMMENT ON FUNCTION monitoring.cache_set_many_arrays(text[], jsonb[], interval, text, bytea[], text[]) IS
    'Stores many entries in one call (value i: p_values[i], or p_values_bytes[i] where p_value_types[i] is bytes or text); returns how many keys';

-- The batch write of JSON values, as the Python client sends them: one JSON object of
-- key: value (one encoding and one parse for the batch, not one per value).
CREATE OR REPLACE FUNCTION monitoring.cache_set_many(p_entries jsonb, p_ttl interval DEFAULT NULL,
                                                     p_namespace text DEFAULT 'default')
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    expires timestamptz := monitoring._cache_expires_at(p_ttl);
    long_key text;
    stored integer;
BEGIN
    IF p_namespace IS NULL OR pg_catalog.octet_length(p_namespace) NOT BETWEEN 1 AND 64 THEN
        PERFORM monitoring._cache_check_key('', p_namespace);   -- raises
    END IF;
    IF pg_catalog.jsonb_typeof(p_entries) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'cache_set_many takes a JSON object of key: value, got %', COALESCE(pg_catalog.jsonb_typeof(p_entries), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT k INTO long_key FROM pg_catalog.jsonb_object_keys(p_entries) k WHERE pg_catalog.octet_length(k) > 1024 LIMIT 1;
    IF FOUND THEN
        PERFORM monitoring._cache_check_key(long_key, p_namespace);   -- raises
    END IF;
    -- The members of a JSON object are unique; their values are never SQL NULL (a JSON null
    -- is stored as the JSON null, as cache_set('k', 'null') does).
    INSERT INTO monitoring.cache_entries AS e (namespace, key, value, value_bytes, value_type, expires_at, updated_at)
    SELECT p_namespace, m.key, m.value, NULL, 'json', expires, pg_catalog.clock_timestamp()
    FROM pg_catalog.jsonb_each(p_entries) m
    ORDER BY m.key COLLATE "C"   -- lock order: see the top of this file
    ON CONFLICT (namespace, key) DO UPDATE
        SET value = excluded.value, value_bytes = NULL, value_type = 'json',
            expires_at = excluded.expires_at, updated_at = excluded.updated_at;
    GET DIAGNOSTICS stored = ROW_COUNT;
    IF NOT monitoring._cache_note_batch(p_namespace, 0, 0, stored) THEN
        PERFORM monitoring._cache_note(p_namespace, 0, 0, stored);
    END IF;
    RETURN stored;
END
$$;
COMMENT ON FUNCTION monitoring.cache_set_many(jsonb, interval, text) IS
    'Stores every member of a JSON object as an entry (key: value) in one call; returns how many';

-- Redis's INCRBY: a missing or expired key starts from 0 (and takes p_ttl); a live one keeps
-- its expiry. The value must be a JSON integer; the result must fit a bigint.
CREATE OR REPLACE FUNCTION monitoring.cache_incr(p_key text, p_by bigint DEFAULT 1, p_ttl interval DEFAULT NULL,
                                                 p_namespace text DEFAULT 'default')
    RETURNS bigint
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    at_now timestamptz := pg_catalog.clock_timestamp();
    expires timestamptz := monitoring._cache_expires_at(p_ttl);
    result bigint;
    current_entry record;
BEGIN
    PERFORM monitoring._cache_check_key(p_key, p_namespace);
    IF p_by IS NULL THEN
        RAISE EXCEPTION 'p_by must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    INSERT INTO monitoring.cache_entries AS e (namespace, key, value, value_type, expires_at, updated_at)
    VALUES (p_namespace, p_key, pg_catalog.to_jsonb(p_by), 'json', expires, at_now)
    ON CONFLICT (namespace, key) DO UPDATE
        SET value = CASE WHEN e.expires_at <= at_now THEN excluded.value
                         ELSE pg_catalog.to_jsonb(e.value::numeric + p_by) END,
            value_bytes = NULL, value_type = 'json',
            expires_at = CASE WHEN e.expires_at <= at_now THEN excluded.expires_at ELSE e.expires_at END,
            updated_at = at_now
        WHERE CASE WHEN e.expires_at <= at_now THEN true
                   -- CASE: the casts run only on JSON numbers
                   WHEN pg_catalog.jsonb_typeof(e.value) = 'number'
                   THEN e.value::numeric = pg_catalog.trunc(e.value::numeric)
                        AND e.value::numeric + p_by BETWEEN -9223372036854775808 AND 9223372036854775807
                   ELSE false END
    RETURNING e.value::bigint INTO result;
    IF result IS NULL THEN
        SELECT e.value_type, e.value INTO current_entry
        FROM monitoring.cache_entries e WHERE e.namespace = p_namespace AND e.key = p_key;
        IF current_entry.value_type = 'json' AND pg_catalog.jsonb_typeof(current_entry.value) = 'number'
           AND current_entry.value::numeric = pg_catalog.trunc(current_entry.value::numeric) THEN
            RAISE EXCEPTION 'incrementing cache entry % (%) by % would overflow a bigint',
                            pg_catalog.quote_literal(p_key), current_entry.value, p_by
                USING ERRCODE = 'numeric_value_out_of_range';
        END IF;
        RAISE EXCEPTION 'cache entry % does not hold an integer, but %', pg_catalog.quote_literal(p_key),
                        CASE WHEN current_entry.value_type = 'json'
                             THEN 'a JSON ' || pg_catalog.jsonb_typeof(current_entry.value)
                             ELSE current_entry.value_type END
            USING ERRCODE = 'wrong_object_type';
    END IF;
    PERFORM monitoring._cache_note(p_namespace, 0, 0, 1);
    RETURN result;
END
$$;
COMMENT ON FUNCTION monitoring.cache_incr(text, bigint, interval, text) IS
    'Adds p_by to an integer entry atomically and returns the result; a missing or expired key starts at 0 with p_ttl';

-- For locks: writes only when the key is absent or expired; true when it wrote.
CREATE OR REPLACE FUNCTION monitoring.cache_set_if_absent(p_key text, p_value jsonb, p_ttl interval DEFAULT NULL,
                                                          p_namespace text DEFAULT 'default')
    RETURNS boolean
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    at_now timestamptz := pg_catalog.clock_timestamp();
    written boolean;
BEGIN
    PERFORM monitoring._cache_check_key(p_key, p_namespace);
    IF p_value IS NULL THEN
        RAISE EXCEPTION 'a cache value must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    INSERT INTO monitoring.cache_entries AS e (namespace, key, value, value_type, expires_at, updated_at)
    VALUES (p_namespace, p_key, p_value, 'json', monitoring._cache_expires_at(p_ttl), at_now)
    ON CONFLICT (namespace, key) DO UPDATE
        SET value = excluded.value, value_bytes = NULL, value_type = 'json',
            expires_at = excluded.expires_at, updated_at = excluded.updated_at
        WHERE e.expires_at <= at_now
    RETURNING true INTO written;
    written := COALESCE(written, false);
    IF written THEN
        PERFORM monitoring._cache_note(p_namespace, 0, 0, 1);
    END IF;
    RETURN written;
END
$$;
COMMENT ON FUNCTION monitoring.cache_set_if_absent(text, jsonb, interval, text) IS
    'Stores the value only if the key is absent or expired (Redis SET NX); true when it did: a lock';

-- Redis's EXPIRE and PERSIST: a new TTL for a live key (NULL: never expires).
CREATE OR REPLACE FUNCTION monitoring.cache_expire(p_key text, p_ttl interval, p_namespace text DEFAULT 'default')
    RETURNS boolean
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    at_now timestamptz := pg_catalog.clock_timestamp();
    expires timestamptz := monitoring._cache_expires_at(p_ttl);
BEGIN
    PERFORM monitoring._cache_check_key(p_key, p_namespace);
    UPDATE monitoring.cache_entries e SET expires_at = expires
    WHERE e.namespace = p_namespace AND e.key = p_key AND (e.expires_at IS NULL OR e.expires_at > at_now);
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION monitoring.cache_expire(text, interval, text) IS
    'Gives a live key a new TTL (NULL: no expiry); false when the key is absent or expired';

-- ------------------------------------------------------------------------------------------
-- Deleting

CREATE OR REPLACE FUNCTION monitoring.cache_delete(p_key text, p_namespace text DEFAULT 'default')
    RETURNS boolean
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    was_live boolean;
BEGIN
    IF p_key IS NULL OR p_namespace IS NULL THEN
        PERFORM monitoring._cache_check_key(p_key, p_namespace);
    END IF;
    DELETE FROM monitoring.cache_entries e
    WHERE e.namespace = p_namespace AND e.key = p_key
    RETURNING e.expires_at IS NULL OR e.expires_at > pg_catalog.clock_timestamp() INTO was_live;
    RETURN COALESCE(was_live, false);
END
$$;
COMMENT ON FUNCTION monitoring.cache_delete(text, text) IS
    'Deletes a key; true when it was live (an expired entry is deleted too but counts as absent)';

CREATE OR REPLACE FUNCTION monitoring.cache_delete_many(p_keys text[], p_namespace text DEFAULT 'default')
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    -- the DELETE locks its rows in the order it finds them: in key order through the primary
    -- key, whatever the table's size (a sequential scan would take them in any order)
    SET enable_seqscan = off
    SET enable_bitmapscan = off
AS $$
DECLARE
    deleted integer;
BEGIN
    IF p_namespace IS NULL OR pg_catalog.octet_length(p_namespace) NOT BETWEEN 1 AND 64 THEN
        PERFORM monitoring._cache_check_key('', p_namespace);   -- raises
    END IF;
    IF p_keys IS NULL OR pg_catalog.array_position(p_keys, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'cache keys must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- A scan of the primary key visits the keys of an array in sorted order (the SET clauses
    -- keep the plan on it): the DELETE locks its rows in key order itself.
    WITH gone AS (
        DELETE FROM monitoring.cache_entries e
        WHERE e.namespace = p_namespace AND e.key = ANY (p_keys)
        RETURNING e.expires_at
    )
    SELECT pg_catalog.count(*) FILTER (WHERE g.expires_at IS NULL OR g.expires_at > pg_catalog.clock_timestamp())
        INTO deleted
    FROM gone g;
    RETURN deleted;
END
$$;
COMMENT ON FUNCTION monitoring.cache_delete_many(text[], text) IS
    'Deletes keys in one call; returns how many were live (as Redis''s DEL k1 k2 ...)';

CREATE OR REPLACE FUNCTION monitoring.cache_delete_pattern(p_pattern text, p_namespace text DEFAULT 'default')
    RETURNS bigint
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    glob record := monitoring._cache_glob(p_pattern);
    deleted bigint;
BEGIN
    PERFORM monitoring._cache_check_key('', p_namespace);
    IF glob.matches_nothing THEN
        RETURN 0;
    END IF;
    -- EXECUTE: see cache_keys(). Rows are locked in key order first (see the top of this file).
    EXECUTE
        'WITH doomed AS ('
        '    SELECT e.ctid AS row_id FROM monitoring.cache_entries e'
        '    WHERE e.namespace = $1'
        || CASE WHEN glob.like_pattern IS NOT NULL THEN ' AND e.key LIKE $2' ELSE ' AND e.key ~ $2' END
        || '    ORDER BY e.key FOR UPDATE'
           '), gone AS ('
           '    DELETE FROM monitoring.cache_entries e USING doomed d WHERE e.ctid = d.row_id'
           '    RETURNING e.expires_at'
           ')'
           'SELECT pg_catalog.count(*) FILTER (WHERE g.expires_at IS NULL OR g.expires_at > $3) FROM gone g'
        INTO deleted
        USING p_namespace, COALESCE(glob.like_pattern, glob.regex), pg_catalog.clock_timestamp();
    RETURN deleted;
END
$$;
COMMENT ON FUNCTION monitoring.cache_delete_pattern(text, text) IS
    'Deletes the keys of a namespace matching a Redis glob pattern (* ? [abc] \x; % and _ are literals); returns how many were live';

-- ------------------------------------------------------------------------------------------
-- Maintenance (run_maintenance() calls both; docs/cache.md)

-- Expired entries are never returned (every read checks expires_at); this only frees their
-- space. One pass through the table in physical order, p_batch rows per DELETE at most, each
-- batch starting where the previous one stopped (a TID range scan), p_max_batches batches per
-- call at most; rows a writer holds are skipped (it is replacing them anyway).
CREATE OR REPLACE FUNCTION monitoring.expire_cache(p_batch integer DEFAULT 10000, p_max_batches integer DEFAULT 10)
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    at_now timestamptz := pg_catalog.clock_timestamp();
    batches integer := 0;
    batch_count bigint;
    total bigint := 0;
    resume_at tid := '(0,0)'::tid;
    last_row tid;
BEGIN
    IF p_batch IS NULL OR p_batch < 1 OR p_max_batches IS NULL OR p_max_batches < 1 THEN
        RAISE EXCEPTION 'p_batch and p_max_batches must be positive, got % and %', p_batch, p_max_batches
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOOP
        WITH doomed AS (
            SELECT e.ctid AS row_id FROM monitoring.cache_entries e
            WHERE e.ctid >= resume_at AND e.expires_at <= at_now
            LIMIT p_batch
            FOR UPDATE SKIP LOCKED
        ), gone AS (
            DELETE FROM monitoring.cache_entries e
            WHERE e.ctid = ANY (ARRAY(SELECT d.row_id FROM doomed d)) AND e.expires_at <= at_now
            RETURNING e.namespace
        ), per_namespace AS (
            SELECT g.namespace, pg_catalog.count(*) AS evicted FROM gone g GROUP BY g.namespace
        ), counted AS (
            INSERT INTO monitoring.cache_counters AS c (namespace, backend_pid, evictions)
            SELECT p.namespace, pg_catalog.pg_backend_pid(), p.evicted FROM per_namespace p
            ORDER BY p.namespace
            ON CONFLICT (namespace, backend_pid) DO UPDATE SET evictions = c.evictions + excluded.evictions
        )
        SELECT COALESCE(pg_catalog.sum(p.evicted), 0), (SELECT pg_catalog.max(d.row_id) FROM doomed d)
            INTO batch_count, last_row
        FROM per_namespace p;
        total := total + batch_count;
        batches := batches + 1;
        EXIT WHEN last_row IS NULL OR batches >= p_max_batches;
        resume_at := last_row;
    END LOOP;
    RETURN pg_catalog.format('%s expired cache entries deleted%s', total,
                             CASE WHEN last_row IS NOT NULL THEN ' (more may remain: the next run goes on)' ELSE '' END);
END
$$;
COMMENT ON FUNCTION monitoring.expire_cache(integer, integer) IS
    'Maintenance task: deletes expired cache entries in one pass, at most p_batch per statement and p_max_batches statements';

CREATE OR REPLACE FUNCTION monitoring._fold_cache_counters()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    folded integer;
BEGIN
    WITH ended AS (
        SELECT c.ctid AS row_id FROM monitoring.cache_counters c
        WHERE c.backend_pid <> 0
          AND c.backend_pid NOT IN (SELECT a.pid FROM pg_catalog.pg_stat_get_activity(NULL) a WHERE a.pid IS NOT NULL)
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM monitoring.cache_counters c USING ended d WHERE c.ctid = d.row_id
        RETURNING c.namespace, c.hits, c.misses, c.sets, c.evictions
    ), summed AS (
        INSERT INTO monitoring.cache_counters AS c (namespace, backend_pid, hits, misses, sets, evictions)
        SELECT g.namespace, 0, pg_catalog.sum(g.hits), pg_catalog.sum(g.misses), pg_catalog.sum(g.sets),
               pg_catalog.sum(g.evictions)
        FROM gone g GROUP BY g.namespace
        ON CONFLICT (namespace, backend_pid) DO UPDATE
            SET hits = c.hits + excluded.hits, misses = c.misses + excluded.misses,
                sets = c.sets + excluded.sets, evictions = c.evictions + excluded.evictions
    )
    SELECT pg_catalog.count(*)::integer INTO folded FROM gone;
    RETURN pg_catalog.format('%s cache counter rows of ended backends folded', folded);
END
$$;
COMMENT ON FUNCTION monitoring._fold_cache_counters() IS
    'Maintenance task: folds the cache counter rows of ended backends into one row per namespace';


-- The PL/Python functions again: their bodies carry their header, which names the search_path.
-- from plpython/plpython_runtime.py
CREATE OR REPLACE FUNCTION monitoring._plpython_runtime() RETURNS jsonb LANGUAGE plpython3u STABLE SET search_path = pg_catalog, pg_temp
AS $pyfn$
# pg_observe:function monitoring._plpython_runtime() RETURNS jsonb LANGUAGE plpython3u STABLE SET search_path = pg_catalog, pg_temp  # noqa: E501
# pg_observe:entry runtime()
"""Reports the Python that runs inside the database and whether the senders' modules load.

PL/Python runs the operating system's python3, not any virtualenv, so senders may use the
standard library only; this tells an operator what that interpreter is.
"""

import importlib
import json
import sys

SENDER_MODULES = ("smtplib", "ssl", "urllib.request", "hmac", "hashlib", "email.message", "json")


def runtime() -> str:
    modules = {}
    for name in SENDER_MODULES:
        try:
            importlib.import_module(name)
            modules[name] = True
        except ImportError:
            modules[name] = False
    return json.dumps(
        {
            "python_version": "{}.{}.{}".format(*sys.version_info[:3]),
            "executable": sys.executable,
            "modules": modules,
        }
    )

return runtime()
$pyfn$;
-- from plpython/scrub.py
CREATE OR REPLACE FUNCTION monitoring._scrub(p_value text, p_keys text[]) RETURNS text LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $pyfn$
# pg_observe:function monitoring._scrub(p_value text, p_keys text[]) RETURNS text LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp  # noqa: E501
# pg_observe:entry scrub_json(p_value, p_keys)
"""Replaces secrets in a JSON document with "[Filtered]" before it is stored.

- A value under a key that contains one of the configured words (case-insensitive for A to
  Z, ignoring "-", "_", spaces, tabs and line breaks: "password" matches "Password",
  "db_password", "X-Password", "pass word") is replaced whole. The words come lower-cased
  and without separators (error_capture_state.scrub_words).
- Credit-card-like numbers (13 to 19 ASCII digits, spaces or dashes allowed, passing the Luhn
  check) inside any string are replaced.
- Nesting deeper than MAX_DEPTH is cut: the subtree becomes "[Filtered: nested too deep]".
The input is JSON text (jsonb cast to text); the output is JSON text, numbers as written (the
input itself when nothing was replaced).

The rules are those of the database's cheap test (_occurrence_needs_scrub), which decides
whether this runs at all: what it cannot see, this must not do either, or an event's fate
would depend on its other fields. So the separators are those the test reads in JSON text
(not form feeds or Unicode spaces), only A to Z are folded to lower case (the test's
case-insensitive match may fold more, never less), and digits are ASCII.
"""


import json
import re
import string
import sys

FILTERED = "[Filtered]"
MAX_DEPTH = 64
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b", re.ASCII)
_DIGIT = re.compile(r"[0-9]")
_SEPARATORS = re.compile(r"[-_ \t\n\r]")
_PLACEHOLDER = re.compile(r'"\\u0000([0-9]+)"')


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _scrub_cards(text: str) -> str:
    def repl(match: re.Match) -> str:
        digits = re.sub(r"[ -]", "", match.group(0))
        return FILTERED if 13 <= len(digits) <= 19 and _luhn_ok(digits) else match.group(0)

    return _CARD.sub(repl, text) if _DIGIT.search(text) else text


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _secret_key(key: str, words: tuple) -> bool:
    k = _SEPARATORS.sub("", key.translate(_ASCII_LOWER))
    return any(w in k for w in words)


def scrub(value: object, words: tuple, depth: int = 0) -> object:
    """Returns value with secrets replaced; never raises for JSON-shaped input."""
    if depth > MAX_DEPTH:
        return "[Filtered: nested too deep]"
    if isinstance(value, dict):
        return {
            k: (FILTERED if _secret_key(str(k), words) and v is not None else scrub(v, words, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub(v, words, depth + 1) for v in value]
    if isinstance(value, str):
        return _scrub_cards(value)
    return value


def scrub_json(p_value: str | None, p_keys: list | None) -> str | None:
    if p_value is None:
        return None
    # PostgreSQL accepts JSON nested far deeper than Python's default recursion limit.
    if sys.getrecursionlimit() < 25000:
        sys.setrecursionlimit(25000)
    words = tuple(_SEPARATORS.sub("", w.translate(_ASCII_LOWER)) for w in (p_keys or []) if w)
    # Numbers stay as written: as Python numbers, 10.50 would come back as 10.5, and an
    # integer of more than 4,300 digits would not parse. Each becomes a
    # placeholder string that no JSON text from PostgreSQL can hold (a NUL), put back after.
    numbers: list[str] = []

    def keep(text: str) -> str:
        numbers.append(text)
        return "\0" + str(len(numbers) - 1)

    try:
        doc = json.loads(p_value, parse_float=keep, parse_int=keep)
    except (ValueError, RecursionError):
        return json.dumps("[Filtered: unreadable]")
    try:
        scrubbed = scrub(doc, words)
        if scrubbed == doc:
            return p_value
        return _PLACEHOLDER.sub(lambda m: numbers[int(m.group(1))], json.dumps(scrubbed, ensure_ascii=False))
    except RecursionError:
        return json.dumps("[Filtered: nested too deep]")

return scrub_json(p_value, p_keys)
$pyfn$;
-- from plpython/fingerprint.py
CREATE OR REPLACE FUNCTION monitoring._fingerprint_events(p_events text, p_rules text) RETURNS text LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $pyfn$
# pg_observe:function monitoring._fingerprint_events(p_events text, p_rules text) RETURNS text LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
# pg_observe:entry fingerprint_events_json(p_events, p_rules)
# ruff: noqa: E501
"""Error grouping: fingerprint algorithm version 2.

Every captured event gets a fingerprint, the hex SHA-256 of a list of string components
(``inputs``). Events with the same fingerprint form one group (issue). The components are
chosen by the first of these steps that applies:

1. **explicit** - the event's ``fingerprint``: a non-empty list of strings from the client
   (a single string counts as a list of one; numbers become strings, other elements are
   dropped). An element ``{{ default }}`` (any spacing inside the braces) is replaced by the
   components step 3 or 4 would compute. At most 100 parts are used, each cut to 1000
   characters. A list made only of ``{{ default }}`` elements is the same as no list.
2. **rule** - the first server-side rule (``p_rules``, in list order) whose match keys all
   match. Match keys are shell globs (``fnmatch``, case-sensitive; a key may also be a list
   of globs, any of which may match):
   ``type`` - the type of any exception of the chain; ``message`` - the message of any
   exception of the chain (the raw text, not parameterised); ``module``, ``function`` -
   any frame of any exception; ``path`` - any frame's ``abs_path`` or ``filename``;
   ``environment``, ``transaction``, ``logger``, ``level`` - the event's field;
   ``tags`` - an object of tag name -> glob, every one must match the event's tag.
   A rule without match keys matches every event; other keys are ignored; a key of the
   wrong type makes the rule never match. Outcome: ``fingerprint`` (list of strings,
   ``{{ default }}`` allowed) gives method "rule"; ``title`` sets ``group_title``. A rule
   with only a title keeps the default fingerprint (step 3 or 4) but still wins: later
   rules are not looked at. A rule with neither outcome is skipped. Rules are not looked
   at when step 1 applied.
3. **stack** - when at least one frame gives a component. For every exception of the chain,
   causes first and the raised (outermost) one last: its type (``<no type>`` if missing),
   then one ``where:function`` component per frame, outermost frame first. ``where`` is the
   frame's module, or else the base name of its file (no directory, no query string, JS
   bundler hashes removed: ``main.3f9a1c2b.js`` -> ``main.js``, ``index-BxWq3k2L.js`` ->
   ``index.js``); a missing part is ``?``. Only in-app frames (``in_app`` true) count; when
   no frame of that exception is in-app (or in_app is unknown for all), all its frames
   count. A component equal to the one before it (recursion) counts once. Line numbers,
   columns, context lines and directories never count. Generated names are normalised:
   Java ``$$Lambda$123/0x...`` -> ``$$Lambda``, ``$$EnhancerByCGLIB$$1a2b`` ->
   ``$$EnhancerByCGLIB``, ``$Proxy12`` -> ``$Proxy``, ``GeneratedMethodAccessor7`` ->
   ``GeneratedMethodAccessor``, other ``$<digits>`` -> ``$`` (anonymous classes, lambda
   methods); Go closures ``.func1.2`` -> ``.func``, ``gowrap1``/``deferwrap1`` -> without
   digits. (Goroutine ids and ``+0x`` offsets are never part of a frame.)
4. **message** - no usable frames: ``[type or "<no type>", line 1, line 2]`` where lines 1
   and 2 are the first two non-empty lines (stripped, each cut to 1000 characters) of the
   main message, parameterised by these replacements, in this order:
   e-mail -> ``<email>``; URL (``scheme://...``) -> ``<url>``; UUID -> ``<uuid>``;
   IPv4 and IPv6 address -> ``<ip>``; ISO date/time, ``10/03/2024``, ``03.10.2024``,
   ``Mar 10, 2024``, ``Tue, 10 Mar 2024 12:00:00 GMT``, ``12:30:45`` -> ``<date>``;
   ``0x...``, 8 or more hex characters with at least one digit and one letter a-f, and
   32/40/64-character hex hashes -> ``<hex>``; durations (``150ms``, ``2.5s``, ``3m``,
   ``1h2m3s``, ``5 seconds``) -> ``<duration>``; ``key=value``, ``key="quoted value"``,
   ``key='quoted'`` -> ``key=<value>``; decimal numbers -> ``<float>``; integers ->
   ``<int>``. (A run of digits only, like ``12345678``, is an integer, so that ids of
   every length group together.) For a Sentry ``logentry``/message object the unformatted
   ``message`` template is used when given, else ``formatted``.
5. **fallback** - no type, no message and no frames: ``["<no type>", "<no message>"]``.

The fingerprint is ``sha256("\\n".join(inputs).encode("utf-8"))`` in hex, so PostgreSQL
can recompute it: ``encode(sha256(convert_to(array_to_string(inputs, E'\\n'), 'UTF8')), 'hex')``.

Events may be flat (``exception_type``, ``message``, ``stack_trace``, ``frames``, ...) or
Sentry-shaped (``exception.values[]`` - the raised exception last, causes before it -
``message`` as a string or ``{"formatted", "message"}``, ``logentry``, ``stacktrace``,
``threads``, ``tags`` as an object or a list of ``[key, value]`` pairs). When both are
present the Sentry chain wins and the flat fields fill what its raised exception lacks.
When no frames were given, ``stack_trace`` text is parsed; its formats are recognised
automatically: Python tracebacks (with "During handling of the above exception" and "The
above exception was the direct cause" chains), V8/Node (``at f (file:1:2)``), Firefox and
Safari (``f@file:1:2``), Java/JVM (``Caused by:``, ``... 12 more``, ``Suppressed:`` blocks
skipped), .NET frames (``at A.B(args) in file:line 42``), Go panics and Ruby backtraces.
The text also gives the type and message when the event has none (or has the placeholder
type "Error"). Parsed frames get ``in_app`` from their path: false for site-packages,
dist-packages, /usr/lib/python, /usr/local/lib/python, .../lib/pythonX.Y/, <frozen ...>,
node_modules, node:..., internal/..., <anonymous>, /gems/, /ruby/, <internal:...>, Go's
/usr/local/go/, /usr/lib/go, .../src/runtime/, /pkg/mod/ and the runtime package, and
classes of java., javax., jdk., sun., com.sun., kotlin., kotlinx., scala., System.,
Microsoft.; true otherwise.

Limits, each a repair and never an error: only the first 64 KB of a message or stack text
is read; at most 500 frames per exception (the innermost 500 are kept) and 10 exceptions
per chain (the raised one and its 9 nearest causes); NUL characters are removed; result
strings are cut (title and culprit 200, frame fields 1000, type 512, message 64 KB). An
event that is not an object, or that fails in any unforeseen way, gets a fallback result.
Unparseable JSON for the whole batch is split into its top-level elements so that one bad
event does not cost the others their results.

Result per event: fingerprint, fingerprint_version (2), method, inputs, exception_type
(the raised exception's type, "Error" if missing), message (its message, "" if missing),
title ("Type: first message line, parameterised", at most 200 characters), culprit
("module in function" of the innermost in-app frame, else of the innermost frame, null
without frames), frames (the raised exception's frames, innermost last; keys filename,
abs_path, module, function, lineno, in_app, context_line) and group_title (a rule's
title, else null).

Standard library only, no plpy: the file is the body of monitoring._fingerprint_events().
"""

import fnmatch
import hashlib
import json
import math
import re

FINGERPRINT_VERSION = 2
MAX_TEXT = 65536
MAX_FRAMES = 500
MAX_CHAIN = 10
MAX_PARTS = 100
MAX_PART_LEN = 1000
MAX_FIELD = 1000
MAX_TYPE = 512
MAX_TITLE = 200
MAX_LINE = 1000
MAX_RULES = 1000
MAX_TAGS = 200
MAX_LINENO = 2147483647
MAX_FRAME_LINE = 4096  # longer lines are never frames (and never reach a backtracking regex)
NO_TYPE = "<no type>"
NO_MESSAGE = "<no message>"
DEFAULT_TYPE = "Error"
RESULT_KEYS = (
    "fingerprint", "fingerprint_version", "method", "inputs", "exception_type", "message",
    "title", "culprit", "frames", "group_title",
)
FRAME_KEYS = ("filename", "abs_path", "module", "function", "lineno", "in_app", "context_line")
_RULE_MATCH_KEYS = ("type", "message", "module", "function", "path", "environment", "transaction", "logger", "level")

_DEFAULT_PART = re.compile(r"\{\{\s*default\s*\}\}\Z")

# Parameterisation of messages (step 4), applied in this order.
_IPV6_GROUP = "[0-9A-Fa-f]{1,4}"
_IPV6 = (
    r"(?<![\w:.])(?=[0-9A-Fa-f:]*\d)(?:"
    + "|".join(
        (
            rf"(?:{_IPV6_GROUP}:){{7}}{_IPV6_GROUP}",
            rf"(?:{_IPV6_GROUP}:){{1,7}}:",
            rf"(?:{_IPV6_GROUP}:){{1,6}}:{_IPV6_GROUP}",
            rf"(?:{_IPV6_GROUP}:){{1,5}}(?::{_IPV6_GROUP}){{1,2}}",
            rf"(?:{_IPV6_GROUP}:){{1,4}}(?::{_IPV6_GROUP}){{1,3}}",
            rf"(?:{_IPV6_GROUP}:){{1,3}}(?::{_IPV6_GROUP}){{1,4}}",
            rf"(?:{_IPV6_GROUP}:){{1,2}}(?::{_IPV6_GROUP}){{1,5}}",
            rf"{_IPV6_GROUP}:(?::{_IPV6_GROUP}){{1,6}}",
            rf":(?::{_IPV6_GROUP}){{1,7}}",
        )
    )
    + r")(?:%\w+)?(?![\w:])"
)
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?"
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?"
_TIME = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[AaPp][Mm])?(?:\s?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}))?"
_DATE = (
    r"(?<![\w.:/-])(?:"
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?(?:\s?(?:Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?))?"
    r"|\d{1,2}/\d{1,2}/\d{2,4}|\d{4}/\d{1,2}/\d{1,2}|\d{1,2}\.\d{1,2}\.\d{4}"
    rf"|(?:{_WEEKDAY}\s+)?\d{{1,2}}\s+{_MONTH}\s+\d{{4}}"
    rf"|(?:{_WEEKDAY}\s+)?{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    rf")(?:(?:\s+|,\s*|T){_TIME})?(?![\w])"
    rf"|(?<![\w.:/-]){_TIME}(?![\w:])"
)
# (pattern, replacement, a string the line must contain, whether it must contain a digit)
_PARAMETERS = tuple(
    (re.compile(pattern), replacement, needs, needs_digit)
    for pattern, replacement, needs, needs_digit in (
        (r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+", "<email>", "@", False),
        (r"(?<![\w+.-])[A-Za-z][\w+.-]*://[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]]", "<url>", "://", False),
        (r"(?<![0-9A-Fa-f-])[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}(?![0-9A-Fa-f-])", "<uuid>", "-", True),
        (_IPV6, "<ip>", ":", True),
        (r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)", "<ip>", ".", True),
        (_DATE, "<date>", "", True),
        (r"(?<!\w)(?:0[xX][0-9A-Fa-f]+|[0-9A-Fa-f]{64}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{32}"
         r"|(?=[0-9A-Fa-f]*[A-Fa-f])(?=[0-9A-Fa-f]*\d)[0-9A-Fa-f]{8,})(?!\w)", "<hex>", "", False),
        (r"(?<![\w.])(?:(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|h|m|s)){2,}"
         r"|\d+(?:\.\d+)?(?:\s?(?:ns|us|µs|ms|msecs?|secs?|seconds?|mins?|minutes?|hours?|hrs?|days?)|[smhd]))(?!\w)",
         "<duration>", "", True),
        (r"(?<![\w.-])([A-Za-z_][\w.-]*)=(?!=)(?:\"[^\"\\]*(?:\\.[^\"\\]*)*\"|'[^'\\]*(?:\\.[^'\\]*)*'|[^\s,;&)\]}]+)",
         r"\1=<value>", "=", False),
        (r"(?<![\w.])\d+\.\d+(?:[eE][-+]?\d+)?(?!\w|\.\d)", "<float>", ".", True),
        (r"(?<!\w)\d+(?!\w)", "<int>", "", True),
    )
)
_DIGIT = re.compile(r"\d")

# Normalisation of frame names (step 3).
_JAVA_GENERATED = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"\$\$Lambda(?:\$\d+)?(?:/0x[0-9A-Fa-f]+)?", "$$Lambda"),
        (r"\$\$([A-Za-z]+)\$\$\w+", r"$$\1"),
        (r"\$HibernateProxy\$\w+", "$HibernateProxy"),
        (r"\$Proxy\d+", "$Proxy"),
        (r"(Generated(?:Serialization)?(?:Method|Constructor)Accessor)\d+", r"\1"),
        (r"/0x[0-9A-Fa-f]+", ""),
        (r"\$\d+", "$"),
    )
)
_GO_CLOSURE = re.compile(r"\.func\d+(?:\.\d+)*|(?<=\.)(gowrap|deferwrap)\d+")
_BUNDLE_HASH = re.compile(
    r"[.-](?:(?=[0-9A-Fa-f]*\d)[0-9A-Fa-f]{8,}"
    r"|(?=[\w-]{0,7}\d)(?=[\w-]{0,7}[A-Z])(?=[\w-]{0,7}[a-z])[\w-]{8})(?=\.)"
)

# Stack trace text.
_PY_FRAME = re.compile(r'^[ \t|]*File "([^"\n]*)", line (\d+)(?:, in (.*?))?\s*$')
_PY_SEPARATORS = (
    "During handling of the above exception, another exception occurred",
    "The above exception was the direct cause of the following exception",
)
_PY_EXCEPTION = re.compile(r"([A-Za-z_][\w.]*)(?::\s?(.*))?\Z", re.S)
_CARETS = re.compile(r"[\s^~]*\Z")
_JAVA_FRAME = re.compile(r"^\s*at ([^\s(]+)\(([^)]*)\)(?: in (.+?):line (\d+))?")
_JAVA_MODULE_PREFIX = re.compile(r"(?:[\w.-]+(?:@[\w.-]+)?)?/(?:[\w.-]*/)?(?=[\w$])")
_V8_FRAME = re.compile(
    r"^\s*at (?:(.+?) \(((?:.*:\d+)|<anonymous>|native|index \d+|unknown location)\)|(.+?:\d+(?::\d+)?))\s*\{?\s*$"
)
_V8_ALIAS = re.compile(r" \[as [^\]]*\]\Z")
_V8_EVAL = re.compile(r"\(([^()]*)\)")
_LOCATION = re.compile(r"(.*?)(?::(\d+))?(?::(\d+))?\Z", re.S)
_GECKO_FRAME = re.compile(r"^\s*([^@\s]*|(?:global|module|eval) code)@(.+?):(\d+)(?::(\d+))?\s*$")
_RUBY_FRAME = re.compile(r"^\s*(?:from\s+)?(.+?):(\d+):in\s+[`'](.*?)'(?::\s+(.*))?\s*$")
_RUBY_MESSAGE = re.compile(r"(.*?)\s*\(([A-Z][\w:]*)\)\Z", re.S)
_GO_PANIC = re.compile(r"(panic|fatal error): (.*)")
_GO_GOROUTINE = re.compile(r"goroutine \d+ \[[^\]]*\]:")
_GO_LOCATION = re.compile(r"^\s+(.+?):(\d+)(?: \+0x[0-9A-Fa-f]+)?\s*$")
_HEADER = re.compile(
    r"(?:Uncaught\s+)?(?:Exception in thread \"[^\"]*\"\s+)?([A-Za-z_$][\w$.]*)(?:\s\[([\w-]+)\])?(?::\s+(.*)|:)?\s*\Z"
)
_CAUSE_MARKERS = ("Caused by:", "[cause]:")
_NOT_APP_PATH = re.compile(
    r"site-packages|dist-packages|/usr/lib/python|/usr/local/lib/python|/lib/python\d+\.\d+/|<frozen |"
    r"node_modules|node:|^internal/|^<anonymous>|/gems/|/ruby/|<internal:|"
    r"/usr/local/go/|/usr/lib/go|/src/runtime/|/pkg/mod/"
)
_NOT_APP_CLASS = re.compile(r"(?:java|javax|jdk|sun|com\.sun|kotlin|kotlinx|scala|System|Microsoft)\.")

# Lenient JSON: the top-level items of an array or object, without parsing them.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')
_LONE_SURROGATE = re.compile(r"\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f]")
_JSON_KEY = re.compile(r'\s*("[^"\\]*(?:\\.[^"\\]*)*")\s*:')

_CACHE_LIMIT = 4096
_name_cache = {}
_file_cache = {}
_path_cache = {}
_glob_cache = {}
_param_cache = {}


# ---------------------------------------------------------------------------- coercion


def _text(value, limit):
    """A string from a JSON scalar, without NUL characters and cut to limit; None otherwise."""
    kind = type(value)
    if kind is not str:
        if kind is int:
            if value.bit_length() > 64:
                return None
            value = str(value)
        elif kind is float:
            if not math.isfinite(value):
                return None
            value = repr(value)
        else:
            return None
    if len(value) > limit:
        value = value[:limit]
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value


def _lineno(value):
    kind = type(value)
    if kind is int:
        return value if 0 <= value <= MAX_LINENO else None
    if kind is float:
        return int(value) if math.isfinite(value) and 0 <= value <= MAX_LINENO else None
    if kind is str and 0 < len(value) <= 10 and value.isdigit() and value.isascii():
        number = int(value)
        return number if number <= MAX_LINENO else None
    return None


def _flag(value):
    if value is True or value is False:
        return value
    if type(value) is str:
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    return None


def _frame(value):
    """A frame dict with exactly FRAME_KEYS, from whatever the client sent; None if not an object.
    (The hot path: clean strings, ints and booleans are taken as they are, without calls.)"""
    if type(value) is not dict:
        return None
    get = value.get
    filename, abs_path, module, function = get("filename"), get("abs_path"), get("module"), get("function")
    lineno, in_app, context_line = get("lineno"), get("in_app"), get("context_line")
    if filename is not None and (type(filename) is not str or len(filename) > MAX_FIELD or "\x00" in filename):
        filename = _text(filename, MAX_FIELD)
    if abs_path is not None and (type(abs_path) is not str or len(abs_path) > MAX_FIELD or "\x00" in abs_path):
        abs_path = _text(abs_path, MAX_FIELD)
    if module is not None and (type(module) is not str or len(module) > MAX_FIELD or "\x00" in module):
        module = _text(module, MAX_FIELD)
    if function is not None and (type(function) is not str or len(function) > MAX_FIELD or "\x00" in function):
        function = _text(function, MAX_FIELD)
    if context_line is not None and (
        type(context_line) is not str or len(context_line) > MAX_FIELD or "\x00" in context_line
    ):
        context_line = _text(context_line, MAX_FIELD)
    if lineno is not None and not (type(lineno) is int and 0 <= lineno <= MAX_LINENO):
        lineno = _lineno(lineno)
    if not (in_app is None or in_app is True or in_app is False):
        in_app = _flag(in_app)
    return {
        "filename": filename, "abs_path": abs_path, "module": module, "function": function,
        "lineno": lineno, "in_app": in_app, "context_line": context_line,
    }


def _frames_of(value):
    """Frames from a list of frames or a Sentry stacktrace object; None when there are none."""
    if type(value) is dict:
        value = value.get("frames")
    if type(value) is not list or not value:
        return None
    if len(value) > MAX_FRAMES:
        value = value[-MAX_FRAMES:]
    frames = [frame for frame in map(_frame, value) if frame is not None]
    return frames or None


def _thread_frames(value):
    """Frames of the crashed (else current, else only) thread of a Sentry threads interface."""
    if type(value) is dict:
        value = value.get("values")
    if type(value) is not list:
        return None
    threads = [t for t in value[:MAX_CHAIN * 10] if type(t) is dict and t.get("stacktrace") is not None]
    chosen = None
    for key in ("crashed", "current"):
        chosen = next((t for t in threads if t.get(key) is True), None)
        if chosen is not None:
            break
    if chosen is None and len(threads) == 1:
        chosen = threads[0]
    return _frames_of(chosen.get("stacktrace")) if chosen is not None else None


def _message_of(value):
    """(display, template) of a message given as a string or a {"formatted", "message"} object."""
    if type(value) is dict:
        formatted = _text(value.get("formatted"), MAX_TEXT)
        template = _text(value.get("message"), MAX_TEXT)
        return formatted or template, template or formatted
    text = _text(value, MAX_TEXT)
    return text, text


def _tags_of(value):
    if type(value) is dict:
        items = [item for _, item in zip(range(MAX_TAGS), value.items())]
    elif type(value) is list:
        items = []
        for pair in value[:MAX_TAGS]:
            if type(pair) in (list, tuple) and len(pair) == 2:
                items.append(pair)
            elif type(pair) is dict and "key" in pair:
                items.append((pair.get("key"), pair.get("value")))
    else:
        return {}
    tags = {}
    for key, val in items:
        key = _text(key, MAX_FIELD)
        val = _text(val, MAX_FIELD) if type(val) is not bool else ("true" if val else "false")
        if key is not None and val is not None:
            tags[key] = val
    return tags


def _link(exc_type, message, frames):
    return {"type": exc_type or None, "message": message or None, "frames": frames or None}


# ---------------------------------------------------------------------------- stack text


def _in_app_path(path):
    if not path:
        return False
    cached = _path_cache.get(path)
    if cached is None:
        if len(_path_cache) > _CACHE_LIMIT:
            _path_cache.clear()
        cached = _path_cache[path] = _NOT_APP_PATH.search(path) is None
    return cached


def _basename(path):
    cut = max(path.rfind("/"), path.rfind("\\"))
    return path[cut + 1:] if cut >= 0 else path


def _text_frame(path, lineno, function, module=None, in_app=None, context_line=None):
    if path is not None:
        path = path[:MAX_FIELD]
    return {
        "filename": _basename(path) if path else None,
        "abs_path": path or None,
        "module": module[:MAX_FIELD] if module else None,
        "function": function[:MAX_FIELD] if function else None,
        "lineno": _lineno(lineno),
        "in_app": _in_app_path(path) if in_app is None else in_app,
        "context_line": context_line,
    }


def _header(lines):
    """(type, message) from the lines before a block's frames ("TypeError: msg", ...)."""
    lines = [line.strip() for line in lines]
    lines = [line for line in lines if line]
    for index, line in enumerate(lines):
        match = _HEADER.match(line)
        if match is None:
            continue
        name, code, message = match.groups()
        if message is None and not line.endswith(":") and "." not in name and not name.endswith(
            ("Error", "Exception", "Throwable", "Panic", "Failure", "Fault")
        ):
            continue
        parts = [message] if message else []
        parts.extend(lines[index + 1:])
        message = "\n".join(parts)
        if code:
            message = f"[{code}] {message}" if message else f"[{code}]"
        return name, message
    return None, "\n".join(lines) or None


def _java_frame(line):
    match = _JAVA_FRAME.match(line) if len(line) <= MAX_FRAME_LINE else None
    if match is None:
        return None
    qualified, location, dotnet_path, dotnet_line = match.groups()
    prefix = _JAVA_MODULE_PREFIX.match(qualified)
    if prefix is not None:
        qualified = qualified[prefix.end():]
    cls, _, method = qualified.rpartition(".")
    if not cls:
        cls, method = None, qualified
    if dotnet_path is not None:
        path, lineno = dotnet_path, dotnet_line
    else:
        path, _, lineno = location.partition(":")
        if path in ("Native Method", "Unknown Source", "Unknown", "") or " " in path:
            path = None
    in_app = cls is None or _NOT_APP_CLASS.match(cls) is None
    if path is not None and dotnet_path is None:
        return {
            "filename": path[:MAX_FIELD], "abs_path": None, "module": cls[:MAX_FIELD] if cls else None,
            "function": method[:MAX_FIELD] or None, "lineno": _lineno(lineno), "in_app": in_app,
            "context_line": None,
        }
    return _text_frame(path, lineno, method, cls, in_app)


def _v8_frame(line):
    match = _V8_FRAME.match(line) if len(line) <= MAX_FRAME_LINE else None
    if match is None:
        return None
    function, location, bare = match.groups()
    if function is None:
        location = bare
    else:
        if function.startswith("async "):
            function = function[6:]
        function = _V8_ALIAS.sub("", function)
    if location.startswith("eval at "):
        inner = _V8_EVAL.findall(location)
        location = inner[-1] if inner else location
    if location in ("<anonymous>", "native", "unknown location") or location.startswith("index "):
        return _text_frame(None, None, function, in_app=False)
    path, lineno, _ = _LOCATION.match(location).groups()
    return _text_frame(path, lineno, function)


def _gecko_frame(line):
    match = _GECKO_FRAME.match(line) if len(line) <= MAX_FRAME_LINE else None
    if match is None:
        return None
    function, path, lineno, _ = match.groups()
    if function.startswith("async*"):
        function = function[6:]
    return _text_frame(path, lineno, function or None)


def _parse_blocks(lines, frame_parser):
    """Formats listing each exception's header then its frames innermost first, a cause after
    "Caused by:" (JVM, V8, Firefox/Safari, .NET). Returns links in Sentry order."""
    blocks = [([], [])]
    causes_first = False
    suppressed = None
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if suppressed is not None:
            if indent > suppressed:
                continue
            suppressed = None
        if stripped.startswith("Suppressed:"):
            suppressed = indent
            continue
        marker = next((m for m in _CAUSE_MARKERS if stripped.startswith(m)), None)
        if marker is not None or stripped.startswith("Wrapped by:"):
            if marker is None:
                causes_first = True
                marker = "Wrapped by:"
            blocks.append(([stripped[len(marker):]], []))
            continue
        frame = frame_parser(line)
        header, frames = blocks[-1]
        if frame is not None:
            frames.append(frame)
        elif not frames and not stripped.startswith("..."):
            header.append(stripped)
    links = []
    for header, frames in blocks:
        if not header and not frames:
            continue
        frames.reverse()
        exc_type, message = _header(header)
        links.append(_link(exc_type, message, frames))
    if not causes_first:
        links.reverse()
    return links


def _parse_python(lines):
    links = []
    frames = []
    exception = None
    last = None
    expect_context = False
    in_traceback = False
    for raw in lines:
        line = raw.rstrip()
        if not line:
            expect_context = False
            if exception is not None:
                exception.append("")
            continue
        match = _PY_FRAME.match(line) if len(line) <= MAX_FRAME_LINE else None
        if match is not None:
            if exception is not None:
                links.append(_python_link(frames, exception))
                frames, exception = [], None
            path, lineno, function = match.groups()
            last = _text_frame(path, lineno, function)
            frames.append(last)
            expect_context = in_traceback = True
            continue
        stripped = line.strip()
        if stripped.startswith(_PY_SEPARATORS):
            links.append(_python_link(frames, exception))
            frames, exception, expect_context = [], None, False
            continue
        if stripped.startswith("Traceback (most recent call last)"):
            if frames or exception is not None:
                links.append(_python_link(frames, exception))
                frames, exception = [], None
            in_traceback, expect_context = True, False
            continue
        if line[0] in " \t|":
            if expect_context and last is not None and _CARETS.match(stripped) is None:
                last["context_line"] = stripped[:MAX_FIELD]
            elif exception is not None:
                exception.append(stripped)
            expect_context = False
            continue
        expect_context = False
        if exception is not None:
            exception.append(line)
        elif in_traceback:
            exception = [line]
    if frames or exception is not None:
        links.append(_python_link(frames, exception))
    return [link for link in links if link["type"] or link["message"] or link["frames"]]


def _python_link(frames, exception):
    exc_type = message = None
    if exception:
        match = _PY_EXCEPTION.match(exception[0])
        if match is not None:
            exc_type, first = match.groups()
            rest = [first] if first else []
        else:
            rest = [exception[0]]
        message = "\n".join(rest + exception[1:]).strip() or None
    return _link(exc_type, message, frames)


def _parse_ruby(lines):
    blocks = []
    for line in lines:
        match = _RUBY_FRAME.match(line) if len(line) <= MAX_FRAME_LINE else None
        if match is None:
            stripped = line.strip()
            if not stripped:
                continue
            if not blocks or len(blocks[-1][2]) > 1:
                exc_type, message = _header([stripped])
                blocks.append([exc_type, message, []])
            else:
                block = blocks[-1]
                block[1] = f"{block[1]}\n{stripped}" if block[1] else stripped
            continue
        path, lineno, function, rest = match.groups()
        if rest is not None or not blocks:
            exc_type = message = None
            if rest is not None:
                found = _RUBY_MESSAGE.match(rest)
                message, exc_type = found.groups() if found is not None else (rest, None)
            blocks.append([exc_type, message, []])
        blocks[-1][2].append(_text_frame(path, lineno, function))
    links = []
    for exc_type, message, frames in reversed(blocks):
        frames.reverse()
        links.append(_link(exc_type, message, frames))
    return links


def _parse_go(lines):
    exc_type = None
    message = []
    index, count = 0, len(lines)
    while index < count:
        line = lines[index]
        index += 1
        if _GO_GOROUTINE.match(line):
            break
        match = _GO_PANIC.match(line)
        if match is not None and exc_type is None:
            exc_type = match.group(1)
            first = match.group(2).strip()
            if first.endswith(" [recovered]"):
                first = first[:-12]
            message.append(first)
        elif exc_type is not None and line.strip() and not line[0].isspace():
            message.append(line.strip())
    frames = []
    pending = None
    while index < count:
        line = lines[index]
        index += 1
        stripped = line.strip()
        if not stripped:
            if frames or pending is not None:
                break
            continue
        if line[0].isspace():
            match = _GO_LOCATION.match(line) if len(line) <= MAX_FRAME_LINE else None
            if match is not None and pending is not None:
                pending[1], pending[2] = match.group(1), match.group(2)
                frames.append(pending)
                pending = None
            continue
        if _GO_GOROUTINE.match(line):
            break
        if stripped.startswith("..."):
            continue
        if pending is not None:
            frames.append(pending)
        name = stripped
        if name.startswith("created by "):
            name = name[11:]
            cut = name.find(" in goroutine ")
            if cut > 0:
                name = name[:cut]
        if name.endswith(")"):
            cut = name.rfind("(")
            if cut > 0:
                name = name[:cut]
        pending = [name, None, None]
    if pending is not None:
        frames.append(pending)
    parsed = []
    for name, path, lineno in reversed(frames):
        slash = name.rfind("/")
        dot = name.find(".", slash + 1)
        module, function = (name[:dot], name[dot + 1:]) if dot > 0 else (None, name)
        runtime = module is not None and (module == "runtime" or module.startswith("runtime/"))
        parsed.append(_text_frame(path, lineno, function, module, False if runtime else None))
    return [_link(exc_type, "\n".join(message), parsed)]


def _detect_format(lines):
    for line in lines:
        if len(line) > MAX_FRAME_LINE:
            continue
        if 'File "' in line and _PY_FRAME.match(line):
            return "python"
        if line.startswith("Traceback (most recent call last)"):
            return "python"
        if "at " in line:
            if _JAVA_FRAME.match(line):
                return "java"
            if _V8_FRAME.match(line):
                return "v8"
        if _GO_GOROUTINE.match(line) or _GO_PANIC.match(line):
            return "go"
        if ":in " in line and _RUBY_FRAME.match(line):
            return "ruby"
        if "@" in line and _GECKO_FRAME.match(line):
            return "gecko"
    return None


def parse_stack_trace(text: str) -> list[dict]:
    """Exceptions (Sentry order: causes first, the raised one last) parsed from stack trace
    text; each a dict of type, message and frames (innermost last). [] when nothing is found."""
    if type(text) is not str or not text:
        return []
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT]
    if "\x00" in text:
        text = text.replace("\x00", "")
    lines = text.splitlines()
    kind = _detect_format(lines)
    if kind == "python":
        links = _parse_python(lines)
    elif kind == "java":
        links = _parse_blocks(lines, _java_frame)
    elif kind == "v8":
        links = _parse_blocks(lines, _v8_frame)
    elif kind == "gecko":
        links = _parse_blocks(lines, _gecko_frame)
    elif kind == "ruby":
        links = _parse_ruby(lines)
    elif kind == "go":
        links = _parse_go(lines)
    else:
        return []
    links = links[-MAX_CHAIN:]
    for link in links:
        frames = link["frames"]
        if frames and len(frames) > MAX_FRAMES:
            link["frames"] = frames[-MAX_FRAMES:]
        if link["type"]:
            link["type"] = link["type"][:MAX_TYPE]
    return links


# ---------------------------------------------------------------------------- event


def _links_from_exception(value):
    if type(value) is dict:
        value = value.get("values")
    if type(value) is not list:
        return []
    links = []
    for item in value[-MAX_CHAIN:]:
        if type(item) is not dict:
            continue
        frames = _frames_of(item.get("stacktrace"))
        links.append(_link(_text(item.get("type"), MAX_TYPE), _text(item.get("value"), MAX_TEXT), frames))
    return links


def _extract(event):
    """(chain, group message) of an event: the chain in Sentry order, the raised exception last."""
    get = event.get
    chain = _links_from_exception(get("exception"))
    flat_type = _text(get("exception_type"), MAX_TYPE)
    display, template = _message_of(get("message"))
    if not display:
        display, template = _message_of(get("logentry"))
    stacktrace = get("stacktrace")
    frames = _frames_of(get("frames"))
    if frames is None and type(stacktrace) is dict:
        frames = _frames_of(stacktrace)
    if frames is None and get("threads") is not None:
        frames = _thread_frames(get("threads"))
    if chain:
        main = chain[-1]
        if not main["type"] and flat_type:
            main["type"] = flat_type
        if main["message"]:
            template = main["message"]
        elif display:
            main["message"] = display
        if not main["frames"] and frames:
            main["frames"] = frames
    elif flat_type or display or frames:
        chain = [_link(flat_type, display, frames)]
    main = chain[-1] if chain else None
    has_frames = any(link["frames"] for link in chain)
    main_type = main["type"] if main is not None else None
    if not has_frames or main_type is None or main_type == DEFAULT_TYPE:
        text = get("stack_trace")
        if type(text) is not str:
            text = stacktrace if type(stacktrace) is str else get("traceback")
        parsed = parse_stack_trace(text) if type(text) is str and text else []
        if parsed:
            last = parsed[-1]
            if main is None:
                chain = parsed
            elif not has_frames and any(link["frames"] for link in parsed):
                # The parsed chain replaces the frameless one; the event's own fields win,
                # except the placeholder type "Error" over a type found in the text.
                if main_type and not (main_type == DEFAULT_TYPE and last["type"]):
                    last["type"] = main_type
                if main["message"]:
                    last["message"] = main["message"]
                chain = parsed
            else:
                if last["type"] and (main_type is None or main_type == DEFAULT_TYPE):
                    main["type"] = last["type"]
                if not main["message"] and last["message"]:
                    main["message"] = last["message"]
    if not template and chain:
        template = chain[-1]["message"]
    return chain, template


# ---------------------------------------------------------------------------- components


def _norm_name(name):
    """A module or function name without generated numbering (Java lambdas, proxies, Go closures)."""
    if "$" not in name and ".func" not in name and "wrap" not in name and "/0x" not in name and "Accessor" not in name:
        return name
    cached = _name_cache.get(name)
    if cached is None:
        cached = name
        if "$" in cached or "/0x" in cached or "Accessor" in cached:
            for pattern, replacement in _JAVA_GENERATED:
                cached = pattern.sub(replacement, cached)
        cached = _GO_CLOSURE.sub(lambda m: ".func" if m.group(1) is None else m.group(1), cached)
        if len(_name_cache) > _CACHE_LIMIT:
            _name_cache.clear()
        _name_cache[name] = cached
    return cached


def _norm_file(path):
    """The base name of a path or URL without query string, fragment or bundler hash."""
    cached = _file_cache.get(path)
    if cached is None:
        base = path
        for mark in ("?", "#"):
            cut = base.find(mark)
            if cut > 0:
                base = base[:cut]
        base = _basename(base.rstrip("/\\")) or base
        if len(base) >= 10 and base.count(".") + base.count("-") >= 2:
            base = _BUNDLE_HASH.sub("", base)
        if len(_file_cache) > _CACHE_LIMIT:
            _file_cache.clear()
        cached = _file_cache[path] = base
    return cached


def _frame_component(frame):
    module = frame["module"]
    if module:
        where = _norm_name(module)
    else:
        path = frame["filename"] or frame["abs_path"]
        where = _norm_file(path) if path else None
    function = frame["function"]
    if function:
        function = _norm_name(function)
    if not where and not function:
        return None
    return f"{where or '?'}:{function or '?'}"


def _stack_components(frames):
    app = [frame for frame in frames if frame["in_app"] is True]
    components = []
    previous = None
    for frame in app or frames:
        component = _frame_component(frame)
        if component is not None and component != previous:
            components.append(component)
            previous = component
    return components


def parameterize(line: str) -> str:
    """One message line with its variable parts replaced by <email>, <url>, ... <int>."""
    cached = _param_cache.get(line)
    if cached is not None:
        return cached
    original = line
    digit = _DIGIT.search(line) is not None
    for pattern, replacement, needs, needs_digit in _PARAMETERS:
        if (needs_digit and not digit) or (needs and needs not in line):
            continue
        line = pattern.sub(replacement, line)
    if len(_param_cache) > _CACHE_LIMIT:
        _param_cache.clear()
    _param_cache[original] = line
    return line


def _message_lines(message, count):
    lines = []
    if message:
        for line in message.splitlines():
            line = line.strip()
            if line:
                lines.append(line[:MAX_LINE])
                if len(lines) == count:
                    break
    return lines


def _default_inputs(chain, main_type, group_message):
    """(method, inputs) of steps 3 to 5."""
    components = []
    has_frames = False
    for link in chain:
        components.append(link["type"] or NO_TYPE)
        if link["frames"]:
            frame_components = _stack_components(link["frames"])
            if frame_components:
                has_frames = True
                components.extend(frame_components)
    if has_frames:
        return "stack", components
    lines = [parameterize(line) for line in _message_lines(group_message, 2)]
    if main_type or lines:
        return "message", [main_type or NO_TYPE, *(lines or [NO_MESSAGE])]
    return "fallback", [NO_TYPE, NO_MESSAGE]


def _explicit_parts(value):
    """Fingerprint parts as strings (at most MAX_PARTS, each cut); None when there are none."""
    if type(value) is str:
        value = [value]
    elif type(value) is not list:
        return None
    parts = []
    for item in value:
        part = _text(item, MAX_PART_LEN)
        if part is not None:
            parts.append(part)
            if len(parts) == MAX_PARTS:
                break
    return parts or None


def _is_default(part):
    return part.startswith("{{") and _DEFAULT_PART.match(part) is not None


def _expand(parts, default):
    inputs = []
    for part in parts:
        if _is_default(part):
            inputs.extend(default)
        else:
            inputs.append(part)
    return inputs


# ---------------------------------------------------------------------------- rules


def _glob(pattern):
    """A match function for a glob or a list of globs; None when the pattern is not one."""
    if type(pattern) is str:
        matcher = _glob_cache.get(pattern)
        if matcher is None:
            if len(_glob_cache) > _CACHE_LIMIT:
                _glob_cache.clear()
            matcher = _glob_cache[pattern] = re.compile(fnmatch.translate(pattern)).match
        return matcher
    if type(pattern) is list and pattern and all(type(p) is str for p in pattern):
        matchers = [_glob(p) for p in pattern[:100]]
        return lambda text: any(m(text) for m in matchers)
    return None


def compile_rules(rules: list[dict]) -> list[tuple]:
    """Rules as (matchers, tag matchers, fingerprint parts or None, title or None), in order;
    invalid rules and rules without an outcome are left out."""
    if type(rules) is dict:
        rules = [rules]
    if type(rules) is not list:
        return []
    compiled = []
    for rule in rules[:MAX_RULES]:
        if type(rule) is not dict:
            continue
        parts = _explicit_parts(rule.get("fingerprint"))
        title = _text(rule.get("title"), MAX_TITLE) or None
        if parts is None and title is None:
            continue
        matchers = []
        valid = True
        for key in _RULE_MATCH_KEYS:
            pattern = rule.get(key)
            if pattern is None:
                continue
            matcher = _glob(pattern)
            if matcher is None:
                valid = False
                break
            matchers.append((key, matcher))
        tag_matchers = []
        tags = rule.get("tags")
        if valid and tags is not None:
            if type(tags) is not dict:
                valid = False
            else:
                for name, pattern in tags.items():
                    matcher = _glob(pattern)
                    if matcher is None:
                        valid = False
                        break
                    tag_matchers.append((name, matcher))
        if valid:
            compiled.append((matchers, tag_matchers, parts, title))
    return compiled


def _candidates(key, event, chain, main_type, cache):
    values = cache.get(key)
    if values is not None:
        return values
    if key == "type":
        values = {link["type"] for link in chain if link["type"]}
        values.add(main_type)
    elif key == "message":
        values = {link["message"] or "" for link in chain} or {""}
    elif key in ("module", "function", "path"):
        values = set()
        for link in chain:
            for frame in link["frames"] or ():
                if key == "path":
                    values.add(frame["abs_path"])
                    values.add(frame["filename"])
                else:
                    values.add(frame[key])
        values.discard(None)
    else:
        value = _text(event.get(key), MAX_TEXT)
        values = {value} if value is not None else set()
    cache[key] = values
    return values


def _first_rule(rules, event, chain, main_type):
    cache = {}
    tags = None
    for rule in rules:
        matchers, tag_matchers, _, _ = rule
        matched = True
        for key, matcher in matchers:
            if not any(matcher(value) for value in _candidates(key, event, chain, main_type, cache)):
                matched = False
                break
        if matched and tag_matchers:
            if tags is None:
                tags = _tags_of(event.get("tags"))
            for name, matcher in tag_matchers:
                value = tags.get(name)
                if value is None or not matcher(value):
                    matched = False
                    break
        if matched:
            return rule
    return None


# ---------------------------------------------------------------------------- results


def _cut(text, limit):
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _culprit(frames):
    if not frames:
        return None
    frame = next((f for f in reversed(frames) if f["in_app"] is True), frames[-1])
    where = frame["module"] or frame["filename"] or frame["abs_path"]
    function = frame["function"]
    if where and function:
        return _cut(f"{where} in {function}", MAX_TITLE)
    return _cut(where or function, MAX_TITLE) if where or function else None


def _title(exc_type, message):
    lines = _message_lines(message, 1)
    first = parameterize(lines[0]) if lines else ""
    if exc_type and first:
        title = f"{exc_type}: {first}"
    else:
        title = exc_type or first or DEFAULT_TYPE
    return _cut(" ".join(title.split()), MAX_TITLE)


def _result(method, inputs, exc_type, message, frames, group_title):
    joined = "\n".join(inputs).encode("utf-8", "surrogatepass")
    return {
        "fingerprint": hashlib.sha256(joined).hexdigest(),
        "fingerprint_version": FINGERPRINT_VERSION,
        "method": method,
        "inputs": inputs,
        "exception_type": exc_type or DEFAULT_TYPE,
        "message": message or "",
        "title": _title(exc_type, message),
        "culprit": _culprit(frames),
        "frames": frames or [],
        "group_title": group_title,
    }


def _fallback_result():
    return _result("fallback", [NO_TYPE, NO_MESSAGE], None, None, None, None)


def _fingerprint(event, rules):
    if type(event) is not dict:
        return _fallback_result()
    chain, group_message = _extract(event)
    main = chain[-1] if chain else None
    main_type = main["type"] if main else None
    message = main["message"] if main else None
    frames = main["frames"] if main else None
    group_title = None
    default = None
    parts = _explicit_parts(event.get("fingerprint"))
    if parts is not None and all(_is_default(part) for part in parts):
        parts = None
    if parts is not None:
        method = "explicit"
        if any(_is_default(part) for part in parts):
            default = _default_inputs(chain, main_type, group_message)[1]
        inputs = _expand(parts, default)
    else:
        rule = _first_rule(rules, event, chain, main_type or DEFAULT_TYPE) if rules else None
        method, default = _default_inputs(chain, main_type, group_message)
        inputs = default
        if rule is not None:
            group_title = rule[3]
            if rule[2] is not None:
                method = "rule"
                inputs = _expand(rule[2], default)
    return _result(method, inputs, main_type, message, frames, group_title)


def _fingerprint_safe(event, rules):
    try:
        return _fingerprint(event, rules)
    except Exception:  # an event must never fail the batch
        return _fallback_result()


def fingerprint_event(event: dict, rules: list[dict]) -> dict:
    """The result object (see the module docstring) for one event dict and a list of rule dicts."""
    try:
        compiled = compile_rules(rules) if rules else []
    except Exception:
        compiled = []
    return _fingerprint_safe(event, compiled)


# ---------------------------------------------------------------------------- JSON entry


def _split_json(text):
    """Top-level item texts of a JSON array or object, found without parsing them."""
    items = []
    depth = 0
    start = 0
    for match in _JSON_TOKEN.finditer(text):
        char = text[match.start()]
        if char == '"':
            continue
        if char in "[{":
            depth += 1
            if depth == 1:
                start = match.end()
        elif char in "]}":
            if depth == 1:
                items.append(text[start:match.start()])
            depth -= 1
            if depth <= 0:
                break
        elif depth == 1:
            items.append(text[start:match.start()])
            start = match.end()
    else:
        if depth >= 1:  # truncated: the unfinished last item
            items.append(text[start:])
    return [item for item in items if item.strip()]


def _lenient_object(text):
    """An object whose members that fail to parse (too deep, huge numbers) are left out."""
    result = {}
    for member in _split_json(text):
        match = _JSON_KEY.match(member)
        if match is None:
            continue
        try:
            result[json.loads(match.group(1))] = json.loads(member[match.end():])
        except (ValueError, RecursionError):
            continue
    return result


def _lenient_value(text):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _lenient_object(text) if text.lstrip().startswith("{") else None


def _load_events(text):
    if text is None:
        return []
    if type(text) is list:
        return text
    if type(text) is not str:
        return [text]
    try:
        events = json.loads(text)
    except (ValueError, RecursionError):
        stripped = text.lstrip()
        if stripped.startswith("["):
            return [_lenient_value(item) for item in _split_json(stripped)]
        return [_lenient_value(stripped)]
    return events if type(events) is list else [events]


def _load_rules(text):
    if text is None or type(text) is list:
        return text or []
    try:
        return json.loads(text)
    except (ValueError, RecursionError, TypeError):
        return []


def _dump(results):
    out = json.dumps(results, separators=(",", ":"))
    if "\\ud" in out and _LONE_SURROGATE.search(out):  # lone surrogates (from "\ud800" escapes) are not valid in jsonb
        raw = json.dumps(results, ensure_ascii=False).encode("utf-8", "replace").decode("utf-8")
        out = json.dumps(json.loads(raw), separators=(",", ":"))
    return out


def fingerprint_events_json(p_events: str, p_rules: str) -> str:
    """JSON array of results, one per event of the JSON array p_events, in order. p_rules is
    a JSON array of rules (or null)."""
    try:
        rules = compile_rules(_load_rules(p_rules))
    except Exception:
        rules = []
    try:
        events = _load_events(p_events)
    except Exception:
        events = [None]
    return _dump([_fingerprint_safe(event, rules) for event in events])

return fingerprint_events_json(p_events, p_rules)
$pyfn$;
-- from plpython/notify_send.py
CREATE OR REPLACE FUNCTION monitoring._send_notifications(p_messages jsonb, p_max_parallel integer) RETURNS jsonb LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp
AS $pyfn$
# pg_observe:function monitoring._send_notifications(p_messages jsonb, p_max_parallel integer) RETURNS jsonb LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp  # noqa: E501
# pg_observe:entry send_all(p_messages, p_max_parallel)
"""Sends a batch of notifications (email, Slack, generic webhook, PagerDuty) and reports each.

Input, JSON text of an array of messages:
    {"id": 17, "channel_type": "email" | "slack" | "webhook" | "pagerduty",
     "config": {...channel settings, may hold secrets...}, "notification": {...payload...},
     "timeout": 10.0}                     seconds per network operation, clamped to [0.1, 60]
Output, JSON text of an array of results in the input's order:
    {"id": 17, "ok": bool, "error": null | short text, "recipient": text | null,
     "status_code": int | null, "duration_ms": float, "attempted": bool}

- A bad message (unknown channel_type, missing or ill-typed settings) gets ok=false and
  attempted=true; nothing raises out of send_all for a single message.
- Messages are grouped by destination (scheme+host+port, or SMTP host+port). A destination's
  messages go one after another in one worker thread, up to p_max_parallel (1..32)
  destinations at once. After a connection failure or timeout the destination's remaining
  messages of this batch are not attempted (attempted=false), so a dead receiver costs one
  timeout, and delays no other destination. HTTP error statuses do not cause this.
- Secrets (passwords, tokens, routing keys, header values, Slack webhook paths, URL
  credentials and query strings) never appear in "error" or "recipient".
- Standard library only: PL/Python runs the server's own python3. There is no database access
  here (the worker threads must never touch plpy), and all threads are joined before returning.
- A running batch cannot be cancelled from SQL: its length is bounded by the timeouts.
"""


import base64
import concurrent.futures
import email.message
import email.policy
import email.utils
import hashlib
import hmac
import html
import http.client
import json
import math
import re
import signal
import smtplib
import ssl
import time
import urllib.parse

DEFAULT_TIMEOUT = 10.0
MIN_TIMEOUT = 0.1
MAX_TIMEOUT = 60.0
DEFAULT_PARALLEL = 4
MAX_PARALLEL = 32
MAX_ERROR = 500
MAX_RESPONSE = 65536
MAX_STATUS_BODY = 200
MAX_SUBJECT = 200
MAIL_STACK = 20000
MAIL_MESSAGE = 10000
SLACK_HEADER = 150
SLACK_TEXT = 2900
SLACK_STACK = 500
SLACK_FIELD = 200
PD_SUMMARY = 1024
PD_STACK = 1000
# PagerDuty refuses events over 512 KB: long strings in custom_details are cut to this.
PD_DETAIL = 10000
DEFAULT_SUBJECT = "[{environment}] {error_type}: {error_message}"
DEFAULT_FROM = "pg_observe@localhost"
DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
WEBHOOK_METHODS = ("POST", "PUT", "PATCH")
SEVERITIES = ("debug", "info", "warning", "error", "fatal")
SEVERITY_COLOURS = {
    "fatal": "#7b1fa2",
    "error": "#d32f2f",
    "warning": "#f9a825",
    "info": "#1976d2",
    "debug": "#757575",
}
SLACK_EMOJI = {"fatal": "🔴", "error": "🔴", "warning": "🟡", "info": "🔵", "debug": "🔵"}
PD_SEVERITY = {"fatal": "critical", "error": "error", "warning": "warning", "info": "info", "debug": "info"}
PD_LEVELS = ("critical", "error", "warning", "info")
NOTIFICATION_FIELDS = (
    "idempotency_key", "notification_trigger", "threshold", "config_id", "error_id", "error_fingerprint",
    "error_type", "error_message", "title", "culprit", "severity", "occurrence_count", "affected_users",
    "first_seen", "last_seen", "environment", "release_version", "service", "server_name", "occurrence_id",
    "trace_id", "stack_trace", "queued_at",
)  # fmt: skip
# Set by the sender itself: configured headers cannot replace them.
PROTECTED_HEADERS = frozenset((
    "content-type", "content-length", "transfer-encoding", "host", "connection", "idempotency-key",
    "x-pgobserve-idempotency-key", "x-pgobserve-signature", "x-pgobserve-trigger",
))  # fmt: skip
TRUE_WORDS = ("true", "on", "yes", "1")
FALSE_WORDS = ("false", "off", "no", "0")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_RUNS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\s]+")
_CONTROL_NOT_NL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
_ADDR_SPEC = re.compile(r"^[^@\s,;:<>()\[\]\\\"]+@[^@\s,;:<>()\[\]\\\"]+$")
_MSGID_LEFT = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_SECRET_KEY = re.compile(r"pass|secret|token|key|auth|credential|signature", re.IGNORECASE)
_PARTIAL_ENTITY = re.compile(r"&[a-z]*$")
_FENCE = re.compile(r"`{3,}")
_URL_SAFE = "".join(chr(c) for c in range(33, 127))


class SendError(Exception):
    """A message failed. connection=True: the destination is unreachable or too slow, so the
    rest of its messages in this batch are skipped."""

    def __init__(self, text: str, status_code: int | None = None, connection: bool = False):
        super().__init__(text)
        self.text = text
        self.status_code = status_code
        self.connection = connection


class TemplateValues(dict):
    """Subject placeholders: an unknown name is left as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


# ------------------------------------------------------------------------------------ text


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    return str(value)


def _flat(value: object, limit: int | None = None) -> str:
    """One line: CR, LF, NUL and other control characters become spaces, runs collapse."""
    text = _text(value)
    if limit is not None:
        text = text[: limit * 4 + 64]  # a 1 MB value is not scanned whole for a short line
    text = _CONTROL_RUNS.sub(" ", text).strip()
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _multiline(value: object, limit: int, what: str) -> str:
    """Keeps line breaks and tabs, drops other control characters, cuts with a marker."""
    text = _text(value)
    extra = len(text) - limit
    text = _CONTROL_NOT_NL.sub(" ", text[:limit].replace("\r\n", "\n").replace("\r", "\n"))
    if extra > 0:
        text += f"\n[… {what} truncated: {extra} more characters]"
    return text


def _redact(text: str, secrets: tuple | list) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, "[redacted]")
    return text


def _error_text(text: str, secrets: tuple | list) -> str:
    # Redacted before and after flattening, and before cutting: no part of a secret survives.
    text = _redact(_flat(_redact(_text(text), secrets)), secrets)
    return _flat(text, MAX_ERROR) or "failed"


def _json_default(value: object) -> object:
    # jsonb_plpython transforms hand numbers over as Decimal.
    if hasattr(value, "as_integer_ratio") and hasattr(value, "is_finite") and value.is_finite():
        return int(value) if value == int(value) else float(value)
    return str(value)


def _json_bytes(value: object) -> bytes:
    kwargs = {"separators": (",", ":"), "sort_keys": True, "default": _json_default}
    try:
        return json.dumps(value, ensure_ascii=False, **kwargs).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: \u escapes are still valid JSON
        return json.dumps(value, ensure_ascii=True, **kwargs).encode("ascii")


# ---------------------------------------------------------------------------------- config


def _str(config: dict, *keys: str, required: bool = False, default: str | None = None) -> str | None:
    """The first of keys (aliases) that is set; must be a string."""
    for key in keys:
        value = config.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise SendError(f"config {key} must be a string")
        return value
    if required:
        raise SendError(f"config {keys[0]} is required")
    return default


def _bool(config: dict, key: str, default: bool) -> bool:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise SendError(f"config {key} must be true or false")


def _port(config: dict, key: str, default: int) -> int:
    value = config.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise SendError(f"config {key} must be a port number (1 to 65535)")
    return value


def _timeout(value: object) -> float:
    try:
        seconds = float(value) if value is not None and not isinstance(value, bool) else DEFAULT_TIMEOUT
    except (TypeError, ValueError):
        seconds = DEFAULT_TIMEOUT
    if math.isnan(seconds):
        seconds = DEFAULT_TIMEOUT
    return min(max(seconds, MIN_TIMEOUT), MAX_TIMEOUT)


def _parallel(value: object) -> int:
    try:
        n = int(value) if value is not None and not isinstance(value, bool) else DEFAULT_PARALLEL
    except (TypeError, ValueError, OverflowError):
        n = DEFAULT_PARALLEL
    return min(max(n, 1), MAX_PARALLEL)


def _tls_context(config: dict, cache: dict) -> ssl.SSLContext:
    """Built before any connection, so that a bad tls_ca_file is a setting error. Loading the
    system's trust store takes ~20 ms, so a batch shares one context per setting (contexts are
    safe to share between threads)."""
    verify = _bool(config, "tls_verify", True)
    ca_file = _str(config, "tls_ca_file")
    if (verify, ca_file) in cache:
        return cache[verify, ca_file]
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ValueError) as exc:
        raise SendError(f"config tls_ca_file could not be loaded: {getattr(exc, 'strerror', None) or exc}") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    cache[verify, ca_file] = context
    return context


def _config_secrets(channel_type: object, config: dict) -> list:
    """Every value that must not be shown: secret-named settings, header values, the
    credentials and query of URLs, and a Slack webhook's path (it is the credential)."""
    secrets = []
    for key, value in config.items():
        if isinstance(value, str) and _SECRET_KEY.search(str(key)):
            secrets.append(value)
    headers = config.get("headers")
    if isinstance(headers, dict):
        secrets.extend(v for v in headers.values() if isinstance(v, str))
    for key in ("url", "webhook_url", "events_url"):
        url = config.get(key)
        if not isinstance(url, str):
            continue
        try:
            parts = urllib.parse.urlsplit(url)
            secrets.extend(s for s in (parts.password, parts.query, parts.fragment) if s)
            secrets.extend(v for _, v in urllib.parse.parse_qsl(parts.query) if len(v) >= 4)
            if parts.username and parts.password:
                secrets.append(f"{parts.username}:{parts.password}")
        except ValueError:
            parts = None
        if channel_type == "slack":
            path = parts.path if parts else url
            secrets.append(path)
            secrets.extend(seg for seg in path.split("/") if len(seg) >= 6)
    password = config.get("smtp_password")
    if isinstance(password, str) and password:
        user = config.get("smtp_user") if isinstance(config.get("smtp_user"), str) else ""
        for raw in (password, f"\0{user}\0{password}"):
            secrets.append(base64.b64encode(raw.encode("utf-8", "replace")).decode("ascii"))
    # Longest first, so that a secret containing another is replaced whole.
    return sorted({s for s in secrets if isinstance(s, str) and s}, key=len, reverse=True)


# ---------------------------------------------------------------------------- notification


def _severity(n: dict) -> str:
    value = n.get("severity")
    value = value.strip().lower() if isinstance(value, str) else ""
    return {"critical": "fatal", "warn": "warning", "err": "error"}.get(
        value, value if value in SEVERITIES else "error"
    )


def _error_type(n: dict) -> str:
    return _flat(n.get("error_type"), 300) or _flat(n.get("title"), 300) or "Error"


def _summary(n: dict, limit: int) -> str:
    """One line: "[env] Type: message"."""
    message = _flat(n.get("error_message"), limit) or _flat(n.get("title"), limit)
    text = _error_type(n) + (f": {message}" if message else "")
    env = _flat(n.get("environment"), 100)
    return _flat(f"[{env}] {text}" if env else text, limit)


def _shown(value: object, limit: int = 300) -> str:
    return _flat(value, limit) or "-"


def _details(n: dict) -> list:
    return [
        ("Environment", n.get("environment")),
        ("Severity", _severity(n)),
        ("Occurrences", n.get("occurrence_count")),
        ("Affected users", n.get("affected_users")),
        ("First seen", n.get("first_seen")),
        ("Last seen", n.get("last_seen")),
        ("Release", n.get("release_version")),
        ("Service", n.get("service")),
        ("Server", n.get("server_name")),
        ("Culprit", n.get("culprit")),
        ("Trigger", n.get("notification_trigger")),
        ("Error id", n.get("error_id")),
        ("Fingerprint", n.get("error_fingerprint")),
    ]


# -------------------------------------------------------------------------------------- HTTP


def _parse_url(url: str, key: str) -> dict:
    if any(c.isspace() or _CONTROL.match(c) for c in url):
        raise SendError(f"config {key} contains spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise SendError(f"config {key} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise SendError(f"config {key} must be an http or https URL")
    if not host:
        raise SendError(f"config {key} has no host")
    default_port = 443 if scheme == "https" else 80
    port = port or default_port
    bracketed = f"[{host}]" if ":" in host else host
    netloc = bracketed if port == default_port else f"{bracketed}:{port}"
    target = urllib.parse.quote(parts.path or "/", safe=_URL_SAFE)
    if parts.query:
        target += "?" + urllib.parse.quote(parts.query, safe=_URL_SAFE)
    auth = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {
        "scheme": scheme,
        "host": host,
        "port": port,
        "target": target,
        "netloc": netloc,
        "destination": f"{scheme}://{bracketed}:{port}",
        "public": f"{scheme}://{netloc}{urllib.parse.quote(parts.path, safe=_URL_SAFE)}",
        "auth": auth,
    }


def _os_reason(exc: OSError) -> str:
    return _flat(exc.strerror or str(exc) or type(exc).__name__, 200)


def _http_send(job: dict) -> int:
    """One request on its own connection; returns the 2xx status or raises SendError."""
    url, timeout = job["url"], job["timeout"]
    if url["scheme"] == "https":
        conn = http.client.HTTPSConnection(url["host"], url["port"], timeout=timeout, context=job["tls"])
    else:
        conn = http.client.HTTPConnection(url["host"], url["port"], timeout=timeout)
    try:
        conn.request(job["method"], url["target"], body=job["body"], headers=job["headers"])
        response = conn.getresponse()
        data = response.read(MAX_RESPONSE)
        status = response.status
    except TimeoutError:
        raise SendError(f"timed out after {timeout:g}s", connection=True) from None
    except ssl.SSLCertVerificationError as exc:
        raise SendError(f"TLS certificate verification failed: {exc.verify_message}", connection=True) from None
    except ssl.SSLError as exc:
        raise SendError(f"TLS error: {exc.reason or exc}", connection=True) from None
    except OSError as exc:  # refused, reset, unreachable, name not resolved, closed without answer
        raise SendError(f"connection failed: {_os_reason(exc)}", connection=True) from None
    except http.client.HTTPException as exc:
        raise SendError(f"invalid HTTP response: {type(exc).__name__}") from None
    finally:
        conn.close()
    if 200 <= status < 300:
        return status
    # Redacted before the cut: a receiver may echo what it was sent.
    snippet = _redact(data[:4096].decode("utf-8", "replace"), job["secrets"])
    snippet = _flat(snippet, MAX_STATUS_BODY)
    note = " (redirects are not followed)" if 300 <= status < 400 else ""
    raise SendError(f"HTTP {status}{note}: {snippet}" if snippet else f"HTTP {status}{note}", status_code=status)


def _http_job(url: dict, method: str, body: bytes, headers: dict, config: dict, timeout: float, tls: dict) -> dict:
    if url["auth"] and not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = url["auth"]
    return {
        "destination": url["destination"],
        "url": url,
        "method": method,
        "body": body,
        "headers": headers,
        "timeout": timeout,
        "tls": _tls_context(config, tls) if url["scheme"] == "https" else None,
        "send": _http_send,
    }


def _header_value(value: object, limit: int) -> str:
    # http.client sends headers as Latin-1: anything else is percent-encoded.
    text = _flat(value, limit)
    return text if text.isascii() else urllib.parse.quote(text, safe=_URL_SAFE)


def _base_headers(n: dict) -> dict:
    headers = {"Content-Type": "application/json", "User-Agent": "pg_observe"}
    key = _header_value(n.get("idempotency_key"), 200)
    if key:
        headers["Idempotency-Key"] = key
        headers["X-PgObserve-Idempotency-Key"] = key
    trigger = _header_value(n.get("notification_trigger"), 100)
    if trigger:
        headers["X-PgObserve-Trigger"] = trigger
    return headers


# ----------------------------------------------------------------------------------- webhook


def _prepare_webhook(config: dict, n: dict, timeout: float, tls: dict) -> dict:
    url = _parse_url(_str(config, "url", "webhook_url", required=True), "url")
    method = config.get("method")
    method = "POST" if method is None or method == "" else method
    if not isinstance(method, str) or method.strip().upper() not in WEBHOOK_METHODS:
        raise SendError(f"config method {_flat(method, 20)!r} is not allowed (POST, PUT or PATCH)")
    extra = config.get("headers")
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise SendError("config headers must be an object of header names to string values")
    secret = _str(config, "secret", "signing_secret")

    body = _json_bytes(n)
    headers = _base_headers(n)
    for name, value in extra.items():
        if not _HEADER_NAME.match(name):
            raise SendError(f"config headers: invalid header name {_flat(name, 60)!r}")
        if not isinstance(value, str):
            raise SendError(f"config headers: the value of {name} must be a string")
        if _CONTROL.search(value.replace("\t", " ")):
            raise SendError(f"config headers: the value of {name} contains CR, LF or other control characters")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise SendError(f"config headers: the value of {name} must be Latin-1 text") from None
        if name.lower() in PROTECTED_HEADERS:
            continue
        for existing in [k for k in headers if k.lower() == name.lower()]:
            del headers[existing]
        headers[name] = value
    if secret:
        digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
        headers["X-PgObserve-Signature"] = f"sha256={digest}"
    job = _http_job(url, method.strip().upper(), body, headers, config, timeout, tls)
    job["recipient"] = url["public"]
    return job


# ------------------------------------------------------------------------------------- slack


def _slack_escape(value: object, limit: int, multiline: bool = True) -> str:
    text = _multiline(value, limit, "text") if multiline else _flat(value, limit)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if len(text) > limit:  # escaping lengthened it: cut without splitting an entity
        text = _PARTIAL_ENTITY.sub("", text[: limit - 1]) + "…"
    return text


def _slack_payload(config: dict, n: dict) -> dict:
    severity = _severity(n)
    emoji = SLACK_EMOJI[severity]
    summary = _summary(n, 2000)
    message = n.get("error_message") or n.get("title")
    fields = [
        ("Environment", n.get("environment")),
        ("Severity", severity),
        ("Occurrences", n.get("occurrence_count")),
        ("First seen", n.get("first_seen")),
        ("Last seen", n.get("last_seen")),
        ("Release", n.get("release_version")),
    ]
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": _flat(f"{emoji} {_error_type(n)}", SLACK_HEADER)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(message, SLACK_TEXT) or "(no message)"}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{label}*\n{_slack_escape(_shown(value), SLACK_FIELD, False)}"}
                for label, value in fields
            ],
        },
    ]
    stack = _text(n.get("stack_trace"))
    if stack.strip():
        preview = _multiline(stack[:SLACK_STACK], SLACK_STACK, "stack trace")
        # Backticks in a run of three would close the fence: split them with zero-width spaces.
        preview = _FENCE.sub(lambda m: "\u200b".join(m.group(0)), preview)
        preview = preview.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```\n{preview}\n```"}})
    footer = [f"pg_observe · {_flat(n.get('notification_trigger'), 40) or 'notification'}"]
    for label, key in (("error id", "error_id"), ("fingerprint", "error_fingerprint"), ("key", "idempotency_key")):
        value = _flat(n.get(key), 200)
        if value:
            footer.append(f"{label}: {value}")
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": _slack_escape(t, 300, False)} for t in footer],
        }
    )
    payload = {"text": _slack_escape(f"{emoji} {summary}", 3000, False), "blocks": blocks}
    for key in ("channel", "username", "icon_emoji"):
        value = _str(config, key)
        if value:
            payload[key] = _flat(value, 200)
    return payload


def _prepare_slack(config: dict, n: dict, timeout: float, tls: dict) -> dict:
    url = _parse_url(_str(config, "webhook_url", "url", required=True), "webhook_url")
    body = json.dumps(_slack_payload(config, n), ensure_ascii=True, default=_json_default).encode("ascii")
    job = _http_job(url, "POST", body, _base_headers(n), config, timeout, tls)
    # The webhook's path is its credential: show the host (and channel) only.
    channel = _flat(config.get("channel"), 100) if isinstance(config.get("channel"), str) else ""
    job["recipient"] = f"slack:{url['netloc']}" + (f" {channel}" if channel else "")
    return job


# --------------------------------------------------------------------------------- pagerduty


def _pd_details(n: dict) -> dict:
    details = {}
    for key, value in n.items():
        if key == "stack_trace":
            continue
        if isinstance(value, str) and len(value) > PD_DETAIL:
            value = value[:PD_DETAIL] + f" [… truncated: {len(value) - PD_DETAIL} more characters]"
        details[key] = value
    details["stack_preview"] = _text(n.get("stack_trace"))[:PD_STACK]
    return details


def _prepare_pagerduty(config: dict, n: dict, timeout: float, tls: dict) -> dict:
    routing_key = _str(config, "routing_key", "integration_key", required=True)
    url = _parse_url(_str(config, "events_url", default=DEFAULT_EVENTS_URL), "events_url")
    severity_map = dict(PD_SEVERITY)
    custom = config.get("severity_map")
    if custom is not None:
        if not isinstance(custom, dict) or not all(isinstance(v, str) and v in PD_LEVELS for v in custom.values()):
            raise SendError("config severity_map must map severities to critical, error, warning or info")
        severity_map.update({str(k).lower(): v for k, v in custom.items()})
    severity = _severity(n)
    raw_severity = n.get("severity").strip().lower() if isinstance(n.get("severity"), str) else ""
    pd_severity = severity_map.get(raw_severity) or severity_map.get(severity) or "error"
    source = (
        _flat(_str(config, "source"), 255)
        or _flat(n.get("server_name"), 255)
        or _flat(n.get("service"), 255)
        or _flat(n.get("environment"), 255)
        or "pg_observe"
    )
    payload = {"summary": _summary(n, PD_SUMMARY), "source": source, "severity": pd_severity}
    for pd_key, key in (("timestamp", "last_seen"), ("component", "service"), ("group", "environment")):
        value = _flat(n.get(key), 255)
        if value:
            payload[pd_key] = value
    error_type = _flat(n.get("error_type"), 255)
    if error_type:
        payload["class"] = error_type
    payload["custom_details"] = _pd_details(n)
    event = {"routing_key": routing_key, "event_action": "trigger", "client": "pg_observe", "payload": payload}
    group = _flat(n.get("error_fingerprint"), 200) or _flat(n.get("error_id"), 200)
    if group:
        event["dedup_key"] = f"pg_observe-{group}"
    body = _json_bytes(event)
    headers = {k: v for k, v in _base_headers(n).items() if k != "X-PgObserve-Trigger"}
    job = _http_job(url, "POST", body, headers, config, timeout, tls)
    job["recipient"] = f"pagerduty:{url['netloc']}"
    return job


# ------------------------------------------------------------------------------------- email


def _address(raw: object, key: str) -> tuple:
    """(display name, addr-spec) of one address, or SendError."""
    if not isinstance(raw, str) or not raw.strip():
        raise SendError(f"config {key}: each address must be a non-empty string")
    if _CONTROL.search(raw):
        raise SendError(f"config {key}: an address contains control characters")
    pairs = email.utils.getaddresses([raw])
    if len(pairs) != 1 or not _ADDR_SPEC.match(pairs[0][1]) or len(pairs[0][1]) > 320:
        raise SendError(f"config {key}: {_flat(raw, 100)!r} is not one email address (use an array for several)")
    return pairs[0]


def _addresses(value: object, key: str, required: bool = False) -> list:
    if value is None or value == "" or value == []:
        if required:
            raise SendError(f"config {key} is required")
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise SendError(f"config {key} must be a string or an array of strings")
    return [_address(v, key) for v in value]


def _header_list(pairs: list) -> str:
    return ", ".join(email.utils.formataddr(p) for p in pairs)


def _subject(template: str, n: dict) -> str:
    values = TemplateValues({k: _flat(v, 300) for k, v in n.items() if isinstance(k, str)})
    for key in NOTIFICATION_FIELDS:
        values.setdefault(key, "")
    values["count"] = values["occurrence_count"]
    values["severity"] = values["severity"] or _severity(n)
    try:
        text = template.format_map(values)
    except (ValueError, KeyError, IndexError, AttributeError, TypeError):
        text = template
    return _flat(text, MAX_SUBJECT) or "pg_observe notification"


def _message_id(key: object) -> str:
    """<key@pg-observe>: the same for every attempt, so receivers drop duplicates."""
    key = _flat(key, 1000)
    if not key:
        return email.utils.make_msgid(domain="pg-observe")
    if len(key) > 200 or not _MSGID_LEFT.match(key):
        key = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()
    return f"<{key}@pg-observe>"


def _mail_bodies(n: dict) -> tuple:
    severity = _severity(n)
    colour = SEVERITY_COLOURS[severity]
    headline = _error_type(n)
    message = _multiline(n.get("error_message") or n.get("title"), MAIL_MESSAGE, "message")
    stack = _multiline(n.get("stack_trace"), MAIL_STACK, "stack trace") if n.get("stack_trace") else ""
    details = [(label, _shown(value)) for label, value in _details(n)]
    key = _flat(n.get("idempotency_key"), 200)

    plain = [f"{severity.upper()}: {headline}", "", message, ""]
    plain += [f"{label}: {value}" for label, value in details]
    if stack:
        plain += ["", "Stack trace:", stack]
    plain += ["", "-- ", f"Sent by pg_observe. Idempotency key: {key or '-'}"]

    esc = html.escape
    rows = "".join(
        f'<tr><th style="text-align:left;padding:2px 12px 2px 0;color:#555">{esc(label)}</th>'
        f'<td style="padding:2px 0">{esc(value)}</td></tr>'
        for label, value in details
    )
    parts = [
        '<!DOCTYPE html><html><body style="font-family:sans-serif;font-size:14px">',
        f'<div style="border-left:6px solid {colour};padding:8px 12px">',
        f'<div style="color:{colour};font-weight:bold;text-transform:uppercase">{esc(severity)}</div>',
        f'<h2 style="margin:4px 0">{esc(headline)}</h2>',
        f'<p style="white-space:pre-wrap">{esc(message)}</p>',
        "</div>",
        f'<table style="border-collapse:collapse;margin:12px 0">{rows}</table>',
    ]
    if stack:
        parts.append(
            '<h3>Stack trace</h3><pre style="background:#f5f5f5;padding:8px;overflow:auto;font-size:12px">'
            f"{esc(stack)}</pre>"
        )
    parts.append(f'<p style="color:#888;font-size:12px">Sent by pg_observe. Idempotency key: {esc(key or "-")}</p>')
    parts.append("</body></html>")
    return "\n".join(plain) + "\n", "\n".join(parts) + "\n"


def _build_email(config: dict, n: dict, sender: tuple, to: list, cc: list) -> email.message.EmailMessage:
    template = config.get("subject")
    if template is None or template == "":
        template = DEFAULT_SUBJECT
    if not isinstance(template, str):
        raise SendError("config subject must be a string")
    reply_to = _addresses(config.get("reply_to"), "reply_to")
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["Subject"] = _subject(template, n)
    msg["From"] = email.utils.formataddr(sender)
    msg["To"] = _header_list(to)
    if cc:
        msg["Cc"] = _header_list(cc)
    if reply_to:
        msg["Reply-To"] = _header_list(reply_to)
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = _message_id(n.get("idempotency_key"))
    msg["Auto-Submitted"] = "auto-generated"
    for header, key in (
        ("X-PgObserve-Idempotency-Key", "idempotency_key"),
        ("X-PgObserve-Error-Id", "error_id"),
        ("X-PgObserve-Trigger", "notification_trigger"),
    ):
        value = _flat(n.get(key), 200)
        if value:
            msg[header] = value
    plain, rich = _mail_bodies(n)
    msg.set_content(plain)
    msg.add_alternative(rich, subtype="html")
    return msg


def _smtp_reply(exc: smtplib.SMTPResponseException) -> str:
    reply = exc.smtp_error
    reply = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else _text(reply)
    return f"{exc.smtp_code} {_flat(reply, 200)}"


def _smtp_send(job: dict) -> int:
    timeout = job["timeout"]
    client = None
    healthy = False  # whether the server still answers, so that QUIT is worth sending
    try:
        if job["use_ssl"]:
            client = smtplib.SMTP_SSL(
                job["host"], job["port"], local_hostname=job["helo"], timeout=timeout, context=job["tls"]
            )
        else:
            client = smtplib.SMTP(job["host"], job["port"], local_hostname=job["helo"], timeout=timeout)
        healthy = True
        client.ehlo()
        if job["use_tls"]:
            if not client.has_extn("starttls"):
                raise SendError("the SMTP server does not offer STARTTLS (use_tls)")
            client.starttls(context=job["tls"])
            client.ehlo()
        if job["user"]:
            client.login(job["user"], job["password"] or "")
        refused = client.send_message(job["message"], job["from"], job["rcpt"])
        if refused:  # some recipients accepted: still a failure to report
            addr, (code, reply) = next(iter(refused.items()))
            reply = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else _text(reply)
            raise SendError(f"recipient {addr} refused: {code} {_flat(reply, 200)}", status_code=code)
        return 250
    except SendError:
        raise
    except TimeoutError:
        healthy = False
        raise SendError(f"timed out after {timeout:g}s", connection=True) from None
    except smtplib.SMTPServerDisconnected as exc:
        healthy = False
        if isinstance(exc.__context__, TimeoutError):  # smtplib wraps a timeout in a reply
            raise SendError(f"timed out after {timeout:g}s", connection=True) from None
        raise SendError(f"connection failed: {_flat(exc, 200) or 'server disconnected'}", connection=True) from None
    except smtplib.SMTPConnectError as exc:
        healthy = False
        raise SendError(f"SMTP server refused the connection: {_smtp_reply(exc)}", exc.smtp_code, True) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise SendError(f"SMTP authentication failed: {_smtp_reply(exc)}", status_code=exc.smtp_code) from None
    except smtplib.SMTPRecipientsRefused as exc:
        addr, (code, reply) = next(iter(exc.recipients.items()))
        reply = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else _text(reply)
        raise SendError(f"recipient {addr} refused: {code} {_flat(reply, 200)}", status_code=code) from None
    except smtplib.SMTPResponseException as exc:
        raise SendError(f"SMTP error: {_smtp_reply(exc)}", status_code=exc.smtp_code) from None
    except smtplib.SMTPException as exc:
        raise SendError(f"SMTP error: {_flat(exc, 200) or type(exc).__name__}") from None
    except ssl.SSLCertVerificationError as exc:
        healthy = False
        raise SendError(f"TLS certificate verification failed: {exc.verify_message}", connection=True) from None
    except ssl.SSLError as exc:
        healthy = False
        raise SendError(f"TLS error: {exc.reason or exc}", connection=True) from None
    except OSError as exc:
        healthy = False
        raise SendError(f"connection failed: {_os_reason(exc)}", connection=True) from None
    finally:
        if client is not None:
            try:
                if healthy:
                    client.quit()
                else:
                    client.close()
            except (OSError, smtplib.SMTPException):
                client.close()


def _prepare_email(config: dict, n: dict, timeout: float, tls: dict) -> dict:
    host = _str(config, "smtp_host", default="localhost").strip()
    if not host or any(c.isspace() or _CONTROL.match(c) for c in host):
        raise SendError("config smtp_host is not a host name")
    use_ssl = _bool(config, "use_ssl", False)
    use_tls = _bool(config, "use_tls", False) and not use_ssl
    port = _port(config, "smtp_port", 465 if use_ssl else 587 if use_tls else 25)
    user = _str(config, "smtp_user")
    password = _str(config, "smtp_password")
    helo = _str(config, "helo_name")
    sender = _address(_str(config, "from_address", "from", default=DEFAULT_FROM), "from_address")
    to = _addresses(config.get("to"), "to", required=True)
    cc = _addresses(config.get("cc"), "cc")
    context = _tls_context(config, tls) if use_ssl or use_tls else None
    message = _build_email(config, n, sender, to, cc)
    rcpt = list(dict.fromkeys(addr for _, addr in to + cc))
    bracketed = f"[{host}]" if ":" in host else host
    return {
        "destination": f"smtp://{bracketed.lower()}:{port}",
        "recipient": ", ".join(rcpt),
        "host": host,
        "port": port,
        "use_ssl": use_ssl,
        "use_tls": use_tls,
        "tls": context,
        "user": user,
        "password": password,
        "helo": _flat(helo, 255) or None,
        "from": sender[1],
        "rcpt": rcpt,
        "message": message,
        "timeout": timeout,
        "send": _smtp_send,
    }


# ------------------------------------------------------------------------------------- batch


PREPARERS = {
    "email": _prepare_email,
    "slack": _prepare_slack,
    "webhook": _prepare_webhook,
    "pagerduty": _prepare_pagerduty,
}


def _result(
    job: dict,
    ok: bool,
    started: float,
    error: str | None = None,
    status_code: int | None = None,
    attempted: bool = True,
) -> dict:
    return {
        "id": job.get("id"),
        "ok": ok,
        "error": error,
        "recipient": job.get("recipient"),
        "status_code": status_code,
        "duration_ms": round((time.monotonic() - started) * 1000.0, 3),
        "attempted": attempted,
    }


def _prepare(message: object, tls: dict) -> dict:
    """Checks a message and builds its request; raises SendError for a bad one."""
    if not isinstance(message, dict):
        raise SendError("message must be a JSON object")
    config = message.get("config")
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise SendError("config must be a JSON object")
    notification = message.get("notification")
    notification = {} if notification is None else notification
    if not isinstance(notification, dict):
        raise SendError("notification must be a JSON object")
    channel_type = message.get("channel_type")
    preparer = PREPARERS.get(channel_type) if isinstance(channel_type, str) else None
    if preparer is None:
        raise SendError(f"unknown channel_type {_flat(channel_type, 60)!r} (email, slack, webhook or pagerduty)")
    return preparer(config, notification, _timeout(message.get("timeout")), tls)


def _send_group(destination: str, items: list) -> list:
    """Sends one destination's messages in order; after a connection failure the rest wait."""
    out = []
    failed = False
    for index, job in items:
        started = time.monotonic()
        if failed:
            text = f"not attempted: {destination} failed earlier in this batch"
            out.append((index, _result(job, False, started, text, attempted=False)))
            continue
        try:
            status = job["send"](job)
            out.append((index, _result(job, True, started, status_code=status)))
        except SendError as exc:
            failed = exc.connection
            error = _error_text(exc.text, job["secrets"])
            out.append((index, _result(job, False, started, error, exc.status_code)))
        except Exception as exc:  # a bug must cost one message, not the batch
            error = _error_text(f"internal error: {type(exc).__name__}: {exc}", job["secrets"])
            out.append((index, _result(job, False, started, error)))
    return out


def _load(p_messages: object) -> list:
    if p_messages is None:
        return []
    if isinstance(p_messages, (list, tuple)):  # a jsonb transform hands over Python values
        return list(p_messages)
    messages = json.loads(p_messages)
    if messages is None:
        return []
    if not isinstance(messages, list):
        raise ValueError("p_messages must be a JSON array of messages")
    return messages


def send_all(p_messages: str | None, p_max_parallel: int | None) -> str:
    """Sends every message and returns JSON text of their results, in the input's order."""
    messages = _load(p_messages)
    results: list = [None] * len(messages)
    groups: dict = {}
    tls: dict = {}
    for index, message in enumerate(messages):
        started = time.monotonic()
        base = {"id": message.get("id") if isinstance(message, dict) else None, "recipient": None}
        config = message.get("config") if isinstance(message, dict) else None
        channel_type = message.get("channel_type") if isinstance(message, dict) else None
        secrets = _config_secrets(channel_type, config) if isinstance(config, dict) else []
        try:
            job = _prepare(message, tls)
        except SendError as exc:
            results[index] = _result(base, False, started, _error_text(exc.text, secrets))
            continue
        except Exception as exc:  # never let one message fail the batch
            error = _error_text(f"invalid message: {type(exc).__name__}: {exc}", secrets)
            results[index] = _result(base, False, started, error)
            continue
        job["id"] = base["id"]
        job["secrets"] = secrets
        groups.setdefault(job["destination"], []).append((index, job))

    if groups:
        workers = min(_parallel(p_max_parallel), len(groups))
        # Worker threads inherit the signal mask: with every signal blocked while they are made,
        # PostgreSQL's handlers (cancel, timeouts) keep running in the backend's own thread.
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pg_observe_send")
        futures = []
        try:
            can_mask = hasattr(signal, "pthread_sigmask")
            old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals()) if can_mask else None
            try:
                futures = [pool.submit(_send_group, dest, items) for dest, items in groups.items()]
            finally:
                if can_mask:
                    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            for future, items in zip(futures, groups.values()):
                try:
                    for index, result in future.result():
                        results[index] = result
                except Exception as exc:  # _send_group catches everything; this is a last guard
                    for index, job in items:
                        error = _error_text(f"internal error: {type(exc).__name__}", job["secrets"])
                        results[index] = _result(job, False, time.monotonic(), error)
        finally:
            pool.shutdown(wait=True)
    return json.dumps(results, ensure_ascii=False)

return send_all(p_messages, p_max_parallel)
$pyfn$;
-- from plpython/otlp_traces.py
CREATE OR REPLACE FUNCTION monitoring._otlp_traces_to_spans(p_request jsonb) RETURNS jsonb LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $pyfn$
# pg_observe:function monitoring._otlp_traces_to_spans(p_request jsonb) RETURNS jsonb LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp  # noqa: E501
# pg_observe:entry convert_request(p_request)
"""Turns an OTLP/JSON ExportTraceServiceRequest into the flat spans of ingest_spans().

The OTLP/JSON encoding (opentelemetry-proto, docs/specification.md): resourceSpans[] with a
resource and scopeSpans[] (instrumentationLibrarySpans[] before OTLP 0.15), each with a scope
and spans[]; ids are hex strings, times are Unix nanoseconds as strings or numbers, enums are
integers (names accepted too), and attribute values are AnyValue objects. This converts the
structure only: validation (ids, times) stays in ingest_spans(), which keeps a span it cannot
store in rejected_telemetry. Whatever is not a span object is passed on as it is, to be kept
there too.
The input is JSON text (jsonb cast to text); the output is JSON text.
"""


import json
import math

try:  # inside PostgreSQL; outside (lint, unit tests) errors are plain exceptions
    import plpy
except ImportError:  # pragma: no cover
    plpy = None

MAX_DEPTH = 32
MAX_INT_DIGITS = 4000  # Python refuses to parse longer integers (sys.int_info.default_max_str_digits)


def _float_or_text(text: str) -> float | str:
    # jsonb holds 1e400, Python's float does not: such a number stays text rather than inf.
    value = float(text)
    return value if math.isfinite(value) else text


def any_value(value: object, depth: int = 0) -> object:
    """An OTLP AnyValue as a plain JSON value."""
    if not isinstance(value, dict):
        return value
    if depth > MAX_DEPTH:
        return "[nested too deep]"
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return value["boolValue"]
    if "intValue" in value:
        raw = value["intValue"]  # int64 as a string in OTLP/JSON
        try:
            return int(raw)
        except (TypeError, ValueError):
            return raw
    if "doubleValue" in value:
        raw = value["doubleValue"]
        if isinstance(raw, str):  # "NaN", "Infinity", "-Infinity", or a number as text
            try:
                return _float_or_text(raw)
            except ValueError:
                return raw
        return raw
    if "arrayValue" in value:
        items = (value["arrayValue"] or {}).get("values") or []
        return [any_value(item, depth + 1) for item in items] if isinstance(items, list) else items
    if "kvlistValue" in value:
        return key_values((value["kvlistValue"] or {}).get("values"), depth + 1)
    if "bytesValue" in value:
        return value["bytesValue"]  # base64, as OTLP/JSON carries it
    return None


def key_values(items: object, depth: int = 0) -> dict:
    """A list of OTLP KeyValue as one object (a later duplicate key wins, as in the SDKs)."""
    result: dict = {}
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                result[item["key"]] = any_value(item.get("value"), depth)
    return result


def _nanos(value: object) -> object:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def convert_span(span: object, resource: dict, scope: object) -> object:
    if not isinstance(span, dict):
        return span
    status = span.get("status") if isinstance(span.get("status"), dict) else {}
    events = span.get("events") if isinstance(span.get("events"), list) else []
    links = span.get("links") if isinstance(span.get("links"), list) else []
    flat = {
        "trace_id": span.get("traceId"),
        "span_id": span.get("spanId"),
        "parent_span_id": span.get("parentSpanId") or None,
        "trace_state": span.get("traceState") or None,
        "name": span.get("name"),
        "kind": span.get("kind"),
        "start_time_unix_nano": span.get("startTimeUnixNano"),
        "end_time_unix_nano": span.get("endTimeUnixNano"),
        "status_code": status.get("code"),
        "status_message": status.get("message") or None,
        "attributes": key_values(span.get("attributes")),
        "events": [
            {"name": event.get("name"), "time_unix_nano": _nanos(event.get("timeUnixNano")),
             "attributes": key_values(event.get("attributes"))}
            for event in events if isinstance(event, dict)
        ],
        "links": [
            {"trace_id": link.get("traceId"), "span_id": link.get("spanId"),
             "trace_state": link.get("traceState") or None, "attributes": key_values(link.get("attributes"))}
            for link in links if isinstance(link, dict)
        ],
        "resource": resource,
        "scope": scope,
    }
    return {key: value for key, value in flat.items() if value is not None}


def _int_or_text(text: str) -> int | str:
    return int(text) if len(text) <= MAX_INT_DIGITS else text


def _refuse(message: str) -> None:
    if plpy is not None:
        plpy.error(message, sqlstate="22023")
    raise ValueError(message)


def convert_request(p_request: str) -> str:
    try:
        request = json.loads(p_request, parse_float=_float_or_text, parse_int=_int_or_text)
    except RecursionError:
        _refuse("the OTLP request is nested too deeply to be read")
    groups = request.get("resourceSpans") if isinstance(request, dict) else None
    spans: list = []
    for resource_spans in groups if isinstance(groups, list) else []:
        if not isinstance(resource_spans, dict):
            continue
        resource_obj = resource_spans.get("resource") if isinstance(resource_spans.get("resource"), dict) else {}
        resource = key_values(resource_obj.get("attributes"))
        scope_groups = resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans") or []
        for scope_spans in scope_groups if isinstance(scope_groups, list) else []:
            if not isinstance(scope_spans, dict):
                continue
            scope_obj = scope_spans.get("scope") or scope_spans.get("instrumentationLibrary")
            scope = None
            if isinstance(scope_obj, dict) and (scope_obj.get("name") or scope_obj.get("version")):
                scope = {"name": scope_obj.get("name"), "version": scope_obj.get("version") or None}
            group = scope_spans.get("spans") or []
            group = group if isinstance(group, list) else [group]
            spans.extend(convert_span(span, resource, scope) for span in group)
    return json.dumps(spans, allow_nan=False, ensure_ascii=False)

return convert_request(p_request)
$pyfn$;

DO $search_path$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'monitoring'::regnamespace AND 'search_path=""' = ANY (p.proconfig)
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', fn);
    END LOOP;
END
$search_path$;

-- sql/900_privileges.sql
-- The privilege matrix, in one place (docs/roles.md explains it). Applied again by every
-- upgrade script, so it always describes the whole extension.
--   writer: capture and record only; no reading of stored data, no secrets
--   reader: read stored data and views; no secrets, no changes
--   admin:  everything, including workflow, configuration and maintenance

REVOKE ALL ON ALL TABLES IN SCHEMA monitoring FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA monitoring FROM PUBLIC;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA monitoring TO observe_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA monitoring TO observe_admin;
GRANT EXECUTE ON FUNCTION monitoring.schedule_maintenance(), monitoring.unschedule_maintenance()
    TO observe_admin;

GRANT SELECT ON monitoring.time_series_config TO observe_reader;
GRANT EXECUTE ON FUNCTION monitoring._plpython_runtime() TO observe_reader;

-- sql/910_privileges_errors.sql
-- Privileges of error tracking (see 900_privileges.sql for the matrix).
GRANT SELECT ON monitoring.tb_error_log, monitoring.tb_error_occurrence, monitoring.errors, monitoring.error_groups,
                monitoring.error_activity, monitoring.error_fingerprint_rule, monitoring.error_scrub_key
    TO observe_reader;
GRANT EXECUTE ON FUNCTION monitoring.top_issues(interval, text, integer, boolean),
                          monitoring.issue_occurrences(text, interval, integer),
                          monitoring.error_trends(interval, interval),
                          monitoring.affected_users(interval, integer),
                          monitoring.first_vs_repeat_errors(interval),
                          monitoring._find_error_group(text), monitoring._user_key(jsonb, jsonb),
                          monitoring._uuid_or_null(text), monitoring.get_partition_stats()
    TO observe_reader;
GRANT INSERT ON monitoring.tb_error_occurrence TO observe_writer;
GRANT EXECUTE ON FUNCTION monitoring.capture_error(jsonb), monitoring.capture_errors(jsonb) TO observe_writer;
-- The capture queue: writers queue, and any of them (or the worker's dispatcher role) may
-- drain it. The queue's rows are not readable but by admins: they are events as sent.
GRANT EXECUTE ON FUNCTION monitoring.queue_error(jsonb), monitoring.process_error_queue(integer) TO observe_writer;
GRANT EXECUTE ON PROCEDURE monitoring.drain_error_queue(integer, integer) TO observe_writer, observe_dispatcher, observe_admin;
GRANT EXECUTE ON FUNCTION monitoring.process_error_queue(integer) TO observe_dispatcher;
REVOKE ALL ON PROCEDURE monitoring.drain_error_queue(integer, integer) FROM PUBLIC;

-- sql/920_privileges_notifications.sql
-- Privileges of notifications (see 900_privileges.sql for the matrix). Channel configs hold
-- secrets: readers get every rule column but channel_config (and the redacted view), nothing
-- of notification_channel but its names; the dispatcher reaches secrets only through the
-- definer functions it may call.
GRANT SELECT (config_id, description, error_type, error_fingerprint, severity, environment, channel_type,
              min_occurrence_count, notify_on_occurrence, first_seen_only, notify_on_regression,
              frequency_count, frequency_window_minutes, user_count, user_window_minutes,
              rate_limit_minutes, enabled, created_at, severity_levels)
    ON monitoring.tb_error_notification_config TO observe_reader;
GRANT SELECT (channel_type, sender, function_name, description, created_at)
    ON monitoring.notification_channel TO observe_reader;
GRANT SELECT ON monitoring.notification_rules, monitoring.notification_queue, monitoring.notification_queue_status,
                monitoring.notification_state, monitoring.tb_error_notification_log, monitoring.notification_settings
    TO observe_reader;
GRANT EXECUTE ON FUNCTION monitoring._redact_channel_config(jsonb) TO observe_reader;

GRANT USAGE ON SCHEMA monitoring TO observe_dispatcher;
GRANT EXECUTE ON PROCEDURE monitoring.dispatch_notifications(integer, text, integer, integer, integer)
    TO observe_dispatcher;
GRANT EXECUTE ON FUNCTION monitoring._claim_notifications(integer, text, uuid),
                          monitoring._deliver_notifications(uuid, text)
    TO observe_dispatcher;
REVOKE ALL ON PROCEDURE monitoring.dispatch_notifications(integer, text, integer, integer, integer) FROM PUBLIC;

-- sql/930_privileges_telemetry.sql
-- Privileges of traces, metrics and business events (see 900_privileges.sql for the matrix).
-- Writers store through the definer functions or by INSERT into the seed's tables; they read
-- nothing. The change log is written by its definer trigger only.
GRANT SELECT ON monitoring.spans, monitoring.traces, monitoring.metrics, monitoring.metric_rollups_1m,
                monitoring.metric_rollup_state, monitoring.tb_entity_change_log, monitoring.tracked_tables,
                monitoring.rejected_telemetry
    TO observe_reader;
GRANT EXECUTE ON FUNCTION monitoring.slowest_operations(interval, text, text, bigint, integer),
                          monitoring.request_rate(interval, interval, text, text),
                          monitoring.operation_error_rates(interval, text, bigint),
                          monitoring.trace_timeline(text),
                          monitoring._otel_trace_id(text), monitoring._otel_span_id(text),
                          monitoring._otel_time(text, text)
    TO observe_reader;

GRANT INSERT ON monitoring.spans, monitoring.traces, monitoring.metrics TO observe_writer;
GRANT EXECUTE ON FUNCTION monitoring.ingest_spans(jsonb), monitoring.ingest_otlp_traces(jsonb),
                          monitoring.record_metrics(jsonb)
    TO observe_writer;

-- Every role that writes a tracked table runs the change-log triggers, which call this; it
-- refuses any caller but them (see sql/330_entity_changes.sql).
GRANT EXECUTE ON FUNCTION monitoring._append_entity_change(regclass, text, jsonb, jsonb, name, text, text[]) TO PUBLIC;
-- and may reach it by name; every table and other function stays closed to PUBLIC
GRANT USAGE ON SCHEMA monitoring TO PUBLIC;

-- A SECURITY DEFINER trigger function attached to a table of one's own would run that table's
-- code (casts, defaults) as pg_observe's owner: only the owner may attach them.
DO $revoke_definer_triggers$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'monitoring'::regnamespace AND p.prosecdef
                AND p.prorettype = 'trigger'::regtype
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM observe_admin', fn);
    END LOOP;
END
$revoke_definer_triggers$;

-- sql/940_privileges_operations.sql
-- Privileges of operations (see 900_privileges.sql for the matrix). Readers see every health
-- view and health(); the default partitions' row counts reach them through the definer
-- _partition_health() (a grant on a parent does not cover reading its partition directly),
-- the pg_cron tables through the definer health() (pg_cron shows a role its own jobs only).

GRANT SELECT ON monitoring.partition_health, monitoring.dispatcher_heartbeat, monitoring.database_size_history,
                monitoring.health_settings,
                monitoring.query_performance, monitoring.index_usage, monitoring.table_stats,
                monitoring.function_performance, monitoring.connections, monitoring.database_size,
                monitoring.slow_queries, monitoring.cache_hit_ratio,
                monitoring.monitoring_query_performance, monitoring.monitoring_index_usage,
                monitoring.monitoring_table_stats, monitoring.monitoring_rpc_performance,
                monitoring.monitoring_connections, monitoring.monitoring_database_size,
                monitoring.monitoring_slow_queries, monitoring.monitoring_cache_hit_ratio
    TO observe_reader;

-- Definers: closed to PUBLIC (900_privileges.sql already revokes; said again where it matters).
REVOKE ALL ON FUNCTION monitoring.health(), monitoring._partition_health() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION monitoring.health(), monitoring._partition_health() TO observe_reader;

-- A view's functions are called with the privileges of the role reading it.
GRANT EXECUTE ON FUNCTION monitoring._query_performance(), monitoring._database_growth(interval),
                          monitoring._index_usage_category(bigint), monitoring._bloat_status(bigint, bigint),
                          monitoring._function_rating(double precision),
                          monitoring._connection_pool_status(bigint, bigint, bigint, integer),
                          monitoring._slow_query_severity(double precision),
                          monitoring._cache_hit_rating(numeric, numeric)
    TO observe_reader;

-- dispatch_notifications() runs as its caller and leaves a heartbeat (INSERT ... ON CONFLICT
-- DO UPDATE reads the row it updates).
GRANT SELECT, INSERT, UPDATE ON monitoring.dispatcher_heartbeat TO observe_dispatcher;

-- sql/941_privileges_prometheus.sql
-- Privileges of the Prometheus exposition (see 900_privileges.sql for the matrix). The
-- functions run as their caller (no SECURITY DEFINER): a reader sees what it may read anyway,
-- and its pg_monitor membership shows every session in the connection figures.
GRANT EXECUTE ON FUNCTION monitoring.prometheus_metrics(),
                          monitoring._prometheus_families(),
                          monitoring._prometheus_escape(text, boolean),
                          monitoring._prometheus_sample(text, jsonb, double precision),
                          monitoring._prometheus_error_samples(),
                          monitoring._prometheus_notification_samples(),
                          monitoring._prometheus_dispatcher_samples(),
                          monitoring._prometheus_trace_samples(),
                          monitoring._prometheus_metric_samples(),
                          monitoring._prometheus_partition_samples(),
                          monitoring._prometheus_database_samples(),
                          monitoring._prometheus_health_samples(),
                          monitoring._prometheus_cache_samples()
    TO observe_reader;

-- The cache's hit, miss, set and eviction counters per namespace and backend: counts, no key
-- and no value (cache_entries stays unreadable to readers). Read directly because the view
-- cache_stats also counts every cached entry, too much for each scrape.
GRANT SELECT ON monitoring.cache_counters TO observe_reader;

-- sql/942_privileges_dashboards.sql
-- Privileges of the dashboards (see 900_privileges.sql for the matrix): Grafana's login is
-- an observe_reader. Every dashboard function runs as its caller (no SECURITY DEFINER) and
-- reads only what observe_reader may read.
GRANT EXECUTE ON FUNCTION monitoring.dashboard_variable(text),
                          monitoring._dashboard_bucket(timestamptz, timestamptz, interval, interval),
                          monitoring._dashboard_times(timestamptz, timestamptz, interval),
                          monitoring.dashboard_environments(),
                          monitoring.dashboard_services(),
                          monitoring.dashboard_error_rate(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_first_vs_repeat(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_top_errors(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_error_breakdown(timestamptz, timestamptz, text, text, text, integer),
                          monitoring.dashboard_recent_errors(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_issue_status(timestamptz, timestamptz, text, text),
                          monitoring.dashboard_resolution_time(timestamptz, timestamptz, text, text),
                          monitoring.dashboard_failed_access(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_requests(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_latency(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_request_heatmap(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_operations(timestamptz, timestamptz, text, text, text, integer),
                          monitoring.dashboard_operation_types(timestamptz, timestamptz, text, text),
                          monitoring.dashboard_span_status(timestamptz, timestamptz, text, text),
                          monitoring.dashboard_db_queries(timestamptz, timestamptz, text, text, interval),
                          monitoring.dashboard_users(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_user_errors(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_tenants(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_new_users(timestamptz, timestamptz, text, text, interval, interval),
                          monitoring.dashboard_metric_rate(timestamptz, timestamptz, text, text, interval, text),
                          monitoring.dashboard_metric_gauge(timestamptz, timestamptz, text, text, interval, text),
                          monitoring.dashboard_metric_histogram(timestamptz, timestamptz, text, text, interval, text),
                          monitoring.dashboard_audit_events(timestamptz, timestamptz, integer),
                          monitoring.dashboard_audit_event_types(timestamptz, timestamptz, interval),
                          monitoring.dashboard_admin_actions(timestamptz, timestamptz, text, text, integer),
                          monitoring.dashboard_permission_changes(timestamptz, timestamptz, integer),
                          monitoring.dashboard_changes_by_actor(timestamptz, timestamptz, integer),
                          monitoring.dashboard_audit_lag(),
                          monitoring.dashboard_compliance_status(),
                          monitoring.dashboard_database_activity(),
                          -- the cache's (sql/500_cache.sql)
                          monitoring._dashboard_cache_intervals(timestamptz, timestamptz, text),
                          monitoring.dashboard_cache_namespaces(),
                          monitoring.dashboard_cache_activity(timestamptz, timestamptz, text, interval),
                          monitoring.dashboard_cache_size(timestamptz, timestamptz, text, interval),
                          monitoring.dashboard_cache_namespace_stats(timestamptz, timestamptz, text, integer),
                          monitoring.dashboard_cache_summary(timestamptz, timestamptz, text)
    TO observe_reader;

-- sql/950_privileges_cache.sql
-- Privileges of the cache (see 900_privileges.sql for the matrix). The cache is the
-- applications' own, so it belongs to the role they already have, observe_writer: it may call
-- the cache functions (SECURITY DEFINER but cache_get_entry) and touch neither table, so that
-- every write passes the checks of keys, TTLs and values and is counted. Dashboards and
-- exporters (observe_reader) read monitoring.cache_stats, never the cached values (sessions,
-- tokens, personal data).
-- Admins have everything (900_privileges.sql), expire_cache() included.
GRANT EXECUTE ON FUNCTION monitoring.cache_get(text, text),
                          monitoring.cache_get_entry(text, text),
                          monitoring.cache_get_many(text[], text),
                          monitoring.cache_get_many_packed(text[], text),
                          monitoring.cache_ttl(text, text),
                          monitoring.cache_keys(text, text, integer),
                          monitoring.cache_set(text, jsonb, interval, text),
                          monitoring.cache_set_bytes(text, bytea, interval, text, text),
                          monitoring.cache_set_many_arrays(text[], jsonb[], interval, text, bytea[], text[]),
                          monitoring.cache_set_many(jsonb, interval, text),
                          monitoring.cache_incr(text, bigint, interval, text),
                          monitoring.cache_set_if_absent(text, jsonb, interval, text),
                          monitoring.cache_expire(text, interval, text),
                          monitoring.cache_delete(text, text),
                          monitoring.cache_delete_many(text[], text),
                          monitoring.cache_delete_pattern(text, text),
                          monitoring.cache_flush_stats()
    TO observe_writer;
-- cache_get_entry is inlined into the caller's query, which then reads the view and calls
-- these as the caller: the view has the owner's privileges and the live entries of every
-- namespace (namespaces separate keys, not privileges: docs/cache.md); the functions count one
-- event per call, in the caller's own session.
GRANT SELECT ON monitoring.cache_live_entries TO observe_writer;
GRANT EXECUTE ON FUNCTION monitoring._cache_note_one(text, text),
                          monitoring._cache_note_get(text, text, boolean)
    TO observe_writer;

-- The history holds counts and sizes per namespace, no key and no value.
GRANT SELECT ON monitoring.cache_stats, monitoring.cache_stats_history TO observe_reader;

-- sql/990_reset_search_path.sql
-- pg_partman's create_parent() above left the script's search_path set at session level
-- (it restores with a session-level set_config). Give the session its default back.
RESET search_path;


