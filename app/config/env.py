"""Environment variables of spec section 8, read in one place.

Nothing reads the environment at import time: call :func:`load_service_config` (or build
``Settings()``) where a process starts. Spec 8 variables override the matching keys of the
YAML configuration file, so an operator can change one knob without editing the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.config.service import ServiceConfig, load_config_file


class Settings(BaseSettings):
    """Spec 8.1 (required) and 8.2 (optional) variables, with the spec's defaults."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    # 8.1
    MODEL_REGISTRY_PATH: Path = Path("/models")
    RAY_ADDRESS: str = "auto"
    DEVICE: Literal["cpu", "gpu"] = "cpu"
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # 8.2
    MAX_BATCH_SIZE: int = Field(32, ge=1, le=4096)
    BATCH_TIMEOUT_MS: float = Field(10, ge=0, le=10_000)
    CACHE_TTL_SECONDS: float = Field(3600, gt=0)
    # Not in the spec: which YAML file to read (laid out like the spec's sections).
    CNNLSTM_CONFIG: Path | None = None

    @field_validator("DEVICE", mode="before")
    @classmethod
    def _device_lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _level_upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    def apply_to(self, config: ServiceConfig) -> ServiceConfig:
        """Return ``config`` with the environment's values laid over the matching keys."""
        explicit = self.model_fields_set
        updated = config.model_copy(deep=True)
        # The file's values stand unless the variable is set: both carry the spec's
        # defaults (/models, INFO), so an unset variable must not undo the file.
        if "MODEL_REGISTRY_PATH" in explicit:
            updated.model_registry.path = self.MODEL_REGISTRY_PATH
        if "LOG_LEVEL" in explicit:
            updated.logging.level = self.LOG_LEVEL
        if "MAX_BATCH_SIZE" in explicit:
            updated.batching.max_batch_size = self.MAX_BATCH_SIZE
        if "BATCH_TIMEOUT_MS" in explicit:
            updated.batching.batch_wait_timeout_s = self.BATCH_TIMEOUT_MS / 1000.0
        if "CACHE_TTL_SECONDS" in explicit:
            updated.caching.model_cache.ttl_seconds = self.CACHE_TTL_SECONDS
        return updated


def load_service_config(config_path: Path | str | None = None) -> tuple[Settings, ServiceConfig]:
    """Read the environment and the YAML file (argument, else ``CNNLSTM_CONFIG``)."""
    settings = Settings()
    path = config_path if config_path is not None else settings.CNNLSTM_CONFIG
    return settings, settings.apply_to(load_config_file(path))
