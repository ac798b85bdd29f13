"""Builds the JSON events that monitoring.capture_error() / capture_errors() store.

The event has the Sentry event shape (``event_id``, ``timestamp``, ``platform``, ``level``,
``exception.values[]`` with ``stacktrace.frames[]``, ``tags``, ``user``, ``contexts.trace``,
``fingerprint``, ...) plus the keys of the seeds' flat shape that the database keeps in their own
columns: ``stack_trace`` (the text Python prints), ``context`` (a flat dict), ``service``,
``trace_id`` and ``span_id``. Grouping, fingerprinting and scrubbing all run in the database; this
module only describes what happened.

Everything here runs in the application's thread, so it is kept cheap: the traceback is walked
once (no ``traceback.format_exception``, whose caret computation parses source code), source
lines come from ``linecache``'s cache, and whether a file belongs to the application is cached
per file name.

Repairs applied to whatever the application hands in (context, tags, user, messages, exception
values, frames), so that the database always accepts the event (see :func:`sanitize`):

* NUL characters are replaced with U+FFFD (PostgreSQL ``text`` cannot hold NUL), and so are
  lone UTF-16 surrogates (they cannot be encoded as UTF-8);
* strings longer than 64 KB (:data:`MAX_STRING`) are cut, with a marker saying how much was cut;
* containers nested deeper than 20 levels (:data:`MAX_DEPTH`) are replaced with ``"[depth limit]"``,
  a container that contains itself with ``"[circular reference]"``, and containers longer than
  1,000 items (:data:`MAX_ITEMS`) are cut with a marker;
* ``bytes`` are decoded as UTF-8 with ``errors="replace"``;
* values that are not JSON become text: ``datetime``/``date``/``time`` their ISO form, ``UUID``
  and ``Decimal`` their ``str()``, anything else its ``repr()`` (and if ``repr()`` raises, a
  placeholder naming the type); floats that JSON cannot hold (NaN, infinities) become text too;
* dict keys that are not strings become ``str(key)``.
"""

from __future__ import annotations

import datetime
import decimal
import linecache
import math
import os
import socket
import sys
import sysconfig
import traceback
import types
import uuid
from typing import Any, Union

MAX_STRING = 64 * 1024
MAX_DEPTH = 20
MAX_ITEMS = 1000
MAX_CHAIN = 10
MAX_FRAMES = 200  # per exception: the outermost 50 and the innermost 150 are kept
_FRAMES_HEAD = 50

DEPTH_MARKER = "[depth limit]"
CIRCULAR_MARKER = "[circular reference]"

ExcInfo = tuple  # (type, value, traceback), as sys.exc_info() returns it
ErrorLike = Union[BaseException, ExcInfo, None]

