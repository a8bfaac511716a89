"""The fast body decoder (app.api.fast_body) against the general path (pydantic, then
app.gateway.windows), body by body: a plainly valid body decodes to the very windows the
general path builds; any other body is left to the general path (None), never decoded to
something the general path would refuse or read otherwise."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from app.api.fast_body import decode_plain
from app.cli.serve_cmd import sample_request
from app.gateway.failures import PredictionFailure
from app.gateway.schemas import BatchPredictRequest, PredictRequest
from app.gateway.windows import DecodedItem, Window, windows_from_requests, windows_of

MAX_BARS = 200
Item = dict[str, Any]


def _item(i: int = 0, bars: int = 64) -> Item:
    """A real EURUSD window of ``bars`` bars."""
    item = sample_request(symbol=f"S{i}.X", offset=1000 + 37 * i)
    extra = bars - len(item["timestamps"])
    if extra > 0:  # older bars in front, one hour apart
        first = item["timestamps"][0]
        item["timestamps"] = [first - 3600 * (extra - k) for k in range(extra)] + item["timestamps"]
        for column in ("open", "high", "low", "close", "volume"):
            item[column] = [item[column][0]] * extra + item[column]
    return item


def _general(raw: bytes, batch: bool) -> list[tuple[str | None, str | None, Window]] | None:
    """What the general path makes of ``raw``: each item's model, version and window;
    None where it refuses the body."""
    try:
        if batch:
            items = BatchPredictRequest.model_validate_json(raw).items
        else:
            items = [PredictRequest.model_validate_json(raw)]
        windows = windows_from_requests(items, max_bars=MAX_BARS)
    except (ValidationError, PredictionFailure):
        return None
    return [(i.model, i.version, w) for i, w in zip(items, windows, strict=True)]


def _same(decoded: list[DecodedItem], general: list[tuple[str | None, str | None, Window]]) -> None:
    assert len(decoded) == len(general)
    for got, (model, version, want) in zip(decoded, general, strict=True):
        assert (got.model, got.version) == (model, version)
        w = got.window
        assert (w.symbol, w.as_of) == (want.symbol, want.as_of)
        assert w.bars.dtype == want.bars.dtype
        assert w.timestamps.dtype == want.timestamps.dtype
        assert w.bars.flags.c_contiguous
        assert w.bars.shape == want.bars.shape
        # Byte for byte: the audit trail's input hash and the feature cache key read the bytes.
        assert w.bars.tobytes() == want.bars.tobytes()
        assert w.timestamps.tobytes() == want.timestamps.tobytes()


def _dump(body: Any) -> bytes:
    return json.dumps(body).encode()


def _exponent_body() -> bytes:
    """Integer volumes, and the last open price written as digits and an exponent."""
    item = {**_item(), "volume": [1000 + k for k in range(64)]}
    last = json.dumps(item["open"][-1])  # e.g. 1.10123
    digits, decimals = last.replace(".", ""), len(last) - last.index(".") - 1
    raw = _dump(item).replace(f"{last}], ".encode(), f"{digits}e-{decimals}], ".encode(), 1)
    assert f"e-{decimals}]".encode() in raw
    return raw


PLAIN: dict[str, tuple[Callable[[], bytes], bool]] = {
    "one item, 64 bars": (lambda: _dump(_item()), False),
    "one item, 150 bars (the last 64 used)": (lambda: _dump(_item(bars=150)), False),
    "one item, exactly max_bars": (lambda: _dump(_item(bars=MAX_BARS)), False),
    "model and version named": (
        lambda: _dump({**_item(), "model": "cnn-lstm", "version": "v1.2_a"}),
        False,
    ),
    "model and version null": (lambda: _dump({**_item(), "model": None, "version": None}), False),
    "keys in another order, whitespace": (
        lambda: json.dumps(dict(reversed(list(_item().items()))), indent=2).encode(),
        False,
    ),
    "integers in a column, a price with an exponent": (lambda: _exponent_body(), False),
    "a symbol spelled with escapes": (
        lambda: _dump(_item()).replace(b'"S0.X"', b'"\\u0053\\u0030.X"'),
        False,
    ),
    "a zero volume written -0": (
        lambda: (
            _dump(_item())
            .replace(b'"volume": [', b'"volume": [-0, ', 1)
            .replace(b'"open": [', b'"open": [1.1, ', 1)
            .replace(b'"high": [', b'"high": [1.2, ', 1)
            .replace(b'"low": [', b'"low": [1.0, ', 1)
            .replace(b'"close": [', b'"close": [1.1, ', 1)
            .replace(b'"timestamps": [', b'"timestamps": [1, ', 1)
        ),
        False,
    ),
    "batch of one": (lambda: _dump({"items": [_item()]}), True),
    "batch of 32, lengths differ between items": (
        lambda: _dump({"items": [_item(i, bars=64 + i) for i in range(32)]}),
        True,
    ),
}


@pytest.mark.parametrize("name", PLAIN)
def test_a_plain_body_decodes_to_the_general_paths_windows(name: str) -> None:
    make, batch = PLAIN[name]
    raw = make()
    general = _general(raw, batch)
    assert general is not None, "the case is meant to be valid"
    decoded = decode_plain(raw, batch=batch, max_bars=MAX_BARS)
    assert decoded is not None, "a plainly valid body must not leave the fast path"
    _same(decoded, general)


def _edit(how: Callable[[Item], None]) -> Callable[[], bytes]:
    def make() -> bytes:
        item = copy.deepcopy(_item())
        how(item)
        return _dump(item)

    return make


def _set(key: str, value: Any) -> Callable[[Item], None]:
    return lambda item: item.__setitem__(key, value)


def _first(column: str, value: Any) -> Callable[[Item], None]:
    return lambda item: item[column].__setitem__(-1, value)


def _raw(edit: Callable[[bytes], bytes]) -> Callable[[], bytes]:
    return lambda: edit(_dump(_item()))


# Bodies the fast path must leave alone: refused by the general path, or accepted only by
# its coercions (or its reading of a repeated key), which the fast path does not copy.
NOT_PLAIN: dict[str, tuple[Callable[[], bytes], bool]] = {
    "byte-order mark": (_raw(lambda b: b"\xef\xbb\xbf" + b), False),
    "trailing garbage": (_raw(lambda b: b + b" x"), False),
    "two documents": (_raw(lambda b: b + b), False),
    "not an object": (lambda: b"[1, 2, 3]", False),
    "a string": (lambda: b'"EURUSD"', False),
    "empty object": (lambda: b"{}", False),
    "malformed JSON": (_raw(lambda b: b[:-5]), False),
    "repeated key (the general path takes the last)": (
        _raw(lambda b: b[:-1] + b', "symbol": "OTHER"}'),
        False,
    ),
    "unknown key": (_edit(_set("extra", 1)), False),
    "missing column": (_edit(lambda item: item.pop("volume")), False),
    "nested array, one element": (_edit(_first("open", [1.1])), False),
    "nested array, two elements": (_edit(_first("close", [1.1, 1.2])), False),
    "empty nested array": (_edit(_first("close", [])), False),
    "true in a column": (_edit(_first("volume", True)), False),
    "null in a column": (_edit(_first("close", None)), False),
    "numeric string in a column": (_edit(_first("high", "1.2")), False),
    "float timestamp": (_edit(_first("timestamps", 1.6e18)), False),
    "timestamp past int64": (_edit(_first("timestamps", 2**63)), False),
    "timestamp past uint64": (_edit(_first("timestamps", 2**70)), False),
    "price past uint64 (an integer)": (_edit(_first("volume", 2**70)), False),
    "number out of double range": (_raw(lambda b: b.replace(b"]", b", 1e400]", 1)), False),
    "NaN literal": (_raw(lambda b: b.replace(b'"volume": [', b'"volume": [NaN, ', 1)), False),
    "Infinity literal": (
        _raw(lambda b: b.replace(b'"volume": [', b'"volume": [Infinity, ', 1)),
        False,
    ),
    "negative price": (_edit(_first("low", -1.0)), False),
    "high below low": (
        _edit(lambda item: item["high"].__setitem__(-1, item["low"][-1] / 2)),
        False,
    ),
    "negative volume": (_edit(_first("volume", -5.0)), False),
    "timestamps not increasing": (
        _edit(lambda item: item["timestamps"].__setitem__(-1, item["timestamps"][-2])),
        False,
    ),
    "column shorter than timestamps": (_edit(lambda item: item["low"].pop()), False),
    "too few bars": (_edit(lambda item: [item[k].pop() for k in list(item)[1:]]), False),
    "too many bars": (lambda: _dump(_item(bars=MAX_BARS + 1)), False),
    "column not an array": (_edit(_set("open", 1.1)), False),
    "timestamps an object": (_edit(_set("timestamps", {"a": 1})), False),
    "symbol with a space": (_edit(_set("symbol", "EUR USD")), False),
    "symbol with a trailing newline": (_edit(_set("symbol", "EURUSD\n")), False),
    "symbol too long": (_edit(_set("symbol", "A" * 33)), False),
    "symbol a number": (_edit(_set("symbol", 7)), False),
    "symbol with a [": (_edit(_set("symbol", "EUR[USD")), False),
    "symbol bad UTF-8": (_raw(lambda b: b.replace(b'"S0.X"', b'"S0\xff"')), False),
    "symbol a lone surrogate": (_raw(lambda b: b.replace(b'"S0.X"', b'"\\ud800"')), False),
    "model not a name": (_edit(_set("model", "bad name!")), False),
    "version a number": (_edit(_set("version", 5)), False),
    "batch: no items": (lambda: b'{"items": []}', True),
    "batch: items not an array": (lambda: _dump({"items": _item()}), True),
    "batch: an item not an object": (lambda: _dump({"items": [_item(), 5]}), True),
    "batch: another top key": (lambda: _dump({"items": [_item()], "x": 1}), True),
    "batch: a single item's body": (lambda: _dump(_item()), True),
    "batch: one bad item among good": (
        lambda: _dump({"items": [_item(0), {**_item(1), "symbol": "bad symbol"}, _item(2)]}),
        True,
    ),
    "batch: nested array in the second item": (
        lambda: _dump({"items": [_item(0), {**_item(1), "open": [[1.1], *_item(1)["open"][1:]]}]}),
        True,
    ),
}


@pytest.mark.parametrize("name", NOT_PLAIN)
def test_any_other_body_is_left_to_the_general_path(name: str) -> None:
    make, batch = NOT_PLAIN[name]
    raw = make()
    assert decode_plain(raw, batch=batch, max_bars=MAX_BARS) is None


def test_a_refused_body_is_never_decoded_across_many_random_edits() -> None:
    """Random single-byte edits of a valid body: whatever the fast path decodes, the
    general path reads the same; whatever the general path refuses, the fast path leaves."""
    rng = np.random.default_rng(11)
    base = _dump({"items": [_item(0), _item(1)]})
    alphabet = b'0123456789.-+eE[]{},:" tnrfalsu\\'
    decoded_count = 0
    for _ in range(3000):
        raw = bytearray(base)
        for pos in rng.integers(0, len(raw), size=int(rng.integers(1, 3))):
            raw[pos] = alphabet[int(rng.integers(0, len(alphabet)))]
        body = bytes(raw)
        decoded = decode_plain(body, batch=True, max_bars=MAX_BARS)
        if decoded is None:
            continue
        decoded_count += 1
        general = _general(body, True)
        assert general is not None, body
        _same(decoded, general)
    assert decoded_count > 100  # most one- or two-digit edits stay valid


def test_decoded_items_keep_their_windows_and_general_items_are_checked() -> None:
    raw = _dump({"items": [_item(0), _item(1)]})
    decoded = decode_plain(raw, batch=True, max_bars=MAX_BARS)
    assert decoded is not None
    assert windows_of(decoded, max_bars=MAX_BARS) == [d.window for d in decoded]
    items = BatchPredictRequest.model_validate_json(raw).items
    general = windows_of(items, max_bars=MAX_BARS)
    assert [w.symbol for w in general] == ["S0.X", "S1.X"]
    with pytest.raises(PredictionFailure):
        windows_of(items, max_bars=63)
