"""The ``rollout_controller`` Serve deployment: the one owner of blue/green and sync state.

One replica, no CPU reservation (it only keeps counters and moves a pointer), no torch.
It wraps :class:`app.control.rollout_engine.RolloutEngine` and runs its control loop as an
asyncio task on the replica's event loop. Every method is ``async`` on purpose: Serve runs
plain ``def`` methods on a thread pool, and the engine's state must only ever be touched
from the one event loop.

Who calls what:

- gateways: ``routing()`` every ~0.5 s, ``report(counts)`` every ~1 s;
- predictors: ``predictor_sync(replica, loaded, failed)`` every few seconds;
- operators (``cnnlstm rollout``): ``start``, ``abort``, ``status``.

The controller asks the predictor deployment (by name: the predictor holds a handle to
the controller, so binding both ways would be a cycle) to validate a version with the
golden-output check, which needs torch.

If this replica dies, Serve starts another; it reloads the state file and carries on.
Gateways keep the last routing they saw meanwhile (falling back to blue only when it goes
stale), predictors keep what they hold, and requests keep flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from ray import serve
from ray.serve.handle import DeploymentHandle

from app.config import ServiceConfig
from app.control.alerts import WebhookNotifier
from app.control.rollout_engine import RolloutEngine
from app.control.rollout_settings import CONTROLLER_NAME, RolloutSettings
from app.control.rollout_state import RolloutStore, default_state_path
from app.observability.logging import configure_logging
from model.common.protocol import PredictError, Routing
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry
from model.common.tasks import run_every

log = structlog.get_logger("app.control.rollout_controller")


def controller_options(config: ServiceConfig) -> dict[str, Any]:
    """Serve options: exactly one replica (it owns the state), no CPU reserved, enough
    concurrency for every gateway and predictor polling it."""
    return {
        "name": CONTROLLER_NAME,
        "num_replicas": 1,
        "ray_actor_options": {"num_cpus": 0},
        "max_ongoing_requests": 1000,
        "health_check_period_s": 10.0,
        "health_check_timeout_s": 10.0,
        # Gateways poll it all the time, so it is never idle when asked to stop: check
        # as often as the other deployments (a laptop's Ctrl-C waits for this too).
        "graceful_shutdown_timeout_s": min(5.0, config.serving.graceful_shutdown_timeout_s),
        "graceful_shutdown_wait_loop_s": config.serving.graceful_shutdown_wait_loop_s,
    }


def state_path(config: ServiceConfig) -> Path:
    return config.blue_green_deployment.state_path or default_state_path(config.model_registry.path)


@serve.deployment(name=CONTROLLER_NAME)
class RolloutController:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = ServiceConfig.model_validate(config)
        replica = serve.get_replica_context().replica_id.unique_id
        configure_logging(self.config.logging, component=f"rollout-controller-{replica}")
        alerting = self.config.monitoring_integration.alerting
        self._predictor: DeploymentHandle | None = None
        self.engine = RolloutEngine(
            RolloutSettings.from_config(self.config),
            ModelRegistry(self.config.model_registry.path),
            store=RolloutStore(state_path(self.config)),
            validator=self._validate_on_predictor,
            notifier=WebhookNotifier(alerting.webhook_url, enabled=alerting.enabled),
        )
        self.interval_s = self.config.blue_green_deployment.control_interval_s
        # Serve runs the constructor inside the replica's event loop.
        self._loop_task = asyncio.get_running_loop().create_task(self._control_loop())

    async def _control_loop(self) -> None:
        # One bad tick is logged and must not stop the controller for good.
        await run_every(self.interval_s, self.engine.tick, log=log, event="rollout_tick_failed")

    async def _predictor_handle(self) -> DeploymentHandle:
        if self._predictor is None:
            name = self.config.deployment.deployment_name
            # A blocking round trip to Serve's controller, once: off the event loop.
            self._predictor = await asyncio.to_thread(serve.get_deployment_handle, name)
        return self._predictor

    async def _validate_on_predictor(self, ref: ModelRef) -> str | None:
        predictor = await self._predictor_handle()
        error: PredictError | None = await predictor.validate.remote(ref)
        return None if error is None else f"{error.kind}: {error.message}"

    # -- handle methods ----------------------------------------------------------------

    async def routing(self) -> Routing:
        return self.engine.routing()

    async def predictor_sync(
        self, replica: str, loaded: list[str], failed: dict[str, str]
    ) -> Routing:
        return self.engine.predictor_sync(replica, loaded, failed)

    async def report(self, counts: dict[str, Sequence[int]]) -> None:
        self.engine.report(counts)

    async def report_shadow(self, green_key: str, report: dict[str, float]) -> None:
        self.engine.report_shadow(green_key, report)

    async def start(self, name: str, version: str, shadow_s: float | None = None) -> dict[str, Any]:
        return await self.engine.start(name, version, shadow_s)

    async def abort(self, reason: str = "aborted by an operator") -> dict[str, Any]:
        return await self.engine.abort(reason)

    async def status(self) -> dict[str, Any]:
        return self.engine.status()

    async def check_health(self) -> None:
        if self._loop_task.done():
            exc = None
            with contextlib.suppress(asyncio.CancelledError):
                exc = self._loop_task.exception()
            raise RuntimeError(f"the rollout control loop stopped: {exc!r}")
