# pg_observe:function monitoring._fingerprint_events(p_events text, p_rules text) RETURNS text LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
# pg_observe:entry fingerprint_events_json(p_events, p_rules)
# ruff: noqa: E501
"""Error grouping: fingerprint algorithm version 2.

Every captured event gets a fingerprint, the hex SHA-256 of a list of string components
(``inputs``). Events with the same fingerprint form one group (issue). The components are
chosen by the first of these steps that applies:

1. **explicit** - the event's ``fingerprint``: a non-empty list of strings from the client
   (a single string counts as a list of one; numbers become strings, other elements are
   dropped). An element ``{{ default }}`` (any spacing inside the braces) is replaced by the
   components step 3 or 4 would compute. At most 100 parts are used, each cut to 1000
   characters. A list made only of ``{{ default }}`` elements is the same as no list.
2. **rule** - the first server-side rule (``p_rules``, in list order) whose match keys all
   match. Match keys are shell globs (``fnmatch``, case-sensitive; a key may also be a list
   of globs, any of which may match):
   ``type`` - the type of any exception of the chain; ``message`` - the message of any
   exception of the chain (the raw text, not parameterised); ``module``, ``function`` -
   any frame of any exception; ``path`` - any frame's ``abs_path`` or ``filename``;
   ``environment``, ``transaction``, ``logger``, ``level`` - the event's field;
   ``tags`` - an object of tag name -> glob, every one must match the event's tag.
   A rule without match keys matches every event; other keys are ignored; a key of the
   wrong type makes the rule never match. Outcome: ``fingerprint`` (list of strings,
   ``{{ default }}`` allowed) gives method "rule"; ``title`` sets ``group_title``. A rule
   with only a title keeps the default fingerprint (step 3 or 4) but still wins: later
   rules are not looked at. A rule with neither outcome is skipped. Rules are not looked
   at when step 1 applied.
3. **stack** - when at least one frame gives a component. For every exception of the chain,
   causes first and the raised (outermost) one last: its type (``<no type>`` if missing),
   then one ``where:function`` component per frame, outermost frame first. ``where`` is the
   frame's module, or else the base name of its file (no directory, no query string, JS
   bundler hashes removed: ``main.3f9a1c2b.js`` -> ``main.js``, ``index-BxWq3k2L.js`` ->
   ``index.js``); a missing part is ``?``. Only in-app frames (``in_app`` true) count; when
   no frame of that exception is in-app (or in_app is unknown for all), all its frames
   count. A component equal to the one before it (recursion) counts once. Line numbers,
   columns, context lines and directories never count. Generated names are normalised:
   Java ``$$Lambda$123/0x...`` -> ``$$Lambda``, ``$$EnhancerByCGLIB$$1a2b`` ->
   ``$$EnhancerByCGLIB``, ``$Proxy12`` -> ``$Proxy``, ``GeneratedMethodAccessor7`` ->
   ``GeneratedMethodAccessor``, other ``$<digits>`` -> ``$`` (anonymous classes, lambda
   methods); Go closures ``.func1.2`` -> ``.func``, ``gowrap1``/``deferwrap1`` -> without
   digits. (Goroutine ids and ``+0x`` offsets are never part of a frame.)
4. **message** - no usable frames: ``[type or "<no type>", line 1, line 2]`` where lines 1
   and 2 are the first two non-empty lines (stripped, each cut to 1000 characters) of the
   main message, parameterised by these replacements, in this order:
   e-mail -> ``<email>``; URL (``scheme://...``) -> ``<url>``; UUID -> ``<uuid>``;
   IPv4 and IPv6 address -> ``<ip>``; ISO date/time, ``10/03/2024``, ``03.10.2024``,
   ``Mar 10, 2024``, ``Tue, 10 Mar 2024 12:00:00 GMT``, ``12:30:45`` -> ``<date>``;
   ``0x...``, 8 or more hex characters with at least one digit and one letter a-f, and
   32/40/64-character hex hashes -> ``<hex>``; durations (``150ms``, ``2.5s``, ``3m``,
   ``1h2m3s``, ``5 seconds``) -> ``<duration>``; ``key=value``, ``key="quoted value"``,
   ``key='quoted'`` -> ``key=<value>``; decimal numbers -> ``<float>``; integers ->
   ``<int>``. (A run of digits only, like ``12345678``, is an integer, so that ids of
   every length group together.) For a Sentry ``logentry``/message object the unformatted
   ``message`` template is used when given, else ``formatted``.
5. **fallback** - no type, no message and no frames: ``["<no type>", "<no message>"]``.

The fingerprint is ``sha256("\\n".join(inputs).encode("utf-8"))`` in hex, so PostgreSQL
can recompute it: ``encode(sha256(convert_to(array_to_string(inputs, E'\\n'), 'UTF8')), 'hex')``.

Events may be flat (``exception_type``, ``message``, ``stack_trace``, ``frames``, ...) or
Sentry-shaped (``exception.values[]`` - the raised exception last, causes before it -
``message`` as a string or ``{"formatted", "message"}``, ``logentry``, ``stacktrace``,
``threads``, ``tags`` as an object or a list of ``[key, value]`` pairs). When both are
present the Sentry chain wins and the flat fields fill what its raised exception lacks.
When no frames were given, ``stack_trace`` text is parsed; its formats are recognised
automatically: Python tracebacks (with "During handling of the above exception" and "The
above exception was the direct cause" chains), V8/Node (``at f (file:1:2)``), Firefox and
Safari (``f@file:1:2``), Java/JVM (``Caused by:``, ``... 12 more``, ``Suppressed:`` blocks
skipped), .NET frames (``at A.B(args) in file:line 42``), Go panics and Ruby backtraces.
The text also gives the type and message when the event has none (or has the placeholder
type "Error"). Parsed frames get ``in_app`` from their path: false for site-packages,
dist-packages, /usr/lib/python, /usr/local/lib/python, .../lib/pythonX.Y/, <frozen ...>,
node_modules, node:..., internal/..., <anonymous>, /gems/, /ruby/, <internal:...>, Go's
/usr/local/go/, /usr/lib/go, .../src/runtime/, /pkg/mod/ and the runtime package, and
classes of java., javax., jdk., sun., com.sun., kotlin., kotlinx., scala., System.,
Microsoft.; true otherwise.

Limits, each a repair and never an error: only the first 64 KB of a message or stack text
is read; at most 500 frames per exception (the innermost 500 are kept) and 10 exceptions
per chain (the raised one and its 9 nearest causes); NUL characters are removed; result
strings are cut (title and culprit 200, frame fields 1000, type 512, message 64 KB). An
event that is not an object, or that fails in any unforeseen way, gets a fallback result.
Unparseable JSON for the whole batch is split into its top-level elements so that one bad
event does not cost the others their results.

Result per event: fingerprint, fingerprint_version (2), method, inputs, exception_type
(the raised exception's type, "Error" if missing), message (its message, "" if missing),
title ("Type: first message line, parameterised", at most 200 characters), culprit
("module in function" of the innermost in-app frame, else of the innermost frame, null
without frames), frames (the raised exception's frames, innermost last; keys filename,
abs_path, module, function, lineno, in_app, context_line) and group_title (a rule's
title, else null).

Standard library only, no plpy: the file is the body of monitoring._fingerprint_events().
"""

