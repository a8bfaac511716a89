"""Four places where Ray Serve 2.60's direct ingress needs a guard, applied in each gateway.

1. The client timeout header.

Serve's direct-ingress wrapper reads ``x-request-timeout-seconds`` from the request before
our app sees it (``ray.serve._private.replica`` calls ``parse_request_timeout_header``), so
``x-request-timeout-seconds: 0.000001`` made Serve answer a plain-text 408 at once, outside
the one JSON error shape, and a large value let a client hold a slot past our own timeout.
The gateway enforces its own deadline (``serving.request_timeout_s``) around every handle
call and strips the header in :class:`app.security.hardening.RequestHygieneMiddleware`, so
inside a gateway replica the header is ignored: the replica's lookup always returns the
configured default (``http_options.request_timeout_s``).

Serve's proxy (the fallback route on ``serving.proxy_port``) runs in its own process and
still honours the header; the direct-ingress port is the one clients are given.

2. Binding the port again after a crash. Serve binds a replica's HTTPS port without
``SO_REUSEADDR``; after ``kill -9`` of a gateway replica its connections linger in
TIME_WAIT, the restarted replica's bind of the same port fails, Serve blocks that port
and moves the gateway to the next one, and the advertised port stays dark. With
``SO_REUSEADDR`` (never ``SO_REUSEPORT``: a hung old replica must not share the port) the
new replica binds at once. ``RAY_SERVE_PORT_QUARANTINE_S=0`` (``app/serve/serve_env.py``)
makes Serve hand it the same port.

3. Telling the app that the replica drains. A stopping direct-ingress replica stays
reachable for the minimum draining period, then waits until no request is ongoing; with
keep-alive clients sending all the time that moment rarely comes, and the stop ran into
``graceful_shutdown_timeout_s`` (15.6 s of an 18 s Ctrl-C under 100 req/s). The guard calls
the app back when the draining period is over; the gateway then answers new predictions
503 + ``Connection: close`` (``GatewayState.stopping``), so the requests it already took
finish and the drain ends at once.

4. Answering predictions ahead of Serve's per-request work. Serve's direct-ingress handler
does real work for every request before the app sees it (request metadata, a FastAPI
route match, two request ids, a disconnect-watch task, a second task raced against a
timeout, the request context, metrics): about as much CPU as the whole prediction fast
path. Flooded at three times capacity, the gateway spent its CPU there and answered ~80
requests a second. The same server start (2.) puts a thin guard in front of that handler
(``answer_at_the_edge``) which lets the app refuse a prediction at once
(``FastPredict.refuse``: stopping, overloaded) and otherwise answer it whole
(``FastPredict.take``: the plain requests); anything else, and every other route, goes
through Serve as before. What Serve's handler kept for an answered request the guard
keeps too (:class:`_ServeBooks`): the replica's ongoing-request count, which autoscaling
reads and the drain waits on, and Serve's request and ingress metrics; refusals stay out
of those books (see :func:`answer_at_the_edge`). What
it drops is Serve's own limit on ongoing requests (the gateway's adaptive limit,
``app.gateway.concurrency``, decides instead), its request timeout (the gateway has its
own deadline) and its cancel on client disconnect (a prediction is short and bounded by
that deadline). When this Ray lacks a piece the books need, the guard logs and stays out.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger("app.serve.serve_patches")

_PATCHED_NAME = "parse_request_timeout_header"


def _default_timeout_only(headers: dict[bytes, bytes], default_timeout_s: float | None) -> Any:
    return default_timeout_s


def ignore_client_timeout_header() -> bool:
    """In this process, make Serve's direct ingress ignore the client's timeout header.

    Returns False (and logs) when this Ray has no such lookup to replace: a Ray upgrade
    that moved it must be looked at, not silently run without the guard.
    """
    from ray.serve._private import replica

    current: Callable[..., Any] | None = getattr(replica, _PATCHED_NAME, None)
    if current is None:
        log.error("serve_timeout_header_guard_missing", module=replica.__name__)
        return False
    setattr(replica, _PATCHED_NAME, _default_timeout_only)
    return True


def _reuse_address(sock: socket.socket) -> bool:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return True


def reuse_address_on_restart() -> bool:
    """In this process, let Serve's direct ingress bind a port in TIME_WAIT (see 2.).

    Serve's server start takes an ``enable_so_reuseport`` switch that calls
    ``http_util.set_socket_reuse_port``; the guard points that at a function setting only
    ``SO_REUSEADDR`` and turns the switch on for the replica's HTTP server. Returns False
    (and logs) when this Ray lacks either piece.
    """
    from ray.serve._private import http_util, replica

    start: Callable[..., Any] | None = getattr(replica, "start_asgi_http_server", None)
    if start is None or not hasattr(http_util, "set_socket_reuse_port"):
        log.error("serve_port_reuse_guard_missing", module=replica.__name__)
        return False
    if getattr(start, "_reuses_address", False):
        return True
    http_util.set_socket_reuse_port = _reuse_address

    async def start_reusing_address(app: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["enable_so_reuseport"] = True  # now: SO_REUSEADDR only
        return await start(_EdgeGuard(app), *args, **kwargs)

    start_reusing_address._reuses_address = True  # type: ignore[attr-defined]
    replica.start_asgi_http_server = start_reusing_address
    return True


def announce_drain(on_drain: Callable[[], None]) -> bool:
    """In this process, call ``on_drain`` when the replica's minimum draining period ends.

    Returns False (and logs) when this Ray's replica has no such step to wrap."""
    from ray.serve._private import replica

    cls = getattr(replica, "Replica", None)
    drain: Callable[..., Any] | None = getattr(cls, "_drain_ongoing_requests", None)
    if cls is None or drain is None:
        log.error("serve_drain_guard_missing", module=replica.__name__)
        return False
    original = getattr(drain, "_original", drain)

    async def drain_then_announce(
        self: Any, min_draining_period_s: float = 0.0, check_immediately: bool = False
    ) -> Any:
        if min_draining_period_s > 0:
            await asyncio.sleep(min_draining_period_s)  # reachable while balancers notice
        on_drain()
        return await original(self, 0.0, check_immediately=check_immediately)

    drain_then_announce._original = original  # type: ignore[attr-defined]
    cls._drain_ongoing_requests = drain_then_announce
    return True


