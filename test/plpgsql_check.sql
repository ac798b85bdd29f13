-- Static analysis of every PL/pgSQL function of pg_observe. Trigger functions are checked
-- against a table they are attached to (with its transition tables); one attached nowhere
-- counts as an error.
\pset footer off
-- The change-log triggers are attached by track_changes() to users' tables: give them one.
CREATE TEMP TABLE plpgsql_check_tracked (id integer PRIMARY KEY, note text);
SELECT monitoring.track_changes('plpgsql_check_tracked') \gset
CREATE TEMP TABLE plpgsql_check_result AS
WITH fns AS (
    SELECT p.oid, p.prorettype = 'trigger'::regtype AS is_trigger, t.tgrelid AS relid,
           t.tgoldtable AS oldtable, t.tgnewtable AS newtable
    FROM pg_proc p
    JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
    JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_observe'
    JOIN pg_language l ON l.oid = p.prolang AND l.lanname = 'plpgsql'
    LEFT JOIN LATERAL (SELECT * FROM pg_trigger t WHERE t.tgfoid = p.oid ORDER BY t.tgrelid LIMIT 1) t ON true
)
SELECT fns.oid::regprocedure AS fn, r.level, r.message, r.lineno, r.statement
FROM fns
LEFT JOIN LATERAL plpgsql_check_function_tb(fns.oid, COALESCE(fns.relid, 0), fatal_errors => false,
                                            oldtable => fns.oldtable, newtable => fns.newtable) r
    ON NOT (fns.is_trigger AND fns.relid IS NULL)
UNION ALL
SELECT fns.oid::regprocedure, 'error', 'trigger function attached to no table: cannot be checked', NULL, NULL
FROM fns WHERE fns.is_trigger AND fns.relid IS NULL;

SELECT format('%s: %s at line %s (%s): %s', fn, level, lineno, statement, message)
FROM plpgsql_check_result WHERE level IS NOT NULL ORDER BY fn::text, lineno;
SELECT format('checked %s functions, %s errors', count(DISTINCT fn), count(*) FILTER (WHERE level = 'error'))
FROM plpgsql_check_result;
