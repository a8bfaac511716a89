"""Observability against the real stack: a real Prometheus, the real log files."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from app.bench.targets import free_port
from app.cli.serve_cmd import sample_request
from app.observability.dashboard import (
    RAY_METRICS_ALLOWLIST,
    dashboard_metric_names,
    exposed_series_names,
)
from tests.integration.conftest import ServeStack
from tests.support.live import LiveTarget

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LATENCY_BOUNDS = {10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 1000.0, float("inf")}
BATCH_BOUNDS = {1.0, 5.0, 10.0, 20.0, 32.0, float("inf")}


@pytest.fixture(scope="module")
def keys(live_target: LiveTarget) -> tuple[str, str]:
    _, key = live_target.create_key(["model:predict"], owner="observability-tests")
    token = live_target.mint(["model:stats"], ttl_s=3600)
    return key, token


def _traffic(stack: ServeStack, key: str, n: int) -> list[str]:
    ids = []
    with stack.client() as client:
        for i in range(n):
            r = client.post(
                "/predict",
                json=sample_request(f"OBS{i}", offset=300 + i),
                headers={"X-API-Key": key},
            )
            assert r.status_code == 200, r.text
            ids.append(r.headers["x-request-id"])
    return ids


@pytest.fixture(scope="module")
def prometheus(
    serve_stack: ServeStack, keys: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("prom")
    token_file = root / "token"
    token_file.write_text(keys[1])
    token_file.chmod(0o600)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "cnnlstm-gateway",
                "scheme": "https",
                "metrics_path": "/metrics",
                "tls_config": {"ca_file": str(serve_stack.ca_file), "server_name": "localhost"},
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "static_configs": [
                    {"targets": [f"127.0.0.1:{serve_stack.config.serving.http_port}"]}
                ],
            }
        ],
    }
    proc, url = _start_prometheus(root, config)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _start_prometheus(root: Path, config: dict[str, object]) -> tuple[subprocess.Popen[bytes], str]:
    """A real Prometheus on a free port with ``config``; its URL once it is ready."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (.ci/setup installs Debian's prometheus)")
    port = free_port()
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(root / "prometheus.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    pytest.fail("prometheus did not become ready: " + (root / "prometheus.log").read_text()[-2000:])


def _query(url: str, promql: str) -> list[dict[str, object]]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success"
    return list(body["data"]["result"])


def test_prometheus_scrapes_the_spec_histograms(
    serve_stack: ServeStack, keys: tuple[str, str], prometheus: str
) -> None:
    _traffic(serve_stack, keys[0], 20)
    deadline = time.monotonic() + 60
    latency: list[dict[str, object]] = []
    batch: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        latency = _query(prometheus, "prediction_latency_ms_bucket")
        batch = _query(prometheus, "batch_size_bucket")
        count = _query(prometheus, "sum(prediction_latency_ms_count)")
        if latency and batch and count and float(count[0]["value"][1]) >= 20:  # type: ignore[index]
            break
        time.sleep(1)
    up = _query(prometheus, 'up{job="cnnlstm-gateway"}')
    assert up, "prometheus has no target for the gateway"
    assert up[0]["value"][1] == "1", up  # type: ignore[index]
    assert {float(s["metric"]["le"]) for s in latency} == LATENCY_BOUNDS  # type: ignore[index]
    assert {float(s["metric"]["le"]) for s in batch} == BATCH_BOUNDS  # type: ignore[index]
    p99 = _query(prometheus, "histogram_quantile(0.99, sum by (le) (prediction_latency_ms_bucket))")
    assert p99
    assert float(p99[0]["value"][1]) > 0


def test_dashboard_references_only_exported_metrics(
    serve_stack: ServeStack, keys: tuple[str, str]
) -> None:
    _traffic(serve_stack, keys[0], 3)
    with serve_stack.client() as client:
        text = client.get("/metrics", headers={"Authorization": f"Bearer {keys[1]}"}).text
    exported = exposed_series_names(text) | set(RAY_METRICS_ALLOWLIST)
    wanted = dashboard_metric_names(ROOT / "deploy" / "grafana" / "dashboard.json")
    assert wanted, "the dashboard references no metric at all"
    assert wanted - exported == set()


def test_every_log_line_is_json_with_one_access_line_per_request(
    serve_stack: ServeStack, keys: tuple[str, str], live_target: LiveTarget
) -> None:
    ids = _traffic(serve_stack, keys[0], 10)
    with serve_stack.client() as client:
        bad = client.post("/predict", json={"symbol": "X"}, headers={"X-API-Key": keys[0]})
        assert bad.status_code == 422
        ids.append(bad.headers["x-request-id"])
        anon = client.post("/predict", json=sample_request())
        assert anon.status_code == 401
        ids.append(anon.headers["x-request-id"])
    time.sleep(1.0)  # file handlers flush per line; give the replica a moment
    files = sorted(serve_stack.log_dir.glob("*.log*"))
    assert files, f"no log files in {serve_stack.log_dir}"
    access: dict[str, list[dict[str, object]]] = {}
    secrets = [keys[0], keys[1], *live_target.secrets_used]
    for path in files:
        text = path.read_text(encoding="utf-8")
        for secret in secrets:
            assert secret not in text, f"a credential reached {path.name}"
        for line in text.splitlines():
            record = json.loads(line)  # every line is one JSON object
            assert isinstance(record, dict)
            if record.get("event") == "access":
                access.setdefault(str(record.get("request_id")), []).append(record)
    for rid in ids:
        lines = access.get(rid, [])
        assert len(lines) == 1, f"request {rid}: {len(lines)} access lines"
        line = lines[0]
        assert {"route", "status", "latency_ms", "principal", "model_version", "batch_size"} <= set(
            line
        )
    # The predictor's lines (its own JSON file per replica) carry the same request ids.
    batched = {
        rid
        for path in files
        if path.name.startswith("predictor-")
        for line in path.read_text(encoding="utf-8").splitlines()
        if (rec := json.loads(line)).get("event") == "predict_batch"
        for rid in rec.get("request_ids", [])
    }
    assert set(ids[:10]) <= batched, "predictor log lines lack the gateway's request ids"
    ok = access[ids[0]][0]
    assert ok["status"] == 200
    assert ok["model_version"] == serve_stack.ref.version
    assert ok["principal"] == "observability-tests"
    assert isinstance(ok["batch_size"], int)
    assert ok["batch_size"] >= 1
    assert access[ids[-1]][0]["status"] == 401


def test_the_cluster_scrape_job_reads_every_replica_from_the_node_exporter(
    serve_stack: ServeStack, keys: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """deploy/prometheus/prometheus-cluster.yml's job, pointed at this node's Ray exporter:
    the gateway's mirror arrives under the gateway's own names (the relabel rule), labelled
    by replica, and the predictor's per-forward series beside it."""
    import ray

    cluster = yaml.safe_load(
        (ROOT / "deploy" / "prometheus" / "prometheus-cluster.yml").read_text()
    )
    (job,) = [j for j in cluster["scrape_configs"] if j["job_name"] == "ray-nodes"]
    exporter_port = ray._private.worker.global_worker.node.metrics_export_port
    job.pop("file_sd_configs")  # the head's discovery file: this node is the whole cluster
    job["static_configs"] = [{"targets": [f"127.0.0.1:{exporter_port}"]}]
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": [job]}
    proc, url = _start_prometheus(tmp_path_factory.mktemp("prom-cluster"), config)
    try:
        _traffic(serve_stack, keys[0], 5)
        # Ray's agent exports what replicas recorded every few seconds.
        deadline = time.monotonic() + 90
        mirrored: list[dict[str, object]] = []
        forwards: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            mirrored = _query(url, 'sum by (replica) (predictions_total{deployment="gateway"})')
            forwards = _query(url, 'sum(ray_batch_size_count{deployment="cnn_lstm_predictor"})')
            if mirrored and forwards and float(mirrored[0]["value"][1]) >= 5:  # type: ignore[index]
                break
            time.sleep(1)
        assert mirrored, "no gateway series on the node exporter"
        assert all(s["metric"].get("replica") for s in mirrored)  # type: ignore[union-attr]
        assert float(mirrored[0]["value"][1]) >= 5  # type: ignore[index]
        assert _query(url, "ray_gateway_predictions_total") == []  # renamed, not doubled
        assert forwards, "no predictor series on the node exporter"
        assert float(forwards[0]["value"][1]) >= 1  # type: ignore[index]
        latency = _query(url, 'prediction_latency_ms_bucket{deployment="gateway"}')
        assert {float(s["metric"]["le"]) for s in latency} == LATENCY_BOUNDS  # type: ignore[index]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
