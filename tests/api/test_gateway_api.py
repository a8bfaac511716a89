"""The gateway's FastAPI app with a fake predictor: routes, validation and error shapes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.gateway.cluster import StaticCluster
from app.gateway.state import GatewayState, build_gateway_state
from app.security.api_keys import ApiKeyStore
from model.common.protocol import PredictorStatus
from model.export import make_random_artifact
from tests.fakes import FakePredictor
from tests.support.live import columnar_bars
from tests.support.security_app import write_security_material


@dataclass
class Harness:
    client: TestClient
    fake: FakePredictor
    state: GatewayState
    key: str
    token: str


def _build(
    root: Path,
    fake: FakePredictor,
    *,
    capacity: int = 1000,
    predictors: int = 1,
) -> tuple[GatewayState, object, str]:
    material = write_security_material(
        root,
        overrides={
            "model_registry": {"path": str(root / "models")},
            "network_security": {"limits": {"max_body_bytes": 1_048_576, "max_batch_symbols": 16}},
        },
    )
    config = material.config
    # Keys exist before the app reads its store (it re-reads at most once a second).
    _, key = ApiKeyStore(config.security.authentication.api_key_store_path).create(
        owner="api-tests", scopes=["model:predict"], priority=5
    )
    if capacity != config.batching.priority_queue_size:
        config.batching.priority_queue_size = max(1, capacity)
    state = build_gateway_state(
        config,
        dispatch=fake.dispatch,
        probe=fake.status,
        cluster=StaticCluster({"cnn_lstm_predictor": predictors, "gateway": 1}),
    )
    state.batcher.capacity = capacity
    return state, create_app(config, state, metrics_registry=state.metrics.registry), key


@pytest.fixture(scope="module")
def registry_ref(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("gw")
    ref = make_random_artifact(root / "models", version="1.0.0", seed=1)
    return root, ref


@pytest.fixture
def harness(registry_ref: tuple[Path, object]) -> Iterator[Harness]:
    root, ref = registry_ref
    fake = FakePredictor(ref=ref)  # type: ignore[arg-type]
    state, app, key = _build(root, fake)
    from tests.support.tokens import token_for

    auth = state.config.security.authentication
    token = token_for(auth, "ops", ["model:stats"])
    with TestClient(app) as client:  # runs the lifespan: batcher and readiness start
        yield Harness(client, fake, state, key, token)


def _predict(h: Harness, body: object, **headers: str) -> object:
    return h.client.post("/predict", json=body, headers={"X-API-Key": h.key, **headers})


def test_predict_returns_the_fake_models_answer(harness: Harness) -> None:
    r = _predict(harness, columnar_bars("ABC"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["symbol"] == "ABC"
    assert 0.0 <= body["prob_up"] <= 1.0
    assert body["model"]["version"] == "1.0.0"
    assert body["request_id"] == r.headers["x-request-id"]
    assert len(harness.fake.calls) == 1
    assert harness.fake.calls[0].features.shape == (1, 64, 16)


def test_repeated_window_is_served_from_the_feature_cache(harness: Harness) -> None:
    body = columnar_bars("ABC")
    _predict(harness, body)
    _predict(harness, body)
    changed = columnar_bars("ABC")
    changed["close"][-1] += 0.5
    changed["high"][-1] += 0.5
    _predict(harness, changed)
    assert (harness.state.features.hits, harness.state.features.misses) == (1, 2)


@pytest.mark.parametrize(("predictors", "limit"), [(1, 2), (3, 6), (0, 2)])
def test_batches_in_flight_follow_the_predictors_replica_count(
    registry_ref: tuple[Path, object], predictors: int, limit: int
) -> None:
    root, ref = registry_ref
    state, app, _ = _build(root, FakePredictor(ref=ref), predictors=predictors)  # type: ignore[arg-type]
    auth = state.config.security.authentication
    from tests.support.tokens import token_for

    token = token_for(auth, "ops", ["model:stats"])
    with TestClient(app) as client:  # the lifespan starts counting the replicas
        for _ in range(40):
            stats = client.get("/stats", headers={"Authorization": f"Bearer {token}"}).json()
            if stats["queue"]["batches_in_flight_limit"] == limit:
                break
            time.sleep(0.05)
    # Two per predictor replica (batching.batches_in_flight_per_replica); none counted
    # (all restarting) keeps one replica's worth.
    assert state.batcher.max_in_flight == limit
    assert stats["queue"]["batches_in_flight_limit"] == limit


def test_a_load_error_is_on_stats_not_on_the_unauthenticated_ready(
    registry_ref: tuple[Path, object],
) -> None:
    root, ref = registry_ref
    error = "ArtifactValidationError: /srv/models/cnn_lstm/2.0.0/manifest.json is not valid JSON"

    class Failing(FakePredictor):
        async def status(self) -> PredictorStatus:
            return PredictorStatus(ready=False, stage="failed", error=error)

    state, app, _ = _build(root, Failing(ref=ref))  # type: ignore[arg-type]
    from tests.support.tokens import token_for

    token = token_for(state.config.security.authentication, "ops", ["model:stats"])
    with TestClient(app) as client:
        ready = client.get("/ready")
        stats = client.get("/stats", headers={"Authorization": f"Bearer {token}"})
    assert ready.status_code == 503
    assert ready.json()["error"]["message"] == "predictor failed"
    assert "/srv/models" not in ready.text
    assert stats.json()["predictor"]["error"] == error


def test_predict_is_503_until_the_predictor_is_ready(registry_ref: tuple[Path, object]) -> None:
    root, ref = registry_ref
    fake = FakePredictor(ref=ref, ready=False)  # type: ignore[arg-type]
    _state, app, key = _build(root, fake)
    with TestClient(app) as client:
        assert client.get("/ready").status_code == 503
        r = client.post("/predict", json=columnar_bars(), headers={"X-API-Key": key})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "not_ready"
        assert fake.calls == []
        fake.ready = True
        deadline = time.monotonic() + 5
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (
            client.post("/predict", json=columnar_bars(), headers={"X-API-Key": key}).status_code
            == 200
        )


def test_full_queue_answers_429_with_retry_after(registry_ref: tuple[Path, object]) -> None:
    root, ref = registry_ref
    fake = FakePredictor(ref=ref, gate=None)  # type: ignore[arg-type]
    state, app, key = _build(root, fake, capacity=0)
    with TestClient(app) as client:
        r = client.post("/predict", json=columnar_bars(), headers={"X-API-Key": key})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "queue_full"
    # The queue's refusal also brings the in-flight limit down (to its floor, with
    # nothing else in flight), so the next excess is refused before it is parsed.
    assert state.concurrency.in_flight == 0
    assert state.concurrency.limit == state.concurrency.min_limit < state.concurrency.max_limit


def test_past_deadline_is_refused_before_the_model(harness: Harness) -> None:
    past = str(int((time.time() - 1) * 1000))
    r = _predict(harness, columnar_bars(), **{"X-Request-Deadline-Ms": past})
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "deadline_exceeded"
    assert harness.fake.calls == []


def test_unknown_version_is_404(harness: Harness) -> None:
    body = columnar_bars()
    body["version"] = "does-not-exist"
    r = _predict(harness, body)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_batch_limit_is_enforced(harness: Harness) -> None:
    limit = harness.state.config.network_security.limits.max_batch_symbols
    items = [columnar_bars(f"S{i}") for i in range(limit + 1)]
    r = harness.client.post(
        "/predict/batch", json={"items": items}, headers={"X-API-Key": harness.key}
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "too_many_items"


def test_batch_results_keep_request_order(harness: Harness) -> None:
    items = [columnar_bars(f"S{i}") for i in range(10)]
    for i, item in enumerate(items):
        item["close"] = [c + i for c in item["close"]]
        item["high"] = [h + i for h in item["high"]]
        item["open"] = [o + i for o in item["open"]]
        item["low"] = [lo + i for lo in item["low"]]
    r = harness.client.post(
        "/predict/batch", json={"items": items}, headers={"X-API-Key": harness.key}
    )
    assert r.status_code == 200, r.text
    assert [p["symbol"] for p in r.json()["predictions"]] == [f"S{i}" for i in range(10)]
    singles = [_predict(harness, item).json()["expected_return"] for item in items]
    assert [p["expected_return"] for p in r.json()["predictions"]] == pytest.approx(singles)


def test_stats_reports_counts_caches_and_replicas(harness: Harness) -> None:
    _predict(harness, columnar_bars())
    r = harness.client.get("/stats", headers={"Authorization": f"Bearer {harness.token}"})
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["model"]["version"] == "1.0.0"
    assert s["requests"]["by_status"]["ok"] >= 1
    assert s["replicas"] == {"cnn_lstm_predictor": 1, "gateway": 1}
    assert s["cache"]["feature"]["misses"] >= 1
    assert s["latency_ms"]["p50"] is not None
    assert s["cache"]["feature"]["entries"] >= 1
    assert s["serving"]["ingress"] == "direct"
    assert s["serving"]["resource_tier"].startswith("custom")
    # spec 2.1's version and description: Serve 2.60 has no field for them (its
    # ``version`` argument was removed), so /stats is where they show
    assert s["deployment"]["deployment_name"] == "cnn_lstm_predictor"
    assert s["deployment"]["version"] == "1.0.0"
    assert s["deployment"]["description"].startswith("CNN+LSTM")


def test_stats_summarises_the_recent_rows_when_asked(harness: Harness) -> None:
    auth = {"Authorization": f"Bearer {harness.token}"}
    for _ in range(3):
        _predict(harness, columnar_bars())
    r = harness.client.get("/stats", params={"recent": 2}, headers=auth)
    assert r.status_code == 200, r.text
    s = r.json()
    assert [s[w]["count"] for w in ("latency_ms", "queue_wait_ms", "model_time_ms")] == [2, 2, 2]
    assert s["requests"]["by_status"]["ok"] >= 3  # the counters stay whole
    for bad in ("0", "-1", "x", "1.5"):
        r = harness.client.get("/stats", params={"recent": bad}, headers=auth)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["details"][0]["loc"] == ["query", "recent"], r.text


def test_metrics_exposes_the_spec_histograms(harness: Harness) -> None:
    _predict(harness, columnar_bars())
    r = harness.client.get("/metrics", headers={"Authorization": f"Bearer {harness.token}"})
    assert r.status_code == 200
    text = r.text
    bounds = {
        line.split('le="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("prediction_latency_ms_bucket{")
    }
    assert bounds == {"10.0", "25.0", "50.0", "75.0", "100.0", "250.0", "500.0", "1000.0", "+Inf"}
    assert "batch_size_bucket" in text


def test_responses_match_their_documented_models(harness: Harness) -> None:
    # The prediction routes render their JSON themselves (app.api.body): the bodies
    # must still be exactly what the OpenAPI models promise.
    from app.gateway.schemas import BatchPredictResponse, PredictResponse

    one = _predict(harness, columnar_bars("ONE"))
    assert one.status_code == 200, one.text
    assert PredictResponse.model_validate(one.json()).model_dump(mode="json") == one.json()
    many = harness.client.post(
        "/predict/batch",
        json={"items": [columnar_bars("A"), columnar_bars("B")]},
        headers={"X-API-Key": harness.key},
    )
    assert many.status_code == 200, many.text
    assert BatchPredictResponse.model_validate(many.json()).model_dump(mode="json") == many.json()


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b'{"symbol": "X", "timestamps": [1, 2', "application/json", 400, "malformed_json"),
        (b"", "application/json", 422, "invalid_request"),
        (b'{"symbol": "X"}', "text/plain", 422, "invalid_request"),
        (b'["not", "an", "object"]', "application/json", 422, "invalid_request"),
        (b'{"symbol": "X", "timestamps": ["a"]}', None, 422, "invalid_request"),
    ],
)
def test_bad_bodies_get_typed_errors_without_echoing_input(
    harness: Harness, content: bytes, content_type: str | None, status: int, code: str
) -> None:
    headers = {"X-API-Key": harness.key}
    if content_type:
        headers["Content-Type"] = content_type
    r = harness.client.post("/predict", content=content, headers=headers)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert all(d["loc"][0] == "body" for d in err["details"])
    assert all("input" not in d for d in err["details"])
    assert harness.fake.calls == []


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_a_timestamp_beyond_64_bits_is_422_not_a_crash(harness: Harness, path: str) -> None:
    """JSON integers have no size limit; the window's timestamps are int64."""
    bars = columnar_bars("HUGE")
    bars["timestamps"][-1] = 2**63
    body = bars if path == "/predict" else {"items": [columnar_bars("OK"), bars]}
    r = harness.client.post(path, json=body, headers={"X-API-Key": harness.key})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert "64-bit" in err["message"]
    assert err["details"][0]["loc"] == ["body", "timestamps"]
    assert harness.fake.calls == []


