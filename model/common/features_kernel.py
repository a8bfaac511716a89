"""``compute_features`` as one compiled loop per window (numba): the serving path's copy.

:mod:`model.common.features` states the features as whole-array numpy, about sixty calls
per window. On a 64-bar window each call costs about what its arithmetic does, so one
window took ~130 us warm and ~0.55 ms at 1 req/s (cold caches), the largest piece of a lone
request's gateway time (BENCHMARKS.md, session 20). This module computes the same numbers
in one pass per window: ~13 us for one window, ~160 us for 32 (numpy: ~470 us).

Every step below does the arithmetic the numpy version does, in the same order (trailing
means as differences of a running sum, NaN kept by max/min as ``np.maximum`` keeps it, the
final clip and NaN -> 0), so the two agree bit for bit on every window of the bundled bars.
Only the logarithms come from libm rather than numpy, which may round ``log1p`` differently
in the last place; that shows only where a feature divides one rounding residue by another
(a long run of identical volumes). ``tests/unit/model/test_features_kernel.py`` holds the
two to each other on real, random and degenerate bars. Where numba is not installed (a GPU
box with torch only), :func:`model.common.features.compute_features` runs the numpy version.

Compiled on first use (~2 s) and cached on disk beside this file (or in numba's user
cache when this directory is read-only); the gateway calls
:func:`model.common.features.warm_up` at start so no request pays for it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from model.common.features import (
    _FEATURE_LIMIT,
    _PRICE_FLOOR,
    _STD_FLOOR,
    NUM_FEATURES,
    WINDOW,
)

_jit = njit(cache=True, error_model="numpy", nogil=True)


@_jit
def _max(a: float, b: float) -> float:
    """``np.maximum``: a NaN wins (``b`` is never NaN here)."""
    if a != a:
        return a
    return a if a >= b else b


@_jit
def _min(a: float, b: float) -> float:
    if a != a:
        return a
    return a if a <= b else b


@_jit
def _clip01(x: float) -> float:
    if x != x:
        return x
    return 0.0 if x < 0.0 else (1.0 if x > 1.0 else x)


@_jit
def _safe_ratio(num: float, den: float) -> float:
    return num / den if den > _STD_FLOOR else 0.0


@_jit
def _std(mean: float, mean_of_squares: float) -> float:
    return math.sqrt(_max(mean_of_squares - mean * mean, 0.0))


@_jit
def _trailing_mean(x: np.ndarray, n: int, running: np.ndarray, out: np.ndarray) -> None:
    """Mean of the last ``n`` values (expanding at the start), as a difference of a running
    sum: the numpy version's cumsum, so the rounding is the same."""
    running[0] = 0.0
    total = 0.0
    for t in range(x.shape[0]):
        total += x[t]
        running[t + 1] = total
    for t in range(x.shape[0]):
        start = max(t + 1 - n, 0)
        out[t] = (running[t + 1] - running[start]) / float(t + 1 - start)


@_jit
def _features(bars: np.ndarray, out: np.ndarray) -> None:
    """``bars`` float64 ``[N, WINDOW, 5]`` (C order) -> ``out`` float32 ``[N, WINDOW, 16]``."""
    w = WINDOW
    o, h, low, c = np.empty(w), np.empty(w), np.empty(w), np.empty(w)
    log_c, log_v, ret1 = np.empty(w), np.empty(w), np.empty(w)
    lv, lv2, r, r2, rel = np.empty(w), np.empty(w), np.empty(w), np.empty(w), np.empty(w)
    gain, loss = np.empty(w), np.empty(w)
    running = np.empty(w + 1)
    means = np.empty((11, w))
    column = np.empty(NUM_FEATURES)
    for i in range(bars.shape[0]):
        for t in range(w):
            o[t] = _max(bars[i, t, 0], _PRICE_FLOOR)
            h[t] = _max(bars[i, t, 1], _PRICE_FLOOR)
            low[t] = _max(bars[i, t, 2], _PRICE_FLOOR)
            c[t] = _max(bars[i, t, 3], _PRICE_FLOOR)
            log_c[t] = math.log(c[t])
            log_v[t] = math.log1p(_max(bars[i, t, 4], 0.0))
        for t in range(w):
            ret1[t] = log_c[t] - log_c[max(t - 1, 0)]
        for t in range(w):
            lv[t] = log_v[t] - log_v[0]
            lv2[t] = lv[t] * lv[t]
            r[t] = ret1[t] - ret1[0]
            r2[t] = r[t] * r[t]
            rel[t] = c[t] / c[0] - 1.0
            gain[t] = _max(ret1[t], 0.0)
            loss[t] = _max(-ret1[t], 0.0)
        # means[k]: the series of the numpy version's _trailing_means call, in its order.
        for k, (x, n) in enumerate(
            ((log_v, 16), (lv, 16), (lv2, 16), (r, 8), (r2, 8), (r, 16), (r2, 16)),
        ):
            _trailing_mean(x, n, running, means[k])
        for k, (x, n) in enumerate(((gain, 14), (loss, 14), (rel, 8), (rel, 21))):
            _trailing_mean(x, n, running, means[7 + k])
        for t in range(w):
            column[0] = ret1[t]
            column[1] = log_c[t] - log_c[max(t - 2, 0)]
            column[2] = log_c[t] - log_c[max(t - 4, 0)]
            column[3] = log_c[t] - log_c[max(t - 8, 0)]
            column[4] = log_c[t] - log_c[max(t - 16, 0)]
            column[5] = math.log(h[t]) - math.log(low[t])
            column[6] = log_c[t] - math.log(o[t])
            price_range = h[t] - low[t]
            flat = price_range <= _STD_FLOOR * c[t]
            range_or_1 = 1.0 if flat else price_range
            column[7] = 0.0 if flat else _clip01((h[t] - _max(o[t], c[t])) / range_or_1)
            column[8] = 0.0 if flat else _clip01((_min(o[t], c[t]) - low[t]) / range_or_1)
            column[9] = _std(means[3, t], means[4, t])
            column[10] = _std(means[5, t], means[6, t])
            column[11] = _safe_ratio(log_v[t] - means[0, t], _std(means[1, t], means[2, t]))
            column[12] = log_v[t] - log_v[max(t - 1, 0)]
            column[13] = _safe_ratio(rel[t] - means[9, t], 1.0 + means[9, t])
            column[14] = _safe_ratio(rel[t] - means[10, t], 1.0 + means[10, t])
            column[15] = _safe_ratio(means[7, t] - means[8, t], means[7, t] + means[8, t])
            for f in range(NUM_FEATURES):
                value = column[f]
                if value != value:
                    value = 0.0
                elif value > _FEATURE_LIMIT:
                    value = _FEATURE_LIMIT
                elif value < -_FEATURE_LIMIT:
                    value = -_FEATURE_LIMIT
                out[i, t, f] = value


def compute_features(last: np.ndarray) -> np.ndarray:
    """Features of ``last``, float ``[..., WINDOW, 5]`` bars (exactly the window):
    float32 ``[..., WINDOW, NUM_FEATURES]``."""
    lead = last.shape[:-2]
    # One layout for every caller (a training set's overlapping windows included), so
    # numba compiles one specialisation.
    bars = np.ascontiguousarray(last, dtype=np.float64).reshape(-1, WINDOW, 5)
    out = np.empty((bars.shape[0], WINDOW, NUM_FEATURES), dtype=np.float32)
    _features(bars, out)
    return out.reshape(*lead, WINDOW, NUM_FEATURES)
