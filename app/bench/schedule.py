"""When each request of an open-loop run is due, and which sender process sends it.

One global schedule for the whole run, then dealt out round-robin: request ``k`` goes to
sender ``k % senders``. With even arrivals (the default) request ``k`` is due at
``k / rate``, so sender ``s`` sends at ``(s + j * senders) / rate``: every sender runs at
``rate / senders`` and the senders are offset from one another by ``1 / rate``, so the
aggregate the server sees is one evenly spaced stream, never ``senders`` requests at
once. With Poisson arrivals the gaps are exponential with mean ``1 / rate`` (a seeded
generator, so every sender computes the same global schedule and takes its share).
"""

from __future__ import annotations

import random
from typing import Literal

Arrivals = Literal["even", "poisson"]
ARRIVALS: tuple[Arrivals, ...] = ("even", "poisson")


def offsets(rate: float, n: int, arrivals: Arrivals = "even", seed: int = 0) -> list[float]:
    """Due times in seconds from the start of the run for requests ``0 .. n-1``."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    if arrivals == "even":
        interval = 1.0 / rate
        return [k * interval for k in range(n)]
    if arrivals == "poisson":
        rng = random.Random(seed)
        out, t = [], 0.0
        for _ in range(n):
            out.append(t)
            t += rng.expovariate(rate)
        return out
    raise ValueError(f"arrivals must be one of {ARRIVALS}, not {arrivals!r}")


def share(n: int, sender: int, senders: int) -> range:
    """Global request indices that ``sender`` (0-based) of ``senders`` sends."""
    if not 0 <= sender < senders:
        raise ValueError("sender out of range")
    return range(sender, n, senders)
