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
