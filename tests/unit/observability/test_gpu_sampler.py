"""GpuSampler: readings into the sink when NVML works; silence when it does not."""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace
from typing import Any

from app.observability.gpu import GpuSampler, _load_nvml


class FakeNvml:
    def __init__(self, utils: list[int], *, fail: bool = False) -> None:
        self.utils = utils
        self.fail = fail

    def nvmlDeviceGetCount(self) -> int:
        if self.fail:
            raise RuntimeError("GPU is lost")
        return len(self.utils)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=self.utils[handle], memory=0)


def test_sample_sends_each_gpu_reading_to_the_sink() -> None:
    seen: dict[str, float] = {}
    sampler = GpuSampler(seen.__setitem__, nvml_loader=lambda: FakeNvml([35, 90]))
    assert sampler.sample() == {"0": 35.0, "1": 90.0}
    assert seen == {"0": 35.0, "1": 90.0}


def test_no_nvml_means_no_readings_and_no_thread() -> None:
    seen: dict[str, float] = {}
    sampler = GpuSampler(seen.__setitem__, nvml_loader=lambda: None)
    assert sampler.available is False
    assert sampler.sample() == {}
    assert sampler.start() is False
    assert seen == {}


def test_nvml_failure_mid_run_is_swallowed() -> None:
    seen: dict[str, float] = {}
    sampler = GpuSampler(seen.__setitem__, nvml_loader=lambda: FakeNvml([1], fail=True))
    assert sampler.sample() == {}
    assert seen == {}


def test_background_thread_samples_until_stopped() -> None:
    seen: dict[str, float] = {}
    sampler = GpuSampler(seen.__setitem__, interval_s=0.01, nvml_loader=lambda: FakeNvml([50]))
    assert sampler.start() is True
    deadline = time.monotonic() + 2
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.stop()
    assert seen == {"0": 50.0}


def test_loader_returns_none_without_pynvml(monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert _load_nvml() is None
