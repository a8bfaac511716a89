"""What ``cnnlstm bench`` does: bring targets up, offer each schedule, collect results.

Targets run one after the other, never at once: on a 2-core box two servers under load
would measure each other. Without ``--url`` the Serve stack is started exactly as
``cnnlstm serve --demo`` starts it and shut down before the baseline starts, so Ray's idle
daemons do not tax the baseline's run either.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.bench import procs
from app.bench.client_process import run_in_subprocess
from app.bench.loadgen import LoadSpec
from app.bench.payloads import Payloads, batch_payloads, predict_payloads
from app.bench.report import comparison, verdicts
from app.config import ServiceConfig
from app.config.env import load_service_config

Progress = Callable[[str], None]


@dataclass
class BenchOptions:
    rates: list[float]
    duration_s: float = 60.0
    warmup_s: float = 5.0
    connections: int = 64
    batch_symbols: int = 0
    batch_rates: list[float] | None = None  # default: each rate / batch_symbols
    find_max: bool = False
    find_max_start: float = 100.0
    find_max_step: float = 100.0
    find_max_limit: float = 3000.0
    compare_baseline: bool = False
    distinct_windows: int = 2048
    timeout_s: float = 30.0
    config_path: str | None = None
    url: str | None = None
    ca_file: Path | None = None
    api_key_file: Path | None = None
    stats_token_file: Path | None = None
    baseline_port: int = 0  # 0: a free port
    train_seconds: float = 60.0
    ready_timeout_s: float = 300.0


@dataclass
class Target:
    name: str
    url: str
    ca_file: Path | None
    api_key: str
    stats_token: str | None
    processes: Callable[[], dict[int, str]] = field(default=dict)


@dataclass
class _Loads:
    single: Payloads
    batch: Payloads | None


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _one_run(
    target: Target, opts: BenchOptions, payloads: Payloads, rate: float, pids: dict[int, str]
) -> dict[str, Any]:
    spec = LoadSpec(
        base_url=target.url,
        path=payloads.path,
        rate=rate,
        duration_s=opts.duration_s,
        warmup_s=opts.warmup_s,
        connections=opts.connections,
        rows_per_request=payloads.rows_per_request,
        ca_file=str(target.ca_file) if target.ca_file else None,
        api_key=target.api_key,
        stats_token=target.stats_token,
        timeout_s=opts.timeout_s,
        watch_pids=pids,
        label=target.name,
    )
    load_before = _loadavg()
    result = run_in_subprocess(spec, payloads)
    result["loadavg_1m_before"] = load_before
    result["loadavg_1m"] = _loadavg()
    return result


def _passes(run: dict[str, Any], config: ServiceConfig) -> tuple[bool, str]:
    p99 = run["latency_ms"]["p99"]
    limit = config.performance_targets.latency.p99_ms
    if not run["generator"]["kept_up"]:
        return False, f"the load generator fell behind at {run['offered_rps']:g} req/s"
    if run["errors"]["total"]:
        return False, f"{run['errors']['total']} errors at {run['offered_rps']:g} req/s"
    if p99 is None or p99 > limit:
        return False, f"p99 {p99} ms > {limit:g} ms at {run['offered_rps']:g} req/s"
    return True, ""


def _find_max(
    target: Target,
    opts: BenchOptions,
    loads: _Loads,
    config: ServiceConfig,
    pids: dict[int, str],
    progress: Progress,
) -> dict[str, Any]:
    best: float | None = None
    steps: list[dict[str, Any]] = []
    reason = f"reached --find-max-limit {opts.find_max_limit:g}"
    rate = opts.find_max_start
    while rate <= opts.find_max_limit:
        progress(f"{target.name}: find-max step {rate:g} req/s")
        run = _one_run(target, opts, loads.single, rate, pids)
        steps.append(run)
        ok, why = _passes(run, config)
        if not ok:
            reason = why
            break
        best = rate
        rate += opts.find_max_step
    return {"max_passing_rps": best, "stopped_because": reason, "steps": steps}


def run_target(
    target: Target, opts: BenchOptions, loads: _Loads, config: ServiceConfig, progress: Progress
) -> dict[str, Any]:
    pids = target.processes()
    runs = []
    for rate in opts.rates:
        progress(f"{target.name}: {rate:g} req/s for {opts.duration_s:g}s on {loads.single.path}")
        runs.append(_one_run(target, opts, loads.single, rate, pids))
    batch_runs = []
    if loads.batch is not None:
        rates = opts.batch_rates or [r / loads.batch.rows_per_request for r in opts.rates]
        for rate in rates:
            progress(f"{target.name}: {rate:g} req/s on {loads.batch.path}")
            batch_runs.append(_one_run(target, opts, loads.batch, rate, pids))
    out: dict[str, Any] = {
        "name": target.name,
        "url": target.url,
        "runs": runs,
        "batch_runs": batch_runs,
    }
    if opts.find_max:
        out["find_max"] = _find_max(target, opts, loads, config, pids, progress)
    out["memory"] = [
        {"pid": s.pid, "name": s.name, "rss_mb": round(s.rss_bytes / 2**20, 1)}
        for s in procs.snapshot(pids).values()
    ]
    out["verdicts"] = verdicts(runs, config.performance_targets)
    return out


def _own_stack_processes(app_name: str) -> dict[int, str]:
    # This process is Ray's driver: it prints what the log monitor forwards from the
    # replicas, which costs CPU on the same cores as the server.
    return {**procs.serve_processes(app_name, under=os.getpid()), os.getpid(): "driver"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serve_stack(
    opts: BenchOptions, config: ServiceConfig, progress: Progress
) -> Iterator[tuple[Target, Path | None]]:
    """The Serve stack as ``cnnlstm serve --demo`` starts it; shut down on exit."""
    from app.cli.demo import prepare_demo
    from app.serve import runner as serve_runner

    settings, _ = load_service_config(opts.config_path)
    app_name = config.serving.app_name
    progress("preparing demo material (dev TLS, JWT secret, API key, model)")
    demo = prepare_demo(config, train_seconds=opts.train_seconds, log=False)
    progress(f"model {demo.model}; {serve_runner.start_ray(settings, config)}")
    try:
        serve_runner.deploy(config, settings)
        url = serve_runner.base_url(config)
        info = serve_runner.wait_ready(
            url, verify=serve_runner.ssl_context(demo.ca_file), timeout_s=opts.ready_timeout_s
        )
        progress(f"Serve ready at {url} after {info.waited_s:.1f}s")
        yield (
            Target(
                "serve",
                url,
                demo.ca_file,
                demo.api_key,
                demo.stats_token,
                lambda: _own_stack_processes(app_name),
            ),
            demo.ca_file,
        )
    finally:
        progress("shutting down Serve and Ray")
        serve_runner.shutdown()


def _external_target(opts: BenchOptions) -> Target:
    if opts.url is None or opts.api_key_file is None:
        raise ValueError("--url needs --api-key-file")
    token = opts.stats_token_file.read_text().strip() if opts.stats_token_file else None
    return Target(
        "serve",
        opts.url.rstrip("/"),
        opts.ca_file,
        opts.api_key_file.read_text().strip(),
        token,
        procs.serve_processes,
    )


def _baseline(
    opts: BenchOptions,
    config: ServiceConfig,
    serve_target: Target,
    loads: _Loads,
    progress: Progress,
) -> dict[str, Any]:
    from app.bench import baseline
    from app.serve import runner as serve_runner

    port = opts.baseline_port or _free_port()
    progress(f"starting the baseline server (uvicorn, no Ray) on port {port}")
    proc = baseline.launch(opts.config_path, port=port, registry=Path(config.model_registry.path))
    try:
        verify = serve_runner.ssl_context(serve_target.ca_file)
        info = serve_runner.wait_ready(proc.url, verify=verify, timeout_s=opts.ready_timeout_s)
        progress(f"baseline ready at {proc.url} after {info.waited_s:.1f}s")
        target = Target(
            "baseline",
            proc.url,
            serve_target.ca_file,
            serve_target.api_key,
            serve_target.stats_token,
            lambda: {proc.pid: "baseline"},
        )
        return run_target(target, opts, loads, config, progress)
    finally:
        proc.stop()


def run_bench(opts: BenchOptions, progress: Progress = print) -> dict[str, Any]:
    _, config = load_service_config(opts.config_path)
    progress(f"building request bodies ({opts.distinct_windows} distinct EURUSD windows)")
    loads = _Loads(
        predict_payloads(opts.distinct_windows),
        batch_payloads(opts.batch_symbols, opts.distinct_windows) if opts.batch_symbols else None,
    )
    started = time.time()
    targets: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if opts.url:
            serve_target = _external_target(opts)
        else:
            serve_target, _ = stack.enter_context(_serve_stack(opts, config, progress))
        targets["serve"] = run_target(serve_target, opts, loads, config, progress)
    if opts.compare_baseline:
        targets["baseline"] = _baseline(opts, config, serve_target, loads, progress)
    result: dict[str, Any] = {
        "meta": {
            "started_at": started,
            "cpu_count": os.cpu_count(),
            "loadavg_1m_end": _loadavg(),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        },
        "targets": targets,
        "verdicts": {name: t["verdicts"] for name, t in targets.items()},
    }
    if "baseline" in targets:
        result["comparison"] = comparison(targets["serve"], targets["baseline"])
    return result
