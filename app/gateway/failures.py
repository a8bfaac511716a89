"""The one failure table: what each :class:`FailureKind` means to a client and to ops.

Every failure on the prediction path is raised as :class:`PredictionFailure` (the
window check, version resolution, the batcher, the predictor's typed answer) and reaches
one exception handler (``app.api.errors``), which answers with :func:`rule` for its kind.
The same row says which metric status the failure is counted under and whether it counts
against the model version in the blue/green health check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from model.common.failures import FailureKind

MetricStatus = Literal["client_error", "rejected", "timeout", "error"]


@dataclass(frozen=True, slots=True)
class FailureRule:
    http_status: int
    metric_status: MetricStatus
    # True: the version's fault (predictor errors, timeouts, an unreachable replica) and
    # it counts in green's error rate; False: the client's input, name or deadline, or
    # the gateway shedding load, which says nothing about the version.
    counts_against_version: bool
    retry_after_s: int | None = None
    message: str = ""  # the default message, when the raiser has nothing more precise


FAILURES: dict[FailureKind, FailureRule] = {
    FailureKind.INVALID_BARS: FailureRule(422, "client_error", False, message="invalid bars"),
    FailureKind.TOO_MANY_ITEMS: FailureRule(422, "client_error", False),
    FailureKind.MODEL_NOT_FOUND: FailureRule(404, "client_error", False),
    FailureKind.INVALID_FEATURES: FailureRule(422, "client_error", False),
    FailureKind.DEADLINE_EXCEEDED: FailureRule(
        503, "timeout", False, message="the request deadline passed while queued"
    ),
    FailureKind.QUEUE_FULL: FailureRule(
        429, "rejected", False, retry_after_s=1, message="the prediction queue is full; retry later"
    ),
    FailureKind.NOT_READY: FailureRule(
        503, "rejected", False, retry_after_s=5, message="the model is not loaded yet"
    ),
    FailureKind.INVALID_MODEL: FailureRule(
        503, "error", True, message="the requested model failed validation"
    ),
    FailureKind.TIMEOUT: FailureRule(
        503, "timeout", True, message="the predictor did not answer in time"
    ),
    FailureKind.UNAVAILABLE: FailureRule(
        503, "error", True, retry_after_s=1, message="the predictor is unavailable"
    ),
}


def rule(kind: FailureKind) -> FailureRule:
    return FAILURES[kind]


class PredictionFailure(Exception):
    """A failed prediction: its kind, what to tell the client, and when to retry."""

    def __init__(
        self,
        kind: FailureKind,
        message: str | None = None,
        *,
        details: list[dict[str, Any]] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.kind = kind
        self.rule = FAILURES[kind]
        self.message = message or self.rule.message or kind.value.replace("_", " ")
        super().__init__(self.message)
        self.details = details
        self.retry_after_s = self.rule.retry_after_s if retry_after_s is None else retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}
