"""pg_cron: schedule_maintenance() registers the job idempotently and pg_cron really runs
run_maintenance(). pg_cron lives only in the cluster's cron database (obs)."""

from __future__ import annotations

import os
import time

import psycopg
import pytest

CRON_DSN = "host={} port={} user=postgres dbname=obs".format(
    os.environ.get("PG_OBSERVE_TEST_HOST", ""), os.environ.get("PG_OBSERVE_TEST_PORT", "54329")
)


@pytest.fixture(scope="module")
def cron_conn():
    """The cron database with the pg_observe just built (reinstalled: same version, new code)."""
    with psycopg.connect(CRON_DSN, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        conn.execute("DROP EXTENSION IF EXISTS pg_observe CASCADE")
        conn.execute("CREATE EXTENSION pg_observe CASCADE")
        yield conn


def test_schedule_maintenance_is_idempotent(cron_conn: psycopg.Connection) -> None:
    first = cron_conn.execute("SELECT job_name, schedule, jobid FROM monitoring.schedule_maintenance()").fetchall()
    second = cron_conn.execute("SELECT job_name, schedule, jobid FROM monitoring.schedule_maintenance()").fetchall()
    assert [r[0] for r in first] == ["pg_observe_maintenance"]
    assert first == second
    jobs = cron_conn.execute("SELECT count(*) FROM cron.job WHERE jobname = 'pg_observe_maintenance'").fetchone()
    assert jobs == (1,)


def test_pg_cron_runs_maintenance(cron_conn: psycopg.Connection) -> None:
    """A one-minute probe job runs the same command; wait for pg_cron to report success."""
    cron_conn.execute("SELECT cron.schedule('pg_observe_probe', '* * * * *', 'SELECT monitoring.run_maintenance()')")
    try:
        deadline = time.monotonic() + 130
        status = None
        while time.monotonic() < deadline:
            row = cron_conn.execute(
                "SELECT d.status, d.return_message FROM cron.job_run_details d JOIN cron.job j USING (jobid)"
                " WHERE j.jobname = 'pg_observe_probe' AND d.status IN ('succeeded', 'failed')"
                " ORDER BY d.runid DESC LIMIT 1"
            ).fetchone()
            if row:
                status = row
                break
            time.sleep(2)
        assert status is not None, "pg_cron did not run the job within 130 s"
        assert status[0] == "succeeded", status[1]
    finally:
        cron_conn.execute("SELECT cron.unschedule('pg_observe_probe')")


def test_schedule_without_pg_cron_is_a_notice(dsn: str) -> None:
    notices: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        rows = conn.execute("SELECT * FROM monitoring.schedule_maintenance()").fetchall()
    assert rows == []
    assert any("pg_cron is not installed" in n for n in notices)
