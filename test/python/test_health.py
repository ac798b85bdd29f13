"""health() and the database-health views where commits, other sessions or pg_cron are needed:
the dispatcher's heartbeat left by real CALLs (as the dispatcher role too), pg_cron jobs that
failed, stopped or ran late (pg_cron lives only in the cluster's cron database, obs), real slow
statements, idle transactions and lock waits seen by a reader, functions timed by
track_functions, and the backup procedure of docs/operations.md (pg_dump, pg_restore, then
health()). test/sql/60_operations.sql covers the rest inside one transaction."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg.types.json import Jsonb

CRON_DSN = "host={} port={} user=postgres dbname=obs".format(
    os.environ.get("PG_OBSERVE_TEST_HOST", ""), os.environ.get("PG_OBSERVE_TEST_PORT", "54329")
)


def health(conn: psycopg.Connection) -> dict[str, tuple[str, str, float | None]]:
    rows = conn.execute("SELECT check_name, status, detail, observed FROM monitoring.health()").fetchall()
    return {name: (status, detail, observed) for name, status, detail, observed in rows}


def wait_for(predicate: Callable[[], object], timeout: float, step: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(step)
    return predicate()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


# --- the dispatcher's heartbeat -------------------------------------------------------------


def test_every_dispatcher_call_leaves_a_heartbeat(conn: psycopg.Connection) -> None:
    """Even a call that finds nothing to send; the name given is the key, calls count up."""
    assert conn.execute("CALL monitoring.dispatch_notifications(10, 'pytest-hb')").fetchone() == (0, 0, 0)
    first = conn.execute("SELECT last_seen_at, last_sent, last_failed, last_dead, calls"
                         " FROM monitoring.dispatcher_heartbeat WHERE dispatcher = 'pytest-hb'").fetchone()
    assert first is not None and first[1:] == (0, 0, 0, 1)
    time.sleep(0.05)
    conn.execute("CALL monitoring.dispatch_notifications(10, 'pytest-hb')")
    second = conn.execute("SELECT last_seen_at, calls FROM monitoring.dispatcher_heartbeat"
                          " WHERE dispatcher = 'pytest-hb'").fetchone()
    assert second[0] > first[0] and second[1] == 2


def test_heartbeat_without_a_name_is_the_role_and_works_for_the_dispatcher_role(conn: psycopg.Connection) -> None:
    """The pg_cron backstop passes no name (a new pid every minute): one row per role. The
    dispatcher role may write it with its own privileges (the procedure runs as its caller)."""
    conn.execute("CALL monitoring.dispatch_notifications()")
    conn.execute("CALL monitoring.dispatch_notifications()")
    conn.execute("SET ROLE observe_dispatcher")
    conn.execute("CALL monitoring.dispatch_notifications()")
    conn.execute("RESET ROLE")
    rows = conn.execute("SELECT dispatcher, calls FROM monitoring.dispatcher_heartbeat ORDER BY 1").fetchall()
    assert rows == [("observe_dispatcher", 1), ("postgres", 2)]


def test_heartbeat_survives_a_hostile_name(conn: psycopg.Connection) -> None:
    """A 100 kB name with quotes and a newline would not fit a btree key: it is cut to 200 characters."""
    name = ("x'; DROP TABLE monitoring.dispatcher_heartbeat; --\n" * 2000)[:100_000]
    conn.execute("CALL monitoring.dispatch_notifications(10, %s)", (name,))
    assert conn.execute("SELECT dispatcher FROM monitoring.dispatcher_heartbeat").fetchall() == [(name[:200],)]


def test_heartbeat_records_a_real_delivery_and_health_reads_it(conn: psycopg.Connection) -> None:
    from test_notifications import Receiver

    receiver = Receiver()
    try:
        conn.execute("INSERT INTO monitoring.tb_error_notification_config (error_type, channel_config)"
                     " VALUES ('HeartbeatError', %s)", (Jsonb({"url": receiver.url}),))
        checks = health(conn)
        assert checks["dispatcher_heartbeat"][0] == "warning", "a rule is enabled and no dispatcher ran"
        conn.execute("SELECT monitoring.capture_error(%s)",
                     (Jsonb({"exception_type": "HeartbeatError", "message": "m", "fingerprint": ["hb"]}),))
        assert health(conn)["notification_backlog"][1].startswith("1 notifications due")
        assert conn.execute("CALL monitoring.dispatch_notifications(100, 'worker@pytest')").fetchone() == (1, 0, 0)
        assert len(receiver.requests) == 1
        assert conn.execute("SELECT last_sent, last_failed, calls FROM monitoring.dispatcher_heartbeat"
                            " WHERE dispatcher = 'worker@pytest'").fetchone() == (1, 0, 1)
        checks = health(conn)
        assert checks["dispatcher_heartbeat"][0] == "ok"
        assert "worker@pytest" in checks["dispatcher_heartbeat"][1] and "1 sent" in checks["dispatcher_heartbeat"][1]
        assert checks["notification_backlog"][:2] == ("ok", "no notification is due")
        assert checks["failed_deliveries"][0] == "ok" and "(1 sent)" in checks["failed_deliveries"][1]
    finally:
        receiver.close()


def test_failed_deliveries_from_a_receiver_that_fails(conn: psycopg.Connection) -> None:
    """A receiver answering 500: the attempt is logged failed and health() turns critical (none sent)."""
    from test_notifications import Receiver

    receiver = Receiver()
    receiver.status = 500
    try:
        conn.execute("INSERT INTO monitoring.notification_settings (retry_base, send_timeout) VALUES ('1 hour', '2 s')")
        conn.execute("INSERT INTO monitoring.tb_error_notification_config (error_type, channel_config)"
                     " VALUES ('FailingError', %s)", (Jsonb({"url": receiver.url}),))
        conn.execute("SELECT monitoring.capture_error(%s)",
                     (Jsonb({"exception_type": "FailingError", "message": "m", "fingerprint": ["fail"]}),))
        assert conn.execute("CALL monitoring.dispatch_notifications(100, 'w')").fetchone() == (0, 1, 0)
        status, detail, observed = health(conn)["failed_deliveries"]
        assert (status, observed) == ("critical", 1.0)
        assert "1 failed and 0 sent" in detail and "webhook" in detail
    finally:
        receiver.close()


def test_all_ok_after_maintenance(conn: psycopg.Connection) -> None:
    """A fresh database after one run_maintenance(): every check is ok (no pg_cron here: another
    scheduler is assumed as long as maintenance keeps completing)."""
    conn.execute("SELECT monitoring.run_maintenance()")
    checks = health(conn)
    assert {name: status for name, (status, _, _) in checks.items() if status != "ok"} == {}
    assert "maintenance_schedule" in checks and not any(name.startswith("pg_cron_job:") for name in checks)


# --- time_series_config is admin-writable: health() reads only pg_observe's tables -------


def test_an_admin_login_cannot_read_another_table_through_health(dsn: str) -> None:
    """The reviewer's reproduction, with real logins: an observe_admin registers an application
    table whose text column holds a secret; health() and partition_health, read by an
    observe_reader login, report the row without its value, and every table of pg_observe is
    still checked on its own."""
    suffix = uuid.uuid4().hex[:8]
    admin_role, reader_role = f"health_admin_{suffix}", f"health_reader_{suffix}"
    with psycopg.connect(dsn, autocommit=True) as su:
        su.execute("CREATE SCHEMA app")
        su.execute("CREATE TABLE app.secrets (pw text, at timestamptz) PARTITION BY LIST (pw)")
        su.execute("CREATE TABLE app.secrets_default PARTITION OF app.secrets DEFAULT")
        su.execute("INSERT INTO app.secrets VALUES ('hunter2', now())")
        su.execute(f"CREATE ROLE {admin_role} LOGIN IN ROLE observe_admin")
        su.execute(f"CREATE ROLE {reader_role} LOGIN IN ROLE observe_reader")
        su.execute("SELECT monitoring.run_maintenance()")
        own_tables = su.execute("SELECT count(*) FROM monitoring.time_series_config").fetchone()[0]
    try:
        with psycopg.connect(dsn + f" user={admin_role}", autocommit=True) as admin:
            admin.execute("INSERT INTO monitoring.time_series_config (parent_table, control_column, partition_interval)"
                          " VALUES ('app.secrets', 'pw', '1 day'), ('app.secrets_default', 'at', '1 day')")
        with psycopg.connect(dsn + f" user={reader_role}", autocommit=True) as reader:
            rows = reader.execute("SELECT check_name, status, detail FROM monitoring.health()").fetchall()
            assert not [r for r in rows if "hunter2" in r[2]], rows
            checks = {name: (status, detail) for name, status, detail in rows}
            assert "partitions" not in checks, "one bad row must not collapse the partition checks"
            for table in ("app.secrets", "app.secrets_default"):
                for check in ("partitions_ahead", "default_partition"):
                    status, detail = checks[f"{check}:{table}"]
                    assert status == "warning" and detail.startswith("not checked:"), (check, table, detail)
            ok = [n for n, (s, _) in checks.items() if n.startswith("partitions_ahead:monitoring.") and s == "ok"]
            assert len(ok) == own_tables, checks
            partition_rows = reader.execute("SELECT parent_table, status, default_partition_rows"
                                            " FROM monitoring.partition_health WHERE parent_table LIKE 'app.%'"
                                            " ORDER BY 1").fetchall()
            assert partition_rows == [("app.secrets", "warning", None), ("app.secrets_default", "warning", None)]
    finally:
        with psycopg.connect(dsn, autocommit=True) as su:
            su.execute(f"DROP ROLE {admin_role}")
            su.execute(f"DROP ROLE {reader_role}")


def test_a_locked_default_partition_is_one_critical_row(dsn: str) -> None:
    """Maintenance holding a default partition: health() waits lock_timeout (2 s), then that
    table's default_partition check is critical with the SQLSTATE, the other tables answer."""
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as conn:
        holder.execute("LOCK TABLE monitoring.metrics_default IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        checks = health(conn)
        assert time.monotonic() - started < 10
        holder.rollback()
        status, detail, observed = checks["default_partition:monitoring.metrics"]
        assert (status, observed) == ("critical", None) and "SQLSTATE 55P03" in detail, detail
        assert checks["partitions_ahead:monitoring.metrics"][0] == "critical"
        assert "partitions" not in checks
        assert checks["default_partition:monitoring.spans"] == ("ok", "the default partition is empty", 0.0)
        assert health(conn)["default_partition:monitoring.metrics"][0] == "ok", "answers again once the lock is gone"


# --- pg_cron (database obs only) --------------------------------------------------------


@pytest.fixture(scope="module")
def cron_conn() -> Iterator[psycopg.Connection]:
    """The cron database with the pg_observe just built (reinstalled: same version, new code)."""
    with psycopg.connect(CRON_DSN, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        c.execute("DROP EXTENSION IF EXISTS pg_observe CASCADE")
        c.execute("CREATE EXTENSION pg_observe CASCADE")
        try:
            yield c
        finally:
            c.execute("SELECT monitoring.unschedule_maintenance()")


def test_pg_cron_jobs_in_health(cron_conn: psycopg.Connection) -> None:
    """Unscheduled, scheduled but not run yet, a real failed run (the maintenance job's command
    replaced by one that fails), a real successful run, an inactive job and a late one."""
    jobs = ["pg_observe_maintenance", "pg_observe_notifications", "pg_observe_metric_rollups"]
    cron_conn.execute("SELECT monitoring.unschedule_maintenance()")
    checks = health(cron_conn)
    assert "maintenance_schedule" not in checks
    for job in jobs:
        status, detail, _ = checks[f"pg_cron_job:{job}"]
        assert status == "warning" and detail.startswith("maintenance not scheduled")
        assert "schedule_maintenance()" in detail

    cron_conn.execute("SELECT monitoring.schedule_maintenance()")
    cron_conn.execute("SELECT cron.schedule('pg_observe_maintenance', '* * * * *',"
                      " 'SELECT monitoring.no_such_function_for_health()')")
    checks = health(cron_conn)
    assert [checks[f"pg_cron_job:{job}"][0] for job in jobs] == ["warning"] * 3
    assert "has not run yet" in checks["pg_cron_job:pg_observe_notifications"][1]

    def finished() -> bool:
        return cron_conn.execute(
            "SELECT count(DISTINCT j.jobname) FROM cron.job_run_details d JOIN cron.job j USING (jobid)"
            " WHERE (j.jobname = 'pg_observe_maintenance' AND d.status = 'failed')"
            "    OR (j.jobname = 'pg_observe_notifications' AND d.status = 'succeeded')").fetchone()[0] == 2

    assert wait_for(finished, 140, 2), "pg_cron did not run both jobs within 140 s"
    checks = health(cron_conn)
    status, detail, _ = checks["pg_cron_job:pg_observe_maintenance"]
    assert status == "critical" and "no_such_function_for_health" in detail, detail
    status, detail, observed = checks["pg_cron_job:pg_observe_notifications"]
    assert status == "ok" and observed is not None and 0 <= observed < 120, (status, detail)
    # the backstop job called the dispatcher, without a name: its heartbeat is the role's
    assert cron_conn.execute("SELECT calls >= 1 FROM monitoring.dispatcher_heartbeat"
                             " WHERE dispatcher = 'postgres'").fetchone() == (True,)

    notifications = cron_conn.execute("SELECT jobid FROM cron.job WHERE jobname = 'pg_observe_notifications'"
                                      " AND database = current_database()").fetchone()[0]
    cron_conn.execute("SELECT cron.alter_job(%s, active => false)", (notifications,))
    status, detail, _ = health(cron_conn)["pg_cron_job:pg_observe_notifications"]
    assert status == "warning" and "inactive" in detail

    # late: a yearly schedule (read as daily) whose last success was three days ago
    cron_conn.execute("SELECT cron.alter_job(%s, schedule => '0 0 1 1 *', active => true)", (notifications,))
    cron_conn.execute("UPDATE cron.job_run_details SET end_time = now() - interval '3 days'"
                      " WHERE jobid = %s", (notifications,))
    status, detail, observed = health(cron_conn)["pg_cron_job:pg_observe_notifications"]
    assert status == "warning" and "should run every 1 day" in detail, detail
    assert observed is not None and observed > 3 * 86400 - 60


# --- the database-health views with other sessions --------------------------------------


def test_slow_queries_and_connections_seen_by_a_reader(dsn: str) -> None:
    """A real 4 s statement, an idle transaction and a lock wait, in sessions of their own; the
    reader (pg_monitor) sees them all, query text included."""
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE public.health_lock_probe (id int)")
    sleeper = psycopg.connect(dsn, autocommit=True)
    holder = psycopg.connect(dsn)
    waiter = psycopg.connect(dsn)
    threads: list[threading.Thread] = []
    try:
        sleeper_pid = sleeper.info.backend_pid
        threads.append(threading.Thread(target=lambda: sleeper.execute("SELECT pg_sleep(4) AS health_probe")))
        holder.execute("LOCK TABLE public.health_lock_probe IN ACCESS EXCLUSIVE MODE")  # idle in transaction
        threads.append(threading.Thread(target=lambda: waiter.execute("SELECT count(*) FROM public.health_lock_probe")))
        for t in threads:
            t.start()
        with psycopg.connect(dsn, autocommit=True) as reader:
            reader.execute("SET ROLE observe_reader")

            def slow() -> object:
                return reader.execute(
                    "SELECT severity, duration_seconds, wait_event_type, wait_event, query, username"
                    " FROM monitoring.slow_queries WHERE pid = %s", (sleeper_pid,)).fetchone()

            row = wait_for(slow, 3.5, 0.1)
            assert row, "the sleeping statement did not show up in slow_queries"
            severity, duration, wait_type, wait_event, query, username = row
            assert severity == "SLOW" and 1 < duration < 10
            assert (wait_type, wait_event) == ("Timeout", "PgSleep")
            assert "health_probe" in query and username == "postgres"

            def connections() -> object:
                row = reader.execute(
                    "SELECT total, active, idle_in_transaction, waiting_on_locks, max_idle_in_transaction_seconds,"
                    " pool_status FROM monitoring.connections WHERE database = current_database()").fetchone()
                return row if row and row[3] >= 1 else None

            row = wait_for(connections, 3, 0.1)
            assert row, "the lock wait did not show up in connections"
            total, active, idle_in_transaction, waiting, max_idle_tx, pool_status = row
            assert total >= 4 and active >= 3 and idle_in_transaction == 1 and waiting == 1
            assert max_idle_tx is not None and max_idle_tx > 0 and pool_status == "HEALTHY"
    finally:
        holder.rollback()
        for t in threads:
            t.join(10)
        for c in (sleeper, holder, waiter):
            c.close()


def test_function_performance_rates_timed_functions(dsn: str) -> None:
    """With track_functions = pl, a 250 ms PL/pgSQL function is SLOW and a quick one EXCELLENT."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION public.health_slow_probe() RETURNS void LANGUAGE plpgsql"
                     " AS $$BEGIN PERFORM pg_sleep(0.25); END$$")
        conn.execute("CREATE FUNCTION public.health_fast_probe() RETURNS int LANGUAGE plpgsql"
                     " AS $$BEGIN RETURN 1; END$$")
        conn.execute("SET track_functions = 'pl'")
        conn.execute("SELECT public.health_slow_probe()")
        for _ in range(3):
            conn.execute("SELECT public.health_fast_probe()")
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")  # ends a transaction: the backend flushes its statistics
        with psycopg.connect(dsn, autocommit=True) as reader:
            reader.execute("SET ROLE observe_reader")

            def rows() -> object:
                found = reader.execute(
                    "SELECT function_name, calls, rating, mean_ms, note FROM monitoring.function_performance"
                    " WHERE schema_name = 'public' ORDER BY 1").fetchall()
                return found if len(found) == 2 else None

            found = wait_for(rows, 15, 0.5)
            assert found, "the functions' statistics did not arrive"
            (fast, fast_calls, fast_rating, fast_ms, fast_note), (slow, slow_calls, slow_rating, slow_ms, _) = found
            assert (fast, fast_calls, fast_rating, fast_note) == ("health_fast_probe", 3, "EXCELLENT", None)
            assert (slow, slow_calls, slow_rating) == ("health_slow_probe", 1, "SLOW") and slow_ms >= 250
            assert fast_ms < 50


# --- backups (docs/operations.md) -------------------------------------------------------


COUNTS = ("SELECT (SELECT count(*) FROM monitoring.tb_error_occurrence),"
          " (SELECT count(*) FROM monitoring.tb_error_log), (SELECT count(*) FROM monitoring.notification_queue),"
          " (SELECT count(*) FROM monitoring.tb_error_notification_config)")


@pytest.fixture
def restore_dsn(admin_dsn: str) -> Iterator[str]:
    name = "pgo_restore_" + uuid.uuid4().hex[:10]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_dsn.replace("dbname=postgres", f"dbname={name}")
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_backup_and_restore_through_the_partition_root(dsn: str, restore_dsn: str, tmp_path) -> None:
    """The documented procedure: a data-only dump of schema monitoring and pg_observe's
    configuration, loaded through the partitioned parents into a database where the extension
    was created first, with triggers off (replica role); the rows whose partitions the new
    database lacks wait in the default partitions, which health() reports until
    run_maintenance() moves them. Old rows keep their time; the identity sequences come back
    with the data, so new rows are written without resync_sequences()."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO monitoring.tb_error_notification_config (description, error_type, channel_config)"
                     " VALUES ('restored rule', 'BackupError', '{\"url\": \"http://127.0.0.1:9/x\"}')")
        conn.execute("SELECT monitoring.capture_errors(%s)", (Jsonb(
            [{"exception_type": "BackupError", "message": "m", "fingerprint": ["backup"]}] * 3),))
        # a span of ten days ago, in a partition only the source has (made by maintenance)
        conn.execute("SET session_replication_role = replica")
        conn.execute("INSERT INTO monitoring.spans_default (trace_id, span_id, operation_name, start_time, end_time,"
                     " duration_ms) VALUES (repeat('a', 32), repeat('b', 16), 'old', now() - interval '10 days',"
                     " now() - interval '10 days', 5)")
        conn.execute("RESET session_replication_role")
        conn.execute("SELECT monitoring.run_maintenance()")
        old_start = conn.execute("SELECT start_time FROM monitoring.spans").fetchone()[0]
        source_counts = conn.execute(COUNTS).fetchone()
    assert source_counts == (3, 1, 1, 1)

    dump = tmp_path / "monitoring.dump"
    subprocess.run(["pg_dump", "-Fc", "--data-only", "--load-via-partition-root", "--schema=monitoring",
                    "--extension=pg_observe", "-f", str(dump), "-d", dsn], check=True)
    with psycopg.connect(restore_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_observe CASCADE")
    restored = subprocess.run(["pg_restore", "--data-only", "--exit-on-error", "-d", restore_dsn, str(dump)],
                              env={**os.environ, "PGOPTIONS": "-c session_replication_role=replica"},
                              capture_output=True, text=True)
    assert restored.returncode == 0, restored.stderr

    with psycopg.connect(restore_dsn, autocommit=True) as conn:
        status, detail, observed = health(conn)["default_partition:monitoring.spans"]
        assert (status, observed) == ("critical", 1.0), detail
        conn.execute("SELECT monitoring.run_maintenance()")
        assert conn.execute("SELECT tableoid::regclass::text, start_time FROM monitoring.spans").fetchone() == (
            "monitoring.spans_p" + old_start.strftime("%Y_%m_%d"), old_start)
        assert conn.execute(COUNTS).fetchone() == source_counts
        assert conn.execute("SELECT occurrence_count FROM monitoring.tb_error_log").fetchone() == (3,)
        # the identity sequences are dumped with the data: a new group takes fresh ids at once
        conn.execute("SELECT monitoring.capture_error(%s)",
                     (Jsonb({"exception_type": "BackupError", "message": "new", "fingerprint": ["after-restore"]}),))
        assert conn.execute("SELECT count(*) FROM monitoring.notification_queue").fetchone() == (2,)
        checks = health(conn)
        not_ok = {name: detail for name, (status, detail, _) in checks.items() if status != "ok"}
        # the restored rule has no dispatcher yet, and its queued message is due: both true
        assert set(not_ok) <= {"dispatcher_heartbeat", "notification_backlog"}, not_ok
        assert all(status == "ok" for name, (status, _, _) in checks.items() if name.startswith("default_partition:"))
