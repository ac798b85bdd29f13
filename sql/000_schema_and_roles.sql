-- The schema every object lives in, and the three cluster-wide roles of the privilege model.
-- Roles are created only if missing: they are shared by every database of the cluster and
-- are not dropped by DROP EXTENSION (see docs/roles.md).

CREATE SCHEMA monitoring;
COMMENT ON SCHEMA monitoring IS
    'pg_observe: error tracking, notifications, traces, metrics and cache';

DO $roles$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['observe_writer', 'observe_reader', 'observe_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) role_name) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
    END LOOP;
END
$roles$;

COMMENT ON ROLE observe_writer IS
    'pg_observe: may capture events and record data, may not read stored data or secrets';
COMMENT ON ROLE observe_reader IS
    'pg_observe: read-only access for dashboards and exporters, no secrets';
COMMENT ON ROLE observe_admin IS
    'pg_observe: manages issues, rules, channels, retention and maintenance';

-- The admin does everything the other two do; the reader sees database statistics.
GRANT observe_writer, observe_reader TO observe_admin;
GRANT pg_monitor TO observe_reader;

GRANT USAGE ON SCHEMA monitoring TO observe_writer, observe_reader, observe_admin;
