"""Keep-warm rows (app.gateway.keep_warm): they take the real path when the gateway is
idle, alone, and are counted nowhere; traffic suppresses them and goes first."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import numpy as np
import pytest

from app.gateway.batcher import Batcher
from app.gateway.keep_warm import KeepWarm, synthetic_window
from app.observability.metrics import GatewayMetrics
from model.common.features import compute_features, validate_bars
from tests.fakes import FAKE_REF, FakePredictor, fake_outputs
from tests.unit.test_batcher import _batcher as batcher_for
from tests.unit.test_batcher import _row, _stand_in_features


def _batcher(fake: FakePredictor) -> tuple[Batcher, GatewayMetrics]:
    """test_batcher's batcher (8 rows, a 10 ms window, one batch in flight), and its metrics."""
    batcher = batcher_for(fake)
    return batcher, cast(GatewayMetrics, batcher._metrics)


def _sample(metrics: GatewayMetrics, name: str) -> float:
    return sum(
        s.value for family in metrics.registry.collect() for s in family.samples if s.name == name
    )


async def _turns(n: int = 10) -> None:
    """Let the loop run what is ready (the batcher's collector, its sends): no clock."""
    for _ in range(n):
        await asyncio.sleep(0)


def test_the_synthetic_window_is_valid_input_with_finite_features() -> None:
    window = synthetic_window()
    assert validate_bars(window.bars) is None
    assert np.isfinite(compute_features(window.bars[None])).all()
    assert (np.diff(window.timestamps) > 0).all()


async def test_a_warm_row_goes_alone_as_a_warm_call_and_is_counted_nowhere() -> None:
    fake = FakePredictor()
    batcher, metrics = _batcher(fake)
    warm = KeepWarm(
        batcher, interval_s=0.01, for_s=60, in_service=lambda: FAKE_REF, busy=lambda: False
    )
    assert await warm.warm_once()
    [call] = fake.calls
    assert call.warm
    assert call.rows == 1
    assert call.request_ids == ()
    assert batcher.stats.submitted == batcher.stats.batches == batcher.stats.rows == 0
    assert _sample(metrics, "predictions_total") == 0
    # a real row after it is counted as before, and its call is not warm
    await batcher.submit(FAKE_REF, _row(1.0))
    assert not fake.calls[-1].warm
    assert batcher.stats.rows == 1
    assert _sample(metrics, "predictions_total") == 1
    await batcher.stop()


async def test_no_warm_row_while_traffic_is_queued_in_flight_or_entering() -> None:
    gate = asyncio.Event()
    fake = FakePredictor(gate=gate)
    batcher, _ = _batcher(fake)
    entering = False
    warm = KeepWarm(
        batcher, interval_s=0.01, for_s=60, in_service=lambda: FAKE_REF, busy=lambda: entering
    )
    real = batcher.submit(FAKE_REF, _row(1.0))
    await _turns()  # the real row is in flight behind the gate
    assert not await warm.warm_once()
    gate.set()
    await real
    entering = True  # a request between the edge and the batcher
    assert not await warm.warm_once()
    entering = False
    assert await warm.warm_once()
    assert [c.warm for c in fake.calls] == [False, True]
    await batcher.stop()


async def test_a_real_row_never_rides_with_a_warm_row_and_goes_first() -> None:
    fake = FakePredictor()
    batcher, _ = _batcher(fake)
    warm_row = batcher.warm(FAKE_REF, synthetic_window())
    assert warm_row is not None
    real = batcher.submit(FAKE_REF, _row(2.0))  # queued before the collector ran
    result = await real
    expected = fake_outputs(_stand_in_features(_row(2.0).bars[None]))
    assert result.expected_return == pytest.approx(float(expected[0, 0]))
    assert warm_row.cancelled()
    assert [(c.warm, c.rows) for c in fake.calls] == [(False, 1)]
    await batcher.stop()


