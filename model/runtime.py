"""Pure-torch model runtime: device choice, the GPU settings, load, validate, predict.

No Ray here: the Serve deployment wraps this, and it is tested and benchmarked alone,
including on GPU machines that have torch but no Ray.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import safetensors
import safetensors.torch
import torch

from model.common.artifact import Manifest, Normalization, check_serving_compatible
from model.common.errors import ArtifactValidationError
from model.common.gpu import GpuOptions
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry
from model.cuda_graphs import DEFAULT_BUCKETS, Capture, GraphedForward, capture_cuda
from model.engine import (
    ALL_ROWS,
    TIMING_ROWS,
    EngineChoice,
    OnnxForward,
    choose_engine,
    compare_ms,
)
from model.int8 import choose_int8, quantize
from model.network import CNNLSTM, build_network
from model.numerics import NumericsChoice, autocast, choose_numerics, cpu_has_native_bf16

log = logging.getLogger(__name__)

_FALLBACK_WARNED = False
_FALLBACK_LOCK = threading.Lock()
# CUDA work from another thread while a graph is being captured would break the capture
# or fail itself (a new version's graphs are captured while the old one serves), so on
# CUDA captures, forwards and cache releases take turns. Reentrant: a capture runs the
# eager forward it checks against.
_CUDA_TURN = threading.RLock()


def _cuda_turn(device: torch.device) -> contextlib.AbstractContextManager[object]:
    return _CUDA_TURN if device.type == "cuda" else contextlib.nullcontext()


def _warn_cpu_fallback(requested: str) -> None:
    global _FALLBACK_WARNED
    with _FALLBACK_LOCK:
        if _FALLBACK_WARNED:
            return
        _FALLBACK_WARNED = True
    message = (
        f"DEVICE={requested!r} requested but CUDA is not available to torch "
        f"{torch.__version__}; running on CPU"
    )
    log.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def resolve_device(requested: str) -> torch.device:
    """``cpu``, ``gpu``/``cuda`` or ``cuda:N``; GPU without CUDA falls back to CPU (warned once)."""
    value = requested.strip().lower()
    if value == "cpu":
        return torch.device("cpu")
    indexed = value.startswith("cuda:") and value[5:].isdigit()
    if value in ("gpu", "cuda") or indexed:
        if not torch.cuda.is_available():
            _warn_cpu_fallback(requested)
            return torch.device("cpu")
        if indexed:
            return torch.device(value)
        return torch.device("cuda", torch.cuda.current_device())
    raise ValueError(f"unknown device {requested!r}; use 'cpu' or 'gpu'")


def apply_gpu_options(device: torch.device, opts: GpuOptions) -> None:
    """Apply the GPU settings on CUDA; a no-op on CPU. The torch flags are process-wide."""
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = opts.enable_tf32
    torch.backends.cudnn.allow_tf32 = opts.enable_tf32
    torch.backends.cudnn.benchmark = opts.enable_cudnn_benchmark
    torch.cuda.set_per_process_memory_fraction(opts.memory_fraction, device)


def configure_threads(n: int) -> None:
    """Intra-op CPU threads; explicit because replicas sharing a node must not oversubscribe."""
    if n < 1:
        raise ValueError("thread count must be >= 1")
    torch.set_num_threads(n)


@contextlib.contextmanager
def _strict_fp32() -> Iterator[None]:
    """Full fp32 on CUDA so the golden check measures the artifact, not TF32 rounding."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def normalisation_tensors(
    norm: Normalization, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, 1/std) as float32 tensors on ``device``, made once per loaded model."""
    mean = torch.tensor(norm.mean, dtype=torch.float32, device=device)
    inv_std = 1.0 / torch.tensor(norm.std, dtype=torch.float32, device=device)
    return mean, inv_std


def run_network(
    network: CNNLSTM,
    features: np.ndarray,
    mean: torch.Tensor,
    inv_std: torch.Tensor,
    return_std: float,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Normalise, forward (autocast to ``autocast_dtype`` if given), and map to
    (log return, prob_up) as float64 ``[N, 2]``.

    The one implementation of the output contract: serving and the golden sample written
    at export time both go through it, so they cannot drift apart.
    """
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    with torch.inference_mode():
        x = x.to(mean.device, non_blocking=True)
        with autocast(mean.device, autocast_dtype):
            raw = network.infer((x - mean) * inv_std)
        return network_outputs(raw, return_std)


