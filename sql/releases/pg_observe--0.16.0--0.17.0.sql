\echo Use "CREATE EXTENSION pg_observe" to load this file. \quit
-- Released upgrade script of pg_observe 0.16.0 -> 0.17.0, kept as it shipped: do not edit.

-- sql/updates/pg_observe--0.16.0--0.17.0.sql
-- 0.16.0 -> 0.17.0: monitoring.cache_entries gets fillfactor 50, so that a page holds half
-- as many entries and the pruning that every overwrite of an entry brings about (a HOT update
-- leaves the old version on the page) has half as many to go through. Pages written before
-- the upgrade keep their fill until they are rewritten (VACUUM FULL, or the cache emptied).

ALTER TABLE monitoring.cache_entries SET (fillfactor = 50);

-- cache_set_many checks its keys' length in its INSERT, no longer by a query of its own. Changed
-- functions come from the same files as a fresh install; make test compares an upgraded
-- database with a fresh one.
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
-- pg_observe.cache_pending_batch, the hits, misses and sets of batches ("h,m,s"). The reads
-- and single-key writes append their letter inline (_cache_note_one, a few microseconds);
-- _cache_note() adds everything to the backend's own row of cache_counters once
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
        -- byte order, as the keys are stored: about half the cost of sorting by a libc locale
        -- (docs/cache.md, "The read's cost")
        SELECT pg_catalog.count(DISTINCT k COLLATE pg_catalog."C")::integer INTO wanted FROM pg_catalog.unnest(p_keys) k;
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
        SELECT pg_catalog.count(DISTINCT k COLLATE pg_catalog."C")::integer INTO wanted FROM pg_catalog.unnest(p_keys) k;
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
    IF NOT monitoring._cache_note_one(p_namespace, 's') THEN
        PERFORM monitoring._cache_note(p_namespace, 0, 0, 1);
    END IF;
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
    stored integer;
BEGIN
    IF p_namespace IS NULL OR pg_catalog.octet_length(p_namespace) NOT BETWEEN 1 AND 64 THEN
        PERFORM monitoring._cache_check_key('', p_namespace);   -- raises
    END IF;
    IF pg_catalog.jsonb_typeof(p_entries) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'cache_set_many takes a JSON object of key: value, got %', COALESCE(pg_catalog.jsonb_typeof(p_entries), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The members of a JSON object are unique; their values are never SQL NULL (a JSON null
    -- is stored as the JSON null, as cache_set('k', 'null') does). A key over 1024 bytes
    -- raises in the scan, below the sort, so before any row is written; checked here rather
    -- than by a query of its own, which cost 2% of a 100-key call (0.17.0, measured).
    INSERT INTO monitoring.cache_entries AS e (namespace, key, value, value_bytes, value_type, expires_at, updated_at)
    SELECT p_namespace, m.key, m.value, NULL, 'json', expires, pg_catalog.clock_timestamp()
    FROM pg_catalog.jsonb_each(p_entries) m
    WHERE CASE WHEN pg_catalog.octet_length(m.key) > 1024 THEN monitoring._cache_check_key(m.key, p_namespace)   -- raises
               ELSE true END
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
    IF NOT monitoring._cache_note_one(p_namespace, 's') THEN
        PERFORM monitoring._cache_note(p_namespace, 0, 0, 1);
    END IF;
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
    IF written THEN   -- nested: the order of AND's operands is not guaranteed
        IF NOT monitoring._cache_note_one(p_namespace, 's') THEN
            PERFORM monitoring._cache_note(p_namespace, 0, 0, 1);
        END IF;
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


