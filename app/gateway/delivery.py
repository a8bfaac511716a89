"""Getting a batch to the predictor: one retry when the handle call itself failed.

A prediction is idempotent, so a batch whose handle call raised (the replica died
mid-call, or the call could not be delivered) is sent once more, never twice; with a
second replica Serve routes the retry to the live one and no row is lost. A typed
:class:`PredictError` is the answer of a live predictor and is never retried.

Two bounds keep a dead predictor from holding rows until the gateway's own timeout
(Serve's router keeps a call waiting while a deployment has no running replica, and a
new predictor replica takes tens of seconds to load and warm its model):

- every attempt is bounded by ``retry_timeout_s`` (``serving.predictor_call_timeout_s``,
  2 s: a healthy predictor answers a batch in tens of milliseconds, and admission keeps
  its queue short), so a call that went to a replica that died before it was sent fails
  like one that died under it;
- the retry is sent only while some row of the batch still waits for it (rows cut off by
  the gateway's request timeout are cancelled) and runs within those rows' deadlines.

So a batch gets its answer or a 503 + ``Retry-After`` within about twice the bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from app.gateway.rows import QueuedRow
from model.common.protocol import BatchResult, PredictBatch, PredictError

Dispatch = Callable[[PredictBatch], Awaitable[BatchResult | PredictError]]

RETRY_TIMEOUT_S = 2.0  # a healthy predictor answers a batch in tens of milliseconds


class Delivery:
    def __init__(
        self,
        dispatch: Dispatch,
        *,
        clock: Callable[[], float],
        retry_timeout_s: float = RETRY_TIMEOUT_S,
    ) -> None:
        self._dispatch = dispatch
        self._clock = clock
        self.retry_timeout_s = retry_timeout_s
        self.suspect = False  # the last call failed and none has succeeded since
        self.retries = 0  # second tries sent
        self.lost = 0  # batches neither try delivered

    async def send(
        self, call: PredictBatch, rows: Sequence[QueuedRow]
    ) -> BatchResult | PredictError | None:
        """The predictor's answer to ``call``, or None when no try got one."""
        budget = self.retry_timeout_s
        for attempt in range(2):
            if attempt:
                budget = self._retry_budget(rows)
                if budget <= 0:
                    break
                self.retries += 1
            try:
                async with asyncio.timeout(budget):
                    result = await self._dispatch(call)
            except Exception:  # died, undeliverable, or no answer within the bound
                self.suspect = True
                continue
            self.suspect = False
            return result
        self.lost += 1
        return None

    def _retry_budget(self, rows: Sequence[QueuedRow]) -> float:
        """How long a retry may take: 0 when no row waits for it any more."""
        waiting = [r for r in rows if not r.future.done()]
        if not waiting:
            return 0.0
        if any(r.deadline is None for r in waiting):
            return self.retry_timeout_s
        latest = max(r.deadline for r in waiting if r.deadline is not None)
        return min(self.retry_timeout_s, latest - self._clock())
