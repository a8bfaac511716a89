"""Fault drills under traffic: kill a process of the running stack, count what clients saw.

Each drill runs a bounded load (several client threads, each pacing its own sends) while
it breaks one thing, then prints one line: sent / ok / 429 / 5xx / timeouts / recovery.
The lines also go to the run's summary ("fault drills", ``conftest.py``), so a CI log
without ``-s`` still carries every drill's figures, met or not.
The drills run in an order that leaves the session's stack healthy (each ends on
``/ready`` 200 and a successful prediction): overload, controller, predictor (the
stack's one replica, then a second app with two), and the gateway's own process last.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cli.serve_cmd import sample_request
from app.config import ServiceConfig
from tests.integration.conftest import ServeStack
from tests.support.live import LiveTarget

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "cnnlstm"
PAIR_APP = "cnnlstm-pair"  # a second app with two predictor replicas
PAIR_PREFIX = "/pair"
CLIENT_TIMEOUT_S = 10.0  # an answer slower than this counts as a timeout
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Outcome:
    sent: float  # time.monotonic() at send
    done: float
    status: int | None  # None: no HTTP answer (connection error or timeout)
    code: str | None = None
    retry_after: str | None = None
    timeout: bool = False


@dataclass
class Load:
    """``workers`` threads, each sending /predict every ``interval_s`` (its next send is
    due on schedule; it never has two in flight), up to ``max_requests`` in all."""

    stack: ServeStack
    key: str
    workers: int = 6
    interval_s: float = 0.05
    max_requests: int = 20_000
    base_url: str | None = None
    path: str = "/predict"
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _count: int = 0

    def _take(self) -> bool:
        with self._lock:
            if self._count >= self.max_requests:
                return False
            self._count += 1
            return True

    def _run(self, worker: int) -> None:
        ctx = ssl.create_default_context(cafile=str(self.stack.ca_file))
        base = self.base_url or self.stack.base_url
        headers = {"X-API-Key": self.key}
        with httpx.Client(base_url=base, verify=ctx, timeout=CLIENT_TIMEOUT_S) as client:
            due = time.monotonic() + worker * self.interval_s / self.workers
            i = 0
            while not self._stop.is_set() and self._take():
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                due += self.interval_s
                body = sample_request(f"FD{worker}", offset=100 + (37 * i + worker) % 4000)
                i += 1
                sent = time.monotonic()
                try:
                    r = client.post(self.path, json=body, headers=headers)
                except httpx.TimeoutException:
                    out = Outcome(sent, time.monotonic(), None, timeout=True)
                except httpx.HTTPError:
                    out = Outcome(sent, time.monotonic(), None)
                else:
                    code = None if r.status_code == 200 else _error_code(r)
                    out = Outcome(
                        sent, time.monotonic(), r.status_code, code, r.headers.get("retry-after")
                    )
                with self._lock:
                    self.outcomes.append(out)

    def __enter__(self) -> Load:
        for w in range(self.workers):
            t = threading.Thread(target=self._run, args=(w,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=CLIENT_TIMEOUT_S + 5)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def wait_for(self, n: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.outcomes) < n:
            assert time.monotonic() < deadline, f"only {len(self.outcomes)} answers"
            time.sleep(0.05)


def _error_code(r: httpx.Response) -> str | None:
    try:
        return str(r.json()["error"]["code"])
    except Exception:
        return None


def _line(name: str, outs: list[Outcome], recovery_s: float | None, extra: str = "") -> str:
    ok = sum(o.status == 200 for o in outs)
    n429 = sum(o.status == 429 for o in outs)
    n5xx = sum(o.status is not None and o.status >= 500 for o in outs)
    timeouts = sum(o.timeout for o in outs)
    conn = sum(o.status is None and not o.timeout for o in outs)
    rec = "-" if recovery_s is None else f"{recovery_s:.2f}s"
    line = (
        f"DRILL {name}: sent={len(outs)} ok={ok} 429={n429} 5xx={n5xx} "
        f"timeouts={timeouts} conn_errors={conn} recovery={rec}"
    )
    return f"{line} {extra}".rstrip()


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _alive_actor(name_prefix: str) -> dict[str, Any]:
    """The one ALIVE actor whose name starts with ``name_prefix`` (Ray's GCS actor table,
    which needs no dashboard)."""
    import ray

    found = [
        a
        for a in ray._private.state.actors(actor_state_name="ALIVE").values()
        if str(a["Name"]).startswith(name_prefix)
    ]
    assert len(found) == 1, [a["Name"] for a in found]
    return found[0]


def _client(stack: ServeStack, timeout_s: float) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(stack.ca_file))
    return httpx.Client(base_url=stack.base_url, verify=ctx, timeout=timeout_s)


def _ready(stack: ServeStack, timeout_s: float = 1.0) -> bool:
    try:
        with _client(stack, timeout_s) as client:
            return client.get("/ready").status_code == 200
    except httpx.HTTPError:
        return False


def _wait_healthy(stack: ServeStack, key: str, timeout_s: float = 120.0) -> None:
    """/ready 200 and one successful prediction (each drill ends here)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _ready(stack):
            try:
                with _client(stack, 5.0) as client:
                    r = client.post(
                        "/predict", json=sample_request("FDOK"), headers={"X-API-Key": key}
                    )
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.25)
    raise AssertionError("the stack never came back to /ready 200 and a prediction")


