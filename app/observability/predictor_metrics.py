"""Series that describe the predictor as its status reports show it (no torch here).

The gateway polls :class:`model.common.protocol.PredictorStatus` (``app.gateway.readiness``);
:meth:`PredictorInfo.update` turns each report into gauges, so ``/metrics`` shows what the
predictor runs without a scrape of its own.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from model.common.protocol import PredictorStatus


class PredictorInfo:
    """``model_numerics_info{numerics, fallback}``: 1 for the numerics the model in service
    runs in ("fp32" | "bf16"); ``fallback="true"`` when it runs fp32 because its golden
    check failed under bf16 (``/stats`` says why). ``model_engine_info{engine, fallback}``
    likewise for the engine of its CPU forwards ("torch" | "onnxruntime"; ``fallback="true"``
    when ONNX Runtime was wanted and torch runs). No series until a model is loaded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.numerics_info = Gauge(
            "model_numerics_info",
            "1 for the numerics the predictor's model in service runs in (fp32, bf16)",
            ["numerics", "fallback"],
            registry=registry,
        )
        self.engine_info = Gauge(
            "model_engine_info",
            "1 for the engine the predictor's model in service runs on (torch, onnxruntime)",
            ["engine", "fallback"],
            registry=registry,
        )
        self._numerics: tuple[str, str] | None = None
        self._engine: tuple[str, str] | None = None

    def update(self, status: PredictorStatus) -> None:
        """Follow one status report; a report without numerics (no model yet, predictor
        unreachable) keeps the last known series rather than flapping it away."""
        if status.numerics is not None:
            labels = (status.numerics, "true" if status.numerics_fallback else "false")
            if labels != self._numerics:
                self.numerics_info.clear()
                self.numerics_info.labels(*labels).set(1)
                self._numerics = labels
        if status.engine is not None:
            labels = (status.engine, "true" if status.engine_fallback else "false")
            if labels != self._engine:
                self.engine_info.clear()
                self.engine_info.labels(*labels).set(1)
                self._engine = labels

    @property
    def numerics(self) -> str | None:
        """The numerics last reported, for ``/stats`` and tests."""
        return self._numerics[0] if self._numerics else None

    @property
    def engine(self) -> str | None:
        """The engine last reported, for tests."""
        return self._engine[0] if self._engine else None
