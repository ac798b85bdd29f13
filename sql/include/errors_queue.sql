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
