"""The per-replica resources in force: spec 2.1's, or the spec 2.2 tier the config names."""

from __future__ import annotations

from dataclasses import dataclass

from app.config.service import ServiceConfig


@dataclass(frozen=True)
class ReplicaResources:
    """Per-replica resources from spec 2.1, or from the spec 2.2 tier in force."""

    num_cpus: float
    memory: int
    num_gpus: float
    object_store_memory: int
    max_replicas: int | None  # a tier caps the replica count; plain resources do not


def replica_resources(config: ServiceConfig) -> ReplicaResources:
    base = config.resources
    name = config.serving.resource_tier
    if name is None:
        return ReplicaResources(
            base.num_cpus, base.memory, base.num_gpus, base.object_store_memory, None
        )
    tier = config.resource_tiers[name]
    return ReplicaResources(
        tier.num_cpus, tier.memory, tier.num_gpus, base.object_store_memory, tier.max_replicas
    )
