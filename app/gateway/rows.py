"""What the batcher holds and hands back: a queued row, a row's answer, its counters, and
the part of the gateway's metrics it records into."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from model.common.refs import ModelRef


class BatchMetrics(Protocol):
    """The part of the gateway's metrics the batcher records into."""

    def observe_prediction(
        self,
        *,
        latency_ms: float,
        model_version: str,
        batch_size: int | None,
        queue_wait_ms: float | None,
        model_ms: float | None,
    ) -> None: ...

    def observe_cache(self, cache: str, hit: bool, n: int = 1) -> None: ...

    def set_queue_depth(self, n: int) -> None: ...


@dataclass(frozen=True, slots=True)
class RowResult:
    ref: ModelRef
    expected_return: float
    prob_up: float
    horizon_bars: int
    forward_rows: int
    model_ms: float
    queue_ms: float
    features: np.ndarray | None = None  # what the model saw (the shadow scores it on green)


@dataclass(order=True)
class QueuedRow:
    sort_key: tuple[int, int]
    ref: ModelRef = field(compare=False)
    features: np.ndarray | None = field(compare=False)  # None: computed with the batch
    bars: np.ndarray = field(compare=False)
    cache_key: bytes = field(compare=False)
    request_id: str = field(compare=False)
    future: asyncio.Future[RowResult] = field(compare=False)
    enqueued: float = field(compare=False)
    deadline: float | None = field(compare=False)
    warm: bool = field(default=False, compare=False)  # a keep-warm row (Batcher.warm)


@dataclass
class BatcherStats:
    submitted: int = 0
    rejected_full: int = 0
    rejected_late: int = 0  # refused by latency-aware admission
    expired: int = 0
    batches: int = 0
    rows: int = 0
    failures: int = 0
