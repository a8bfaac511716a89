"""The in-process CPU-per-request harness (app.bench.app_cost) measures what it says."""

from __future__ import annotations

import time
from typing import Any

from app.bench.app_cost import call, measure

BURN_S = 0.0004


async def _burning_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    message = await receive()
    deadline = time.process_time() + BURN_S  # CPU, not wall time: sleeping would not count
    while time.process_time() < deadline:
        pass
    status = 200 if message["body"] == b"ok" else 422
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def test_call_returns_the_apps_status() -> None:
    assert await call(_burning_app, "POST", "/x", [], b"ok") == 200
    assert await call(_burning_app, "POST", "/x", [], b"bad") == 422


async def test_measure_reports_the_cpu_each_request_burns() -> None:
    out = await measure(
        _burning_app,
        method="POST",
        path="/x",
        headers=[],
        bodies=[b"ok", b"bad"],
        requests=40,
        concurrency=4,
        repeats=2,
    )
    assert out["statuses"] == [200, 422]
    assert len(out["cpu_us_per_request"]) == 2
    # Each request burns 400 us of CPU; the harness adds a little on top, never less.
    assert BURN_S * 1e6 <= out["min_cpu_us_per_request"] < BURN_S * 1e6 * 5
