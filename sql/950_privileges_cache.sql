-- Privileges of the cache (see 900_privileges.sql for the matrix). The cache is the
-- applications' own, so it belongs to the role they already have, observe_writer: it may call
-- the cache functions (SECURITY DEFINER but cache_get_entry) and touch neither table, so that
-- every write passes the checks of keys, TTLs and values and is counted. Dashboards and
-- exporters (observe_reader) read monitoring.cache_stats, never the cached values (sessions,
-- tokens, personal data).
-- Admins have everything (900_privileges.sql), expire_cache() included.
GRANT EXECUTE ON FUNCTION monitoring.cache_get(text, text),
                          monitoring.cache_get_entry(text, text),
                          monitoring.cache_get_many(text[], text),
                          monitoring.cache_get_many_packed(text[], text),
                          monitoring.cache_ttl(text, text),
                          monitoring.cache_keys(text, text, integer),
                          monitoring.cache_set(text, jsonb, interval, text),
                          monitoring.cache_set_bytes(text, bytea, interval, text, text),
                          monitoring.cache_set_many_arrays(text[], jsonb[], interval, text, bytea[], text[]),
                          monitoring.cache_set_many(jsonb, interval, text),
                          monitoring.cache_incr(text, bigint, interval, text),
                          monitoring.cache_set_if_absent(text, jsonb, interval, text),
                          monitoring.cache_expire(text, interval, text),
                          monitoring.cache_delete(text, text),
                          monitoring.cache_delete_many(text[], text),
                          monitoring.cache_delete_pattern(text, text),
                          monitoring.cache_flush_stats()
    TO observe_writer;
-- cache_get_entry is inlined into the caller's query, which then reads the view and calls
-- these as the caller: the view has the owner's privileges and the live entries of every
-- namespace (namespaces separate keys, not privileges: docs/cache.md); the functions count one
-- event per call, in the caller's own session.
GRANT SELECT ON monitoring.cache_live_entries TO observe_writer;
GRANT EXECUTE ON FUNCTION monitoring._cache_note_one(text, text),
                          monitoring._cache_note_get(text, text, boolean)
    TO observe_writer;

-- The history holds counts and sizes per namespace, no key and no value.
GRANT SELECT ON monitoring.cache_stats, monitoring.cache_stats_history TO observe_reader;