import fnmatch
import hashlib
import json
import math
import re

FINGERPRINT_VERSION = 2
MAX_TEXT = 65536
MAX_FRAMES = 500
MAX_CHAIN = 10
MAX_PARTS = 100
MAX_PART_LEN = 1000
MAX_FIELD = 1000
MAX_TYPE = 512
MAX_TITLE = 200
MAX_LINE = 1000
MAX_RULES = 1000
MAX_TAGS = 200
MAX_LINENO = 2147483647
MAX_FRAME_LINE = 4096  # longer lines are never frames (and never reach a backtracking regex)
NO_TYPE = "<no type>"
NO_MESSAGE = "<no message>"
DEFAULT_TYPE = "Error"
RESULT_KEYS = (
    "fingerprint", "fingerprint_version", "method", "inputs", "exception_type", "message",
    "title", "culprit", "frames", "group_title",
)
FRAME_KEYS = ("filename", "abs_path", "module", "function", "lineno", "in_app", "context_line")
_RULE_MATCH_KEYS = ("type", "message", "module", "function", "path", "environment", "transaction", "logger", "level")

_DEFAULT_PART = re.compile(r"\{\{\s*default\s*\}\}\Z")

# Parameterisation of messages (step 4), applied in this order.
_IPV6_GROUP = "[0-9A-Fa-f]{1,4}"
_IPV6 = (
    r"(?<![\w:.])(?=[0-9A-Fa-f:]*\d)(?:"
    + "|".join(
        (
            rf"(?:{_IPV6_GROUP}:){{7}}{_IPV6_GROUP}",
            rf"(?:{_IPV6_GROUP}:){{1,7}}:",
            rf"(?:{_IPV6_GROUP}:){{1,6}}:{_IPV6_GROUP}",
            rf"(?:{_IPV6_GROUP}:){{1,5}}(?::{_IPV6_GROUP}){{1,2}}",
            rf"(?:{_IPV6_GROUP}:){{1,4}}(?::{_IPV6_GROUP}){{1,3}}",
            rf"(?:{_IPV6_GROUP}:){{1,3}}(?::{_IPV6_GROUP}){{1,4}}",
            rf"(?:{_IPV6_GROUP}:){{1,2}}(?::{_IPV6_GROUP}){{1,5}}",
            rf"{_IPV6_GROUP}:(?::{_IPV6_GROUP}){{1,6}}",
            rf":(?::{_IPV6_GROUP}){{1,7}}",
        )
    )
    + r")(?:%\w+)?(?![\w:])"
)
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?"
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?"
_TIME = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[AaPp][Mm])?(?:\s?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}))?"
_DATE = (
    r"(?<![\w.:/-])(?:"
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?(?:\s?(?:Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?))?"
    r"|\d{1,2}/\d{1,2}/\d{2,4}|\d{4}/\d{1,2}/\d{1,2}|\d{1,2}\.\d{1,2}\.\d{4}"
    rf"|(?:{_WEEKDAY}\s+)?\d{{1,2}}\s+{_MONTH}\s+\d{{4}}"
    rf"|(?:{_WEEKDAY}\s+)?{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    rf")(?:(?:\s+|,\s*|T){_TIME})?(?![\w])"
    rf"|(?<![\w.:/-]){_TIME}(?![\w:])"
)
# (pattern, replacement, a string the line must contain, whether it must contain a digit)
_PARAMETERS = tuple(
    (re.compile(pattern), replacement, needs, needs_digit)
    for pattern, replacement, needs, needs_digit in (
        (r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+", "<email>", "@", False),
        (r"(?<![\w+.-])[A-Za-z][\w+.-]*://[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]]", "<url>", "://", False),
        (r"(?<![0-9A-Fa-f-])[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}(?![0-9A-Fa-f-])", "<uuid>", "-", True),
        (_IPV6, "<ip>", ":", True),
        (r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)", "<ip>", ".", True),
        (_DATE, "<date>", "", True),
        (r"(?<!\w)(?:0[xX][0-9A-Fa-f]+|[0-9A-Fa-f]{64}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{32}"
         r"|(?=[0-9A-Fa-f]*[A-Fa-f])(?=[0-9A-Fa-f]*\d)[0-9A-Fa-f]{8,})(?!\w)", "<hex>", "", False),
        (r"(?<![\w.])(?:(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|h|m|s)){2,}"
         r"|\d+(?:\.\d+)?(?:\s?(?:ns|us|µs|ms|msecs?|secs?|seconds?|mins?|minutes?|hours?|hrs?|days?)|[smhd]))(?!\w)",
         "<duration>", "", True),
        (r"(?<![\w.-])([A-Za-z_][\w.-]*)=(?!=)(?:\"[^\"\\]*(?:\\.[^\"\\]*)*\"|'[^'\\]*(?:\\.[^'\\]*)*'|[^\s,;&)\]}]+)",
         r"\1=<value>", "=", False),
        (r"(?<![\w.])\d+\.\d+(?:[eE][-+]?\d+)?(?!\w|\.\d)", "<float>", ".", True),
        (r"(?<!\w)\d+(?!\w)", "<int>", "", True),
    )
)
_DIGIT = re.compile(r"\d")

# Normalisation of frame names (step 3).
_JAVA_GENERATED = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"\$\$Lambda(?:\$\d+)?(?:/0x[0-9A-Fa-f]+)?", "$$Lambda"),
        (r"\$\$([A-Za-z]+)\$\$\w+", r"$$\1"),
        (r"\$HibernateProxy\$\w+", "$HibernateProxy"),
        (r"\$Proxy\d+", "$Proxy"),
        (r"(Generated(?:Serialization)?(?:Method|Constructor)Accessor)\d+", r"\1"),
        (r"/0x[0-9A-Fa-f]+", ""),
        (r"\$\d+", "$"),
    )
)
_GO_CLOSURE = re.compile(r"\.func\d+(?:\.\d+)*|(?<=\.)(gowrap|deferwrap)\d+")
_BUNDLE_HASH = re.compile(
    r"[.-](?:(?=[0-9A-Fa-f]*\d)[0-9A-Fa-f]{8,}"
    r"|(?=[\w-]{0,7}\d)(?=[\w-]{0,7}[A-Z])(?=[\w-]{0,7}[a-z])[\w-]{8})(?=\.)"
)

