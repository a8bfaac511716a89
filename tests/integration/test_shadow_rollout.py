"""The shadow phase on the real Serve stack, under live traffic.

A green that never fails but answers every row with the other direction (its head
negated: ``make_random_artifact(flip_direction=True)``) is stopped in the shadow phase with
an alert at the webhook, and every client answer came from blue. An identical green (same
weights, another version) passes the shadow phase and is promoted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from model.common.registry import ModelRegistry
from model.export import make_random_artifact
from tests.integration.conftest import ServeStack
from tests.integration.rollout_support import (
    FINISHED,
    Traffic,
    controller,
    restore_first_version,
    status,
    wait_status,
)
from tests.support.live import LiveTarget

pytestmark = pytest.mark.integration

SHADOW_S = 3.0


@pytest.fixture(scope="module")
def predict_key(live_target: LiveTarget) -> str:
    _, key = live_target.create_key(["model:predict"], owner="shadow-tests")
    return key


@pytest.fixture(scope="module", autouse=True)
def back_to_the_first_version(serve_stack: ServeStack, live_target: LiveTarget) -> Iterator[None]:
    restore_first_version(serve_stack, live_target)  # whatever an earlier module left
    yield
    restore_first_version(serve_stack, live_target)


def test_a_green_that_flips_directions_is_stopped_in_shadow_and_blue_keeps_all_traffic(
    serve_stack: ServeStack, predict_key: str
) -> None:
    assert serve_stack.alerts is not None
    blue = serve_stack.ref
    make_random_artifact(
        serve_stack.registry_root, version="4.0.0", seed=7, flip_direction=True,
        make_default=False,
    )  # fmt: skip
    alerts_before = len(serve_stack.alerts.received)
    with Traffic(serve_stack, predict_key) as traffic:
        traffic.wait_for(20)
        answer = controller().start.remote(blue.name, "4.0.0", SHADOW_S).result(timeout_s=120)
        assert answer["accepted"], answer["reason"]
        final = wait_status(lambda s: s["phase"] in FINISHED)
        time.sleep(0.5)
    assert final["phase"] == "rolled_back", final
    assert "direction agreement" in final["reason"]
    assert final["steps"] == [], "green never got a traffic step"
    assert final["blue"]["version"] == blue.version
    assert ModelRegistry(serve_stack.registry_root).default_version(blue.name) == blue.version
    figures = final["shadow"]["figures"]
    assert figures["rows"] >= 20
    assert figures["direction_agreement_pct"] < 5.0
    assert figures["errors"] == 0, "the flipped green never failed: only agreement stopped it"

    answers = traffic.snapshot()
    assert traffic.errors == []
    assert Counter(a.status for a in answers) == {200: len(answers)}
    assert {a.version for a in answers} == {blue.version}, "every answer came from blue"

    deadline = time.monotonic() + 30
    while len(serve_stack.alerts.received) == alerts_before:
        assert time.monotonic() < deadline, "no alert reached the webhook"
        time.sleep(0.2)
    alert = serve_stack.alerts.received[-1]["alerts"][0]
    assert alert["labels"]["alertname"] == "ModelRolloutRolledBack"
    assert alert["labels"]["green_version"] == "4.0.0"
    assert "direction agreement" in alert["annotations"]["description"]


def test_an_identical_green_passes_the_shadow_phase_and_is_promoted(
    serve_stack: ServeStack, predict_key: str
) -> None:
    blue = serve_stack.ref
    make_random_artifact(serve_stack.registry_root, version="4.1.0", seed=7, make_default=False)
    with Traffic(serve_stack, predict_key) as traffic:
        traffic.wait_for(20)
        answer = controller().start.remote(blue.name, "4.1.0", SHADOW_S).result(timeout_s=120)
        assert answer["accepted"], answer["reason"]
        wait_status(lambda s: s["phase"] == "shadowing", timeout_s=120)
        shadowing = time.monotonic()
        final = wait_status(lambda s: s["phase"] in FINISHED)
    assert final["phase"] == "promoted", final
    assert final["blue"]["version"] == "4.1.0"
    figures = final["shadow"]["figures"]
    assert figures["rows"] >= 20
    assert figures["direction_agreement_pct"] == 100.0
    # The same weights, but not always the same arithmetic: blue answers a row in one
    # batch and green scores it in another, and the engine follows the batch size (ONNX
    # Runtime fp32 for the small ones where it measured faster, torch bf16 above on a CPU
    # with native bf16). On an AMD EPYC that put prob_up 1e-4 apart (mean, the same rows at
    # 1 and at 8); a different model is 0.05 and more apart.
    assert figures["prob_up_mae"] == pytest.approx(0.0, abs=1e-3)
    answers = traffic.snapshot()
    assert Counter(a.status for a in answers) == {200: len(answers)}
    # Nothing reached green before the shadow phase had run its course.
    early = {a.version for a in answers if a.at < shadowing + SHADOW_S - 0.5}
    assert early == {blue.version}
    assert status()["blue"]["version"] == "4.1.0"
