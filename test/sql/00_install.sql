-- What CREATE EXTENSION pg_observe CASCADE leaves in place, and the house rules every
-- object follows (comments, search_path, definer functions closed to PUBLIC).
BEGIN;
SELECT plan(21);

SELECT has_schema('monitoring');
SELECT has_extension('pg_observe');
SELECT has_extension('pg_partman');
SELECT has_role('observe_writer');
SELECT has_role('observe_reader');
SELECT has_role('observe_admin');
SELECT is_member_of('observe_writer', 'observe_admin');
SELECT is_member_of('observe_reader', 'observe_admin');
SELECT has_role('observe_dispatcher');
SELECT is_member_of('observe_dispatcher', 'observe_admin');
SELECT is_member_of('pg_monitor', 'observe_reader');

SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
     WHERE p.pronamespace = 'monitoring'::regnamespace
       AND NOT EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')),
    -- These pass the caller's search_path to pg_partman, which restores it session-wide;
    -- dispatch_notifications and drain_error_queue are procedures that commit, which a SET clause forbids;
    -- the _cache_note_batch, _cache_note_one, _event_uuid, _fingerprint_cache_key, _occurrence_*, _otel_*, _span_fields,
    -- _span_rows, _truncate and _user_key helpers are SQL the
    -- planner inlines into the capture's queries, which a SET clause would prevent (every
    -- name in them is schema-qualified); so is cache_get_entry, inlined into the caller's query.
    ARRAY['monitoring._cache_note_batch(text,bigint,bigint,bigint)', 'monitoring._cache_note_one(text,text)',
          'monitoring._create_time_series(regclass,text,interval,interval,integer,text)',
          'monitoring._event_uuid(text)',
          'monitoring._fingerprint_cache_key(monitoring.tb_error_occurrence,boolean)',
          'monitoring._occurrence_needs_scrub(text,text,text,text)',
          'monitoring._occurrence_objects(monitoring.tb_error_occurrence)',
          'monitoring._occurrence_within_limits(monitoring.tb_error_occurrence)',
          'monitoring._otel_span_id(text)', 'monitoring._otel_time(text,text)', 'monitoring._otel_trace_id(text)',
          'monitoring._span_fields(jsonb)', 'monitoring._span_rows(jsonb,timestamp with time zone,timestamp with time zone)',
          'monitoring._truncate(text,integer)', 'monitoring._user_key(jsonb,jsonb)',
          'monitoring.cache_get_entry(text,text)',
          'monitoring.create_error_occurrence_partition(date)',
          'monitoring.dispatch_notifications(integer,text,integer,integer,integer)',
          'monitoring.drain_error_queue(integer,integer)',
          'monitoring.drop_old_error_occurrence_partitions(integer)',
          'monitoring.drop_old_notification_log_partitions(integer)',
          'monitoring.ensure_error_occurrence_partitions(integer)',
          'monitoring.run_maintenance()', 'monitoring.set_retention(regclass,interval)'],
    'every function sets its search_path, but for those that hand the caller''s to pg_partman and inlined SQL helpers');

SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
     WHERE p.pronamespace = 'monitoring'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL),
    NULL, 'every function has a COMMENT');

SELECT is(
    (SELECT array_agg(c.oid::regclass::text ORDER BY c.oid::regclass::text) FROM pg_class c
     WHERE c.relnamespace = 'monitoring'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
       AND NOT c.relispartition AND obj_description(c.oid, 'pg_class') IS NULL),
    NULL, 'every table and view has a COMMENT');

SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
     WHERE p.pronamespace = 'monitoring'::regnamespace AND has_function_privilege('public', p.oid, 'EXECUTE')),
    -- called by the change-log triggers as any role that writes a tracked table; it refuses other callers
    ARRAY['monitoring._append_entity_change(regclass,text,jsonb,jsonb,name,text,text[])'],
    'no function is executable by PUBLIC but the change log''s append');
SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
     WHERE p.pronamespace = 'monitoring'::regnamespace AND p.prosecdef AND p.prorettype = 'trigger'::regtype
       AND has_function_privilege('observe_admin', p.oid, 'EXECUTE')),
    NULL, 'no admin may attach a SECURITY DEFINER trigger function to a table of its own');

SELECT is(
    (SELECT array_agg(c.oid::regclass::text ORDER BY c.oid::regclass::text) FROM pg_class c
     WHERE c.relnamespace = 'monitoring'::regnamespace
       AND has_table_privilege('public', c.oid, 'SELECT,INSERT,UPDATE,DELETE')),
    NULL, 'no table is readable or writable by PUBLIC');

SELECT is(
    (SELECT count(*)::int FROM pg_event_trigger WHERE evtname = 'pg_observe_cleanup_on_drop' AND evtenabled = 'O'),
    1, 'the DROP EXTENSION cleanup trigger is installed');

-- pg_partman restores search_path session-wide: our calls must leave the caller's as it was.
SET search_path = public, monitoring;
SELECT * FROM monitoring.run_maintenance();
SELECT is(current_setting('search_path'), 'public, monitoring', 'run_maintenance() leaves the caller''s search_path alone');
SELECT monitoring.set_retention('monitoring.tb_error_occurrence', interval '6 months');
SELECT is(current_setting('search_path'), 'public, monitoring', 'set_retention() leaves the caller''s search_path alone');

-- pg_dump must carry the identity sequences' values, or restored ids are handed out again
SELECT is(
    (SELECT array_agg(s.oid::regclass::text ORDER BY 1) FROM pg_class s
     WHERE s.relkind = 'S' AND s.relnamespace = 'monitoring'::regnamespace
       AND NOT s.oid = ANY ((SELECT e.extconfig FROM pg_extension e WHERE e.extname = 'pg_observe')::oid[])),
    NULL,
    'every sequence of monitoring is registered with pg_extension_config_dump');

SELECT * FROM finish();
ROLLBACK;
