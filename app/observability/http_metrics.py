"""HTTP request count and latency per route, from prometheus-fastapi-instrumentator.

Exports ``http_requests_total{handler,method,status}`` and
``http_request_duration_seconds{handler,method}`` (buckets aligned with the spec's latency
buckets, in seconds): the two the dashboard and the error-budget alerts read. The
library's default set adds a high-resolution latency histogram and request/response size
summaries; each is one more observation on every request (three of the five: ~60 % of the
instrumentation's cost on /predict), so they are left out.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_fastapi_instrumentator import Instrumentator, metrics

# Scrapes and liveness probes would otherwise be most of the traffic the series count.
EXCLUDED_HANDLERS = ("^/metrics$", "^/healthz$")

# The instrumentator's default (0.1, 0.5, 1) s cannot tell 50 ms from 100 ms; these are the
# spec 6.1 prediction_latency_ms buckets in seconds, so both views line up.
HTTP_LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)


def instrument_http(app: FastAPI, registry: CollectorRegistry) -> None:
    """Add the HTTP metrics middleware to ``app``; call once per app and registry."""
    instrumentator = Instrumentator(
        should_group_status_codes=True,
        # Paths that match no route are counted under handler="none", so a client probing
        # random URLs cannot create one series per path.
        should_ignore_untemplated=False,
        should_group_untemplated=True,
        should_instrument_requests_inprogress=False,
        excluded_handlers=list(EXCLUDED_HANDLERS),
        registry=registry,
    )
    instrumentator.add(metrics.requests(registry=registry))
    instrumentator.add(
        metrics.latency(
            should_include_status=False, buckets=HTTP_LATENCY_BUCKETS_S, registry=registry
        )
    )
    instrumentator.instrument(app)
