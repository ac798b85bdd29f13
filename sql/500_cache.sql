-- The PostgreSQL cache (seed 001 "PostgreSQL Caching"): key/value entries with a TTL in an
-- UNLOGGED table, used through stored functions only (docs/cache.md).
--
-- UNLOGGED: no WAL, so writes are cheap; the price is that PostgreSQL empties the table after
-- a crash (not after a clean shutdown) and that streaming replicas do not have it. For a cache
-- that is the right trade; seed 001's "data survives crashes" is wrong and docs/cache.md says so.
-- Neither table is registered with pg_extension_config_dump: a dump does not keep the cache.

CREATE UNLOGGED TABLE monitoring.cache_entries (
    -- "C": byte order, as Redis keys have; the primary key then serves LIKE 'prefix%' (patterns)
    namespace    text COLLATE "C" NOT NULL,
    key          text COLLATE "C" NOT NULL,
    value        jsonb,
    value_bytes  bytea,
    value_type   text NOT NULL DEFAULT 'json',
    expires_at   timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    -- The key first: a lookup then compares keys alone on its way down the index (the namespace
    -- only where the keys are equal): a quarter less backend CPU for the bare DELETE of 100
    -- keys; the price is that a pattern without a literal prefix reads every namespace
    -- (docs/cache.md, "Storage: the key first").
    CONSTRAINT cache_entries_pkey PRIMARY KEY (key, namespace)
    -- No CHECK constraint: PostgreSQL reads and prepares every CHECK anew for each INSERT or
    -- UPDATE statement, about a tenth of a set's server time (0.13.0, measured). Only the
    -- cache functions write here, and they keep the invariant: value_type json with value set
    -- and value_bytes NULL, bytes or text the other way round; keys at most 1024 bytes,
    -- namespaces 1 to 64. A btree entry could not hold more than ~2700 bytes anyway.
)
-- Half-full pages: an overwrite is a HOT update whose old version stays on the page, and
-- PostgreSQL prunes a page that is short of free space at almost every later visit; fewer
-- entries per page make each pruning cheaper (docs/cache.md, "Storage").
WITH (fillfactor = 50);
COMMENT ON TABLE monitoring.cache_entries IS
    'The cache (UNLOGGED: emptied by a crash restart, absent on streaming replicas); use the cache_* functions';
COMMENT ON COLUMN monitoring.cache_entries.namespace IS 'Keeps the keys of applications sharing the database apart (1 to 64 bytes)';
COMMENT ON COLUMN monitoring.cache_entries.key IS 'The key (at most 1024 bytes: hash longer ones)';
COMMENT ON COLUMN monitoring.cache_entries.value IS 'The value when value_type is json';
COMMENT ON COLUMN monitoring.cache_entries.value_bytes IS
    'The value when value_type is bytes, or text (UTF-8 that JSON cannot hold, such as a NUL character)';
COMMENT ON COLUMN monitoring.cache_entries.value_type IS 'json, text or bytes: what the client gives back';
COMMENT ON COLUMN monitoring.cache_entries.expires_at IS 'From then on the entry is absent to every function; NULL: never expires';
COMMENT ON COLUMN monitoring.cache_entries.updated_at IS 'When the value was last written';

-- No index on expires_at, on purpose: every set with a TTL changes expires_at, and an index on
-- it would make each such update write two index entries instead of being a HOT update (about
-- a third more work per set, measured). Reads check expires_at on the row they fetch anyway;
-- expire_cache() walks the table once per run instead (docs/cache.md).

-- Hit, miss, set and eviction counts. A backend adds its counts to its own row (so writers
-- never wait for each other), after every 100 single-key events, 10,000 batch events or 10
-- seconds (see _cache_note);
-- _fold_cache_counters() folds the rows of ended backends into backend_pid 0.
CREATE UNLOGGED TABLE monitoring.cache_counters (
    namespace    text COLLATE "C" NOT NULL,
    backend_pid  integer NOT NULL,
    hits         bigint  NOT NULL DEFAULT 0,
    misses       bigint  NOT NULL DEFAULT 0,
    sets         bigint  NOT NULL DEFAULT 0,
    evictions    bigint  NOT NULL DEFAULT 0,
    CONSTRAINT cache_counters_pkey PRIMARY KEY (namespace, backend_pid)
);
COMMENT ON TABLE monitoring.cache_counters IS
    'Cache statistics per namespace and backend (UNLOGGED: they restart at zero with the cache); read monitoring.cache_stats';
