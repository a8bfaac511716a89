"""Gateway-side batching: order, version separation, back-pressure, deadlines, priority."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest

from app.config import Metrics
from app.gateway.batcher import ArrivalGap, Batcher
from app.gateway.failures import PredictionFailure
from app.gateway.feature_cache import FeatureCache
from app.gateway.rows import RowResult
from app.gateway.windows import Window
from app.observability.metrics import GatewayMetrics
from app.observability.process_metrics import new_registry
from model.common.failures import FailureKind
from model.common.features import NUM_FEATURES, WINDOW
from model.common.protocol import BatchResult, PredictBatch, PredictError
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


def _batcher(
    fake: FakePredictor, featurize: Callable[[np.ndarray], np.ndarray] | None = None, **kw: float
) -> Batcher:
    opts = {"max_batch_size": 8, "batch_wait_timeout_s": 0.01, "capacity": 100, "max_in_flight": 1}
    opts.update(kw)
    return Batcher(
        fake.dispatch,  # type: ignore[arg-type]
        features=_cache(),
        metrics=GatewayMetrics(new_registry(), Metrics()),
        featurize=featurize or _stand_in_features,
        **opts,  # type: ignore[arg-type]
    )


def _all_unavailable(futures: list[asyncio.Future[RowResult]]) -> None:
    for future in futures:
        failure = future.exception()
        assert isinstance(failure, PredictionFailure)
        assert failure.kind is FailureKind.UNAVAILABLE


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


async def test_a_requests_rows_are_admitted_or_refused_together() -> None:
    fake = FakePredictor(gate=asyncio.Event())
    batcher = _batcher(fake, capacity=12, max_batch_size=1, max_queue_wait_s=0.05)
    batcher.admission.rate_rows_per_s = 100.0  # measured: 5 rows ahead fit the 50 ms budget
    blocker = batcher.submit(FAKE_REF, _row(0))
    await asyncio.sleep(0.05)  # in flight behind the gate; the queue is empty
    # 8 rows: row by row the 6th would see 5 of its own ahead (50 ms) and fail the request
    # after queueing 5; a request's own rows are not ahead of it, so all 8 are taken.
    first = batcher.submit_all([FAKE_REF] * 8, [_row(10 + i) for i in range(8)])
    assert batcher.depth == 8
    with pytest.raises(PredictionFailure) as late:  # 8 rows ahead of this one: 80 ms
        batcher.submit_all([FAKE_REF] * 2, [_row(30), _row(31)])
    assert "within 50 ms" in str(late.value)
    batcher.admission.rate_rows_per_s = None  # unmeasured: only the capacity bounds it
    with pytest.raises(PredictionFailure) as full:  # 8 + 5 > 12: none of the 5 queued
        batcher.submit_all([FAKE_REF] * 5, [_row(40 + i) for i in range(5)])
    assert full.value.kind is FailureKind.QUEUE_FULL
    assert batcher.depth == 8, "nothing of a refused request was queued"
    assert (batcher.stats.rejected_late, batcher.stats.rejected_full) == (1, 1)
    fake.gate.set()  # type: ignore[union-attr]
    assert len(await asyncio.gather(blocker, *first)) == 9, "every admitted row answered"
    seen = sorted(float(c.features[0, 0, 0]) for c in fake.calls)
    assert seen == [0.0, *[10.0 + i for i in range(8)]], "only the admitted rows ran"
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


async def test_rows_are_answered_when_the_gateway_fails_to_build_their_batch() -> None:
    """An unexpected error while a batch is sent (here its features) fails its rows with
    503 at once: an accepted row never waits out the request's timeout for an answer."""

    def no_features(bars: np.ndarray) -> np.ndarray:
        raise RuntimeError("the features kernel failed")

    batcher = _batcher(FakePredictor(), featurize=no_features)
    futures = [batcher.submit(FAKE_REF, _row(i)) for i in range(3)]
    done, _ = await asyncio.wait(futures, timeout=2.0)
    assert len(done) == 3, "rows left unanswered"
    _all_unavailable(futures)
    await batcher.stop()


