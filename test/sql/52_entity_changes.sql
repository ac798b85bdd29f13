-- Business events: track_changes() / untrack_changes(), the change log's rows, the trace id
-- read from the transaction, who changed what, bad input and privileges.
BEGIN;
SELECT plan(39);
SET LOCAL search_path = public, monitoring;

CREATE TABLE public.shop_order (id integer PRIMARY KEY, total numeric NOT NULL, status text NOT NULL);
CREATE TABLE public.order_line (order_id integer, line_no integer, sku text, PRIMARY KEY (order_id, line_no));
CREATE TABLE public.no_key (note text);

SELECT lives_ok($$SELECT monitoring.track_changes('public.shop_order', 'order')$$, 'track_changes() tracks a table');
SELECT lives_ok($$SELECT monitoring.track_changes('public.order_line')$$, 'and one with a composite key');
SELECT results_eq($$SELECT table_name::text, entity_name FROM monitoring.tracked_tables ORDER BY 1$$,
                  $$VALUES ('order_line', 'order_line'), ('shop_order', 'order')$$,
                  'tracked_tables lists them with their entity names (default: the table''s name)');

SELECT set_config('pg_observe.trace_id', '4BF92F3577B34DA6A3CE929D0E0E4736', true),
       set_config('pg_observe.span_id', '00F067AA0BA902B7', true),
       set_config('pg_observe.user_id', 'alice@example.com', true);
INSERT INTO shop_order VALUES (42, 99.50, 'new');
UPDATE shop_order SET status = 'paid' WHERE id = 42;
UPDATE shop_order SET status = 'paid' WHERE id = 42;   -- changes nothing
INSERT INTO order_line VALUES (42, 1, 'sku-1'), (42, 2, 'sku-2');
DELETE FROM order_line WHERE line_no = 2;

SELECT results_eq(
    $$SELECT entity_name, entity_id, change_type, before_data->>'status', after_data->>'status', changed_columns
      FROM monitoring.tb_entity_change_log WHERE entity_name = 'order' ORDER BY change_id$$,
    $$VALUES ('order', '42', 'INSERT', NULL, 'new', NULL::text[]), ('order', '42', 'UPDATE', 'new', 'paid', '{status}'::text[])$$,
    'INSERT and UPDATE are recorded with before, after and the changed columns; an UPDATE that changes nothing is not');
SELECT results_eq(
    $$SELECT entity_id, change_type FROM monitoring.tb_entity_change_log WHERE entity_name = 'order_line' ORDER BY change_id$$,
    $$VALUES ('[42, 1]', 'INSERT'), ('[42, 2]', 'INSERT'), ('[42, 2]', 'DELETE')$$,
    'a composite key is a JSON array of its values; DELETE is recorded');
SELECT is((SELECT before_data FROM monitoring.tb_entity_change_log WHERE change_type = 'DELETE'),
          '{"sku": "sku-2", "line_no": 2, "order_id": 42}'::jsonb, 'a DELETE keeps the row as it was');
SELECT results_eq(
    $$SELECT DISTINCT trace_id, span_id, application_user, changed_by = current_user, table_name FROM monitoring.tb_entity_change_log
      ORDER BY table_name$$,
    $$VALUES ('4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7', 'alice@example.com', true, 'public.order_line'),
             ('4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7', 'alice@example.com', true, 'public.shop_order')$$,
    'trace and span id come from the transaction''s settings (normalized), with the application user and the role');
SELECT ok((SELECT bool_and(changed_at BETWEEN now() AND clock_timestamp()) FROM monitoring.tb_entity_change_log),
          'changed_at is the time of the change');
SELECT ok((SELECT bool_and(transaction_id = pg_current_xact_id()) FROM monitoring.tb_entity_change_log),
          'and the transaction is recorded');

-- Settings that are not ids are not stored as ids.
SELECT set_config('pg_observe.trace_id', E'\'; DROP TABLE shop_order; --', true),
       set_config('pg_observe.span_id', repeat('f', 10000), true),
       set_config('pg_observe.user_id', repeat('u', 1000), true);
UPDATE shop_order SET total = 1 WHERE id = 42;
SELECT results_eq($$SELECT trace_id, span_id, length(application_user) FROM monitoring.tb_entity_change_log
                    WHERE entity_name = 'order' ORDER BY change_id DESC LIMIT 1$$,
                  $$VALUES (NULL::text, NULL::text, 256)$$,
                  'a hostile or oversized setting gives no trace id; the application user is cut to 256 characters');
