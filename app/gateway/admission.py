"""Latency-aware admission: refuse a row up front when its queue wait would break the target.

The bounded queue (spec 4.1 ``priority_queue_size``) bounds memory, but a row count says
nothing about time: at three times capacity a full queue of 1000 rows waits seconds, long
after the latency target is lost. So each row's queue wait is estimated when it arrives,
from two things the batcher measures:

- the rows that will leave before it: those queued at its priority or higher (higher
  priorities overtake, so a high-priority row sees a short queue even when the queue is
  full of low-priority work, which is what sheds low priority first);
- the rate at which the predictor answers rows, measured on batches at least half full
  (``full_rows``): rows over the time the batch had the predictor to itself, from when it
  was sent or when the batch before it came back, whichever is later (a round trip when
  batches go one at a time, the interval between answers when they overlap, as with
  several replicas). Small batches at light load say nothing about capacity (a lone row's
  round trip would put it at a few hundred rows a second), so they leave it alone.

A row whose expected wait exceeds its priority's budget is refused (``queue_full``, 429)
with ``Retry-After`` set to the time the queue ahead of it needs to drain. Rows below the
default priority get half the budget. Until a full batch has been measured every row is
admitted (the row-count bound still holds). Memory is constant: a count per priority.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

RATE_SMOOTHING = 0.3  # weight of the newest full batch in the drain-rate average
LOW_PRIORITY_SHARE = 0.5  # budget share of rows below the default priority (0)


@dataclass
class Admission:
    max_wait_s: float  # the budget for queue wait at priority >= 0; 0 turns admission off
    full_rows: int = 1  # batches with at least this many rows measure the drain rate
    rate_rows_per_s: float | None = None  # rows answered per second by full batches
    _queued: Counter[int] = field(default_factory=Counter)
    _last_answer: float | None = None

    def budget_s(self, priority: int) -> float:
        return self.max_wait_s * (LOW_PRIORITY_SHARE if priority < 0 else 1.0)

    def rows_ahead(self, priority: int) -> int:
        """Queued rows that leave before a new row of ``priority``."""
        return sum(n for p, n in self._queued.items() if p >= priority)

    def expected_wait_s(self, priority: int) -> float | None:
        """How long a new row of ``priority`` would queue; None while unmeasured."""
        if not self.rate_rows_per_s:
            return None
        return self.rows_ahead(priority) / self.rate_rows_per_s

    def refusal(self, priority: int) -> float | None:
        """None to admit a row of ``priority``, else the ``Retry-After`` seconds."""
        if self.max_wait_s <= 0:
            return None
        wait = self.expected_wait_s(priority)
        if wait is None or wait <= self.budget_s(priority):
            return None
        return float(max(1, math.ceil(wait)))

    # -- what the batcher reports -----------------------------------------------------

    def queued(self, priority: int) -> None:
        self._queued[priority] += 1

    def left(self, priority: int) -> None:
        """A row left the queue (sent, expired or abandoned)."""
        self._queued[priority] -= 1
        if self._queued[priority] <= 0:
            del self._queued[priority]

    def answered(self, rows: int, sent: float, now: float) -> None:
        """A batch of ``rows`` sent at ``sent`` came back at ``now``."""
        start = sent if self._last_answer is None else max(sent, self._last_answer)
        self._last_answer = now
        if rows < self.full_rows or now <= start:
            return
        sample = rows / (now - start)
        old = self.rate_rows_per_s
        self.rate_rows_per_s = (
            sample if old is None else (1 - RATE_SMOOTHING) * old + RATE_SMOOTHING * sample
        )
