-- The ratings of seed 003's database-health views, one function each so that a threshold
-- lives in one place and is tested with plain numbers (included by sql/400_operations.sql
-- and by the upgrade scripts, hence CREATE OR REPLACE). docs/operations.md lists them.

CREATE OR REPLACE FUNCTION monitoring._index_usage_category(p_scans bigint)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_scans IS NULL THEN NULL
                WHEN p_scans = 0 THEN 'NEVER_USED'
                WHEN p_scans < 100 THEN 'RARELY_USED'
                ELSE 'FREQUENTLY_USED' END
$$;
COMMENT ON FUNCTION monitoring._index_usage_category(bigint) IS
    'index_usage.usage_category: NEVER_USED (0 scans), RARELY_USED (< 100), FREQUENTLY_USED';

-- Below autovacuum's own threshold (50 dead tuples) a ratio says nothing: a 4-row table
-- with one dead row is not bloated.
CREATE OR REPLACE FUNCTION monitoring._bloat_status(p_live bigint, p_dead bigint)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_dead IS NULL OR p_live IS NULL THEN NULL
                WHEN p_dead < 50 THEN 'OK'
                WHEN 100.0 * p_dead / (p_live + p_dead) > 30 THEN 'CRITICAL'
                WHEN 100.0 * p_dead / (p_live + p_dead) > 20 THEN 'WARNING'
                ELSE 'OK' END
$$;
COMMENT ON FUNCTION monitoring._bloat_status(bigint, bigint) IS
    'table_stats.bloat_status: WARNING above 20 % dead tuples, CRITICAL above 30 % (seed 003), OK below or under 50 dead tuples';

CREATE OR REPLACE FUNCTION monitoring._function_rating(p_mean_ms double precision)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_mean_ms IS NULL THEN NULL
                WHEN p_mean_ms < 50 THEN 'EXCELLENT'
                WHEN p_mean_ms < 100 THEN 'GOOD'
                WHEN p_mean_ms < 200 THEN 'ACCEPTABLE'
                ELSE 'SLOW' END
$$;
COMMENT ON FUNCTION monitoring._function_rating(double precision) IS
    'function_performance.rating by mean ms: EXCELLENT < 50, GOOD < 100, ACCEPTABLE < 200, SLOW (seed 003)';

-- TOO_MANY is about the server (max_connections is shared by every database); UNDERUTILIZED
-- about one database's pool: most of its connections idle, and they hold a quarter of the
-- server's slots (a pool larger than its load).
CREATE OR REPLACE FUNCTION monitoring._connection_pool_status(p_server_total bigint, p_total bigint, p_idle bigint,
                                                              p_max_connections integer)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_server_total IS NULL OR p_total IS NULL OR p_idle IS NULL OR p_max_connections IS NULL
                     OR p_max_connections <= 0 THEN NULL
                WHEN p_server_total >= 0.8 * p_max_connections THEN 'TOO_MANY'
                WHEN p_idle > 0.75 * p_total AND p_idle >= 0.25 * p_max_connections THEN 'UNDERUTILIZED'
                ELSE 'HEALTHY' END
$$;
COMMENT ON FUNCTION monitoring._connection_pool_status(bigint, bigint, bigint, integer) IS
    'connections.pool_status: TOO_MANY at 80 % of max_connections on the server, UNDERUTILIZED when over 75 % of a database''s connections idle and they hold 25 % of max_connections, else HEALTHY';

CREATE OR REPLACE FUNCTION monitoring._slow_query_severity(p_seconds double precision)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_seconds IS NULL THEN NULL
                WHEN p_seconds > 60 THEN 'CRITICAL'
                WHEN p_seconds > 10 THEN 'WARNING'
                WHEN p_seconds > 1 THEN 'SLOW'
                ELSE 'NORMAL' END
$$;
COMMENT ON FUNCTION monitoring._slow_query_severity(double precision) IS
    'slow_queries.severity by running seconds: SLOW > 1, WARNING > 10, CRITICAL > 60, else NORMAL (seed 003)';

CREATE OR REPLACE FUNCTION monitoring._cache_hit_rating(p_ratio_pct numeric, p_target_pct numeric)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_ratio_pct IS NULL THEN NULL
                WHEN p_ratio_pct >= 99 THEN 'EXCELLENT'
                WHEN p_ratio_pct >= p_target_pct THEN 'GOOD'
                ELSE 'NEEDS_TUNING' END
