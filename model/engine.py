"""Which engine runs a CPU forward: torch, or the same network in ONNX Runtime.

On this project's 2-vCPU AVX2 box, one thread, fp32, the same weights (``/tmp`` script
timing ``network(x)`` against ``InferenceSession.run``; BENCHMARKS.md, session 5):

    batch        1       4       8      16      32
    torch     1.54    3.70    6.64   10.38   20.40  ms
    onnxrt    1.05    1.87    3.76    6.79   13.94  ms

with outputs equal to 2e-8. ONNX Runtime fuses the convolutions with their BatchNorm and
runs the LSTM as one kernel; torch dispatches each op and step from Python-visible code.

The network (with the manifest's normalisation folded in front) is exported in memory at
load time with torch's TorchScript-based exporter: 0.08 s, no file, so every artifact in
the registry gets it without a new format. (The newer ``torch.export`` exporter took 9 s
and its graph ran slower here.) ``auto`` serves it only where it is worth it and right:
fp32 numerics on a CPU (ONNX Runtime has no bf16 LSTM; where the CPU has native bf16 torch
runs bf16), the artifact's golden sample within the fp32 tolerance, and measured faster
than torch at load on this machine. Anything else keeps torch and says why
(:attr:`EngineChoice.fallback`, in ``/stats`` and ``/metrics``).
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

ENGINE_SETTINGS = ("auto", "torch", "onnxruntime")
TIMING_BATCH = 8  # mid-size: what a busy predictor forwards most
TIMING_ROUNDS = 3
TIMING_CALLS = 4


@dataclass(frozen=True)
class EngineChoice:
    """The engine a model's forward runs on, and why it is torch where ONNX Runtime was
    wanted (None when nothing was given up)."""

    name: str = "torch"  # "torch" | "onnxruntime"
    fallback: str | None = None


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _Normalised(nn.Module):
    """``network((x - mean) * inv_std)``: what the ONNX graph computes, raw outputs."""

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, network: nn.Module, mean: torch.Tensor, inv_std: torch.Tensor) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", mean.detach().cpu().clone())
        self.register_buffer("inv_std", inv_std.detach().cpu().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network((x - self.mean) * self.inv_std)


class OnnxForward:
    """The normalised network as an ONNX Runtime session: float32 ``[N, T, F]`` in, raw
    float32 ``[N, 2]`` out (the caller maps outputs, as for torch)."""

    def __init__(
        self,
        network: nn.Module,
        mean: torch.Tensor,
        inv_std: torch.Tensor,
        row_shape: tuple[int, int],
        threads: int,
    ) -> None:
        import onnxruntime as ort

        module = _Normalised(network, mean, inv_std).eval()
        example = torch.zeros((2, *row_shape), dtype=torch.float32)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # The TorchScript-based exporter is deprecated (the faster one here, see
            # above), and warns about LSTM batch sizes that do not apply without h0/c0.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                buffer,  # type: ignore[arg-type]  # the TorchScript exporter takes a file object
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Two cores shared with the gateway: idle pool threads sleep instead of spinning.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            buffer.getvalue(), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(features, dtype=np.float32)
        out: np.ndarray = self._session.run(None, {"x": x})[0]
        return out


def compare_ms(onnx_call: Callable[[], Any], torch_call: Callable[[], Any]) -> tuple[float, float]:
    """(onnx ms, torch ms) per call: the best of a few rounds each, alternated so that a
    busy moment on the machine falls on both."""
    onnx_call()
    torch_call()  # warm both
    best = [float("inf"), float("inf")]
    for _ in range(TIMING_ROUNDS):
        for i, call in enumerate((onnx_call, torch_call)):
            started = time.perf_counter()
            for _ in range(TIMING_CALLS):
                call()
            best[i] = min(best[i], (time.perf_counter() - started) * 1000.0 / TIMING_CALLS)
    return best[0], best[1]


def choose_engine(
    setting: str,
    *,
    device: torch.device,
    numerics: str,
    build: Callable[[], OnnxForward],
    golden_deviation: Callable[[OnnxForward], float],
    atol: float,
    speeds: Callable[[OnnxForward], tuple[float, float]],
    available: Callable[[], bool] = onnxruntime_available,
    label: str = "model",
) -> tuple[EngineChoice, OnnxForward | None]:
    """The engine to serve ``label`` on, and the session when it is ONNX Runtime.

    ``setting`` "torch" keeps torch; "onnxruntime" takes it whenever it can run the model
    correctly; "auto" also asks it to be faster: ``speeds(session)`` gives (onnx ms,
    torch ms) for the same batch (:func:`compare_ms`). Every refusal is logged as a warning when
    ONNX Runtime was asked for by name, at info level under "auto"."""
    if setting not in ENGINE_SETTINGS:
        raise ValueError(f"unknown engine {setting!r}; use one of {ENGINE_SETTINGS}")
    if setting == "torch":
        return EngineChoice("torch"), None

    def keep_torch(reason: str) -> tuple[EngineChoice, None]:
        level = logging.WARNING if setting == "onnxruntime" else logging.INFO
        log.log(level, "%s: %s; serving on torch", label, reason)
        return EngineChoice("torch", fallback=reason), None

    if device.type != "cpu":
        return keep_torch(f"onnxruntime serves the CPU only, the model is on {device}")
    if numerics != "fp32":
        return keep_torch(f"onnxruntime runs fp32 only, the numerics are {numerics}")
    if not available():
        return keep_torch("onnxruntime is not installed")
    try:
        session = build()
    except Exception as exc:  # an exporter or runtime that cannot take this network
        return keep_torch(f"export to onnxruntime failed: {type(exc).__name__}: {exc}")
    deviation = golden_deviation(session)
    if not deviation <= atol:
        return keep_torch(
            f"golden check under onnxruntime failed: max deviation {deviation:.3g} > "
            f"tolerance {atol:g}"
        )
    if setting == "auto":
        onnx_ms, torch_ms = speeds(session)
        if not onnx_ms < torch_ms:
            return keep_torch(
                f"onnxruntime measured no faster here ({onnx_ms:.2f} ms against torch's "
                f"{torch_ms:.2f} ms for a batch of {TIMING_BATCH})"
            )
        log.info(
            "%s: onnxruntime %.2f ms against torch's %.2f ms for a batch of %d; serving on "
            "onnxruntime",
            label,
            onnx_ms,
            torch_ms,
            TIMING_BATCH,
        )
    return EngineChoice("onnxruntime"), session
