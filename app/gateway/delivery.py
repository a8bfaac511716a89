"""Getting a batch to the predictor: one retry when the handle call itself failed.

A prediction is idempotent, so a batch whose handle call raised (the replica died
mid-call, or the call could not be delivered) is sent once more, never twice; with a
second replica Serve routes the retry to the live one and no row is lost. A typed
:class:`PredictError` is the answer of a live predictor and is never retried.

A dead predictor must not hold rows: Serve's router keeps a call to a deployment whose
only replica died waiting (for a replacement that takes tens of seconds to load), it
does not fail it. So every try is bounded, by how long calls take now: four times the
slowest of the last 64 answered calls, at least ``floor_s`` (0.25 s), at most
``retry_timeout_s`` (``serving.predictor_call_timeout_s``, 2 s; also the bound until
eight calls have been answered). A healthy predictor answers a batch in tens of
milliseconds (admission keeps its queue short), so the bound is rarely above the floor,
and it grows with the calls when the predictor is slower (a GPU, bigger batches). The
retry also gets at most ``retry_budget_s`` (0.5 s) and runs only while some row of the
batch still waits for it, within those rows' deadlines.

A retry that fails too means no replica is answering: ``on_lost`` runs (the gateway
state fails every row in flight or queued with 503 + ``Retry-After`` and marks the
predictor unreachable until its status answers again, so new requests get 503 at once).
With one replica killed under load, every affected request has its 503 within about
two bounds (~0.5 s) of the kill.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import structlog

from app.gateway.rows import QueuedRow
from model.common.protocol import BatchResult, PredictBatch, PredictError

log = structlog.get_logger("app.gateway.delivery")

Dispatch = Callable[[PredictBatch], Awaitable[BatchResult | PredictError]]

RETRY_TIMEOUT_S = 2.0  # a healthy predictor answers a batch in tens of milliseconds
RETRY_BUDGET_S = 0.5  # the second try: a live replica answers it well within this
FLOOR_S = 0.25  # no try is cut off sooner than this
SLOW_FACTOR = 4.0  # a try may take this many times the slowest recent call
RECENT_CALLS = 64  # answered calls the bound is computed from
MIN_CALLS = 8  # until this many calls were answered, the bound is retry_timeout_s


class Delivery:
    def __init__(
        self,
        dispatch: Dispatch,
        *,
        clock: Callable[[], float],
        retry_timeout_s: float = RETRY_TIMEOUT_S,
        retry_budget_s: float = RETRY_BUDGET_S,
        on_lost: Callable[[], None] = lambda: None,
    ) -> None:
        self._dispatch = dispatch
        self._clock = clock
        self.retry_timeout_s = retry_timeout_s
        self.retry_budget_s = min(retry_budget_s, retry_timeout_s)
        self._on_lost = on_lost
        self._recent: deque[float] = deque(maxlen=RECENT_CALLS)  # seconds per answered call
        self.retries = 0  # second tries sent
        self.lost = 0  # batches neither try delivered

    async def send(
        self, call: PredictBatch, rows: Sequence[QueuedRow]
    ) -> BatchResult | PredictError | None:
        """The predictor's answer to ``call``, or None when no try got one."""
        budget = self.bound_s()
        for attempt in range(2):
            if attempt:
                budget = self._retry_budget(rows)
                if budget <= 0:
                    # No row waits for a retry: none is sent, and one failed try says
                    # nothing of the predictor, so the other rows are not failed for it.
                    self.lost += 1
                    return None
                self.retries += 1
            sent = self._clock()
            try:
                async with asyncio.timeout(budget):
                    result = await self._dispatch(call)
            except Exception as exc:  # died, undeliverable, or no answer within the bound
                log.info(
                    "predictor_call_failed",
                    attempt=attempt + 1,
                    bound_s=round(budget, 3),
                    error=type(exc).__name__,
                )
                continue
            self._recent.append(self._clock() - sent)
            return result
        # The retry was sent and failed too: no replica is answering.
        self.lost += 1
        self._on_lost()
        return None

    def bound_s(self) -> float:
        """How long one try may take, from how long answered calls took lately."""
        if len(self._recent) < MIN_CALLS:
            return self.retry_timeout_s
        return min(self.retry_timeout_s, max(FLOOR_S, SLOW_FACTOR * max(self._recent)))

    def _retry_budget(self, rows: Sequence[QueuedRow]) -> float:
        """How long a retry may take: 0 when no row waits for it any more."""
        waiting = [r for r in rows if not r.future.done()]
        if not waiting:
            return 0.0
        budget = min(self.retry_budget_s, self.bound_s())
        if any(r.deadline is None for r in waiting):
            return budget
        latest = max(r.deadline for r in waiting if r.deadline is not None)
        return min(budget, latest - self._clock())
