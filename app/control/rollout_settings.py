"""Rollout controller settings, read from the service config once at start."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from app.config import ServiceConfig
from app.control.shadow_agreement import ShadowGates

# The Serve deployment's name (app.control.rollout_controller); here so the CLI can name it
# without importing Ray.
CONTROLLER_NAME = "rollout_controller"


def normalise_steps(steps: Sequence[float]) -> tuple[float, ...]:
    """Ascending, de-duplicated, within (0, 100], always ending at 100."""
    out = sorted({min(100.0, float(s)) for s in steps if s > 0})
    if not out or out[-1] < 100.0:
        out.append(100.0)
    return tuple(out)


@dataclass(frozen=True)
class RolloutSettings:
    model: str
    enabled: bool = True
    steps_pct: tuple[float, ...] = (10.0, 25.0, 50.0, 100.0)
    shift_interval_s: float = 300.0
    health_window_s: float = 60.0
    rollback_threshold_pct: float = 5.0
    min_samples: int = 20
    preload_timeout_s: float = 300.0
    sync_interval_s: float = 300.0
    validation_enabled: bool = True
    predictor_stale_s: float = 10.0
    shadow: ShadowGates = field(default_factory=ShadowGates)

    @classmethod
    def from_config(cls, config: ServiceConfig) -> RolloutSettings:
        bg = config.blue_green_deployment
        return cls(
            model=config.model_registry.default_model,
            enabled=bg.enabled,
            steps_pct=normalise_steps(bg.traffic_steps_pct),
            shift_interval_s=bg.traffic_shift_interval_s,
            health_window_s=bg.health_check_duration_s,
            rollback_threshold_pct=bg.rollback_threshold_pct,
            min_samples=bg.min_samples,
            preload_timeout_s=bg.preload_timeout_s,
            sync_interval_s=config.model_registry.sync_interval_s,
            validation_enabled=config.model_registry.validation_enabled,
            # Three missed polls (plus slack for a slow load) before a replica is gone.
            predictor_stale_s=3 * bg.predictor_poll_interval_s + 5.0,
            shadow=ShadowGates(
                duration_s=bg.shadow.duration_s,
                sample_pct=bg.shadow.sample_pct,
                min_samples=bg.shadow.min_samples,
                min_direction_agreement_pct=bg.shadow.min_direction_agreement_pct,
                max_prob_up_mae=bg.shadow.max_prob_up_mae,
                max_expected_return_mae=bg.shadow.max_expected_return_mae,
                max_error_rate_pct=bg.shadow.max_error_rate_pct,
            ),
        )
