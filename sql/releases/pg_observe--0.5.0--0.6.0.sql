\echo Use "CREATE EXTENSION pg_observe" to load this file. \quit
-- Released upgrade script of pg_observe 0.5.0 -> 0.6.0, kept as it shipped: do not edit.

-- sql/updates/pg_observe--0.5.0--0.6.0.sql
-- 0.5.0 -> 0.6.0: operations (health checks, database-health views, Prometheus exposition,
-- dashboard functions) and the cache (UNLOGGED tables with TTL). New objects come from the
-- same files as a fresh install; make test compares an upgraded database with a fresh one.

-- pg_dump keeps the identity sequences' values: restored ids are not handed out again (one
-- call a statement: each rewrites the extension's row).
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_activity_activity_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_fingerprint_rule_rule_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.notification_queue_queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.rejected_telemetry_rejected_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.metrics_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.tb_entity_change_log_change_id_seq', '');

-- The audit dashboards read recent changes of every entity.
CREATE INDEX tb_entity_change_log_changed_at_brin ON monitoring.tb_entity_change_log USING brin (changed_at);

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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
END
$$;
COMMENT ON FUNCTION monitoring._health_queue() IS
    'health() checks notification_backlog (how long the oldest due message has waited) and dead_notifications';

CREATE OR REPLACE FUNCTION monitoring._health_deliveries()
    RETURNS SETOF monitoring.health_check
    LANGUAGE plpgsql
    STABLE
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    CONSTRAINT cache_entries_pkey PRIMARY KEY (namespace, key),
    -- One CHECK only: PostgreSQL prepares every CHECK anew for each INSERT, which a cache pays
    -- on every set. The functions enforce the limits of keys (1024 bytes) and namespaces (1 to
    -- 64); a btree entry could not hold more than ~2700 bytes anyway.
    CONSTRAINT cache_entries_value_typed CHECK (
        value_type = 'json' AND value IS NOT NULL AND value_bytes IS NULL
        OR value_type IN ('bytes', 'text') AND value IS NULL AND value_bytes IS NOT NULL)
);
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
-- never wait for each other), after every 100 calls or 10 seconds (see _cache_note);
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

-- sql/include/cache_functions.sql
-- Functions of the cache (included by sql/500_cache.sql and by the upgrade scripts, hence
-- CREATE OR REPLACE). docs/cache.md is their reference.
--
-- Every function the applications call is SECURITY DEFINER: nobody but the owner (and
-- observe_admin) may touch the tables, so every write passes the key, TTL and value checks
-- and is counted. The hot ones (get, set) are PL/pgSQL, whose plans a session keeps; a SQL
-- function that cannot be inlined (a SET clause) would be planned again at every call.
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
    SET search_path = ''
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
    SET search_path = ''
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

-- Counting without a write per call. A backend keeps the events of one namespace in two
-- session settings: pg_observe.cache_namespace, and pg_observe.cache_pending, the Unix second
-- of its first event (10 digits) followed by one letter per event (h hit, m miss, s set).
-- cache_get, cache_get_entry and cache_set append their letter inline (a few microseconds);
-- _cache_note() adds everything to the backend's own row of cache_counters once 100 events
-- are pending, once the first is 10 seconds old, or when another namespace is counted.
-- Settings follow the transaction: the events of a rolled-back call are not counted. A
-- session can only forge its own counts (a setting that is not well-formed is dropped).

CREATE OR REPLACE FUNCTION monitoring._cache_note(p_namespace text, p_hits bigint, p_misses bigint, p_sets bigint,
                                                  p_flush boolean DEFAULT false)
    RETURNS boolean
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
AS $$
DECLARE
    pending_namespace text := pg_catalog.current_setting('pg_observe.cache_namespace', true);
    pending text := pg_catalog.current_setting('pg_observe.cache_pending', true);
    now_epoch bigint := pg_catalog.date_part('epoch', pg_catalog.now())::bigint;
