# pg_observe:function monitoring._send_notifications(p_messages jsonb, p_max_parallel integer) RETURNS jsonb LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp  # noqa: E501
# pg_observe:entry send_all(p_messages, p_max_parallel)
"""Sends a batch of notifications (email, Slack, generic webhook, PagerDuty) and reports each.

Input, JSON text of an array of messages:
    {"id": 17, "channel_type": "email" | "slack" | "webhook" | "pagerduty",
     "config": {...channel settings, may hold secrets...}, "notification": {...payload...},
     "timeout": 10.0}                     seconds per network operation, clamped to [0.1, 60]
Output, JSON text of an array of results in the input's order:
    {"id": 17, "ok": bool, "error": null | short text, "recipient": text | null,
     "status_code": int | null, "duration_ms": float, "attempted": bool}

- A bad message (unknown channel_type, missing or ill-typed settings) gets ok=false and
  attempted=true; nothing raises out of send_all for a single message.
- Messages are grouped by destination (scheme+host+port, or SMTP host+port). A destination's
  messages go one after another in one worker thread, up to p_max_parallel (1..32)
  destinations at once. After a connection failure or timeout the destination's remaining
  messages of this batch are not attempted (attempted=false), so a dead receiver costs one
  timeout, and delays no other destination. HTTP error statuses do not cause this.
- Secrets (passwords, tokens, routing keys, header values, Slack webhook paths, URL
  credentials and query strings) never appear in "error" or "recipient".
- Standard library only: PL/Python runs the server's own python3. There is no database access
  here (the worker threads must never touch plpy), and all threads are joined before returning.
- A running batch cannot be cancelled from SQL: its length is bounded by the timeouts.
"""

from __future__ import annotations

import base64
import concurrent.futures
import email.message
import email.policy
import email.utils
import hashlib
import hmac
import html
import http.client
import json
import math
import re
import signal
import smtplib
import ssl
import time
import urllib.parse

DEFAULT_TIMEOUT = 10.0
MIN_TIMEOUT = 0.1
MAX_TIMEOUT = 60.0
DEFAULT_PARALLEL = 4
MAX_PARALLEL = 32
MAX_ERROR = 500
MAX_RESPONSE = 65536
MAX_STATUS_BODY = 200
MAX_SUBJECT = 200
MAIL_STACK = 20000
MAIL_MESSAGE = 10000
SLACK_HEADER = 150
SLACK_TEXT = 2900
SLACK_STACK = 500
SLACK_FIELD = 200
PD_SUMMARY = 1024
PD_STACK = 1000
# PagerDuty refuses events over 512 KB: long strings in custom_details are cut to this.
PD_DETAIL = 10000
DEFAULT_SUBJECT = "[{environment}] {error_type}: {error_message}"
DEFAULT_FROM = "pg_observe@localhost"
DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
WEBHOOK_METHODS = ("POST", "PUT", "PATCH")
SEVERITIES = ("debug", "info", "warning", "error", "fatal")
SEVERITY_COLOURS = {
    "fatal": "#7b1fa2",
    "error": "#d32f2f",
    "warning": "#f9a825",
    "info": "#1976d2",
    "debug": "#757575",
}
SLACK_EMOJI = {"fatal": "🔴", "error": "🔴", "warning": "🟡", "info": "🔵", "debug": "🔵"}
PD_SEVERITY = {"fatal": "critical", "error": "error", "warning": "warning", "info": "info", "debug": "info"}
PD_LEVELS = ("critical", "error", "warning", "info")
NOTIFICATION_FIELDS = (
    "idempotency_key", "notification_trigger", "threshold", "config_id", "error_id", "error_fingerprint",
    "error_type", "error_message", "title", "culprit", "severity", "occurrence_count", "affected_users",
    "first_seen", "last_seen", "environment", "release_version", "service", "server_name", "occurrence_id",
    "trace_id", "stack_trace", "queued_at",
)  # fmt: skip
# Set by the sender itself: configured headers cannot replace them.
PROTECTED_HEADERS = frozenset((
    "content-type", "content-length", "transfer-encoding", "host", "connection", "idempotency-key",
    "x-pgobserve-idempotency-key", "x-pgobserve-signature", "x-pgobserve-trigger",
))  # fmt: skip
TRUE_WORDS = ("true", "on", "yes", "1")
FALSE_WORDS = ("false", "off", "no", "0")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_RUNS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\s]+")
_CONTROL_NOT_NL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
_ADDR_SPEC = re.compile(r"^[^@\s,;:<>()\[\]\\\"]+@[^@\s,;:<>()\[\]\\\"]+$")
_MSGID_LEFT = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_SECRET_KEY = re.compile(r"pass|secret|token|key|auth|credential|signature", re.IGNORECASE)
_PARTIAL_ENTITY = re.compile(r"&[a-z]*$")
_FENCE = re.compile(r"`{3,}")
_URL_SAFE = "".join(chr(c) for c in range(33, 127))


