"""Gateway-side batching: order, version separation, back-pressure, deadlines, priority."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from app.config import Metrics
from app.gateway.batcher import Batcher
from app.gateway.failures import PredictionFailure
from app.gateway.feature_cache import FeatureCache
from app.gateway.windows import Window
from app.observability.metrics import GatewayMetrics, new_registry
from model.common.failures import FailureKind
from model.common.features import NUM_FEATURES, WINDOW
from model.common.protocol import PredictError
from model.common.refs import ModelRef
from tests.fakes import FAKE_REF, FakePredictor, fake_outputs

OTHER_REF = ModelRef(name="cnn_lstm", version="0.0.2", sha256="b" * 64)


def _row(value: float) -> Window:
    """A window whose every bar is ``value`` (features: see :func:`_stand_in_features`)."""
    ts = np.arange(WINDOW, dtype=np.int64)
    return Window(symbol="T", bars=np.full((WINDOW, 5), value), timestamps=ts, as_of=WINDOW - 1)


def _feat(value: float) -> np.ndarray:
    return np.full((WINDOW, NUM_FEATURES), value, dtype=np.float32)


def _stand_in_features(bars: np.ndarray) -> np.ndarray:
    """Each row's features are its first bar value, so a row is traceable to the model."""
    return np.repeat(bars[..., :1], NUM_FEATURES, axis=-1).astype(np.float32)


def _cache(enabled: bool = False) -> FeatureCache:
    return FeatureCache(ttl_seconds=60, max_entries=100, enabled=enabled)


def _batcher(fake: FakePredictor, **kw: float) -> Batcher:
    opts = {"max_batch_size": 8, "batch_wait_timeout_s": 0.01, "capacity": 100, "max_in_flight": 1}
    opts.update(kw)
    return Batcher(
        fake.dispatch,  # type: ignore[arg-type]
        features=_cache(),
        metrics=GatewayMetrics(new_registry(), Metrics()),
        featurize=_stand_in_features,
        **opts,  # type: ignore[arg-type]
    )


async def test_results_follow_request_order_when_batched() -> None:
    fake = FakePredictor()
    batcher = _batcher(fake)
    values = [float(i) for i in range(20)]
    futures = [batcher.submit(FAKE_REF, _row(v)) for v in values]
    rows = await asyncio.gather(*futures)
    expected = fake_outputs(np.stack([_feat(v) for v in values]))
    assert [r.expected_return for r in rows] == pytest.approx(expected[:, 0].tolist())
    assert max(len(c.features) for c in fake.calls) > 1, "rows were never batched"
    assert all(c.rows <= 8 for c in fake.calls)
    await batcher.stop()


async def test_batches_never_mix_model_versions() -> None:
    fake = FakePredictor(known={OTHER_REF})
    batcher = _batcher(fake)
    refs = [FAKE_REF if i % 2 else OTHER_REF for i in range(16)]
    rows = await asyncio.gather(*(batcher.submit(r, _row(i)) for i, r in enumerate(refs)))
    for call in fake.calls:
        assert len({call.ref}) == 1
    assert [r.ref for r in rows] == refs
    assert {c.ref for c in fake.calls} == {FAKE_REF, OTHER_REF}
    await batcher.stop()


async def test_full_queue_refuses_with_retry_after() -> None:
    fake = FakePredictor(gate=asyncio.Event())
    batcher = _batcher(fake, capacity=5, max_batch_size=1)
    accepted = [batcher.submit(FAKE_REF, _row(0))]
    await asyncio.sleep(0.05)  # the first row is now stuck in flight behind the gate
    accepted += [batcher.submit(FAKE_REF, _row(i)) for i in range(5)]
    with pytest.raises(PredictionFailure) as info:
        batcher.submit(FAKE_REF, _row(9))
    assert info.value.kind is FailureKind.QUEUE_FULL
    assert info.value.retry_after_s is not None
    assert info.value.retry_after_s >= 1
    assert batcher.stats.rejected_full == 1
    fake.gate.set()  # type: ignore[union-attr]
    rows = await asyncio.gather(*accepted)
    assert len(rows) == 6, "rows accepted before the queue filled must all be answered"
    await batcher.stop()


async def test_expired_deadline_never_reaches_the_model() -> None:
    fake = FakePredictor(gate=asyncio.Event())
    batcher = _batcher(fake, max_batch_size=1)
    blocker = batcher.submit(FAKE_REF, _row(0))
    await asyncio.sleep(0.05)
    doomed = batcher.submit(FAKE_REF, _row(7), deadline=time.monotonic() + 0.02)
    await asyncio.sleep(0.05)
    fake.gate.set()  # type: ignore[union-attr]
    await blocker
    with pytest.raises(PredictionFailure) as info:
        await doomed
    assert info.value.kind is FailureKind.DEADLINE_EXCEEDED
    seen = [float(c.features[0, 0, 0]) for c in fake.calls]
    assert 7.0 not in seen
    assert batcher.stats.expired == 1
    await batcher.stop()


async def test_high_priority_overtakes_low_under_backlog() -> None:
    fake = FakePredictor(gate=asyncio.Event())
    batcher = _batcher(fake, max_batch_size=2)
    first = batcher.submit(FAKE_REF, _row(-1))
    await asyncio.sleep(0.05)  # in flight; everything after this queues
    low = [batcher.submit(FAKE_REF, _row(i), priority=0) for i in range(6)]
    high = [batcher.submit(FAKE_REF, _row(100 + i), priority=10) for i in range(2)]
    fake.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(first, *low, *high)
    order = [float(c.features[0, 0, 0]) for c in fake.calls]
    assert order[1] == 100.0, (
        f"high priority should ride in the first batch after the gate: {order}"
    )
    await batcher.stop()