BEGIN
    IF pending !~ '^[0-9]{10}[hms]*$' OR pg_catalog.octet_length(pending_namespace) NOT BETWEEN 1 AND 64 THEN
        pending := NULL;   -- not ours, or forged: dropped
    END IF;
    IF NOT p_flush AND pending_namespace = p_namespace AND pg_catalog.length(pending) + p_hits + p_misses + p_sets < 110
       AND pg_catalog.left(pending, 10)::bigint >= now_epoch - 10 THEN
        pending := pg_catalog.set_config('pg_observe.cache_pending',
                                         pending || pg_catalog.repeat('h', p_hits::integer)
                                         || pg_catalog.repeat('m', p_misses::integer) || pg_catalog.repeat('s', p_sets::integer),
                                         false);
        RETURN true;
    END IF;
    IF pg_catalog.current_setting('transaction_read_only') = 'on' THEN
        -- read-only transactions (and standbys) cannot write: keep counting, up to a bound
        IF pending_namespace = p_namespace AND pg_catalog.length(pending) + p_hits + p_misses + p_sets < 10000 THEN
            pending := pg_catalog.set_config('pg_observe.cache_pending',
                                             pending || pg_catalog.repeat('h', p_hits::integer)
                                             || pg_catalog.repeat('m', p_misses::integer) || pg_catalog.repeat('s', p_sets::integer),
                                             false);
        END IF;
        RETURN false;
    END IF;
    -- Add what is pending with this call's events; a few events of another namespace start the
    -- next pending list instead.
    INSERT INTO monitoring.cache_counters AS c (namespace, backend_pid, hits, misses, sets)
    SELECT n.namespace, pg_catalog.pg_backend_pid(), pg_catalog.sum(n.hits), pg_catalog.sum(n.misses), pg_catalog.sum(n.sets)
    FROM (SELECT pending_namespace AS namespace,
                 pg_catalog.length(pending) - pg_catalog.length(pg_catalog.replace(pending, 'h', '')) AS hits,
                 pg_catalog.length(pending) - pg_catalog.length(pg_catalog.replace(pending, 'm', '')) AS misses,
                 pg_catalog.length(pending) - pg_catalog.length(pg_catalog.replace(pending, 's', '')) AS sets
          WHERE pending IS NOT NULL
          UNION ALL
          SELECT p_namespace, p_hits, p_misses, p_sets
          WHERE p_hits + p_misses + p_sets >= 100 OR p_namespace = pending_namespace) n
    GROUP BY n.namespace
    HAVING pg_catalog.sum(n.hits) + pg_catalog.sum(n.misses) + pg_catalog.sum(n.sets) > 0
    ORDER BY n.namespace
    ON CONFLICT (namespace, backend_pid) DO UPDATE
        SET hits = c.hits + excluded.hits, misses = c.misses + excluded.misses, sets = c.sets + excluded.sets;
    pending := pg_catalog.set_config('pg_observe.cache_pending',
                                     pg_catalog.lpad(now_epoch::text, 10, '0')
                                     || CASE WHEN p_hits + p_misses + p_sets < 100 AND p_namespace IS DISTINCT FROM pending_namespace
                                             THEN pg_catalog.repeat('h', p_hits::integer) || pg_catalog.repeat('m', p_misses::integer)
                                                  || pg_catalog.repeat('s', p_sets::integer)
                                             ELSE '' END,
                                     false);
    IF pending_namespace IS DISTINCT FROM p_namespace THEN
        pending_namespace := pg_catalog.set_config('pg_observe.cache_namespace', p_namespace, false);
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION monitoring._cache_note(text, bigint, bigint, bigint, boolean) IS
    'Counts cache hits, misses and sets in the session; adds them to cache_counters every 100 events or 10 seconds';

-- The common case of _cache_note() for one event, as SQL the planner inlines into the read and
-- write functions (a plpgsql call would cost more than the count): one letter more in the
-- session's pending list while it is of this namespace, younger than 10 s and under 100
-- events. False when _cache_note() must be called. No SET clause (it would prevent
-- inlining): every name is schema-qualified.
CREATE OR REPLACE FUNCTION monitoring._cache_note_one(p_namespace text, p_event text)
    RETURNS boolean
    LANGUAGE sql
    VOLATILE
AS $$
    SELECT CASE
        WHEN pg_catalog.current_setting('pg_observe.cache_namespace', true) OPERATOR(pg_catalog.=) p_namespace
         AND pg_catalog.length(pg_catalog.current_setting('pg_observe.cache_pending', true)) OPERATOR(pg_catalog.<) 109
         AND pg_catalog.left(pg_catalog.current_setting('pg_observe.cache_pending', true), 10) COLLATE "C"
             OPERATOR(pg_catalog.>=) (pg_catalog.date_part('epoch', pg_catalog.now())::bigint OPERATOR(pg_catalog.-) 10)::text
        THEN pg_catalog.set_config('pg_observe.cache_pending',
                                   pg_catalog.current_setting('pg_observe.cache_pending', true) OPERATOR(pg_catalog.||) p_event,
                                   false) IS NOT NULL
        ELSE false
    END
$$;
COMMENT ON FUNCTION monitoring._cache_note_one(text, text) IS
    'Counts one cache event (h, m or s) in the session when _cache_note() has nothing else to do; false when it must be called';

CREATE OR REPLACE FUNCTION monitoring.cache_flush_stats()
    RETURNS void
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
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
    SET search_path = ''
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

CREATE OR REPLACE FUNCTION monitoring.cache_get_entry(p_key text, p_namespace text DEFAULT 'default')
    RETURNS TABLE (value jsonb, value_bytes bytea, value_type text, expires_at timestamptz)
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
BEGIN
    IF p_key IS NULL OR p_namespace IS NULL THEN
        PERFORM monitoring._cache_check_key(p_key, p_namespace);
    END IF;
    SELECT e.value, e.value_bytes, e.value_type, e.expires_at INTO value, value_bytes, value_type, expires_at
    FROM monitoring.cache_entries e
    WHERE e.namespace = p_namespace AND e.key = p_key
      AND (e.expires_at IS NULL OR e.expires_at > pg_catalog.clock_timestamp());
    IF NOT monitoring._cache_note_one(p_namespace, CASE WHEN value_type IS NULL THEN 'm' ELSE 'h' END) THEN
        PERFORM monitoring._cache_note(p_namespace, (value_type IS NOT NULL)::integer, (value_type IS NULL)::integer, 0);
    END IF;
    IF value_type IS NOT NULL THEN
        RETURN NEXT;
    END IF;
