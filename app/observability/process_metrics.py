"""The registry every gateway process starts from: process, GC and platform collectors."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)


def new_registry() -> CollectorRegistry:
    """A registry with process, GC and platform collectors (GC pauses stall the tails)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