class SendError(Exception):
    """A message failed. connection=True: the destination is unreachable or too slow, so the
    rest of its messages in this batch are skipped."""

    def __init__(self, text: str, status_code: int | None = None, connection: bool = False):
        super().__init__(text)
        self.text = text
        self.status_code = status_code
        self.connection = connection


class TemplateValues(dict):
    """Subject placeholders: an unknown name is left as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


# ------------------------------------------------------------------------------------ text


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    return str(value)


def _flat(value: object, limit: int | None = None) -> str:
    """One line: CR, LF, NUL and other control characters become spaces, runs collapse."""
    text = _text(value)
    if limit is not None:
        text = text[: limit * 4 + 64]  # a 1 MB value is not scanned whole for a short line
    text = _CONTROL_RUNS.sub(" ", text).strip()
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _multiline(value: object, limit: int, what: str) -> str:
    """Keeps line breaks and tabs, drops other control characters, cuts with a marker."""
    text = _text(value)
    extra = len(text) - limit
    text = _CONTROL_NOT_NL.sub(" ", text[:limit].replace("\r\n", "\n").replace("\r", "\n"))
    if extra > 0:
        text += f"\n[… {what} truncated: {extra} more characters]"
    return text


def _redact(text: str, secrets: tuple | list) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, "[redacted]")
    return text


def _error_text(text: str, secrets: tuple | list) -> str:
    # Redacted before and after flattening, and before cutting: no part of a secret survives.
    text = _redact(_flat(_redact(_text(text), secrets)), secrets)
    return _flat(text, MAX_ERROR) or "failed"


def _json_default(value: object) -> object:
    # jsonb_plpython transforms hand numbers over as Decimal.
    if hasattr(value, "as_integer_ratio") and hasattr(value, "is_finite") and value.is_finite():
        return int(value) if value == int(value) else float(value)
    return str(value)


def _json_bytes(value: object) -> bytes:
    kwargs = {"separators": (",", ":"), "sort_keys": True, "default": _json_default}
    try:
        return json.dumps(value, ensure_ascii=False, **kwargs).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: \u escapes are still valid JSON
        return json.dumps(value, ensure_ascii=True, **kwargs).encode("ascii")


# ---------------------------------------------------------------------------------- config


def _str(config: dict, *keys: str, required: bool = False, default: str | None = None) -> str | None:
    """The first of keys (aliases) that is set; must be a string."""
    for key in keys:
        value = config.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise SendError(f"config {key} must be a string")
        return value
    if required:
        raise SendError(f"config {keys[0]} is required")
    return default


def _bool(config: dict, key: str, default: bool) -> bool:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise SendError(f"config {key} must be true or false")


def _port(config: dict, key: str, default: int) -> int:
    value = config.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise SendError(f"config {key} must be a port number (1 to 65535)")
    return value


def _timeout(value: object) -> float:
    try:
        seconds = float(value) if value is not None and not isinstance(value, bool) else DEFAULT_TIMEOUT
    except (TypeError, ValueError):
        seconds = DEFAULT_TIMEOUT
    if math.isnan(seconds):
        seconds = DEFAULT_TIMEOUT
    return min(max(seconds, MIN_TIMEOUT), MAX_TIMEOUT)


def _parallel(value: object) -> int:
    try:
        n = int(value) if value is not None and not isinstance(value, bool) else DEFAULT_PARALLEL
    except (TypeError, ValueError, OverflowError):
        n = DEFAULT_PARALLEL
    return min(max(n, 1), MAX_PARALLEL)


def _tls_context(config: dict, cache: dict) -> ssl.SSLContext:
    """Built before any connection, so that a bad tls_ca_file is a setting error. Loading the
    system's trust store takes ~20 ms, so a batch shares one context per setting (contexts are
    safe to share between threads)."""
    verify = _bool(config, "tls_verify", True)
    ca_file = _str(config, "tls_ca_file")
    if (verify, ca_file) in cache:
        return cache[verify, ca_file]
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ValueError) as exc:
        raise SendError(f"config tls_ca_file could not be loaded: {getattr(exc, 'strerror', None) or exc}") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    cache[verify, ca_file] = context
    return context


def _config_secrets(channel_type: object, config: dict) -> list:
    """Every value that must not be shown: secret-named settings, header values, the
    credentials and query of URLs, and a Slack webhook's path (it is the credential)."""
    secrets = []
    for key, value in config.items():
        if isinstance(value, str) and _SECRET_KEY.search(str(key)):
            secrets.append(value)
    headers = config.get("headers")
    if isinstance(headers, dict):
        secrets.extend(v for v in headers.values() if isinstance(v, str))
    for key in ("url", "webhook_url", "events_url"):
        url = config.get(key)
        if not isinstance(url, str):
            continue
        try:
            parts = urllib.parse.urlsplit(url)
            secrets.extend(s for s in (parts.password, parts.query, parts.fragment) if s)
            secrets.extend(v for _, v in urllib.parse.parse_qsl(parts.query) if len(v) >= 4)
            if parts.username and parts.password:
                secrets.append(f"{parts.username}:{parts.password}")
        except ValueError:
            parts = None
        if channel_type == "slack":
            path = parts.path if parts else url
            secrets.append(path)
            secrets.extend(seg for seg in path.split("/") if len(seg) >= 6)
    password = config.get("smtp_password")
    if isinstance(password, str) and password:
        user = config.get("smtp_user") if isinstance(config.get("smtp_user"), str) else ""
        for raw in (password, f"\0{user}\0{password}"):
            secrets.append(base64.b64encode(raw.encode("utf-8", "replace")).decode("ascii"))
    # Longest first, so that a secret containing another is replaced whole.
    return sorted({s for s in secrets if isinstance(s, str) and s}, key=len, reverse=True)


