"""Small builders shared by the audit unit tests: a window, an answer, a trail."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.audit.writer import AuditTrail
from app.config.audit import Audit
from model.common.refs import ModelRef

BLUE = ModelRef("cnn_lstm", "1.0.0", "b" * 64)
GREEN = ModelRef("cnn_lstm", "2.0.0", "c" * 64)
COLUMNS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class FakeWindow:
    bars: np.ndarray
    timestamps: np.ndarray


def body(seed: int, n: int = 70) -> dict[str, Any]:
    """A request body as a client sends it (more bars than the window)."""
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(0, 0.5, n))
    return {
        "symbol": f"S{seed}",
        "timestamps": [1_700_000_000 + 60 * i for i in range(n)],
        "open": [float(x) for x in close - 0.1],
        "high": [float(x) for x in close + 0.5],
        "low": [float(x) for x in close - 0.5],
        "close": [float(x) for x in close],
        "volume": [float(1000 + i) for i in range(n)],
    }


def window_of(b: dict[str, Any]) -> FakeWindow:
    bars = np.empty((64, 5))
    for j, c in enumerate(COLUMNS):
        bars[:, j] = b[c][-64:]
    return FakeWindow(bars, np.asarray(b["timestamps"][-64:], dtype=np.int64))


def auditor_hash(b: dict[str, Any]) -> str:
    """The recomputation the records module documents, written out independently."""
    ts = np.asarray(b["timestamps"][-64:], dtype="<i8")
    bars = np.column_stack([np.asarray(b[c][-64:], dtype="<f8") for c in COLUMNS])
    return hashlib.sha256(ts.tobytes() + bars.tobytes()).hexdigest()


def answer(b: dict[str, Any], ref: ModelRef = BLUE) -> dict[str, Any]:
    return {
        "symbol": b["symbol"],
        "expected_return": 0.001,
        "prob_up": 0.6,
        "horizon_bars": 1,
        "as_of": b["timestamps"][-1],
        "model": ref.to_json(),
    }


def submit_one(trail: AuditTrail, seed: int, request_id: str, **kw: Any) -> dict[str, Any]:
    b = body(seed)
    trail.submit(
        request_id,
        kw.get("principal", "alice"),
        [window_of(b)],
        [answer(b, kw.get("ref", BLUE))],
        0.002,
        kw.get("green"),
    )
    return b


def trail(root: Path, on_drop: Callable[[int], None] | None = None, **config: Any) -> AuditTrail:
    if on_drop is None:
        return AuditTrail(root, Audit(**config), tick_s=0.05)
    return AuditTrail(root, Audit(**config), on_drop=on_drop, tick_s=0.05)
