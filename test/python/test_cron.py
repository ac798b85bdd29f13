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
        try:
            yield conn
        finally:
            conn.execute("SELECT monitoring.unschedule_maintenance()")


def test_schedule_maintenance_is_idempotent(cron_conn: psycopg.Connection) -> None:
    first = cron_conn.execute("SELECT job_name, schedule, jobid FROM monitoring.schedule_maintenance()").fetchall()
    second = cron_conn.execute("SELECT job_name, schedule, jobid FROM monitoring.schedule_maintenance()").fetchall()
    assert [r[0] for r in first] == ["pg_observe_maintenance", "pg_observe_notifications", "pg_observe_error_queue",
                                     "pg_observe_metric_rollups"]
    assert first == second
    jobs = cron_conn.execute("SELECT jobname, count(*) FROM cron.job WHERE jobname LIKE 'pg_observe%'"
                             " GROUP BY jobname ORDER BY 1").fetchall()
    assert jobs == [("pg_observe_error_queue", 1), ("pg_observe_maintenance", 1), ("pg_observe_metric_rollups", 1),
                    ("pg_observe_notifications", 1)]


def test_pg_cron_runs_maintenance(cron_conn: psycopg.Connection) -> None:
    """A one-minute probe job runs the same command; wait for pg_cron to report success. The
    maintenance it runs includes the metric rollups: a point received two minutes ago is rolled up."""
    cron_conn.execute("INSERT INTO monitoring.metrics (metric_name, metric_type, metric_value, received_at)"
                      " VALUES ('cron.probe', 'counter', 5, now() - interval '2 minutes')")
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
        assert cron_conn.execute("SELECT sample_count, value_sum FROM monitoring.metric_rollups_1m"
                                 " WHERE metric_name = 'cron.probe'").fetchall() == [(1, 5.0)]
    finally:
        cron_conn.execute("SELECT cron.unschedule('pg_observe_probe')")


def test_schedule_without_pg_cron_is_a_notice(dsn: str) -> None:
    notices: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        rows = conn.execute("SELECT * FROM monitoring.schedule_maintenance()").fetchall()
    assert rows == []
    assert any("pg_cron is not installed" in n for n in notices)


def test_pg_cron_backstops_capture_queued_errors_and_deliver_without_a_worker(cron_conn: psycopg.Connection) -> None:
    """No worker runs: the event is queued with queue_error(); the every-minute job
    pg_observe_error_queue captures it (which queues its notification) and the every-minute
    dispatcher job delivers it to the receiver: up to two minutes."""
    from test_notifications import Receiver

    receiver = Receiver()
    try:
        cron_conn.execute("SELECT monitoring.schedule_maintenance()")
        config_id = cron_conn.execute(
            "INSERT INTO monitoring.tb_error_notification_config (error_type, channel_config)"
            " VALUES ('CronBackstopError', jsonb_build_object('url', %s::text)) RETURNING config_id",
            (receiver.url,)).fetchone()[0]
        cron_conn.execute("""SELECT monitoring.queue_error('{"exception_type": "CronBackstopError",'
                          ' "message": "no worker here", "fingerprint": ["cron-backstop"]}')""")
        deadline = time.monotonic() + 190
        while time.monotonic() < deadline and not receiver.requests:
            time.sleep(1)
        assert receiver.requests, "the pg_cron jobs did not capture and deliver within 190 s"
        assert cron_conn.execute("SELECT count(*) FROM monitoring.error_queue").fetchone() == (0,)
        assert cron_conn.execute("SELECT occurrence_count FROM monitoring.error_groups"
                                 " WHERE fingerprint = 'cron-backstop'").fetchone() == (1,)
        assert receiver.bodies()[0]["error_fingerprint"] == "cron-backstop"
        status = cron_conn.execute("SELECT status FROM monitoring.notification_queue WHERE config_id = %s",
                                   (config_id,)).fetchone()
        assert status == ("sent",)
    finally:
        receiver.close()
