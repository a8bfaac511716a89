"""The service end to end on a real local Ray + Serve over real HTTPS."""

from __future__ import annotations

import asyncio
import copy
import json
import math
import os
import time
from typing import Any

import numpy as np
import pytest

from app.cli.serve_cmd import sample_request
from app.serve.node_priority import Process, read_processes
from model.common.features import compute_features
from model.common.registry import ModelRegistry
from model.engine import EngineChoice
from model.runtime import load_model
from tests.integration.conftest import ServeStack
from tests.support.live import LiveTarget

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def predict_key(live_target: LiveTarget) -> str:
    _, key = live_target.create_key(["model:predict"], owner="service-tests")
    return key


@pytest.fixture(scope="module")
def stats_token(live_target: LiveTarget) -> str:
    return live_target.mint(["model:stats"], ttl_s=1800)


def test_ready_is_503_before_the_model_loads_and_200_after(serve_stack: ServeStack) -> None:
    assert serve_stack.ready_before_model == 503
    assert serve_stack.ready_before_body["error"]["code"] == "not_ready"
    with serve_stack.client() as client:
        r = client.get("/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True
    assert body["model"] == {
        "name": serve_stack.ref.name,
        "version": serve_stack.ref.version,
        "sha256": serve_stack.ref.sha256,
    }


def test_healthz_is_open_and_cheap(serve_stack: ServeStack) -> None:
    with serve_stack.client() as client:
        r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert r.headers.get("x-request-id")


def test_prediction_matches_the_torch_runtime_called_directly(
    serve_stack: ServeStack, predict_key: str, stats_token: str
) -> None:
    body = sample_request("EURUSD", offset=2000)
    with serve_stack.client() as client:
        r = client.post("/predict", json=body, headers={"X-API-Key": predict_key})
        stats = client.get("/stats", headers={"Authorization": f"Bearer {stats_token}"})
    assert r.status_code == 200, r.text
    assert stats.status_code == 200, stats.text
    got = r.json()
    # The same numerics and per-size engine the predictor chose (bf16 batches beside fp32
    # lone rows on a CPU with AMX, model.engine), loaded here without Ray.
    model = _served_like(serve_stack, stats.json()["predictor"]["engine"])
    expected = model.predict(compute_features(_bars(body))[None, ...])[0]
    assert got["expected_return"] == pytest.approx(float(expected[0]), rel=1e-5, abs=1e-7)
    assert got["prob_up"] == pytest.approx(float(expected[1]), rel=1e-5, abs=1e-7)
    assert got["model"] == {
        "name": serve_stack.ref.name,
        "version": serve_stack.ref.version,
        "sha256": serve_stack.ref.sha256,
    }
    assert got["symbol"] == "EURUSD"
    assert got["as_of"] == body["timestamps"][-1]
    assert got["request_id"] == r.headers["x-request-id"]
    assert np.isfinite([got["expected_return"], got["prob_up"]]).all()


def test_batch_endpoint_answers_in_request_order(
    serve_stack: ServeStack, predict_key: str, stats_token: str
) -> None:
    items = [sample_request(f"SYM{i}", offset=100 + 37 * i) for i in range(12)]
    with serve_stack.client() as client:
        batch = client.post(
            "/predict/batch", json={"items": items}, headers={"X-API-Key": predict_key}
        )
        stats = client.get("/stats", headers={"Authorization": f"Bearer {stats_token}"})
    assert batch.status_code == 200, batch.text
    preds = batch.json()["predictions"]
    assert [p["symbol"] for p in preds] == [f"SYM{i}" for i in range(12)]
    # The 12 rows left as one forward: the same forward called directly, with the
    # predictor's numerics and engine, gives each row's answer in the same place.
    model = _served_like(serve_stack, stats.json()["predictor"]["engine"])
    windows = [_bars(item) for item in items]
    expected = model.predict(np.stack([compute_features(w) for w in windows]))
    got = [[p["expected_return"], p["prob_up"]] for p in preds]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=0)


def _bars(body: dict[str, Any]) -> np.ndarray:
    columns = ("open", "high", "low", "close", "volume")
    return np.stack([np.asarray(body[c], dtype=np.float64) for c in columns], axis=1)


