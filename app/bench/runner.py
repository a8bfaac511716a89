"""What ``cnnlstm bench`` does: bring targets up, offer each schedule, collect results.

Only one system is under load at a time, but all are up together: at each rate Serve and
the no-Ray peer alternate A/B/A (:mod:`app.bench.plan`) so drift between minutes shows,
and ``--find-max`` climbs all of them (Serve, peer, the bare hello floor) step by step
in the same order. Without ``--url`` the Serve stack is started exactly as
``cnnlstm serve --demo`` starts it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.bench import goals, plan, procs
from app.bench.client_process import run_in_subprocess
from app.bench.generator import fetch_stats_at, run_load
from app.bench.loadgen import LoadSpec
from app.bench.payloads import Payloads, batch_payloads, predict_payloads
from app.bench.report import comparison, verdicts
from app.bench.sender import IDLE_REUSE_S
from app.bench.targets import (
    Target,
    baseline_target,
    external_target,
    hello_target,
    serve_stack,
)
from app.config.env import load_service_config

Progress = Callable[[str], None]
INSTRUMENTS = ("pysock", "aiohttp")


@dataclass
class BenchOptions:
    rates: list[float]
    duration_s: float = 60.0
    warmup_s: float = 5.0
    connections: int = 64
    batch_symbols: int = 0
    batch_rates: list[float] | None = None  # default: each rate / batch_symbols
    find_max: bool = False
    find_max_start: float = 25.0
    find_max_step: float = 25.0
    find_max_limit: float = 3000.0
    find_max_sittings: int = 1
    compare_baseline: bool = False
    distinct_windows: int = 2048
    timeout_s: float = 30.0
    config_path: str | None = None
    url: str | None = None
    ca_file: Path | None = None
    api_key_file: Path | None = None
    stats_token_file: Path | None = None
    baseline_port: int = 0  # 0: a free port
    # The peer's serving.predictor_engine; "serve": the engine Serve's predictor chose.
    peer_engine: str = "serve"
    train_seconds: float = 60.0
    ready_timeout_s: float = 300.0
    instrument: str = "pysock"
    arrivals: str = "even"
    senders: int = 2
    generator_nice: int = -5
    generator_spin_ms: float = 2.0
    idle_reuse_s: float = IDLE_REUSE_S
    max_connections: int = 512
    seed: int = 0
    calibrate: bool = False  # also offer every rate to the bare hello app
    calibrate_only: bool = False  # only the hello app: the instrument's floor, no Serve
    model_batch1_ms: float | None = None


def loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def measure(
    target: Target, opts: BenchOptions, payloads: Payloads, rate: float, pids: dict[int, str]
) -> dict[str, Any]:
    """One open-loop run with the chosen instrument, tagged with the load average before."""
    spec = LoadSpec(
        base_url=target.url,
        path=payloads.path,
        rate=rate,
        duration_s=opts.duration_s,
        warmup_s=opts.warmup_s,
        connections=opts.connections,
        rows_per_request=payloads.rows_per_request,
        ca_file=str(target.ca_file) if target.ca_file else None,
        api_key=target.api_key or None,
        stats_token=target.stats_token,
        timeout_s=opts.timeout_s,
        watch_pids=pids,
        label=target.name,
        arrivals=opts.arrivals,
        seed=opts.seed,
        senders=opts.senders,
        generator_nice=opts.generator_nice,
        generator_spin_ms=opts.generator_spin_ms,
        max_connections=opts.max_connections,
        idle_reuse_s=opts.idle_reuse_s,
    )
    before = loadavg()
    if opts.instrument == "aiohttp":
        result = run_in_subprocess(spec, payloads)
        result["generator"].update(instrument="aiohttp", arrivals=opts.arrivals, senders=1)
    elif opts.instrument == "pysock":
        result = run_load(spec, payloads)
    else:
        raise ValueError(f"--instrument must be one of {INSTRUMENTS}")
    result["loadavg_1m_before"] = before
    result["loadavg_1m"] = loadavg()
    return result


def _shell(target: Target) -> dict[str, Any]:
    return {"name": target.name, "url": target.url, "runs": [], "batch_runs": []}


def served_model(target: Target) -> dict[str, Any] | None:
    """What ``target`` serves, from its ``/stats``: the model and the numerics and engine
    its predictor chose (every result says which ran); None without a stats token."""
    if not target.stats_token:
        return None
    ca = str(target.ca_file) if target.ca_file else None
    body = fetch_stats_at(target.url, ca, target.stats_token)
    if "error" in body:
        return {"error": body["error"]}
    predictor = body.get("predictor") or {}
    model = body.get("model") or {}
    return {
        "model": f"{model.get('name')}:{model.get('version')}" if model else None,
        **{
            key: predictor.get(key)
            for key in ("device", "numerics", "numerics_fallback", "engine", "engine_fallback")
        },
    }


def _calibration(hello: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "offered_rps": r["offered_rps"],
            "p50_ms": r["latency_ms"]["p50"],
            "p99_ms": r["latency_ms"]["p99"],
            "send_lag_p99_ms": r["generator"]["send_lag_ms"]["p99"],
            "cpu_us_per_request": r["generator"].get("cpu_us_per_request"),
            "instrument": r["generator"].get("instrument"),
        }
        for r in hello["runs"]
    ]


def _up(stack: contextlib.ExitStack, opts: BenchOptions, progress: Progress) -> dict[str, Target]:
    _, config = load_service_config(opts.config_path)
    up: dict[str, Target] = {}
    ca_hint = opts.ca_file
    keep_warm_for_s = (
        None
        if opts.url or not config.batching.keep_warm_ms
        else side_by_side_keep_warm_s(opts, config.batching.keep_warm_for_s)
    )
    if keep_warm_for_s is not None:
        # An idle system's warm rows would run on the cores the measured one is using
        # (BENCHMARKS.md, session 32), so each system started here keeps warm only until
        # the next one's warm-up is over; the one measured stays warm on its own requests.
        progress(
            f"keep-warm in the systems started side by side: every "
            f"{config.batching.keep_warm_ms:g} ms for {keep_warm_for_s:g} s after each "
            f"one's last request (batching.keep_warm_for_s), so none warms while another "
            f"is measured"
        )
        config.batching.keep_warm_for_s = keep_warm_for_s
    if not opts.calibrate_only:
        if opts.url:
            serve = external_target(
                opts.url, opts.ca_file, opts.api_key_file, opts.stats_token_file
            )
        else:
            serve = stack.enter_context(
                serve_stack(
                    opts.config_path,
                    config,
                    progress,
                    train_seconds=opts.train_seconds,
                    ready_timeout_s=opts.ready_timeout_s,
                )
            )
        up["serve"] = serve
        ca_hint = serve.ca_file
        if opts.compare_baseline:
            up["baseline"] = stack.enter_context(
                baseline_target(
                    opts.config_path,
                    config,
                    serve,
                    progress,
                    port=opts.baseline_port,
                    ready_timeout_s=opts.ready_timeout_s,
                    keep_warm_for_s=keep_warm_for_s,
                    engine=peer_engine(opts.peer_engine, serve, progress),
                )
            )
    if opts.calibrate or opts.calibrate_only or opts.find_max:
        up["hello"] = stack.enter_context(
            hello_target(config, ca_hint, progress, ready_timeout_s=opts.ready_timeout_s)
        )
    return up


def peer_engine(setting: str, serve: Target, progress: Progress) -> str | None:
    """The peer's ``serving.predictor_engine``: ``setting`` itself, or for "serve" the
    engine Serve's predictor serves on (its ``/stats``), so the two run the same forwards
    and a ratio between them compares serving paths, not two load-time timings (session
    34's peer split at 2 rows where Serve split at 4). None: the config's."""
    if setting != "serve":
        return setting
    served = served_model(serve) or {"error": "no stats token"}
    engine = served.get("engine")
    if not isinstance(engine, str) or "error" in served:
        progress(
            f"warning: Serve's engine is unknown ({served.get('error')}); the peer chooses "
            f"its own as the config says"
        )
        return None
    return engine


def idle_keep_warm(
    up: dict[str, Target], measured: str, *, window_start: float
) -> dict[str, dict[str, float]]:
    """For each other system up with keep-warm (the hello has none): how far into
    ``measured``'s window (unix ``window_start``) its last warm row came, in seconds
    (negative: before it began, so it warmed nothing that was measured)."""
    out: dict[str, dict[str, float]] = {}
    for name, target in up.items():
        if name == measured or name == "hello" or not target.stats_token:
            continue
        ca = str(target.ca_file) if target.ca_file else None
        keep_warm = fetch_stats_at(target.url, ca, target.stats_token).get("keep_warm")
        if not isinstance(keep_warm, dict) or keep_warm.get("last_at") is None:
            continue
        out[name] = {
            "sent": keep_warm["sent"],
            "last_warm_into_window_s": round(keep_warm["last_at"] - window_start, 3),
        }
    return out


def side_by_side(opts: BenchOptions) -> bool:
    """Whether this run keeps more than one server up at once (Serve, the peer, hello)."""
    others = opts.compare_baseline or opts.calibrate or opts.find_max
    return not opts.calibrate_only and bool(others)


def side_by_side_keep_warm_s(opts: BenchOptions, configured_s: float) -> float | None:
    """The keep-warm horizon for systems kept up side by side (None: one system alone,
    as configured). The warm-up that starts each run outlasts it by a second, so an idle
    system has stopped warming before another is measured; it still exceeds the gap
    between the measured system's requests at the lowest rate, so that one stays warm
    throughout."""
    if not side_by_side(opts):
        return None
    slowest = min([*opts.rates, *(opts.batch_rates or [])], default=1.0)
    return min(configured_s, max(opts.warmup_s - 1.0, 1.5 / slowest))


def run_bench(opts: BenchOptions, progress: Progress = print) -> dict[str, Any]:
    _, config = load_service_config(opts.config_path)
    progress(f"building request bodies ({opts.distinct_windows} distinct EURUSD windows)")
    single = predict_payloads(opts.distinct_windows)
    batch = (
        batch_payloads(opts.batch_symbols, opts.distinct_windows) if opts.batch_symbols else None
    )
    started = time.time()
    out: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        up = _up(stack, opts, progress)
        pids = {name: t.processes() for name, t in up.items()}
        out = {name: _shell(t) for name, t in up.items()}
        for name, target in up.items():
            if name != "hello":
                out[name]["served"] = served_model(target)

        def run(name: str, payloads: Payloads, rate: float, seq: int) -> dict[str, Any]:
            progress(f"{name}: {rate:g} req/s on {payloads.path} ({opts.duration_s:g}s)")
            began = time.time()
            result = measure(up[name], opts, payloads, rate, pids[name])
            result["sequence"] = seq
            idle = idle_keep_warm(up, name, window_start=began + opts.warmup_s)
            if idle:
                result["idle_keep_warm"] = idle
                for other, seen in idle.items():
                    if seen["last_warm_into_window_s"] > 0:
                        progress(
                            f"warning: {other} was still keeping warm "
                            f"{seen['last_warm_into_window_s']:.1f} s into {name}'s window"
                        )
            return result

        at_rates = [n for n in up if n != "hello" or opts.calibrate or opts.calibrate_only]
        for rate in opts.rates:
            for seq, name in enumerate(plan.aba_order(at_rates)):
                out[name]["runs"].append(run(name, single, rate, seq))
        if batch is not None:
            rates = opts.batch_rates or [r / batch.rows_per_request for r in opts.rates]
            systems = plan.aba_order([n for n in at_rates if n != "hello"])
            for rate in rates:
                for seq, name in enumerate(systems):
                    out[name]["batch_runs"].append(run(name, batch, rate, seq))
        if opts.find_max:
            found = plan.find_max_sittings(
                list(up),
                lambda name, rate: run(name, single, rate, 0),
                sittings=opts.find_max_sittings,
                start=opts.find_max_start,
                step=opts.find_max_step,
                limit=opts.find_max_limit,
                p99_limit_ms=config.performance_targets.latency.p99_ms,
                progress=progress,
            )
            for name, fm in found.items():
                out[name]["find_max"] = fm
        for name in up:
            out[name]["memory"] = [
                {"pid": s.pid, "name": s.name, "rss_mb": round(s.rss_bytes / 2**20, 1)}
                for s in procs.snapshot(pids[name]).values()
            ]
            if name != "hello":
                out[name]["verdicts"] = verdicts(out[name]["runs"], config.performance_targets)
    result: dict[str, Any] = {
        "meta": {
            "started_at": started,
            "cpu_count": os.cpu_count(),
            "loadavg_1m_end": loadavg(),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        },
        "targets": out,
        "verdicts": {name: t["verdicts"] for name, t in out.items() if "verdicts" in t},
    }
    if "serve" in out and "baseline" in out:
        result["comparison"] = comparison(out["serve"], out["baseline"])
    if "hello" in out and out["hello"]["runs"]:
        result["calibration"] = _calibration(out["hello"])
    # Beside each system's spec 12.1 verdicts: the issue-11 targets, for Serve.
    result["verdicts"][goals.KEY] = goals.check(result, model_batch1_ms=opts.model_batch1_ms)
    return result
