"""Spec section 2: what is deployed, its per-replica resources, and the resource tiers."""

from __future__ import annotations

from pydantic import Field

from app.config.base import Section


class DeploymentInfo(Section):
    deployment_name: str = "cnn_lstm_predictor"
    version: str = "1.0.0"
    description: str = "CNN+LSTM Hybrid Model Deployment for Trading Platform"


class Resources(Section):
    num_cpus: float = Field(2, ge=0)
    memory: int = Field(2147483648, ge=0)
    object_store_memory: int = Field(1073741824, ge=0)
    num_gpus: float = Field(0.5, ge=0)


class ResourceTier(Section):
    num_cpus: float = Field(ge=0)
    memory: int = Field(ge=0)
    num_gpus: float = Field(ge=0)
    max_replicas: int = Field(ge=1)


def default_resource_tiers() -> dict[str, ResourceTier]:
    return {
        "small": ResourceTier(num_cpus=1, memory=1073741824, num_gpus=0.25, max_replicas=5),
        "medium": ResourceTier(num_cpus=2, memory=2147483648, num_gpus=0.5, max_replicas=15),
        "large": ResourceTier(num_cpus=4, memory=4294967296, num_gpus=1.0, max_replicas=30),
    }
