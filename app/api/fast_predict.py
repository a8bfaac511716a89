"""``POST /predict`` and ``POST /predict/batch`` as one plain ASGI function.

Most of the gateway's CPU per prediction was the framework, not the work: eight
middleware layers each wrapping ``send``, routing, dependency solving, a ``Request``
object and header parsing, about 0.45 of ~0.95 ms (``python -m app.bench.app_cost``).
:class:`FastPredict` sits outside that stack and answers the common request itself,
calling the same functions in the
same order as the routes do: the hygiene checks, :func:`authorize` (401/403/429), the
client hints, :func:`parse_model` (400/422), :func:`predict_rows`, the error renderer
(:func:`known_error_response`), the security headers, the HTTP metrics and the access line.

Whatever is not the common case goes to the full stack untouched, before the body is
read, so it gets the full stack's answer: a CORS request (``Origin``), a query string,
a repeated credential header, a Serve control header, a missing or oversized
``Content-Length``, an HTTP version other than 1.0/1.1, any other method or path. The
routes stay in FastAPI for those requests and for the OpenAPI document, and
``serving.gateway.fast_path: false`` sends everything there. ``tests/api/test_fast_predict.py``
sends each prediction case to a gateway of each kind and compares status, body, headers,
access line and metrics.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.body import deadline_hint, is_json, parse_model, priority_hint
from app.api.errors import known_error_response, unhandled_error_response
from app.api.fast_body import DecodedItem, decode_plain
from app.gateway.failures import PredictionFailure
from app.gateway.predict import predict_rows, refuse_if_stopping, shed_if_overloaded
from app.gateway.schemas import BatchPredictRequest, PredictRequest
from app.gateway.state import GatewayState
from app.observability.access_log import (
    REQUEST_ID_HEADER,
    request_id_from,
    sane_request_id,
    write_access_line,
)
from app.observability.http_metrics import HttpMetrics
from app.observability.logging import bind_request_id, clear_request_id
from app.observability.refusal_lines import RefusalLines
from app.security.context import PREDICT_SCOPE, SecurityContext
from app.security.dependencies import authorize
from app.security.hardening import (
    STRIPPED_REQUEST_HEADERS,
    SUPPORTED_HTTP_VERSIONS,
    declared_length,
)
from app.security.principal import Principal

_ROUTES: dict[str, type[PredictRequest] | type[BatchPredictRequest]] = {
    "/predict": PredictRequest,
    "/predict/batch": BatchPredictRequest,
}
_SCOPES = (PREDICT_SCOPE,)
_JSON = (b"content-type", b"application/json")
_RID_MARK = "request-id-mark.7f3a9c"  # a sane request id no client id collides with here
_MAX_REFUSALS = 64
_Refusal = tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]


def _route(scope: Scope) -> type[PredictRequest] | type[BatchPredictRequest] | None:
    """The body model of a prediction route, or None for any other request."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    return _ROUTES.get(scope["path"])


@dataclass(slots=True)
class _Headers:
    """The request headers the prediction routes read, from one pass over the scope."""

    api_key: str | None = None
    authorization: str | None = None
    content_type: str | None = None
    content_length: int | None = None
    request_id: bytes | None = None
    priority: str | None = None
    deadline: str | None = None