@pytest.mark.parametrize(
    ("header", "value"),
    [("X-Priority", "high"), ("X-Priority", "101"), ("X-Request-Deadline-Ms", "-1")],
)
def test_bad_client_hint_headers_are_422(harness: Harness, header: str, value: str) -> None:
    r = _predict(harness, columnar_bars(), **{header: value})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["loc"] == ["header", header]
    assert harness.fake.calls == []


def test_priority_header_can_lower_but_never_raise_the_keys_priority(harness: Harness) -> None:
    from app.api.body import PRIORITY_HEADER

    seen: list[int] = []
    submit_all = harness.state.batcher.submit_all

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(int(kwargs["priority"]))  # type: ignore[call-overload]
        return submit_all(*args, **kwargs)  # type: ignore[arg-type]

    harness.state.batcher.submit_all = spy  # type: ignore[method-assign]
    for value in ("-7", "50"):
        assert _predict(harness, columnar_bars(), **{PRIORITY_HEADER: value}).status_code == 200
    assert seen == [-7, 5]  # the key's priority is 5


def test_openapi_documents_the_raw_bodies_and_hint_headers(harness: Harness) -> None:
    doc = harness.client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert {"PredictRequest", "BatchPredictRequest", "PredictResponse"} <= set(schemas)
    for path, model in (("/predict", "PredictRequest"), ("/predict/batch", "BatchPredictRequest")):
        op = doc["paths"][path]["post"]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{model}"
        assert {p["name"] for p in op["parameters"]} >= {"X-Priority", "X-Request-Deadline-Ms"}
    items = schemas["BatchPredictRequest"]["properties"]["items"]["items"]
    assert items == {"$ref": "#/components/schemas/PredictRequest"}


def test_an_unhandled_error_on_the_full_stack_carries_the_security_headers(
    harness: Harness,
) -> None:
    def broken() -> object:
        raise RuntimeError("a stats provider failed")

    harness.state.extra_stats["broken"] = broken
    client = TestClient(harness.client.app, raise_server_exceptions=False)
    r = client.get("/stats", headers={"Authorization": f"Bearer {harness.token}"})
    assert r.status_code == 500, r.text
    assert r.json()["error"]["code"] == "internal_error"
    assert r.headers["x-request-id"] == r.json()["error"]["request_id"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
