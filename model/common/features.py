"""OHLCV bars -> engineered, scale-free features for the CNN+LSTM (spec "ohlcv16-v1").

Pure numpy: the gateway imports this to validate requests and compute features, and
the gateway must never import torch. Everything is vectorised over leading batch axes
so one call handles a whole request batch or a whole training set.

Causality: feature row t depends only on bars 0..t of the window. Rolling statistics
use cumulative sums with an expanding window at the start of the window, so no row
ever sees a later bar and every row is defined without padding from outside the window.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

WINDOW = 64
NUM_FEATURES = 16
FEATURE_SPEC_VERSION = "ohlcv16-v1"
OHLCV_COLUMNS = ("open", "high", "low", "close", "volume")
FEATURE_NAMES: tuple[str, ...] = (
    "logret_1",
    "logret_2",
    "logret_4",
    "logret_8",
    "logret_16",
    "log_range",
    "log_body",
    "upper_wick",
    "lower_wick",
    "volatility_8",
    "volatility_16",
    "volume_z_16",
    "log_volume_change",
    "sma_gap_8",
    "sma_gap_21",
    "rsi_14",
)

_RETURN_LAGS = (1, 2, 4, 8, 16)
# Floors keep logs and ratios finite on degenerate but finite input (zero prices,
# flat bars); validate_bars rejects such input at the gateway, training never sees it.
_PRICE_FLOOR = float(np.finfo(np.float64).tiny)
_STD_FLOOR = 1e-12
# Real features stay within +-100; absurd but finite input (a 1e300x jump) is clipped
# here so the float32 cast and the network never see inf or NaN.
_FEATURE_LIMIT = 1e6
CHUNK_WINDOWS = 4096  # windows featurised at a time (compute_features)

assert len(FEATURE_NAMES) == NUM_FEATURES


@functools.cache
def _trailing_starts(t: int, spans: tuple[int, ...], ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """For series stacked on a leading axis (``ndim`` axes in all), each with its own
    trailing span: where each row's window starts in the zero-padded cumulative sum, and
    its length (shorter at the start). The same few shapes come back on every request:
    made once, read-only."""
    end = np.arange(1, t + 1)
    start = np.maximum(end - np.array(spans)[:, None], 0)
    length = (end - start).astype(np.float64)
    shape = (len(spans), *(1,) * (ndim - 2), t)
    start, length = start.reshape(shape), length.reshape(shape)
    for a in (start, length):
        a.setflags(write=False)
    return start, length


@functools.cache
def _lag_index(t: int, lag: int) -> np.ndarray:
    idx = np.maximum(np.arange(t) - lag, 0)
    idx.setflags(write=False)
    return idx


def _trailing_means(*series: tuple[np.ndarray, int]) -> list[np.ndarray]:
    """Trailing means along the last axis (expanding at the start) of same-shaped series,
    each ``(x, n)`` over its own n: one cumulative sum for them all (a numpy call costs
    about as much on a 64-value row as the arithmetic, so fewer calls is faster)."""
    xs = np.stack([x for x, _ in series])
    t = xs.shape[-1]
    padded = np.empty((*xs.shape[:-1], t + 1))
    padded[..., 0] = 0.0
    np.cumsum(xs, axis=-1, out=padded[..., 1:])
    start, length = _trailing_starts(t, tuple(n for _, n in series), xs.ndim)
    sums = padded[..., 1:] - np.take_along_axis(padded, start, axis=-1)
    return list(sums / length)


def _std(mean: np.ndarray, mean_of_squares: np.ndarray) -> np.ndarray:
    # E[x^2] - E[x]^2 can go slightly negative through rounding.
    return np.sqrt(np.maximum(mean_of_squares - mean * mean, 0.0))


def _lagged_diff(x: np.ndarray, lag: int) -> np.ndarray:
    """x[t] - x[max(t - lag, 0)]: the change over `lag` steps, shorter at the window start."""
    return x - x[..., _lag_index(x.shape[-1], lag)]


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    ok = den > _STD_FLOOR
    return np.where(ok, num / np.where(ok, den, 1.0), 0.0)


@functools.cache
def _kernel() -> Any:
    """:mod:`model.common.features_kernel` (compiled by numba), or None without numba."""
    try:
        from model.common import features_kernel
    except ImportError:  # e.g. a GPU box with torch only: the numpy version serves
        return None
    return features_kernel


def warm_up() -> None:
    """Compile the serving path's features now (about 2 s, or a cache load), not on the
    first request: one window through :func:`compute_features`."""
    compute_features(np.ones((WINDOW, len(OHLCV_COLUMNS))))


def compute_features(bars: np.ndarray) -> np.ndarray:
    """Features of the last WINDOW bars: float32 ``[..., WINDOW, NUM_FEATURES]``.

    ``bars`` is ``[..., T, 5]`` (open, high, low, close, volume) with ``T >= WINDOW``.
    """
    bars = np.asarray(bars, dtype=np.float64)
    if bars.ndim < 2 or bars.shape[-1] != len(OHLCV_COLUMNS) or bars.shape[-2] < WINDOW:
        raise ValueError(
            f"bars must be shaped [..., T>={WINDOW}, {len(OHLCV_COLUMNS)}], got {bars.shape}"
        )
    if bars.ndim > 2 and bars.shape[0] > CHUNK_WINDOWS:
        # Each window is independent of the others: a training set goes in slices, so its
        # temporaries (a dozen series per window) stay a few tens of MB.
        return np.concatenate(
            [
                compute_features(bars[i : i + CHUNK_WINDOWS])
                for i in range(0, len(bars), CHUNK_WINDOWS)
            ]
        )
    last = bars[..., -WINDOW:, :]
    kernel = _kernel()
    if kernel is not None:
        result: np.ndarray = kernel.compute_features(last)
        return result
    return _numpy_features(last)


def _numpy_features(last: np.ndarray) -> np.ndarray:
    """The whole-array statement of the features; served where numba is missing, and the
    reference the compiled loop is tested against."""
    with np.errstate(all="ignore"):  # degenerate input is handled by guards and the clip
        out = _feature_columns(last.transpose(last.ndim - 1, *range(last.ndim - 1)))
    out = np.clip(out, -_FEATURE_LIMIT, _FEATURE_LIMIT)  # a new array, and no inf left
    np.copyto(out, 0.0, where=np.isnan(out))
    return out.astype(np.float32)


def _feature_columns(w: np.ndarray) -> np.ndarray:
    """``[5, ..., WINDOW]`` bar columns -> float64 ``[..., WINDOW, NUM_FEATURES]``."""
    o, h, low, c = np.maximum(w[:4], _PRICE_FLOOR)
    v = np.maximum(w[4], 0.0)

    log_c = np.log(c)
    ret1 = _lagged_diff(log_c, 1)
    returns = [ret1] + [_lagged_diff(log_c, lag) for lag in _RETURN_LAGS[1:]]

    # Wick lengths as a share of the range; the zero-range guard is relative to the close
    # so it means the same at any price level.
    price_range = h - low
    flat = price_range <= _STD_FLOOR * c
    range_or_1 = np.where(flat, 1.0, price_range)
    upper_wick = np.where(flat, 0.0, np.clip((h - np.maximum(o, c)) / range_or_1, 0.0, 1.0))
    lower_wick = np.where(flat, 0.0, np.clip((np.minimum(o, c) - low) / range_or_1, 0.0, 1.0))

    log_v = np.log1p(v)
    # Standard deviations are taken on series centred on the window's first value
    # (causal: every row has seen it), so E[x^2] - E[x]^2 does not cancel catastrophically
    # on large, nearly constant input. SMA gaps (c / SMA(n) - 1) are taken on prices
    # relative to the first close: the denominator is ~1 whatever the price level, and
    # the cumsum stays exact for flat prices (gap exactly 0).
    lv = log_v - log_v[..., :1]
    lv2 = lv * lv
    r = ret1 - ret1[..., :1]
    r2 = r * r
    rel = c / c[..., :1] - 1.0
    (
        vol_mean,
        lv_mean,
        lv2_mean,
        r_mean8,
        r2_mean8,
        r_mean16,
        r2_mean16,
        gain,
        loss,
        rel_mean8,
        rel_mean21,
    ) = _trailing_means(
        (log_v, 16),
        (lv, 16),
        (lv2, 16),
        (r, 8),
        (r2, 8),
        (r, 16),
        (r2, 16),
        (np.maximum(ret1, 0.0), 14),
        (np.maximum(-ret1, 0.0), 14),
        (rel, 8),
        (rel, 21),
    )
    volume_z = _safe_ratio(log_v - vol_mean, _std(lv_mean, lv2_mean))
    # Cutler's RSI (simple averages) mapped from [0, 100] to [-1, 1]: (gain - loss) / (gain + loss).
    rsi = _safe_ratio(gain - loss, gain + loss)

    columns = [
        *returns,
        np.log(h) - np.log(low),
        log_c - np.log(o),
        upper_wick,
        lower_wick,
        _std(r_mean8, r2_mean8),
        _std(r_mean16, r2_mean16),
        volume_z,
        _lagged_diff(log_v, 1),
        _safe_ratio(rel - rel_mean8, 1.0 + rel_mean8),
        _safe_ratio(rel - rel_mean21, 1.0 + rel_mean21),
        rsi,
    ]
    return np.stack(columns, axis=-1)


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def validate_bars(bars: np.ndarray) -> str | None:
    """A human-readable description of the first problem in ``bars``, or None if usable.

    Checks shape, length, finiteness, positive prices, high >= low and volume >= 0.
    Locations are reported as ``bar (batch..., t)`` indices into the array given.
    """
    arr = np.asarray(bars)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        return f"bars must be real numbers, got dtype {arr.dtype}"
    if arr.ndim < 2 or arr.shape[-1] != len(OHLCV_COLUMNS):
        return (
            f"bars must be shaped [..., T, {len(OHLCV_COLUMNS)}] with columns "
            f"{', '.join(OHLCV_COLUMNS)}; got shape {arr.shape}"
        )
    if arr.shape[-2] < WINDOW:
        return f"need at least {WINDOW} bars, got {arr.shape[-2]}"
    arr = arr.astype(np.float64, copy=False)

    finite = np.isfinite(arr)
    if not finite.all():
        where = _first_index(~finite)
        return f"bar {where[:-1]} has a non-finite {OHLCV_COLUMNS[where[-1]]}"
    prices = arr[..., :4]
    if (prices <= 0).any():
        where = _first_index(prices <= 0)
        return f"bar {where[:-1]} has a non-positive {OHLCV_COLUMNS[where[-1]]}"
    inverted = arr[..., 1] < arr[..., 2]
    if inverted.any():
        return f"bar {_first_index(inverted)} has high < low"
    negative_volume = arr[..., 4] < 0
    if negative_volume.any():
        return f"bar {_first_index(negative_volume)} has a negative volume"
    return None


def sliding_windows(bars: np.ndarray) -> np.ndarray:
    """``(N, 5)`` bars -> ``(N - WINDOW + 1, WINDOW, 5)`` overlapping windows (a view)."""
    if bars.ndim != 2 or bars.shape[1] != len(OHLCV_COLUMNS) or bars.shape[0] < WINDOW:
        raise ValueError(f"bars must be shaped (N>={WINDOW}, 5), got {bars.shape}")
    # sliding_window_view appends the window axis last; swapaxes keeps it a view.
    return sliding_window_view(bars, WINDOW, axis=0).swapaxes(1, 2)
