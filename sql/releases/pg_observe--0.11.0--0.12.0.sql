\echo Use "CREATE EXTENSION pg_observe" to load this file. \quit
-- Released upgrade script of pg_observe 0.11.0 -> 0.12.0, kept as it shipped: do not edit.

-- sql/updates/pg_observe--0.11.0--0.12.0.sql
-- 0.11.0 -> 0.12.0: cheaper captures. A plain INSERT's slow path (new groups, regressions, new
-- stacks) counts its rows at the statement's end like the fast path; the users of a group are
-- kept without a foreign key and compared byte-wise (COLLATE "C"); _truncate() reads a text's
-- byte length before counting its characters.
-- Changed functions come from the same files as a fresh install; make test compares an
-- upgraded database with a fresh one.

-- error_group_user loses its foreign key (a query per new user at every fold); triggers on
-- tb_error_log delete a deleted group's users instead.
ALTER TABLE monitoring.error_group_user DROP CONSTRAINT error_group_user_error_id_fkey;
-- sql/include/errors_group_user_cleanup.sql
-- Included by sql/100_errors.sql and by the 0.11.0 -> 0.12.0 upgrade, which made it.
-- error_group_user has no foreign key to tb_error_log (see its table): these triggers do what
-- ON DELETE CASCADE did. They run as the owner, like the captures that write the users.

CREATE OR REPLACE FUNCTION monitoring._forget_deleted_group_users()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = ''
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
    SET search_path = ''
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


-- The user keys are compared byte-wise: the primary key of error_group_user and the fold's
-- DISTINCT no longer call the locale's collation for every comparison.
ALTER TABLE monitoring.error_group_user ALTER COLUMN user_key TYPE text COLLATE pg_catalog."C";
ALTER TABLE monitoring.error_capture_journal ALTER COLUMN user_key TYPE text COLLATE pg_catalog."C";

-- _truncate(): byte length first; the row trigger journals its slow path's rows.
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

CREATE OR REPLACE FUNCTION monitoring._uuid_or_null(p_value text)
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
    SET search_path = ''
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

-- from plpython/scrub.py
CREATE OR REPLACE FUNCTION monitoring._scrub(p_value text, p_keys text[]) RETURNS text LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = ''
AS $pyfn$
# pg_observe:function monitoring._scrub(p_value text, p_keys text[]) RETURNS text LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = ''  # noqa: E501
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
CREATE OR REPLACE FUNCTION monitoring._fingerprint_events(p_events text, p_rules text) RETURNS text LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = ''
AS $pyfn$
# pg_observe:function monitoring._fingerprint_events(p_events text, p_rules text) RETURNS text LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = ''
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

-- Scrubs one occurrence: one PL/Python call for all its free-form fields, or one per field
-- when the whole could not be read (absurd nesting). Called only for rows the capture's
-- cheap test flags.
CREATE OR REPLACE FUNCTION monitoring._scrub_occurrence(p_row monitoring.tb_error_occurrence, p_keys text[])
    RETURNS monitoring.tb_error_occurrence
    LANGUAGE plpgsql
    IMMUTABLE
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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

-- Capture: one event, or many in one round trip. Both prepare the rows set-based, insert
-- them (the row trigger lets prepared rows through), then count them per group.
CREATE OR REPLACE FUNCTION monitoring._store_error_occurrences(p_events jsonb, p_received_at timestamptz[] DEFAULT NULL)
    RETURNS monitoring.tb_error_occurrence[]
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = ''
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
    SET search_path = ''
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
    SET search_path = ''
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
-- the cache functions (SECURITY DEFINER) and touch neither table, so that every write passes
-- the checks of keys, TTLs and values and is counted. Dashboards and exporters (observe_reader)
-- read monitoring.cache_stats, never the cached values (sessions, tokens, personal data).
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

-- The history holds counts and sizes per namespace, no key and no value.
GRANT SELECT ON monitoring.cache_stats, monitoring.cache_stats_history TO observe_reader;

-- sql/990_reset_search_path.sql
-- pg_partman's create_parent() above left the script's search_path set at session level
-- (it restores with a session-level set_config). Give the session its default back.
RESET search_path;


