"""The feature cache's key (app.gateway.feature_cache): equal windows share an entry,
any changed bar, timestamp or shift gets its own."""

from __future__ import annotations

import numpy as np

from app.gateway.feature_cache import FeatureCache
from app.gateway.windows import Window
from model.common.features import FEATURE_SPEC_VERSION


def _window(bars: np.ndarray, ts: np.ndarray) -> Window:
    return Window(symbol="S", bars=bars, timestamps=ts, as_of=int(ts[-1]))


def test_equal_windows_hit_and_any_change_misses() -> None:
    rng = np.random.default_rng(3)
    bars = rng.uniform(1.0, 2.0, size=(65, 5))
    ts = np.arange(65, dtype=np.int64) * 60 + 1_700_000_000
    cache = FeatureCache(ttl_seconds=60, max_entries=10)
    first = _window(bars[1:].copy(), ts[1:].copy())
    key, features = cache.lookup(first)
    assert features is None
    cache.put(key, np.ones((64, 3)))

    same = _window(bars[1:].copy(), ts[1:].copy())  # other arrays, the same numbers
    assert cache.lookup(same)[1] is not None

    changed_bar = bars[1:].copy()
    changed_bar[-1, 3] = np.nextafter(changed_bar[-1, 3], 3.0)  # one ulp
    changed_ts = ts[1:].copy()
    changed_ts[0] -= 1
    for other in (
        _window(changed_bar, ts[1:].copy()),
        _window(bars[1:].copy(), changed_ts),
        _window(bars[:-1].copy(), ts[:-1].copy()),  # the window one bar earlier
    ):
        assert cache.lookup(other)[1] is None
    assert key.startswith(FEATURE_SPEC_VERSION.encode())


def test_a_disabled_cache_never_answers() -> None:
    cache = FeatureCache(ttl_seconds=60, max_entries=10, enabled=False)
    w = _window(np.ones((64, 5)), np.arange(64, dtype=np.int64))
    key, _ = cache.lookup(w)
    cache.put(key, np.ones((64, 3)))
    assert cache.lookup(w)[1] is None
    assert len(cache) == 0
