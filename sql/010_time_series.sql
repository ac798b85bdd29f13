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

-- @include sql/include/time_series_retention.sql