# Stack trace text.
_PY_FRAME = re.compile(r'^[ \t|]*File "([^"\n]*)", line (\d+)(?:, in (.*?))?\s*$')
_PY_SEPARATORS = (
    "During handling of the above exception, another exception occurred",
    "The above exception was the direct cause of the following exception",
)
_PY_EXCEPTION = re.compile(r"([A-Za-z_][\w.]*)(?::\s?(.*))?\Z", re.S)
_CARETS = re.compile(r"[\s^~]*\Z")
_JAVA_FRAME = re.compile(r"^\s*at ([^\s(]+)\(([^)]*)\)(?: in (.+?):line (\d+))?")
_JAVA_MODULE_PREFIX = re.compile(r"(?:[\w.-]+(?:@[\w.-]+)?)?/(?:[\w.-]*/)?(?=[\w$])")
_V8_FRAME = re.compile(
    r"^\s*at (?:(.+?) \(((?:.*:\d+)|<anonymous>|native|index \d+|unknown location)\)|(.+?:\d+(?::\d+)?))\s*\{?\s*$"
)
_V8_ALIAS = re.compile(r" \[as [^\]]*\]\Z")
_V8_EVAL = re.compile(r"\(([^()]*)\)")
_LOCATION = re.compile(r"(.*?)(?::(\d+))?(?::(\d+))?\Z", re.S)
_GECKO_FRAME = re.compile(r"^\s*([^@\s]*|(?:global|module|eval) code)@(.+?):(\d+)(?::(\d+))?\s*$")
_RUBY_FRAME = re.compile(r"^\s*(?:from\s+)?(.+?):(\d+):in\s+[`'](.*?)'(?::\s+(.*))?\s*$")
_RUBY_MESSAGE = re.compile(r"(.*?)\s*\(([A-Z][\w:]*)\)\Z", re.S)
_GO_PANIC = re.compile(r"(panic|fatal error): (.*)")
_GO_GOROUTINE = re.compile(r"goroutine \d+ \[[^\]]*\]:")
_GO_LOCATION = re.compile(r"^\s+(.+?):(\d+)(?: \+0x[0-9A-Fa-f]+)?\s*$")
_HEADER = re.compile(
    r"(?:Uncaught\s+)?(?:Exception in thread \"[^\"]*\"\s+)?([A-Za-z_$][\w$.]*)(?:\s\[([\w-]+)\])?(?::\s+(.*)|:)?\s*\Z"
)
_CAUSE_MARKERS = ("Caused by:", "[cause]:")
_NOT_APP_PATH = re.compile(
    r"site-packages|dist-packages|/usr/lib/python|/usr/local/lib/python|/lib/python\d+\.\d+/|<frozen |"
    r"node_modules|node:|^internal/|^<anonymous>|/gems/|/ruby/|<internal:|"
    r"/usr/local/go/|/usr/lib/go|/src/runtime/|/pkg/mod/"
)
_NOT_APP_CLASS = re.compile(r"(?:java|javax|jdk|sun|com\.sun|kotlin|kotlinx|scala|System|Microsoft)\.")

# Lenient JSON: the top-level items of an array or object, without parsing them.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')
_LONE_SURROGATE = re.compile(r"\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f]")
_JSON_KEY = re.compile(r'\s*("[^"\\]*(?:\\.[^"\\]*)*")\s*:')

_CACHE_LIMIT = 4096
_name_cache = {}
_file_cache = {}
_path_cache = {}
_glob_cache = {}
_param_cache = {}


# ---------------------------------------------------------------------------- coercion


def _text(value, limit):
    """A string from a JSON scalar, without NUL characters and cut to limit; None otherwise."""
    kind = type(value)
    if kind is not str:
        if kind is int:
            if value.bit_length() > 64:
                return None
            value = str(value)
        elif kind is float:
            if not math.isfinite(value):
                return None
            value = repr(value)
        else:
            return None
    if len(value) > limit:
        value = value[:limit]
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value


def _lineno(value):
    kind = type(value)
    if kind is int:
        return value if 0 <= value <= MAX_LINENO else None
    if kind is float:
        return int(value) if math.isfinite(value) and 0 <= value <= MAX_LINENO else None
    if kind is str and 0 < len(value) <= 10 and value.isdigit() and value.isascii():
        number = int(value)
        return number if number <= MAX_LINENO else None
    return None


def _flag(value):
    if value is True or value is False:
        return value
    if type(value) is str:
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    return None


