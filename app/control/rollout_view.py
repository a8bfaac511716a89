"""What the rollout engine shows: the routing gateways and predictors follow, and status.

Pure functions of the engine's state: the routing is read by every gateway and predictor
every second or two, the status by ``cnnlstm rollout status`` and ``/stats``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from app.control.outcome_window import TrafficHealth
from app.control.predictor_fleet import PredictorFleet
from app.control.rollout_settings import RolloutSettings
from app.control.rollout_state import RolloutState
from model.common.protocol import Routing
from model.common.refs import ModelRef


def shadowed(state: RolloutState) -> bool:
    """Whether gateways score blue's rows on green now (and the shadow gates are judged):
    a rollout with a shadow phase, from that phase through its traffic steps."""
    return (
        state.shadow_s > 0 and state.green is not None and state.phase in ("shadowing", "shifting")
    )


def routing_of(state: RolloutState, settings: RolloutSettings) -> Routing:
    green = state.green if state.active else None
    preload: list[ModelRef] = []
    for ref in (state.blue, green, state.sync.pending):
        if ref is not None and ref not in preload:
            preload.append(ref)
    return Routing(
        blue=state.blue,
        green=green,
        green_weight_pct=state.green_weight_pct if state.phase == "shifting" else 0.0,
        preload=tuple(preload),
        phase=state.phase,
        revision=state.revision,
        shadow_pct=settings.shadow.sample_pct if shadowed(state) else 0.0,
    )


def status_view(
    state: RolloutState,
    settings: RolloutSettings,
    health: TrafficHealth,
    fleet: PredictorFleet,
    now: float,
) -> dict[str, Any]:
    out = state.to_json()
    out["history"] = out["history"][-30:]
    out["now"] = now
    out["routing"] = routing_of(state, settings).to_json()
    out["health"] = health.view(now)
    out["shadow"] = {
        "duration_s": state.shadow_s,
        "started_at": state.shadow_started_at,
        "figures": state.shadow.figures(),
        "gates": dataclasses.asdict(settings.shadow),
    }
    out["predictors"] = fleet.view(now)
    out["settings"] = dataclasses.asdict(settings)
    return out
