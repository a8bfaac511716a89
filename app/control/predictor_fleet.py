"""What the rollout controller knows about the predictor replicas: who is alive and which
versions each holds loaded (or failed to load).

Predictors report themselves every few seconds (``model.follower``). A replica that has
not reported for ``stale_after_s`` is presumed gone (scaled down, crashed): it neither
blocks a rollout nor counts as having a version loaded. Serve routes no traffic to a
replica still in its constructor, and one that starts mid-rollout loads green within its
first poll, so "every live replica reports it loaded" is the right gate for shifting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ReplicaReport:
    at: float
    loaded: frozenset[str]
    failed: dict[str, str] = field(default_factory=dict)


class PredictorFleet:
    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        self._replicas: dict[str, ReplicaReport] = {}

    def update(self, replica: str, loaded: list[str], failed: dict[str, str], now: float) -> None:
        self._replicas[replica] = ReplicaReport(now, frozenset(loaded), dict(failed))

    def live(self, now: float) -> dict[str, ReplicaReport]:
        cutoff = now - self.stale_after_s
        forget = now - 10 * self.stale_after_s
        for name in [n for n, r in self._replicas.items() if r.at < forget]:
            del self._replicas[name]  # long gone: stop listing it
        return {n: r for n, r in self._replicas.items() if r.at >= cutoff}

    def all_loaded(self, key: str, now: float) -> bool:
        """True when at least one replica is live and every live one holds ``key``."""
        live = self.live(now)
        return bool(live) and all(key in r.loaded for r in live.values())

    def failure(self, key: str, now: float) -> str | None:
        """Why a live replica could not load ``key``, if one reports that it could not."""
        for name, report in sorted(self.live(now).items()):
            why = report.failed.get(key)
            if why is not None and key not in report.loaded:
                return f"{name}: {why}"
        return None

    def view(self, now: float) -> dict[str, Any]:
        return {
            name: {
                "age_s": round(now - r.at, 3),
                "loaded": sorted(r.loaded),
                "failed": dict(r.failed),
            }
            for name, r in sorted(self.live(now).items())
        }
