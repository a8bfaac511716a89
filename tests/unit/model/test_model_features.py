"""Feature extraction: shape contract, causality, vectorisation, robustness, validation
(each feature test for the compiled loop and for the numpy version alike)."""

from __future__ import annotations

import numpy as np
import pytest

from model.common.features import (
    FEATURE_NAMES,
    NUM_FEATURES,
    WINDOW,
    compute_features,
    sliding_windows,
    validate_bars,
)
from model.data import load_bars, synthetic_bars


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here holds both ways of computing the features: the compiled loop that
    serves (model.common.features_kernel) and the numpy statement served without numba."""
    from model.common import features

    if request.param == "numpy":
        monkeypatch.setattr(features, "_kernel", lambda: None)
    else:
        assert features._kernel() is not None, "numba is a dependency: the loop must load"
    return str(request.param)


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    """Six real EURUSD windows of exactly WINDOW bars, shaped (2, 3, WINDOW, 5)."""
    bars = load_bars("eurusd")
    return np.ascontiguousarray(sliding_windows(bars)[100:700:100]).reshape(2, 3, WINDOW, 5)


def test_features_have_contract_shape_and_dtype_for_batched_input() -> None:
    bars = synthetic_bars(WINDOW + 36, seed=1)
    out = compute_features(np.broadcast_to(bars, (2, 3, *bars.shape)))
    assert out.shape == (2, 3, WINDOW, NUM_FEATURES)
    assert out.dtype == np.float32
    assert len(FEATURE_NAMES) == NUM_FEATURES


@pytest.mark.parametrize("k", [1, 5, 17, 40, 63])
def test_features_are_causal_when_bar_k_changes(windows: np.ndarray, k: int) -> None:
    changed = windows.copy()
    changed[..., k, :4] *= 1.013  # every price of bar k
    changed[..., k, 4] = changed[..., k, 4] * 3 + 7
    before, after = compute_features(windows), compute_features(changed)
    np.testing.assert_array_equal(after[..., :k, :], before[..., :k, :])
    # The perturbation is visible from row k on, so the check above has teeth.
    assert not np.array_equal(after[..., k, :], before[..., k, :])


def test_features_ignore_bars_before_the_last_window() -> None:
    bars = synthetic_bars(WINDOW + 50, seed=2)
    changed = bars.copy()
    changed[:50] *= 2.0
    np.testing.assert_array_equal(compute_features(changed), compute_features(bars))
    np.testing.assert_array_equal(compute_features(bars), compute_features(bars[-WINDOW:]))


def test_batched_features_equal_per_window_calls(windows: np.ndarray) -> None:
    batched = compute_features(windows)
    for idx in np.ndindex(windows.shape[:2]):
        np.testing.assert_allclose(batched[idx], compute_features(windows[idx]), rtol=0, atol=0)


def test_features_are_finite_when_prices_are_flat_and_volume_is_zero() -> None:
    bars = np.tile([1.2345, 1.2345, 1.2345, 1.2345, 0.0], (WINDOW, 1))
    out = compute_features(bars)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, np.zeros_like(out))


@pytest.mark.parametrize(
    "bar",
    [
        [0.0, 0.0, 0.0, 0.0, 0.0],  # zero prices
        [1.0, 0.5, 2.0, 1.5, 10.0],  # high < low
        [1e300, 1e300, 1e-300, 1e-300, 1e300],  # extreme magnitudes
        [1.0, 1.0, 1.0, 1.0, -5.0],  # negative volume
    ],
)
def test_features_are_finite_when_finite_input_is_degenerate(bar: list[float]) -> None:
    bars = synthetic_bars(WINDOW, seed=3)
    bars[20] = bar
    bars[40:44] = bar
    assert np.isfinite(compute_features(bars)).all()


def test_features_are_finite_when_prices_jump_by_absurd_factors() -> None:
    bars = np.tile([1e-300, 1e-300, 1e-300, 1e-300, 1.0], (WINDOW, 1))
    bars[30:] = [1e300, 1e300, 1e300, 1e300, 1e300]
    bars[50, 1] = 1.7e308
    assert np.isfinite(compute_features(bars)).all()


def test_features_match_their_definitions_on_a_simple_series() -> None:
    close = np.exp(np.linspace(0.0, 0.63, WINDOW))  # +1% log return per bar
    bars = np.column_stack([close, close * 1.01, close * 0.99, close, np.full(WINDOW, 100.0)])
    out = compute_features(bars)
    names = {n: i for i, n in enumerate(FEATURE_NAMES)}
    np.testing.assert_allclose(out[1:, names["logret_1"]], 0.01, rtol=1e-5)
    np.testing.assert_allclose(out[20:, names["logret_16"]], 0.16, rtol=1e-5)
    np.testing.assert_allclose(out[1:, names["rsi_14"]], 1.0)  # only gains
    assert (out[25:, names["sma_gap_21"]] > out[25:, names["sma_gap_8"]]).all()
    np.testing.assert_allclose(out[:, names["volume_z_16"]], 0.0, atol=1e-6)


def test_compute_features_raises_when_bars_are_too_short() -> None:
    with pytest.raises(ValueError, match="bars must be shaped"):
        compute_features(synthetic_bars(WINDOW - 1))


def test_validate_bars_accepts_real_data() -> None:
    assert validate_bars(load_bars("eurusd")) is None
    assert validate_bars(sliding_windows(load_bars("goog"))[:5]) is None


def _bad(row: int, col: int, value: float) -> np.ndarray:
    bars = synthetic_bars(WINDOW + 4, seed=4)
    bars[row, col] = value
    return bars


@pytest.mark.parametrize(
    ("bars", "expected"),
    [
        (np.zeros((WINDOW, 4)), "shaped"),
        (np.zeros(WINDOW * 5), "shaped"),
        (synthetic_bars(WINDOW - 1), f"at least {WINDOW} bars"),
        (np.array([["a"] * 5] * WINDOW), "real numbers"),
        (_bad(7, 3, np.nan), "bar (7,) has a non-finite close"),
        (_bad(9, 4, np.inf), "bar (9,) has a non-finite volume"),
        (_bad(3, 0, 0.0), "bar (3,) has a non-positive open"),
        (_bad(5, 2, -1.0), "bar (5,) has a non-positive low"),
        (_bad(11, 1, 1e-3), "bar (11,) has high < low"),
        (_bad(13, 4, -1.0), "bar (13,) has a negative volume"),
    ],
)
def test_validate_bars_reports_the_problem_when_input_is_bad(
    bars: np.ndarray, expected: str
) -> None:
    message = validate_bars(bars)
    assert message is not None
    assert expected in message


def test_validate_bars_locates_the_problem_when_input_is_batched() -> None:
    batch = np.stack([synthetic_bars(WINDOW, seed=s) for s in range(3)])
    batch[2, 10, 4] = -3.0
    assert validate_bars(batch) == "bar (2, 10) has a negative volume"


def test_sliding_windows_is_a_view_of_consecutive_slices() -> None:
    bars = synthetic_bars(WINDOW + 9, seed=5)
    win = sliding_windows(bars)
    assert win.shape == (10, WINDOW, 5)
    assert np.shares_memory(win, bars)
    np.testing.assert_array_equal(win[7], bars[7 : 7 + WINDOW])


@pytest.mark.parametrize(("shape", "spans"), [((3, 64), (8, 21, 14)), ((2, 2, 10), (16, 1))])
def test_trailing_means_are_each_series_own_trailing_mean_every_time(
    shape: tuple[int, ...], spans: tuple[int, ...]
) -> None:
    """One cumulative sum serves series of different spans; the start indices are made
    once per shape and shared: read-only, and the second call (from the cache) answers
    like the first."""
    from model.common.features import _trailing_means, _trailing_starts

    rng = np.random.default_rng(len(spans))
    series = [(rng.standard_normal(shape), n) for n in spans]
    t = shape[-1]
    expected = [
        np.stack([x[..., max(0, i + 1 - n) : i + 1].mean(axis=-1) for i in range(t)], axis=-1)
        for x, n in series
    ]
    for _ in range(2):
        got = _trailing_means(*series)
        assert len(got) == len(spans)
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
    assert not any(a.flags.writeable for a in _trailing_starts(t, spans, len(shape) + 1))


def test_a_large_set_is_featurised_in_slices_with_the_same_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from model.common import features

    windows = np.ascontiguousarray(sliding_windows(load_bars("eurusd"))[:50])
    whole = compute_features(windows)
    monkeypatch.setattr(features, "CHUNK_WINDOWS", 7)
    sliced = compute_features(windows)
    assert sliced.shape == whole.shape
    assert np.array_equal(sliced, whole)
