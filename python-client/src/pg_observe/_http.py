"""What pg_observe's two HTTP servers (the OTLP receiver and the Prometheus exporter) share."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler


def send_reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str,
               headers: dict[str, str] | None = None) -> None:
    """One complete response: status, headers (Connection: close when the handler will close),
    and the body unless the request was HEAD."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    if handler.close_connection:
        handler.send_header("Connection", "close")
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)
