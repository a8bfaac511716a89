"""Fixtures for the ops tests."""

from __future__ import annotations

import pytest

SPEC8_VARIABLES = (
    "MODEL_REGISTRY_PATH", "LOG_LEVEL", "DEVICE", "CNNLSTM_CONFIG",
    "MAX_BATCH_SIZE", "BATCH_TIMEOUT_MS", "CACHE_TTL_SECONDS",
)  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spec 8 variables from the developer's shell must not leak into the tests."""
    for name in SPEC8_VARIABLES:
        monkeypatch.delenv(name, raising=False)