EdgeAnswer = Callable[[Any, Any, Any], Awaitable[int | None]]
"""(scope, receive, send) -> the status it answered with, or None: Serve's to handle."""
EdgeRefusal = Callable[[Any, Any], Awaitable[int | None]]
"""(scope, send) -> the status of a request refused at once, or None: not refused."""
_edge: list[tuple[EdgeRefusal, EdgeAnswer]] = []


def answer_at_the_edge(answer: EdgeAnswer, refuse: EdgeRefusal) -> None:
    """In this process, offer every direct-ingress HTTP request to ``refuse``, then to
    ``answer``, ahead of Serve's handler (4.).

    A refusal stays out of Serve's books: it is answered in one step, so the ongoing count
    could not see it, and Serve's per-request metrics (two latency histograms each) were
    the costliest part of a refusal: in the overload drill (1800 req/s offered, ~1300
    refused a second) recording them held Ray's metrics agent at 9 % of a core (2 %
    without) and the gateway admitted 140-165 predictions a second (316 without, with a
    gateway p99 of 213-287 ms against 300-426). The app counts its refusals in its own
    metrics."""
    _edge[:] = [(refuse, answer)]


class _ServeBooks:
    """What Serve's handler records for a request, kept for the ones answered at the edge."""

    def __init__(self, replica: Any) -> None:
        from ray.serve._private.common import RequestMetadata, RequestProtocol

        self.metrics = replica._metrics_manager
        self.app_name: str = replica._deployment_id.app_name
        self.deployment_name: str = replica._deployment_id.name
        self.protocol = RequestProtocol.HTTP
        # The fields the ongoing count reads (protocol, direct ingress); one for all.
        self.request = RequestMetadata(
            request_id="",
            internal_request_id="",
            _request_protocol=RequestProtocol.HTTP,
            _http_method="POST",
            is_direct_ingress=True,
        )
        for method in (
            "inc_num_ongoing_requests",
            "dec_num_ongoing_requests",
            "record_request_metrics",
            "record_ingress_request_metrics",
        ):
            getattr(self.metrics, method)  # AttributeError now, not per request

    @classmethod
    def of(cls, app: Any) -> _ServeBooks | None:
        """The books of the replica whose handler ``app`` is; None (logged) if unreadable."""
        try:
            return cls(app.__self__)
        except Exception as exc:  # a Ray that moved a piece: no edge answers, Serve does all
            log.error("serve_edge_books_missing", error=f"{type(exc).__name__}: {exc}")
            return None

    def started(self) -> None:
        self.metrics.inc_num_ongoing_requests(self.request)

    def finished(self) -> None:
        self.metrics.dec_num_ongoing_requests(self.request)

    def record(self, route: str, status: int, latency_ms: float) -> None:
        self.metrics.record_request_metrics(route=route, latency_ms=latency_ms, is_error=False)
        self.metrics.record_ingress_request_metrics(
            protocol=self.protocol,
            method="POST",
            route=route,
            app_name=self.app_name,
            deployment_name=self.deployment_name,
            latency_ms=latency_ms,
            is_error=status >= 400,
            status_code=str(status),
        )


class _EdgeGuard:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.books = _ServeBooks.of(app)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        books = self.books
        if not _edge or books is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refuse, answer = _edge[0]
        if await refuse(scope, send) is not None:
            return
        started = time.time()
        books.started()
        try:
            status = await answer(scope, receive, send)
        finally:
            books.finished()
        if status is None:
            await self.app(scope, receive, send)
        else:
            books.record(scope["path"], status, (time.time() - started) * 1000.0)