def _recovered_at(outs: list[Outcome], after: float, streak: int = 20) -> float | None:
    """When predictions came back after ``after``: the first answer of ``streak``
    successes all sent after the last failure; ``after`` itself when nothing failed for
    10 s; None while neither holds."""
    failures = [o.done for o in outs if o.done >= after and o.status != 200]
    if not failures:
        return after if time.monotonic() > after + 10 else None
    last = max(failures)
    back = [o.done for o in outs if o.status == 200 and o.sent > last]
    return min(back) if len(back) >= streak else None


@pytest.fixture(scope="module")
def drill_key(serve_stack: ServeStack, live_target: LiveTarget) -> str:
    _, key = live_target.create_key(["model:predict"], owner="fault-drills")
    _wait_healthy(serve_stack, key)
    return key


# -- d. overload ------------------------------------------------------------------------


# Issue 12: overload at three times capacity, measured on this box in the same run (the
# VM's speed drifts by a fifth between hours, so a fixed rate is 3x in one hour and 4-5x in
# another). Capacity is the bench's find-max: the highest rate, in 8 s steps of 50 req/s,
# with p99 <= the spec's 100 ms and not one error (a 429 is one). The session stack keeps
# its feature cache on and the load repeats 256 windows, so it measures higher than the
# bench's cache-off figure (500-750 against 450-500 req/s, session 8). The flood comes
# from 128 keep-alive connections, and a request due while all are busy opens another, up
# to 256, as more clients would: the excess must be refused, not queued. A fixed pool is
# no overload once the gateway is fast: session 13's gateway answered 128 connections at
# ~2000 req/s with a mean of 64 ms, inside its 75 ms target, so it refused nothing while
# the surplus waited seconds in the generator, where no server can see it (0 of 36000
# refused, client p50 4.6 s, gateway p99 71 ms). With 256 the surplus reaches the gateway:
# 23750 refused, client p99 163 ms, gateway p99 125 ms (session 14); with 1024 the
# generator's own lag took the client p99 to 480 ms.
OVERLOAD_FACTOR = 3.0
OVERLOAD_CONNECTIONS = 128
OVERLOAD_MAX_CONNECTIONS = 256
CAPACITY_START_RPS, CAPACITY_STEP_RPS, CAPACITY_LIMIT_RPS = 300.0, 50.0, 1200.0
CAPACITY_STEP_S = 8.0


def _load(
    stack: ServeStack,
    key: str,
    token: str,
    rate: float,
    duration_s: float,
    connections: int,
    max_connections: int,
) -> dict[str, Any]:
    """Open loop at ``rate`` req/s from the bench's own generator (sender processes over
    keep-alive TLS sockets, latency from each scheduled send): an asyncio Python client
    on these two cores saturates itself long before it can offer three times capacity."""
    from app.bench.generator import run_load
    from app.bench.loadgen import LoadSpec
    from app.bench.payloads import predict_payloads

    spec = LoadSpec(
        base_url=stack.base_url,
        path="/predict",
        rate=rate,
        duration_s=duration_s,
        warmup_s=1.0,
        connections=connections,
        max_connections=max_connections,
        ca_file=str(stack.ca_file),
        api_key=key,
        stats_token=token,  # /stats before and after: the gateway's own latency figures
        timeout_s=CLIENT_TIMEOUT_S,
        label=f"{rate:g} req/s",
    )
    return run_load(spec, predict_payloads(256))


