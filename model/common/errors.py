"""Registry and artifact failures. Pure Python: the gateway maps these to HTTP errors."""

from __future__ import annotations


class RegistryError(Exception):
    """Anything that goes wrong finding, reading or publishing a model artifact."""


class ModelNotFoundError(RegistryError):
    """The requested model name or version is not in the registry."""


class ArtifactValidationError(RegistryError):
    """An artifact exists but is malformed, corrupted or incompatible with this runtime."""