def network_outputs(raw: torch.Tensor | np.ndarray, return_std: float) -> np.ndarray:
    """The network's raw ``[N, 2]`` -> (log return, prob_up) as float64, on the CPU; the
    one mapping for every engine (:mod:`model.engine`).

    In numpy, whatever the engine: ONNX Runtime's answers (1-4 rows) never touch torch
    then. A lone request finds the code and data it runs out of the caches, and there one
    row's mapping took ~260 us in torch against ~108 us in numpy; 14 against 4 us warm
    (BENCHMARKS.md, session 22)."""
    if isinstance(raw, torch.Tensor):
        with torch.inference_mode():  # bf16 has no numpy dtype; float32 holds it exactly
            raw = raw.to(dtype=torch.float32, device="cpu").numpy()
    out = raw.astype(np.float64)
    out[:, 0] *= return_std
    out[:, 1] = np.exp(-np.logaddexp(0.0, -out[:, 1]))  # the logistic, never overflowing
    return out


class LoadedModel:
    """A validated network on a device, with its manifest's normalisation baked in."""

    def __init__(
        self,
        ref: ModelRef,
        manifest: Manifest,
        network: CNNLSTM,
        device: torch.device,
        gpu_options: GpuOptions | None = None,
    ) -> None:
        self.ref = ref
        self.manifest = manifest
        self.device = device
        self.warmed = False
        self.numerics = NumericsChoice()  # fp32 until load_model settles it
        self.engine = EngineChoice()  # torch until load_model settles it
        self._onnx: OnnxForward | None = None
        self._graphs: GraphedForward | None = None  # CUDA graphs, captured at warm-up
        self._opts = gpu_options or GpuOptions()
        self._net = network.to(device).eval().requires_grad_(False)
        self._mean, self._inv_std = normalisation_tensors(manifest.normalization, device)
        self._return_std = manifest.normalization.return_std
        arch = manifest.architecture
        self._row_shape = (arch.window, arch.num_features)
        self._last_cleanup = time.monotonic()

    @property
    def network(self) -> CNNLSTM:
        return self._net

    @property
    def nbytes(self) -> int:
        """Bytes held by parameters and buffers (BatchNorm statistics) on the device."""
        tensors = [*self._net.parameters(), *self._net.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Raw ``[N, WINDOW, NUM_FEATURES]`` features -> float64 ``[N, 2]``.

        Column 0 is the expected log return over the horizon, column 1 the probability
        of an up move.
        """
        if features.ndim != 3 or features.shape[1:] != self._row_shape:
            raise ValueError(
                f"features must be [N, {self._row_shape[0]}, {self._row_shape[1]}], "
                f"got {features.shape}"
            )
        if features.shape[0] == 0:
            return np.zeros((0, 2), dtype=np.float64)
        return self._forward(features, self.numerics.autocast_dtype)

    def _forward(self, features: np.ndarray, dtype: torch.dtype | None) -> np.ndarray:
        if self._onnx is not None and self.engine.onnx_serves(features.shape[0]):
            return self._onnx_forward(self._onnx, features)  # fp32 whatever ``dtype``
        return self._torch_forward(features, dtype)

    def _torch_forward(self, features: np.ndarray, dtype: torch.dtype | None) -> np.ndarray:
        with _cuda_turn(self.device):
            if self._graphs is not None and dtype == self.numerics.autocast_dtype:
                raw = self._graphs.run(features)
                if raw is not None:  # else larger than the largest bucket: eager below
                    return network_outputs(raw, self._return_std)
            return run_network(
                self._net, features, self._mean, self._inv_std, self._return_std, dtype
            )

    @property
    def graph_buckets(self) -> tuple[int, ...]:
        """The batch sizes replayed from CUDA graphs; empty when forwards run eagerly."""
        return self._graphs.buckets if self._graphs is not None else ()

    def capture_graphs(
        self, buckets: Sequence[int] = DEFAULT_BUCKETS, capture: Capture = capture_cuda
    ) -> bool:
        """Capture the serving forward (this model's numerics) once per bucket and serve
        from the graphs once their golden outputs match the eager forward's within the
        artifact's tolerance; else keep eager forwards, with a warning. True when serving
        from graphs."""
        self._graphs = None
        dtype = self.numerics.autocast_dtype

        def forward(x: torch.Tensor) -> torch.Tensor:
            with autocast(self.device, dtype):
                return self._net((x - self._mean) * self._inv_std)

        golden = np.asarray(self.manifest.golden.inputs, dtype=np.float32)
        try:
            with _cuda_turn(self.device):
                eager = self._torch_forward(golden, dtype)
                graphs = GraphedForward(forward, self._row_shape, self.device, buckets, capture)
                replayed = graphs.run(golden)
            if replayed is None:
                raise ValueError(f"no bucket holds the {len(golden)} golden rows")
            deviation = self.deviation(network_outputs(replayed, self._return_std), eager)
        except (RuntimeError, ValueError) as exc:
            log.warning(
                "%s: CUDA graph capture failed (%s); forwards stay eager", self.ref.key, exc
            )
            return False
        if not deviation <= self.manifest.golden.atol:
            log.warning(
                "%s: CUDA graphs deviate %.3g from eager (atol %g); forwards stay eager",
                self.ref.key,
                deviation,
                self.manifest.golden.atol,
            )
            return False
        self._graphs = graphs
        log.info(
            "%s: forwards of up to %d rows replay CUDA graphs", self.ref.key, graphs.buckets[-1]
        )
        return True

    def _onnx_forward(self, session: OnnxForward, features: np.ndarray) -> np.ndarray:
        return network_outputs(session(features), self._return_std)

    def onnx_session(self, threads: int, *, int8: bool = False) -> OnnxForward:
        """This network, normalisation in front, as an ONNX Runtime session (``int8``: its
        weights quantised, :mod:`model.int8`)."""
        return OnnxForward(
            self._net,
            self._mean,
            self._inv_std,
            self._row_shape,
            threads,
            transform=quantize if int8 else None,
        )

    def use_engine(self, choice: EngineChoice, session: OnnxForward | None) -> None:
        """Serve forwards on ``choice`` (``session`` runs those ONNX Runtime serves)."""
        if (choice.onnx_max_rows > 0) != (session is not None):
            raise ValueError(f"engine {choice.name!r} with session {session!r}")
        self.engine, self._onnx = choice, session

    def engine_speeds(self, session: OnnxForward, rows: int) -> tuple[float, float]:
        """(onnx ms, torch ms) per forward of ``rows`` golden rows, torch in this model's
        numerics."""
        sample = np.asarray(self.manifest.golden.inputs, dtype=np.float32)
        reps = -(-rows // len(sample))
        batch = np.ascontiguousarray(np.concatenate([sample] * reps)[:rows])
        dtype = self.numerics.autocast_dtype
        return compare_ms(
            lambda: self._onnx_forward(session, batch),
            lambda: self._torch_forward(batch, dtype),
            calls=max(1, TIMING_ROWS // rows),
        )

    def golden_deviation(self, numerics: str = "fp32") -> float:
        """Largest golden-sample deviation under ``numerics`` ("fp32" or "bf16") on torch:
        return in units of return_std, prob_up as is."""
        golden = self.manifest.golden
        dtype = NumericsChoice(numerics).autocast_dtype
        # Eager, never a captured graph: those kernels were fixed at capture.
        with _cuda_turn(self.device), _strict_fp32():
            actual = run_network(
                self._net,
                np.asarray(golden.inputs, dtype=np.float32),
                self._mean,
                self._inv_std,
                self._return_std,
                dtype,
            )
        return self.deviation(actual)

    def onnx_golden_deviation(self, session: OnnxForward) -> float:
        """:meth:`golden_deviation` of ``session``'s outputs."""
        golden = self.manifest.golden
        return self.deviation(
            self._onnx_forward(session, np.asarray(golden.inputs, dtype=np.float32))
        )

    def deviation(self, actual: np.ndarray, expected: np.ndarray | None = None) -> float:
        """Largest |actual - expected| (the golden outputs by default), returns in units
        of return_std; inf when anything is not finite."""
        if expected is None:
            expected = np.asarray(self.manifest.golden.expected, dtype=np.float64)
        diff = np.abs(actual - expected)
        diff[:, 0] /= self._return_std
        return float(diff.max()) if np.isfinite(diff).all() else float("inf")

    def validate(self) -> None:
        """Replay the golden sample; raise if the outputs moved beyond its tolerance."""
        deviation = self.golden_deviation()
        atol = self.manifest.golden.atol
        if not deviation <= atol:
            raise ArtifactValidationError(
                f"{self.ref.key} failed its golden check on {self.device}: max deviation "
                f"{deviation:.3g} > atol {atol:g} (weights, normalisation or code changed)"
            )

    def warmup(self, batch_sizes: Sequence[int] = (1, 8, 32)) -> None:
        """Run each batch size once so allocator and cudnn.benchmark choices happen now;
        then, on CUDA (``gpu_optimization.cuda_graphs``), capture the forward's graphs."""
        sample = np.asarray(self.manifest.golden.inputs, dtype=np.float32)
        for size in batch_sizes:
            reps = -(-size // len(sample))
            self.predict(np.concatenate([sample] * reps)[:size])
        if self.device.type == "cuda":
            if self._opts.cuda_graphs and self._graphs is None:
                self.capture_graphs()
            torch.cuda.synchronize(self.device)
        self.warmed = True

    def maybe_cleanup(self, now: float | None = None) -> bool:
        """``torch.cuda.empty_cache`` at most every ``cleanup_interval_s``."""
        if self.device.type != "cuda":
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_cleanup < self._opts.cleanup_interval_s:
            return False
        with _CUDA_TURN:
            torch.cuda.empty_cache()
        self._last_cleanup = now
        return True


def load_model(
    registry: ModelRegistry,
    ref: ModelRef,
    device: str = "cpu",
    gpu_options: GpuOptions | None = None,
    validate: bool = True,
    numerics: str = "fp32",
    cpu_bf16: Callable[[], bool] = cpu_has_native_bf16,
    engine: str = "torch",
) -> LoadedModel:
    """Verify, load and (by default) golden-check ``ref``. Warm-up is the caller's next step.

    ``numerics`` ("auto", "fp32", "bf16" or "int8", see :mod:`model.numerics`): int8
    (:mod:`model.int8`, by name only) runs every forward on ONNX Runtime with int8 weights
    once its golden check agrees, else fp32 with the reason. bf16 is served only
    once the golden sample agrees under it, even with ``validate`` off (it is the only
    evidence that this artifact survives the rounding); else fp32, with the reason kept in
    ``model.numerics.fallback``. ``cpu_bf16`` says whether the CPU has native bf16.
    ``engine`` ("auto", "torch" or "onnxruntime", see :mod:`model.engine`) runs CPU
    forwards on ONNX Runtime (fp32) once its golden check agrees: every forward when named
    (then "auto" numerics mean fp32, and bf16 keeps torch), under "auto" those of the sizes
    where it measured faster than torch here; else torch, the reason in
    ``model.engine.fallback``.
    """
    manifest = registry.verify(ref.name, ref.version)
    if manifest.weights_sha256 != ref.sha256:
        raise ArtifactValidationError(
            f"{ref.name}:{ref.version} was pinned to weights {ref.sha256[:12]} but the "
            f"registry now holds {manifest.weights_sha256[:12]}"
        )
    check_serving_compatible(manifest)

    # Hash the exact bytes we deserialise: verify() hashed the file a moment ago, but
    # the file could be swapped in between.
    weights_path = registry.artifact_dir(ref.name, ref.version) / manifest.weights_file
    blob = weights_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != manifest.weights_sha256:
        raise ArtifactValidationError(f"{weights_path} changed while it was being loaded")
    try:
        state = safetensors.torch.load(blob)
        network = build_network(manifest.architecture)
        network.load_state_dict(state, strict=True)
    except (safetensors.SafetensorError, RuntimeError, ValueError) as exc:  # bad file or shapes
        raise ArtifactValidationError(f"cannot load weights of {ref.key}: {exc}") from exc

    opts = gpu_options or GpuOptions()
    dev = resolve_device(device)
    apply_gpu_options(dev, opts)
    model = LoadedModel(ref, manifest, network, dev, opts)
    if validate:
        model.validate()
    int8_refused: str | None = None
    if numerics == "int8":
        session, int8_refused = choose_int8(
            device=dev,
            engine=engine,
            build=lambda: model.onnx_session(torch.get_num_threads(), int8=True),
            golden_deviation=model.onnx_golden_deviation,
            label=ref.key,
        )
        if session is not None:
            model.numerics = NumericsChoice("int8")
            model.use_engine(EngineChoice(ALL_ROWS), session)
            _log_loaded(model, validate)
            return model
        numerics = "fp32"  # refused: the exact numerics, with the reason kept below
    if engine == "onnxruntime" and numerics == "auto":
        numerics = "fp32"  # ONNX Runtime named for every forward: it runs fp32 only
    model.numerics = choose_numerics(
        numerics, dev, model.golden_deviation, cpu_bf16=cpu_bf16, label=ref.key
    )
    if int8_refused is not None:
        model.numerics = NumericsChoice("fp32", fallback=int8_refused)
    model.use_engine(
        *choose_engine(
            engine,
            device=dev,
            numerics=model.numerics.name,
            build=lambda: model.onnx_session(torch.get_num_threads()),
            golden_deviation=model.onnx_golden_deviation,
            atol=manifest.golden.atol,
            speeds=model.engine_speeds,
            label=ref.key,
        )
    )
    _log_loaded(model, validate)
    return model


def _log_loaded(model: LoadedModel, validated: bool) -> None:
    log.info(
        "loaded %s on %s in %s on %s (%.1f MB)%s",
        model.ref.key,
        model.device,
        model.numerics.name,
        model.engine.name,
        model.nbytes / 1e6,
        ", golden check passed" if validated else "",
    )
