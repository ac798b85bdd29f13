"""ErrorTrackingHandler: a logging.Handler that captures ERROR (and worse) records."""

from __future__ import annotations

import logging
import threading
from typing import Any

_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName",
}
_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error",
           logging.CRITICAL: "fatal"}
# extras with a meaning of their own on the event, not copied into the context
_EVENT_KEYS = ("tags", "user", "fingerprint")


def _level(levelno: int) -> str:
    if levelno in _LEVELS:
        return _LEVELS[levelno]
    if levelno >= logging.CRITICAL:
        return "fatal"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    return "info" if levelno >= logging.INFO else "debug"


class ErrorTrackingHandler(logging.Handler):
    """Sends log records at ``level`` (default ERROR) and above to an error tracker.

    A record with ``exc_info`` (``logger.exception(...)``, ``exc_info=True``) becomes an exception
    event, its formatted message kept in the context as ``log_message``; any other record becomes
    a message event. The logger's name goes in the event's ``logger``, the record's extras
    (``extra={...}``) in its context, except ``tags``, ``user`` and ``fingerprint``, which set those
    fields of the event. Works with ErrorTracker and AsyncErrorTracker; never raises, and ignores
    the records of pg_observe's own logger (so that an unreachable database cannot loop).
    """

    def __init__(self, tracker: Any, level: int = logging.ERROR) -> None:
        super().__init__(level)
        self.tracker = tracker
        self._busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "pg_observe" or record.name.startswith("pg_observe."):
            return
        if getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            self._emit(record)
        except Exception:
            try:
                self.tracker._sender.count_internal_error()
            except Exception:
                pass
        finally:
            self._busy.on = False

    def _emit(self, record: logging.LogRecord) -> None:
        context: dict[str, Any] = {}
        fields: dict[str, Any] = {}
        for key, value in record.__dict__.items():
            if key in _STANDARD_ATTRS or key.startswith("_"):
                continue
            if key in _EVENT_KEYS:
                fields[key] = value
            else:
                context[key] = value
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        exc = record.exc_info[1] if record.exc_info and record.exc_info is not True else None
        level = _level(record.levelno)
        if isinstance(exc, BaseException):
            context["log_message"] = message
            self.tracker.capture_exception(exc, context=context, level=level, logger=record.name, **fields)
        else:
            self.tracker.capture_message(message, context=context or None, level=level, logger=record.name,
                                         **fields)
