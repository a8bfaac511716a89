"""The default generator: open loop on raw sockets, latency from the due time, its CPU."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp import web

from app.bench.generator import generator_cpu, merge, run_load
from app.bench.http1 import encode_requests, ended_by_close, parse_response
from app.bench.loadgen import LoadSpec, Recorder, timeline
from app.bench.payloads import Payloads
from app.bench.sender import IDLE_REUSE_S, Sender, wait_until
from app.bench.server_process import KEEP_ALIVE_S
from tests.unit.bench.conftest import Handler, StartServer


def _plan(url: str, **kw: Any) -> dict[str, Any]:
    plan = {
        "base_url": url, "path": "/predict", "ca_file": None, "timeout_s": 10.0,
        "expect": "prob_up", "rate": 50.0, "n": 20, "n_warm": 0, "arrivals": "even",
        "seed": 0, "sender": 0, "senders": 1, "connections": 1, "max_connections": 16,
    }  # fmt: skip
    plan.update(kw)
    return plan


def _bodies(n: int) -> list[bytes]:
    return [json.dumps({"i": i}).encode() for i in range(n)]


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """Each ``time.sleep`` of the sender module, as (when it was called, seconds)."""
    calls: list[tuple[float, float]] = []
    real_sleep = time.sleep

    def spy(seconds: float) -> None:
        calls.append((time.monotonic(), seconds))
        real_sleep(seconds)

    monkeypatch.setattr("app.bench.sender.time.sleep", spy)
    return calls


async def _answer(request: web.Request) -> web.Response:
    """A handler that answers every request at once."""
    await request.read()
    return web.json_response({"prob_up": 0.5})


def _ends(sleeps: list[tuple[float, float]]) -> list[float]:
    """When each recorded sleep was due to end."""
    return [at + seconds for at, seconds in sleeps]


def _answer_late(slow: int, delay_s: float) -> Handler:
    """A handler that answers request ``slow`` (its body's ``i``) after ``delay_s``, the
    rest at once."""

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        if body["i"] == slow:
            await asyncio.sleep(delay_s)
        return web.json_response({"prob_up": 0.5})

    return handler


async def test_a_late_reply_delays_only_its_own_request(local_server: StartServer) -> None:
    # Request 5's reply takes 300 ms; requests are due every 20 ms on one connection.
    url = await local_server(_answer_late(5, 0.3))
    host = url.removeprefix("http://")
    sender = Sender(_plan(url), encode_requests(host, "/predict", _bodies(20), None))
    t0 = time.monotonic() + 0.05
    out = await asyncio.to_thread(sender.run, t0)

    assert out["outcome"] == [200] * 20
    lat = out["latency"]
    # The delayed one counts its wait, from its scheduled time.
    assert lat[5] >= 0.3
    # The next sends went out on time, on another connection, and were not held up.
    assert max(out["lag"]) < 0.1
    assert max(lat[6:]) < 0.2
    assert sorted(lat)[10] < 0.1  # the typical request is quick
    assert out["connections_opened"] >= 2
    # Latency counts from the due time: the delayed reply ended ~300 ms after t0 + 5/50.
    assert out["done_at"][5] - (t0 + 5 / 50.0) == pytest.approx(lat[5], abs=1e-4)


async def test_a_stalled_server_shows_as_latency_of_every_request_due_meanwhile(
    local_server: StartServer,
) -> None:
    gate = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        await gate.wait()  # nothing is answered for the first 400 ms of the schedule
        return web.json_response({"prob_up": 0.5})

    url = await local_server(handler)
    host = url.removeprefix("http://")
    plan = _plan(url, n=20, connections=2, max_connections=64)
    sender = Sender(plan, encode_requests(host, "/predict", _bodies(1), None))
    t0 = time.monotonic() + 0.05
    # From the schedule's start, not the test's: the server's start-up must not eat into it.
    asyncio.get_running_loop().call_later(t0 + 0.4 - time.monotonic(), gate.set)
    out = await asyncio.to_thread(sender.run, t0)
    assert out["outcome"] == [200] * 20
    assert max(out["lag"]) < 0.1  # the schedule held
    assert out["latency"][0] >= 0.35  # due at 0, answered after the stall
    assert out["latency"][15] < 0.2  # due after the stall: quick


async def test_an_idle_sender_waits_for_its_next_send_on_the_precise_timer(
    local_server: StartServer, sleeps: list[tuple[float, float]]
) -> None:
    # 2 req/s: each reply is back long before the next send is due. epoll_wait rounds its
    # timeout up to the millisecond and may fire 0.1% late (1 ms on a 1 s gap), which at 1
    # req/s put the sends 2.8 ms late; with nothing in flight the sender sleeps instead.
    url = await local_server(_answer)
    host = url.removeprefix("http://")
    sender = Sender(_plan(url, rate=2.0, n=4), encode_requests(host, "/predict", _bodies(1), None))
    t0 = time.monotonic() + 0.05
    out = await asyncio.to_thread(sender.run, t0)
    assert out["outcome"] == [200] * 4
    # The three 0.5 s gaps, less each reply's few ms, were slept, not polled.
    assert len(sleeps) >= 3
    assert sum(seconds for _, seconds in sleeps) > 1.2
    assert max(out["lag"]) < 0.1


def test_wait_until_sleeps_short_of_the_due_time_and_spins_the_rest(
    sleeps: list[tuple[float, float]],
) -> None:
    # A timer fires late on a VM that halts idle vCPUs: the sleep must end spin_s early,
    # and the call must still never return before the due time.
    polled: list[float] = []

    def poll() -> None:
        polled.append(time.monotonic())

    due = time.monotonic() + 0.05
    wait_until(due, 0.01, poll)
    assert time.monotonic() >= due
    assert len(sleeps) == 1
    assert _ends(sleeps)[0] <= due - 0.01 + 1e-4
    # The spin polls on every turn (a spin in user space alone made the next system
    # call slow): from the sleep's end to the due time.
    assert len(polled) > 10
    assert polled[0] <= due - 0.005
    assert polled[-1] < due + 1e-4  # and stops at the due time

    sleeps.clear()
    polled.clear()
    due = time.monotonic() + 0.05
    wait_until(due, 0.0, poll)  # sleep only: the whole wait on the timer
    assert time.monotonic() >= due
    assert len(sleeps) == 1
    assert _ends(sleeps)[0] == pytest.approx(due, abs=1e-3)
    assert len(polled) <= 1  # at most a turn for a timer that fired a hair early

    sleeps.clear()
    due = time.monotonic() + 0.005
    wait_until(due, 0.01)  # less left than the spin: no sleep at all
    assert time.monotonic() >= due
    assert sleeps == []


async def test_an_idle_sender_spins_only_before_a_long_wait(
    local_server: StartServer, sleeps: list[tuple[float, float]]
) -> None:
    # 4 req/s: 250 ms gaps, over SPIN_FROM_S, so each sleep ends spin_ms before its send;
    # at 50 req/s (20 ms gaps) the sender sleeps to the due time, spinning never.
    url = await local_server(_answer)
    host = url.removeprefix("http://")
    requests = encode_requests(host, "/predict", _bodies(1), None)
    for rate, spin_ms, early in ((4.0, 20.0, 0.02), (4.0, 0.0, 0.0), (50.0, 20.0, 0.0)):
        sleeps.clear()
        sender = Sender(_plan(url, rate=rate, n=4, spin_ms=spin_ms), requests)
        out = await asyncio.to_thread(sender.run, time.monotonic() + 0.05)
        assert out["outcome"] == [200] * 4
        assert min(out["lag"]) >= 0.0
        assert max(out["lag"]) < 0.1
        due = out["done_at"][0] - out["latency"][0]  # request 0's due time, t0
        dues = [due + k / rate for k in range(1, 4)]
        # Each sleep with nothing in flight ends at a send's due time less the spin.
        ends = _ends(sleeps)
        woke = [min(dues, key=lambda d, e=e: abs(d - e)) - e for e in ends]
        assert len(woke) >= 3, (rate, spin_ms, ends)
        assert all(w == pytest.approx(early, abs=2e-3) for w in woke), (rate, spin_ms, woke)


async def test_a_slow_new_connection_holds_up_no_send_and_no_reply(
    local_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Request 0 holds the one connection for 200 ms; the requests due meanwhile need new
    # ones, and each takes 300 ms to open (a busy server slow to finish a TLS handshake).
    # Opened on the loop, the first would stall it for those 300 ms: reply 0 unread and
    # every send due late. Off the loop, request 1 goes out on connection 0 as soon as
    # its reply is in.
    url = await local_server(_answer_late(0, 0.2))
    host = url.removeprefix("http://")
    connect = Sender._connect

    def slow_connect(self: Sender) -> object:
        time.sleep(0.3)
        return connect(self)

    sender = Sender(_plan(url, n=10), encode_requests(host, "/predict", _bodies(10), None))
    monkeypatch.setattr(Sender, "_connect", slow_connect)  # after the pool opened
    out = await asyncio.to_thread(sender.run, time.monotonic() + 0.05)
    assert out["outcome"] == [200] * 10
    assert max(out["lag"]) < 0.1  # every send was reached on time
    assert out["latency"][0] >= 0.2
    assert out["latency"][1] < 0.28  # waited for connection 0, not for a new one


async def _closes_on_reuse_after(idle_s: float) -> tuple[str, asyncio.Server]:
    """A server that answers every request, except one arriving on a connection idle for
    ``idle_s`` or more: that connection it closes unanswered, as a server's keep-alive
    timer firing just as the request comes in would."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        last = time.monotonic()
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if time.monotonic() - last >= idle_s:
                    return
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                body = b'{"prob_up":0.5}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                last = time.monotonic()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server


async def test_a_connection_idle_past_the_reuse_bound_is_replaced_not_raced() -> None:
    # 2 req/s, a reply in well under a ms: each connection is idle ~0.5 s before its
    # next request, where this server has just closed it. A sender that reuses it loses
    # the request; one whose bound is under the server's opens a new connection.
    url, server = await _closes_on_reuse_after(0.3)
    host = url.removeprefix("http://")
    try:
        outcomes = {}
        for bound in (0.1, 60.0):
            plan = _plan(url, rate=2.0, n=4, idle_reuse_s=bound)
            sender = Sender(plan, encode_requests(host, "/predict", _bodies(1), None))
            outcomes[bound] = await asyncio.to_thread(sender.run, time.monotonic() + 0.05)
    finally:
        server.close()
        await server.wait_closed()
    assert outcomes[0.1]["outcome"] == [200] * 4
    assert outcomes[0.1]["connections_opened"] >= 4  # one per request
    # The race this guards against, shown by a bound above the server's.
    assert "ServerDisconnectedError" in outcomes[60.0]["outcome"]


def test_responses_are_parsed_by_length_and_by_chunks() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    full = head + b"content-length: 5\r\n\r\nhello"
    assert parse_response(full + b"HTTP/1.1") == (200, b"hello", len(full), False)
    assert parse_response(full[:-1]) is None
    chunked = head + b"Transfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
    assert parse_response(chunked) == (200, b"hello", len(chunked), False)
    assert parse_response(chunked[:-2]) is None
    closing = b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    assert parse_response(closing) == (503, b"", len(closing), True)
    # Only a response with neither a length nor chunks is complete when the connection ends.
    assert ended_by_close(head + b"\r\nhello") == (200, b"hello")
    assert ended_by_close(full[:-1]) is None
    assert ended_by_close(chunked[:-2]) is None


def test_requests_are_encoded_once_with_the_key_and_length() -> None:
    [req] = encode_requests("h:1", "/predict", [b'{"a":1}'], "k" * 8)
    assert req.startswith(b"POST /predict HTTP/1.1\r\nHost: h:1\r\n")
    assert b"\r\nX-API-Key: kkkkkkkk\r\n" in req
    assert req.endswith(b"Content-Length: 7\r\n\r\n" + b'{"a":1}')


def test_generator_cpu_is_the_senders_cpu_over_the_measured_requests() -> None:
    senders = [{"cpu_s": 0.03, "measured_sent": 500}, {"cpu_s": 0.05, "measured_sent": 500}]
    cpu = generator_cpu(senders, seconds=10.0)
    assert cpu["cpu_s"] == pytest.approx(0.08)
    assert cpu["cpu_us_per_request"] == pytest.approx(80.0)  # 0.08 s / 1000 requests
    assert cpu["cpu_pct_of_core"] == pytest.approx(0.8)
    assert cpu["per_sender_cpu_s"] == [0.03, 0.05]
    assert generator_cpu([{"cpu_s": 0.0, "measured_sent": 0}], 1.0)["cpu_us_per_request"] is None


def test_merge_puts_each_senders_share_back_in_schedule_order() -> None:
    def out(values: list[int]) -> dict[str, Any]:
        return {"lag": [0.0] * len(values), "latency": [v / 1000 for v in values],
                "done_at": [0.0] * len(values), "outcome": [200] * len(values)}  # fmt: skip

    rec = merge(5, [out([0, 2, 4]), out([1, 3])])
    assert rec.latency == [0.0, 0.001, 0.002, 0.003, 0.004]


async def test_run_load_from_two_sender_processes(local_server: StartServer) -> None:
    seen: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((await request.json())["i"])
        return web.json_response({"prob_up": 0.5})

    url = await local_server(handler)
    payloads = Payloads("/predict", tuple(_bodies(1000)), 1)
    spec = LoadSpec(
        base_url=url, path="/predict", rate=100.0, duration_s=0.5, warmup_s=0.2,
        timeout_s=10.0, senders=2, connections=4,
    )  # fmt: skip
    result = await asyncio.to_thread(run_load, spec, payloads)

    assert result["requests"] == {"scheduled": 50, "ok": 50, "errors": 0}
    assert sorted(seen) == list(range(70))  # warm-up + measured, each body once
    gen = result["generator"]
    assert gen["instrument"] == "pysock"
    assert gen["senders"] == 2
    assert len(gen["per_sender_cpu_s"]) == 2
    # cpu_s is rounded to the millisecond: over 50 requests that alone is up to 10 us each.
    assert gen["cpu_us_per_request"] == pytest.approx(1e6 * gen["cpu_s"] / 50, abs=12)
    names = {p["name"] for p in result["server"]["processes"]}
    assert names == {"generator:0", "generator:1"}  # sampled from /proc too
    box = result["server"]["box"]  # the whole machine over the same window
    watched = sum(p["cpu_pct_of_core"] for p in result["server"]["processes"])
    assert box["busy_pct_of_core"] >= box["processes_pct_of_core"] > 0
    unwatched = box["processes_pct_of_core"] - watched
    assert box["unwatched_pct_of_core"] == pytest.approx(unwatched, abs=0.2)
    json.dumps(result)


async def test_a_run_keeps_its_connections_for_its_reuse_bound(local_server: StartServer) -> None:
    # The senders reuse their warmest connection first, so the rest sit idle. Under a
    # short bound they are closed and the run keeps opening new ones (each a handshake
    # for the server: session 30's stalls); under the default it keeps the ones it has.
    url = await local_server(_answer)
    payloads = Payloads("/predict", tuple(_bodies(40)), 1)
    opened = {}
    for bound in (0.005, IDLE_REUSE_S):
        spec = LoadSpec(
            base_url=url, path="/predict", rate=50.0, duration_s=0.5, timeout_s=10.0,
            senders=1, connections=2, idle_reuse_s=bound,
        )  # fmt: skip
        result = await asyncio.to_thread(run_load, spec, payloads)
        assert result["requests"]["ok"] == 25
        assert result["generator"]["idle_reuse_s"] == bound
        opened[bound] = result["generator"]["connections_opened"]
    assert opened[IDLE_REUSE_S] == 2
    assert opened[0.005] >= 20  # one per request, as the 20 ms gaps outlast the bound


def test_the_reuse_bound_sits_under_every_bench_servers_keep_alive() -> None:
    from ray.serve._private.constants import DEFAULT_UVICORN_KEEP_ALIVE_TIMEOUT_S

    from app.config import ServiceConfig
    from app.serve.options import http_options

    # The gateway keeps Ray's default (nothing overrides it); the hello and the peer the same.
    assert "keep_alive_timeout_s" not in http_options(ServiceConfig())
    assert KEEP_ALIVE_S == DEFAULT_UVICORN_KEEP_ALIVE_TIMEOUT_S
    assert 30 <= IDLE_REUSE_S < KEEP_ALIVE_S  # kept through a step, closed before the server


def test_the_hello_keeps_idle_connections_as_the_gateway_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    from app.bench import hello

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    assert hello.main(["--port", "0"]) == 0
    assert seen["timeout_keep_alive"] == KEEP_ALIVE_S


async def test_refused_connections_are_counted_per_request() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    sender = Sender(_plan(url, n=10), encode_requests("x", "/predict", _bodies(1), None))
    out = await asyncio.to_thread(sender.run, time.monotonic() + 0.02)
    assert out["open_error"] == "ConnectionRefusedError"
    assert out["outcome"] == ["ConnectionRefusedError"] * 10


async def test_a_response_cut_short_by_the_server_closing_is_an_error() -> None:
    # The head promises 40 bytes; the marker arrives, the rest never does: the connection
    # ends mid-body. Only a response without a length may end with its connection.
    async def truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 40\r\n\r\n{"prob_up": 0.5')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(truncate, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    try:
        sender = Sender(_plan(url, n=3), encode_requests("x", "/predict", _bodies(1), None))
        out = await asyncio.to_thread(sender.run, time.monotonic() + 0.02)
    finally:
        server.close()
        await server.wait_closed()
    assert out["outcome"] == ["ServerDisconnectedError"] * 3


def test_the_timeline_puts_each_request_in_the_second_it_was_due() -> None:
    rec = Recorder(6)
    # (due s into the window, latency s, outcome); the first is warm-up, the last unanswered
    cases = [(-0.5, 0.9, 200), (0.1, 0.004, 200), (0.9, 0.2, 200), (1.2, 0.003, 429),
             (1.5, 0.006, 200), (2.0, -1.0, "incomplete")]  # fmt: skip
    start = 1000.0
    for i, (due, latency, outcome) in enumerate(cases):
        rec.latency[i] = latency
        rec.done_at[i] = start + due + latency if latency >= 0 else 0.0
        rec.outcome[i] = outcome
    assert timeline(rec, range(1, 6), start) == [
        {"t": 0, "n": 2, "err": 0, "p99": 200.0, "max": 200.0},  # by due time, not done
        {"t": 1, "n": 2, "err": 1, "p99": 6.0, "max": 6.0},
    ]


async def test_a_stall_shows_in_the_second_it_came(local_server: StartServer) -> None:
    async def handler(request: web.Request) -> web.Response:
        if 130 <= (await request.json())["i"] < 140:  # due 1.1-1.2 s into the window
            await asyncio.sleep(0.25)
        return web.json_response({"prob_up": 0.5})

    url = await local_server(handler)
    spec = LoadSpec(
        base_url=url, path="/predict", rate=100.0, duration_s=2.0, warmup_s=0.2,
        timeout_s=10.0, senders=1, connections=4,
    )  # fmt: skip
    result = await asyncio.to_thread(run_load, spec, Payloads("/predict", tuple(_bodies(300)), 1))
    seconds = {s["t"]: s for s in result["timeline"]}
    assert sorted(seconds) == [0, 1]
    assert sum(s["n"] for s in seconds.values()) == 200
    assert seconds[1]["max"] >= 250.0
    assert seconds[0]["max"] < 100.0
