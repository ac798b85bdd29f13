-- A plain INSERT is a capture (included by sql/100_errors.sql and the 0.2.0 -> 0.3.0 upgrade).
-- Rows the capture functions have prepared already carry their error_id and come with
-- pg_observe.capture_prepared on: the WHEN clause, evaluated without a function call, lets
-- them through. Any other row, error_id or not, is prepared by the trigger.
CREATE TRIGGER error_occurrence_prepare
    BEFORE INSERT ON monitoring.tb_error_occurrence
    FOR EACH ROW
    WHEN (NEW.error_id IS NULL
          OR pg_catalog.current_setting('pg_observe.capture_prepared', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION monitoring._error_occurrence_prepare();