def _frame(value):
    """A frame dict with exactly FRAME_KEYS, from whatever the client sent; None if not an object.
    (The hot path: clean strings, ints and booleans are taken as they are, without calls.)"""
    if type(value) is not dict:
        return None
    get = value.get
    filename, abs_path, module, function = get("filename"), get("abs_path"), get("module"), get("function")
    lineno, in_app, context_line = get("lineno"), get("in_app"), get("context_line")
    if filename is not None and (type(filename) is not str or len(filename) > MAX_FIELD or "\x00" in filename):
        filename = _text(filename, MAX_FIELD)
    if abs_path is not None and (type(abs_path) is not str or len(abs_path) > MAX_FIELD or "\x00" in abs_path):
        abs_path = _text(abs_path, MAX_FIELD)
    if module is not None and (type(module) is not str or len(module) > MAX_FIELD or "\x00" in module):
        module = _text(module, MAX_FIELD)
    if function is not None and (type(function) is not str or len(function) > MAX_FIELD or "\x00" in function):
        function = _text(function, MAX_FIELD)
    if context_line is not None and (
        type(context_line) is not str or len(context_line) > MAX_FIELD or "\x00" in context_line
    ):
        context_line = _text(context_line, MAX_FIELD)
    if lineno is not None and not (type(lineno) is int and 0 <= lineno <= MAX_LINENO):
        lineno = _lineno(lineno)
    if not (in_app is None or in_app is True or in_app is False):
        in_app = _flag(in_app)
    return {
        "filename": filename, "abs_path": abs_path, "module": module, "function": function,
        "lineno": lineno, "in_app": in_app, "context_line": context_line,
    }


def _frames_of(value):
    """Frames from a list of frames or a Sentry stacktrace object; None when there are none."""
    if type(value) is dict:
        value = value.get("frames")
    if type(value) is not list or not value:
        return None
    if len(value) > MAX_FRAMES:
        value = value[-MAX_FRAMES:]
    frames = [frame for frame in map(_frame, value) if frame is not None]
    return frames or None


def _thread_frames(value):
    """Frames of the crashed (else current, else only) thread of a Sentry threads interface."""
    if type(value) is dict:
        value = value.get("values")
    if type(value) is not list:
        return None
    threads = [t for t in value[:MAX_CHAIN * 10] if type(t) is dict and t.get("stacktrace") is not None]
    chosen = None
    for key in ("crashed", "current"):
        chosen = next((t for t in threads if t.get(key) is True), None)
        if chosen is not None:
            break
    if chosen is None and len(threads) == 1:
        chosen = threads[0]
    return _frames_of(chosen.get("stacktrace")) if chosen is not None else None


def _message_of(value):
    """(display, template) of a message given as a string or a {"formatted", "message"} object."""
    if type(value) is dict:
        formatted = _text(value.get("formatted"), MAX_TEXT)
        template = _text(value.get("message"), MAX_TEXT)
        return formatted or template, template or formatted
    text = _text(value, MAX_TEXT)
    return text, text


def _tags_of(value):
    if type(value) is dict:
        items = [item for _, item in zip(range(MAX_TAGS), value.items())]
    elif type(value) is list:
        items = []
        for pair in value[:MAX_TAGS]:
            if type(pair) in (list, tuple) and len(pair) == 2:
                items.append(pair)
            elif type(pair) is dict and "key" in pair:
                items.append((pair.get("key"), pair.get("value")))
    else:
        return {}
    tags = {}
    for key, val in items:
        key = _text(key, MAX_FIELD)
        val = _text(val, MAX_FIELD) if type(val) is not bool else ("true" if val else "false")
        if key is not None and val is not None:
            tags[key] = val
    return tags


def _link(exc_type, message, frames):
    return {"type": exc_type or None, "message": message or None, "frames": frames or None}


# ---------------------------------------------------------------------------- stack text


def _in_app_path(path):
    if not path:
        return False
    cached = _path_cache.get(path)
    if cached is None:
        if len(_path_cache) > _CACHE_LIMIT:
            _path_cache.clear()
        cached = _path_cache[path] = _NOT_APP_PATH.search(path) is None
    return cached


def _basename(path):
    cut = max(path.rfind("/"), path.rfind("\\"))
    return path[cut + 1:] if cut >= 0 else path


def _text_frame(path, lineno, function, module=None, in_app=None, context_line=None):
    if path is not None:
        path = path[:MAX_FIELD]
    return {
        "filename": _basename(path) if path else None,
        "abs_path": path or None,
        "module": module[:MAX_FIELD] if module else None,
        "function": function[:MAX_FIELD] if function else None,
        "lineno": _lineno(lineno),
        "in_app": _in_app_path(path) if in_app is None else in_app,
        "context_line": context_line,
    }


def _header(lines):
    """(type, message) from the lines before a block's frames ("TypeError: msg", ...)."""
    lines = [line.strip() for line in lines]
    lines = [line for line in lines if line]
    for index, line in enumerate(lines):
        match = _HEADER.match(line)
        if match is None:
            continue
        name, code, message = match.groups()
        if message is None and not line.endswith(":") and "." not in name and not name.endswith(
            ("Error", "Exception", "Throwable", "Panic", "Failure", "Fault")
        ):
            continue
        parts = [message] if message else []
        parts.extend(lines[index + 1:])
        message = "\n".join(parts)
        if code:
            message = f"[{code}] {message}" if message else f"[{code}]"
        return name, message
    return None, "\n".join(lines) or None


def _java_frame(line):
    match = _JAVA_FRAME.match(line) if len(line) <= MAX_FRAME_LINE else None
    if match is None:
        return None
    qualified, location, dotnet_path, dotnet_line = match.groups()
    prefix = _JAVA_MODULE_PREFIX.match(qualified)
    if prefix is not None:
        qualified = qualified[prefix.end():]
    cls, _, method = qualified.rpartition(".")
    if not cls:
        cls, method = None, qualified
    if dotnet_path is not None:
        path, lineno = dotnet_path, dotnet_line
    else:
        path, _, lineno = location.partition(":")
        if path in ("Native Method", "Unknown Source", "Unknown", "") or " " in path:
            path = None
    in_app = cls is None or _NOT_APP_CLASS.match(cls) is None
    if path is not None and dotnet_path is None:
        return {
            "filename": path[:MAX_FIELD], "abs_path": None, "module": cls[:MAX_FIELD] if cls else None,
            "function": method[:MAX_FIELD] or None, "lineno": _lineno(lineno), "in_app": in_app,
            "context_line": None,
        }
    return _text_frame(path, lineno, method, cls, in_app)


