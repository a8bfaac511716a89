"""Request outcomes (ok / error counts) over a trailing time window, and green's health.

Gateways push their counts every second or so; the rollout controller keeps one window
per role (green, blue) in :class:`TrafficHealth` and judges green's error rate over the
last ``health_check_duration_s`` from it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.control.rollout_settings import RolloutSettings
from app.control.rollout_state import RolloutState


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


class TrafficHealth:
    """Blue's and green's outcomes during a rollout, and the spec 9.2 verdict on green:
    roll back when green's error rate over the window exceeds the threshold with at least
    ``min_samples`` requests in it."""

    def __init__(self, settings: RolloutSettings) -> None:
        self.settings = settings
        self.green = OutcomeWindow(settings.health_window_s)
        self.blue = OutcomeWindow(settings.health_window_s)

    def record(self, state: RolloutState, counts: Mapping[str, Sequence[int]], now: float) -> bool:
        """Add one gateway's ``{ref.key: (ok, errors)}``; True if a step's counts moved."""
        step = state.steps[-1] if state.phase == "shifting" and state.steps else None
        for key, (ok, errors) in counts.items():
            if state.green is not None and key == state.green.key and state.active:
                self.green.add(now, ok, errors)
                if step is not None:
                    step.green_ok += ok
                    step.green_errors += errors
            elif state.blue is not None and key == state.blue.key:
                self.blue.add(now, ok, errors)
                if step is not None:
                    step.blue_ok += ok
                    step.blue_errors += errors
        return step is not None and bool(counts)

    def rollback_reason(self, now: float) -> str | None:
        """Why green must be rolled back now, or None while it is healthy enough."""
        health = self.green.totals(now)
        limit = self.settings.rollback_threshold_pct
        if health.total < self.settings.min_samples or (health.error_rate_pct or 0) <= limit:
            return None
        return (
            f"green error rate {health.error_rate_pct:.1f}% ({health.errors}/{health.total}"
            f" over the last {self.settings.health_window_s:g}s) exceeded {limit:g}%"
        )

    def view(self, now: float) -> dict[str, Any]:
        return {
            "window_s": self.settings.health_window_s,
            "min_samples": self.settings.min_samples,
            "rollback_threshold_pct": self.settings.rollback_threshold_pct,
            "green": self.green.totals(now).as_dict(),
            "blue": self.blue.totals(now).as_dict(),
        }
