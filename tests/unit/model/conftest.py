"""Shared fixtures for the model unit tests: a registry holding one seeded random artifact."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.common.refs import ModelRef
from model.common.registry import ModelRegistry
from model.export import make_random_artifact


@pytest.fixture
def registry_root(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def random_ref(registry_root: Path) -> ModelRef:
    """``cnn_lstm:0.0.1``, random-init weights (seed 0), published as the default."""
    return make_random_artifact(registry_root, name="cnn_lstm", version="0.0.1", seed=0)


@pytest.fixture
def registry(registry_root: Path, random_ref: ModelRef) -> ModelRegistry:
    return ModelRegistry(registry_root)
