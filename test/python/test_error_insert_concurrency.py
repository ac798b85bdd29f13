"""Plain INSERTs into tb_error_occurrence from several connections at once (the row trigger's
fast path, the statement trigger's fold), and folds that other writers' foreign-key locks do
not hold up. Needs commits and several connections: pgTAP cannot do it."""

from __future__ import annotations

import threading

import psycopg
import pytest

FRAMES = ('[{"filename": "orders.py", "module": "app.orders", "function": "load", "lineno": 10, "in_app": true},'
          ' {"filename": "orders.py", "module": "app.orders", "function": "save", "lineno": 20, "in_app": true}]')
INSERT = ("INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, user_info, environment)"
          " SELECT 'Concurrent', 'order ' || n, %s::jsonb, jsonb_build_object('id', 'u' || (n %% 7)), 'production'"
          " FROM generate_series(1, %s) n")


def count(conn: psycopg.Connection, sql: str, params: tuple = ()) -> int:
    return int(conn.execute(sql, params).fetchone()[0])


def test_writers_on_one_fingerprint_count_every_row(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(INSERT, (FRAMES, 1))   # the group and the fingerprint cache: later rows take the fast path
    errors: list[BaseException] = []

    def single_rows() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                for _ in range(60):
                    c.execute(INSERT, (FRAMES, 1))
        except BaseException as exc:   # reported by the assertion below
            errors.append(exc)

    def one_statement() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute(INSERT, (FRAMES, 700))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=single_rows) for _ in range(4)] + [threading.Thread(target=one_statement)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    total = 1 + 4 * 60 + 700
    with psycopg.connect(dsn, autocommit=True) as conn:
        stored = "SELECT count(*) FROM monitoring.tb_error_occurrence WHERE exception_type = 'Concurrent'"
        assert count(conn, stored) == total
        # exact at once through the view (it adds deltas still pending), and in the table after a fold
        in_view = "SELECT occurrence_count FROM monitoring.error_groups WHERE error_type = 'Concurrent'"
        assert count(conn, in_view) == total
        conn.execute("SELECT monitoring._fold_all_error_counters()")
        assert count(conn, "SELECT count(*) FROM monitoring.error_group_pending") == 0
        counts = "SELECT occurrence_count, affected_users FROM monitoring.tb_error_log WHERE error_type = 'Concurrent'"
        assert conn.execute(counts).fetchone() == (total, 7)


def test_a_writers_foreign_key_lock_does_not_stop_the_fold(dsn: str) -> None:
    """Inserting a group's deltas takes a KEY SHARE lock on the group's row until commit (the
    foreign key's check). The fold locks FOR NO KEY UPDATE, which that lock does not conflict
    with: another capture of the group folds its counts at once."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(INSERT, (FRAMES, 1))
        group = "SELECT error_id FROM monitoring.tb_error_log WHERE error_type = 'Concurrent'"
        error_id = conn.execute(group).fetchone()[0]
        with psycopg.connect(dsn) as holder:   # a transaction left open, as a long COPY's is
            holder.execute("INSERT INTO monitoring.error_group_pending (error_id, occurrences, first_seen, last_seen)"
                           " VALUES (%s, 1, now(), now())", (error_id,))
            # the holder's lock is there: FOR UPDATE conflicts with KEY SHARE
            with pytest.raises(psycopg.errors.LockNotAvailable):
                conn.execute("SELECT 1 FROM monitoring.tb_error_log WHERE error_id = %s FOR UPDATE NOWAIT", (error_id,))
            conn.execute(INSERT, (FRAMES, 3))
            assert count(conn, "SELECT count(*) FROM monitoring.error_group_pending") == 0
            assert count(conn, "SELECT occurrence_count FROM monitoring.tb_error_log WHERE error_id = %s",
                         (error_id,)) == 4
            holder.rollback()


def test_a_statement_folds_only_the_groups_it_wrote(dsn: str) -> None:
    """The statement trigger folds this transaction's deltas, not every pending one: a fold
    keeps its groups locked until commit, and another session's group is not its business."""
    other_frames = FRAMES.replace('"load"', '"ship"')
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(INSERT, (FRAMES, 1))
        conn.execute(INSERT.replace("'Concurrent'", "'Other'"), (other_frames, 1))
        group = "SELECT error_id FROM monitoring.tb_error_log WHERE error_type = %s"
        other = conn.execute(group, ("Other",)).fetchone()[0]
        partition = conn.execute("SELECT tableoid::regclass::text FROM monitoring.tb_error_occurrence"
                                 " WHERE exception_type = 'Other'").fetchone()[0]
        # straight into the partition: no statement trigger of the parent, the delta waits
        conn.execute(INSERT.replace("monitoring.tb_error_occurrence", partition).replace("'Concurrent'", "'Other'"),
                     (other_frames, 1))
        assert count(conn, "SELECT count(*) FROM monitoring.error_group_pending WHERE error_id = %s", (other,)) == 1
        with psycopg.connect(dsn) as writer:   # its transaction stays open, its fold's locks held
            writer.execute(INSERT, (FRAMES, 5))
            assert count(conn, "SELECT count(*) FROM monitoring.error_group_pending WHERE error_id = %s", (other,)) == 1
            # the other group's row is free: the open fold did not take it
            assert conn.execute("SELECT 1 FROM monitoring.tb_error_log WHERE error_id = %s FOR UPDATE NOWAIT",
                                (other,)).fetchone() == (1,)
            writer.commit()
        assert count(conn, "SELECT occurrence_count FROM monitoring.tb_error_log WHERE error_type = 'Concurrent'") == 6
        assert count(conn, "SELECT occurrence_count FROM monitoring.error_groups WHERE error_type = 'Other'") == 2


def test_concurrent_scrub_word_changes_both_reach_the_capture_state(dsn: str) -> None:
    """Two transactions add a scrub word at once: the second refresh waits for the first and
    reads its word, so error_capture_state (what every capture reads) holds both."""
    words = ("concurrent_alpha", "concurrent_beta")
    try:
        with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
            first.execute("INSERT INTO monitoring.error_scrub_key (key_word) VALUES (%s)", (words[0],))
            errors: list[BaseException] = []

            def add_second() -> None:
                try:
                    second.execute("INSERT INTO monitoring.error_scrub_key (key_word) VALUES (%s)", (words[1],))
                    second.commit()
                except BaseException as exc:   # reported by the assertion below
                    errors.append(exc)

            waiter = threading.Thread(target=add_second)
            waiter.start()
            waiter.join(1.0)
            assert waiter.is_alive(), "the second refresh waits for the first transaction"
            first.commit()
            waiter.join(30)
            assert errors == []
        with psycopg.connect(dsn, autocommit=True) as conn:
            state = conn.execute("SELECT scrub_words, scrub_pattern FROM monitoring.error_capture_state").fetchone()
            # the words as the patterns read them: lower case, without separators
            assert {w.replace("_", "") for w in words} <= set(state[0])
            for word in words:
                assert conn.execute("SELECT %s ~* %s", (f'{{"x-{word}": 1}}', state[1])).fetchone()[0]
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM monitoring.error_scrub_key WHERE key_word = ANY(%s)", (list(words),))


def test_one_event_id_in_two_transactions_is_stored_once(dsn: str) -> None:
    """Two transactions storing one event id on the fast path: the second waits at the id for
    the first, and drops its row once the first commits (the original stays, counted once)."""
    event_id = "00000000-0000-4000-8000-00000000c0de"
    insert = ("INSERT INTO monitoring.tb_error_occurrence (exception_type, message, frames, environment, event_id)"
              " VALUES ('Concurrent', %s, %s::jsonb, 'production', %s)")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(INSERT, (FRAMES, 1))   # the group and the cache: the rows below take the fast path
        errors: list[BaseException] = []
        with psycopg.connect(dsn) as first:
            first.execute(insert, ("first", FRAMES, event_id))

            def second() -> None:
                try:
                    with psycopg.connect(dsn, autocommit=True) as c:
                        c.execute(insert, ("second", FRAMES, event_id))
                except BaseException as exc:   # reported by the assertion below
                    errors.append(exc)

            waiter = threading.Thread(target=second)
            waiter.start()
            waiter.join(1)
            assert waiter.is_alive(), "the second insert should wait for the first transaction"
            first.commit()
            waiter.join(30)
        assert errors == []
        rows = conn.execute("SELECT message FROM monitoring.tb_error_occurrence WHERE event_id = %s",
                            (event_id,)).fetchall()
        assert rows == [("first",)]
        assert count(conn, "SELECT occurrence_count FROM monitoring.tb_error_log WHERE error_type = 'Concurrent'") == 2
