"""Fixtures for the observability tests: isolated logging and a fresh metrics registry."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog
from prometheus_client import CollectorRegistry

from app.config import Logging, Metrics
from app.observability import fast_line
from app.observability.logging import configure_logging
from app.observability.metrics import GatewayMetrics
from app.observability.process_metrics import new_registry
from tests.unit.observability.log_capture import LogLines, parse_lines


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    component = fast_line.json_component()
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "fastapi", "ray", "ray.serve", "httpx")
    libs = {
        name: (
            list(logging.getLogger(name).handlers),
            logging.getLogger(name).propagate,
            logging.getLogger(name).level,
        )
        for name in names
    }
    yield
    for h in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(h)
        h.close()
    root.setLevel(level)
    for name, (lib_handlers, propagate, lib_level) in libs.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = lib_handlers
        logger.propagate = propagate
        logger.setLevel(lib_level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    fast_line.use_json(component)


@pytest.fixture
def log_lines() -> LogLines:
    """JSON logging into a buffer; calling the fixture's value parses what was written."""
    buf = io.StringIO()
    configure_logging(Logging(), component="test", stream=buf)
    return lambda: parse_lines(buf.getvalue())


@pytest.fixture
def registry() -> CollectorRegistry:
    return new_registry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> GatewayMetrics:
    return GatewayMetrics(registry, Metrics())
