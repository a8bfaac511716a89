"""The default load generator: a few lean sender processes on one shared schedule.

Why this and not h2load, and why not the older aiohttp client (``--instrument aiohttp``):

- h2load (Debian's nghttp2-client, C and libev) paces each connection by itself and
  starts every connection of a process together (``-c 100 --rps 2`` is a burst of 100
  every 500 ms); a slow reply delays that connection's next send (coordinated
  omission); and it prints min/mean/max/sd of request times but no percentiles. It
  cannot give an open-loop p99 on an even or Poisson schedule, so it is not an option
  for these targets however little it costs.
- Smoke against the bare TLS "hello" app (:mod:`app.bench.hello`), 3 s per rate, on the
  shared 2-core box (load1 2-3: indicative only): this generator 250-320 us of CPU per
  request at 200-400 req/s; aiohttp on uvloop 400-700 us; h2load ``--h1 -c 8`` 110-125
  us (start-up and handshakes included), bursty and without percentiles. So the C
  client is ~2.5x cheaper per request, and of the two open-loop clients that report
  every percentile this one costs ~1.5-2x less than aiohttp: it is the default. The
  cost is printed beside every row, and ``--calibrate`` measures it at each rate.

How: :mod:`app.bench.sender` processes (``LoadSpec.senders``, default 2), each a bare
``selectors`` loop over non-blocking keep-alive TLS sockets with pre-encoded requests.
Request ``k`` of the global schedule (:mod:`app.bench.schedule`) goes to sender
``k % senders``, so the aggregate is one even (or Poisson) stream. All senders start on
one ``time.monotonic()`` instant chosen after all have connected. Latency counts from
each request's due time; a sender never waits for a reply before its next send.

The generator's CPU is each sender's ``getrusage`` from its first measured send to the
end of its drain, summed and divided by the measured requests
(:func:`generator_cpu`); the sender pids are also sampled from ``/proc`` with the
server's processes.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.bench import procs
from app.bench.loadgen import LoadSpec, Recorder, build_result
from app.bench.payloads import Payloads
from app.bench.schedule import offsets, share
from app.bench.stats import run_rows, server_window

INSTRUMENT = "pysock"


def fetch_stats(spec: LoadSpec, recent: int | None = None) -> dict[str, Any]:
    """``GET /stats`` with the stats token, on a connection of its own."""
    return fetch_stats_at(spec.base_url, spec.ca_file, spec.stats_token, recent)


def fetch_stats_at(
    base_url: str, ca_file: str | None, stats_token: str | None, recent: int | None = None
) -> dict[str, Any]:
    """``GET /stats`` at ``base_url`` with ``stats_token`` (its windows' ``recent`` newest
    rows only, when given); ``{"error": ...}`` if it fails."""
    if not stats_token:
        return {"error": "no stats token"}
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port
    conn: http.client.HTTPConnection
    if url.scheme == "https":
        ctx = ssl.create_default_context(cafile=ca_file) if ca_file else None
        conn = http.client.HTTPSConnection(host, port, timeout=30, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        path = "/stats" if recent is None else f"/stats?recent={recent}"
        conn.request("GET", path, headers={"Authorization": f"Bearer {stats_token}"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            return {"error": f"HTTP {resp.status}"}
        body: dict[str, Any] = json.loads(data)
        return body
    except (OSError, ValueError) as exc:
        return {"error": type(exc).__name__}
    finally:
        conn.close()


def generator_cpu(senders: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """The generator's CPU over the measured window, all senders together."""
    cpu = sum(float(s["cpu_s"]) for s in senders)
    sent = sum(int(s["measured_sent"]) for s in senders)
    return {
        "cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(1e6 * cpu / sent, 1) if sent else None,
        "cpu_pct_of_core": round(100.0 * cpu / seconds, 1) if seconds > 0 else None,
        "per_sender_cpu_s": [round(float(s["cpu_s"]), 3) for s in senders],
    }


def merge(n: int, senders: list[dict[str, Any]]) -> Recorder:
    """One recorder for the whole schedule from each sender's share."""
    rec = Recorder(n)
    count = len(senders)
    for s, out in enumerate(senders):
        for j, k in enumerate(share(n, s, count)):
            rec.lag[k] = out["lag"][j]
            rec.latency[k] = out["latency"][j]
            rec.done_at[k] = out["done_at"][j]
            rec.outcome[k] = out["outcome"][j]
    return rec


