"""The gateway's rollout router: weighted picks, explicit versions bypassing it, stale
routing falling back to blue, and outcome counts reaching the controller."""

from __future__ import annotations

import random

import pytest

from app.config import ServiceConfig
from app.gateway.cluster import StaticCluster
from app.gateway.predict import resolve as _resolve
from app.gateway.rollout_router import RolloutRouter
from app.gateway.state import build_gateway_state
from model.common.protocol import Routing
from model.common.refs import ModelRef
from tests.fakes import FakePredictor

BLUE = ModelRef("cnn_lstm", "1.0.0", "a" * 64)
GREEN = ModelRef("cnn_lstm", "2.0.0", "b" * 64)


class FakeController:
    def __init__(self, routing: Routing) -> None:
        self.routing = routing
        self.pushed: list[dict[str, tuple[int, int]]] = []
        self.fail = False

    async def fetch(self) -> Routing:
        if self.fail:
            raise ConnectionError("controller restarting")
        return self.routing

    async def push(self, counts: dict[str, tuple[int, int]]) -> None:
        if self.fail:
            raise ConnectionError("controller restarting")
        self.pushed.append(counts)


def _shifting(weight: float) -> Routing:
    return Routing(blue=BLUE, green=GREEN, green_weight_pct=weight, phase="shifting", revision=3)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _router(routing: Routing, **kwargs: object) -> tuple[RolloutRouter, FakeController]:
    controller = FakeController(routing)
    router = RolloutRouter(
        controller.fetch,
        controller.push,
        rng=random.Random(1234),
        **kwargs,  # type: ignore[arg-type]
    )
    await router.refresh()
    return router, controller


@pytest.mark.parametrize("weight", [10.0, 25.0, 50.0])
async def test_green_gets_its_weight_of_the_requests(weight: float) -> None:
    router, _ = await _router(_shifting(weight))
    picks = [router.pick(BLUE) for _ in range(20_000)]
    share = 100.0 * picks.count(GREEN) / len(picks)
    assert share == pytest.approx(weight, abs=1.5)
    assert set(picks) == {BLUE, GREEN}


async def test_everything_goes_to_blue_when_no_rollout_runs() -> None:
    router, _ = await _router(Routing(blue=BLUE, preload=(BLUE,)))
    assert {router.pick(GREEN) for _ in range(1000)} == {BLUE}


async def test_the_predictors_default_answers_until_the_controller_has_spoken() -> None:
    controller = FakeController(_shifting(50.0))
    controller.fail = True
    router = RolloutRouter(controller.fetch, controller.push)
    await router.refresh()
    assert router.pick(BLUE) == BLUE
    assert router.routing is None


async def test_stale_routing_sends_everything_to_blue() -> None:
    clock = Clock()
    router, controller = await _router(_shifting(100.0), clock=clock, stale_after_s=15.0)
    assert router.pick(BLUE) == GREEN
    controller.fail = True
    clock.now += 10.0
    await router.refresh()
    assert router.pick(BLUE) == GREEN  # a short outage keeps the last routing
    clock.now += 10.0
    await router.refresh()
    assert router.pick(BLUE) == BLUE
    assert router.view()["stale"] is True


async def test_outcomes_are_pushed_per_version_and_kept_when_the_push_fails() -> None:
    router, controller = await _router(_shifting(50.0))
    for ok in (True, True, False):
        router.record(GREEN, ok)
    router.record(BLUE, True)
    controller.fail = True
    await router.flush()
    assert controller.pushed == []
    controller.fail = False
    router.record(GREEN, True)
    await router.flush()
    assert controller.pushed == [{GREEN.key: (3, 1), BLUE.key: (1, 0)}]
    await router.flush()  # nothing new: nothing sent
    assert len(controller.pushed) == 1


