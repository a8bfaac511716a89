"""Spec section 3: autoscaling profiles, and the market calendar that picks between them."""

from __future__ import annotations

from pydantic import Field, model_validator

from app.config.base import Section


class AutoscalingProfile(Section):
    """Spec 3.1/3.2 names. ``app.ops`` maps them onto Serve's ``autoscaling_config``."""

    min_replicas: int = Field(2, ge=0)
    max_replicas: int = Field(20, ge=1)
    target_num_ongoing_requests_per_replica: float = Field(5, gt=0)
    target_throughput_per_replica: float | None = Field(100, gt=0)
    upscale_delay_s: float = Field(30, ge=0)
    downscale_delay_s: float = Field(300, ge=0)
    metrics_interval_s: float = Field(10, gt=0)
    look_back_period_s: float = Field(120, gt=0)
    upscale_smoothing_factor: float = Field(1.0, gt=0)
    downscale_smoothing_factor: float = Field(0.5, gt=0)

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscalingProfile:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


def market_hours_profile() -> AutoscalingProfile:
    return AutoscalingProfile(
        min_replicas=5,
        max_replicas=30,
        target_num_ongoing_requests_per_replica=3,
        upscale_delay_s=15,
        downscale_delay_s=120,
        upscale_smoothing_factor=1.5,
        downscale_smoothing_factor=0.3,
    )


def off_hours_profile() -> AutoscalingProfile:
    return AutoscalingProfile(
        min_replicas=2,
        max_replicas=10,
        target_num_ongoing_requests_per_replica=10,
        upscale_delay_s=60,
        downscale_delay_s=300,
        upscale_smoothing_factor=1.0,
        downscale_smoothing_factor=0.5,
    )


class MarketCalendar(Section):
    """Which exchange's sessions define "market hours" (not in the spec; XNYS by default)."""

    enabled: bool = True
    exchange: str = "XNYS"
    prescale_minutes: float = Field(15, ge=0)
