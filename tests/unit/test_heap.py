"""settle_heap (app.gateway.heap): what lives now is frozen out of collections, and young
collections come less often; a higher threshold already set is kept."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from app.gateway.heap import GEN0_THRESHOLD, settle_heap


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_settle_heap_freezes_the_live_objects_and_raises_gen0() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    survivor = [object() for _ in range(10)]
    settle_heap()
    assert gc.get_freeze_count() > len(survivor)
    assert gc.get_threshold() == (GEN0_THRESHOLD, 10, 10)


def test_a_higher_threshold_is_kept() -> None:
    gc.set_threshold(GEN0_THRESHOLD * 4, 20, 30)
    settle_heap()
    assert gc.get_threshold() == (GEN0_THRESHOLD * 4, 20, 30)
