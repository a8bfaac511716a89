"""The predictor replica's settings from the service config, in plain values.

Ray-free on purpose: the Serve graph (``app.serve.build``) and the no-Ray benchmark baseline
both build their predictor from this one mapping.
"""

from __future__ import annotations

from typing import Any

from app.config import ServiceConfig
from app.config.env import Settings


def predictor_settings(config: ServiceConfig, settings: Settings) -> dict[str, Any]:
    """Plain values for :class:`model.service.PredictorSettings` (``model`` never imports
    ``app``); ``gpu`` holds the fields of :class:`model.common.gpu.GpuOptions`."""
    return {
        "registry_path": str(config.model_registry.path),
        "device": settings.DEVICE,
        "default_model": config.model_registry.default_model,
        "default_version": None,
        "validation_enabled": config.model_registry.validation_enabled,
        "numerics": config.serving.predictor_numerics,
        "engine": config.serving.predictor_engine,
        "model_wait_s": config.model_registry.wait_for_model_s,
        "model_cache_ttl_s": config.caching.model_cache.ttl_seconds,
        "model_cache_max_entries": config.caching.model_cache.max_entries,
        "fault_injection": dict(config.serving.fault_injection),
        "routing_poll_s": config.blue_green_deployment.predictor_poll_interval_s,
        "gpu": config.gpu_optimization.model_dump(),
        "same_node_socket": config.serving.same_node_socket,
        "inline_idle_rows": config.serving.predictor_inline_idle_rows,
    }