# ---------------------------------------------------------------------------- notification


def _severity(n: dict) -> str:
    value = n.get("severity")
    value = value.strip().lower() if isinstance(value, str) else ""
    return {"critical": "fatal", "warn": "warning", "err": "error"}.get(
        value, value if value in SEVERITIES else "error"
    )


def _error_type(n: dict) -> str:
    return _flat(n.get("error_type"), 300) or _flat(n.get("title"), 300) or "Error"


def _summary(n: dict, limit: int) -> str:
    """One line: "[env] Type: message"."""
    message = _flat(n.get("error_message"), limit) or _flat(n.get("title"), limit)
    text = _error_type(n) + (f": {message}" if message else "")
    env = _flat(n.get("environment"), 100)
    return _flat(f"[{env}] {text}" if env else text, limit)


def _shown(value: object, limit: int = 300) -> str:
    return _flat(value, limit) or "-"


def _details(n: dict) -> list:
    return [
        ("Environment", n.get("environment")),
        ("Severity", _severity(n)),
        ("Occurrences", n.get("occurrence_count")),
        ("Affected users", n.get("affected_users")),
        ("First seen", n.get("first_seen")),
        ("Last seen", n.get("last_seen")),
        ("Release", n.get("release_version")),
        ("Service", n.get("service")),
        ("Server", n.get("server_name")),
        ("Culprit", n.get("culprit")),
        ("Trigger", n.get("notification_trigger")),
        ("Error id", n.get("error_id")),
        ("Fingerprint", n.get("error_fingerprint")),
    ]


# -------------------------------------------------------------------------------------- HTTP