def _served_like(serve_stack: ServeStack, engine_name: str) -> Any:
    """The stack's model loaded here with the numerics and per-size engine it serves."""
    registry = ModelRegistry(serve_stack.registry_root)
    numerics = serve_stack.config.serving.predictor_numerics
    model = load_model(registry, serve_stack.ref, device="cpu", numerics=numerics, engine="torch")
    engine = EngineChoice.named(engine_name)
    model.use_engine(engine, model.onnx_session(1) if engine.onnx_max_rows else None)
    return model


def test_concurrent_requests_are_batched(
    serve_stack: ServeStack, predict_key: str, stats_token: str
) -> None:
    bodies = [sample_request(f"C{i}", offset=50 * i) for i in range(64)]

    async def fire() -> tuple[list[int], list[int]]:
        """The burst's statuses, then those after one retry of each refusal."""
        headers = {"X-API-Key": predict_key}
        async with serve_stack.async_client() as client:
            rs = await asyncio.gather(
                *(client.post("/predict", json=b, headers=headers) for b in bodies)
            )
            refused = [i for i, r in enumerate(rs) if r.status_code == 429]
            # Admission may refuse part of a burst when its estimated queue wait breaks
            # the latency budget (on a slow CI machine it refused 2 of 64): that answer
            # must be the typed one a client can act on, and the retry must succeed.
            for i in refused:
                assert rs[i].json()["error"]["code"] == "queue_full", rs[i].text
                assert int(rs[i].headers["Retry-After"]) >= 1
            if refused:
                await asyncio.sleep(max(int(rs[i].headers["Retry-After"]) for i in refused))
            retried = [
                (await client.post("/predict", json=bodies[i], headers=headers)).status_code
                for i in refused
            ]
        return [r.status_code for r in rs], retried

    codes, retried = asyncio.run(fire())
    assert set(codes) <= {200, 429}, codes
    assert retried == [200] * codes.count(429)
    with serve_stack.client() as client:
        stats = client.get("/stats", headers={"Authorization": f"Bearer {stats_token}"})
    assert stats.status_code == 200, stats.text
    s = stats.json()
    assert s["queue"]["gateway_rows"] >= 64
    assert s["queue"]["mean_gateway_batch"] > 1.0, s["queue"]
    sizes = s["batch_size"]["distribution"]
    assert any(float(k) > 1 and v > 0 for k, v in sizes.items()), sizes
    assert s["model"]["version"] == serve_stack.ref.version
    assert s["replicas"].get("cnn_lstm_predictor", 0) >= 1
    # Gateway and predictor share this node: the batches went over the predictor's socket.
    sock = s["predictor_socket"]
    assert len(sock["connected"]) == 1, sock
    assert sock["calls"]["socket"] >= 1, sock
    assert sock["calls"]["handle"] == 0, sock
    with serve_stack.client() as client:
        # the test stack's metrics_auth is bearer
        metrics = client.get("/metrics", headers={"Authorization": f"Bearer {stats_token}"}).text
    socket_calls = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('predictor_calls_total{transport="socket"}')
    ]
    assert socket_calls, "no predictor_calls_total series for the socket"
    assert socket_calls[0] >= sock["calls"]["socket"]
    assert 'predictor_calls_total{transport="handle"} 0.0' in metrics


def _mutate(body: dict[str, Any], how: str) -> dict[str, Any] | str:
    b = copy.deepcopy(body)
    if how == "missing_field":
        del b["close"]
    elif how == "unequal_lengths":
        b["volume"] = b["volume"][:-1]
    elif how == "short_window":
        for k in ("timestamps", "open", "high", "low", "close", "volume"):
            b[k] = b[k][:10]
    elif how == "nan":
        return json.dumps(b).replace(str(b["close"][5]), "NaN", 1)
    elif how == "inf":
        return json.dumps(b).replace(str(b["close"][5]), "Infinity", 1)
    elif how == "non_positive_price":
        b["low"][3] = 0.0
    elif how == "negative_volume":
        b["volume"][7] = -5.0
    elif how == "timestamps_not_increasing":
        b["timestamps"][10] = b["timestamps"][9]
    elif how == "wrong_type":
        b["open"][0] = "abc"
    elif how == "extra_field":
        b["leverage"] = 100
    return b


