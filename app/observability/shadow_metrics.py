"""Series of the shadow comparison: how green's answers compare with blue's, per gateway.

``app.gateway.shadow`` records here as green's shadow answers come back; the rollout
controller judges the same figures, summed over every gateway, for its gates.
Direction agreement in PromQL:
``sum(rate(shadow_rows_total{result="agree"}[5m])) /
sum(rate(shadow_rows_total{result=~"agree|disagree"}[5m]))``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from app.config import Metrics

SHADOW_RESULTS = ("agree", "disagree", "error", "shed")


class ShadowMetrics:
    def __init__(self, registry: CollectorRegistry, config: Metrics) -> None:
        self.rows = Counter(
            "shadow_rows_total",
            "Rows blue answered that were also scored on green: agree / disagree on the "
            "direction (prob_up on the same side of 0.5), error (green failed), shed (not sent)",
            ["result"],
            registry=registry,
        )
        for result in SHADOW_RESULTS:
            self.rows.labels(result)  # every series exists from the start, at 0
        self.abs_diff = Counter(
            "shadow_abs_diff_total",
            "Sum of |green - blue| over compared rows, per output (divide by the compared "
            "rows for the mean absolute difference)",
            ["output"],
            registry=registry,
        )
        for output in ("prob_up", "expected_return"):
            self.abs_diff.labels(output)
        self.latency_ms = Histogram(
            "shadow_green_latency_ms",
            "Green's round trip for a shadow batch, in milliseconds",
            buckets=config.buckets("prediction_latency_ms"),
            registry=registry,
        )

    def compared(self, agree: bool, abs_prob_up: float, abs_expected_return: float) -> None:
        self.rows.labels("agree" if agree else "disagree").inc()
        self.abs_diff.labels("prob_up").inc(abs_prob_up)
        self.abs_diff.labels("expected_return").inc(abs_expected_return)

    def failed(self, rows: int) -> None:
        self.rows.labels("error").inc(rows)

    def shed(self, rows: int) -> None:
        self.rows.labels("shed").inc(rows)