async def test_a_malformed_answer_fails_only_its_versions_rows() -> None:
    fake = FakePredictor(known={OTHER_REF})
    answer = fake.dispatch

    async def one_column_for_other(batch: PredictBatch) -> BatchResult | PredictError:
        result = await answer(batch)
        if batch.ref == OTHER_REF and isinstance(result, BatchResult):
            return BatchResult(
                ref=result.ref,
                outputs=result.outputs[:, :1],  # no probability column
                forward_rows=result.forward_rows,
                model_ms=result.model_ms,
                horizon_bars=result.horizon_bars,
            )
        return result

    fake.dispatch = one_column_for_other  # type: ignore[method-assign]
    batcher = _batcher(fake)
    ours = [batcher.submit(FAKE_REF, _row(i)) for i in range(2)]
    other = [batcher.submit(OTHER_REF, _row(i)) for i in range(2)]
    done, _ = await asyncio.wait([*ours, *other], timeout=2.0)
    assert len(done) == 4, "rows left unanswered"
    assert [f.result().expected_return for f in ours] == pytest.approx([0.0, 1.0])
    _all_unavailable(other)
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
    metrics = GatewayMetrics(new_registry(), Metrics())
    batcher = Batcher(
        fake.dispatch,  # type: ignore[arg-type]
        max_batch_size=8,
        batch_wait_timeout_s=0.02,
        capacity=100,
        features=cache,
        metrics=metrics,
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
    assert metrics.snapshot()["cache"]["feature"] | {"hit_rate": 0} == {
        "hits": 1, "misses": 3, "hit_rate": 0
    }  # fmt: skip
    # One request of four rows, all cached now (counted once per request, not per row).
    again = await asyncio.gather(*batcher.submit_all([FAKE_REF] * 4, windows))
    assert [r.expected_return for r in again] == pytest.approx(expected[:, 0].tolist())
    assert calls == [3]
    assert metrics.snapshot()["cache"]["feature"]["hits"] == 5
    assert metrics.snapshot()["cache"]["feature"]["misses"] == 3
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


async def test_batches_in_flight_stop_at_the_limit_and_follow_a_new_one() -> None:
    fake = FakePredictor(gate=asyncio.Event())
    batcher = _batcher(fake, batch_wait_timeout_s=0.01, max_in_flight=2)
    futures = [batcher.submit(FAKE_REF, _row(0))]
    for i in (1, 2):  # each leaves after the 10 ms window while the first is held
        await asyncio.sleep(0.05)
        futures.append(batcher.submit(FAKE_REF, _row(i)))
    await asyncio.sleep(0.1)
    assert [c.rows for c in fake.calls] == [1, 1], "a third batch left past the limit of two"
    batcher.set_max_in_flight(3)  # a second predictor replica came up, say
    await asyncio.sleep(0.05)
    assert [c.rows for c in fake.calls] == [1, 1, 1]
    fake.gate.set()  # type: ignore[union-attr]
    rows = await asyncio.wait_for(asyncio.gather(*futures), 2.0)
    assert [r.expected_return for r in rows] == pytest.approx(
        fake_outputs(np.stack([_feat(i) for i in range(3)]))[:, 0].tolist()
    )
    await batcher.stop()


class _FlakyDispatch:
    """A handle whose first ``failures`` calls raise (the replica died under them), then
    answer like :class:`FakePredictor`; ``hang`` makes every failing call after the first
    hang instead (no live replica: Serve's router waits for one)."""

    def __init__(self, failures: int, *, hang: bool = False) -> None:
        self.failures = failures
        self.hang = hang
        self.fake = FakePredictor()
        self.calls = 0

    async def dispatch(self, batch: PredictBatch) -> BatchResult | PredictError:
        self.calls += 1
        if self.calls <= self.failures:
            if self.hang and self.calls > 1:
                await asyncio.Event().wait()
            raise RuntimeError("ActorDiedError: the replica died")
        return await self.fake.dispatch(batch)


def _flaky_batcher(flaky: _FlakyDispatch, **kw: float) -> Batcher:
    return Batcher(
        flaky.dispatch,
        max_batch_size=8,
        batch_wait_timeout_s=0.01,
        capacity=100,
        max_in_flight=1,
        features=_cache(),
        metrics=GatewayMetrics(new_registry(), Metrics()),
        featurize=_stand_in_features,
        **kw,  # type: ignore[arg-type]
    )


async def test_a_failed_call_is_retried_once_and_its_rows_answered() -> None:
    flaky = _FlakyDispatch(failures=1)
    batcher = _flaky_batcher(flaky)
    rows = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(FAKE_REF, _row(i)) for i in range(3))), 5.0
    )
    assert [r.expected_return for r in rows] == pytest.approx([0.0, 1.0, 2.0])
    assert flaky.calls == 2
    assert batcher.delivery.retries == 1
    assert batcher.stats.failures == 0
    await batcher.stop()


