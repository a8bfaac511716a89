"""The gateway process's garbage collector, settled once its app is built.

Two settings, both measured with ``python -m app.bench.app_cost`` (time inside the
collector, from ``gc.callbacks``):

- ``gc.freeze()`` after a full collection: what exists then (the app, its config, the
  libraries' own objects) lives as long as the process, so no later collection walks it.
  Unfrozen, each full collection walked all of it.
- A first-generation threshold of 5,000 allocations instead of 700: a 32-symbol batch
  request keeps some 200 tracked objects (futures, queued rows, the answers) alive for a
  few milliseconds, so with 700 most young collections found them alive and promoted
  them, and the older generations' collections followed: ~120 us per such request went
  to the collector, ~7 us with 5,000. A lone ``/predict`` paid ~2 us either way.
  Reference counting still frees everything that is not in a cycle at once; the
  threshold only decides how often cycles are looked for.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 5000


def settle_heap() -> None:
    """Collect, freeze what survives, and raise the first generation's threshold."""
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GEN0_THRESHOLD, gen0), gen1, gen2)
