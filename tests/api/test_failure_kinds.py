"""Every failure kind through a real request: status, code, metric label, version accounting.

The app is the real one (routes, auth, batcher, failure table, handler) in front of the
fake predictor; each case provokes one :class:`FailureKind` the way a client or a sick
predictor would, and checks the one table's row for it end to end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.gateway.failures import FAILURES
from app.gateway.rollout_router import RolloutRouter
from app.gateway.state import GatewayState
from model.common.failures import FailureKind
from model.common.protocol import PredictError, PredictorStatus, Routing
from model.export import make_random_artifact
from tests.api.test_gateway_api import _build
from tests.fakes import FakePredictor
from tests.support.live import columnar_bars


@dataclass
class Case:
    state: GatewayState
    fake: FakePredictor
    pushed: list[dict[str, tuple[int, int]]]


Provoke = Callable[[Case], tuple[str, Any, dict[str, str]]]  # -> path, body, headers


def _bars(**changes: Any) -> dict[str, Any]:
    return {**columnar_bars("ABC"), **changes}


def _predictor_says(kind: FailureKind) -> Provoke:
    def provoke(c: Case) -> tuple[str, Any, dict[str, str]]:
        c.fake.fail_with = PredictError(kind, "the predictor's own words")
        return "/predict", _bars(), {}

    return provoke


def _not_ready(c: Case) -> tuple[str, Any, dict[str, str]]:
    c.fake.ready = False
    c.state.readiness.status = PredictorStatus(ready=False, stage="loading")
    return "/predict", _bars(), {}


def _deadline_passes_in_queue(c: Case) -> tuple[str, Any, dict[str, str]]:
    # As if a forward were in flight: a lone row then waits for it or the 0.3 s window.
    c.state.batcher._busy = 1
    c.state.batcher.batch_wait_timeout_s = 0.3
    return "/predict", _bars(), {"X-Request-Deadline-Ms": str(int(time.time() * 1000) + 50)}


def _queue_full(c: Case) -> tuple[str, Any, dict[str, str]]:
    c.state.batcher.capacity = 0
    return "/predict", _bars(), {}


def _too_slow(c: Case) -> tuple[str, Any, dict[str, str]]:
    c.fake.delay_s = 0.5
    c.state.config.serving.request_timeout_s = 0.05
    return "/predict", _bars(), {}


PROVOKE: dict[FailureKind, Provoke] = {
    FailureKind.INVALID_BARS: lambda c: ("/predict", _bars(volume=[1.0] * 10), {}),
    FailureKind.TOO_MANY_ITEMS: lambda c: ("/predict/batch", {"items": [_bars()] * 17}, {}),
    FailureKind.MODEL_NOT_FOUND: lambda c: ("/predict", _bars(version="9.9.9"), {}),
    FailureKind.INVALID_FEATURES: _predictor_says(FailureKind.INVALID_FEATURES),
    FailureKind.DEADLINE_EXCEEDED: _deadline_passes_in_queue,
    FailureKind.QUEUE_FULL: _queue_full,
    FailureKind.NOT_READY: _not_ready,
    FailureKind.INVALID_MODEL: _predictor_says(FailureKind.INVALID_MODEL),
    FailureKind.TIMEOUT: _too_slow,
    FailureKind.UNAVAILABLE: _predictor_says(FailureKind.UNAVAILABLE),
}


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("kinds")
    return root, make_random_artifact(root / "models", version="1.0.0", seed=1)


@pytest.fixture
def case(registry_root: tuple[Path, Any]) -> Iterator[tuple[Case, TestClient, str]]:
    root, ref = registry_root
    fake = FakePredictor(ref=ref)
    state, app, key = _build(root, fake)
    pushed: list[dict[str, tuple[int, int]]] = []

    async def fetch() -> Routing:
        return Routing(blue=ref)

    async def push(counts: dict[str, tuple[int, int]]) -> None:
        pushed.append(counts)

    # A router that is never started: it only counts (its routing stays unset, so every
    # request goes to the predictor's default, which is ``ref``).
    state.rollout = RolloutRouter(fetch, push)
    with TestClient(app) as client:
        yield Case(state, fake, pushed), client, key


def test_every_kind_has_a_case() -> None:
    assert set(PROVOKE) == set(FailureKind) == set(FAILURES)


@pytest.mark.parametrize("kind", list(FailureKind), ids=lambda k: k.value)
def test_failure_kind_answers_and_counts_by_its_table_row(
    case: tuple[Case, TestClient, str], kind: FailureKind
) -> None:
    c, client, key = case
    rule = FAILURES[kind]
    path, body, headers = PROVOKE[kind](c)
    before = _count(c, rule.metric_status)

    r = client.post(path, json=body, headers={"X-API-Key": key, **headers})

    assert r.status_code == rule.http_status, r.text
    error = r.json()["error"]
    assert error["code"] == kind.value
    assert error["request_id"] == r.headers["x-request-id"]
    assert ("retry-after" in r.headers) == (rule.retry_after_s is not None)
    assert "the predictor's own words" not in error["message"] or kind in (
        FailureKind.INVALID_FEATURES,  # the client's input: the predictor's reason helps
        FailureKind.MODEL_NOT_FOUND,
    )
    assert _count(c, rule.metric_status) == before + 1, "counted once, under its status"
    assert _count(c, "ok") == 0
    assert c.state.rollout is not None
    asyncio.run(c.state.rollout.flush())
    ref_key = c.fake.ref.key
    if rule.counts_against_version:
        assert c.pushed == [{ref_key: (0, 1)}]
    else:
        assert c.pushed == [], "a client-side failure must not count against the version"


def _count(c: Case, status: str) -> float:
    value = c.state.metrics.registry.get_sample_value("predictions_total", {"status": status})
    return value or 0.0


@pytest.mark.parametrize("broken", ["manifest", "default"])
def test_a_named_model_the_registry_cannot_read_is_invalid_model_not_a_500(
    case: tuple[Case, TestClient, str], registry_root: tuple[Path, Any], broken: str
) -> None:
    c, client, key = case
    root, _ = registry_root
    # A second model, as a hand edit or a torn copy can leave one: its manifest is not
    # JSON, or its DEFAULT pointer names no valid version.
    model = root / "models" / "hand_edited"
    (model / "1.0.0").mkdir(parents=True, exist_ok=True)
    (model / "1.0.0" / "manifest.json").write_text("{not json" if broken == "manifest" else "{}")
    (model / "DEFAULT").write_text("../1.0.0" if broken == "default" else "1.0.0")
    body = _bars(model="hand_edited", **({"version": "1.0.0"} if broken == "manifest" else {}))

    r = client.post("/predict", json=body, headers={"X-API-Key": key})

    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == FailureKind.INVALID_MODEL.value
    assert str(root) not in r.text  # the registry's paths stay on the server
    assert c.fake.calls == []
