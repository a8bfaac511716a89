"""Gateway-side batching: many requests -> one handle call per model version.

One handle call per HTTP request is the cost that caps a naive Serve app, so each
gateway replica keeps a bounded priority queue (spec 4.1 ``priority_queue_size``) and
sends rows to the predictor in batches of up to ``max_batch_size``:

- a row that finds the predictor idle (no batch in flight) leaves at once, alone: a lone
  request never pays the batch window. Only under a steady stream (requests closer
  together, on average, than ``idle_hold_s``) may it wait up to ``idle_hold_s`` for the
  rows about to arrive: a forward of a few rows costs little more than one of a single
  row, so the predictor spends much less CPU per row (BENCHMARKS.md, session 21);
- while a batch is in flight rows collect, and the next batch leaves when it is full,
  when the batch in flight comes back, or ``batch_wait_timeout_s`` after its first row
  arrived, whichever is first (the window is an upper bound, not a fixed delay);
- higher priority rows are taken first, FIFO within a priority;
- rows whose client deadline has passed are answered without reaching the model;
- when a request's rows would not fit in the ``capacity`` rows of the queue, or its
  expected queue wait would exceed the latency budget (:mod:`app.gateway.admission`),
  it is refused whole (``queue_full``, 429 + ``Retry-After``);
- a keep-warm row (:meth:`Batcher.warm`, from :mod:`app.gateway.keep_warm`) takes the
  same way when the batcher is idle, alone, and is counted nowhere;
- at most ``max_in_flight`` batches are outstanding (the gateway sets it from the
  predictor's replica count, :meth:`set_max_in_flight`); while they are, rows pile up and
  the next batch is fuller, which is what keeps throughput up under load.

The batcher owns each row's features: it looks the window up in the feature cache when
the row arrives, computes the misses of a whole batch in one vectorised call when the
batch leaves (~5x cheaper per row than one window at a time) and fills the cache. It
records what only it sees (cache hits, queue depth, queue wait, batch size, model time,
each row's latency from arrival to answer); a failed handle call is retried once
(:mod:`app.gateway.delivery`); every failure reaches the caller as a
:class:`PredictionFailure` of one kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import structlog

from app.gateway.admission import Admission
from app.gateway.delivery import RETRY_TIMEOUT_S, Delivery, Dispatch
from app.gateway.failures import PredictionFailure
from app.gateway.feature_cache import FeatureCache
from app.gateway.rows import BatcherStats, BatchMetrics, QueuedRow, RowResult
from app.gateway.windows import Window
from model.common.failures import FailureKind
from model.common.features import compute_features
from model.common.protocol import BatchResult, PredictBatch, PredictError
from model.common.refs import ModelRef
from model.common.tasks import cancel_and_wait

log = structlog.get_logger("app.gateway.batcher")

Featurize = Callable[[np.ndarray], np.ndarray]

# Keep-warm rows queue behind every real priority.
WARM_PRIORITY = -(2**31)

# What the predictor may say about a batch that the client should read verbatim; any
# other kind gets the failure table's own message (no internals leak).
_CLIENT_MESSAGES = frozenset({FailureKind.MODEL_NOT_FOUND, FailureKind.INVALID_FEATURES})


class ArrivalGap:
    """The time between requests, smoothed: each new gap moves the mean by ``weight`` of
    its difference. Infinite until two requests have been seen, and one long pause lifts
    it at once, so a lone request after a quiet spell never looks like a stream."""

    def __init__(self, weight: float = 0.2) -> None:
        self.weight = weight
        self.mean_s = math.inf
        self._last: float | None = None

    def arrived(self, now: float) -> None:
        if self._last is not None:
            gap = max(0.0, now - self._last)
            if math.isinf(self.mean_s):
                self.mean_s = gap
            else:
                self.mean_s += self.weight * (gap - self.mean_s)
        self._last = now


class Batcher:
    def __init__(
        self,
        dispatch: Dispatch,
        *,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        capacity: int,
        features: FeatureCache,
        metrics: BatchMetrics,
        max_in_flight: int = 4,
        max_queue_wait_s: float = 0.0,
        idle_hold_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        featurize: Featurize = compute_features,
        retry_timeout_s: float = RETRY_TIMEOUT_S,
    ) -> None:
        self.delivery = Delivery(
            dispatch, clock=clock, retry_timeout_s=retry_timeout_s, on_lost=self._lost
        )
        # Called when no predictor replica answers (both tries of a batch failed); the
        # gateway state marks the predictor unreachable there.
        self.on_predictor_lost: Callable[[], None] = lambda: None
        self._cache = features
        self._metrics = metrics
        self._featurize = featurize
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.capacity = capacity
        self._clock = clock
        self._heap: list[QueuedRow] = []
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()  # set whenever the queue is empty
        self._drained.set()
        self.max_in_flight = max_in_flight
        self._slot_free = asyncio.Event()  # set whenever a batch in flight comes back
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._sending: dict[int, list[QueuedRow]] = {}  # rows of each batch in flight
        self._busy = 0  # batches sent and not yet answered
        self.admission = Admission(
            max_wait_s=max_queue_wait_s, full_rows=max(1, max_batch_size // 2)
        )
        self.stats = BatcherStats()
        self._model_ms_ewma = 5.0
        self.idle_hold_s = idle_hold_s
        self._arrivals = ArrivalGap()
        self.last_active = clock()  # the last row queued or batch answered (keep-warm)
        self.last_request = -math.inf  # the last real row queued (keep-warm's horizon)
        # A keep-warm batch is out: not counted in ``_busy``, so a real row that arrives
        # meanwhile leaves at once instead of waiting for it.
        self._warm_out = False

    # -- public -----------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._heap)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Stop taking rows; rows already accepted are still answered (drained)."""
        if self._task is not None:
            await self._drained.wait()
            await cancel_and_wait(self._task)
            self._task = None
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    def submit(
        self,
        ref: ModelRef,
        window: Window,
        *,
        request_id: str = "",
        priority: int = 0,
        deadline: float | None = None,
    ) -> asyncio.Future[RowResult]:
        """Queue one row; ``deadline`` is on this batcher's clock.

        Raises ``PredictionFailure(queue_full)`` when ``capacity`` rows already wait or
        the row's expected queue wait is over its priority's budget.
        """
        return self.submit_all(
            [ref], [window], request_id=request_id, priority=priority, deadline=deadline
        )[0]

    def submit_all(
        self,
        refs: Sequence[ModelRef],
        windows: Sequence[Window],
        *,
        request_id: str = "",
        priority: int = 0,
        deadline: float | None = None,
    ) -> list[asyncio.Future[RowResult]]:
        """Queue one request's rows, admitted or refused together: its expected wait is
        that of its first row (its own rows are not ahead of it), and it is refused when
        all of them would not fit in the queue. Nothing of a refused request is queued, so
        no forward is spent on rows whose request fails anyway."""
        if len(self._heap) + len(windows) > self.capacity:
            self.stats.rejected_full += 1
            raise PredictionFailure(FailureKind.QUEUE_FULL, retry_after_s=self._retry_after())
        retry_after = self.admission.refusal(priority)
        if retry_after is not None:
            self.stats.rejected_late += 1
            budget_ms = self.admission.budget_s(priority) * 1000
            raise PredictionFailure(
                FailureKind.QUEUE_FULL,
                f"the queue is too long to answer within {budget_ms:.0f} ms; retry later",
                retry_after_s=retry_after,
            )
        self.start()
        self.last_active = self.last_request = self._clock()
        self._arrivals.arrived(self.last_active)
        was_empty = not self._heap
        queued = [
            self._queue(ref, window, request_id, priority, deadline)
            for ref, window in zip(refs, windows, strict=True)
        ]
        # Once per request, not per row: a 32-row request made 64 metric updates here
        # (a counter, a lock and a gauge each).
        hits = sum(hit for _, hit in queued)
        if hits:
            self._metrics.observe_cache("feature", True, hits)
        if len(windows) - hits:
            self._metrics.observe_cache("feature", False, len(windows) - hits)
        self._drained.clear()
        self.stats.submitted += len(windows)
        self._metrics.set_queue_depth(len(self._heap))
        # Wake the collector only when it has something to do: the first row of a batch
        # starts its clock, a full batch leaves at once. Rows that join a waiting batch
        # just queue (a wake-up per row costs a loop iteration and a timer each).
        if was_empty or len(self._heap) >= self.max_batch_size:
            self._wakeup.set()
        return [future for future, _ in queued]

    def warm(self, ref: ModelRef, window: Window) -> asyncio.Future[RowResult] | None:
        """Queue a keep-warm row for ``ref`` if nothing is queued or in flight (else
        None): it leaves as a batch of its own (a real row that arrives meanwhile goes
        first and leaves it out, :meth:`_take`), as a ``warm`` call the predictor serves
        and counts nowhere, and touches none of this batcher's stats, admission estimates
        or metrics."""
        if self._heap or self._busy or self._warm_out:
            return None
        self.start()
        future, _ = self._queue(ref, window, "", WARM_PRIORITY, None, warm=True)
        self._drained.clear()
        self._wakeup.set()
        return future

    def _queue(
        self,
        ref: ModelRef,
        window: Window,
        request_id: str,
        priority: int,
        deadline: float | None,
        *,
        warm: bool = False,
    ) -> tuple[asyncio.Future[RowResult], bool]:
        """Queue one row: its future, and whether its features came from the cache."""
        key, features = self._cache.lookup(window)
        future: asyncio.Future[RowResult] = asyncio.get_running_loop().create_future()
        item = QueuedRow(
            sort_key=(-priority, next(self._seq)),
            ref=ref,
            features=features,
            bars=window.bars,
            cache_key=key,
            request_id=request_id,
            future=future,
            enqueued=self._clock(),
            deadline=deadline,
            warm=warm,
        )
        heapq.heappush(self._heap, item)
        self.admission.queued(priority)
        return future, features is not None

    def set_max_in_flight(self, n: int) -> None:
        """Allow ``n`` batches in flight from now on (batches already out stay out)."""
        self.max_in_flight = max(1, n)
        self._slot_free.set()

    def abandon(self, failure: PredictionFailure) -> int:
        """Fail every row queued or in flight with ``failure`` (the predictor is gone, so
        none of them can be answered); returns how many rows that released."""
        released = 0
        for items in [*self._sending.values(), self._heap]:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(failure)
                    released += 1
        self.stats.failures += 1 if released else 0
        return released

    # -- internals --------------------------------------------------------------------

    def _lost(self) -> None:
        self.abandon(PredictionFailure(FailureKind.UNAVAILABLE))
        self.on_predictor_lost()

    def _retry_after(self) -> float:
        # Time for the queue to drain at the current batch cadence, at least one second.
        batches = len(self._heap) / max(1, self.max_batch_size)
        return max(1.0, batches * self._model_ms_ewma / 1000.0)

    async def _run(self) -> None:
        while True:
            if not self._heap:
                self._wakeup.clear()
                await self._wakeup.wait()
            # A batch leaves at once when nothing is in flight (after the idle hold, under a
            # steady stream); otherwise when full, when the batch in flight comes back, or
            # when its oldest row has waited long enough.
            oldest = min(p.enqueued for p in self._heap[: self.max_batch_size * 4])
            while len(self._heap) < self.max_batch_size:
                limit = self.batch_wait_timeout_s if self._busy else self._idle_hold()
                remaining = oldest + limit - self._clock()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):  # no extra task, unlike wait_for
                        await self._wakeup.wait()
            while self._busy >= self.max_in_flight:
                self._slot_free.clear()
                await self._slot_free.wait()
            batch = self._take()
            if not batch:
                continue
            if batch[0].warm:  # then alone (_take)
                self._warm_out = True
            else:
                self._busy += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    def _idle_hold(self) -> float:
        """How long an idle predictor's next batch may wait for more rows: 0 (leave now)
        unless requests arrive fast enough that at least one more is expected within
        ``idle_hold_s``."""
        if not self.idle_hold_s or self._arrivals.mean_s > self.idle_hold_s:
            return 0.0
        return min(self.idle_hold_s, self.batch_wait_timeout_s)

    def _take(self) -> list[QueuedRow]:
        now = self._clock()
        taken: list[QueuedRow] = []
        while self._heap and len(taken) < self.max_batch_size:
            item = heapq.heappop(self._heap)
            self.admission.left(-item.sort_key[0])
            if item.future.done():  # the client went away
                continue
            if item.deadline is not None and now >= item.deadline:
                self.stats.expired += 1
                item.future.set_exception(PredictionFailure(FailureKind.DEADLINE_EXCEEDED))
                continue
            taken.append(item)
        if len(taken) > 1 and any(item.warm for item in taken):
            for item in taken:  # a keep-warm row never rides with traffic: left out
                if item.warm:
                    item.future.cancel()
            taken = [item for item in taken if not item.warm]
        if not self._heap:
            self._drained.set()
        return taken

    async def _send(self, batch: list[QueuedRow]) -> None:
        self._sending[id(batch)] = batch
        try:
            groups: dict[ModelRef, list[QueuedRow]] = {}
            for item in batch:
                groups.setdefault(item.ref, []).append(item)
            if len(groups) == 1:  # the common case: no gather, no task per group
                [(ref, items)] = groups.items()
                await self._send_group(ref, items)
            else:
                await asyncio.gather(*(self._send_group(r, i) for r, i in groups.items()))
        finally:
            del self._sending[id(batch)]
            if batch[0].warm:
                self._warm_out = False
            else:
                self.last_active = self._clock()
                self._busy -= 1
            self._slot_free.set()
            if self._heap:
                self._wakeup.set()

    def _fill_features(self, items: list[QueuedRow]) -> np.ndarray:
        """The batch's features ``[rows, WINDOW, NUM_FEATURES]``: cache hits as they are,
        the misses computed together and put into the cache."""
        todo = [i for i in items if i.features is None]
        if todo:
            computed = self._featurize(np.stack([i.bars for i in todo]))
            for item, feats in zip(todo, computed, strict=True):
                item.features = feats
                self._cache.put(item.cache_key, feats)
        return np.stack([i.features for i in items]).astype(np.float32, copy=False)  # type: ignore[misc]

    def _fail(self, items: list[QueuedRow], failure: PredictionFailure) -> None:
        if not items[0].warm:
            self.stats.failures += 1
        for item in items:
            if not item.future.done():
                item.future.set_exception(failure)

    async def _send_group(self, ref: ModelRef, items: list[QueuedRow]) -> None:
        try:
            await self._deliver(ref, items)
        except Exception:
            # Not the predictor's word but an error of ours or a malformed answer: its rows
            # still get one now, rather than waiting out their request's timeout.
            log.exception("gateway_batch_failed", model_version=ref.version, rows=len(items))
            self._fail(items, PredictionFailure(FailureKind.UNAVAILABLE))

    async def _deliver(self, ref: ModelRef, items: list[QueuedRow]) -> None:
        sent = self._clock()
        warm = items[0].warm  # then it is alone (_take)
        call = PredictBatch(
            ref=ref,
            features=self._fill_features(items),
            request_ids=() if warm else tuple(dict.fromkeys(i.request_id for i in items)),
            warm=warm,
        )
        result = await self.delivery.send(call, items)  # retried once if the call failed
        if result is None:  # the replica died or the call was not delivered, twice
            self._fail(items, PredictionFailure(FailureKind.UNAVAILABLE))
            return
        if isinstance(result, PredictError):
            message = result.message if result.kind in _CLIENT_MESSAGES else None
            self._fail(items, PredictionFailure(result.kind, message))
            return
        if result.ref != ref or result.outputs.shape[0] != len(items):
            # Never hand a row an answer from another model version or another row.
            self._fail(items, PredictionFailure(FailureKind.UNAVAILABLE))
            return
        if warm:
            if not items[0].future.done():
                items[0].future.set_result(_warm_result(ref, result))
            return
        self.stats.batches += 1
        self.stats.rows += len(items)
        self._model_ms_ewma = 0.8 * self._model_ms_ewma + 0.2 * result.model_ms
        outputs = result.outputs
        answered = self._clock()
        self.admission.answered(len(items), sent, answered)
        for row, item in enumerate(items):
            if item.future.done():
                continue
            queue_ms = (sent - item.enqueued) * 1000.0
            item.future.set_result(
                RowResult(
                    ref=ref,
                    expected_return=float(outputs[row, 0]),
                    prob_up=float(outputs[row, 1]),
                    horizon_bars=result.horizon_bars,
                    forward_rows=result.forward_rows,
                    model_ms=result.model_ms,
                    queue_ms=queue_ms,
                    features=item.features,
                )
            )
            self._metrics.observe_prediction(
                latency_ms=(answered - item.enqueued) * 1000.0,
                model_version=ref.version,
                batch_size=result.forward_rows,
                queue_wait_ms=queue_ms,
                model_ms=result.model_ms,
            )


def _warm_result(ref: ModelRef, result: BatchResult) -> RowResult:
    return RowResult(
        ref=ref,
        expected_return=float(result.outputs[0, 0]),
        prob_up=float(result.outputs[0, 1]),
        horizon_bars=result.horizon_bars,
        forward_rows=result.forward_rows,
        model_ms=result.model_ms,
        queue_ms=0.0,
    )