BAD_INPUTS = [
    ("missing_field", 422),
    ("unequal_lengths", 422),
    ("short_window", 422),
    ("nan", 422),
    ("inf", 422),
    ("non_positive_price", 422),
    ("negative_volume", 422),
    ("timestamps_not_increasing", 422),
    ("wrong_type", 422),
    ("extra_field", 422),
]


@pytest.mark.parametrize(("how", "status"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_its_4xx_in_the_one_error_shape(
    serve_stack: ServeStack, predict_key: str, how: str, status: int
) -> None:
    body = _mutate(sample_request(), how)
    headers = {"X-API-Key": predict_key, "Content-Type": "application/json"}
    with serve_stack.client() as client:
        if isinstance(body, str):
            r = client.post("/predict", content=body, headers=headers)
        else:
            r = client.post("/predict", json=body, headers=headers)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"code", "message", "request_id", "details"}
    assert err["request_id"] == r.headers["x-request-id"]


def test_malformed_json_is_400(serve_stack: ServeStack, predict_key: str) -> None:
    with serve_stack.client() as client:
        r = client.post(
            "/predict",
            content=b'{"symbol": "X", "open": [1,2',
            headers={"X-API-Key": predict_key, "Content-Type": "application/json"},
        )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "malformed_json"


def test_body_over_the_limit_is_413(serve_stack: ServeStack, predict_key: str) -> None:
    limit = serve_stack.config.network_security.limits.max_body_bytes
    with serve_stack.client() as client:
        r = client.post(
            "/predict",
            content=b"[" + b"1," * limit + b"1]",
            headers={"X-API-Key": predict_key, "Content-Type": "application/json"},
        )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("model", "version"), [("no_such_model", None), (None, "9.9.9")], ids=["model", "version"]
)
def test_unknown_model_or_version_is_404(
    serve_stack: ServeStack, predict_key: str, model: str | None, version: str | None
) -> None:
    body = sample_request()
    if model:
        body["model"] = model
    if version:
        body["version"] = version
    with serve_stack.client() as client:
        r = client.post("/predict", json=body, headers={"X-API-Key": predict_key})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "model_not_found"


def test_openapi_describes_every_route(serve_stack: ServeStack) -> None:
    with serve_stack.client() as client:
        spec = client.get("/openapi.json").json()
    paths = set(spec["paths"])
    assert {
        "/predict",
        "/predict/batch",
        "/stats",
        "/healthz",
        "/ready",
        "/metrics",
        "/token",
    } <= paths
    assert "422" in spec["paths"]["/predict"]["post"]["responses"]


def _own_raylet(procs: list[Process]) -> int:
    """The stack's raylet: this test process started the stack's Ray, so its raylet is
    this process's child (processes of stacks other tests stopped may still be exiting,
    orphaned)."""
    return next(p.pid for p in procs if p.ppid == os.getpid() and p.title.endswith("/raylet"))


def test_the_raylet_spaces_its_gc_requests_as_configured(serve_stack: ServeStack) -> None:
    """``serving.ray_gc_min_interval_s`` reaches the raylet this process started, which
    reads it once at start: a replica waiting for room no longer has Ray collect every
    worker of the node every 10 s."""
    interval = serve_stack.config.serving.ray_gc_min_interval_s
    assert interval > 10
    with open(f"/proc/{_own_raylet(read_processes())}/environ", "rb") as f:
        environ = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    assert environ[b"RAY_local_gc_min_interval_s"] == str(math.ceil(interval)).encode()


