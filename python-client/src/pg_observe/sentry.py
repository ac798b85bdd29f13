"""A sentry-sdk transport that stores Sentry's error events in PostgreSQL (needs the ``sentry`` extra).

    import sentry_sdk
    import pg_observe.sentry

    sentry_sdk.init(transport=pg_observe.sentry.Transport(tracker_or_pool_or_dsn), environment="production")

sentry-sdk 2 accepts a Transport *instance* in ``transport=`` and then needs no Sentry DSN
(``dsn`` may be left out or be anything). Every envelope item of type ``"event"`` (what
``sentry_sdk.capture_exception``, ``capture_message`` and the logging integration produce) is
handed to the tracker's background sender, which stores it with ``monitoring.capture_errors()``
like the tracker's own events; the repairs of :mod:`pg_observe.events` run in the sender thread.
Other items (transactions, sessions, client reports, profiles, check-ins, logs) are ignored.

On the way, keys the database does not read are left out (``modules``, ``debug_meta``,
``breadcrumbs``, ``sdk``, ``_meta``, ``transaction_info``, ``spans``), frames lose their local
variables (``vars``, which the database would keep unscrubbed; ``keep_frame_vars=True`` keeps
them), each exception's ``type`` is qualified with its ``module`` as the tracker itself does
(``myapp.errors.PaymentError``, builtins unqualified), so that the same error captured through
Sentry or through the tracker lands in the same group, and ``service`` (and ``environment``,
``release`` if Sentry has none) are filled from the tracker.
"""

from __future__ import annotations

import json
from typing import Any

from sentry_sdk.transport import Transport as _SentryTransport

from pg_observe.errors import AsyncErrorTracker, ErrorTracker, init_error_tracker

_DROPPED_KEYS = ("modules", "debug_meta", "breadcrumbs", "sdk", "_meta", "transaction_info", "spans")


def sentry_event_to_pg(event: dict[str, Any], *, keep_frame_vars: bool = False) -> dict[str, Any]:
    """The Sentry event as pg_observe stores it (a shallow copy; the input is not changed)."""
    out = {k: v for k, v in event.items() if k not in _DROPPED_KEYS}
    exception = out.get("exception")
    values = exception.get("values") if isinstance(exception, dict) else None
    if isinstance(values, list):
        new_values = []
        for value in values:
            if not isinstance(value, dict):
                new_values.append(value)
                continue
            value = dict(value)
            module, type_name = value.get("module"), value.get("type")
            if (isinstance(module, str) and isinstance(type_name, str) and module not in ("builtins", "__main__")
                    and not type_name.startswith(module + ".")):
                value["type"] = f"{module}.{type_name}"
            stacktrace = value.get("stacktrace")
            if not keep_frame_vars and isinstance(stacktrace, dict) and isinstance(stacktrace.get("frames"), list):
                value["stacktrace"] = {**stacktrace, "frames": [
                    {k: v for k, v in f.items() if k != "vars"} if isinstance(f, dict) else f
                    for f in stacktrace["frames"]]}
            new_values.append(value)
        out["exception"] = {**exception, "values": new_values}
    return out


class Transport(_SentryTransport):
    """Sends sentry-sdk's error events into PostgreSQL through a pg_observe tracker.

    ``target``: an ErrorTracker or AsyncErrorTracker (shared: the transport never closes it), or
    what :func:`pg_observe.init_error_tracker` accepts (a pool or a DSN; the transport then owns
    the tracker it creates, with ``environment``, ``release``, ``service`` and ``**options``).
    """

    def __init__(
        self,
        target: Any,
        *,
        environment: str = "production",
        release: str | None = None,
        service: str | None = None,
        keep_frame_vars: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(None)
        if isinstance(target, (ErrorTracker, AsyncErrorTracker)):
            self.tracker = target
            self._owns_tracker = False
        else:
            self.tracker = init_error_tracker(target, environment=environment, release=release, service=service,
                                              **options)
            self._owns_tracker = True
        self.keep_frame_vars = keep_frame_vars

    def capture_envelope(self, envelope: Any) -> None:
        """Queues the envelope's error event (if it has one); never raises, never waits."""
        try:
            for item in envelope.items:
                if item.type != "event":
                    continue
                event = item.payload.json
                if event is None:
                    event = json.loads(item.get_bytes())
                if isinstance(event, dict):
                    self.tracker._enqueue_raw(event, transform=self._transform)
        except Exception:
            try:
                self.tracker._sender.count_internal_error()
            except Exception:
                pass

    def _transform(self, event: dict[str, Any]) -> dict[str, Any]:
        return sentry_event_to_pg(event, keep_frame_vars=self.keep_frame_vars)

    def flush(self, timeout: float, callback: Any | None = None) -> None:
        """Waits up to ``timeout`` seconds for the queued events to be stored."""
        try:
            pending = self.tracker.stats.queued
            if pending and callback is not None:
                callback(pending, timeout)
            self.tracker._flush_blocking(timeout)
        except Exception:
            pass

    def kill(self) -> None:
        """Stops the tracker if this transport created it (after sentry-sdk's own flush)."""
        if self._owns_tracker:
            try:
                self.tracker._close_blocking(0.0)
            except Exception:
                pass

    def is_healthy(self) -> bool:
        try:
            return self.tracker.stats.queued < self.tracker._sender.max_queue
        except Exception:
            return True
