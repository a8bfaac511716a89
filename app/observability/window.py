"""A bounded window of recent samples and the percentiles ``/stats`` reports from it.

Prometheus histograms answer "what fraction fell under 50 ms" exactly, but a percentile
read back from eight buckets can only say "somewhere between 25 and 50 ms". ``/stats`` is
read by people watching a live deployment, so it keeps the last N raw values instead and
reports nearest-rank percentiles over them.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence


def nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0 < q <= 1) of already sorted values by the nearest-rank rule."""
    if not sorted_values:
        raise ValueError("no values")
    if not 0 < q <= 1:
        raise ValueError("q must be in (0, 1]")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class SampleWindow:
    """The last ``size`` observations; appends are O(1) and safe from any thread."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(value)

    def __len__(self) -> int:
        return len(self._values)

    def summary(self, recent: int | None = None) -> dict[str, float | int | None]:
        """Count, mean, p50/p95/p99 and max of the window (``None`` when it is empty), or
        of its ``recent`` newest values only (a benchmark run slower than the window, so
        that an earlier run's samples do not speak for it)."""
        with self._lock:
            values = list(self._values)
        if recent is not None:
            if recent < 1:
                raise ValueError("recent must be >= 1")
            values = values[-recent:]
        values.sort()
        if not values:
            return {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}
        return {
            "count": len(values),
            "mean": round(sum(values) / len(values), 3),
            "p50": round(nearest_rank(values, 0.50), 3),
            "p95": round(nearest_rank(values, 0.95), 3),
            "p99": round(nearest_rank(values, 0.99), 3),
            "max": round(values[-1], 3),
        }
