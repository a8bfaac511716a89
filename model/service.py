"""The predictor's work, without Ray: load, validate, warm, cache versions, run batches.

:mod:`model.deployment` wraps this in a Serve deployment; tests and the GPU check use it
directly. Every public method is synchronous and thread-safe enough for one forward at a
time (the deployment runs batches one after another on a worker thread, and preloads
versions the rollout controller asks for on another).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from model.common.errors import ArtifactValidationError, ModelNotFoundError, RegistryError
from model.common.faults import FaultInjector, InjectedFaultError
from model.common.features import NUM_FEATURES, WINDOW
from model.common.gpu import GpuOptions
from model.common.protocol import BatchResult, PredictBatch, PredictorStatus
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry
from model.versions import LoadedVersions

if TYPE_CHECKING:  # torch is imported only where a model is really loaded
    from model.runtime import LoadedModel

log = logging.getLogger("model.service")


@dataclass(frozen=True)
class PredictorSettings:
    """Plain values the gateway side hands over (so ``model/`` never imports ``app/``)."""

    registry_path: str
    device: str = "cpu"
    default_model: str = "cnn_lstm"
    default_version: str | None = None
    validation_enabled: bool = True
    model_cache_ttl_s: float = 3600.0
    model_cache_max_entries: int = 100
    warmup_batch_sizes: tuple[int, ...] = (1, 8, 32)
    model_wait_s: float = 0.0  # how long a starting replica waits for the model to appear
    torch_threads: int | None = None
    # "auto" | "fp32" | "bf16" (model.numerics): auto takes bf16 autocast on a CPU with
    # native bf16 once the golden sample agrees under it, fp32 otherwise.
    numerics: str = "auto"
    # "auto" | "torch" | "onnxruntime" (model.engine): auto runs the CPU forwards of the
    # sizes where ONNX Runtime measured faster than torch at load on it (fp32), once its
    # golden check agrees.
    engine: str = "auto"
    gpu: GpuOptions = field(default_factory=GpuOptions)
    # Chaos/testing switch (model.common.faults): "name:version" -> fraction of calls that fail.
    fault_injection: dict[str, float] = field(default_factory=dict)
    # How often the replica asks the rollout controller which versions to hold.
    routing_poll_s: float = 2.0
    # Serve replicas only (model.deployment): also answer calls on a same-node Unix socket.
    same_node_socket: bool = False
    socket_drain_s: float = 5.0  # how long a stopping replica answers its socket's calls
    # Serve replicas only (model.deployment): an idle CPU replica runs a call of at most
    # this many rows on its event loop at once, skipping the batch queue and the worker
    # thread; 0: every call takes the queue.
    inline_idle_rows: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PredictorSettings:
        """From the plain mapping ``app.serve.predictor_settings`` builds (it crosses Ray
        as plain values): ``gpu`` holds the :class:`GpuOptions` fields."""
        values = dict(data)
        if "warmup_batch_sizes" in values:
            values["warmup_batch_sizes"] = tuple(values["warmup_batch_sizes"])
        if "gpu" in values:
            values["gpu"] = GpuOptions(**values["gpu"])
        return cls(**values)


class PredictorService:
    def __init__(self, settings: PredictorSettings) -> None:
        from model import runtime  # deferred: importing this module must not pull in torch

        self._runtime = runtime
        self.settings = settings
        self.registry = ModelRegistry(settings.registry_path)
        self.replica = f"{os.uname().nodename}:{os.getpid()}"
        self._stage = "loading"
        self._error: str | None = None
        # The version in service is held outside the TTL model cache so an expiry can
        # never unload the model that carries the traffic (model.versions).
        self.versions = LoadedVersions(
            ttl_s=settings.model_cache_ttl_s, max_entries=settings.model_cache_max_entries
        )
        self._load_lock = threading.Lock()  # one load at a time; lookups never wait on it
        self.faults = FaultInjector(settings.fault_injection)
        self.cache_hits = 0
        self.cache_misses = 0
        self.batches = 0
        self.rows = 0
        if settings.torch_threads:
            runtime.configure_threads(settings.torch_threads)

    # -- lifecycle --------------------------------------------------------------------

    def load_default(self, ref: ModelRef | None = None) -> ModelRef:
        """Load, validate and warm ``ref`` (else the registry's default) as the version in
        service; raise if any stage fails."""
        try:
            self._stage = "loading"
            ref = ref or self._resolve_default()
            self._stage = "validating" if self.settings.validation_enabled else "loading"
            model = self._load(ref)
            self._stage = "warming"
            model.warmup(self.settings.warmup_batch_sizes)
        except Exception as exc:
            self._stage = "failed"
            self._error = f"{type(exc).__name__}: {exc}"
            raise
        self.versions.set_default(model)
        self._stage = "ready"
        self._error = None
        log.info(
            "model_ready",
            extra={
                "model": ref.key,
                "device": str(model.device),
                "numerics": model.numerics.name,
                "numerics_fallback": model.numerics.fallback,
                "engine": model.engine.name,
                "engine_fallback": model.engine.fallback,
            },
        )
        return ref

    def _resolve_default(self) -> ModelRef:
        # A replica may start before the registry volume is populated (a fresh cluster, a
        # sync still running): wait for the model rather than crash-loop.
        deadline = time.monotonic() + self.settings.model_wait_s
        while True:
            try:
                return self.registry.resolve(
                    self.settings.default_model, self.settings.default_version
                )
            except ModelNotFoundError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def _load(self, ref: ModelRef) -> LoadedModel:
        # No stage change here: loading another version beside the default must not make
        # the replica look unready (the gateway would answer 503 meanwhile).
        return self._runtime.load_model(
            self.registry,
            ref,
            device=self.settings.device,
            gpu_options=self.settings.gpu,
            validate=self.settings.validation_enabled,
            numerics=self.settings.numerics,
            engine=self.settings.engine,
        )

    def status(self) -> PredictorStatus:
        model = self.versions.default
        return PredictorStatus(
            ready=self.ready,
            stage=self._stage,
            model=model.ref if model else None,
            device=str(model.device) if model else self.settings.device,
            numerics=model.numerics.name if model else None,
            numerics_fallback=model.numerics.fallback if model else None,
            engine=model.engine.name if model else None,
            engine_fallback=model.engine.fallback if model else None,
            error=self._error,
            replica=self.replica,
            loaded_models=tuple(sorted(ref.key for ref in self.versions.refs())),
            extra={
                "model_cache_hits": self.cache_hits,
                "model_cache_misses": self.cache_misses,
                "batches": self.batches,
                "rows": self.rows,
                "injected_fault_calls": self.faults.injected_calls,
                "injected_fault_rows": self.faults.injected_rows,
            },
        )

    @property
    def ready(self) -> bool:
        """What ``status().ready`` says, without building a status (checked per call)."""
        return self._stage == "ready" and self.versions.default is not None

    @property
    def default_ref(self) -> ModelRef | None:
        model = self.versions.default
        return model.ref if model else None

    # -- versions ---------------------------------------------------------------------

    def _ensure(self, ref: ModelRef, warm: tuple[int, ...]) -> tuple[LoadedModel, bool]:
        """``ref`` loaded, validated and warm, loading it if needed (one load at a time).
        Returns the model and whether it was already loaded."""
        model = self.versions.get(ref)
        if model is not None:
            return model, True
        with self._load_lock:
            model = self.versions.get(ref)
            if model is not None:
                return model, True
            current = self.registry.resolve(ref.name, ref.version)
            if current != ref:
                # The registry moved under the caller (re-published weights): refuse
                # rather than answer with weights the caller did not ask for.
                raise ModelNotFoundError(f"model {ref.key} is no longer in the registry")
            model = self._load(ref)
            model.warmup(warm)
            self.versions.add(model)
            return model, False

    def model_for(self, ref: ModelRef) -> LoadedModel:
        """The loaded model for exactly ``ref`` (same sha256), loading it if needed."""
        model, hit = self._ensure(ref, (1,))
        if model is not self.versions.default:
            if hit:
                self.cache_hits += 1
            else:
                self.cache_misses += 1
        return model

    def preload(self, ref: ModelRef) -> ModelRef:
        """Load, validate and warm ``ref`` ahead of its traffic and pin it (no TTL).
        Raises (RegistryError, ArtifactValidationError, ...) when it cannot be served."""
        model, _ = self._ensure(ref, self.settings.warmup_batch_sizes)
        self.versions.pin(model)
        return ref

    def retain(self, refs: list[ModelRef]) -> None:
        """Pin exactly ``refs`` among the loaded versions (the rest drop to the TTL cache)."""
        self.versions.retain({ref.key for ref in refs})

    def promote(self, ref: ModelRef) -> None:
        """Make ``ref`` the version in service, loading it first if it is not loaded: the
        old default answers until the new one is ready."""
        model, _ = self._ensure(ref, self.settings.warmup_batch_sizes)
        if self.versions.set_default(model) is not None:
            log.info("model_in_service", extra={"model": ref.key})

    # -- serving ----------------------------------------------------------------------

    def predict_batches(self, batches: list[PredictBatch]) -> list[BatchResult | Exception]:
        """Run every call of one ``@serve.batch`` round; one forward per model version.

        Results keep the order of ``batches``. A failure for one model version (unknown
        or invalid artifact) is returned in that call's slot, never mixed into another's.
        """
        arrived = time.perf_counter()
        groups: dict[ModelRef, list[int]] = {}
        for i, batch in enumerate(batches):
            groups.setdefault(batch.ref, []).append(i)
        results: list[BatchResult | Exception] = [RuntimeError("unprocessed") for _ in batches]
        for ref, all_indices in groups.items():
            indices, parts = [], []
            for i in all_indices:
                # Injected faults are for traffic; a keep-warm call never takes one.
                if not batches[i].warm and self.faults.should_fail(ref, batches[i].rows):
                    results[i] = InjectedFaultError()
                    continue
                try:
                    # Checked per call: one caller's malformed features fail that call
                    # only, not the calls that share its forward.
                    parts.append(_check_shape(batches[i].features))
                except ValueError as exc:
                    results[i] = exc
                    continue
                indices.append(i)
            if not indices:
                continue
            try:
                model = self.model_for(ref)
                stacked = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
                t0 = time.perf_counter()
                outputs = model.predict(stacked)
                model_ms = (time.perf_counter() - t0) * 1000.0
            except (RegistryError, ArtifactValidationError, ValueError) as exc:
                for i in indices:
                    results[i] = exc
                continue
            served = sum(batches[i].rows for i in indices if not batches[i].warm)
            if served:  # keep-warm rows are not traffic (autoscaling reads ``rows``)
                self.batches += 1
                self.rows += served
            offset = 0
            for i, part in zip(indices, parts, strict=True):
                n = part.shape[0]
                results[i] = BatchResult(
                    ref=ref,
                    outputs=outputs[offset : offset + n],
                    forward_rows=int(stacked.shape[0]),
                    model_ms=model_ms,
                    horizon_bars=model.manifest.horizon_bars,
                    predictor_wait_ms=(t0 - arrived) * 1000.0,
                    replica=self.replica,
                )
                offset += n
        default = self.versions.default
        if default is not None:
            default.maybe_cleanup()
        return results


def _check_shape(features: np.ndarray) -> np.ndarray:
    if features.ndim != 3 or features.shape[1:] != (WINDOW, NUM_FEATURES):
        raise ValueError(
            f"features must be [rows, {WINDOW}, {NUM_FEATURES}], got {list(features.shape)}"
        )
    arr = np.ascontiguousarray(features, dtype=np.float32)
    # Arrays arriving through Ray's object store are read-only views; torch wants to own
    # writable memory (and warns otherwise). 64x16 floats a row: the copy is cheap.
    return arr if arr.flags.writeable else arr.copy()
