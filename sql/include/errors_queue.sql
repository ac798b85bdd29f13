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
    SET search_path = ''
AS $$
DECLARE
    given_id text := p_event OPERATOR(pg_catalog.->>) 'event_id';
    event_id uuid;
BEGIN
    IF p_event IS NULL OR pg_catalog.jsonb_typeof(p_event) OPERATOR(pg_catalog.<>) 'object' THEN
        RAISE EXCEPTION 'an error event must be a JSON object, got %', COALESCE(pg_catalog.jsonb_typeof(p_event), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The caller gets the event id at once, as Sentry's SDKs do: the client's own, or a new
    -- one written into the event (an id that is no uuid would be dropped by the capture).
    IF given_id OPERATOR(pg_catalog.~*) '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
        event_id := given_id::uuid;
    ELSE
        event_id := pg_catalog.gen_random_uuid();
        p_event := p_event OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('event_id', event_id);
    END IF;
    INSERT INTO monitoring.error_queue (event) VALUES (p_event);
    RETURN event_id;
END
$$;
COMMENT ON FUNCTION monitoring.queue_error(jsonb) IS
    'Queues one error event (capture_error''s JSON) with one INSERT; returns its event id. Grouped by process_error_queue(), within about a second with a worker';

-- Stores queued events; when the batch fails, each half on its own, down to the one event
-- that fails, which is kept in error_queue_failed. A transient failure (deadlock, lack of
-- memory or disk, shutdown) is raised instead: the whole batch returns to the queue.
CREATE OR REPLACE FUNCTION monitoring._store_queued_errors(p_ids bigint[], p_events jsonb, p_queued_at timestamptz[])
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
AS $$
DECLARE
    n integer := pg_catalog.cardinality(p_ids);
    half integer := n OPERATOR(pg_catalog./) 2;
BEGIN
    BEGIN
        PERFORM monitoring._store_error_occurrences(p_events, p_queued_at);
        RETURN 0;
    EXCEPTION WHEN OTHERS THEN
        IF pg_catalog.left(SQLSTATE, 2) OPERATOR(pg_catalog.=) ANY (ARRAY['40', '53', '55', '57', '58', 'XX']) THEN
            RAISE;
        END IF;
        IF n OPERATOR(pg_catalog.=) 1 THEN
            INSERT INTO monitoring.error_queue_failed (queue_id, queued_at, sqlstate, reason, event)
            VALUES (p_ids[1], p_queued_at[1], SQLSTATE, SQLERRM, p_events OPERATOR(pg_catalog.->) 0);
            RETURN 1;
        END IF;
    END;
    RETURN monitoring._store_queued_errors(
               p_ids[1:half],
               (SELECT pg_catalog.jsonb_agg(a.e ORDER BY a.i) FROM pg_catalog.jsonb_array_elements(p_events) WITH ORDINALITY a(e, i)
                WHERE a.i OPERATOR(pg_catalog.<=) half),
               p_queued_at[1:half])
         OPERATOR(pg_catalog.+)
           monitoring._store_queued_errors(
               p_ids[half OPERATOR(pg_catalog.+) 1:n],
               (SELECT pg_catalog.jsonb_agg(a.e ORDER BY a.i) FROM pg_catalog.jsonb_array_elements(p_events) WITH ORDINALITY a(e, i)
                WHERE a.i OPERATOR(pg_catalog.>) half),
               p_queued_at[half OPERATOR(pg_catalog.+) 1:n]);
END
$$;
COMMENT ON FUNCTION monitoring._store_queued_errors(bigint[], jsonb, timestamptz[]) IS
    'Captures queued events; an event the capture fails on goes to error_queue_failed, the rest is stored; returns how many failed';

-- One batch, in the caller's transaction: the oldest queued events no other drainer holds
-- (SKIP LOCKED: drainers share the queue without waiting). Nothing is lost if the caller dies:
-- the DELETE is undone with the rest.
CREATE OR REPLACE FUNCTION monitoring.process_error_queue(p_max_events integer DEFAULT 1000)
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    ids bigint[];
    events jsonb;
    queued_at timestamptz[];
BEGIN
    IF p_max_events IS NULL OR p_max_events OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'p_max_events must be at least 1, got %', COALESCE(p_max_events::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH taken AS (
        DELETE FROM monitoring.error_queue q
        WHERE q.queue_id OPERATOR(pg_catalog.=) ANY (ARRAY(
            SELECT c.queue_id FROM monitoring.error_queue c ORDER BY c.queue_id
            LIMIT p_max_events FOR UPDATE SKIP LOCKED))
        RETURNING q.*
    )
    SELECT pg_catalog.array_agg(t.queue_id ORDER BY t.queue_id), pg_catalog.jsonb_agg(t.event ORDER BY t.queue_id),
           pg_catalog.array_agg(t.queued_at ORDER BY t.queue_id)
    INTO ids, events, queued_at
    FROM taken t;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM monitoring._store_queued_errors(ids, events, queued_at);
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
    SET search_path = ''
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

-- Failed events go back into the queue (after a fix), keeping their time of arrival.
CREATE OR REPLACE FUNCTION monitoring.retry_failed_errors()
    RETURNS bigint
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
AS $$
DECLARE
    queued bigint;
BEGIN
    WITH taken AS (
        DELETE FROM monitoring.error_queue_failed f RETURNING f.queued_at, f.event, f.queue_id
    )
    INSERT INTO monitoring.error_queue (queued_at, event)
    SELECT t.queued_at, t.event FROM taken t ORDER BY t.queue_id;
    GET DIAGNOSTICS queued = ROW_COUNT;
    RETURN queued;
END
$$;
COMMENT ON FUNCTION monitoring.retry_failed_errors() IS 'Moves every event of error_queue_failed back into error_queue; returns how many';
