"""Spec section 5: the liveness and readiness probes' shape."""

from __future__ import annotations

from pydantic import Field

from app.config.base import Section


class Probe(Section):
    enabled: bool = True
    path: str
    port: int = Field(8000, ge=1, le=65535)
    initial_delay_s: float = Field(ge=0)
    period_s: float = Field(gt=0)
    timeout_s: float = Field(gt=0)
    failure_threshold: int = Field(3, ge=1)
