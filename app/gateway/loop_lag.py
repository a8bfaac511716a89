"""Shedding when the gateway's own CPU is the bottleneck: how late its event loop runs.

Latency-aware admission (:mod:`app.gateway.admission`) sees the batcher's queue. Measured
on a 2-core box under three times its capacity, that queue stays short: the gateway's own
work (TLS, HTTP parsing, auth, JSON) saturates first, and requests wait in the event loop
where no queue counts them (admitted p99 of 15 s, not one 429). How late a timer fires is
that wait: a monitor sleeps ``period_s`` again and again and keeps a smoothed lag. While
the lag exceeds ``batching.max_loop_lag_ms`` (half of it below the default priority, so
low priority goes first), new predictions are refused with 429 + ``Retry-After``, which
frees the loop for the requests already admitted: past the whole budget before they are
authenticated or parsed (the prediction fast path, ``app.api.fast_predict``), past a
low-priority caller's half once it is authenticated. Probes never pass through here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from app.gateway.admission import LOW_PRIORITY_SHARE
from model.common.tasks import cancel_and_wait

PERIOD_S = 0.05  # 20 wake-ups a second: a fraction of a percent of a core
SMOOTHING = 0.3  # weight of the newest sample: one slow callback does not shed


class LoopLag:
    def __init__(
        self,
        max_lag_s: float,
        *,
        period_s: float = PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_lag_s = max_lag_s  # 0: never shed on lag
        self.period_s = period_s
        self.lag_s = 0.0
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def observe(self, lag_s: float) -> None:
        # One stall (a start-up, a collection) counts at most twice the budget, so on its
        # own it never sheds; lag sustained over a few samples does.
        sample = min(max(0.0, lag_s), 2 * self.max_lag_s) if self.max_lag_s > 0 else lag_s
        self.lag_s = (1 - SMOOTHING) * self.lag_s + SMOOTHING * sample

    def refusal(self, priority: int | None) -> float | None:
        """None to take a request of ``priority``, else the ``Retry-After`` seconds.

        ``priority`` None (not known yet): refused only past every priority's budget."""
        if self.max_lag_s <= 0:
            return None
        low = priority is not None and priority < 0
        budget = self.max_lag_s * (LOW_PRIORITY_SHARE if low else 1.0)
        return 1.0 if self.lag_s > budget else None

    def start(self) -> None:
        if self.max_lag_s > 0 and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            before = self._clock()
            await asyncio.sleep(self.period_s)
            self.observe(self._clock() - before - self.period_s)