def _v8_frame(line):
    match = _V8_FRAME.match(line) if len(line) <= MAX_FRAME_LINE else None
    if match is None:
        return None
    function, location, bare = match.groups()
    if function is None:
        location = bare
    else:
        if function.startswith("async "):
            function = function[6:]
        function = _V8_ALIAS.sub("", function)
    if location.startswith("eval at "):
        inner = _V8_EVAL.findall(location)
        location = inner[-1] if inner else location
    if location in ("<anonymous>", "native", "unknown location") or location.startswith("index "):
        return _text_frame(None, None, function, in_app=False)
    path, lineno, _ = _LOCATION.match(location).groups()
    return _text_frame(path, lineno, function)


def _gecko_frame(line):
    match = _GECKO_FRAME.match(line) if len(line) <= MAX_FRAME_LINE else None
    if match is None:
        return None
    function, path, lineno, _ = match.groups()
    if function.startswith("async*"):
        function = function[6:]
    return _text_frame(path, lineno, function or None)


def _parse_blocks(lines, frame_parser):
    """Formats listing each exception's header then its frames innermost first, a cause after
    "Caused by:" (JVM, V8, Firefox/Safari, .NET). Returns links in Sentry order."""
    blocks = [([], [])]
    causes_first = False
    suppressed = None
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if suppressed is not None:
            if indent > suppressed:
                continue
            suppressed = None
        if stripped.startswith("Suppressed:"):
            suppressed = indent
            continue
        marker = next((m for m in _CAUSE_MARKERS if stripped.startswith(m)), None)
        if marker is not None or stripped.startswith("Wrapped by:"):
            if marker is None:
                causes_first = True
                marker = "Wrapped by:"
            blocks.append(([stripped[len(marker):]], []))
            continue
        frame = frame_parser(line)
        header, frames = blocks[-1]
        if frame is not None:
            frames.append(frame)
        elif not frames and not stripped.startswith("..."):
            header.append(stripped)
    links = []
    for header, frames in blocks:
        if not header and not frames:
            continue
        frames.reverse()
        exc_type, message = _header(header)
        links.append(_link(exc_type, message, frames))
    if not causes_first:
        links.reverse()
    return links


def _parse_python(lines):
    links = []
    frames = []
    exception = None
    last = None
    expect_context = False
    in_traceback = False
    for raw in lines:
        line = raw.rstrip()
        if not line:
            expect_context = False
            if exception is not None:
                exception.append("")
            continue
        match = _PY_FRAME.match(line) if len(line) <= MAX_FRAME_LINE else None
        if match is not None:
            if exception is not None:
                links.append(_python_link(frames, exception))
                frames, exception = [], None
            path, lineno, function = match.groups()
            last = _text_frame(path, lineno, function)
            frames.append(last)
            expect_context = in_traceback = True
            continue
        stripped = line.strip()
        if stripped.startswith(_PY_SEPARATORS):
            links.append(_python_link(frames, exception))
            frames, exception, expect_context = [], None, False
            continue
        if stripped.startswith("Traceback (most recent call last)"):
            if frames or exception is not None:
                links.append(_python_link(frames, exception))
                frames, exception = [], None
            in_traceback, expect_context = True, False
            continue
        if line[0] in " \t|":
            if expect_context and last is not None and _CARETS.match(stripped) is None:
                last["context_line"] = stripped[:MAX_FIELD]
            elif exception is not None:
                exception.append(stripped)
            expect_context = False
            continue
        expect_context = False
        if exception is not None:
            exception.append(line)
        elif in_traceback:
            exception = [line]
    if frames or exception is not None:
        links.append(_python_link(frames, exception))
    return [link for link in links if link["type"] or link["message"] or link["frames"]]


def _python_link(frames, exception):
    exc_type = message = None
    if exception:
        match = _PY_EXCEPTION.match(exception[0])
        if match is not None:
            exc_type, first = match.groups()
            rest = [first] if first else []
        else:
            rest = [exception[0]]
        message = "\n".join(rest + exception[1:]).strip() or None
    return _link(exc_type, message, frames)


def _parse_ruby(lines):
    blocks = []
    for line in lines:
        match = _RUBY_FRAME.match(line) if len(line) <= MAX_FRAME_LINE else None
        if match is None:
            stripped = line.strip()
            if not stripped:
                continue
            if not blocks or len(blocks[-1][2]) > 1:
                exc_type, message = _header([stripped])
                blocks.append([exc_type, message, []])
            else:
                block = blocks[-1]
                block[1] = f"{block[1]}\n{stripped}" if block[1] else stripped
            continue
        path, lineno, function, rest = match.groups()
        if rest is not None or not blocks:
            exc_type = message = None
            if rest is not None:
                found = _RUBY_MESSAGE.match(rest)
                message, exc_type = found.groups() if found is not None else (rest, None)
            blocks.append([exc_type, message, []])
        blocks[-1][2].append(_text_frame(path, lineno, function))
    links = []
    for exc_type, message, frames in reversed(blocks):
        frames.reverse()
        links.append(_link(exc_type, message, frames))
    return links


