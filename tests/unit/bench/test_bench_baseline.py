"""The no-Ray baseline serves real predictions, and ``cnnlstm bench --url`` measures it."""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn

from app.bench.baseline import InProcessPredictor, build_baseline_app, predictor_settings
from app.cli import bench_cmd
from app.cli.serve_cmd import sample_request
from app.config import ServiceConfig
from app.config.env import Settings
from app.security.api_keys import ApiKeyStore
from app.security.dev_certs import ensure_dev_certs
from app.security.jwt_tokens import mint_token
from model.export import make_random_artifact
from model.service import PredictorService, PredictorSettings
from tests.support.security_app import AUDIENCE, ISSUER, write_security_material


@dataclass
class Baseline:
    url: str
    ca: Path
    api_key_file: Path
    stats_token_file: Path
    config: ServiceConfig


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Baseline]:
    """The baseline app around a real (random-init) model, over HTTPS, in a thread."""
    root = tmp_path_factory.mktemp("baseline")
    certs = ensure_dev_certs(root / "certs")
    material = write_security_material(
        root,
        cert=certs.cert,
        key=certs.key,
        overrides={"model_registry": {"path": str(root / "models")}},
    )
    config = material.config
    make_random_artifact(root / "models", version="1.0.0", seed=3)
    auth = config.security.authentication
    _, key = ApiKeyStore(auth.api_key_store_path).create(owner="bench", scopes=["model:predict"])
    (root / "api-key").write_text(key)
    token = mint_token(
        material.jwt_secret, "bench-operator", ["model:stats"], 600, ISSUER, AUDIENCE
    )
    (root / "stats-token").write_text(token)

    service = PredictorService(predictor_settings(config, Settings(DEVICE="cpu")))
    service.load_default()
    predictor = InProcessPredictor(service)
    app = build_baseline_app(config, predictor)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            ssl_certfile=str(certs.cert),
            ssl_keyfile=str(certs.key),
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the baseline server did not start")
        time.sleep(0.02)
    try:
        yield Baseline(
            f"https://127.0.0.1:{port}",
            certs.ca,
            root / "api-key",
            root / "stats-token",
            config,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        predictor.close()


def test_baseline_answers_a_real_prediction_over_verified_https(baseline: Baseline) -> None:
    ctx = ssl.create_default_context(cafile=str(baseline.ca))
    with httpx.Client(base_url=baseline.url, verify=ctx, timeout=30) as client:
        assert client.get("/ready").status_code == 200
        r = client.post(
            "/predict",
            json=sample_request(offset=123),
            headers={"X-API-Key": baseline.api_key_file.read_text()},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"]["version"] == "1.0.0"
        assert 0.0 <= body["prob_up"] <= 1.0
        assert body["symbol"] == "EURUSD"
        stats = client.get(
            "/stats", headers={"Authorization": f"Bearer {baseline.stats_token_file.read_text()}"}
        )
        assert stats.status_code == 200
        assert stats.json()["batch_size"]["distribution"]
        # The same security as the gateway: no key, no prediction.
        assert client.post("/predict", json=sample_request()).status_code == 401


def test_baseline_settings_match_the_predictor_replicas(baseline: Baseline) -> None:
    from app.serve.build import predictor_settings as replica_settings  # imports Ray (not starts)

    settings = Settings(DEVICE="cpu")
    assert predictor_settings(baseline.config, settings) == PredictorSettings.from_dict(
        replica_settings(baseline.config, settings)
    )


def test_bench_cli_against_a_running_server_writes_the_json_report(
    baseline: Baseline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    bench_cmd.register(sub)
    out = tmp_path / "bench.json"
    args = parser.parse_args(
        [
            "bench", "--url", baseline.url, "--ca", str(baseline.ca),
            "--api-key-file", str(baseline.api_key_file),
            "--stats-token-file", str(baseline.stats_token_file),
            "--rates", "20", "--duration", "1", "--warmup", "0.5", "--windows", "64",
            "--batch-symbols", "4", "--batch-rates", "5", "--json", str(out),
        ]
    )  # fmt: skip
    assert args.func(args) == 0

    result = json.loads(out.read_text())
    assert set(result) == {"meta", "targets", "verdicts"}
    serve = result["targets"]["serve"]
    assert set(serve) == {"name", "url", "runs", "batch_runs", "memory", "verdicts", "served"}
    # Which numerics and engine ran, as the server's /stats said (every result says so).
    ctx = ssl.create_default_context(cafile=str(baseline.ca))
    token = baseline.stats_token_file.read_text()
    with httpx.Client(base_url=baseline.url, verify=ctx, timeout=30) as client:
        predictor = client.get("/stats", headers={"Authorization": f"Bearer {token}"}).json()[
            "predictor"
        ]
    served = serve["served"]
    assert served["model"].endswith(":1.0.0")
    assert (served["numerics"], served["engine"]) == (predictor["numerics"], predictor["engine"])
    assert served["numerics"] in {"fp32", "bf16"}
    [run] = serve["runs"]
    assert run["offered_rps"] == 20.0
    assert run["requests"] == {"scheduled": 20, "ok": 20, "errors": 0}
    assert set(run["latency_ms"]) == {"mean", "p50", "p95", "p99", "p99_9", "max"}
    window = run["server"]["stats"]
    assert window["batch_size"]["count"] >= 15
    assert window["feature_cache"]["hits"] == 0  # distinct windows: no cache benchmark
    [batch] = serve["batch_runs"]
    assert batch["path"] == "/predict/batch"
    assert batch["requests"]["ok"] == 5
    assert batch["predictions_per_s"] == pytest.approx(20.0, rel=0.3)
    checks = {c["check"]: c for c in serve["verdicts"]}
    assert checks["p99 at 200 req/s"]["met"] is None  # not measured at that rate
    printed = capsys.readouterr().out
    assert "Spec 12.1 verdicts, serve:" in printed
    assert "/predict/batch" in printed
    assert f"serve served: {served['model']} on cpu, {served['numerics']} numerics" in printed


@pytest.mark.slow
def test_baseline_runs_as_its_own_process(baseline: Baseline, tmp_path: Path) -> None:
    """``python -m app.bench.baseline`` loads the model, answers /ready, stops on SIGTERM."""
    import yaml

    from app.bench import baseline as baseline_mod
    from app.bench import procs
    from app.serve import runner

    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(baseline.config.model_dump(mode="json")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = baseline_mod.launch(
        str(config_file), port=port, registry=baseline.config.model_registry.path
    )
    try:
        info = runner.wait_ready(proc.url, verify=runner.ssl_context(baseline.ca), timeout_s=120)
        assert info.body["model"]["version"] == "1.0.0"
        sample = procs.sample(proc.pid, "baseline")
        assert sample is not None
        assert sample.rss_bytes > 50 * 2**20  # torch and a model are in there
    finally:
        proc.stop()
    assert proc.proc.returncode is not None


async def test_load_generator_verifies_the_server_certificate(baseline: Baseline) -> None:
    from app.bench.loadgen import LoadSpec, run_open_loop

    body = orjson.dumps(sample_request())
    key = baseline.api_key_file.read_text()
    common = {"path": "/predict", "rate": 20.0, "duration_s": 0.25, "api_key": key}
    trusted = await run_open_loop(
        LoadSpec(base_url=baseline.url, ca_file=str(baseline.ca), **common), [body]
    )
    assert trusted["requests"]["ok"] == 5
    # Without the dev CA the system trust store is used, and it does not know the dev CA.
    untrusted = await run_open_loop(LoadSpec(base_url=baseline.url, **common), [body])
    assert untrusted["requests"]["ok"] == 0
    assert any("Certificate" in kind for kind in untrusted["errors"]["connection"])
