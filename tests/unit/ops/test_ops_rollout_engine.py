"""The blue/green state machine with a fake clock, fake gateway reports and fake
predictors (no Ray): steps, promotion, rollback, the min-sample guard, abort,
persistence, and the start checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.control.rollout_settings import normalise_steps
from tests.unit.ops.rollout_support import (
    MODEL,
    Rig,
    artifact_source,  # noqa: F401  (fixture)
    flip_weights_byte,
    make_rig,
    registry_root,  # noqa: F401  (fixture)
)


@pytest.fixture
def rig(registry_root: Path) -> Rig:  # noqa: F811
    return make_rig(registry_root)


async def _start_and_load(rig: Rig, version: str = "2.0.0") -> None:
    answer = await rig.engine.start(MODEL, version)
    assert answer["accepted"], answer["reason"]
    rig.predictors_hold("1.0.0", version)
    await rig.engine.tick()


def _report(rig: Rig, version: str, ok: int, errors: int) -> None:
    rig.engine.report({rig.ref(version).key: (ok, errors)})


async def test_blue_is_the_registry_default_when_nothing_was_saved(rig: Rig) -> None:
    routing = rig.engine.routing()
    assert routing.blue == rig.ref("1.0.0")
    assert routing.green is None
    assert routing.green_weight_pct == 0.0
    assert routing.preload == (rig.ref("1.0.0"),)


async def test_green_gets_no_traffic_until_every_live_predictor_holds_it(rig: Rig) -> None:
    await rig.engine.start(MODEL, "2.0.0")
    rig.predictors_hold("1.0.0", "2.0.0", replica="r1")
    rig.predictors_hold("1.0.0", replica="r2")  # still loading green
    await rig.engine.tick()
    routing = rig.engine.routing()
    assert routing.phase == "preparing"
    assert routing.green_weight_pct == 0.0
    assert rig.ref("2.0.0") in routing.preload  # predictors are told to load it
    rig.predictors_hold("1.0.0", "2.0.0", replica="r2")
    await rig.engine.tick()
    assert rig.engine.routing().phase == "shifting"
    assert rig.engine.routing().green_weight_pct == 25.0


async def test_rollout_steps_through_the_weights_and_promotes_a_healthy_green(rig: Rig) -> None:
    await _start_and_load(rig)
    weights = []
    for _ in range(3):
        weights.append(rig.engine.routing().green_weight_pct)
        _report(rig, "2.0.0", ok=50, errors=0)
        _report(rig, "1.0.0", ok=50, errors=0)
        rig.clock.advance(5.0)
        await rig.engine.tick()
        assert rig.engine.state.phase == "shifting"  # half a step: no change yet
        rig.clock.advance(5.0)
        await rig.engine.tick()
    assert weights == [25.0, 50.0, 100.0]
    state = rig.engine.state
    assert state.phase == "promoted"
    assert state.blue == rig.ref("2.0.0")
    assert rig.registry.default_version(MODEL) == "2.0.0"
    routing = rig.engine.routing()
    assert (routing.blue, routing.green, routing.green_weight_pct) == (rig.ref("2.0.0"), None, 0)
    assert [s.weight_pct for s in state.steps] == [25.0, 50.0, 100.0]
    assert state.steps[0].green_ok == 50
    assert state.steps[0].blue_ok == 50
    assert rig.notifier.sent == []


async def test_green_over_the_error_threshold_is_rolled_back_with_an_alert(rig: Rig) -> None:
    await _start_and_load(rig)
    _report(rig, "2.0.0", ok=90, errors=10)  # 10 % > 5 %
    await rig.engine.tick()
    state = rig.engine.state
    assert state.phase == "rolled_back"
    assert "10.0%" in (state.reason or "")
    routing = rig.engine.routing()
    assert (routing.blue, routing.green, routing.green_weight_pct) == (rig.ref("1.0.0"), None, 0)
    assert rig.registry.default_version(MODEL) == "1.0.0"
    await rig.engine.alerts.drain()
    [alert] = rig.notifier.sent
    assert alert["status"] == "firing"
    assert alert["alerts"][0]["labels"]["alertname"] == "ModelRolloutRolledBack"
    assert alert["alerts"][0]["labels"]["green_version"] == "2.0.0"
    assert state.last_alert is not None
    assert state.last_alert["delivered"] is True


async def test_one_error_in_three_requests_does_not_roll_back(rig: Rig) -> None:
    await _start_and_load(rig)
    _report(rig, "2.0.0", ok=2, errors=1)  # 33 %, but only 3 samples (< 20)
    await rig.engine.tick()
    assert rig.engine.state.phase == "shifting"
    _report(rig, "2.0.0", ok=17, errors=2)  # 22 samples, 3 errors: 13.6 %
    await rig.engine.tick()
    assert rig.engine.state.phase == "rolled_back"


async def test_errors_older_than_the_health_window_are_forgotten(rig: Rig) -> None:
    await _start_and_load(rig)
    _report(rig, "2.0.0", ok=0, errors=5)
    rig.clock.advance(11.0)  # past the 10 s window (and the step: weight moves to 50)
    _report(rig, "2.0.0", ok=30, errors=0)
    await rig.engine.tick()
    assert rig.engine.state.phase == "shifting"
    assert rig.engine.routing().green_weight_pct == 50.0


async def test_blue_errors_do_not_roll_green_back(rig: Rig) -> None:
    await _start_and_load(rig)
    _report(rig, "1.0.0", ok=0, errors=50)
    _report(rig, "2.0.0", ok=50, errors=0)
    await rig.engine.tick()
    assert rig.engine.state.phase == "shifting"


async def test_abort_sends_all_traffic_back_to_blue(rig: Rig) -> None:
    await _start_and_load(rig)
    answer = await rig.engine.abort("operator changed their mind")
    assert answer["accepted"]
    state = rig.engine.state
    assert state.phase == "aborted"
    assert state.reason == "operator changed their mind"
    assert rig.engine.routing().green is None
    assert rig.registry.default_version(MODEL) == "1.0.0"
    assert (await rig.engine.abort())["accepted"] is False  # nothing left to abort


async def test_a_second_start_is_refused_while_a_rollout_is_active(rig: Rig) -> None:
    await _start_and_load(rig)
    answer = await rig.engine.start(MODEL, "3.0.0")
    assert answer["accepted"] is False
    assert "already shifting" in answer["reason"]
    assert rig.engine.state.green == rig.ref("2.0.0")


@pytest.mark.parametrize(
    ("version", "why"),
    [("9.9.9", "not in the registry"), ("1.0.0", "already in service")],
    ids=["unknown", "blue"],
)
async def test_start_is_refused_for_a_version_that_cannot_be_green(
    rig: Rig, version: str, why: str
) -> None:
    answer = await rig.engine.start(MODEL, version)
    assert answer["accepted"] is False
    assert why in answer["reason"]
    assert rig.engine.state.phase == "idle"


async def test_start_is_refused_when_greens_weights_are_corrupted(
    rig: Rig,
    registry_root: Path,  # noqa: F811
) -> None:
    flip_weights_byte(registry_root, "2.0.0")
    answer = await rig.engine.start(MODEL, "2.0.0")
    assert answer["accepted"] is False
    assert "checksum" in answer["reason"].lower() or "sha" in answer["reason"].lower()
    assert rig.validator.calls == []  # refused before any predictor was bothered


async def test_start_is_refused_when_a_predictor_rejects_green(rig: Rig) -> None:
    rig.validator.refuse["2.0.0"] = "invalid_model: golden check failed"
    answer = await rig.engine.start(MODEL, "2.0.0")
    assert answer["accepted"] is False
    assert "golden check failed" in answer["reason"]


async def test_green_that_fails_to_load_on_a_predictor_is_rolled_back(rig: Rig) -> None:
    await rig.engine.start(MODEL, "2.0.0")
    green = rig.ref("2.0.0")
    rig.engine.predictor_sync("r1", [rig.ref("1.0.0").key], {green.key: "CUDA OOM"})
    await rig.engine.tick()
    assert rig.engine.state.phase == "rolled_back"
    assert "CUDA OOM" in (rig.engine.state.reason or "")


async def test_preparing_gives_up_after_the_preload_timeout(rig: Rig) -> None:
    await rig.engine.start(MODEL, "2.0.0")
    rig.clock.advance(61.0)
    await rig.engine.tick()
    assert rig.engine.state.phase == "rolled_back"
    assert "within 60s" in (rig.engine.state.reason or "")


async def test_the_rollout_survives_a_controller_restart(rig: Rig) -> None:
    await _start_and_load(rig)
    _report(rig, "2.0.0", ok=10, errors=0)
    rig.clock.advance(10.0)
    await rig.engine.tick()  # -> 50 %
    saved = json.loads(rig.store.path.read_text())
    assert saved["phase"] == "shifting"
    assert saved["green_weight_pct"] == 50.0

    engine = rig.restart()
    assert engine.state.phase == "shifting"
    assert engine.state.step_index == 1
    assert engine.routing().green == rig.ref("2.0.0")
    assert engine.routing().green_weight_pct == 50.0
    rig.predictors_hold("1.0.0", "2.0.0")
    rig.clock.advance(10.0)
    await engine.tick()  # the step clock was persisted: it moves on at once
    assert engine.routing().green_weight_pct == 100.0


async def test_an_unreadable_state_file_is_set_aside_and_blue_comes_from_the_registry(
    rig: Rig,
) -> None:
    rig.store.path.write_text("{not json")
    engine = rig.restart()
    assert engine.state.phase == "idle"
    assert engine.state.blue == rig.ref("1.0.0")
    assert list(rig.store.path.parent.glob("state.json.corrupt-*"))


def test_steps_are_sorted_and_always_end_at_100() -> None:
    assert normalise_steps([50, 10, 10, 0]) == (10.0, 50.0, 100.0)
    assert normalise_steps([25, 150]) == (25.0, 100.0)
    assert normalise_steps([]) == (100.0,)


def test_the_controller_side_never_loads_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, app.control.rollout_controller, app.gateway.rollout_router, "
        "app.cli.rollout_cmds; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False"
