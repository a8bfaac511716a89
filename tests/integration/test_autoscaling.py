"""Load raises the predictor's replica count and its end lowers it (real Serve autoscaling).

A second, small application in the session's Ray (``cnnlstm-scale`` at ``/scale``, reached
through Serve's proxy): autoscaling on with 1-3 predictor replicas, a target of one
ongoing request per replica, short delays, and gateway batching off so every request is
its own predictor call. The session's Serve environment pushes autoscaling metrics every
0.5 s (``conftest``), which is what lets this run in well under a minute.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config import ServiceConfig
from model.export import make_random_artifact
from tests.integration.conftest import ServeStack
from tests.integration.rollout_support import Traffic
from tests.support.live import LiveTarget

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # Serve compares look_back_period_s with AutoscalingConfig.metrics_interval_s, a
    # deprecated field left at its default (10 s); the real push interval is the 0.5 s
    # environment setting, which a 2 s look-back comfortably exceeds.
    pytest.mark.filterwarnings("ignore:`look_back_period_s`.*:FutureWarning"),
]

APP = "cnnlstm-scale"
PREFIX = "/scale"
PREDICTOR = "cnn_lstm_predictor"


def _scale_config(stack: ServeStack, root: Path) -> ServiceConfig:
    data: dict[str, Any] = copy.deepcopy(stack.config.model_dump(mode="json"))
    data["resources"].update(num_cpus=0.25)
    data["serving"].update(
        autoscaling_enabled=True,
        app_name=APP,
        route_prefix=PREFIX,
        fault_injection={},
        # Replicas being scaled down (and the app at teardown) stop in about a second.
        graceful_shutdown_timeout_s=1,
        graceful_shutdown_wait_loop_s=0.5,
    )
    data["market_calendar"]["enabled"] = False
    data["autoscaling"].update(
        min_replicas=1,
        max_replicas=3,
        target_num_ongoing_requests_per_replica=1,
        upscale_delay_s=1,
        downscale_delay_s=4,
        look_back_period_s=2,
        upscale_smoothing_factor=1,
        downscale_smoothing_factor=1,
        metrics_interval_s=0.5,
    )
    # Twelve clients against one unbatched replica queue for longer than admission's 50 ms
    # budget: that pile-up is the load signal under test, so nothing is shed here.
    data["batching"].update(
        enabled=False,
        max_batch_size=1,
        max_queue_wait_ms=0,
        max_loop_lag_ms=0,
        max_in_flight_mean_ms=0,
    )
    data["model_registry"]["path"] = str(root / "models")
    data["logging"]["directory"] = str(root / "logs")
    data["blue_green_deployment"]["state_path"] = None  # its own, under its own registry
    return ServiceConfig.model_validate(data)


def _predictor_states() -> dict[str, int]:
    """The predictor's replicas by state (``RUNNING``, ``STARTING``, ``PENDING_...``)."""
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None or PREDICTOR not in app.deployments:
        return {}
    return {str(k): int(v) for k, v in app.deployments[PREDICTOR].replica_states.items()}


def _running_predictors() -> int:
    return _predictor_states().get("RUNNING", 0)


def _wanted_predictors() -> int:
    """Replicas Serve is running or bringing up: what the autoscaler asked for. A second
    replica that is still importing torch on a loaded 2-core machine counts: the decision
    to scale up is the behaviour under test, not how fast a replica can start."""
    return sum(n for state, n in _predictor_states().items() if state != "STOPPING")


@pytest.fixture(scope="module")
def scale_app(
    serve_stack: ServeStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceConfig]:
    from ray import serve

    from app.config.env import Settings
    from app.serve.build import build_from_config

    root = tmp_path_factory.mktemp("scale")
    config = _scale_config(serve_stack, root)
    make_random_artifact(root / "models", version="1.0.0", seed=31)
    settings = Settings(DEVICE="cpu", MODEL_REGISTRY_PATH=root / "models")
    serve.run(build_from_config(config, settings), name=APP, route_prefix=PREFIX)
    try:
        yield config
    finally:
        serve.delete(APP)


def test_load_raises_the_predictor_replicas_and_its_end_lowers_them(
    serve_stack: ServeStack, scale_app: ServiceConfig, live_target: LiveTarget
) -> None:
    _, key = live_target.create_key(["model:predict"], owner="autoscaling-test")
    assert _running_predictors() == 1
    peak = 1
    seen: list[dict[str, int]] = []
    with Traffic(
        serve_stack, key, workers=12, base_url=serve_stack.proxy_url, path=f"{PREFIX}/predict"
    ) as traffic:
        traffic.wait_for(10)
        # A new replica imports torch and loads, validates and warms the model first: on a
        # busy 2-core machine that alone can take half a minute.
        deadline = time.monotonic() + 150
        while peak < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            peak = max(peak, _wanted_predictors())
            states = _predictor_states()
            if not seen or seen[-1] != states:
                seen.append(states)
    answers = traffic.snapshot()
    assert peak >= 2, f"load never scaled the predictor up ({len(answers)} requests; {seen})"
    assert {a.status for a in answers} == {200}

    deadline = time.monotonic() + 90
    while _wanted_predictors() > 1 or _running_predictors() != 1:
        assert time.monotonic() < deadline, f"the predictor never scaled back down: {seen}"
        time.sleep(0.5)
    assert _running_predictors() == scale_app.autoscaling.min_replicas
