"""HTTP hardening as pure ASGI middlewares, and :func:`install_security` that wires it all.

Pure ASGI (not ``BaseHTTPMiddleware``): each layer is one function call and, at most, one
wrapped ``send``/``receive`` per request, with no extra task or body buffering.

Order, outermost first: security headers (so every response, errors included, carries
them: this layer wraps the whole stack, Starlette's 500 handler included) -> CORS
(preflights answered here; error responses still get CORS headers so a browser can read
them) -> request hygiene (Serve control headers stripped, credentials in
the URL refused and scrubbed, repeated credential headers refused) -> body size limit -> the
app.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.config import ServiceConfig
from app.observability.access_log import wrap_middleware_stack
from app.security.context import SecurityContext
from app.security.dependencies import authenticate
from app.security.openapi_security import document_security
from app.security.query_credentials import has_credential_params, redact_credential_params

# Serve's proxy reads these from client requests: a per-request timeout override (<= 0
# disables it) and "ignore client disconnects". Clients must not steer either.
STRIPPED_REQUEST_HEADERS = frozenset(
    {b"x-request-timeout-seconds", b"x-request-disconnect-disabled"}
)
SUPPORTED_HTTP_VERSIONS = frozenset({"1.0", "1.1"})
# Significant digits a Content-Length may have and still be taken as a number: far past
# any body limit, and far below the 4300 digits int() refuses.
_MAX_LENGTH_DIGITS = 19

_API_CSP = "default-src 'none'; frame-ancestors 'none'"
# Swagger UI / ReDoc pages as FastAPI serves them (assets from jsdelivr, inline bootstrap).
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; worker-src blob:; frame-ancestors 'none'"
)


def _request_id(scope: Scope) -> str | None:
    state = scope.get("state")
    rid = state.get("request_id") if isinstance(state, dict) else None
    return rid if isinstance(rid, str) else None


class RequestHygieneMiddleware:
    """The request checks that need no route: they run before anything else reads it.

    Serve's client-steerable headers are dropped. Credentials in the URL are refused (400
    ``credentials_in_url``) and scrubbed from the scope: this is the only place that
    checks them, ahead of routing and the auth dependencies. A repeated ``Authorization``
    or API key header is refused (400 ``duplicate_credentials``): which of two credentials
    counts must never depend on header order (Starlette reads the first, a proxy may keep
    the last). Only HTTP/1.0 and 1.1 are spoken (400 ``unsupported_http_version``).
    """

    def __init__(self, app: ASGIApp, *, api_key_header: str = "X-API-Key") -> None:
        self.app = app
        self._api_key_header = api_key_header
        self._credential_headers = {
            b"authorization": "Authorization",
            api_key_header.lower().encode("latin-1"): api_key_header,
        }
        self._url_message = (
            f"credentials must not be sent in the URL; use the {api_key_header} "
            "or Authorization header"
        )

    def _repeated_credential(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The name of the first credential header sent more than once, if any."""
        seen: set[bytes] = set()
        for name, _ in headers:
            if name in self._credential_headers:
                if name in seen:
                    return self._credential_headers[name]
                seen.add(name)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("http_version") not in SUPPORTED_HTTP_VERSIONS:
            # uvicorn's parser answers an HTTP/0.9-style line (no version) or "HTTP/2.0"
            # sent as HTTP/1.1 text; neither is a request this service speaks.
            message = f"HTTP/{scope.get('http_version')} is not supported; use HTTP/1.1"
            await self._refuse(scope, receive, send, message, "unsupported_http_version")
            return
        headers = scope["headers"]
        if any(name in STRIPPED_REQUEST_HEADERS for name, _ in headers):
            headers = [(n, v) for n, v in headers if n not in STRIPPED_REQUEST_HEADERS]
            scope["headers"] = headers
        query = scope.get("query_string", b"")
        if query and has_credential_params(query):
            # Scrub in place: the server's access log prints this scope's query string.
            scope["query_string"] = redact_credential_params(query)
            await self._refuse(scope, receive, send, self._url_message, "credentials_in_url")
            return
        repeated = self._repeated_credential(headers)
        if repeated is not None:
            message = (
                f"{repeated} was sent more than once; send exactly one Authorization "
                f"or {self._api_key_header} header"
            )
            await self._refuse(scope, receive, send, message, "duplicate_credentials")
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, message: str, code: str) -> None:
        response = error_response(400, message, code=code, request_id=_request_id(scope))
        await response(scope, receive, send)


