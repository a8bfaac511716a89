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


class MarketHoursProfile(AutoscalingProfile):
    """Spec 3.2.1, field by field: a section that sets some keys keeps the rest."""

    min_replicas: int = Field(5, ge=0)
    max_replicas: int = Field(30, ge=1)
    target_num_ongoing_requests_per_replica: float = Field(3, gt=0)
    upscale_delay_s: float = Field(15, ge=0)
    downscale_delay_s: float = Field(120, ge=0)
    upscale_smoothing_factor: float = Field(1.5, gt=0)
    downscale_smoothing_factor: float = Field(0.3, gt=0)


class OffHoursProfile(AutoscalingProfile):
    """Spec 3.2.2, field by field, as :class:`MarketHoursProfile`."""

    min_replicas: int = Field(2, ge=0)
    max_replicas: int = Field(10, ge=1)
    target_num_ongoing_requests_per_replica: float = Field(10, gt=0)
    upscale_delay_s: float = Field(60, ge=0)
    downscale_delay_s: float = Field(300, ge=0)
    upscale_smoothing_factor: float = Field(1.0, gt=0)
    downscale_smoothing_factor: float = Field(0.5, gt=0)


class MarketCalendar(Section):
    """Which exchange's sessions define "market hours" (not in the spec; XNYS by default)."""

    enabled: bool = True
    exchange: str = "XNYS"
    prescale_minutes: float = Field(15, ge=0)
