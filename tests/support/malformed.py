"""Seeded malformed prediction requests: a valid body, mutated the ways clients get it wrong.

Each :func:`malformed_requests` item is a path, a body and headers built from a good
``/predict`` or ``/predict/batch`` body by a few random edits: a field dropped or added, a
value swapped for one of the wrong type or range (nulls, booleans, huge or non-finite
numbers, long strings, nested containers), a list cut short or repeated, a body cut off or
broken as UTF-8, a deeply nested array, an odd content type, and bad ``X-Priority``,
``X-Request-Deadline-Ms`` or ``X-Request-ID`` headers. Some stay valid. The same seed gives
the same requests, so a failure can be replayed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

ODD_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1e308,
    -1e308,
    1e-320,
    2**63,
    -(2**63) - 1,
    2**200,
    "",
    "x" * 100,
    "NaN",
    "1",
    [],
    {},
    [[1]],
    {"a": 1},
    "\u0000",
    "\u00e9\u4e2d",  # in the body: JSON escapes it
    0.5,
    -0.0,
)
# For a number's slot: out of range, non-finite once encoded, or just wrong for a price.
ODD_NUMBERS: tuple[float, ...] = (0, -1, 1e308, -1e308, 1e-320, 2**63, 2**200, -0.0, 1e15)
BAR_COLUMNS = ("timestamps", "open", "high", "low", "close", "volume")
ODD_KEYS = ("extra", "model", "version", "items", "symbol", "timestamps")
CONTENT_TYPES = (
    *("application/json",) * 8,
    "text/plain",
    "application/json; charset=latin-1",
    "application/problem+json",
)
ODD_HEADERS = {
    "X-Priority": ("-5", "99", "abc", "1e3", "", "3"),
    "X-Request-Deadline-Ms": ("-5", "0", "abc", "99999999999999999999", "", "60000"),
    "X-Request-ID": ("a" * 500, "ok-1", '"quote', "<b>x</b>"),
}


@dataclass(frozen=True)
class Malformed:
    path: str
    body: bytes
    headers: dict[str, str]


class _Mutator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def value(self, old: Any) -> Any:
        rng = self.rng
        if isinstance(old, dict):
            return self.mapping(old)
        if isinstance(old, list) and rng.random() < 0.5:
            return self.sequence(old)
        if isinstance(old, int | float) and not isinstance(old, bool) and rng.random() < 0.6:
            return self.number(old)
        return rng.choice(ODD_VALUES)

    def number(self, old: float) -> float:
        """A number for ``old``'s slot that is wrong for it (see ``ODD_NUMBERS``)."""
        return self.rng.choice((*ODD_NUMBERS, old * 1e6, -abs(old), old + 0.5, old * 1e300))

    def mapping(self, obj: dict[str, Any]) -> dict[str, Any]:
        out, keys, r = dict(obj), list(obj), self.rng.random()
        if r < 0.2 and keys:
            del out[self.rng.choice(keys)]
        elif r < 0.35 or not keys:
            out[self.rng.choice(ODD_KEYS)] = self.rng.choice(ODD_VALUES)
        else:
            key = self.rng.choice(keys)
            out[key] = self.value(out[key])
        return out

    def sequence(self, seq: list[Any]) -> list[Any]:
        rng, out = self.rng, list(seq)
        if not out:
            return [rng.choice(ODD_VALUES)]
        r = rng.random()
        if r < 0.25:
            return out[: rng.randrange(len(out))]
        if r < 0.45:
            return [*out, rng.choice(ODD_VALUES)]
        if r < 0.55:
            return out * rng.choice((2, 50))
        i = rng.randrange(len(out))
        out[i] = self.value(out[i])
        return out

    def bars(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` still well-typed, with its bars made wrong: high and low swapped, two
        timestamps out of order, or one number out of range."""
        rng, out = self.rng, dict(body)
        r = rng.random()
        if r < 0.2:
            out["high"], out["low"] = out["low"], out["high"]
            return out
        if r < 0.4:
            ts = list(out["timestamps"])
            i = rng.randrange(1, len(ts))
            ts[i - 1], ts[i] = ts[i], ts[i - 1]
            out["timestamps"] = ts
            return out
        column = rng.choice(BAR_COLUMNS)
        values = list(out[column])
        i = rng.randrange(len(values))
        values[i] = self.number(values[i])
        out[column] = values
        return out

    def encode(self, obj: Any) -> bytes:
        rng = self.rng
        text = json.dumps(obj, allow_nan=True)  # non-finite floats become NaN / Infinity
        r = rng.random()
        if r < 0.05:
            text = text[: rng.randrange(len(text) + 1)]
        elif r < 0.08:
            text = text.replace("1", "NaN", 1)
        elif r < 0.10:
            text = text.replace("1", "-Infinity", 1)
        elif r < 0.12:
            text = '{"symbol": "A", "open": ' + "[" * 5000 + "]" * 5000 + "}"
        raw = text.encode()
        if rng.random() < 0.03:
            raw = raw[:10] + b"\xff\xfe" + raw[10:]
        return raw


def malformed_requests(
    good: dict[str, Any], batch_items: list[dict[str, Any]], *, seed: int, count: int
) -> Iterator[Malformed]:
    """``count`` requests: ``good`` (a ``/predict`` body) or ``{"items": batch_items}``,
    half with one bar made wrong in well-typed JSON (:meth:`_Mutator.bars`), half mutated
    one to three times anywhere; odd headers now and then."""
    rng = random.Random(seed)
    mutate = _Mutator(rng)
    for _ in range(count):
        path = rng.choice(("/predict", "/predict/batch"))
        obj: Any = good if path == "/predict" else {"items": batch_items}
        if rng.random() < 0.5:  # past the schema: wrong bars in well-typed JSON
            if path == "/predict":
                obj = mutate.bars(obj)
            else:
                items = list(batch_items)
                k = rng.randrange(len(items))
                items[k] = mutate.bars(items[k])
                obj = {"items": items}
        else:
            for _ in range(rng.choice((1, 1, 2, 3))):
                obj = mutate.value(obj)
        headers = {"Content-Type": rng.choice(CONTENT_TYPES)}
        for name, values in ODD_HEADERS.items():
            if rng.random() < 0.1:
                headers[name] = rng.choice(values)
        yield Malformed(path, mutate.encode(obj), headers)
