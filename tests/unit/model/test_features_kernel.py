"""The compiled features (model.common.features_kernel) against their numpy statement."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import model.common
from model.common import features
from model.common.features import WINDOW, compute_features, sliding_windows
from model.data import DATA_SOURCES, load_bars, synthetic_bars


def _numpy(bars: np.ndarray) -> np.ndarray:
    return features._numpy_features(np.asarray(bars, dtype=np.float64)[..., -WINDOW:, :])


@pytest.mark.parametrize("source", DATA_SOURCES)
def test_the_compiled_loop_gives_the_numpy_features_on_every_window_of_real_bars(
    source: str,
) -> None:
    windows = sliding_windows(load_bars(source))
    compiled = compute_features(windows)
    assert compiled.dtype == np.float32
    # Bit for bit on the machines measured; float32 rounding is the bound elsewhere (numpy
    # and libm may round a logarithm differently in the last place).
    np.testing.assert_allclose(compiled, _numpy(windows), rtol=1e-6, atol=1e-6)


def _degenerate() -> np.ndarray:
    rng = np.random.default_rng(7)
    bars = np.stack([synthetic_bars(WINDOW + 6, seed=s) for s in range(12)])
    bars[0, 10, 3] = np.nan
    bars[1, 5, 1] = np.inf
    bars[2, 7, 2] = -np.inf
    bars[3, 3, 0] = 0.0
    bars[4, 9, 4] = -5.0
    bars[5, :, :4] *= 1e300
    bars[6, 30, 3] = 1e-300
    bars[7, 31, :] = 1e308
    bars[8, :, :4] = 1.2345  # flat prices ...
    bars[8, :, 4] = 0.0  # ... and no volume
    bars[9, 20:, :] = bars[9, 20]  # a window ending in a long run of one bar
    bars[10, :, 1], bars[10, :, 2] = bars[10, :, 2], bars[10, :, 1].copy()  # high < low
    bars[11] *= rng.uniform(0.5, 2.0, size=(WINDOW + 6, 1))
    return bars


def test_the_compiled_loop_gives_the_numpy_features_when_the_input_is_degenerate() -> None:
    bars = _degenerate()
    with np.errstate(all="ignore"):
        expected = _numpy(bars)
    compiled = compute_features(bars)
    assert np.isfinite(compiled).all()
    assert np.abs(compiled).max() <= 1e6
    np.testing.assert_allclose(compiled, expected, rtol=1e-5, atol=1e-5)


def test_every_caller_shares_one_compiled_version() -> None:
    """A request's contiguous float64 windows, a training set's overlapping view, integer
    bars, one 2-D window: one compilation serves them all, so no request pays for a new
    one after the warm-up."""
    kernel = features._kernel()
    assert kernel is not None
    features.warm_up()
    bars = load_bars("eurusd")
    compute_features(sliding_windows(bars)[:40])  # a strided view
    compute_features(bars[:WINDOW].astype(np.int64) + 1)
    compute_features(np.asfortranarray(bars[:WINDOW]))
    compute_features(bars[: WINDOW + 3][None, None])
    assert len(kernel._features.signatures) == 1


def test_the_numpy_version_serves_when_numba_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` raises ImportError
    monkeypatch.delitem(sys.modules, "model.common.features_kernel", raising=False)
    monkeypatch.delattr(model.common, "features_kernel", raising=False)
    features._kernel.cache_clear()
    try:
        assert features._kernel() is None
        features.warm_up()  # the numpy version, and no error
        bars = load_bars("goog")[-(WINDOW + 9) :]
        windows = sliding_windows(bars)
        np.testing.assert_array_equal(compute_features(windows), _numpy(windows))
    finally:
        features._kernel.cache_clear()
