"""The shadow phase of a rollout (fake clock, fake gateway reports, no Ray): green moves to
traffic only when enough rows agree with blue; disagreement or too little traffic stops
it with blue at 100 % and an alert carrying the figures; the gates hold through the steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.control.shadow_agreement import ShadowGates, ShadowTotals
from tests.unit.ops.rollout_support import (
    MODEL,
    Rig,
    artifact_source,  # noqa: F401  (fixture)
    make_rig,
    registry_root,  # noqa: F401  (fixture)
)

GATES = ShadowGates(
    duration_s=30.0,
    sample_pct=50.0,
    min_samples=100,
    min_direction_agreement_pct=95.0,
    max_prob_up_mae=0.05,
    max_error_rate_pct=5.0,
)


@pytest.fixture
def rig(registry_root: Path) -> Rig:  # noqa: F811
    return make_rig(registry_root, shadow=GATES)


def _shadow(rig: Rig, rows: int, agree: int, errors: int = 0, mae: float = 0.01) -> None:
    rig.engine.report_shadow(
        rig.ref("2.0.0").key,
        {
            "rows": rows, "agree": agree, "errors": errors, "shed": 0,
            "abs_diff_prob_up": mae * rows, "abs_diff_expected_return": 1e-5 * rows,
            "latency_ms": 3.0 * rows,
        },
    )  # fmt: skip


async def _start_and_load(rig: Rig, shadow_s: float | None = None) -> None:
    answer = await rig.engine.start(MODEL, "2.0.0", shadow_s)
    assert answer["accepted"], answer["reason"]
    rig.predictors_hold("1.0.0", "2.0.0")
    await rig.engine.tick()


async def test_green_shadows_blue_with_no_traffic_before_any_step(rig: Rig) -> None:
    await _start_and_load(rig)
    routing = rig.engine.routing()
    assert routing.phase == "shadowing"
    assert routing.green == rig.ref("2.0.0")
    assert routing.green_weight_pct == 0.0, "no client request goes to green while shadowing"
    assert routing.shadow_pct == 50.0


async def test_an_agreeing_green_moves_to_the_first_step_after_the_shadow_phase(
    rig: Rig,
) -> None:
    await _start_and_load(rig)
    _shadow(rig, rows=150, agree=149)
    rig.clock.advance(20.0)
    await rig.engine.tick()
    assert rig.engine.state.phase == "shadowing", "the phase lasts its duration"
    rig.clock.advance(10.0)
    await rig.engine.tick()
    routing = rig.engine.routing()
    assert (routing.phase, routing.green_weight_pct) == ("shifting", 25.0)
    assert routing.shadow_pct == 50.0, "the comparison goes on through the steps"
    figures = rig.engine.status()["shadow"]["figures"]
    assert figures["rows"] == 150
    assert figures["direction_agreement_pct"] == pytest.approx(99.333, abs=1e-3)


async def test_a_green_that_flips_directions_is_stopped_in_shadow_with_an_alert(
    rig: Rig,
) -> None:
    await _start_and_load(rig)
    _shadow(rig, rows=120, agree=90)  # 75 % agreement, never an error
    await rig.engine.tick()
    state = rig.engine.state
    assert state.phase == "rolled_back"
    assert state.blue == rig.ref("1.0.0")
    assert state.reason is not None
    assert "direction agreement 75.0% < 95%" in state.reason
    routing = rig.engine.routing()
    assert (routing.green, routing.green_weight_pct, routing.shadow_pct) == (None, 0.0, 0.0)
    assert not state.steps, "green never got a traffic step"
    await rig.engine.alerts.drain()
    [alert] = rig.notifier.sent
    assert alert["alerts"][0]["labels"]["green_version"] == "2.0.0"
    assert "direction agreement 75.0%" in alert["alerts"][0]["annotations"]["description"]


async def test_gates_wait_for_enough_samples(rig: Rig) -> None:
    await _start_and_load(rig)
    _shadow(rig, rows=40, agree=10)  # terrible, but 40 < 100 rows: no verdict yet
    await rig.engine.tick()
    assert rig.engine.state.phase == "shadowing"
    rig.clock.advance(31.0)
    await rig.engine.tick()
    assert rig.engine.state.phase == "shadowing", "past its duration it waits for samples"
    _shadow(rig, rows=60, agree=60)  # 70 of 100 agree
    await rig.engine.tick()
    assert rig.engine.state.phase == "rolled_back"


async def test_too_little_shadow_traffic_stops_the_rollout(rig: Rig) -> None:
    await _start_and_load(rig)
    _shadow(rig, rows=10, agree=10)
    rig.clock.advance(4 * GATES.duration_s)
    await rig.engine.tick()
    state = rig.engine.state
    assert state.phase == "rolled_back"
    assert state.reason is not None
    assert "not enough shadow traffic: 10 of 100 rows" in state.reason


async def test_green_shadow_errors_count_against_it(rig: Rig) -> None:
    await _start_and_load(rig)
    _shadow(rig, rows=90, agree=90, errors=10)  # 10 % of 100 scored rows failed
    await rig.engine.tick()
    assert rig.engine.state.phase == "rolled_back"
    assert "green shadow error rate 10.0% > 5%" in (rig.engine.state.reason or "")


async def test_disagreement_during_the_steps_rolls_back(rig: Rig) -> None:
    await _start_and_load(rig)
    _shadow(rig, rows=100, agree=100)
    rig.clock.advance(30.0)
    await rig.engine.tick()
    assert rig.engine.state.phase == "shifting"
    _shadow(rig, rows=100, agree=80, mae=0.2)  # now 180/200 = 90 %
    await rig.engine.tick()
    assert rig.engine.state.phase == "rolled_back"
    assert "prob_up MAE" in (rig.engine.state.reason or "")


async def test_shadow_s_zero_skips_the_phase(rig: Rig) -> None:
    await _start_and_load(rig, shadow_s=0)
    routing = rig.engine.routing()
    assert (routing.phase, routing.green_weight_pct, routing.shadow_pct) == ("shifting", 25.0, 0.0)


async def test_reports_for_another_version_or_when_not_shadowing_are_ignored(rig: Rig) -> None:
    rig.engine.report_shadow(rig.ref("2.0.0").key, {"rows": 5, "agree": 5})
    assert rig.engine.state.shadow.rows == 0
    await _start_and_load(rig)
    rig.engine.report_shadow(rig.ref("3.0.0").key, {"rows": 5, "agree": 0})
    assert rig.engine.state.shadow.rows == 0


async def test_shadow_figures_survive_a_controller_restart(rig: Rig) -> None:
    await _start_and_load(rig)
    _shadow(rig, rows=50, agree=50)
    rig.clock.advance(6.0)
    await rig.engine.tick()  # counts reach the state file at most every few seconds
    engine = rig.restart()
    assert engine.state.phase == "shadowing"
    assert engine.state.shadow.rows == 50


def test_gate_figures_and_verdict() -> None:
    totals = ShadowTotals()
    totals.add({"rows": 200, "agree": 196, "errors": 0, "abs_diff_prob_up": 2.0})
    assert GATES.verdict(totals) is None
    gates = ShadowGates(min_samples=100, max_expected_return_mae=1e-6)
    totals.add({"abs_diff_expected_return": 0.01})
    assert "expected_return MAE" in (gates.verdict(totals) or "")
    assert ShadowTotals().figures()["direction_agreement_pct"] is None
