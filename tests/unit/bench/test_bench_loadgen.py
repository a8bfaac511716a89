"""The generator is open-loop: a slow server shows up as latency, never as a slower schedule."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from aiohttp import web

from app.bench.client_process import run_in_subprocess
from app.bench.loadgen import LoadSpec, run_open_loop
from app.bench.payloads import Payloads
from tests.unit.bench.conftest import StartServer

OK_BODY = {"prob_up": 0.5}

RESULT_KEYS = {
    "label", "path", "offered_rps", "duration_s", "warmup_s", "connections",
    "rows_per_request", "requests", "achieved_rps", "predictions_per_s", "latency_ms",
    "errors", "generator", "server", "timeline",
}  # fmt: skip
GENERATOR_KEYS = {
    "kept_up", "send_lag_ms", "late_sends_over_10ms", "sent_rps", "drain_s", "cpu_s",
    "cpu_pct_of_core", "cpu_us_per_request", "peak_rss_mb", "warning",
}  # fmt: skip


def _spec(url: str, **kw: Any) -> LoadSpec:
    opts: dict[str, Any] = {"path": "/predict", "rate": 100.0, "duration_s": 1.0, "timeout_s": 10.0}
    opts.update(kw)
    return LoadSpec(base_url=url, **opts)


async def test_slow_server_grows_latency_not_the_send_schedule(local_server: StartServer) -> None:
    # One request at a time, 40 ms each: the server can do 25 req/s and is offered 50.
    lock = asyncio.Lock()

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        async with lock:
            await asyncio.sleep(0.04)
        return web.json_response(OK_BODY)

    url = await local_server(handler)
    result = await run_open_loop(_spec(url, rate=50.0, duration_s=1.0), [b"{}"])

    assert result["requests"]["scheduled"] == 50
    assert result["requests"]["ok"] == 50
    gen = result["generator"]
    # Every request left on time: the schedule did not wait for the server (the bound
    # leaves room for a busy CI box; the stall below is twenty times longer)...
    assert gen["send_lag_ms"]["p99"] < 50.0
    assert gen["sent_rps"] == pytest.approx(50.0, rel=0.1)
    # ...so the backlog is latency: the last requests waited ~1 s behind the others. A
    # closed-loop client would have reported ~40 ms here and sent only 25 requests.
    lat = result["latency_ms"]
    assert lat["p50"] > 300.0
    assert lat["max"] > 800.0
    assert result["achieved_rps"] < 35.0


async def test_fast_server_meets_offered_rate_with_low_latency(local_server: StartServer) -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(OK_BODY)

    url = await local_server(handler)
    result = await run_open_loop(_spec(url, rate=200.0, duration_s=1.0, warmup_s=0.2), [b"{}"])

    assert set(result) == RESULT_KEYS
    assert set(result["generator"]) == GENERATOR_KEYS
    assert result["requests"] == {"scheduled": 200, "ok": 200, "errors": 0}
    assert result["achieved_rps"] == pytest.approx(200.0, rel=0.1)
    assert result["latency_ms"]["p50"] < 50.0
    json.dumps(result)  # the result is plain JSON


async def test_a_stalled_client_is_reported_not_hidden(local_server: StartServer) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(OK_BODY)

    url = await local_server(handler)
    loop = asyncio.get_running_loop()
    # Block the generator's own event loop for 150 ms mid-run (a client GC pause, say).
    loop.call_later(0.5, time.sleep, 0.15)
    result = await run_open_loop(_spec(url, rate=100.0, duration_s=1.0), [b"{}"])

    gen = result["generator"]
    assert gen["send_lag_ms"]["max"] >= 100.0
    assert gen["late_sends_over_10ms"] >= 5
    # The requests due during the stall still count from their scheduled time.
    assert result["latency_ms"]["max"] >= 100.0


async def test_errors_are_counted_by_status(local_server: StartServer) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls % 2:
            return web.json_response({"error": "busy"}, status=503)
        if calls % 4 == 0:
            return web.json_response({"unexpected": True})
        return web.json_response(OK_BODY)

    url = await local_server(handler)
    result = await run_open_loop(_spec(url, rate=100.0, duration_s=0.4), [b"{}"])

    errors = result["errors"]
    assert errors["by_status"] == {"503": 20}
    assert errors["bad_body"] == 10
    assert result["requests"]["ok"] == 10
    assert errors["total"] == 30


async def test_connection_errors_are_counted_by_kind() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await run_open_loop(_spec(f"http://127.0.0.1:{port}", duration_s=0.2), [b"{}"])
    assert result["requests"]["ok"] == 0
    assert sum(result["errors"]["connection"].values()) == 20
    assert result["latency_ms"]["p50"] is None


async def test_stats_are_read_before_and_after_the_window(local_server: StartServer) -> None:
    seen = {"n": 0}

    async def handler(request: web.Request) -> web.Response:
        seen["n"] += 1
        return web.json_response(OK_BODY)

    async def stats(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer tok"
        n = seen["n"]
        return web.json_response(
            {"batch_size": {"distribution": {"1": n}},
             "queue": {"submitted": n, "gateway_batches": n, "gateway_rows": n}}
        )  # fmt: skip

    url = await local_server(handler, stats=stats)
    spec = _spec(url, rate=100.0, duration_s=0.5, warmup_s=0.3, stats_token="tok")
    result = await run_open_loop(spec, [b"{}"])
    window = result["server"]["stats"]
    # Roughly the 50 measured requests (warm-up stragglers may land on either side).
    assert 40 <= window["batch_size"]["count"] <= 60
    assert window["queue"]["mean_gateway_batch"] == pytest.approx(1.0)


async def test_subprocess_run_returns_the_same_schema(local_server: StartServer) -> None:
    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"prob_up": 0.5, "echo": body["i"]})

    url = await local_server(handler)
    payloads = Payloads("/predict", tuple(json.dumps({"i": i}).encode() for i in range(5)), 1)
    spec = _spec(url, rate=50.0, duration_s=0.5, api_key="k" * 43)
    # The child blocks nothing here: the server keeps answering in this event loop.
    result = await asyncio.to_thread(run_in_subprocess, spec, payloads)
    assert set(result) == RESULT_KEYS
    assert result["requests"]["ok"] == 25
    assert isinstance(result["generator"]["uvloop"], bool)
    assert 0 < result["generator"]["peak_rss_mb"] < 150  # not the forking parent's


def test_spec_round_trips_through_json() -> None:
    spec = _spec("https://x", watch_pids={12: "replica:gateway"}, api_key="secret")
    assert LoadSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_spec_refuses_a_non_positive_rate() -> None:
    with pytest.raises(ValueError, match="positive"):
        _spec("http://x", rate=0.0)
