"""The predictor's numerics and engine as operators see them: ``/stats`` and ``/metrics``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from app.gateway.state import GatewayState
from app.observability.predictor_metrics import PredictorInfo
from model.common.protocol import PredictorStatus
from model.export import make_random_artifact
from tests.api.test_gateway_api import _build
from tests.fakes import FakePredictor
from tests.support.tokens import token_for

FALLBACK = "golden check under bf16 failed on cpu: max deviation 0.25 > tolerance 0.01"
ENGINE_FALLBACK = "onnxruntime measured no faster here (3.10 ms against torch's 2.90 ms)"


@dataclass
class NumericsPredictor(FakePredictor):
    """The fake predictor, reporting the numerics its model runs in."""

    numerics: str = "bf16"
    numerics_fallback: str | None = None
    engine: str = "onnxruntime"
    engine_fallback: str | None = None

    async def status(self) -> PredictorStatus:
        status = await super().status()
        if not status.ready:
            return status
        return dataclasses.replace(
            status,
            numerics=self.numerics,
            numerics_fallback=self.numerics_fallback,
            engine=self.engine,
            engine_fallback=self.engine_fallback,
        )


@dataclass
class Gateway:
    client: TestClient
    state: GatewayState
    token: str


@contextmanager
def _gateway(root: Path, fake: FakePredictor) -> Iterator[Gateway]:
    state, app, _ = _build(root, fake)
    auth = state.config.security.authentication
    token = token_for(auth, "ops", ["model:stats"])
    with TestClient(cast(FastAPI, app)) as client:  # the lifespan polls the predictor's status once
        yield Gateway(client, state, token)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("numerics")
    make_random_artifact(root / "models", version="1.0.0", seed=1)
    return root


def _stats(gw: Gateway) -> dict[str, object]:
    r = gw.client.get("/stats", headers={"Authorization": f"Bearer {gw.token}"})
    assert r.status_code == 200, r.text
    predictor = r.json()["predictor"]
    assert isinstance(predictor, dict)
    return predictor


def test_stats_shows_the_numerics_the_predictor_runs_in(root: Path) -> None:
    with _gateway(root, NumericsPredictor(numerics="bf16")) as gw:
        predictor = _stats(gw)
        assert predictor["numerics"] == "bf16"
        assert predictor["numerics_fallback"] is None


def test_stats_shows_why_the_predictor_fell_back_to_fp32(root: Path) -> None:
    fake = NumericsPredictor(numerics="fp32", numerics_fallback=FALLBACK)
    with _gateway(root, fake) as gw:
        predictor = _stats(gw)
        assert predictor["numerics"] == "fp32"
        assert predictor["numerics_fallback"] == FALLBACK


def test_stats_shows_no_numerics_before_a_model_is_loaded(root: Path) -> None:
    with _gateway(root, NumericsPredictor(ready=False)) as gw:
        assert _stats(gw)["numerics"] is None


def test_metrics_shows_the_numerics_the_readiness_probe_saw(root: Path) -> None:
    with _gateway(root, NumericsPredictor(numerics="bf16")) as gw:
        r = gw.client.get("/metrics", headers={"Authorization": f"Bearer {gw.token}"})
        assert r.status_code == 200
        assert 'model_numerics_info{fallback="false",numerics="bf16"} 1.0' in r.text


def test_numerics_info_keeps_one_series_and_marks_a_fallback() -> None:
    registry = CollectorRegistry()
    info = PredictorInfo(registry)
    assert "model_numerics_info{" not in generate_latest(registry).decode()
    info.update(PredictorStatus(ready=True, stage="ready", numerics="bf16"))
    info.update(PredictorStatus(ready=False, stage="unreachable"))  # keeps the last known
    assert info.numerics == "bf16"
    info.update(
        PredictorStatus(ready=True, stage="ready", numerics="fp32", numerics_fallback=FALLBACK)
    )
    lines = [
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("model_numerics_info{")
    ]
    assert lines == ['model_numerics_info{fallback="true",numerics="fp32"} 1.0']


def test_stats_and_metrics_show_the_engine_and_why_it_is_torch(root: Path) -> None:
    with _gateway(root, NumericsPredictor(numerics="fp32")) as gw:
        predictor = _stats(gw)
        assert (predictor["engine"], predictor["engine_fallback"]) == ("onnxruntime", None)
        r = gw.client.get("/metrics", headers={"Authorization": f"Bearer {gw.token}"})
        assert 'model_engine_info{engine="onnxruntime",fallback="false"} 1.0' in r.text
    fake = NumericsPredictor(numerics="fp32", engine="torch", engine_fallback=ENGINE_FALLBACK)
    with _gateway(root, fake) as gw:
        predictor = _stats(gw)
        assert (predictor["engine"], predictor["engine_fallback"]) == ("torch", ENGINE_FALLBACK)
        r = gw.client.get("/metrics", headers={"Authorization": f"Bearer {gw.token}"})
        assert 'model_engine_info{engine="torch",fallback="true"} 1.0' in r.text
        assert "onnxruntime" not in r.text.split("model_engine_info{", 1)[1].split("\n")[0]


def test_engine_info_keeps_one_series() -> None:
    registry = CollectorRegistry()
    info = PredictorInfo(registry)
    info.update(PredictorStatus(ready=True, stage="ready", numerics="fp32", engine="onnxruntime"))
    info.update(PredictorStatus(ready=False, stage="unreachable"))  # keeps the last known
    assert info.engine == "onnxruntime"
    info.update(
        PredictorStatus(
            ready=True, stage="ready", numerics="fp32", engine="torch", engine_fallback="x"
        )
    )
    lines = [
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("model_engine_info{")
    ]
    assert lines == ['model_engine_info{engine="torch",fallback="true"} 1.0']
