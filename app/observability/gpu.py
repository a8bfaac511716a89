"""GPU utilisation sampled through NVML, for the ``gpu_utilization`` gauge.

``pynvml`` (package ``nvidia-ml-py``, the ``gpu`` extra) is imported only when sampling
starts, so CPU-only installs never need it. No library, no driver or no GPU means the
sampler does nothing: the gauge stays unset (absent), which dashboards show as "no data"
rather than a misleading 0 %.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import structlog

log = structlog.get_logger("app.observability.gpu")

GpuSink = Callable[[str, float], None]


def _load_nvml() -> ModuleType | None:
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
    except Exception:  # ImportError, NVMLError_LibraryNotFound, driver errors, ...
        return None
    return nvml


class GpuSampler:
    """Reads utilisation of every visible GPU every ``interval_s`` into ``sink(gpu, pct)``."""

    def __init__(
        self,
        sink: GpuSink,
        *,
        interval_s: float = 10.0,
        nvml_loader: Callable[[], Any] = _load_nvml,
    ) -> None:
        self._sink = sink
        self._interval_s = interval_s
        self._loader = nvml_loader
        self._nvml: Any = None
        self._loaded = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        self._ensure_loaded()
        return self._nvml is not None

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._nvml = self._loader()
            self._loaded = True
            if self._nvml is None:
                log.info("gpu_sampler_disabled", reason="NVML or a GPU is not available")

    def sample(self) -> dict[str, float]:
        """One reading per GPU index; empty when NVML is unavailable or fails."""
        self._ensure_loaded()
        nvml = self._nvml
        if nvml is None:
            return {}
        readings: dict[str, float] = {}
        try:
            for i in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                readings[str(i)] = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception as exc:  # a GPU fell off the bus: report, keep serving
            log.warning("gpu_sample_failed", error=type(exc).__name__)
            return {}
        for gpu, pct in readings.items():
            self._sink(gpu, pct)
        return readings

    def start(self) -> bool:
        """Start the background thread; ``False`` (and no thread) when there is no GPU."""
        if not self.available or self._thread is not None:
            return self._thread is not None
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._interval_s + 1)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval_s)
