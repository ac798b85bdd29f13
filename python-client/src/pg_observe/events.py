"""Builds the JSON event that monitoring.capture_error() stores, from a Python exception."""

from __future__ import annotations

import datetime
import os
import sys
import sysconfig
import traceback
from typing import Any

_LIBRARY_PATHS = tuple(
    os.path.realpath(p)
    for p in {sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("purelib"),
              sysconfig.get_paths().get("platlib")}
    if p
)


def _in_app(filename: str) -> bool:
    """A frame is the application's own unless it comes from the standard library or a package."""
    if filename.startswith("<"):
        return False
    path = os.path.realpath(filename)
    if "site-packages" in path or "dist-packages" in path:
        return False
    return not any(path.startswith(lib + os.sep) for lib in _LIBRARY_PATHS)


def _frames(error: BaseException) -> list[dict[str, Any]]:
    frames = []
    for summary in traceback.extract_tb(error.__traceback__):
        frames.append(
            {
                "filename": os.path.basename(summary.filename),
                "abs_path": summary.filename,
                "function": summary.name,
                "lineno": summary.lineno,
                "context_line": summary.line,
                "in_app": _in_app(summary.filename),
            }
        )
    return frames


def event_from_exception(
    error: BaseException,
    *,
    context: dict[str, Any] | None = None,
    environment: str | None = None,
    release: str | None = None,
    service: str | None = None,
    level: str = "error",
) -> dict[str, Any]:
    """The event for one exception: type, message, stack trace as text and as frames."""
    exc_type = type(error)
    qualified = exc_type.__qualname__
    if exc_type.__module__ not in ("builtins", "__main__"):
        qualified = f"{exc_type.__module__}.{qualified}"
    event: dict[str, Any] = {
        "exception_type": qualified,
        "message": str(error),
        "stack_trace": "".join(traceback.format_exception(exc_type, error, error.__traceback__)),
        "frames": _frames(error),
        "level": level,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "context": context or {},
        "platform": "python",
        "runtime": {"name": "CPython", "version": sys.version.split()[0]},
    }
    for key, value in (("environment", environment), ("release", release), ("service", service)):
        if value is not None:
            event[key] = value
    return event
