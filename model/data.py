"""Bars for training and tests, with no network access: real bars ship inside a package.

Real data ships inside the ``backtesting`` package (EURUSD hourly, GOOG daily, BTCUSD
monthly); synthetic data is a seeded regime-switching GBM. No torch here.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
from pathlib import Path
from typing import Literal

import numpy as np

DataSource = Literal["eurusd", "goog", "btcusd", "synthetic"]
DATA_SOURCES: tuple[DataSource, ...] = ("eurusd", "goog", "btcusd", "synthetic")
_CSV_FILES: dict[str, str] = {"eurusd": "EURUSD.csv", "goog": "GOOG.csv", "btcusd": "BTCUSD.csv"}
_OHLCV_HEADER = ("Open", "High", "Low", "Close", "Volume")


def _backtesting_data_dir() -> Path:
    # find_spec locates the package without importing it: importing backtesting pulls
    # in pandas and bokeh (1.5 s) for three CSV files we read ourselves.
    spec = importlib.util.find_spec("backtesting")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'backtesting' package (bundled market data) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "test"


@functools.cache
def _read_backtesting_csv(filename: str) -> np.ndarray:
    """The file's bars, parsed once per process (~13 ms a parse) and read-only: every
    caller gets its own copy from :func:`load_bars`. Clients that build a request body
    per send (the fault drills' and rollout tests' readers) used to parse it per request,
    a third of a core taken from the server they measure."""
    with open(_backtesting_data_dir() / filename, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        # Columns by name, not position: the first column is an unnamed timestamp index.
        cols = [header.index(name) for name in _OHLCV_HEADER]
        rows = [[float(row[c]) for c in cols] for row in reader if row]
    bars = np.asarray(rows, dtype=np.float64)
    bars.setflags(write=False)
    return bars


def synthetic_bars(n: int, seed: int = 0) -> np.ndarray:
    """``(n, 5)`` OHLCV from a GBM whose drift and volatility switch between regimes.

    Regimes last a geometric number of bars (mean ~150), which gives the trends and
    volatility clusters that make momentum-style features informative, as in markets.
    Volume is log-normal and rises with the absolute return.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    rng = np.random.default_rng(seed)
    drifts = np.array([4e-4, -4e-4, 0.0])
    vols = np.array([4e-3, 6e-3, 2.5e-3])
    lengths = rng.geometric(1.0 / 150.0, size=n)  # more regimes than bars: always enough
    regime_of_segment = rng.integers(0, len(drifts), size=n)
    regime = np.repeat(regime_of_segment, lengths)[:n]

    log_ret = drifts[regime] + vols[regime] * rng.standard_normal(n)
    close = 100.0 * np.exp(np.cumsum(log_ret))
    prev_close = np.concatenate([[100.0], close[:-1]])
    open_ = prev_close * np.exp(0.1 * vols[regime] * rng.standard_normal(n))
    # Wicks beyond the body, proportional to the regime's volatility.
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.5, n)) * vols[regime])
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.5, n)) * vols[regime])
    volume = np.exp(8.0 + 60.0 * np.abs(log_ret) + 0.3 * rng.standard_normal(n)).round()
    return np.column_stack([open_, high, low, close, volume])


def load_bars(source: DataSource, n_synthetic: int = 5000, seed: int = 0) -> np.ndarray:
    """``(N, 5)`` float64 bars (open, high, low, close, volume), oldest first."""
    if source == "synthetic":
        return synthetic_bars(n_synthetic, seed)
    try:
        filename = _CSV_FILES[source]
    except KeyError:
        raise ValueError(f"unknown data source {source!r}; use one of {DATA_SOURCES}") from None
    return _read_backtesting_csv(filename).copy()
