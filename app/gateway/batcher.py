"""Gateway-side batching: many requests -> one handle call per model version.

One handle call per HTTP request is the cost that caps a naive Serve app (DESIGN 4), so
each gateway replica keeps a bounded priority queue (spec 4.1 ``priority_queue_size``)
and sends rows to the predictor in batches of up to ``max_batch_size``:

- a batch leaves when it is full, or ``batch_wait_timeout_s`` after its first row arrived;
- higher priority rows are taken first, FIFO within a priority;
- rows whose client deadline has passed are answered without reaching the model;
- when the queue holds ``capacity`` rows, new rows are refused (the route answers 429);
- at most ``max_in_flight`` batches are outstanding; while they are, rows pile up and the
  next batch is fuller, which is what keeps throughput up under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from model.common.features import compute_features
from model.common.protocol import BatchResult, PredictBatch, PredictError
from model.common.refs import ModelRef
from model.common.tasks import cancel_and_wait

Dispatch = Callable[[PredictBatch], Awaitable[BatchResult | PredictError]]
Featurize = Callable[[np.ndarray], np.ndarray]
FeatureSink = Callable[[bytes, np.ndarray], None]


class QueueFullError(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__("prediction queue is full")
        self.retry_after_s = retry_after_s


class DeadlineExceededError(Exception):
    pass


class PredictorFailedError(Exception):
    def __init__(self, error: PredictError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True, slots=True)
class RowResult:
    ref: ModelRef
    expected_return: float
    prob_up: float
    forward_rows: int
    model_ms: float
    queue_ms: float


@dataclass(order=True)
class _Pending:
    sort_key: tuple[int, int]
    ref: ModelRef = field(compare=False)
    features: np.ndarray | None = field(compare=False)  # None: computed with the batch
    bars: np.ndarray | None = field(compare=False)
    cache_key: bytes | None = field(compare=False)
    request_id: str = field(compare=False)
    future: asyncio.Future[RowResult] = field(compare=False)
    enqueued: float = field(compare=False)
    deadline: float | None = field(compare=False)


@dataclass
class BatcherStats:
    submitted: int = 0
    rejected_full: int = 0
    expired: int = 0
    batches: int = 0
    rows: int = 0
    failures: int = 0


class Batcher:
    def __init__(
        self,
        dispatch: Dispatch,
        *,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        capacity: int,
        max_in_flight: int = 4,
        clock: Callable[[], float] = time.monotonic,
        featurize: Featurize = compute_features,
        on_features: FeatureSink | None = None,
    ) -> None:
        self._dispatch = dispatch
        # Rows that miss the feature cache get their features here, for the whole batch
        # in one vectorised call (~5x cheaper per row than one window at a time), and
        # ``on_features`` puts them into the cache.
        self._featurize = featurize
        self._on_features = on_features
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.capacity = capacity
        self._clock = clock
        self._heap: list[_Pending] = []
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()  # set whenever the queue is empty
        self._drained.set()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.stats = BatcherStats()
        self._model_ms_ewma = 5.0

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
        features: np.ndarray | None,
        *,
        bars: np.ndarray | None = None,
        cache_key: bytes | None = None,
        request_id: str = "",
        priority: int = 0,
        deadline: float | None = None,
    ) -> asyncio.Future[RowResult]:
        """Queue one row; raise QueueFullError when at capacity.

        Either ``features`` ``[WINDOW, NUM_FEATURES]`` (a feature-cache hit) or the raw
        ``bars`` ``[WINDOW, 5]`` (features computed with the batch, then handed to
        ``on_features`` under ``cache_key``). ``deadline`` is on this batcher's clock.
        """
        if features is None and bars is None:
            raise ValueError("submit needs features or bars")
        if len(self._heap) >= self.capacity:
            self.stats.rejected_full += 1
            raise QueueFullError(self._retry_after())
        self.start()
        future: asyncio.Future[RowResult] = asyncio.get_running_loop().create_future()
        item = _Pending(
            sort_key=(-priority, next(self._seq)),
            ref=ref,
            features=features,
            bars=bars,
            cache_key=cache_key,
            request_id=request_id,
            future=future,
            enqueued=self._clock(),
            deadline=deadline,
        )
        heapq.heappush(self._heap, item)
        self._drained.clear()
        self.stats.submitted += 1
        # Wake the collector only when it has something to do: the first row of a batch
        # starts its clock, a full batch leaves at once. Rows in between just queue (a
        # wake-up per row cost a loop iteration and a timer each, on a box where every
        # wake-up is dear; BENCHMARKS.md).
        if len(self._heap) == 1 or len(self._heap) >= self.max_batch_size:
            self._wakeup.set()
        return future

    # -- internals --------------------------------------------------------------------

    def _retry_after(self) -> float:
        # Time for the queue to drain at the current batch cadence, at least one second.
        batches = len(self._heap) / max(1, self.max_batch_size)
        return max(1.0, batches * self._model_ms_ewma / 1000.0)

    async def _run(self) -> None:
        while True:
            if not self._heap:
                self._wakeup.clear()
                await self._wakeup.wait()
            # A batch leaves when full or when its oldest row has waited long enough.
            oldest = min(p.enqueued for p in self._heap[: self.max_batch_size * 4])
            while len(self._heap) < self.max_batch_size:
                remaining = oldest + self.batch_wait_timeout_s - self._clock()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):  # no extra task, unlike wait_for
                        await self._wakeup.wait()
            await self._slots.acquire()
            batch = self._take()
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    def _take(self) -> list[_Pending]:
        now = self._clock()
        taken: list[_Pending] = []
        while self._heap and len(taken) < self.max_batch_size:
            item = heapq.heappop(self._heap)
            if item.future.done():  # the client went away
                continue
            if item.deadline is not None and now >= item.deadline:
                self.stats.expired += 1
                item.future.set_exception(DeadlineExceededError("client deadline passed"))
                continue
            taken.append(item)
        if not self._heap:
            self._drained.set()
        return taken

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            groups: dict[ModelRef, list[_Pending]] = {}
            for item in batch:
                groups.setdefault(item.ref, []).append(item)
            if len(groups) == 1:  # the common case: no gather, no task per group
                [(ref, items)] = groups.items()
                await self._send_group(ref, items)
            else:
                await asyncio.gather(*(self._send_group(r, i) for r, i in groups.items()))
        finally:
            self._slots.release()
            if self._heap:
                self._wakeup.set()

    def _fill_features(self, items: list[_Pending]) -> None:
        todo = [i for i in items if i.features is None]
        if not todo:
            return
        computed = self._featurize(np.stack([i.bars for i in todo]))  # type: ignore[misc]
        for item, feats in zip(todo, computed, strict=True):
            item.features = feats
            if item.cache_key is not None and self._on_features is not None:
                self._on_features(item.cache_key, feats)

    async def _send_group(self, ref: ModelRef, items: list[_Pending]) -> None:
        sent = self._clock()
        self._fill_features(items)
        features = np.stack([i.features for i in items]).astype(np.float32, copy=False)  # type: ignore[misc]
        call = PredictBatch(
            ref=ref, features=features, request_ids=tuple(i.request_id for i in items)
        )
        try:
            result = await self._dispatch(call)
        except Exception as exc:
            self.stats.failures += 1
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        if isinstance(result, PredictError):
            self.stats.failures += 1
            for item in items:
                if not item.future.done():
                    item.future.set_exception(PredictorFailedError(result))
            return
        if result.ref != ref or result.outputs.shape[0] != len(items):
            # Never hand a row an answer from another model version or another row.
            err = PredictorFailedError(PredictError("internal", "predictor answered off-batch"))
            for item in items:
                if not item.future.done():
                    item.future.set_exception(err)
            return
        self.stats.batches += 1
        self.stats.rows += len(items)
        self._model_ms_ewma = 0.8 * self._model_ms_ewma + 0.2 * result.model_ms
        outputs = result.outputs
        for row, item in enumerate(items):
            if item.future.done():
                continue
            item.future.set_result(
                RowResult(
                    ref=ref,
                    expected_return=float(outputs[row, 0]),
                    prob_up=float(outputs[row, 1]),
                    forward_rows=result.forward_rows,
                    model_ms=result.model_ms,
                    queue_ms=(sent - item.enqueued) * 1000.0,
                )
            )