def _parse_go(lines):
    exc_type = None
    message = []
    index, count = 0, len(lines)
    while index < count:
        line = lines[index]
        index += 1
        if _GO_GOROUTINE.match(line):
            break
        match = _GO_PANIC.match(line)
        if match is not None and exc_type is None:
            exc_type = match.group(1)
            first = match.group(2).strip()
            if first.endswith(" [recovered]"):
                first = first[:-12]
            message.append(first)
        elif exc_type is not None and line.strip() and not line[0].isspace():
            message.append(line.strip())
    frames = []
    pending = None
    while index < count:
        line = lines[index]
        index += 1
        stripped = line.strip()
        if not stripped:
            if frames or pending is not None:
                break
            continue
        if line[0].isspace():
            match = _GO_LOCATION.match(line) if len(line) <= MAX_FRAME_LINE else None
            if match is not None and pending is not None:
                pending[1], pending[2] = match.group(1), match.group(2)
                frames.append(pending)
                pending = None
            continue
        if _GO_GOROUTINE.match(line):
            break
        if stripped.startswith("..."):
            continue
        if pending is not None:
            frames.append(pending)
        name = stripped
        if name.startswith("created by "):
            name = name[11:]
            cut = name.find(" in goroutine ")
            if cut > 0:
                name = name[:cut]
        if name.endswith(")"):
            cut = name.rfind("(")
            if cut > 0:
                name = name[:cut]
        pending = [name, None, None]
    if pending is not None:
        frames.append(pending)
    parsed = []
    for name, path, lineno in reversed(frames):
        slash = name.rfind("/")
        dot = name.find(".", slash + 1)
        module, function = (name[:dot], name[dot + 1:]) if dot > 0 else (None, name)
        runtime = module is not None and (module == "runtime" or module.startswith("runtime/"))
        parsed.append(_text_frame(path, lineno, function, module, False if runtime else None))
    return [_link(exc_type, "\n".join(message), parsed)]


def _detect_format(lines):
    for line in lines:
        if len(line) > MAX_FRAME_LINE:
            continue
        if 'File "' in line and _PY_FRAME.match(line):
            return "python"
        if line.startswith("Traceback (most recent call last)"):
            return "python"
        if "at " in line:
            if _JAVA_FRAME.match(line):
                return "java"
            if _V8_FRAME.match(line):
                return "v8"
        if _GO_GOROUTINE.match(line) or _GO_PANIC.match(line):
            return "go"
        if ":in " in line and _RUBY_FRAME.match(line):
            return "ruby"
        if "@" in line and _GECKO_FRAME.match(line):
            return "gecko"
    return None


def parse_stack_trace(text: str) -> list[dict]:
    """Exceptions (Sentry order: causes first, the raised one last) parsed from stack trace
    text; each a dict of type, message and frames (innermost last). [] when nothing is found."""
    if type(text) is not str or not text:
        return []
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT]
    if "\x00" in text:
        text = text.replace("\x00", "")
    lines = text.splitlines()
    kind = _detect_format(lines)
    if kind == "python":
        links = _parse_python(lines)
    elif kind == "java":
        links = _parse_blocks(lines, _java_frame)
    elif kind == "v8":
        links = _parse_blocks(lines, _v8_frame)
    elif kind == "gecko":
        links = _parse_blocks(lines, _gecko_frame)
    elif kind == "ruby":
        links = _parse_ruby(lines)
    elif kind == "go":
        links = _parse_go(lines)
    else:
        return []
    links = links[-MAX_CHAIN:]
    for link in links:
        frames = link["frames"]
        if frames and len(frames) > MAX_FRAMES:
            link["frames"] = frames[-MAX_FRAMES:]
        if link["type"]:
            link["type"] = link["type"][:MAX_TYPE]
    return links


# ---------------------------------------------------------------------------- event


def _links_from_exception(value):
    if type(value) is dict:
        value = value.get("values")
    if type(value) is not list:
        return []
    links = []
    for item in value[-MAX_CHAIN:]:
        if type(item) is not dict:
            continue
        frames = _frames_of(item.get("stacktrace"))
        links.append(_link(_text(item.get("type"), MAX_TYPE), _text(item.get("value"), MAX_TEXT), frames))
    return links


def _extract(event):
    """(chain, group message) of an event: the chain in Sentry order, the raised exception last."""
    get = event.get
    chain = _links_from_exception(get("exception"))
    flat_type = _text(get("exception_type"), MAX_TYPE)
    display, template = _message_of(get("message"))
    if not display:
        display, template = _message_of(get("logentry"))
    stacktrace = get("stacktrace")
    frames = _frames_of(get("frames"))
    if frames is None and type(stacktrace) is dict:
        frames = _frames_of(stacktrace)
    if frames is None and get("threads") is not None:
        frames = _thread_frames(get("threads"))
    if chain:
        main = chain[-1]
        if not main["type"] and flat_type:
            main["type"] = flat_type
        if main["message"]:
            template = main["message"]
        elif display:
            main["message"] = display
        if not main["frames"] and frames:
            main["frames"] = frames
    elif flat_type or display or frames:
        chain = [_link(flat_type, display, frames)]
    main = chain[-1] if chain else None
    has_frames = any(link["frames"] for link in chain)
    main_type = main["type"] if main is not None else None
    if not has_frames or main_type is None or main_type == DEFAULT_TYPE:
        text = get("stack_trace")
        if type(text) is not str:
            text = stacktrace if type(stacktrace) is str else get("traceback")
        parsed = parse_stack_trace(text) if type(text) is str and text else []
        if parsed:
            last = parsed[-1]
            if main is None:
                chain = parsed
            elif not has_frames and any(link["frames"] for link in parsed):
                # The parsed chain replaces the frameless one; the event's own fields win,
                # except the placeholder type "Error" over a type found in the text.
                if main_type and not (main_type == DEFAULT_TYPE and last["type"]):
                    last["type"] = main_type
                if main["message"]:
                    last["message"] = main["message"]
                chain = parsed
            else:
                if last["type"] and (main_type is None or main_type == DEFAULT_TYPE):
                    main["type"] = last["type"]
                if not main["message"] and last["message"]:
                    main["message"] = last["message"]
    if not template and chain:
        template = chain[-1]["message"]
    return chain, template


# ---------------------------------------------------------------------------- components


def _norm_name(name):
    """A module or function name without generated numbering (Java lambdas, proxies, Go closures)."""
    if "$" not in name and ".func" not in name and "wrap" not in name and "/0x" not in name and "Accessor" not in name:
        return name
    cached = _name_cache.get(name)
    if cached is None:
        cached = name
        if "$" in cached or "/0x" in cached or "Accessor" in cached:
            for pattern, replacement in _JAVA_GENERATED:
                cached = pattern.sub(replacement, cached)
        cached = _GO_CLOSURE.sub(lambda m: ".func" if m.group(1) is None else m.group(1), cached)
        if len(_name_cache) > _CACHE_LIMIT:
            _name_cache.clear()
        _name_cache[name] = cached
    return cached


