"""``/healthz`` and ``/ready`` probed in turn, from a process of their own.

The overload drill (``tests/integration/test_fault_drills.py``) measures how fast the
probes answer while the gateway is flooded. Probed from the drill's own process, they
would share its GIL with the load generator's bookkeeping and the client that reads every
answer, so a stall of that process (parsing the generator's results, say) would be counted
as the server's latency. Here nothing else runs in the process.

``python -m tests.support.health_prober BASE_URL CA_FILE``: one line ``ready`` on stderr
after the first round; probes every 50 ms on one keep-alive connection until SIGTERM,
then one JSON object on stdout, path -> latencies in ms (5000 for a probe that failed).
"""

from __future__ import annotations

import json
import signal
import ssl
import sys
import time
from types import FrameType

import httpx

PATHS = ("/healthz", "/ready")
FAILED_MS = 5000.0


def main(argv: list[str]) -> int:
    base_url, ca_file = argv[1], argv[2]
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    out: dict[str, list[float]] = {path: [] for path in PATHS}
    context = ssl.create_default_context(cafile=ca_file)
    with httpx.Client(base_url=base_url, verify=context, timeout=5.0) as client:
        first = True
        while not stopping:
            for path in PATHS:
                t0 = time.monotonic()
                try:
                    client.get(path)
                    out[path].append((time.monotonic() - t0) * 1000)
                except httpx.HTTPError:
                    out[path].append(FAILED_MS)
            if first:
                print("ready", file=sys.stderr, flush=True)
                first = False
            time.sleep(0.05)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
