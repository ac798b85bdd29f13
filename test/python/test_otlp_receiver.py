"""pg_observe.otlp_receiver: OTLP/HTTP in, monitoring.spans out (real exporter, real cluster)."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from google.rpc import status_pb2
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from pg_observe.otlp_receiver import OTLPReceiver, _status_protobuf, protobuf_to_otlp_json, repair_json
from psycopg.rows import dict_row

LINKED = SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331, is_remote=True,
                     trace_flags=TraceFlags(1))
ATTRIBUTES = {
    "http.method": "GET", "http.status_code": 200, "ratio": 0.25, "cached": False,
    "tags": ("a", "b"), "sizes": [1, 2, 3], "weights": [0.5, 1.5], "flags": [True, False],
    "nul": "a\x00b", "raw": b"\x00\xff",
}
STORED_ATTRIBUTES = {
    "http.method": "GET", "http.status_code": 200, "ratio": 0.25, "cached": False,
    "tags": ["a", "b"], "sizes": [1, 2, 3], "weights": [0.5, 1.5], "flags": [True, False],
    "nul": "a\ufffdb", "raw": "AP8=",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def receiver(dsn: str) -> Iterator[OTLPReceiver]:
    with OTLPReceiver(dsn, port=0, max_body_bytes=64 * 1024) as running:
        yield running


def _request(url: str, body: bytes | None = None, content_type: str = "application/json",
             headers: dict[str, str] | None = None, method: str = "POST") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _spans(dsn: str, trace_id: str | None = None) -> list[dict]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM monitoring.spans WHERE %(t)s::text IS NULL OR trace_id = %(t)s ORDER BY start_time",
            {"t": trace_id},
        ).fetchall()


def _sdk_spans() -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("a"), provider.get_tracer("t").start_as_current_span("b"):
        pass
    return list(memory.get_finished_spans())


def _otlp_json(now_ns: int, **span_fields: object) -> dict:
    """A hand-written OTLP/JSON request with one span (every kind of AnyValue)."""
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "parentSpanId": "eee19b7ec3c1b173", "name": "reserve stock", "kind": 3,
        "startTimeUnixNano": str(now_ns - 1_500_000_000), "endTimeUnixNano": now_ns,
        "attributes": [
            {"key": "count", "value": {"intValue": "42"}},
            {"key": "ids", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "two"}]}}},
            {"key": "nested", "value": {"kvlistValue": {"values": [{"key": "a", "value": {"boolValue": True}}]}}},
            {"key": "blob", "value": {"bytesValue": "AP8="}},
            {"key": "pi", "value": {"doubleValue": 3.25}},
        ],
        "events": [{"timeUnixNano": str(now_ns - 1_000_000_000), "name": "retry",
                    "attributes": [{"key": "attempt", "value": {"intValue": 2}}]}],
        "links": [{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}],
        "status": {"code": 2, "message": "out of stock"},
        **span_fields,
    }
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "inventory"}},
                                    {"key": "deployment.environment.name", "value": {"stringValue": "qa"}}]},
        "scopeSpans": [{"scope": {"name": "manual", "version": "0.1"}, "spans": [span]}],
    }]}


# --- conversions, without a database ----------------------------------------------------------------

def test_repair_json_only_touches_what_jsonb_refuses() -> None:
    plain = '{"a": "b\\u00e9", "n": 1}'
    assert repair_json(plain) is plain
    assert json.loads(repair_json('{"a\\u0000": ["x\\u0000y"]}')) == {"a\ufffd": ["x\ufffdy"]}
    assert json.loads(repair_json('{"a": "\\ud800 lone"}')) == {"a": "\ufffd lone"}
    assert json.loads(repair_json('{"a": "\\ud83d\\ude00"}')) == {"a": "\U0001F600"}
    with pytest.raises(ValueError):
        repair_json('{"a": "\\u0000"')


def test_protobuf_to_otlp_json() -> None:
    request = encode_spans(_sdk_spans())
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.name = "with\x00nul"
    attribute = span.attributes.add()
    attribute.key = "blob"
    attribute.value.bytes_value = b"\x00\xff"
    converted = protobuf_to_otlp_json(request.SerializeToString())
    spans = converted["resourceSpans"][0]["scopeSpans"][0]["spans"]
    by_name = {item["name"]: item for item in spans}
    child, parent = by_name["with\ufffdnul"], by_name["a"]
    assert child["traceId"] == span.trace_id.hex() and len(child["traceId"]) == 32
    assert child["spanId"] == span.span_id.hex()
    assert child["parentSpanId"] == parent["spanId"]
    assert "parentSpanId" not in parent
    assert child["kind"] == 1  # SPAN_KIND_INTERNAL, as an integer
    assert child["startTimeUnixNano"] == str(span.start_time_unix_nano)
    assert {"key": "blob", "value": {"bytesValue": "AP8="}} in child["attributes"]
    assert converted["resourceSpans"][0]["resource"]["attributes"][0]["key"]
    with pytest.raises(ValueError):
        protobuf_to_otlp_json(b"\xff\xff\xff")


def test_status_protobuf_is_a_google_rpc_status() -> None:
    status = status_pb2.Status.FromString(_status_protobuf(14, "database unavailable: é" * 20))
    assert (status.code, status.message) == (14, "database unavailable: é" * 20)


# --- HTTP answers ------------------------------------------------------------------------------------

def test_http_errors(receiver: OTLPReceiver) -> None:
    base = f"http://127.0.0.1:{receiver.port}"
    status, _, body = _request(f"{base}/v1/metrics", b"{}")
    assert status == 404 and json.loads(body)["code"] == 5
    status, headers, _ = _request(receiver.url, method="GET")
    assert status == 405 and headers["Allow"] == "POST"
    assert _request(receiver.url, b"{}", method="PUT")[0] == 405
    assert _request(f"{base}/", method="GET")[0] == 404
    assert _request(receiver.url, b"{}", content_type="text/plain")[0] == 415
    assert _request(receiver.url, b"{}", content_type="")[0] == 415
    assert _request(receiver.url, b"{}", headers={"Content-Encoding": "br"})[0] == 415
    status, _, body = _request(receiver.url, b"x" * (64 * 1024 + 1))
    assert status == 413 and json.loads(body)["code"] == 8
    bomb = gzip.compress(b" " * (1024 * 1024))
    assert len(bomb) < 64 * 1024
    assert _request(receiver.url, bomb, headers={"Content-Encoding": "gzip"})[0] == 413
    assert _request(receiver.url, b"not gzip", headers={"Content-Encoding": "gzip"})[0] == 400
    assert _request(receiver.url, b'{"a": "\xff"}')[0] == 400  # not UTF-8
    assert _request(receiver.url, b'{"a": "\x00"}')[0] == 400
    status, headers, body = _request(receiver.url, b"\xff\xff\xff", content_type="application/x-protobuf")
    assert status == 400 and headers["Content-Type"] == "application/x-protobuf"
    assert status_pb2.Status.FromString(body).code == 3


def test_bodies_the_database_refuses_give_400(receiver: OTLPReceiver) -> None:
    status, _, body = _request(receiver.url, b'{"resourceSpans": [')
    assert status == 400 and json.loads(body)["code"] == 3
    assert _request(receiver.url, b"[1, 2]")[0] == 400  # not an object: ingest_otlp_traces() raises
    assert _request(receiver.url, b'{"a": 1}')[0] == 200  # an object without spans: nothing to store


def test_database_down_gives_503_with_retry_after() -> None:
    down = f"host=127.0.0.1 port={_free_port()} user=postgres dbname=postgres"
    with OTLPReceiver(down, port=0, db_timeout=1.0, retry_after=7) as receiver:
        status, headers, body = _request(receiver.url, json.dumps(_otlp_json(time.time_ns())).encode())
        assert status == 503 and headers["Retry-After"] == "7"
        assert json.loads(body)["code"] == 14
        request = encode_spans(_sdk_spans()).SerializeToString()
        status, headers, body = _request(receiver.url, request, content_type="application/x-protobuf")
        assert status == 503 and status_pb2.Status.FromString(body).code == 14


# --- stored spans ------------------------------------------------------------------------------------

@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip, Compression.Deflate])
def test_the_otlp_http_exporter_stores_spans_through_the_receiver(dsn: str, receiver: OTLPReceiver,
                                                                  compression: Compression) -> None:
    exporter = OTLPSpanExporter(endpoint=receiver.url, compression=compression, timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout",
                                                        "deployment.environment": "staging"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.orders", "1.2.3")
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER, attributes=ATTRIBUTES) as root:
        time.sleep(0.01)
        with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT,
                                          links=[Link(LINKED, {"link.reason": "retry of"})]) as child:
            child.add_event("rows fetched", {"db.rows": 3})
            child.set_status(Status(StatusCode.ERROR, "timeout"))
    assert provider.force_flush(10_000)
    provider.shutdown()

    rows = _spans(dsn, trace.format_trace_id(root.get_span_context().trace_id))
    assert [row["operation_name"] for row in rows] == ["GET /orders", "SELECT orders"]
    stored_root, stored_child = rows
    assert stored_root["span_id"] == trace.format_span_id(root.get_span_context().span_id)
    assert stored_root["parent_span_id"] is None
    assert stored_child["span_id"] == trace.format_span_id(child.get_span_context().span_id)
    assert stored_child["parent_span_id"] == stored_root["span_id"]
    assert (stored_root["kind"], stored_child["kind"]) == ("server", "client")
    assert (stored_root["status_code"], stored_child["status_code"]) == (0, 2)
    assert stored_child["status_message"] == "timeout"
    assert stored_root["attributes"] == STORED_ATTRIBUTES
    assert stored_child["events"][0]["name"] == "rows fetched"
    assert stored_child["events"][0]["attributes"] == {"db.rows": 3}
    assert stored_child["links"][0]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert stored_child["links"][0]["span_id"] == "b7ad6b7169203331"
    assert stored_child["links"][0]["attributes"] == {"link.reason": "retry of"}
    assert stored_root["duration_ms"] == pytest.approx((root.end_time - root.start_time) / 1e6, abs=0.01)
    assert stored_root["start_time"].timestamp() == pytest.approx(root.start_time / 1e9, abs=1e-5)
    assert (stored_root["service"], stored_root["environment"]) == ("checkout", "staging")
    assert stored_root["scope"] == {"name": "shop.orders", "version": "1.2.3"}


def test_hand_written_otlp_json(dsn: str, receiver: OTLPReceiver) -> None:
    now = time.time_ns()
    body = json.dumps(_otlp_json(now)).encode()
    status, headers, answer = _request(receiver.url, body)
    assert (status, headers["Content-Type"], json.loads(answer)) == (200, "application/json", {})
    (row,) = _spans(dsn)
    assert row["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert (row["span_id"], row["parent_span_id"]) == ("eee19b7ec3c1b174", "eee19b7ec3c1b173")
    assert (row["operation_name"], row["kind"], row["status_code"], row["status_message"]) == (
        "reserve stock", "client", 2, "out of stock")
    assert row["attributes"] == {"count": 42, "ids": [1, "two"], "nested": {"a": True}, "blob": "AP8=", "pi": 3.25}
    assert row["events"][0]["name"] == "retry" and row["events"][0]["attributes"] == {"attempt": 2}
    assert row["links"][0]["span_id"] == "b7ad6b7169203331"
    assert row["duration_ms"] == pytest.approx(1500.0)
    assert (row["service"], row["environment"]) == ("inventory", "qa")
    assert row["scope"] == {"name": "manual", "version": "0.1"}

    # the same body again, gzip-compressed, on a kept-alive connection: a duplicate, not a rejection
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=30)
    for _ in range(2):
        connection.request("POST", "/v1/traces", gzip.compress(body),
                           {"Content-Type": "application/json; charset=utf-8", "Content-Encoding": "gzip"})
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {})
    # chunked, deflate
    connection.request("POST", "/v1/traces", iter([zlib.compress(body)]), encode_chunked=True,
                       headers={"Content-Type": "application/json", "Content-Encoding": "deflate"})
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {})
    connection.close()
    assert len(_spans(dsn)) == 1


def test_nul_escapes_are_replaced(dsn: str, receiver: OTLPReceiver) -> None:
    body = json.dumps(_otlp_json(time.time_ns(), name="nul\u0000name",
                                 attributes=[{"key": "k\u0000", "value": {"stringValue": "v\u0000"}}]))
    assert "\\u0000" in body
    assert _request(receiver.url, body.encode())[0] == 200
    (row,) = _spans(dsn)
    assert row["operation_name"] == "nul\ufffdname"
    assert row["attributes"] == {"k\ufffd": "v\ufffd"}


def test_rejected_spans_give_a_partial_success(dsn: str, receiver: OTLPReceiver) -> None:
    request = _otlp_json(time.time_ns())
    good = request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    request["resourceSpans"][0]["scopeSpans"][0]["spans"].append({**good, "spanId": "not hex"})
    status, _, answer = _request(receiver.url, json.dumps(request).encode())
    partial = json.loads(answer)["partialSuccess"]
    assert status == 200 and int(partial["rejectedSpans"]) == 1 and partial["errorMessage"]
    assert len(_spans(dsn)) == 1

    message = encode_spans(_sdk_spans())
    message.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x01\x02"
    status, headers, answer = _request(receiver.url, message.SerializeToString(),
                                       content_type="application/x-protobuf")
    assert (status, headers["Content-Type"]) == (200, "application/x-protobuf")
    response = ExportTraceServiceResponse.FromString(answer)
    assert response.partial_success.rejected_spans == 1
    assert len(_spans(dsn)) == 2
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM monitoring.rejected_telemetry WHERE kind = 'span'").fetchone()[0] == 2

    status, _, answer = _request(receiver.url, ExportTraceServiceRequest().SerializeToString(),
                                 content_type="application/x-protobuf")
    assert status == 200 and not ExportTraceServiceResponse.FromString(answer).HasField("partial_success")


def test_cli_otlp_receiver(dsn: str) -> None:
    env = {**os.environ, "PG_OBSERVE_DSN": dsn, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "pg_observe.cli", "otlp-receiver", "--port", "0",
                                "--max-body-bytes", "100000"],
                               env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        lines = []
        deadline = time.monotonic() + 20
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            if "receiving OTLP/HTTP traces on " in line:
                url = line.split("receiving OTLP/HTTP traces on ", 1)[1].split()[0]
        assert url, "".join(lines)
        assert _request(url, json.dumps(_otlp_json(time.time_ns())).encode())[0] == 200
        assert _request(url, b"x" * 100_001)[0] == 413
        line = ""
        while "POST /v1/traces" not in line and time.monotonic() < deadline:
            line = process.stderr.readline()
        assert "POST /v1/traces 200 accepted=1 duplicates=0 rejected=0" in line, line
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(_spans(dsn)) == 1


def test_receiver_reconnects_after_its_connections_are_killed(dsn: str, receiver: OTLPReceiver) -> None:
    body = json.dumps(_otlp_json(time.time_ns())).encode()
    assert _request(receiver.url, body)[0] == 200
    with psycopg.connect(dsn, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'pg_observe otlp-receiver' AND datname = current_database()"
        ).fetchone()[0]
    assert killed >= 1
    assert _request(receiver.url, body)[0] == 200  # the broken connection is replaced, not reported


def test_concurrent_requests(dsn: str, receiver: OTLPReceiver) -> None:
    now = time.time_ns()

    def post(n: int) -> int:
        request = _otlp_json(now, spanId=f"{n + 1:016x}", parentSpanId="")
        return _request(receiver.url, json.dumps(request).encode())[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(post, range(40)))
    assert statuses == [200] * 40
    assert len(_spans(dsn)) == 40
