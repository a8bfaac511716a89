"""Fault injection: a chaos/testing switch that makes chosen model versions fail.

Off unless ``serving.fault_injection`` names versions (``{"cnn_lstm:2.0.0": 0.1}``). It
exists so the blue/green rollback path can be exercised end to end against a real
deployment: a version listed here answers ``PredictError(UNAVAILABLE, "injected fault")``
for that fraction of predictor calls. Never set it in production.

The choice is deterministic (an accumulator, not a coin): with 0.1, exactly every tenth
call for that version fails. A random draw would make "10 % errors" 0 % in a short
window often enough to flake the tests that rely on it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from model.common.refs import ModelRef

INJECTED_FAULT_MESSAGE = "injected fault"


class InjectedFaultError(RuntimeError):
    """A failure made on purpose by :class:`FaultInjector`."""

    def __init__(self) -> None:
        super().__init__(INJECTED_FAULT_MESSAGE)


class FaultInjector:
    def __init__(self, fractions: Mapping[str, float] | None = None) -> None:
        self._fractions = {
            key: min(1.0, max(0.0, float(frac))) for key, frac in (fractions or {}).items()
        }
        self._credit: dict[str, float] = {}
        self._lock = threading.Lock()
        self.injected_calls = 0
        self.injected_rows = 0

    @property
    def enabled(self) -> bool:
        return any(f > 0 for f in self._fractions.values())

    def should_fail(self, ref: ModelRef, rows: int = 1) -> bool:
        """Whether this call (for ``ref``, carrying ``rows`` rows) fails on purpose."""
        frac = self._fractions.get(f"{ref.name}:{ref.version}", 0.0)
        if frac <= 0.0:
            return False
        key = f"{ref.name}:{ref.version}"
        with self._lock:
            credit = self._credit.get(key, 0.0) + frac
            fail = credit >= 1.0 - 1e-9
            self._credit[key] = credit - 1.0 if fail else credit
            if fail:
                self.injected_calls += 1
                self.injected_rows += rows
        return fail
