"""Fixtures for the security unit tests: material on disk and an in-process client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.security_app import (
    MakeMaterial,
    SecurityMaterial,
    asgi_client,
    write_security_material,
)


@pytest.fixture
def make_material(tmp_path: Path) -> MakeMaterial:
    """Security material with config ``overrides`` (TLS off: no certificates in unit tests)."""

    def make(overrides: dict[str, Any] | None = None) -> SecurityMaterial:
        return write_security_material(tmp_path, overrides=overrides)

    return make


@pytest.fixture
def material(make_material: MakeMaterial) -> SecurityMaterial:
    return make_material()


@pytest.fixture
async def client(material: SecurityMaterial) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(material.config) as c:
        yield c
