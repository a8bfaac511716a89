"""Checks on OHLCV input, done with numpy on whole arrays rather than per float."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

import numpy as np

from app.gateway.failures import PredictionFailure
from app.gateway.schemas import PredictRequest
from model.common.failures import FailureKind
from model.common.features import OHLCV_COLUMNS, WINDOW, validate_bars

TIMESTAMP_RANGE = "timestamps must be 64-bit integers (seconds since the epoch)"


@dataclass(frozen=True, slots=True)
class Window:
    """The last ``WINDOW`` bars of a request, ready for feature extraction."""

    symbol: str
    bars: np.ndarray  # [WINDOW, 5] float64: open, high, low, close, volume
    timestamps: np.ndarray  # [WINDOW] int64
    as_of: int


class DecodedItem(NamedTuple):
    """An item whose window was built and checked when its body was decoded
    (:func:`app.api.fast_body.decode_plain`), with its model choice."""

    model: str | None
    version: str | None
    window: Window


def _invalid(message: str, field: str | None = None) -> PredictionFailure:
    details = [{"loc": ["body", field], "msg": message, "type": "value_error"}] if field else None
    return PredictionFailure(FailureKind.INVALID_BARS, message, details=details)


def window_from_request(req: PredictRequest, *, max_bars: int) -> Window:
    _check_lengths(req, max_bars)
    # Only the model's window is needed; validate just that (older bars are ignored).
    try:
        ts = np.asarray(req.timestamps[-WINDOW:], dtype=np.int64)
    except OverflowError:  # a JSON integer has no size limit
        raise _invalid(TIMESTAMP_RANGE, "timestamps") from None
    if (ts[1:] <= ts[:-1]).any():
        raise _invalid("timestamps must be strictly increasing", "timestamps")
    # One conversion of the five columns, then a row-major copy: [WINDOW, 5].
    columns = (req.open, req.high, req.low, req.close, req.volume)
    bars = np.array([c[-WINDOW:] for c in columns], dtype=np.float64).T.copy()
    problem = validate_bars(bars)
    if problem is not None:
        raise _invalid(problem)
    return Window(symbol=req.symbol, bars=bars, timestamps=ts, as_of=int(ts[-1]))


def windows_of(
    items: Sequence[PredictRequest] | Sequence[DecodedItem], *, max_bars: int
) -> list[Window]:
    """Each item's checked window: a decoded item's own, else :func:`windows_from_requests`."""
    decoded = [item.window for item in items if isinstance(item, DecodedItem)]
    if len(decoded) == len(items):
        return decoded
    return windows_from_requests(cast(Sequence[PredictRequest], items), max_bars=max_bars)


def windows_from_requests(reqs: Sequence[PredictRequest], *, max_bars: int) -> list[Window]:
    """:func:`window_from_request` of each item, the same windows and, for bad input, the
    same first error: for a batch the conversions and checks run once over all of its
    windows (about half the time at 32 items), and only bad input goes item by item."""
    if len(reqs) > 1:
        try:
            for req in reqs:
                _check_lengths(req, max_bars)
            ts = np.array([r.timestamps[-WINDOW:] for r in reqs], dtype=np.int64)
        except (PredictionFailure, OverflowError):
            pass  # raised below, in item order
        else:
            columns = [(r.open, r.high, r.low, r.close, r.volume) for r in reqs]
            bars = np.array(
                [[c[-WINDOW:] for c in cols] for cols in columns], dtype=np.float64
            ).transpose(0, 2, 1)
            bars = np.ascontiguousarray(bars)  # [items, WINDOW, 5]
            if windows_pass(ts, bars):
                return [
                    Window(symbol=r.symbol, bars=bars[i], timestamps=ts[i], as_of=int(ts[i, -1]))
                    for i, r in enumerate(reqs)
                ]
    return [window_from_request(req, max_bars=max_bars) for req in reqs]


def windows_pass(timestamps: np.ndarray, bars: np.ndarray) -> bool:
    """Whether ``[items, WINDOW]`` timestamps and ``[items, WINDOW, 5]`` bars pass every
    check of a window after its lengths: increasing timestamps, usable bars."""
    return not (timestamps[:, 1:] <= timestamps[:, :-1]).any() and validate_bars(bars) is None


def _check_lengths(req: PredictRequest, max_bars: int) -> None:
    n = len(req.timestamps)
    for name in OHLCV_COLUMNS:
        if len(getattr(req, name)) != n:
            raise _invalid(
                f"all arrays must have the same length: timestamps has {n}, "
                f"{name} has {len(getattr(req, name))}",
                name,
            )
    if n < WINDOW:
        raise _invalid(f"at least {WINDOW} bars are required, got {n}", "timestamps")
    if n > max_bars:
        raise _invalid(f"at most {max_bars} bars are accepted, got {n}", "timestamps")
