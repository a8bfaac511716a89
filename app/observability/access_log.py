"""Request ids and one access-log line per HTTP request, as pure ASGI middleware.

Pure ASGI rather than ``BaseHTTPMiddleware``: it adds no task or memory stream per request,
and it wraps ``send`` so the ``X-Request-ID`` header goes on every response, whoever
produced it.

Install it with :func:`install_access_log`, which puts it *outside* Starlette's
``ServerErrorMiddleware``. Middleware added with ``app.add_middleware`` sits inside that
one, so the 500 answer for an unhandled exception would go out without passing through it:
no request id header on exactly the responses where one is most needed. (If it is added
that way anyway, it answers such a 500 itself, so the header is still there.)

The line holds the route template (``/models/{name}``, never the raw path or query), the
status, the latency and who called (from ``request.state.principal``, set by auth), and
never headers or bodies.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.config import Logging
from app.observability.fast_line import info_line
from app.observability.logging import bind_request_id, clear_request_id

REQUEST_ID_HEADER = "X-Request-ID"
MAX_CLIENT_REQUEST_ID_LENGTH = 128
_CLIENT_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]+")
_HEADER_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")

log = structlog.get_logger("app.access")


def request_id_from(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` if it is a sane token, else a fresh uuid4 hex.

    Sane: 1 to 128 characters from ``[A-Za-z0-9._:-]``. Anything else (markup, spaces,
    control or non-ASCII bytes, an 8 KB value) is replaced, never echoed into the response
    header, the error body or the logs.
    """
    for key, value in scope.get("headers", ()):
        if key == _HEADER_KEY:
            return sane_request_id(value)
    return uuid.uuid4().hex


def sane_request_id(value: bytes | None) -> str:
    """``value`` if it is a sane request id (see :func:`request_id_from`), else a fresh one."""
    if (
        value is not None
        and len(value) <= MAX_CLIENT_REQUEST_ID_LENGTH
        and _CLIENT_REQUEST_ID.fullmatch(value)
    ):
        return value.decode("ascii")
    return uuid.uuid4().hex


def _route_template(scope: Scope) -> str | None:
    route = scope.get("route")
    if route is None:
        return None  # nothing matched (404): the raw path is the client's, not a label
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else None


def _caller(principal: Any, auth_method: str | None) -> dict[str, Any]:
    subject = getattr(principal, "subject", None)
    key_id = getattr(principal, "key_id", None)
    method = (
        getattr(principal, "auth_method", None) or getattr(principal, "method", None) or auth_method
    )
    scopes = getattr(principal, "scopes", None)
    return {
        "principal": subject if subject is not None else key_id,
        "key_id": key_id,
        "auth_method": method,
        "scopes": sorted(scopes) if scopes is not None else None,
    }


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, *, enabled: bool = True, set_header: bool = True) -> None:
        self.app = app
        self.enabled = enabled
        # Behind the Serve proxy the proxy itself puts the request's X-Request-ID on the
        # response (the same id: we adopt the one it passes in); adding ours would make
        # clients see the header twice.
        self.set_header = set_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_from(scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = rid
        bind_request_id(rid)
        started = time.perf_counter()
        status: int | None = None

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if self.set_header:
                    MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception:
            if status is None:
                # Only reachable when installed inside ServerErrorMiddleware (plain
                # add_middleware): answer the 500 here so it still carries the id.
                log.exception("unhandled_error", request_id=rid)
                await error_response(500, "internal error", request_id=rid)(
                    scope, receive, send_with_request_id
                )
            raise
        finally:
            if self.enabled:
                self._write(scope, state, status, (time.perf_counter() - started) * 1000.0)
            clear_request_id()

    @staticmethod
    def _write(scope: Scope, state: dict[str, Any], status: int | None, latency_ms: float) -> None:
        write_access_line(
            request_id=state.get("request_id"),
            method=scope.get("method"),
            route=_route_template(scope),
            status=status,
            latency_ms=latency_ms,
            principal=state.get("principal"),
            auth_method=state.get("auth_method"),
            model_version=state.get("model_version"),
            batch_size=state.get("batch_size"),
        )


def write_access_line(
    *,
    request_id: str | None,
    method: str | None,
    route: str | None,
    status: int | None,
    latency_ms: float,
    principal: Any = None,
    auth_method: str | None = None,
    model_version: str | None = None,
    batch_size: int | None = None,
) -> None:
    """The one access line of a request (the middleware's and the prediction fast path's)."""
    info_line(
        "app.access",
        "access",
        {
            "request_id": request_id,
            "method": method,
            "route": route,
            "status": status,
            "latency_ms": round(latency_ms, 3),
            **_caller(principal, auth_method),
            "model_version": model_version,
            "batch_size": batch_size,
        },
    )


def wrap_middleware_stack(app: FastAPI, wrap: Callable[[ASGIApp], ASGIApp]) -> None:
    """Put ``wrap(stack)`` around ``app``'s whole middleware stack (call before start).

    Starlette's ``add_middleware`` layers sit inside its ``ServerErrorMiddleware``; this is
    the way outside it. Later calls wrap earlier ones."""
    if app.middleware_stack is not None:
        raise RuntimeError("must be called before the app starts (its middleware stack is built)")
    build = app.build_middleware_stack

    def build_wrapped() -> ASGIApp:
        return wrap(build())

    app.build_middleware_stack = build_wrapped  # type: ignore[method-assign]


def install_access_log(app: FastAPI, config: Logging, *, set_header: bool = True) -> None:
    """Wrap ``app``'s whole middleware stack, error handling included (call before start).

    ``set_header=False`` when the Serve proxy already returns the request id header.
    """
    enabled = config.enable_access_logs
    wrap_middleware_stack(
        app, lambda stack: AccessLogMiddleware(stack, enabled=enabled, set_header=set_header)
    )
