-- Included by sql/020_maintenance.sql and by the upgrade scripts.

CREATE OR REPLACE FUNCTION monitoring._run_maintenance(p_caller_search_path text)
    RETURNS TABLE (task text, target text, result text)
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg monitoring.time_series_config;
    job monitoring.maintenance_task;
    partman name := monitoring._partman_schema();
    moved bigint;
    batch bigint;
    default_has_rows boolean;
    partition_count integer;
BEGIN
    -- Two overlapping runs (pg_cron and a manual call) would only wait on each other.
    IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('pg_observe.run_maintenance')) THEN
        RAISE NOTICE 'pg_observe maintenance is already running in another session';
        RETURN;
    END IF;

    FOR cfg IN SELECT * FROM monitoring.time_series_config c ORDER BY c.parent_table LOOP
        PERFORM monitoring._sync_partman(cfg.parent_table, p_caller_search_path);

        -- Rows in the default partition block the creation of the child covering them:
        -- move them into their children first (pg_partman creates those as needed).
        moved := 0;
        LOOP
            EXECUTE pg_catalog.format('SELECT EXISTS (SELECT FROM %s)',
                                      monitoring._default_partition(cfg.parent_table::regclass))
                INTO STRICT default_has_rows;
            EXIT WHEN NOT default_has_rows;
            PERFORM pg_catalog.set_config('search_path', p_caller_search_path, true);
            -- The rows moved are stored already: pg_partman moves them with INSERT, which the
            -- error capture's row trigger must let through as prepared, or it would drop them as
            -- repeated event ids (deleted from the default, inserted nowhere) or count them twice.
            PERFORM pg_catalog.set_config('pg_observe.capture_prepared', 'on', true);
            -- pg_partman copies every column; generated ones must be left to be computed.
            EXECUTE pg_catalog.format(
                'SELECT %I.partition_data_time(p_parent_table => $1, p_batch_count => 100, p_analyze => false,'
                ' p_ignored_columns => $2)', partman)
                INTO batch
                USING cfg.parent_table,
                      (SELECT pg_catalog.array_agg(a.attname::text) FROM pg_catalog.pg_attribute a
                       WHERE a.attrelid OPERATOR(pg_catalog.=) cfg.parent_table::regclass
                         AND a.attgenerated OPERATOR(pg_catalog.<>) '' AND NOT a.attisdropped);
            PERFORM pg_catalog.set_config('pg_observe.capture_prepared', 'off', true);
            EXIT WHEN batch OPERATOR(pg_catalog.=) 0;
            moved := moved OPERATOR(pg_catalog.+) batch;
        END LOOP;

        PERFORM pg_catalog.set_config('search_path', p_caller_search_path, true);
        EXECUTE pg_catalog.format(
            'SELECT %I.run_maintenance(p_parent_table => $1, p_analyze => false, p_jobmon => false)', partman)
            USING cfg.parent_table;

        SELECT pg_catalog.count(*)::integer INTO partition_count FROM pg_catalog.pg_inherits i
        WHERE i.inhparent OPERATOR(pg_catalog.=) cfg.parent_table::regclass;
        task := 'partitions';
        target := cfg.parent_table;
        result := pg_catalog.format('%s partitions, %s rows moved out of the default', partition_count, moved);
        RETURN NEXT;
    END LOOP;

    -- A failing task (a rollup that cannot be computed, say) is reported and the others run:
    -- it must not undo the partition maintenance above, or every table would stop getting
    -- partitions because of one task.
    FOR job IN SELECT * FROM monitoring.maintenance_task t ORDER BY t.run_order, t.task_name LOOP
        task := job.task_name;
        target := job.function_name;
        BEGIN
            EXECUTE pg_catalog.format('SELECT %s()', job.function_name) INTO result;
        EXCEPTION WHEN OTHERS THEN
            result := 'failed: ' OPERATOR(pg_catalog.||) SQLERRM;
            RAISE WARNING 'pg_observe maintenance task % failed: %', job.task_name, SQLERRM;
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION monitoring._run_maintenance(text) IS 'Body of run_maintenance()';