async def test_predictor_error_reaches_only_its_rows() -> None:
    fake = FakePredictor(fail_with=PredictError(FailureKind.MODEL_NOT_FOUND, "gone"))
    batcher = _batcher(fake)
    with pytest.raises(PredictionFailure) as info:
        await batcher.submit(FAKE_REF, _row(1))
    assert info.value.kind is FailureKind.MODEL_NOT_FOUND
    assert info.value.message == "gone"
    await batcher.stop()


async def test_stop_drains_accepted_rows() -> None:
    fake = FakePredictor(delay_s=0.01)
    batcher = _batcher(fake, batch_wait_timeout_s=0.05)
    futures = [batcher.submit(FAKE_REF, _row(i)) for i in range(10)]
    await batcher.stop()
    assert all(f.done() and not f.cancelled() and f.exception() is None for f in futures)


async def test_cache_misses_get_features_with_the_batch_and_go_back_to_the_cache() -> None:
    from model.common.features import compute_features

    fake = FakePredictor()
    calls: list[int] = []

    def featurize(bars: np.ndarray) -> np.ndarray:
        calls.append(len(bars))
        return compute_features(bars)

    cache = _cache(enabled=True)
    batcher = Batcher(
        fake.dispatch,  # type: ignore[arg-type]
        max_batch_size=8,
        batch_wait_timeout_s=0.02,
        capacity=100,
        features=cache,
        metrics=GatewayMetrics(new_registry(), Metrics()),
        featurize=featurize,
    )
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (4, WINDOW)), axis=1))
    bars = np.stack([close, close * 1.01, close * 0.99, close, np.full_like(close, 1e3)], axis=2)
    ts = np.arange(WINDOW, dtype=np.int64)
    windows = [Window("T", bars[i], ts + 1000 * i, int(ts[-1])) for i in range(4)]
    cache.put(cache.key(windows[0]), compute_features(bars[0]))
    rows = await asyncio.gather(*(batcher.submit(FAKE_REF, w) for w in windows))
    assert calls == [3], "the three misses should be featurised together, once"
    assert len(cache) == 4
    _, cached = cache.lookup(windows[2])
    assert cached is not None
    np.testing.assert_allclose(cached, compute_features(bars[2]))
    expected = fake_outputs(compute_features(bars))
    assert [r.expected_return for r in rows] == pytest.approx(expected[:, 0].tolist())
    await batcher.stop()


async def test_a_full_batch_leaves_without_waiting_for_the_timeout() -> None:
    fake = FakePredictor()
    batcher = _batcher(fake, batch_wait_timeout_s=30.0, max_in_flight=4)
    started = time.monotonic()
    rows = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(FAKE_REF, _row(i)) for i in range(16))), 5.0
    )
    assert time.monotonic() - started < 5.0
    assert len(rows) == 16
    assert [c.rows for c in fake.calls] == [8, 8]
    await batcher.stop()


async def test_an_idle_predictor_gets_a_lone_row_at_once() -> None:
    fake = FakePredictor()
    batcher = _batcher(fake, batch_wait_timeout_s=30.0)
    row = await asyncio.wait_for(batcher.submit(FAKE_REF, _row(1)), 2.0)
    assert row.forward_rows == 1, "a lone row must not wait for the 30 s window"
    assert [c.rows for c in fake.calls] == [1]
    await batcher.stop()


async def test_rows_arriving_during_a_forward_leave_together_when_it_returns() -> None:
    fake = FakePredictor(gate=asyncio.Event())
    batcher = _batcher(fake, batch_wait_timeout_s=30.0, max_in_flight=4)
    first = batcher.submit(FAKE_REF, _row(0))
    await asyncio.sleep(0.05)  # sent at once; now held in flight by the gate
    during = [batcher.submit(FAKE_REF, _row(i)) for i in range(1, 6)]
    await asyncio.sleep(0.05)
    assert [c.rows for c in fake.calls] == [1], "rows wait while a forward runs"
    fake.gate.set()  # type: ignore[union-attr]
    rows = await asyncio.wait_for(asyncio.gather(first, *during), 2.0)
    assert [c.rows for c in fake.calls] == [1, 5]
    assert [r.expected_return for r in rows[1:]] == pytest.approx(
        fake_outputs(np.stack([_feat(i) for i in range(1, 6)]))[:, 0].tolist()
    )
    await batcher.stop()


async def test_the_window_bounds_the_wait_behind_a_slow_forward() -> None:
    fake = FakePredictor(gate=asyncio.Event())
    batcher = _batcher(fake, batch_wait_timeout_s=0.1, max_in_flight=4)
    first = batcher.submit(FAKE_REF, _row(0))
    await asyncio.sleep(0.02)
    second = [batcher.submit(FAKE_REF, _row(i)) for i in (1, 2)]
    await asyncio.sleep(0.4)  # the first batch is still in flight
    assert [c.rows for c in fake.calls] == [1, 2], "the 100 ms window was not an upper bound"
    fake.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(first, *second)
    await batcher.stop()