async def test_routing_changes_reach_the_metrics() -> None:
    controller = FakeController(_shifting(25.0))
    predictor = FakePredictor(ref=BLUE)
    state = build_gateway_state(
        ServiceConfig(),
        dispatch=predictor.dispatch,
        probe=predictor.status,
        cluster=StaticCluster(),
        rollout=(controller.fetch, controller.push),
    )
    assert state.rollout is not None
    await state.rollout.refresh()
    snapshot = state.metrics.snapshot()
    assert snapshot["rollout"] == {"state": "shifting", "green_weight_pct": 25.0}
    assert [m["version"] for m in snapshot["models"]] == ["1.0.0", "2.0.0"]


async def test_requests_naming_a_version_bypass_the_router(tmp_path: object) -> None:
    from pathlib import Path

    from model.export import make_random_artifact

    root = Path(str(tmp_path)) / "models"
    blue = make_random_artifact(root, version="1.0.0", seed=1)
    green = make_random_artifact(root, version="2.0.0", seed=2, make_default=False)
    controller = FakeController(
        Routing(blue=blue, green=green, green_weight_pct=100.0, phase="shifting")
    )
    predictor = FakePredictor(ref=blue)
    config = ServiceConfig.model_validate({"model_registry": {"path": str(root)}})
    state = build_gateway_state(
        config,
        dispatch=predictor.dispatch,
        probe=predictor.status,
        cluster=StaticCluster(),
        rollout=(controller.fetch, controller.push),
    )
    await state.readiness.refresh()
    assert state.rollout is not None
    await state.rollout.refresh()
    assert _resolve(state, None, None) == green  # 100 % green
    assert _resolve(state, "cnn_lstm", None) == green  # the served model, no version
    assert _resolve(state, None, "1.0.0") == blue  # explicit: never re-routed
    assert _resolve(state, "cnn_lstm", "1.0.0") == blue


async def test_outcomes_count_server_failures_but_not_client_mistakes() -> None:
    import asyncio

    from app.gateway.failures import PredictionFailure
    from app.gateway.predict import _count_outcomes
    from app.gateway.rows import RowResult
    from model.common.failures import FailureKind

    controller = FakeController(_shifting(50.0))
    predictor = FakePredictor(ref=BLUE)
    state = build_gateway_state(
        ServiceConfig(),
        dispatch=predictor.dispatch,
        probe=predictor.status,
        cluster=StaticCluster(),
        rollout=(controller.fetch, controller.push),
    )
    loop = asyncio.get_running_loop()
    outcomes: list[BaseException | None] = [
        None,  # answered
        PredictionFailure(FailureKind.UNAVAILABLE, "injected fault"),
        PredictionFailure(FailureKind.INVALID_MODEL, "golden check failed"),
        PredictionFailure(FailureKind.INVALID_FEATURES, "bad features"),  # the client's
        PredictionFailure(FailureKind.MODEL_NOT_FOUND, "no such version"),  # the client's
        PredictionFailure(FailureKind.DEADLINE_EXCEEDED),  # the client's
        PredictionFailure(FailureKind.UNAVAILABLE, "replica gone"),
    ]
    futures: list[asyncio.Future[RowResult]] = []
    for outcome in outcomes:
        future: asyncio.Future[RowResult] = loop.create_future()
        if outcome is None:
            future.set_result(RowResult(GREEN, 0.0, 0.5, 1, 1, 0.1, 0.0))
        else:
            future.set_exception(outcome)
        futures.append(future)
    cut_off: asyncio.Future[RowResult] = loop.create_future()
    cut_off.cancel()  # the gateway's timeout: counts against the version
    _count_outcomes(state, [GREEN] * (len(futures) + 1), [*futures, cut_off], timed_out=True)
    assert state.rollout is not None
    await state.rollout.flush()
    assert controller.pushed == [{GREEN.key: (1, 4)}]
    for f in futures:
        if not f.cancelled():
            f.exception()  # retrieved: no "never retrieved" warnings
