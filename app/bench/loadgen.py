"""Open-loop HTTP(S) load at a fixed arrival rate, free of coordinated omission.

Request ``i`` is due at ``t0 + offsets[i]`` (:mod:`app.bench.schedule`: ``i / rate`` for
even arrivals, exponential gaps for Poisson) whatever the server is doing, and its latency
is measured from that *scheduled* time (the wrk2 / perf_analyzer method). A closed-loop
client waits for an answer before sending the next request, so a server that stalls for
200 ms simply receives fewer requests and the stall vanishes from the percentiles; here
it shows up as the latency of every request that was due during the stall.

The generator's own lateness is measured too: ``send_lag`` is how long after its
scheduled time a request actually started. If the client falls behind (CPU-starved on a
2-core box shared with the server), the result says so instead of quietly offering a
lower rate. Waiting for a free pooled connection is *not* send lag: that wait is the
server being slow, and it counts as latency.

This is ``--instrument aiohttp``; the default is :mod:`app.bench.generator` (several
raw-socket sender processes), which costs less CPU per request. Here: aiohttp with a
pool of keep-alive connections, bodies serialised before the clock starts, uvloop when
installed, and ``gc.freeze()`` so a collection over the client's own objects cannot stall
the schedule. :mod:`app.bench.client_process` runs one load in a process of its own, so
its CPU and memory are measured apart from the server and from Ray's driver.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from app.bench import procs
from app.bench.schedule import ARRIVALS, offsets
from app.bench.sender import IDLE_REUSE_S
from app.bench.stats import run_rows, server_window, summarize_ms
from app.observability.window import nearest_rank

# The client is "keeping up" when 99% of requests start within this of their due time:
# a tenth of the spec's p99 target, so client lateness cannot decide a verdict.
LAG_BUDGET_P99_MS = 10.0
LATE_SEND_MS = 10.0


@dataclass(frozen=True)
class LoadSpec:
    """One open-loop run. Secrets (``api_key``, ``stats_token``) travel over stdin when
    the run is a subprocess, never on a command line that ``ps`` shows."""

    base_url: str
    path: str
    rate: float
    duration_s: float
    warmup_s: float = 0.0
    connections: int = 64
    rows_per_request: int = 1
    ca_file: str | None = None
    api_key: str | None = None
    stats_token: str | None = None
    timeout_s: float = 30.0
    expect: str = "prob_up"  # a 2xx body without it is counted as an error
    watch_pids: dict[int, str] = field(default_factory=dict)
    label: str = ""
    arrivals: str = "even"  # or "poisson" (app.bench.schedule)
    seed: int = 0
    senders: int = 2  # sender processes (the default generator, app.bench.generator)
    # The senders' niceness (app.bench.sender.take_niceness); kept where it cannot be set.
    generator_nice: int = -5
    # How long before a due time a sender with a long idle wait stops sleeping and spins
    # (app.bench.sender.wait_until); 0: sleep only.
    generator_spin_ms: float = 2.0
    max_connections: int = 512  # in all; a sender opens more when every one is busy
    # A connection idle this long is closed, not reused: under the server's keep-alive.
    idle_reuse_s: float = IDLE_REUSE_S

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration_s <= 0 or self.connections < 1 or self.senders < 1:
            raise ValueError("rate, duration, connections and senders must be positive")
        if self.arrivals not in ARRIVALS:
            raise ValueError(f"arrivals must be one of {ARRIVALS}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["watch_pids"] = {str(k): v for k, v in self.watch_pids.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadSpec:
        data = dict(data)
        data["watch_pids"] = {int(k): v for k, v in (data.get("watch_pids") or {}).items()}
        return cls(**data)


def _ssl(spec: LoadSpec) -> ssl.SSLContext | bool:
    if not spec.base_url.startswith("https"):
        return False
    if spec.ca_file:
        return ssl.create_default_context(cafile=spec.ca_file)
    return True  # verify against the system trust store; never skip verification


class Recorder:
    """Per-request arrays, preallocated so the hot path only assigns by index."""

    def __init__(self, n: int) -> None:
        self.lag = [0.0] * n
        self.latency = [-1.0] * n
        self.done_at = [0.0] * n
        self.outcome: list[int | str] = ["incomplete"] * n


async def _fetch_stats(
    session: aiohttp.ClientSession, spec: LoadSpec, recent: int | None = None
) -> dict[str, Any]:
    if not spec.stats_token:
        return {"error": "no stats token"}
    headers = {"Authorization": f"Bearer {spec.stats_token}"}
    params = {"recent": str(recent)} if recent is not None else None
    try:
        async with session.get(f"{spec.base_url}/stats", headers=headers, params=params) as resp:
            if resp.status != 200:
                return {"error": f"HTTP {resp.status}"}
            body: dict[str, Any] = await resp.json()
            return body
    except (aiohttp.ClientError, TimeoutError) as exc:
        return {"error": type(exc).__name__}


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run_open_loop(spec: LoadSpec, bodies: list[bytes]) -> dict[str, Any]:
    """Offer ``spec.rate`` requests/s for warm-up + duration; return the result dict."""
    n_warm = round(spec.warmup_s * spec.rate)
    n_meas = max(1, round(spec.duration_s * spec.rate))
    n = n_warm + n_meas
    due_at = offsets(spec.rate, n, spec.arrivals, spec.seed)  # type: ignore[arg-type]
    interval = 1.0 / spec.rate
    rec = Recorder(n)
    url = f"{spec.base_url}{spec.path}"
    expect = spec.expect.encode()
    headers = {"Content-Type": "application/json"}
    if spec.api_key:
        headers["X-API-Key"] = spec.api_key
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    load_conn = aiohttp.TCPConnector(
        limit=spec.connections,
        ssl=_ssl(spec),
        keepalive_timeout=spec.idle_reuse_s,
        ttl_dns_cache=None,
    )
    # /stats gets its own connection: it must not queue behind the load in the pool.
    stats_conn = aiohttp.TCPConnector(limit=1, ssl=_ssl(spec))
    load = aiohttp.ClientSession(
        connector=load_conn, timeout=timeout, headers=headers, skip_auto_headers=("User-Agent",)
    )
    side = aiohttp.ClientSession(connector=stats_conn, timeout=aiohttp.ClientTimeout(total=30))

    async def one(i: int, due: float, body: bytes) -> None:
        start = time.perf_counter()
        rec.lag[i] = start - due
        try:
            async with load.post(url, data=body) as resp:
                payload = await resp.read()
                status = resp.status
            outcome: int | str = status
            if 200 <= status < 300 and expect and expect not in payload:
                outcome = "bad_body"
        except TimeoutError:
            outcome = "timeout"
        except aiohttp.ClientError as exc:
            outcome = type(exc).__name__
        end = time.perf_counter()
        rec.latency[i] = end - due
        rec.done_at[i] = end
        rec.outcome[i] = outcome

    tasks: list[asyncio.Task[None]] = []
    marks: dict[str, Any] = {}
    loop = asyncio.get_running_loop()
    try:
        t0 = time.perf_counter() + 0.05
        window_start = t0 + due_at[min(n_warm, n - 1)]
        i = 0
        while i < n:
            now = time.perf_counter()
            due = t0 + due_at[i]
            if now < due:
                # Timers have 1 ms resolution (libuv truncates, so a shorter sleep returns
                # at once and the loop would spin): sleep at least that, then fire the
                # burst that came due; the lag it adds is measured like any other.
                await asyncio.sleep(max(due - now, 0.001))
                continue
            # Fire everything that is due: after a late wake-up the schedule catches up
            # in a burst instead of drifting (and the lag says how late it was).
            while i < n and t0 + due_at[i] <= now:
                if i == n_warm:
                    marks["procs_before"] = procs.snapshot(spec.watch_pids)
                    marks["box_before"] = procs.box_sample()
                    marks["cpu_before"] = _cpu_s()
                    marks["stats_before"] = loop.create_task(_fetch_stats(side, spec))
                body = bodies[i % len(bodies)]
                tasks.append(loop.create_task(one(i, t0 + due_at[i], body)))
                i += 1
        schedule_end = time.perf_counter()
        procs_after, box_after = procs.snapshot(spec.watch_pids), procs.box_sample()
        measured = tasks[n_warm:]
        _, pending = await asyncio.wait(measured, timeout=spec.timeout_s + 5.0)
        for task in pending:
            task.cancel()
        drained = time.perf_counter()
        cpu_after = _cpu_s()
        stats_before = await marks["stats_before"]
        stats_after = await _fetch_stats(side, spec)
        rows = run_rows(stats_before, stats_after)
        recent = await _fetch_stats(side, spec, rows) if rows else None
        rest = [t for t in tasks if not t.done()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
    finally:
        await load.close()
        await side.close()

    processes = procs.usage(marks["procs_before"], procs_after, schedule_end - window_start)
    return build_result(
        spec,
        rec,
        n_warm=n_warm,
        window_start=window_start,
        window_end=t0 + due_at[-1] + interval,
        schedule_end=schedule_end,
        drained=drained,
        client_cpu_s=cpu_after - marks["cpu_before"],
        server={
            "stats": server_window(stats_before, stats_after, recent),
            "processes": processes,
            "box": procs.box_usage(marks["box_before"], box_after, processes),
        },
    )


def _is_ok(outcome: int | str) -> bool:
    return isinstance(outcome, int) and 200 <= outcome < 300


def build_result(
    spec: LoadSpec,
    rec: Recorder,
    *,
    n_warm: int,
    window_start: float,
    window_end: float,
    schedule_end: float,
    drained: float,
    client_cpu_s: float,
    server: dict[str, Any],
) -> dict[str, Any]:
    idx = range(n_warm, len(rec.outcome))
    ok = [i for i in idx if _is_ok(rec.outcome[i])]
    outcomes = Counter(rec.outcome[i] for i in idx)
    by_status = {str(k): v for k, v in outcomes.items() if isinstance(k, int) and not _is_ok(k)}
    connection = {
        k: v
        for k, v in outcomes.items()
        if isinstance(k, str) and k not in ("timeout", "incomplete", "bad_body")
    }
    finished = [rec.done_at[i] for i in idx if rec.latency[i] >= 0]
    last_done = max(finished, default=window_end)
    span = max(window_end, last_done) - window_start
    achieved = len(ok) / span if span > 0 else 0.0
    lags = summarize_ms([rec.lag[i] for i in idx])
    late = sum(1 for i in idx if rec.lag[i] * 1000.0 > LATE_SEND_MS)
    n_meas = len(idx)
    sent_rps = n_meas / max(1e-9, schedule_end - window_start)
    kept_up = (lags["p99"] or 0.0) <= LAG_BUDGET_P99_MS and sent_rps >= 0.98 * spec.rate
    errors = n_meas - len(ok)
    return {
        "label": spec.label,
        "path": spec.path,
        "offered_rps": spec.rate,
        "duration_s": spec.duration_s,
        "warmup_s": spec.warmup_s,
        "connections": spec.connections,
        "rows_per_request": spec.rows_per_request,
        "requests": {"scheduled": n_meas, "ok": len(ok), "errors": errors},
        "achieved_rps": round(achieved, 2),
        "predictions_per_s": round(achieved * spec.rows_per_request, 1),
        "latency_ms": summarize_ms([rec.latency[i] for i in ok]),
        "errors": {
            "total": errors,
            "by_status": by_status,
            "connection": connection,
            "timeouts": outcomes.get("timeout", 0),
            "incomplete": outcomes.get("incomplete", 0),
            "bad_body": outcomes.get("bad_body", 0),
        },
        "generator": {
            "kept_up": kept_up,
            "send_lag_ms": {k: lags[k] for k in ("p50", "p99", "max")},
            "late_sends_over_10ms": late,
            "sent_rps": round(sent_rps, 2),
            "drain_s": round(drained - schedule_end, 3),
            "cpu_s": round(client_cpu_s, 3),
            "cpu_pct_of_core": round(100.0 * client_cpu_s / max(1e-9, drained - window_start), 1),
            "cpu_us_per_request": round(1e6 * client_cpu_s / n_meas, 1),
            "peak_rss_mb": procs.peak_rss_mb_self(),
            "warning": None
            if kept_up
            else f"the generator fell behind its schedule (send lag p99 {lags['p99']} ms, "
            f"max {lags['max']} ms): latencies include client-side delay",
        },
        "server": server,
        "timeline": timeline(rec, idx, window_start),
    }


def timeline(rec: Recorder, idx: range, window_start: float) -> list[dict[str, Any]]:
    """Second by second of the measured window, by each request's due time: requests due
    (``n``), errors among them (``err``), and the p99 and max latency in ms of those
    answered (None where none was). Where a run's tail comes from: one stall, or one every
    few seconds (a periodic task), shows here and nowhere in the run's percentiles."""
    seconds: dict[int, list[float]] = {}
    errors: Counter[int] = Counter()
    for i in idx:
        if rec.latency[i] < 0:  # never answered: its due time is not recorded
            continue
        k = max(0, int(rec.done_at[i] - rec.latency[i] - window_start))
        seconds.setdefault(k, [])
        if _is_ok(rec.outcome[i]):
            seconds[k].append(rec.latency[i])
        else:
            errors[k] += 1
    out = []
    for k in sorted(seconds):
        ok = sorted(seconds[k])
        out.append(
            {
                "t": k,
                "n": len(ok) + errors[k],
                "err": errors[k],
                "p99": round(1000.0 * nearest_rank(ok, 0.99), 3) if ok else None,
                "max": round(1000.0 * ok[-1], 3) if ok else None,
            }
        )
    return out
