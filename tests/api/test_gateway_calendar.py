"""The market calendar's table (pandas and exchange_calendars: ~0.5 s to import and build)
is made before a gateway takes traffic, and never on the event loop that serves."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, cast

from app.config import ServiceConfig
from app.gateway import serving_view
from app.gateway import state as gateway_state
from app.gateway.cluster import StaticCluster
from app.gateway.state import build_gateway_state
from app.observability.metrics import GatewayMetrics
from model.export import make_random_artifact
from tests.fakes import FakePredictor
from tests.support.security_app import write_security_material

SLOW_S = 0.3  # a first calendar build, on a slow day


class _Gauges:
    def __init__(self) -> None:
        self.profiles: list[str] = []

    def set_profile(self, profile: str) -> None:
        self.profiles.append(profile)

    def set_replicas(self, deployment: str, n: int) -> None:
        pass


def _slow_profile(calls: list[str]) -> Any:
    def profile(config: ServiceConfig) -> str:
        calls.append(threading.current_thread().name)
        time.sleep(SLOW_S)  # holds its thread, as an import and a table build do
        return "off_hours"

    return profile


async def test_the_gauges_build_the_calendar_off_the_serving_loop(
    tmp_path: Path, monkeypatch: Any
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(serving_view, "current_profile", _slow_profile(calls))
    config = write_security_material(tmp_path).config
    gauges = _Gauges()
    task = asyncio.create_task(
        serving_view.keep_gauges_current(
            config, cast(GatewayMetrics, gauges), StaticCluster(), period_s=60
        )
    )
    gaps: list[float] = []
    last = start = time.perf_counter()
    while not gauges.profiles and time.perf_counter() - start < 5:
        await asyncio.sleep(0.005)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    task.cancel()
    assert gauges.profiles == ["off_hours"]
    assert len(calls) == 1
    assert calls[0] != threading.current_thread().name
    # The loop kept turning while the build ran: nothing waited the build's 300 ms.
    assert max(gaps) < SLOW_S / 3


async def test_a_gateway_has_its_calendar_before_it_takes_traffic(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Serve routes requests to a replica once its lifespan (``state.start``) returns."""
    calls: list[str] = []
    monkeypatch.setattr(gateway_state, "current_profile", _slow_profile(calls))
    ref = make_random_artifact(tmp_path / "models", version="1.0.0", seed=3)
    config = write_security_material(
        tmp_path, overrides={"model_registry": {"path": str(tmp_path / "models")}}
    ).config
    fake = FakePredictor(ref=ref)
    state = build_gateway_state(
        config, dispatch=fake.dispatch, probe=fake.status, cluster=StaticCluster()
    )
    await state.start()
    try:
        assert len(calls) == 1
        assert calls[0] != threading.current_thread().name  # in a thread, not on the loop
    finally:
        await state.stop()
