-- The seeds' partition functions for tb_error_occurrence, delegating to pg_partman (whose
-- child names are tb_error_occurrence_pYYYY_MM). Each public function is an invoker wrapper
-- that passes the caller's search_path to a definer body (see _sync_partman for why).

CREATE FUNCTION monitoring._create_error_occurrence_partition(target_date date, p_caller_search_path text)
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    partman name := monitoring._partman_schema();
    partition_name text;
BEGIN
    EXECUTE pg_catalog.format('SELECT partition_table FROM %I.show_partition_name($1, $2)', partman)
        INTO partition_name USING 'monitoring.tb_error_occurrence', target_date::text;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_class c
                   WHERE c.relnamespace OPERATOR(pg_catalog.=) 'monitoring'::regnamespace
                     AND c.relname OPERATOR(pg_catalog.=) partition_name) THEN
        PERFORM pg_catalog.set_config('search_path', p_caller_search_path, true);
        EXECUTE pg_catalog.format('SELECT %I.create_partition_time($1, ARRAY[$2]::timestamptz[], false)', partman)
            USING 'monitoring.tb_error_occurrence', target_date::timestamptz;
    END IF;
    RETURN partition_name;
END
$$;
COMMENT ON FUNCTION monitoring._create_error_occurrence_partition(date, text) IS 'Body of create_error_occurrence_partition()';

CREATE FUNCTION monitoring.create_error_occurrence_partition(target_date date)
    RETURNS text
    LANGUAGE sql
    VOLATILE
AS $$
    SELECT monitoring._create_error_occurrence_partition(target_date, pg_catalog.current_setting('search_path'))
$$;
COMMENT ON FUNCTION monitoring.create_error_occurrence_partition(date) IS
    'Seed-compatible: makes sure the month of target_date has a partition (pg_partman); returns its name. Idempotent';

CREATE FUNCTION monitoring._ensure_error_occurrence_partitions(months_ahead integer, p_caller_search_path text)
    RETURNS TABLE (partition_name text, created boolean)
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    month_start date;
BEGIN
    FOR month_start IN
        SELECT pg_catalog.generate_series(pg_catalog.date_trunc('month', CURRENT_DATE),
                                          pg_catalog.date_trunc('month', CURRENT_DATE) OPERATOR(pg_catalog.+)
                                              pg_catalog.make_interval(months => months_ahead),
                                          interval '1 month')::date
    LOOP
        created := NOT EXISTS (
            SELECT FROM pg_catalog.pg_class c
            WHERE c.relnamespace OPERATOR(pg_catalog.=) 'monitoring'::regnamespace
              AND c.relname OPERATOR(pg_catalog.=) ('tb_error_occurrence_p' OPERATOR(pg_catalog.||) pg_catalog.to_char(month_start, 'YYYY_MM')));
        partition_name := monitoring._create_error_occurrence_partition(month_start, p_caller_search_path);
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION monitoring._ensure_error_occurrence_partitions(integer, text) IS 'Body of ensure_error_occurrence_partitions()';

CREATE FUNCTION monitoring.ensure_error_occurrence_partitions(months_ahead integer)
    RETURNS TABLE (partition_name text, created boolean)
    LANGUAGE sql
    VOLATILE
AS $$
    SELECT * FROM monitoring._ensure_error_occurrence_partitions(months_ahead, pg_catalog.current_setting('search_path'))
$$;
COMMENT ON FUNCTION monitoring.ensure_error_occurrence_partitions(integer) IS
    'Seed-compatible: partitions for this month and the next months_ahead months; reports which were created';

-- drop_old_error_occurrence_partitions() is in sql/include/time_series_retention.sql.

CREATE FUNCTION monitoring.get_partition_stats()
    RETURNS TABLE (table_name text, partition_name text, row_count bigint, total_size text, index_size text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.relname::text, c.relname::text, GREATEST(c.reltuples, 0)::bigint,
           pg_catalog.pg_size_pretty(pg_catalog.pg_total_relation_size(c.oid)),
           pg_catalog.pg_size_pretty(pg_catalog.pg_indexes_size(c.oid))
    FROM monitoring.time_series_config t
    JOIN pg_catalog.pg_class p ON p.oid OPERATOR(pg_catalog.=) t.parent_table::regclass
    JOIN pg_catalog.pg_inherits i ON i.inhparent OPERATOR(pg_catalog.=) p.oid
    JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
    ORDER BY p.relname, c.relname
$$;
COMMENT ON FUNCTION monitoring.get_partition_stats() IS
    'Seed-compatible: rows (estimated) and sizes of every partition of every pg_observe time-series table';
