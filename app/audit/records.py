"""What one audit record says, and the canonical input hash an auditor can recompute.

The request path queues one :class:`Submission` per answered request, holding references
only (no copies, no hashing, no JSON); the writer thread turns it into one record per
answered item with :func:`records_of`.

Canonical input (``input_sha256``, record format ``v`` 1): SHA-256 over

1. the window's 64 timestamps as little-endian int64, oldest first, then
2. its 64 bars as little-endian float64, bar by bar (oldest first), each bar as
   ``open, high, low, close, volume``

where the window is the last 64 entries of each array in the request body (older bars are
ignored by the model and by the hash). Recomputing it from a request body::

    import hashlib, numpy as np
    ts = np.asarray(body["timestamps"][-64:], dtype="<i8")
    bars = np.column_stack(
        [np.asarray(body[c][-64:], dtype="<f8") for c in ("open", "high", "low", "close", "volume")]
    )
    hashlib.sha256(ts.tobytes() + bars.tobytes()).hexdigest()

JSON numbers parse to the same float64 in any conforming parser, so this is exactly what
the gateway's ``Window`` held (``app/gateway/windows.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import numpy as np

from model.common.refs import ModelRef

FORMAT_VERSION = 1
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width: string order is time order


class InputWindow(Protocol):
    """What the record needs of the gateway's ``Window``."""

    @property
    def bars(self) -> np.ndarray: ...

    @property
    def timestamps(self) -> np.ndarray: ...


class Submission(NamedTuple):
    """One answered request, as the request path hands it over."""

    at: float  # time.time() when the answer was ready
    request_id: str
    principal_id: str  # the caller's subject, never a credential
    windows: Sequence[InputWindow]
    predictions: Sequence[Mapping[str, Any]]  # the rendered answers, in request order
    latency_s: float  # gateway time for the whole request
    green: ModelRef | None  # the rollout's green version at answer time, if any


def input_sha256(window: InputWindow) -> str:
    """The canonical input hash (see the module docstring)."""
    digest = hashlib.sha256(np.ascontiguousarray(window.timestamps, dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(window.bars, dtype="<f8").tobytes())
    return digest.hexdigest()


# The last whole second format_ts rendered, and its text up to the microseconds: records
# come in time order, so most calls reuse it and skip strftime (the slow part). One tuple,
# replaced whole, so a reader on another thread sees a matching pair.
_second: tuple[tuple[int, ...], str] = ((), "")


def format_ts(at: float) -> str:
    """``at`` in TS_FORMAT: exactly ``datetime.fromtimestamp(at, UTC).strftime(TS_FORMAT)``."""
    global _second
    m = datetime.fromtimestamp(at, tz=UTC)
    key = (m.year, m.month, m.day, m.hour, m.minute, m.second)
    cached = _second
    if cached[0] == key:
        prefix = cached[1]
    else:
        prefix = m.strftime(TS_FORMAT[:-3])  # up to and with the "." before %f
        _second = (key, prefix)
    return f"{prefix}{m.microsecond:06d}Z"


def parse_ts(text: str) -> str:
    """Any ISO 8601 time (naive means UTC) in the records' own format, for comparison."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(TS_FORMAT)


def records_of(sub: Submission) -> list[dict[str, Any]]:
    """One record per answered item of a request."""
    ts = format_ts(sub.at)
    latency_ms = round(sub.latency_s * 1000.0, 3)
    green = sub.green.to_json() if sub.green is not None else None
    out = []
    for item, (window, pred) in enumerate(zip(sub.windows, sub.predictions, strict=True)):
        model = pred["model"]
        out.append(
            {
                "v": FORMAT_VERSION,
                "ts": ts,
                "request_id": sub.request_id,
                "item": item,
                "principal": sub.principal_id,
                "symbol": pred["symbol"],
                "as_of": pred["as_of"],
                "model": model,
                # "shadow" is reserved for mirrored traffic (none today).
                "served_by": "green" if model == green else "blue",
                "input_sha256": input_sha256(window),
                "outputs": {
                    "expected_return": pred["expected_return"],
                    "prob_up": pred["prob_up"],
                    "horizon_bars": pred["horizon_bars"],
                },
                "latency_ms": latency_ms,
            }
        )
    return out
