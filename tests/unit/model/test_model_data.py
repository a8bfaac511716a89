"""Bundled and synthetic market data."""

from __future__ import annotations

import numpy as np
import pytest

from model.common.features import validate_bars
from model.data import load_bars


@pytest.mark.parametrize(("source", "rows"), [("eurusd", 5000), ("goog", 2148), ("btcusd", 156)])
def test_load_bars_reads_each_bundled_csv(source: str, rows: int) -> None:
    bars = load_bars(source)  # type: ignore[arg-type]
    assert bars.shape == (rows, 5)
    assert bars.dtype == np.float64
    assert validate_bars(bars) is None


def test_synthetic_bars_are_seeded_and_consistent() -> None:
    a, b = load_bars("synthetic", n_synthetic=800, seed=3), load_bars("synthetic", 800, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, load_bars("synthetic", 800, seed=4))
    assert validate_bars(a) is None
    o, h, low, c, v = a.T
    assert (h >= np.maximum(o, c)).all()
    assert (low <= np.minimum(o, c)).all()
    assert (v > 0).all()


def test_load_bars_rejects_an_unknown_source() -> None:
    with pytest.raises(ValueError, match="unknown data source"):
        load_bars("ftse")  # type: ignore[arg-type]


def test_a_bundled_csv_is_parsed_once_and_every_caller_gets_its_own_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Parsed once per process: a client building a body per request must not re-read it.
    first = load_bars("eurusd")
    opened: list[object] = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    second = load_bars("eurusd")
    assert opened == []
    np.testing.assert_array_equal(first, second)
    # A caller that writes into its bars changes nobody else's.
    first[:] = 0.0
    assert load_bars("eurusd")[0, 3] == second[0, 3] != 0.0