SELECT set_config('pg_observe.trace_id', '', true), set_config('pg_observe.span_id', '', true), set_config('pg_observe.user_id', '', true);
UPDATE shop_order SET total = 2 WHERE id = 42;
SELECT results_eq($$SELECT trace_id, application_user FROM monitoring.tb_entity_change_log WHERE entity_name = 'order'
                    ORDER BY change_id DESC LIMIT 1$$, $$VALUES (NULL::text, NULL::text)$$, 'no trace: NULL');

-- A writer of the table needs no right on the log, and is the one recorded.
CREATE ROLE observe_test_app NOLOGIN;
GRANT SELECT, INSERT, UPDATE, DELETE ON shop_order TO observe_test_app;
SET LOCAL ROLE observe_test_app;
SELECT lives_ok($$INSERT INTO shop_order VALUES (43, 5, 'new')$$, 'a role with rights on the table only can change it');
SELECT throws_ok($$SELECT count(*) FROM monitoring.tb_entity_change_log$$, '42501', NULL, 'but cannot read the log');
SELECT throws_ok($$INSERT INTO monitoring.tb_entity_change_log (entity_name, entity_id, change_type) VALUES ('x', '1', 'INSERT')$$,
                 '42501', NULL, 'nor write it');
RESET ROLE;
SELECT is((SELECT changed_by FROM monitoring.tb_entity_change_log WHERE entity_id = '43'), 'observe_test_app',
          'changed_by is the role that made the change, not the trigger''s owner');

TRUNCATE order_line;
SELECT results_eq($$SELECT entity_id, change_type FROM monitoring.tb_entity_change_log WHERE change_type = 'TRUNCATE'$$,
                  $$VALUES ('*', 'TRUNCATE')$$, 'TRUNCATE is recorded once');

-- ---------------------------------------------------------------- bad input
SELECT throws_ok($$SELECT monitoring.track_changes('public.no_key')$$, '42P16',
                 'table public.no_key has no primary key: a change could not name the entity it changed',
                 'a table without a primary key: a clear error');
SELECT throws_ok($$SELECT monitoring.track_changes('monitoring.tb_error_log')$$, '22023', NULL,
                 'pg_observe''s own tables are refused (a change log of the change log would loop)');
SELECT throws_ok($$SELECT monitoring.track_changes('monitoring.errors')$$, '42809', NULL, 'a view is refused');
SELECT throws_ok($$SELECT monitoring.track_changes('public.does_not_exist')$$, '42P01', NULL, 'a missing table is refused');
SELECT throws_ok($$SELECT monitoring.track_changes('public.shop_order', '')$$, '22023', NULL, 'an empty entity name is refused');
SELECT lives_ok($$SELECT monitoring.track_changes('public.shop_order', E'order \'with\' quotes')$$,
                'calling it again renames the entity, even to a hostile name');
UPDATE shop_order SET total = 3 WHERE id = 42;
SELECT is((SELECT entity_name FROM monitoring.tb_entity_change_log ORDER BY change_id DESC LIMIT 1), E'order \'with\' quotes',
          'the new name is used');
SELECT is((SELECT count(*)::int FROM pg_trigger WHERE tgrelid = 'public.shop_order'::regclass AND tgname LIKE 'pg_observe%'), 2,
          'still one row trigger and one TRUNCATE trigger');

-- ---------------------------------------------------------------- untrack
SELECT is(monitoring.untrack_changes('public.shop_order'), true, 'untrack_changes() stops tracking');
SELECT is(monitoring.untrack_changes('public.shop_order'), false, 'and says when there was nothing to stop');
UPDATE shop_order SET total = 4 WHERE id = 42;
SELECT is((SELECT count(*)::int FROM monitoring.tb_entity_change_log WHERE after_data->>'total' = '4'), 0, 'no more rows after it');
SELECT ok((SELECT count(*) FROM monitoring.tb_entity_change_log WHERE entity_id = '42') > 0, 'past changes stay');

