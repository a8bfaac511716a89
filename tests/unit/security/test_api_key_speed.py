"""Micro-benchmark: what an API-key check costs on the hot path. PRINTS its numbers.

Run: .venv/bin/pytest tests/unit/security/test_api_key_speed.py -q -s
Three measurements over the same key, 5000 calls each after a warm-up:
  1. ``ApiKeyStore.verify`` alone;
  2. the ``authenticate`` dependency called directly (header lookup, verify, principal,
     scope check, token bucket);
  3. a full in-process ASGI request to a route guarded by ``PredictPrincipal`` against an
     unguarded route of the same app (same middlewares), interleaved in one run: the
     difference of the medians is what auth adds to a request.
Only a generous bound is asserted (median verify < 0.2 ms, added cost < 1 ms): the numbers
are for reading, not for a flaky timing gate.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.security import SecurityScopes
from starlette.requests import Request
from starlette.types import Message

from app.api.errors import register_exception_handlers
from app.security.api_keys import ApiKeyStore
from app.security.dependencies import PredictPrincipal, authenticate
from app.security.hardening import install_security
from tests.support.security_app import write_security_material

CALLS = 5000
WARMUP = 500


def summary(samples_ns: list[int]) -> tuple[float, float]:
    """(median, p99) in microseconds."""
    ordered = sorted(samples_ns)
    return statistics.median(ordered) / 1000, ordered[int(len(ordered) * 0.99) - 1] / 1000


def timed(fn: Callable[[], Any], n: int) -> list[int]:
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return samples


def bench_app(tmp_path: Path) -> tuple[FastAPI, str, ApiKeyStore]:
    material = write_security_material(tmp_path)
    store = ApiKeyStore(material.config.security.authentication.api_key_store_path)
    _, key = store.create(owner="bench", scopes=["model:predict"])
    app = FastAPI()
    register_exception_handlers(app)
    install_security(app, material.config)

    @app.get("/open")
    async def open_route() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/guarded")
    async def guarded_route(principal: PredictPrincipal) -> dict[str, bool]:
        return {"ok": True}

    return app, key, store


def http_scope(app: FastAPI, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("bench", 443),
        "app": app,
        "state": {},
    }


async def asgi_call(app: FastAPI, scope: dict[str, Any]) -> int:
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope, headers=list(scope["headers"]), state={}), receive, send)
    return status


async def timed_async(fn: Callable[[], Awaitable[Any]], n: int) -> list[int]:
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        await fn()
        samples.append(time.perf_counter_ns() - start)
    return samples


async def test_api_key_check_costs_microseconds_when_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, key, _ = bench_app(tmp_path)
    store = app.state.security.api_keys
    assert store.verify(key) is not None

    timed(lambda: store.verify(key), WARMUP)
    verify_med, verify_p99 = summary(timed(lambda: store.verify(key), CALLS))

    dep_scope = http_scope(app, "/guarded", [(b"x-api-key", key.encode())])
    scopes = SecurityScopes(scopes=["model:predict"])

    async def dependency_once() -> None:
        await authenticate(Request(dict(dep_scope, state={})), scopes)

    await timed_async(dependency_once, WARMUP)
    dep_med, dep_p99 = summary(await timed_async(dependency_once, CALLS))

    open_scope = http_scope(app, "/open", [(b"x-api-key", key.encode())])
    guarded_scope = http_scope(app, "/guarded", [(b"x-api-key", key.encode())])
    assert await asgi_call(app, open_scope) == 200
    assert await asgi_call(app, guarded_scope) == 200
    open_ns: list[int] = []
    guarded_ns: list[int] = []
    for i in range(WARMUP + CALLS):  # interleaved, so drift hits both alike
        for scope, sink in ((open_scope, open_ns), (guarded_scope, guarded_ns)):
            start = time.perf_counter_ns()
            await asgi_call(app, scope)
            if i >= WARMUP:
                sink.append(time.perf_counter_ns() - start)
    open_med, open_p99 = summary(open_ns)
    guarded_med, guarded_p99 = summary(guarded_ns)
    added = guarded_med - open_med

    with capsys.disabled():
        print(
            f"\nAPI-key check, {CALLS} calls each, Python {platform.python_version()} "
            f"on {platform.machine()}:\n"
            f"  ApiKeyStore.verify                  median {verify_med:8.1f} us   "
            f"p99 {verify_p99:8.1f} us\n"
            f"  authenticate() dependency           median {dep_med:8.1f} us   "
            f"p99 {dep_p99:8.1f} us\n"
            f"  GET /open    (no auth, full ASGI)   median {open_med:8.1f} us   "
            f"p99 {open_p99:8.1f} us\n"
            f"  GET /guarded (X-API-Key, full ASGI) median {guarded_med:8.1f} us   "
            f"p99 {guarded_p99:8.1f} us\n"
            f"  => auth adds per request            median {added:8.1f} us"
        )
    assert verify_med < 200
    assert added < 1000
