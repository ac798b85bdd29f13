"""Install, drop and pg_partman placement, on databases of the test's own."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

# Everything a database holds that an extension could leave behind.
INVENTORY = """
SELECT 'class ' || oid::regclass::text FROM pg_class WHERE relnamespace NOT IN
    (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema', 'pg_toast'))
UNION ALL SELECT 'proc ' || oid::regprocedure::text FROM pg_proc WHERE pronamespace NOT IN
    (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema'))
UNION ALL SELECT 'namespace ' || nspname FROM pg_namespace
UNION ALL SELECT 'type ' || oid::regtype::text FROM pg_type WHERE typnamespace NOT IN
    (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema', 'pg_toast'))
UNION ALL SELECT 'event trigger ' || evtname FROM pg_event_trigger
UNION ALL SELECT 'extension ' || extname FROM pg_extension
"""


@pytest.fixture
def scratch_db(admin_dsn: str):
    name = "pgo_" + uuid.uuid4().hex[:10]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = admin_dsn.replace("dbname=postgres", f"dbname={name}")
    yield dsn
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _inventory(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute(INVENTORY).fetchall()}


def test_drop_extension_leaves_nothing_behind(scratch_db: str) -> None:
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA partman")
        conn.execute("CREATE EXTENSION pg_partman SCHEMA partman")
        conn.execute("CREATE EXTENSION plpython3u")
        before = _inventory(conn)
        conn.execute("CREATE EXTENSION pg_observe")
        conn.execute("SELECT monitoring.capture_error('{\"exception_type\": \"E\"}')")
        conn.execute("SELECT * FROM monitoring.run_maintenance()")
        # occurrences, notification log, rejected telemetry, spans, metrics, rollups, change log
        assert conn.execute("SELECT count(*) FROM partman.part_config").fetchone() == (7,)
        conn.execute("DROP EXTENSION pg_observe CASCADE")
        after = _inventory(conn)
        assert after - before == set()
        assert conn.execute("SELECT count(*) FROM partman.part_config").fetchone() == (0,)
        # pg_partman keeps working for its other tables
        conn.execute("SELECT partman.run_maintenance()")


def test_pg_partman_in_a_schema_of_its_own(scratch_db: str) -> None:
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA tools")
        conn.execute("CREATE EXTENSION pg_partman SCHEMA tools")
        conn.execute("CREATE EXTENSION pg_observe CASCADE")
        assert conn.execute("SELECT monitoring._partman_schema()").fetchone() == ("tools",)
        assert conn.execute(
            "SELECT count(*) FROM tools.part_config WHERE parent_table = 'monitoring.tb_error_occurrence'"
        ).fetchone() == (1,)
        rows = conn.execute("SELECT target FROM monitoring.run_maintenance() WHERE task = 'partitions'").fetchall()
        assert rows == [("monitoring.metric_rollups_1m",), ("monitoring.metrics",), ("monitoring.rejected_telemetry",),
                        ("monitoring.spans",), ("monitoring.tb_entity_change_log",),
                        ("monitoring.tb_error_notification_log",), ("monitoring.tb_error_occurrence",)]
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public',)


def test_create_extension_keeps_the_session_search_path(scratch_db: str) -> None:
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_observe CASCADE")
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public',)


def test_an_upgrade_by_another_superuser_keeps_the_capture_whole(scratch_db: str, admin_dsn: str) -> None:
    """The row trigger lets the capture functions' prepared rows through by the role they run
    as: their owner. An upgrade run by another superuser must not write its own name there,
    or every captured row would be prepared twice (a known event id then dropped)."""
    role = f"observe_upgrader_{os.getpid()}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" SUPERUSER')
    try:
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_observe VERSION '0.9.0' CASCADE")
            conn.execute(f'SET ROLE "{role}"')
            conn.execute("ALTER EXTENSION pg_observe UPDATE")
            conn.execute("RESET ROLE")
            stored = conn.execute("SELECT monitoring.capture_errors(%s::jsonb)", (
                '[{"exception_type": "Upgraded", "message": "m", "event_id": "00000000-0000-4000-8000-0000000000aa"}]',
            )).fetchone()[0]
            assert stored == 1
            assert conn.execute("SELECT count(*), min(g.occurrence_count) FROM monitoring.tb_error_occurrence o"
                                " JOIN monitoring.error_groups g ON g.error_id = o.error_id"
                                " WHERE o.exception_type = 'Upgraded'").fetchone() == (1, 1)
    finally:
        with psycopg.connect(scratch_db, autocommit=True) as conn:   # what the upgrade created is the role's
            conn.execute(f'REASSIGN OWNED BY "{role}" TO postgres')
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP ROLE "{role}"')