END
$$;
COMMENT ON FUNCTION monitoring.cache_get_entry(text, text) IS
    'A live entry with its type (json, text or bytes) and expiry; no row when absent or expired';

CREATE OR REPLACE FUNCTION monitoring.cache_get_many(p_keys text[], p_namespace text DEFAULT 'default')
    RETURNS TABLE (key text, value jsonb, value_bytes bytea, value_type text, expires_at timestamptz)
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
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
        SELECT pg_catalog.count(DISTINCT k)::integer INTO wanted FROM pg_catalog.unnest(p_keys) k;
    END IF;
    PERFORM monitoring._cache_note(p_namespace, found_count, wanted - found_count, 0);
END
$$;
COMMENT ON FUNCTION monitoring.cache_get_many(text[], text) IS
    'The live entries among the keys, in one call (absent and expired keys have no row)';

-- Redis's TTL in seconds, with its conventions: -2 when absent or expired, -1 without expiry.
CREATE OR REPLACE FUNCTION monitoring.cache_ttl(p_key text, p_namespace text DEFAULT 'default')
    RETURNS double precision
    LANGUAGE plpgsql
    VOLATILE   -- clock_timestamp()
    SECURITY DEFINER
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    PERFORM monitoring._cache_note(p_namespace, 0, 0, 1);
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
    SET search_path = ''
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
    PERFORM monitoring._cache_note(p_namespace, 0, 0, stored);
    RETURN stored;
END
$$;
COMMENT ON FUNCTION monitoring.cache_set_many_arrays(text[], jsonb[], interval, text, bytea[], text[]) IS
    'Stores many entries in one call (value i: p_values[i], or p_values_bytes[i] where p_value_types[i] is bytes or text); returns how many keys';

CREATE OR REPLACE FUNCTION monitoring.cache_set_many(p_entries jsonb, p_ttl interval DEFAULT NULL,
                                                     p_namespace text DEFAULT 'default')
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    keys text[];
    vals jsonb[];
BEGIN
    IF pg_catalog.jsonb_typeof(p_entries) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'cache_set_many takes a JSON object of key: value, got %', COALESCE(pg_catalog.jsonb_typeof(p_entries), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT COALESCE(pg_catalog.array_agg(e.key), '{}'), COALESCE(pg_catalog.array_agg(e.value), '{}')
        INTO keys, vals
    FROM pg_catalog.jsonb_each(p_entries) e;
    RETURN monitoring.cache_set_many_arrays(keys, vals, p_ttl, p_namespace);
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
    SET search_path = ''
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
    PERFORM monitoring._cache_note(p_namespace, 0, 0, 1);
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
    SET search_path = ''
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
    IF written THEN
        PERFORM monitoring._cache_note(p_namespace, 0, 0, 1);
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
AS $$
DECLARE
    deleted integer;
BEGIN
    PERFORM monitoring._cache_check_key('', p_namespace);
    IF p_keys IS NULL OR pg_catalog.array_position(p_keys, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'cache keys must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    WITH doomed AS (
        SELECT e.ctid AS row_id FROM monitoring.cache_entries e
        WHERE e.namespace = p_namespace AND e.key = ANY (p_keys)
        ORDER BY e.key
        FOR UPDATE
    ), gone AS (
        DELETE FROM monitoring.cache_entries e USING doomed d
        WHERE e.ctid = d.row_id
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
COMMENT ON COLUMN monitoring.cache_stats.hits IS 'Reads that found a live entry (counts of the last < 100 calls or 10 s of each connection are pending)';
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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

-- The dispatcher leaves a heartbeat for health().
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
CREATE OR REPLACE FUNCTION monitoring._send_notifications(p_messages jsonb, p_max_parallel integer) RETURNS jsonb LANGUAGE plpython3u VOLATILE SET search_path = ''
AS $pyfn$
# pg_observe:function monitoring._send_notifications(p_messages jsonb, p_max_parallel integer) RETURNS jsonb LANGUAGE plpython3u VOLATILE SET search_path = ''  # noqa: E501
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
-- the cache functions (SECURITY DEFINER) and touch neither table, so that every write passes
-- the checks of keys, TTLs and values and is counted. Dashboards and exporters (observe_reader)
-- read monitoring.cache_stats, never the cached values (sessions, tokens, personal data).
-- Admins have everything (900_privileges.sql), expire_cache() included.
GRANT EXECUTE ON FUNCTION monitoring.cache_get(text, text),
                          monitoring.cache_get_entry(text, text),
                          monitoring.cache_get_many(text[], text),
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

-- The history holds counts and sizes per namespace, no key and no value.
GRANT SELECT ON monitoring.cache_stats, monitoring.cache_stats_history TO observe_reader;

-- sql/990_reset_search_path.sql
-- pg_partman's create_parent() above left the script's search_path set at session level
-- (it restores with a session-level set_config). Give the session its default back.
RESET search_path;


