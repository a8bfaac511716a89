"""Series that describe the predictor as its status reports show it (no torch here).

The gateway polls :class:`model.common.protocol.PredictorStatus` (``app.gateway.readiness``);
:meth:`PredictorInfo.update` turns each report into gauges, so ``/metrics`` shows what the
predictor runs without a scrape of its own.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from model.common.protocol import PredictorStatus


class _OneSeries:
    """An info gauge holding one series, ``{<name>, fallback}`` = 1, moved on a change."""

    def __init__(self, registry: CollectorRegistry, metric: str, help_text: str, label: str):
        self.gauge = Gauge(metric, help_text, [label, "fallback"], registry=registry)
        self.labels: tuple[str, str] | None = None

    def show(self, value: str | None, fallback: str | None) -> None:
        if value is None:  # not reported: keep the last known series rather than flap
            return
        labels = (value, "true" if fallback else "false")
        if labels != self.labels:
            self.gauge.clear()
            self.gauge.labels(*labels).set(1)
            self.labels = labels

    @property
    def value(self) -> str | None:
        return self.labels[0] if self.labels else None


class PredictorInfo:
    """``model_numerics_info{numerics, fallback}``: 1 for the numerics the model in service
    runs in ("fp32" | "bf16" | "int8"); ``fallback="true"`` when it runs fp32 because the
    bf16 or int8 asked for failed its golden check or could not run (``/stats`` says why).
    ``model_engine_info{engine, fallback}`` likewise for the engine of its CPU forwards
    ("torch" | "onnxruntime" | "onnxruntime<=N+torch": forwards up to N rows on ONNX
    Runtime, torch above; ``fallback="true"`` when ONNX Runtime was wanted and torch runs).
    No series until a model is loaded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._numerics = _OneSeries(
            registry,
            "model_numerics_info",
            "1 for the numerics the predictor's model in service runs in (fp32, bf16, int8)",
            "numerics",
        )
        self._engine = _OneSeries(
            registry,
            "model_engine_info",
            "1 for the engine the predictor's model in service runs on (torch, onnxruntime, "
            "onnxruntime<=N+torch: up to N rows on onnxruntime)",
            "engine",
        )

    def update(self, status: PredictorStatus) -> None:
        """Follow one status report; a report without numerics or engine (no model yet,
        predictor unreachable) keeps the last known series rather than flapping it away."""
        self._numerics.show(status.numerics, status.numerics_fallback)
        self._engine.show(status.engine, status.engine_fallback)

    @property
    def numerics(self) -> str | None:
        """The numerics last reported, for ``/stats`` and tests."""
        return self._numerics.value

    @property
    def engine(self) -> str | None:
        """The engine last reported, for tests."""
        return self._engine.value
