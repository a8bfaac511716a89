"""Container probe: ``python -m app.serve.probe --url https://127.0.0.1:8000/healthz``.

Used for the worker pods' liveness probe and the compose healthcheck. Serve starts an HTTP
proxy only on nodes that host a replica, so a plain ``httpGet /healthz`` would make the
kubelet restart, in a loop, every worker that happens to hold no replica yet. With
``--fallback``, "nothing listens on :8000" defers to the fallback URL (the raylet health
endpoint), while a proxy that answers badly or hangs still fails the probe.
Standard library only: it must start in well under the probe's timeout.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence


def _get(url: str, timeout: float) -> bool:
    # The serving certificate names the public host, not 127.0.0.1: the probe checks that
    # the process answers, so it skips verification (like the kubelet's HTTPS probes).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:  # noqa: S310
        return 200 <= int(resp.status) < 300


def probe(url: str, *, timeout: float, fallback: str | None = None) -> bool:
    try:
        return _get(url, timeout)
    except urllib.error.HTTPError:
        return False
    except urllib.error.URLError as exc:
        refused = isinstance(exc.reason, ConnectionRefusedError)
        if refused and fallback is not None:
            try:
                return _get(fallback, timeout)
            except (urllib.error.URLError, OSError):
                return False
        return False
    except OSError:  # timeouts, resets
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.serve.probe")
    parser.add_argument("--url", required=True)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--fallback", default=None)
    args = parser.parse_args(argv)
    return 0 if probe(args.url, timeout=args.timeout, fallback=args.fallback) else 1


if __name__ == "__main__":
    sys.exit(main())
