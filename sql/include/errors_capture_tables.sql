-- Included by sql/100_errors.sql and by the 0.10.0 -> 0.11.0 upgrade, which made it (0.12.0
-- changed the collation of user_key by ALTER TABLE).

-- The occurrences the fast path of a plain INSERT or COPY has taken in the statement running
-- now: the statement's AFTER trigger counts them per group (occurrences, users, environments,
-- releases) in one pass at its end, instead of each row writing a user and a counter delta of
-- its own. The AFTER trigger takes the rows of its own transaction (xact: the top-level
-- transaction, savepoints included), so a row normally lives only until its statement ends,
-- hence UNLOGGED and without an index. Only a row written with the statement mark set by hand
-- (see _error_occurrence_begin()) can outlive its transaction; run_maintenance() counts it.
CREATE UNLOGGED TABLE monitoring.error_capture_journal (
    error_id         uuid        NOT NULL,
    user_key         text        COLLATE pg_catalog."C",   -- as error_group_user's, which it fills
    occurred_at      timestamptz NOT NULL,
    environment      text,
    service          text,
    release_version  text,
    xact             xid8        NOT NULL DEFAULT pg_catalog.pg_current_xact_id()
);
COMMENT ON TABLE monitoring.error_capture_journal IS
    'Fast-path occurrences of the INSERT or COPY running now, counted per group by its statement trigger at its end';

-- What the capture reads for every row, in one row: the scrub words and their pattern,
-- whether the fingerprint cache may be used (no enabled rule reads the message, environment
-- or tags), whether notification rules are enabled. A row of a plain INSERT reads it with its
-- fingerprint lookup instead of three more queries. Statement triggers on the three tables
-- refresh it; until the first refresh the defaults are the safe ones (every row scrubbed,
-- no cache, rules evaluated).
CREATE TABLE monitoring.error_capture_state (
    singleton                 boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    scrub_words               text[]      NOT NULL DEFAULT '{}',
    scrub_pattern             text        DEFAULT '',   -- '' matches every text; NULL: no words
    fingerprint_cache_usable  boolean     NOT NULL DEFAULT false,
    notification_rules        boolean     NOT NULL DEFAULT true,
    refreshed_at              timestamptz
);
COMMENT ON TABLE monitoring.error_capture_state IS
    'Derived from error_scrub_key, error_fingerprint_rule and tb_error_notification_config (kept by their triggers): what every capture reads';
INSERT INTO monitoring.error_capture_state DEFAULT VALUES;

CREATE OR REPLACE FUNCTION monitoring._refresh_error_capture_state()
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Refreshes take turns, and each reads the tables in a statement of its own, after the
    -- lock: in READ COMMITTED it sees what a refresh it waited for had committed, so two
    -- concurrent changes (two new scrub words) both end up in the row. Captures only read.
    LOCK TABLE monitoring.error_capture_state IN SHARE ROW EXCLUSIVE MODE;
    -- An upsert: a row deleted by hand comes back.
    INSERT INTO monitoring.error_capture_state AS s
        (singleton, scrub_words, scrub_pattern, fingerprint_cache_usable, notification_rules, refreshed_at)
    SELECT true,
           -- the words as the patterns read them (_scrub_word_pattern()): lower case, no separators
           COALESCE((SELECT pg_catalog.array_agg(pg_catalog.regexp_replace(pg_catalog.lower(k.key_word), '[-_\s]', '', 'g')
                                                 ORDER BY k.key_word)
                     FROM monitoring.error_scrub_key k), '{}'),
           (SELECT pg_catalog.string_agg(k.key_pattern, '|' ORDER BY k.key_word) FROM monitoring.error_scrub_key k),
           NOT EXISTS (
               SELECT FROM monitoring.error_fingerprint_rule r
               WHERE r.enabled AND (r.match_message IS NOT NULL OR r.match_environment IS NOT NULL OR r.match_tags IS NOT NULL)),
           EXISTS (SELECT FROM monitoring.tb_error_notification_config n WHERE n.enabled),
           pg_catalog.clock_timestamp()
    ON CONFLICT (singleton) DO UPDATE
    SET scrub_words = excluded.scrub_words, scrub_pattern = excluded.scrub_pattern,
        fingerprint_cache_usable = excluded.fingerprint_cache_usable,
        notification_rules = excluded.notification_rules, refreshed_at = excluded.refreshed_at;
    RETURN 'capture state refreshed';
END
$$;
COMMENT ON FUNCTION monitoring._refresh_error_capture_state() IS
    'Recomputes error_capture_state from the scrub words, the fingerprint rules and the notification rules (also a maintenance task)';

CREATE OR REPLACE FUNCTION monitoring._error_capture_settings_changed()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM monitoring._refresh_error_capture_state();
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._error_capture_settings_changed() IS
    'Trigger: a table error_capture_state is derived from changed; refresh it';

CREATE TRIGGER error_scrub_key_capture_state
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON monitoring.error_scrub_key
    FOR EACH STATEMENT EXECUTE FUNCTION monitoring._error_capture_settings_changed();
CREATE TRIGGER error_fingerprint_rule_capture_state
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON monitoring.error_fingerprint_rule
    FOR EACH STATEMENT EXECUTE FUNCTION monitoring._error_capture_settings_changed();
-- Also when logical replication or a restore writes the rules (session_replication_role = replica).
ALTER TABLE monitoring.error_scrub_key ENABLE ALWAYS TRIGGER error_scrub_key_capture_state;
ALTER TABLE monitoring.error_fingerprint_rule ENABLE ALWAYS TRIGGER error_fingerprint_rule_capture_state;
-- The trigger on tb_error_notification_config, and the first refresh, come with that table
-- (sql/include/notify_capture_state.sql). Maintenance refreshes too: after a restore with
-- triggers disabled, or triggers disabled by hand, the row would go stale.
INSERT INTO monitoring.maintenance_task (task_name, function_name, run_order)
VALUES ('refresh_error_capture_state', 'monitoring._refresh_error_capture_state', 5);
