"""Shadow scoring: a sample of the rows blue answered, scored again on green, off the path.

While the rollout controller's routing carries a ``shadow_pct`` (a rollout in its shadow
phase or its traffic steps, :mod:`app.control.shadow_agreement`), ``predict_rows`` hands
every answered row to :meth:`ShadowScorer.offer` after the client's answer is settled. The
scorer keeps a sample of those served by blue, with the features blue saw, and a
background task sends them to green in batches and compares the answers. So:

- the client's answer and latency come from blue alone: ``offer`` only samples and appends
  to a bounded deque (no task, no copy, no await);
- shadow work never takes capacity blue needs: rows beyond ``capacity`` are shed, and every
  queued shadow row is shed whenever blue's own queue holds work; one shadow batch is in
  flight at a time;
- green's failures are counted, never returned to anyone.

What it saw is tallied per green version and pushed to the controller with the outcome
counts (:meth:`take`), and recorded in ``shadow_*`` metrics.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import structlog

from app.gateway.batcher import Dispatch
from app.gateway.rows import RowResult
from app.observability.shadow_metrics import ShadowMetrics
from model.common.failures import FailureKind
from model.common.protocol import BatchResult, PredictBatch, PredictError, Routing
from model.common.refs import ModelRef
from model.common.tasks import cancel_and_wait

log = structlog.get_logger("app.gateway.shadow")


class ShadowTally:
    """What one gateway saw of one green since its last report (``REPORT_FIELDS``)."""

    __slots__ = (
        "abs_diff_expected_return", "abs_diff_prob_up", "agree", "errors", "latency_ms",
        "rows", "shed",
    )  # fmt: skip

    def __init__(self) -> None:
        self.rows = self.agree = self.errors = self.shed = 0
        self.abs_diff_prob_up = self.abs_diff_expected_return = self.latency_ms = 0.0

    def as_report(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in self.__slots__}


class ShadowScorer:
    def __init__(
        self,
        dispatch: Dispatch,
        routing: Callable[[], Routing | None],
        *,
        busy: Callable[[], bool],
        metrics: ShadowMetrics,
        max_batch_size: int = 32,
        capacity: int = 256,
        timeout_s: float = 30.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dispatch = dispatch
        self._routing = routing
        self._busy = busy
        self._metrics = metrics
        self.max_batch_size = max_batch_size
        self.capacity = capacity
        self.timeout_s = timeout_s  # a green that hangs costs one batch, not the scorer
        self._rng = rng or random.Random()
        self._clock = clock
        self._queue: deque[tuple[ModelRef, RowResult]] = deque()
        self._tallies: dict[str, ShadowTally] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- hot path ----------------------------------------------------------------------

    def offer(self, rows: list[RowResult]) -> None:
        """Sample the rows of one answered request (called after its answer is settled)."""
        routing = self._routing()
        if routing is None or routing.shadow_pct <= 0 or routing.green is None:
            return
        green, blue, share = routing.green, routing.blue, routing.shadow_pct
        for row in rows:
            if row.ref != blue or row.features is None or self._rng.random() * 100 >= share:
                continue
            if len(self._queue) >= self.capacity:
                self._shed(green, 1)
                continue
            self._queue.append((green, row))
        if self._queue:
            self._start()
            self._wakeup.set()

    # -- background --------------------------------------------------------------------

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="shadow")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            while self._queue:
                if self._busy():  # blue's queue holds work: shadow rows give way
                    while self._queue:
                        green, _ = self._queue.popleft()
                        self._shed(green, 1)
                    break
                green = self._queue[0][0]
                batch: list[RowResult] = []
                while self._queue and len(batch) < self.max_batch_size:
                    if self._queue[0][0] != green:
                        break
                    batch.append(self._queue.popleft()[1])
                await self._score(green, batch)

    async def _score(self, green: ModelRef, rows: list[RowResult]) -> None:
        tally = self._tally(green)
        call = PredictBatch(ref=green, features=np.stack([r.features for r in rows]))  # type: ignore[misc]
        sent = self._clock()
        try:
            async with asyncio.timeout(self.timeout_s):
                result: BatchResult | PredictError = await self._dispatch(call)
        except Exception:  # died, failed, or hung past the timeout: counted, never raised
            result = PredictError(FailureKind.UNAVAILABLE, "the shadow call failed")
        if (
            isinstance(result, PredictError)
            or result.ref != green
            or result.outputs.shape[0] != len(rows)
        ):
            tally.errors += len(rows)
            self._metrics.failed(len(rows))
            return
        latency_ms = (self._clock() - sent) * 1000.0
        self._metrics.latency_ms.observe(latency_ms)
        for row, (expected_return, prob_up) in zip(rows, result.outputs.tolist(), strict=True):
            agree = (prob_up >= 0.5) == (row.prob_up >= 0.5)
            d_prob = abs(min(1.0, max(0.0, prob_up)) - min(1.0, max(0.0, row.prob_up)))
            d_return = abs(expected_return - row.expected_return)
            tally.rows += 1
            tally.agree += agree
            tally.abs_diff_prob_up += d_prob
            tally.abs_diff_expected_return += d_return
            tally.latency_ms += latency_ms
            self._metrics.compared(agree, d_prob, d_return)

    def _tally(self, green: ModelRef) -> ShadowTally:
        tally = self._tallies.get(green.key)
        if tally is None:
            tally = self._tallies[green.key] = ShadowTally()
        return tally

    def _shed(self, green: ModelRef, rows: int) -> None:
        self._tally(green).shed += rows
        self._metrics.shed(rows)

    # -- reporting ---------------------------------------------------------------------

    def take(self) -> dict[str, dict[str, float]]:
        """Each green's tally since the last call (``{green.key: report}``), reset."""
        tallies, self._tallies = self._tallies, {}
        return {key: t.as_report() for key, t in tallies.items()}

    def view(self) -> dict[str, Any]:
        """For ``/stats``: what waits to be scored and what this gateway saw since the
        last report (the controller holds the totals)."""
        return {
            "queued": len(self._queue),
            "capacity": self.capacity,
            "unreported": {key: t.as_report() for key, t in self._tallies.items()},
        }