async def test_two_failed_calls_answer_503_unavailable_after_exactly_two() -> None:
    flaky = _FlakyDispatch(failures=5)
    batcher = _flaky_batcher(flaky)
    with pytest.raises(PredictionFailure) as info:
        await asyncio.wait_for(batcher.submit(FAKE_REF, _row(1)), 5.0)
    assert info.value.kind is FailureKind.UNAVAILABLE
    assert info.value.rule.http_status == 503
    assert "Retry-After" in info.value.headers
    assert flaky.calls == 2, "a batch is retried once, never twice"
    assert batcher.delivery.lost == 1
    await batcher.stop()


async def test_a_predict_error_answer_is_never_retried() -> None:
    fake = FakePredictor(fail_with=PredictError(FailureKind.INVALID_FEATURES, "bad"))
    batcher = _batcher(fake)
    with pytest.raises(PredictionFailure) as info:
        await batcher.submit(FAKE_REF, _row(1))
    assert info.value.kind is FailureKind.INVALID_FEATURES
    assert len(fake.calls) == 1
    assert batcher.delivery.retries == 0
    await batcher.stop()


async def test_a_retry_with_no_live_replica_is_bounded() -> None:
    flaky = _FlakyDispatch(failures=5, hang=True)
    batcher = _flaky_batcher(flaky, retry_timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(PredictionFailure) as info:
        await asyncio.wait_for(batcher.submit(FAKE_REF, _row(1)), 5.0)
    assert info.value.kind is FailureKind.UNAVAILABLE
    assert time.monotonic() - started < 1.0
    assert flaky.calls == 2
    # The next batch's first call is bounded too, and so is its retry.
    started = time.monotonic()
    with pytest.raises(PredictionFailure):
        await asyncio.wait_for(batcher.submit(FAKE_REF, _row(2)), 5.0)
    assert 0.3 < time.monotonic() - started < 1.5
    assert flaky.calls == 4
    await batcher.stop()


async def test_a_call_that_never_answers_is_bounded_and_retried() -> None:
    # The replica died before the call was sent: Serve's router waits for a new replica
    # instead of failing. The bound turns that into a retry, not a hang.
    flaky = _FlakyDispatch(failures=0)
    first = True

    async def hangs_once(batch: PredictBatch) -> BatchResult | PredictError:
        nonlocal first
        flaky.calls += 1
        if first:
            first = False
            await asyncio.Event().wait()
        return await flaky.fake.dispatch(batch)

    batcher = _flaky_batcher(flaky, retry_timeout_s=0.2)
    batcher.delivery._dispatch = hangs_once
    started = time.monotonic()
    row = await asyncio.wait_for(batcher.submit(FAKE_REF, _row(3)), 5.0)
    assert row.expected_return == pytest.approx(3.0)
    assert 0.15 < time.monotonic() - started < 1.5
    assert flaky.calls == 2
    await batcher.stop()


async def test_a_lost_predictor_releases_every_waiting_row_at_once() -> None:
    # One replica, killed: the batch in flight fails at once, its retry finds no replica
    # (Serve's router waits for one), and a second batch sent meanwhile waits in the router
    # too. When the retry's short budget runs out, every row still waiting (in flight or
    # queued) gets 503 now, not after its own call's 2 s bound.
    calls = 0

    async def dead(batch: PredictBatch) -> BatchResult | PredictError:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("ActorDiedError: the replica died")
        await asyncio.Event().wait()  # no replica: the router never answers
        raise AssertionError("unreachable")

    lost: list[float] = []
    batcher = Batcher(
        dead,
        max_batch_size=2,
        batch_wait_timeout_s=0.0,
        capacity=100,
        max_in_flight=2,
        features=_cache(),
        metrics=GatewayMetrics(new_registry(), Metrics()),
        featurize=_stand_in_features,
        retry_timeout_s=2.0,
    )
    batcher.on_predictor_lost = lambda: lost.append(time.monotonic())
    started = time.monotonic()
    first = batcher.submit(FAKE_REF, _row(1))
    await asyncio.sleep(0.05)
    others = [batcher.submit(FAKE_REF, _row(i)) for i in range(2, 7)]  # in flight + queued
    results = await asyncio.wait_for(asyncio.gather(first, *others, return_exceptions=True), 5.0)
    elapsed = time.monotonic() - started
    assert all(
        isinstance(r, PredictionFailure) and r.kind is FailureKind.UNAVAILABLE for r in results
    ), results
    assert 0.4 < elapsed < 1.0, "released by the retry's 0.5 s budget, not the 2 s bound"
    assert len(lost) == 1
    assert batcher.delivery.retries == 1
    await batcher.stop()


async def test_no_retry_for_rows_past_their_deadline_or_gone() -> None:
    flaky = _FlakyDispatch(failures=5)
    batcher = _flaky_batcher(flaky)
    doomed = batcher.submit(FAKE_REF, _row(1), deadline=time.monotonic() + 0.05)

    async def slow_failure(batch: PredictBatch) -> BatchResult | PredictError:
        flaky.calls += 1
        await asyncio.sleep(0.1)  # the deadline passes during the failed call
        raise RuntimeError("gone")

    batcher.delivery._dispatch = slow_failure
    with pytest.raises(PredictionFailure) as info:
        await asyncio.wait_for(doomed, 5.0)
    assert info.value.kind is FailureKind.UNAVAILABLE
    assert flaky.calls == 1, "no time was left for a retry"
    assert batcher.delivery.retries == 0
    await batcher.stop()


async def test_a_lone_row_leaves_at_once_even_with_an_idle_hold_set() -> None:
    fake = FakePredictor()
    batcher = _batcher(fake, batch_wait_timeout_s=30.0, idle_hold_s=0.5)
    for value in (1.0, 2.0, 3.0):  # lone requests, each after a quiet spell
        started = time.monotonic()
        row = await asyncio.wait_for(batcher.submit(FAKE_REF, _row(value)), 2.0)
        assert time.monotonic() - started < 0.25, "a lone row waited for the hold"
        assert row.forward_rows == 1
        await asyncio.sleep(0.6)
    assert [c.rows for c in fake.calls] == [1, 1, 1]
    await batcher.stop()


async def _stream(batcher: Batcher, rows: int, gap_s: float) -> list[float]:
    """``rows`` single-row requests ``gap_s`` apart; each row's queue wait in ms."""
    futures = []
    for i in range(rows):
        futures.append(batcher.submit(FAKE_REF, _row(float(i))))
        await asyncio.sleep(gap_s)
    results = await asyncio.wait_for(asyncio.gather(*futures), 5.0)
    return [r.queue_ms for r in results]


async def test_a_steady_stream_fills_an_idle_predictors_batches_within_the_hold() -> None:
    hold_s = 0.1
    held, eager = FakePredictor(), FakePredictor()
    with_hold = _batcher(held, batch_wait_timeout_s=1.0, idle_hold_s=hold_s)
    without = _batcher(eager, batch_wait_timeout_s=1.0)
    waits = await _stream(with_hold, 30, 0.01)
    await _stream(without, 30, 0.01)
    # The first request of the stream finds no stream yet and leaves alone; the rest wait
    # (at most the hold) for the rows arriving behind them.
    assert held.calls[0].rows == 1
    assert max(c.rows for c in held.calls) >= 5, [c.rows for c in held.calls]
    assert len(held.calls) < len(eager.calls) / 2
    assert max(waits) <= hold_s * 1000 + 200, "a row waited past the hold (the window: 1 s)"
    assert [c.rows for c in held.calls if c.rows > 8] == []  # never past max_batch_size
    await with_hold.stop()
    await without.stop()


async def test_the_hold_never_exceeds_the_batch_window() -> None:
    fake = FakePredictor()
    batcher = _batcher(fake, batch_wait_timeout_s=0.02, idle_hold_s=5.0)
    waits = await _stream(batcher, 20, 0.005)
    assert max(waits) <= 20 + 200, "the 20 ms window was not the upper bound of the hold"
    await batcher.stop()


def test_arrival_gap_is_a_smoothed_mean_that_a_pause_lifts_at_once() -> None:
    gap = ArrivalGap(weight=0.5)
    gap.arrived(0.0)
    assert gap.mean_s == float("inf"), "one request is not a stream"
    gap.arrived(0.010)
    assert gap.mean_s == pytest.approx(0.010)
    gap.arrived(0.012)
    assert gap.mean_s == pytest.approx(0.006)
    gap.arrived(2.012)  # a quiet spell
    assert gap.mean_s == pytest.approx(1.003)


async def test_a_call_names_each_request_once_in_row_order() -> None:
    fake = FakePredictor(gate=asyncio.Event())
    batcher = _batcher(fake, batch_wait_timeout_s=30.0)
    first = batcher.submit(FAKE_REF, _row(0), request_id="lone")
    await asyncio.sleep(0.05)  # sent at once, held in flight by the gate
    many = batcher.submit_all([FAKE_REF] * 3, [_row(i) for i in (1, 2, 3)], request_id="batch")
    other = batcher.submit(FAKE_REF, _row(4), request_id="next")
    fake.gate.set()  # type: ignore[union-attr]
    await asyncio.wait_for(asyncio.gather(first, *many, other), 2.0)
    assert [(c.rows, c.request_ids) for c in fake.calls] == [
        (1, ("lone",)),
        (4, ("batch", "next")),
    ]
    await batcher.stop()


async def test_a_failed_call_nobody_waits_for_fails_no_other_batch() -> None:
    # A batch whose only row's deadline passes while its call fails is not retried; that
    # is no sign the predictor is gone, so a batch in flight beside it is still answered
    # and the predictor is not marked lost (every row of the gateway failed with 503).
    async def dispatch(batch: PredictBatch) -> BatchResult | PredictError:
        if batch.request_ids == ("doomed",):
            await asyncio.sleep(0.1)  # the deadline passes during the failed call
            raise ConnectionError("socket r1.sock: closed by the replica")
        await asyncio.sleep(0.2)  # a live replica, answering a little later
        return await FakePredictor().dispatch(batch)

    batcher = Batcher(
        dispatch,
        max_batch_size=1,
        batch_wait_timeout_s=0.0,
        capacity=100,
        max_in_flight=2,
        features=_cache(),
        metrics=GatewayMetrics(new_registry(), Metrics()),
        featurize=_stand_in_features,
    )
    lost: list[int] = []
    batcher.on_predictor_lost = lambda: lost.append(1)
    doomed = batcher.submit(
        FAKE_REF, _row(1), request_id="doomed", deadline=time.monotonic() + 0.05
    )
    healthy = batcher.submit(FAKE_REF, _row(2), request_id="healthy")
    with pytest.raises(PredictionFailure):
        await asyncio.wait_for(doomed, 5.0)
    row = await asyncio.wait_for(healthy, 5.0)
    assert row.expected_return == pytest.approx(2.0)
    assert lost == []
    await batcher.stop()
