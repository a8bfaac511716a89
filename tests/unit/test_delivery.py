"""How long one try at the predictor may take: bounded by how long calls take now."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from app.gateway.delivery import FLOOR_S, MIN_CALLS, Delivery
from app.gateway.rows import QueuedRow
from model.common.protocol import BatchResult, PredictBatch, PredictError
from tests.fakes import FAKE_REF


def _call() -> PredictBatch:
    return PredictBatch(ref=FAKE_REF, features=np.zeros((1, 64, 16), np.float32))


def _waiting_row() -> QueuedRow:
    return QueuedRow(
        sort_key=(0, 0),
        ref=FAKE_REF,
        features=None,
        bars=np.zeros((64, 5)),
        cache_key=b"",
        request_id="r",
        future=asyncio.get_running_loop().create_future(),
        enqueued=time.monotonic(),
        deadline=None,
    )


class _Predictor:
    def __init__(self) -> None:
        self.delay_s = 0.0
        self.hang = False
        self.calls = 0

    async def dispatch(self, batch: PredictBatch) -> BatchResult | PredictError:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay_s)
        return BatchResult(
            ref=batch.ref,
            outputs=np.zeros((batch.rows, 2)),
            forward_rows=batch.rows,
            model_ms=1.0,
            horizon_bars=1,
        )


async def test_the_bound_is_the_configured_timeout_until_calls_were_seen() -> None:
    delivery = Delivery(_Predictor().dispatch, clock=time.monotonic, retry_timeout_s=2.0)
    assert delivery.bound_s() == 2.0


async def test_fast_calls_bring_the_bound_down_to_the_floor_and_a_hang_is_cut_there() -> None:
    predictor = _Predictor()
    lost: list[int] = []
    delivery = Delivery(
        predictor.dispatch,
        clock=time.monotonic,
        retry_timeout_s=2.0,
        on_lost=lambda: lost.append(1),
    )
    for _ in range(MIN_CALLS):
        assert isinstance(await delivery.send(_call(), [_waiting_row()]), BatchResult)
    assert delivery.bound_s() == FLOOR_S
    predictor.hang = True  # the only replica died; the router holds the calls
    started = time.monotonic()
    assert await delivery.send(_call(), [_waiting_row()]) is None
    elapsed = time.monotonic() - started
    assert 2 * FLOOR_S * 0.9 < elapsed < 2 * FLOOR_S + 0.3, "two tries, each at the floor"
    assert lost == [1]


async def test_slower_calls_raise_the_bound_with_them() -> None:
    predictor = _Predictor()
    predictor.delay_s = 0.1
    delivery = Delivery(predictor.dispatch, clock=time.monotonic, retry_timeout_s=2.0)
    for _ in range(MIN_CALLS):
        await delivery.send(_call(), [_waiting_row()])
    assert 0.4 <= delivery.bound_s() < 0.6  # four times the slowest recent call
    predictor.delay_s = 0.3  # slower than before, but inside the bound: answered once
    assert isinstance(await delivery.send(_call(), [_waiting_row()]), BatchResult)
    assert delivery.retries == 0
    assert delivery.bound_s() >= 1.2


async def test_a_retry_nobody_waits_for_is_not_sent_and_loses_no_predictor() -> None:
    # The first try failed (a socket that broke under it), but no row waits for a retry
    # any more (its client went away): nothing is sent again and nothing was learnt about
    # the predictor, so ``on_lost`` (which fails every row of the gateway and marks the
    # predictor unreachable) must not run.
    lost: list[int] = []

    async def broken(batch: PredictBatch) -> BatchResult | PredictError:
        raise ConnectionError("socket r1.sock: closed by the replica")

    delivery = Delivery(broken, clock=time.monotonic, on_lost=lambda: lost.append(1))
    gone = _waiting_row()
    gone.future.cancel()
    assert await delivery.send(_call(), [gone]) is None
    assert delivery.retries == 0
    assert delivery.lost == 1
    assert lost == []
