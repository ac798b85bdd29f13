-- Included by sql/320_metrics.sql and by the upgrade scripts.

-- One statement per batch, like _store_spans(): a point that cannot be stored goes to
-- rejected_telemetry with the reason. "values" gives several observations of one series.
CREATE FUNCTION monitoring._store_metrics(p_points jsonb, OUT accepted integer, OUT rejected integer)
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET timezone = 'UTC'
AS $$
DECLARE
    oldest timestamptz;
    newest timestamptz := pg_catalog.now() + interval '1 day';
BEGIN
    -- Before the oldest partition and the retention, or over a day ahead: a wrong clock.
    oldest := monitoring._oldest_plausible_time('monitoring.metrics');

    WITH points AS (
        SELECT p.value AS point,
               pg_catalog.jsonb_typeof(p.value) = 'object' AS is_object,
               COALESCE(p.value ->> 'metric_name', p.value ->> 'name') AS name,
               pg_catalog.lower(COALESCE(p.value ->> 'metric_type',
                                         p.value ->> 'type')) AS type,
               COALESCE(p.value -> 'labels', '{}') AS labels,
               monitoring._otel_time(NULL, p.value ->> 'timestamp') AS time_given,
               p.value ? 'timestamp' AS has_time,
               CASE WHEN pg_catalog.jsonb_typeof(p.value -> 'values') = 'array'
                    THEN p.value -> 'values'
                    ELSE pg_catalog.jsonb_build_array(COALESCE(p.value -> 'metric_value',
                                                               p.value -> 'value'))
               END AS observations
        FROM pg_catalog.jsonb_array_elements(p_points) AS p
    ), checked AS MATERIALIZED (
        SELECT p.*,
               CASE
                   WHEN NOT p.is_object THEN 'a metric point must be a JSON object'
                   WHEN COALESCE(p.name, '') = '' THEN 'a metric point needs a metric_name'
                   WHEN pg_catalog.octet_length(p.name) > 1024 THEN 'metric_name is longer than 1,024 bytes'
                   WHEN p.type IS NULL OR p.type NOT IN ('counter', 'gauge', 'histogram') THEN
                       pg_catalog.format('metric_type %s is not counter, gauge or histogram',
                                         pg_catalog.left(COALESCE(p.type, 'NULL'), 64))
                   WHEN pg_catalog.jsonb_typeof(p.labels) <> 'object' THEN 'labels must be a JSON object'
                   WHEN (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(p.labels)) > 256 THEN
                       pg_catalog.format('labels has %s keys: at most 256',
                                         (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(p.labels)))
                   WHEN p.has_time AND p.time_given IS NULL THEN 'timestamp is not ISO 8601 text'
                   WHEN pg_catalog.jsonb_array_length(p.observations) = 0 THEN 'values is empty'
                   WHEN EXISTS (SELECT FROM pg_catalog.jsonb_array_elements(p.observations) o
                                WHERE pg_catalog.jsonb_typeof(o.value) IS DISTINCT FROM 'number'
                                   OR pg_catalog.abs(o.value::numeric) > 1e300) THEN
                       'metric_value must be a number of at most 1e300 in magnitude (NaN, infinities and text are not)'
               END AS problem,
               p.time_given < oldest OR p.time_given > newest AS wrong_clock
        FROM points p
    ), stored AS (
        INSERT INTO monitoring.metrics
            (metric_name, metric_type, metric_value, labels, "timestamp", environment, service, client_timestamp)
        SELECT c.name, c.type, o.value::double precision, c.labels,
               CASE WHEN c.wrong_clock OR c.time_given IS NULL THEN pg_catalog.now() ELSE c.time_given END,
               pg_catalog.left(COALESCE(NULLIF(c.point ->> 'environment', ''), 'production'), 256),
               pg_catalog.left(NULLIF(c.point ->> 'service', ''), 256),
               CASE WHEN c.wrong_clock THEN c.time_given END
        FROM checked c
        CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(c.observations) AS o
        WHERE c.problem IS NULL
        RETURNING 1
    ), kept AS (
        INSERT INTO monitoring.rejected_telemetry (kind, reason, payload)
        SELECT 'metric', c.problem, c.point FROM checked c WHERE c.problem IS NOT NULL
        RETURNING 1
    )
    SELECT (SELECT pg_catalog.count(*) FROM stored)::integer, (SELECT pg_catalog.count(*) FROM kept)::integer
    INTO accepted, rejected;
END
$$;
COMMENT ON FUNCTION monitoring._store_metrics(jsonb) IS 'Body of record_metrics(): stores one batch in one statement';

