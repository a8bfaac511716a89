"""The predictor's readiness, polled in the background so requests never wait for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from model.common.protocol import PredictorStatus
from model.common.refs import ModelRef
from model.common.tasks import cancel_and_wait, run_every

log = structlog.get_logger("app.gateway.readiness")


class Readiness:
    """Polls the predictor's status so ``/ready`` and ``/predict`` answer without waiting.

    Until a status with ``ready=True`` arrives, ``/predict`` answers 503 at once instead
    of queueing behind a replica that is still loading.
    """

    def __init__(
        self,
        probe: Callable[[], Awaitable[PredictorStatus]],
        *,
        timeout_s: float,
        period_s: float = 1.0,
    ) -> None:
        self._probe = probe
        self.timeout_s = timeout_s
        self.period_s = period_s
        self.status = PredictorStatus(ready=False, stage="starting")
        self.checked_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._generation = 0  # bumped by mark_unreachable: older polls are stale
        # Called when a poll finds a ready predictor unreachable (the state fails the rows
        # in flight: they went to a replica that no longer answers).
        self.on_lost: Callable[[], None] = lambda: None

    @property
    def ready(self) -> bool:
        return self.status.ready

    @property
    def model(self) -> ModelRef | None:
        return self.status.model if self.status.ready else None

    def mark_unreachable(self, error: str) -> None:
        """Not ready from now until a status poll started after this call says ready."""
        self._generation += 1
        was_ready = self.status.ready
        self.status = PredictorStatus(ready=False, stage="unreachable", error=error)
        self.checked_at = time.monotonic()
        if was_ready:
            log.warning("predictor_unreachable", error=error)

    async def refresh(self) -> PredictorStatus:
        generation = self._generation
        try:
            async with asyncio.timeout(self.timeout_s):  # never wait_for: see model.common.tasks
                status = await self._probe()
        except TimeoutError:
            status = PredictorStatus(
                ready=False, stage="unreachable", error="predictor did not answer in time"
            )
        except Exception as exc:
            status = PredictorStatus(ready=False, stage="unreachable", error=type(exc).__name__)
        if generation != self._generation:
            return self.status  # marked unreachable while this poll was out: it is stale
        was_ready = self.status.ready
        self.status = status
        self.checked_at = time.monotonic()
        if was_ready and status.stage == "unreachable":
            self.on_lost()
        return self.status

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="readiness")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        await run_every(self._next_poll_s, self._poll, log=log, event="readiness_poll_failed")

    async def _poll(self) -> None:
        before = self.status.ready
        status = await self.refresh()
        if status.ready != before:
            log.info("predictor_readiness", ready=status.ready, stage=status.stage)

    def _next_poll_s(self) -> float:
        # Poll fast until ready, then at the readiness-probe cadence.
        return self.period_s if self.status.ready else min(self.period_s, 0.5)