COMMENT ON COLUMN monitoring.cache_counters.backend_pid IS 'The backend that counted; 0 for the folded counts of ended backends';
COMMENT ON COLUMN monitoring.cache_counters.evictions IS 'Expired entries deleted by expire_cache()';

-- @include sql/include/cache_live_entries.sql
-- @include sql/include/cache_functions.sql

CREATE VIEW monitoring.cache_stats AS
WITH stored AS (
    SELECT e.namespace,
           pg_catalog.count(*) AS entries,
           pg_catalog.count(*) FILTER (WHERE e.expires_at <= pg_catalog.now()) AS expired_pending,
           pg_catalog.sum(pg_catalog.octet_length(e.key)
                          + COALESCE(pg_catalog.pg_column_size(e.value), pg_catalog.pg_column_size(e.value_bytes))) AS bytes
    FROM monitoring.cache_entries e
    GROUP BY e.namespace
), counted AS (
    SELECT c.namespace, pg_catalog.sum(c.hits) AS hits, pg_catalog.sum(c.misses) AS misses,
           pg_catalog.sum(c.sets) AS sets, pg_catalog.sum(c.evictions) AS evictions
    FROM monitoring.cache_counters c
    GROUP BY c.namespace
)
SELECT namespace,
       COALESCE(s.entries, 0)::bigint AS entries,
       COALESCE(s.expired_pending, 0)::bigint AS expired_pending,
       COALESCE(k.hits, 0)::bigint AS hits,
       COALESCE(k.misses, 0)::bigint AS misses,
       COALESCE(k.sets, 0)::bigint AS sets,
       COALESCE(k.evictions, 0)::bigint AS evictions,
       COALESCE(s.bytes, 0)::bigint AS bytes
FROM stored s FULL JOIN counted k USING (namespace);
COMMENT ON VIEW monitoring.cache_stats IS
    'Per namespace: entries (expired ones not yet deleted included), hits, misses, sets, evictions since the cache started, bytes stored';
COMMENT ON COLUMN monitoring.cache_stats.entries IS 'Rows stored, expired_pending included (one scan of the cache)';
COMMENT ON COLUMN monitoring.cache_stats.expired_pending IS 'Expired entries that expire_cache() has not deleted yet (never returned)';
COMMENT ON COLUMN monitoring.cache_stats.hits IS 'Reads that found a live entry (the last < 100 single-key and < 10,000 batch events, or 10 s, of each connection are pending)';
COMMENT ON COLUMN monitoring.cache_stats.misses IS 'Reads that found no live entry';
COMMENT ON COLUMN monitoring.cache_stats.sets IS 'Entries written (set, set_many per key, incr, set_if_absent when it wrote)';
COMMENT ON COLUMN monitoring.cache_stats.evictions IS 'Expired entries deleted by expire_cache()';
COMMENT ON COLUMN monitoring.cache_stats.bytes IS 'Keys plus values as stored (after TOAST compression)';

