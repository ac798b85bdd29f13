-- The privilege matrix: writer captures but reads nothing; reader reads but changes nothing;
-- admin manages. Checked both as catalogue privileges and by acting as each role.
BEGIN;
SELECT plan(21);

-- writer
SELECT ok(has_function_privilege('observe_writer', 'monitoring.capture_error(jsonb)', 'EXECUTE'), 'writer may capture');
SELECT ok(has_table_privilege('observe_writer', 'monitoring.tb_error_occurrence', 'INSERT'), 'writer may INSERT occurrences');
SELECT ok(NOT has_table_privilege('observe_writer', 'monitoring.tb_error_occurrence', 'SELECT'), 'writer may not read occurrences');
SELECT ok(NOT has_table_privilege('observe_writer', 'monitoring.tb_error_log', 'SELECT,UPDATE,DELETE'), 'writer may not touch groups');
SELECT ok(NOT has_function_privilege('observe_writer', 'monitoring._run_maintenance(text)', 'EXECUTE'), 'writer may not run maintenance');
SELECT ok(NOT has_function_privilege('observe_writer', 'monitoring.set_retention(regclass, interval)', 'EXECUTE'),
          'writer may not change retention');

-- reader
SELECT ok(has_table_privilege('observe_reader', 'monitoring.errors', 'SELECT'), 'reader may read errors');
SELECT ok(has_table_privilege('observe_reader', 'monitoring.tb_error_log', 'SELECT'), 'reader may read groups');
SELECT ok(NOT has_table_privilege('observe_reader', 'monitoring.tb_error_log', 'INSERT,UPDATE,DELETE'), 'reader may not change groups');
SELECT ok(NOT has_function_privilege('observe_reader', 'monitoring.capture_error(jsonb)', 'EXECUTE'), 'reader may not capture');
SELECT ok(NOT has_function_privilege('observe_reader', 'monitoring.run_maintenance()', 'EXECUTE'), 'reader may not run maintenance');

-- admin
SELECT ok(has_function_privilege('observe_admin', 'monitoring.run_maintenance()', 'EXECUTE'), 'admin may run maintenance');
SELECT ok(has_function_privilege('observe_admin', 'monitoring.set_retention(regclass, interval)', 'EXECUTE'), 'admin may set retention');
SELECT ok(has_table_privilege('observe_admin', 'monitoring.tb_error_log', 'UPDATE'), 'admin may change groups');

-- Acting as the roles.
SET LOCAL ROLE observe_writer;
SELECT lives_ok($$SELECT monitoring.capture_error('{"exception_type": "RoleProbe", "message": "as writer"}')$$,
                'writer captures through capture_error()');
SELECT lives_ok($$INSERT INTO monitoring.tb_error_occurrence (exception_type, message) VALUES ('RoleProbe', 'raw insert')$$,
                'writer captures with a plain INSERT (the trigger groups it)');
SELECT throws_ok($$SELECT count(*) FROM monitoring.tb_error_occurrence$$, '42501', NULL, 'writer cannot read what was stored');
RESET ROLE;

SET LOCAL ROLE observe_reader;
SELECT is((SELECT count(*)::int FROM monitoring.errors WHERE exception_type = 'RoleProbe'), 2, 'reader sees both captures');
SELECT throws_ok($$DELETE FROM monitoring.tb_error_log$$, '42501', NULL, 'reader cannot delete');
RESET ROLE;

-- The SECURITY DEFINER functions name pg_temp last in their search_path: left out, PostgreSQL
-- would search the session's temporary schema first for types, and a temporary domain named
-- text would run its CHECK, the caller's function, as the owner. cache_flush_stats() casts a
-- bigint to text as the owner; an error there fails this file. (No pgTAP call while the
-- domain exists: pgTAP's own casts would find it too.)
CREATE FUNCTION pg_temp.refuse_owner() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF current_user <> 'observe_writer' THEN
        RAISE EXCEPTION 'a temporary type ran its check as %', current_user;
    END IF;
    RETURN true;
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.refuse_owner() TO observe_writer;
SET LOCAL ROLE observe_writer;
SELECT set_config('pg_observe.cache_namespace', 'roles', false), set_config('pg_observe.cache_pending', '1000000000h', false);
CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.refuse_owner());
SELECT monitoring.cache_flush_stats();
DROP DOMAIN pg_temp.text;
RESET ROLE;
SELECT pass('a temporary domain named text does not reach the SECURITY DEFINER functions');
SELECT is((SELECT pg_catalog.array_agg(DISTINCT c ORDER BY c) FROM pg_proc p, unnest(p.proconfig) c
           WHERE p.pronamespace = 'monitoring'::regnamespace AND c LIKE 'search_path=%'),
          ARRAY['search_path=pg_catalog, pg_temp'], 'every function that sets search_path names pg_temp last');

SELECT * FROM finish();
ROLLBACK;
