"""What crosses the handle between the gateway and the predictor. No torch here.

The gateway batches requests itself and sends one :class:`PredictBatch` per handle call
(one model version, many rows); the predictor's ``@serve.batch`` merges calls from several
gateway replicas, counting rows rather than calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model.common.errors import ArtifactValidationError, ModelNotFoundError
from model.common.failures import FailureKind
from model.common.faults import INJECTED_FAULT_MESSAGE, InjectedFaultError
from model.common.refs import ModelRef


@dataclass(frozen=True, slots=True)
class PredictBatch:
    """Raw feature windows ``[rows, WINDOW, NUM_FEATURES]`` for one pinned model version."""

    ref: ModelRef
    features: np.ndarray
    # The gateway requests whose rows these are, each once and in row order (a 32-item
    # /predict/batch is one id), for the predictor's batch line.
    request_ids: tuple[str, ...] = ()
    # A keep-warm call (app.gateway.keep_warm): served like any other, counted nowhere
    # (no rows served, no batch line, no metrics), so an idle replica's path stays warm
    # without the traffic showing up as traffic.
    warm: bool = False

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Per-row outputs ``[rows, 2]``: expected log return, probability of an up move."""

    ref: ModelRef
    outputs: np.ndarray
    forward_rows: int  # rows in the forward pass this batch rode in (>= its own rows)
    model_ms: float  # time of that forward pass
    horizon_bars: int  # the version's prediction horizon (from its manifest)
    predictor_wait_ms: float = 0.0  # time between arrival at the replica and the forward
    replica: str = ""


@dataclass(frozen=True, slots=True)
class PredictorStatus:
    """What the predictor reports to ``/ready`` and ``/stats``."""

    ready: bool
    stage: str  # "loading" | "validating" | "warming" | "ready" | "failed"
    model: ModelRef | None = None
    device: str = "cpu"
    # The in-service model's numerics ("fp32" | "bf16"; None until one is loaded) and why
    # it runs fp32 where bf16 was wanted (its golden check failed under bf16).
    numerics: str | None = None
    numerics_fallback: str | None = None
    # The engine its CPU forwards run on ("torch" | "onnxruntime" | "onnxruntime<=N+torch":
    # up to N rows on ONNX Runtime, torch above; model.engine) and why it is torch where
    # ONNX Runtime was wanted.
    engine: str | None = None
    engine_fallback: str | None = None
    error: str | None = None
    replica: str = ""
    loaded_models: tuple[str, ...] = ()
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PredictError:
    """A typed failure returned (not raised) across the handle, so the gateway can map it
    to a status without unpickling exception classes from another process."""

    kind: FailureKind
    message: str


@dataclass(frozen=True, slots=True)
class Routing:
    """Which versions serve, from the rollout controller (``app.control.rollout_controller``).

    Gateways read it to split traffic; predictors read it to keep the right versions
    loaded and warm before any request for them arrives.
    """

    blue: ModelRef | None  # in service: what requests that name no version get
    green: ModelRef | None = None  # the candidate while a rollout is preparing or shifting
    green_weight_pct: float = 0.0
    # Versions every predictor should hold loaded, validated and warm: blue, green and a
    # version registry sync is about to switch to.
    preload: tuple[ModelRef, ...] = ()
    phase: str = "idle"
    revision: int = 0  # bumps on every change, so followers can tell a new decision
    # Share of the rows blue answers that gateways also score on green, off the response
    # path, to compare the two (a shadowing rollout, and its traffic steps).
    shadow_pct: float = 0.0

    def to_json(self) -> dict[str, object]:
        """The routing as ``/stats``, ``rollout status`` and the state file show it."""

        def ref(r: ModelRef | None) -> dict[str, str] | None:
            return None if r is None else r.to_json()

        return {
            "blue": ref(self.blue),
            "green": ref(self.green),
            "green_weight_pct": self.green_weight_pct,
            "preload": [p.to_json() for p in self.preload],
            "phase": self.phase,
            "revision": self.revision,
            "shadow_pct": self.shadow_pct,
        }


def as_predict_error(exc: Exception) -> PredictError:
    """The typed error a predictor returns across the handle for a failure in one call."""
    if isinstance(exc, InjectedFaultError):
        return PredictError(FailureKind.UNAVAILABLE, INJECTED_FAULT_MESSAGE)
    if isinstance(exc, ModelNotFoundError):
        return PredictError(FailureKind.MODEL_NOT_FOUND, str(exc))
    if isinstance(exc, ArtifactValidationError):
        return PredictError(FailureKind.INVALID_MODEL, str(exc))
    if isinstance(exc, ValueError):
        return PredictError(FailureKind.INVALID_FEATURES, str(exc))
    return PredictError(FailureKind.UNAVAILABLE, type(exc).__name__)
