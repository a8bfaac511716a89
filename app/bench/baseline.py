"""The no-Ray peer: one uvicorn process, the same app, the same model, in-process batching.

This is what a user would otherwise pick, so ``cnnlstm bench --compare-baseline`` puts
Serve next to it. It is built from the very pieces the Serve gateway uses (``create_app``,
``GatewayState``, ``Batcher``, ``FeatureCache``, ``Readiness``, the same security, logging
and metrics), so the only difference measured is the serving substrate: here the batcher
hands each batch to :class:`model.service.PredictorService` on a worker thread in the same
process, where the gateway sends it through a Serve handle to a predictor replica.

Run it as its own process so it gets its own core time and RSS::

    python -m app.bench.baseline --config deploy/config.local.yaml --port 8100

torch is imported lazily by ``model.service`` when the model loads; nothing in ``app/``
imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI
from pydantic import ValidationError

from app.api.app import create_app
from app.bench.server_process import KEEP_ALIVE_S, ServerProcess
from app.config import ServiceConfig
from app.config.env import Settings, load_service_config
from app.gateway.cluster import StaticCluster
from app.gateway.heap import settle_heap
from app.gateway.state import build_gateway_state
from app.observability.logging import configure_logging
from app.serve.predictor_settings import predictor_settings as base_predictor_settings
from model.common.protocol import (
    BatchResult,
    PredictBatch,
    PredictError,
    PredictorStatus,
    as_predict_error,
)
from model.service import PredictorService, PredictorSettings


def predictor_settings(config: ServiceConfig, settings: Settings) -> PredictorSettings:
    """The same settings a Serve predictor replica gets (``app.serve.predictor_settings``)."""
    return PredictorSettings.from_dict(base_predictor_settings(config, settings))


class InProcessPredictor:
    """The predictor replica's role, in this process: one forward at a time on one worker
    thread (like ``@serve.batch`` with one concurrent batch), so the event loop keeps
    parsing requests and computing features while torch runs."""

    def __init__(self, service: PredictorService) -> None:
        self.service = service
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")

    async def dispatch(self, batch: PredictBatch) -> BatchResult | PredictError:
        loop = asyncio.get_running_loop()
        [result] = await loop.run_in_executor(self._executor, self.service.predict_batches, [batch])
        return result if isinstance(result, BatchResult) else as_predict_error(result)

    async def status(self) -> PredictorStatus:
        return self.service.status()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def build_baseline_app(config: ServiceConfig, predictor: InProcessPredictor) -> FastAPI:
    """The gateway's app around an in-process predictor: the same wiring as the Serve
    gateway (``app.gateway.state.build_gateway_state``), only the dispatch differs."""
    state = build_gateway_state(
        config,
        dispatch=predictor.dispatch,
        probe=predictor.status,
        cluster=StaticCluster({"baseline": 1}),
    )
    return create_app(config, state, metrics_registry=state.metrics.registry)


def serve(config: ServiceConfig, settings: Settings, *, host: str, port: int) -> None:
    """Load and warm the model, then serve until SIGTERM/SIGINT (blocking)."""
    import uvicorn

    configure_logging(config.logging, component="baseline")
    service = PredictorService(predictor_settings(config, settings))
    service.load_default()
    predictor = InProcessPredictor(service)
    app = build_baseline_app(config, predictor)
    # A full collection over torch's objects stalled this server for 130-150 ms every few
    # seconds; everything built so far lives as long as the process. The gateway's own
    # settings, so the peer runs its app as the Serve gateway does.
    settle_heap()
    tls = config.network_security.tls
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            ssl_certfile=str(tls.cert_path) if tls.enabled else None,
            ssl_keyfile=str(tls.key_path) if tls.enabled else None,
            log_config=None,  # configure_logging's handlers stay in charge
            access_log=False,  # the app writes its own access line per request
            server_header=False,
            lifespan="on",
            timeout_keep_alive=KEEP_ALIVE_S,
        )
    finally:
        predictor.close()


# --- the launcher side (used by the benchmark runner) -----------------------------------


def launch(
    config_path: str | None,
    *,
    port: int,
    registry: Path,
    host: str = "127.0.0.1",
    keep_warm_for_s: float | None = None,
    engine: str | None = None,
) -> ServerProcess:
    """Start ``python -m app.bench.baseline`` (no waiting: poll ``/ready`` yourself)."""
    argv = [sys.executable, "-m", "app.bench.baseline", "--port", str(port), "--host", host]
    argv += ["--registry", str(registry)]
    if keep_warm_for_s is not None:
        argv += ["--keep-warm-for", str(keep_warm_for_s)]
    if engine is not None:
        argv += ["--engine", engine]
    if config_path:
        argv += ["--config", str(config_path)]
    proc = subprocess.Popen(argv, env=dict(os.environ), stdin=subprocess.DEVNULL)
    _, config = load_service_config(config_path)
    scheme = "https" if config.network_security.tls.enabled else "http"
    # Give the child a moment to fail fast on a bad argument before anyone polls it.
    time.sleep(0.2)
    if proc.poll() is not None:
        raise RuntimeError(f"the baseline server exited at once (code {proc.returncode})")
    return ServerProcess(proc, f"{scheme}://{host}:{port}", stop_timeout_s=15.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="YAML configuration (as cnnlstm --config)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--registry", type=Path, default=None, help="model registry path")
    parser.add_argument(
        "--keep-warm-for",
        type=float,
        default=None,
        metavar="S",
        help="batching.keep_warm_for_s, whatever the config says",
    )
    parser.add_argument(
        "--engine",
        default=None,
        metavar="ENGINE",
        help="serving.predictor_engine, whatever the config says (auto, torch, onnxruntime "
        "or a split such as onnxruntime<=4+torch)",
    )
    args = parser.parse_args(argv)
    settings, config = load_service_config(args.config)
    if args.registry is not None:
        config.model_registry.path = args.registry
    if args.keep_warm_for is not None:
        config.batching.keep_warm_for_s = args.keep_warm_for
    if args.engine is not None:
        try:
            config.serving.predictor_engine = args.engine  # validated on assignment
        except ValidationError:
            parser.error(f"--engine: not an engine setting: {args.engine!r}")
    serve(config, settings, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