def _parse_url(url: str, key: str) -> dict:
    if any(c.isspace() or _CONTROL.match(c) for c in url):
        raise SendError(f"config {key} contains spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise SendError(f"config {key} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise SendError(f"config {key} must be an http or https URL")
    if not host:
        raise SendError(f"config {key} has no host")
    default_port = 443 if scheme == "https" else 80
    port = port or default_port
    bracketed = f"[{host}]" if ":" in host else host
    netloc = bracketed if port == default_port else f"{bracketed}:{port}"
    target = urllib.parse.quote(parts.path or "/", safe=_URL_SAFE)
    if parts.query:
        target += "?" + urllib.parse.quote(parts.query, safe=_URL_SAFE)
    auth = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {
        "scheme": scheme,
        "host": host,
        "port": port,
        "target": target,
        "netloc": netloc,
        "destination": f"{scheme}://{bracketed}:{port}",
        "public": f"{scheme}://{netloc}{urllib.parse.quote(parts.path, safe=_URL_SAFE)}",
        "auth": auth,
    }


def _os_reason(exc: OSError) -> str:
    return _flat(exc.strerror or str(exc) or type(exc).__name__, 200)


def _http_send(job: dict) -> int:
    """One request on its own connection; returns the 2xx status or raises SendError."""
    url, timeout = job["url"], job["timeout"]
    if url["scheme"] == "https":
        conn = http.client.HTTPSConnection(url["host"], url["port"], timeout=timeout, context=job["tls"])
    else:
        conn = http.client.HTTPConnection(url["host"], url["port"], timeout=timeout)
    try:
        conn.request(job["method"], url["target"], body=job["body"], headers=job["headers"])
        response = conn.getresponse()
        data = response.read(MAX_RESPONSE)
        status = response.status
    except TimeoutError:
        raise SendError(f"timed out after {timeout:g}s", connection=True) from None
    except ssl.SSLCertVerificationError as exc:
        raise SendError(f"TLS certificate verification failed: {exc.verify_message}", connection=True) from None
    except ssl.SSLError as exc:
        raise SendError(f"TLS error: {exc.reason or exc}", connection=True) from None
    except OSError as exc:  # refused, reset, unreachable, name not resolved, closed without answer
        raise SendError(f"connection failed: {_os_reason(exc)}", connection=True) from None
    except http.client.HTTPException as exc:
        raise SendError(f"invalid HTTP response: {type(exc).__name__}") from None
    finally:
        conn.close()
    if 200 <= status < 300:
        return status
    # Redacted before the cut: a receiver may echo what it was sent.
    snippet = _redact(data[:4096].decode("utf-8", "replace"), job["secrets"])
    snippet = _flat(snippet, MAX_STATUS_BODY)
    note = " (redirects are not followed)" if 300 <= status < 400 else ""
    raise SendError(f"HTTP {status}{note}: {snippet}" if snippet else f"HTTP {status}{note}", status_code=status)


def _http_job(url: dict, method: str, body: bytes, headers: dict, config: dict, timeout: float, tls: dict) -> dict:
    if url["auth"] and not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = url["auth"]
    return {
        "destination": url["destination"],
        "url": url,
        "method": method,
        "body": body,
        "headers": headers,
        "timeout": timeout,
        "tls": _tls_context(config, tls) if url["scheme"] == "https" else None,
        "send": _http_send,
    }


def _header_value(value: object, limit: int) -> str:
    # http.client sends headers as Latin-1: anything else is percent-encoded.
    text = _flat(value, limit)
    return text if text.isascii() else urllib.parse.quote(text, safe=_URL_SAFE)


def _base_headers(n: dict) -> dict:
    headers = {"Content-Type": "application/json", "User-Agent": "pg_observe"}
    key = _header_value(n.get("idempotency_key"), 200)
    if key:
        headers["Idempotency-Key"] = key
        headers["X-PgObserve-Idempotency-Key"] = key
    trigger = _header_value(n.get("notification_trigger"), 100)
    if trigger:
        headers["X-PgObserve-Trigger"] = trigger
    return headers


# ----------------------------------------------------------------------------------- webhook


def _prepare_webhook(config: dict, n: dict, timeout: float, tls: dict) -> dict:
    url = _parse_url(_str(config, "url", "webhook_url", required=True), "url")
    method = config.get("method")
    method = "POST" if method is None or method == "" else method
    if not isinstance(method, str) or method.strip().upper() not in WEBHOOK_METHODS:
        raise SendError(f"config method {_flat(method, 20)!r} is not allowed (POST, PUT or PATCH)")
    extra = config.get("headers")
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise SendError("config headers must be an object of header names to string values")
    secret = _str(config, "secret", "signing_secret")

    body = _json_bytes(n)
    headers = _base_headers(n)
    for name, value in extra.items():
        if not _HEADER_NAME.match(name):
            raise SendError(f"config headers: invalid header name {_flat(name, 60)!r}")
        if not isinstance(value, str):
            raise SendError(f"config headers: the value of {name} must be a string")
        if _CONTROL.search(value.replace("\t", " ")):
            raise SendError(f"config headers: the value of {name} contains CR, LF or other control characters")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise SendError(f"config headers: the value of {name} must be Latin-1 text") from None
        if name.lower() in PROTECTED_HEADERS:
            continue
        for existing in [k for k in headers if k.lower() == name.lower()]:
            del headers[existing]
        headers[name] = value
    if secret:
        digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
        headers["X-PgObserve-Signature"] = f"sha256={digest}"
    job = _http_job(url, method.strip().upper(), body, headers, config, timeout, tls)
    job["recipient"] = url["public"]
    return job


# ------------------------------------------------------------------------------------- slack


def _slack_escape(value: object, limit: int, multiline: bool = True) -> str:
    text = _multiline(value, limit, "text") if multiline else _flat(value, limit)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if len(text) > limit:  # escaping lengthened it: cut without splitting an entity
        text = _PARTIAL_ENTITY.sub("", text[: limit - 1]) + "…"
    return text


def _slack_payload(config: dict, n: dict) -> dict:
    severity = _severity(n)
    emoji = SLACK_EMOJI[severity]
    summary = _summary(n, 2000)
    message = n.get("error_message") or n.get("title")
    fields = [
        ("Environment", n.get("environment")),
        ("Severity", severity),
        ("Occurrences", n.get("occurrence_count")),
        ("First seen", n.get("first_seen")),
        ("Last seen", n.get("last_seen")),
        ("Release", n.get("release_version")),
    ]
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": _flat(f"{emoji} {_error_type(n)}", SLACK_HEADER)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(message, SLACK_TEXT) or "(no message)"}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{label}*\n{_slack_escape(_shown(value), SLACK_FIELD, False)}"}
                for label, value in fields
            ],
        },
    ]
    stack = _text(n.get("stack_trace"))
    if stack.strip():
        preview = _multiline(stack[:SLACK_STACK], SLACK_STACK, "stack trace")
        # Backticks in a run of three would close the fence: split them with zero-width spaces.
        preview = _FENCE.sub(lambda m: "\u200b".join(m.group(0)), preview)
        preview = preview.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```\n{preview}\n```"}})
    footer = [f"pg_observe · {_flat(n.get('notification_trigger'), 40) or 'notification'}"]
    for label, key in (("error id", "error_id"), ("fingerprint", "error_fingerprint"), ("key", "idempotency_key")):
        value = _flat(n.get(key), 200)
        if value:
            footer.append(f"{label}: {value}")
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": _slack_escape(t, 300, False)} for t in footer],
        }
    )
    payload = {"text": _slack_escape(f"{emoji} {summary}", 3000, False), "blocks": blocks}
    for key in ("channel", "username", "icon_emoji"):
        value = _str(config, key)
        if value:
            payload[key] = _flat(value, 200)
    return payload


