"""Spec sections 9-11.1: rollout strategies (rolling update, blue/green), backups, registry."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from app.config.base import Section


class RollingUpdate(Section):
    max_concurrent_updates: int = Field(2, ge=1)
    update_batch_size: int = Field(1, ge=1)
    health_check_timeout_s: float = Field(300, gt=0)
    rollback_on_failure: bool = True
    # Not in the spec: how often Serve retries a failing replica constructor (a model that
    # fails validation) before it marks the rollout failed; old replicas keep serving.
    constructor_retry_count: int = Field(3, ge=1)


class Shadow(Section):
    """Not in the spec (app/control/shadow_agreement.py): before any traffic shift, green
    scores a share of the rows blue answers, off the response path, and the rollout moves
    to its first traffic step only when their answers agree well enough."""

    # Seconds of shadow traffic before the first step; 0 skips the phase. `cnnlstm rollout
    # start --shadow-s N` overrides it per rollout.
    duration_s: float = Field(300, ge=0)
    sample_pct: float = Field(20, gt=0, le=100)  # share of blue's rows also scored on green
    # Gates: judged once min_samples rows were compared (the phase waits up to
    # 4 x duration_s for them, then stops), and again throughout the traffic steps.
    min_samples: int = Field(200, ge=1)
    min_direction_agreement_pct: float = Field(95, ge=0, le=100)  # prob_up on one side of 0.5
    max_prob_up_mae: float = Field(0.05, ge=0, le=1)
    max_expected_return_mae: float | None = Field(None, ge=0)  # None: not gated (model units)
    max_error_rate_pct: float = Field(5, ge=0, le=100)
    # Rows waiting to be scored on green in each gateway; more are shed, never queued
    # behind (and shed first whenever blue's own queue is not empty).
    queue_rows: int = Field(256, ge=1)


class BlueGreen(Section):
    enabled: bool = True
    traffic_shift_interval_s: float = Field(300, gt=0)
    health_check_duration_s: float = Field(60, gt=0)
    rollback_threshold_pct: float = Field(5, ge=0, le=100)
    traffic_steps_pct: list[float] = Field(default_factory=lambda: [10.0, 25.0, 50.0, 100.0])
    state_path: Path | None = None  # where rollout state persists (default: in the registry)
    # Not in the spec (app/control/rollout_engine.py): green's error rate is judged only once
    # the health window holds this many green requests, so one early error in three
    # requests cannot roll a rollout back.
    min_samples: int = Field(20, ge=1)
    # How long every predictor replica may take to load, validate and warm green (or a
    # version registry sync switches to) before the attempt is given up.
    preload_timeout_s: float = Field(300, gt=0)
    # Control-loop cadences: the controller's tick, how often predictors and gateways
    # ask for the routing, and how often gateways push their per-version outcome counts.
    control_interval_s: float = Field(0.5, gt=0)
    predictor_poll_interval_s: float = Field(2.0, gt=0)
    gateway_poll_interval_s: float = Field(0.5, gt=0)
    report_interval_s: float = Field(1.0, gt=0)
    shadow: Shadow = Shadow()


class Backup(Section):
    enabled: bool = True
    schedule: str
    retention_days: float = Field(gt=0)
    storage_path: Path
    # Not in the spec, used by config_backup: files or folders archived along with the
    # config file in use (dashboards, alert rules...). Key material belongs in a secret
    # store: the JWT secret and the TLS key are left out even inside a listed folder.
    paths: list[Path] = Field(default_factory=list)
    # Not in the spec: the zone ``schedule`` is read in (CronJob timeZone, compose scheduler).
    timezone: str = "UTC"


class ModelRegistryConfig(Section):
    type: Literal["filesystem"] = "filesystem"
    path: Path = Path("/models")
    sync_interval_s: float = Field(300, gt=0)
    validation_enabled: bool = True
    default_model: str = "cnn_lstm"
    # Not in the spec: how long a starting predictor waits for the default model to appear
    # in the registry (a volume still syncing) before it fails.
    wait_for_model_s: float = Field(0, ge=0, le=3600)
