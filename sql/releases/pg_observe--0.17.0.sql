\echo Use "CREATE EXTENSION pg_observe" to load this file. \quit
-- Released install script of pg_observe 0.17.0, kept as it shipped: do not edit.
-- Later versions are reached from it by the upgrade scripts built from sql/updates/.

-- sql/000_schema_and_roles.sql
-- The schema every object lives in, and the three cluster-wide roles of the privilege model.
-- Roles are created only if missing: they are shared by every database of the cluster and
-- are not dropped by DROP EXTENSION (see docs/roles.md).

CREATE SCHEMA monitoring;
COMMENT ON SCHEMA monitoring IS
    'pg_observe: error tracking, notifications, traces, metrics and cache';

DO $roles$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['observe_writer', 'observe_reader', 'observe_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) role_name) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
    END LOOP;
END
$roles$;

COMMENT ON ROLE observe_writer IS
    'pg_observe: may capture events and record data, may not read stored data or secrets';
COMMENT ON ROLE observe_reader IS
    'pg_observe: read-only access for dashboards and exporters, no secrets';
COMMENT ON ROLE observe_admin IS
    'pg_observe: manages issues, rules, channels, retention and maintenance';

-- The admin does everything the other two do; the reader sees database statistics.
GRANT observe_writer, observe_reader TO observe_admin;
GRANT pg_monitor TO observe_reader;

GRANT USAGE ON SCHEMA monitoring TO observe_writer, observe_reader, observe_admin;

-- sql/010_time_series.sql
-- The time-series storage pattern: every table that grows with time becomes a pg_partman
-- range-partitioned table through monitoring._create_time_series(), which records its
-- settings in monitoring.time_series_config. That table, not pg_partman's part_config, is
-- the source of truth: run_maintenance() re-registers and re-syncs anything that drifted.
--
-- A row whose time has no partition lands in the default partition. If it stayed there,
-- the day pg_partman creates the partition covering it, maintenance would fail
-- ("updated partition constraint for default partition would be violated"). So a trigger on
-- every default partition repairs implausible times (far future, far past, NULL) to now(),
-- keeping the original in a column the table names, and re-inserts the row through the
-- parent; plausible times (a partition merely missing) stay and run_maintenance() moves
-- them out before pg_partman runs. Inserts never fail for a wrong clock.

CREATE TABLE monitoring.time_series_config (
    parent_table          text        PRIMARY KEY,
    control_column        text        NOT NULL,
    partition_interval    interval    NOT NULL,
    retention             interval,
    premake               integer     NOT NULL DEFAULT 4,
    original_time_column  text,
    created_at            timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT time_series_config_interval_positive CHECK (partition_interval > interval '0'),
    CONSTRAINT time_series_config_retention_positive CHECK (retention IS NULL OR retention > interval '0'),
    CONSTRAINT time_series_config_premake_positive CHECK (premake > 0)
);
COMMENT ON TABLE monitoring.time_series_config IS
    'Partitioned tables of pg_observe and their interval, retention and premake; synced to pg_partman by run_maintenance()';
COMMENT ON COLUMN monitoring.time_series_config.parent_table IS 'Schema-qualified name of the partitioned table';
COMMENT ON COLUMN monitoring.time_series_config.retention IS 'Partitions entirely older than this are dropped; NULL keeps everything';
COMMENT ON COLUMN monitoring.time_series_config.original_time_column IS
    'Column that keeps the original time of a row whose time was repaired by the default-partition guard';

-- Where pg_partman lives: it may have been installed into any schema before us.
CREATE FUNCTION monitoring._partman_schema()
    RETURNS name
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT n.nspname
    FROM pg_catalog.pg_extension e
    JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
    WHERE e.extname OPERATOR(pg_catalog.=) 'pg_partman'
$$;
COMMENT ON FUNCTION monitoring._partman_schema() IS 'Schema of the pg_partman extension, found through pg_extension';

-- pg_partman 4.x names: daily and monthly get its usual child-name suffixes.
CREATE FUNCTION monitoring._partman_interval(p_interval interval)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE p_interval
        WHEN interval '1 day' THEN 'daily'
        WHEN interval '1 month' THEN 'monthly'
        WHEN interval '7 days' THEN 'weekly'
        WHEN interval '1 hour' THEN 'hourly'
        WHEN interval '1 year' THEN 'yearly'
        ELSE p_interval::text
    END
$$;
COMMENT ON FUNCTION monitoring._partman_interval(interval) IS 'pg_partman 4.x spelling of a partition interval';

CREATE FUNCTION monitoring._default_partition(p_parent regclass)
    RETURNS regclass
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.oid::pg_catalog.regclass
    FROM pg_catalog.pg_inherits i
    JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
    WHERE i.inhparent OPERATOR(pg_catalog.=) p_parent
      AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) OPERATOR(pg_catalog.=) 'DEFAULT'
$$;
COMMENT ON FUNCTION monitoring._default_partition(regclass) IS 'The DEFAULT partition of a partitioned table, or NULL';

-- Registers one table with pg_partman (if it is not already) and syncs its settings.
-- pg_partman 4.7 saves search_path and restores it with a session-level set_config(),
-- which outlives our functions' SET search_path clause. So it is called under the caller's
-- own search_path (passed down by the public entry points), which it then restores as it
-- was; after that call the rest of our (fully qualified) code runs under that path too.
-- Only admins, the installer and pg_cron reach these functions.
CREATE FUNCTION monitoring._sync_partman(p_parent_table text, p_caller_search_path text)
    RETURNS boolean
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg monitoring.time_series_config;
    partman name := monitoring._partman_schema();
    registered boolean;
    created boolean := false;
BEGIN
    IF partman IS NULL THEN
        RAISE EXCEPTION 'pg_partman is not installed in database %', pg_catalog.current_database();
    END IF;
    SELECT * INTO STRICT cfg FROM monitoring.time_series_config
    WHERE parent_table OPERATOR(pg_catalog.=) p_parent_table;

    EXECUTE pg_catalog.format('SELECT EXISTS (SELECT FROM %I.part_config WHERE parent_table = $1)', partman)
        INTO registered USING cfg.parent_table;
    IF NOT registered THEN
        PERFORM pg_catalog.set_config('search_path', p_caller_search_path, true);
        EXECUTE pg_catalog.format(
            'SELECT %I.create_parent(p_parent_table => $1, p_control => $2, p_type => ''native'','
            ' p_interval => $3, p_premake => $4, p_jobmon => false)', partman)
            USING cfg.parent_table, cfg.control_column,
                  monitoring._partman_interval(cfg.partition_interval), cfg.premake;
        created := true;
    END IF;

    -- Drop expired children outright, and always premake from now(), not from the newest data.
    EXECUTE pg_catalog.format(
        'UPDATE %I.part_config SET retention = $2, retention_keep_table = false,'
        ' retention_keep_index = false, infinite_time_partitions = true, premake = $3'
        ' WHERE parent_table = $1', partman)
        USING cfg.parent_table, cfg.retention::text, cfg.premake;

    PERFORM monitoring._guard_default_partition(cfg.parent_table::regclass);
    RETURN created;
END
$$;
COMMENT ON FUNCTION monitoring._sync_partman(text, text) IS
    'Registers a time-series table with pg_partman if needed and copies its retention and premake there';

CREATE FUNCTION monitoring._guard_default_partition(p_parent regclass)
    RETURNS void
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    default_partition regclass := monitoring._default_partition(p_parent);
    child regclass;
BEGIN
    IF default_partition IS NULL THEN
        RAISE EXCEPTION 'partitioned table % has no default partition', p_parent;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger
                   WHERE tgrelid OPERATOR(pg_catalog.=) default_partition
                     AND tgname OPERATOR(pg_catalog.=) '_pg_observe_default_guard') THEN
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER _pg_observe_default_guard BEFORE INSERT ON %s'
            ' FOR EACH ROW EXECUTE FUNCTION monitoring._default_partition_guard()', default_partition);
    END IF;

    -- The guard's name sorts before every other trigger, so it runs first on the default.
    -- Children made inside CREATE EXTENSION would become extension members, which pg_dump
    -- skips with their data; children made later by maintenance are not members. Make them
    -- all alike: not members (they still drop with their parent).
    FOR child IN
        SELECT i.inhrelid::pg_catalog.regclass
        FROM pg_catalog.pg_inherits i
        JOIN pg_catalog.pg_depend d ON d.objid OPERATOR(pg_catalog.=) i.inhrelid
            AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
            AND d.deptype OPERATOR(pg_catalog.=) 'e'
        JOIN pg_catalog.pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid
        WHERE i.inhparent OPERATOR(pg_catalog.=) p_parent
          AND e.extname OPERATOR(pg_catalog.=) 'pg_observe'
    LOOP
        EXECUTE pg_catalog.format('ALTER EXTENSION pg_observe DROP TABLE %s', child);
    END LOOP;
END
$$;
COMMENT ON FUNCTION monitoring._guard_default_partition(regclass) IS
    'Puts the time-repairing guard trigger on the default partition of a time-series table';

CREATE FUNCTION monitoring._default_partition_guard()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent regclass;
    cfg monitoring.time_series_config;
    row_json jsonb := pg_catalog.to_jsonb(NEW);
    row_time timestamptz;
    columns text;
BEGIN
    SELECT i.inhparent INTO parent FROM pg_catalog.pg_inherits i
    WHERE i.inhrelid OPERATOR(pg_catalog.=) TG_RELID;
    SELECT * INTO cfg FROM monitoring.time_series_config
    WHERE parent_table OPERATOR(pg_catalog.=) parent::text;
    IF NOT FOUND THEN
        RETURN NEW;
    END IF;

    row_time := (row_json OPERATOR(pg_catalog.->>) cfg.control_column)::timestamptz;
    -- A plausible time whose partition is only missing stays; run_maintenance() moves it.
    IF row_time >= pg_catalog.now() OPERATOR(pg_catalog.-) cfg.partition_interval
       AND row_time <= pg_catalog.now() OPERATOR(pg_catalog.+) cfg.partition_interval THEN
        RETURN NEW;
    END IF;

    -- jsonb_set() with a NULL value returns NULL: only keep an original that exists.
    IF cfg.original_time_column IS NOT NULL AND row_time IS NOT NULL
       AND (row_json OPERATOR(pg_catalog.->>) cfg.original_time_column) IS NULL THEN
        row_json := pg_catalog.jsonb_set(row_json, ARRAY[cfg.original_time_column],
                                         pg_catalog.to_jsonb(row_time));
    END IF;
    row_json := pg_catalog.jsonb_set(row_json, ARRAY[cfg.control_column],
                                     pg_catalog.to_jsonb(pg_catalog.now()));
    -- Identity values are kept as they were, generated columns are computed again, and
    -- NULLs get the parent's defaults (a row inserted straight into the default partition
    -- never got them).
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO columns
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid OPERATOR(pg_catalog.=) parent AND a.attnum OPERATOR(pg_catalog.>) 0
      AND NOT a.attisdropped AND a.attgenerated OPERATOR(pg_catalog.=) ''
      AND pg_catalog.jsonb_typeof(row_json OPERATOR(pg_catalog.->) a.attname::text) OPERATOR(pg_catalog.<>) 'null';
    EXECUTE pg_catalog.format(
        'INSERT INTO %1$s (%2$s) OVERRIDING SYSTEM VALUE'
        ' SELECT %2$s FROM pg_catalog.jsonb_populate_record(NULL::%1$s, $1)', parent, columns)
        USING row_json;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._default_partition_guard() IS
    'Trigger on default partitions: re-inserts rows with an implausible or NULL time at now(), keeping the original';

CREATE FUNCTION monitoring._create_time_series(
    p_parent_table regclass,
    p_control_column text,
    p_partition_interval interval,
    p_retention interval,
    p_premake integer DEFAULT 4,
    p_original_time_column text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql
    VOLATILE
    -- Deliberately without SET search_path: pg_partman gets the caller's (see _sync_partman).
AS $$
BEGIN
    INSERT INTO monitoring.time_series_config
        (parent_table, control_column, partition_interval, retention, premake, original_time_column)
    VALUES (p_parent_table::text, p_control_column, p_partition_interval, p_retention, p_premake,
            p_original_time_column);
    PERFORM monitoring._sync_partman(p_parent_table::text, pg_catalog.current_setting('search_path'));
END
$$;
COMMENT ON FUNCTION monitoring._create_time_series(regclass, text, interval, interval, integer, text) IS
    'Makes a RANGE-partitioned table pg_partman-managed with a default partition, premade children, retention and the time guard';

CREATE FUNCTION monitoring._set_retention(p_table regclass, p_retention interval, p_caller_search_path text)
    RETURNS void
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE monitoring.time_series_config SET retention = p_retention
    WHERE parent_table OPERATOR(pg_catalog.=) p_table::text;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not a pg_observe time-series table', p_table
            USING HINT = 'SELECT parent_table FROM monitoring.time_series_config lists them';
    END IF;
    PERFORM monitoring._sync_partman(p_table::text, p_caller_search_path);
END
$$;
COMMENT ON FUNCTION monitoring._set_retention(regclass, interval, text) IS 'Body of set_retention()';

-- Deliberately without SET search_path: it reads the caller's (see _sync_partman).
CREATE FUNCTION monitoring.set_retention(p_table regclass, p_retention interval)
    RETURNS void
    LANGUAGE sql
    VOLATILE
AS $$
    SELECT monitoring._set_retention(p_table, p_retention, pg_catalog.current_setting('search_path'))
$$;
COMMENT ON FUNCTION monitoring.set_retention(regclass, interval) IS
    'Changes how long a time-series table keeps data (NULL: forever); pg_partman drops older partitions at the next run_maintenance()';

-- sql/include/time_series_retention.sql
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


-- sql/020_maintenance.sql
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

-- sql/include/maintenance_run.sql
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

-- sql/include/maintenance_jobs.sql
-- Included by sql/020_maintenance.sql and by the upgrade scripts.

-- The jobs pg_observe needs, as one list, so that scheduling and cleanup agree.
CREATE OR REPLACE FUNCTION monitoring._maintenance_jobs()
    RETURNS TABLE (job_name text, schedule text, command text)
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('pg_observe_maintenance', '*/5 * * * *', 'SELECT monitoring.run_maintenance()'),
           -- the backstop of pg-observe worker: delivers notifications when no worker runs
           ('pg_observe_notifications', '* * * * *', 'CALL monitoring.dispatch_notifications()'),
           -- the backstop of pg-observe worker: captures queued errors when no worker runs
           ('pg_observe_error_queue', '* * * * *', 'CALL monitoring.drain_error_queue()'),
           -- pg_cron 1.4 has no sub-minute schedule: per-minute rollups run every minute
           ('pg_observe_metric_rollups', '* * * * *', 'SELECT monitoring.rollup_metrics()')
$$;
COMMENT ON FUNCTION monitoring._maintenance_jobs() IS 'pg_cron jobs that schedule_maintenance() registers';


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

-- sql/030_runtime.sql
-- PL/Python bodies live in plpython/*.py and are wrapped into CREATE FUNCTION at build time.

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
COMMENT ON FUNCTION monitoring._plpython_runtime() IS
    'Python version of PL/Python and whether the standard-library modules the senders use import';

-- sql/100_errors.sql
-- Error tracking storage: groups (tb_error_log, one row per fingerprint) and occurrences
-- (tb_error_occurrence, one row per event, partitioned monthly). The table names are the
-- seeds' names, so the seeds' queries run on the real tables; monitoring.errors is the
-- seeds' one-row-per-occurrence view over both. Nothing is stored twice.

CREATE TABLE monitoring.tb_error_log (
    error_id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    error_fingerprint    text        NOT NULL,
    fingerprint_version  smallint    NOT NULL DEFAULT 2,
    fingerprint_method   text        NOT NULL DEFAULT 'message',
    fingerprint_inputs   jsonb,
    error_type           text        NOT NULL,
    error_message        text        NOT NULL DEFAULT '',
    title                text        NOT NULL DEFAULT '',
    culprit              text,
    severity             text        NOT NULL DEFAULT 'error',
    occurrence_count     bigint      NOT NULL DEFAULT 0,
    affected_users       bigint      NOT NULL DEFAULT 0,
    first_seen           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_seen            timestamptz NOT NULL DEFAULT pg_catalog.now(),
    environment          text,
    environments         text[]      NOT NULL DEFAULT '{}',
    services             text[]      NOT NULL DEFAULT '{}',
    release_version      text,
    first_release        text,
    stack_trace          text,
    status               text        NOT NULL DEFAULT 'unresolved',
    resolved_at          timestamptz,
    resolved_by          text,
    resolved_in_release  text,
    regressed_at         timestamptz,
    ignored_until        timestamptz,
    ignored_until_count  bigint,
    assignee             text,
    CONSTRAINT tb_error_log_fingerprint_key UNIQUE (error_fingerprint),
    CONSTRAINT tb_error_log_status_check CHECK (status IN ('unresolved', 'resolved', 'ignored')),
    CONSTRAINT tb_error_log_severity_check
        CHECK (severity IN ('debug', 'info', 'warning', 'error', 'fatal')),
    CONSTRAINT tb_error_log_method_check
        CHECK (fingerprint_method IN ('explicit', 'rule', 'stack', 'message', 'fallback')),
    CONSTRAINT tb_error_log_resolved_has_time CHECK ((status = 'resolved') = (resolved_at IS NOT NULL)),
    CONSTRAINT tb_error_log_ignore_only_when_ignored
        CHECK (status = 'ignored' OR (ignored_until IS NULL AND ignored_until_count IS NULL))
);
COMMENT ON TABLE monitoring.tb_error_log IS 'Error groups (issues): one row per fingerprint';
COMMENT ON COLUMN monitoring.tb_error_log.error_fingerprint IS
    'Grouping key: sha256 of fingerprint_inputs, or the client''s own single-part fingerprint as given';
COMMENT ON COLUMN monitoring.tb_error_log.fingerprint_version IS
    'Version of the fingerprint algorithm that made this group, so the rules can change without silently splitting groups';
COMMENT ON COLUMN monitoring.tb_error_log.fingerprint_inputs IS 'The components that were hashed into the fingerprint';
COMMENT ON COLUMN monitoring.tb_error_log.occurrence_count IS
    'Occurrences folded so far; monitoring.error_groups adds those still pending (concurrent writers)';
COMMENT ON COLUMN monitoring.tb_error_log.status IS 'unresolved, resolved or ignored';
COMMENT ON COLUMN monitoring.tb_error_log.resolved_in_release IS
    'An occurrence from an older release does not reopen the group';
COMMENT ON COLUMN monitoring.tb_error_log.ignored_until IS 'Ignored until this time (NULL with status ignored: forever, or by count)';
COMMENT ON COLUMN monitoring.tb_error_log.ignored_until_count IS 'Ignored until occurrence_count reaches this';

CREATE TABLE monitoring.tb_error_occurrence (
    occurrence_id       uuid        NOT NULL DEFAULT gen_random_uuid(),
    error_id            uuid,
    occurred_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    client_timestamp    timestamptz,
    received_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    event_id            uuid,
    exception_type      text        NOT NULL DEFAULT 'Error',
    message             text        NOT NULL DEFAULT '',
    stack_trace         text,
    frames              jsonb,
    exception_chain     jsonb,
    client_fingerprint  text[],
    context             jsonb,
    tags                jsonb,
    user_info           jsonb,
    request             jsonb,
    environment         text        NOT NULL DEFAULT 'production',
    release_version     text,
    service             text,
    server_name         text,
    transaction_name    text,
    logger              text,
    level               text        NOT NULL DEFAULT 'error',
    trace_id            text,
    span_id             text,
    CONSTRAINT tb_error_occurrence_pkey PRIMARY KEY (occurrence_id, occurred_at),
    CONSTRAINT tb_error_occurrence_level_check CHECK (level IN ('debug', 'info', 'warning', 'error', 'fatal'))
) PARTITION BY RANGE (occurred_at);
COMMENT ON TABLE monitoring.tb_error_occurrence IS
    'Error occurrences: one row per captured event, partitioned monthly by occurred_at (pg_partman); INSERT here is a capture';
COMMENT ON COLUMN monitoring.tb_error_occurrence.error_id IS 'Group (tb_error_log) of this occurrence, set by the capture trigger';
COMMENT ON COLUMN monitoring.tb_error_occurrence.occurred_at IS
    'When it happened: the client''s time, unless that was implausible (then the time received)';
COMMENT ON COLUMN monitoring.tb_error_occurrence.client_timestamp IS 'The client''s own timestamp, as sent';
COMMENT ON COLUMN monitoring.tb_error_occurrence.received_at IS 'When the database stored it';
COMMENT ON COLUMN monitoring.tb_error_occurrence.event_id IS 'The client''s event id: an event id already stored is not stored again';
COMMENT ON COLUMN monitoring.tb_error_occurrence.frames IS 'Structured frames of the main exception, innermost last (parsed from stack_trace when not given)';
COMMENT ON COLUMN monitoring.tb_error_occurrence.exception_chain IS 'Chained exceptions (causes), Sentry order: the raised one last';
COMMENT ON COLUMN monitoring.tb_error_occurrence.client_fingerprint IS 'Fingerprint parts sent by the client ({{ default }} allowed)';

CREATE INDEX tb_error_occurrence_error_id_idx ON monitoring.tb_error_occurrence (error_id, occurred_at DESC);
CREATE INDEX tb_error_occurrence_occurred_at_idx ON monitoring.tb_error_occurrence (occurred_at DESC);
CREATE INDEX tb_error_occurrence_trace_id_idx ON monitoring.tb_error_occurrence (trace_id)
    WHERE trace_id IS NOT NULL;

-- Counters of concurrent captures waiting to be folded into tb_error_log (see the trigger).
CREATE TABLE monitoring.error_group_pending (
    error_id     uuid        NOT NULL REFERENCES monitoring.tb_error_log ON DELETE CASCADE,
    occurrences  bigint      NOT NULL,
    new_users    bigint      NOT NULL DEFAULT 0,
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    environment  text,
    environments text[]      NOT NULL DEFAULT '{}',
    services     text[]      NOT NULL DEFAULT '{}',
    release_version text
);
CREATE INDEX error_group_pending_error_id_idx ON monitoring.error_group_pending (error_id);
COMMENT ON TABLE monitoring.error_group_pending IS
    'Counter deltas written when another transaction holds a group''s row; folded by the next capture or run_maintenance()';

-- No foreign key to tb_error_log: nearly every occurrence of a busy service brings a user
-- new to its group, and the key's check cost a query per user (3 µs of a 100,000-row COPY's
-- rows, about a third of the fold). The triggers below delete a deleted group's users.
CREATE TABLE monitoring.error_group_user (
    error_id    uuid        NOT NULL,
    user_key    text        COLLATE pg_catalog."C" NOT NULL,   -- compared byte-wise: a key, not prose
    first_seen  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (error_id, user_key)
);
COMMENT ON TABLE monitoring.error_group_user IS 'Distinct users per group (user id, e-mail, ip or context.user_id), for affected_users';
-- sql/include/errors_group_user_cleanup.sql
-- Included by sql/100_errors.sql and by the 0.11.0 -> 0.12.0 upgrade, which made it.
-- error_group_user has no foreign key to tb_error_log (see its table): these triggers do what
-- ON DELETE CASCADE did. They run as the owner, like the captures that write the users.

CREATE OR REPLACE FUNCTION monitoring._forget_deleted_group_users()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM monitoring.error_group_user u
    USING deleted_groups d
    WHERE u.error_id OPERATOR(pg_catalog.=) d.error_id;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._forget_deleted_group_users() IS
    'Trigger: deletes the users of the error groups a statement deleted';

CREATE OR REPLACE FUNCTION monitoring._forget_all_group_users()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    TRUNCATE monitoring.error_group_user;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._forget_all_group_users() IS
    'Trigger: empties error_group_user when tb_error_log is truncated';

CREATE TRIGGER tb_error_log_forget_users
    AFTER DELETE ON monitoring.tb_error_log
    REFERENCING OLD TABLE AS deleted_groups
    FOR EACH STATEMENT EXECUTE FUNCTION monitoring._forget_deleted_group_users();
CREATE TRIGGER tb_error_log_forget_all_users
    AFTER TRUNCATE ON monitoring.tb_error_log
    FOR EACH STATEMENT EXECUTE FUNCTION monitoring._forget_all_group_users();


CREATE TABLE monitoring.error_activity (
    activity_id  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    error_id     uuid        NOT NULL REFERENCES monitoring.tb_error_log ON DELETE CASCADE,
    action       text        NOT NULL,
    actor        text,
    details      jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT error_activity_action_check CHECK (action IN
        ('first_seen', 'resolve', 'unresolve', 'ignore', 'unignore', 'assign', 'unassign', 'regression'))
);
CREATE INDEX error_activity_error_id_idx ON monitoring.error_activity (error_id, created_at DESC);
COMMENT ON TABLE monitoring.error_activity IS 'Who changed an issue''s state, when and how (resolve, ignore, assign, regression, ...)';

CREATE TABLE monitoring.error_fingerprint_rule (
    rule_id            integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    position           integer     NOT NULL DEFAULT 100,
    match_type         text,
    match_message      text,
    match_module       text,
    match_function     text,
    match_path         text,
    match_environment  text,
    match_tags         jsonb,
    fingerprint        text[],
    title              text,
    enabled            boolean     NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT error_fingerprint_rule_has_outcome CHECK (fingerprint IS NOT NULL OR title IS NOT NULL),
    CONSTRAINT error_fingerprint_rule_tags_object CHECK (match_tags IS NULL OR jsonb_typeof(match_tags) = 'object')
);
COMMENT ON TABLE monitoring.error_fingerprint_rule IS
    'Server-side grouping rules: glob patterns on type, message, module, function, path, environment, tags -> a fingerprint or a group title; lowest position first';

-- A case-insensitive regular expression that finds the word in JSON text with separators (or
-- JSON-escaped whitespace) between its letters: the capture trigger's cheap test for "could
-- the scrubber have anything to do here".
CREATE FUNCTION monitoring._scrub_word_pattern(p_word text)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.string_agg(pg_catalog.regexp_replace(c, '([^a-z0-9])', '\\\1'), '(?:[-_\s]|\\[tnr])*')
    FROM pg_catalog.regexp_split_to_table(pg_catalog.regexp_replace(pg_catalog.lower(p_word), '[-_\s]', '', 'g'), '') c
$$;
COMMENT ON FUNCTION monitoring._scrub_word_pattern(text) IS 'Regular expression finding a scrub word in JSON text, separators allowed';

CREATE TABLE monitoring.error_scrub_key (
    key_word     text    PRIMARY KEY,
    builtin      boolean NOT NULL DEFAULT false,
    key_pattern  text    GENERATED ALWAYS AS (monitoring._scrub_word_pattern(key_word)) STORED,
    CONSTRAINT error_scrub_key_not_empty CHECK (pg_catalog.regexp_replace(key_word, '[-_\s]', '', 'g') <> '')
);
COMMENT ON COLUMN monitoring.error_scrub_key.key_pattern IS 'The word as a separator-tolerant regular expression (generated)';
COMMENT ON TABLE monitoring.error_scrub_key IS
    'Values under keys containing these words (case and - _ ignored) are stored as [Filtered]';
INSERT INTO monitoring.error_scrub_key (key_word, builtin)
SELECT w, true FROM pg_catalog.unnest(ARRAY['password', 'passwd', 'pwd', 'secret', 'token', 'authorization',
    'cookie', 'api_key', 'apikey', 'credentials', 'private_key', 'session', 'credit_card', 'card_number', 'cvv',
    'ssn']) AS w;

-- Event ids seen recently, so that a retried send is stored once (kept 30 days).
CREATE TABLE monitoring.error_event_seen (
    event_id  uuid        PRIMARY KEY,
    seen_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE monitoring.error_event_seen IS 'Event ids stored in the last 30 days, to drop duplicates';

-- sql/include/errors_fingerprint_cache.sql
-- Fingerprints of stacks seen before (included by sql/100_errors.sql and the 0.2.0 -> 0.3.0
-- upgrade). Most events repeat a stack already fingerprinted: the capture looks the result up
-- by a key of the exception type and stack instead of running the PL/Python algorithm again.
-- UNLOGGED: it is a cache, empty after a crash and rebuilt by the next captures.
CREATE UNLOGGED TABLE monitoring.error_fingerprint_cache (
    input_key   uuid        PRIMARY KEY,
    result      jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE monitoring.error_fingerprint_cache IS
    'Cache of fingerprint results for events whose fingerprint depends only on type and stack (see _fingerprint_cache_key)';

-- A rule that changes may change what a cached stack groups into: forget them all.
CREATE OR REPLACE FUNCTION monitoring._forget_cached_fingerprints()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    TRUNCATE monitoring.error_fingerprint_cache;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._forget_cached_fingerprints() IS
    'Trigger: empties the fingerprint cache when the fingerprint rules change';

CREATE TRIGGER error_fingerprint_rule_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON monitoring.error_fingerprint_rule
    FOR EACH STATEMENT EXECUTE FUNCTION monitoring._forget_cached_fingerprints();

CREATE OR REPLACE FUNCTION monitoring._expire_fingerprint_cache()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    removed bigint;
BEGIN
    DELETE FROM monitoring.error_fingerprint_cache c
    WHERE c.created_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) interval '1 day');
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN pg_catalog.format('%s cached fingerprints expired', removed);
END
$$;
COMMENT ON FUNCTION monitoring._expire_fingerprint_cache() IS
    'Maintenance task: forgets cached fingerprints older than a day (stacks not seen since are not kept)';

INSERT INTO monitoring.maintenance_task (task_name, function_name, run_order) VALUES
    ('expire_fingerprint_cache', 'monitoring._expire_fingerprint_cache', 30);

-- sql/include/errors_queue_tables.sql
-- Included by sql/100_errors.sql and by the 0.7.0 -> 0.8.0 upgrade, which made it.

-- The capture queue: queue_error() stores an event with one INSERT and returns; the full
-- capture path (fingerprint, grouping, counters, notifications) runs later for many events
-- at once, as Sentry's ingestion does. A logged table: a queued event survives a crash.
CREATE TABLE monitoring.error_queue (
    queue_id   bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    queued_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    event      jsonb       NOT NULL
);
COMMENT ON TABLE monitoring.error_queue IS
    'Error events queued by queue_error(), waiting for process_error_queue() (the worker, pg_cron or run_maintenance())';
COMMENT ON COLUMN monitoring.error_queue.queued_at IS 'When it arrived: becomes the occurrence''s received_at';
COMMENT ON COLUMN monitoring.error_queue.event IS 'The event as sent (with an event_id added when it had none)';

-- What the capture path could not store, kept with the reason instead of being lost.
CREATE TABLE monitoring.error_queue_failed (
    queue_id   bigint      PRIMARY KEY,
    queued_at  timestamptz NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    sqlstate   text        NOT NULL,
    reason     text        NOT NULL,
    event      jsonb       NOT NULL
);
COMMENT ON TABLE monitoring.error_queue_failed IS
    'Queued error events the capture path failed on, with PostgreSQL''s error; retry_failed_errors() queues them again';

SELECT pg_catalog.pg_extension_config_dump('monitoring.error_queue', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_queue_queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_queue_failed', '');

-- run_maintenance() drains the queue too, for a database without pg_cron or a worker.
INSERT INTO monitoring.maintenance_task (task_name, function_name, run_order) VALUES
    ('process_error_queue', 'monitoring._process_error_queue_task', 5);

-- sql/include/errors_capture_tables.sql
-- Included by sql/100_errors.sql and by the 0.10.0 -> 0.11.0 upgrade, which made it (0.12.0
-- changed the collation of user_key by ALTER TABLE).

-- The occurrences the fast path of a plain INSERT or COPY has taken in the statement running
-- now: the statement's AFTER trigger counts them per group (occurrences, users, environments,
-- releases) in one pass at its end, instead of each row writing a user and a counter delta of
-- its own. The AFTER trigger takes the rows of its own transaction (xact: the top-level
-- transaction, savepoints included), so a row normally lives only until its statement ends,
-- hence UNLOGGED and without an index. Only a row written with the statement mark set by hand
-- (see _error_occurrence_begin()) can outlive its transaction; run_maintenance() counts it.
CREATE UNLOGGED TABLE monitoring.error_capture_journal (
    error_id         uuid        NOT NULL,
    user_key         text        COLLATE pg_catalog."C",   -- as error_group_user's, which it fills
    occurred_at      timestamptz NOT NULL,
    environment      text,
    service          text,
    release_version  text,
    xact             xid8        NOT NULL DEFAULT pg_catalog.pg_current_xact_id()
);
COMMENT ON TABLE monitoring.error_capture_journal IS
    'Fast-path occurrences of the INSERT or COPY running now, counted per group by its statement trigger at its end';

-- What the capture reads for every row, in one row: the scrub words and their pattern,
-- whether the fingerprint cache may be used (no enabled rule reads the message, environment
-- or tags), whether notification rules are enabled. A row of a plain INSERT reads it with its
-- fingerprint lookup instead of three more queries. Statement triggers on the three tables
-- refresh it; until the first refresh the defaults are the safe ones (every row scrubbed,
-- no cache, rules evaluated).
CREATE TABLE monitoring.error_capture_state (
    singleton                 boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    scrub_words               text[]      NOT NULL DEFAULT '{}',
    scrub_pattern             text        DEFAULT '',   -- '' matches every text; NULL: no words
    fingerprint_cache_usable  boolean     NOT NULL DEFAULT false,
    notification_rules        boolean     NOT NULL DEFAULT true,
    refreshed_at              timestamptz
);
COMMENT ON TABLE monitoring.error_capture_state IS
    'Derived from error_scrub_key, error_fingerprint_rule and tb_error_notification_config (kept by their triggers): what every capture reads';
INSERT INTO monitoring.error_capture_state DEFAULT VALUES;

CREATE OR REPLACE FUNCTION monitoring._refresh_error_capture_state()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Refreshes take turns, and each reads the tables in a statement of its own, after the
    -- lock: in READ COMMITTED it sees what a refresh it waited for had committed, so two
    -- concurrent changes (two new scrub words) both end up in the row. Captures only read.
    LOCK TABLE monitoring.error_capture_state IN SHARE ROW EXCLUSIVE MODE;
    -- An upsert: a row deleted by hand comes back.
    INSERT INTO monitoring.error_capture_state AS s
        (singleton, scrub_words, scrub_pattern, fingerprint_cache_usable, notification_rules, refreshed_at)
    SELECT true,
           -- the words as the patterns read them (_scrub_word_pattern()): lower case, no separators
           COALESCE((SELECT pg_catalog.array_agg(pg_catalog.regexp_replace(pg_catalog.lower(k.key_word), '[-_\s]', '', 'g')
                                                 ORDER BY k.key_word)
                     FROM monitoring.error_scrub_key k), '{}'),
           (SELECT pg_catalog.string_agg(k.key_pattern, '|' ORDER BY k.key_word) FROM monitoring.error_scrub_key k),
           NOT EXISTS (
               SELECT FROM monitoring.error_fingerprint_rule r
               WHERE r.enabled AND (r.match_message IS NOT NULL OR r.match_environment IS NOT NULL OR r.match_tags IS NOT NULL)),
           EXISTS (SELECT FROM monitoring.tb_error_notification_config n WHERE n.enabled),
           pg_catalog.clock_timestamp()
    ON CONFLICT (singleton) DO UPDATE
    SET scrub_words = excluded.scrub_words, scrub_pattern = excluded.scrub_pattern,
        fingerprint_cache_usable = excluded.fingerprint_cache_usable,
        notification_rules = excluded.notification_rules, refreshed_at = excluded.refreshed_at;
    RETURN 'capture state refreshed';
END
$$;
COMMENT ON FUNCTION monitoring._refresh_error_capture_state() IS
    'Recomputes error_capture_state from the scrub words, the fingerprint rules and the notification rules (also a maintenance task)';

CREATE OR REPLACE FUNCTION monitoring._error_capture_settings_changed()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM monitoring._refresh_error_capture_state();
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._error_capture_settings_changed() IS
    'Trigger: a table error_capture_state is derived from changed; refresh it';

CREATE TRIGGER error_scrub_key_capture_state
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON monitoring.error_scrub_key
    FOR EACH STATEMENT EXECUTE FUNCTION monitoring._error_capture_settings_changed();
CREATE TRIGGER error_fingerprint_rule_capture_state
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON monitoring.error_fingerprint_rule
    FOR EACH STATEMENT EXECUTE FUNCTION monitoring._error_capture_settings_changed();
-- Also when logical replication or a restore writes the rules (session_replication_role = replica).
ALTER TABLE monitoring.error_scrub_key ENABLE ALWAYS TRIGGER error_scrub_key_capture_state;
ALTER TABLE monitoring.error_fingerprint_rule ENABLE ALWAYS TRIGGER error_fingerprint_rule_capture_state;
-- The trigger on tb_error_notification_config, and the first refresh, come with that table
-- (sql/include/notify_capture_state.sql). Maintenance refreshes too: after a restore with
-- triggers disabled, or triggers disabled by hand, the row would go stale.
INSERT INTO monitoring.maintenance_task (task_name, function_name, run_order)
VALUES ('refresh_error_capture_state', 'monitoring._refresh_error_capture_state', 5);


-- User data and configuration survive pg_dump (partitions of tb_error_occurrence are not
-- extension members, so pg_dump keeps them anyway).
SELECT pg_catalog.pg_extension_config_dump('monitoring.tb_error_log', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_group_pending', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_group_user', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_activity', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_fingerprint_rule', '');
-- pg_dump keeps a member sequence's value only when told to: restored ids must not be handed out again
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_activity_activity_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_fingerprint_rule_rule_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_scrub_key', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_event_seen', '');

-- sql/include/errors_functions.sql
-- Functions of error tracking (included by sql/100_errors.sql and by the upgrade scripts,
-- hence CREATE OR REPLACE).
--
-- The capture path is set-based: a batch of events is mapped, deduplicated, scrubbed,
-- fingerprinted and grouped by a few statements for the whole batch, not by a trigger per
-- row. Helpers called per row are either inlinable SQL (no SET clause, every name qualified)
-- or are called only for the rare rows that need them (scrubbing, fingerprint cache misses).
-- The capture functions force generic plans: their statements take arrays as parameters, and
-- with custom plans PostgreSQL would plan those large queries again at every call, which
-- costs more than running them.

-- Limits: what is longer is cut, with a marker saying how much was cut.
-- Inlinable SQL: called per row on the capture path. A text of at most p_max bytes has at
-- most p_max characters: its byte length is read from its header, while length() counts the
-- characters of the whole text (2 µs a row for a stack trace).
CREATE OR REPLACE FUNCTION monitoring._truncate(p_text text, p_max integer)
    RETURNS text
    LANGUAGE sql
    STABLE   -- format() is stable: a function declared IMMUTABLE around it would not be inlined
    PARALLEL SAFE
AS $$
    SELECT CASE WHEN pg_catalog.octet_length(p_text) OPERATOR(pg_catalog.<=) p_max
                  OR pg_catalog.length(p_text) OPERATOR(pg_catalog.<=) p_max THEN p_text
                ELSE pg_catalog.left(p_text, p_max) OPERATOR(pg_catalog.||)
                     pg_catalog.format('…[truncated %s characters]', pg_catalog.length(p_text) OPERATOR(pg_catalog.-) p_max)
           END
$$;
COMMENT ON FUNCTION monitoring._truncate(text, integer) IS 'Cuts text to a maximum length with a marker naming what was cut';

-- Reads a timestamp the way clients send it: ISO 8601 text or Unix seconds (Sentry).
CREATE OR REPLACE FUNCTION monitoring._event_time(p_value jsonb)
    RETURNS timestamptz
    LANGUAGE plpgsql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.jsonb_typeof(p_value) OPERATOR(pg_catalog.=) 'number' THEN
        RETURN pg_catalog.to_timestamp((p_value #>> '{}')::double precision);
    END IF;
    RETURN (p_value #>> '{}')::timestamptz;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;   -- unreadable: the event is kept, filed at the time received
END
$$;
COMMENT ON FUNCTION monitoring._event_time(jsonb) IS 'Timestamp from ISO 8601 text or Unix seconds; NULL when unreadable';

CREATE OR REPLACE FUNCTION monitoring._uuid_or_null(p_value text)
    RETURNS uuid
    LANGUAGE plpgsql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN p_value::uuid;
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._uuid_or_null(text) IS 'The text as a uuid (with or without dashes), or NULL';

-- An event id as a uuid, or NULL: the usual spellings by a regular expression, the rest
-- (braces, other dash groupings) by _uuid_or_null(), whose exception block costs a
-- subtransaction. Inlinable SQL: called per event by the capture and by queue_error().
CREATE OR REPLACE FUNCTION monitoring._event_uuid(p_value text)
    RETURNS uuid
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_value IS NULL THEN NULL
                WHEN p_value OPERATOR(pg_catalog.~*)
                     '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN p_value::uuid
                ELSE monitoring._uuid_or_null(p_value) END
$$;
COMMENT ON FUNCTION monitoring._event_uuid(text) IS 'An event id as a uuid (any spelling PostgreSQL reads), or NULL';

-- Turns a JSON array of events, in the Sentry shape or the seeds' flat shape, into
-- occurrence rows (one query for the whole array; plans kept per session by PL/pgSQL).
-- p_received_at gives each event's time of arrival (the capture queue's); NULL: now().
CREATE OR REPLACE FUNCTION monitoring._events_to_occurrences(p_events jsonb, p_received_at timestamptz[] DEFAULT NULL)
    RETURNS SETOF monitoring.tb_error_occurrence
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- see the note at the top
AS $$
DECLARE
    bad_position bigint;
    bad_type text;
BEGIN
    IF pg_catalog.jsonb_path_exists(p_events, 'strict $[*] ? (@.type() != "object")') THEN
        SELECT a.i, pg_catalog.jsonb_typeof(a.e) INTO bad_position, bad_type
        FROM pg_catalog.jsonb_array_elements(p_events) WITH ORDINALITY AS a(e, i)
        WHERE pg_catalog.jsonb_typeof(a.e) OPERATOR(pg_catalog.<>) 'object'
        LIMIT 1;
        RAISE EXCEPTION 'an error event must be a JSON object, got % (event % of the batch)', bad_type, bad_position
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    RETURN QUERY
    SELECT pg_catalog.gen_random_uuid(),
           NULL::uuid,
           -- Sentry's rule: a time more than 30 days old or more than a minute ahead is the
           -- client's clock, not the event's: file it at the time received, keep what was sent.
           CASE WHEN x.client_time BETWEEN x.received_at OPERATOR(pg_catalog.-) interval '30 days'
                                       AND x.received_at OPERATOR(pg_catalog.+) interval '1 minute'
                THEN x.client_time ELSE x.received_at END,
           x.client_time,
           x.received_at,
           monitoring._event_uuid(x.event_id),
           COALESCE(NULLIF(x.main OPERATOR(pg_catalog.->>) 'type', ''),
                    NULLIF(a.e OPERATOR(pg_catalog.->>) 'exception_type', ''), 'Error'),
           COALESCE(x.main OPERATOR(pg_catalog.->>) 'value',
                    CASE pg_catalog.jsonb_typeof(x.msg)
                        WHEN 'string' THEN x.msg #>> '{}'
                        WHEN 'object' THEN COALESCE(x.msg OPERATOR(pg_catalog.->>) 'formatted',
                                                    x.msg OPERATOR(pg_catalog.->>) 'message')
                        WHEN 'null' THEN NULL
                        ELSE x.msg #>> '{}'   -- a number or an array: kept as its JSON text
                    END,
                    a.e #>> '{logentry,formatted}', a.e #>> '{logentry,message}', ''),
           a.e OPERATOR(pg_catalog.->>) 'stack_trace',
           CASE WHEN pg_catalog.jsonb_typeof(x.frames) OPERATOR(pg_catalog.=) 'array' THEN x.frames END,
           CASE WHEN pg_catalog.jsonb_typeof(a.e #> '{exception,values}') OPERATOR(pg_catalog.=) 'array' THEN
               CASE WHEN pg_catalog.jsonb_array_length(a.e #> '{exception,values}') OPERATOR(pg_catalog.>) 1
                    THEN a.e #> '{exception,values}' END
           END,
           CASE WHEN pg_catalog.jsonb_typeof(a.e OPERATOR(pg_catalog.->) 'fingerprint') OPERATOR(pg_catalog.=) 'array'
                THEN ARRAY(SELECT pg_catalog.jsonb_array_elements_text(a.e OPERATOR(pg_catalog.->) 'fingerprint')) END,
           -- The seeds' flat "context" (a non-object one is wrapped); Sentry's "contexts" and
           -- "extra" are kept under their names.
           CASE WHEN a.e ? 'contexts' OR a.e ? 'extra' THEN
                    COALESCE(x.ctx, '{}'::jsonb) OPERATOR(pg_catalog.||) pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                        'contexts', a.e OPERATOR(pg_catalog.->) 'contexts', 'extra', a.e OPERATOR(pg_catalog.->) 'extra'))
                ELSE x.ctx END,
           CASE pg_catalog.jsonb_typeof(a.e OPERATOR(pg_catalog.->) 'tags')
               WHEN 'object' THEN a.e OPERATOR(pg_catalog.->) 'tags'
               WHEN 'array' THEN   -- Sentry's [[key, value], ...]
                   (SELECT pg_catalog.jsonb_object_agg(t OPERATOR(pg_catalog.->>) 0, t OPERATOR(pg_catalog.->) 1)
                    FROM pg_catalog.jsonb_array_elements(a.e OPERATOR(pg_catalog.->) 'tags') t
                    WHERE pg_catalog.jsonb_typeof(t) OPERATOR(pg_catalog.=) 'array'
                      AND (t OPERATOR(pg_catalog.->>) 0) IS NOT NULL)
           END,
           a.e OPERATOR(pg_catalog.->) 'user',
           a.e OPERATOR(pg_catalog.->) 'request',
           COALESCE(NULLIF(a.e OPERATOR(pg_catalog.->>) 'environment', ''), 'production'),
           a.e OPERATOR(pg_catalog.->>) 'release',
           COALESCE(a.e OPERATOR(pg_catalog.->>) 'service', a.e #>> '{tags,service}'),
           a.e OPERATOR(pg_catalog.->>) 'server_name',
           a.e OPERATOR(pg_catalog.->>) 'transaction',
           a.e OPERATOR(pg_catalog.->>) 'logger',
           CASE pg_catalog.lower(a.e OPERATOR(pg_catalog.->>) 'level')
               WHEN 'warn' THEN 'warning' WHEN 'critical' THEN 'fatal'
               WHEN 'debug' THEN 'debug' WHEN 'info' THEN 'info' WHEN 'warning' THEN 'warning'
               WHEN 'fatal' THEN 'fatal' ELSE 'error' END,
           COALESCE(a.e OPERATOR(pg_catalog.->>) 'trace_id', a.e #>> '{contexts,trace,trace_id}'),
           COALESCE(a.e OPERATOR(pg_catalog.->>) 'span_id', a.e #>> '{contexts,trace,span_id}')
    FROM pg_catalog.jsonb_array_elements(p_events) WITH ORDINALITY AS a(e, i)
    CROSS JOIN LATERAL (
        SELECT CASE WHEN pg_catalog.jsonb_typeof(a.e #> '{exception,values,-1}') OPERATOR(pg_catalog.=) 'object'
                    THEN a.e #> '{exception,values,-1}' END AS main,
               a.e OPERATOR(pg_catalog.->) 'message' AS msg,
               a.e OPERATOR(pg_catalog.->>) 'event_id' AS event_id,
               COALESCE(a.e #> '{exception,values,-1,stacktrace,frames}', a.e OPERATOR(pg_catalog.->) 'frames') AS frames,
               CASE WHEN a.e OPERATOR(pg_catalog.->) 'context' IS NULL
                      OR pg_catalog.jsonb_typeof(a.e OPERATOR(pg_catalog.->) 'context') OPERATOR(pg_catalog.=) 'object'
                    THEN a.e OPERATOR(pg_catalog.->) 'context'
                    ELSE pg_catalog.jsonb_build_object('value', a.e OPERATOR(pg_catalog.->) 'context') END AS ctx,
               CASE WHEN a.e ? 'timestamp' THEN monitoring._event_time(a.e OPERATOR(pg_catalog.->) 'timestamp') END AS client_time,
               COALESCE(p_received_at[a.i], pg_catalog.now()) AS received_at
        OFFSET 0   -- evaluated once per event, not once per reference
    ) x;
END
$$;
COMMENT ON FUNCTION monitoring._events_to_occurrences(jsonb, timestamptz[]) IS
    'Maps a JSON array of events (Sentry shape or flat shape) to tb_error_occurrence rows; a non-object event is an error';

-- The key under which a user counts as affected. Inlinable SQL. A key longer than 256 bytes
-- is kept as its md5: it could not be indexed (a btree entry holds at most 2,704 bytes), and
-- two such keys still count as two users.
CREATE OR REPLACE FUNCTION monitoring._user_key(p_user jsonb, p_context jsonb)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
AS $$
    SELECT CASE WHEN pg_catalog.octet_length(COALESCE(
                         p_user OPERATOR(pg_catalog.->>) 'id', p_user OPERATOR(pg_catalog.->>) 'email',
                         p_user OPERATOR(pg_catalog.->>) 'username', p_user OPERATOR(pg_catalog.->>) 'ip_address',
                         p_context OPERATOR(pg_catalog.->>) 'user_id')) OPERATOR(pg_catalog.<=) 256
                THEN COALESCE(p_user OPERATOR(pg_catalog.->>) 'id', p_user OPERATOR(pg_catalog.->>) 'email',
                              p_user OPERATOR(pg_catalog.->>) 'username', p_user OPERATOR(pg_catalog.->>) 'ip_address',
                              p_context OPERATOR(pg_catalog.->>) 'user_id')
                ELSE 'md5:' OPERATOR(pg_catalog.||) pg_catalog.md5(COALESCE(
                         p_user OPERATOR(pg_catalog.->>) 'id', p_user OPERATOR(pg_catalog.->>) 'email',
                         p_user OPERATOR(pg_catalog.->>) 'username', p_user OPERATOR(pg_catalog.->>) 'ip_address',
                         p_context OPERATOR(pg_catalog.->>) 'user_id'))
           END
$$;
COMMENT ON FUNCTION monitoring._user_key(jsonb, jsonb) IS
    'User id, e-mail, name or ip of an event (or context.user_id); md5: and its hash when over 256 bytes';

-- Is release a older than release b? Numeric parts compare as numbers (1.10 > 1.9).
CREATE OR REPLACE FUNCTION monitoring._release_older(a text, b text)
    RETURNS boolean
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN a IS NULL OR b IS NULL THEN false
        WHEN a ~ '\d' AND b ~ '\d' THEN
            ARRAY(SELECT m[1]::numeric FROM pg_catalog.regexp_matches(a, '(\d{1,30})', 'g') m)
            OPERATOR(pg_catalog.<) ARRAY(SELECT m[1]::numeric FROM pg_catalog.regexp_matches(b, '(\d{1,30})', 'g') m)
        ELSE a OPERATOR(pg_catalog.<) b
    END
$$;
COMMENT ON FUNCTION monitoring._release_older(text, text) IS 'true when release a is older than b (numeric parts compared as numbers)';

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
COMMENT ON FUNCTION monitoring._scrub(text, text[]) IS 'Replaces values under secret keys and card numbers in JSON text with [Filtered]';

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
COMMENT ON FUNCTION monitoring._fingerprint_events(text, text) IS
    'Fingerprint algorithm version 2 (see docs/errors.md): explicit, rule, stack, message; parses raw stack traces';

CREATE OR REPLACE FUNCTION monitoring._fingerprint_rules()
    RETURNS text
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
               'type', r.match_type, 'message', r.match_message, 'module', r.match_module,
               'function', r.match_function, 'path', r.match_path, 'environment', r.match_environment,
               'tags', r.match_tags, 'fingerprint', pg_catalog.to_jsonb(r.fingerprint), 'title', r.title))
               ORDER BY r.position, r.rule_id), '[]')::text
    FROM monitoring.error_fingerprint_rule r
    WHERE r.enabled);
END
$$;
COMMENT ON FUNCTION monitoring._fingerprint_rules() IS 'Enabled fingerprint rules as the JSON the fingerprint function reads';

-- Scrubs one occurrence: one PL/Python call for all its free-form fields, or one per field
-- when the whole could not be read (absurd nesting). Called only for rows the capture's
-- cheap test flags.
CREATE OR REPLACE FUNCTION monitoring._scrub_occurrence(p_row monitoring.tb_error_occurrence, p_keys text[])
    RETURNS monitoring.tb_error_occurrence
    LANGUAGE plpgsql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    scrubbed jsonb := monitoring._scrub(pg_catalog.jsonb_build_object(
        'message', p_row.message, 'context', p_row.context, 'tags', p_row.tags, 'user', p_row.user_info,
        'request', p_row.request, 'stack_trace', p_row.stack_trace)::text, p_keys)::jsonb;
BEGIN
    IF pg_catalog.jsonb_typeof(scrubbed) OPERATOR(pg_catalog.<>) 'object' THEN
        scrubbed := pg_catalog.jsonb_build_object(
            'message', monitoring._scrub(pg_catalog.to_jsonb(p_row.message)::text, p_keys)::jsonb,
            'context', monitoring._scrub(p_row.context::text, p_keys)::jsonb,
            'tags', monitoring._scrub(p_row.tags::text, p_keys)::jsonb,
            'user', monitoring._scrub(p_row.user_info::text, p_keys)::jsonb,
            'request', monitoring._scrub(p_row.request::text, p_keys)::jsonb,
            'stack_trace', monitoring._scrub(pg_catalog.to_jsonb(p_row.stack_trace)::text, p_keys)::jsonb);
    END IF;
    p_row.message := COALESCE(scrubbed OPERATOR(pg_catalog.->>) 'message', '');
    p_row.context := NULLIF(scrubbed OPERATOR(pg_catalog.->) 'context', 'null');
    p_row.tags := NULLIF(scrubbed OPERATOR(pg_catalog.->) 'tags', 'null');
    p_row.user_info := NULLIF(scrubbed OPERATOR(pg_catalog.->) 'user', 'null');
    p_row.request := NULLIF(scrubbed OPERATOR(pg_catalog.->) 'request', 'null');
    p_row.stack_trace := scrubbed OPERATOR(pg_catalog.->>) 'stack_trace';
    RETURN p_row;
END
$$;
COMMENT ON FUNCTION monitoring._scrub_occurrence(monitoring.tb_error_occurrence, text[]) IS
    'Replaces secrets and card numbers in the free-form fields of one occurrence with [Filtered]';

-- The full fingerprint of one occurrence (PL/Python): called for fingerprint cache misses.
CREATE OR REPLACE FUNCTION monitoring._fingerprint_occurrence(p_row monitoring.tb_error_occurrence)
    RETURNS jsonb
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (monitoring._fingerprint_events(
               pg_catalog.jsonb_build_array(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                   'exception_type', p_row.exception_type, 'message', p_row.message,
                   -- the raw text is parsed only when no structured frames came with the event
                   'stack_trace', CASE WHEN p_row.frames IS NULL THEN p_row.stack_trace END, 'frames', p_row.frames,
                   'exception', CASE WHEN p_row.exception_chain IS NOT NULL
                                     THEN pg_catalog.jsonb_build_object('values', p_row.exception_chain) END,
                   'fingerprint', pg_catalog.to_jsonb(p_row.client_fingerprint),
                   'environment', p_row.environment, 'tags', p_row.tags)))::text,
               monitoring._fingerprint_rules())::jsonb) OPERATOR(pg_catalog.->) 0;
END
$$;
COMMENT ON FUNCTION monitoring._fingerprint_occurrence(monitoring.tb_error_occurrence) IS
    'Runs fingerprint algorithm version 2 on one occurrence with the enabled rules';

-- The key of an occurrence in error_fingerprint_cache, or NULL when its fingerprint may
-- depend on more than its exception type and stack: a client fingerprint, a chain of
-- exceptions (their messages count), or rules that look at the message, environment or tags.
-- The key covers the type, the frames, and the raw stack trace when the algorithm reads it
-- (no frames, or the placeholder type "Error"), less a one-line message at its end (the
-- Python traceback's last line), which never changes the frames. Inlinable SQL.
CREATE OR REPLACE FUNCTION monitoring._fingerprint_cache_key(p_row monitoring.tb_error_occurrence, p_usable boolean)
    RETURNS uuid
    LANGUAGE sql
    STABLE
    PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_usable AND (p_row).client_fingerprint IS NULL AND (p_row).exception_chain IS NULL THEN
        pg_catalog.md5(pg_catalog.concat_ws(E'\x1f', 'fingerprint v2', (p_row).exception_type,
            pg_catalog.jsonb_hash_extended((p_row).frames, 0),
            CASE WHEN (p_row).frames IS NULL OR (p_row).exception_type OPERATOR(pg_catalog.=) 'Error' THEN
                CASE WHEN (p_row).message OPERATOR(pg_catalog.<>) '' AND pg_catalog.strpos((p_row).message, E'\n') OPERATOR(pg_catalog.=) 0
                          AND pg_catalog.right((p_row).stack_trace, pg_catalog.length((p_row).message)) OPERATOR(pg_catalog.=) (p_row).message
                     THEN pg_catalog.left((p_row).stack_trace, -pg_catalog.length((p_row).message)) OPERATOR(pg_catalog.||) E'\x1e'
                     ELSE (p_row).stack_trace END
            END))::uuid
    END
$$;
COMMENT ON FUNCTION monitoring._fingerprint_cache_key(monitoring.tb_error_occurrence, boolean) IS
    'Key of an occurrence in error_fingerprint_cache (NULL: not cacheable)';

-- An occurrence within the limits: the type, message and stack cut, at most 100 client
-- fingerprint parts, a non-object context wrapped, trace and span ids as spans store them
-- (lower-case hex; what is no id at all is kept as sent, cut to 128 characters: the trace id
-- is indexed), and no error_id (the capture finds the group). Inlinable SQL: the batch
-- capture and the plain INSERT's trigger apply the same limits.
CREATE OR REPLACE FUNCTION monitoring._occurrence_within_limits(p_row monitoring.tb_error_occurrence)
    RETURNS monitoring.tb_error_occurrence
    LANGUAGE sql
    STABLE
    PARALLEL SAFE
AS $$
    SELECT ROW(
        (p_row).occurrence_id, NULL, (p_row).occurred_at, (p_row).client_timestamp, (p_row).received_at, (p_row).event_id,
        monitoring._truncate(COALESCE(NULLIF((p_row).exception_type, ''), 'Error'), 512),
        monitoring._truncate(COALESCE((p_row).message, ''), 8192),
        monitoring._truncate((p_row).stack_trace, 262144),
        (p_row).frames, (p_row).exception_chain, (p_row).client_fingerprint[1:100],
        CASE WHEN (p_row).context IS NULL OR pg_catalog.jsonb_typeof((p_row).context) OPERATOR(pg_catalog.=) 'object'
             THEN (p_row).context ELSE pg_catalog.jsonb_build_object('value', (p_row).context) END,
        (p_row).tags, (p_row).user_info, (p_row).request, (p_row).environment, (p_row).release_version, (p_row).service,
        (p_row).server_name, (p_row).transaction_name, (p_row).logger, (p_row).level,
        COALESCE(monitoring._otel_trace_id((p_row).trace_id), monitoring._truncate((p_row).trace_id, 128)),
        COALESCE(monitoring._otel_span_id((p_row).span_id), monitoring._truncate((p_row).span_id, 128))
    )::monitoring.tb_error_occurrence
$$;
COMMENT ON FUNCTION monitoring._occurrence_within_limits(monitoring.tb_error_occurrence) IS
    'The occurrence with the capture''s limits applied (lengths, fingerprint parts, context shape, trace ids)';

-- The JSON fields of an occurrence as one text, which the scrub test reads. Inlinable SQL.
CREATE OR REPLACE FUNCTION monitoring._occurrence_objects(p_row monitoring.tb_error_occurrence)
    RETURNS text
    LANGUAGE sql
    STABLE
    PARALLEL SAFE
AS $$
    SELECT pg_catalog.concat_ws(' ', (p_row).context, (p_row).tags, (p_row).user_info, (p_row).request)
$$;
COMMENT ON FUNCTION monitoring._occurrence_objects(monitoring.tb_error_occurrence) IS
    'Context, tags, user and request of an occurrence as one JSON text (for the scrub test)';

-- Whether an occurrence may hold something to scrub: its JSON holds a key word (the same
-- separator-tolerant pattern the scrubber applies), its text a card-like number, or its
-- JSON as many openers as the scrubber's depth limit. Cheap tests in C that most events
-- fail; the scrubber (PL/Python) runs only for those that pass. The card test is the
-- scrubber's own pattern with its word boundaries, loosened so as to flag all it would: any
-- character but an ASCII letter, digit or underscore bounds a word (PostgreSQL's \y would
-- take some non-ASCII marks for word characters, Python's \b does not), and so does a JSON
-- escape such as \n. Without boundaries one event in 45 with a UUID request id (digit groups
-- that run together) went to the scrubber for nothing. One regular expression reads the
-- JSON, the message and the stack trace joined: each call converts its whole text first, so
-- one call over the three costs less than three. The scrubber wraps the documents in an
-- object, one level more: 64 openers may reach its limit. Inlinable SQL.
CREATE OR REPLACE FUNCTION monitoring._occurrence_needs_scrub(p_objects text, p_message text, p_stack_trace text,
                                                              p_key_pattern text)
    RETURNS boolean
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
AS $$
    SELECT p_objects OPERATOR(pg_catalog.~*) p_key_pattern
        -- || (immutable) and not concat_ws() (stable), which would keep the planner from inlining
        OR COALESCE(p_objects, '') OPERATOR(pg_catalog.||) E'\n' OPERATOR(pg_catalog.||) COALESCE(p_message, '')
           OPERATOR(pg_catalog.||) E'\n' OPERATOR(pg_catalog.||) COALESCE(p_stack_trace, '')
           OPERATOR(pg_catalog.~) '(?:^|[^0-9A-Za-z_]|\\[nrtbf]|\\u[0-9a-f]{4})(?:[0-9][ -]?){12,18}[0-9](?:$|[^0-9A-Za-z_])'
        -- openers counted by bytes with replace(): translate() costs ten times as much
        OR pg_catalog.octet_length(p_objects) OPERATOR(pg_catalog.-) pg_catalog.octet_length(
           pg_catalog.replace(pg_catalog.replace(p_objects, '{', ''), '[', '')) OPERATOR(pg_catalog.>=) 64
$$;
COMMENT ON FUNCTION monitoring._occurrence_needs_scrub(text, text, text, text) IS
    'Cheap test: may this occurrence hold a secret, a card number or nesting too deep to scrub';

-- Prepares occurrences for storage, set-based: drops repeated event ids (stored in the last
-- 30 days, or twice in this batch), applies the limits, scrubs what the cheap test flags,
-- fingerprints (from the cache, or in full for misses), finds or creates each group, and
-- reopens groups that regressed or whose ignore ran out. Returns the rows to store, each
-- with its error_id; with p_insert, inserts them itself and returns them without their large
-- fields (message, stack, frames, chain, client fingerprint, tags, request), which is all the
-- counting and the notification rules read: a batch's rows are not copied again.
-- Counting is left to _count_error_occurrences, after the INSERT.
CREATE OR REPLACE FUNCTION monitoring._prepare_error_occurrences(p_rows monitoring.tb_error_occurrence[],
                                                                 p_insert boolean DEFAULT false)
    RETURNS SETOF monitoring.tb_error_occurrence
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- see the note at the top
AS $$
DECLARE
    scrub_keys text[];
    scrub_pattern text;
    cache_usable boolean;
    kept monitoring.tb_error_occurrence[];
    ids uuid[];
    prints text[];
    results jsonb[];
    grp record;
    reopening record;
BEGIN
    SELECT s.scrub_words, s.scrub_pattern, s.fingerprint_cache_usable
    INTO scrub_keys, scrub_pattern, cache_usable FROM monitoring.error_capture_state s;
    IF NOT FOUND THEN   -- the row deleted by hand: the refresh makes it again
        PERFORM monitoring._refresh_error_capture_state();
        SELECT s.scrub_words, s.scrub_pattern, s.fingerprint_cache_usable
        INTO scrub_keys, scrub_pattern, cache_usable FROM monitoring.error_capture_state s;
    END IF;

    -- Dedupe, limits, scrubbing (the scrubber only for rows its cheap test flags).
    WITH fresh AS (
        INSERT INTO monitoring.error_event_seen (event_id)
        SELECT DISTINCT r.event_id FROM pg_catalog.unnest(p_rows) r WHERE r.event_id IS NOT NULL
        ON CONFLICT DO NOTHING
        RETURNING event_id
    ), limited AS (
        SELECT DISTINCT ON (COALESCE((p_rows[i]).event_id, (p_rows[i]).occurrence_id)) i AS ordinality,
               monitoring._occurrence_within_limits(p_rows[i]) AS o
        FROM pg_catalog.generate_subscripts(p_rows, 1) AS i
        WHERE (p_rows[i]).event_id IS NULL OR (p_rows[i]).event_id IN (SELECT f.event_id FROM fresh f)
        ORDER BY COALESCE((p_rows[i]).event_id, (p_rows[i]).occurrence_id), i
    )
    SELECT pg_catalog.array_agg(
               CASE WHEN monitoring._occurrence_needs_scrub(d.objects, (l.o).message, (l.o).stack_trace, scrub_pattern)
                    THEN monitoring._scrub_occurrence(l.o, scrub_keys)
                    ELSE l.o END
               ORDER BY l.ordinality)   -- the batch's order: the first occurrence makes a new group
    INTO kept
    FROM limited l
    CROSS JOIN LATERAL (
        SELECT monitoring._occurrence_objects(l.o) AS objects
        OFFSET 0
    ) d;

    -- Fingerprints: from the cache when the key allows it (cache_usable: no enabled rule
    -- reads the message, environment or tags), else in full (PL/Python), and remembered when
    -- they depend on nothing but the key (method "stack").
    -- Rows are reached by subscript (kept[i]: O(1) on PL/pgSQL's expanded array), not by
    -- unnest(kept), which would copy every row of the batch into a tuplestore each time; the
    -- arrays made here (ids, results, prints) are in kept's order, so kept[i] pairs with them.
    WITH keyed AS MATERIALIZED (
        SELECT i, (kept[i]).occurrence_id, (kept[i]).frames IS NULL AS without_frames,
               monitoring._fingerprint_cache_key(kept[i], cache_usable) AS input_key
        FROM pg_catalog.generate_subscripts(kept, 1) AS i
    ), looked AS (
        SELECT k.i, k.occurrence_id, k.input_key, k.without_frames, c.result AS cached,
               CASE WHEN c.result IS NULL THEN monitoring._fingerprint_occurrence(kept[k.i]) END AS computed
        FROM keyed k
        LEFT JOIN monitoring.error_fingerprint_cache c ON c.input_key OPERATOR(pg_catalog.=) k.input_key
    ), remembered AS (
        INSERT INTO monitoring.error_fingerprint_cache (input_key, result)
        SELECT DISTINCT ON (l.input_key) l.input_key,
               CASE WHEN l.without_frames THEN l.computed ELSE l.computed OPERATOR(pg_catalog.-) 'frames' END
        FROM looked l
        WHERE l.input_key IS NOT NULL AND l.cached IS NULL
          AND l.computed OPERATOR(pg_catalog.->>) 'method' OPERATOR(pg_catalog.=) 'stack'
        ON CONFLICT DO NOTHING
    ), fingerprinted AS (
        SELECT l.i, l.occurrence_id, COALESCE(l.cached, l.computed) AS fp FROM looked l
    )
    SELECT pg_catalog.array_agg(f.occurrence_id ORDER BY f.i), pg_catalog.array_agg(f.fp ORDER BY f.i),
           -- A client's own single-part fingerprint ("payment_timeout_error") is kept readable.
           pg_catalog.array_agg(CASE WHEN f.fp OPERATOR(pg_catalog.->>) 'method' OPERATOR(pg_catalog.=) 'explicit'
                                      AND pg_catalog.jsonb_array_length(f.fp OPERATOR(pg_catalog.->) 'inputs') OPERATOR(pg_catalog.=) 1
                                      AND pg_catalog.length(f.fp #>> '{inputs,0}') OPERATOR(pg_catalog.<=) 200
                                 THEN f.fp #>> '{inputs,0}' ELSE f.fp OPERATOR(pg_catalog.->>) 'fingerprint' END
                                 ORDER BY f.i)
    INTO ids, results, prints
    FROM fingerprinted f;

    -- New groups, made from the earliest occurrence of each new fingerprint. A concurrent
    -- capture may create the same group a moment earlier: ON CONFLICT leaves it to that one,
    -- and the next statement (a new snapshot) sees it.
    WITH firsts AS (
        SELECT DISTINCT ON (prints[i]) prints[i] AS fingerprint, results[i] AS fp, (kept[i]).exception_type,
               (kept[i]).message, (kept[i]).level, (kept[i]).occurred_at, (kept[i]).environment, (kept[i]).service,
               (kept[i]).release_version, (kept[i]).stack_trace
        FROM pg_catalog.generate_subscripts(prints, 1) AS i
        WHERE NOT EXISTS (SELECT FROM monitoring.tb_error_log g WHERE g.error_fingerprint OPERATOR(pg_catalog.=) prints[i])
        ORDER BY prints[i], (kept[i]).occurred_at, i
    ), created AS (
        INSERT INTO monitoring.tb_error_log AS g
            (error_fingerprint, fingerprint_version, fingerprint_method, fingerprint_inputs, error_type,
             error_message, title, culprit, severity, first_seen, last_seen, environment, environments,
             services, release_version, first_release, stack_trace)
        SELECT n.fingerprint, (n.fp OPERATOR(pg_catalog.->>) 'fingerprint_version')::smallint,
               n.fp OPERATOR(pg_catalog.->>) 'method', n.fp OPERATOR(pg_catalog.->) 'inputs', n.exception_type,
               n.message, COALESCE(n.fp OPERATOR(pg_catalog.->>) 'group_title', n.fp OPERATOR(pg_catalog.->>) 'title', ''),
               n.fp OPERATOR(pg_catalog.->>) 'culprit', n.level, n.occurred_at, n.occurred_at, n.environment,
               ARRAY[n.environment], CASE WHEN n.service IS NULL THEN '{}' ELSE ARRAY[n.service] END,
               n.release_version, n.release_version, n.stack_trace
        FROM firsts n
        ON CONFLICT (error_fingerprint) DO NOTHING
        RETURNING g.error_id, g.release_version
    )
    INSERT INTO monitoring.error_activity (error_id, action, actor, details)
    SELECT c.error_id, 'first_seen', NULL, pg_catalog.jsonb_build_object('release', c.release_version)
    FROM created c;

    -- Regressions and ignores that ran out: only groups not unresolved, which is rare.
    FOR grp IN
        SELECT g.* FROM monitoring.tb_error_log g
        WHERE g.error_fingerprint OPERATOR(pg_catalog.=) ANY (prints) AND g.status OPERATOR(pg_catalog.<>) 'unresolved'
    LOOP
        IF grp.status OPERATOR(pg_catalog.=) 'resolved' THEN
            -- Reopened unless every occurrence comes from a release older than the fix.
            SELECT o.occurrence_id, o.release_version INTO reopening
            FROM ROWS FROM (pg_catalog.unnest(ids), pg_catalog.unnest(prints)) AS f(occurrence_id, fingerprint)
            JOIN pg_catalog.unnest(kept) o ON o.occurrence_id OPERATOR(pg_catalog.=) f.occurrence_id
            WHERE f.fingerprint OPERATOR(pg_catalog.=) grp.error_fingerprint
              AND NOT monitoring._release_older(o.release_version, grp.resolved_in_release)
            ORDER BY o.occurred_at
            LIMIT 1;
            IF FOUND THEN
                UPDATE monitoring.tb_error_log g
                SET status = 'unresolved', resolved_at = NULL, resolved_by = NULL, regressed_at = pg_catalog.now()
                WHERE g.error_id OPERATOR(pg_catalog.=) grp.error_id AND g.status OPERATOR(pg_catalog.=) 'resolved';
                IF FOUND THEN
                    INSERT INTO monitoring.error_activity (error_id, action, details)
                    VALUES (grp.error_id, 'regression', pg_catalog.jsonb_build_object(
                        'release', reopening.release_version, 'resolved_in_release', grp.resolved_in_release,
                        'occurrence_id', reopening.occurrence_id));
                END IF;
            END IF;
        ELSIF grp.ignored_until OPERATOR(pg_catalog.<=) pg_catalog.now()
              OR grp.ignored_until_count OPERATOR(pg_catalog.<=) (grp.occurrence_count OPERATOR(pg_catalog.+)
                 (SELECT COALESCE(pg_catalog.sum(p.occurrences), 0) FROM monitoring.error_group_pending p
                  WHERE p.error_id OPERATOR(pg_catalog.=) grp.error_id)) THEN
            UPDATE monitoring.tb_error_log g
            SET status = 'unresolved', ignored_until = NULL, ignored_until_count = NULL
            WHERE g.error_id OPERATOR(pg_catalog.=) grp.error_id AND g.status OPERATOR(pg_catalog.=) 'ignored';
            IF FOUND THEN
                INSERT INTO monitoring.error_activity (error_id, action, details)
                VALUES (grp.error_id, 'unignore', pg_catalog.jsonb_build_object('reason', 'ignore condition ran out'));
            END IF;
        END IF;
    END LOOP;

    -- The capture functions insert what they prepared: the trigger's WHEN clause lets rows
    -- through without a call while pg_observe.capture_prepared is on.
    IF p_insert THEN
        PERFORM pg_catalog.set_config('pg_observe.capture_prepared', 'on', true);
    END IF;
    -- One of the two branches runs: p_insert is a one-time filter of the plan.
    RETURN QUERY
    WITH prepared AS NOT MATERIALIZED (
        SELECT (kept[i]).occurrence_id, g.error_id, (kept[i]).occurred_at, (kept[i]).client_timestamp,
               (kept[i]).received_at, (kept[i]).event_id, (kept[i]).exception_type, (kept[i]).message,
               (kept[i]).stack_trace,
               -- frames parsed from the raw stack trace when none came with the event
               COALESCE((kept[i]).frames,
                        CASE WHEN pg_catalog.jsonb_array_length(results[i] OPERATOR(pg_catalog.->) 'frames') OPERATOR(pg_catalog.>) 0
                             THEN results[i] OPERATOR(pg_catalog.->) 'frames' END) AS frames,
               (kept[i]).exception_chain, (kept[i]).client_fingerprint, (kept[i]).context, (kept[i]).tags,
               (kept[i]).user_info, (kept[i]).request, (kept[i]).environment, (kept[i]).release_version,
               (kept[i]).service, (kept[i]).server_name, (kept[i]).transaction_name, (kept[i]).logger,
               (kept[i]).level, (kept[i]).trace_id, (kept[i]).span_id
        FROM pg_catalog.generate_subscripts(kept, 1) AS i
        LEFT JOIN monitoring.tb_error_log g ON g.error_fingerprint OPERATOR(pg_catalog.=) prints[i]
    ), stored AS (
        INSERT INTO monitoring.tb_error_occurrence
        SELECT p.* FROM prepared p WHERE p_insert
        RETURNING occurrence_id, error_id, occurred_at, client_timestamp, received_at, event_id, exception_type, context,
                  user_info, environment, release_version, service, server_name, transaction_name, logger, level,
                  trace_id, span_id
    )
    SELECT p.* FROM prepared p WHERE NOT p_insert
    UNION ALL
    SELECT s.occurrence_id, s.error_id, s.occurred_at, s.client_timestamp, s.received_at, s.event_id, s.exception_type,
           NULL, NULL, NULL, NULL, NULL, s.context, NULL, s.user_info, NULL, s.environment, s.release_version, s.service,
           s.server_name, s.transaction_name, s.logger, s.level, s.trace_id, s.span_id
    FROM stored s;
    IF p_insert THEN
        PERFORM pg_catalog.set_config('pg_observe.capture_prepared', 'off', true);
    END IF;
END
$$;
COMMENT ON FUNCTION monitoring._prepare_error_occurrences(monitoring.tb_error_occurrence[], boolean) IS
    'Capture, set-based: dedupes by event id, applies limits, scrubs, fingerprints, finds or creates groups, detects regressions';

-- Folds counter deltas into tb_error_log, set-based: the fresh deltas of a capture
-- (p_fresh) and those pending for these groups. It locks the groups' rows first, skipping
-- those another transaction holds: their fresh deltas are written to error_group_pending and
-- wait for the next fold. So no two transactions fold one group and no writer waits. The lock
-- is FOR NO KEY UPDATE, as the UPDATE's own: the KEY SHARE locks that writers' foreign keys
-- (users, deltas) hold on the group until they commit do not make the fold skip it.
-- Returns how many groups were folded.
CREATE OR REPLACE FUNCTION monitoring._fold_error_counters(
    p_error_ids uuid[], p_fresh monitoring.error_group_pending[] DEFAULT '{}')
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- see the note at the top
AS $$
DECLARE
    free uuid[];
    folded_groups integer;
BEGIN
    -- Fixed order, so that two statements never wait on each other in a cycle.
    free := ARRAY(
        SELECT g.error_id FROM monitoring.tb_error_log g
        WHERE g.error_id OPERATOR(pg_catalog.=) ANY (p_error_ids)
        ORDER BY g.error_id
        FOR NO KEY UPDATE SKIP LOCKED);
    INSERT INTO monitoring.error_group_pending
    SELECT f.* FROM pg_catalog.unnest(p_fresh) f WHERE f.error_id OPERATOR(pg_catalog.<>) ALL (free);

    WITH taken AS (
        DELETE FROM monitoring.error_group_pending p
        WHERE p.error_id OPERATOR(pg_catalog.=) ANY (free)
        RETURNING p.*
    ), deltas AS (
        SELECT t.* FROM taken t
        UNION ALL
        SELECT f.* FROM pg_catalog.unnest(p_fresh) f WHERE f.error_id OPERATOR(pg_catalog.=) ANY (free)
    ), merged_environments AS (   -- each group's in one pass, not a scan of deltas per group
        SELECT t.error_id, pg_catalog.array_agg(DISTINCT e) AS environments
        FROM deltas t, pg_catalog.unnest(t.environments) e WHERE e IS NOT NULL GROUP BY t.error_id
    ), merged_services AS (
        SELECT t.error_id, pg_catalog.array_agg(DISTINCT v) AS services
        FROM deltas t, pg_catalog.unnest(t.services) v WHERE v IS NOT NULL GROUP BY t.error_id
    ), summed AS (
        SELECT t.error_id, pg_catalog.sum(t.occurrences) AS occurrences, pg_catalog.sum(t.new_users) AS new_users,
               pg_catalog.min(t.first_seen) AS first_seen, pg_catalog.max(t.last_seen) AS last_seen,
               (pg_catalog.array_agg(t.environment ORDER BY t.last_seen DESC))[1] AS environment,
               (pg_catalog.array_agg(t.release_version ORDER BY t.last_seen DESC, t.release_version DESC)
                    FILTER (WHERE t.release_version IS NOT NULL))[1] AS release_version
        FROM deltas t
        GROUP BY t.error_id
    ), merged AS (
        SELECT s.*, COALESCE(me.environments, '{}') AS environments, COALESCE(ms.services, '{}') AS services
        FROM summed s
        LEFT JOIN merged_environments me ON me.error_id OPERATOR(pg_catalog.=) s.error_id
        LEFT JOIN merged_services ms ON ms.error_id OPERATOR(pg_catalog.=) s.error_id
    ), folded AS (
        UPDATE monitoring.tb_error_log g
        SET occurrence_count = g.occurrence_count OPERATOR(pg_catalog.+) s.occurrences,
            affected_users = g.affected_users OPERATOR(pg_catalog.+) s.new_users,
            first_seen = LEAST(g.first_seen, s.first_seen),
            last_seen = GREATEST(g.last_seen, s.last_seen),
            environment = CASE WHEN s.last_seen OPERATOR(pg_catalog.>=) g.last_seen THEN s.environment ELSE g.environment END,
            release_version = CASE WHEN s.last_seen OPERATOR(pg_catalog.>=) g.last_seen
                                   THEN COALESCE(s.release_version, g.release_version) ELSE g.release_version END,
            environments = CASE WHEN s.environments OPERATOR(pg_catalog.<@) g.environments THEN g.environments
                                ELSE ARRAY(SELECT DISTINCT x FROM pg_catalog.unnest(g.environments OPERATOR(pg_catalog.||) s.environments) x ORDER BY 1) END,
            services = CASE WHEN s.services OPERATOR(pg_catalog.<@) g.services THEN g.services
                            ELSE ARRAY(SELECT DISTINCT x FROM pg_catalog.unnest(g.services OPERATOR(pg_catalog.||) s.services) x ORDER BY 1) END
        FROM merged s
        WHERE g.error_id OPERATOR(pg_catalog.=) s.error_id
        RETURNING 1
    )
    SELECT pg_catalog.count(*)::integer INTO folded_groups FROM folded;
    RETURN folded_groups;
END
$$;
COMMENT ON FUNCTION monitoring._fold_error_counters(uuid[], monitoring.error_group_pending[]) IS
    'Adds fresh and pending counter deltas of these groups to tb_error_log; a busy group''s fresh delta waits as pending';

-- Counts stored occurrences per group (not per row) and folds the counts into every group
-- whose row is free. If another transaction holds a group's row (many writers on one
-- fingerprint), its delta waits in error_group_pending instead of the writer: the next
-- capture that gets the row, or run_maintenance(), folds it. A fact is what the counts need
-- of one stored occurrence: its group, user, time, environment, service and release.
CREATE OR REPLACE FUNCTION monitoring._count_error_facts(p_facts monitoring.error_capture_journal[])
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- see the note at the top
AS $$
DECLARE
    folded_groups integer;
BEGIN
    IF COALESCE(pg_catalog.cardinality(p_facts), 0) OPERATOR(pg_catalog.=) 0 THEN
        RETURN 0;   -- a statement whose rows all went another way
    END IF;
    WITH new_users AS (
        INSERT INTO monitoring.error_group_user (error_id, user_key)
        SELECT DISTINCT n.error_id, n.user_key FROM pg_catalog.unnest(p_facts) n
        WHERE n.user_key IS NOT NULL
        ORDER BY n.error_id, n.user_key   -- in index order: each insert lands next to the last
        ON CONFLICT DO NOTHING
        RETURNING error_id
    ), new_user_counts AS (   -- one pass, not a scan of new_users per group
        SELECT u.error_id, pg_catalog.count(*) AS new_users FROM new_users u GROUP BY u.error_id
    ), fresh AS (
        SELECT ROW(n.error_id, pg_catalog.count(*),
               COALESCE(pg_catalog.max(c.new_users), 0),
               pg_catalog.min(n.occurred_at), pg_catalog.max(n.occurred_at),
               (pg_catalog.array_agg(n.environment ORDER BY n.occurred_at DESC))[1],
               pg_catalog.array_agg(DISTINCT n.environment),
               COALESCE(pg_catalog.array_agg(DISTINCT n.service) FILTER (WHERE n.service IS NOT NULL), '{}'),
               -- "last release": the latest occurrence's; within one instant, the highest
               (pg_catalog.array_agg(n.release_version ORDER BY n.occurred_at DESC, n.release_version DESC)
                    FILTER (WHERE n.release_version IS NOT NULL))[1])::monitoring.error_group_pending AS delta
        FROM pg_catalog.unnest(p_facts) n
        LEFT JOIN new_user_counts c ON c.error_id OPERATOR(pg_catalog.=) n.error_id
        GROUP BY n.error_id
    )
    SELECT monitoring._fold_error_counters(pg_catalog.array_agg((f.delta).error_id), pg_catalog.array_agg(f.delta))
    INTO folded_groups
    FROM fresh f;
    RETURN folded_groups;
END
$$;
COMMENT ON FUNCTION monitoring._count_error_facts(monitoring.error_capture_journal[]) IS
    'Counts occurrences, users, environments and releases per group without making writers wait; returns the groups folded now';

CREATE OR REPLACE FUNCTION monitoring._count_error_occurrences(p_rows monitoring.tb_error_occurrence[])
    RETURNS integer
    LANGUAGE sql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT monitoring._count_error_facts(ARRAY(
        SELECT ROW(n.error_id, monitoring._user_key(n.user_info, n.context), n.occurred_at, n.environment, n.service,
                   n.release_version, NULL)::monitoring.error_capture_journal
        FROM pg_catalog.unnest(p_rows) n
        WHERE n.error_id IS NOT NULL))
$$;
COMMENT ON FUNCTION monitoring._count_error_occurrences(monitoring.tb_error_occurrence[]) IS
    'Counts stored occurrences per group (see _count_error_facts); returns the groups folded now';

-- A plain INSERT (or COPY) into tb_error_occurrence is a capture too, through this BEFORE
-- ROW trigger. The capture functions insert rows they have prepared already, with
-- pg_observe.capture_prepared set, and the trigger's WHEN clause lets those through without
-- a call.
--
-- Most rows take the fast path: a stack seen before (its fingerprint in the cache) of a group
-- that is unresolved. Such a row costs one lookup (which reads error_capture_state too), the
-- scrub test, its event id, and one fact in error_capture_journal, which the statement's
-- AFTER trigger counts with all the statement's others at its end. With notification rules
-- (they read the counts as each row comes), and for a row inserted straight into a partition
-- (the parent's statement triggers do not run), the row writes its user and a counter delta
-- to error_group_pending instead, folded by the AFTER trigger or run_maintenance(). Any other
-- row (a new stack or group, a resolved or ignored group, a client fingerprint, a chain,
-- rules that read the message) goes through the same set-based functions as
-- capture_errors(), one row at a time (about 1.3 ms a row), and is counted like a fast-path row
-- once its group is unresolved (see the end of the function).
CREATE OR REPLACE FUNCTION monitoring._error_occurrence_prepare()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    prepared monitoring.tb_error_occurrence;
    cache_key uuid;
    cached jsonb;
    known record;
    fast boolean;
    objects text;
    unfolded integer;
    fast_rows_before text;
    kept boolean;
BEGIN
    NEW.received_at := pg_catalog.now();   -- the database's clock, whatever the INSERT said
    -- The trigger runs on the partition: its row type is the partition's, hence ROW(NEW.*).
    prepared := monitoring._occurrence_within_limits(ROW(NEW.*)::monitoring.tb_error_occurrence);

    cache_key := monitoring._fingerprint_cache_key(prepared, true);
    -- Two lookups by unique key, each planned alone: joined in one query, a plan made while
    -- tb_error_log looked empty (the first rows of a fresh database, all in one COPY) scanned
    -- all of it for every row.
    SELECT c.result INTO cached FROM monitoring.error_fingerprint_cache c WHERE c.input_key OPERATOR(pg_catalog.=) cache_key;
    SELECT g.error_id, s.scrub_pattern, s.scrub_words, s.notification_rules
    INTO known
    FROM monitoring.tb_error_log g, monitoring.error_capture_state s
    WHERE g.error_fingerprint OPERATOR(pg_catalog.=) (cached OPERATOR(pg_catalog.->>) 'fingerprint')
      AND g.status OPERATOR(pg_catalog.=) 'unresolved'
      AND s.fingerprint_cache_usable;   -- no rule reads more than the stack
    fast := FOUND;
    -- A variable, not an argument: the test reads it four times, and an argument that costly
    -- would keep the planner from inlining the test (15 µs a row).
    objects := monitoring._occurrence_objects(prepared);
    IF fast AND monitoring._occurrence_needs_scrub(objects, prepared.message, prepared.stack_trace, known.scrub_pattern) THEN
        prepared := monitoring._scrub_occurrence(prepared, known.scrub_words);
        -- the key reads the stack trace when the event has no frames: scrubbed, it may differ
        fast := monitoring._fingerprint_cache_key(prepared, true) OPERATOR(pg_catalog.=) cache_key;
    END IF;

    IF fast THEN
        prepared.error_id := known.error_id;
        IF prepared.frames IS NULL AND pg_catalog.jsonb_array_length(cached OPERATOR(pg_catalog.->) 'frames') OPERATOR(pg_catalog.>) 0 THEN
            prepared.frames := cached OPERATOR(pg_catalog.->) 'frames';   -- parsed from the raw stack trace
        END IF;
        IF prepared.event_id IS NOT NULL THEN
            INSERT INTO monitoring.error_event_seen (event_id) VALUES (prepared.event_id) ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                RETURN NULL;   -- already stored: a retry of the same event
            END IF;
        END IF;
        -- With notification rules, or outside a marked statement: counted as the row comes.
        IF known.notification_rules
           OR pg_catalog.current_setting('pg_observe.capture_statement', true) IS DISTINCT FROM 'on' THEN
            INSERT INTO monitoring.error_group_user (error_id, user_key)
            SELECT prepared.error_id, u.user_key
            FROM (SELECT monitoring._user_key(prepared.user_info, prepared.context) AS user_key) u
            WHERE u.user_key IS NOT NULL
            ON CONFLICT DO NOTHING;
            INSERT INTO monitoring.error_group_pending
                (error_id, occurrences, new_users, first_seen, last_seen, environment, environments, services, release_version)
            VALUES (prepared.error_id, 1, CASE WHEN FOUND THEN 1 ELSE 0 END, prepared.occurred_at, prepared.occurred_at,
                    prepared.environment, ARRAY[prepared.environment],
                    CASE WHEN prepared.service IS NULL THEN '{}' ELSE ARRAY[prepared.service] END, prepared.release_version);
            -- The AFTER trigger folds the deltas (the setting says there are some). With
            -- notification rules, which add up a group's deltas for every row, a long statement
            -- folds every 1,000 rows too, so the setting counts them: the sums stay short.
            -- (Without rules that would only cost: a fold updates every group it touches.)
            unfolded := 1;
            IF known.notification_rules THEN
                unfolded := CASE WHEN pg_catalog.current_setting('pg_observe.capture_pending', true) OPERATOR(pg_catalog.~) '^[0-9]{1,6}$'
                                 THEN pg_catalog.current_setting('pg_observe.capture_pending', true)::integer ELSE 0 END OPERATOR(pg_catalog.+) 1;
                IF unfolded OPERATOR(pg_catalog.>=) 1000 THEN
                    PERFORM monitoring._fold_own_error_counters();
                    unfolded := 0;
                END IF;
                PERFORM monitoring._queue_error_notifications(ARRAY[prepared], false);
            END IF;
            PERFORM pg_catalog.set_config('pg_observe.capture_pending', unfolded::text, true);
            RETURN prepared;
        END IF;
    ELSE
        -- The set-based path inserts nothing here, but its INSERT statement fires the statement
        -- trigger: the setting is 0 meanwhile, lest each such row fold this transaction's deltas.
        fast_rows_before := pg_catalog.current_setting('pg_observe.capture_pending', true);
        PERFORM pg_catalog.set_config('pg_observe.capture_pending', '0', true);
        SELECT p.* INTO prepared FROM monitoring._prepare_error_occurrences(ARRAY[ROW(NEW.*)::monitoring.tb_error_occurrence]) p;
        kept := FOUND;   -- before the PERFORM below, which sets FOUND again
        PERFORM pg_catalog.set_config('pg_observe.capture_pending', COALESCE(fast_rows_before, '0'), true);
        IF NOT kept THEN
            RETURN NULL;   -- already stored: a retry of the same event
        END IF;
        -- Counted as it comes with notification rules, outside a marked statement, or while its
        -- group stays ignored (the next row's "ignored until N more" reads the count). A new
        -- group, a regression, a new stack of an unresolved group: with the statement's others.
        IF pg_catalog.current_setting('pg_observe.capture_statement', true) IS DISTINCT FROM 'on'
           OR NOT EXISTS (SELECT FROM monitoring.error_capture_state s WHERE NOT s.notification_rules)
           OR NOT EXISTS (SELECT FROM monitoring.tb_error_log g
                          WHERE g.error_id OPERATOR(pg_catalog.=) prepared.error_id
                            AND g.status OPERATOR(pg_catalog.=) 'unresolved') THEN
            PERFORM monitoring._count_error_occurrences(ARRAY[prepared]);
            PERFORM monitoring._queue_error_notifications(ARRAY[prepared], false);
            RETURN prepared;
        END IF;
    END IF;

    -- Either way, counted at the statement's end: one fact in the journal.
    INSERT INTO monitoring.error_capture_journal
        (error_id, user_key, occurred_at, environment, service, release_version)
    VALUES (prepared.error_id, monitoring._user_key(prepared.user_info, prepared.context), prepared.occurred_at,
            prepared.environment, prepared.service, prepared.release_version);
    RETURN prepared;
END
$$;
COMMENT ON FUNCTION monitoring._error_occurrence_prepare() IS
    'Trigger: a plain INSERT is captured like capture_error() (dedupe, limits, scrubbing, fingerprint, group, counters)';

-- BEFORE STATEMENT on tb_error_occurrence: marks an INSERT or COPY as running, so that its
-- rows' fast path may leave their counts to its end (error_capture_journal). The AFTER
-- trigger clears the mark. Not cloned to partitions: a row inserted into a partition directly
-- is counted as it comes. The setting is anyone's to set: set by hand for such a row, it
-- leaves the row's fact in the journal until a later statement of its transaction or, after
-- commit, run_maintenance() counts it (lost if the server crashes first: the table is
-- UNLOGGED). Turned off by hand mid-statement, it sends the statement's later rows the
-- per-row way; either way every row is counted once.
CREATE OR REPLACE FUNCTION monitoring._error_occurrence_begin()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_catalog.set_config('pg_observe.capture_statement', 'on', true);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._error_occurrence_begin() IS
    'Trigger: marks a plain INSERT or COPY as running, so that its rows are counted once at its end';

-- AFTER STATEMENT on tb_error_occurrence: counts the rows the fast path left in the journal,
-- and folds the counter deltas it left in error_group_pending, once per statement, not once
-- per row. A row inserted into a partition directly has no statement trigger of the parent:
-- its delta waits for the next capture of its group or run_maintenance(); the views add
-- pending deltas to the counts meanwhile.
CREATE OR REPLACE FUNCTION monitoring._error_occurrence_fold()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deltas_pending boolean := COALESCE(pg_catalog.current_setting('pg_observe.capture_pending', true), '0') OPERATOR(pg_catalog.<>) '0';
BEGIN
    PERFORM pg_catalog.set_config('pg_observe.capture_statement', '', true);
    PERFORM pg_catalog.set_config('pg_observe.capture_pending', '0', true);
    PERFORM monitoring._fold_error_capture_journal();
    IF deltas_pending THEN
        PERFORM monitoring._fold_own_error_counters();
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._error_occurrence_fold() IS
    'Trigger: counts the rows a plain INSERT''s fast path left in the journal and folds its pending deltas, once per statement';

-- Counts and deletes the journal's rows of this transaction (savepoints included), or with
-- p_leftovers every row this transaction can see: what run_maintenance() counts, rows whose
-- statement mark was set by hand (see _error_occurrence_begin()). A statement never touches
-- another transaction's rows, so no writer waits for another's.
CREATE OR REPLACE FUNCTION monitoring._fold_error_capture_journal(p_leftovers boolean DEFAULT false)
    RETURNS integer
    LANGUAGE sql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH taken AS (
        DELETE FROM monitoring.error_capture_journal j
        -- the subquery: the transaction's id read once, not once per row of the journal
        WHERE p_leftovers OR j.xact OPERATOR(pg_catalog.=) (SELECT pg_catalog.pg_current_xact_id())
        RETURNING j
    )
    SELECT monitoring._count_error_facts(ARRAY(SELECT t.j FROM taken t))
$$;
COMMENT ON FUNCTION monitoring._fold_error_capture_journal(boolean) IS
    'Counts this transaction''s fast-path occurrences in error_capture_journal per group (p_leftovers: every visible one) and deletes them';

-- Folds the groups this transaction left deltas for (the plain INSERT's fast path), not every
-- group with a delta pending: the fold keeps its groups locked until commit, and other
-- sessions' groups are theirs or maintenance's to fold. Deltas written in a subtransaction
-- (a savepoint) carry its xid and wait for the next fold of their group or run_maintenance().
CREATE OR REPLACE FUNCTION monitoring._fold_own_error_counters()
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN monitoring._fold_error_counters(ARRAY(
        SELECT DISTINCT p.error_id FROM monitoring.error_group_pending p
        WHERE p.xmin OPERATOR(pg_catalog.=) pg_catalog.pg_current_xact_id()::xid));
END
$$;
COMMENT ON FUNCTION monitoring._fold_own_error_counters() IS
    'Folds the counter deltas this transaction wrote to error_group_pending; returns the groups folded';

CREATE OR REPLACE FUNCTION monitoring._fold_all_error_counters()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM monitoring._fold_error_capture_journal(true);   -- leftovers: see there
    RETURN pg_catalog.format('%s groups folded', monitoring._fold_error_counters(
        ARRAY(SELECT DISTINCT p.error_id FROM monitoring.error_group_pending p)));
END
$$;
COMMENT ON FUNCTION monitoring._fold_all_error_counters() IS 'Maintenance task: folds every pending counter delta';

CREATE OR REPLACE FUNCTION monitoring._expire_error_event_ids()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    removed bigint;
BEGIN
    DELETE FROM monitoring.error_event_seen s WHERE s.seen_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) interval '30 days');
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN pg_catalog.format('%s event ids expired', removed);
END
$$;
COMMENT ON FUNCTION monitoring._expire_error_event_ids() IS 'Maintenance task: forgets event ids older than 30 days';

-- Capture: one event, or many in one round trip. Both prepare the rows set-based, insert
-- them (the row trigger lets prepared rows through), then count them per group.
CREATE OR REPLACE FUNCTION monitoring._store_error_occurrences(p_events jsonb, p_received_at timestamptz[] DEFAULT NULL)
    RETURNS monitoring.tb_error_occurrence[]
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- see the note at the top
    -- A batch of 1,000 realistic events is about 7 MB of rows: with the default 4 MB, every
    -- pass over them (unnest, sorts, the INSERT's input) spilled to a temporary file. This
    -- replaces the caller's setting for the call, a larger one too; each capturing connection
    -- may use up to 16 MB per sort or hash.
    SET work_mem = '16MB'
AS $$
DECLARE
    stored monitoring.tb_error_occurrence[];
BEGIN
    SELECT pg_catalog.array_agg(p) INTO stored
    FROM monitoring._prepare_error_occurrences(
        ARRAY(SELECT r FROM monitoring._events_to_occurrences(p_events, p_received_at) r), true) p;
    IF stored IS NULL THEN
        RETURN '{}'::monitoring.tb_error_occurrence[];
    END IF;
    PERFORM monitoring._count_error_occurrences(stored);
    -- The notification rules, with the counts up to date and in the same transaction: a
    -- rollback of the capture takes its notifications with it.
    PERFORM monitoring._queue_error_notifications(stored, true);
    RETURN stored;
END
$$;
COMMENT ON FUNCTION monitoring._store_error_occurrences(jsonb, timestamptz[]) IS
    'Prepares, inserts and counts a JSON array of events (received at p_received_at, default now); returns the rows stored, without their large fields';

CREATE OR REPLACE FUNCTION monitoring.capture_error(p_event jsonb)
    RETURNS uuid
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_event IS NULL OR pg_catalog.jsonb_typeof(p_event) OPERATOR(pg_catalog.<>) 'object' THEN
        RAISE EXCEPTION 'an error event must be a JSON object, got %', COALESCE(pg_catalog.jsonb_typeof(p_event), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN ((monitoring._store_error_occurrences(pg_catalog.jsonb_build_array(p_event)))[1]).occurrence_id;
END
$$;
COMMENT ON FUNCTION monitoring.capture_error(jsonb) IS
    'Stores one error event (Sentry event JSON or the flat shape: exception_type, message, stack_trace, context, environment, trace_id, ...); returns the occurrence id (NULL for an event id already stored)';

CREATE OR REPLACE FUNCTION monitoring.capture_errors(p_events jsonb)
    RETURNS bigint
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.jsonb_typeof(p_events) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'capture_errors expects a JSON array of events, got %',
            COALESCE(pg_catalog.jsonb_typeof(p_events), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN pg_catalog.cardinality(monitoring._store_error_occurrences(p_events));
END
$$;
COMMENT ON FUNCTION monitoring.capture_errors(jsonb) IS
    'Stores a JSON array of error events in one statement; returns how many were stored (repeated event ids are not)';

-- sql/include/errors_queue.sql
-- The capture queue's functions (included by sql/100_errors.sql and by the upgrade scripts,
-- hence CREATE OR REPLACE). The tables are in errors_queue_tables.sql.
--
-- queue_error() is the cheapest durable write: one INSERT of the event as sent. The capture
-- path then runs for up to a thousand queued events at once (process_error_queue()), which
-- costs a half of what it costs one event at a time. What drains the queue: pg-observe worker
-- (about every second), the pg_cron job pg_observe_error_queue (every minute) and
-- run_maintenance().

CREATE OR REPLACE FUNCTION monitoring.queue_error(p_event jsonb)
    RETURNS uuid
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    given_id text := p_event OPERATOR(pg_catalog.->>) 'event_id';
    event_id uuid;
BEGIN
    IF p_event IS NULL OR pg_catalog.jsonb_typeof(p_event) OPERATOR(pg_catalog.<>) 'object' THEN
        RAISE EXCEPTION 'an error event must be a JSON object, got %', COALESCE(pg_catalog.jsonb_typeof(p_event), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The caller gets the event id at once, as Sentry's SDKs do: the client's own (in any
    -- spelling the capture reads as a uuid), or a new one written into the event.
    event_id := monitoring._event_uuid(given_id);
    IF event_id IS NULL THEN
        event_id := pg_catalog.gen_random_uuid();
        p_event := p_event OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('event_id', event_id);
    END IF;
    INSERT INTO monitoring.error_queue (event) VALUES (p_event);
    RETURN event_id;
END
$$;
COMMENT ON FUNCTION monitoring.queue_error(jsonb) IS
    'Queues one error event (capture_error''s JSON) with one INSERT; returns its event id. Grouped by process_error_queue(), within about a second with a worker';

-- Captures and deletes queued events (their rows locked by the caller); when the batch fails,
-- each half on its own, down to the one event that fails, which is moved to
-- error_queue_failed. The batch is read inside the guarded block: one too big to be a JSON
-- array (256 MB) is halved like any other failure. A transient failure (deadlock, lock, disk
-- full, too many connections, shutdown, I/O or internal error) is raised instead: the whole
-- batch stays queued. Running out of memory is not transient here: a huge batch would fail
-- again, its halves need not.
CREATE OR REPLACE FUNCTION monitoring._store_queued_errors(p_ids bigint[])
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := pg_catalog.cardinality(p_ids);
    half integer := n OPERATOR(pg_catalog./) 2;
    events jsonb;
    arrivals timestamptz[];
BEGIN
    BEGIN
        SELECT pg_catalog.jsonb_agg(q.event ORDER BY q.queue_id), pg_catalog.array_agg(q.queued_at ORDER BY q.queue_id)
        INTO events, arrivals
        FROM monitoring.error_queue q WHERE q.queue_id OPERATOR(pg_catalog.=) ANY (p_ids);
        PERFORM monitoring._store_error_occurrences(events, arrivals);
        DELETE FROM monitoring.error_queue q WHERE q.queue_id OPERATOR(pg_catalog.=) ANY (p_ids);
        RETURN 0;
    EXCEPTION WHEN OTHERS THEN
        IF pg_catalog.left(SQLSTATE, 2) OPERATOR(pg_catalog.=) ANY (ARRAY['40', '55', '57', '58', 'XX'])
           OR SQLSTATE OPERATOR(pg_catalog.=) ANY (ARRAY['53100', '53300']) THEN
            RAISE;
        END IF;
        IF n OPERATOR(pg_catalog.=) 1 THEN
            WITH moved AS (
                DELETE FROM monitoring.error_queue q WHERE q.queue_id OPERATOR(pg_catalog.=) p_ids[1] RETURNING q.*
            )
            INSERT INTO monitoring.error_queue_failed (queue_id, queued_at, sqlstate, reason, event)
            SELECT m.queue_id, m.queued_at, SQLSTATE, SQLERRM, m.event FROM moved m;
            RETURN 1;
        END IF;
    END;
    RETURN monitoring._store_queued_errors(p_ids[1:half])
           OPERATOR(pg_catalog.+) monitoring._store_queued_errors(p_ids[half OPERATOR(pg_catalog.+) 1:n]);
END
$$;
COMMENT ON FUNCTION monitoring._store_queued_errors(bigint[]) IS
    'Captures and deletes these queued events; an event the capture fails on moves to error_queue_failed, the rest is stored; returns how many failed';

-- One batch, in the caller's transaction: the oldest queued events no other drainer holds
-- (SKIP LOCKED: drainers share the queue without waiting). Nothing is lost if the caller dies:
-- the capture and the DELETE are undone together.
CREATE OR REPLACE FUNCTION monitoring.process_error_queue(p_max_events integer DEFAULT 1000)
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ids bigint[];
BEGIN
    IF p_max_events IS NULL OR p_max_events OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'p_max_events must be at least 1, got %', COALESCE(p_max_events::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    ids := ARRAY(SELECT c.queue_id FROM monitoring.error_queue c ORDER BY c.queue_id
                 LIMIT p_max_events FOR UPDATE SKIP LOCKED);
    IF pg_catalog.cardinality(ids) OPERATOR(pg_catalog.=) 0 THEN
        RETURN 0;
    END IF;
    PERFORM monitoring._store_queued_errors(ids);
    RETURN pg_catalog.cardinality(ids);
END
$$;
COMMENT ON FUNCTION monitoring.process_error_queue(integer) IS
    'Captures up to p_max_events queued events (oldest first) in the caller''s transaction; returns how many it took';

-- pg_cron's job: batch after batch, each committed, until the queue is empty or the time is
-- up (the next run starts a minute later). A procedure cannot have SET clauses and commit:
-- every name is qualified instead.
CREATE OR REPLACE PROCEDURE monitoring.drain_error_queue(p_max_seconds integer DEFAULT 50,
                                                         p_batch_size integer DEFAULT 1000)
    LANGUAGE plpgsql
AS $$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    taken integer;
BEGIN
    p_max_seconds := COALESCE(p_max_seconds, 50);
    p_batch_size := COALESCE(p_batch_size, 1000);
    LOOP
        taken := monitoring.process_error_queue(p_batch_size);
        COMMIT;
        EXIT WHEN taken OPERATOR(pg_catalog.<) p_batch_size
               OR pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) started
                  OPERATOR(pg_catalog.>) pg_catalog.make_interval(secs => p_max_seconds);
    END LOOP;
END
$$;
COMMENT ON PROCEDURE monitoring.drain_error_queue(integer, integer) IS
    'Captures queued events batch by batch, committing each, until the queue is empty or p_max_seconds have passed';

-- run_maintenance()'s task: one transaction, so bounded (a bigger backlog is the job's).
CREATE OR REPLACE FUNCTION monitoring._process_error_queue_task()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    taken integer;
    total bigint := 0;
BEGIN
    FOR i IN 1..20 LOOP
        taken := monitoring.process_error_queue(1000);
        total := total OPERATOR(pg_catalog.+) taken;
        EXIT WHEN taken OPERATOR(pg_catalog.<) 1000;
    END LOOP;
    RETURN pg_catalog.format('%s queued events processed', total);
END
$$;
COMMENT ON FUNCTION monitoring._process_error_queue_task() IS 'Maintenance task: captures up to 20,000 queued error events';

-- Failed events go back into the queue (after a fix). They arrive again now: the backlog
-- check measures waiting in the queue, and an arrival older than the partitions would be
-- filed at the time of capture anyway.
CREATE OR REPLACE FUNCTION monitoring.retry_failed_errors()
    RETURNS bigint
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    queued bigint;
BEGIN
    WITH taken AS (
        DELETE FROM monitoring.error_queue_failed f RETURNING f.event, f.queue_id
    )
    INSERT INTO monitoring.error_queue (event)
    SELECT t.event FROM taken t ORDER BY t.queue_id;
    GET DIAGNOSTICS queued = ROW_COUNT;
    RETURN queued;
END
$$;
COMMENT ON FUNCTION monitoring.retry_failed_errors() IS 'Moves every event of error_queue_failed back into error_queue; returns how many';

-- sql/include/errors_workflow.sql
-- The issue workflow (by fingerprint, as seed 001 calls it) and the queries users need.

-- A group by fingerprint, or by error_id given as text.
CREATE FUNCTION monitoring._find_error_group(p_fingerprint text)
    RETURNS monitoring.tb_error_log
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    grp monitoring.tb_error_log;
BEGIN
    SELECT * INTO grp FROM monitoring.tb_error_log g
    WHERE g.error_fingerprint OPERATOR(pg_catalog.=) p_fingerprint
       OR g.error_id OPERATOR(pg_catalog.=) monitoring._uuid_or_null(p_fingerprint)
    LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no error group with fingerprint or id %', pg_catalog.quote_literal(p_fingerprint)
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN grp;
END
$$;
COMMENT ON FUNCTION monitoring._find_error_group(text) IS 'The group with this fingerprint (or error_id); a clear error if none';

CREATE FUNCTION monitoring.resolve_error(p_fingerprint text, p_in_release text DEFAULT NULL, p_actor text DEFAULT NULL)
    RETURNS monitoring.tb_error_log
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    grp monitoring.tb_error_log := monitoring._find_error_group(p_fingerprint);
BEGIN
    UPDATE monitoring.tb_error_log g
    SET status = 'resolved', resolved_at = pg_catalog.now(), resolved_by = COALESCE(p_actor, SESSION_USER::text),
        resolved_in_release = p_in_release, ignored_until = NULL, ignored_until_count = NULL
    WHERE g.error_id OPERATOR(pg_catalog.=) grp.error_id
    RETURNING * INTO grp;
    INSERT INTO monitoring.error_activity (error_id, action, actor, details)
    VALUES (grp.error_id, 'resolve', COALESCE(p_actor, SESSION_USER::text),
            pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('in_release', p_in_release)));
    RETURN grp;
END
$$;
COMMENT ON FUNCTION monitoring.resolve_error(text, text, text) IS
    'Resolves an issue; with p_in_release, occurrences from older releases do not reopen it';

CREATE FUNCTION monitoring.unresolve_error(p_fingerprint text, p_actor text DEFAULT NULL)
    RETURNS monitoring.tb_error_log
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    grp monitoring.tb_error_log := monitoring._find_error_group(p_fingerprint);
BEGIN
    UPDATE monitoring.tb_error_log g
    SET status = 'unresolved', resolved_at = NULL, resolved_by = NULL, resolved_in_release = NULL,
        ignored_until = NULL, ignored_until_count = NULL
    WHERE g.error_id OPERATOR(pg_catalog.=) grp.error_id
    RETURNING * INTO grp;
    INSERT INTO monitoring.error_activity (error_id, action, actor)
    VALUES (grp.error_id, 'unresolve', COALESCE(p_actor, SESSION_USER::text));
    RETURN grp;
END
$$;
COMMENT ON FUNCTION monitoring.unresolve_error(text, text) IS 'Reopens a resolved or ignored issue';

CREATE FUNCTION monitoring.ignore_error(p_fingerprint text, p_until timestamptz DEFAULT NULL,
                                        p_more_occurrences bigint DEFAULT NULL, p_actor text DEFAULT NULL)
    RETURNS monitoring.tb_error_log
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    grp monitoring.tb_error_log := monitoring._find_error_group(p_fingerprint);
BEGIN
    IF p_more_occurrences IS NOT NULL AND p_more_occurrences OPERATOR(pg_catalog.<=) 0 THEN
        RAISE EXCEPTION 'p_more_occurrences must be positive, got %', p_more_occurrences
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE monitoring.tb_error_log g
    SET status = 'ignored', resolved_at = NULL, resolved_by = NULL, resolved_in_release = NULL,
        ignored_until = p_until,
        ignored_until_count = g.occurrence_count OPERATOR(pg_catalog.+) p_more_occurrences
    WHERE g.error_id OPERATOR(pg_catalog.=) grp.error_id
    RETURNING * INTO grp;
    INSERT INTO monitoring.error_activity (error_id, action, actor, details)
    VALUES (grp.error_id, 'ignore', COALESCE(p_actor, SESSION_USER::text),
            pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('until', p_until,
                                                                       'more_occurrences', p_more_occurrences)));
    RETURN grp;
END
$$;
COMMENT ON FUNCTION monitoring.ignore_error(text, timestamptz, bigint, text) IS
    'Ignores an issue forever, until a time, or until N more occurrences (whichever comes first)';

CREATE FUNCTION monitoring.assign_error(p_fingerprint text, p_assignee text, p_actor text DEFAULT NULL)
    RETURNS monitoring.tb_error_log
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    grp monitoring.tb_error_log := monitoring._find_error_group(p_fingerprint);
BEGIN
    UPDATE monitoring.tb_error_log g SET assignee = NULLIF(p_assignee, '')
    WHERE g.error_id OPERATOR(pg_catalog.=) grp.error_id
    RETURNING * INTO grp;
    INSERT INTO monitoring.error_activity (error_id, action, actor, details)
    VALUES (grp.error_id, CASE WHEN grp.assignee IS NULL THEN 'unassign' ELSE 'assign' END,
            COALESCE(p_actor, SESSION_USER::text), pg_catalog.jsonb_build_object('assignee', grp.assignee));
    RETURN grp;
END
$$;
COMMENT ON FUNCTION monitoring.assign_error(text, text, text) IS 'Assigns an issue to someone (NULL or empty: unassigns)';

-- Groups with exact counts: folded counters plus those still pending.
CREATE VIEW monitoring.error_groups AS
SELECT g.error_id, g.error_fingerprint AS fingerprint, g.error_type, g.title, g.culprit, g.error_message,
       g.severity, g.status, g.assignee,
       g.occurrence_count OPERATOR(pg_catalog.+) COALESCE(p.occurrences, 0) AS occurrence_count,
       g.affected_users OPERATOR(pg_catalog.+) COALESCE(p.new_users, 0) AS affected_users,
       LEAST(g.first_seen, p.first_seen) AS first_seen, GREATEST(g.last_seen, p.last_seen) AS last_seen,
       g.environments, g.services, g.first_release, g.release_version AS last_release,
       g.resolved_at, g.resolved_in_release, g.regressed_at, g.ignored_until, g.ignored_until_count,
       g.fingerprint_method, g.fingerprint_version
FROM monitoring.tb_error_log g
LEFT JOIN LATERAL (
    SELECT pg_catalog.sum(q.occurrences) AS occurrences, pg_catalog.sum(q.new_users) AS new_users,
           pg_catalog.min(q.first_seen) AS first_seen, pg_catalog.max(q.last_seen) AS last_seen
    FROM monitoring.error_group_pending q WHERE q.error_id OPERATOR(pg_catalog.=) g.error_id) p ON true;
COMMENT ON VIEW monitoring.error_groups IS 'Issues with exact counts (folded plus pending), first and last seen, status and releases';

-- The seeds' one-row-per-occurrence view.
CREATE VIEW monitoring.errors AS
SELECT o.occurrence_id AS id,
       g.error_fingerprint AS fingerprint,
       o.exception_type,
       o.message,
       o.stack_trace,
       o.context,
       o.environment,
       o.trace_id,
       o.span_id,
       o.occurred_at,
       g.resolved_at,
       g.status = 'ignored' AS ignored,
       g.assignee,
       o.error_id,
       o.release_version,
       o.service,
       o.level,
       o.tags,
       o.user_info,
       o.frames
FROM monitoring.tb_error_occurrence o
JOIN monitoring.tb_error_log g ON g.error_id = o.error_id;
COMMENT ON VIEW monitoring.errors IS
    'One row per error occurrence with its group''s fingerprint and workflow state (the seeds'' monitoring.errors)';

CREATE FUNCTION monitoring.top_issues(p_since interval DEFAULT '24 hours', p_environment text DEFAULT NULL,
                                      p_limit integer DEFAULT 20, p_include_resolved boolean DEFAULT false)
    RETURNS TABLE (fingerprint text, error_type text, title text, status text, occurrences bigint,
                   affected_users bigint, first_seen timestamptz, last_seen timestamptz, assignee text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT g.error_fingerprint, g.error_type, g.title, g.status, pg_catalog.count(*) AS occurrences,
           pg_catalog.count(DISTINCT monitoring._user_key(o.user_info, o.context)) AS affected_users,
           pg_catalog.min(o.occurred_at), pg_catalog.max(o.occurred_at), g.assignee
    FROM monitoring.tb_error_occurrence o
    JOIN monitoring.tb_error_log g ON g.error_id OPERATOR(pg_catalog.=) o.error_id
    WHERE o.occurred_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) p_since)
      AND (p_environment IS NULL OR o.environment OPERATOR(pg_catalog.=) p_environment)
      AND (p_include_resolved OR g.status OPERATOR(pg_catalog.=) 'unresolved')
    GROUP BY g.error_id
    ORDER BY occurrences DESC, pg_catalog.max(o.occurred_at) DESC
    LIMIT p_limit
$$;
COMMENT ON FUNCTION monitoring.top_issues(interval, text, integer, boolean) IS
    'Most frequent unresolved issues in a window (partition-pruned on occurred_at)';

CREATE FUNCTION monitoring.issue_occurrences(p_fingerprint text, p_since interval DEFAULT '30 days',
                                             p_limit integer DEFAULT 50)
    RETURNS SETOF monitoring.errors
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM monitoring.errors e
    WHERE e.error_id OPERATOR(pg_catalog.=) (monitoring._find_error_group(p_fingerprint)).error_id
      AND e.occurred_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) p_since)
    ORDER BY e.occurred_at DESC
    LIMIT p_limit
$$;
COMMENT ON FUNCTION monitoring.issue_occurrences(text, interval, integer) IS 'An issue''s latest occurrences';

CREATE FUNCTION monitoring.error_trends(p_since interval DEFAULT '7 days', p_bucket interval DEFAULT '1 hour')
    RETURNS TABLE (bucket timestamptz, fingerprint text, occurrences bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.date_bin(p_bucket, o.occurred_at, '2000-01-01'::timestamptz), g.error_fingerprint,
           pg_catalog.count(*)
    FROM monitoring.tb_error_occurrence o
    JOIN monitoring.tb_error_log g ON g.error_id OPERATOR(pg_catalog.=) o.error_id
    WHERE o.occurred_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) p_since)
    GROUP BY 1, 2
    ORDER BY 1 DESC, 3 DESC
$$;
COMMENT ON FUNCTION monitoring.error_trends(interval, interval) IS 'Occurrences per issue per time bucket (hourly by default)';

CREATE FUNCTION monitoring.affected_users(p_since interval DEFAULT '24 hours', p_limit integer DEFAULT 50)
    RETURNS TABLE (user_key text, unique_errors bigint, total_errors bigint, error_types text[])
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT monitoring._user_key(o.user_info, o.context), pg_catalog.count(DISTINCT o.error_id), pg_catalog.count(*),
           pg_catalog.array_agg(DISTINCT o.exception_type)
    FROM monitoring.tb_error_occurrence o
    WHERE o.occurred_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) p_since)
      AND monitoring._user_key(o.user_info, o.context) IS NOT NULL
    GROUP BY 1
    ORDER BY 3 DESC
    LIMIT p_limit
$$;
COMMENT ON FUNCTION monitoring.affected_users(interval, integer) IS 'Users hit by errors in a window, with how many distinct issues';

CREATE FUNCTION monitoring.first_vs_repeat_errors(p_since interval DEFAULT '24 hours')
    RETURNS TABLE (kind text, issues bigint, occurrences bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN g.first_seen OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) p_since)
                THEN 'first seen in window' ELSE 'seen before' END,
           pg_catalog.count(DISTINCT g.error_id), pg_catalog.count(*)
    FROM monitoring.tb_error_occurrence o
    JOIN monitoring.tb_error_log g ON g.error_id OPERATOR(pg_catalog.=) o.error_id
    WHERE o.occurred_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) p_since)
    GROUP BY 1
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.first_vs_repeat_errors(interval) IS 'Issues new in a window against recurring ones';

-- sql/include/errors_partitions.sql
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


-- sql/include/errors_capture_trigger.sql
-- A plain INSERT is a capture (included by sql/100_errors.sql and the upgrade scripts).
-- The row trigger prepares each row; the statement triggers mark the statement as running and,
-- at its end, count the rows its fast path took (see _error_occurrence_prepare()).
-- Rows the capture functions have prepared already carry their error_id and come with
-- pg_observe.capture_prepared on: the WHEN clause, evaluated without a function call, lets
-- them through. Any other row, error_id or not, is prepared by the trigger. Anyone may set
-- the setting, so the clause also asks for the extension's owner, whom the capture functions
-- run as (SECURITY DEFINER): a writer who sets it gets the capture all the same (before
-- 0.8.0 such a row was stored unscrubbed and uncounted).
DO $$
DECLARE
    old_trigger name;
    capture_role name := (
        SELECT r.rolname FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) p.proowner
        WHERE p.oid OPERATOR(pg_catalog.=) 'monitoring.capture_errors(jsonb)'::pg_catalog.regprocedure);
BEGIN
    FOR old_trigger IN
        SELECT t.tgname FROM pg_catalog.pg_trigger t
        WHERE t.tgrelid OPERATOR(pg_catalog.=) 'monitoring.tb_error_occurrence'::pg_catalog.regclass
          AND t.tgname OPERATOR(pg_catalog.=) ANY ('{error_occurrence_begin,error_occurrence_prepare,error_occurrence_fold}')
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON monitoring.tb_error_occurrence', old_trigger);
    END LOOP;
    EXECUTE pg_catalog.format($trigger$
        CREATE TRIGGER error_occurrence_prepare
            BEFORE INSERT ON monitoring.tb_error_occurrence
            FOR EACH ROW
            WHEN (NEW.error_id IS NULL
                  OR pg_catalog.current_setting('pg_observe.capture_prepared', true) IS DISTINCT FROM 'on'
                  OR CURRENT_USER OPERATOR(pg_catalog.<>) %1$L::pg_catalog.name)
            EXECUTE FUNCTION monitoring._error_occurrence_prepare()$trigger$,
        -- the role the capture functions run as: their owner, which an upgrade run by another
        -- role keeps (CREATE OR REPLACE does not change owners), not the upgrader
        capture_role);
    -- Statement-level: not cloned to the partitions, so they run once per INSERT or COPY into
    -- tb_error_occurrence: both for every statement but the capture functions' own (the AFTER
    -- one whatever the statement mark says by then), the AFTER one also when the row
    -- trigger's per-row way left deltas to fold. Neither runs for a statement inside a
    -- trigger (the set-based path's INSERT of no rows, run for a row of the statement, would
    -- end the statement's journal there): such rows are counted with the outer statement's,
    -- or as they come.
    EXECUTE pg_catalog.format($trigger$
        CREATE TRIGGER error_occurrence_begin
            BEFORE INSERT ON monitoring.tb_error_occurrence
            FOR EACH STATEMENT
            WHEN (pg_catalog.pg_trigger_depth() OPERATOR(pg_catalog.=) 0
                  AND (pg_catalog.current_setting('pg_observe.capture_prepared', true) IS DISTINCT FROM 'on'
                       OR CURRENT_USER OPERATOR(pg_catalog.<>) %1$L::pg_catalog.name))
            EXECUTE FUNCTION monitoring._error_occurrence_begin()$trigger$,
        capture_role);
    EXECUTE pg_catalog.format($trigger$
        CREATE TRIGGER error_occurrence_fold
            AFTER INSERT ON monitoring.tb_error_occurrence
            FOR EACH STATEMENT
            WHEN ((pg_catalog.pg_trigger_depth() OPERATOR(pg_catalog.=) 0
                   AND (pg_catalog.current_setting('pg_observe.capture_prepared', true) IS DISTINCT FROM 'on'
                        OR CURRENT_USER OPERATOR(pg_catalog.<>) %1$L::pg_catalog.name))
                  OR COALESCE(pg_catalog.current_setting('pg_observe.capture_pending', true), '0') OPERATOR(pg_catalog.<>) '0')
            EXECUTE FUNCTION monitoring._error_occurrence_fold()$trigger$,
        capture_role);
END
$$;


SELECT monitoring._create_time_series(
    p_parent_table => 'monitoring.tb_error_occurrence',
    p_control_column => 'occurred_at',
    p_partition_interval => interval '1 month',
    p_retention => interval '6 months',
    p_premake => 4,
    p_original_time_column => 'client_timestamp');

INSERT INTO monitoring.maintenance_task (task_name, function_name, run_order) VALUES
    ('fold_error_counters', 'monitoring._fold_all_error_counters', 10),
    ('expire_error_event_ids', 'monitoring._expire_error_event_ids', 20);

-- sql/200_notifications.sql
-- Notifications: rules are rows (tb_error_notification_config, the seeds' table), evaluated
-- by the capture in the same transaction as the occurrence; a match becomes a row of
-- notification_queue (a transactional outbox) and a pg_notify on channel
-- pg_observe_notification. dispatch_notifications() claims due rows, sends them with the
-- PL/Python senders and logs every attempt in tb_error_notification_log (partitioned).
--
-- Functions of this capability set search_path to pg_catalog, pg_temp and use plain operators:
-- only pg_catalog's operators and functions can be found (pg_temp is never searched for them).

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'observe_dispatcher') THEN
        CREATE ROLE observe_dispatcher NOLOGIN;
    END IF;
END
$roles$;
COMMENT ON ROLE observe_dispatcher IS
    'pg_observe: may run dispatch_notifications() (the worker and the pg_cron job); reads channel secrets only through it';
GRANT observe_dispatcher TO observe_admin;

-- Severity names a rule may use: the levels of tb_error_occurrence plus the usual aliases
-- (the seed writes ARRAY['error', 'critical']).
CREATE FUNCTION monitoring._notification_levels(p_severity text[])
    RETURNS text[]
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.array_agg(DISTINCT CASE pg_catalog.lower(s)
               WHEN 'critical' THEN 'fatal' WHEN 'warn' THEN 'warning' WHEN 'err' THEN 'error'
               ELSE pg_catalog.lower(s) END)
    FROM pg_catalog.unnest(p_severity) s
$$;
COMMENT ON FUNCTION monitoring._notification_levels(text[]) IS
    'Rule severities as occurrence levels: lower case, critical -> fatal, warn -> warning';

CREATE TABLE monitoring.tb_error_notification_config (
    config_id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    description               text,
    -- which errors (NULL or an empty array: any)
    error_type                text,
    error_fingerprint         text,
    severity                  text[],
    environment               text[],
    -- where to
    channel_type              text        NOT NULL DEFAULT 'webhook',
    channel_config            jsonb       NOT NULL DEFAULT '{}',
    -- when
    min_occurrence_count      integer     NOT NULL DEFAULT 1,
    notify_on_occurrence      integer[],
    first_seen_only           boolean     NOT NULL DEFAULT false,
    notify_on_regression      boolean     NOT NULL DEFAULT true,
    frequency_count           integer,
    frequency_window_minutes  integer,
    user_count                integer,
    user_window_minutes       integer,
    rate_limit_minutes        integer     NOT NULL DEFAULT 0,
    enabled                   boolean     NOT NULL DEFAULT true,
    created_at                timestamptz NOT NULL DEFAULT pg_catalog.now(),
    severity_levels           text[]      GENERATED ALWAYS AS (monitoring._notification_levels(severity)) STORED,
    CONSTRAINT tb_error_notification_config_severity_known
        CHECK (severity_levels <@ ARRAY['debug', 'info', 'warning', 'error', 'fatal']),
    CONSTRAINT tb_error_notification_config_channel_named CHECK (channel_type ~ '^[A-Za-z0-9_.-]{1,63}$'),
    CONSTRAINT tb_error_notification_config_config_object CHECK (jsonb_typeof(channel_config) = 'object'),
    CONSTRAINT tb_error_notification_config_min_count CHECK (min_occurrence_count >= 1),
    CONSTRAINT tb_error_notification_config_thresholds CHECK (0 < ALL (notify_on_occurrence)),
    CONSTRAINT tb_error_notification_config_rate_limit CHECK (rate_limit_minutes >= 0),
    CONSTRAINT tb_error_notification_config_frequency
        CHECK ((frequency_count IS NULL) = (frequency_window_minutes IS NULL)
               AND frequency_count >= 1 AND frequency_window_minutes >= 1),
    CONSTRAINT tb_error_notification_config_users
        CHECK ((user_count IS NULL) = (user_window_minutes IS NULL) AND user_count >= 1 AND user_window_minutes >= 1)
);
COMMENT ON TABLE monitoring.tb_error_notification_config IS
    'Notification rules (seed-compatible): which errors, which channel, and when; evaluated by every capture';
COMMENT ON COLUMN monitoring.tb_error_notification_config.error_type IS 'Exception type to match exactly; NULL: any';
COMMENT ON COLUMN monitoring.tb_error_notification_config.error_fingerprint IS 'One group (tb_error_log.error_fingerprint); NULL: any';
COMMENT ON COLUMN monitoring.tb_error_notification_config.severity IS
    'Levels to match (debug, info, warning, error, fatal; critical means fatal); NULL or empty: any';
COMMENT ON COLUMN monitoring.tb_error_notification_config.environment IS 'Environments to match; NULL or empty: any';
COMMENT ON COLUMN monitoring.tb_error_notification_config.channel_type IS
    'email, slack, webhook, pagerduty, or a channel registered in notification_channel';
COMMENT ON COLUMN monitoring.tb_error_notification_config.channel_config IS
    'Channel settings for this rule, laid over the channel''s own (notification_channel.settings); may hold secrets';
COMMENT ON COLUMN monitoring.tb_error_notification_config.min_occurrence_count IS
    'Notify when the group''s count reaches this (1: its first occurrence)';
COMMENT ON COLUMN monitoring.tb_error_notification_config.notify_on_occurrence IS
    'More counts to notify at, e.g. {1,10,100,1000}';
COMMENT ON COLUMN monitoring.tb_error_notification_config.first_seen_only IS
    'Notify only for the occurrence that creates a group (and regressions, if notify_on_regression)';
COMMENT ON COLUMN monitoring.tb_error_notification_config.notify_on_regression IS 'Notify when a resolved group comes back';
COMMENT ON COLUMN monitoring.tb_error_notification_config.frequency_count IS
    'Notify when a group has more than this many occurrences in frequency_window_minutes (replaces the count thresholds)';
COMMENT ON COLUMN monitoring.tb_error_notification_config.user_count IS
    'Notify when more than this many distinct users hit a group in user_window_minutes (replaces the count thresholds)';
COMMENT ON COLUMN monitoring.tb_error_notification_config.rate_limit_minutes IS
    'Per-group throttle: after a notification, at most one more per this many minutes while the group keeps occurring; 0: none after the thresholds';
COMMENT ON COLUMN monitoring.tb_error_notification_config.severity_levels IS 'severity, normalised to occurrence levels';

CREATE INDEX tb_error_notification_config_enabled_idx ON monitoring.tb_error_notification_config (config_id) WHERE enabled;

-- Channels: the senders behind each channel_type and their shared settings (SMTP server,
-- credentials, default webhook): secrets belong here, readable by admins and the dispatcher.
CREATE TABLE monitoring.notification_channel (
    channel_type   text        PRIMARY KEY,
    sender         text        NOT NULL,
    settings       jsonb       NOT NULL DEFAULT '{}',
    function_name  regprocedure,
    description    text,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT notification_channel_named CHECK (channel_type ~ '^[A-Za-z0-9_.-]{1,63}$'),
    CONSTRAINT notification_channel_sender_check CHECK (sender IN ('email', 'slack', 'webhook', 'pagerduty', 'function')),
    CONSTRAINT notification_channel_function_given CHECK ((sender = 'function') = (function_name IS NOT NULL)),
    CONSTRAINT notification_channel_settings_object CHECK (jsonb_typeof(settings) = 'object')
);
COMMENT ON TABLE monitoring.notification_channel IS
    'Notification channels: the sender of each channel_type and its shared settings, secrets included (admins only)';
COMMENT ON COLUMN monitoring.notification_channel.sender IS
    'email, slack, webhook, pagerduty (PL/Python senders) or function (function_name is called)';
COMMENT ON COLUMN monitoring.notification_channel.function_name IS
    'Custom sender: a function (notification jsonb, config jsonb) returning (success boolean, error text) or boolean';
-- No rows at install (so that pg_dump restores them without conflicts): a rule whose
-- channel_type is email, slack, webhook or pagerduty and has no row here uses that sender
-- with the rule's channel_config alone.

-- Delivery settings, one row, made with the defaults at first use (not at install, so that
-- pg_dump restores an edited row without a conflict).
CREATE TABLE monitoring.notification_settings (
    settings_id       boolean     PRIMARY KEY DEFAULT true,
    max_attempts      integer     NOT NULL DEFAULT 8,
    retry_base        interval    NOT NULL DEFAULT '30 seconds',
    retry_max         interval    NOT NULL DEFAULT '1 hour',
    claim_timeout     interval    NOT NULL DEFAULT '5 minutes',
    send_timeout      interval    NOT NULL DEFAULT '10 seconds',
    batch_size        integer     NOT NULL DEFAULT 100,
    max_parallel      integer     NOT NULL DEFAULT 8,
    keep_sent         interval    NOT NULL DEFAULT '7 days',
    keep_dead         interval    NOT NULL DEFAULT '30 days',
    CONSTRAINT notification_settings_one_row CHECK (settings_id),
    CONSTRAINT notification_settings_attempts CHECK (max_attempts BETWEEN 1 AND 100),
    CONSTRAINT notification_settings_retry CHECK (retry_base > interval '0' AND retry_max >= retry_base),
    CONSTRAINT notification_settings_timeouts
        CHECK (send_timeout BETWEEN interval '100 milliseconds' AND interval '60 seconds'
               AND claim_timeout >= interval '10 seconds'),
    CONSTRAINT notification_settings_batch CHECK (batch_size BETWEEN 1 AND 1000 AND max_parallel BETWEEN 1 AND 32)
);
COMMENT ON TABLE monitoring.notification_settings IS
    'Delivery settings (one row): attempts, exponential backoff, claim expiry, send timeout, batch size, parallel sends, queue retention';
COMMENT ON COLUMN monitoring.notification_settings.claim_timeout IS
    'A claimed message whose dispatcher died is claimed again after this; keep it above a batch''s sending time';

-- Per rule and group: what was notified last, so thresholds fire once and throttles hold.
CREATE TABLE monitoring.notification_state (
    error_id           uuid        NOT NULL REFERENCES monitoring.tb_error_log ON DELETE CASCADE,
    config_id          uuid        NOT NULL REFERENCES monitoring.tb_error_notification_config ON DELETE CASCADE,
    last_trigger       text        NOT NULL,
    last_threshold     bigint      NOT NULL DEFAULT 0,
    last_regressed_at  timestamptz,
    last_notified_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    throttled_until    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    notifications      bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (error_id, config_id)
);
COMMENT ON TABLE monitoring.notification_state IS
    'Per rule and group: the last notification, the highest count threshold notified, and the throttle';
CREATE INDEX notification_state_config_id_idx ON monitoring.notification_state (config_id);

-- What the next capture of a group (per environment and level) must reach before any rule
-- could fire: a count or a time. A capture below both skips the rules' evaluation, which
-- keeps the cost of many rules off the steady state. A cache: UNLOGGED, emptied whenever
-- the rules change, and forgotten per group when its notification state changes.
CREATE UNLOGGED TABLE monitoring.notification_watch (
    error_id     uuid        NOT NULL,
    environment  text        NOT NULL,
    level        text        NOT NULL,
    next_count   bigint      NOT NULL,
    next_at      timestamptz NOT NULL,
    PRIMARY KEY (error_id, environment, level)
);
COMMENT ON TABLE monitoring.notification_watch IS
    'Cache: per group, environment and level, the count and the time before which no notification rule can fire';

-- The outbox. A row per (rule, triggering event): its idempotency key is unique, so a retry
-- of the same capture or two captures racing enqueue it once.
CREATE TABLE monitoring.notification_queue (
    queue_id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key       uuid        NOT NULL,
    config_id             uuid        NOT NULL REFERENCES monitoring.tb_error_notification_config ON DELETE CASCADE,
    error_id              uuid        NOT NULL REFERENCES monitoring.tb_error_log ON DELETE CASCADE,
    occurrence_id         uuid,
    notification_trigger  text        NOT NULL,
    threshold             bigint,
    payload               jsonb       NOT NULL,
    status                text        NOT NULL DEFAULT 'pending',
    attempts              integer     NOT NULL DEFAULT 0,
    next_attempt_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    claimed_by            text,
    claim_token           uuid,
    last_error            text,
    queued_at             timestamptz NOT NULL DEFAULT pg_catalog.now(),
    sent_at               timestamptz,
    CONSTRAINT notification_queue_idempotency_key UNIQUE (idempotency_key),
    CONSTRAINT notification_queue_status_check CHECK (status IN ('pending', 'sending', 'sent', 'dead')),
    CONSTRAINT notification_queue_trigger_check
        CHECK (notification_trigger IN ('new', 'threshold', 'regression', 'repeat', 'frequency', 'users', 'test'))
);
COMMENT ON TABLE monitoring.notification_queue IS
    'Outbox of notifications: pending, sending (claimed until next_attempt_at), sent, or dead after max_attempts';
COMMENT ON COLUMN monitoring.notification_queue.idempotency_key IS
    'Stable per rule and triggering event; sent with every attempt so receivers can drop duplicates';
COMMENT ON COLUMN monitoring.notification_queue.next_attempt_at IS
    'pending: when it is due (backoff); sending: when the claim expires and another dispatcher may take it';
CREATE INDEX notification_queue_due_idx ON monitoring.notification_queue (next_attempt_at)
    WHERE status IN ('pending', 'sending');
CREATE INDEX notification_queue_error_id_idx ON monitoring.notification_queue (error_id);
CREATE INDEX notification_queue_config_id_idx ON monitoring.notification_queue (config_id);

-- The delivery log: one row per attempt (seed columns first), partitioned monthly.
CREATE TABLE monitoring.tb_error_notification_log (
    notification_id       uuid        NOT NULL DEFAULT gen_random_uuid(),
    config_id             uuid        NOT NULL,
    error_id              uuid        NOT NULL,
    sent_at               timestamptz NOT NULL DEFAULT pg_catalog.now(),
    channel_type          text        NOT NULL,
    recipient             text,
    status                text        NOT NULL,
    error_message         text,
    queue_id              bigint,
    idempotency_key       uuid,
    attempt               integer,
    notification_trigger  text,
    status_code           integer,
    duration_ms           double precision,
    dispatcher            text,
    CONSTRAINT tb_error_notification_log_pkey PRIMARY KEY (notification_id, sent_at),
    CONSTRAINT tb_error_notification_log_status_check CHECK (status IN ('sent', 'failed'))
) PARTITION BY RANGE (sent_at);
COMMENT ON TABLE monitoring.tb_error_notification_log IS
    'Delivery log (seed-compatible): one row per attempt to send a notification, partitioned monthly (pg_partman)';
COMMENT ON COLUMN monitoring.tb_error_notification_log.status IS 'sent or failed (the queue row says whether it will be retried or is dead)';
COMMENT ON COLUMN monitoring.tb_error_notification_log.error_message IS 'Why the attempt failed; NULL if it was sent';
CREATE INDEX tb_error_notification_log_error_id_idx ON monitoring.tb_error_notification_log (error_id, sent_at DESC);
CREATE INDEX tb_error_notification_log_sent_at_idx ON monitoring.tb_error_notification_log (sent_at DESC);

SELECT monitoring._create_time_series('monitoring.tb_error_notification_log', 'sent_at', interval '1 month',
                                      interval '6 months');

SELECT pg_catalog.pg_extension_config_dump('monitoring.tb_error_notification_config', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.notification_channel', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.notification_settings', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.notification_state', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.notification_queue', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.notification_queue_queue_id_seq', '');

-- sql/include/notify_functions.sql
-- Notification rules, evaluated by the capture (included by sql/200_notifications.sql and
-- by the upgrade scripts, hence CREATE OR REPLACE).
--
-- The capture functions and the plain INSERT's trigger call _queue_error_notifications()
-- once per capture, after the groups' counters are up to date. For each (enabled rule, group of the batch)
-- that matches, one statement decides whether the rule fires, and why:
--   regression  the group was reopened by this capture (notify_on_regression);
--   new         the capture made the group (first_seen_only, or a first threshold of 1);
--   frequency / users  more than N occurrences / users in the window (throttled);
--   threshold   the count reached a threshold (min_occurrence_count, notify_on_occurrence)
--               higher than the last one notified;
--   repeat      rate_limit_minutes > 0 and the throttle ran out while the group occurs.
-- Firing goes through notification_state with INSERT ... ON CONFLICT DO UPDATE ... WHERE:
-- two captures racing on one group serialise there (only when a rule fires) and only one
-- of them enqueues. The queue row's idempotency key is unique as well.

CREATE OR REPLACE FUNCTION monitoring._notification_key(p_config_id uuid, p_error_id uuid, p_trigger text, p_detail text)
    RETURNS uuid
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.md5(pg_catalog.concat_ws('/', p_config_id, p_error_id, p_trigger, p_detail))::uuid
$$;
COMMENT ON FUNCTION monitoring._notification_key(uuid, uuid, text, text) IS
    'Idempotency key of a notification: stable for one rule, group and triggering event';

-- Occurrences (or distinct users) of a group in the last p_minutes, counting at most
-- p_limit + 1 of them. p_pending: this capture's rows when they are not stored yet (the
-- plain INSERT's BEFORE trigger). A function of its own, so that the rules' statement does
-- not carry scans of every partition in its plan.
CREATE OR REPLACE FUNCTION monitoring._notification_window_count(
    p_error_id uuid, p_minutes integer, p_limit integer, p_distinct_users boolean,
    p_pending monitoring.tb_error_occurrence[])
    RETURNS bigint
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    since timestamptz := now() - make_interval(mins => p_minutes);
    found_count bigint;
BEGIN
    IF p_distinct_users THEN
        SELECT count(DISTINCT u.user_key) INTO found_count FROM (
            SELECT monitoring._user_key(o.user_info, o.context) AS user_key
            FROM monitoring.tb_error_occurrence o
            WHERE o.error_id = p_error_id AND o.occurred_at >= since
            UNION ALL
            SELECT monitoring._user_key(n.user_info, n.context)
            FROM unnest(p_pending) n
            WHERE n.error_id = p_error_id AND n.occurred_at >= since
        ) u;
    ELSE
        SELECT count(*) INTO found_count FROM (
            SELECT FROM monitoring.tb_error_occurrence o
            WHERE o.error_id = p_error_id AND o.occurred_at >= since
            LIMIT p_limit + 1) w;
        found_count := found_count + (SELECT count(*) FROM unnest(p_pending) n
                                      WHERE n.error_id = p_error_id AND n.occurred_at >= since);
    END IF;
    RETURN found_count;
END
$$;
COMMENT ON FUNCTION monitoring._notification_window_count(uuid, integer, integer, boolean, monitoring.tb_error_occurrence[]) IS
    'Occurrences or distinct users of a group in a recent window, for frequency and affected-user rules';

-- p_stored: whether p_rows are in tb_error_occurrence already (capture functions) or are
-- being inserted (the plain INSERT's BEFORE trigger).
CREATE OR REPLACE FUNCTION monitoring._queue_error_notifications(p_rows monitoring.tb_error_occurrence[], p_stored boolean)
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- an array parameter: see errors_functions.sql
AS $$
DECLARE
    pending monitoring.tb_error_occurrence[] := CASE WHEN p_stored THEN '{}' ELSE p_rows END;
    fired jsonb;
    queued integer;
BEGIN
    IF NOT EXISTS (SELECT FROM monitoring.tb_error_notification_config c WHERE c.enabled) THEN
        RETURN 0;
    END IF;
    -- The steady state: every group of the capture is below the count and before the time
    -- its watch names, was not reopened now, or is ignored. Nothing can fire.
    IF NOT EXISTS (
        SELECT FROM (SELECT DISTINCT n.error_id, n.environment, n.level FROM unnest(p_rows) n
                     WHERE n.error_id IS NOT NULL) b
        JOIN monitoring.tb_error_log g ON g.error_id = b.error_id
        LEFT JOIN monitoring.notification_watch w
               ON w.error_id = b.error_id AND w.environment = b.environment AND w.level = b.level
        WHERE g.status <> 'ignored'
          AND (w.error_id IS NULL OR g.regressed_at = now() OR w.next_at <= now()
               OR g.occurrence_count + COALESCE((SELECT sum(p.occurrences) FROM monitoring.error_group_pending p
                                                 WHERE p.error_id = b.error_id), 0) >= w.next_count)) THEN
        RETURN 0;
    END IF;

    -- Read-only first: most evaluations fire nothing, and then nothing is written.
    WITH batch AS (
        -- the latest event per group, environment and level (rules filter on those two)
        SELECT DISTINCT ON (n.error_id, n.environment, n.level)
               n.error_id, n.environment, n.level, n.occurrence_id, n.occurred_at, n.release_version,
               n.service, n.server_name, n.trace_id,
               count(*) OVER (PARTITION BY n.error_id) AS batch_rows
        FROM unnest(p_rows) n
        WHERE n.error_id IS NOT NULL
        ORDER BY n.error_id, n.environment, n.level, n.occurred_at DESC
    ), matched AS (
        SELECT DISTINCT ON (c.config_id, b.error_id)
               c.config_id, c.created_at AS rule_created_at, c.min_occurrence_count, c.notify_on_occurrence,
               c.first_seen_only, c.notify_on_regression, c.frequency_count, c.frequency_window_minutes,
               c.user_count, c.user_window_minutes, c.rate_limit_minutes,
               c.error_type AS rule_error_type, c.error_fingerprint AS rule_fingerprint, b.*
        FROM batch b
        JOIN monitoring.tb_error_notification_config c
          ON c.enabled
         AND (c.severity_levels IS NULL OR cardinality(c.severity_levels) = 0 OR b.level = ANY (c.severity_levels))
         AND (c.environment IS NULL OR cardinality(c.environment) = 0 OR b.environment = ANY (c.environment))
        ORDER BY c.config_id, b.error_id, b.occurred_at DESC
    ), counted AS (
        SELECT m.*, g.error_fingerprint, g.error_type, g.error_message, g.title, g.culprit,
               g.affected_users + COALESCE(p.new_users, 0) AS affected_users,
               g.first_seen, g.last_seen, g.stack_trace, g.status, g.release_version AS group_release,
               g.regressed_at, g.regressed_at = now() AND g.status = 'unresolved' AS regressed_now,
               g.occurrence_count + COALESCE(p.occurrences, 0) AS count_after
        FROM matched m
        JOIN monitoring.tb_error_log g ON g.error_id = m.error_id
        -- the deltas not folded yet, read once for both counts
        CROSS JOIN LATERAL (SELECT sum(q.occurrences) AS occurrences, sum(q.new_users) AS new_users
                            FROM monitoring.error_group_pending q WHERE q.error_id = m.error_id) p
        WHERE (m.rule_error_type IS NULL OR m.rule_error_type = g.error_type)
          AND (m.rule_fingerprint IS NULL OR m.rule_fingerprint = g.error_fingerprint)
          AND g.status <> 'ignored'   -- an ignored issue does not page anyone
    ), decided AS (
        SELECT x.*, CASE WHEN d.fired IN ('frequency', 'users') THEN NULL ELSE r.reached END AS reached, d.fired,
               now() + make_interval(mins => CASE WHEN d.fired IN ('frequency', 'users')
                                                  THEN GREATEST(x.rate_limit_minutes, x.frequency_window_minutes,
                                                                x.user_window_minutes)
                                                  ELSE x.rate_limit_minutes END) AS throttled_until
        FROM counted x
        LEFT JOIN monitoring.notification_state s ON s.error_id = x.error_id AND s.config_id = x.config_id
        CROSS JOIN LATERAL (
            SELECT max(t) AS reached
            FROM unnest(COALESCE(x.notify_on_occurrence, '{}') || x.min_occurrence_count) t
            WHERE t <= x.count_after
        ) r
        CROSS JOIN LATERAL (
            SELECT CASE
                WHEN x.regressed_now AND x.notify_on_regression
                     AND s.last_regressed_at IS DISTINCT FROM x.regressed_at THEN 'regression'
                WHEN x.first_seen_only THEN
                    CASE WHEN x.count_after <= x.batch_rows AND s.error_id IS NULL THEN 'new' END
                WHEN x.frequency_count IS NOT NULL OR x.user_count IS NOT NULL THEN
                    CASE WHEN s.throttled_until > now() THEN NULL
                         WHEN x.frequency_count < monitoring._notification_window_count(
                                  x.error_id, x.frequency_window_minutes, x.frequency_count, false, pending)
                         THEN 'frequency'
                         WHEN x.user_count < monitoring._notification_window_count(
                                  x.error_id, x.user_window_minutes, x.user_count, true, pending)
                         THEN 'users'
                    END
                -- A group made after the rule, or one that already has state here, gets
                -- the highest threshold it reached; an older group only a crossing now.
                WHEN r.reached > COALESCE(s.last_threshold, 0)
                     AND (s.error_id IS NOT NULL OR x.count_after - x.batch_rows < r.reached
                          OR x.first_seen >= x.rule_created_at) THEN
                    CASE WHEN x.count_after <= x.batch_rows THEN 'new' ELSE 'threshold' END
                WHEN x.rate_limit_minutes > 0 AND x.count_after >= x.min_occurrence_count
                     AND COALESCE(s.throttled_until, '-infinity') <= now() THEN 'repeat'
            END AS fired
        ) d
        WHERE d.fired IS NOT NULL
    )
    SELECT jsonb_agg(to_jsonb(d)) INTO fired FROM decided d;
    IF fired IS NOT NULL THEN
        queued := monitoring._enqueue_error_notifications(fired);
    END IF;
    PERFORM monitoring._watch_error_notifications(p_rows);
    RETURN COALESCE(queued, 0);
END
$$;
COMMENT ON FUNCTION monitoring._queue_error_notifications(monitoring.tb_error_occurrence[], boolean) IS
    'Evaluates the enabled notification rules for the groups of a capture and enqueues what fires (same transaction), then pg_notify';

-- Writes what _queue_error_notifications decided to fire: notification_state first (the
-- gate against a racing capture), then the queue, then pg_notify. Returns how many queued.
CREATE OR REPLACE FUNCTION monitoring._enqueue_error_notifications(p_fired jsonb)
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    queued integer;
BEGIN
    WITH decided AS (
        SELECT * FROM jsonb_to_recordset(p_fired) AS d(
            config_id uuid, error_id uuid, fired text, reached bigint, regressed_at timestamptz,
            throttled_until timestamptz, occurrence_id uuid, occurred_at timestamptz, environment text, level text,
            release_version text, service text, server_name text, trace_id text, error_fingerprint text,
            error_type text, error_message text, title text, culprit text, affected_users bigint,
            first_seen timestamptz, last_seen timestamptz, stack_trace text, status text, group_release text,
            count_after bigint)
    ), gated AS (
        INSERT INTO monitoring.notification_state AS s
            (error_id, config_id, last_trigger, last_threshold, last_regressed_at, last_notified_at, throttled_until)
        SELECT d.error_id, d.config_id, d.fired, COALESCE(d.reached, 0),
               CASE WHEN d.fired = 'regression' THEN d.regressed_at END, now(), d.throttled_until
        FROM decided d
        ON CONFLICT (error_id, config_id) DO UPDATE
        SET last_trigger = excluded.last_trigger,
            last_threshold = GREATEST(s.last_threshold, excluded.last_threshold),
            last_regressed_at = COALESCE(excluded.last_regressed_at, s.last_regressed_at),
            last_notified_at = excluded.last_notified_at,
            throttled_until = excluded.throttled_until,
            notifications = s.notifications + 1
        -- checked again against the row, which another capture may just have changed
        WHERE CASE excluded.last_trigger
                  WHEN 'regression' THEN s.last_regressed_at IS DISTINCT FROM excluded.last_regressed_at
                  WHEN 'new' THEN false
                  WHEN 'threshold' THEN s.last_threshold < excluded.last_threshold
                  ELSE s.throttled_until <= now()
              END
        RETURNING s.error_id, s.config_id
    ), keyed AS (
        SELECT d.*, monitoring._notification_key(d.config_id, d.error_id, d.fired,
                   CASE d.fired WHEN 'new' THEN '' WHEN 'threshold' THEN d.reached::text
                                WHEN 'regression' THEN d.regressed_at::text
                                ELSE clock_timestamp()::text END) AS idempotency_key
        FROM decided d
        JOIN gated g ON g.error_id = d.error_id AND g.config_id = d.config_id
    ), queued AS (
        INSERT INTO monitoring.notification_queue
            (idempotency_key, config_id, error_id, occurrence_id, notification_trigger, threshold, payload)
        SELECT k.idempotency_key, k.config_id, k.error_id, k.occurrence_id, k.fired, k.reached,
               jsonb_build_object(
                   'idempotency_key', k.idempotency_key, 'notification_trigger', k.fired, 'threshold', k.reached,
                   'config_id', k.config_id, 'error_id', k.error_id, 'error_fingerprint', k.error_fingerprint,
                   'error_type', k.error_type, 'error_message', k.error_message, 'title', k.title,
                   'culprit', k.culprit, 'severity', k.level, 'occurrence_count', k.count_after,
                   'affected_users', k.affected_users, 'first_seen', k.first_seen,
                   'last_seen', GREATEST(k.last_seen, k.occurred_at), 'environment', k.environment,
                   'release_version', COALESCE(k.release_version, k.group_release), 'service', k.service,
                   'server_name', k.server_name, 'occurrence_id', k.occurrence_id, 'trace_id', k.trace_id,
                   'status', k.status, 'stack_trace', monitoring._truncate(k.stack_trace, 8000),
                   'queued_at', now())
        FROM keyed k
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING 1
    )
    SELECT count(*) INTO queued FROM queued;

    IF queued > 0 THEN
        -- delivered at commit; identical payloads of one transaction are sent once
        PERFORM pg_notify('pg_observe_notification', 'queued');
    END IF;
    RETURN queued;
END
$$;
COMMENT ON FUNCTION monitoring._enqueue_error_notifications(jsonb) IS
    'Records the notifications a capture fires (state, queue with a unique idempotency key, pg_notify); returns how many were queued';

-- After an evaluation: per group, environment and level of the capture, the lowest count
-- threshold above the group's count and the earliest time a throttled or windowed rule may
-- fire again, over every enabled rule that matches. Groups no rule matches get infinity.
CREATE OR REPLACE FUNCTION monitoring._watch_error_notifications(p_rows monitoring.tb_error_occurrence[])
    RETURNS void
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- an array parameter: see errors_functions.sql
AS $$
BEGIN
    INSERT INTO monitoring.notification_watch AS w (error_id, environment, level, next_count, next_at)
    SELECT b.error_id, b.environment, b.level,
           COALESCE(min(n.next_count), 9223372036854775807),
           COALESCE(min(n.next_at), 'infinity')
    FROM (SELECT DISTINCT r.error_id, r.environment, r.level FROM unnest(p_rows) r WHERE r.error_id IS NOT NULL) b
    JOIN monitoring.tb_error_log g ON g.error_id = b.error_id
    LEFT JOIN monitoring.tb_error_notification_config c
           ON c.enabled
          AND (c.severity_levels IS NULL OR cardinality(c.severity_levels) = 0 OR b.level = ANY (c.severity_levels))
          AND (c.environment IS NULL OR cardinality(c.environment) = 0 OR b.environment = ANY (c.environment))
          AND (c.error_type IS NULL OR c.error_type = g.error_type)
          AND (c.error_fingerprint IS NULL OR c.error_fingerprint = g.error_fingerprint)
    LEFT JOIN monitoring.notification_state s ON s.error_id = b.error_id AND s.config_id = c.config_id
    LEFT JOIN LATERAL (
        SELECT
            CASE WHEN c.first_seen_only OR c.frequency_count IS NOT NULL OR c.user_count IS NOT NULL THEN NULL
                 ELSE (SELECT min(t) FROM unnest(COALESCE(c.notify_on_occurrence, '{}') || c.min_occurrence_count) t
                       WHERE t > g.occurrence_count) END AS next_count,
            CASE WHEN c.first_seen_only THEN NULL
                 WHEN c.frequency_count IS NOT NULL OR c.user_count IS NOT NULL OR c.rate_limit_minutes > 0
                 THEN COALESCE(s.throttled_until, now()) END AS next_at
        WHERE c.config_id IS NOT NULL
    ) n ON true
    GROUP BY b.error_id, b.environment, b.level
    ON CONFLICT (error_id, environment, level) DO UPDATE
    SET next_count = excluded.next_count, next_at = excluded.next_at;
END
$$;
COMMENT ON FUNCTION monitoring._watch_error_notifications(monitoring.tb_error_occurrence[]) IS
    'Remembers, per group, environment and level, the count and time below which no rule can fire (notification_watch)';

CREATE OR REPLACE FUNCTION monitoring._forget_notification_watch()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM monitoring.notification_watch;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._forget_notification_watch() IS 'Trigger: the rules changed, every watch is forgotten';

CREATE OR REPLACE FUNCTION monitoring._forget_group_notification_watch()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM monitoring.notification_watch w WHERE w.error_id = OLD.error_id;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._forget_group_notification_watch() IS
    'Trigger: a group''s notification state changed (a throttle moved, say): its watches are forgotten';

-- Seeds' channel configs keep secrets (tokens, passwords, webhook URLs) in the rule: readers
-- see the rules through this redaction only. Recursive: a secret may sit at any depth.
CREATE OR REPLACE FUNCTION monitoring._redact_channel_config(p_config jsonb)
    RETURNS jsonb
    LANGUAGE plpgsql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    redacted jsonb;
BEGIN
    CASE jsonb_typeof(p_config)
    WHEN 'object' THEN
        SELECT COALESCE(jsonb_object_agg(e.key,
                   CASE WHEN jsonb_typeof(e.value) = 'null' THEN e.value
                        WHEN e.key ~* '(pass|secret|token|auth|key|webhook_url|signature|credential|sid)'
                        THEN '"[Filtered]"'::jsonb
                        -- every header value may be a credential
                        WHEN e.key ~* '^headers$' AND jsonb_typeof(e.value) = 'object'
                        THEN (SELECT jsonb_object_agg(h.key, '[Filtered]') FROM jsonb_each(e.value) h)
                        ELSE monitoring._redact_channel_config(e.value) END), '{}'::jsonb)
        INTO redacted
        FROM jsonb_each(p_config) e;
    WHEN 'array' THEN
        SELECT COALESCE(jsonb_agg(monitoring._redact_channel_config(v) ORDER BY n), '[]'::jsonb) INTO redacted
        FROM jsonb_array_elements(p_config) WITH ORDINALITY a(v, n);
    WHEN 'string' THEN
        -- a URL keeps scheme, host and path: no credentials, no query string
        redacted := CASE WHEN p_config #>> '{}' ~* '^[a-z][a-z0-9+.-]*://'
                         THEN to_jsonb(regexp_replace(regexp_replace(p_config #>> '{}', '//[^/@]*@', '//'), '[?#].*$', ''))
                         ELSE p_config END;
    ELSE
        redacted := p_config;
    END CASE;
    RETURN redacted;
END
$$;
COMMENT ON FUNCTION monitoring._redact_channel_config(jsonb) IS
    'A channel config with secret-looking values (at any depth), header values, URL credentials and query strings replaced';

CREATE OR REPLACE VIEW monitoring.notification_rules AS
SELECT c.config_id, c.description, c.error_type, c.error_fingerprint, c.severity, c.environment, c.channel_type,
       monitoring._redact_channel_config(c.channel_config) AS channel_config,
       c.min_occurrence_count, c.notify_on_occurrence, c.first_seen_only, c.notify_on_regression,
       c.frequency_count, c.frequency_window_minutes, c.user_count, c.user_window_minutes,
       c.rate_limit_minutes, c.enabled, c.created_at
FROM monitoring.tb_error_notification_config c;
COMMENT ON VIEW monitoring.notification_rules IS
    'Notification rules with secrets redacted from channel_config: what readers and dashboards see';

-- sql/include/notify_delivery.sql
-- Delivery of queued notifications (included by sql/200_notifications.sql and by the upgrade
-- scripts, hence CREATE OR REPLACE).
--
-- dispatch_notifications() is a procedure so that it can commit between its steps:
--   1. claim due messages (FOR UPDATE SKIP LOCKED): status sending, attempts + 1, and a claim
--      that expires at next_attempt_at; COMMIT, so the claim survives whatever happens next;
--   2. send them (PL/Python senders in parallel, custom functions one by one), then record
--      every attempt in tb_error_notification_log and set each message sent, pending again
--      (exponential backoff with jitter) or dead; COMMIT.
-- A dispatcher killed during step 2 leaves its messages claimed until the claim expires;
-- the next dispatcher sends them again with the same idempotency key (at least once). Two
-- dispatchers never hold the same message: a claim is taken only once it has expired.

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
COMMENT ON FUNCTION monitoring._send_notifications(jsonb, integer) IS
    'PL/Python senders (email, slack, webhook, pagerduty): sends a JSON array of messages, in parallel per destination; returns one result each';

CREATE OR REPLACE FUNCTION monitoring._notification_settings()
    RETURNS monitoring.notification_settings
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings monitoring.notification_settings;
BEGIN
    SELECT * INTO settings FROM monitoring.notification_settings;
    IF NOT FOUND THEN
        INSERT INTO monitoring.notification_settings DEFAULT VALUES ON CONFLICT DO NOTHING;
        SELECT * INTO STRICT settings FROM monitoring.notification_settings;
    END IF;
    RETURN settings;
END
$$;
COMMENT ON FUNCTION monitoring._notification_settings() IS 'The delivery settings row, made with the defaults at first use';

CREATE OR REPLACE FUNCTION monitoring._claim_notifications(p_limit integer, p_dispatcher text, p_claim_token uuid)
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings monitoring.notification_settings := monitoring._notification_settings();
    claimed integer;
BEGIN
    -- A claim that expired on its last attempt: its dispatcher died or overran claim_timeout.
    WITH expired AS (
        UPDATE monitoring.notification_queue q
        SET status = 'dead', claim_token = NULL,
            last_error = 'claim expired on attempt ' || q.attempts || ' of ' || settings.max_attempts
                         || ' (dispatcher ' || COALESCE(q.claimed_by, '?') || ' stopped or overran claim_timeout)'
        WHERE q.status = 'sending' AND q.next_attempt_at <= now() AND q.attempts >= settings.max_attempts
        RETURNING q.*
    )
    INSERT INTO monitoring.tb_error_notification_log
        (config_id, error_id, channel_type, status, error_message, queue_id, idempotency_key, attempt,
         notification_trigger, dispatcher)
    SELECT e.config_id, e.error_id, COALESCE(c.channel_type, '?'), 'failed', e.last_error, e.queue_id,
           e.idempotency_key, e.attempts, e.notification_trigger, e.claimed_by
    FROM expired e
    LEFT JOIN monitoring.tb_error_notification_config c ON c.config_id = e.config_id;

    WITH due AS (
        SELECT q.queue_id FROM monitoring.notification_queue q
        WHERE q.status IN ('pending', 'sending') AND q.next_attempt_at <= now()
        ORDER BY q.next_attempt_at
        LIMIT LEAST(p_limit, settings.batch_size)
        FOR UPDATE SKIP LOCKED
    )
    UPDATE monitoring.notification_queue q
    SET status = 'sending', attempts = q.attempts + 1, claimed_by = p_dispatcher, claim_token = p_claim_token,
        next_attempt_at = now() + settings.claim_timeout
    FROM due
    WHERE q.queue_id = due.queue_id;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    RETURN claimed;
END
$$;
COMMENT ON FUNCTION monitoring._claim_notifications(integer, text, uuid) IS
    'Step 1 of dispatch_notifications(): claims due messages (SKIP LOCKED) under a token; dead-letters claims expired on their last attempt';

-- Calls a custom channel's function: (notification jsonb, config jsonb) returning boolean,
-- or a row whose first columns are success boolean and an error text.
CREATE OR REPLACE FUNCTION monitoring._send_with_function(p_function regprocedure, p_notification jsonb, p_config jsonb)
    RETURNS jsonb
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    answer jsonb;
    started timestamptz := clock_timestamp();
    ok boolean;
    error_text text;
BEGIN
    BEGIN
        EXECUTE format('SELECT to_jsonb(r) FROM %s($1, $2) r', p_function::oid::regproc) INTO answer
            USING p_notification, p_config;
        IF jsonb_typeof(answer) = 'boolean' THEN
            ok := answer::text::boolean;
        ELSIF jsonb_typeof(answer) = 'object' THEN
            ok := (SELECT e.value::text::boolean FROM jsonb_each(answer) WITH ORDINALITY e(key, value, n)
                   WHERE jsonb_typeof(e.value) = 'boolean' ORDER BY e.n LIMIT 1);
            error_text := COALESCE(answer ->> 'error', answer ->> 'error_message', answer ->> 'message');
        END IF;
        IF ok IS NULL THEN
            ok := false;
            error_text := format('%s returned %s, not success and an error text', p_function, COALESCE(answer::text, 'NULL'));
        END IF;
    EXCEPTION WHEN OTHERS THEN
        ok := false;
        error_text := format('%s raised: %s', p_function, SQLERRM);
    END;
    RETURN jsonb_build_object(
        'ok', ok, 'error', CASE WHEN NOT ok THEN COALESCE(left(error_text, 500), 'failed without an error text') END,
        'recipient', COALESCE(p_config ->> 'to', p_config ->> 'recipient', p_function::oid::regproc::text),
        'attempted', true,
        'duration_ms', extract(epoch FROM clock_timestamp() - started) * 1000);
END
$$;
COMMENT ON FUNCTION monitoring._send_with_function(regprocedure, jsonb, jsonb) IS
    'Sends one notification through a custom channel function; its errors become a failed attempt';

CREATE OR REPLACE FUNCTION monitoring._deliver_notifications(p_claim_token uuid, p_dispatcher text)
    RETURNS jsonb
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings monitoring.notification_settings := monitoring._notification_settings();
    builtin jsonb;
    results jsonb := '[]'::jsonb;
    message record;
    outcome jsonb;
BEGIN
    -- The rule's channel_config is laid over the channel's settings.
    SELECT jsonb_agg(jsonb_build_object(
               'id', q.queue_id, 'channel_type', COALESCE(ch.sender, c.channel_type),
               'config', COALESCE(ch.settings, '{}') || c.channel_config,
               'notification', q.payload || jsonb_build_object('attempt', q.attempts),
               'timeout', extract(epoch FROM settings.send_timeout)) ORDER BY q.queue_id)
    INTO builtin
    FROM monitoring.notification_queue q
    JOIN monitoring.tb_error_notification_config c ON c.config_id = q.config_id
    LEFT JOIN monitoring.notification_channel ch ON ch.channel_type = c.channel_type
    WHERE q.claim_token = p_claim_token AND q.status = 'sending'
      AND COALESCE(ch.sender, c.channel_type) IN ('email', 'slack', 'webhook', 'pagerduty');
    IF builtin IS NOT NULL THEN
        results := monitoring._send_notifications(builtin, settings.max_parallel);
    END IF;

    FOR message IN
        SELECT q.queue_id, q.payload || jsonb_build_object('attempt', q.attempts) AS notification,
               c.channel_type, ch.function_name, COALESCE(ch.settings, '{}') || c.channel_config AS config
        FROM monitoring.notification_queue q
        JOIN monitoring.tb_error_notification_config c ON c.config_id = q.config_id
        LEFT JOIN monitoring.notification_channel ch ON ch.channel_type = c.channel_type
        WHERE q.claim_token = p_claim_token AND q.status = 'sending'
          AND COALESCE(ch.sender, c.channel_type) NOT IN ('email', 'slack', 'webhook', 'pagerduty')
        ORDER BY q.queue_id
    LOOP
        IF message.function_name IS NULL THEN
            outcome := jsonb_build_object('ok', false, 'attempted', true, 'error', format(
                'no channel %L: register it in monitoring.notification_channel', message.channel_type));
        ELSE
            outcome := monitoring._send_with_function(message.function_name, message.notification, message.config);
        END IF;
        results := results || jsonb_build_array(outcome || jsonb_build_object('id', message.queue_id));
    END LOOP;

    RETURN monitoring._record_notification_results(p_claim_token, p_dispatcher, results, settings);
END
$$;
COMMENT ON FUNCTION monitoring._deliver_notifications(uuid, text) IS
    'Step 2 of dispatch_notifications(): sends the messages claimed under a token and records the results';

CREATE OR REPLACE FUNCTION monitoring._record_notification_results(
    p_claim_token uuid, p_dispatcher text, p_results jsonb, p_settings monitoring.notification_settings)
    RETURNS jsonb
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    summary jsonb;
BEGIN
    WITH result AS (
        SELECT * FROM jsonb_to_recordset(p_results)
            AS r(id bigint, ok boolean, attempted boolean, error text, recipient text, status_code integer,
                 duration_ms double precision)
    ), updated AS (
        UPDATE monitoring.notification_queue q
        SET status = CASE WHEN r.ok THEN 'sent'
                          WHEN r.attempted AND q.attempts >= p_settings.max_attempts THEN 'dead'
                          ELSE 'pending' END,
            -- a message not attempted (its destination failed first) keeps its attempt
            attempts = CASE WHEN r.attempted OR r.ok THEN q.attempts ELSE q.attempts - 1 END,
            sent_at = CASE WHEN r.ok THEN clock_timestamp() END,
            last_error = CASE WHEN r.ok THEN NULL ELSE COALESCE(r.error, 'failed') END,
            next_attempt_at = CASE
                WHEN r.ok THEN q.next_attempt_at
                WHEN NOT r.attempted THEN clock_timestamp() + p_settings.retry_base
                -- exponential backoff with jitter: base * 2^(attempt - 1), capped, times 0.75 to 1.25
                ELSE clock_timestamp() + LEAST(p_settings.retry_max,
                                               p_settings.retry_base * power(2, LEAST(q.attempts - 1, 30)))
                                         * (0.75 + random() * 0.5) END,
            claim_token = NULL
        FROM result r
        WHERE q.queue_id = r.id AND q.claim_token = p_claim_token
        RETURNING q.queue_id, q.config_id, q.error_id, q.idempotency_key, q.attempts, q.notification_trigger,
                  q.status, r.ok, r.attempted, r.error, r.recipient, r.status_code, r.duration_ms
    ), logged AS (
        INSERT INTO monitoring.tb_error_notification_log
            (config_id, error_id, sent_at, channel_type, recipient, status, error_message, queue_id, idempotency_key,
             attempt, notification_trigger, status_code, duration_ms, dispatcher)
        SELECT u.config_id, u.error_id, clock_timestamp(), COALESCE(c.channel_type, '?'), u.recipient,
               CASE WHEN u.ok THEN 'sent' ELSE 'failed' END, CASE WHEN NOT u.ok THEN u.error END, u.queue_id,
               u.idempotency_key, u.attempts, u.notification_trigger, u.status_code, u.duration_ms, p_dispatcher
        FROM updated u
        LEFT JOIN monitoring.tb_error_notification_config c ON c.config_id = u.config_id
        WHERE u.ok OR u.attempted
        RETURNING 1
    )
    SELECT jsonb_build_object(
               'sent', count(*) FILTER (WHERE u.ok),
               'failed', count(*) FILTER (WHERE NOT u.ok AND u.attempted),
               'deferred', count(*) FILTER (WHERE NOT u.ok AND NOT u.attempted),
               'dead', count(*) FILTER (WHERE u.status = 'dead'),
               'logged', (SELECT count(*) FROM logged))
    INTO summary
    FROM updated u;
    RETURN summary;
END
$$;
COMMENT ON FUNCTION monitoring._record_notification_results(uuid, text, jsonb, monitoring.notification_settings) IS
    'Marks claimed messages sent, pending again (backoff with jitter) or dead, and logs every attempt';

-- A procedure, to commit between claiming and sending (see the top of this file). It runs
-- as its caller with the caller's search_path: every name and operator is qualified.
CREATE OR REPLACE PROCEDURE monitoring.dispatch_notifications(
    p_max_messages integer DEFAULT 1000,
    p_dispatcher text DEFAULT NULL,
    INOUT sent integer DEFAULT NULL,
    INOUT failed integer DEFAULT NULL,
    INOUT dead integer DEFAULT NULL)
    LANGUAGE plpgsql
AS $$
DECLARE
    dispatcher text := COALESCE(p_dispatcher, pg_catalog.format('%s/%s', CURRENT_USER, pg_catalog.pg_backend_pid()));
    token uuid;
    claimed integer;
    processed integer := 0;
    outcome jsonb;
BEGIN
    sent := 0;
    failed := 0;
    dead := 0;
    LOOP
        token := pg_catalog.gen_random_uuid();
        claimed := monitoring._claim_notifications(p_max_messages OPERATOR(pg_catalog.-) processed, dispatcher, token);
        COMMIT;
        EXIT WHEN claimed OPERATOR(pg_catalog.=) 0;
        outcome := monitoring._deliver_notifications(token, dispatcher);
        COMMIT;
        sent := sent OPERATOR(pg_catalog.+) (outcome OPERATOR(pg_catalog.->>) 'sent')::integer;
        failed := failed OPERATOR(pg_catalog.+) (outcome OPERATOR(pg_catalog.->>) 'failed')::integer;
        dead := dead OPERATOR(pg_catalog.+) (outcome OPERATOR(pg_catalog.->>) 'dead')::integer;
        processed := processed OPERATOR(pg_catalog.+) claimed;
        EXIT WHEN processed OPERATOR(pg_catalog.>=) p_max_messages;
    END LOOP;
    -- The heartbeat health() reads, left even when nothing was due. Keyed by the name given,
    -- else by the role alone: the pg_cron backstop gets a new backend (pid) every minute.
    INSERT INTO monitoring.dispatcher_heartbeat AS h
        (dispatcher, last_seen_at, last_sent, last_failed, last_dead, calls)
    VALUES (pg_catalog.left(COALESCE(p_dispatcher, CURRENT_USER::text), 200), pg_catalog.clock_timestamp(),
            sent, failed, dead, 1)
    ON CONFLICT ON CONSTRAINT dispatcher_heartbeat_pkey DO UPDATE
        SET last_seen_at = EXCLUDED.last_seen_at, last_sent = EXCLUDED.last_sent,
            last_failed = EXCLUDED.last_failed, last_dead = EXCLUDED.last_dead,
            calls = h.calls OPERATOR(pg_catalog.+) 1;
END
$$;
COMMENT ON PROCEDURE monitoring.dispatch_notifications(integer, text, integer, integer, integer) IS
    'Sends due notifications (claim, commit, send, record, commit; repeated up to p_max_messages), then leaves a heartbeat in dispatcher_heartbeat; CALL it outside a transaction block. Run by pg-observe worker and the pg_cron job';

CREATE OR REPLACE FUNCTION monitoring.retry_notifications(p_queue_ids bigint[] DEFAULT NULL)
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    requeued integer;
BEGIN
    UPDATE monitoring.notification_queue q
    SET status = 'pending', attempts = 0, next_attempt_at = now(), claim_token = NULL
    WHERE q.status = 'dead' AND (p_queue_ids IS NULL OR q.queue_id = ANY (p_queue_ids));
    GET DIAGNOSTICS requeued = ROW_COUNT;
    IF requeued > 0 THEN
        PERFORM pg_notify('pg_observe_notification', 'queued');
    END IF;
    RETURN requeued;
END
$$;
COMMENT ON FUNCTION monitoring.retry_notifications(bigint[]) IS
    'Puts dead notifications (all, or these queue ids) back in the queue with fresh attempts; returns how many';

CREATE OR REPLACE FUNCTION monitoring.test_notification(p_config_id uuid)
    RETURNS bigint
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rule monitoring.tb_error_notification_config;
    group_row monitoring.tb_error_log;
    key uuid := gen_random_uuid();
    queued bigint;
BEGIN
    SELECT * INTO rule FROM monitoring.tb_error_notification_config c WHERE c.config_id = p_config_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no notification rule %', p_config_id USING ERRCODE = 'no_data_found';
    END IF;
    -- a real group (the log references one): the most recent, or a test group made once
    SELECT * INTO group_row FROM monitoring.tb_error_log g ORDER BY g.last_seen DESC LIMIT 1;
    IF NOT FOUND THEN
        INSERT INTO monitoring.tb_error_log (error_fingerprint, error_type, error_message, title)
        VALUES ('pg_observe_test_notification', 'TestNotification', 'A test notification from pg_observe',
                'TestNotification: A test notification from pg_observe')
        RETURNING * INTO group_row;
    END IF;
    INSERT INTO monitoring.notification_queue
        (idempotency_key, config_id, error_id, notification_trigger, payload)
    VALUES (key, rule.config_id, group_row.error_id, 'test', jsonb_build_object(
        'idempotency_key', key, 'notification_trigger', 'test', 'config_id', rule.config_id,
        'error_id', group_row.error_id, 'error_fingerprint', group_row.error_fingerprint,
        'error_type', group_row.error_type, 'error_message', 'Test notification: ' || group_row.error_message,
        'title', group_row.title, 'severity', group_row.severity, 'occurrence_count', group_row.occurrence_count,
        'first_seen', group_row.first_seen, 'last_seen', group_row.last_seen,
        'environment', group_row.environment, 'release_version', group_row.release_version,
        'stack_trace', monitoring._truncate(group_row.stack_trace, 8000), 'queued_at', now()))
    RETURNING queue_id INTO queued;
    PERFORM pg_notify('pg_observe_notification', 'queued');
    RETURN queued;
END
$$;
COMMENT ON FUNCTION monitoring.test_notification(uuid) IS
    'Queues a test notification for a rule (about the most recent group), to check a channel end to end; returns its queue id';

CREATE OR REPLACE FUNCTION monitoring._expire_notification_queue()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings monitoring.notification_settings := monitoring._notification_settings();
    removed bigint;
BEGIN
    DELETE FROM monitoring.notification_queue q
    WHERE (q.status = 'sent' AND q.sent_at < now() - settings.keep_sent)
       OR (q.status = 'dead' AND q.queued_at < now() - settings.keep_dead);
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN format('%s notifications removed from the queue', removed);
END
$$;
COMMENT ON FUNCTION monitoring._expire_notification_queue() IS
    'Maintenance task: removes sent notifications after keep_sent and dead ones after keep_dead (the log keeps every attempt)';

CREATE OR REPLACE VIEW monitoring.notification_queue_status AS
SELECT q.status, count(*) AS messages, min(q.queued_at) AS oldest_queued_at,
       min(q.next_attempt_at) FILTER (WHERE q.status = 'pending') AS next_attempt_at,
       max(q.attempts) AS max_attempts_so_far
FROM monitoring.notification_queue q
GROUP BY q.status;
COMMENT ON VIEW monitoring.notification_queue_status IS 'Notification queue by status: how many, oldest, next due';


INSERT INTO monitoring.maintenance_task (task_name, function_name, run_order) VALUES
    ('expire_notification_queue', 'monitoring._expire_notification_queue', 40);

CREATE TRIGGER notification_rules_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON monitoring.tb_error_notification_config
    FOR EACH STATEMENT EXECUTE FUNCTION monitoring._forget_notification_watch();
CREATE TRIGGER notification_state_changed
    AFTER UPDATE OR DELETE ON monitoring.notification_state
    FOR EACH ROW EXECUTE FUNCTION monitoring._forget_group_notification_watch();

-- sql/include/notify_capture_state.sql
-- Included by sql/200_notifications.sql and by the 0.10.0 -> 0.11.0 upgrade, which made it.
-- Whether notification rules are enabled is part of error_capture_state
-- (sql/include/errors_capture_tables.sql): a capture without rules counts a statement's rows
-- at its end, with rules every row as it comes.
CREATE TRIGGER notification_rules_capture_state
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON monitoring.tb_error_notification_config
    FOR EACH STATEMENT EXECUTE FUNCTION monitoring._error_capture_settings_changed();
ALTER TABLE monitoring.tb_error_notification_config ENABLE ALWAYS TRIGGER notification_rules_capture_state;
SELECT monitoring._refresh_error_capture_state();


-- sql/300_telemetry.sql
-- What traces, metrics and business events share: OpenTelemetry id and time parsing, and the
-- table where an ingestion function keeps what it could not store (nothing is lost: a bad
-- span or point is kept with the reason, the rest of its batch is stored).
--
-- The helpers are SQL the planner inlines into the ingestion queries, which a SET clause
-- would prevent; every name in them is schema-qualified.

CREATE TABLE monitoring.rejected_telemetry (
    rejected_id  bigint      GENERATED BY DEFAULT AS IDENTITY,
    kind         text        NOT NULL,
    reason       text        NOT NULL,
    payload      jsonb,
    received_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT rejected_telemetry_pkey PRIMARY KEY (rejected_id, received_at),
    CONSTRAINT rejected_telemetry_kind_check CHECK (kind IN ('span', 'metric'))
) PARTITION BY RANGE (received_at);
-- the rows are dumped (partitions are not members); the identity's value must be too
SELECT pg_catalog.pg_extension_config_dump('monitoring.rejected_telemetry_rejected_id_seq', '');
COMMENT ON TABLE monitoring.rejected_telemetry IS
    'Spans and metric points an ingestion function could not store, as sent, with the reason; partitioned monthly, kept 2 months';
COMMENT ON COLUMN monitoring.rejected_telemetry.kind IS 'span or metric';
COMMENT ON COLUMN monitoring.rejected_telemetry.reason IS 'Why it was not stored';
COMMENT ON COLUMN monitoring.rejected_telemetry.payload IS 'The span or point exactly as it was sent';

-- A W3C/OpenTelemetry trace id: 32 lower-case hex digits, not all zero. Repaired: upper case,
-- a UUID with dashes, and a 64-bit (16-digit) id, which OpenTelemetry left-pads with zeros.
-- Lengths are tested first and the patterns are unbounded: a bounded quantifier such as
-- {32} costs PostgreSQL's regex engine about four times as much, on every span.
CREATE FUNCTION monitoring._otel_trace_id(p_id text)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
AS $$
    SELECT CASE pg_catalog.length(p_id)
        WHEN 32 THEN
            CASE WHEN p_id OPERATOR(pg_catalog.~) '^[0-9a-f]+$'
                     THEN NULLIF(p_id, '00000000000000000000000000000000')
                 WHEN p_id OPERATOR(pg_catalog.~) '^[0-9A-Fa-f]+$'
                     THEN NULLIF(pg_catalog.lower(p_id), '00000000000000000000000000000000')
            END
        WHEN 36 THEN
            CASE WHEN p_id OPERATOR(pg_catalog.~) '^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$'
                     THEN NULLIF(pg_catalog.lower(pg_catalog.replace(p_id, '-', '')), '00000000000000000000000000000000')
            END
        WHEN 16 THEN
            CASE WHEN p_id OPERATOR(pg_catalog.~) '^[0-9A-Fa-f]+$'
                     THEN NULLIF('0000000000000000' OPERATOR(pg_catalog.||) pg_catalog.lower(p_id),
                                 '00000000000000000000000000000000')
            END
    END
$$;
COMMENT ON FUNCTION monitoring._otel_trace_id(text) IS
    'A trace id as 32 lower-case hex digits (upper case, UUID form and 64-bit ids repaired), NULL if invalid';

CREATE FUNCTION monitoring._otel_span_id(p_id text)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
AS $$
    SELECT CASE WHEN pg_catalog.length(p_id) OPERATOR(pg_catalog.=) 16 THEN
        CASE WHEN p_id OPERATOR(pg_catalog.~) '^[0-9a-f]+$' THEN NULLIF(p_id, '0000000000000000')
             WHEN p_id OPERATOR(pg_catalog.~) '^[0-9A-Fa-f]+$' THEN NULLIF(pg_catalog.lower(p_id), '0000000000000000')
        END
    END
$$;
COMMENT ON FUNCTION monitoring._otel_span_id(text) IS 'A span id as 16 lower-case hex digits, NULL if invalid';

-- _otel_time(): in sql/include/telemetry_time.sql, included below

-- Where the oldest partition of a time-series table starts (its default partition aside):
-- older rows have no partition, and the default-partition guard would move them anyway.
CREATE FUNCTION monitoring._oldest_partition_start(p_parent regclass)
    RETURNS timestamptz
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.min((pg_catalog.regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid),
                                                   '^FOR VALUES FROM \(''([^'']+)''\)'))[1]::timestamptz)
    FROM pg_catalog.pg_inherits i
    JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = p_parent
$$;
COMMENT ON FUNCTION monitoring._oldest_partition_start(regclass) IS
    'Lower bound of the oldest partition of a range-partitioned table, NULL if it has none but the default';

-- sql/include/partition_bounds_cache.sql
-- Included by sql/300_telemetry.sql and by the 0.6.0 -> 0.7.0 upgrade, which made it.

-- The oldest partition's start of each time-series table, as _oldest_plausible_time() last
-- read it, with the partition set it read it from (count, sum and highest oid of the
-- partitions: making, dropping or attaching one changes them). Reading the bounds costs about
-- 2 ms a batch with 10 partitions; this is one lookup. UNLOGGED: a cache. Only the owner
-- writes it (the ingestion functions run as the owner): no caller can forge a bound.
CREATE UNLOGGED TABLE monitoring.partition_bounds_cache (
    parent_table text PRIMARY KEY,
    partitions   text NOT NULL,
    oldest_start timestamptz
);
COMMENT ON TABLE monitoring.partition_bounds_cache IS
    'Cache of the oldest partition start per time-series table, keyed by the partition set; written by _oldest_plausible_time()';


-- _oldest_plausible_time(): in sql/include/telemetry_time.sql (after the cache it reads)
-- sql/include/telemetry_time.sql
-- Included by sql/300_telemetry.sql and by the upgrade scripts, hence CREATE OR REPLACE.
--
-- Unix nanoseconds (OTLP's fixed64: up to the year 2554, past the 2262 of a signed 64-bit
-- count) or ISO 8601 text; NULL when it is neither. A count that fits in bigint (every time
-- from 1970 to 2255: up to 19 digits, the 19th-digit ones below 9e18) takes the integer
-- path; a larger one goes through numeric, so that no microsecond is lost to floating point.
-- Both round half a microsecond up (0.6.0 rounded through floating point, which could go
-- either way at exactly half). The integer path is what every span of this century takes:
-- before 0.7.0 it ended at 18 digits (2001), and numeric costs six times as much.
CREATE OR REPLACE FUNCTION monitoring._otel_time(p_unix_nano text, p_iso text)
    RETURNS timestamptz
    LANGUAGE sql
    STABLE
    PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN p_unix_nano OPERATOR(pg_catalog.~) '^[0-9]+$' THEN
            CASE WHEN pg_catalog.length(p_unix_nano) OPERATOR(pg_catalog.<) 19
                      OR (pg_catalog.length(p_unix_nano) OPERATOR(pg_catalog.=) 19
                          AND pg_catalog.left(p_unix_nano, 1) OPERATOR(pg_catalog.<>) '9')
                 THEN 'epoch'::timestamptz OPERATOR(pg_catalog.+)
                      (((p_unix_nano::bigint OPERATOR(pg_catalog.+) 500) OPERATOR(pg_catalog./) 1000) OPERATOR(pg_catalog.*) interval '1 microsecond')
                 WHEN pg_catalog.length(p_unix_nano) OPERATOR(pg_catalog.<=) 20
                 THEN pg_catalog.to_timestamp(pg_catalog.div(p_unix_nano::numeric, 1000000000)::double precision)
                      OPERATOR(pg_catalog.+) pg_catalog.make_interval(
                          secs => (pg_catalog.round(pg_catalog.mod(p_unix_nano::numeric, 1000000000) OPERATOR(pg_catalog./) 1000)
                                   OPERATOR(pg_catalog./) 1000000)::double precision)
            END
        WHEN p_unix_nano IS NULL AND p_iso OPERATOR(pg_catalog.~)
             '^\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d{1,9})?)?)?\s*([Zz]|[+-]\d\d(:?\d\d)?)?$'
            THEN p_iso::timestamptz
    END
$$;
COMMENT ON FUNCTION monitoring._otel_time(text, text) IS
    'A time from Unix nanoseconds or ISO 8601 text (without an offset: UTC in the ingestion functions), NULL if neither';


-- The earliest time an ingestion function stores as sent: a row before the oldest partition
-- and the retention has a wrong clock (and is stored at the time received instead). The
-- oldest partition's start comes from partition_bounds_cache while the partition set is the
-- one it was read from. Called by the ingestion functions, which run as the owner.
CREATE OR REPLACE FUNCTION monitoring._oldest_plausible_time(p_parent regclass)
    RETURNS timestamptz
    LANGUAGE plpgsql
    VOLATILE   -- refreshes partition_bounds_cache
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kept_for interval;
    partitions text;
    cache_hit boolean;
    oldest_start timestamptz;
BEGIN
    -- One statement: the retention, the partition set as it is now, and the cached bound.
    SELECT c.retention, p.partitions, b.partitions OPERATOR(pg_catalog.=) p.partitions, b.oldest_start
    INTO kept_for, partitions, cache_hit, oldest_start
    FROM monitoring.time_series_config c
    CROSS JOIN LATERAL (
        SELECT pg_catalog.concat_ws(':', pg_catalog.count(*), pg_catalog.sum(i.inhrelid::bigint),
                                    pg_catalog.max(i.inhrelid::bigint)) AS partitions
        FROM pg_catalog.pg_inherits i WHERE i.inhparent OPERATOR(pg_catalog.=) p_parent) p
    LEFT JOIN monitoring.partition_bounds_cache b ON b.parent_table OPERATOR(pg_catalog.=) c.parent_table
    WHERE c.parent_table OPERATOR(pg_catalog.=) p_parent::text;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF cache_hit IS NOT TRUE THEN
        oldest_start := monitoring._oldest_partition_start(p_parent);
        INSERT INTO monitoring.partition_bounds_cache AS b (parent_table, partitions, oldest_start)
        VALUES (p_parent::text, partitions, oldest_start)
        ON CONFLICT (parent_table) DO UPDATE SET partitions = excluded.partitions, oldest_start = excluded.oldest_start;
    END IF;
    RETURN COALESCE(GREATEST(pg_catalog.now() OPERATOR(pg_catalog.-) kept_for, oldest_start), '-infinity');
END
$$;
COMMENT ON FUNCTION monitoring._oldest_plausible_time(regclass) IS
    'The start of the oldest partition or now() - retention, whichever is later: older rows have a wrong clock';


-- sql/include/telemetry_store.sql
-- Included by sql/300_telemetry.sql and by the upgrade scripts, hence CREATE OR REPLACE.

-- A batch whose statement fails even so (a value the checks let through, such as the date
-- 2024-02-30) is stored half by half, down to the one row that fails, which is kept in
-- rejected_telemetry with PostgreSQL's message: one bad row in n costs about 2 log2(n)
-- statements, not n. p_kind picks the store: span (_store_spans) or metric (_store_metrics).
-- Spans are inserted without ON CONFLICT (a speculative insertion per row costs an eighth of
-- the time); a batch that holds a stored span (an exporter's retry) or one span twice fails
-- with unique_violation and is stored again skipping them (p_skip_duplicates): one
-- subtransaction a batch, two for such a batch.
CREATE OR REPLACE FUNCTION monitoring._store_bisecting(p_batch jsonb, p_kind text, p_skip_duplicates boolean DEFAULT false,
                                                       OUT accepted integer, OUT duplicates integer,
                                                       OUT rejected integer)
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := pg_catalog.jsonb_array_length(p_batch);
    part record;
BEGIN
    BEGIN
        IF p_kind = 'span' THEN
            SELECT s.accepted, s.duplicates, s.rejected INTO STRICT accepted, duplicates, rejected
            FROM monitoring._store_spans(p_batch, p_skip_duplicates) s;
        ELSE
            SELECT m.accepted, 0, m.rejected INTO STRICT accepted, duplicates, rejected
            FROM monitoring._store_metrics(p_batch) m;
        END IF;
        RETURN;
    EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded THEN
        IF SQLSTATE = '23505' AND p_kind = 'span' AND NOT p_skip_duplicates THEN
            SELECT b.accepted, b.duplicates, b.rejected INTO STRICT accepted, duplicates, rejected
            FROM monitoring._store_bisecting(p_batch, p_kind, true) b;
            RETURN;
        END IF;
        IF n = 1 THEN
            INSERT INTO monitoring.rejected_telemetry (kind, reason, payload) VALUES (p_kind, SQLERRM, p_batch -> 0);
            accepted := 0; duplicates := 0; rejected := 1;
            RETURN;
        END IF;
    END;
    accepted := 0; duplicates := 0; rejected := 0;
    FOR part IN
        SELECT b.* FROM (VALUES (0, n / 2), (n / 2, n)) AS h(first, last)
        CROSS JOIN LATERAL monitoring._store_bisecting(
            (SELECT pg_catalog.jsonb_agg(e.value ORDER BY e.ordinality)
             FROM pg_catalog.jsonb_array_elements(p_batch) WITH ORDINALITY e
             WHERE e.ordinality > h.first AND e.ordinality <= h.last), p_kind, p_skip_duplicates) b
    LOOP
        accepted := accepted + part.accepted;
        duplicates := duplicates + part.duplicates;
        rejected := rejected + part.rejected;
    END LOOP;
END
$$;
COMMENT ON FUNCTION monitoring._store_bisecting(jsonb, text, boolean) IS
    'Stores a batch of spans or metric points; when its statement fails, each half on its own, down to the failing row';


SELECT monitoring._create_time_series(
    p_parent_table => 'monitoring.rejected_telemetry',
    p_control_column => 'received_at',
    p_partition_interval => interval '1 month',
    p_retention => interval '2 months',
    p_premake => 2);

-- sql/310_traces.sql
-- Traces: one row per OpenTelemetry span, partitioned daily by start_time (30 days).
-- monitoring.traces is seed 000's name and columns over it: the seed's table made trace_id
-- its primary key, which allows one span per trace.

CREATE TABLE monitoring.spans (
    trace_id           text             NOT NULL,
    span_id            text             NOT NULL,
    parent_span_id     text,
    trace_state        text,
    service            text             NOT NULL DEFAULT 'unknown_service',
    operation_name     text             NOT NULL,
    kind               text             NOT NULL DEFAULT 'internal',
    start_time         timestamptz      NOT NULL,
    end_time           timestamptz      NOT NULL,
    duration_ms        double precision NOT NULL,
    status_code        smallint         NOT NULL DEFAULT 0,
    status_message     text,
    attributes         jsonb            NOT NULL DEFAULT '{}',
    events             jsonb            NOT NULL DEFAULT '[]',
    links              jsonb            NOT NULL DEFAULT '[]',
    resource           jsonb            NOT NULL DEFAULT '{}',
    scope              jsonb,
    environment        text             NOT NULL DEFAULT 'production',
    repairs            text[],
    client_start_time  timestamptz,
    received_at        timestamptz      NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT spans_pkey PRIMARY KEY (trace_id, span_id, start_time),
    -- lengths and unbounded patterns: a bounded {32} costs the regex engine four times as much
    CONSTRAINT spans_trace_id_check CHECK (length(trace_id) = 32 AND trace_id ~ '^[0-9a-f]+$'),
    CONSTRAINT spans_span_id_check CHECK (length(span_id) = 16 AND span_id ~ '^[0-9a-f]+$'),
    CONSTRAINT spans_parent_span_id_check CHECK (length(parent_span_id) = 16 AND parent_span_id ~ '^[0-9a-f]+$'),
    CONSTRAINT spans_kind_check CHECK (kind IN ('unspecified', 'internal', 'server', 'client', 'producer', 'consumer')),
    CONSTRAINT spans_status_code_check CHECK (status_code IN (0, 1, 2)),
    CONSTRAINT spans_duration_check CHECK (duration_ms >= 0)
) PARTITION BY RANGE (start_time);
COMMENT ON TABLE monitoring.spans IS
    'OpenTelemetry spans, one row each, partitioned daily by start_time (pg_partman, 30 days); a span sent twice is stored once';
COMMENT ON COLUMN monitoring.spans.trace_id IS '32 lower-case hex digits; joins errors (tb_error_occurrence.trace_id) and changes';
COMMENT ON COLUMN monitoring.spans.span_id IS '16 lower-case hex digits';
COMMENT ON COLUMN monitoring.spans.parent_span_id IS 'The parent span; NULL for a root span';
COMMENT ON COLUMN monitoring.spans.service IS 'The resource''s service.name';
COMMENT ON COLUMN monitoring.spans.operation_name IS 'The span''s name (at most 1,024 characters: longer ones are cut)';
COMMENT ON COLUMN monitoring.spans.kind IS 'unspecified, internal, server, client, producer or consumer';
COMMENT ON COLUMN monitoring.spans.duration_ms IS 'end_time - start_time in milliseconds';
COMMENT ON COLUMN monitoring.spans.status_code IS 'OpenTelemetry status: 0 unset, 1 ok, 2 error';
COMMENT ON COLUMN monitoring.spans.attributes IS 'Span attributes as a JSON object';
COMMENT ON COLUMN monitoring.spans.events IS 'Span events: [{name, time_unix_nano, attributes}]';
COMMENT ON COLUMN monitoring.spans.links IS 'Links to other spans: [{trace_id, span_id, trace_state, attributes}]';
COMMENT ON COLUMN monitoring.spans.resource IS 'Resource attributes (service.name, deployment.environment, host.name, ...)';
COMMENT ON COLUMN monitoring.spans.scope IS 'Instrumentation scope: {name, version}';
COMMENT ON COLUMN monitoring.spans.environment IS 'The resource''s deployment.environment[.name], else production';
COMMENT ON COLUMN monitoring.spans.repairs IS 'What ingestion repaired in this span (see docs/tracing.md), NULL if nothing';
COMMENT ON COLUMN monitoring.spans.client_start_time IS
    'The start time as sent, when it was implausible and start_time was moved to the time received';

CREATE INDEX spans_start_time_idx ON monitoring.spans (start_time);
CREATE INDEX spans_operation_name_idx ON monitoring.spans (operation_name, start_time);

CREATE VIEW monitoring.traces AS
SELECT trace_id, span_id, parent_span_id, operation_name, start_time, end_time, duration_ms, status_code,
       status_message, attributes, events, links, resource, environment, received_at AS created_at,
       service, kind
FROM monitoring.spans;
COMMENT ON VIEW monitoring.traces IS
    'Seed 000''s monitoring.traces: one row per span (not per trace) with the seed''s columns, over monitoring.spans';

-- sql/include/traces_ingest.sql
-- Included by sql/310_traces.sql and by the upgrade scripts, hence CREATE OR REPLACE.
-- Span ingestion: one set-based statement per batch. What makes a span unstorable (no valid
-- ids, no name, no start time, not an object) is found by expressions, and the span goes to
-- rejected_telemetry; what can be repaired is repaired and named in the row's repairs.

-- The fields of each span of a batch, with nothing decided yet: both statements of
-- _store_spans() read them. SQL the planner inlines (so no SET clause; every name is
-- schema-qualified).
CREATE OR REPLACE FUNCTION monitoring._span_fields(p_spans jsonb)
    RETURNS TABLE (span jsonb, is_object boolean, trace_id_given text, span_id_given text, trace_id text, span_id text,
                   parent_given text, parent_span_id text, name text,
                   start_given timestamptz, end_given timestamptz, kind_given text, status_given text,
                   resource_given jsonb, attributes_given jsonb, events_given jsonb, links_given jsonb)
    LANGUAGE sql
    STABLE
    PARALLEL SAFE
AS $$
    SELECT f.span, f.is_object, f.trace_id_given, f.span_id_given,
           monitoring._otel_trace_id(f.trace_id_given), monitoring._otel_span_id(f.span_id_given),
           f.parent_given, monitoring._otel_span_id(f.parent_given), f.name,
           monitoring._otel_time(f.start_nano, f.start_iso), monitoring._otel_time(f.end_nano, f.end_iso),
           f.kind_given, f.status_given, f.resource_given, f.attributes_given, f.events_given, f.links_given
    FROM (
    SELECT e.value AS span,
           pg_catalog.jsonb_typeof(e.value) OPERATOR(pg_catalog.=) 'object' AS is_object,
           -- ids are JSON strings: a number's digits would read as hex
           CASE WHEN pg_catalog.jsonb_typeof(e.value OPERATOR(pg_catalog.->) 'trace_id') OPERATOR(pg_catalog.=) 'string'
                THEN e.value OPERATOR(pg_catalog.->>) 'trace_id' END AS trace_id_given,
           CASE WHEN pg_catalog.jsonb_typeof(e.value OPERATOR(pg_catalog.->) 'span_id') OPERATOR(pg_catalog.=) 'string'
                THEN e.value OPERATOR(pg_catalog.->>) 'span_id' END AS span_id_given,
           NULLIF(e.value OPERATOR(pg_catalog.->>) 'parent_span_id', '') AS parent_given,
           COALESCE(e.value OPERATOR(pg_catalog.->>) 'name', e.value OPERATOR(pg_catalog.->>) 'operation_name') AS name,
           -- the times' text once: _otel_time() reads its argument five times
           e.value OPERATOR(pg_catalog.->>) 'start_time_unix_nano' AS start_nano,
           e.value OPERATOR(pg_catalog.->>) 'start_time' AS start_iso,
           e.value OPERATOR(pg_catalog.->>) 'end_time_unix_nano' AS end_nano,
           e.value OPERATOR(pg_catalog.->>) 'end_time' AS end_iso,
           pg_catalog.lower(e.value OPERATOR(pg_catalog.->>) 'kind') AS kind_given,
           pg_catalog.lower(COALESCE(e.value OPERATOR(pg_catalog.->>) 'status_code',
                                     e.value OPERATOR(pg_catalog.#>>) '{status,code}')) AS status_given,
           e.value OPERATOR(pg_catalog.->) 'resource' AS resource_given,
           e.value OPERATOR(pg_catalog.->) 'attributes' AS attributes_given,
           e.value OPERATOR(pg_catalog.->) 'events' AS events_given,
           e.value OPERATOR(pg_catalog.->) 'links' AS links_given
    FROM pg_catalog.jsonb_array_elements(p_spans) AS e
    OFFSET 0) f
    OFFSET 0   -- the ids below are read by the callers' filters and outputs: computed once
$$;
COMMENT ON FUNCTION monitoring._span_fields(jsonb) IS 'The fields of each span of a batch, as _store_spans() reads them';

-- The storable spans of a batch as the rows to store, repaired. A start time before p_oldest or
-- after p_newest is a wrong clock: such a span is stored at the time received (keeping its
-- duration), the original kept. SQL the planner inlines into _store_spans()'s INSERTs. The
-- "OFFSET 0" fences make each field be computed once per span (PostgreSQL repeats an
-- expression for every reference to it otherwise), without materializing the batch.
CREATE OR REPLACE FUNCTION monitoring._span_rows(p_spans jsonb, p_oldest timestamptz, p_newest timestamptz)
    RETURNS TABLE (trace_id text, span_id text, parent_span_id text, trace_state text, service text, operation_name text,
                   kind text, start_time timestamptz, end_time timestamptz, duration_ms double precision,
                   status_code smallint, status_message text, attributes jsonb, events jsonb, links jsonb,
                   resource jsonb, scope jsonb, environment text, repairs text[], client_start_time timestamptz)
    LANGUAGE sql
    STABLE
    PARALLEL SAFE
AS $$
    SELECT c.trace_id, c.span_id, c.parent_span_id,
           c.span OPERATOR(pg_catalog.->>) 'trace_state',
           pg_catalog.left(COALESCE(NULLIF(c.span OPERATOR(pg_catalog.->>) 'service', ''),
                                    c.resource_given OPERATOR(pg_catalog.->>) 'service.name', 'unknown_service'), 256),
           -- at most 1,024 characters and 2,048 bytes: the index on it holds 2,704
           pg_catalog.left(c.name, CASE WHEN pg_catalog.octet_length(pg_catalog.left(c.name, 1024)) OPERATOR(pg_catalog.<=) 2048
                                        THEN 1024 ELSE 512 END),
           COALESCE(c.kind, CASE WHEN c.kind_given IS NULL THEN 'internal' ELSE 'unspecified' END),
           CASE WHEN c.wrong_clock THEN pg_catalog.now() ELSE c.start_given END,
           CASE WHEN NOT c.end_ok THEN c.start_given ELSE c.end_given END
               OPERATOR(pg_catalog.+) CASE WHEN c.wrong_clock
                                           THEN pg_catalog.now() OPERATOR(pg_catalog.-) c.start_given
                                           ELSE interval '0' END,
           -- whole microseconds, then one division: 1.235 ms stays 1.235
           CASE WHEN c.end_ok
                THEN pg_catalog.round(pg_catalog.date_part('epoch', c.end_given OPERATOR(pg_catalog.-) c.start_given) OPERATOR(pg_catalog.*) 1000000) OPERATOR(pg_catalog./) 1000.0
                ELSE 0 END,
           COALESCE(c.status_code, 0),
           NULLIF(COALESCE(c.span OPERATOR(pg_catalog.->>) 'status_message',
                                      c.span OPERATOR(pg_catalog.#>>) '{status,message}'), ''),
           CASE COALESCE(pg_catalog.jsonb_typeof(c.attributes_given), 'null')
               WHEN 'object' THEN c.attributes_given
               WHEN 'null' THEN '{}'
               ELSE pg_catalog.jsonb_build_object('pg_observe.invalid_attributes', c.attributes_given)
           END,
           CASE COALESCE(pg_catalog.jsonb_typeof(c.events_given), 'null')
               WHEN 'array' THEN c.events_given
               WHEN 'null' THEN '[]'
               ELSE pg_catalog.jsonb_build_array(c.events_given)
           END,
           CASE COALESCE(pg_catalog.jsonb_typeof(c.links_given), 'null')
               WHEN 'array' THEN c.links_given
               WHEN 'null' THEN '[]'
               ELSE pg_catalog.jsonb_build_array(c.links_given)
           END,
           CASE COALESCE(pg_catalog.jsonb_typeof(c.resource_given), 'null')
               WHEN 'object' THEN c.resource_given
               WHEN 'null' THEN '{}'
               ELSE pg_catalog.jsonb_build_object('pg_observe.invalid_resource', c.resource_given)
           END,
           c.span OPERATOR(pg_catalog.->) 'scope',
           pg_catalog.left(COALESCE(NULLIF(c.span OPERATOR(pg_catalog.->>) 'environment', ''),
                                    c.resource_given OPERATOR(pg_catalog.->>) 'deployment.environment.name',
                                    c.resource_given OPERATOR(pg_catalog.->>) 'deployment.environment',
                                    'production'), 256),
           -- what was repaired; the array is built only when something was
           CASE WHEN c.trace_id OPERATOR(pg_catalog.<>) c.trace_id_given OR c.span_id OPERATOR(pg_catalog.<>) c.span_id_given
                     OR (c.parent_given IS NOT NULL AND c.parent_span_id IS NULL)
                     OR NOT c.end_ok OR c.wrong_clock OR (c.kind IS NULL AND c.kind_given IS NOT NULL)
                     OR (c.status_code IS NULL AND c.status_given IS NOT NULL) OR pg_catalog.octet_length(c.name) OPERATOR(pg_catalog.>) 1024
                     OR pg_catalog.jsonb_typeof(c.attributes_given) NOT IN ('object', 'null')
           THEN pg_catalog.array_remove(ARRAY[
               CASE WHEN c.trace_id OPERATOR(pg_catalog.<>) c.trace_id_given THEN 'trace_id_normalized' END,
               CASE WHEN c.span_id OPERATOR(pg_catalog.<>) c.span_id_given THEN 'span_id_normalized' END,
               CASE WHEN c.parent_given IS NOT NULL AND c.parent_span_id IS NULL
                    THEN 'parent_span_id_invalid_dropped' END,
               CASE WHEN c.end_given IS NULL THEN 'end_time_missing'
                    WHEN NOT c.end_ok THEN 'end_before_start' END,
               CASE WHEN c.wrong_clock THEN 'start_time_out_of_range' END,
               CASE WHEN c.kind IS NULL AND c.kind_given IS NOT NULL THEN 'kind_unknown' END,
               CASE WHEN c.status_code IS NULL AND c.status_given IS NOT NULL THEN 'status_code_unknown' END,
               CASE WHEN pg_catalog.length(c.name) OPERATOR(pg_catalog.>) 1024
                      OR pg_catalog.octet_length(pg_catalog.left(c.name, 1024)) OPERATOR(pg_catalog.>) 2048 THEN 'name_truncated' END,
               CASE WHEN pg_catalog.jsonb_typeof(c.attributes_given) NOT IN ('object', 'null')
                    THEN 'attributes_not_object' END
           ]::text[], NULL) END,
           CASE WHEN c.wrong_clock THEN c.start_given END
    FROM (
        SELECT f.*,
               f.start_given OPERATOR(pg_catalog.<) p_oldest OR f.start_given OPERATOR(pg_catalog.>) p_newest AS wrong_clock,
               -- OTLP's numbers, our names and the enum names of OTLP/JSON and protobuf
               CASE f.kind_given
                   WHEN 'server' THEN 'server' WHEN 'client' THEN 'client' WHEN 'internal' THEN 'internal'
                   WHEN 'producer' THEN 'producer' WHEN 'consumer' THEN 'consumer' WHEN 'unspecified' THEN 'unspecified'
                   WHEN '0' THEN 'unspecified' WHEN '1' THEN 'internal' WHEN '2' THEN 'server'
                   WHEN '3' THEN 'client' WHEN '4' THEN 'producer' WHEN '5' THEN 'consumer'
                   WHEN 'span_kind_unspecified' THEN 'unspecified' WHEN 'span_kind_internal' THEN 'internal'
                   WHEN 'span_kind_server' THEN 'server' WHEN 'span_kind_client' THEN 'client'
                   WHEN 'span_kind_producer' THEN 'producer' WHEN 'span_kind_consumer' THEN 'consumer'
               END AS kind,
               CASE f.status_given
                   WHEN 'unset' THEN 0 WHEN 'ok' THEN 1 WHEN 'error' THEN 2 WHEN '0' THEN 0 WHEN '1' THEN 1 WHEN '2' THEN 2
                   WHEN 'status_code_unset' THEN 0 WHEN 'status_code_ok' THEN 1 WHEN 'status_code_error' THEN 2
               END::smallint AS status_code,
               COALESCE(f.end_given OPERATOR(pg_catalog.>=) f.start_given, false) AS end_ok
        FROM monitoring._span_fields(p_spans) f
        -- storable: the opposite of every reason below
        WHERE f.is_object AND f.trace_id IS NOT NULL AND f.span_id IS NOT NULL AND f.name OPERATOR(pg_catalog.<>) ''
          AND f.start_given IS NOT NULL
        OFFSET 0
    ) c
$$;
COMMENT ON FUNCTION monitoring._span_rows(jsonb, timestamptz, timestamptz) IS
    'The storable spans of a batch as rows of monitoring.spans, repaired (inlined into _store_spans())';

-- Stores one batch: one INSERT of the storable spans, and only when some were not stored, a
-- second statement that keeps the unstorable ones with their reason. Without
-- p_skip_duplicates a span stored already fails the batch with unique_violation, and
-- _store_bisecting() stores it again with p_skip_duplicates (see there). When a value the
-- checks let through still fails (a date like 2024-02-30), _store_bisecting() retries by
-- halves.
CREATE OR REPLACE FUNCTION monitoring._store_spans(p_spans jsonb, p_skip_duplicates boolean DEFAULT false,
                                                   OUT accepted integer, OUT duplicates integer, OUT rejected integer)
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET timezone = 'UTC'
AS $$
DECLARE
    -- A start before the oldest partition and the retention, or over a day ahead, is a wrong clock.
    oldest timestamptz := monitoring._oldest_plausible_time('monitoring.spans');
    newest timestamptz := pg_catalog.now() + interval '1 day';
BEGIN
    IF p_skip_duplicates THEN
        INSERT INTO monitoring.spans
            (trace_id, span_id, parent_span_id, trace_state, service, operation_name, kind, start_time, end_time,
             duration_ms, status_code, status_message, attributes, events, links, resource, scope, environment,
             repairs, client_start_time)
        SELECT * FROM monitoring._span_rows(p_spans, oldest, newest)
        ON CONFLICT DO NOTHING;
    ELSE
        INSERT INTO monitoring.spans
            (trace_id, span_id, parent_span_id, trace_state, service, operation_name, kind, start_time, end_time,
             duration_ms, status_code, status_message, attributes, events, links, resource, scope, environment,
             repairs, client_start_time)
        SELECT * FROM monitoring._span_rows(p_spans, oldest, newest);
    END IF;
    GET DIAGNOSTICS accepted = ROW_COUNT;

    rejected := 0;
    IF accepted < pg_catalog.jsonb_array_length(p_spans) THEN
        INSERT INTO monitoring.rejected_telemetry (kind, reason, payload)
        SELECT 'span', r.problem, r.span
        FROM (
            SELECT f.span,
                   CASE
                       WHEN NOT f.is_object THEN 'a span must be a JSON object'
                       WHEN f.trace_id IS NULL THEN pg_catalog.format('trace_id %s is not 32 hex digits (nor all zeros)',
                           pg_catalog.left(COALESCE(f.span ->> 'trace_id', 'NULL'), 64))
                       WHEN f.span_id IS NULL THEN pg_catalog.format('span_id %s is not 16 hex digits (nor all zeros)',
                           pg_catalog.left(COALESCE(f.span ->> 'span_id', 'NULL'), 64))
                       WHEN COALESCE(f.name, '') = '' THEN 'a span needs a name'
                       WHEN f.start_given IS NULL THEN
                           'start_time_unix_nano (digits) or start_time (ISO 8601) is missing or invalid'
                   END AS problem
            FROM monitoring._span_fields(p_spans) f
        ) r
        WHERE r.problem IS NOT NULL;
        GET DIAGNOSTICS rejected = ROW_COUNT;
    END IF;
    duplicates := pg_catalog.jsonb_array_length(p_spans) - accepted - rejected;
END
$$;
COMMENT ON FUNCTION monitoring._store_spans(jsonb, boolean) IS 'Body of ingest_spans(): stores one batch in one statement (two when some span is unstorable)';

CREATE OR REPLACE FUNCTION monitoring.ingest_spans(p_spans jsonb)
    RETURNS TABLE (accepted integer, duplicates integer, rejected integer)
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_spans IS NULL OR pg_catalog.jsonb_typeof(p_spans) <> 'array' THEN
        RAISE EXCEPTION 'ingest_spans() takes a JSON array of spans, got %', COALESCE(pg_catalog.jsonb_typeof(p_spans), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Wrap a single span in an array: SELECT * FROM monitoring.ingest_spans(''[{...}]'')';
    END IF;
    IF pg_catalog.jsonb_array_length(p_spans) = 0 THEN
        RETURN QUERY SELECT 0, 0, 0;
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM monitoring._store_bisecting(p_spans, 'span');
END
$$;
COMMENT ON FUNCTION monitoring.ingest_spans(jsonb) IS
    'Stores a JSON array of spans (docs/tracing.md has the shape); a bad span goes to rejected_telemetry, the rest is stored; returns the counts';

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
COMMENT ON FUNCTION monitoring._otlp_traces_to_spans(jsonb) IS
    'The spans of an OTLP/JSON ExportTraceServiceRequest as the flat spans ingest_spans() takes (structure only, no validation)';

CREATE OR REPLACE FUNCTION monitoring.ingest_otlp_traces(p_request jsonb)
    RETURNS TABLE (accepted integer, duplicates integer, rejected integer)
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_request IS NULL OR pg_catalog.jsonb_typeof(p_request) <> 'object' THEN
        RAISE EXCEPTION 'ingest_otlp_traces() takes an OTLP/JSON ExportTraceServiceRequest object, got %',
                        COALESCE(pg_catalog.jsonb_typeof(p_request), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The body of POST /v1/traces with Content-Type: application/json: {"resourceSpans": [...]}';
    END IF;
    RETURN QUERY SELECT * FROM monitoring.ingest_spans(monitoring._otlp_traces_to_spans(p_request));
END
$$;
COMMENT ON FUNCTION monitoring.ingest_otlp_traces(jsonb) IS
    'Stores the spans of an OTLP/JSON ExportTraceServiceRequest (what an OpenTelemetry SDK posts to /v1/traces); returns the counts';


SELECT monitoring._create_time_series(
    p_parent_table => 'monitoring.spans',
    p_control_column => 'start_time',
    p_partition_interval => interval '1 day',
    p_retention => interval '30 days',
    p_premake => 4,
    p_original_time_column => 'client_start_time');

-- sql/320_metrics.sql
-- Metrics: raw points partitioned daily by "timestamp" (7 days), with seed 000's columns, and
-- per-minute rollups (90 days) that rollup_metrics() maintains from pg_cron and from
-- run_maintenance().

CREATE TABLE monitoring.metrics (
    id                bigint           GENERATED BY DEFAULT AS IDENTITY (CACHE 100),
    metric_name       text             NOT NULL,
    metric_type       text             NOT NULL,
    metric_value      double precision NOT NULL,
    labels            jsonb            NOT NULL DEFAULT '{}',
    "timestamp"       timestamptz      NOT NULL DEFAULT pg_catalog.now(),
    environment       text             NOT NULL DEFAULT 'production',
    service           text,
    client_timestamp  timestamptz,
    received_at       timestamptz      NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT metrics_metric_type_check CHECK (metric_type IN ('counter', 'gauge', 'histogram')),
    CONSTRAINT metrics_metric_value_finite CHECK (metric_value > '-Infinity' AND metric_value < 'Infinity'),
    CONSTRAINT metrics_labels_object CHECK (pg_catalog.jsonb_typeof(labels) = 'object')
) PARTITION BY RANGE ("timestamp");
-- the rows are dumped (partitions are not members); the identity's value must be too
SELECT pg_catalog.pg_extension_config_dump('monitoring.metrics_id_seq', '');
COMMENT ON TABLE monitoring.metrics IS
    'Metric points (seed 000''s monitoring.metrics), partitioned daily by timestamp (pg_partman, 7 days); rolled up per minute into metric_rollups_1m';
COMMENT ON COLUMN monitoring.metrics.id IS 'Row number (seed 000''s id; not a key: the table is partitioned by time)';
COMMENT ON COLUMN monitoring.metrics.metric_type IS
    'counter (metric_value is an increment: sum them), gauge (a reading) or histogram (one observation)';
COMMENT ON COLUMN monitoring.metrics.metric_value IS 'A number of at most 1e300 in magnitude (so that sums stay finite): NaN and infinities are rejected';
COMMENT ON COLUMN monitoring.metrics.labels IS 'Label names and values, a JSON object (at most 256 keys through record_metrics)';
COMMENT ON COLUMN monitoring.metrics.client_timestamp IS
    'The time as sent, when it was implausible and "timestamp" was moved to the time received';
COMMENT ON COLUMN monitoring.metrics.received_at IS 'When the database stored it: rollup_metrics() finds new points by it';

CREATE INDEX metrics_name_time_idx ON monitoring.metrics (metric_name, "timestamp");
-- Points arrive in time order, so block ranges are cheap and enough for the rollups.
CREATE INDEX metrics_timestamp_brin ON monitoring.metrics USING brin ("timestamp");
CREATE INDEX metrics_received_at_brin ON monitoring.metrics USING brin (received_at);

CREATE TABLE monitoring.metric_rollups_1m (
    bucket        timestamptz      NOT NULL,
    series_key    uuid             NOT NULL,
    metric_name   text             NOT NULL,
    metric_type   text             NOT NULL,
    labels        jsonb            NOT NULL,
    environment   text             NOT NULL,
    service       text,
    sample_count  bigint           NOT NULL,
    value_sum     double precision NOT NULL,
    value_min     double precision NOT NULL,
    value_max     double precision NOT NULL,
    value_last    double precision NOT NULL,
    p50           double precision,
    p90           double precision,
    p95           double precision,
    p99           double precision,
    rolled_up_at  timestamptz      NOT NULL DEFAULT pg_catalog.now(),
    -- a hash, not the columns: labels of any size fit in the index
    CONSTRAINT metric_rollups_1m_series_bucket UNIQUE (series_key, bucket)
) PARTITION BY RANGE (bucket);
COMMENT ON TABLE monitoring.metric_rollups_1m IS
    'Per-minute rollups of monitoring.metrics per series (name, type, labels, environment, service); partitioned daily, kept 90 days';
COMMENT ON COLUMN monitoring.metric_rollups_1m.bucket IS 'Start of the minute';
COMMENT ON COLUMN monitoring.metric_rollups_1m.series_key IS 'md5 of the series: name, type, labels, environment, service';
COMMENT ON COLUMN monitoring.metric_rollups_1m.sample_count IS 'Points in the minute';
COMMENT ON COLUMN monitoring.metric_rollups_1m.value_sum IS 'Sum of the points (for a counter: its increase over the minute)';
COMMENT ON COLUMN monitoring.metric_rollups_1m.value_last IS 'The latest point of the minute (a gauge''s reading)';
COMMENT ON COLUMN monitoring.metric_rollups_1m.p50 IS 'Median of a histogram''s observations in the minute (NULL for counters and gauges)';
COMMENT ON COLUMN monitoring.metric_rollups_1m.p99 IS '99th percentile of a histogram''s observations in the minute';

CREATE INDEX metric_rollups_1m_bucket_idx ON monitoring.metric_rollups_1m (bucket);
CREATE INDEX metric_rollups_1m_name_bucket_idx ON monitoring.metric_rollups_1m (metric_name, bucket);

-- How far rollup_metrics() has read, by received_at.
CREATE TABLE monitoring.metric_rollup_state (
    singleton     boolean     PRIMARY KEY DEFAULT true,
    rolled_up_to  timestamptz NOT NULL,
    last_run_at   timestamptz NOT NULL,
    CONSTRAINT metric_rollup_state_singleton CHECK (singleton)
);
COMMENT ON TABLE monitoring.metric_rollup_state IS
    'Watermark of rollup_metrics(): points received before rolled_up_to are in metric_rollups_1m';

-- sql/include/metrics_functions.sql
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


SELECT monitoring._create_time_series(
    p_parent_table => 'monitoring.metrics',
    p_control_column => 'timestamp',
    p_partition_interval => interval '1 day',
    p_retention => interval '7 days',
    p_premake => 4,
    p_original_time_column => 'client_timestamp');

SELECT monitoring._create_time_series(
    p_parent_table => 'monitoring.metric_rollups_1m',
    p_control_column => 'bucket',
    p_partition_interval => interval '1 day',
    p_retention => interval '90 days',
    p_premake => 4);

INSERT INTO monitoring.maintenance_task (task_name, function_name, run_order) VALUES
    ('rollup_metrics', 'monitoring.rollup_metrics', 30);

-- sql/330_entity_changes.sql
-- Business events: a change log of the user's own tables, in the style of supa_audit's
-- enable_tracking(). track_changes(table) attaches a row trigger; each change records the
-- trace it happened in, read from the transaction's pg_observe.trace_id setting, which the
-- client sets with SET LOCAL from the active OpenTelemetry span.

CREATE TABLE monitoring.tb_entity_change_log (
    change_id         bigint      GENERATED BY DEFAULT AS IDENTITY (CACHE 32),
    entity_name       text        NOT NULL,
    entity_id         text        NOT NULL,
    change_type       text        NOT NULL,
    before_data       jsonb,
    after_data        jsonb,
    changed_columns   text[],
    changed_at        timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    trace_id          text,
    span_id           text,
    changed_by        text        NOT NULL DEFAULT CURRENT_USER,
    application_user  text,
    table_name        text,
    transaction_id    xid8        DEFAULT pg_catalog.pg_current_xact_id(),
    CONSTRAINT tb_entity_change_log_pkey PRIMARY KEY (change_id, changed_at),
    CONSTRAINT tb_entity_change_log_change_type_check CHECK (change_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'))
) PARTITION BY RANGE (changed_at);
-- the rows are dumped (partitions are not members); the identity's value must be too
SELECT pg_catalog.pg_extension_config_dump('monitoring.tb_entity_change_log_change_id_seq', '');
COMMENT ON TABLE monitoring.tb_entity_change_log IS
    'Changes of tracked tables (track_changes), one row per changed row, with the trace they happened in; partitioned monthly, kept 12 months';
COMMENT ON COLUMN monitoring.tb_entity_change_log.entity_name IS 'The name given to track_changes() (default: the table''s name)';
COMMENT ON COLUMN monitoring.tb_entity_change_log.entity_id IS
    'The primary key as text; a composite key as a JSON array of its values; * for a TRUNCATE';
COMMENT ON COLUMN monitoring.tb_entity_change_log.change_type IS 'INSERT, UPDATE, DELETE or TRUNCATE';
COMMENT ON COLUMN monitoring.tb_entity_change_log.before_data IS 'The row before the change (UPDATE, DELETE)';
COMMENT ON COLUMN monitoring.tb_entity_change_log.after_data IS 'The row after the change (INSERT, UPDATE)';
COMMENT ON COLUMN monitoring.tb_entity_change_log.changed_columns IS 'Columns an UPDATE changed';
COMMENT ON COLUMN monitoring.tb_entity_change_log.trace_id IS
    'The transaction''s pg_observe.trace_id setting (SET LOCAL by the client), when it is a valid trace id';
COMMENT ON COLUMN monitoring.tb_entity_change_log.span_id IS 'The transaction''s pg_observe.span_id setting, when valid';
COMMENT ON COLUMN monitoring.tb_entity_change_log.changed_by IS 'The database role that made the change';
COMMENT ON COLUMN monitoring.tb_entity_change_log.application_user IS
    'The transaction''s pg_observe.user_id setting: the application''s user, when the client sets it';
COMMENT ON COLUMN monitoring.tb_entity_change_log.table_name IS 'The table changed, schema-qualified (for a partitioned table, its partition)';

CREATE INDEX tb_entity_change_log_trace_id_idx ON monitoring.tb_entity_change_log (trace_id)
    WHERE trace_id IS NOT NULL;
CREATE INDEX tb_entity_change_log_entity_idx ON monitoring.tb_entity_change_log (entity_name, entity_id, changed_at);
-- the audit dashboards read recent changes of every entity: rows arrive in time order
CREATE INDEX tb_entity_change_log_changed_at_brin ON monitoring.tb_entity_change_log USING brin (changed_at);

-- Two halves, so that no code of a table's owner ever runs with pg_observe's rights: the
-- triggers run as the role making the change (to_jsonb() may call a cast to json that the
-- table's owner wrote) and hand plain JSON to _append_entity_change(), which runs as
-- pg_observe's owner and only inserts. It must be executable by every role that writes a
-- tracked table, so it accepts a call only from those two trigger functions (which nobody
-- can call but PostgreSQL, and only admins can attach): what it logs happened.
CREATE FUNCTION monitoring._append_entity_change(p_table regclass, p_change_type text, p_before jsonb,
                                                 p_after jsonb, p_changed_by name, p_entity_name text,
                                                 p_key_columns text[])
    RETURNS void
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    call_stack text;
    key_columns text[] := p_key_columns;
    key_row jsonb := COALESCE(p_after, p_before);
    entity_id text;
    changed text[];
BEGIN
    GET DIAGNOSTICS call_stack = PG_CONTEXT;
    -- line 1 is this function, line 2 the PERFORM that called it, line 3 its caller
    IF pg_catalog.split_part(call_stack, E'\n', 3) !~
       '^PL/pgSQL function monitoring\._record_entity_(change|truncate)\(\) line [0-9]+ at PERFORM$' THEN
        RAISE EXCEPTION '_append_entity_change() is called by the triggers of track_changes() only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_change_type = 'TRUNCATE' THEN
        entity_id := '*';
    ELSE
        IF pg_catalog.cardinality(key_columns) = 1 THEN
            entity_id := key_row ->> key_columns[1];
        ELSE
            SELECT pg_catalog.jsonb_agg(key_row -> k.name ORDER BY k.n)::text INTO entity_id
            FROM pg_catalog.unnest(key_columns) WITH ORDINALITY AS k(name, n);
        END IF;
        -- A key renamed since track_changes(): the table's primary key now. The log never
        -- fails the user's write.
        IF entity_id IS NULL OR entity_id ~ '^\[null(, null)*\]$' THEN
            SELECT pg_catalog.jsonb_agg(key_row -> a.attname::text ORDER BY k.n)::text INTO entity_id
            FROM pg_catalog.pg_index i
            CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::smallint[]) WITH ORDINALITY AS k(attnum, n)
            JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = p_table AND i.indisprimary;
            entity_id := COALESCE(entity_id, '?');
        END IF;
    END IF;
    IF p_change_type = 'UPDATE' THEN
        SELECT pg_catalog.array_agg(n.key ORDER BY n.key) INTO changed
        FROM pg_catalog.jsonb_each(p_after) n
        WHERE n.value IS DISTINCT FROM p_before -> n.key;
    END IF;

    INSERT INTO monitoring.tb_entity_change_log
        (entity_name, entity_id, change_type, before_data, after_data, changed_columns, trace_id, span_id,
         changed_by, application_user, table_name)
    VALUES (p_entity_name, entity_id, p_change_type, p_before, p_after, changed,
            monitoring._otel_trace_id(pg_catalog.current_setting('pg_observe.trace_id', true)),
            monitoring._otel_span_id(pg_catalog.current_setting('pg_observe.span_id', true)),
            p_changed_by,
            pg_catalog.left(NULLIF(pg_catalog.current_setting('pg_observe.user_id', true), ''), 256),
            p_table::text);
END
$$;
COMMENT ON FUNCTION monitoring._append_entity_change(regclass, text, jsonb, jsonb, name, text, text[]) IS
    'Writes one change to tb_entity_change_log for the triggers of track_changes(), and refuses any other caller';

-- Runs as the role making the change (CURRENT_USER is that role, also inside the caller's own
-- SECURITY DEFINER functions). Arguments: entity name, key columns, excluded columns.
CREATE FUNCTION monitoring._record_entity_change()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET timezone = 'UTC'   -- a timestamptz key reads the same from every session
AS $$
DECLARE
    excluded text[] := COALESCE(TG_ARGV[2], '{}')::text[];
    old_row jsonb;
    new_row jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN old_row := pg_catalog.to_jsonb(OLD) - excluded; END IF;
    IF TG_OP <> 'DELETE' THEN new_row := pg_catalog.to_jsonb(NEW) - excluded; END IF;
    IF TG_OP = 'UPDATE' AND old_row = new_row THEN
        RETURN NULL;  -- an UPDATE that changed nothing (that is logged) is no business event
    END IF;
    -- one line: _append_entity_change() reads this call in PG_CONTEXT
    PERFORM monitoring._append_entity_change(TG_RELID::regclass, TG_OP, old_row, new_row, CURRENT_USER, TG_ARGV[0], TG_ARGV[1]::text[]);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._record_entity_change() IS
    'Row trigger of track_changes(): the row before and after, as JSON, handed to _append_entity_change()';

CREATE FUNCTION monitoring._record_entity_truncate()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM monitoring._append_entity_change(TG_RELID::regclass, 'TRUNCATE', NULL, NULL, CURRENT_USER, TG_ARGV[0], NULL);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._record_entity_truncate() IS 'Statement trigger of track_changes(): records a TRUNCATE';

-- Not SECURITY DEFINER: creating a trigger needs the caller to own the table.
CREATE FUNCTION monitoring.track_changes(p_table regclass, p_entity_name text DEFAULT NULL,
                                         p_exclude_columns text[] DEFAULT '{}')
    RETURNS void
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key_columns text[];
    entity text;
    relation_kind "char";
BEGIN
    SELECT c.relkind, COALESCE(p_entity_name, c.relname::text) INTO relation_kind, entity
    FROM pg_catalog.pg_class c WHERE c.oid = p_table;
    IF relation_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', p_table USING ERRCODE = 'wrong_object_type';
    END IF;
    IF (SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE c.oid = p_table)
          = 'monitoring'::regnamespace THEN
        RAISE EXCEPTION '% belongs to pg_observe: its own tables are not tracked', p_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF COALESCE(pg_catalog.length(entity), 0) = 0 THEN
        RAISE EXCEPTION 'the entity name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.n) INTO key_columns
    FROM pg_catalog.pg_index i
    CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::smallint[]) WITH ORDINALITY AS k(attnum, n)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid
                                  AND a.attnum = k.attnum
    WHERE i.indrelid = p_table AND i.indisprimary;
    IF key_columns IS NULL THEN
        RAISE EXCEPTION 'table % has no primary key: a change could not name the entity it changed', p_table
            USING ERRCODE = 'invalid_table_definition',
                  HINT = pg_catalog.format('ALTER TABLE %s ADD PRIMARY KEY (...), then track it', p_table);
    END IF;

    EXECUTE pg_catalog.format(
        'CREATE OR REPLACE TRIGGER pg_observe_track_changes AFTER INSERT OR UPDATE OR DELETE ON %s'
        ' FOR EACH ROW EXECUTE FUNCTION monitoring._record_entity_change(%L, %L, %L)',
        p_table, entity, key_columns, COALESCE(p_exclude_columns, '{}'));
    EXECUTE pg_catalog.format(
        'CREATE OR REPLACE TRIGGER pg_observe_track_truncate AFTER TRUNCATE ON %s'
        ' FOR EACH STATEMENT EXECUTE FUNCTION monitoring._record_entity_truncate(%L)',
        p_table, entity);
END
$$;
COMMENT ON FUNCTION monitoring.track_changes(regclass, text, text[]) IS
    'Records every INSERT, UPDATE, DELETE and TRUNCATE of a table with a primary key in tb_entity_change_log, without the excluded columns (call again to change)';

CREATE FUNCTION monitoring.untrack_changes(p_table regclass)
    RETURNS boolean
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    was_tracked boolean;
BEGIN
    SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger t
                   WHERE t.tgrelid = p_table
                     AND t.tgname IN ('pg_observe_track_changes', 'pg_observe_track_truncate'))
        INTO was_tracked;
    IF was_tracked THEN
        EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS pg_observe_track_changes ON %s', p_table);
        EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS pg_observe_track_truncate ON %s', p_table);
    END IF;
    RETURN was_tracked;
END
$$;
COMMENT ON FUNCTION monitoring.untrack_changes(regclass) IS
    'Stops recording changes of a table (its past changes stay in the log); false if it was not tracked';

CREATE VIEW monitoring.tracked_tables AS
SELECT t.tgrelid::regclass AS table_name,
       convert_from(substring(t.tgargs FROM 1 FOR position('\x00'::bytea IN t.tgargs) - 1), getdatabaseencoding()) COLLATE "default" AS entity_name
FROM pg_catalog.pg_trigger t
WHERE t.tgname = 'pg_observe_track_changes' AND t.tgparentid = 0;
COMMENT ON VIEW monitoring.tracked_tables IS 'Tables whose changes track_changes() records, with their entity name';

SELECT monitoring._create_time_series(
    p_parent_table => 'monitoring.tb_entity_change_log',
    p_control_column => 'changed_at',
    p_partition_interval => interval '1 month',
    p_retention => interval '12 months',
    p_premake => 4);

-- sql/340_trace_queries.sql
-- Trace analysis for dashboards and the terminal: every filter is on start_time first, so
-- that only the partitions of the window are read.

CREATE FUNCTION monitoring.slowest_operations(p_since interval DEFAULT '1 hour', p_environment text DEFAULT NULL,
                                              p_service text DEFAULT NULL, p_min_count bigint DEFAULT 10,
                                              p_limit integer DEFAULT 20)
    RETURNS TABLE (service text, operation_name text, request_count bigint, error_count bigint,
                   p50_ms double precision, p95_ms double precision, p99_ms double precision,
                   max_ms double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.service, s.operation_name, pg_catalog.count(*),
           pg_catalog.count(*) FILTER (WHERE s.status_code = 2),
           pg_catalog.percentile_cont(0.50) WITHIN GROUP (ORDER BY s.duration_ms),
           pg_catalog.percentile_cont(0.95) WITHIN GROUP (ORDER BY s.duration_ms),
           pg_catalog.percentile_cont(0.99) WITHIN GROUP (ORDER BY s.duration_ms),
           pg_catalog.max(s.duration_ms)
    FROM monitoring.spans s
    WHERE s.start_time > pg_catalog.now() - p_since
      AND (p_environment IS NULL OR s.environment = p_environment)
      AND (p_service IS NULL OR s.service = p_service)
    GROUP BY s.service, s.operation_name
    HAVING pg_catalog.count(*) >= p_min_count
    ORDER BY 7 DESC, 3 DESC
    LIMIT p_limit
$$;
COMMENT ON FUNCTION monitoring.slowest_operations(interval, text, text, bigint, integer) IS
    'Operations by p99 duration over the last p_since: count, errors (status error), p50/p95/p99/max in ms';

-- Requests are entry spans: a server or consumer span, or a root span.
CREATE FUNCTION monitoring.request_rate(p_since interval DEFAULT '1 hour', p_bucket interval DEFAULT '1 minute',
                                        p_environment text DEFAULT NULL, p_service text DEFAULT NULL)
    RETURNS TABLE (bucket timestamptz, service text, requests bigint, requests_per_second double precision,
                   failed_requests bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.date_bin(p_bucket, s.start_time, '2000-01-01 00:00:00+00'::timestamptz) AS bucket, s.service,
           pg_catalog.count(*),
           pg_catalog.count(*)::double precision /
               pg_catalog.date_part('epoch', p_bucket),
           pg_catalog.count(*) FILTER (WHERE s.status_code = 2)
    FROM monitoring.spans s
    WHERE s.start_time > pg_catalog.now() - p_since
      AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
      AND (p_environment IS NULL OR s.environment = p_environment)
      AND (p_service IS NULL OR s.service = p_service)
    GROUP BY 1, 2
    ORDER BY 1, 2
$$;
COMMENT ON FUNCTION monitoring.request_rate(interval, interval, text, text) IS
    'Requests (server, consumer and root spans) per bucket and service, per second, and how many failed';

-- An operation failed when its span has status error or an error was captured in it
-- (same trace and span id). Errors are read in the same window (plus the longest span), so
-- that their partitions are pruned too.
CREATE FUNCTION monitoring.operation_error_rates(p_since interval DEFAULT '1 hour', p_environment text DEFAULT NULL,
                                                 p_min_count bigint DEFAULT 10)
    RETURNS TABLE (service text, operation_name text, requests bigint, failed bigint, captured_errors bigint,
                   traces_with_errors bigint, error_rate_pct numeric)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH window_spans AS (
        SELECT s.trace_id, s.span_id, s.service, s.operation_name, s.status_code
        FROM monitoring.spans s
        WHERE s.start_time > pg_catalog.now() - p_since
          AND (p_environment IS NULL OR s.environment = p_environment)
    ), window_errors AS (
        SELECT o.trace_id, o.span_id, pg_catalog.count(*) AS n
        FROM monitoring.tb_error_occurrence o
        WHERE o.trace_id IS NOT NULL
          AND o.occurred_at > pg_catalog.now() - p_since
                                                   - interval '1 hour'
        GROUP BY o.trace_id, o.span_id
    ), trace_errors AS (
        SELECT e.trace_id FROM window_errors e GROUP BY e.trace_id
    )
    SELECT s.service, s.operation_name, pg_catalog.count(*),
           pg_catalog.count(*) FILTER (WHERE s.status_code = 2 OR e.n IS NOT NULL),
           COALESCE(pg_catalog.sum(e.n), 0)::bigint,
           pg_catalog.count(DISTINCT s.trace_id) FILTER (WHERE t.trace_id IS NOT NULL),
           pg_catalog.round(100.0 *
                   pg_catalog.count(*) FILTER (WHERE s.status_code = 2 OR e.n IS NOT NULL)
                   / pg_catalog.count(*), 2)
    FROM window_spans s
    LEFT JOIN window_errors e ON e.trace_id = s.trace_id
                             AND e.span_id = s.span_id
    LEFT JOIN trace_errors t ON t.trace_id = s.trace_id
    GROUP BY s.service, s.operation_name
    HAVING pg_catalog.count(*) >= p_min_count
    ORDER BY 7 DESC, 3 DESC
$$;
COMMENT ON FUNCTION monitoring.operation_error_rates(interval, text, bigint) IS
    'Per operation: spans, failed ones (status error or an error captured in the span), captured errors, traces with an error, failure rate in %';

-- A trace as a tree: depth-first, children in start order, each span with the errors and
-- entity changes recorded in it. Errors and changes without a span of the trace go to the
-- first root. Hostile data can neither loop nor hide spans: a span id is shown once, a span
-- already on the path is not visited again, and spans whose parents form a cycle are roots.
CREATE FUNCTION monitoring.trace_timeline(p_trace_id text)
    RETURNS TABLE (depth integer, span_id text, parent_span_id text, service text, operation_name text,
                   kind text, start_time timestamptz, start_offset_ms double precision,
                   duration_ms double precision, status_code smallint, status_message text,
                   errors jsonb, changes jsonb)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE trace AS (
        -- a span id sent twice with different start times is shown once (the first)
        SELECT DISTINCT ON (s.span_id) s.* FROM monitoring.spans s
        WHERE s.trace_id = monitoring._otel_trace_id(p_trace_id)
        ORDER BY s.span_id, s.start_time
    ), roots AS (
        SELECT t.* FROM trace t
        WHERE t.parent_span_id IS NULL
           OR NOT EXISTS (SELECT FROM trace p WHERE p.span_id = t.parent_span_id)
    ), tree AS (
        SELECT r.span_id, 0 AS depth,
               ARRAY[pg_catalog.to_char(r.start_time AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS')
                     || r.span_id] AS sort_path,
               ARRAY[r.span_id] AS visited, r.start_time
        FROM roots r
        UNION ALL
        SELECT c.span_id, p.depth + 1,
               p.sort_path ||
                   (pg_catalog.to_char(c.start_time AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS')
                    || c.span_id),
               p.visited || c.span_id, c.start_time
        FROM tree p
        JOIN trace c ON c.parent_span_id = p.span_id
        WHERE NOT c.span_id = ANY (p.visited) AND p.depth < 1000
    ), ordered AS (
        SELECT t.span_id, t.depth, t.sort_path, t.start_time FROM tree t
        UNION ALL
        -- spans no root leads to (their parents form a cycle): shown as roots of their own
        SELECT u.span_id, 0, ARRAY[pg_catalog.to_char(u.start_time AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS') || u.span_id],
               u.start_time
        FROM trace u WHERE NOT EXISTS (SELECT FROM tree t WHERE t.span_id = u.span_id)
    ), first_root AS (
        SELECT o.span_id FROM ordered o WHERE o.depth = 0 ORDER BY o.sort_path LIMIT 1
    ), trace_errors AS (
        SELECT COALESCE((SELECT t.span_id FROM trace t WHERE t.span_id = e.span_id LIMIT 1),
                        (SELECT f.span_id FROM first_root f)) AS span_id,
               pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                   'occurrence_id', e.occurrence_id, 'error_id', e.error_id, 'exception_type', e.exception_type,
                   'message', e.message, 'occurred_at', e.occurred_at) ORDER BY e.occurred_at) AS errors
        FROM monitoring.tb_error_occurrence e
        WHERE e.trace_id = monitoring._otel_trace_id(p_trace_id)
        GROUP BY 1
    ), trace_changes AS (
        SELECT COALESCE((SELECT t.span_id FROM trace t WHERE t.span_id = c.span_id LIMIT 1),
                        (SELECT f.span_id FROM first_root f)) AS span_id,
               pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                   'entity_name', c.entity_name, 'entity_id', c.entity_id, 'change_type', c.change_type,
                   'changed_at', c.changed_at) ORDER BY c.changed_at) AS changes
        FROM monitoring.tb_entity_change_log c
        WHERE c.trace_id = monitoring._otel_trace_id(p_trace_id)
        GROUP BY 1
    )
    SELECT o.depth, s.span_id, s.parent_span_id, s.service, s.operation_name, s.kind, s.start_time,
           (EXTRACT(epoch FROM s.start_time - (SELECT pg_catalog.min(t.start_time) FROM trace t)) * 1000)::double precision,
           s.duration_ms, s.status_code, s.status_message,
           COALESCE(e.errors, '[]'), COALESCE(ch.changes, '[]')
    FROM ordered o
    JOIN trace s ON s.span_id = o.span_id AND s.start_time = o.start_time
    LEFT JOIN trace_errors e ON e.span_id = o.span_id
    LEFT JOIN trace_changes ch ON ch.span_id = o.span_id
    ORDER BY o.sort_path
$$;
COMMENT ON FUNCTION monitoring.trace_timeline(text) IS
    'One trace as a tree (depth-first, in start order) with offsets from its start and the errors and entity changes recorded in each span';

-- sql/400_operations.sql
-- Operations: is pg_observe itself healthy (health(), partition_health), and how is the
-- database it lives in doing (the eight database-health views of seed 003, each with the
-- seed's name as an alias). docs/operations.md documents every column and threshold.

------------------------------------------------------------------------------------------
-- State health() reads besides the tables of the other capabilities.

-- Written by every dispatch_notifications() call (sql/include/notify_delivery.sql).
CREATE TABLE monitoring.dispatcher_heartbeat (
    dispatcher    text        PRIMARY KEY,
    last_seen_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_sent     integer     NOT NULL DEFAULT 0,
    last_failed   integer     NOT NULL DEFAULT 0,
    last_dead     integer     NOT NULL DEFAULT 0,
    calls         bigint      NOT NULL DEFAULT 1
);
COMMENT ON TABLE monitoring.dispatcher_heartbeat IS
    'Last call of each notification dispatcher (worker or pg_cron backstop), for health(); rows unseen for 7 days are removed by maintenance';
COMMENT ON COLUMN monitoring.dispatcher_heartbeat.dispatcher IS
    'The p_dispatcher label (the worker''s --name), else the calling role (the pg_cron backstop); at most 200 characters';
COMMENT ON COLUMN monitoring.dispatcher_heartbeat.last_sent IS 'Messages sent by the last call (last_failed, last_dead likewise)';
COMMENT ON COLUMN monitoring.dispatcher_heartbeat.calls IS 'Calls since the row was made';

-- The database's size, sampled by every run_maintenance() (task sample_database_size, the
-- last task): the growth health() and database_size report, and the time of the last
-- complete maintenance run. Small (one row per run, 30 days), so not partitioned.
CREATE TABLE monitoring.database_size_history (
    sampled_at  timestamptz PRIMARY KEY DEFAULT pg_catalog.now(),
    bytes       bigint      NOT NULL,
    CONSTRAINT database_size_history_bytes_positive CHECK (bytes >= 0)
);
COMMENT ON TABLE monitoring.database_size_history IS
    'pg_database_size() at every run_maintenance(), kept 30 days: database growth, and when maintenance last completed';
SELECT pg_catalog.pg_extension_config_dump('monitoring.database_size_history', '');

-- Thresholds of health(): one optional row; a NULL (or no row) means the default, which
-- lives in _health_thresholds() only. Read-only at read time, so health() works on a standby.
CREATE TABLE monitoring.health_settings (
    settings_id               boolean  PRIMARY KEY DEFAULT true,
    database_growth_warning   bigint,
    queue_lag_warning         interval,
    queue_lag_critical        interval,
    heartbeat_warning         interval,
    heartbeat_critical        interval,
    default_rows_critical     bigint,
    default_row_age_critical  interval,
    maintenance_warning       interval,
    maintenance_critical      interval,
    CONSTRAINT health_settings_one_row CHECK (settings_id),
    -- one CHECK per column, so that the error names the column refused
    CONSTRAINT health_settings_database_growth_warning_positive CHECK (database_growth_warning > 0),
    CONSTRAINT health_settings_queue_lag_warning_positive CHECK (queue_lag_warning > interval '0'),
    CONSTRAINT health_settings_queue_lag_critical_positive CHECK (queue_lag_critical > interval '0'),
    CONSTRAINT health_settings_heartbeat_warning_positive CHECK (heartbeat_warning > interval '0'),
    CONSTRAINT health_settings_heartbeat_critical_positive CHECK (heartbeat_critical > interval '0'),
    CONSTRAINT health_settings_default_rows_critical_positive CHECK (default_rows_critical > 0),
    CONSTRAINT health_settings_default_row_age_critical_positive CHECK (default_row_age_critical > interval '0'),
    CONSTRAINT health_settings_maintenance_warning_positive CHECK (maintenance_warning > interval '0'),
    CONSTRAINT health_settings_maintenance_critical_positive CHECK (maintenance_critical > interval '0')
    -- a warning above its critical threshold: trigger health_settings_validate (the defaults count)
);
COMMENT ON TABLE monitoring.health_settings IS
    'Overrides of health()''s thresholds (one row, every column optional: NULL keeps the default of _health_thresholds())';
COMMENT ON COLUMN monitoring.health_settings.database_growth_warning IS 'database_growth: warning above this many bytes per hour (default 10 MB)';
COMMENT ON COLUMN monitoring.health_settings.queue_lag_warning IS
    'notification_backlog: warning when a due message has waited longer (default 5 minutes; critical: queue_lag_critical, 30 minutes)';
COMMENT ON COLUMN monitoring.health_settings.heartbeat_warning IS
    'dispatcher_heartbeat: warning when no dispatcher ran for longer (default 5 minutes; critical: heartbeat_critical, 30 minutes)';
COMMENT ON COLUMN monitoring.health_settings.default_rows_critical IS
    'default_partition: critical above this many rows (default 10000; any row is a warning)';
COMMENT ON COLUMN monitoring.health_settings.default_row_age_critical IS
    'default_partition: critical when a row''s time is older than this (default 1 hour: maintenance should have moved it)';
COMMENT ON COLUMN monitoring.health_settings.maintenance_warning IS
    'maintenance_last_run: warning when run_maintenance() last completed longer ago (default 15 minutes; critical: maintenance_critical, 1 hour)';
SELECT pg_catalog.pg_extension_config_dump('monitoring.health_settings', '');

-- sql/include/operations_health.sql
-- health(): one row per check, ok / warning / critical, for people (pg-observe health), probes
-- (Kubernetes, the CLI's exit code) and Prometheus. Each check is a function returning
-- monitoring.health_check rows; health() runs each in its own subtransaction so that a
-- failing check becomes a critical row instead of failing the call. Included by
-- sql/400_operations.sql and by the upgrade scripts, hence CREATE OR REPLACE.

DO $type$
BEGIN
    IF to_regtype('monitoring.health_check') IS NULL THEN
        CREATE TYPE monitoring.health_check AS (check_name text, status text, detail text, observed double precision);
    END IF;
END
$type$;
COMMENT ON TYPE monitoring.health_check IS 'One row of health(): the check, ok/warning/critical, what was found, the figure measured';

-- The thresholds: a row of health_settings with the defaults, which live here only, where it
-- says NULL. Also what health_settings' trigger validates, so both agree on the defaults.
CREATE OR REPLACE FUNCTION monitoring._health_thresholds(s monitoring.health_settings)
    RETURNS TABLE (database_growth_warning bigint, queue_lag_warning interval, queue_lag_critical interval,
                   heartbeat_warning interval, heartbeat_critical interval, default_rows_critical bigint,
                   default_row_age_critical interval, maintenance_warning interval, maintenance_critical interval)
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(s.database_growth_warning, 10485760),
           COALESCE(s.queue_lag_warning, interval '5 minutes'),
           COALESCE(s.queue_lag_critical, interval '30 minutes'),
           COALESCE(s.heartbeat_warning, interval '5 minutes'),
           COALESCE(s.heartbeat_critical, interval '30 minutes'),
           COALESCE(s.default_rows_critical, 10000),
           COALESCE(s.default_row_age_critical, interval '1 hour'),
           COALESCE(s.maintenance_warning, interval '15 minutes'),
           COALESCE(s.maintenance_critical, interval '1 hour')
$$;
COMMENT ON FUNCTION monitoring._health_thresholds(monitoring.health_settings) IS
    'health()''s thresholds of one health_settings row: its values, the defaults (defined here only) where it says NULL';

CREATE OR REPLACE FUNCTION monitoring._health_settings()
    RETURNS TABLE (database_growth_warning bigint, queue_lag_warning interval, queue_lag_critical interval,
                   heartbeat_warning interval, heartbeat_critical interval, default_rows_critical bigint,
                   default_row_age_critical interval, maintenance_warning interval, maintenance_critical interval)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.*
    FROM (VALUES (true)) one (settings_id)
    LEFT JOIN monitoring.health_settings s ON s.settings_id = one.settings_id
    CROSS JOIN LATERAL monitoring._health_thresholds(s) t
$$;
COMMENT ON FUNCTION monitoring._health_settings() IS
    'Thresholds of health(): the row of health_settings, defaults where it says NULL or has no row';

-- A NULL column means the default, so "warning not above critical" is checked on the values
-- in effect: a CHECK constraint would pass whenever one side is NULL.
CREATE OR REPLACE FUNCTION monitoring._health_settings_validate()
    RETURNS trigger
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
BEGIN
    SELECT * INTO STRICT t FROM monitoring._health_thresholds(NEW);
    IF t.queue_lag_warning > t.queue_lag_critical THEN
        RAISE EXCEPTION 'health_settings: queue_lag_warning (%) is above queue_lag_critical (%)',
                        t.queue_lag_warning, t.queue_lag_critical
            USING ERRCODE = 'check_violation', HINT = 'A NULL threshold means its default; set both.';
    END IF;
    IF t.heartbeat_warning > t.heartbeat_critical THEN
        RAISE EXCEPTION 'health_settings: heartbeat_warning (%) is above heartbeat_critical (%)',
                        t.heartbeat_warning, t.heartbeat_critical
            USING ERRCODE = 'check_violation', HINT = 'A NULL threshold means its default; set both.';
    END IF;
    IF t.maintenance_warning > t.maintenance_critical THEN
        RAISE EXCEPTION 'health_settings: maintenance_warning (%) is above maintenance_critical (%)',
                        t.maintenance_warning, t.maintenance_critical
            USING ERRCODE = 'check_violation', HINT = 'A NULL threshold means its default; set both.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION monitoring._health_settings_validate() IS
    'Trigger of health_settings: refuses a warning threshold above its critical one, NULLs read as their defaults';

-- Counting the default partition needs SELECT on it, which a grant on its parent does not
-- give; readers get the count (never the rows) through this definer. time_series_config is
-- admin-writable, so a row is read only when it names a partitioned table of pg_observe
-- (schema monitoring, a member of the extension) and a date/time column of it: any other row
-- is reported, not read, and a read that fails reports its SQLSTATE only (an error's text
-- could quote a value). Each table in a subtransaction of its own, so none hides the others.
CREATE OR REPLACE FUNCTION monitoring._partition_health()
    RETURNS TABLE (parent_table text, partition_interval interval, retention interval, premake integer,
                   partitions integer, oldest_partition_start timestamptz, newest_partition_end timestamptz,
                   partitions_ahead integer, has_current_partition boolean, default_partition_rows bigint,
                   oldest_default_row timestamptz, status text, problem text, parent_oid oid)
    LANGUAGE plpgsql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg record;
    limits record;
    default_partition regclass;
BEGIN
    SELECT * INTO STRICT limits FROM monitoring._health_settings();
    FOR cfg IN
        SELECT c.parent_table, c.control_column, c.partition_interval, c.retention, c.premake, own.table_oid
        FROM monitoring.time_series_config c
        LEFT JOIN LATERAL (
            SELECT k.oid AS table_oid
            FROM pg_catalog.pg_class k
            JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace
            JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = k.oid
                                       AND d.objsubid = 0 AND d.deptype = 'e'
                                       AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
            JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_observe'
            JOIN pg_catalog.pg_attribute a ON a.attrelid = k.oid AND a.attname = c.control_column
                                          AND a.attnum > 0 AND NOT a.attisdropped
                                          AND a.atttypid IN ('pg_catalog.timestamptz'::pg_catalog.regtype,
                                                             'pg_catalog.timestamp'::pg_catalog.regtype,
                                                             'pg_catalog.date'::pg_catalog.regtype)
            WHERE n.nspname = 'monitoring' AND k.relkind = 'p'
              AND pg_catalog.format('%I.%I', n.nspname, k.relname) = c.parent_table
        ) own ON true
        ORDER BY c.parent_table
    LOOP
        parent_table := cfg.parent_table;
        partition_interval := cfg.partition_interval;
        retention := cfg.retention;
        premake := cfg.premake;
        partitions := NULL;
        oldest_partition_start := NULL;
        newest_partition_end := NULL;
        partitions_ahead := NULL;
        has_current_partition := NULL;
        default_partition_rows := NULL;
        oldest_default_row := NULL;
        problem := NULL;
        parent_oid := cfg.table_oid;   -- NULL for a row that names no table of pg_observe
        IF cfg.table_oid IS NULL THEN
            status := 'warning';
            problem := pg_catalog.format('not checked: time_series_config names no partitioned table of pg_observe '
                                         '(schema monitoring) with a date or timestamp column %I', cfg.control_column);
            RETURN NEXT;
            CONTINUE;
        END IF;
        BEGIN
            -- pg_partman's children are FOR VALUES FROM ('start') TO ('end'); the default has no bounds.
            SELECT pg_catalog.count(*)::integer, pg_catalog.min(b.range_start), pg_catalog.max(b.range_end),
                   (pg_catalog.count(*) FILTER (WHERE b.range_start > pg_catalog.now()))::integer,
                   COALESCE(pg_catalog.bool_or(b.range_start <= pg_catalog.now() AND pg_catalog.now() < b.range_end), false)
            INTO partitions, oldest_partition_start, newest_partition_end, partitions_ahead, has_current_partition
            FROM (SELECT m[1]::timestamptz AS range_start, m[2]::timestamptz AS range_end
                  FROM pg_catalog.pg_inherits i
                  JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
                  CROSS JOIN LATERAL pg_catalog.regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid),
                                                             '^FOR VALUES FROM \(''([^'']*)''\) TO \(''([^'']*)''\)$') m
                  WHERE i.inhparent = cfg.table_oid AND m IS NOT NULL) b;

            default_partition := monitoring._default_partition(cfg.table_oid::pg_catalog.regclass);
            IF default_partition IS NOT NULL THEN
                EXECUTE pg_catalog.format('SELECT pg_catalog.count(*), pg_catalog.min(%I)::timestamptz FROM %s',
                                          cfg.control_column, default_partition)
                    INTO default_partition_rows, oldest_default_row;
            END IF;

            status := CASE
                WHEN NOT has_current_partition OR partitions_ahead = 0 THEN 'critical'
                WHEN default_partition_rows > limits.default_rows_critical
                     OR oldest_default_row < pg_catalog.now() - limits.default_row_age_critical THEN 'critical'
                WHEN partitions_ahead < cfg.premake / 2.0 OR default_partition_rows > 0 THEN 'warning'
                ELSE 'ok' END;
        EXCEPTION WHEN OTHERS THEN
            partitions := NULL;
            oldest_partition_start := NULL;
            newest_partition_end := NULL;
            partitions_ahead := NULL;
            has_current_partition := NULL;
            default_partition_rows := NULL;
            oldest_default_row := NULL;
            status := 'critical';
            problem := pg_catalog.format('could not read its partitions (SQLSTATE %s%s)', SQLSTATE,
                                         CASE WHEN SQLSTATE = '55P03' THEN ': a lock is held, by maintenance perhaps'
                                              ELSE '' END);
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION monitoring._partition_health() IS
    'Body of partition_health: per time-series table of pg_observe its children (from their bounds), partitions ahead of now, and the default partition''s rows; other config rows reported unread';

-- How often a pg_cron schedule runs, for "did it run on time": every minute, every N
-- minutes, every N seconds (pg_cron 1.5); anything else counts as daily.
CREATE OR REPLACE FUNCTION monitoring._cron_interval(p_schedule text)
    RETURNS interval
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN p_schedule ~ '^\s*\*(/1)?\s+\*\s+\*\s+\*\s+\*\s*$' THEN interval '1 minute'
        WHEN p_schedule ~ '^\s*\*/[1-9][0-9]?\s+\*\s+\*\s+\*\s+\*\s*$'
            THEN pg_catalog.make_interval(mins => pg_catalog.substring(p_schedule, '\*/([0-9]+)')::integer)
        WHEN p_schedule ~ '^\s*[1-9][0-9]?\s+seconds?\s*$'
            THEN pg_catalog.make_interval(secs => pg_catalog.substring(p_schedule, '([0-9]+)')::integer)
        ELSE interval '1 day' END
$$;
COMMENT ON FUNCTION monitoring._cron_interval(text) IS
    'Interval between runs of a pg_cron schedule: * (1 minute), */N minutes, N seconds; anything else 1 day';

-- Growth over the window's samples; NULL until they span an hour.
CREATE OR REPLACE FUNCTION monitoring._database_growth(p_window interval)
    RETURNS double precision
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH samples AS (
        SELECT h.sampled_at, h.bytes FROM monitoring.database_size_history h
        WHERE h.sampled_at > pg_catalog.now() - p_window
    ), first_sample AS (
        SELECT s.sampled_at, s.bytes FROM samples s ORDER BY s.sampled_at LIMIT 1
    ), last_sample AS (
        SELECT s.sampled_at, s.bytes FROM samples s ORDER BY s.sampled_at DESC LIMIT 1
    )
    SELECT (l.bytes - f.bytes)::double precision
           / (pg_catalog.date_part('epoch', l.sampled_at - f.sampled_at) / 3600)
    FROM first_sample f, last_sample l
    WHERE l.sampled_at - f.sampled_at >= interval '1 hour'
$$;
COMMENT ON FUNCTION monitoring._database_growth(interval) IS
    'Database growth in bytes per hour over the samples of the last p_window (database_size_history); NULL until they span an hour';

------------------------------------------------------------------------------------------
-- The checks. Each returns its rows; health() calls them.

CREATE OR REPLACE FUNCTION monitoring._health_partitions()
    RETURNS SETOF monitoring.health_check
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    limits record;
    result monitoring.health_check;
BEGIN
    SELECT * INTO STRICT limits FROM monitoring._health_settings();
    FOR p IN SELECT * FROM monitoring._partition_health() LOOP
        result.check_name := 'partitions_ahead:' || p.parent_table;
        result.observed := p.partitions_ahead;
        IF p.problem IS NOT NULL THEN
            -- both checks of the table, so that each table always has the same two rows
            result.status := p.status;
            result.detail := p.problem;
            RETURN NEXT result;
            result.check_name := 'default_partition:' || p.parent_table;
            RETURN NEXT result;
            CONTINUE;
        END IF;
        IF NOT p.has_current_partition THEN
            result.status := 'critical';
            result.detail := pg_catalog.format('no partition covers now(): new rows go to the default partition; '
                                               'run SELECT monitoring.run_maintenance()');
        ELSIF p.partitions_ahead = 0 THEN
            result.status := 'critical';
            result.detail := pg_catalog.format('no partition premade after the current one (premake %s); '
                                               'run SELECT monitoring.run_maintenance()', p.premake);
        ELSIF p.partitions_ahead < p.premake / 2.0 THEN
            result.status := 'warning';
            result.detail := pg_catalog.format('%s of %s partitions premade ahead: is maintenance running?',
                                               p.partitions_ahead, p.premake);
        ELSE
            result.status := 'ok';
            result.detail := pg_catalog.format('%s of %s partitions premade ahead, %s in all',
                                               p.partitions_ahead, p.premake, p.partitions);
        END IF;
        RETURN NEXT result;

        result.check_name := 'default_partition:' || p.parent_table;
        result.observed := p.default_partition_rows;
        IF p.default_partition_rows > limits.default_rows_critical
           OR p.oldest_default_row < pg_catalog.now() - limits.default_row_age_critical THEN
            result.status := 'critical';
            result.detail := pg_catalog.format('%s rows in the default partition, the oldest at %s: '
                                               'run SELECT monitoring.run_maintenance() and read its result',
                                               p.default_partition_rows, p.oldest_default_row);
        ELSIF p.default_partition_rows > 0 THEN
            result.status := 'warning';
            result.detail := pg_catalog.format('%s rows in the default partition, the oldest at %s: '
                                               'the next run_maintenance() moves them to their partitions',
                                               p.default_partition_rows, p.oldest_default_row);
        ELSE
            result.status := 'ok';
            result.detail := 'the default partition is empty';
        END IF;
        RETURN NEXT result;
    END LOOP;
END
$$;
COMMENT ON FUNCTION monitoring._health_partitions() IS
    'health() checks partitions_ahead:<table> and default_partition:<table>, from partition_health';

-- The last size sample marks the last complete run_maintenance() (it is its last task), so
-- this works whatever the scheduler. With pg_cron in this database, each job is checked too.
CREATE OR REPLACE FUNCTION monitoring._health_maintenance()
    RETURNS SETOF monitoring.health_check
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    limits record;
    cron_schema name := monitoring._cron_schema();
    last_run timestamptz;
    job record;
    job_id bigint;
    job_schedule text;
    job_active boolean;
    finished_status text;
    finished_message text;
    finished_at timestamptz;
    last_success timestamptz;
    every interval;
    result monitoring.health_check;
BEGIN
    SELECT * INTO STRICT limits FROM monitoring._health_settings();
    SELECT pg_catalog.max(h.sampled_at) INTO last_run FROM monitoring.database_size_history h;
    result.check_name := 'maintenance_last_run';
    result.observed := pg_catalog.date_part('epoch', pg_catalog.now() - last_run);
    IF last_run IS NULL THEN
        result.status := 'warning';
        result.detail := 'run_maintenance() has never completed in this database: schedule it '
                         '(SELECT monitoring.schedule_maintenance() with pg_cron, or any scheduler every 5 minutes)';
    ELSIF last_run < pg_catalog.now() - limits.maintenance_critical THEN
        result.status := 'critical';
        result.detail := pg_catalog.format('run_maintenance() last completed %s ago, at %s',
                                           pg_catalog.date_trunc('second', pg_catalog.now() - last_run), last_run);
    ELSIF last_run < pg_catalog.now() - limits.maintenance_warning THEN
        result.status := 'warning';
        result.detail := pg_catalog.format('run_maintenance() last completed %s ago, at %s',
                                           pg_catalog.date_trunc('second', pg_catalog.now() - last_run), last_run);
    ELSE
        result.status := 'ok';
        result.detail := pg_catalog.format('run_maintenance() last completed %s ago',
                                           pg_catalog.date_trunc('second', pg_catalog.now() - last_run));
    END IF;
    RETURN NEXT result;

    IF cron_schema IS NULL THEN
        result.check_name := 'maintenance_schedule';
        result.observed := NULL;
        IF last_run >= pg_catalog.now() - limits.maintenance_warning THEN
            result.status := 'ok';
            result.detail := pg_catalog.format('pg_cron is not installed in database %s; run_maintenance() runs '
                                               'from another scheduler', pg_catalog.current_database());
        ELSE
            result.status := 'warning';
            result.detail := pg_catalog.format(
                'maintenance not scheduled: pg_cron is not installed in database %1$s. Call SELECT '
                'monitoring.run_maintenance() every 5 minutes from any scheduler, or from the pg_cron database: '
                'SELECT cron.schedule_in_database(''pg_observe_maintenance'', ''*/5 * * * *'', '
                '''SELECT monitoring.run_maintenance()'', %2$L)',
                pg_catalog.current_database(), pg_catalog.current_database());
        END IF;
        RETURN NEXT result;
        RETURN;
    END IF;

    FOR job IN SELECT * FROM monitoring._maintenance_jobs() LOOP
        result.check_name := 'pg_cron_job:' || job.job_name;
        result.observed := NULL;
        EXECUTE pg_catalog.format(
            'SELECT j.jobid, j.schedule, j.active FROM %I.job j'
            ' WHERE j.jobname = $1 AND j.database = pg_catalog.current_database() ORDER BY j.jobid DESC LIMIT 1',
            cron_schema)
            INTO job_id, job_schedule, job_active USING job.job_name;
        IF job_id IS NULL THEN
            result.status := 'warning';
            result.detail := pg_catalog.format('maintenance not scheduled: no pg_cron job %s for this database; '
                                               'run SELECT monitoring.schedule_maintenance()', job.job_name);
            RETURN NEXT result;
            CONTINUE;
        END IF;
        IF NOT job_active THEN
            result.status := 'warning';
            result.detail := pg_catalog.format('pg_cron job %s (jobid %s) is inactive; '
                                               'run SELECT monitoring.schedule_maintenance()', job.job_name, job_id);
            RETURN NEXT result;
            CONTINUE;
        END IF;
        -- newest first along job_run_details' primary key: recent runs are found at once
        EXECUTE pg_catalog.format(
            'SELECT d.status, d.return_message, d.end_time FROM %I.job_run_details d'
            ' WHERE d.jobid = $1 AND d.status IN (''succeeded'', ''failed'') ORDER BY d.runid DESC LIMIT 1',
            cron_schema)
            INTO finished_status, finished_message, finished_at USING job_id;
        EXECUTE pg_catalog.format(
            'SELECT d.end_time FROM %I.job_run_details d'
            ' WHERE d.jobid = $1 AND d.status = ''succeeded'' ORDER BY d.runid DESC LIMIT 1', cron_schema)
            INTO last_success USING job_id;
        every := monitoring._cron_interval(job_schedule);
        result.observed := pg_catalog.date_part('epoch', pg_catalog.now() - last_success);
        IF finished_status = 'failed' THEN
            result.status := 'critical';
            result.detail := pg_catalog.format('the last run of %s failed at %s: %s', job.job_name,
                                               finished_at, pg_catalog.left(finished_message, 500));
        ELSIF last_success IS NULL THEN
            result.status := 'warning';
            result.detail := pg_catalog.format('%s (%s) has not run yet (or cron.log_run is off)',
                                               job.job_name, job_schedule);
        ELSIF last_success < pg_catalog.now() - 2 * every THEN
            result.status := 'warning';
            result.detail := pg_catalog.format('%s last succeeded %s ago; it should run every %s: is pg_cron running?',
                                               job.job_name, pg_catalog.date_trunc('second', pg_catalog.now() - last_success),
                                               every);
        ELSE
            result.status := 'ok';
            result.detail := pg_catalog.format('%s last succeeded %s ago', job.job_name,
                                               pg_catalog.date_trunc('second', pg_catalog.now() - last_success));
        END IF;
        RETURN NEXT result;
    END LOOP;
END
$$;
COMMENT ON FUNCTION monitoring._health_maintenance() IS
    'health() checks maintenance_last_run, and pg_cron_job:<job> per job of schedule_maintenance() (or maintenance_schedule without pg_cron)';

CREATE OR REPLACE FUNCTION monitoring._health_queue()
    RETURNS SETOF monitoring.health_check
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    limits record;
    due bigint;
    oldest_due timestamptz;
    oldest_queued timestamptz;
    dead bigint;
    lag interval;
    result monitoring.health_check;
BEGIN
    SELECT * INTO STRICT limits FROM monitoring._health_settings();
    SELECT pg_catalog.count(*), pg_catalog.min(q.next_attempt_at), pg_catalog.min(q.queued_at)
    INTO due, oldest_due, oldest_queued
    FROM monitoring.notification_queue q
    WHERE q.status IN ('pending', 'sending') AND q.next_attempt_at <= pg_catalog.now();
    lag := COALESCE(pg_catalog.now() - oldest_due, interval '0');
    result.check_name := 'notification_backlog';
    result.observed := pg_catalog.date_part('epoch', lag);
    result.status := CASE WHEN lag > limits.queue_lag_critical THEN 'critical'
                          WHEN lag > limits.queue_lag_warning THEN 'warning' ELSE 'ok' END;
    result.detail := CASE WHEN due = 0 THEN 'no notification is due'
                          ELSE pg_catalog.format('%s notifications due, the oldest due for %s (queued %s ago)', due,
                                                 pg_catalog.date_trunc('second', lag),
                                                 pg_catalog.date_trunc('second', pg_catalog.now() - oldest_queued))
                     END || CASE WHEN lag > limits.queue_lag_warning
                                 THEN ': is a dispatcher running (pg-observe worker or the pg_cron backstop)?' ELSE '' END;
    RETURN NEXT result;

    SELECT pg_catalog.count(*) INTO dead FROM monitoring.notification_queue q WHERE q.status = 'dead';
    result.check_name := 'dead_notifications';
    result.observed := dead;
    IF dead > 0 THEN
        result.status := 'warning';
        result.detail := pg_catalog.format('%s notifications gave up after their last attempt: read last_error in '
                                           'monitoring.notification_queue, then SELECT monitoring.retry_notifications()', dead);
    ELSE
        result.status := 'ok';
        result.detail := 'no dead notification';
    END IF;
    RETURN NEXT result;

    -- Error events of queue_error() wait for a drainer: the same thresholds as notifications.
    SELECT pg_catalog.count(*), pg_catalog.min(q.queued_at) INTO due, oldest_queued FROM monitoring.error_queue q;
    lag := COALESCE(pg_catalog.now() - oldest_queued, interval '0');
    result.check_name := 'error_queue_backlog';
    result.observed := pg_catalog.date_part('epoch', lag);
    result.status := CASE WHEN lag > limits.queue_lag_critical THEN 'critical'
                          WHEN lag > limits.queue_lag_warning THEN 'warning' ELSE 'ok' END;
    result.detail := CASE WHEN due = 0 THEN 'no error event is queued'
                          ELSE pg_catalog.format('%s error events queued, the oldest for %s', due,
                                                 pg_catalog.date_trunc('second', lag))
                     END || CASE WHEN lag > limits.queue_lag_warning
                                 THEN ': is anything draining it (pg-observe worker, the pg_cron job pg_observe_error_queue)?'
                                 ELSE '' END;
    RETURN NEXT result;

    SELECT pg_catalog.count(*) INTO dead FROM monitoring.error_queue_failed f;
    result.check_name := 'failed_error_events';
    result.observed := dead;
    IF dead > 0 THEN
        result.status := 'warning';
        result.detail := pg_catalog.format('%s queued error events could not be stored: read reason in '
                                           'monitoring.error_queue_failed, then SELECT monitoring.retry_failed_errors()', dead);
    ELSE
        result.status := 'ok';
        result.detail := 'no failed error event';
    END IF;
    RETURN NEXT result;
END
$$;
COMMENT ON FUNCTION monitoring._health_queue() IS
    'health() checks notification_backlog, dead_notifications, error_queue_backlog (the oldest queued error event''s age) and failed_error_events';

CREATE OR REPLACE FUNCTION monitoring._health_deliveries()
    RETURNS SETOF monitoring.health_check
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    failed bigint;
    sent bigint;
    last_error text;
    result monitoring.health_check;
BEGIN
    SELECT pg_catalog.count(*) FILTER (WHERE l.status = 'failed'), pg_catalog.count(*) FILTER (WHERE l.status = 'sent')
    INTO failed, sent
    FROM monitoring.tb_error_notification_log l
    WHERE l.sent_at > pg_catalog.now() - interval '1 hour';
    result.check_name := 'failed_deliveries';
    result.observed := failed;
    IF failed = 0 THEN
        result.status := 'ok';
        result.detail := pg_catalog.format('no failed delivery in the last hour (%s sent)', sent);
    ELSE
        SELECT l.channel_type || ': ' || pg_catalog.left(COALESCE(l.error_message, '?'), 300) INTO last_error
        FROM monitoring.tb_error_notification_log l
        WHERE l.sent_at > pg_catalog.now() - interval '1 hour' AND l.status = 'failed'
        ORDER BY l.sent_at DESC LIMIT 1;
        result.status := CASE WHEN failed > sent THEN 'critical' ELSE 'warning' END;
        result.detail := pg_catalog.format('%s failed and %s sent deliveries in the last hour; the last failure: %s',
                                           failed, sent, last_error);
    END IF;
    RETURN NEXT result;
END
$$;
COMMENT ON FUNCTION monitoring._health_deliveries() IS
    'health() check failed_deliveries: failed attempts in the last hour (critical when more failed than were sent)';

CREATE OR REPLACE FUNCTION monitoring._health_dispatcher()
    RETURNS SETOF monitoring.health_check
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    limits record;
    latest monitoring.dispatcher_heartbeat;
    since interval;
    result monitoring.health_check;
BEGIN
    SELECT * INTO STRICT limits FROM monitoring._health_settings();
    SELECT * INTO latest FROM monitoring.dispatcher_heartbeat h ORDER BY h.last_seen_at DESC LIMIT 1;
    since := pg_catalog.now() - latest.last_seen_at;
    result.check_name := 'dispatcher_heartbeat';
    result.observed := pg_catalog.date_part('epoch', since);
    IF NOT EXISTS (SELECT FROM monitoring.tb_error_notification_config c WHERE c.enabled) THEN
        result.status := 'ok';
        result.detail := 'no notification rule is enabled: no dispatcher needed'
                         || CASE WHEN latest.dispatcher IS NOT NULL
                                 THEN pg_catalog.format(' (last call by %s %s ago)', latest.dispatcher,
                                                        pg_catalog.date_trunc('second', since)) ELSE '' END;
    ELSIF latest.dispatcher IS NULL THEN
        result.status := 'warning';
        result.detail := 'no dispatcher has run yet: start pg-observe worker or SELECT monitoring.schedule_maintenance()';
    ELSE
        result.status := CASE WHEN since > limits.heartbeat_critical THEN 'critical'
                              WHEN since > limits.heartbeat_warning THEN 'warning' ELSE 'ok' END;
        result.detail := pg_catalog.format('last dispatcher call by %s %s ago (%s sent, %s failed, %s dead)',
                                           latest.dispatcher, pg_catalog.date_trunc('second', since),
                                           latest.last_sent, latest.last_failed, latest.last_dead)
                         || CASE WHEN since > limits.heartbeat_warning
                                 THEN ': start pg-observe worker or SELECT monitoring.schedule_maintenance()' ELSE '' END;
    END IF;
    RETURN NEXT result;
END
$$;
COMMENT ON FUNCTION monitoring._health_dispatcher() IS
    'health() check dispatcher_heartbeat: the newest dispatch_notifications() call, when notification rules are enabled';

CREATE OR REPLACE FUNCTION monitoring._health_database_growth()
    RETURNS SETOF monitoring.health_check
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    limits record;
    growth double precision := monitoring._database_growth(interval '24 hours');
    result monitoring.health_check;
BEGIN
    SELECT * INTO STRICT limits FROM monitoring._health_settings();
    result.check_name := 'database_growth';
    result.observed := growth;
    IF growth IS NULL THEN
        result.status := 'ok';
        result.detail := 'not enough history yet: run_maintenance() samples the size at every run, an hour is needed';
    ELSIF growth > limits.database_growth_warning THEN
        result.status := 'warning';
        result.detail := pg_catalog.format('the database grows by %s per hour (last 24 h), above %s per hour',
                                           pg_catalog.pg_size_pretty(growth::bigint),
                                           pg_catalog.pg_size_pretty(limits.database_growth_warning));
    ELSE
        result.status := 'ok';
        result.detail := pg_catalog.format('the database grows by %s per hour (last 24 h)',
                                           pg_catalog.pg_size_pretty(growth::bigint));
    END IF;
    RETURN NEXT result;
END
$$;
COMMENT ON FUNCTION monitoring._health_database_growth() IS
    'health() check database_growth: bytes per hour over the last 24 h of database_size_history against health_settings';

-- A probe must answer quickly and never fail: a lock held for long (maintenance moving rows
-- out of a default partition) makes its check critical after lock_timeout instead of
-- hanging, and any check's error becomes a critical row naming it.
CREATE OR REPLACE FUNCTION monitoring.health()
    RETURNS TABLE (check_name text, status text, detail text, observed double precision)
    LANGUAGE plpgsql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '2s'
AS $$
DECLARE
    checks constant text[] := ARRAY['partitions', 'maintenance', 'queue', 'deliveries', 'dispatcher',
                                    'database_growth'];
    check_group text;
    found_rows monitoring.health_check[];
BEGIN
    FOREACH check_group IN ARRAY checks LOOP
        BEGIN
            EXECUTE pg_catalog.format('SELECT pg_catalog.array_agg(c) FROM monitoring.%I() c', '_health_' || check_group)
                INTO found_rows;
        EXCEPTION WHEN OTHERS THEN
            found_rows := ARRAY[ROW(check_group, 'critical',
                                    pg_catalog.format('the check failed: %s (SQLSTATE %s)', SQLERRM, SQLSTATE),
                                    NULL)::monitoring.health_check];
        END;
        RETURN QUERY SELECT r.check_name, r.status, r.detail, r.observed
                     FROM pg_catalog.unnest(found_rows) WITH ORDINALITY r (check_name, status, detail, observed, n)
                     ORDER BY r.n;
    END LOOP;
END
$$;
COMMENT ON FUNCTION monitoring.health() IS
    'Health of pg_observe: one row per check (partitions, maintenance and pg_cron jobs, notification queue, deliveries, dispatcher, database growth) with ok/warning/critical; never fails';

------------------------------------------------------------------------------------------
-- Maintenance tasks (registered in sql/400_operations.sql).

CREATE OR REPLACE FUNCTION monitoring._sample_database_size()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    size bigint := pg_catalog.pg_database_size(pg_catalog.current_database());
    removed bigint;
BEGIN
    INSERT INTO monitoring.database_size_history (sampled_at, bytes) VALUES (pg_catalog.now(), size)
    ON CONFLICT (sampled_at) DO UPDATE SET bytes = EXCLUDED.bytes;
    DELETE FROM monitoring.database_size_history h WHERE h.sampled_at < pg_catalog.now() - interval '30 days';
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN pg_catalog.format('database size %s bytes sampled, %s samples older than 30 days removed', size, removed);
END
$$;
COMMENT ON FUNCTION monitoring._sample_database_size() IS
    'Maintenance task: records pg_database_size() in database_size_history (kept 30 days)';

CREATE OR REPLACE FUNCTION monitoring._expire_dispatcher_heartbeats()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    removed bigint;
BEGIN
    DELETE FROM monitoring.dispatcher_heartbeat h WHERE h.last_seen_at < pg_catalog.now() - interval '7 days';
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN pg_catalog.format('%s dispatcher heartbeats older than 7 days removed', removed);
END
$$;
COMMENT ON FUNCTION monitoring._expire_dispatcher_heartbeats() IS
    'Maintenance task: forgets dispatchers not seen for 7 days (a restarted worker gets a new name)';


CREATE TRIGGER health_settings_validate
    BEFORE INSERT OR UPDATE ON monitoring.health_settings
    FOR EACH ROW EXECUTE FUNCTION monitoring._health_settings_validate();
COMMENT ON TRIGGER health_settings_validate ON monitoring.health_settings IS
    'Refuses a warning threshold above its critical one, a NULL read as its default';

-- One row per time-series table, the shape other capabilities (Prometheus, dashboards) read.
CREATE VIEW monitoring.partition_health AS
SELECT h.parent_table, h.partition_interval, h.retention, h.premake, h.partitions, h.oldest_partition_start,
       h.newest_partition_end, h.partitions_ahead, h.default_partition_rows, h.status
FROM monitoring._partition_health() h;
COMMENT ON VIEW monitoring.partition_health IS
    'Per time-series table: partitions, premade ahead of the current one, rows waiting in the default partition, and status ok/warning/critical';

INSERT INTO monitoring.maintenance_task (task_name, function_name, run_order) VALUES
    ('expire_dispatcher_heartbeats', 'monitoring._expire_dispatcher_heartbeats', 50),
    -- last, so that its sample marks a completed run (health's maintenance_last_run)
    ('sample_database_size', 'monitoring._sample_database_size', 1000);

-- pg_dump does not save the values of an extension's sequences, so after a restore the
-- identity columns would hand out ids the restored rows already have (a capture would fail
-- on error_activity's key). Run once after restoring data (docs/operations.md).
CREATE FUNCTION monitoring.resync_sequences()
    RETURNS TABLE (sequence_name text, table_name text, last_value bigint)
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owned record;
    top bigint;
BEGIN
    FOR owned IN
        SELECT s.oid::regclass AS seq, t.oid::regclass AS tbl, a.attname
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
        JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
          AND d.deptype IN ('a', 'i') AND t.relnamespace = 'monitoring'::regnamespace AND NOT t.relispartition
        ORDER BY 1::text
    LOOP
        EXECUTE pg_catalog.format('SELECT pg_catalog.max(%I) FROM %s', owned.attname, owned.tbl) INTO top;
        IF top > COALESCE(pg_catalog.pg_sequence_last_value(owned.seq), 0) THEN
            PERFORM pg_catalog.setval(owned.seq, top);
        END IF;
        sequence_name := owned.seq::text;
        table_name := owned.tbl::text;
        last_value := pg_catalog.pg_sequence_last_value(owned.seq);
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION monitoring.resync_sequences() IS
    'After restoring data: moves every identity/serial sequence of monitoring past the largest id stored (pg_dump does not save an extension''s sequence values)';

------------------------------------------------------------------------------------------
-- The database-health views of seed 003. Canonical names, then the seed's names as aliases.
-- Readable by observe_reader, whose pg_monitor membership shows every session and query.

-- sql/include/operations_ratings.sql
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


CREATE VIEW monitoring.query_performance AS
SELECT q.queryid, q.query, q.username, q.calls, q.rows, q.total_exec_ms, q.mean_exec_ms, q.min_exec_ms,
       q.max_exec_ms, q.stddev_exec_ms, q.shared_blks_hit, q.shared_blks_read, q.cache_hit_ratio, q.note
FROM monitoring._query_performance() q;
COMMENT ON VIEW monitoring.query_performance IS
    'Top 100 statements of this database by total execution time (pg_stat_statements); one row with a note instead where pg_stat_statements is unavailable';

CREATE VIEW monitoring.index_usage AS
SELECT s.schemaname::text AS schema_name, s.relname::text AS table_name, s.indexrelname::text AS index_name,
       s.idx_scan AS index_scans, s.idx_tup_read AS tuples_read, s.idx_tup_fetch AS tuples_fetched,
       pg_catalog.pg_relation_size(s.indexrelid) AS index_size_bytes,
       pg_catalog.pg_size_pretty(pg_catalog.pg_relation_size(s.indexrelid)) AS index_size,
       (i.indisunique OR i.indisprimary OR i.indisexclusion) AS enforces_constraint,
       monitoring._index_usage_category(s.idx_scan) AS usage_category
FROM pg_catalog.pg_stat_user_indexes s
JOIN pg_catalog.pg_index i ON i.indexrelid = s.indexrelid;
COMMENT ON VIEW monitoring.index_usage IS
    'Every index of user tables: scans since the statistics reset, size, and NEVER_USED / RARELY_USED (< 100 scans) / FREQUENTLY_USED';

CREATE VIEW monitoring.table_stats AS
SELECT t.schemaname::text AS schema_name, t.relname::text AS table_name, t.seq_scan, t.seq_tup_read, t.idx_scan,
       t.n_live_tup AS live_tuples, t.n_dead_tup AS dead_tuples,
       pg_catalog.round(100.0 * t.n_dead_tup / NULLIF(t.n_live_tup + t.n_dead_tup, 0), 2) AS dead_tuple_ratio,
       t.n_tup_ins AS inserts, t.n_tup_upd AS updates, t.n_tup_del AS deletes, t.n_tup_hot_upd AS hot_updates,
       t.n_mod_since_analyze AS modified_since_analyze,
       t.last_vacuum, t.last_autovacuum, t.last_analyze, t.last_autoanalyze,
       t.vacuum_count, t.autovacuum_count, t.analyze_count, t.autoanalyze_count,
       pg_catalog.pg_table_size(t.relid) AS table_size_bytes,
       pg_catalog.pg_indexes_size(t.relid) AS indexes_size_bytes,
       pg_catalog.pg_total_relation_size(t.relid) AS total_size_bytes,
       pg_catalog.pg_size_pretty(pg_catalog.pg_total_relation_size(t.relid)) AS total_size,
       monitoring._bloat_status(t.n_live_tup, t.n_dead_tup) AS bloat_status
FROM pg_catalog.pg_stat_user_tables t
JOIN pg_catalog.pg_class c ON c.oid = t.relid
WHERE c.relkind <> 'p';
COMMENT ON VIEW monitoring.table_stats IS
    'Every user table (partitions included, partitioned parents left out): scans, live/dead tuples and dead ratio (%), writes, vacuum/analyze, sizes, bloat_status';

CREATE VIEW monitoring.function_performance AS
SELECT f.schemaname::text AS schema_name, f.funcname::text AS function_name,
       f.funcid::pg_catalog.regprocedure::text AS function_signature, f.calls,
       f.total_time AS total_ms, f.self_time AS self_ms,
       f.total_time / NULLIF(f.calls, 0) AS mean_ms,
       monitoring._function_rating(f.total_time / NULLIF(f.calls, 0)) AS rating,
       NULL::text AS note
FROM pg_catalog.pg_stat_user_functions f
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       'track_functions is none: no function is timed. Run ALTER SYSTEM SET track_functions = ''pl'' (or ''all''); '
       'SELECT pg_reload_conf(); as a superuser, or ALTER DATABASE ' || pg_catalog.quote_ident(pg_catalog.current_database())
       || ' SET track_functions = ''pl'''
WHERE pg_catalog.current_setting('track_functions') = 'none';
COMMENT ON VIEW monitoring.function_performance IS
    'Timed user functions (pg_stat_user_functions): calls, total/self/mean ms, rating EXCELLENT < 50 ms, GOOD < 100, ACCEPTABLE < 200, SLOW; a note row while track_functions is none';

CREATE VIEW monitoring.connections AS
WITH client AS (
    SELECT a.datname, a.state, a.wait_event_type, a.state_change
    FROM pg_catalog.pg_stat_activity a
    WHERE a.backend_type = 'client backend' AND a.datname IS NOT NULL
), per_database AS (
    SELECT c.datname::text AS database, pg_catalog.count(*) AS total,
           pg_catalog.count(*) FILTER (WHERE c.state = 'active') AS active,
           pg_catalog.count(*) FILTER (WHERE c.state = 'idle') AS idle,
           pg_catalog.count(*) FILTER (WHERE c.state LIKE 'idle in transaction%') AS idle_in_transaction,
           pg_catalog.count(*) FILTER (WHERE c.wait_event_type = 'Lock') AS waiting_on_locks,
           pg_catalog.max(pg_catalog.date_part('epoch', pg_catalog.statement_timestamp() - c.state_change))
               FILTER (WHERE c.state = 'idle') AS max_idle_seconds,
           pg_catalog.max(pg_catalog.date_part('epoch', pg_catalog.statement_timestamp() - c.state_change))
               FILTER (WHERE c.state LIKE 'idle in transaction%') AS max_idle_in_transaction_seconds
    FROM client c
    GROUP BY c.datname
)
SELECT d.database, d.total, d.active, d.idle, d.idle_in_transaction, d.waiting_on_locks, d.max_idle_seconds,
       d.max_idle_in_transaction_seconds,
       (pg_catalog.sum(d.total) OVER ())::bigint AS server_total,
       pg_catalog.current_setting('max_connections')::integer AS max_connections,
       pg_catalog.round(100.0 * pg_catalog.sum(d.total) OVER ()
                        / pg_catalog.current_setting('max_connections')::integer, 1) AS server_usage_pct,
       monitoring._connection_pool_status((pg_catalog.sum(d.total) OVER ())::bigint, d.total, d.idle,
                                          pg_catalog.current_setting('max_connections')::integer) AS pool_status
FROM per_database d;
COMMENT ON VIEW monitoring.connections IS
    'Client connections per database: total, active, idle, idle in transaction, waiting on locks, longest idle; pool_status HEALTHY / TOO_MANY / UNDERUTILIZED against max_connections';

CREATE VIEW monitoring.database_size AS
WITH user_schema AS (
    SELECT n.oid FROM pg_catalog.pg_namespace n
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
)
SELECT pg_catalog.current_database()::text AS database,
       pg_catalog.pg_database_size(pg_catalog.current_database()) AS size_bytes,
       pg_catalog.pg_size_pretty(pg_catalog.pg_database_size(pg_catalog.current_database())) AS size,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c JOIN user_schema s ON s.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition) AS table_count,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c JOIN user_schema s ON s.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND c.relispartition) AS partition_count,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c JOIN user_schema s ON s.oid = c.relnamespace
        WHERE c.relkind IN ('i', 'I') AND NOT c.relispartition) AS index_count,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p JOIN user_schema s ON s.oid = p.pronamespace)
           AS function_count,
       monitoring._database_growth(interval '24 hours') AS growth_bytes_per_hour;
COMMENT ON VIEW monitoring.database_size IS
    'This database: size (bytes and pretty), tables, partitions, indexes and functions outside the system schemas, growth per hour over the last 24 h';

CREATE VIEW monitoring.slow_queries AS
SELECT a.pid, a.datname::text AS database, a.usename::text AS username, a.application_name,
       a.client_addr::text AS client_addr, a.query_start,
       pg_catalog.date_part('epoch', pg_catalog.statement_timestamp() - a.query_start) AS duration_seconds,
       monitoring._slow_query_severity(
           pg_catalog.date_part('epoch', pg_catalog.statement_timestamp() - a.query_start)) AS severity,
       a.wait_event_type, a.wait_event, a.state, a.query
FROM pg_catalog.pg_stat_activity a
WHERE a.backend_type = 'client backend' AND a.state = 'active'
  AND a.pid <> pg_catalog.pg_backend_pid()
  AND a.query_start < pg_catalog.statement_timestamp() - interval '1 second';
COMMENT ON VIEW monitoring.slow_queries IS
    'Statements running for more than 1 s on the server, with severity SLOW > 1 s, WARNING > 10 s, CRITICAL > 60 s and what they wait on';

CREATE VIEW monitoring.cache_hit_ratio AS
SELECT 'database'::text AS scope, d.datname::text AS name, d.blks_read AS blocks_read, d.blks_hit AS blocks_hit,
       pg_catalog.round(100.0 * d.blks_hit / NULLIF(d.blks_hit + d.blks_read, 0), 2) AS hit_ratio_pct,
       95::numeric AS target_pct,
       monitoring._cache_hit_rating(pg_catalog.round(100.0 * d.blks_hit / NULLIF(d.blks_hit + d.blks_read, 0), 2),
                                    95) AS rating
FROM pg_catalog.pg_stat_database d
WHERE d.datname = pg_catalog.current_database()
UNION ALL
SELECT 'table', pg_catalog.format('%I.%I', t.schemaname, t.relname), t.heap_blks_read, t.heap_blks_hit,
       pg_catalog.round(100.0 * t.heap_blks_hit / NULLIF(t.heap_blks_hit + t.heap_blks_read, 0), 2),
       98,
       monitoring._cache_hit_rating(
           pg_catalog.round(100.0 * t.heap_blks_hit / NULLIF(t.heap_blks_hit + t.heap_blks_read, 0), 2), 98)
FROM pg_catalog.pg_statio_user_tables t
WHERE t.heap_blks_hit + t.heap_blks_read > 0;
COMMENT ON VIEW monitoring.cache_hit_ratio IS
    'Buffer cache hit ratio: one database row (all blocks, target > 95 %) and one row per table read (heap blocks, target > 98 %); EXCELLENT >= 99, GOOD >= target, else NEEDS_TUNING';

-- The seed's names (monitoring_rpc_performance is function_performance).
CREATE VIEW monitoring.monitoring_query_performance AS SELECT * FROM monitoring.query_performance;
COMMENT ON VIEW monitoring.monitoring_query_performance IS 'Seed 003 name of monitoring.query_performance';
CREATE VIEW monitoring.monitoring_index_usage AS SELECT * FROM monitoring.index_usage;
COMMENT ON VIEW monitoring.monitoring_index_usage IS 'Seed 003 name of monitoring.index_usage';
CREATE VIEW monitoring.monitoring_table_stats AS SELECT * FROM monitoring.table_stats;
COMMENT ON VIEW monitoring.monitoring_table_stats IS 'Seed 003 name of monitoring.table_stats';
CREATE VIEW monitoring.monitoring_rpc_performance AS SELECT * FROM monitoring.function_performance;
COMMENT ON VIEW monitoring.monitoring_rpc_performance IS 'Seed 003 name of monitoring.function_performance';
CREATE VIEW monitoring.monitoring_connections AS SELECT * FROM monitoring.connections;
COMMENT ON VIEW monitoring.monitoring_connections IS 'Seed 003 name of monitoring.connections';
CREATE VIEW monitoring.monitoring_database_size AS SELECT * FROM monitoring.database_size;
COMMENT ON VIEW monitoring.monitoring_database_size IS 'Seed 003 name of monitoring.database_size';
CREATE VIEW monitoring.monitoring_slow_queries AS SELECT * FROM monitoring.slow_queries;
COMMENT ON VIEW monitoring.monitoring_slow_queries IS 'Seed 003 name of monitoring.slow_queries';
CREATE VIEW monitoring.monitoring_cache_hit_ratio AS SELECT * FROM monitoring.cache_hit_ratio;
COMMENT ON VIEW monitoring.monitoring_cache_hit_ratio IS 'Seed 003 name of monitoring.cache_hit_ratio';

-- sql/410_prometheus.sql
-- Prometheus exposition of pg_observe's figures (docs/prometheus.md).
--
-- monitoring.prometheus_metrics() returns the text format 0.0.4: for every family of
-- _prometheus_families() one "# HELP" and one "# TYPE" line, then its samples, contiguous.
-- The samples come from one function per section; each reads only small or bounded data, so
-- that a scrape costs the same with ten or ten million stored rows:
--   errors         the groups (error_groups: tb_error_log and pending deltas), never the occurrences
--   notifications  the queue (small), the delivery log of the last hour (sent_at index),
--                  the dispatchers' heartbeats
--   traces         entry spans of the last complete minute (start_time prunes to one
--                  partition and the start_time index bounds the read)
--   metrics        the rollup watermark and the newest complete minute of metric_rollups_1m
--                  (within the last 5 minutes); never the raw points
--   partitions     monitoring.partition_health, and pg_class estimates for stored rows
--   database       pg_stat_* and pg_settings
--   health         monitoring.health(), one gauge per check
--   cache          the counter rows of cache_counters (namespaces x live backends, small), the
--                  newest cache_stats_history sample and pg_class figures; never cache_entries
--                  (cache_stats counts it: 0.1 s per million entries)
-- Label values that come from users' data (environments, services, tables, metric names) are
-- bounded: the 20 largest groups by name, the rest folded into "(other)" (see each section).

CREATE FUNCTION monitoring._prometheus_families()
    RETURNS TABLE (family text, metric_type text, help text, sort_order integer)
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT f.family, f.metric_type, f.help, (pg_catalog.row_number() OVER ())::integer   -- in the order listed
    FROM (VALUES
        -- about pg_observe itself
        ('pg_observe_info', 'gauge', 'pg_observe''s installed version (always 1)'),
        -- errors
        ('pg_observe_error_occurrences_total', 'counter', 'Error occurrences captured, by the level of their group (group counters, not the occurrences table)'),
        ('pg_observe_error_groups', 'gauge', 'Error groups (issues) seen in each environment, by level and status; a group seen in several environments counts in each'),
        ('pg_observe_error_groups_new_last_hour', 'gauge', 'Error groups first seen in the last hour, by level'),
        -- notifications
        ('pg_observe_notification_queue_messages', 'gauge', 'Messages in monitoring.notification_queue, by status (dead: gave up, kept for keep_dead)'),
        ('pg_observe_notification_queue_oldest_pending_seconds', 'gauge', 'Age of the oldest pending or sending message of the queue (0 when none)'),
        ('pg_observe_notification_deliveries_last_hour', 'gauge', 'Delivery attempts of the last hour, by channel type and outcome (sent, failed)'),
        ('pg_observe_notification_delivery_duration_seconds_last_hour', 'gauge', 'Delivery attempt duration over the last hour, by channel type, at percentile 50 and 95'),
        ('pg_observe_dispatcher_last_seen_timestamp_seconds', 'gauge', 'Unix time of the last dispatch_notifications() call of each dispatcher'),
        ('pg_observe_dispatcher_calls_total', 'counter', 'dispatch_notifications() calls of each dispatcher'),
        -- traces
        ('pg_observe_trace_requests_last_minute', 'gauge', 'Requests (server, consumer and root spans) started in the last complete minute'),
        ('pg_observe_trace_failed_requests_last_minute', 'gauge', 'Requests of the last complete minute whose span has status error'),
        ('pg_observe_trace_slow_requests_last_minute', 'gauge', 'Requests of the last complete minute that took longer than 0.1 s'),
        ('pg_observe_trace_request_duration_seconds_last_minute', 'gauge', 'Request duration over the last complete minute at percentile 50, 95 and 99'),
        ('pg_observe_trace_http_responses_last_minute', 'gauge', 'Requests of the last complete minute by HTTP response status code (span attribute http.response.status_code or http.status_code)'),
        ('pg_observe_trace_ingest_delay_seconds_last_minute', 'gauge', 'Delay between a request''s end and its span''s arrival, over the last complete minute, at percentile 50, 95 and 99'),
        -- metrics
        ('pg_observe_metric_rollup_lag_seconds', 'gauge', 'Age of the rollup watermark: points received since are not in metric_rollups_1m yet'),
        ('pg_observe_metric_rollup_last_run_timestamp_seconds', 'gauge', 'Unix time of the last rollup_metrics() run'),
        ('pg_observe_app_metric_samples_last_minute', 'gauge', 'Points recorded in the newest complete rolled-up minute, per metric (all label sets together)'),
        ('pg_observe_app_metric_sum_last_minute', 'gauge', 'Sum of the values recorded in the newest complete rolled-up minute, per metric'),
        ('pg_observe_app_metric_max_last_minute', 'gauge', 'Largest value recorded in the newest complete rolled-up minute, per metric'),
        ('pg_observe_app_metric_p99_last_minute', 'gauge', 'Highest per-series p99 of a histogram metric in the newest complete rolled-up minute'),
        -- partitions and storage
        ('pg_observe_partitions', 'gauge', 'Partitions of each time-series table'),
        ('pg_observe_partitions_ahead', 'gauge', 'Partitions made ahead of the current one (0: new rows will soon land in the default partition)'),
        ('pg_observe_partition_default_rows', 'gauge', 'Rows waiting in the default partition of each time-series table'),
        ('pg_observe_partition_newest_end_timestamp_seconds', 'gauge', 'Unix time up to which partitions exist'),
        ('pg_observe_partition_status', 'gauge', 'Partition health of each time-series table: 0 ok, 1 warning, 2 critical'),
        ('pg_observe_stored_rows', 'gauge', 'Rows of each time-series table, estimated from the planner statistics (pg_class.reltuples)'),
        ('pg_observe_stored_bytes', 'gauge', 'Size of each time-series table with its indexes and TOAST, all partitions'),
        -- database health
        ('pg_observe_database_size_bytes', 'gauge', 'Size of the current database'),
        ('pg_observe_database_blocks_hit_total', 'counter', 'Blocks of the current database found in shared buffers'),
        ('pg_observe_database_blocks_read_total', 'counter', 'Blocks of the current database read from the operating system'),
        ('pg_observe_database_transactions_total', 'counter', 'Transactions of the current database, by outcome (commit, rollback)'),
        ('pg_observe_database_deadlocks_total', 'counter', 'Deadlocks detected in the current database'),
        ('pg_observe_connections', 'gauge', 'Client connections of the whole server, by state (active, idle, idle in transaction, other)'),
        ('pg_observe_connections_max', 'gauge', 'The server''s max_connections'),
        ('pg_observe_connections_waiting_on_locks', 'gauge', 'Client connections of the server waiting for a lock'),
        ('pg_observe_longest_query_seconds', 'gauge', 'Run time of the longest active query of the server running for over 1 s (0 when none)'),
        ('pg_observe_slow_queries', 'gauge', 'Active queries of the server running for more than 1 s'),
        ('pg_observe_table_seq_scans_total', 'counter', 'Sequential scans of the 20 tables (or partitions) with the most; a dropped table''s series ends'),
        ('pg_observe_table_live_tuples', 'gauge', 'Live rows of the 20 tables (or partitions) with the most dead rows'),
        ('pg_observe_table_dead_tuples', 'gauge', 'Dead rows (bloat until vacuumed) of the 20 tables (or partitions) with the most'),
        ('pg_observe_unused_indexes', 'gauge', 'Indexes never scanned since the statistics were reset, but those of constraints, of partitions and of pg_observe'),
        ('pg_observe_function_calls_total', 'counter', 'Calls of the 20 functions with the most total time (needs track_functions)'),
        ('pg_observe_function_seconds_total', 'counter', 'Total time spent in the 20 functions with the most (needs track_functions)'),
        -- health
        ('pg_observe_health_status', 'gauge', 'Status of each monitoring.health() check: 0 ok, 1 warning, 2 critical'),
        ('pg_observe_health_observed', 'gauge', 'The value each monitoring.health() check observed'),
        -- cache
        ('pg_observe_cache_up', 'gauge', 'Whether the cache table could be opened within 0.5 s and its counters read (0: locked by TRUNCATE, VACUUM FULL, ALTER, REINDEX..., or not readable by this role); absent on a standby'),
        ('pg_observe_cache_hits_total', 'counter', 'Cache reads that found a live entry, per namespace (the last < 100 calls or 10 s of each connection are pending)'),
        ('pg_observe_cache_misses_total', 'counter', 'Cache reads that found no live entry, per namespace'),
        ('pg_observe_cache_sets_total', 'counter', 'Cache entries written (set, set_many per key, incr, set_if_absent when it wrote), per namespace'),
        ('pg_observe_cache_evictions_total', 'counter', 'Expired cache entries deleted by expire_cache(), per namespace'),
        ('pg_observe_cache_entries', 'gauge', 'Cache entries per namespace, expired ones not yet deleted included, as of the newest cache_stats_history sample'),
        ('pg_observe_cache_expired_pending_entries', 'gauge', 'Expired cache entries expire_cache() has not deleted yet, per namespace, as of the newest cache_stats_history sample'),
        ('pg_observe_cache_bytes', 'gauge', 'Keys and values stored (compressed) per namespace, as of the newest cache_stats_history sample'),
        ('pg_observe_cache_sampled_timestamp_seconds', 'gauge', 'Unix time of the cache_stats_history sample (run_maintenance()) the per-namespace entries and bytes come from'),
        ('pg_observe_cache_table_rows', 'gauge', 'Rows of the cache table now, all namespaces, estimated from the planner statistics (pg_class.reltuples)'),
        ('pg_observe_cache_table_bytes', 'gauge', 'Size of the cache table now with its indexes and TOAST, dead space included'),
        -- last: measured once everything above is computed
        ('pg_observe_scrape_duration_seconds', 'gauge', 'Time monitoring.prometheus_metrics() took to compute everything above')
    ) AS f(family, metric_type, help)
$$;
COMMENT ON FUNCTION monitoring._prometheus_families() IS
    'The families prometheus_metrics() exposes, in order, with their type and help text';

-- Escaping of the text format: label values escape backslash, double quote and newline; help
-- texts backslash and newline. PostgreSQL text holds no NUL.
CREATE FUNCTION monitoring._prometheus_escape(p_value text, p_quote boolean DEFAULT true)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    STRICT
    PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_quote
                THEN pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(p_value, E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n')
                ELSE pg_catalog.replace(pg_catalog.replace(p_value, E'\\', E'\\\\'), E'\n', E'\\n') END
$$;
COMMENT ON FUNCTION monitoring._prometheus_escape(text, boolean) IS
    'Escapes a label value (backslash, double quote, newline) or, with p_quote false, a help text (backslash, newline)';

-- One sample line: name{label="value",...} value. Labels in the order jsonb keeps them; a
-- NULL label value is written empty (Prometheus reads an empty value as no label).
CREATE FUNCTION monitoring._prometheus_sample(p_family text, p_labels jsonb, p_value double precision)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    SET extra_float_digits = 1   -- shortest exact text of a double, whatever the session says
AS $$
    SELECT p_family
           || COALESCE('{' || (SELECT pg_catalog.string_agg(
                                   l.key || '="' || COALESCE(monitoring._prometheus_escape(l.value), '') || '"', ','
                                   ORDER BY l.ordinality)
                               FROM pg_catalog.jsonb_each_text(COALESCE(p_labels, '{}')) WITH ORDINALITY l) || '}', '')
           || ' '
           || CASE WHEN p_value IS NULL OR p_value = 'NaN' THEN 'NaN'
                   WHEN p_value = 'Infinity' THEN '+Inf'
                   WHEN p_value = '-Infinity' THEN '-Inf'
                   ELSE p_value::text END
           || E'\n'
$$;
COMMENT ON FUNCTION monitoring._prometheus_sample(text, jsonb, double precision) IS
    'One sample line of the text format, labels escaped, NaN/+Inf/-Inf spelled as Prometheus does';

-- ---------------------------------------------------------------- errors
-- From the groups only (error_groups: folded counters plus pending deltas, exact). A group
-- belongs to one level for life (its first occurrence's), so the counter per level only grows
-- (deleting groups looks like a counter reset). Environment and status are not labels of the
-- counter: a group's status changes and its occurrences are not split by environment, so
-- counts would jump between series. Environments are bounded to the 20 with the most groups.
CREATE FUNCTION monitoring._prometheus_error_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH grp AS (
        SELECT g.error_id, g.severity, g.status, g.environments, g.first_seen, g.occurrence_count AS occurrences
        FROM monitoring.error_groups g
    ), levels (level, rank) AS (
        VALUES ('debug', 1), ('info', 2), ('warning', 3), ('error', 4), ('fatal', 5)
    ), per_level AS (
        SELECT g.severity, pg_catalog.sum(g.occurrences) AS occurrences,
               pg_catalog.count(*) FILTER (WHERE g.first_seen > pg_catalog.now() - interval '1 hour') AS new_groups
        FROM grp g GROUP BY g.severity
    ), seen AS (
        SELECT g.error_id, g.severity, g.status, e.environment
        FROM grp g CROSS JOIN LATERAL pg_catalog.unnest(g.environments) AS e(environment)
    ), environment_rank AS (
        SELECT s.environment, pg_catalog.row_number() OVER (ORDER BY pg_catalog.count(*) DESC, s.environment) AS rank
        FROM seen s GROUP BY s.environment
    )
    SELECT 'pg_observe_error_occurrences_total', pg_catalog.jsonb_build_object('level', l.level),
           COALESCE(p.occurrences, 0)::double precision
    FROM levels l LEFT JOIN per_level p ON p.severity = l.level
    UNION ALL
    SELECT 'pg_observe_error_groups',
           pg_catalog.jsonb_build_object('environment', CASE WHEN r.rank <= 20 THEN s.environment ELSE '(other)' END,
                                         'level', s.severity, 'status', s.status),
           pg_catalog.count(DISTINCT s.error_id)::double precision
    FROM seen s JOIN environment_rank r ON r.environment = s.environment
    GROUP BY CASE WHEN r.rank <= 20 THEN s.environment ELSE '(other)' END, s.severity, s.status
    UNION ALL
    SELECT 'pg_observe_error_groups_new_last_hour', pg_catalog.jsonb_build_object('level', l.level),
           COALESCE(p.new_groups, 0)::double precision
    FROM levels l LEFT JOIN per_level p ON p.severity = l.level
$$;
COMMENT ON FUNCTION monitoring._prometheus_error_samples() IS
    'Prometheus samples of the errors section: occurrences per level, groups per environment/level/status, new groups';

-- ---------------------------------------------------------------- notifications
-- The queue is small (sent and dead messages expire); the delivery log is read for the last
-- hour only, through its sent_at index. Channel types and dispatchers are bounded to 20.
CREATE FUNCTION monitoring._prometheus_notification_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH statuses (status) AS (
        VALUES ('pending'), ('sending'), ('sent'), ('dead')
    ), queue AS (
        SELECT q.status, pg_catalog.count(*) AS messages,
               pg_catalog.min(q.queued_at) FILTER (WHERE q.status IN ('pending', 'sending')) AS oldest_pending
        FROM monitoring.notification_queue q GROUP BY q.status
    ), deliveries AS (
        SELECT l.channel_type, l.status, l.duration_ms
        FROM monitoring.tb_error_notification_log l
        WHERE l.sent_at > pg_catalog.now() - interval '1 hour' AND l.sent_at <= pg_catalog.now()
    ), channel_rank AS (
        SELECT d.channel_type, pg_catalog.row_number() OVER (ORDER BY pg_catalog.count(*) DESC, d.channel_type) AS rank
        FROM deliveries d GROUP BY d.channel_type
    ), ranked AS (
        SELECT CASE WHEN r.rank <= 20 THEN d.channel_type ELSE '(other)' END AS channel_type, d.status, d.duration_ms
        FROM deliveries d JOIN channel_rank r ON r.channel_type = d.channel_type
    )
    SELECT 'pg_observe_notification_queue_messages', pg_catalog.jsonb_build_object('status', s.status),
           COALESCE(q.messages, 0)::double precision
    FROM statuses s LEFT JOIN queue q ON q.status = s.status
    UNION ALL
    SELECT 'pg_observe_notification_queue_oldest_pending_seconds', NULL,
           COALESCE(pg_catalog.date_part('epoch', pg_catalog.now() - (SELECT pg_catalog.min(q.oldest_pending) FROM queue q)), 0)
    UNION ALL
    SELECT 'pg_observe_notification_deliveries_last_hour',
           pg_catalog.jsonb_build_object('channel_type', r.channel_type, 'status', r.status),
           pg_catalog.count(*)::double precision
    FROM ranked r GROUP BY r.channel_type, r.status
    UNION ALL
    SELECT 'pg_observe_notification_delivery_duration_seconds_last_hour',
           pg_catalog.jsonb_build_object('channel_type', d.channel_type, 'percentile', q.percentile),
           q.ms / 1000
    FROM (SELECT r.channel_type,
                 pg_catalog.percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY r.duration_ms) AS ms
          FROM ranked r WHERE r.duration_ms IS NOT NULL GROUP BY r.channel_type) d
    CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(ARRAY['50', '95']), pg_catalog.unnest(d.ms)) AS q(percentile, ms)
$$;
COMMENT ON FUNCTION monitoring._prometheus_notification_samples() IS
    'Prometheus samples of the notifications section: queue by status, backlog age, last hour''s deliveries';

-- Dispatchers (monitoring.dispatcher_heartbeat): the 20 seen last.
CREATE FUNCTION monitoring._prometheus_dispatcher_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH recent AS (
        SELECT h.dispatcher, h.last_seen_at, h.calls
        FROM monitoring.dispatcher_heartbeat h
        ORDER BY h.last_seen_at DESC, h.dispatcher
        LIMIT 20
    )
    SELECT 'pg_observe_dispatcher_last_seen_timestamp_seconds'::text,
           pg_catalog.jsonb_build_object('dispatcher', r.dispatcher),
           pg_catalog.date_part('epoch', r.last_seen_at)
    FROM recent r
    UNION ALL
    SELECT 'pg_observe_dispatcher_calls_total', pg_catalog.jsonb_build_object('dispatcher', r.dispatcher),
           r.calls::double precision
    FROM recent r
$$;
COMMENT ON FUNCTION monitoring._prometheus_dispatcher_samples() IS
    'Prometheus samples of the notification dispatchers: last call time and calls, for the 20 seen last';

-- ---------------------------------------------------------------- traces
-- Entry spans (server, consumer, root) that started in the last complete minute: the
-- start_time bounds prune to that minute's partition and read it through the start_time
-- index, so the cost follows the request rate, not the table. Spans still in flight at the
-- scrape arrive later and are not counted: the figures are of the minute as received by then.
-- (environment, service) pairs are bounded to the 20 with the most requests.
CREATE FUNCTION monitoring._prometheus_trace_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH requests AS (
        SELECT s.environment, s.service, s.duration_ms, s.status_code,
               pg_catalog.date_part('epoch', s.received_at - s.end_time) AS delay_seconds,
               COALESCE(s.attributes ->> 'http.response.status_code', s.attributes ->> 'http.status_code') AS http_code
        FROM monitoring.spans s
        WHERE s.start_time >= pg_catalog.date_trunc('minute', pg_catalog.now()) - interval '1 minute'
          AND s.start_time < pg_catalog.date_trunc('minute', pg_catalog.now())
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
    ), pair_rank AS (
        SELECT r.environment, r.service,
               pg_catalog.row_number() OVER (ORDER BY pg_catalog.count(*) DESC, r.environment, r.service) AS rank
        FROM requests r GROUP BY r.environment, r.service
    ), ranked AS (
        SELECT CASE WHEN k.rank <= 20 THEN r.environment ELSE '(other)' END AS environment,
               CASE WHEN k.rank <= 20 THEN r.service ELSE '(other)' END AS service,
               r.duration_ms, r.status_code, r.delay_seconds, r.http_code
        FROM requests r JOIN pair_rank k ON k.environment = r.environment AND k.service = r.service
    ), per_pair AS (
        SELECT pg_catalog.jsonb_build_object('environment', r.environment, 'service', r.service) AS labels,
               pg_catalog.count(*) AS requests,
               pg_catalog.count(*) FILTER (WHERE r.status_code = 2) AS failed,
               pg_catalog.count(*) FILTER (WHERE r.duration_ms > 100) AS slow,
               pg_catalog.percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY r.duration_ms) AS ms
        FROM ranked r GROUP BY r.environment, r.service
    ), percentiles (percentile, position) AS (
        VALUES ('50', 1), ('95', 2), ('99', 3)
    )
    SELECT 'pg_observe_trace_requests_last_minute', p.labels, p.requests::double precision FROM per_pair p
    UNION ALL
    SELECT 'pg_observe_trace_failed_requests_last_minute', p.labels, p.failed::double precision FROM per_pair p
    UNION ALL
    SELECT 'pg_observe_trace_slow_requests_last_minute', p.labels, p.slow::double precision FROM per_pair p
    UNION ALL
    SELECT 'pg_observe_trace_request_duration_seconds_last_minute',
           p.labels || pg_catalog.jsonb_build_object('percentile', q.percentile), p.ms[q.position] / 1000
    FROM per_pair p CROSS JOIN percentiles q
    UNION ALL
    SELECT 'pg_observe_trace_http_responses_last_minute',
           pg_catalog.jsonb_build_object('environment', r.environment, 'code', r.http_code),
           pg_catalog.count(*)::double precision
    FROM ranked r
    WHERE r.http_code ~ '^[1-5][0-9][0-9]$'
    GROUP BY r.environment, r.http_code
    UNION ALL
    SELECT 'pg_observe_trace_ingest_delay_seconds_last_minute', pg_catalog.jsonb_build_object('percentile', q.percentile),
           d.delays[q.position]
    FROM (SELECT pg_catalog.percentile_cont(ARRAY[0.5, 0.95, 0.99])
                     WITHIN GROUP (ORDER BY GREATEST(r.delay_seconds, 0)) AS delays
          FROM requests r HAVING pg_catalog.count(*) > 0) d
    CROSS JOIN percentiles q
$$;
COMMENT ON FUNCTION monitoring._prometheus_trace_samples() IS
    'Prometheus samples of the traces section: requests, failures, slow requests, latency, HTTP codes and ingest delay of the last complete minute';

-- ---------------------------------------------------------------- metrics
-- The rollup watermark, and the applications' metrics of the newest minute the rollups have
-- completed (the minute before the watermark's), if it lies within the last 5 minutes: stale
-- figures are left out rather than shown as current (pg_observe_metric_rollup_lag_seconds
-- says why). All label sets of a metric are summed up; the 50 metrics with the most points.
CREATE FUNCTION monitoring._prometheus_metric_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH state AS (
        SELECT st.rolled_up_to, st.last_run_at FROM monitoring.metric_rollup_state st
    ), minute AS (
        SELECT pg_catalog.date_trunc('minute', st.rolled_up_to) - interval '1 minute' AS bucket FROM state st
    ), per_metric AS (
        SELECT r.metric_name, r.metric_type, r.environment, COALESCE(r.service, '') AS service,
               pg_catalog.sum(r.sample_count) AS samples, pg_catalog.sum(r.value_sum) AS total,
               pg_catalog.max(r.value_max) AS maximum, pg_catalog.max(r.p99) AS p99
        FROM monitoring.metric_rollups_1m r
        WHERE r.bucket = (SELECT m.bucket FROM minute m)
          AND r.bucket >= pg_catalog.date_trunc('minute', pg_catalog.now()) - interval '5 minutes'
        GROUP BY r.metric_name, r.metric_type, r.environment, COALESCE(r.service, '')
        ORDER BY 5 DESC, 1, 3, 4
        LIMIT 50
    ), labelled AS (
        SELECT pg_catalog.jsonb_build_object('metric', p.metric_name, 'type', p.metric_type,
                                             'environment', p.environment, 'service', p.service) AS labels, p.*
        FROM per_metric p
    )
    SELECT 'pg_observe_metric_rollup_lag_seconds', NULL::jsonb,
           GREATEST(pg_catalog.date_part('epoch', pg_catalog.now() - st.rolled_up_to), 0)
    FROM state st
    UNION ALL
    SELECT 'pg_observe_metric_rollup_last_run_timestamp_seconds', NULL, pg_catalog.date_part('epoch', st.last_run_at)
    FROM state st
    UNION ALL
    SELECT 'pg_observe_app_metric_samples_last_minute', l.labels, l.samples::double precision FROM labelled l
    UNION ALL
    SELECT 'pg_observe_app_metric_sum_last_minute', l.labels, l.total FROM labelled l
    UNION ALL
    SELECT 'pg_observe_app_metric_max_last_minute', l.labels, l.maximum FROM labelled l
    UNION ALL
    SELECT 'pg_observe_app_metric_p99_last_minute', l.labels, l.p99 FROM labelled l WHERE l.p99 IS NOT NULL
$$;
COMMENT ON FUNCTION monitoring._prometheus_metric_samples() IS
    'Prometheus samples of the metrics section: rollup lag, and per metric the newest complete rolled-up minute';

-- ---------------------------------------------------------------- partitions and storage
-- monitoring.partition_health per table; stored rows are pg_class estimates (exact counts
-- would read every partition), sizes come from the files.
-- time_series_config is admins' data: a row may name anything ('app.secrets', 'a.b.c.d', 10 kB
-- of text). _partition_health() resolves a row to a table only when it is spelled exactly as
-- a partitioned table of pg_observe in schema monitoring (never parsing it: to_regclass would
-- raise and break the whole scrape); other rows get their status (a warning) and no figure.
CREATE FUNCTION monitoring._prometheus_partition_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH health AS (
        SELECT h.*, pg_catalog.jsonb_build_object('table', h.parent_table) AS labels
        FROM monitoring._partition_health() h
    ), storage AS (
        SELECT h.parent_table, pg_catalog.sum(GREATEST(k.reltuples, 0)) AS row_estimate,
               pg_catalog.sum(pg_catalog.pg_total_relation_size(k.oid)) AS bytes
        FROM health h
        CROSS JOIN LATERAL pg_catalog.pg_partition_tree(h.parent_oid) t
        JOIN pg_catalog.pg_class k ON k.oid = t.relid
        WHERE h.parent_oid IS NOT NULL AND t.isleaf
        GROUP BY h.parent_table
    )
    SELECT 'pg_observe_partitions'::text, h.labels, h.partitions::double precision
    FROM health h WHERE h.partitions IS NOT NULL
    UNION ALL
    SELECT 'pg_observe_partitions_ahead', h.labels, h.partitions_ahead::double precision
    FROM health h WHERE h.partitions_ahead IS NOT NULL
    UNION ALL
    SELECT 'pg_observe_partition_default_rows', h.labels, h.default_partition_rows::double precision
    FROM health h WHERE h.default_partition_rows IS NOT NULL
    UNION ALL
    SELECT 'pg_observe_partition_newest_end_timestamp_seconds', h.labels,
           pg_catalog.date_part('epoch', h.newest_partition_end)
    FROM health h WHERE h.newest_partition_end IS NOT NULL
    UNION ALL
    SELECT 'pg_observe_partition_status', h.labels,
           CASE h.status WHEN 'ok' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END::double precision
    FROM health h
    UNION ALL
    SELECT 'pg_observe_stored_rows', pg_catalog.jsonb_build_object('table', s.parent_table), s.row_estimate::double precision
    FROM storage s
    UNION ALL
    SELECT 'pg_observe_stored_bytes', pg_catalog.jsonb_build_object('table', s.parent_table), s.bytes::double precision
    FROM storage s
$$;
COMMENT ON FUNCTION monitoring._prometheus_partition_samples() IS
    'Prometheus samples of the partitions section: partition_health per table, estimated rows and bytes stored';

-- ---------------------------------------------------------------- database health
-- From the database-health views of sql/400_operations.sql (connections, slow_queries,
-- cache_hit_ratio, database_size, function_performance), so that a figure means the same
-- here as in psql and the dashboards; from pg_stat_* where no view has it cheaply (the views
-- of tables and indexes compute every relation's size). Connections and slow queries are the
-- whole server's, the rest the current database's. Table and function names: 20 at most.
-- Sequential scans are counted per table, never summed over tables: pg_partman's retention
-- drops partitions every day, and a sum would fall (a false counter reset, so a rate() spike);
-- a dropped table's series just ends.
CREATE FUNCTION monitoring._prometheus_database_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH db AS (
        SELECT d.xact_commit, d.xact_rollback, d.deadlocks
        FROM pg_catalog.pg_stat_database d WHERE d.datname = pg_catalog.current_database()
    ), cache AS (
        SELECT c.blocks_hit, c.blocks_read FROM monitoring.cache_hit_ratio c WHERE c.scope = 'database'
    ), connections AS (
        SELECT pg_catalog.sum(c.active) AS active, pg_catalog.sum(c.idle) AS idle,
               pg_catalog.sum(c.idle_in_transaction) AS idle_in_transaction,
               pg_catalog.sum(c.total - c.active - c.idle - c.idle_in_transaction) AS other,
               pg_catalog.sum(c.waiting_on_locks) AS waiting_on_locks,
               pg_catalog.max(c.max_connections) AS max_connections
        FROM monitoring.connections c
    ), slow AS (
        SELECT pg_catalog.count(*) AS queries, COALESCE(pg_catalog.max(q.duration_seconds), 0) AS longest
        FROM monitoring.slow_queries q
    ), bloat AS (
        SELECT t.schemaname, t.relname, t.n_live_tup, t.n_dead_tup
        FROM pg_catalog.pg_stat_user_tables t
        WHERE t.n_dead_tup > 0
        ORDER BY t.n_dead_tup DESC, t.schemaname, t.relname
        LIMIT 20
    ), scanned AS (
        SELECT t.schemaname, t.relname, t.seq_scan
        FROM pg_catalog.pg_stat_user_tables t
        WHERE t.seq_scan > 0
        ORDER BY t.seq_scan DESC, t.schemaname, t.relname
        LIMIT 20
    ), functions AS (
        SELECT f.schema_name, f.function_name, pg_catalog.sum(f.calls) AS calls, pg_catalog.sum(f.total_ms) AS total_ms
        FROM monitoring.function_performance f
        WHERE f.function_name IS NOT NULL
        GROUP BY f.schema_name, f.function_name
        ORDER BY 4 DESC, 1, 2
        LIMIT 20
    )
    SELECT 'pg_observe_database_size_bytes', NULL::jsonb, d.size_bytes::double precision FROM monitoring.database_size d
    UNION ALL
    SELECT 'pg_observe_database_blocks_hit_total', NULL, c.blocks_hit::double precision FROM cache c
    UNION ALL
    SELECT 'pg_observe_database_blocks_read_total', NULL, c.blocks_read::double precision FROM cache c
    UNION ALL
    SELECT 'pg_observe_database_transactions_total', pg_catalog.jsonb_build_object('outcome', 'commit'),
           db.xact_commit::double precision FROM db
    UNION ALL
    SELECT 'pg_observe_database_transactions_total', pg_catalog.jsonb_build_object('outcome', 'rollback'),
           db.xact_rollback::double precision FROM db
    UNION ALL
    SELECT 'pg_observe_database_deadlocks_total', NULL, db.deadlocks::double precision FROM db
    UNION ALL
    SELECT 'pg_observe_connections', pg_catalog.jsonb_build_object('state', s.state), COALESCE(s.n, 0)::double precision
    FROM connections c
    CROSS JOIN LATERAL (VALUES ('active', c.active), ('idle', c.idle), ('idle in transaction', c.idle_in_transaction),
                               ('other', c.other)) AS s(state, n)
    UNION ALL
    SELECT 'pg_observe_connections_max', NULL, pg_catalog.current_setting('max_connections')::double precision
    UNION ALL
    SELECT 'pg_observe_connections_waiting_on_locks', NULL, COALESCE(c.waiting_on_locks, 0)::double precision
    FROM connections c
    UNION ALL
    SELECT 'pg_observe_longest_query_seconds', NULL, s.longest FROM slow s
    UNION ALL
    SELECT 'pg_observe_slow_queries', NULL, s.queries::double precision FROM slow s
    UNION ALL
    SELECT 'pg_observe_table_seq_scans_total', pg_catalog.jsonb_build_object('schema', s.schemaname, 'table', s.relname),
           s.seq_scan::double precision FROM scanned s
    UNION ALL
    SELECT 'pg_observe_table_live_tuples', pg_catalog.jsonb_build_object('schema', b.schemaname, 'table', b.relname),
           b.n_live_tup::double precision FROM bloat b
    UNION ALL
    SELECT 'pg_observe_table_dead_tuples', pg_catalog.jsonb_build_object('schema', b.schemaname, 'table', b.relname),
           b.n_dead_tup::double precision FROM bloat b
    UNION ALL
    SELECT 'pg_observe_unused_indexes', NULL,
           (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_user_indexes i
            JOIN pg_catalog.pg_index x ON x.indexrelid = i.indexrelid
            JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
            WHERE i.idx_scan = 0 AND NOT (x.indisunique OR x.indisprimary OR x.indisexclusion)
              AND NOT c.relispartition AND i.schemaname <> 'monitoring')::double precision
    UNION ALL
    SELECT 'pg_observe_function_calls_total', pg_catalog.jsonb_build_object('schema', f.schema_name, 'function', f.function_name),
           f.calls::double precision FROM functions f
    UNION ALL
    SELECT 'pg_observe_function_seconds_total', pg_catalog.jsonb_build_object('schema', f.schema_name, 'function', f.function_name),
           f.total_ms / 1000 FROM functions f
$$;
COMMENT ON FUNCTION monitoring._prometheus_database_samples() IS
    'Prometheus samples of the database health section, from pg_stat_* (connections are server-wide)';

-- ---------------------------------------------------------------- health
CREATE FUNCTION monitoring._prometheus_health_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE sql
    VOLATILE   -- as monitoring.health() may be
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH checks AS (
        SELECT h.check_name, h.status, h.observed FROM monitoring.health() h
    )
    SELECT 'pg_observe_health_status'::text, pg_catalog.jsonb_build_object('check', c.check_name),
           CASE c.status WHEN 'ok' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END::double precision
    FROM checks c
    UNION ALL
    SELECT 'pg_observe_health_observed', pg_catalog.jsonb_build_object('check', c.check_name), c.observed
    FROM checks c WHERE c.observed IS NOT NULL
$$;
COMMENT ON FUNCTION monitoring._prometheus_health_samples() IS
    'Prometheus samples of monitoring.health(): each check''s status (0 ok, 1 warning, 2 critical) and observed value';

-- ---------------------------------------------------------------- cache
-- Never cache_entries itself: cache_stats counts its rows (0.1 s per million entries, and more
-- with every scrape of every Prometheus), so the figures come from
--   - cache_counters (one row per namespace and live backend, plus the folded ones): hits,
--     misses, sets, evictions. Backends only add to their rows and _fold_cache_counters() moves
--     ended backends' rows into backend_pid 0 in one statement, so a namespace's sum never
--     falls; it restarts at zero after a crash (UNLOGGED) or when an admin deletes the rows,
--     which Prometheus reads as a counter reset;
--   - the newest cache_stats_history sample (written by every run_maintenance(), that is the
--     one scan of the cache it makes anyway): entries, expired_pending, bytes per namespace,
--     with the sample's time;
--   - pg_class: the table's row estimate and its size now (no scan).
-- Namespaces: the 20 with the most reads and writes, the others summed into "(other)".
-- pg_observe_cache_up says whether the cache can be used: the table is opened (as every cache
-- call does) under a lock_timeout of 0.5 s, so a TRUNCATE, VACUUM FULL, ALTER TABLE or REINDEX
-- that holds it, which makes every cache call wait, shows as 0 instead of blocking or failing
-- the scrape; a role that may not read the counters shows 0 too. A standby has no cache
-- (UNLOGGED tables cannot be read during recovery): no cache figure at all there.
CREATE FUNCTION monitoring._prometheus_cache_samples()
    RETURNS TABLE (family text, labels jsonb, value double precision)
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '500ms'
AS $$
DECLARE
    table_bytes bigint;
BEGIN
    IF pg_catalog.pg_is_in_recovery() THEN
        RETURN;
    END IF;
    -- Take every lock the figures need first: once held (to the end of the transaction, but
    -- for the table size, read here), the query below cannot wait.
    BEGIN
        table_bytes := pg_catalog.pg_total_relation_size('monitoring.cache_entries'::pg_catalog.regclass);
        PERFORM FROM monitoring.cache_counters c LIMIT 1;
        PERFORM FROM monitoring.cache_stats_history h LIMIT 1;
    EXCEPTION WHEN lock_not_available OR insufficient_privilege OR undefined_table THEN
        family := 'pg_observe_cache_up';
        value := 0;
        RETURN NEXT;
        RETURN;
    END;

    RETURN QUERY
    WITH counted AS (
        SELECT c.namespace, pg_catalog.sum(c.hits) AS hits, pg_catalog.sum(c.misses) AS misses,
               pg_catalog.sum(c.sets) AS sets, pg_catalog.sum(c.evictions) AS evictions
        FROM monitoring.cache_counters c
        GROUP BY c.namespace
    ), sampled AS (
        SELECT h.namespace, h.entries, h.expired_pending, h.bytes, h.sampled_at
        FROM monitoring.cache_stats_history h
        WHERE h.sampled_at = (SELECT pg_catalog.max(l.sampled_at) FROM monitoring.cache_stats_history l)
    ), spaces AS (
        SELECT COALESCE(k.namespace, s.namespace) AS namespace, k.hits, k.misses, k.sets, k.evictions,
               s.entries, s.expired_pending, s.bytes
        FROM counted k FULL JOIN sampled s ON s.namespace = k.namespace
    ), ranked AS (
        SELECT CASE WHEN pg_catalog.row_number() OVER (
                             ORDER BY COALESCE(p.hits + p.misses + p.sets, 0) DESC, COALESCE(p.entries, 0) DESC, p.namespace) <= 20
                    THEN p.namespace ELSE '(other)' END AS namespace,
               p.hits, p.misses, p.sets, p.evictions, p.entries, p.expired_pending, p.bytes
        FROM spaces p
    ), per_namespace AS (
        -- sums of NULLs stay NULL: no counter row, or not in the sample, gives no sample line
        SELECT pg_catalog.jsonb_build_object('namespace', r.namespace) AS labels,
               pg_catalog.sum(r.hits) AS hits, pg_catalog.sum(r.misses) AS misses, pg_catalog.sum(r.sets) AS sets,
               pg_catalog.sum(r.evictions) AS evictions, pg_catalog.sum(r.entries) AS entries,
               pg_catalog.sum(r.expired_pending) AS expired_pending, pg_catalog.sum(r.bytes) AS bytes
        FROM ranked r
        GROUP BY r.namespace
    )
    SELECT 'pg_observe_cache_up'::text, NULL::jsonb, 1::double precision
    UNION ALL
    SELECT f.family, n.labels, f.figure::double precision
    FROM per_namespace n
    CROSS JOIN LATERAL (VALUES ('pg_observe_cache_hits_total', n.hits), ('pg_observe_cache_misses_total', n.misses),
                               ('pg_observe_cache_sets_total', n.sets), ('pg_observe_cache_evictions_total', n.evictions),
                               ('pg_observe_cache_entries', n.entries),
                               ('pg_observe_cache_expired_pending_entries', n.expired_pending),
                               ('pg_observe_cache_bytes', n.bytes)) AS f(family, figure)
    WHERE f.figure IS NOT NULL
    UNION ALL
    SELECT 'pg_observe_cache_sampled_timestamp_seconds', NULL, pg_catalog.date_part('epoch', pg_catalog.max(s.sampled_at))
    FROM sampled s HAVING pg_catalog.count(*) > 0
    UNION ALL
    SELECT 'pg_observe_cache_table_rows', NULL, GREATEST(k.reltuples, 0)::double precision
    FROM pg_catalog.pg_class k WHERE k.oid = 'monitoring.cache_entries'::pg_catalog.regclass
    UNION ALL
    SELECT 'pg_observe_cache_table_bytes', NULL, table_bytes::double precision;
END
$$;
COMMENT ON FUNCTION monitoring._prometheus_cache_samples() IS
    'Prometheus samples of the cache: up, hit/miss/set/eviction counters and the last sample''s entries and bytes per namespace (20 at most), the table''s size; never scans the cache';

-- ---------------------------------------------------------------- the exposition
-- Every family of the registry, HELP and TYPE once, its samples sorted by labels; the scrape
-- duration last, measured once everything else is computed.
CREATE FUNCTION monitoring.prometheus_metrics()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    body text;
BEGIN
    WITH samples AS MATERIALIZED (
        SELECT 'pg_observe_info' AS family, pg_catalog.jsonb_build_object('version', e.extversion) AS labels,
               1::double precision AS value
        FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_observe'
        UNION ALL SELECT * FROM monitoring._prometheus_error_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_notification_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_dispatcher_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_trace_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_metric_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_partition_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_database_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_health_samples()
        UNION ALL SELECT * FROM monitoring._prometheus_cache_samples()
    )
    SELECT pg_catalog.string_agg(
               '# HELP ' || f.family || ' ' || monitoring._prometheus_escape(f.help, false) || E'\n'
               || '# TYPE ' || f.family || ' ' || f.metric_type || E'\n'
               || COALESCE((SELECT pg_catalog.string_agg(monitoring._prometheus_sample(s.family, s.labels, s.value), ''
                                                         ORDER BY s.labels::text)
                            FROM samples s WHERE s.family = f.family), ''),
               '' ORDER BY f.sort_order)
    INTO body
    FROM monitoring._prometheus_families() f
    WHERE f.family <> 'pg_observe_scrape_duration_seconds';

    SELECT body || '# HELP ' || f.family || ' ' || monitoring._prometheus_escape(f.help, false) || E'\n'
           || '# TYPE ' || f.family || ' ' || f.metric_type || E'\n'
           || monitoring._prometheus_sample(f.family, NULL,
                                            pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - started))
    INTO body
    FROM monitoring._prometheus_families() f
    WHERE f.family = 'pg_observe_scrape_duration_seconds';
    RETURN body;
END
$$;
COMMENT ON FUNCTION monitoring.prometheus_metrics() IS
    'pg_observe''s figures in the Prometheus text format 0.0.4 (errors, notifications, traces, metrics, partitions, database health, health checks, cache); serve it with pg-observe exporter';

-- sql/420_dashboards.sql
-- Dashboards: one function per panel kind, so that a Grafana panel is one short call
-- (python-client/src/pg_observe/dashboards.py generates the dashboards; docs/grafana.md).
--
-- Every function takes the time range first (p_from, p_to: Grafana's $__timeFrom() and
-- $__timeTo()) and filters on the partition key of what it reads first (occurred_at,
-- start_time, bucket, changed_at), so that only the partitions of the range are read.
-- p_environment and p_service: NULL means all. Time series return "time" first, one row per
-- bucket of the range in time order (counts of empty buckets are 0); p_bucket is Grafana's
-- $__interval, widened so that a range has at most 1,000 buckets.

-- Grafana sends variables formatted with :percentencode (only [A-Za-z0-9-_.~%] reach the
-- SQL text, whatever the value and the Grafana version), and "All" as the custom value __all.
CREATE FUNCTION monitoring.dashboard_variable(p_value text)
    RETURNS text
    LANGUAGE plpgsql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    decoded bytea;
BEGIN
    IF p_value IS NULL OR p_value = '__all' THEN
        RETURN NULL;
    END IF;
    SELECT pg_catalog.string_agg(CASE WHEN m.part[1] IS NOT NULL
                                      THEN pg_catalog.decode(pg_catalog.substr(m.part[1], 2), 'hex')
                                      ELSE pg_catalog.convert_to(m.part[2], 'UTF8') END,
                                 ''::bytea ORDER BY m.n)
    INTO decoded
    FROM pg_catalog.regexp_matches(p_value, '(%[0-9A-Fa-f]{2})|(%|[^%]+)', 'g') WITH ORDINALITY AS m(part, n);
    RETURN COALESCE(pg_catalog.convert_from(decoded, 'UTF8'), '');
EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
    -- not UTF-8 once decoded (or a NUL byte): no stored value can equal it
    RETURN p_value;
END
$$;
COMMENT ON FUNCTION monitoring.dashboard_variable(text) IS
    'Decodes a Grafana variable sent as ${var:percentencode}; the "All" value __all gives NULL (no filter)';

-- The width of a time series' buckets: Grafana's $__interval, at least p_min, and wide enough
-- that the range has at most 1,000 buckets. Month or year intervals are taken as their seconds.
CREATE FUNCTION monitoring._dashboard_bucket(p_from timestamptz, p_to timestamptz, p_bucket interval,
                                             p_min interval DEFAULT '1 second')
    RETURNS interval
    LANGUAGE plpgsql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR NOT pg_catalog.isfinite(p_from) OR NOT pg_catalog.isfinite(p_to) THEN
        RAISE EXCEPTION 'a dashboard needs a finite time range, got % to %', p_from, p_to
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN pg_catalog.make_interval(secs => GREATEST(
        COALESCE(EXTRACT(epoch FROM p_bucket), 60),
        COALESCE(EXTRACT(epoch FROM p_min), 1),
        (EXTRACT(epoch FROM p_to) - EXTRACT(epoch FROM p_from)) / 1000,
        0.001)::double precision);
END
$$;
COMMENT ON FUNCTION monitoring._dashboard_bucket(timestamptz, timestamptz, interval, interval) IS
    'Bucket width of a dashboard time series: the requested one, at least p_min, at most 1,000 buckets in the range';

CREATE FUNCTION monitoring._dashboard_times(p_from timestamptz, p_to timestamptz, p_width interval)
    RETURNS SETOF timestamptz
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.generate_series(pg_catalog.date_bin(p_width, p_from, '2000-01-01 00:00:00+00'), p_to, p_width)
$$;
COMMENT ON FUNCTION monitoring._dashboard_times(timestamptz, timestamptz, interval) IS
    'Starts of the buckets of a time range (aligned as date_bin aligns them), so that empty buckets show as 0';

-- Variables ------------------------------------------------------------------------------

-- Cheap sources only: the issues (one row per group), the last day of metric rollups and the
-- last 15 minutes of spans.
CREATE FUNCTION monitoring.dashboard_environments()
    RETURNS TABLE (environment text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT v.environment FROM (
        SELECT pg_catalog.unnest(g.environments) FROM monitoring.tb_error_log g
        WHERE g.last_seen > pg_catalog.now() - interval '30 days'
        UNION ALL
        SELECT r.environment FROM monitoring.metric_rollups_1m r WHERE r.bucket > pg_catalog.now() - interval '1 day'
        UNION ALL
        SELECT s.environment FROM monitoring.spans s WHERE s.start_time > pg_catalog.now() - interval '15 minutes'
    ) AS v(environment)
    WHERE v.environment IS NOT NULL
    ORDER BY 1
    LIMIT 1000
$$;
COMMENT ON FUNCTION monitoring.dashboard_environments() IS
    'Environments for the dashboards'' $environment variable: of issues seen in 30 days, metrics of a day, spans of 15 minutes';

CREATE FUNCTION monitoring.dashboard_services()
    RETURNS TABLE (service text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT v.service FROM (
        SELECT pg_catalog.unnest(g.services) FROM monitoring.tb_error_log g
        WHERE g.last_seen > pg_catalog.now() - interval '30 days'
        UNION ALL
        SELECT r.service FROM monitoring.metric_rollups_1m r WHERE r.bucket > pg_catalog.now() - interval '1 day'
        UNION ALL
        SELECT s.service FROM monitoring.spans s WHERE s.start_time > pg_catalog.now() - interval '15 minutes'
    ) AS v(service)
    WHERE v.service IS NOT NULL
    ORDER BY 1
    LIMIT 1000
$$;
COMMENT ON FUNCTION monitoring.dashboard_services() IS
    'Services for the dashboards'' $service variable: of issues seen in 30 days, metrics of a day, spans of 15 minutes';

-- Errors ---------------------------------------------------------------------------------

CREATE FUNCTION monitoring.dashboard_error_rate(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                                p_service text DEFAULT NULL, p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, occurrences bigint, issues bigint, affected_users bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), counted AS (
        SELECT pg_catalog.date_bin(b.w, o.occurred_at, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.count(*) AS occurrences, pg_catalog.count(DISTINCT o.error_id) AS issues,
               pg_catalog.count(DISTINCT monitoring._user_key(o.user_info, o.context)) AS users
        FROM width b, monitoring.tb_error_occurrence o
        WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
          AND (p_environment IS NULL OR o.environment = p_environment)
          AND (p_service IS NULL OR o.service = p_service)
        GROUP BY 1
    )
    SELECT t.t, COALESCE(c.occurrences, 0), COALESCE(c.issues, 0), COALESCE(c.users, 0)
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN counted c ON c.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_error_rate(timestamptz, timestamptz, text, text, interval) IS
    'Error occurrences per bucket, with the distinct issues and users they hit';

-- Occurrences of issues first seen in the range against those of issues known before it.
CREATE FUNCTION monitoring.dashboard_first_vs_repeat(p_from timestamptz, p_to timestamptz,
                                                     p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                     p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, new_issue_errors bigint, known_issue_errors bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), counted AS (
        SELECT pg_catalog.date_bin(b.w, o.occurred_at, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.count(*) FILTER (WHERE g.first_seen >= p_from) AS new_issue_errors,
               pg_catalog.count(*) FILTER (WHERE g.first_seen < p_from) AS known_issue_errors
        FROM width b, monitoring.tb_error_occurrence o
        JOIN monitoring.tb_error_log g ON g.error_id = o.error_id
        WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
          AND (p_environment IS NULL OR o.environment = p_environment)
          AND (p_service IS NULL OR o.service = p_service)
        GROUP BY 1
    )
    SELECT t.t, COALESCE(c.new_issue_errors, 0), COALESCE(c.known_issue_errors, 0)
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN counted c ON c.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_first_vs_repeat(timestamptz, timestamptz, text, text, interval) IS
    'Errors per bucket of issues first seen in the range against those of issues seen before it';

CREATE FUNCTION monitoring.dashboard_top_errors(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                                p_service text DEFAULT NULL, p_limit integer DEFAULT 10)
    RETURNS TABLE (fingerprint text, error_type text, title text, status text, occurrences bigint,
                   affected_users bigint, first_seen timestamptz, last_seen timestamptz, assignee text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT g.error_fingerprint, g.error_type, pg_catalog.left(g.title, 200), g.status, c.occurrences, c.users,
           c.first_seen, c.last_seen, g.assignee
    FROM (
        SELECT o.error_id, pg_catalog.count(*) AS occurrences,
               pg_catalog.count(DISTINCT monitoring._user_key(o.user_info, o.context)) AS users,
               pg_catalog.min(o.occurred_at) AS first_seen, pg_catalog.max(o.occurred_at) AS last_seen
        FROM monitoring.tb_error_occurrence o
        WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
          AND (p_environment IS NULL OR o.environment = p_environment)
          AND (p_service IS NULL OR o.service = p_service)
        GROUP BY o.error_id
    ) c
    JOIN monitoring.tb_error_log g ON g.error_id = c.error_id
    ORDER BY c.occurrences DESC, c.last_seen DESC, g.error_fingerprint
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_top_errors(timestamptz, timestamptz, text, text, integer) IS
    'The issues with the most occurrences in the range (any status), with users hit and current workflow state';

-- One function for the "errors by ..." panels: p_by names the dimension.
CREATE FUNCTION monitoring.dashboard_error_breakdown(p_from timestamptz, p_to timestamptz,
                                                     p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                     p_by text DEFAULT 'type', p_limit integer DEFAULT 10)
    RETURNS TABLE (key text, occurrences bigint, issues bigint, affected_users bigint)
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_by IS NULL OR p_by NOT IN ('environment', 'service', 'type', 'endpoint', 'level', 'release') THEN
        RAISE EXCEPTION 'dashboard_error_breakdown() breaks errors down by environment, service, type, endpoint, level or release, not %',
            COALESCE(pg_catalog.quote_literal(pg_catalog.left(p_by, 64)), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT COALESCE(CASE p_by
                        WHEN 'environment' THEN o.environment
                        WHEN 'service' THEN o.service
                        WHEN 'type' THEN o.exception_type
                        WHEN 'endpoint' THEN COALESCE(o.transaction_name,
                                                      pg_catalog.split_part(o.request ->> 'url', '?', 1))
                        WHEN 'level' THEN o.level
                        WHEN 'release' THEN o.release_version
                    END, '(none)') AS k,
           pg_catalog.count(*), pg_catalog.count(DISTINCT o.error_id),
           pg_catalog.count(DISTINCT monitoring._user_key(o.user_info, o.context))
    FROM monitoring.tb_error_occurrence o
    WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
      AND (p_environment IS NULL OR o.environment = p_environment)
      AND (p_service IS NULL OR o.service = p_service)
    GROUP BY 1
    ORDER BY 2 DESC, 1
    LIMIT GREATEST(p_limit, 0);
END
$$;
COMMENT ON FUNCTION monitoring.dashboard_error_breakdown(timestamptz, timestamptz, text, text, text, integer) IS
    'Errors in the range by environment, service, type, endpoint (transaction or request URL), level or release';

CREATE FUNCTION monitoring.dashboard_recent_errors(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                                   p_service text DEFAULT NULL, p_limit integer DEFAULT 50)
    RETURNS TABLE (occurred_at timestamptz, level text, environment text, service text, exception_type text,
                   message text, endpoint text, user_key text, fingerprint text, status text, trace_id text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.occurred_at, o.level, o.environment, o.service, o.exception_type, pg_catalog.left(o.message, 300),
           COALESCE(o.transaction_name, pg_catalog.split_part(o.request ->> 'url', '?', 1)),
           monitoring._user_key(o.user_info, o.context), g.error_fingerprint, g.status, o.trace_id
    FROM monitoring.tb_error_occurrence o
    JOIN monitoring.tb_error_log g ON g.error_id = o.error_id
    WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
      AND (p_environment IS NULL OR o.environment = p_environment)
      AND (p_service IS NULL OR o.service = p_service)
    ORDER BY o.occurred_at DESC
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_recent_errors(timestamptz, timestamptz, text, text, integer) IS
    'The latest error occurrences of the range, message cut to 300 characters';

CREATE FUNCTION monitoring.dashboard_issue_status(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                                  p_service text DEFAULT NULL)
    RETURNS TABLE (status text, issues bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT g.status, pg_catalog.count(*)
    FROM monitoring.tb_error_log g
    WHERE g.error_id IN (
        SELECT o.error_id FROM monitoring.tb_error_occurrence o
        WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
          AND (p_environment IS NULL OR o.environment = p_environment)
          AND (p_service IS NULL OR o.service = p_service))
    GROUP BY g.status
    ORDER BY CASE g.status WHEN 'unresolved' THEN 1 WHEN 'resolved' THEN 2 ELSE 3 END
$$;
COMMENT ON FUNCTION monitoring.dashboard_issue_status(timestamptz, timestamptz, text, text) IS
    'Issues that occurred in the range by their current status (unresolved, resolved, ignored)';

-- How long issues resolved in the range stayed open: from the group's first occurrence, or
-- from its last regression or reopening before the resolution.
CREATE FUNCTION monitoring.dashboard_resolution_time(p_from timestamptz, p_to timestamptz,
                                                     p_environment text DEFAULT NULL, p_service text DEFAULT NULL)
    RETURNS TABLE (resolved_issues bigint, median_hours double precision, p90_hours double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.count(*),
           pg_catalog.percentile_cont(0.5) WITHIN GROUP (ORDER BY r.hours),
           pg_catalog.percentile_cont(0.9) WITHIN GROUP (ORDER BY r.hours)
    FROM (
        SELECT EXTRACT(epoch FROM a.created_at - COALESCE(
                   (SELECT pg_catalog.max(b.created_at) FROM monitoring.error_activity b
                    WHERE b.error_id = a.error_id AND b.created_at < a.created_at
                      AND b.action IN ('regression', 'unresolve')),
                   g.first_seen))::double precision / 3600 AS hours
        FROM monitoring.error_activity a
        JOIN monitoring.tb_error_log g ON g.error_id = a.error_id
        WHERE a.action = 'resolve' AND a.created_at >= p_from AND a.created_at <= p_to
          AND (p_environment IS NULL OR p_environment = ANY (g.environments))
          AND (p_service IS NULL OR p_service = ANY (g.services))
    ) r
$$;
COMMENT ON FUNCTION monitoring.dashboard_resolution_time(timestamptz, timestamptz, text, text) IS
    'Issues resolved in the range and how long they were open (median and 90th percentile, hours)';

-- Failed access attempts: errors that say access was refused. The rule (docs/grafana.md):
-- SQLSTATE 42501, 28000 or 28P01 in a sqlstate/code tag or the message; an exception type
-- naming a permission, authorization or authentication failure; or HTTP status 401 or 403
-- in the tags or the Sentry response context.
CREATE FUNCTION monitoring.dashboard_failed_access(p_from timestamptz, p_to timestamptz,
                                                   p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                   p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, attempts bigint, users bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), counted AS (
        SELECT pg_catalog.date_bin(b.w, o.occurred_at, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.count(*) AS attempts,
               pg_catalog.count(DISTINCT monitoring._user_key(o.user_info, o.context)) AS users
        FROM width b, monitoring.tb_error_occurrence o
        WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
          AND (p_environment IS NULL OR o.environment = p_environment)
          AND (p_service IS NULL OR o.service = p_service)
          AND (o.exception_type ~* '(permission|forbidden|unauthori[sz]ed|access.?denied|insufficient.?privilege|not.?authenticated|authentication.?failed|invalid.?password)'
               OR o.message ~* '(permission denied|access denied|not authori[sz]ed|\m42501\M|\m28P01\M)'
               OR COALESCE(o.tags ->> 'sqlstate', o.tags ->> 'pgcode', o.context ->> 'sqlstate')
                      IN ('42501', '28000', '28P01')
               OR COALESCE(o.tags ->> 'http.status_code', o.tags ->> 'status_code',
                           o.context #>> '{contexts,response,status_code}', o.context ->> 'status_code')
                      IN ('401', '403'))
        GROUP BY 1
    )
    SELECT t.t, COALESCE(c.attempts, 0), COALESCE(c.users, 0)
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN counted c ON c.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_failed_access(timestamptz, timestamptz, text, text, interval) IS
    'Errors per bucket that record refused access (SQLSTATE 42501/28000/28P01, permission or auth exception types, HTTP 401/403), and the users';

-- Traces ---------------------------------------------------------------------------------
-- A request is an entry span: server or consumer, or a root (as request_rate() counts them).

CREATE FUNCTION monitoring.dashboard_requests(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                              p_service text DEFAULT NULL, p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, requests_per_second double precision, failed_per_second double precision,
                   error_rate_pct double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), counted AS (
        SELECT pg_catalog.date_bin(b.w, s.start_time, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.count(*) AS requests, pg_catalog.count(*) FILTER (WHERE s.status_code = 2) AS failed
        FROM width b, monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
        GROUP BY 1
    )
    SELECT t.t,
           COALESCE(c.requests, 0) / EXTRACT(epoch FROM b.w)::double precision,
           COALESCE(c.failed, 0) / EXTRACT(epoch FROM b.w)::double precision,
           CASE WHEN c.requests > 0 THEN 100.0 * c.failed / c.requests ELSE 0 END::double precision
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN counted c ON c.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_requests(timestamptz, timestamptz, text, text, interval) IS
    'Requests (server, consumer and root spans) per second per bucket, failed ones (status error) and the error rate in %';

CREATE FUNCTION monitoring.dashboard_latency(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                             p_service text DEFAULT NULL, p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, p50_ms double precision, p95_ms double precision, p99_ms double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), measured AS (
        SELECT pg_catalog.date_bin(b.w, s.start_time, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY s.duration_ms) AS q
        FROM width b, monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
        GROUP BY 1
    )
    SELECT t.t, m.q[1], m.q[2], m.q[3]
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN measured m ON m.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_latency(timestamptz, timestamptz, text, text, interval) IS
    'Request duration percentiles (p50, p95, p99, ms) per bucket; empty buckets give NULL (a gap)';

-- Requests as a heatmap: how many fell in each duration class (column names are the classes'
-- upper bounds in ms, as Grafana's heatmap reads pre-bucketed data).
CREATE FUNCTION monitoring.dashboard_request_heatmap(p_from timestamptz, p_to timestamptz,
                                                     p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                     p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, "10" bigint, "50" bigint, "100" bigint, "250" bigint, "500" bigint,
                   "1000" bigint, "2500" bigint, "5000" bigint, "+Inf" bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), counted AS (
        SELECT pg_catalog.date_bin(b.w, s.start_time, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms <= 10) AS c10,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 10 AND s.duration_ms <= 50) AS c50,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 50 AND s.duration_ms <= 100) AS c100,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 100 AND s.duration_ms <= 250) AS c250,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 250 AND s.duration_ms <= 500) AS c500,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 500 AND s.duration_ms <= 1000) AS c1000,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 1000 AND s.duration_ms <= 2500) AS c2500,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 2500 AND s.duration_ms <= 5000) AS c5000,
               pg_catalog.count(*) FILTER (WHERE s.duration_ms > 5000) AS cinf
        FROM width b, monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
        GROUP BY 1
    )
    SELECT t.t, COALESCE(c.c10, 0), COALESCE(c.c50, 0), COALESCE(c.c100, 0), COALESCE(c.c250, 0),
           COALESCE(c.c500, 0), COALESCE(c.c1000, 0), COALESCE(c.c2500, 0), COALESCE(c.c5000, 0),
           COALESCE(c.cinf, 0)
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN counted c ON c.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_request_heatmap(timestamptz, timestamptz, text, text, interval) IS
    'Requests per bucket and duration class (columns: upper bounds in ms), for a Grafana heatmap';

-- Operations (entry spans by name). p_order: requests, p99_ms or error_rate_pct.
CREATE FUNCTION monitoring.dashboard_operations(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                                p_service text DEFAULT NULL, p_order text DEFAULT 'requests',
                                                p_limit integer DEFAULT 10)
    RETURNS TABLE (service text, operation_name text, requests bigint, failed bigint, error_rate_pct double precision,
                   p50_ms double precision, p95_ms double precision, p99_ms double precision, max_ms double precision)
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_order IS NULL OR p_order NOT IN ('requests', 'p99_ms', 'error_rate_pct') THEN
        RAISE EXCEPTION 'dashboard_operations() orders by requests, p99_ms or error_rate_pct, not %',
            COALESCE(pg_catalog.quote_literal(pg_catalog.left(p_order, 64)), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT o.service, o.operation_name, o.requests, o.failed, o.rate, o.q[1], o.q[2], o.q[3], o.longest
    FROM (
        SELECT s.service, s.operation_name, pg_catalog.count(*) AS requests,
               pg_catalog.count(*) FILTER (WHERE s.status_code = 2) AS failed,
               (100.0 * pg_catalog.count(*) FILTER (WHERE s.status_code = 2) / pg_catalog.count(*))::double precision AS rate,
               pg_catalog.percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY s.duration_ms) AS q,
               pg_catalog.max(s.duration_ms) AS longest
        FROM monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
        GROUP BY s.service, s.operation_name
    ) o
    ORDER BY CASE p_order WHEN 'requests' THEN o.requests::double precision
                          WHEN 'p99_ms' THEN o.q[3]
                          ELSE o.rate END DESC,
             o.requests DESC, o.service, o.operation_name
    LIMIT GREATEST(p_limit, 0);
END
$$;
COMMENT ON FUNCTION monitoring.dashboard_operations(timestamptz, timestamptz, text, text, text, integer) IS
    'Requests by service and operation in the range: count, failed, error rate, p50/p95/p99/max ms; top by requests, p99_ms or error_rate_pct';

CREATE FUNCTION monitoring.dashboard_operation_types(p_from timestamptz, p_to timestamptz,
                                                     p_environment text DEFAULT NULL, p_service text DEFAULT NULL)
    RETURNS TABLE (operation_type text, requests bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(NULLIF(s.attributes ->> 'graphql.operation.type', ''), s.kind), pg_catalog.count(*)
    FROM monitoring.spans s
    WHERE s.start_time >= p_from AND s.start_time <= p_to
      AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
      AND (p_environment IS NULL OR s.environment = p_environment)
      AND (p_service IS NULL OR s.service = p_service)
    GROUP BY 1
    ORDER BY 2 DESC, 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_operation_types(timestamptz, timestamptz, text, text) IS
    'Requests by GraphQL operation type (span attribute graphql.operation.type), else by span kind';

CREATE FUNCTION monitoring.dashboard_span_status(p_from timestamptz, p_to timestamptz,
                                                 p_environment text DEFAULT NULL, p_service text DEFAULT NULL)
    RETURNS TABLE (status text, spans bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE s.status_code WHEN 0 THEN 'unset' WHEN 1 THEN 'ok' ELSE 'error' END, pg_catalog.count(*)
    FROM monitoring.spans s
    WHERE s.start_time >= p_from AND s.start_time <= p_to
      AND (p_environment IS NULL OR s.environment = p_environment)
      AND (p_service IS NULL OR s.service = p_service)
    GROUP BY s.status_code
    ORDER BY s.status_code
$$;
COMMENT ON FUNCTION monitoring.dashboard_span_status(timestamptz, timestamptz, text, text) IS
    'Spans of the range by status (unset, ok, error)';

-- Database calls are spans with OpenTelemetry's db.system (or db.system.name) attribute.
CREATE FUNCTION monitoring.dashboard_db_queries(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                                p_service text DEFAULT NULL, p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, queries_per_second double precision, failed_per_second double precision,
                   p50_ms double precision, p95_ms double precision, p99_ms double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), measured AS (
        SELECT pg_catalog.date_bin(b.w, s.start_time, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.count(*) AS queries, pg_catalog.count(*) FILTER (WHERE s.status_code = 2) AS failed,
               pg_catalog.percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY s.duration_ms) AS q
        FROM width b, monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.attributes ? 'db.system' OR s.attributes ? 'db.system.name')
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
        GROUP BY 1
    )
    SELECT t.t,
           COALESCE(m.queries, 0) / EXTRACT(epoch FROM b.w)::double precision,
           COALESCE(m.failed, 0) / EXTRACT(epoch FROM b.w)::double precision,
           m.q[1], m.q[2], m.q[3]
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN measured m ON m.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_db_queries(timestamptz, timestamptz, text, text, interval) IS
    'Database calls (spans with db.system) per second per bucket, failed ones, and their p50/p95/p99 duration in ms';

-- Users and tenants ----------------------------------------------------------------------
-- A request's user is its span attribute enduser.id, else user.id; its tenant tenant.id, else
-- tenant. An error's user is what _user_key() takes (user id, e-mail, name, ip, context
-- user_id); its tenant the tag tenant.id, else tenant.

CREATE FUNCTION monitoring.dashboard_users(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                           p_service text DEFAULT NULL, p_limit integer DEFAULT 20)
    RETURNS TABLE (user_id text, tenant text, requests bigint, operations bigint, failed bigint,
                   error_rate_pct double precision, last_seen timestamptz)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT u.user_id, (pg_catalog.array_agg(u.tenant ORDER BY u.start_time DESC) FILTER (WHERE u.tenant IS NOT NULL))[1],
           pg_catalog.count(*), pg_catalog.count(DISTINCT u.operation_name),
           pg_catalog.count(*) FILTER (WHERE u.status_code = 2),
           (100.0 * pg_catalog.count(*) FILTER (WHERE u.status_code = 2) / pg_catalog.count(*))::double precision,
           pg_catalog.max(u.start_time)
    FROM (
        SELECT COALESCE(s.attributes ->> 'enduser.id', s.attributes ->> 'user.id') AS user_id,
               COALESCE(s.attributes ->> 'tenant.id', s.attributes ->> 'tenant') AS tenant,
               s.operation_name, s.status_code, s.start_time
        FROM monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
    ) u
    WHERE u.user_id IS NOT NULL
    GROUP BY u.user_id
    ORDER BY 3 DESC, 1
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_users(timestamptz, timestamptz, text, text, integer) IS
    'Users (span attribute enduser.id or user.id) by requests in the range: tenant, distinct operations, failed, error rate';

CREATE FUNCTION monitoring.dashboard_user_errors(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                                 p_service text DEFAULT NULL, p_limit integer DEFAULT 20)
    RETURNS TABLE (user_key text, tenant text, errors bigint, issues bigint, last_error timestamptz)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT u.user_key, (pg_catalog.array_agg(u.tenant ORDER BY u.occurred_at DESC) FILTER (WHERE u.tenant IS NOT NULL))[1],
           pg_catalog.count(*), pg_catalog.count(DISTINCT u.error_id), pg_catalog.max(u.occurred_at)
    FROM (
        SELECT monitoring._user_key(o.user_info, o.context) AS user_key,
               COALESCE(o.tags ->> 'tenant.id', o.tags ->> 'tenant') AS tenant, o.error_id, o.occurred_at
        FROM monitoring.tb_error_occurrence o
        WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
          AND (p_environment IS NULL OR o.environment = p_environment)
          AND (p_service IS NULL OR o.service = p_service)
    ) u
    WHERE u.user_key IS NOT NULL
    GROUP BY u.user_key
    ORDER BY 3 DESC, 1
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_user_errors(timestamptz, timestamptz, text, text, integer) IS
    'Users hit by errors in the range: tenant (tag tenant.id or tenant), errors, distinct issues, latest error';

CREATE FUNCTION monitoring.dashboard_tenants(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                             p_service text DEFAULT NULL, p_limit integer DEFAULT 20)
    RETURNS TABLE (tenant text, active_users bigint, requests bigint, failed bigint, error_rate_pct double precision,
                   p95_ms double precision, errors bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH requests AS (
        SELECT COALESCE(s.attributes ->> 'tenant.id', s.attributes ->> 'tenant') AS tenant,
               pg_catalog.count(DISTINCT COALESCE(s.attributes ->> 'enduser.id', s.attributes ->> 'user.id')) AS users,
               pg_catalog.count(*) AS requests, pg_catalog.count(*) FILTER (WHERE s.status_code = 2) AS failed,
               pg_catalog.percentile_cont(0.95) WITHIN GROUP (ORDER BY s.duration_ms) AS p95
        FROM monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
          AND COALESCE(s.attributes ->> 'tenant.id', s.attributes ->> 'tenant') IS NOT NULL
        GROUP BY 1
    ), errors AS (
        SELECT COALESCE(o.tags ->> 'tenant.id', o.tags ->> 'tenant') AS tenant, pg_catalog.count(*) AS errors
        FROM monitoring.tb_error_occurrence o
        WHERE o.occurred_at >= p_from AND o.occurred_at <= p_to
          AND (p_environment IS NULL OR o.environment = p_environment)
          AND (p_service IS NULL OR o.service = p_service)
          AND COALESCE(o.tags ->> 'tenant.id', o.tags ->> 'tenant') IS NOT NULL
        GROUP BY 1
    )
    SELECT COALESCE(r.tenant, e.tenant), COALESCE(r.users, 0), COALESCE(r.requests, 0), COALESCE(r.failed, 0),
           CASE WHEN r.requests > 0 THEN 100.0 * r.failed / r.requests ELSE 0 END::double precision,
           r.p95, COALESCE(e.errors, 0)
    FROM requests r
    FULL JOIN errors e ON e.tenant = r.tenant
    ORDER BY 3 DESC, 7 DESC, 1
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_tenants(timestamptz, timestamptz, text, text, integer) IS
    'Tenants (span attribute or error tag tenant.id or tenant) side by side: active users, requests, failures, p95 ms, errors';

-- New users: users whose first request in the range has no request in p_lookback before the
-- range (the span retention bounds what can be known; a week by default keeps it cheap).
CREATE FUNCTION monitoring.dashboard_new_users(p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL,
                                               p_service text DEFAULT NULL, p_bucket interval DEFAULT '1 hour',
                                               p_lookback interval DEFAULT '7 days')
    RETURNS TABLE ("time" timestamptz, new_users bigint, active_users bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), seen AS (
        SELECT COALESCE(s.attributes ->> 'enduser.id', s.attributes ->> 'user.id') AS user_id,
               pg_catalog.date_bin(b.w, s.start_time, '2000-01-01 00:00:00+00') AS bucket
        FROM width b, monitoring.spans s
        WHERE s.start_time >= p_from AND s.start_time <= p_to
          AND (s.kind IN ('server', 'consumer') OR s.parent_span_id IS NULL)
          AND (p_environment IS NULL OR s.environment = p_environment)
          AND (p_service IS NULL OR s.service = p_service)
          AND COALESCE(s.attributes ->> 'enduser.id', s.attributes ->> 'user.id') IS NOT NULL
        GROUP BY 1, 2
    ), firsts AS (
        SELECT f.user_id, pg_catalog.min(f.bucket) AS bucket FROM seen f
        WHERE NOT EXISTS (
            SELECT FROM monitoring.spans p
            WHERE p.start_time >= p_from - GREATEST(p_lookback, interval '0') AND p.start_time < p_from
              AND (p.kind IN ('server', 'consumer') OR p.parent_span_id IS NULL)
              AND (p_environment IS NULL OR p.environment = p_environment)
              AND (p_service IS NULL OR p.service = p_service)
              AND COALESCE(p.attributes ->> 'enduser.id', p.attributes ->> 'user.id') = f.user_id)
        GROUP BY f.user_id
    ), new_users AS (
        SELECT f.bucket, pg_catalog.count(*) AS n FROM firsts f GROUP BY f.bucket
    ), active_users AS (
        SELECT a.bucket, pg_catalog.count(*) AS n FROM seen a GROUP BY a.bucket
    )
    SELECT t.t, COALESCE(n.n, 0), COALESCE(a.n, 0)
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN new_users n ON n.bucket = t.t
    LEFT JOIN active_users a ON a.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_new_users(timestamptz, timestamptz, text, text, interval, interval) IS
    'Users per bucket: first seen (no request in p_lookback before the range) and active';

-- Metrics (from the per-minute rollups) ---------------------------------------------------
-- Buckets are at least a minute. Applications name their metrics; the dashboards use seed
-- 000's names (graphql.requests.total, graphql.request.duration_ms, db.pool.connections.*).

CREATE FUNCTION monitoring.dashboard_metric_rate(p_from timestamptz, p_to timestamptz,
                                                 p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                 p_bucket interval DEFAULT '1 minute',
                                                 p_metric text DEFAULT 'graphql.requests.total')
    RETURNS TABLE ("time" timestamptz, per_second double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket, interval '1 minute') AS w
    ), summed AS (
        SELECT pg_catalog.date_bin(b.w, r.bucket, '2000-01-01 00:00:00+00') AS bucket, pg_catalog.sum(r.value_sum) AS total
        FROM width b, monitoring.metric_rollups_1m r
        WHERE r.bucket >= pg_catalog.date_trunc('minute', p_from) AND r.bucket <= p_to
          AND r.metric_name = p_metric AND r.metric_type = 'counter'
          AND (p_environment IS NULL OR r.environment = p_environment)
          AND (p_service IS NULL OR r.service = p_service)
        GROUP BY 1
    )
    SELECT t.t, COALESCE(m.total, 0) / EXTRACT(epoch FROM b.w)::double precision
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN summed m ON m.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_metric_rate(timestamptz, timestamptz, text, text, interval, text) IS
    'A counter''s increase per second per bucket, summed over its series (labels, services), from metric_rollups_1m';

-- A gauge: per minute the sum of its series' last readings (e.g. every pod's pool), per bucket
-- the mean of those minutes.
CREATE FUNCTION monitoring.dashboard_metric_gauge(p_from timestamptz, p_to timestamptz,
                                                  p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                  p_bucket interval DEFAULT '1 minute',
                                                  p_metric text DEFAULT 'db.pool.connections.active')
    RETURNS TABLE ("time" timestamptz, value double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket, interval '1 minute') AS w
    ), minutes AS (
        SELECT r.bucket AS minute, pg_catalog.sum(r.value_last) AS total
        FROM monitoring.metric_rollups_1m r
        WHERE r.bucket >= pg_catalog.date_trunc('minute', p_from) AND r.bucket <= p_to
          AND r.metric_name = p_metric AND r.metric_type = 'gauge'
          AND (p_environment IS NULL OR r.environment = p_environment)
          AND (p_service IS NULL OR r.service = p_service)
        GROUP BY r.bucket
    ), averaged AS (
        SELECT pg_catalog.date_bin(b.w, m.minute, '2000-01-01 00:00:00+00') AS bucket, pg_catalog.avg(m.total) AS value
        FROM width b, minutes m
        GROUP BY 1
    )
    SELECT t.t, a.value
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN averaged a ON a.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_metric_gauge(timestamptz, timestamptz, text, text, interval, text) IS
    'A gauge per bucket: the sum of its series'' last reading per minute, averaged over the bucket''s minutes (NULL without data)';

-- Percentiles of several minutes cannot be combined exactly: each is the mean of the minutes'
-- percentiles weighted by their observations (exact for one series and one-minute buckets).
CREATE FUNCTION monitoring.dashboard_metric_histogram(p_from timestamptz, p_to timestamptz,
                                                      p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                      p_bucket interval DEFAULT '1 minute',
                                                      p_metric text DEFAULT 'graphql.request.duration_ms')
    RETURNS TABLE ("time" timestamptz, observations bigint, p50 double precision, p95 double precision,
                   p99 double precision)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket, interval '1 minute') AS w
    ), combined AS (
        SELECT pg_catalog.date_bin(b.w, r.bucket, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.sum(r.sample_count) AS n,
               pg_catalog.sum(r.p50 * r.sample_count) / pg_catalog.sum(r.sample_count) AS p50,
               pg_catalog.sum(r.p95 * r.sample_count) / pg_catalog.sum(r.sample_count) AS p95,
               pg_catalog.sum(r.p99 * r.sample_count) / pg_catalog.sum(r.sample_count) AS p99
        FROM width b, monitoring.metric_rollups_1m r
        WHERE r.bucket >= pg_catalog.date_trunc('minute', p_from) AND r.bucket <= p_to
          AND r.metric_name = p_metric AND r.metric_type = 'histogram'
          AND (p_environment IS NULL OR r.environment = p_environment)
          AND (p_service IS NULL OR r.service = p_service)
        GROUP BY 1
    )
    SELECT t.t, COALESCE(c.n, 0)::bigint, c.p50, c.p95, c.p99
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN combined c ON c.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_metric_histogram(timestamptz, timestamptz, text, text, interval, text) IS
    'A histogram per bucket: observations and p50/p95/p99 (observation-weighted mean of the minutes'' percentiles)';

-- Audit (the entity change log and the issue workflow) ------------------------------------
-- The change log has no environment or service: its panels ignore those variables.

CREATE FUNCTION monitoring.dashboard_audit_events(p_from timestamptz, p_to timestamptz, p_limit integer DEFAULT 100)
    RETURNS TABLE (changed_at timestamptz, entity_name text, entity_id text, change_type text, changed_columns text,
                   changed_by text, application_user text, table_name text, trace_id text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.changed_at, c.entity_name, pg_catalog.left(c.entity_id, 200), c.change_type,
           pg_catalog.array_to_string(c.changed_columns, ', '), c.changed_by, c.application_user, c.table_name,
           c.trace_id
    FROM monitoring.tb_entity_change_log c
    WHERE c.changed_at >= p_from AND c.changed_at <= p_to
    ORDER BY c.changed_at DESC, c.change_id DESC
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_audit_events(timestamptz, timestamptz, integer) IS
    'The latest entity changes of the range (who, what, which columns), without the row data';

CREATE FUNCTION monitoring.dashboard_audit_event_types(p_from timestamptz, p_to timestamptz,
                                                       p_bucket interval DEFAULT '1 minute')
    RETURNS TABLE ("time" timestamptz, inserts bigint, updates bigint, deletes bigint, truncates bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH width AS (
        SELECT monitoring._dashboard_bucket(p_from, p_to, p_bucket) AS w
    ), counted AS (
        SELECT pg_catalog.date_bin(b.w, c.changed_at, '2000-01-01 00:00:00+00') AS bucket,
               pg_catalog.count(*) FILTER (WHERE c.change_type = 'INSERT') AS inserts,
               pg_catalog.count(*) FILTER (WHERE c.change_type = 'UPDATE') AS updates,
               pg_catalog.count(*) FILTER (WHERE c.change_type = 'DELETE') AS deletes,
               pg_catalog.count(*) FILTER (WHERE c.change_type = 'TRUNCATE') AS truncates
        FROM width b, monitoring.tb_entity_change_log c
        WHERE c.changed_at >= p_from AND c.changed_at <= p_to
        GROUP BY 1
    )
    SELECT t.t, COALESCE(c.inserts, 0), COALESCE(c.updates, 0), COALESCE(c.deletes, 0), COALESCE(c.truncates, 0)
    FROM width b
    CROSS JOIN LATERAL monitoring._dashboard_times(p_from, p_to, b.w) AS t(t)
    LEFT JOIN counted c ON c.bucket = t.t
    ORDER BY 1
$$;
COMMENT ON FUNCTION monitoring.dashboard_audit_event_types(timestamptz, timestamptz, interval) IS
    'Entity changes per bucket by type (INSERT, UPDATE, DELETE, TRUNCATE)';

-- Admin actions: the issue workflow (resolve, ignore, assign, ... and by whom).
CREATE FUNCTION monitoring.dashboard_admin_actions(p_from timestamptz, p_to timestamptz,
                                                   p_environment text DEFAULT NULL, p_service text DEFAULT NULL,
                                                   p_limit integer DEFAULT 100)
    RETURNS TABLE (created_at timestamptz, actor text, action text, fingerprint text, title text, details text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.created_at, a.actor, a.action, g.error_fingerprint, pg_catalog.left(g.title, 200),
           pg_catalog.left(a.details::text, 300)
    FROM monitoring.error_activity a
    JOIN monitoring.tb_error_log g ON g.error_id = a.error_id
    WHERE a.created_at >= p_from AND a.created_at <= p_to
      AND a.action NOT IN ('first_seen', 'regression')
      AND (p_environment IS NULL OR p_environment = ANY (g.environments))
      AND (p_service IS NULL OR p_service = ANY (g.services))
    ORDER BY a.created_at DESC, a.activity_id DESC
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_admin_actions(timestamptz, timestamptz, text, text, integer) IS
    'Workflow actions people took on issues in the range (resolve, unresolve, ignore, unignore, assign, unassign), by whom';

-- Permission changes: changes to tracked tables whose entity or table name speaks of roles,
-- permissions, privileges, grants, ACLs or memberships.
CREATE FUNCTION monitoring.dashboard_permission_changes(p_from timestamptz, p_to timestamptz,
                                                        p_limit integer DEFAULT 100)
    RETURNS TABLE (changed_at timestamptz, entity_name text, entity_id text, change_type text, changed_columns text,
                   changed_by text, application_user text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.changed_at, c.entity_name, pg_catalog.left(c.entity_id, 200), c.change_type,
           pg_catalog.array_to_string(c.changed_columns, ', '), c.changed_by, c.application_user
    FROM monitoring.tb_entity_change_log c
    WHERE c.changed_at >= p_from AND c.changed_at <= p_to
      AND (c.entity_name ~* '(role|permission|privilege|grant|acl|membership)'
           OR c.table_name ~* '(role|permission|privilege|grant|acl|membership)')
    ORDER BY c.changed_at DESC, c.change_id DESC
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_permission_changes(timestamptz, timestamptz, integer) IS
    'Changes to tracked tables whose entity or table name speaks of roles, permissions, privileges, grants, ACLs or memberships';

-- Who changes what: the change log records writes (not reads), by application user and role.
CREATE FUNCTION monitoring.dashboard_changes_by_actor(p_from timestamptz, p_to timestamptz, p_limit integer DEFAULT 20)
    RETURNS TABLE (actor text, database_role text, entity_name text, inserts bigint, updates bigint, deletes bigint,
                   last_change timestamptz)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(c.application_user, c.changed_by), c.changed_by, c.entity_name,
           pg_catalog.count(*) FILTER (WHERE c.change_type = 'INSERT'),
           pg_catalog.count(*) FILTER (WHERE c.change_type = 'UPDATE'),
           pg_catalog.count(*) FILTER (WHERE c.change_type IN ('DELETE', 'TRUNCATE')),
           pg_catalog.max(c.changed_at)
    FROM monitoring.tb_entity_change_log c
    WHERE c.changed_at >= p_from AND c.changed_at <= p_to
    GROUP BY 1, 2, 3
    ORDER BY pg_catalog.count(*) DESC, 1, 3
    LIMIT GREATEST(p_limit, 0)
$$;
COMMENT ON FUNCTION monitoring.dashboard_changes_by_actor(timestamptz, timestamptz, integer) IS
    'Entity changes in the range per actor (application user, else database role) and entity';

-- Time since the newest change (identity order: the newest rows of each partition's key).
CREATE FUNCTION monitoring.dashboard_audit_lag()
    RETURNS TABLE (seconds_since_last_change double precision, changes_last_hour bigint)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    -- changes of a transaction still running are later than its now(): no negative lag
    -- (GREATEST ignores a NULL, so no change at all stays NULL only through the CASE)
    SELECT CASE WHEN l.newest IS NOT NULL
                THEN GREATEST(EXTRACT(epoch FROM pg_catalog.now() - l.newest), 0)::double precision END,
           (SELECT pg_catalog.count(*) FROM monitoring.tb_entity_change_log c
            WHERE c.changed_at > pg_catalog.now() - interval '1 hour')
    FROM (SELECT pg_catalog.max(n.changed_at) AS newest FROM (
              SELECT c.changed_at FROM monitoring.tb_entity_change_log c
              ORDER BY c.change_id DESC LIMIT 100) n) l
$$;
COMMENT ON FUNCTION monitoring.dashboard_audit_lag() IS
    'Seconds since the newest entity change (NULL when there is none) and the changes of the last hour';

-- Compliance: is the audit trail being written and kept. Reads H1's partition_health.
CREATE FUNCTION monitoring.dashboard_compliance_status()
    RETURNS TABLE (check_name text, status text, detail text)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'change tracking',
           CASE WHEN pg_catalog.count(*) > 0 THEN 'ok' ELSE 'warning' END,
           CASE WHEN pg_catalog.count(*) > 0
                THEN pg_catalog.left(pg_catalog.format('%s tables tracked: %s', pg_catalog.count(*),
                         pg_catalog.string_agg(t.entity_name, ', ' ORDER BY t.entity_name)), 300)
                ELSE 'no table is tracked: SELECT monitoring.track_changes(''schema.table'')' END
    FROM monitoring.tracked_tables t
    UNION ALL
    SELECT 'change log retention',
           CASE WHEN c.retention IS NULL OR c.retention >= interval '1 year' THEN 'ok' ELSE 'warning' END,
           CASE WHEN c.retention IS NULL THEN 'changes are kept forever'
                ELSE pg_catalog.format('changes are kept %s (audit trails are commonly kept a year or more)',
                                       c.retention) END
    FROM monitoring.time_series_config c
    WHERE c.parent_table = 'monitoring.tb_entity_change_log'
    UNION ALL
    SELECT 'change log partitions', p.status,
           pg_catalog.format('%s partitions, %s made ahead, %s rows waiting in the default partition',
                             p.partitions, p.partitions_ahead, p.default_partition_rows)
    FROM monitoring.partition_health p
    WHERE p.parent_table = 'monitoring.tb_entity_change_log'
$$;
COMMENT ON FUNCTION monitoring.dashboard_compliance_status() IS
    'Audit trail checks (ok/warning/critical): tables tracked, change log retention (a year or more), change log partitions';

-- PostgreSQL's counters for this database since its statistics were reset (pg_stat_database
-- keeps no history: these are totals and averages, not time series).
CREATE FUNCTION monitoring.dashboard_database_activity()
    RETURNS TABLE (commits bigint, rollbacks bigint, rollback_pct double precision, deadlocks bigint,
                   conflicts bigint, temp_bytes bigint, rows_returned bigint, rows_fetched bigint,
                   rows_inserted bigint, rows_updated bigint, rows_deleted bigint, sessions bigint,
                   sessions_per_minute double precision, stats_since timestamptz)
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.xact_commit, d.xact_rollback,
           (100.0 * d.xact_rollback / NULLIF(d.xact_commit + d.xact_rollback, 0))::double precision,
           d.deadlocks, d.conflicts, d.temp_bytes, d.tup_returned, d.tup_fetched, d.tup_inserted, d.tup_updated,
           d.tup_deleted, d.sessions,
           (d.sessions / NULLIF(EXTRACT(epoch FROM pg_catalog.now()
                                        - COALESCE(d.stats_reset, pg_catalog.pg_postmaster_start_time())) / 60, 0))::double precision,
           COALESCE(d.stats_reset, pg_catalog.pg_postmaster_start_time())
    FROM pg_catalog.pg_stat_database d
    WHERE d.datname = pg_catalog.current_database()
$$;
COMMENT ON FUNCTION monitoring.dashboard_database_activity() IS
    'This database since its statistics reset: commits, rollbacks (and %), deadlocks, rows read and written, sessions and sessions per minute';

-- sql/500_cache.sql
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
    CONSTRAINT cache_entries_pkey PRIMARY KEY (namespace, key)
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

