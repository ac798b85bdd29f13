-- Included by sql/300_telemetry.sql and by the upgrade scripts, hence CREATE OR REPLACE.

-- A batch whose statement fails even so (a value the checks let through, such as the date
-- 2024-02-30) is stored half by half, down to the one row that fails, which is kept in
-- rejected_telemetry with PostgreSQL's message: one bad row in n costs about 2 log2(n)
-- statements, not n. p_kind picks the store: span (_store_spans) or metric (_store_metrics).
-- Spans are inserted without ON CONFLICT (a speculative insertion per row costs an eighth of
-- the time); a batch that holds a stored span (an exporter's retry) or one span twice fails
-- with unique_violation and is stored again skipping them (p_skip_duplicates): one
-- subtransaction a batch, two for such a batch.
CREATE OR REPLACE FUNCTION monitoring._store_bisecting(p_batch jsonb, p_kind text, p_skip_duplicates boolean DEFAULT false,
                                                       OUT accepted integer, OUT duplicates integer,
                                                       OUT rejected integer)
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := pg_catalog.jsonb_array_length(p_batch);
    part record;
BEGIN
    BEGIN
        IF p_kind = 'span' THEN
            SELECT s.accepted, s.duplicates, s.rejected INTO STRICT accepted, duplicates, rejected
            FROM monitoring._store_spans(p_batch, p_skip_duplicates) s;
        ELSE
            SELECT m.accepted, 0, m.rejected INTO STRICT accepted, duplicates, rejected
            FROM monitoring._store_metrics(p_batch) m;
        END IF;
        RETURN;
    EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded THEN
        IF SQLSTATE = '23505' AND p_kind = 'span' AND NOT p_skip_duplicates THEN
            SELECT b.accepted, b.duplicates, b.rejected INTO STRICT accepted, duplicates, rejected
            FROM monitoring._store_bisecting(p_batch, p_kind, true) b;
            RETURN;
        END IF;
        IF n = 1 THEN
            INSERT INTO monitoring.rejected_telemetry (kind, reason, payload) VALUES (p_kind, SQLERRM, p_batch -> 0);
            accepted := 0; duplicates := 0; rejected := 1;
            RETURN;
        END IF;
    END;
    accepted := 0; duplicates := 0; rejected := 0;
    FOR part IN
        SELECT b.* FROM (VALUES (0, n / 2), (n / 2, n)) AS h(first, last)
        CROSS JOIN LATERAL monitoring._store_bisecting(
            (SELECT pg_catalog.jsonb_agg(e.value ORDER BY e.ordinality)
             FROM pg_catalog.jsonb_array_elements(p_batch) WITH ORDINALITY e
             WHERE e.ordinality > h.first AND e.ordinality <= h.last), p_kind, p_skip_duplicates) b
    LOOP
        accepted := accepted + part.accepted;
        duplicates := duplicates + part.duplicates;
        rejected := rejected + part.rejected;
    END LOOP;
END
$$;
COMMENT ON FUNCTION monitoring._store_bisecting(jsonb, text, boolean) IS
    'Stores a batch of spans or metric points; when its statement fails, each half on its own, down to the failing row';