def _capacity(stack: ServeStack, key: str, token: str) -> tuple[float, str]:
    """The stack's capacity now (req/s at p99 <= 100 ms, no errors) and why the climb
    stopped; below the first step, half of it (the flood is then 1.5x that step)."""
    from app.bench import plan

    def step(_name: str, rate: float) -> dict[str, Any]:
        # The bench's defaults: 64 connections, more opened (up to 512) when all are busy.
        # A step the generator itself fell behind in (it shares the two cores) is run
        # once more before it counts: a stall of the client is not the server's capacity.
        run = _load(stack, key, token, rate, CAPACITY_STEP_S, 64, 512)
        if not run["generator"]["kept_up"]:
            run = _load(stack, key, token, rate, CAPACITY_STEP_S, 64, 512)
        return run

    step("warm-up", CAPACITY_START_RPS)  # the first seconds of a new stack, not counted
    found = plan.find_max(
        ["serve"],
        step,
        start=CAPACITY_START_RPS,
        step=CAPACITY_STEP_RPS,
        limit=CAPACITY_LIMIT_RPS,
        p99_limit_ms=100.0,
    )["serve"]
    return found["max_passing_rps"] or CAPACITY_START_RPS / 2, found["stopped_because"]


@contextlib.contextmanager
def _probing_health(stack: ServeStack) -> Iterator[dict[str, list[float]]]:
    """/healthz and /ready in turn every 50 ms from a process of their own
    (``tests/support/health_prober.py``: not this process's GIL, which the generator's
    bookkeeping and the reading client hold at times); the dict fills when the block ends."""
    health: dict[str, list[float]] = {}
    prober = subprocess.Popen(
        [sys.executable, "-m", "tests.support.health_prober", stack.base_url, str(stack.ca_file)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert prober.stderr is not None
        prober.stderr.readline()  # the first probes are in: the connection is up
        yield health
    finally:
        prober.send_signal(signal.SIGTERM)
        out, err = prober.communicate(timeout=30)
    assert prober.returncode == 0, err
    health.update(json.loads(out))


def test_d_overload_is_shed_with_429_and_health_stays_fast(
    serve_stack: ServeStack,
    drill_key: str,
    live_target: LiveTarget,
    drill_line: Callable[[str], None],
) -> None:
    token = live_target.mint(["model:stats"], ttl_s=600)
    capacity, stopped = _capacity(serve_stack, drill_key, token)
    rate = OVERLOAD_FACTOR * capacity
    drill_line(f"DRILL d capacity: {capacity:g} req/s ({stopped}); offering {rate:g} req/s")
    _wait_healthy(serve_stack, drill_key)
    # A few requests of a client that reads every answer whole: the refusals' shape.
    reader = Load(serve_stack, drill_key, workers=2, interval_s=0.1, max_requests=150)
    with _probing_health(serve_stack) as health, reader:
        result = _load(
            serve_stack,
            drill_key,
            token,
            rate,
            10.0,
            OVERLOAD_CONNECTIONS,
            OVERLOAD_MAX_CONNECTIONS,
        )
    requests, errors = result["requests"], result["errors"]
    refused = int(errors["by_status"].get("429", 0))
    server_errors = sum(v for k, v in errors["by_status"].items() if k.startswith("5"))
    admitted_p99 = result["latency_ms"]["p99"] or 0.0
    # Inside the gateway (batcher queue + model), as /stats reports it: the client-side
    # figure also holds the generator's own lag once it falls behind the schedule.
    server_p99 = result["server"]["stats"]["server_latency_ms"]["p99"]
    health_p99 = {p: _p(v, 0.99) for p, v in health.items()}
    drill_line(
        f"DRILL d overload: sent={requests['scheduled']} ok={requests['ok']} 429={refused} "
        f"5xx={server_errors} timeouts={errors['timeouts']} "
        f"conn_errors={sum(errors['connection'].values())} recovery=- "
        f"offered={rate:.0f}/s achieved={result['achieved_rps']}/s "
        f"admitted_p50={result['latency_ms']['p50']}ms admitted_p99={admitted_p99}ms "
        f"server_p99={server_p99}ms refusals={result['server']['stats'].get('refusals')} "
        f"healthz_p99={health_p99['/healthz']:.0f}ms ready_p99={health_p99['/ready']:.0f}ms "
        f"generator_kept_up={result['generator']['kept_up']} "
        f"generator_us_per_req={result['generator'].get('cpu_us_per_request')}"
    )
    _wait_healthy(serve_stack, drill_key)
    # Never: server errors, a hang, or an overload that nothing refuses.
    assert server_errors <= 0.01 * requests["scheduled"]
    assert refused > 0, "three times capacity and not one request shed"
    read = reader.snapshot()
    refusals = [o for o in read if o.status == 429]
    assert refusals, f"the reading client saw no refusal: {[o.status for o in read]}"
    assert {o.status for o in read} <= {200, 429}, [o.status for o in read]
    for o in refusals:  # the one JSON error shape, and when to come back
        assert o.code is not None
        assert o.retry_after is not None
        assert int(o.retry_after) >= 1
    assert health_p99["/healthz"] < 1000
    assert health_p99["/ready"] < 1000
    assert server_p99 < 1000
    # Issue 12's bar: probes under 100 ms, admitted p99 within twice the spec's 100 ms,
    # inside the gateway and at the client. A speed on a shared box, so a miss is reported
    # (xfail with the figures), not failed. At a fixed 1800 req/s (sessions 6-7), with the
    # VM at its usual speed 12 runs of 13 met it, with the VM a fifth slower 2 of 7. At
    # three times the measured capacity, after a queue refusal began to move the in-flight
    # limit (session 8): 5 of 8, none collapsed (client p99 148-221 ms, gateway 92-186,
    # /healthz p99 up to 286 ms in two runs). With the predictor's same-node socket
    # (session 9, capacity 700-1000 -> 2100-3000 offered): 11 of 13 (client p99 139-203
    # ms, gateway 89-144, probes 37-77 ms but for one 193 ms /healthz measured from this
    # process, before the probes moved to a process of their own). After the reading
    # client stopped parsing the CSV per request (session 10): 11 of 11, 4 in CI (client
    # p99 131-191 ms, gateway 86-160). With the flood's connections opened up to 256 on
    # a faster VM (session 14): 1 of 2 (client p99 163 and, in CI, 265 ms; gateway 125,
    # 123; the generator fell behind in both).
    missed = [
        f"{name} {value:.0f} ms > {bar} ms"
        for name, value, bar in (
            ("admitted p99 in the gateway", server_p99, 200),
            ("admitted p99 at the client", admitted_p99, 200),
            ("/healthz p99", health_p99["/healthz"], 100),
            ("/ready p99", health_p99["/ready"], 100),
        )
        if value >= bar
    ]
    if missed:
        # The reason names what missed and the figures that explain it, in the short summary.
        context = (
            f"capacity {capacity:g} -> {rate:g} req/s offered; gateway p99 {server_p99:.0f} ms; "
            f"/healthz {health_p99['/healthz']:.0f} ms, /ready {health_p99['/ready']:.0f} ms; "
            f"generator kept up: {result['generator']['kept_up']}"
        )
        pytest.xfail(f"{'; '.join(missed)} ({context})")


# -- c. the Serve controller ------------------------------------------------------------


def test_c_killing_the_serve_controller_loses_nothing(
    serve_stack: ServeStack, drill_key: str, drill_line: Callable[[str], None]
) -> None:
    import ray
    from ray import serve
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    with Load(serve_stack, drill_key, max_requests=3000) as load:
        load.wait_for(30)
        killed = time.monotonic()
        ray.kill(controller, no_restart=False)  # detached, max_restarts=-1: it comes back
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(Exception):  # the controller is still restarting
                if serve.status().applications[APP].status == "RUNNING":
                    break
            assert time.monotonic() < deadline, "the Serve controller never came back"
            time.sleep(0.5)
        back = time.monotonic() - killed
        time.sleep(3)  # traffic after the restart too
    outs = load.snapshot()
    drill_line(_line("c controller", outs, back, "(recovery: the controller's status is back)"))
    assert [o for o in outs if o.status != 200] == [], "a request was lost"
    _wait_healthy(serve_stack, drill_key)


# -- b. the predictor -------------------------------------------------------------------


def test_b_killing_the_one_predictor_fails_fast_and_recovers(
    serve_stack: ServeStack, drill_key: str, drill_line: Callable[[str], None]
) -> None:
    name = serve_stack.config.deployment.deployment_name
    victim = _alive_actor(f"SERVE_REPLICA::{APP}#{name}#")
    with Load(serve_stack, drill_key, max_requests=6000) as load:
        load.wait_for(30)
        killed = time.monotonic()
        os.kill(int(victim["Pid"]), signal.SIGKILL)
        deadline = killed + 150
        while (recovered := _recovered_at(load.snapshot(), killed)) is None:
            assert time.monotonic() < deadline, "predictions never recovered"
            time.sleep(0.5)
    outs = load.snapshot()
    failed = [o for o in outs if o.status != 200]
    slowest = max((o.done - o.sent for o in failed), default=0.0)
    codes = sorted({str(o.code) for o in failed})
    slowest_any = max((o.done - o.sent for o in outs if o.sent >= killed - 1), default=0.0)
    drill_line(
        _line(
            "b predictor x1",
            outs,
            recovered - killed,
            f"slowest_failure={slowest:.2f}s slowest_answer={slowest_any:.2f}s codes={codes}",
        )
    )
    assert all(o.status == 503 and o.retry_after for o in failed), failed[:5]
    assert slowest < 1.0, f"a 503 took {slowest:.2f} s behind the dead predictor (target 1 s)"
    _wait_healthy(serve_stack, drill_key)


def _pair_config(stack: ServeStack, root: Path) -> ServiceConfig:
    data: dict[str, Any] = copy.deepcopy(stack.config.model_dump(mode="json"))
    data["resources"].update(num_cpus=0.25)
    data["serving"].update(
        autoscaling_enabled=False,
        app_name=PAIR_APP,
        route_prefix=PAIR_PREFIX,
        fault_injection={},
        graceful_shutdown_timeout_s=1,
        graceful_shutdown_wait_loop_s=0.5,
    )
    data["market_calendar"]["enabled"] = False
    data["autoscaling"].update(min_replicas=2, max_replicas=2)
    data["model_registry"]["path"] = str(root / "models")
    data["logging"]["directory"] = str(root / "logs")
    data["blue_green_deployment"]["state_path"] = None
    return ServiceConfig.model_validate(data)


@pytest.fixture
def pair_app(serve_stack: ServeStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    from ray import serve

    from app.config.env import Settings
    from app.serve.build import build_from_config
    from model.export import make_random_artifact

    root = tmp_path_factory.mktemp("pair")
    config = _pair_config(serve_stack, root)
    make_random_artifact(root / "models", version="1.0.0", seed=41)
    settings = Settings(DEVICE="cpu", MODEL_REGISTRY_PATH=root / "models")
    serve.run(build_from_config(config, settings), name=PAIR_APP, route_prefix=PAIR_PREFIX)
    try:
        yield
    finally:
        serve.delete(PAIR_APP)


def test_b_with_two_predictor_replicas_no_request_is_lost(
    serve_stack: ServeStack, drill_key: str, pair_app: None, drill_line: Callable[[str], None]
) -> None:
    name = serve_stack.config.deployment.deployment_name
    prefix = f"SERVE_REPLICA::{PAIR_APP}#{name}#"
    import ray

    replicas = [
        a
        for a in ray._private.state.actors(actor_state_name="ALIVE").values()
        if str(a["Name"]).startswith(prefix)
    ]
    assert len(replicas) == 2, [a["Name"] for a in replicas]
    with Load(
        serve_stack,
        drill_key,
        max_requests=3000,
        base_url=serve_stack.proxy_url,
        path=f"{PAIR_PREFIX}/predict",
    ) as load:
        load.wait_for(30)
        killed = time.monotonic()
        os.kill(int(replicas[0]["Pid"]), signal.SIGKILL)
        time.sleep(8)
    outs = load.snapshot()
    after = [o for o in outs if o.sent >= killed - 1]
    drill_line(_line("b predictor x2", outs, 0.0, f"sent_around_kill={len(after)}"))
    assert [o for o in outs if o.status != 200] == [], "a request was lost"


# -- a. the gateway's own process -------------------------------------------------------


def test_a_killing_the_gateway_process_gets_the_same_port_back(
    serve_stack: ServeStack, drill_key: str, drill_line: Callable[[str], None]
) -> None:
    victim = _alive_actor(f"SERVE_REPLICA::{APP}#gateway#")
    with Load(serve_stack, drill_key, max_requests=6000) as load:
        load.wait_for(30)
        killed = time.monotonic()
        os.kill(int(victim["Pid"]), signal.SIGKILL)
        time.sleep(0.2)
        deadline = killed + 90
        while not _ready(serve_stack, timeout_s=1.0):
            assert time.monotonic() < deadline, "the gateway's port never answered again"
            time.sleep(0.1)
        recovery = time.monotonic() - killed
        time.sleep(3)  # traffic after the recovery too
    outs = load.snapshot()
    drill_line(_line("a gateway", outs, recovery, f"port={serve_stack.base_url.rsplit(':', 1)[1]}"))
    late = [o for o in outs if o.status != 200 and not killed - 0.5 <= o.sent <= killed + recovery]
    assert late == [], f"requests failed outside the outage window: {late[:5]}"
    # Target 15 s: measured 2.4 s with Serve checking the gateway every 2 s (17-25 s when
    # it used the liveness probe's 30 s); the bound leaves room for a loaded CI box.
    assert recovery < 30, f"the gateway took {recovery:.1f} s to come back on its port"
    _wait_healthy(serve_stack, drill_key)