CREATE FUNCTION monitoring.record_metrics(p_points jsonb)
    RETURNS TABLE (accepted integer, rejected integer)
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_points IS NULL OR pg_catalog.jsonb_typeof(p_points) <> 'array' THEN
        RAISE EXCEPTION 'record_metrics() takes a JSON array of points, got %', COALESCE(pg_catalog.jsonb_typeof(p_points), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'SELECT * FROM monitoring.record_metrics(''[{"metric_name": "jobs.done", "metric_type": "counter", "metric_value": 1}]'')';
    END IF;
    IF pg_catalog.jsonb_array_length(p_points) = 0 THEN
        RETURN QUERY SELECT 0, 0;
        RETURN;
    END IF;
    RETURN QUERY SELECT b.accepted, b.rejected FROM monitoring._store_bisecting(p_points, 'metric') b;
END
$$;
COMMENT ON FUNCTION monitoring.record_metrics(jsonb) IS
    'Stores a JSON array of metric points (docs/metrics.md has the shape); a bad point goes to rejected_telemetry; returns rows stored and points rejected';

-- Rolls up every minute that received points since the last run, whatever their timestamp
-- (a late or backfilled point updates its minute). Points are read up to a minute before
-- now: a transaction still open longer than that when the job runs is missed.
CREATE FUNCTION monitoring.rollup_metrics()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    read_from timestamptz;
    read_to timestamptz;
    minutes integer;
    series integer;
BEGIN
    -- pg_cron and run_maintenance() may overlap: the second one has nothing to do.
    IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('pg_observe.rollup_metrics')) THEN
        RETURN 'already running in another session';
    END IF;
    -- Points carry their transaction's start as received_at. Read no further than the oldest
    -- transaction still open that has written (it may be writing points), but wait for one
    -- at most an hour: a transaction open longer than that gets its points rolled up only
    -- when a later point lands in the same minute (they stay in the raw table regardless).
    SELECT LEAST(pg_catalog.now() - interval '1 minute',
                 GREATEST(COALESCE(pg_catalog.min(a.xact_start), 'infinity'), pg_catalog.now() - interval '1 hour'))
        INTO read_to
    FROM pg_catalog.pg_stat_activity a
    WHERE a.backend_xid IS NOT NULL AND a.pid <> pg_catalog.pg_backend_pid()
      AND a.datname = pg_catalog.current_database();
    SELECT s.rolled_up_to INTO read_from FROM monitoring.metric_rollup_state s;
    read_from := COALESCE(read_from, '-infinity');
    IF read_from >= read_to THEN
        RETURN 'nothing new';
    END IF;

    WITH touched AS (
        SELECT DISTINCT pg_catalog.date_trunc('minute', m."timestamp") AS minute
        FROM monitoring.metrics m
        WHERE m.received_at >= read_from AND m.received_at < read_to
    ), rolled AS (
        INSERT INTO monitoring.metric_rollups_1m AS r
            (bucket, series_key, metric_name, metric_type, labels, environment, service, sample_count, value_sum,
             value_min, value_max, value_last, p50, p90, p95, p99)
        SELECT g.minute,
               pg_catalog.md5(pg_catalog.jsonb_build_array(g.metric_name, g.metric_type, g.labels, g.environment,
                                                           g.service)::text)::uuid,
               g.metric_name, g.metric_type, g.labels, g.environment, g.service, g.n, g.total, g.lowest,
               g.highest, g.latest, g.q[1], g.q[2], g.q[3], g.q[4]
        FROM (
            SELECT t.minute, m.metric_name, m.metric_type, m.labels, m.environment, m.service,
                   pg_catalog.count(*) AS n, pg_catalog.sum(m.metric_value) AS total,
                   pg_catalog.min(m.metric_value) AS lowest, pg_catalog.max(m.metric_value) AS highest,
                   (pg_catalog.array_agg(m.metric_value ORDER BY m."timestamp" DESC, m.id DESC))[1] AS latest,
                   pg_catalog.percentile_cont(ARRAY[0.5, 0.9, 0.95, 0.99]::double precision[])
                       WITHIN GROUP (ORDER BY m.metric_value)
                       FILTER (WHERE m.metric_type = 'histogram') AS q
            FROM touched t
            JOIN monitoring.metrics m
              ON m."timestamp" >= t.minute
             AND m."timestamp" < t.minute + interval '1 minute'
            GROUP BY t.minute, m.metric_name, m.metric_type, m.labels, m.environment, m.service
        ) g
        ON CONFLICT (series_key, bucket) DO UPDATE
            SET sample_count = EXCLUDED.sample_count, value_sum = EXCLUDED.value_sum,
                value_min = EXCLUDED.value_min, value_max = EXCLUDED.value_max,
                value_last = EXCLUDED.value_last, p50 = EXCLUDED.p50, p90 = EXCLUDED.p90,
                p95 = EXCLUDED.p95, p99 = EXCLUDED.p99, rolled_up_at = pg_catalog.now()
        RETURNING r.bucket
    )
    SELECT pg_catalog.count(DISTINCT rolled.bucket)::integer, pg_catalog.count(*)::integer INTO minutes, series
    FROM rolled;

    INSERT INTO monitoring.metric_rollup_state AS s (singleton, rolled_up_to, last_run_at)
    VALUES (true, read_to, pg_catalog.now())
    ON CONFLICT (singleton) DO UPDATE SET rolled_up_to = EXCLUDED.rolled_up_to, last_run_at = EXCLUDED.last_run_at;
    RETURN pg_catalog.format('%s minutes, %s series-minutes rolled up', minutes, series);
END
$$;
COMMENT ON FUNCTION monitoring.rollup_metrics() IS
    'Recomputes the per-minute rollups of every minute that received points since the last run; run by pg_cron and run_maintenance()';
