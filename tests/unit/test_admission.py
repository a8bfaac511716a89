"""Latency-aware admission: refuse what would queue past the budget, low priority first."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.config import Metrics
from app.gateway.admission import Admission
from app.gateway.batcher import Batcher
from app.gateway.failures import PredictionFailure
from app.gateway.feature_cache import FeatureCache
from app.gateway.windows import Window
from app.observability.metrics import GatewayMetrics
from app.observability.process_metrics import new_registry
from model.common.failures import FailureKind
from model.common.features import NUM_FEATURES, WINDOW
from tests.fakes import FAKE_REF, FakePredictor


def _measured(rate_rows_per_s: float, max_wait_s: float = 0.05) -> Admission:
    """An admission whose drain rate was measured from one full batch."""
    admission = Admission(max_wait_s=max_wait_s, full_rows=16)
    admission.answered(32, 100.0, 100.0 + 32 / rate_rows_per_s)
    assert admission.rate_rows_per_s == pytest.approx(rate_rows_per_s)
    return admission


def test_every_row_is_admitted_until_a_full_batch_is_measured() -> None:
    admission = Admission(max_wait_s=0.05, full_rows=16)
    for _ in range(500):
        admission.queued(0)
    assert admission.refusal(0) is None
    # Small batches at light load say nothing about capacity: a lone row's 5 ms round
    # trip would put it at 200 rows/s and refuse rows a busy predictor would take.
    for t in range(10):
        admission.answered(1, t * 0.1, t * 0.1 + 0.005)
    assert admission.rate_rows_per_s is None
    assert admission.refusal(0) is None


def test_a_row_whose_wait_exceeds_the_budget_is_refused_with_the_drain_time() -> None:
    admission = _measured(1000.0)  # 1000 rows/s: 50 rows ahead = 50 ms
    for _ in range(40):
        admission.queued(0)
    assert admission.refusal(0) is None, "40 ms of queue is within a 50 ms budget"
    for _ in range(2960):
        admission.queued(0)
    assert admission.expected_wait_s(0) == pytest.approx(3.0)
    assert admission.refusal(0) == 3.0  # Retry-After: the time the queue needs to drain


def test_overlapping_batches_are_timed_from_the_previous_answer() -> None:
    # Two replicas: batches of 32 take 40 ms each, but an answer comes every 20 ms.
    admission = Admission(max_wait_s=0.05, full_rows=16)
    for i in range(20):
        sent = i * 0.020
        admission.answered(32, sent, sent + 0.040)
    assert admission.rate_rows_per_s == pytest.approx(32 / 0.020, rel=0.05)


def test_higher_priority_sees_only_the_rows_that_leave_before_it() -> None:
    admission = _measured(1000.0)
    for _ in range(200):
        admission.queued(0)  # 200 ms of default-priority work
    assert admission.refusal(0) is not None
    assert admission.refusal(5) is None, "nothing queued at priority >= 5"
    for _ in range(30):
        admission.queued(5)
    assert admission.refusal(5) is None
    assert admission.rows_ahead(5) == 30
    assert admission.rows_ahead(-3) == 230


def test_low_priority_is_shed_first() -> None:
    admission = _measured(1000.0)
    for _ in range(35):
        admission.queued(0)  # 35 ms ahead of both
    assert admission.refusal(0) is None
    assert admission.refusal(-1) is not None, "below default priority the budget is halved"


def test_rows_leaving_the_queue_free_their_place() -> None:
    admission = _measured(1000.0)
    for _ in range(100):
        admission.queued(0)
    assert admission.refusal(0) is not None
    for _ in range(100):
        admission.left(0)
    assert admission.rows_ahead(0) == 0
    assert admission.refusal(0) is None


def test_zero_budget_turns_admission_off() -> None:
    admission = _measured(100.0, max_wait_s=0.0)
    for _ in range(1000):
        admission.queued(0)
    assert admission.refusal(0) is None


def _row(value: float) -> Window:
    ts = np.arange(WINDOW, dtype=np.int64)
    return Window(symbol="T", bars=np.full((WINDOW, 5), value), timestamps=ts, as_of=WINDOW - 1)


def _featurize(bars: np.ndarray) -> np.ndarray:
    return np.repeat(bars[..., :1], NUM_FEATURES, axis=-1).astype(np.float32)


async def test_the_batcher_sheds_by_expected_wait_long_before_the_queue_is_full() -> None:
    # 4 rows per 20 ms batch, one batch at a time: ~200 rows/s, so 300 queued rows are
    # 1.5 s of work against a 50 ms budget, with room for 1000 rows.
    fake = FakePredictor(delay_s=0.02)
    batcher = Batcher(
        fake.dispatch,  # type: ignore[arg-type]
        max_batch_size=4,
        batch_wait_timeout_s=0.01,
        capacity=1000,
        max_in_flight=1,
        max_queue_wait_s=0.05,
        features=FeatureCache(ttl_seconds=60, max_entries=10, enabled=False),
        metrics=GatewayMetrics(new_registry(), Metrics()),
        featurize=_featurize,
    )
    accepted = [batcher.submit(FAKE_REF, _row(i)) for i in range(300)]
    await asyncio.sleep(0.3)  # full batches have come back: the drain rate is measured
    assert batcher.admission.rate_rows_per_s is not None
    assert batcher.depth > 10
    with pytest.raises(PredictionFailure) as info:
        batcher.submit(FAKE_REF, _row(1000))
    assert info.value.kind is FailureKind.QUEUE_FULL
    assert info.value.retry_after_s is not None
    assert info.value.retry_after_s >= 1
    assert batcher.stats.rejected_late == 1
    assert batcher.stats.rejected_full == 0
    urgent = batcher.submit(FAKE_REF, _row(2000), priority=10)  # overtakes the backlog
    rows = await asyncio.wait_for(asyncio.gather(*accepted, urgent), 10.0)
    assert len(rows) == 301, "every admitted row is answered"
    await batcher.stop()