$$;
COMMENT ON FUNCTION monitoring._cache_hit_rating(numeric, numeric) IS
    'cache_hit_ratio.rating: EXCELLENT at 99 % or more, GOOD at the target (95 % database, 98 % table), else NEEDS_TUNING';

-- pg_stat_statements is optional: its library must be in shared_preload_libraries and its
-- extension created in this database. It is reached by dynamic SQL, so that pg_observe does
-- not depend on it, and every way it can be missing becomes one row with a note.
CREATE OR REPLACE FUNCTION monitoring._query_performance()
    RETURNS TABLE (queryid bigint, query text, username text, calls bigint, rows bigint,
                   total_exec_ms double precision, mean_exec_ms double precision, min_exec_ms double precision,
                   max_exec_ms double precision, stddev_exec_ms double precision, shared_blks_hit bigint,
                   shared_blks_read bigint, cache_hit_ratio numeric, note text)
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    statements_schema name;
    found_rows jsonb;
BEGIN
    SELECT n.nspname INTO statements_schema
    FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_stat_statements';
    IF statements_schema IS NULL THEN
        RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::bigint, NULL::bigint,
            NULL::double precision, NULL::double precision, NULL::double precision, NULL::double precision,
            NULL::double precision, NULL::bigint, NULL::bigint, NULL::numeric,
            pg_catalog.format('pg_stat_statements is not installed in database %s: run CREATE EXTENSION '
                              'pg_stat_statements; (its library must also be in shared_preload_libraries, '
                              'which needs a restart)', pg_catalog.current_database());
        RETURN;
    END IF;
    BEGIN
        EXECUTE pg_catalog.format(
            'SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(t) ORDER BY t.total_exec_ms DESC) FROM ('
            ' SELECT s.queryid, s.query, pg_catalog.pg_get_userbyid(s.userid)::text AS username, s.calls, s.rows,'
            ' s.total_exec_time AS total_exec_ms, s.mean_exec_time AS mean_exec_ms, s.min_exec_time AS min_exec_ms,'
            ' s.max_exec_time AS max_exec_ms, s.stddev_exec_time AS stddev_exec_ms,'
            ' s.shared_blks_hit, s.shared_blks_read'
            ' FROM %I.pg_stat_statements s'
            ' WHERE s.dbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())'
            ' ORDER BY s.total_exec_time DESC LIMIT 100) t', statements_schema)
            INTO found_rows;
    EXCEPTION WHEN OTHERS THEN
        -- not preloaded ("must be loaded via shared_preload_libraries"), or an old version
        RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::bigint, NULL::bigint,
            NULL::double precision, NULL::double precision, NULL::double precision, NULL::double precision,
            NULL::double precision, NULL::bigint, NULL::bigint, NULL::numeric,
            pg_catalog.format('pg_stat_statements cannot be read: %s. Add pg_stat_statements to '
                              'shared_preload_libraries and restart, and run ALTER EXTENSION pg_stat_statements UPDATE',
                              SQLERRM);
        RETURN;
    END;
    RETURN QUERY
        SELECT r.queryid, r.query, r.username, r.calls, r.rows, r.total_exec_ms, r.mean_exec_ms, r.min_exec_ms,
               r.max_exec_ms, r.stddev_exec_ms, r.shared_blks_hit, r.shared_blks_read,
               pg_catalog.round(100.0 * r.shared_blks_hit / NULLIF(r.shared_blks_hit + r.shared_blks_read, 0), 2),
               NULL::text
        FROM ROWS FROM (pg_catalog.jsonb_to_recordset(COALESCE(found_rows, '[]'))
                 AS (queryid bigint, query text, username text, calls bigint, rows bigint,
                     total_exec_ms double precision, mean_exec_ms double precision, min_exec_ms double precision,
                     max_exec_ms double precision, stddev_exec_ms double precision, shared_blks_hit bigint,
                     shared_blks_read bigint)) WITH ORDINALITY
            AS r (queryid, query, username, calls, rows, total_exec_ms, mean_exec_ms, min_exec_ms, max_exec_ms,
                  stddev_exec_ms, shared_blks_hit, shared_blks_read, n)
        ORDER BY r.n;
END
$$;
COMMENT ON FUNCTION monitoring._query_performance() IS
    'Body of query_performance: top 100 statements of this database from pg_stat_statements (dynamic SQL), or one row with a note saying what to run';
