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
