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