class FastPredict:
    """The prediction routes ahead of the middleware stack; everything else to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        state: GatewayState,
        security: SecurityContext,
        http_metrics: HttpMetrics,
        response_headers: list[tuple[bytes, bytes]],
        max_body_bytes: int,
        access_log: bool,
        set_request_id_header: bool,
        refusal_lines: RefusalLines | None = None,
    ) -> None:
        self.app = app
        self.state = state
        self.security = security
        self.http_metrics = http_metrics
        self.response_headers = response_headers
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self.refusal_lines = refusal_lines  # None: every refusal gets its own line
        self._refusals: dict[tuple[Any, ...], _Refusal] = {}
        self.set_request_id_header = set_request_id_header
        self._api_key_header = security.api_key_header.lower().encode("latin-1")

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> int | None:
        """Answer a prediction whole and return its status; None: not one this path answers.

        A refusal comes first (:meth:`refuse`), then the request is taken (:meth:`take`).
        In the Serve gateway the edge guard (:func:`app.serve.serve_patches.answer_at_the_edge`)
        calls the two itself, ahead of Serve's own per-request work."""
        refused = await self.refuse(scope, send)
        if refused is not None:
            return refused
        return await self.take(scope, receive, send)

    async def refuse(self, scope: Scope, send: Send) -> int | None:
        """The status of a prediction refused at once (replica stopping, overloaded), sent;
        None for anything else, a prediction this gateway takes included, and a CORS
        request (the full stack refuses it, with its CORS headers)."""
        if _route(scope) is None:
            return None
        return await self._refuse(scope, send)

    async def take(self, scope: Scope, receive: Receive, send: Send) -> int | None:
        """Answer a prediction :meth:`refuse` let through if it is a plain request (see
        :meth:`_plain`) and return its status; None (before the body is read) otherwise."""
        model = _route(scope)
        if model is None:
            return None
        headers = self._plain(scope)
        if headers is None:
            return None
        return await self._predict(scope, receive, send, model, headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await self.answer(scope, receive, send) is None:
            await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send) -> int | None:
        """The refusal's status if the replica stops or is overloaded, sent; else None.

        Before the key check and the body: under a flood of requests that must be refused,
        the cheapest refusal is what keeps CPU for the ones admitted. A CORS request is
        the full stack's, refusal included: its CORS headers let a browser read the refusal
        and its Retry-After at all (and it is refused, and counted, there once)."""
        if _from_browser(scope):
            return None
        try:
            refuse_if_stopping(self.state)
            shed_if_overloaded(self.state, None)
        except PredictionFailure as exc:
            started = time.perf_counter()
            rid = request_id_from(scope)
            self.state.metrics.observe_failure(exc.rule.metric_status)
            status, head, tail, headers = self._refusal(exc)
            await self._send(send, status, head + rid.encode() + tail, headers, rid)
            lines = self.refusal_lines
            own_line = lines is None or lines.own_line(scope["path"], status)
            self._record(scope, rid, status, started, line=own_line)
            return status
        return None

    def _refusal(self, exc: PredictionFailure) -> _Refusal:
        """The error renderer's answer to ``exc``, rendered once per kind, message and
        Retry-After and split around the request id (a sane id needs no JSON escaping):
        a flood repeats the same few refusals, so rendering each one again was waste."""
        key = (exc.kind, exc.message, exc.retry_after_s, repr(exc.details))
        refusal = self._refusals.get(key)
        if refusal is None:
            response = known_error_response(exc, _RID_MARK)
            assert response is not None
            head, tail = bytes(response.body).split(_RID_MARK.encode())
            refusal = (response.status_code, head, tail, response.raw_headers)
            if len(self._refusals) >= _MAX_REFUSALS:
                self._refusals.clear()  # bounded, whatever Retry-After values come
            self._refusals[key] = refusal
        return refusal

    async def _predict(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        model: type[PredictRequest] | type[BatchPredictRequest],
        headers: _Headers,
    ) -> int:
        started = time.perf_counter()
        rid = sane_request_id(headers.request_id)
        bind_request_id(rid)
        status = 500
        principal: Principal | None = None
        version: str | None = None
        batch_size: int | None = None
        try:
            try:
                principal = authorize(
                    self.security,
                    scope["path"],
                    _SCOPES,
                    api_key=headers.api_key,
                    authorization=headers.authorization,
                )
                hint = priority_hint(headers.priority)
                items = self._items(await _read_body(receive), headers.content_type, model)
                deadline = deadline_hint(headers.deadline)
                preds, rows = await predict_rows(
                    self.state,
                    items,
                    priority=principal.priority if hint is None else min(principal.priority, hint),
                    deadline=deadline,
                    request_id=rid,
                    principal_id=principal.subject,
                )
            except Exception as exc:
                response = known_error_response(exc, rid) or unhandled_error_response(exc, rid)
                status = response.status_code
                await self._send(send, status, bytes(response.body), response.raw_headers, rid)
                return status
            version, batch_size = rows[-1].ref.version, rows[-1].forward_rows
            if model is BatchPredictRequest:
                content: dict[str, Any] = {"request_id": rid, "predictions": preds}
            else:
                content = {**preds[0], "request_id": rid}
            payload = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
            status = 200
            await self._send(send, 200, payload, [_JSON], rid)
            return status
        finally:
            self._record(scope, rid, status, started, principal, version, batch_size)
            clear_request_id()

    def _items(
        self,
        raw: bytes,
        content_type: str | None,
        model: type[PredictRequest] | type[BatchPredictRequest],
    ) -> Sequence[PredictRequest] | Sequence[DecodedItem]:
        """The body's items: straight to checked windows when it is plainly valid
        (:func:`decode_plain`), else through :func:`parse_model` and its errors."""
        batch = model is BatchPredictRequest
        if raw and is_json(content_type):
            limits = self.state.config.network_security.limits
            decoded = decode_plain(raw, batch=batch, max_bars=limits.max_bars)
            if decoded is not None:
                return decoded
        body = parse_model(raw, content_type, model)
        return body.items if isinstance(body, BatchPredictRequest) else [body]

    def _record(
        self,
        scope: Scope,
        rid: str,
        status: int,
        started: float,
        principal: Principal | None = None,
        version: str | None = None,
        batch_size: int | None = None,
        *,
        line: bool = True,
    ) -> None:
        """What every answer of this path leaves behind: HTTP metrics and the access line
        (``line`` False: a refusal counted by :class:`RefusalLines` instead)."""
        latency_s = time.perf_counter() - started
        self.http_metrics.observe(scope["path"], "POST", status, latency_s)
        if self.access_log and line:
            write_access_line(
                request_id=rid,
                method="POST",
                route=scope["path"],
                status=status,
                latency_ms=latency_s * 1000.0,
                principal=principal,
                model_version=version,
                batch_size=batch_size,
            )

    def _plain(self, scope: Scope) -> _Headers | None:
        """The headers of a request this path answers as the full stack would; else None."""
        if scope.get("query_string") or scope.get("http_version") not in SUPPORTED_HTTP_VERSIONS:
            return None
        found = _Headers()
        for name, value in scope["headers"]:
            if name == self._api_key_header:
                if found.api_key is not None:
                    return None
                found.api_key = value.decode("latin-1")
            elif name == b"authorization":
                if found.authorization is not None:
                    return None
                found.authorization = value.decode("latin-1")
            elif name == b"content-length":
                length = declared_length(value)
                if found.content_length is not None or length is None:
                    return None
                found.content_length = length
            # The rest as Starlette's ``headers.get`` reads them: the first one counts.
            elif name == b"content-type":
                if found.content_type is None:
                    found.content_type = value.decode("latin-1")
            elif name == b"x-request-id":
                if found.request_id is None:
                    found.request_id = value
            elif name == b"x-priority":
                if found.priority is None:
                    found.priority = value.decode("latin-1")
            elif name == b"x-request-deadline-ms":
                if found.deadline is None:
                    found.deadline = value.decode("latin-1")
            elif name == b"origin" or name in STRIPPED_REQUEST_HEADERS:
                return None
        if found.content_length is None or found.content_length > self.max_body_bytes:
            return None
        return found

    async def _send(
        self,
        send: Send,
        status: int,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        rid: str,
    ) -> None:
        out = [
            *(h for h in headers if h[0] != b"content-length"),
            (b"content-length", str(len(body)).encode()),
            *self.response_headers,
        ]
        if self.set_request_id_header:
            out.append((REQUEST_ID_HEADER.lower().encode(), rid.encode()))
        if self.state.stopping:  # the client should open its next connection elsewhere
            out.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})


def _from_browser(scope: Scope) -> bool:
    """Whether the request carries an ``Origin`` (the full stack's CORS layer answers it)."""
    return any(name == b"origin" for name, _ in scope["headers"])


async def _read_body(receive: Receive) -> bytes:
    """The whole body (Content-Length is declared and within the limit: uvicorn stops there)."""
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return bytes(body)
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        if message["type"] != "http.request":
            break  # the client left: the body is short and will fail to parse
        chunks.append(message.get("body", b""))
    return b"".join(chunks)
