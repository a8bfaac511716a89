"""The systems a benchmark measures, each brought up and torn down by a context manager.

- ``serve``: the Serve stack as ``cnnlstm serve --demo`` starts it (or ``--url``).
- ``baseline``: the one-process peer, ``python -m app.bench.baseline`` (no Ray).
- ``hello``: a bare ASGI app on uvicorn with the same certificate (``app.bench.hello``),
  the floor of the instrument and the TLS/HTTP stack.

All may be up at once (the A/B/A alternation needs it); only one is under load at a time.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from app.bench import procs
from app.config import ServiceConfig
from app.config.env import load_service_config

Progress = Callable[[str], None]


@dataclass
class Target:
    name: str
    url: str
    ca_file: Path | None
    api_key: str
    stats_token: str | None
    processes: Callable[[], dict[int, str]] = field(default=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _own_stack_processes(app_name: str) -> dict[int, str]:
    # This process is Ray's driver: it prints what the log monitor forwards from the
    # replicas, which costs CPU on the same cores as the server.
    return {**procs.serve_processes(app_name, under=os.getpid()), os.getpid(): "driver"}


@contextlib.contextmanager
def serve_stack(
    config_path: str | None,
    config: ServiceConfig,
    progress: Progress,
    *,
    train_seconds: float,
    ready_timeout_s: float,
) -> Iterator[Target]:
    """The Serve stack as ``cnnlstm serve --demo`` starts it; shut down on exit."""
    from app.cli.demo import prepare_demo
    from app.serve import runner as serve_runner

    settings, _ = load_service_config(config_path)
    app_name = config.serving.app_name
    progress("preparing demo material (dev TLS, JWT secret, API key, model)")
    demo = prepare_demo(config, train_seconds=train_seconds, log=False)
    started = serve_runner.start_ray(settings, config)
    config = started.config
    progress(f"model {demo.model}; {started.how}")
    try:
        serve_runner.deploy(config, settings)
        url = serve_runner.base_url(config)
        info = serve_runner.wait_ready(
            url, verify=serve_runner.ssl_context(demo.ca_file), timeout_s=ready_timeout_s
        )
        progress(f"Serve ready at {url} after {info.waited_s:.1f}s")
        yield Target(
            "serve",
            url,
            demo.ca_file,
            demo.api_key,
            demo.stats_token,
            lambda: _own_stack_processes(app_name),
        )
    finally:
        progress("shutting down Serve and Ray")
        serve_runner.shutdown()


def external_target(
    url: str | None, ca_file: Path | None, api_key_file: Path | None, stats_token_file: Path | None
) -> Target:
    if url is None or api_key_file is None:
        raise ValueError("--url needs --api-key-file")
    token = stats_token_file.read_text().strip() if stats_token_file else None
    return Target(
        "serve",
        url.rstrip("/"),
        ca_file,
        api_key_file.read_text().strip(),
        token,
        procs.serve_processes,
    )


@contextlib.contextmanager
def baseline_target(
    config_path: str | None,
    config: ServiceConfig,
    like: Target,
    progress: Progress,
    *,
    port: int,
    ready_timeout_s: float,
    keep_warm_for_s: float | None = None,
    engine: str | None = None,
) -> Iterator[Target]:
    """The no-Ray peer with ``like``'s credentials; stopped on exit. ``keep_warm_for_s``:
    ``batching.keep_warm_for_s`` instead of the config's; ``engine``:
    ``serving.predictor_engine`` instead of the config's."""
    from app.bench import baseline
    from app.serve import runner as serve_runner

    port = port or free_port()
    pinned = f", predictor engine {engine}" if engine else ""
    progress(f"starting the no-Ray peer (uvicorn, one process) on port {port}{pinned}")
    proc = baseline.launch(
        config_path,
        port=port,
        registry=Path(config.model_registry.path),
        keep_warm_for_s=keep_warm_for_s,
        engine=engine,
    )
    try:
        verify = serve_runner.ssl_context(like.ca_file)
        info = serve_runner.wait_ready(proc.url, verify=verify, timeout_s=ready_timeout_s)
        progress(f"peer ready at {proc.url} after {info.waited_s:.1f}s")
        yield Target(
            "baseline",
            proc.url,
            like.ca_file,
            like.api_key,
            like.stats_token,
            lambda: {proc.pid: "baseline"},
        )
    finally:
        proc.stop()


def hello_certs(config: ServiceConfig, ca_hint: Path | None) -> tuple[Path, Path, Path] | None:
    """(certificate, key, CA) for the hello app: the service's, made as the demo makes them."""
    tls = config.network_security.tls
    if not tls.enabled:
        return None
    if not (tls.cert_path.exists() and tls.key_path.exists()):
        from app.security.dev_certs import ensure_dev_certs

        ensure_dev_certs(tls.cert_path.parent)
    ca = tls.cert_path.parent / "ca.crt"
    return tls.cert_path, tls.key_path, ca if ca.exists() or ca_hint is None else ca_hint


@contextlib.contextmanager
def hello_target(
    config: ServiceConfig, ca_hint: Path | None, progress: Progress, *, ready_timeout_s: float
) -> Iterator[Target]:
    from app.bench import hello
    from app.serve import runner as serve_runner

    certs = hello_certs(config, ca_hint)
    cert, key, ca = certs if certs else (None, None, None)
    port = free_port()
    progress(f"starting the bare hello app (uvicorn + TLS) on port {port}")
    proc = hello.launch(port=port, certfile=cert, keyfile=key)
    try:
        verify = serve_runner.ssl_context(ca) if ca else False
        serve_runner.wait_ready(proc.url, verify=verify, timeout_s=ready_timeout_s)
        yield Target("hello", proc.url, ca, "", None, lambda: {proc.pid: "hello"})
    finally:
        proc.stop()