def plan_for(spec: LoadSpec, sender: int, n: int, n_warm: int) -> dict[str, Any]:
    per = -(-spec.connections // spec.senders)  # ceil
    return {
        "base_url": spec.base_url,
        "path": spec.path,
        "ca_file": spec.ca_file,
        "api_key": spec.api_key,
        "timeout_s": spec.timeout_s,
        "expect": spec.expect,
        "rate": spec.rate,
        "n": n,
        "n_warm": n_warm,
        "arrivals": spec.arrivals,
        "seed": spec.seed,
        "sender": sender,
        "senders": spec.senders,
        "connections": per,
        "max_connections": max(per, spec.max_connections // spec.senders),
        "nice": spec.generator_nice,
        "spin_ms": spec.generator_spin_ms,
        "idle_reuse_s": spec.idle_reuse_s,
    }


def _start(spec: LoadSpec, bodies: Path, n: int, n_warm: int) -> list[subprocess.Popen[str]]:
    children = []
    argv = [sys.executable, "-m", "app.bench.sender", "--bodies", str(bodies)]
    for s in range(spec.senders):
        child = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert child.stdin is not None
        # Secrets travel on stdin, never on a command line that ps shows.
        child.stdin.write(json.dumps(plan_for(spec, s, n, n_warm)) + "\n")
        child.stdin.flush()
        children.append(child)
    return children


def _fail(children: list[subprocess.Popen[str]], what: str) -> RuntimeError:
    errors = []
    for child in children:
        if child.poll() is None:
            child.kill()
        _, err = child.communicate()
        if err and err.strip():
            errors.append(err.strip()[-1500:])
    return RuntimeError(f"load generator {what}: {' | '.join(errors) or 'no message'}")


def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def run_load(spec: LoadSpec, payloads: Payloads) -> dict[str, Any]:
    """Offer ``spec.rate`` for warm-up + duration from ``spec.senders`` processes."""
    n_warm = round(spec.warmup_s * spec.rate)
    n = n_warm + max(1, round(spec.duration_s * spec.rate))
    due = offsets(spec.rate, n, spec.arrivals, spec.seed)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="cnnlstm-bench-") as tmp:
        bodies = Path(tmp) / "bodies.jsonl"
        bodies.write_bytes(b"\n".join(payloads.bodies))  # orjson never writes a newline
        children = _start(spec, bodies, n, n_warm)
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise _fail(children, "did not start")
        sender_pids = {c.pid: f"generator:{i}" for i, c in enumerate(children)}
        watch = {**spec.watch_pids, **sender_pids}
        t0 = time.monotonic() + 0.2
        for child in children:
            assert child.stdin is not None
            child.stdin.write(f"{t0!r}\n")
            child.stdin.close()
            child.stdin = None  # communicate() below must not flush it again
        window_start = t0 + due[min(n_warm, n - 1)]
        _sleep_until(window_start)
        procs_before, box_before = procs.snapshot(watch), procs.box_sample()
        stats_before = fetch_stats(spec)
        _sleep_until(t0 + due[-1])
        procs_after, box_after = procs.snapshot(watch), procs.box_sample()
        outs = []
        limit = due[-1] + 2 * spec.timeout_s + 60
        for child in children:
            try:
                out, err = child.communicate(timeout=max(1.0, t0 + limit - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise _fail(children, "did not finish") from None
            if child.returncode != 0 or not out.strip():
                raise RuntimeError(f"load generator failed: {err.strip()[-2000:]}")
            outs.append(json.loads(out.strip().splitlines()[-1]))
    stats_after = fetch_stats(spec)
    rows = run_rows(stats_before, stats_after)
    recent = fetch_stats(spec, rows) if rows else None
    processes = procs.usage(procs_before, procs_after, t0 + due[-1] - window_start)
    return assemble(
        spec,
        outs,
        n=n,
        n_warm=n_warm,
        window=(window_start, t0 + due[-1] + 1.0 / spec.rate),
        server={
            "stats": server_window(stats_before, stats_after, recent),
            "processes": processes,
            "box": procs.box_usage(box_before, box_after, processes),
        },
    )


def assemble(
    spec: LoadSpec,
    outs: list[dict[str, Any]],
    *,
    n: int,
    n_warm: int,
    window: tuple[float, float],
    server: dict[str, Any],
) -> dict[str, Any]:
    """The same result dict as the aiohttp generator, plus the instrument's own fields."""
    window_start, window_end = window
    schedule_end = max(float(o["last_send"]) for o in outs)
    drained = max(float(o["end"]) for o in outs)
    cpu = generator_cpu(outs, drained - window_start)
    result = build_result(
        spec,
        merge(n, outs),
        n_warm=n_warm,
        window_start=window_start,
        window_end=window_end,
        schedule_end=max(schedule_end, window_start + 1e-6),
        drained=drained,
        client_cpu_s=cpu["cpu_s"],
        server=server,
    )
    gen = result["generator"]
    gen.update(cpu)
    gen["instrument"] = INSTRUMENT
    gen["arrivals"] = spec.arrivals
    gen["senders"] = spec.senders
    gen["connections_opened"] = sum(int(o["connections_opened"]) for o in outs)
    gen["nice"] = max(int(o.get("nice", 0)) for o in outs)  # what the senders ran at
    gen["spin_ms"] = spec.generator_spin_ms
    gen["idle_reuse_s"] = spec.idle_reuse_s
    gen["peak_rss_mb"] = None  # per process, not measured here; see server.processes
    return result