-- History of cache_stats for the cache dashboard (Grafana reads PostgreSQL, so a time series
-- needs its points in a table): one row per namespace at every run_maintenance() (task
-- sample_cache_stats, after the expiry and the fold), kept 7 days. Small (288 runs a day at
-- pg_cron's 5 minutes, times the namespaces), so neither partitioned nor UNLOGGED: a standby
-- and a crash keep it, and the dashboard reads a counter that restarted at zero as a reset.
-- Not registered with pg_extension_config_dump: it is derived from the counters, which a dump
-- does not keep either; a restored database starts a new cache, and its history anew.
CREATE TABLE monitoring.cache_stats_history (
    sampled_at       timestamptz NOT NULL,
    namespace        text COLLATE "C" NOT NULL,
    entries          bigint NOT NULL,
    expired_pending  bigint NOT NULL,
    hits             bigint NOT NULL,
    misses           bigint NOT NULL,
    sets             bigint NOT NULL,
    evictions        bigint NOT NULL,
    bytes            bigint NOT NULL,
    CONSTRAINT cache_stats_history_pkey PRIMARY KEY (sampled_at, namespace)
);
COMMENT ON TABLE monitoring.cache_stats_history IS
    'cache_stats per namespace at every run_maintenance(), kept 7 days: the cache dashboard''s time series';
COMMENT ON COLUMN monitoring.cache_stats_history.sampled_at IS
    'The maintenance run (its transaction start): every namespace of one run has the same time';
COMMENT ON COLUMN monitoring.cache_stats_history.hits IS
    'Cumulative since the counters started (as cache_stats): the dashboard takes differences, a decrease is a restart';

CREATE FUNCTION monitoring._sample_cache_stats()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sampled bigint;
    removed bigint;
BEGIN
    -- one scan of the cache (cache_stats counts entries), as expire_cache() makes anyway
    INSERT INTO monitoring.cache_stats_history AS h
        (sampled_at, namespace, entries, expired_pending, hits, misses, sets, evictions, bytes)
    SELECT pg_catalog.now(), s.namespace, s.entries, s.expired_pending, s.hits, s.misses, s.sets, s.evictions, s.bytes
    FROM monitoring.cache_stats s
    ON CONFLICT (sampled_at, namespace) DO UPDATE   -- a second run in one transaction
        SET entries = excluded.entries, expired_pending = excluded.expired_pending, hits = excluded.hits,
            misses = excluded.misses, sets = excluded.sets, evictions = excluded.evictions, bytes = excluded.bytes;
    GET DIAGNOSTICS sampled = ROW_COUNT;
    DELETE FROM monitoring.cache_stats_history h WHERE h.sampled_at < pg_catalog.now() - interval '7 days';
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN pg_catalog.format('%s cache namespaces sampled, %s samples older than 7 days removed', sampled, removed);
END
$$;
COMMENT ON FUNCTION monitoring._sample_cache_stats() IS
    'Maintenance task: records cache_stats in cache_stats_history (kept 7 days)';

INSERT INTO monitoring.maintenance_task (task_name, function_name, run_order) VALUES
    ('expire_cache', 'monitoring.expire_cache', 60),
    ('fold_cache_counters', 'monitoring._fold_cache_counters', 61),
    -- after both, so that a sample has this run's evictions
    ('sample_cache_stats', 'monitoring._sample_cache_stats', 62);

-- Dashboard functions of the cache (the style of sql/420_dashboards.sql, here because they
-- read cache_stats_history, made above; docs/grafana.md). The cache has namespaces, not
-- environments or services: these take p_namespace (NULL: all) from the $namespace variable.
--
-- Every sample stands for the interval since the run before it: its counters minus those of
-- that run are what happened in between (a namespace absent from that run had no counts; a
-- counter lower than before restarted at zero, after a crash say, and counts from zero). A
-- bucket gets each interval's counts in proportion to the time they share (so a 1-minute
-- bucket inside a 5-minute interval shows that interval's rate), and the sizes of the
-- intervals it overlaps, weighted likewise. Buckets no interval reaches are NULL: no sample.

CREATE FUNCTION monitoring._dashboard_cache_intervals(p_from timestamptz, p_to timestamptz, p_namespace text)
    RETURNS TABLE (namespace text, started_at timestamptz, ended_at timestamptz, hits bigint, misses bigint,
                   sets bigint, evictions bigint, entries bigint, expired_pending bigint, bytes bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH runs AS (
        SELECT r.sampled_at, pg_catalog.lag(r.sampled_at) OVER (ORDER BY r.sampled_at) AS previous_at
        FROM (SELECT DISTINCT h.sampled_at FROM monitoring.cache_stats_history h
              WHERE h.sampled_at >= COALESCE((SELECT pg_catalog.max(b.sampled_at) FROM monitoring.cache_stats_history b
                                              WHERE b.sampled_at < p_from), p_from)
                AND h.sampled_at <= COALESCE((SELECT pg_catalog.min(a.sampled_at) FROM monitoring.cache_stats_history a
                                              WHERE a.sampled_at > p_to), p_to)) r
    )
    SELECT c.namespace, r.previous_at, r.sampled_at,
           CASE WHEN c.hits >= COALESCE(p.hits, 0) THEN c.hits - COALESCE(p.hits, 0) ELSE c.hits END,
           CASE WHEN c.misses >= COALESCE(p.misses, 0) THEN c.misses - COALESCE(p.misses, 0) ELSE c.misses END,
           CASE WHEN c.sets >= COALESCE(p.sets, 0) THEN c.sets - COALESCE(p.sets, 0) ELSE c.sets END,
           CASE WHEN c.evictions >= COALESCE(p.evictions, 0) THEN c.evictions - COALESCE(p.evictions, 0)
                ELSE c.evictions END,
           c.entries, c.expired_pending, c.bytes
    FROM runs r
    JOIN monitoring.cache_stats_history c ON c.sampled_at = r.sampled_at
    LEFT JOIN monitoring.cache_stats_history p ON p.sampled_at = r.previous_at AND p.namespace = c.namespace
    WHERE r.previous_at IS NOT NULL
      AND (p_namespace IS NULL OR c.namespace = p_namespace)
$$;
COMMENT ON FUNCTION monitoring._dashboard_cache_intervals(timestamptz, timestamptz, text) IS
    'Per namespace and interval between two samples reaching into the range: hits, misses, sets, evictions in it (restarts handled), sizes at its end';

CREATE FUNCTION monitoring.dashboard_cache_namespaces()
    RETURNS TABLE (namespace text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT h.namespace FROM monitoring.cache_stats_history h
    WHERE h.sampled_at > pg_catalog.now() - interval '1 day'
    ORDER BY 1
    LIMIT 1000
$$;
COMMENT ON FUNCTION monitoring.dashboard_cache_namespaces() IS
    'Cache namespaces sampled in the last day, for the cache dashboard''s $namespace variable';

CREATE FUNCTION monitoring.dashboard_cache_activity(p_from timestamptz, p_to timestamptz, p_namespace text DEFAULT NULL,
                                                    p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, hits_per_second double precision, misses_per_second double precision,
                   sets_per_second double precision, evictions_per_second double precision,
                   hit_ratio_pct double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), intervals AS (
        SELECT i.started_at, i.ended_at, pg_catalog.sum(i.hits) AS hits, pg_catalog.sum(i.misses) AS misses,
               pg_catalog.sum(i.sets) AS sets, pg_catalog.sum(i.evictions) AS evictions
        FROM monitoring._dashboard_cache_intervals(p_from, p_to, p_namespace) i
        GROUP BY 1, 2
    ), spread AS (
        SELECT t.t,
               pg_catalog.sum(o.share * i.hits) AS hits, pg_catalog.sum(o.share * i.misses) AS misses,
               pg_catalog.sum(o.share * i.sets) AS sets, pg_catalog.sum(o.share * i.evictions) AS evictions,
               pg_catalog.sum(o.seconds) AS seconds
        FROM width b
        CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
        JOIN intervals i ON i.started_at < t.t + b.w AND i.ended_at > t.t
        CROSS JOIN LATERAL (
            SELECT EXTRACT(epoch FROM LEAST(i.ended_at, t.t + b.w) - GREATEST(i.started_at, t.t))::double precision
                       AS seconds,
                   EXTRACT(epoch FROM LEAST(i.ended_at, t.t + b.w) - GREATEST(i.started_at, t.t))::double precision
                       / EXTRACT(epoch FROM i.ended_at - i.started_at)::double precision AS share) o
        GROUP BY t.t
    )
    SELECT t.t, s.hits / s.seconds, s.misses / s.seconds, s.sets / s.seconds, s.evictions / s.seconds,
           100 * s.hits / NULLIF(s.hits + s.misses, 0)
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN spread s ON s.t = t.t AND s.seconds > 0
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_cache_activity(timestamptz, timestamptz, text, interval) IS
    'Cache hits, misses, sets and evictions per second per bucket and the hit ratio in % (NULL without samples or reads)';

CREATE FUNCTION monitoring.dashboard_cache_size(p_from timestamptz, p_to timestamptz, p_namespace text DEFAULT NULL,
                                                p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, entries double precision, expired_pending double precision,
                   bytes double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), intervals AS (
        SELECT i.started_at, i.ended_at, pg_catalog.sum(i.entries) AS entries,
               pg_catalog.sum(i.expired_pending) AS expired_pending, pg_catalog.sum(i.bytes) AS bytes
        FROM monitoring._dashboard_cache_intervals(p_from, p_to, p_namespace) i
        GROUP BY 1, 2
    ), weighted AS (
        SELECT t.t, pg_catalog.sum(o.seconds * i.entries) AS entries,
               pg_catalog.sum(o.seconds * i.expired_pending) AS expired_pending,
               pg_catalog.sum(o.seconds * i.bytes) AS bytes, pg_catalog.sum(o.seconds) AS seconds
        FROM width b
        CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
        JOIN intervals i ON i.started_at < t.t + b.w AND i.ended_at > t.t
        CROSS JOIN LATERAL (
            SELECT EXTRACT(epoch FROM LEAST(i.ended_at, t.t + b.w) - GREATEST(i.started_at, t.t))::double precision
                       AS seconds) o
        GROUP BY t.t
    )
    SELECT t.t, w.entries / w.seconds, w.expired_pending / w.seconds, w.bytes / w.seconds
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN weighted w ON w.t = t.t AND w.seconds > 0
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_cache_size(timestamptz, timestamptz, text, interval) IS
    'Cache entries, expired ones not yet deleted, and bytes per bucket (each sample holds for the interval before it; NULL without samples)';

-- Per namespace over the range: the counts of the intervals ending in it (after p_from: whole
-- samples, so whole numbers) and the sizes of the last sample in it.
CREATE FUNCTION monitoring.dashboard_cache_namespace_stats(p_from timestamptz, p_to timestamptz,
                                                           p_namespace text DEFAULT NULL, p_limit integer DEFAULT 20)
    RETURNS TABLE (namespace text, hits bigint, misses bigint, hit_ratio_pct double precision, sets bigint,
                   evictions bigint, entries bigint, bytes bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.namespace, pg_catalog.sum(i.hits)::bigint, pg_catalog.sum(i.misses)::bigint,
           (100.0 * pg_catalog.sum(i.hits) / NULLIF(pg_catalog.sum(i.hits) + pg_catalog.sum(i.misses), 0))::double precision,
           pg_catalog.sum(i.sets)::bigint, pg_catalog.sum(i.evictions)::bigint,
           (pg_catalog.array_agg(i.entries ORDER BY i.ended_at DESC))[1],
           (pg_catalog.array_agg(i.bytes ORDER BY i.ended_at DESC))[1]
    FROM monitoring._dashboard_cache_intervals(p_from, p_to, p_namespace) i
    WHERE i.ended_at > p_from AND i.ended_at <= p_to
    GROUP BY i.namespace
    ORDER BY pg_catalog.sum(i.hits) + pg_catalog.sum(i.misses) DESC, i.namespace
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_cache_namespace_stats(timestamptz, timestamptz, text, integer) IS
    'Per namespace: hits, misses, hit ratio in %, sets and evictions of the samples in the range; entries and bytes at the last';

-- One row for the stat panels: the range's reads and hit ratio, and the sizes of the last
-- sample at or before p_to (the live view would scan the whole cache at every refresh).
CREATE FUNCTION monitoring.dashboard_cache_summary(p_from timestamptz, p_to timestamptz, p_namespace text DEFAULT NULL)
    RETURNS TABLE (hit_ratio_pct double precision, hits bigint, misses bigint, entries bigint,
                   expired_pending bigint, bytes bigint, seconds_since_sample double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH counted AS (
        SELECT pg_catalog.sum(i.hits) AS hits, pg_catalog.sum(i.misses) AS misses
        FROM monitoring._dashboard_cache_intervals(p_from, p_to, p_namespace) i
        WHERE i.ended_at > p_from AND i.ended_at <= p_to
    ), last_sample AS (
        SELECT pg_catalog.sum(h.entries) AS entries, pg_catalog.sum(h.expired_pending) AS expired_pending,
               pg_catalog.sum(h.bytes) AS bytes, pg_catalog.max(h.sampled_at) AS sampled_at
        FROM monitoring.cache_stats_history h
        WHERE h.sampled_at = (SELECT pg_catalog.max(l.sampled_at) FROM monitoring.cache_stats_history l
                              WHERE l.sampled_at <= p_to AND l.sampled_at >= p_from)
          AND (p_namespace IS NULL OR h.namespace = p_namespace)
    )
    SELECT (100.0 * c.hits / NULLIF(c.hits + c.misses, 0))::double precision, c.hits::bigint, c.misses::bigint,
           s.entries::bigint, s.expired_pending::bigint, s.bytes::bigint,
           -- (GREATEST would turn NULL, no sample, into 0)
           CASE WHEN s.sampled_at IS NOT NULL
                THEN GREATEST(EXTRACT(epoch FROM pg_catalog.now() - s.sampled_at), 0)::double precision END
    FROM counted c, last_sample s
$$;
COMMENT ON FUNCTION monitoring.dashboard_cache_summary(timestamptz, timestamptz, text) IS
    'The range''s cache hits, misses and hit ratio in %, and entries, expired ones and bytes at the last sample in it, and its age in seconds';
