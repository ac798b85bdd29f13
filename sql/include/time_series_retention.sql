-- The seeds' "drop old partitions" functions, one per table, over one body (included by
-- sql/010_time_series.sql and by the upgrade scripts, hence CREATE OR REPLACE). Each public
-- function is an invoker wrapper that passes the caller's search_path to the definer body
-- (see _sync_partman for why).

CREATE OR REPLACE FUNCTION monitoring._drop_old_partitions(
    p_parent_table text, p_retention_months integer, p_caller_search_path text)
    RETURNS TABLE (partition_name text, dropped boolean)
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    partman name := monitoring._partman_schema();
    before_drop text[];
BEGIN
    IF p_retention_months IS NULL OR p_retention_months OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'retention_months must be at least 1, got %', p_retention_months
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT pg_catalog.array_agg(c.relname::text) INTO before_drop
    FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
    WHERE i.inhparent OPERATOR(pg_catalog.=) p_parent_table::regclass;
    PERFORM pg_catalog.set_config('search_path', p_caller_search_path, true);
    EXECUTE pg_catalog.format('SELECT %I.drop_partition_time($1, $2, false, false)', partman)
        USING p_parent_table, pg_catalog.make_interval(months => p_retention_months);
    RETURN QUERY
        SELECT b, true FROM pg_catalog.unnest(before_drop) b
        WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c
                          WHERE c.relnamespace OPERATOR(pg_catalog.=) 'monitoring'::regnamespace
                            AND c.relname OPERATOR(pg_catalog.=) b)
        ORDER BY b;
END
$$;
COMMENT ON FUNCTION monitoring._drop_old_partitions(text, integer, text) IS
    'Body of the drop_old_*_partitions() functions: drops a time-series table''s partitions entirely older than the retention (pg_partman); lists them';

CREATE OR REPLACE FUNCTION monitoring.drop_old_error_occurrence_partitions(retention_months integer)
    RETURNS TABLE (partition_name text, dropped boolean)
    LANGUAGE sql
    VOLATILE
AS $$
    SELECT * FROM monitoring._drop_old_partitions('monitoring.tb_error_occurrence', retention_months,
                                                  pg_catalog.current_setting('search_path'))
$$;
COMMENT ON FUNCTION monitoring.drop_old_error_occurrence_partitions(integer) IS
    'Seed-compatible: drops tb_error_occurrence partitions entirely older than retention_months (pg_partman); lists them';

CREATE OR REPLACE FUNCTION monitoring.drop_old_notification_log_partitions(retention_months integer)
    RETURNS TABLE (partition_name text, dropped boolean)
    LANGUAGE sql
    VOLATILE
AS $$
    SELECT * FROM monitoring._drop_old_partitions('monitoring.tb_error_notification_log', retention_months,
                                                  pg_catalog.current_setting('search_path'))
$$;
COMMENT ON FUNCTION monitoring.drop_old_notification_log_partitions(integer) IS
    'Seed-compatible: drops tb_error_notification_log partitions entirely older than retention_months (pg_partman); lists them';