def declared_length(value: bytes) -> int | None:
    """A ``Content-Length`` value as a number; None when it is not one to act on.

    ASCII digits only (``str.isdigit`` also takes "\u00b2", which ``int`` refuses), with
    leading zeros dropped first: HTTP allows any number of them and uvicorn's httptools
    parser passes them on, but ``int`` refuses a string of more than 4300 digits (a 500).
    """
    if not (value.isascii() and value.isdigit()):
        return None
    digits = value.lstrip(b"0")
    return int(digits or b"0") if len(digits) <= _MAX_LENGTH_DIGITS else None


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` once a streamed body passes the limit.

    An HTTPException, so FastAPI passes it through body parsing untouched and the shared
    handler renders it; the middleware renders it itself if nothing else did.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


class BodySizeLimitMiddleware:
    """413 for bodies over ``max_body_bytes``: by Content-Length up front, else as streamed."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self, scope: Scope) -> Any:
        return error_response(
            413,
            f"request body exceeds {self.max_body_bytes} bytes",
            code="payload_too_large",
            request_id=_request_id(scope),
            headers={"Connection": "close"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("content-length")
        declared = None if header is None else declared_length(header.encode("latin-1"))
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(scope)(scope, receive, send)
            return

        limit = self.max_body_bytes
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._too_large(scope)(scope, receive, send)


_API_ONLY_HEADERS = (
    (b"content-security-policy", _API_CSP.encode()),
    (b"cache-control", b"no-store"),
)


def _common_headers(hsts_max_age_s: int | None) -> list[tuple[bytes, bytes]]:
    common = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    ]
    if hsts_max_age_s is not None:
        hsts = f"max-age={hsts_max_age_s}; includeSubDomains".encode()
        common.append((b"strict-transport-security", hsts))
    return common


def api_security_headers(config: ServiceConfig) -> list[tuple[bytes, bytes]]:
    """The protective headers every API (non-docs) response carries."""
    tls = config.network_security.tls
    return [*_common_headers(tls.hsts_max_age_s if tls.enabled else None), *_API_ONLY_HEADERS]


class SecurityHeadersMiddleware:
    """Adds the standard protective response headers (unless the app set them)."""

    def __init__(
        self, app: ASGIApp, *, hsts_max_age_s: int | None, docs_paths: frozenset[str]
    ) -> None:
        self.app = app
        self.docs_paths = docs_paths
        common = _common_headers(hsts_max_age_s)
        self._api_headers = [*common, *_API_ONLY_HEADERS]
        self._docs_headers = [*common, (b"content-security-policy", _DOCS_CSP.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._docs_headers if scope["path"] in self.docs_paths else self._api_headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {bytes(name).lower() for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_security(app: FastAPI, config: ServiceConfig) -> SecurityContext:
    """Build the :class:`SecurityContext`, put it on ``app.state.security``, add middlewares.

    Call it before adding middlewares that should see the request first (request id,
    metrics): Starlette runs the last added middleware outermost.
    """
    ctx = SecurityContext.from_config(config)
    app.state.security = ctx
    document_security(app, config, authenticate)
    net = config.network_security
    auth = config.security.authentication
    # Starlette wraps the last one added around the others: add innermost first.
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=net.limits.max_body_bytes)
    app.add_middleware(RequestHygieneMiddleware, api_key_header=auth.api_key_header)
    if net.cors.enabled:
        allow_headers = list(dict.fromkeys([*net.cors.allowed_headers, auth.api_key_header]))
        app.add_middleware(
            CORSMiddleware,
            allow_origins=net.cors.allowed_origins,
            allow_methods=net.cors.allowed_methods,
            allow_headers=allow_headers,
            expose_headers=net.cors.expose_headers,
            allow_credentials=False,
            max_age=net.cors.max_age_s,
        )
    docs = {app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    hsts_max_age_s = net.tls.hsts_max_age_s if net.tls.enabled else None
    docs_paths = frozenset(p for p in docs if p)
    # Around the whole stack, not add_middleware: Starlette answers an unhandled exception
    # (the 500) from its ServerErrorMiddleware, outside every add_middleware layer.
    wrap_middleware_stack(
        app,
        lambda stack: SecurityHeadersMiddleware(
            stack, hsts_max_age_s=hsts_max_age_s, docs_paths=docs_paths
        ),
    )
    return ctx
