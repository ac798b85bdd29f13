"""Rollups and transactions: a point committed by a transaction that stayed open for more than
a minute is still rolled up (the watermark waits for the oldest open writing transaction)."""

from __future__ import annotations

import time

import psycopg


def test_a_point_from_a_long_transaction_is_rolled_up(dsn: str) -> None:
    with psycopg.connect(dsn) as writer, psycopg.connect(dsn, autocommit=True) as maintenance:
        writer.execute("SELECT pg_current_xact_id()")   # a writing transaction, open from now
        time.sleep(62)
        writer.execute("SELECT * FROM monitoring.record_metrics(%s::jsonb)",
                       ('[{"name": "long.tx", "type": "counter", "value": 5}]',))
        # received_at is the transaction's start, over a minute ago: a fixed one-minute
        # watermark would pass it now, before the point is even committed.
        maintenance.execute("SELECT monitoring.rollup_metrics()")
        rolled_to, = maintenance.execute("SELECT rolled_up_to FROM monitoring.metric_rollup_state").fetchone()
        started, = writer.execute("SELECT now()").fetchone()
        assert rolled_to <= started
        writer.commit()
        maintenance.execute("SELECT monitoring.rollup_metrics()")
        assert maintenance.execute("SELECT sample_count, value_sum FROM monitoring.metric_rollups_1m"
                                   " WHERE metric_name = 'long.tx'").fetchall() == [(1, 5.0)]
