"""HTTP request count and latency per route, from prometheus-fastapi-instrumentator.

Exports ``http_requests_total{handler,method,status}`` and
``http_request_duration_seconds{handler,method}`` (buckets aligned with the spec's latency
buckets, in seconds): the two the dashboard and the error-budget alerts read. The
library's default set adds a high-resolution latency histogram and request/response size
summaries; each is one more observation on every request (three of the five: ~60 % of the
instrumentation's cost on /predict), so they are left out. The two series are ours
(:class:`HttpMetrics`, same names, labels and help as the library's), handed to the
instrumentator as its one instrumentation function: the prediction fast path
(app/api/fast_predict.py) records into the same series without the middleware, and the
label children are cached (a ``labels()`` lookup per request was most of the cost).
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_fastapi_instrumentator import Instrumentator, metrics

# Scrapes and liveness probes would otherwise be most of the traffic the series count.
EXCLUDED_HANDLERS = ("^/metrics$", "^/healthz$")

# The instrumentator's default (0.1, 0.5, 1) s cannot tell 50 ms from 100 ms; these are the
# spec 6.1 prediction_latency_ms buckets in seconds, so both views line up.
HTTP_LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)
_MAX_CACHED = 512  # label sets kept (handlers are route templates or "none": few)


class HttpMetrics:
    """``http_requests_total{handler,method,status}`` and
    ``http_request_duration_seconds{handler,method}``, as the instrumentator names them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "http_requests_total",
            "Total number of requests by method, status and handler.",
            ["handler", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Duration of HTTP requests in seconds",
            ["handler", "method"],
            buckets=HTTP_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def observe(self, handler: str, method: str, status: str | int, duration_s: float) -> None:
        """One request; ``status`` grouped to ``2xx``... as the instrumentator groups it."""
        if not isinstance(status, str) or not status.endswith("xx"):
            status = f"{str(status)[0]}xx"
        key = (handler, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(handler, method, status),
                self.latency.labels(handler, method),
            )
            if len(self._children) < _MAX_CACHED:
                self._children[key] = children
        children[0].inc()
        children[1].observe(duration_s)

    def record(self, info: metrics.Info) -> None:
        """The instrumentator's hook (its middleware calls this once per request)."""
        self.observe(
            info.modified_handler, info.method, info.modified_status, info.modified_duration
        )


def instrument_http(app: FastAPI, registry: CollectorRegistry) -> HttpMetrics:
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
    recorder = HttpMetrics(registry)
    instrumentator.add(recorder.record)
    instrumentator.instrument(app)
    return recorder
