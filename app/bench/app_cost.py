"""CPU per request of the gateway app alone: no sockets, no TLS, a stand-in predictor.

The gateway's event loop is the bottleneck of the Serve stack on a small machine
(BENCHMARKS.md), and most of its time is the app's own Python per request. This calls the
ASGI app directly (the same ``create_app`` + ``build_gateway_state`` as the gateway, with
this config's security, logging and metrics), ``concurrency`` requests at a time so the
batcher batches, and reports ``time.process_time()`` per request: the number to watch
while trimming middleware, dependencies, parsing or logging. The stand-in predictor
answers at once with zeros, so the model's cost is not in it::

    python -m app.bench.app_cost --config deploy/config.local.yaml
    python -m app.bench.app_cost --config deploy/config.local.yaml --path /healthz
    python -m app.bench.app_cost --config deploy/config.local.yaml --path /predict/batch

By default it measures the prediction fast path (app/api/fast_predict.py) and the
framework path (``serving.gateway.fast_path: false``) alternately in one sitting.

It uses the demo material (`cnnlstm serve --demo` makes it: API key, model, certificates).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from typing import Any

import numpy as np

from app.api.app import create_app
from app.bench.payloads import batch_payloads, predict_payloads
from app.config.env import load_service_config
from app.gateway.cluster import StaticCluster
from app.gateway.heap import settle_heap
from app.gateway.state import build_gateway_state
from app.observability.logging import configure_logging
from model.common.protocol import BatchResult, PredictBatch, PredictorStatus
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry


def _stand_in(ref: ModelRef) -> tuple[Any, Any]:
    async def dispatch(batch: PredictBatch) -> BatchResult:
        zeros = np.zeros((batch.rows, 2))
        return BatchResult(
            ref=batch.ref, outputs=zeros, forward_rows=batch.rows, model_ms=0.0, horizon_bars=1
        )

    async def status() -> PredictorStatus:
        return PredictorStatus(ready=True, stage="ready", model=ref)

    return dispatch, status


async def call(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> int:
    """One request through the ASGI app; returns the status code."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(int(message["status"]))

    await app(scope, receive, send)
    return status[0]


async def measure(
    app: Any,
    *,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    bodies: list[bytes],
    requests: int,
    concurrency: int,
    repeats: int = 3,
) -> dict[str, Any]:
    """Microseconds of process CPU per request, one figure per repeat (after a warm-up)."""
    statuses: set[int] = set()

    async def round_(n: int, offset: int) -> None:
        for start in range(0, n, concurrency):
            got = await asyncio.gather(
                *(
                    call(app, method, path, headers, bodies[(offset + start + k) % len(bodies)])
                    for k in range(min(concurrency, n - start))
                )
            )
            statuses.update(got)

    await round_(min(requests, 200), 0)
    # As the Serve gateway does once its replica is built (app/serve/ingress.py): the
    # objects that live as long as the app stay out of every collection. Unfrozen, they
    # made each collection here walk them, ~0.4 ms more per 32-symbol batch request.
    thresholds = gc.get_threshold()
    settle_heap()
    per_request = []
    try:
        for r in range(repeats):
            cpu0 = time.process_time()
            await round_(requests, r * requests)
            per_request.append((time.process_time() - cpu0) / requests * 1e6)
    finally:
        gc.unfreeze()  # the next variant of a --fast-path compare starts as this one did
        gc.set_threshold(*thresholds)
    return {
        "path": path,
        "requests": requests,
        "concurrency": concurrency,
        "cpu_us_per_request": [round(x, 1) for x in per_request],
        "min_cpu_us_per_request": round(min(per_request), 1),
        "median_cpu_us_per_request": round(statistics.median(per_request), 1),
        "statuses": sorted(statuses),
    }


async def run(
    config_path: str | None,
    path: str,
    requests: int,
    concurrency: int,
    *,
    fast_path: bool,
    symbols: int = 32,
) -> dict[str, Any]:
    from app.cli.demo import prepare_demo

    _, config = load_service_config(config_path)
    config.serving.gateway.fast_path = fast_path
    demo = prepare_demo(config, log=False)
    configure_logging(config.logging, component="app-cost")
    registry = config.model_registry
    dispatch, status = _stand_in(ModelRegistry(registry.path).resolve(registry.default_model))
    state = build_gateway_state(config, dispatch=dispatch, probe=status, cluster=StaticCluster())
    app = create_app(config, state, metrics_registry=state.metrics.registry)
    header = config.security.authentication.api_key_header.lower().encode()
    headers = [(b"host", b"localhost"), (b"content-type", b"application/json")]
    headers.append((header, demo.api_key.encode()))
    if path == "/predict":
        method, bodies = "POST", list(predict_payloads().bodies)
    elif path == "/predict/batch":
        method, bodies = "POST", list(batch_payloads(symbols).bodies)
    else:
        method, bodies = "GET", [b""]
    async with app.router.lifespan_context(app):
        await state.readiness.refresh()  # the stand-in is ready at once
        return await measure(
            app,
            method=method,
            path=path,
            headers=headers,
            bodies=bodies,
            requests=requests,
            concurrency=concurrency,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="YAML configuration (as cnnlstm --config)")
    parser.add_argument(
        "--path", default="/predict", choices=["/predict", "/predict/batch", "/healthz", "/ready"]
    )
    parser.add_argument("--symbols", type=int, default=32, help="items per /predict/batch body")
    parser.add_argument("--requests", type=int, default=2000, help="per repeat (3 repeats)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument(
        "--fast-path",
        choices=["on", "off", "compare"],
        default="compare",
        help="serving.gateway.fast_path; compare: off, on, off, on in one sitting",
    )
    args = parser.parse_args(argv)
    variants = {"on": [True], "off": [False], "compare": [False, True, False, True]}
    best: dict[bool, float] = {}
    ok = True
    for fast in variants[args.fast_path]:
        out = asyncio.run(
            run(
                args.config,
                args.path,
                args.requests,
                args.concurrency,
                fast_path=fast,
                symbols=args.symbols,
            )
        )
        label = "fast path" if fast else "framework"
        print(
            f"{out['path']} [{label}]: {out['min_cpu_us_per_request']:.0f} us CPU per request "
            f"(min of {out['cpu_us_per_request']}), {out['concurrency']} in flight, statuses "
            f"{out['statuses']}"
        )
        best[fast] = min(best.get(fast, float("inf")), out["min_cpu_us_per_request"])
        ok = ok and out["statuses"] == [200]
    if len(best) == 2:
        print(
            f"{args.path}: fast path {best[True]:.0f} us vs framework {best[False]:.0f} us "
            f"({best[True] / best[False]:.2f}x); target 500 us"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
