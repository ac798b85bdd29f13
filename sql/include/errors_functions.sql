-- Functions of error tracking (included by sql/100_errors.sql).

-- The helpers on the capture path are PL/pgSQL, not SQL: a SQL function with a SET clause is
-- never inlined and is planned again at every call; PL/pgSQL keeps its plans per session.

-- Limits: what is longer is cut, with a marker saying how much was cut.
CREATE FUNCTION monitoring._truncate(p_text text, p_max integer)
    RETURNS text
    LANGUAGE plpgsql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = ''
AS $$
BEGIN
    RETURN (SELECT CASE WHEN pg_catalog.length(p_text) OPERATOR(pg_catalog.<=) p_max THEN p_text
                ELSE pg_catalog.left(p_text, p_max) OPERATOR(pg_catalog.||)
                     pg_catalog.format('…[truncated %s characters]', pg_catalog.length(p_text) OPERATOR(pg_catalog.-) p_max)
           END);
END
$$;
COMMENT ON FUNCTION monitoring._truncate(text, integer) IS 'Cuts text to a maximum length with a marker naming what was cut';

-- Reads a timestamp the way clients send it: ISO 8601 text or Unix seconds (Sentry).
CREATE FUNCTION monitoring._event_time(p_value jsonb)
    RETURNS timestamptz
    LANGUAGE plpgsql
    IMMUTABLE
    SET search_path = ''
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

CREATE FUNCTION monitoring._uuid_or_null(p_value text)
    RETURNS uuid
    LANGUAGE plpgsql
    IMMUTABLE
    SET search_path = ''
AS $$
BEGIN
    RETURN p_value::uuid;
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._uuid_or_null(text) IS 'The text as a uuid (with or without dashes), or NULL';

-- Turns one event, in the Sentry shape or the seeds' flat shape, into an occurrence row.
CREATE FUNCTION monitoring._event_to_occurrence(p_event jsonb)
    RETURNS monitoring.tb_error_occurrence
    LANGUAGE plpgsql
    STABLE
    SET search_path = ''
AS $$
DECLARE
    r monitoring.tb_error_occurrence;
    main_exception jsonb := p_event #> '{exception,values,-1}';
    msg jsonb := p_event OPERATOR(pg_catalog.->) 'message';
    client_time timestamptz;
    ctx jsonb;