def _norm_file(path):
    """The base name of a path or URL without query string, fragment or bundler hash."""
    cached = _file_cache.get(path)
    if cached is None:
        base = path
        for mark in ("?", "#"):
            cut = base.find(mark)
            if cut > 0:
                base = base[:cut]
        base = _basename(base.rstrip("/\\")) or base
        if len(base) >= 10 and base.count(".") + base.count("-") >= 2:
            base = _BUNDLE_HASH.sub("", base)
        if len(_file_cache) > _CACHE_LIMIT:
            _file_cache.clear()
        cached = _file_cache[path] = base
    return cached


def _frame_component(frame):
    module = frame["module"]
    if module:
        where = _norm_name(module)
    else:
        path = frame["filename"] or frame["abs_path"]
        where = _norm_file(path) if path else None
    function = frame["function"]
    if function:
        function = _norm_name(function)
    if not where and not function:
        return None
    return f"{where or '?'}:{function or '?'}"


def _stack_components(frames):
    app = [frame for frame in frames if frame["in_app"] is True]
    components = []
    previous = None
    for frame in app or frames:
        component = _frame_component(frame)
        if component is not None and component != previous:
            components.append(component)
            previous = component
    return components


def parameterize(line: str) -> str:
    """One message line with its variable parts replaced by <email>, <url>, ... <int>."""
    cached = _param_cache.get(line)
    if cached is not None:
        return cached
    original = line
    digit = _DIGIT.search(line) is not None
    for pattern, replacement, needs, needs_digit in _PARAMETERS:
        if (needs_digit and not digit) or (needs and needs not in line):
            continue
        line = pattern.sub(replacement, line)
    if len(_param_cache) > _CACHE_LIMIT:
        _param_cache.clear()
    _param_cache[original] = line
    return line


def _message_lines(message, count):
    lines = []
    if message:
        for line in message.splitlines():
            line = line.strip()
            if line:
                lines.append(line[:MAX_LINE])
                if len(lines) == count:
                    break
    return lines


def _default_inputs(chain, main_type, group_message):
    """(method, inputs) of steps 3 to 5."""
    components = []
    has_frames = False
    for link in chain:
        components.append(link["type"] or NO_TYPE)
        if link["frames"]:
            frame_components = _stack_components(link["frames"])
            if frame_components:
                has_frames = True
                components.extend(frame_components)
    if has_frames:
        return "stack", components
    lines = [parameterize(line) for line in _message_lines(group_message, 2)]
    if main_type or lines:
        return "message", [main_type or NO_TYPE, *(lines or [NO_MESSAGE])]
    return "fallback", [NO_TYPE, NO_MESSAGE]


def _explicit_parts(value):
    """Fingerprint parts as strings (at most MAX_PARTS, each cut); None when there are none."""
    if type(value) is str:
        value = [value]
    elif type(value) is not list:
        return None
    parts = []
    for item in value:
        part = _text(item, MAX_PART_LEN)
        if part is not None:
            parts.append(part)
            if len(parts) == MAX_PARTS:
                break
    return parts or None


def _is_default(part):
    return part.startswith("{{") and _DEFAULT_PART.match(part) is not None


def _expand(parts, default):
    inputs = []
    for part in parts:
        if _is_default(part):
            inputs.extend(default)
        else:
            inputs.append(part)
    return inputs


# ---------------------------------------------------------------------------- rules


def _glob(pattern):
    """A match function for a glob or a list of globs; None when the pattern is not one."""
    if type(pattern) is str:
        matcher = _glob_cache.get(pattern)
        if matcher is None:
            if len(_glob_cache) > _CACHE_LIMIT:
                _glob_cache.clear()
            matcher = _glob_cache[pattern] = re.compile(fnmatch.translate(pattern)).match
        return matcher
    if type(pattern) is list and pattern and all(type(p) is str for p in pattern):
        matchers = [_glob(p) for p in pattern[:100]]
        return lambda text: any(m(text) for m in matchers)
    return None


def compile_rules(rules: list[dict]) -> list[tuple]:
    """Rules as (matchers, tag matchers, fingerprint parts or None, title or None), in order;
    invalid rules and rules without an outcome are left out."""
    if type(rules) is dict:
        rules = [rules]
    if type(rules) is not list:
        return []
    compiled = []
    for rule in rules[:MAX_RULES]:
        if type(rule) is not dict:
            continue
        parts = _explicit_parts(rule.get("fingerprint"))
        title = _text(rule.get("title"), MAX_TITLE) or None
        if parts is None and title is None:
            continue
        matchers = []
        valid = True
        for key in _RULE_MATCH_KEYS:
            pattern = rule.get(key)
            if pattern is None:
                continue
            matcher = _glob(pattern)
            if matcher is None:
                valid = False
                break
            matchers.append((key, matcher))
        tag_matchers = []
        tags = rule.get("tags")
        if valid and tags is not None:
            if type(tags) is not dict:
                valid = False
            else:
                for name, pattern in tags.items():
                    matcher = _glob(pattern)
                    if matcher is None:
                        valid = False
                        break
                    tag_matchers.append((name, matcher))
        if valid:
            compiled.append((matchers, tag_matchers, parts, title))
    return compiled


def _candidates(key, event, chain, main_type, cache):
    values = cache.get(key)
    if values is not None:
        return values
    if key == "type":
        values = {link["type"] for link in chain if link["type"]}
        values.add(main_type)
    elif key == "message":
        values = {link["message"] or "" for link in chain} or {""}
    elif key in ("module", "function", "path"):
        values = set()
        for link in chain:
            for frame in link["frames"] or ():
                if key == "path":
                    values.add(frame["abs_path"])
                    values.add(frame["filename"])
                else:
                    values.add(frame[key])
        values.discard(None)
    else:
        value = _text(event.get(key), MAX_TEXT)
        values = {value} if value is not None else set()
    cache[key] = values
    return values


