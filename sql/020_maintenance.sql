-- Maintenance: one function does all periodic work, so that pg_cron (one schedule) and an
-- installation without pg_cron (call it from any scheduler) run exactly the same code.

-- Periodic work of the other capabilities (folding counters, expiring cache entries, ...):
-- each registers a function here instead of changing run_maintenance().
CREATE TABLE monitoring.maintenance_task (
    task_name      text    PRIMARY KEY,
    function_name  text    NOT NULL,
    run_order      integer NOT NULL DEFAULT 100,
    CONSTRAINT maintenance_task_function_qualified CHECK (function_name ~ '^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$')
);
COMMENT ON TABLE monitoring.maintenance_task IS
    'Functions (no arguments, returning text) that run_maintenance() calls after partition maintenance';

-- @include sql/include/maintenance_run.sql

-- Deliberately without SET search_path: it reads the caller's (see _sync_partman).
CREATE FUNCTION monitoring.run_maintenance()
    RETURNS TABLE (task text, target text, result text)
    LANGUAGE sql
    VOLATILE
AS $$
    SELECT * FROM monitoring._run_maintenance(pg_catalog.current_setting('search_path'))
$$;
COMMENT ON FUNCTION monitoring.run_maintenance() IS
    'All periodic work of pg_observe: premake and expire partitions, empty default partitions, then every maintenance_task; what the pg_cron job runs';

-- @include sql/include/maintenance_jobs.sql

-- pg_cron always makes schema cron, where it is installed at all. Callers name it through a
-- variable, so that the static check of their bodies does not need pg_cron installed.
CREATE FUNCTION monitoring._cron_schema()
    RETURNS name
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'cron'::name FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'pg_cron'
$$;
COMMENT ON FUNCTION monitoring._cron_schema() IS 'Schema of pg_cron''s jobs (cron), or NULL where pg_cron is not installed';

CREATE FUNCTION monitoring.schedule_maintenance()
    RETURNS TABLE (job_name text, schedule text, command text, jobid bigint)
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job record;
    cron_schema name := monitoring._cron_schema();
    new_jobid bigint;
BEGIN
    IF cron_schema IS NULL THEN
        RAISE NOTICE 'pg_cron is not installed in database %: nothing scheduled', pg_catalog.current_database()
            USING HINT = 'Call SELECT monitoring.run_maintenance() every few minutes from another scheduler, '
                         'or from the pg_cron database: SELECT cron.schedule_in_database(''pg_observe_maintenance'', '
                         '''*/5 * * * *'', ''SELECT monitoring.run_maintenance()'', ' ||
                         pg_catalog.quote_literal(pg_catalog.current_database()) || ')';
        RETURN;
    END IF;
    FOR job IN SELECT * FROM monitoring._maintenance_jobs() LOOP
        -- cron.schedule(name, ...) replaces a job of the same name: calling this again is harmless.
        EXECUTE pg_catalog.format('SELECT %I.schedule($1, $2, $3)', cron_schema)
            INTO new_jobid USING job.job_name, job.schedule, job.command;
        jobid := new_jobid;
        job_name := job.job_name;
        schedule := job.schedule;
        command := job.command;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION monitoring.schedule_maintenance() IS
    'Registers (or updates) the pg_cron jobs of pg_observe; a notice and nothing else where pg_cron is absent';

CREATE FUNCTION monitoring.unschedule_maintenance()
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    removed integer := 0;
    cron_schema name := monitoring._cron_schema();
BEGIN
    IF cron_schema IS NOT NULL THEN
        EXECUTE pg_catalog.format('SELECT pg_catalog.count(%1$I.unschedule(j.jobid))::integer FROM %1$I.job j'
                                  ' WHERE j.jobname IN (SELECT job_name FROM monitoring._maintenance_jobs())',
                                  cron_schema)
            INTO removed;
    END IF;
    RETURN removed;
END
$$;
COMMENT ON FUNCTION monitoring.unschedule_maintenance() IS 'Removes the pg_cron jobs of pg_observe; returns how many';

-- DROP EXTENSION drops our tables but not pg_partman's config rows for them (which would
-- make pg_partman's maintenance fail for every other table) nor our pg_cron jobs. An event
-- trigger of the extension cannot see its own drop in sql_drop, so this runs at
-- ddl_command_start of a DROP EXTENSION naming pg_observe; it is undone if the DROP fails.
-- A false match (the name in a comment) only unregisters: run_maintenance() re-registers.
CREATE FUNCTION monitoring._cleanup_on_drop_extension()
    RETURNS event_trigger
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    partman name := monitoring._partman_schema();
BEGIN
    IF pg_catalog.current_query() OPERATOR(pg_catalog.!~*) '\mpg_observe\M' THEN
        RETURN;
    END IF;
    IF partman IS NOT NULL THEN
        EXECUTE pg_catalog.format('DELETE FROM %I.part_config WHERE parent_table IN'
                                  ' (SELECT parent_table FROM monitoring.time_series_config)', partman);
    END IF;
    PERFORM monitoring.unschedule_maintenance();
END
$$;
COMMENT ON FUNCTION monitoring._cleanup_on_drop_extension() IS
    'Removes pg_partman config rows and pg_cron jobs of pg_observe when DROP EXTENSION pg_observe runs';

CREATE EVENT TRIGGER pg_observe_cleanup_on_drop ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION')
    EXECUTE FUNCTION monitoring._cleanup_on_drop_extension();
