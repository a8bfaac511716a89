"""Request outcomes (ok / error counts) over a trailing time window.

Gateways push their counts every second or so; the rollout controller keeps one window
per role (green, blue) and judges green's error rate over the last
``health_check_duration_s`` from it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcomes:
    ok: int = 0
    errors: int = 0

    @property
    def total(self) -> int:
        return self.ok + self.errors

    @property
    def error_rate_pct(self) -> float | None:
        return 100.0 * self.errors / self.total if self.total else None

    def as_dict(self) -> dict[str, int | float | None]:
        rate = self.error_rate_pct
        return {
            "ok": self.ok,
            "errors": self.errors,
            "error_rate_pct": round(rate, 3) if rate is not None else None,
        }


class OutcomeWindow:
    def __init__(self, duration_s: float) -> None:
        self.duration_s = duration_s
        self._samples: deque[tuple[float, int, int]] = deque()

    def add(self, at: float, ok: int, errors: int) -> None:
        if ok or errors:
            self._samples.append((at, ok, errors))

    def clear(self) -> None:
        self._samples.clear()

    def totals(self, now: float) -> Outcomes:
        cutoff = now - self.duration_s
        while self._samples and self._samples[0][0] < cutoff:
            self._samples.popleft()
        return Outcomes(
            ok=sum(s[1] for s in self._samples), errors=sum(s[2] for s in self._samples)
        )