def _prepare_slack(config: dict, n: dict, timeout: float, tls: dict) -> dict:
    url = _parse_url(_str(config, "webhook_url", "url", required=True), "webhook_url")
    body = json.dumps(_slack_payload(config, n), ensure_ascii=True, default=_json_default).encode("ascii")
    job = _http_job(url, "POST", body, _base_headers(n), config, timeout, tls)
    # The webhook's path is its credential: show the host (and channel) only.
    channel = _flat(config.get("channel"), 100) if isinstance(config.get("channel"), str) else ""
    job["recipient"] = f"slack:{url['netloc']}" + (f" {channel}" if channel else "")
    return job


# --------------------------------------------------------------------------------- pagerduty


def _pd_details(n: dict) -> dict:
    details = {}
    for key, value in n.items():
        if key == "stack_trace":
            continue
        if isinstance(value, str) and len(value) > PD_DETAIL:
            value = value[:PD_DETAIL] + f" [… truncated: {len(value) - PD_DETAIL} more characters]"
        details[key] = value
    details["stack_preview"] = _text(n.get("stack_trace"))[:PD_STACK]
    return details


def _prepare_pagerduty(config: dict, n: dict, timeout: float, tls: dict) -> dict:
    routing_key = _str(config, "routing_key", "integration_key", required=True)
    url = _parse_url(_str(config, "events_url", default=DEFAULT_EVENTS_URL), "events_url")
    severity_map = dict(PD_SEVERITY)
    custom = config.get("severity_map")
    if custom is not None:
        if not isinstance(custom, dict) or not all(isinstance(v, str) and v in PD_LEVELS for v in custom.values()):
            raise SendError("config severity_map must map severities to critical, error, warning or info")
        severity_map.update({str(k).lower(): v for k, v in custom.items()})
    severity = _severity(n)
    raw_severity = n.get("severity").strip().lower() if isinstance(n.get("severity"), str) else ""
    pd_severity = severity_map.get(raw_severity) or severity_map.get(severity) or "error"
    source = (
        _flat(_str(config, "source"), 255)
        or _flat(n.get("server_name"), 255)
        or _flat(n.get("service"), 255)
        or _flat(n.get("environment"), 255)
        or "pg_observe"
    )
    payload = {"summary": _summary(n, PD_SUMMARY), "source": source, "severity": pd_severity}
    for pd_key, key in (("timestamp", "last_seen"), ("component", "service"), ("group", "environment")):
        value = _flat(n.get(key), 255)
        if value:
            payload[pd_key] = value
    error_type = _flat(n.get("error_type"), 255)
    if error_type:
        payload["class"] = error_type
    payload["custom_details"] = _pd_details(n)
    event = {"routing_key": routing_key, "event_action": "trigger", "client": "pg_observe", "payload": payload}
    group = _flat(n.get("error_fingerprint"), 200) or _flat(n.get("error_id"), 200)
    if group:
        event["dedup_key"] = f"pg_observe-{group}"
    body = _json_bytes(event)
    headers = {k: v for k, v in _base_headers(n).items() if k != "X-PgObserve-Trigger"}
    job = _http_job(url, "POST", body, headers, config, timeout, tls)
    job["recipient"] = f"pagerduty:{url['netloc']}"
    return job


# ------------------------------------------------------------------------------------- email


def _address(raw: object, key: str) -> tuple:
    """(display name, addr-spec) of one address, or SendError."""
    if not isinstance(raw, str) or not raw.strip():
        raise SendError(f"config {key}: each address must be a non-empty string")
    if _CONTROL.search(raw):
        raise SendError(f"config {key}: an address contains control characters")
    pairs = email.utils.getaddresses([raw])
    if len(pairs) != 1 or not _ADDR_SPEC.match(pairs[0][1]) or len(pairs[0][1]) > 320:
        raise SendError(f"config {key}: {_flat(raw, 100)!r} is not one email address (use an array for several)")
    return pairs[0]


