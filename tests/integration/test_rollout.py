"""Blue/green rollouts and registry sync on the real Serve stack, under live traffic.

The session stack runs rollouts on a 2 s clock (steps 25/50/100 %, 2 s health window, 10
samples minimum) and fails 10 % of version 2.1.0's calls on purpose. Every test keeps
clients sending requests that name no version throughout, and checks that no request is
dropped: every answer is a 200, except exactly the failures injected into the faulty green.
The module puts 1.0.0 back in service at the end, so later modules see the stack as the
session fixture built it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from app.cli.main import main
from model.common.artifact import WEIGHTS_FILE
from model.common.registry import ModelRegistry
from model.export import make_random_artifact
from tests.integration.conftest import FAULTY_VERSION, ServeStack
from tests.integration.rollout_support import (
    FINISHED,
    Traffic,
    controller,
    injected_fault_rows,
    restore_first_version,
    status,
    wait_status,
)
from tests.support.live import LiveTarget

pytestmark = pytest.mark.integration

MODEL = "cnn_lstm"


@pytest.fixture(scope="module")
def predict_key(live_target: LiveTarget) -> str:
    _, key = live_target.create_key(["model:predict"], owner="rollout-tests")
    return key


@pytest.fixture(scope="module", autouse=True)
def back_to_the_first_version(serve_stack: ServeStack, live_target: LiveTarget) -> Iterator[None]:
    yield
    restore_first_version(serve_stack, live_target)


def _flip_weights_byte(stack: ServeStack, version: str) -> None:
    path = stack.registry_root / MODEL / version / WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    data[200] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_healthy_green_is_promoted_without_dropping_a_request(
    serve_stack: ServeStack, predict_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    blue = status()["blue"]["version"]
    make_random_artifact(serve_stack.registry_root, version="2.0.0", seed=21, make_default=False)
    with Traffic(serve_stack, predict_key) as traffic:
        traffic.wait_for(20)
        assert main(["rollout", "start", MODEL, "2.0.0"]) == 0, capsys.readouterr().err
        final = wait_status(lambda s: s["phase"] in FINISHED)
        promoted_at = time.monotonic()
        time.sleep(2.0)  # traffic after the promotion: all of it on the new blue
    assert final["phase"] == "promoted", final
    assert [s["weight_pct"] for s in final["steps"]] == [25.0, 50.0, 100.0]
    assert final["blue"]["version"] == "2.0.0"
    assert ModelRegistry(serve_stack.registry_root).default_version(MODEL) == "2.0.0"

    answers = traffic.snapshot()
    assert traffic.errors == []
    assert Counter(a.status for a in answers) == {200: len(answers)}
    versions = Counter(a.version for a in answers)
    assert versions[blue] > 0
    assert versions["2.0.0"] > 0
    late = {a.version for a in answers if a.at > promoted_at + 1.0}
    assert late == {"2.0.0"}, late


def test_a_green_failing_one_call_in_ten_is_rolled_back_with_an_alert(
    serve_stack: ServeStack, predict_key: str
) -> None:
    assert serve_stack.alerts is not None
    blue = status()["blue"]["version"]
    make_random_artifact(
        serve_stack.registry_root, version=FAULTY_VERSION, seed=22, make_default=False
    )
    injected_before = injected_fault_rows()
    alerts_before = len(serve_stack.alerts.received)
    with Traffic(serve_stack, predict_key) as traffic:
        traffic.wait_for(20)
        answer = controller().start.remote(MODEL, FAULTY_VERSION).result(timeout_s=120)
        assert answer["accepted"], answer["reason"]
        final = wait_status(lambda s: s["phase"] in FINISHED)
        time.sleep(1.0)
    assert final["phase"] == "rolled_back", final
    assert "error rate" in final["reason"]
    assert final["blue"]["version"] == blue
    assert ModelRegistry(serve_stack.registry_root).default_version(MODEL) == blue

    # No request dropped: the only failures are the ones injected into green, answered
    # as the predictor failure they are (503), never a routing gap or a half-loaded model.
    answers = traffic.snapshot()
    assert traffic.errors == []
    failed = [a for a in answers if a.status != 200]
    injected = injected_fault_rows() - injected_before
    assert failed, "the faulty green never failed a request"
    assert len(failed) == injected
    assert {(a.status, a.code) for a in failed} == {(503, "unavailable")}
    assert {a.version for a in answers if a.status == 200} <= {blue, FAULTY_VERSION}

    deadline = time.monotonic() + 30
    while len(serve_stack.alerts.received) == alerts_before:
        assert time.monotonic() < deadline, "no alert reached the webhook"
        time.sleep(0.2)
    alert = serve_stack.alerts.received[-1]
    assert alert["status"] == "firing"
    labels = alert["alerts"][0]["labels"]
    assert labels["alertname"] == "ModelRolloutRolledBack"
    assert labels["green_version"] == FAULTY_VERSION
    assert status()["last_alert"]["delivered"] is True


def test_registry_sync_serves_a_new_valid_default_and_refuses_a_corrupted_one(
    serve_stack: ServeStack, predict_key: str
) -> None:
    assert serve_stack.alerts is not None
    root = serve_stack.registry_root
    with Traffic(serve_stack, predict_key) as traffic:
        traffic.wait_for(20)
        make_random_artifact(root, version="3.0.0", seed=23)  # moves DEFAULT to 3.0.0
        wait_status(lambda s: s["blue"]["version"] == "3.0.0", timeout_s=60)
        switched_at = time.monotonic()

        make_random_artifact(root, version="3.1.0", seed=24, make_default=False)
        _flip_weights_byte(serve_stack, "3.1.0")
        (root / MODEL / "DEFAULT").write_text("3.1.0\n")  # as a careless sync job would
        refused = wait_status(
            lambda s: (s["sync"]["rejected"] or {}).get("version") == "3.1.0", timeout_s=30
        )
        time.sleep(2.0)  # keeps serving after the refusal
    assert refused["blue"]["version"] == "3.0.0"
    assert status()["blue"]["version"] == "3.0.0"

    answers = traffic.snapshot()
    assert traffic.errors == []
    assert Counter(a.status for a in answers) == {200: len(answers)}
    late = {a.version for a in answers if a.at > switched_at + 1.0}
    assert late == {"3.0.0"}, late
    assert "ModelRegistrySyncRejected" in serve_stack.alerts.alertnames()
