"""How many replicas each deployment runs: what ``/stats`` and the replica gauges show.

The Serve implementation (``app.serve.ingress.ServeCluster``) asks the controller; the API
tests and the no-Ray peer use :class:`StaticCluster`.
"""

from __future__ import annotations

from typing import Protocol


class ClusterView(Protocol):
    """Replica counts and the like; the Serve implementation asks the controller."""

    async def replicas(self) -> dict[str, int]: ...


class StaticCluster:
    def __init__(self, counts: dict[str, int] | None = None) -> None:
        self.counts = counts or {}

    async def replicas(self) -> dict[str, int]:
        return dict(self.counts)
