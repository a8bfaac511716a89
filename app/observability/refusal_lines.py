"""Access lines for edge refusals under a flood: the first few each second, then a count.

At three times capacity the gateway refuses well over a thousand predictions a second
before authenticating or reading them (:meth:`app.api.fast_predict.FastPredict.refuse`).
Each refusal's own access line cost ~60 us of the gateway's CPU there (11 % of the flooded
gateway's samples in a py-spy profile), and a flood's log says the same thing a thousand
times a second: the CPU it took was the CPU the admitted requests lacked (in the overload
drill, with refusals already out of Serve's metrics, a line for every refusal left the
gateway admitting 316 predictions a second at a gateway p99 of 213-287 ms; 478-597 a
second at 109-188 ms with these counts).

So an edge refusal gets its own access line only while fewer than ``per_second`` have been
written in the current one-second window; the rest are counted, and one
``access_suppressed`` line per route and status says how many when the window closes
(``logging.refusal_lines_per_s``). Every refusal is still counted in the metrics
(``http_requests_total``, ``predictions_total{status}``) and still hands the client its
request id. Everything else, refusals for any other reason included (credentials, input,
rate limits), keeps one line per request. Memory: one count per route and status.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

from app.observability.fast_line import info_line

WINDOW_S = 1.0


class RefusalLines:
    """Decides, refusal by refusal, whether it gets its own access line."""

    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self._clock = clock
        self._window_end = float("-inf")
        self._written = 0
        self._suppressed: Counter[tuple[str, int]] = Counter()
        self._flush_due = False

    def own_line(self, route: str, status: int) -> bool:
        """True: write this refusal's access line; False: it is counted for the summary."""
        now = self._clock()
        if now >= self._window_end:
            self.flush()
            self._window_end = now + WINDOW_S
            self._written = 0
        if self._written < self.per_second:
            self._written += 1
            return True
        self._suppressed[(route, status)] += 1
        if not self._flush_due:
            self._flush_due = True
            self._flush_at_window_end()
        return False

    def flush(self) -> None:
        """Write the counts of the window so far (at its end, or at the next refusal)."""
        self._flush_due = False
        for (route, status), count in sorted(self._suppressed.items()):
            info_line(
                "app.access",
                "access_suppressed",
                {"route": route, "status": status, "count": count, "window_s": WINDOW_S},
            )
        self._suppressed.clear()

    def _flush_at_window_end(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test): the next refusal after the window flushes
            return
        loop.call_later(max(0.0, self._window_end - self._clock()), self.flush)
