"""The drain guard against this venv's Ray Serve: the app hears when draining starts."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from app.serve.serve_patches import announce_drain


@pytest.fixture
def restore_drain() -> Any:
    from ray.serve._private import replica

    original = replica.Replica._drain_ongoing_requests
    yield
    replica.Replica._drain_ongoing_requests = original


async def test_the_app_is_told_after_the_draining_period_and_serve_still_waits(
    restore_drain: None,
) -> None:
    from ray.serve._private import replica

    told: list[float] = []
    assert announce_drain(lambda: told.append(time.monotonic()))
    assert announce_drain(lambda: told.append(time.monotonic()))  # re-applied: wraps once
    ongoing = [2]

    def get_num_ongoing_requests() -> int:
        ongoing[0] = max(0, ongoing[0] - 1)  # the taken requests finish one by one
        return ongoing[0]

    fake = SimpleNamespace(
        _deployment_config=SimpleNamespace(graceful_shutdown_wait_loop_s=0.01),
        get_num_ongoing_requests=get_num_ongoing_requests,
    )
    started = time.monotonic()
    await replica.Replica._drain_ongoing_requests(fake, 0.2)  # type: ignore[arg-type]
    assert len(told) == 1, "one callback: the second guard replaced the first"
    assert told[0] - started >= 0.19, "reachable for the whole draining period first"
    assert ongoing == [0], "Serve's own wait for ongoing requests still ran"
