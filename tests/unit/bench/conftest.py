"""A tiny aiohttp server on loopback whose behaviour each test chooses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
StartServer = Callable[..., Awaitable[str]]


@pytest.fixture
async def local_server() -> AsyncIterator[StartServer]:
    """``await local_server(handler)`` serves ``POST /predict`` (and ``GET /stats`` when
    given) on 127.0.0.1 in the test's event loop and returns the base URL."""
    runners: list[web.AppRunner] = []

    async def start(
        handler: Handler, *, stats: Handler | None = None, ssl_context: object = None
    ) -> str:
        app = web.Application()
        app.router.add_post("/predict", handler)
        if stats is not None:
            app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)  # type: ignore[arg-type]
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        scheme = "https" if ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()
