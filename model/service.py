"""The predictor's work, without Ray: load, validate, warm, cache versions, run batches.

:mod:`model.deployment` wraps this in a Serve deployment; tests and the GPU check use it
directly. Every public method is synchronous and thread-safe enough for one forward at a
time (the deployment runs batches one after another on a worker thread).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from cachetools import TTLCache

from model.errors import ArtifactValidationError, ModelNotFoundError, RegistryError
from model.features import NUM_FEATURES, WINDOW
from model.protocol import BatchResult, PredictBatch, PredictorStatus
from model.refs import ModelRef
from model.registry import ModelRegistry

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
    gpu: dict[str, Any] = field(default_factory=dict)  # model.runtime.GpuOptions fields


class PredictorService:
    def __init__(self, settings: PredictorSettings) -> None:
        from model import runtime  # deferred: importing this module must not pull in torch

        self._runtime = runtime
        self._gpu = runtime.GpuOptions(**settings.gpu)
        self.settings = settings
        self.registry = ModelRegistry(settings.registry_path)
        self.replica = f"{os.uname().nodename}:{os.getpid()}"
        self._stage = "loading"
        self._error: str | None = None
        self._default: LoadedModel | None = None
        # Spec 4.2 model cache: other versions requested explicitly (a pinned version, a
        # green rollout). The version in service is held outside it so a TTL expiry can
        # never unload the model that carries the traffic.
        self._cache: TTLCache[str, LoadedModel] = TTLCache(
            maxsize=settings.model_cache_max_entries, ttl=settings.model_cache_ttl_s
        )
        self._load_lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0
        self.batches = 0
        self.rows = 0
        if settings.torch_threads:
            runtime.configure_threads(settings.torch_threads)

    # -- lifecycle --------------------------------------------------------------------

    def load_default(self) -> ModelRef:
        """Resolve, load, validate and warm the default model; raise if any stage fails."""
        try:
            self._stage = "loading"
            ref = self._resolve_default()
            model = self._load(ref)
            self._stage = "warming"
            model.warmup(self.settings.warmup_batch_sizes)
        except Exception as exc:
            self._stage = "failed"
            self._error = f"{type(exc).__name__}: {exc}"
            raise
        self._default = model
        self._stage = "ready"
        self._error = None
        log.info("model_ready", extra={"model": ref.key, "device": str(model.device)})
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
        self._stage = "validating" if self.settings.validation_enabled else "loading"
        return self._runtime.load_model(
            self.registry,
            ref,
            device=self.settings.device,
            gpu_options=self._gpu,
            validate=self.settings.validation_enabled,
        )

    def status(self) -> PredictorStatus:
        model = self._default
        return PredictorStatus(
            ready=self._stage == "ready" and model is not None,
            stage=self._stage,
            model=model.ref if model else None,
            device=str(model.device) if model else self.settings.device,
            error=self._error,
            replica=self.replica,
            loaded_models=tuple(sorted(self._cache.keys())),
            extra={
                "model_cache_hits": self.cache_hits,
                "model_cache_misses": self.cache_misses,
                "batches": self.batches,
                "rows": self.rows,
            },
        )

    @property
    def default_ref(self) -> ModelRef | None:
        return self._default.ref if self._default else None

    # -- serving ----------------------------------------------------------------------

    def model_for(self, ref: ModelRef) -> LoadedModel:
        """The loaded model for exactly ``ref`` (same sha256), loading it if needed."""
        default = self._default
        if default is not None and default.ref == ref:
            return default
        cached = self._cache.get(ref.key)
        if cached is not None and cached.ref == ref:
            self.cache_hits += 1
            return cached
        with self._load_lock:
            cached = self._cache.get(ref.key)
            if cached is not None and cached.ref == ref:
                self.cache_hits += 1
                return cached
            self.cache_misses += 1
            current = self.registry.resolve(ref.name, ref.version)
            if current != ref:
                # The registry moved under the caller (re-published weights): refuse
                # rather than answer with weights the caller did not ask for.
                raise ModelNotFoundError(f"model {ref.key} is no longer in the registry")
            model = self._load(ref)
            model.warmup((1,))
            self._stage = "ready" if self._default is not None else self._stage
            self._cache[ref.key] = model
            return model

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
        for ref, indices in groups.items():
            try:
                model = self.model_for(ref)
                parts = [_check_shape(batches[i].features) for i in indices]
                stacked = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
                t0 = time.perf_counter()
                outputs = model.predict(stacked)
                model_ms = (time.perf_counter() - t0) * 1000.0
            except (RegistryError, ArtifactValidationError, ValueError) as exc:
                for i in indices:
                    results[i] = exc
                continue
            self.batches += 1
            self.rows += int(stacked.shape[0])
            offset = 0
            for i, part in zip(indices, parts, strict=True):
                n = part.shape[0]
                results[i] = BatchResult(
                    ref=ref,
                    outputs=outputs[offset : offset + n],
                    forward_rows=int(stacked.shape[0]),
                    model_ms=model_ms,
                    predictor_wait_ms=(t0 - arrived) * 1000.0,
                    replica=self.replica,
                )
                offset += n
        if self._default is not None:
            self._default.maybe_cleanup()
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
