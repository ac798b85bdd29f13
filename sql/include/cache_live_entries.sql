-- The view cache_get_entry reads (included by sql/500_cache.sql and by the upgrade scripts,
-- hence CREATE OR REPLACE).

-- The live entries, for reading without a SECURITY DEFINER function (cache_get_entry, a SQL
-- function PostgreSQL inlines into the caller's query, reads here). A view reads with its
-- owner's privileges, so observe_writer may read it and still not the table; security_barrier
-- keeps a caller's own functions in a WHERE clause from seeing the expired rows it filters out
-- (the key and namespace conditions are leakproof, so they still reach the primary key).
CREATE OR REPLACE VIEW monitoring.cache_live_entries WITH (security_barrier) AS
SELECT e.namespace, e.key, e.value, e.value_bytes, e.value_type, e.expires_at
FROM monitoring.cache_entries e
WHERE e.expires_at IS NULL OR e.expires_at > pg_catalog.clock_timestamp();
COMMENT ON VIEW monitoring.cache_live_entries IS
    'The cache entries that have not expired, of every namespace (what cache_get_entry reads); observe_writer may read it, readers may not';
