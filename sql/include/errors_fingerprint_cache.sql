-- Fingerprints of stacks seen before (included by sql/100_errors.sql and the 0.2.0 -> 0.3.0
-- upgrade). Most events repeat a stack already fingerprinted: the capture looks the result up
-- by a key of the exception type and stack instead of running the PL/Python algorithm again.
-- UNLOGGED: it is a cache, empty after a crash and rebuilt by the next captures.
CREATE UNLOGGED TABLE monitoring.error_fingerprint_cache (
    input_key   uuid        PRIMARY KEY,
    result      jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE monitoring.error_fingerprint_cache IS
    'Cache of fingerprint results for events whose fingerprint depends only on type and stack (see _fingerprint_cache_key)';

-- A rule that changes may change what a cached stack groups into: forget them all.
CREATE OR REPLACE FUNCTION monitoring._forget_cached_fingerprints()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    TRUNCATE monitoring.error_fingerprint_cache;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._forget_cached_fingerprints() IS
    'Trigger: empties the fingerprint cache when the fingerprint rules change';

CREATE TRIGGER error_fingerprint_rule_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON monitoring.error_fingerprint_rule
    FOR EACH STATEMENT EXECUTE FUNCTION monitoring._forget_cached_fingerprints();

CREATE OR REPLACE FUNCTION monitoring._expire_fingerprint_cache()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    removed bigint;
BEGIN
    DELETE FROM monitoring.error_fingerprint_cache c
    WHERE c.created_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) interval '1 day');
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN pg_catalog.format('%s cached fingerprints expired', removed);
END
$$;
COMMENT ON FUNCTION monitoring._expire_fingerprint_cache() IS
    'Maintenance task: forgets cached fingerprints older than a day (stacks not seen since are not kept)';

INSERT INTO monitoring.maintenance_task (task_name, function_name, run_order) VALUES
    ('expire_fingerprint_cache', 'monitoring._expire_fingerprint_cache', 30);
