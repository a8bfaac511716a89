"""An adaptive limit on predictions in flight in one gateway: the third overload control.

Admission (:mod:`app.gateway.admission`) sees the batcher's queue and loop lag
(:mod:`app.gateway.loop_lag`) sees a loop that is seconds behind. Between the two sits
the common overload of a small box: the gateway's own CPU is the bottleneck, clients
keep a pool of connections busy, and every request admitted waits behind the others in
the gateway (Little's law: 64 in flight at 600 answers a second is ~107 ms each). Neither
control fires there, so nothing is refused and every request is late.

So the number in flight is capped, and the cap follows the latency it produces
(additive increase, multiplicative decrease, as TCP does with its window): every
``WINDOW`` answers, if their mean time in the gateway was over ``target_s`` in this
window and the one before, the limit shrinks; after a window under target it grows by
one, within ``[min_limit, max_limit]``. One slow window alone is a hiccup (a collection,
a replica starting), not an overload: at 500 req/s on the 2-core box single windows over
target came twice in 20 s and each cut the limit towards the bursts it must let through.
A shrink starts from the most that were in flight during the window (a limit of 1000 with
100 in flight refuses nothing, so shrinking it by a tenth changes nothing) and cuts it by
the ratio of target to mean, between ``DECREASE`` and ``MAX_DECREASE``: a flood from a
standing start is met within two windows, not after the ~30 that a tenth per window took
from ``max_limit`` (in the overload drill ~4 s, while a backlog of seconds built up in the
sockets: client p99 1.0-1.2 s, against 137-159 ms now). A
prediction that arrives at the limit is refused at once (429 + ``Retry-After``, before
it is authenticated or parsed: the cheapest answer there is); below the default priority
at half the limit, so low priority goes first. Light load never meets the limit: answers
are fast, so it sits at ``max_limit``. A prediction the batcher's queue refuses
(:meth:`queue_refused`) brings the limit down to what is in flight at once. Constant
memory.
"""

from __future__ import annotations

from dataclasses import dataclass

WINDOW = 64  # answers per adjustment: one slow burst does not move it
DECREASE = 0.9  # the limit's factor after a window over target, at most...
MAX_DECREASE = 0.5  # ...and at least, however far over target the window was
LOW_PRIORITY_SHARE = 0.5  # of the limit, for requests below the default priority


@dataclass
class ConcurrencyLimit:
    target_s: float  # mean time in the gateway to hold (batching.max_in_flight_mean_ms); 0: off
    min_limit: int = 8
    max_limit: int = 1000
    limit: float = 0.0  # 0: start at max_limit
    in_flight: int = 0
    refused: int = 0
    _sum_s: float = 0.0
    _count: int = 0
    _peak: int = 0  # the most in flight during the window
    _slow: bool = False  # was the window before over target?

    def __post_init__(self) -> None:
        if self.limit <= 0:
            self.limit = float(self.max_limit)

    def refusal(self, priority: int | None) -> float | None:
        """None to take a prediction of ``priority``, else the ``Retry-After`` seconds.

        ``priority`` None (not known yet): refused only at the full limit."""
        if self.target_s <= 0:
            return None
        low = priority is not None and priority < 0
        cap = self.limit * (LOW_PRIORITY_SHARE if low else 1.0)
        if self.in_flight < max(1.0, cap):
            return None
        self.refused += 1
        return 1.0

    def enter(self) -> None:
        self.in_flight += 1
        if self.in_flight > self._peak:
            self._peak = self.in_flight

    def queue_refused(self) -> None:
        """A prediction taken in was refused by the batcher's queue (its wait would break
        the target) and leaves now, unanswered.

        What is in flight already fills the latency budget, so the limit comes down to it
        (not below ``min_limit``) and the next excess is refused here, at the edge, for a
        fraction of the cost. The refusal stays out of the window's mean: counted as a
        fast answer it would hide the overload from the limit (in the overload drill such
        refusals took the gateway's whole core while the limit never moved: admitted
        136-214 a second at p99 0.6-0.7 s, session 8)."""
        self.in_flight -= 1
        self.limit = max(float(self.min_limit), min(self.limit, float(self.in_flight + 1)))

    def leave(self, elapsed_s: float) -> None:
        """One prediction done after ``elapsed_s`` in the gateway."""
        self.in_flight -= 1
        self._sum_s += elapsed_s
        self._count += 1
        if self._count < WINDOW:
            return
        mean = self._sum_s / self._count
        peak, self._peak = self._peak, self.in_flight
        self._sum_s, self._count = 0.0, 0
        slow, self._slow = self._slow, mean > self.target_s
        if self._slow and slow:
            factor = max(MAX_DECREASE, min(DECREASE, self.target_s / mean))
            self.limit = max(float(self.min_limit), min(self.limit, float(peak)) * factor)
        elif not self._slow:
            self.limit = min(float(self.max_limit), self.limit + 1.0)
