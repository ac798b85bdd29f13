"""ErrorTrackingMiddleware: a pure ASGI middleware (no framework needed) capturing unhandled errors.

    app = ErrorTrackingMiddleware(app, tracker)

When the wrapped application raises while handling an HTTP request, the exception is captured
with a Sentry-style ``request`` object (method, url, query_string, headers, the client address in
``env``) and re-raised unchanged, for the server (or an outer middleware) to answer 500.
Header values of ``authorization``, ``proxy-authorization``, ``cookie``, ``set-cookie``,
``x-api-key`` and ``x-auth-token`` are replaced with ``"[Filtered]"`` before the event leaves the
process (the database scrubs secrets as well). The user is taken from ``scope["user"]`` (its
``id`` or ``pk``) or ``scope["state"]["user_id"]``; a request id from ``scope["state"]["request_id"]``
or the ``x-request-id`` header goes in the context. Works with ErrorTracker and
AsyncErrorTracker. WebSocket and lifespan scopes are passed through untouched.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, MutableMapping
from typing import Any, Callable

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

FILTERED = "[Filtered]"
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                               "x-auth-token"})


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    return str(value)


def request_info(scope: Scope) -> dict[str, Any]:
    """The Sentry ``request`` interface for an ASGI HTTP scope, sensitive headers filtered."""
    headers: dict[str, str] = {}
    for name, value in scope.get("headers") or ():
        key = _text(name).lower()
        text = FILTERED if key in SENSITIVE_HEADERS else _text(value)
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    scheme = scope.get("scheme") or "http"
    host = headers.get("host")
    if not host and scope.get("server"):
        server_host, port = scope["server"][0], scope["server"][1]
        default = (scheme == "http" and port == 80) or (scheme == "https" and port == 443)
        host = server_host if default or port is None else f"{server_host}:{port}"
    path = (scope.get("root_path") or "") + (scope.get("path") or "")
    info: dict[str, Any] = {
        "method": scope.get("method"),
        "url": f"{scheme}://{host}{path}" if host else path,
        "query_string": _text(scope.get("query_string") or b""),
        "headers": headers,
    }
    client = scope.get("client")
    if client:
        info["env"] = {"REMOTE_ADDR": client[0]}
    return info


def user_info(scope: Scope) -> dict[str, Any] | None:
    """{"id": ...} from scope["user"].id / .pk or scope["state"]["user_id"], else None."""
    user = scope.get("user")
    if user is not None:
        for attr in ("id", "pk"):
            value = getattr(user, attr, None)
            if value is not None:
                return {"id": str(value)}
    state = scope.get("state")
    if isinstance(state, dict) and state.get("user_id") is not None:
        return {"id": str(state["user_id"])}
    return None


def _route(scope: Scope) -> str | None:
    route = scope.get("route")
    path = getattr(route, "path", None) or getattr(route, "path_format", None)
    return path if isinstance(path, str) else None


class ErrorTrackingMiddleware:
    """Captures what the wrapped ASGI application raises on HTTP requests, then re-raises it."""

    def __init__(self, app: Callable[..., Awaitable[None]], tracker: Any) -> None:
        self.app = app
        self.tracker = tracker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception as error:
            await self._capture(scope, error)
            raise

    async def _capture(self, scope: Scope, error: Exception) -> None:
        try:
            request = request_info(scope)
            context: dict[str, Any] = {}
            state = scope.get("state")
            request_id = state.get("request_id") if isinstance(state, dict) else None
            request_id = request_id or request["headers"].get("x-request-id")
            if request_id:
                context["request_id"] = request_id
            method = scope.get("method") or ""
            result = self.tracker.capture_exception(
                error, context=context or None, request=request, user=user_info(scope),
                transaction=f"{method} {_route(scope) or scope.get('path') or ''}".strip(),
            )
            if inspect.isawaitable(result) and not isinstance(result, str):
                await result
        except Exception:
            try:
                self.tracker._sender.count_internal_error()
            except Exception:
                pass