def _addresses(value: object, key: str, required: bool = False) -> list:
    if value is None or value == "" or value == []:
        if required:
            raise SendError(f"config {key} is required")
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise SendError(f"config {key} must be a string or an array of strings")
    return [_address(v, key) for v in value]


def _header_list(pairs: list) -> str:
    return ", ".join(email.utils.formataddr(p) for p in pairs)


def _subject(template: str, n: dict) -> str:
    values = TemplateValues({k: _flat(v, 300) for k, v in n.items() if isinstance(k, str)})
    for key in NOTIFICATION_FIELDS:
        values.setdefault(key, "")
    values["count"] = values["occurrence_count"]
    values["severity"] = values["severity"] or _severity(n)
    try:
        text = template.format_map(values)
    except (ValueError, KeyError, IndexError, AttributeError, TypeError):
        text = template
    return _flat(text, MAX_SUBJECT) or "pg_observe notification"


def _message_id(key: object) -> str:
    """<key@pg-observe>: the same for every attempt, so receivers drop duplicates."""
    key = _flat(key, 1000)
    if not key:
        return email.utils.make_msgid(domain="pg-observe")
    if len(key) > 200 or not _MSGID_LEFT.match(key):
        key = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()
    return f"<{key}@pg-observe>"


def _mail_bodies(n: dict) -> tuple:
    severity = _severity(n)
    colour = SEVERITY_COLOURS[severity]
    headline = _error_type(n)
    message = _multiline(n.get("error_message") or n.get("title"), MAIL_MESSAGE, "message")
    stack = _multiline(n.get("stack_trace"), MAIL_STACK, "stack trace") if n.get("stack_trace") else ""
    details = [(label, _shown(value)) for label, value in _details(n)]
    key = _flat(n.get("idempotency_key"), 200)

    plain = [f"{severity.upper()}: {headline}", "", message, ""]
    plain += [f"{label}: {value}" for label, value in details]
    if stack:
        plain += ["", "Stack trace:", stack]
    plain += ["", "-- ", f"Sent by pg_observe. Idempotency key: {key or '-'}"]

    esc = html.escape
    rows = "".join(
        f'<tr><th style="text-align:left;padding:2px 12px 2px 0;color:#555">{esc(label)}</th>'
        f'<td style="padding:2px 0">{esc(value)}</td></tr>'
        for label, value in details
    )
    parts = [
        '<!DOCTYPE html><html><body style="font-family:sans-serif;font-size:14px">',
        f'<div style="border-left:6px solid {colour};padding:8px 12px">',
        f'<div style="color:{colour};font-weight:bold;text-transform:uppercase">{esc(severity)}</div>',
        f'<h2 style="margin:4px 0">{esc(headline)}</h2>',
        f'<p style="white-space:pre-wrap">{esc(message)}</p>',
        "</div>",
        f'<table style="border-collapse:collapse;margin:12px 0">{rows}</table>',
    ]
    if stack:
        parts.append(
            '<h3>Stack trace</h3><pre style="background:#f5f5f5;padding:8px;overflow:auto;font-size:12px">'
            f"{esc(stack)}</pre>"
        )
    parts.append(f'<p style="color:#888;font-size:12px">Sent by pg_observe. Idempotency key: {esc(key or "-")}</p>')
    parts.append("</body></html>")
    return "\n".join(plain) + "\n", "\n".join(parts) + "\n"


def _build_email(config: dict, n: dict, sender: tuple, to: list, cc: list) -> email.message.EmailMessage:
    template = config.get("subject")
    if template is None or template == "":
        template = DEFAULT_SUBJECT
    if not isinstance(template, str):
        raise SendError("config subject must be a string")
    reply_to = _addresses(config.get("reply_to"), "reply_to")
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["Subject"] = _subject(template, n)
    msg["From"] = email.utils.formataddr(sender)
    msg["To"] = _header_list(to)
    if cc:
        msg["Cc"] = _header_list(cc)
    if reply_to:
        msg["Reply-To"] = _header_list(reply_to)
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = _message_id(n.get("idempotency_key"))
    msg["Auto-Submitted"] = "auto-generated"
    for header, key in (
        ("X-PgObserve-Idempotency-Key", "idempotency_key"),
        ("X-PgObserve-Error-Id", "error_id"),
        ("X-PgObserve-Trigger", "notification_trigger"),
    ):
        value = _flat(n.get(key), 200)
        if value:
            msg[header] = value
    plain, rich = _mail_bodies(n)
    msg.set_content(plain)
    msg.add_alternative(rich, subtype="html")
    return msg


