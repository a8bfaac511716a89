"""Where Ray Serve 2.60 lets a client steer the ingress, and how the gateway stops it.

Serve's direct-ingress wrapper reads ``x-request-timeout-seconds`` from the request before
our app sees it (``ray.serve._private.replica`` calls ``parse_request_timeout_header``), so
``x-request-timeout-seconds: 0.000001`` made Serve answer a plain-text 408 at once, outside
the one JSON error shape, and a large value let a client hold a slot past our own timeout.
The gateway enforces its own deadline (``serving.request_timeout_s``) around every handle
call and strips the header in :class:`app.security.hardening.RequestHygieneMiddleware`, so
inside a gateway replica the header is ignored: the replica's lookup always returns the
configured default (``http_options.request_timeout_s``).

Serve's proxy (the fallback route on ``serving.proxy_port``) runs in its own process and
still honours the header; the direct-ingress port is the one clients are given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("app.serve.serve_patches")

_PATCHED_NAME = "parse_request_timeout_header"


def _default_timeout_only(headers: dict[bytes, bytes], default_timeout_s: float | None) -> Any:
    return default_timeout_s


def ignore_client_timeout_header() -> bool:
    """In this process, make Serve's direct ingress ignore the client's timeout header.

    Returns False (and logs) when this Ray has no such lookup to replace: a Ray upgrade
    that moved it must be looked at, not silently run without the guard.
    """
    from ray.serve._private import replica

    current: Callable[..., Any] | None = getattr(replica, _PATCHED_NAME, None)
    if current is None:
        log.error("serve_timeout_header_guard_missing", module=replica.__name__)
        return False
    setattr(replica, _PATCHED_NAME, _default_timeout_only)
    return True