def _first_rule(rules, event, chain, main_type):
    cache = {}
    tags = None
    for rule in rules:
        matchers, tag_matchers, _, _ = rule
        matched = True
        for key, matcher in matchers:
            if not any(matcher(value) for value in _candidates(key, event, chain, main_type, cache)):
                matched = False
                break
        if matched and tag_matchers:
            if tags is None:
                tags = _tags_of(event.get("tags"))
            for name, matcher in tag_matchers:
                value = tags.get(name)
                if value is None or not matcher(value):
                    matched = False
                    break
        if matched:
            return rule
    return None


# ---------------------------------------------------------------------------- results


def _cut(text, limit):
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _culprit(frames):
    if not frames:
        return None
    frame = next((f for f in reversed(frames) if f["in_app"] is True), frames[-1])
    where = frame["module"] or frame["filename"] or frame["abs_path"]
    function = frame["function"]
    if where and function:
        return _cut(f"{where} in {function}", MAX_TITLE)
    return _cut(where or function, MAX_TITLE) if where or function else None


def _title(exc_type, message):
    lines = _message_lines(message, 1)
    first = parameterize(lines[0]) if lines else ""
    if exc_type and first:
        title = f"{exc_type}: {first}"
    else:
        title = exc_type or first or DEFAULT_TYPE
    return _cut(" ".join(title.split()), MAX_TITLE)


def _result(method, inputs, exc_type, message, frames, group_title):
    joined = "\n".join(inputs).encode("utf-8", "surrogatepass")
    return {
        "fingerprint": hashlib.sha256(joined).hexdigest(),
        "fingerprint_version": FINGERPRINT_VERSION,
        "method": method,
        "inputs": inputs,
        "exception_type": exc_type or DEFAULT_TYPE,
        "message": message or "",
        "title": _title(exc_type, message),
        "culprit": _culprit(frames),
        "frames": frames or [],
        "group_title": group_title,
    }


def _fallback_result():
    return _result("fallback", [NO_TYPE, NO_MESSAGE], None, None, None, None)


def _fingerprint(event, rules):
    if type(event) is not dict:
        return _fallback_result()
    chain, group_message = _extract(event)
    main = chain[-1] if chain else None
    main_type = main["type"] if main else None
    message = main["message"] if main else None
    frames = main["frames"] if main else None
    group_title = None
    default = None
    parts = _explicit_parts(event.get("fingerprint"))
    if parts is not None and all(_is_default(part) for part in parts):
        parts = None
    if parts is not None:
        method = "explicit"
        if any(_is_default(part) for part in parts):
            default = _default_inputs(chain, main_type, group_message)[1]
        inputs = _expand(parts, default)
    else:
        rule = _first_rule(rules, event, chain, main_type or DEFAULT_TYPE) if rules else None
        method, default = _default_inputs(chain, main_type, group_message)
        inputs = default
        if rule is not None:
            group_title = rule[3]
            if rule[2] is not None:
                method = "rule"
                inputs = _expand(rule[2], default)
    return _result(method, inputs, main_type, message, frames, group_title)


def _fingerprint_safe(event, rules):
    try:
        return _fingerprint(event, rules)
    except Exception:  # an event must never fail the batch
        return _fallback_result()


def fingerprint_event(event: dict, rules: list[dict]) -> dict:
    """The result object (see the module docstring) for one event dict and a list of rule dicts."""
    try:
        compiled = compile_rules(rules) if rules else []
    except Exception:
        compiled = []
    return _fingerprint_safe(event, compiled)


# ---------------------------------------------------------------------------- JSON entry


def _split_json(text):
    """Top-level item texts of a JSON array or object, found without parsing them."""
    items = []
    depth = 0
    start = 0
    for match in _JSON_TOKEN.finditer(text):
        char = text[match.start()]
        if char == '"':
            continue
        if char in "[{":
            depth += 1
            if depth == 1:
                start = match.end()
        elif char in "]}":
            if depth == 1:
                items.append(text[start:match.start()])
            depth -= 1
            if depth <= 0:
                break
        elif depth == 1:
            items.append(text[start:match.start()])
            start = match.end()
    else:
        if depth >= 1:  # truncated: the unfinished last item
            items.append(text[start:])
    return [item for item in items if item.strip()]


def _lenient_object(text):
    """An object whose members that fail to parse (too deep, huge numbers) are left out."""
    result = {}
    for member in _split_json(text):
        match = _JSON_KEY.match(member)
        if match is None:
            continue
        try:
            result[json.loads(match.group(1))] = json.loads(member[match.end():])
        except (ValueError, RecursionError):
            continue
    return result


def _lenient_value(text):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _lenient_object(text) if text.lstrip().startswith("{") else None


def _load_events(text):
    if text is None:
        return []
    if type(text) is list:
        return text
    if type(text) is not str:
        return [text]
    try:
        events = json.loads(text)
    except (ValueError, RecursionError):
        stripped = text.lstrip()
        if stripped.startswith("["):
            return [_lenient_value(item) for item in _split_json(stripped)]
        return [_lenient_value(stripped)]
    return events if type(events) is list else [events]


def _load_rules(text):
    if text is None or type(text) is list:
        return text or []
    try:
        return json.loads(text)
    except (ValueError, RecursionError, TypeError):
        return []


def _dump(results):
    out = json.dumps(results, separators=(",", ":"))
    if "\\ud" in out and _LONE_SURROGATE.search(out):  # lone surrogates (from "\ud800" escapes) are not valid in jsonb
        raw = json.dumps(results, ensure_ascii=False).encode("utf-8", "replace").decode("utf-8")
        out = json.dumps(json.loads(raw), separators=(",", ":"))
    return out


def fingerprint_events_json(p_events: str, p_rules: str) -> str:
    """JSON array of results, one per event of the JSON array p_events, in order. p_rules is
    a JSON array of rules (or null)."""
    try:
        rules = compile_rules(_load_rules(p_rules))
    except Exception:
        rules = []
    try:
        events = _load_events(p_events)
    except Exception:
        events = [None]
    return _dump([_fingerprint_safe(event, rules) for event in events])
