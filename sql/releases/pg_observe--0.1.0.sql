\echo Use "CREATE EXTENSION pg_observe" to load this file. \quit
-- Released install script of pg_observe 0.1.0, kept as it shipped: do not edit.
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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

CREATE FUNCTION monitoring._run_maintenance(p_caller_search_path text)
    RETURNS TABLE (task text, target text, result text)
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
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
            -- pg_partman copies every column; generated ones must be left to be computed.
            EXECUTE pg_catalog.format(
                'SELECT %I.partition_data_time(p_parent_table => $1, p_batch_count => 100, p_analyze => false,'
                ' p_ignored_columns => $2)', partman)
                INTO batch
                USING cfg.parent_table,
                      (SELECT pg_catalog.array_agg(a.attname::text) FROM pg_catalog.pg_attribute a
                       WHERE a.attrelid OPERATOR(pg_catalog.=) cfg.parent_table::regclass
                         AND a.attgenerated OPERATOR(pg_catalog.<>) '' AND NOT a.attisdropped);
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

    FOR job IN SELECT * FROM monitoring.maintenance_task t ORDER BY t.run_order, t.task_name LOOP
        task := job.task_name;
        target := job.function_name;
        EXECUTE pg_catalog.format('SELECT %s()', job.function_name) INTO result;
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

-- The jobs pg_observe needs, as one list, so that scheduling and cleanup agree.
CREATE FUNCTION monitoring._maintenance_jobs()
    RETURNS TABLE (job_name text, schedule text, command text)
    LANGUAGE sql
    IMMUTABLE
    SET search_path = ''
AS $$
    VALUES ('pg_observe_maintenance', '*/5 * * * *', 'SELECT monitoring.run_maintenance()')
$$;
COMMENT ON FUNCTION monitoring._maintenance_jobs() IS 'pg_cron jobs that schedule_maintenance() registers';

-- pg_cron always makes schema cron, where it is installed at all. Callers name it through a
-- variable, so that the static check of their bodies does not need pg_cron installed.
CREATE FUNCTION monitoring._cron_schema()
    RETURNS name
    LANGUAGE sql
    STABLE
    SET search_path = ''
AS $$
    SELECT 'cron'::name FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'pg_cron'
$$;
COMMENT ON FUNCTION monitoring._cron_schema() IS 'Schema of pg_cron''s jobs (cron), or NULL where pg_cron is not installed';

CREATE FUNCTION monitoring.schedule_maintenance()
    RETURNS TABLE (job_name text, schedule text, command text, jobid bigint)
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
CREATE FUNCTION monitoring._plpython_runtime() RETURNS jsonb LANGUAGE plpython3u STABLE SET search_path = ''
AS $pyfn$
# pg_observe:function monitoring._plpython_runtime() RETURNS jsonb LANGUAGE plpython3u STABLE SET search_path = ''
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

-- sql/990_reset_search_path.sql
-- pg_partman's create_parent() above left the script's search_path set at session level
-- (it restores with a session-level set_config). Give the session its default back.
RESET search_path;