def _smtp_reply(exc: smtplib.SMTPResponseException) -> str:
    reply = exc.smtp_error
    reply = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else _text(reply)
    return f"{exc.smtp_code} {_flat(reply, 200)}"


def _smtp_send(job: dict) -> int:
    timeout = job["timeout"]
    client = None
    healthy = False  # whether the server still answers, so that QUIT is worth sending
    try:
        if job["use_ssl"]:
            client = smtplib.SMTP_SSL(
                job["host"], job["port"], local_hostname=job["helo"], timeout=timeout, context=job["tls"]
            )
        else:
            client = smtplib.SMTP(job["host"], job["port"], local_hostname=job["helo"], timeout=timeout)
        healthy = True
        client.ehlo()
        if job["use_tls"]:
            if not client.has_extn("starttls"):
                raise SendError("the SMTP server does not offer STARTTLS (use_tls)")
            client.starttls(context=job["tls"])
            client.ehlo()
        if job["user"]:
            client.login(job["user"], job["password"] or "")
        refused = client.send_message(job["message"], job["from"], job["rcpt"])
        if refused:  # some recipients accepted: still a failure to report
            addr, (code, reply) = next(iter(refused.items()))
            reply = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else _text(reply)
            raise SendError(f"recipient {addr} refused: {code} {_flat(reply, 200)}", status_code=code)
        return 250
    except SendError:
        raise
    except TimeoutError:
        healthy = False
        raise SendError(f"timed out after {timeout:g}s", connection=True) from None
    except smtplib.SMTPServerDisconnected as exc:
        healthy = False
        if isinstance(exc.__context__, TimeoutError):  # smtplib wraps a timeout in a reply
            raise SendError(f"timed out after {timeout:g}s", connection=True) from None
        raise SendError(f"connection failed: {_flat(exc, 200) or 'server disconnected'}", connection=True) from None
    except smtplib.SMTPConnectError as exc:
        healthy = False
        raise SendError(f"SMTP server refused the connection: {_smtp_reply(exc)}", exc.smtp_code, True) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise SendError(f"SMTP authentication failed: {_smtp_reply(exc)}", status_code=exc.smtp_code) from None
    except smtplib.SMTPRecipientsRefused as exc:
        addr, (code, reply) = next(iter(exc.recipients.items()))
        reply = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else _text(reply)
        raise SendError(f"recipient {addr} refused: {code} {_flat(reply, 200)}", status_code=code) from None
    except smtplib.SMTPResponseException as exc:
        raise SendError(f"SMTP error: {_smtp_reply(exc)}", status_code=exc.smtp_code) from None
    except smtplib.SMTPException as exc:
        raise SendError(f"SMTP error: {_flat(exc, 200) or type(exc).__name__}") from None
    except ssl.SSLCertVerificationError as exc:
        healthy = False
        raise SendError(f"TLS certificate verification failed: {exc.verify_message}", connection=True) from None
    except ssl.SSLError as exc:
        healthy = False
        raise SendError(f"TLS error: {exc.reason or exc}", connection=True) from None
    except OSError as exc:
        healthy = False
        raise SendError(f"connection failed: {_os_reason(exc)}", connection=True) from None
    finally:
        if client is not None:
            try:
                if healthy:
                    client.quit()
                else:
                    client.close()
            except (OSError, smtplib.SMTPException):
                client.close()


def _prepare_email(config: dict, n: dict, timeout: float, tls: dict) -> dict:
    host = _str(config, "smtp_host", default="localhost").strip()
    if not host or any(c.isspace() or _CONTROL.match(c) for c in host):
        raise SendError("config smtp_host is not a host name")
    use_ssl = _bool(config, "use_ssl", False)
    use_tls = _bool(config, "use_tls", False) and not use_ssl
    port = _port(config, "smtp_port", 465 if use_ssl else 587 if use_tls else 25)
    user = _str(config, "smtp_user")
    password = _str(config, "smtp_password")
    helo = _str(config, "helo_name")
    sender = _address(_str(config, "from_address", "from", default=DEFAULT_FROM), "from_address")
    to = _addresses(config.get("to"), "to", required=True)
    cc = _addresses(config.get("cc"), "cc")
    context = _tls_context(config, tls) if use_ssl or use_tls else None
    message = _build_email(config, n, sender, to, cc)
    rcpt = list(dict.fromkeys(addr for _, addr in to + cc))
    bracketed = f"[{host}]" if ":" in host else host
    return {
        "destination": f"smtp://{bracketed.lower()}:{port}",
        "recipient": ", ".join(rcpt),
        "host": host,
        "port": port,
        "use_ssl": use_ssl,
        "use_tls": use_tls,
        "tls": context,
        "user": user,
        "password": password,
        "helo": _flat(helo, 255) or None,
        "from": sender[1],
        "rcpt": rcpt,
        "message": message,
        "timeout": timeout,
        "send": _smtp_send,
    }


