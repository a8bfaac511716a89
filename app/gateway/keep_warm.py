"""Keep an idle gateway's prediction path warm (``batching.keep_warm_ms``).

On a VM a lone request after a quiet second runs its whole path on cold caches: ~20
steps of 50-250 us each, the forward itself twice its warm time (BENCHMARKS.md, sessions
20, 22 and 32). With another stream of requests 20 ms apart on the same stack, a lone
request's p50 fell by 0.8-1.4 ms (session 32). So when no row has been queued or answered
for ``keep_warm_ms``, the gateway sends one synthetic row the way a real one goes: the
batcher's queue and features, the call to a predictor replica (its socket or the handle),
the predictor's forward and answer; 0.35-1.1 ms off the lone request's p50 in 9
alternated pairs. It is counted nowhere: not in the metrics, the access or audit lines,
``/stats``, the rollout's outcome counts, or the rows the predictor reports to the
autoscaler (``PredictBatch.warm``).

What it costs: one row's path every ``keep_warm_ms`` while the gateway is idle (3-10 %
of a core at 20 ms on the 2-vCPU box of session 32), nothing under traffic (a row every
``keep_warm_ms`` or faster suppresses it), and a real row that arrives during a
warm forward waits for that forward on the predictor (below 1 ms on a CPU).

It warms only for ``keep_warm_for_s`` after the last real request: sparse traffic keeps
its path warm, a gateway nobody calls (off-hours, or a bench's idle system beside the
one being measured) spends nothing. Before the first real request it does not warm.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import structlog

from app.gateway.batcher import Batcher
from app.gateway.windows import Window
from model.common.features import WINDOW, validate_bars
from model.common.refs import ModelRef
from model.common.tasks import cancel_and_wait

log = structlog.get_logger("app.gateway.keep_warm")

# A warm call that has no answer by then is given up (the predictor is restarting, or
# slow): real rows and the readiness probe report such trouble, not this.
ANSWER_TIMEOUT_S = 2.0
# Outside its horizon it looks for a new request this often: 4 wake-ups a second, so the
# first gap after a quiet spell is warmed from at most this far into it.
DORMANT_POLL_S = 0.25


def synthetic_window(seed: int = 7) -> Window:
    """A plausible, fixed OHLCV window (a random walk around 1.1, one-minute bars)."""
    rng = np.random.default_rng(seed)
    close = 1.1 * np.exp(np.cumsum(rng.normal(0.0, 2e-4, WINDOW)))
    open_ = np.concatenate([[1.1], close[:-1]])
    high = np.maximum(open_, close) * (1 + 1e-4)
    low = np.minimum(open_, close) * (1 - 1e-4)
    volume = rng.uniform(500.0, 1500.0, WINDOW)
    bars = np.stack([open_, high, low, close, volume], axis=1)
    problem = validate_bars(bars)
    if problem is not None:  # a bug here, never the caller's
        raise AssertionError(f"synthetic window: {problem}")
    timestamps = 1_700_000_000 + 60 * np.arange(WINDOW, dtype=np.int64)
    return Window(symbol="KEEPWARM", bars=bars, timestamps=timestamps, as_of=int(timestamps[-1]))


class KeepWarm:
    """Sends a warm row through ``batcher`` whenever it has been idle ``interval_s``,
    until ``for_s`` after the last real request."""

    def __init__(
        self,
        batcher: Batcher,
        *,
        interval_s: float,
        for_s: float,
        in_service: Callable[[], ModelRef | None],
        busy: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        dormant_poll_s: float = DORMANT_POLL_S,
    ) -> None:
        self.batcher = batcher
        self.interval_s = interval_s
        self.for_s = for_s
        self._dormant_poll_s = max(interval_s, dormant_poll_s)
        self._in_service = in_service  # the version to warm; None: not ready, skip
        self._busy = busy  # requests in the gateway but not yet queued, or stopping
        self._clock = clock
        self._window = synthetic_window()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0  # warm rows answered (for tests and /stats)
        self.failed = 0
        self.last_at: float | None = None  # wall clock of the last one answered (bench)

    def view(self) -> dict[str, float | int | bool | None]:
        """For ``/stats``: the settings, whether it is warming now, the warm rows
        answered and failed, and when the last was answered (unix seconds)."""
        return {
            "interval_ms": self.interval_s * 1000.0,
            "for_s": self.for_s,
            "active": self.active(),
            "sent": self.sent,
            "failed": self.failed,
            "last_at": self.last_at,
        }

    def active(self) -> bool:
        """Whether a real request came within ``for_s``: only then does it warm."""
        return self._clock() - self.batcher.last_request <= self.for_s

    def start(self) -> None:
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="keep-warm")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            if not self.active():  # nobody called lately: look again in a moment
                await asyncio.sleep(self._dormant_poll_s)
                continue
            idle_s = self._clock() - self.batcher.last_active
            if idle_s < self.interval_s:
                await asyncio.sleep(self.interval_s - idle_s)
                continue
            await self.warm_once()
            await asyncio.sleep(self.interval_s)

    async def warm_once(self) -> bool:
        """One warm row now if the gateway is idle; whether it was answered."""
        ref = self._in_service()
        if ref is None or self._busy():
            return False
        future = self.batcher.warm(ref, self._window)
        if future is None:
            return False
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                await future
        except asyncio.CancelledError:
            if future.cancelled() and not _cancelling():
                return False  # left out for a real row (Batcher._take)
            raise
        except Exception as exc:  # the predictor's trouble reaches real rows and /ready
            self.failed += 1
            if self.failed == 1 or self.failed % 1000 == 0:
                log.info("keep_warm_failed", error=type(exc).__name__, failed=self.failed)
            return False
        finally:
            if not future.done():
                future.cancel()  # timed out: the row leaves the queue
        self.sent += 1
        self.last_at = time.time()
        return True


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
