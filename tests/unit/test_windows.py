"""A batch's windows are converted and checked once over all items, with the same windows
and, for bad input, the same first error as item by item (app.gateway.windows)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from app.cli.serve_cmd import sample_request
from app.gateway.failures import PredictionFailure
from app.gateway.schemas import PredictRequest
from app.gateway.windows import window_from_request, windows_from_requests
from tests.support.live import columnar_bars

MAX_BARS = 10_000


def _items(n: int) -> list[dict[str, Any]]:
    """Real EURUSD windows, each its own."""
    return [sample_request(symbol=f"S{i}", offset=1000 + 37 * i) for i in range(n)]


def _requests(items: list[dict[str, Any]]) -> list[PredictRequest]:
    return [PredictRequest.model_validate(item) for item in items]


def _first_error(reqs: list[PredictRequest]) -> str:
    """What the item-by-item path raises: the first bad item's message."""
    for req in reqs:
        try:
            window_from_request(req, max_bars=MAX_BARS)
        except PredictionFailure as failure:
            return str(failure)
    raise AssertionError("no item is bad")


def test_a_batchs_windows_equal_the_windows_item_by_item() -> None:
    reqs = _requests(_items(5))
    together = windows_from_requests(reqs, max_bars=MAX_BARS)
    for req, got in zip(reqs, together, strict=True):
        one = window_from_request(req, max_bars=MAX_BARS)
        assert got.symbol == one.symbol
        assert got.as_of == one.as_of
        assert np.array_equal(got.bars, one.bars)
        assert got.bars.flags.c_contiguous
        assert np.array_equal(got.timestamps, one.timestamps)


def _break(item: dict[str, Any], how: str) -> None:
    if how == "high_below_low":
        item["high"][-1] = item["low"][-1] / 2
    elif how == "timestamps_repeat":
        item["timestamps"][-1] = item["timestamps"][-2]
    elif how == "too_short":
        for column in ("timestamps", "open", "high", "low", "close", "volume"):
            item[column] = item[column][:10]
    elif how == "ragged":
        item["volume"] = item["volume"][:-1]
    elif how == "timestamp_overflow":
        item["timestamps"][-1] = 2**63
    else:
        raise ValueError(how)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("high_below_low", "timestamps_repeat"),
        ("timestamps_repeat", "high_below_low"),
        ("high_below_low", "too_short"),
        ("timestamp_overflow", "ragged"),
        ("ragged", "timestamp_overflow"),
    ],
)
def test_bad_input_raises_the_first_bad_items_error(first: str, second: str) -> None:
    """Two bad items of different kinds: the earlier item's problem is the one reported,
    whichever check would catch the later one first."""
    items = _items(4)
    bad = copy.deepcopy(items)
    _break(bad[1], first)
    _break(bad[3], second)
    reqs = _requests(bad)
    with pytest.raises(PredictionFailure) as caught:
        windows_from_requests(reqs, max_bars=MAX_BARS)
    assert str(caught.value) == _first_error(reqs)
    assert str(caught.value) == _first_error(_requests([bad[1]]))


def test_a_timestamp_beyond_64_bits_is_a_typed_error() -> None:
    item = columnar_bars("X")
    item["timestamps"][-1] = -(2**70)
    with pytest.raises(PredictionFailure, match="64-bit"):
        window_from_request(PredictRequest.model_validate(item), max_bars=MAX_BARS)
