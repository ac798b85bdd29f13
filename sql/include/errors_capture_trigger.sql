-- A plain INSERT is a capture (included by sql/100_errors.sql and the upgrade scripts).
-- The row trigger prepares each row; the statement triggers mark the statement as running and,
-- at its end, count the rows its fast path took (see _error_occurrence_prepare()).
-- Rows the capture functions have prepared already carry their error_id and come with
-- pg_observe.capture_prepared on: the WHEN clause, evaluated without a function call, lets
-- them through. Any other row, error_id or not, is prepared by the trigger. Anyone may set
-- the setting, so the clause also asks for the extension's owner, whom the capture functions
-- run as (SECURITY DEFINER): a writer who sets it gets the capture all the same (before
-- 0.8.0 such a row was stored unscrubbed and uncounted).
DO $$
DECLARE
    old_trigger name;
    capture_role name := (
        SELECT r.rolname FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) p.proowner
        WHERE p.oid OPERATOR(pg_catalog.=) 'monitoring.capture_errors(jsonb)'::pg_catalog.regprocedure);
BEGIN
    FOR old_trigger IN
        SELECT t.tgname FROM pg_catalog.pg_trigger t
        WHERE t.tgrelid OPERATOR(pg_catalog.=) 'monitoring.tb_error_occurrence'::pg_catalog.regclass
          AND t.tgname OPERATOR(pg_catalog.=) ANY ('{error_occurrence_begin,error_occurrence_prepare,error_occurrence_fold}')
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON monitoring.tb_error_occurrence', old_trigger);
    END LOOP;
    EXECUTE pg_catalog.format($trigger$
        CREATE TRIGGER error_occurrence_prepare
            BEFORE INSERT ON monitoring.tb_error_occurrence
            FOR EACH ROW
            WHEN (NEW.error_id IS NULL
                  OR pg_catalog.current_setting('pg_observe.capture_prepared', true) IS DISTINCT FROM 'on'
                  OR CURRENT_USER OPERATOR(pg_catalog.<>) %1$L::pg_catalog.name)
            EXECUTE FUNCTION monitoring._error_occurrence_prepare()$trigger$,
        -- the role the capture functions run as: their owner, which an upgrade run by another
        -- role keeps (CREATE OR REPLACE does not change owners), not the upgrader
        capture_role);
    -- Statement-level: not cloned to the partitions, so they run once per INSERT or COPY into
    -- tb_error_occurrence: both for every statement but the capture functions' own (the AFTER
    -- one whatever the statement mark says by then), the AFTER one also when the row
    -- trigger's per-row way left deltas to fold. Neither runs for a statement inside a
    -- trigger (the set-based path's INSERT of no rows, run for a row of the statement, would
    -- end the statement's journal there): such rows are counted with the outer statement's,
    -- or as they come.
    EXECUTE pg_catalog.format($trigger$
        CREATE TRIGGER error_occurrence_begin
            BEFORE INSERT ON monitoring.tb_error_occurrence
            FOR EACH STATEMENT
            WHEN (pg_catalog.pg_trigger_depth() OPERATOR(pg_catalog.=) 0
                  AND (pg_catalog.current_setting('pg_observe.capture_prepared', true) IS DISTINCT FROM 'on'
                       OR CURRENT_USER OPERATOR(pg_catalog.<>) %1$L::pg_catalog.name))
            EXECUTE FUNCTION monitoring._error_occurrence_begin()$trigger$,
        capture_role);
    EXECUTE pg_catalog.format($trigger$
        CREATE TRIGGER error_occurrence_fold
            AFTER INSERT ON monitoring.tb_error_occurrence
            FOR EACH STATEMENT
            WHEN ((pg_catalog.pg_trigger_depth() OPERATOR(pg_catalog.=) 0
                   AND (pg_catalog.current_setting('pg_observe.capture_prepared', true) IS DISTINCT FROM 'on'
                        OR CURRENT_USER OPERATOR(pg_catalog.<>) %1$L::pg_catalog.name))
                  OR COALESCE(pg_catalog.current_setting('pg_observe.capture_pending', true), '0') OPERATOR(pg_catalog.<>) '0')
            EXECUTE FUNCTION monitoring._error_occurrence_fold()$trigger$,
        capture_role);
END
$$;