_LIBRARY_PATHS = tuple(
    os.path.realpath(p)
    for p in {sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib"),
              sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib")}
    if p
)
_IN_APP_CACHE: dict[str, bool] = {}


def _in_app(filename: str) -> bool:
    """A frame is the application's own unless it comes from the standard library or a package."""
    cached = _IN_APP_CACHE.get(filename)
    if cached is not None:
        return cached
    if filename.startswith("<"):
        result = False
    else:
        path = os.path.realpath(filename)
        if "site-packages" in path or "dist-packages" in path:
            result = False
        else:
            result = not any(path.startswith(lib + os.sep) for lib in _LIBRARY_PATHS)
    if len(_IN_APP_CACHE) < 10000:
        _IN_APP_CACHE[filename] = result
    return result


# --- repairs ---------------------------------------------------------------------------------

def _fix_surrogates(text: str) -> str:
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean_string(text: str, limit: int = MAX_STRING) -> str:
    """The text with NUL (and lone surrogates) replaced with U+FFFD, cut at ``limit`` with a marker."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _fix_surrogates(text)
    if len(text) > limit:
        text = text[:limit] + f"…[truncated {len(text) - limit} characters]"
    return text


def safe_repr(value: object) -> str:
    """repr(value), or a placeholder naming the type when repr() itself raises."""
    try:
        return repr(value)
    except Exception:
        try:
            name = type(value).__name__
        except Exception:
            name = "object"
        return f"<unrepresentable {name}>"


def safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return safe_repr(value)


def sanitize(value: Any, _depth: int = 0, _path: set | None = None) -> Any:
    """A JSON-ready copy of ``value`` with the repairs listed in this module's docstring."""
    kind = type(value)
    if kind is str:
        if value.isascii() and len(value) <= MAX_STRING and "\x00" not in value:
            return value  # the common case, without a call
        return clean_string(value)
    if value is None or kind is bool or kind is int:
        return value
    if kind is float:
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        if _depth >= MAX_DEPTH:
            return DEPTH_MARKER
        if _path is None:
            _path = set()
        ident = id(value)
        if ident in _path:
            return CIRCULAR_MARKER
        _path.add(ident)
        try:
            if isinstance(value, dict):
                out: Any = {}
                for n, (key, item) in enumerate(value.items()):
                    if n >= MAX_ITEMS:
                        out["…"] = f"[{len(value) - MAX_ITEMS} more items]"
                        break
                    key = clean_string(key, 1024) if type(key) is str else clean_string(safe_str(key), 1024)
                    out[key] = sanitize(item, _depth + 1, _path)
            else:
                out = []
                for n, item in enumerate(value):
                    if n >= MAX_ITEMS:
                        out.append(f"[{len(value) - MAX_ITEMS} more items]")
                        break
                    out.append(sanitize(item, _depth + 1, _path))
        finally:
            _path.discard(ident)
        return out
    if isinstance(value, str):
        return clean_string(str.__str__(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return clean_string(bytes(value).decode("utf-8", errors="replace"))
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        value = float(value)
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    return clean_string(safe_repr(value))


# --- exceptions and frames -------------------------------------------------------------------

def _type_name(exc_type: type) -> str:
    """The exception type as Python prints it: module-qualified unless builtins or __main__."""
    qualified = getattr(exc_type, "__qualname__", None) or getattr(exc_type, "__name__", "Error")
    module = getattr(exc_type, "__module__", None)
    if module and module not in ("builtins", "__main__"):
        qualified = f"{module}.{qualified}"
    return qualified


def _exception_value(error: BaseException) -> str:
    value = safe_str(error)
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, (list, tuple)) and notes:
        value = "\n".join([value, *(safe_str(n) for n in notes)])
    return clean_string(value)


_FRAME_CACHE: dict[tuple, dict[str, Any]] = {}


def _frame_info(code: types.CodeType, lineno: int | None, f_globals: dict) -> dict[str, Any]:
    """What a frame at this line of this code looks like (cached: files rarely change under a process)."""
    module = f_globals.get("__name__")
    key = (code.co_filename, code.co_name, lineno, module)
    info = _FRAME_CACHE.get(key)
    if info is None:
        filename = code.co_filename
        line = linecache.getline(filename, lineno, f_globals).strip() if lineno else ""
        if len(line) > 1024:
            line = line[:1024] + "…"
        info = {
            "filename": os.path.basename(filename) if filename[:1] != "<" else filename,
            "abs_path": filename,
            "module": module if isinstance(module, str) else None,
            "function": code.co_name,
            "lineno": lineno,
            "in_app": _in_app(filename),
            "context_line": clean_string(line) if line else None,
        }
        if len(_FRAME_CACHE) >= 20000:
            _FRAME_CACHE.clear()
        _FRAME_CACHE[key] = info
    return info


def _walk_frames(tb: types.TracebackType | None) -> list[dict[str, Any]]:
    """The traceback's frames, outermost first (innermost LAST, as Sentry wants them)."""
    frames = []
    while tb is not None:
        frame = tb.tb_frame
        frames.append(dict(_frame_info(frame.f_code, tb.tb_lineno, frame.f_globals)))
        tb = tb.tb_next
    return frames


def _chain(error: BaseException) -> list[tuple[BaseException, str | None]]:
    """The exception and those it was raised from or while handling: cause first, ``error`` LAST.

    Each entry is (exception, how it leads to the next one: "cause" for ``raise ... from``,
    "context" for an exception raised while handling it, None for the last one).
    """
    chain: list[tuple[BaseException, str | None]] = []
    seen: set[int] = set()
    current: BaseException | None = error
    link: str | None = None
    while current is not None and id(current) not in seen and len(chain) < MAX_CHAIN:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, "cause"
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, "context"
        else:
            current = None
    chain.reverse()
    return chain


_CHAIN_TEXT = {
    "cause": "\nThe above exception was the direct cause of the following exception:\n\n",
    "context": "\nDuring handling of the above exception, another exception occurred:\n\n",
}


def _repeated(times: int) -> str:
    return f"  [Previous line repeated {times} more time{'s' if times > 1 else ''}]\n"


def _format_frames(frames: list[dict[str, Any]], out: list[str]) -> None:
    """Lines as traceback.format_exception prints them (without the 3.11 caret lines)."""
    last = None
    count = 0  # occurrences of the current line in a row
    for f in frames:
        key = (f["abs_path"], f["lineno"], f["function"])
        if key == last:
            count += 1
            if count > 3:
                continue
        else:
            if count > 3:
                out.append(_repeated(count - 3))
            last, count = key, 1
        out.append(f'  File "{f["abs_path"]}", line {f["lineno"]}, in {f["function"]}\n')
        if f["context_line"]:
            out.append(f"    {f['context_line']}\n")
    if count > 3:
        out.append(_repeated(count - 3))


def _cap_frames(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(frames) <= MAX_FRAMES:
        return frames
    return frames[:_FRAMES_HEAD] + frames[len(frames) - (MAX_FRAMES - _FRAMES_HEAD):]


def exception_values(error: BaseException) -> tuple[list[dict[str, Any]], str]:
    """Sentry's ``exception.values`` (cause first, raised exception LAST) and the text Python prints."""
    chain = _chain(error)
    values = []
    text: list[str] = []
    for i, (exc, link) in enumerate(chain):
        exc_type = type(exc)
        frames = _walk_frames(exc.__traceback__)
        type_name = _type_name(exc_type)
        value = _exception_value(exc)
        if i:
            text.append(_CHAIN_TEXT[chain[i - 1][1] or "context"])
        if frames:
            text.append("Traceback (most recent call last):\n")
            _format_frames(frames, text)
        text.append(f"{type_name}: {value}\n" if value else f"{type_name}\n")
        entry: dict[str, Any] = {"type": type_name, "value": value, "module": exc_type.__module__}
        if frames:
            entry["stacktrace"] = {"frames": _cap_frames(frames)}
        if link is not None:  # Sentry's marker of an exception that led to the next one
            entry["mechanism"] = {"type": "chained", "source": "__cause__" if link == "cause" else "__context__"}
        values.append(entry)
    return values, clean_string("".join(text))


# --- the event -------------------------------------------------------------------------------

_HOSTNAME: str | None = None


def hostname() -> str:
    global _HOSTNAME
    if _HOSTNAME is None:
        try:
            _HOSTNAME = socket.gethostname()
        except Exception:
            _HOSTNAME = ""
    return _HOSTNAME


def current_trace() -> tuple[str, str] | None:
    """(trace_id, span_id) of the active OpenTelemetry span, as 32 and 16 hex digits, or None.

    OpenTelemetry is never imported here: when the application has not imported
    ``opentelemetry.trace`` itself, no span can be active, and nothing is looked up.
    """
    otel = sys.modules.get("opentelemetry.trace")
    if otel is None:
        return None
    try:
        ctx = otel.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    except Exception:
        return None


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def resolve_error(error: ErrorLike) -> BaseException | None:
    """An exception from an exception, an exc_info tuple, or None (then sys.exc_info())."""
    if error is None:
        error = sys.exc_info()[1]
    elif isinstance(error, tuple):
        error = error[1] if len(error) > 1 else None
    return error if isinstance(error, BaseException) else None


def _user(user: Any) -> Any:
    if user is None or isinstance(user, dict):
        return sanitize(user) if user else None
    return {"id": clean_string(safe_str(user), 1024)}


def _tags(tags: Any) -> dict[str, Any] | None:
    if not tags:
        return None
    if not isinstance(tags, dict):
        try:
            tags = dict(tags)
        except Exception:
            return {"tags": clean_string(safe_repr(tags))}
    out = {}
    for key, value in tags.items():
        if value is not None and type(value) is not str:
            value = safe_str(value) if not isinstance(value, (bool, int, float)) else value
        out[clean_string(safe_str(key), 200)] = clean_string(value, 1024) if isinstance(value, str) else sanitize(value)
    return out


def _fingerprint(fingerprint: Any) -> list[str] | None:
    if fingerprint is None:
        return None
    if isinstance(fingerprint, (str, bytes)):
        fingerprint = [fingerprint]
    parts = []
    for part in fingerprint:
        if isinstance(part, bytes):
            part = part.decode("utf-8", errors="replace")
        parts.append(clean_string(part if isinstance(part, str) else safe_str(part), 1024))
    return parts


def build_event(
    error: BaseException | None = None,
    *,
    message: str | None = None,
    context: Any = None,
    level: str = "error",
    tags: Any = None,
    user: Any = None,
    fingerprint: Any = None,
    environment: str | None = None,
    release: str | None = None,
    service: str | None = None,
    server_name: str | None = None,
    logger: str | None = None,
    transaction: str | None = None,
    request: Any = None,
    extra_fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One event: an exception (with its chain) or, when ``error`` is None, a message.

    Keys that have no value are left out. All values handed in by the application are repaired
    (see the module docstring); the result can be serialised with ``json.dumps`` as it is.
    """
    event: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "timestamp": _now_iso(),
        "platform": "python",
        "level": (level or "error").lower() if isinstance(level, str) else "error",
        "server_name": server_name if server_name is not None else hostname(),
    }
    if error is not None:
        values, stack_text = exception_values(error)
        event["exception"] = {"values": values}
        event["stack_trace"] = stack_text
        if message is not None:
            event["message"] = clean_string(safe_str(message))
    else:
        event["message"] = clean_string(message if isinstance(message, str) else safe_str(message))
    for key, value in (("environment", environment), ("release", release), ("service", service),
                       ("logger", logger), ("transaction", transaction)):
        if value is not None:
            event[key] = clean_string(value if isinstance(value, str) else safe_str(value), 1024)
    if context is not None:
        event["context"] = sanitize(context)
    tag_values = _tags(tags)
    if tag_values:
        event["tags"] = tag_values
    user_values = _user(user)
    if user_values:
        event["user"] = user_values
    parts = _fingerprint(fingerprint)
    if parts:
        event["fingerprint"] = parts
    if request is not None:
        event["request"] = sanitize(request)
    trace = current_trace()
    if trace is not None:
        event["trace_id"], event["span_id"] = trace
        event["contexts"] = {"trace": {"trace_id": trace[0], "span_id": trace[1]}}
    if extra_fields:
        for key, value in extra_fields.items():
            event[key] = sanitize(value)
    return event


def event_from_exception(
    error: ErrorLike = None,
    *,
    context: Any = None,
    environment: str | None = None,
    release: str | None = None,
    service: str | None = None,
    level: str = "error",
    tags: Any = None,
    user: Any = None,
    fingerprint: Any = None,
) -> dict[str, Any]:
    """The event for one exception (or exc_info tuple; None: the exception being handled).

    Sentry shape with ``exception.values`` (chained exceptions, cause first, raised LAST), each
    with ``stacktrace.frames`` (innermost LAST), plus the flat ``stack_trace`` text and ``context``.
    """
    exc = resolve_error(error)
    if exc is None:
        raise ValueError("event_from_exception() needs an exception (none is being handled)")
    return build_event(exc, context=context, environment=environment, release=release, service=service,
                       level=level, tags=tags, user=user, fingerprint=fingerprint)


def event_from_message(message: str, *, level: str = "info", **fields: Any) -> dict[str, Any]:
    """The event for a message (no exception); ``fields`` as for :func:`build_event`."""
    return build_event(None, message=message, level=level, **fields)


def format_exception_text(error: BaseException) -> str:
    """What ``traceback.format_exception`` prints (used when the event's own text is not wanted)."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))
