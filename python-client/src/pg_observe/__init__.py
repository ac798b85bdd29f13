"""pg_observe: the thin Python client of the pg_observe PostgreSQL extension.

Error tracking (:func:`init_error_tracker`, :func:`init_async_error_tracker`), metrics
(:class:`MetricsRecorder`), OpenTelemetry spans (:mod:`pg_observe.otel`, needs the ``otel`` extra;
``pg-observe otlp-receiver`` for any other SDK), a logging
handler (:class:`ErrorTrackingHandler`), an ASGI middleware (:mod:`pg_observe.asgi`) and a
sentry-sdk transport (:mod:`pg_observe.sentry`, needs the ``sentry`` extra), and the
notification worker (:class:`NotificationWorker`, ``pg-observe worker``). Every grouping,
fingerprinting and scrubbing rule runs in the database; the client builds events and calls
stored functions.
"""

from pg_observe._sender import TrackerStats
from pg_observe.cache import PostgresCache, SyncPostgresCache
from pg_observe.errors import (
    AsyncErrorTracker,
    ErrorGroup,
    ErrorGroupNotFound,
    ErrorTracker,
    EventId,
    init_async_error_tracker,
    init_error_tracker,
)
from pg_observe.events import build_event, event_from_exception, event_from_message
from pg_observe.logging_handler import ErrorTrackingHandler
from pg_observe.metrics import MetricsRecorder, MetricsStats
from pg_observe.worker import NotificationWorker

__all__ = [
    "AsyncErrorTracker",
    "ErrorGroup",
    "ErrorGroupNotFound",
    "ErrorTracker",
    "ErrorTrackingHandler",
    "EventId",
    "MetricsRecorder",
    "MetricsStats",
    "NotificationWorker",
    "PostgresCache",
    "SyncPostgresCache",
    "TrackerStats",
    "build_event",
    "event_from_exception",
    "event_from_message",
    "init_async_error_tracker",
    "init_error_tracker",
]
__version__ = "0.18.0"