-- ---------------------------------------------------------------- hostile owners and schema changes
-- The owner of a tracked table adds a cast to json that tries to make itself superuser: the
-- trigger converts rows as the role making the change, so the cast runs without any right.
CREATE ROLE observe_test_owner NOLOGIN;
CREATE SCHEMA hostile AUTHORIZATION observe_test_owner;
CREATE TABLE hostile.t (id integer PRIMARY KEY);
ALTER TABLE hostile.t OWNER TO observe_test_owner;
SELECT monitoring.track_changes('hostile.t');
SET LOCAL ROLE observe_test_owner;
CREATE TYPE hostile.flag AS ENUM ('x');
ALTER TABLE hostile.t ADD COLUMN f hostile.flag;
CREATE FUNCTION hostile.flag_json(hostile.flag) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('observe_test.cast_ran_as', current_user, true);
    BEGIN
        EXECUTE 'ALTER ROLE observe_test_owner SUPERUSER';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    RETURN '"x"';
END $$;
CREATE CAST (hostile.flag AS json) WITH FUNCTION hostile.flag_json(hostile.flag);
INSERT INTO hostile.t VALUES (1, 'x');
SELECT is(current_setting('observe_test.cast_ran_as'), 'observe_test_owner', 'a cast of the owner''s runs as the owner, not as pg_observe');
SELECT throws_ok($$SELECT monitoring._append_entity_change('hostile.t', 'INSERT', NULL, '{"id": 9}', 'postgres', 'x', '{id}')$$,
                 '42501', '_append_entity_change() is called by the triggers of track_changes() only',
                 'the append cannot be called directly: no forged changes');
RESET ROLE;
SELECT is((SELECT rolsuper FROM pg_roles WHERE rolname = 'observe_test_owner'), false, 'and the owner is still no superuser');
SELECT results_eq($$SELECT entity_id, after_data FROM monitoring.tb_entity_change_log WHERE table_name = 'hostile.t'$$,
                  $$VALUES ('1', '{"f": "x", "id": 1}'::jsonb)$$, 'the change is logged once, as it happened');

-- A renamed key does not fail the user's writes; the change names the key as it is now.
CREATE TABLE public.renamed (id integer PRIMARY KEY, v text);
SELECT monitoring.track_changes('public.renamed');
ALTER TABLE public.renamed RENAME COLUMN id TO order_id;
SELECT lives_ok($$INSERT INTO public.renamed VALUES (7, 'x')$$, 'a write after the key column was renamed works');
SELECT is((SELECT entity_id FROM monitoring.tb_entity_change_log WHERE table_name = 'public.renamed'), '[7]',
          'and the change carries the key''s current value');

-- A timestamptz key reads the same from every session's time zone; excluded columns stay out.
CREATE TABLE public.readings (sensor integer, taken timestamptz, secret text, PRIMARY KEY (sensor, taken));
SELECT monitoring.track_changes('public.readings', 'reading', '{secret}');
SET LOCAL timezone = 'America/New_York';
INSERT INTO public.readings VALUES (1, '2026-01-01 00:00:00+00', 's3cr3t');
SET LOCAL timezone = 'Asia/Tokyo';
UPDATE public.readings SET secret = 'other' WHERE sensor = 1;
DELETE FROM public.readings;
RESET timezone;
SELECT results_eq($$SELECT DISTINCT entity_id FROM monitoring.tb_entity_change_log WHERE entity_name = 'reading'$$,
                  $$VALUES ('[1, "2026-01-01T00:00:00+00:00"]')$$, 'one entity id whatever the session''s time zone');
SELECT results_eq($$SELECT change_type, COALESCE(before_data ? 'secret', false) OR COALESCE(after_data ? 'secret', false) FROM monitoring.tb_entity_change_log
                    WHERE entity_name = 'reading' ORDER BY change_id$$,
                  $$VALUES ('INSERT', false), ('DELETE', false)$$,
                  'excluded columns are not logged (and an UPDATE of them alone is no change)');

-- ---------------------------------------------------------------- storage and privileges
SELECT results_eq($$SELECT partition_interval, retention FROM monitoring.time_series_config
                    WHERE parent_table = 'monitoring.tb_entity_change_log'$$,
                  $$VALUES (interval '1 month', interval '12 months')$$, 'the change log is partitioned monthly, kept 12 months');
SET LOCAL ROLE observe_reader;
SELECT ok((SELECT count(*) FROM monitoring.tb_entity_change_log) > 0, 'the reader reads the change log');
SELECT throws_ok($$SELECT monitoring.track_changes('public.order_line')$$, '42501', NULL, 'the reader cannot track tables');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
