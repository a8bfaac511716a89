"""Registry sync (spec 11.1) in the rollout controller: a new valid default is staged,
preloaded and then served; a corrupted or rejected one is refused and blue keeps serving."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.common.registry import ModelRegistry
from tests.unit.ops.rollout_support import (
    MODEL,
    Rig,
    artifact_source,  # noqa: F401  (fixture)
    flip_weights_byte,
    make_rig,
    point_default_at,
    registry_root,  # noqa: F401  (fixture)
)


@pytest.fixture
def rig(registry_root: Path) -> Rig:  # noqa: F811
    return make_rig(registry_root)


async def _sync_pass(rig: Rig) -> None:
    rig.clock.advance(31.0)  # past sync_interval_s
    await rig.engine.tick()


async def test_a_new_valid_default_is_served_once_every_predictor_holds_it(rig: Rig) -> None:
    ModelRegistry(rig.registry.root).set_default(MODEL, "2.0.0")
    await _sync_pass(rig)
    routing = rig.engine.routing()
    assert routing.blue == rig.ref("1.0.0")  # staged, not switched: nobody holds it yet
    assert rig.ref("2.0.0") in routing.preload
    assert rig.validator.calls == [rig.ref("2.0.0")]  # the golden check ran on a predictor

    rig.predictors_hold("1.0.0", "2.0.0")
    await rig.engine.tick()
    assert rig.engine.routing().blue == rig.ref("2.0.0")
    sync = rig.engine.state.sync
    assert sync.last_synced == rig.ref("2.0.0")
    assert sync.pending is None
    assert [e.event for e in rig.engine.state.history][-2:] == ["sync_staged", "sync_synced"]


async def test_a_corrupted_default_is_refused_and_blue_keeps_serving(
    rig: Rig,
    registry_root: Path,  # noqa: F811
) -> None:
    flip_weights_byte(registry_root, "3.0.0")
    point_default_at(registry_root, "3.0.0")
    await _sync_pass(rig)
    state = rig.engine.state
    assert state.blue == rig.ref("1.0.0")
    assert rig.engine.routing().preload == (rig.ref("1.0.0"),)
    assert state.sync.rejected is not None
    assert state.sync.rejected.version == "3.0.0"
    assert rig.validator.calls == []  # the checksum refused it; no predictor was asked
    await rig.engine.alerts.drain()
    [alert] = rig.notifier.sent
    assert alert["alerts"][0]["labels"]["alertname"] == "ModelRegistrySyncRejected"
    assert rig.engine.status()["sync"]["rejected"]["version"] == "3.0.0"

    # Not re-checked on every pass while the pointer stays where it is.
    await _sync_pass(rig)
    assert len(rig.notifier.sent) == 1


async def test_a_default_that_fails_the_golden_check_is_refused(rig: Rig) -> None:
    rig.validator.refuse["2.0.0"] = "invalid_model: golden check failed"
    ModelRegistry(rig.registry.root).set_default(MODEL, "2.0.0")
    await _sync_pass(rig)
    state = rig.engine.state
    assert state.blue == rig.ref("1.0.0")
    assert state.sync.rejected is not None
    assert "golden check failed" in state.sync.rejected.reason


async def test_a_staged_version_a_predictor_cannot_load_is_refused(rig: Rig) -> None:
    ModelRegistry(rig.registry.root).set_default(MODEL, "2.0.0")
    await _sync_pass(rig)
    green = rig.ref("2.0.0")
    rig.engine.predictor_sync("r1", [rig.ref("1.0.0").key], {green.key: "out of memory"})
    await rig.engine.tick()
    assert rig.engine.state.blue == rig.ref("1.0.0")
    assert rig.engine.state.sync.pending is None
    assert "out of memory" in rig.engine.state.sync.rejected.reason  # type: ignore[union-attr]


async def test_moving_the_pointer_back_to_blue_after_a_refusal_is_quiet(
    rig: Rig,
    registry_root: Path,  # noqa: F811
) -> None:
    flip_weights_byte(registry_root, "3.0.0")
    point_default_at(registry_root, "3.0.0")
    await _sync_pass(rig)
    point_default_at(registry_root, "1.0.0")
    await _sync_pass(rig)
    assert rig.engine.state.sync.pending is None
    assert rig.engine.state.blue == rig.ref("1.0.0")


async def test_sync_waits_while_a_rollout_is_in_progress(rig: Rig) -> None:
    await rig.engine.start(MODEL, "3.0.0")
    ModelRegistry(rig.registry.root).set_default(MODEL, "2.0.0")
    await _sync_pass(rig)
    assert rig.engine.state.sync.pending is None
    assert rig.engine.state.green == rig.ref("3.0.0")
