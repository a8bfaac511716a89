"""The ``cnn_lstm_predictor`` Serve deployment: a thin shell over :class:`PredictorService`.

Serve options (resources, autoscaling, queue limits, health-check timings) are applied by
``app.serve.options.predictor_options`` at bind time; this module only defines the
behaviour. The replica loads, validates and warms the model in service in ``__init__``, so
Serve sends it no traffic until the model is usable, and a version that fails validation
never takes traffic (its replicas never become healthy while the old ones keep serving).

"The model in service" is the rollout controller's blue (``app.control.rollout_controller``)
when the controller answers, else the registry's default: a replica that starts while the
DEFAULT pointer names a version registry sync refused must not crash-loop on it. After
that a :class:`model.follower.RoutingFollower` keeps the replica's versions in line with
the controller (preloading green before traffic shifts to it).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from typing import Any, Protocol

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from model.common.failures import FailureKind
from model.common.log_lines import info_line
from model.common.protocol import (
    BatchResult,
    PredictBatch,
    PredictError,
    PredictorStatus,
    Routing,
    as_predict_error,
)
from model.common.refs import ModelRef
from model.common.wire import socket_directory
from model.follower import RoutingFollower
from model.service import PredictorService, PredictorSettings
from model.socket_server import SocketServer

log = logging.getLogger("model.deployment")
BATCH_LOGGER = "model.batches"
# A lone call's batch line is written this long after its answer (see ``_answers``).
LINE_AFTER_ANSWER_S = 0.005

DEPLOYMENT_NAME = "cnn_lstm_predictor"


def _rows(batches: list[PredictBatch]) -> int:
    return sum(b.rows for b in batches)


class BatchMetrics(Protocol):
    """Where a replica records each forward it ran (``app.observability.replica_metrics``,
    exported by Ray's node exporter), built by the factory the app hands in."""

    def observe_batch(self, *, size: int, model_ms: float) -> None: ...

    def close(self) -> None: ...


@serve.deployment(name=DEPLOYMENT_NAME)
class PredictorDeployment:
    # Serve awaits an async constructor; it lets the replica ask the controller which
    # version to load and load it on a worker thread, off the replica's event loop.
    async def __init__(  # type: ignore[misc]
        self,
        settings: dict[str, Any],
        controller: DeploymentHandle | None = None,
        log_setup: Callable[..., None] | None = None,
        metrics_setup: Callable[[], BatchMetrics | None] | None = None,
    ) -> None:
        if log_setup is not None:
            # JSON lines like every other component, one file per replica process.
            unique = serve.get_replica_context().replica_id.unique_id
            log_setup(component=f"predictor-{unique}")
        self.metrics = metrics_setup() if metrics_setup is not None else None
        self.service = PredictorService(PredictorSettings.from_dict(settings))
        self._queued = 0  # calls in the batch queue or its forward (the idle fast path's gauge)
        self.controller = controller
        self.follower: RoutingFollower | None = None
        self.socket: SocketServer | None = None
        in_service = await self._in_service_ref()
        try:
            await asyncio.to_thread(self.service.load_default, in_service)
        except Exception:
            if in_service is None:
                raise
            log.exception("in_service_load_failed", extra={"model": in_service.key})
            await asyncio.to_thread(self.service.load_default, None)
        # A full collection over torch's many objects stalls a request for 100+ ms every
        # few seconds. Everything allocated so far lives as long as the replica.
        gc.collect()
        gc.freeze()
        if controller is not None:
            replica = serve.get_replica_context().replica_id.unique_id
            self.follower = RoutingFollower(
                self.service,
                self._sync_routing,
                replica,
                poll_s=self.service.settings.routing_poll_s,
            )
            self.follower.start()
        if self.service.settings.same_node_socket:
            await self._open_socket()

    async def _open_socket(self) -> None:
        """Gateways on this node call ``predict`` over a Unix socket (model.socket_server);
        opened last, so no call arrives before the model is loaded and warm."""
        ctx = serve.get_replica_context()
        directory = socket_directory(ray.get_runtime_context().get_node_id(), ctx.app_name)
        server = SocketServer(
            directory / f"{ctx.replica_id.unique_id}.sock", self.predict, self.answer_now
        )
        try:
            await server.start()
        except OSError as exc:  # gateways use the handle then
            log.warning("socket_unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        self.socket = server

    async def __del__(self) -> None:
        # Serve calls this once the handle calls are drained: the socket's calls next.
        if self.socket is not None:
            await self.socket.stop(self.service.settings.socket_drain_s)
            self.socket = None
        if self.metrics is not None:
            self.metrics.close()

    async def _sync_routing(
        self, replica: str, loaded: list[str], failed: dict[str, str]
    ) -> Routing:
        assert self.controller is not None
        routing: Routing = await self.controller.predictor_sync.remote(replica, loaded, failed)
        return routing

    async def _in_service_ref(self) -> ModelRef | None:
        if self.controller is None:
            return None
        try:
            async with asyncio.timeout(10.0):  # not wait_for: see model.common.tasks
                routing: Routing = await self._routing()
        except Exception as exc:  # no controller yet: the registry's default will do
            log.warning("controller_unreachable_at_start", extra={"error": type(exc).__name__})
            return None
        return routing.blue

    async def _routing(self) -> Routing:
        assert self.controller is not None
        routing: Routing = await self.controller.routing.remote()
        return routing

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Lightweight updates (no replica restart): batch size and wait."""
        if "max_batch_size" in user_config:
            batched: Any = self.predict_batch  # serve.batch adds the setters at runtime
            batched.set_max_batch_size(int(user_config["max_batch_size"]))
        if "batch_wait_timeout_s" in user_config:
            waiting: Any = self.predict_batch
            waiting.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01, batch_size_fn=_rows)
    async def predict_batch(self, batches: list[PredictBatch]) -> list[BatchResult | PredictError]:
        # The forward runs on a worker thread so this replica's event loop keeps taking
        # calls (and health checks) while torch computes.
        results = await asyncio.to_thread(self.service.predict_batches, batches)
        return self._answers(batches, results)

    def _answers(
        self,
        batches: list[PredictBatch],
        results: list[BatchResult | Exception],
        *,
        log_later: bool = False,
    ) -> list[BatchResult | PredictError]:
        """The callers' answers, and the batch's log line and metrics: at once, or
        (``log_later``) ``LINE_AFTER_ANSWER_S`` later, when the gateway has read the answer
        and written its response. Rendering and writing the line costs 0.2-0.4 ms of a cold loop at
        1 req/s. Where the kernel runs both replicas on one CPU (the 2-vCPU VM of
        BENCHMARKS.md session 25 did so in about half of the lone requests traced), a line
        written on the loop's next turn held the gateway's read of the answer back by
        ~0.2 ms."""
        answers = [r if isinstance(r, BatchResult) else as_predict_error(r) for r in results]
        if all(b.warm for b in batches):
            return answers  # keep-warm calls leave no line and no metrics
        done = [r for r in results if isinstance(r, BatchResult)]
        # One line per forward, carrying the gateway's request ids so a request can be
        # followed from its access line to the batch that computed it.
        # Rendered by the process's own renderer (model.common.log_lines): half the CPU
        # of structlog's chain.
        rows = sum(b.rows for b in batches if not b.warm)
        fields = {
            "calls": len(batches),
            "rows": rows,
            "forward_rows": max((r.forward_rows for r in done), default=0),
            "model_ms": round(done[0].model_ms, 3) if done else None,
            "failed": len(results) - len(done),
            "request_ids": [rid for b in batches for rid in b.request_ids],
        }
        metrics, model_ms = self.metrics, done[0].model_ms if done else None

        def after() -> None:
            info_line(BATCH_LOGGER, "predict_batch", fields)
            if metrics is not None and model_ms is not None:
                metrics.observe_batch(size=rows, model_ms=model_ms)

        if log_later:
            asyncio.get_running_loop().call_later(LINE_AFTER_ANSWER_S, after)
        else:
            after()
        return answers

    def answer_now(self, batch: PredictBatch) -> BatchResult | PredictError | None:
        """The answer to ``batch`` computed on this loop now, or None when it goes to the
        batch queue (``predict``). The socket server calls this as it reads a call."""
        if not self.service.ready:
            return PredictError(FailureKind.NOT_READY, "model is not loaded yet")
        if not self._inline(batch):
            return None
        # The line after the answer: a lone call's reply does not wait for its rendering
        # and write (BENCHMARKS.md, sessions 14 and 25).
        results = self.service.predict_batches([batch])
        return self._answers([batch], results, log_later=True)[0]

    async def predict(self, batch: PredictBatch) -> BatchResult | PredictError:
        answer = self.answer_now(batch)
        if answer is not None:
            return answer
        self._queued += 1
        try:
            result: BatchResult | PredictError = await self.predict_batch(batch)
        finally:
            self._queued -= 1
        return result

    def _inline(self, batch: PredictBatch) -> bool:
        """Run ``batch`` on this event loop, now? Only on an idle CPU replica, for a small
        call to a model already loaded: there is nothing to batch it with, and the queue
        and the worker thread cost a lone call ~1 ms of hand-offs (BENCHMARKS.md, session
        11). Under load the rows were batched in the gateway before they came here
        (``app.gateway.batcher``). The loop is held for one small forward (a few ms at
        most): calls that arrive meanwhile wait for it unread and then take this path one by
        one, while a call that arrives during a queued forward joins the queue. GPU replicas
        keep the queue (their CUDA graphs were captured from the worker threads; not
        measured on the loop)."""
        if self._queued or not 0 < batch.rows <= self.service.settings.inline_idle_rows:
            return False
        model = self.service.versions.get(batch.ref)
        return model is not None and str(model.device) == "cpu"

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Rows served so far: the market-hours policy turns this into requests/s for
        ``target_throughput_per_replica``."""
        stats = {"requests_total": float(self.service.rows)}
        if self.socket is not None:
            # Calls in flight on the socket are invisible to Serve's ongoing-request count;
            # the autoscaling policy adds them (app.scaling.autoscaling_policy).
            stats["socket_ongoing"] = float(self.socket.in_flight)
        return stats

    async def status(self) -> PredictorStatus:
        return self.service.status()

    async def validate(self, ref: ModelRef) -> PredictError | None:
        """Load ``ref`` into this replica's cache with the golden-output check (registry
        sync asks before it switches the version in service); None when it is servable."""
        try:
            await asyncio.to_thread(self.service.preload, ref)
        except Exception as exc:
            error = as_predict_error(exc)
            return PredictError(error.kind, f"{type(exc).__name__}: {exc}")
        return None

    def check_health(self) -> None:
        status = self.service.status()
        if not status.ready:
            raise RuntimeError(f"predictor not ready: {status.stage} {status.error or ''}")
