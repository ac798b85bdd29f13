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

-- @plpython plpython/scrub.py
COMMENT ON FUNCTION monitoring._scrub(text, text[]) IS 'Replaces values under secret keys and card numbers in JSON text with [Filtered]';

-- @plpython plpython/fingerprint.py
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