# ------------------------------------------------------------------------------------- batch


PREPARERS = {
    "email": _prepare_email,
    "slack": _prepare_slack,
    "webhook": _prepare_webhook,
    "pagerduty": _prepare_pagerduty,
}


def _result(
    job: dict,
    ok: bool,
    started: float,
    error: str | None = None,
    status_code: int | None = None,
    attempted: bool = True,
) -> dict:
    return {
        "id": job.get("id"),
        "ok": ok,
        "error": error,
        "recipient": job.get("recipient"),
        "status_code": status_code,
        "duration_ms": round((time.monotonic() - started) * 1000.0, 3),
        "attempted": attempted,
    }


def _prepare(message: object, tls: dict) -> dict:
    """Checks a message and builds its request; raises SendError for a bad one."""
    if not isinstance(message, dict):
        raise SendError("message must be a JSON object")
    config = message.get("config")
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise SendError("config must be a JSON object")
    notification = message.get("notification")
    notification = {} if notification is None else notification
    if not isinstance(notification, dict):
        raise SendError("notification must be a JSON object")
    channel_type = message.get("channel_type")
    preparer = PREPARERS.get(channel_type) if isinstance(channel_type, str) else None
    if preparer is None:
        raise SendError(f"unknown channel_type {_flat(channel_type, 60)!r} (email, slack, webhook or pagerduty)")
    return preparer(config, notification, _timeout(message.get("timeout")), tls)


def _send_group(destination: str, items: list) -> list:
    """Sends one destination's messages in order; after a connection failure the rest wait."""
    out = []
    failed = False
    for index, job in items:
        started = time.monotonic()
        if failed:
            text = f"not attempted: {destination} failed earlier in this batch"
            out.append((index, _result(job, False, started, text, attempted=False)))
            continue
        try:
            status = job["send"](job)
            out.append((index, _result(job, True, started, status_code=status)))
        except SendError as exc:
            failed = exc.connection
            error = _error_text(exc.text, job["secrets"])
            out.append((index, _result(job, False, started, error, exc.status_code)))
        except Exception as exc:  # a bug must cost one message, not the batch
            error = _error_text(f"internal error: {type(exc).__name__}: {exc}", job["secrets"])
            out.append((index, _result(job, False, started, error)))
    return out


def _load(p_messages: object) -> list:
    if p_messages is None:
        return []
    if isinstance(p_messages, (list, tuple)):  # a jsonb transform hands over Python values
        return list(p_messages)
    messages = json.loads(p_messages)
    if messages is None:
        return []
    if not isinstance(messages, list):
        raise ValueError("p_messages must be a JSON array of messages")
    return messages


def send_all(p_messages: str | None, p_max_parallel: int | None) -> str:
    """Sends every message and returns JSON text of their results, in the input's order."""
    messages = _load(p_messages)
    results: list = [None] * len(messages)
    groups: dict = {}
    tls: dict = {}
    for index, message in enumerate(messages):
        started = time.monotonic()
        base = {"id": message.get("id") if isinstance(message, dict) else None, "recipient": None}
        config = message.get("config") if isinstance(message, dict) else None
        channel_type = message.get("channel_type") if isinstance(message, dict) else None
        secrets = _config_secrets(channel_type, config) if isinstance(config, dict) else []
        try:
            job = _prepare(message, tls)
        except SendError as exc:
            results[index] = _result(base, False, started, _error_text(exc.text, secrets))
            continue
        except Exception as exc:  # never let one message fail the batch
            error = _error_text(f"invalid message: {type(exc).__name__}: {exc}", secrets)
            results[index] = _result(base, False, started, error)
            continue
        job["id"] = base["id"]
        job["secrets"] = secrets
        groups.setdefault(job["destination"], []).append((index, job))

    if groups:
        workers = min(_parallel(p_max_parallel), len(groups))
        # Worker threads inherit the signal mask: with every signal blocked while they are made,
        # PostgreSQL's handlers (cancel, timeouts) keep running in the backend's own thread.
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pg_observe_send")
        futures = []
        try:
            can_mask = hasattr(signal, "pthread_sigmask")
            old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals()) if can_mask else None
            try:
                futures = [pool.submit(_send_group, dest, items) for dest, items in groups.items()]
            finally:
                if can_mask:
                    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            for future, items in zip(futures, groups.values()):
                try:
                    for index, result in future.result():
                        results[index] = result
                except Exception as exc:  # _send_group catches everything; this is a last guard
                    for index, job in items:
                        error = _error_text(f"internal error: {type(exc).__name__}", job["secrets"])
                        results[index] = _result(job, False, time.monotonic(), error)
        finally:
            pool.shutdown(wait=True)
    return json.dumps(results, ensure_ascii=False)
