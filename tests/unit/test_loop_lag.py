"""Shedding on event-loop lag: measured from a real loop, refused by priority, off at 0."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.gateway.loop_lag import LoopLag
from model.export import make_random_artifact
from tests.api.test_gateway_api import _build
from tests.fakes import FakePredictor
from tests.support.live import columnar_bars


async def test_a_busy_loop_shows_as_lag_and_an_idle_one_recovers() -> None:
    lag = LoopLag(0.05, period_s=0.01)
    lag.start()
    await asyncio.sleep(0.1)
    assert lag.lag_s < 0.05, "an idle loop is on time"
    for _ in range(6):  # CPU work that never yields, as a saturated gateway's is
        time.sleep(0.12)
        await asyncio.sleep(0)
    assert lag.lag_s > 0.05
    assert lag.refusal(0) == 1.0
    await asyncio.sleep(0.5)
    assert lag.lag_s < 0.05, "the loop caught up: requests are taken again"
    assert lag.refusal(0) is None
    await lag.stop()


def test_low_priority_is_shed_before_the_default() -> None:
    lag = LoopLag(0.05)
    lag.lag_s = 0.04
    assert lag.refusal(0) is None
    assert lag.refusal(-1) == 1.0
    assert lag.refusal(5) is None


def test_one_stall_does_not_shed_however_long() -> None:
    lag = LoopLag(0.05)
    lag.observe(3.0)  # a 3 s start-up or collection
    assert lag.refusal(0) is None
    for _ in range(3):
        lag.observe(3.0)  # sustained: shed
    assert lag.refusal(0) == 1.0


def test_zero_budget_never_sheds() -> None:
    lag = LoopLag(0.0)
    lag.lag_s = 10.0
    assert lag.refusal(-5) is None


@pytest.fixture(scope="module")
def gateway_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lag")
    make_random_artifact(root / "models", version="1.0.0", seed=1)
    return root


def test_a_lagging_gateway_answers_429_before_any_model_work(gateway_root: Path) -> None:
    fake = FakePredictor()
    state, app, key = _build(gateway_root, fake)
    fake.ref = state.registry.resolve("cnn_lstm", None)
    with TestClient(app) as client:  # type: ignore[arg-type]
        state.loop_lag.max_lag_s = 0.05
        state.loop_lag.lag_s = 0.5  # as the monitor reports under saturation
        state.loop_lag.observe = lambda lag_s: None  # type: ignore[method-assign]
        r = client.post("/predict", json=columnar_bars("ABC"), headers={"X-API-Key": key})
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "queue_full"
        assert r.headers["retry-after"] == "1"
        assert fake.calls == [], "shed before features, batching or the model"
        assert client.get("/healthz").status_code == 200, "probes are never shed"
