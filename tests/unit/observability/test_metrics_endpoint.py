"""GET /metrics and the HTTP instrumentation: format, labels, exclusions, cardinality."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from app.api.routes.metrics import router
from app.config import Metrics
from app.observability.http_metrics import instrument_http
from app.observability.metrics import GatewayMetrics
from app.observability.process_metrics import new_registry


def build_app(registry: CollectorRegistry) -> FastAPI:
    app = FastAPI()
    app.state.metrics_registry = registry
    instrument_http(app, registry)
    app.include_router(router)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def http_requests(text: str) -> dict[tuple[str, str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "http_requests_total":
                out[(s.labels["handler"], s.labels["method"], s.labels["status"])] = s.value
    return out


def test_metrics_route_serves_prometheus_text_format() -> None:
    registry = new_registry()
    metrics = GatewayMetrics(registry, Metrics())
    metrics.observe_prediction(
        latency_ms=12.0, model_version="1.0.0", batch_size=4, queue_wait_ms=1.0, model_ms=0.5
    )
    with TestClient(build_app(registry)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert {"prediction_latency_ms", "batch_size", "predictions", "process_cpu_seconds"} <= names


def test_metrics_route_is_in_the_openapi_schema() -> None:
    with TestClient(build_app(CollectorRegistry())) as client:
        schema = client.get("/openapi.json").json()
    op = schema["paths"]["/metrics"]["get"]
    assert CONTENT_TYPE_LATEST in op["responses"]["200"]["content"]


def test_http_metrics_label_route_templates_and_group_unknown_paths() -> None:
    registry = CollectorRegistry()
    with TestClient(build_app(registry)) as client:
        client.get("/items/1")
        client.get("/items/2")
        client.get("/items/not-a-number")  # 422
        for i in range(5):
            client.get(f"/random/{i}")  # 404s: one series, not five
        text = client.get("/metrics").text
    counts = http_requests(text)
    assert counts[("/items/{item_id}", "GET", "2xx")] == 2
    assert counts[("/items/{item_id}", "GET", "4xx")] == 1
    assert counts[("none", "GET", "4xx")] == 5
    assert not any(handler.startswith("/random") for handler, _, _ in counts)


def test_http_metrics_exclude_scrapes_and_liveness_probes() -> None:
    registry = CollectorRegistry()
    with TestClient(build_app(registry)) as client:
        client.get("/healthz")
        client.get("/metrics")
        text = client.get("/metrics").text
    handlers = {handler for handler, _, _ in http_requests(text)}
    assert "/metrics" not in handlers
    assert "/healthz" not in handlers


def test_http_latency_buckets_align_with_spec_latency_buckets() -> None:
    registry = CollectorRegistry()
    with TestClient(build_app(registry)) as client:
        client.get("/items/1")
        text = client.get("/metrics").text
    bounds = sorted(
        {
            float(s.labels["le"])
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "http_request_duration_seconds_bucket"
        }
    )
    assert bounds == [0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, float("inf")]
