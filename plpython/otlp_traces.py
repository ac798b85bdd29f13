# pg_observe:function monitoring._otlp_traces_to_spans(p_request jsonb) RETURNS jsonb LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp  # noqa: E501
# pg_observe:entry convert_request(p_request)
"""Turns an OTLP/JSON ExportTraceServiceRequest into the flat spans of ingest_spans().

The OTLP/JSON encoding (opentelemetry-proto, docs/specification.md): resourceSpans[] with a
resource and scopeSpans[] (instrumentationLibrarySpans[] before OTLP 0.15), each with a scope
and spans[]; ids are hex strings, times are Unix nanoseconds as strings or numbers, enums are
integers (names accepted too), and attribute values are AnyValue objects. This converts the
structure only: validation (ids, times) stays in ingest_spans(), which keeps a span it cannot
store in rejected_telemetry. Whatever is not a span object is passed on as it is, to be kept
there too.
The input is JSON text (jsonb cast to text); the output is JSON text.
"""

from __future__ import annotations

import json
import math

try:  # inside PostgreSQL; outside (lint, unit tests) errors are plain exceptions
    import plpy
except ImportError:  # pragma: no cover
    plpy = None

MAX_DEPTH = 32
MAX_INT_DIGITS = 4000  # Python refuses to parse longer integers (sys.int_info.default_max_str_digits)


def _float_or_text(text: str) -> float | str:
    # jsonb holds 1e400, Python's float does not: such a number stays text rather than inf.
    value = float(text)
    return value if math.isfinite(value) else text


def any_value(value: object, depth: int = 0) -> object:
    """An OTLP AnyValue as a plain JSON value."""
    if not isinstance(value, dict):
        return value
    if depth > MAX_DEPTH:
        return "[nested too deep]"
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return value["boolValue"]
    if "intValue" in value:
        raw = value["intValue"]  # int64 as a string in OTLP/JSON
        try:
            return int(raw)
        except (TypeError, ValueError):
            return raw
    if "doubleValue" in value:
        raw = value["doubleValue"]
        if isinstance(raw, str):  # "NaN", "Infinity", "-Infinity", or a number as text
            try:
                return _float_or_text(raw)
            except ValueError:
                return raw
        return raw
    if "arrayValue" in value:
        items = (value["arrayValue"] or {}).get("values") or []
        return [any_value(item, depth + 1) for item in items] if isinstance(items, list) else items
    if "kvlistValue" in value:
        return key_values((value["kvlistValue"] or {}).get("values"), depth + 1)
    if "bytesValue" in value:
        return value["bytesValue"]  # base64, as OTLP/JSON carries it
    return None


def key_values(items: object, depth: int = 0) -> dict:
    """A list of OTLP KeyValue as one object (a later duplicate key wins, as in the SDKs)."""
    result: dict = {}
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                result[item["key"]] = any_value(item.get("value"), depth)
    return result


def _nanos(value: object) -> object:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def convert_span(span: object, resource: dict, scope: object) -> object:
    if not isinstance(span, dict):
        return span
    status = span.get("status") if isinstance(span.get("status"), dict) else {}
    events = span.get("events") if isinstance(span.get("events"), list) else []
    links = span.get("links") if isinstance(span.get("links"), list) else []
    flat = {
        "trace_id": span.get("traceId"),
        "span_id": span.get("spanId"),
        "parent_span_id": span.get("parentSpanId") or None,
        "trace_state": span.get("traceState") or None,
        "name": span.get("name"),
        "kind": span.get("kind"),
        "start_time_unix_nano": span.get("startTimeUnixNano"),
        "end_time_unix_nano": span.get("endTimeUnixNano"),
        "status_code": status.get("code"),
        "status_message": status.get("message") or None,
        "attributes": key_values(span.get("attributes")),
        "events": [
            {"name": event.get("name"), "time_unix_nano": _nanos(event.get("timeUnixNano")),
             "attributes": key_values(event.get("attributes"))}
            for event in events if isinstance(event, dict)
        ],
        "links": [
            {"trace_id": link.get("traceId"), "span_id": link.get("spanId"),
             "trace_state": link.get("traceState") or None, "attributes": key_values(link.get("attributes"))}
            for link in links if isinstance(link, dict)
        ],
        "resource": resource,
        "scope": scope,
    }
    return {key: value for key, value in flat.items() if value is not None}


def _int_or_text(text: str) -> int | str:
    return int(text) if len(text) <= MAX_INT_DIGITS else text


def _refuse(message: str) -> None:
    if plpy is not None:
        plpy.error(message, sqlstate="22023")
    raise ValueError(message)


def convert_request(p_request: str) -> str:
    try:
        request = json.loads(p_request, parse_float=_float_or_text, parse_int=_int_or_text)
    except RecursionError:
        _refuse("the OTLP request is nested too deeply to be read")
    groups = request.get("resourceSpans") if isinstance(request, dict) else None
    spans: list = []
    for resource_spans in groups if isinstance(groups, list) else []:
        if not isinstance(resource_spans, dict):
            continue
        resource_obj = resource_spans.get("resource") if isinstance(resource_spans.get("resource"), dict) else {}
        resource = key_values(resource_obj.get("attributes"))
        scope_groups = resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans") or []
        for scope_spans in scope_groups if isinstance(scope_groups, list) else []:
            if not isinstance(scope_spans, dict):
                continue
            scope_obj = scope_spans.get("scope") or scope_spans.get("instrumentationLibrary")
            scope = None
            if isinstance(scope_obj, dict) and (scope_obj.get("name") or scope_obj.get("version")):
                scope = {"name": scope_obj.get("name"), "version": scope_obj.get("version") or None}
            group = scope_spans.get("spans") or []
            group = group if isinstance(group, list) else [group]
            spans.extend(convert_span(span, resource, scope) for span in group)
    return json.dumps(spans, allow_nan=False, ensure_ascii=False)
