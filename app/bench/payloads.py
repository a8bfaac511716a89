"""Request bodies for the load generator: real EURUSD windows, serialised once, up front.

Serialising per request would cost the client more CPU than the server's JSON parse, so
every body is built before the clock starts and sent as bytes. Windows are spread over
the whole series so that, with more distinct windows than the feature cache holds
(1000 by default) and round-robin use, every request misses the cache: a benchmark of
the serving path, not of a dictionary look-up. ``distinct=1`` asks for the cache case.

The CLI and Ray are imported only inside the builders: the load-generator child process
imports :class:`Payloads` and must stay lean (no Ray, numpy or pydantic in it).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

EURUSD_BARS = 5000  # bars in backtesting's EURUSD.csv
WINDOW = 64  # model.common.features.WINDOW; a test checks they agree (see module docstring)


@dataclass(frozen=True)
class Payloads:
    path: str
    bodies: tuple[bytes, ...]
    rows_per_request: int

    def body(self, i: int) -> bytes:
        return self.bodies[i % len(self.bodies)]


def window_offsets(distinct: int) -> list[int]:
    """``distinct`` window start offsets spread evenly over the series."""
    last = EURUSD_BARS - WINDOW
    if distinct < 1:
        raise ValueError("distinct must be >= 1")
    if distinct > last + 1:
        raise ValueError(f"at most {last + 1} distinct windows in the EURUSD series")
    if distinct == 1:
        return [1000]
    return [round(i * last / (distinct - 1)) for i in range(distinct)]


def predict_payloads(distinct: int = 2048) -> Payloads:
    """Bodies for ``POST /predict``, one distinct window each."""
    from app.cli.serve_cmd import sample_request

    bodies = tuple(orjson.dumps(sample_request(offset=o)) for o in window_offsets(distinct))
    return Payloads("/predict", bodies, 1)


def batch_payloads(symbols: int, distinct: int = 2048) -> Payloads:
    """Bodies for ``POST /predict/batch`` with ``symbols`` items each, windows rotating."""
    if symbols < 1:
        raise ValueError("symbols must be >= 1")
    from app.cli.serve_cmd import sample_request

    items = [
        sample_request(symbol=f"EURUSD.{i % 997}", offset=o)
        for i, o in enumerate(window_offsets(distinct))
    ]
    n_bodies = max(1, len(items) // symbols)
    bodies = tuple(
        orjson.dumps({"items": [items[(b * symbols + j) % len(items)] for j in range(symbols)]})
        for b in range(n_bodies)
    )
    return Payloads("/predict/batch", bodies, symbols)
