"""What capturing an exception costs the application's thread: tracker.capture_exception(error)
against sentry_sdk.capture_exception(error) with a sentry-sdk transport that discards every
envelope (so the baseline is sentry-sdk's own caller-side work: scope, event processors,
serialisation, envelope), same exception shape, interleaved, in the same run.

Only the call is timed. Each call gets a fresh exception (sentry-sdk's default dedupe
integration would skip an exception object it has just seen) raised through a ~15-frame
traceback, with a ~1 KB context (``context=`` for the tracker, ``extras=`` for sentry-sdk).
The tracker sends to the benchmark database in its background thread meanwhile, as in production.
"""

from __future__ import annotations

import json
import statistics
import time

import pg_observe
import sentry_sdk
from _harness import DSN, percentile, report
from sentry_sdk.transport import Transport

ROUNDS = 3000
WARMUP = 300
DEPTH = 14  # frames below the one that calls raise_deep: ~15 in all


class DiscardTransport(Transport):
    """A sentry-sdk transport that drops everything: the baseline pays no I/O."""

    def __init__(self) -> None:
        super().__init__(None)
        self.envelopes = 0

    def capture_envelope(self, envelope) -> None:
        self.envelopes += 1


class OrderError(Exception):
    pass


def raise_deep(depth: int, order_id: int) -> None:
    if depth == 0:
        raise OrderError(f"order {order_id} could not be charged: gateway timeout")
    raise_deep(depth - 1, order_id)


def make_error(order_id: int) -> OrderError:
    try:
        raise_deep(DEPTH, order_id)
    except OrderError as error:
        return error
    raise AssertionError("unreachable")


CONTEXT = {
    "user_id": 48213,
    "order_id": "ord_7f3a9c2e41b8",
    "request_id": "req-5c1e0a7d-9b2f-4e61-8a3c-2d7f1e9b6a04",
    "operation": "process_payment",
    "path": "/api/v2/orders/ord_7f3a9c2e41b8/payments",
    "method": "POST",
    "amount_cents": 129900,
    "currency": "EUR",
    "retry": 2,
    "feature_flags": ["new_checkout", "3ds_v2", "fast_refunds"],
    "gateway": {"name": "examplepay", "region": "eu-west-1", "timeout_ms": 3000, "endpoint": "/v1/charges"},
    "cart": [{"sku": "SKU-1001", "qty": 1, "price": 99900}, {"sku": "SKU-2002", "qty": 3, "price": 10000}],
    "note": "customer asked for express delivery; billing address differs from shipping address " * 5,
}


def main() -> None:
    context_bytes = len(json.dumps(CONTEXT))
    tracker = pg_observe.init_error_tracker(DSN, environment="bench", release="1.0.0", service="bench")
    transport = DiscardTransport()
    sentry_sdk.init(transport=transport, environment="bench", release="1.0.0")

    errors: list[OrderError] = []

    def next_error() -> OrderError:
        if not errors:
            errors.extend(make_error(i) for i in range(200))
        return errors.pop()

    ours: list[float] = []
    theirs: list[float] = []
    for n in range(WARMUP + ROUNDS):
        for fn, times in ((_ours, ours), (_theirs, theirs)) if n % 2 == 0 else ((_theirs, theirs), (_ours, ours)):
            error = next_error()
            start = time.perf_counter()
            fn(tracker, error)
            elapsed = (time.perf_counter() - start) * 1e6
            if n >= WARMUP:
                times.append(elapsed)

    sentry_sdk.flush(2)
    flushed = tracker.flush(30)
    stats = tracker.stats
    tracker.close()
    sentry_sdk.get_client().close()
    common = {"rounds": ROUNDS, "frames": DEPTH + 2, "context_bytes": context_bytes,
              "sentry_envelopes": transport.envelopes, "tracker_sent": stats.sent, "tracker_dropped": stats.dropped,
              "tracker_flushed": flushed}
    report("capture_caller_cost_p50", percentile(ours, 50), "us", percentile(theirs, 50),
           baseline_name="sentry_sdk.capture_exception with a discarding transport, p50", **common)
    report("capture_caller_cost_mean", statistics.fmean(ours), "us", statistics.fmean(theirs),
           baseline_name="sentry_sdk.capture_exception with a discarding transport, mean", **common)


def _ours(tracker, error: BaseException) -> None:
    tracker.capture_exception(error, context=CONTEXT)


def _theirs(tracker, error: BaseException) -> None:
    sentry_sdk.capture_exception(error, extras=CONTEXT)


if __name__ == "__main__":
    main()