BEGIN
    IF p_event IS NULL OR pg_catalog.jsonb_typeof(p_event) OPERATOR(pg_catalog.<>) 'object' THEN
        RAISE EXCEPTION 'an error event must be a JSON object, got %',
            COALESCE(pg_catalog.jsonb_typeof(p_event), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.jsonb_typeof(main_exception) OPERATOR(pg_catalog.<>) 'object' THEN
        main_exception := NULL;
    END IF;

    r.occurrence_id := gen_random_uuid();
    r.event_id := monitoring._uuid_or_null(p_event OPERATOR(pg_catalog.->>) 'event_id');
    r.exception_type := COALESCE(NULLIF(main_exception OPERATOR(pg_catalog.->>) 'type', ''),
                                 NULLIF(p_event OPERATOR(pg_catalog.->>) 'exception_type', ''), 'Error');
    r.message := COALESCE(
        main_exception OPERATOR(pg_catalog.->>) 'value',
        CASE pg_catalog.jsonb_typeof(msg)
            WHEN 'string' THEN msg #>> '{}'
            WHEN 'object' THEN COALESCE(msg OPERATOR(pg_catalog.->>) 'formatted', msg OPERATOR(pg_catalog.->>) 'message')
            WHEN 'null' THEN NULL
            ELSE msg #>> '{}'   -- a number or an array: kept as its JSON text
        END,
        p_event #>> '{logentry,formatted}', p_event #>> '{logentry,message}', '');
    r.stack_trace := p_event OPERATOR(pg_catalog.->>) 'stack_trace';
    r.frames := COALESCE(main_exception #> '{stacktrace,frames}', p_event OPERATOR(pg_catalog.->) 'frames');
    IF pg_catalog.jsonb_typeof(r.frames) OPERATOR(pg_catalog.<>) 'array' THEN
        r.frames := NULL;
    END IF;
    IF pg_catalog.jsonb_array_length(COALESCE(p_event #> '{exception,values}', '[]')) OPERATOR(pg_catalog.>) 1 THEN
        r.exception_chain := p_event #> '{exception,values}';
    END IF;
    IF pg_catalog.jsonb_typeof(p_event OPERATOR(pg_catalog.->) 'fingerprint') OPERATOR(pg_catalog.=) 'array' THEN
        r.client_fingerprint := ARRAY(SELECT pg_catalog.jsonb_array_elements_text(p_event OPERATOR(pg_catalog.->) 'fingerprint'));
    END IF;

    -- The seeds' flat "context"; Sentry's "contexts" and "extra" are kept under their names.
    ctx := p_event OPERATOR(pg_catalog.->) 'context';
    IF ctx IS NOT NULL AND pg_catalog.jsonb_typeof(ctx) OPERATOR(pg_catalog.<>) 'object' THEN
        ctx := pg_catalog.jsonb_build_object('value', ctx);   -- a non-object context is wrapped
    END IF;
    IF p_event ? 'contexts' OR p_event ? 'extra' THEN
        ctx := COALESCE(ctx, '{}'::jsonb) OPERATOR(pg_catalog.||) pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'contexts', p_event OPERATOR(pg_catalog.->) 'contexts', 'extra', p_event OPERATOR(pg_catalog.->) 'extra'));
    END IF;
    r.context := ctx;
    r.tags := p_event OPERATOR(pg_catalog.->) 'tags';
    IF pg_catalog.jsonb_typeof(r.tags) OPERATOR(pg_catalog.=) 'array' THEN   -- Sentry's [[key, value], ...]
        r.tags := (SELECT pg_catalog.jsonb_object_agg(t OPERATOR(pg_catalog.->>) 0, t OPERATOR(pg_catalog.->) 1)
                   FROM pg_catalog.jsonb_array_elements(r.tags) t
                   WHERE pg_catalog.jsonb_typeof(t) OPERATOR(pg_catalog.=) 'array');
    ELSIF pg_catalog.jsonb_typeof(r.tags) OPERATOR(pg_catalog.<>) 'object' THEN
        r.tags := NULL;
    END IF;
    r.user_info := p_event OPERATOR(pg_catalog.->) 'user';
    r.request := p_event OPERATOR(pg_catalog.->) 'request';
    r.environment := COALESCE(NULLIF(p_event OPERATOR(pg_catalog.->>) 'environment', ''), 'production');
    r.release_version := p_event OPERATOR(pg_catalog.->>) 'release';
    r.service := COALESCE(p_event OPERATOR(pg_catalog.->>) 'service', p_event #>> '{tags,service}');
    r.server_name := p_event OPERATOR(pg_catalog.->>) 'server_name';
    r.transaction_name := p_event OPERATOR(pg_catalog.->>) 'transaction';
    r.logger := p_event OPERATOR(pg_catalog.->>) 'logger';
    r.level := CASE pg_catalog.lower(p_event OPERATOR(pg_catalog.->>) 'level')
                   WHEN 'warn' THEN 'warning' WHEN 'critical' THEN 'fatal'
                   WHEN 'debug' THEN 'debug' WHEN 'info' THEN 'info' WHEN 'warning' THEN 'warning'
                   WHEN 'fatal' THEN 'fatal' ELSE 'error' END;
    r.trace_id := COALESCE(p_event OPERATOR(pg_catalog.->>) 'trace_id', p_event #>> '{contexts,trace,trace_id}');
    r.span_id := COALESCE(p_event OPERATOR(pg_catalog.->>) 'span_id', p_event #>> '{contexts,trace,span_id}');

    -- Sentry's rule: a time more than 30 days old or more than a minute ahead is the
    -- client's clock, not the event's: file it at the time received, keep what was sent.
    client_time := monitoring._event_time(p_event OPERATOR(pg_catalog.->) 'timestamp');
    r.client_timestamp := client_time;
    r.occurred_at := CASE
        WHEN client_time BETWEEN pg_catalog.now() OPERATOR(pg_catalog.-) interval '30 days'
                             AND pg_catalog.now() OPERATOR(pg_catalog.+) interval '1 minute' THEN client_time
        ELSE pg_catalog.now() END;
    RETURN r;
END
$$;
COMMENT ON FUNCTION monitoring._event_to_occurrence(jsonb) IS
    'Maps an event in the Sentry shape or the flat shape to a tb_error_occurrence row';

-- The key under which a user counts as affected.
CREATE FUNCTION monitoring._user_key(p_user jsonb, p_context jsonb)
    RETURNS text
    LANGUAGE plpgsql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = ''
AS $$
BEGIN
    RETURN (SELECT COALESCE(p_user OPERATOR(pg_catalog.->>) 'id', p_user OPERATOR(pg_catalog.->>) 'email',
                    p_user OPERATOR(pg_catalog.->>) 'username', p_user OPERATOR(pg_catalog.->>) 'ip_address',
                    p_context OPERATOR(pg_catalog.->>) 'user_id'));
END
$$;
COMMENT ON FUNCTION monitoring._user_key(jsonb, jsonb) IS 'User id, e-mail, name or ip of an event (or context.user_id)';

-- Is release a older than release b? Numeric parts compare as numbers (1.10 > 1.9).
CREATE FUNCTION monitoring._release_older(a text, b text)
    RETURNS boolean
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
    SET search_path = ''
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

-- @plpython plpython/scrub.py
COMMENT ON FUNCTION monitoring._scrub(text, text[]) IS 'Replaces values under secret keys and card numbers in JSON text with [Filtered]';

-- @plpython plpython/fingerprint.py
COMMENT ON FUNCTION monitoring._fingerprint_events(text, text) IS
    'Fingerprint algorithm version 2 (see docs/errors.md): explicit, rule, stack, message; parses raw stack traces';

CREATE FUNCTION monitoring._fingerprint_rules()
    RETURNS text
    LANGUAGE plpgsql
    STABLE
    SET search_path = ''
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

-- Before each occurrence: drop a repeated event id, apply limits, scrub secrets,
-- fingerprint, find or create the group, and reopen it if it was resolved (regression) or
-- its ignore ran out. Counting is left to the statement trigger below.
CREATE FUNCTION monitoring._error_occurrence_prepare()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    scrub_keys text[];
    scrub_pattern text;
    scrubbed jsonb;
    scrubbed_text text;
    fp jsonb;
    fingerprint text;
    grp monitoring.tb_error_log;
BEGIN
    IF NEW.event_id IS NOT NULL THEN
        INSERT INTO monitoring.error_event_seen (event_id) VALUES (NEW.event_id) ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RETURN NULL;   -- already stored: a retry of the same event
        END IF;
    END IF;

    NEW.received_at := pg_catalog.now();
    NEW.exception_type := monitoring._truncate(COALESCE(NULLIF(NEW.exception_type, ''), 'Error'), 512);
    NEW.message := monitoring._truncate(COALESCE(NEW.message, ''), 8192);
    NEW.stack_trace := monitoring._truncate(NEW.stack_trace, 262144);
    IF NEW.context IS NOT NULL AND pg_catalog.jsonb_typeof(NEW.context) OPERATOR(pg_catalog.<>) 'object' THEN
        NEW.context := pg_catalog.jsonb_build_object('value', NEW.context);
    END IF;
    IF pg_catalog.cardinality(NEW.client_fingerprint) OPERATOR(pg_catalog.>) 100 THEN
        NEW.client_fingerprint := NEW.client_fingerprint[1:100];
    END IF;

    -- One PL/Python call scrubs every free-form field together, and only when the text holds
    -- a key word, a long run of digits, or more openers than the depth limit (nesting deeper
    -- than 64 needs more than 64 of them): cheap tests in C that most events fail.
    -- The key test matches what the scrubber matches: each word, case-insensitive, with
    -- separators (or JSON-escaped whitespace) allowed between its letters.
    SELECT pg_catalog.array_agg(k.key_word), pg_catalog.string_agg(k.key_pattern, '|')
    INTO scrub_keys, scrub_pattern FROM monitoring.error_scrub_key k;
    scrubbed := pg_catalog.jsonb_build_object(
        'message', NEW.message, 'context', NEW.context, 'tags', NEW.tags, 'user', NEW.user_info,
        'request', NEW.request, 'stack_trace', NEW.stack_trace);
    scrubbed_text := scrubbed::text;
    IF scrubbed_text OPERATOR(pg_catalog.~*) scrub_pattern
       OR scrubbed_text OPERATOR(pg_catalog.~) '\d(?:[ -]?\d){12,18}'
       OR pg_catalog.length(scrubbed_text) OPERATOR(pg_catalog.-) pg_catalog.length(pg_catalog.translate(scrubbed_text, '{[', ''))
          OPERATOR(pg_catalog.>) 64 THEN
        scrubbed := monitoring._scrub(scrubbed_text, scrub_keys)::jsonb;
    END IF;
    IF pg_catalog.jsonb_typeof(scrubbed) OPERATOR(pg_catalog.<>) 'object' THEN
        -- One field could not be read whole (absurd nesting): scrub each on its own.
        scrubbed := pg_catalog.jsonb_build_object(
            'message', monitoring._scrub(pg_catalog.to_jsonb(NEW.message)::text, scrub_keys)::jsonb,
            'context', monitoring._scrub(NEW.context::text, scrub_keys)::jsonb,
            'tags', monitoring._scrub(NEW.tags::text, scrub_keys)::jsonb,
            'user', monitoring._scrub(NEW.user_info::text, scrub_keys)::jsonb,
            'request', monitoring._scrub(NEW.request::text, scrub_keys)::jsonb,
            'stack_trace', monitoring._scrub(pg_catalog.to_jsonb(NEW.stack_trace)::text, scrub_keys)::jsonb);
    END IF;
    NEW.message := COALESCE(scrubbed OPERATOR(pg_catalog.->>) 'message', '');
    NEW.context := NULLIF(scrubbed OPERATOR(pg_catalog.->) 'context', 'null');
    NEW.tags := NULLIF(scrubbed OPERATOR(pg_catalog.->) 'tags', 'null');
    NEW.user_info := NULLIF(scrubbed OPERATOR(pg_catalog.->) 'user', 'null');
    NEW.request := NULLIF(scrubbed OPERATOR(pg_catalog.->) 'request', 'null');
    NEW.stack_trace := scrubbed OPERATOR(pg_catalog.->>) 'stack_trace';

    fp := (monitoring._fingerprint_events(
               pg_catalog.jsonb_build_array(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                   'exception_type', NEW.exception_type, 'message', NEW.message,
                   -- the raw text is parsed only when no structured frames came with the event
                   'stack_trace', CASE WHEN NEW.frames IS NULL THEN NEW.stack_trace END, 'frames', NEW.frames,
                   'exception', CASE WHEN NEW.exception_chain IS NOT NULL
                                     THEN pg_catalog.jsonb_build_object('values', NEW.exception_chain) END,
                   'fingerprint', pg_catalog.to_jsonb(NEW.client_fingerprint),
                   'environment', NEW.environment, 'tags', NEW.tags)))::text,
               monitoring._fingerprint_rules())::jsonb) OPERATOR(pg_catalog.->) 0;
    IF NEW.frames IS NULL AND pg_catalog.jsonb_array_length(fp OPERATOR(pg_catalog.->) 'frames') OPERATOR(pg_catalog.>) 0 THEN
        NEW.frames := fp OPERATOR(pg_catalog.->) 'frames';   -- parsed from the raw stack trace
    END IF;
    fingerprint := fp OPERATOR(pg_catalog.->>) 'fingerprint';
    -- A client's own single-part fingerprint ("payment_timeout_error") is kept readable.
    IF fp OPERATOR(pg_catalog.->>) 'method' OPERATOR(pg_catalog.=) 'explicit'
       AND pg_catalog.jsonb_array_length(fp OPERATOR(pg_catalog.->) 'inputs') OPERATOR(pg_catalog.=) 1
       AND pg_catalog.length(fp #>> '{inputs,0}') OPERATOR(pg_catalog.<=) 200 THEN
        fingerprint := fp #>> '{inputs,0}';
    END IF;

    SELECT * INTO grp FROM monitoring.tb_error_log g WHERE g.error_fingerprint OPERATOR(pg_catalog.=) fingerprint;
    IF NOT FOUND THEN
        INSERT INTO monitoring.tb_error_log AS g
            (error_fingerprint, fingerprint_version, fingerprint_method, fingerprint_inputs, error_type,
             error_message, title, culprit, severity, first_seen, last_seen, environment, environments,
             services, release_version, first_release, stack_trace)
        VALUES (fingerprint, (fp OPERATOR(pg_catalog.->>) 'fingerprint_version')::smallint,
                fp OPERATOR(pg_catalog.->>) 'method', fp OPERATOR(pg_catalog.->) 'inputs', NEW.exception_type,
                NEW.message, COALESCE(fp OPERATOR(pg_catalog.->>) 'group_title', fp OPERATOR(pg_catalog.->>) 'title', ''),
                fp OPERATOR(pg_catalog.->>) 'culprit', NEW.level, NEW.occurred_at, NEW.occurred_at, NEW.environment,
                ARRAY[NEW.environment], CASE WHEN NEW.service IS NULL THEN '{}' ELSE ARRAY[NEW.service] END, NEW.release_version,
                NEW.release_version, NEW.stack_trace)
        ON CONFLICT (error_fingerprint) DO NOTHING
        RETURNING * INTO grp;
        IF FOUND THEN
            INSERT INTO monitoring.error_activity (error_id, action, actor, details)
            VALUES (grp.error_id, 'first_seen', NULL, pg_catalog.jsonb_build_object('release', NEW.release_version));
        ELSE   -- created by a concurrent capture a moment ago
            SELECT * INTO STRICT grp FROM monitoring.tb_error_log g
            WHERE g.error_fingerprint OPERATOR(pg_catalog.=) fingerprint;
        END IF;
    ELSIF grp.status OPERATOR(pg_catalog.=) 'resolved'
          AND NOT monitoring._release_older(NEW.release_version, grp.resolved_in_release) THEN
        UPDATE monitoring.tb_error_log g
        SET status = 'unresolved', resolved_at = NULL, resolved_by = NULL, regressed_at = pg_catalog.now()
        WHERE g.error_id OPERATOR(pg_catalog.=) grp.error_id AND g.status OPERATOR(pg_catalog.=) 'resolved';
        IF FOUND THEN
            INSERT INTO monitoring.error_activity (error_id, action, details)
            VALUES (grp.error_id, 'regression', pg_catalog.jsonb_build_object(
                'release', NEW.release_version, 'resolved_in_release', grp.resolved_in_release,
                'occurrence_id', NEW.occurrence_id));
        END IF;
    ELSIF grp.status OPERATOR(pg_catalog.=) 'ignored'
          AND (grp.ignored_until OPERATOR(pg_catalog.<=) pg_catalog.now()
               OR grp.ignored_until_count OPERATOR(pg_catalog.<=) (grp.occurrence_count OPERATOR(pg_catalog.+)
                  (SELECT COALESCE(pg_catalog.sum(p.occurrences), 0) FROM monitoring.error_group_pending p
                   WHERE p.error_id OPERATOR(pg_catalog.=) grp.error_id))) THEN
        UPDATE monitoring.tb_error_log g
        SET status = 'unresolved', ignored_until = NULL, ignored_until_count = NULL
        WHERE g.error_id OPERATOR(pg_catalog.=) grp.error_id AND g.status OPERATOR(pg_catalog.=) 'ignored';
        IF FOUND THEN
            INSERT INTO monitoring.error_activity (error_id, action, details)
            VALUES (grp.error_id, 'unignore', pg_catalog.jsonb_build_object('reason', 'ignore condition ran out'));
        END IF;
    END IF;
    NEW.error_id := grp.error_id;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION monitoring._error_occurrence_prepare() IS
    'Trigger: dedupes by event id, applies limits, scrubs, fingerprints, finds or creates the group, detects regressions';

-- Folds the pending counter deltas of these groups into tb_error_log, set-based. It locks
-- the groups' rows first, skipping those another transaction holds (their deltas wait for the
-- next fold), so no two transactions fold one group and no writer waits. Returns how many.
CREATE FUNCTION monitoring._fold_error_counters(p_error_ids uuid[])
    RETURNS integer
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
AS $$
DECLARE
    folded_groups integer;
BEGIN
    -- Fixed order, so that two statements never wait on each other in a cycle.
    WITH free AS MATERIALIZED (
        SELECT g.error_id FROM monitoring.tb_error_log g
        WHERE g.error_id OPERATOR(pg_catalog.=) ANY (p_error_ids)
        ORDER BY g.error_id
        FOR UPDATE SKIP LOCKED
    ), taken AS (
        DELETE FROM monitoring.error_group_pending p
        WHERE p.error_id IN (SELECT f.error_id FROM free f)
        RETURNING p.*
    ), summed AS (
        SELECT t.error_id, pg_catalog.sum(t.occurrences) AS occurrences, pg_catalog.sum(t.new_users) AS new_users,
               pg_catalog.min(t.first_seen) AS first_seen, pg_catalog.max(t.last_seen) AS last_seen,
               (pg_catalog.array_agg(t.environment ORDER BY t.last_seen DESC))[1] AS environment,
               (pg_catalog.array_agg(t.release_version ORDER BY t.last_seen DESC, t.release_version DESC)
                    FILTER (WHERE t.release_version IS NOT NULL))[1] AS release_version,
               ARRAY(SELECT DISTINCT e FROM taken t2, pg_catalog.unnest(t2.environments) e
                     WHERE t2.error_id OPERATOR(pg_catalog.=) t.error_id AND e IS NOT NULL) AS environments,
               ARRAY(SELECT DISTINCT v FROM taken t3, pg_catalog.unnest(t3.services) v
                     WHERE t3.error_id OPERATOR(pg_catalog.=) t.error_id AND v IS NOT NULL) AS services
        FROM taken t
        GROUP BY t.error_id
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
        FROM summed s
        WHERE g.error_id OPERATOR(pg_catalog.=) s.error_id
        RETURNING 1
    )
    SELECT pg_catalog.count(*)::integer INTO folded_groups FROM folded;
    RETURN folded_groups;
END
$$;
COMMENT ON FUNCTION monitoring._fold_error_counters(uuid[]) IS 'Adds the pending counter deltas of these groups to tb_error_log';

-- After each INSERT statement: per group (not per row) record the counts as a delta, then fold
-- the deltas of every group whose row is free. If another transaction holds a group's row
-- (many writers on one fingerprint), its delta waits instead of the writer: the next capture
-- that gets the row, or run_maintenance(), folds it.
CREATE FUNCTION monitoring._error_occurrence_count()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    WITH new_users AS (
        INSERT INTO monitoring.error_group_user (error_id, user_key)
        SELECT DISTINCT n.error_id, monitoring._user_key(n.user_info, n.context) FROM new_rows n
        WHERE monitoring._user_key(n.user_info, n.context) IS NOT NULL
        ON CONFLICT DO NOTHING
        RETURNING error_id
    )
    INSERT INTO monitoring.error_group_pending
        (error_id, occurrences, new_users, first_seen, last_seen, environment, environments, services, release_version)
    SELECT n.error_id, pg_catalog.count(*),
           (SELECT pg_catalog.count(*) FROM new_users u WHERE u.error_id OPERATOR(pg_catalog.=) n.error_id),
           pg_catalog.min(n.occurred_at), pg_catalog.max(n.occurred_at),
           (pg_catalog.array_agg(n.environment ORDER BY n.occurred_at DESC))[1],
           pg_catalog.array_agg(DISTINCT n.environment),
           COALESCE(pg_catalog.array_agg(DISTINCT n.service) FILTER (WHERE n.service IS NOT NULL), '{}'),
           -- "last release": the latest occurrence's; within one instant, the highest
           (pg_catalog.array_agg(n.release_version ORDER BY n.occurred_at DESC, n.release_version DESC)
                FILTER (WHERE n.release_version IS NOT NULL))[1]
    FROM new_rows n
    GROUP BY n.error_id;

    PERFORM monitoring._fold_error_counters(ARRAY(SELECT DISTINCT n.error_id FROM new_rows n));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._error_occurrence_count() IS
    'Statement trigger: counts occurrences, users, environments and releases per group without making writers wait';

CREATE FUNCTION monitoring._fold_all_error_counters()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
AS $$
BEGIN
    RETURN pg_catalog.format('%s groups folded', monitoring._fold_error_counters(
        ARRAY(SELECT DISTINCT p.error_id FROM monitoring.error_group_pending p)));
END
$$;
COMMENT ON FUNCTION monitoring._fold_all_error_counters() IS 'Maintenance task: folds every pending counter delta';

CREATE FUNCTION monitoring._expire_error_event_ids()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
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

-- Capture: one event, or many in one round trip.
CREATE FUNCTION monitoring.capture_error(p_event jsonb)
    RETURNS uuid
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    r monitoring.tb_error_occurrence := monitoring._event_to_occurrence(p_event);
BEGIN
    INSERT INTO monitoring.tb_error_occurrence SELECT r.*;
    RETURN r.occurrence_id;
END
$$;
COMMENT ON FUNCTION monitoring.capture_error(jsonb) IS
    'Stores one error event (Sentry event JSON or the flat shape: exception_type, message, stack_trace, context, environment, trace_id, ...); returns the occurrence id';

CREATE FUNCTION monitoring.capture_errors(p_events jsonb)
    RETURNS bigint
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    stored bigint;
BEGIN
    IF pg_catalog.jsonb_typeof(p_events) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'capture_errors expects a JSON array of events, got %',
            COALESCE(pg_catalog.jsonb_typeof(p_events), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- LATERAL: "(f(e)).*" would call the function once per column.
    INSERT INTO monitoring.tb_error_occurrence
    SELECT r.* FROM pg_catalog.jsonb_array_elements(p_events) e, LATERAL monitoring._event_to_occurrence(e) r;
    GET DIAGNOSTICS stored = ROW_COUNT;
    RETURN stored;
END
$$;
COMMENT ON FUNCTION monitoring.capture_errors(jsonb) IS
    'Stores a JSON array of error events in one statement; returns how many were stored (repeated event ids are not)';
