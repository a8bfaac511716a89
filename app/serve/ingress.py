"""The gateway Serve deployment: FastAPI ingress holding a handle to the predictor.

The FastAPI app is built inside the replica (``__serve_build_asgi_app__``), after the
constructor has the configuration and the handle, so routes stay plain functions that
read ``app.state.gateway`` and the same ``create_app`` serves the API tests.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import ray
import structlog
from ray import serve
from ray.serve.handle import DeploymentHandle

from app.api.app import create_app
from app.config import ServiceConfig
from app.gateway.heap import settle_heap
from app.gateway.predictor_socket import PredictorSockets
from app.gateway.state import GatewayState, build_gateway_state
from app.observability.logging import configure_logging
from app.observability.ray_export import gateway_export
from app.serve.node_priority import keep_housekeeping_low
from app.serve.serve_patches import (
    announce_drain,
    answer_at_the_edge,
    ignore_client_timeout_header,
    reuse_address_on_restart,
)
from model.common.protocol import BatchResult, PredictBatch, PredictError, PredictorStatus, Routing
from model.common.wire import socket_directory

log = structlog.get_logger("app.serve.ingress")

GATEWAY_NAME = "gateway"
_RUNNING = "RUNNING"  # ReplicaState is a str enum: its members compare equal to this


def _serve_details() -> dict[str, Any] | None:
    """The controller's ``get_serve_instance_details`` as sent; None (logged once) where
    this Ray's Serve client has no such call."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    fetch = getattr(client, "get_serve_details", None)
    if fetch is None:
        _warn_once("serve_details_missing")
        return None
    details: dict[str, Any] = fetch()
    return details


_warned: set[str] = set()


def _warn_once(event: str) -> None:
    if event not in _warned:
        _warned.add(event)
        log.warning(event, fallback="serve.status()")


class ServeCluster:
    """Replica counts from the Serve controller, cached: a blocking round trip, so it runs
    on a thread and at most every few seconds.

    The counts come from the controller's details as the plain dict it sends
    (``get_serve_details``), not from ``serve.status()``: that one rebuilds the whole
    dict as pydantic models first, cloudpickling every deployment's request router on
    the way, 20 ms of this replica's CPU per call against 0.6 ms (BENCHMARKS.md, session
    17), a burst that held the GIL from the serving loop every refresh. Where this Ray
    lacks the client call, ``serve.status()`` answers as before."""

    def __init__(self, app_name: str, ttl_s: float = 5.0) -> None:
        self.app_name = app_name
        self.ttl_s = ttl_s
        self._cached: dict[str, int] = {}
        self._at = 0.0

    def _fetch(self) -> dict[str, int]:
        details = _serve_details()
        if details is None:
            return self._fetch_status()
        app = (details.get("applications") or {}).get(self.app_name)
        if app is None:
            return {}
        return {
            name: sum(1 for r in d.get("replicas", ()) if r.get("state") == _RUNNING)
            for name, d in (app.get("deployments") or {}).items()
        }

    def _fetch_status(self) -> dict[str, int]:
        app = serve.status().applications.get(self.app_name)
        if app is None:
            return {}
        return {
            name: sum(n for state, n in d.replica_states.items() if state == _RUNNING)
            for name, d in app.deployments.items()
        }

    async def replicas(self) -> dict[str, int]:
        if time.monotonic() - self._at > self.ttl_s:
            try:
                self._cached = await asyncio.to_thread(self._fetch)
            except Exception as exc:  # the controller may be busy; stale beats failing
                log.warning("replica_count_failed", error=type(exc).__name__)
            self._at = time.monotonic()
        return dict(self._cached)


@serve.deployment(name=GATEWAY_NAME)
@serve.ingress()
class Gateway:
    def __init__(
        self,
        predictor: DeploymentHandle,
        config: dict[str, Any],
        controller: DeploymentHandle | None = None,
    ) -> None:
        self.config = ServiceConfig.model_validate(config)
        ctx = serve.get_replica_context()
        # One log file per replica process: replicas sharing a file would fight over
        # rotation.
        configure_logging(self.config.logging, component=f"gateway-{ctx.replica_id.unique_id}")
        ignore_client_timeout_header()
        reuse_address_on_restart()
        self._state: GatewayState | None = None
        announce_drain(self._begin_stop)
        self.predictor = predictor
        self.controller = controller
        self.app_name = ctx.app_name
        # Ray's housekeeping on this node yields the CPU to the replicas.
        keep_housekeeping_low(self.config.serving.housekeeping_niceness, app_name=ctx.app_name)

    def _begin_stop(self) -> None:
        if self._state is not None:
            self._state.begin_stop()

    async def _dispatch(self, batch: PredictBatch) -> BatchResult | PredictError:
        result: BatchResult | PredictError = await self.predictor.predict.remote(batch)
        return result

    async def _status(self) -> PredictorStatus:
        status: PredictorStatus = await self.predictor.status.remote()
        return status

    async def _routing(self) -> Routing:
        assert self.controller is not None
        routing: Routing = await self.controller.routing.remote()
        return routing

    async def _report(self, counts: dict[str, tuple[int, int]]) -> None:
        assert self.controller is not None
        await self.controller.report.remote(counts)

    async def _report_shadow(self, green_key: str, report: dict[str, float]) -> None:
        assert self.controller is not None
        await self.controller.report_shadow.remote(green_key, report)

    def _socket_directory(self) -> Path | None:
        if not self.config.serving.same_node_socket:
            return None
        return socket_directory(ray.get_runtime_context().get_node_id(), self.app_name)

    def __serve_build_asgi_app__(self) -> Any:
        config = self.config
        # Batches go to a predictor replica on this node over its socket when there is
        # one, through the handle otherwise (app/gateway/predictor_socket.py).
        sockets = PredictorSockets(self._socket_directory(), self._dispatch)
        state = build_gateway_state(
            config,
            dispatch=sockets.dispatch,
            probe=self._status,
            cluster=ServeCluster(self.app_name),
            rollout=(self._routing, self._report) if self.controller is not None else None,
            push_shadow=self._report_shadow,
        )
        state.predictor_sockets = sockets
        sockets.on_call = state.metrics.observe_predictor_call
        state.extra_stats["predictor_socket"] = sockets.view
        self._state = state
        registry = state.metrics.registry
        # Each replica's numbers on its node's exporter too: with several gateways, the
        # only complete view (deploy/METRICS.md).
        self._ray_export = gateway_export(config.metrics, registry)
        app = create_app(config, state, metrics_registry=registry, behind_serve_proxy=True)
        fast = getattr(app.state, "fast_predict", None)
        if fast is not None and config.serving.gateway.answer_at_edge:
            answer_at_the_edge(fast.take, fast.refuse)
        # Objects built so far live as long as the replica: out of every collection.
        settle_heap()
        return app
