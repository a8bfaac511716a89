"""A prediction body from JSON bytes straight to checked windows, when it is plainly valid.

The general path builds a Python object for every number of a body through pydantic
(12,288 floats and ints for 32 symbols of 64 bars), then :func:`windows_from_requests`
turns them back into arrays: about 0.9 ms of CPU for such a request. Here pysimdjson
parses the body and hands each column over as one buffer of doubles or int64s, so no
number becomes a Python object, and the window checks run on the arrays it gives.

:func:`decode_plain` answers only a body it can take whole: the exact keys of
:class:`~app.gateway.schemas.PredictRequest` (or ``{"items": [...]}`` of them), each
once; JSON numbers where numbers go; a symbol, model and version that match their
patterns; and windows that pass every check of :mod:`app.gateway.windows`. For anything
else (another type, a number that does not fit, nesting, a repeated or unknown key, a
byte-order mark, bars the checks refuse) it returns None, and the caller parses the body
the general way, which accepts or refuses it with exactly its own answer. So it never
refuses a body and never accepts one the general path would not, with other values.
``tests/unit/test_fast_body.py`` holds the two paths to that, body by body.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
import simdjson

from app.gateway.schemas import MODEL_NAME_PATTERN, SYMBOL_PATTERN
from app.gateway.windows import DecodedItem, Window, windows_pass
from model.common.features import OHLCV_COLUMNS, WINDOW

_ARRAYS = ("timestamps", *OHLCV_COLUMNS)
_REQUIRED = frozenset({"symbol", *_ARRAYS})
_KEYS = _REQUIRED | {"model", "version"}
_SYMBOL = re.compile(SYMBOL_PATTERN)
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_BOM = b"\xef\xbb\xbf"  # simdjson skips one; the general path refuses it
# What pysimdjson raises for malformed JSON, a wrong type, a number out of range, bad UTF-8
# (a ValueError), or a parser still in use.
_NOT_PLAIN = (ValueError, TypeError, RuntimeError, KeyError)


def decode_plain(raw: bytes, *, batch: bool, max_bars: int) -> list[DecodedItem] | None:
    """The items of a plainly valid ``/predict`` (``batch`` False) or ``/predict/batch``
    body, in order; None for any other body (parse it the general way)."""
    if raw.startswith(_BOM):
        return None
    try:
        return _decode(raw, batch, max_bars)
    except _NOT_PLAIN:
        return None


def _decode(raw: bytes, batch: bool, max_bars: int) -> list[DecodedItem] | None:
    # A parser per body (~0.1 us): one that is reused refuses to parse again while any
    # proxy of its last document is alive, which an exception's traceback can keep so.
    doc = simdjson.Parser().parse(raw)
    if not batch:
        found = [_fields(doc, max_bars)]
    elif isinstance(doc, simdjson.Object) and list(doc.keys()) == ["items"]:
        objects = doc["items"]
        if not isinstance(objects, simdjson.Array) or len(objects) == 0:
            return None
        found = [_fields(o, max_bars) for o in objects]
    else:
        return None
    plain = [f for f in found if f is not None]
    # No array inside another: pysimdjson's buffers flatten nesting, and in a plain body
    # (its strings match patterns without "[") every "[" opens one of the known arrays.
    if len(plain) != len(found) or raw.count(b"[") != len(plain) * len(_ARRAYS) + int(batch):
        return None
    if len(plain) == 1:  # np.stack costs ~5 us even for one array
        timestamps = plain[0].timestamps[None]  # [items, WINDOW]
        bars = np.ascontiguousarray(plain[0].columns.T[None])  # [items, WINDOW, 5]
    else:
        timestamps = np.stack([f.timestamps for f in plain])
        bars = np.ascontiguousarray(np.stack([f.columns for f in plain]).transpose(0, 2, 1))
    # The checks of windows_from_requests, on the same [items, WINDOW, 5] arrays.
    if not windows_pass(timestamps, bars):
        return None
    return [
        DecodedItem(f.model, f.version, Window(f.symbol, bars[i], ts, int(ts[-1])))
        for i, (f, ts) in enumerate(zip(plain, timestamps, strict=True))
    ]


class _Fields(NamedTuple):
    symbol: str
    model: str | None
    version: str | None
    timestamps: np.ndarray  # int64 [WINDOW]: the last WINDOW bars'
    columns: np.ndarray  # float64 [5, WINDOW], in OHLCV_COLUMNS order


def _fields(obj: object, max_bars: int) -> _Fields | None:
    """One item's fields if they are plainly valid, each array with the same length."""
    if not isinstance(obj, simdjson.Object):
        return None
    keys = list(obj.keys())
    names = frozenset(keys)
    if len(names) != len(keys) or not _REQUIRED <= names <= _KEYS:
        return None
    symbol = obj["symbol"]
    # Not Object.get or "in": both find a missing key by a KeyError, ~2 us each.
    model = obj["model"] if "model" in names else None
    version = obj["version"] if "version" in names else None
    if not (
        isinstance(symbol, str)
        and _SYMBOL.fullmatch(symbol)
        and (model is None or (isinstance(model, str) and _MODEL_NAME.fullmatch(model)))
        and (version is None or (isinstance(version, str) and _MODEL_NAME.fullmatch(version)))
    ):
        return None
    values = [obj[name] for name in _ARRAYS]
    arrays = [a for a in values if isinstance(a, simdjson.Array)]
    n = len(arrays[0]) if len(arrays) == len(values) else 0
    if not WINDOW <= n <= max_bars or any(len(a) != n for a in arrays):
        return None
    timestamps = np.frombuffer(arrays[0].as_buffer(of_type="i"), dtype=np.int64)
    # The five columns as one buffer: one array op for the item instead of five.
    columns = b"".join([a.as_buffer(of_type="d") for a in arrays[1:]])
    per_column = np.frombuffer(columns, dtype=np.float64).reshape(len(OHLCV_COLUMNS), n)
    return _Fields(symbol, model, version, timestamps[-WINDOW:], per_column[:, -WINDOW:])