async def test_a_real_row_does_not_wait_for_a_warm_call_in_flight() -> None:
    gate = asyncio.Event()
    fake = FakePredictor(gate=gate)
    batcher, _ = _batcher(fake)  # one batch in flight at most, a 10 ms window
    warm_row = batcher.warm(FAKE_REF, synthetic_window())
    assert warm_row is not None
    await _turns()  # the warm call is out, held by the gate
    real = batcher.submit(FAKE_REF, _row(3.0))
    await _turns()
    assert [c.warm for c in fake.calls] == [True, False], "the real row waited behind it"
    gate.set()
    await real
    await warm_row
    await batcher.stop()


async def test_the_loop_warms_only_after_the_interval_of_idle_and_stops() -> None:
    fake = FakePredictor()
    batcher, _ = _batcher(fake)
    warm = KeepWarm(
        batcher, interval_s=0.1, for_s=60, in_service=lambda: FAKE_REF, busy=lambda: False
    )
    warm.start()
    for _ in range(20):  # a row every ~5 ms: never idle for 100 ms
        await batcher.submit(FAKE_REF, _row(1.0))
        await asyncio.sleep(0.005)
    assert warm.sent == 0
    assert not any(c.warm for c in fake.calls)
    await asyncio.sleep(0.45)  # idle: a warm row 100 ms after the last answer, then every ~100 ms
    assert 2 <= warm.sent <= 5
    await warm.stop()
    sent = warm.sent
    await asyncio.sleep(0.25)
    assert warm.sent == sent
    view = warm.view()
    assert time.time() - 0.5 < cast(float, view.pop("last_at")) < time.time() - 0.2
    assert view == {"interval_ms": 100.0, "for_s": 60, "active": True, "sent": sent, "failed": 0}
    await batcher.stop()


async def test_it_warms_only_within_its_horizon_after_a_real_request() -> None:
    """batching.keep_warm_for_s: nothing before the first request, warm rows for the
    horizon after each real one, then quiet until the next."""
    fake = FakePredictor()
    batcher, _ = _batcher(fake)
    warm = KeepWarm(
        batcher,
        interval_s=0.02,
        for_s=0.2,
        in_service=lambda: FAKE_REF,
        busy=lambda: False,
        dormant_poll_s=0.02,
    )
    warm.start()
    await asyncio.sleep(0.15)
    assert (warm.sent, warm.active()) == (0, False), "warmed before any request"
    await batcher.submit(FAKE_REF, _row(1.0))
    assert warm.active()
    await asyncio.sleep(0.45)  # ~10 warm rows in the 200 ms horizon, then none
    in_horizon = warm.sent
    assert 4 <= in_horizon <= 11
    assert not warm.active()
    await asyncio.sleep(0.15)
    assert warm.sent == in_horizon, "warmed past its horizon"
    await batcher.submit(FAKE_REF, _row(2.0))  # a new request: warm again
    await asyncio.sleep(0.1)
    assert warm.sent > in_horizon
    assert warm.view()["active"] is True
    await warm.stop()
    await batcher.stop()


async def test_nothing_is_warmed_before_a_version_is_in_service() -> None:
    fake = FakePredictor()
    batcher, _ = _batcher(fake)
    warm = KeepWarm(batcher, interval_s=0.01, for_s=60, in_service=lambda: None, busy=lambda: False)
    assert not await warm.warm_once()
    assert fake.calls == []
    await batcher.stop()


async def test_a_failed_warm_call_is_counted_in_the_keep_warm_only() -> None:
    from model.common.failures import FailureKind
    from model.common.protocol import PredictError

    fake = FakePredictor(fail_with=PredictError(FailureKind.NOT_READY, "loading"))
    batcher, _ = _batcher(fake)
    warm = KeepWarm(
        batcher, interval_s=0.01, for_s=60, in_service=lambda: FAKE_REF, busy=lambda: False
    )
    assert not await warm.warm_once()
    assert warm.failed == 1
    assert batcher.stats.failures == 0
    await batcher.stop()