def test_rays_housekeeping_yields_the_cpu_to_the_serving_replicas(serve_stack: ServeStack) -> None:
    """The gateway raises the nice value of Ray's own processes on its node
    (``serving.housekeeping_niceness``) and of nothing that serves."""
    app = serve_stack.config.serving.app_name
    niceness = serve_stack.config.serving.housekeeping_niceness
    assert niceness > 0

    def nices(pid: int) -> set[int]:
        """The nice values of the process's threads (Linux keeps one per thread)."""
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        return {os.getpriority(os.PRIO_PROCESS, tid) for tid in tids}

    def nice(pid: int) -> int:
        return min(nices(pid))

    procs = read_processes()
    beside_raylet = os.getpid()
    raylet = _own_raylet(procs)
    on_node = {p.actor: p.pid for p in procs if p.ppid == raylet}
    # Ray's controller and agents, and the GCS beside the raylet: lowered.
    for title in ("ray::ServeController", "ray::DashboardAgent"):
        assert nice(on_node[title]) >= niceness, title
    gcs = [
        p.pid
        for p in procs
        if p.ppid == beside_raylet and p.argv and p.argv[0].endswith("/gcs_server")
    ]
    assert gcs
    assert all(nice(pid) >= niceness for pid in gcs)
    # What serves, and the raylet that starts (and restarts) replicas: untouched.
    worker_nice = serve_stack.config.serving.worker_niceness
    assert nices(on_node[f"ray::ServeReplica:{app}:gateway"]) == {worker_nice}
    assert nices(on_node[f"ray::ServeReplica:{app}:cnn_lstm_predictor"]) == {worker_nice}
    assert nice(raylet) < niceness
    assert nice(beside_raylet) < niceness  # the driver (this test process)


def test_replica_counts_come_from_the_controllers_details_and_agree_with_serve_status(
    serve_stack: ServeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray.serve import context

    from app.serve import ingress
    from app.serve.ingress import ServeCluster

    cluster = ServeCluster("cnnlstm")
    counts = cluster._fetch()
    assert counts == cluster._fetch_status()
    assert counts["gateway"] == 1, counts
    assert counts["cnn_lstm_predictor"] >= 1, counts
    assert ServeCluster("no-such-app")._fetch() == {}

    # A Serve client without the details call (another Ray): serve.status() answers.
    real = context._get_global_client()

    class _Older:
        def __getattr__(self, name: str) -> Any:
            if name == "get_serve_details":
                raise AttributeError(name)
            return getattr(real, name)

    monkeypatch.setattr(context, "_get_global_client", lambda *a, **k: _Older())
    assert cluster._fetch() == counts
    assert "serve_details_missing" in ingress._warned


_PREDICTION_SERIES = (
    "predictions_total",
    "predictor_calls_total",
    "prediction_latency_ms_count",
    "prediction_model_time_ms_count",
    "batch_size_count",
)


def _prediction_samples(metrics_text: str) -> list[str]:
    return sorted(line for line in metrics_text.splitlines() if line.startswith(_PREDICTION_SERIES))


def _batch_lines(serve_stack: ServeStack) -> int:
    return sum(
        path.read_text(errors="replace").count('"predict_batch"')
        for path in serve_stack.log_dir.glob("predictor-*.log*")
        if path.suffix != ".gz"
    )


def test_an_idle_gateway_keeps_its_path_warm_and_counts_none_of_it(
    serve_stack: ServeStack, stats_token: str, predict_key: str
) -> None:
    """batching.keep_warm_ms (20 ms here, as in the local profile): after a request,
    with no client traffic, warm rows reach the predictor and back, and show in their own
    counts only: not in the prediction metrics, the gateway's /stats figures or the
    predictor's batch lines."""
    headers = {"Authorization": f"Bearer {stats_token}"}
    with serve_stack.client() as client:
        # keep-warm goes on for batching.keep_warm_for_s (60 s) after a real request
        r = client.post("/predict", json=sample_request(), headers={"X-API-Key": predict_key})
        assert r.status_code == 200, r.text
        time.sleep(0.5)  # the rows answered and their lines written
        before = client.get("/stats", headers=headers).json()
        metrics_before = _prediction_samples(client.get("/metrics", headers=headers).text)
        lines_before = _batch_lines(serve_stack)
        time.sleep(1.5)
        after = client.get("/stats", headers=headers).json()
        metrics_after = _prediction_samples(client.get("/metrics", headers=headers).text)
    assert after["keep_warm"]["interval_ms"] == 20.0
    assert after["keep_warm"]["active"] is True
    assert after["keep_warm"]["sent"] >= before["keep_warm"]["sent"] + 10, after["keep_warm"]
    assert any(line.startswith("predictions_total") for line in metrics_after)
    assert metrics_after == metrics_before
    for figure in ("requests", "latency_ms", "model_time_ms", "batch_size"):
        assert after[figure] == before[figure], figure
    # (the queue's depth may catch a warm row in the one loop turn it waits)
    assert {**after["queue"], "depth": 0} == {**before["queue"], "depth": 0}
    assert _batch_lines(serve_stack) == lines_before
