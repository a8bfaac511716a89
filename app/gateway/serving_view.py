"""What the gateway reports about how it is deployed: resource tier and autoscaling regime.

Shown in ``/stats`` and kept current in the ``autoscaling_profile`` and ``replicas``
gauges by a slow background loop (the regime changes a few times a day).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import structlog

from app.config import ServiceConfig
from app.config.resources import replica_resources
from app.gateway.cluster import ClusterView
from app.observability.metrics import GatewayMetrics
from app.scaling.market_calendar import active_profile
from model.common.tasks import run_every

log = structlog.get_logger("app.gateway.serving_view")


def current_profile(config: ServiceConfig) -> str | None:
    cal = config.market_calendar
    if not (cal.enabled and config.serving.autoscaling_enabled):
        return None
    return active_profile(exchange=cal.exchange, prescale_minutes=cal.prescale_minutes)


def serving_view(config: ServiceConfig) -> dict[str, Any]:
    res = replica_resources(config)
    return {
        "resource_tier": config.serving.resource_tier or "custom (spec 2.1 resources)",
        "predictor_resources": asdict(res),
        "ingress": config.serving.ingress,
        "autoscaling_enabled": config.serving.autoscaling_enabled,
        "autoscaling_profile": current_profile(config),
    }


async def keep_gauges_current(
    config: ServiceConfig,
    metrics: GatewayMetrics,
    cluster: ClusterView,
    period_s: float = 10.0,
    on_replicas: Callable[[dict[str, int]], None] = lambda _: None,
) -> None:
    """``on_replicas`` hears each fresh count (the batcher sizes its batches in flight)."""

    async def update() -> None:
        # In a thread: the calendar's first table (pandas and exchange_calendars, ~0.5 s)
        # and its rebuild near the table's end must never stall the loop that serves.
        profile = await asyncio.to_thread(current_profile, config)
        if profile is not None:
            metrics.set_profile(profile)
        counts = await cluster.replicas()
        for deployment, n in counts.items():
            metrics.set_replicas(deployment, n)
        on_replicas(counts)

    # A calendar or controller hiccup is logged and tried again next period.
    await run_every(period_s, update, log=log, event="serving_gauges_update_failed")
