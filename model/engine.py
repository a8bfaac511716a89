"""Which engine runs each CPU forward: torch, or the same network in ONNX Runtime.

On this project's 2-vCPU AVX2 box, one thread, fp32, the same weights (``/tmp`` script
timing ``network(x)`` against ``InferenceSession.run``; BENCHMARKS.md, session 5):

    batch        1       4       8      16      32
    torch     1.54    3.70    6.64   10.38   20.40  ms
    onnxrt    1.05    1.87    3.76    6.79   13.94  ms

with outputs equal to 2e-8. ONNX Runtime fuses the convolutions with their BatchNorm and
runs the LSTM as one kernel; torch dispatches each op and step from Python-visible code.
On a Xeon with AMX, torch's bf16 autocast turns that round at the larger sizes (session
13, one thread; 1-8 rows as this module's load-time timing logged them, 32 rows from a
``/tmp`` script):

    batch        1       2       4       8      32
    torch bf16 1.15    1.40    1.46    1.85    3.49  ms
    onnxrt fp32 0.58   0.83    1.24    2.41    8.00  ms

So the choice is made per forward size: ``auto`` times both engines on the golden rows at
1, 2, 4, ... 32 rows at load and runs forwards up to the largest size where ONNX Runtime
was faster (at that size and every smaller one) on it, larger ones on torch in the model's
numerics. ONNX Runtime forwards are fp32 whatever the numerics (it has no bf16 LSTM here):
the more exact of the two, held to the artifact's fp32 golden tolerance.

That timing takes under a second and runs beside whatever else the machine does at load,
so where the two engines are close at some size (4-8 rows on the AMX Xeon) two loads can
split differently (sessions 33-34 saw <=2, <=4 and <=8 there). The split can be pinned by
name instead, ``onnxruntime<=N+torch``: checked like ``onnxruntime``, never timed, the
same on every replica and every start (``cnnlstm bench`` pins its one-process peer to what
Serve's predictor chose, so the two compare serving paths, not two timings).

The network (with the manifest's normalisation folded in front) is exported in memory at
load time with torch's TorchScript-based exporter: 0.08 s, no file, so every artifact in
the registry gets it without a new format. (The newer ``torch.export`` exporter took 9 s
and its graph ran slower here.) ``auto`` serves it only where it is right and faster: a
CPU, the artifact's golden sample within the fp32 tolerance, and measured faster than
torch at load on this machine. Anything else keeps torch and says why
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

# Besides these, a split by name pins what "auto" would choose without timing it:
# "onnxruntime<=N+torch" (:meth:`EngineChoice.named`, :func:`pinned_split`).
ENGINE_SETTINGS = ("auto", "torch", "onnxruntime")
# Forward sizes timed at load, smallest first: a lone request to a full batch (spec 4.1).
TIMING_SIZES = (1, 2, 4, 8, 16, 32)
TIMING_ROWS = 8  # each timed sample runs at least this many rows (8 calls of 1 row)
TIMING_ROUNDS = 3
ALL_ROWS = 1 << 30  # onnx_max_rows of "every forward on ONNX Runtime"


@dataclass(frozen=True)
class EngineChoice:
    """Which engine runs a forward of N rows, and why it is torch where ONNX Runtime was
    wanted (None when nothing was given up).

    Forwards of up to ``onnx_max_rows`` rows run on ONNX Runtime (fp32), larger ones on
    torch: 0 is torch only, :data:`ALL_ROWS` ONNX Runtime only."""

    onnx_max_rows: int = 0
    fallback: str | None = None

    @property
    def name(self) -> str:
        """What ``/stats`` and ``model_engine_info`` show: "torch", "onnxruntime", or
        "onnxruntime<=N+torch" (up to N rows on ONNX Runtime, torch above)."""
        if self.onnx_max_rows <= 0:
            return "torch"
        if self.onnx_max_rows >= ALL_ROWS:
            return "onnxruntime"
        return f"onnxruntime<={self.onnx_max_rows}+torch"

    @classmethod
    def named(cls, name: str) -> EngineChoice:
        """The choice whose :attr:`name` is ``name`` (as ``/stats`` shows it)."""
        if name == "torch":
            return cls()
        if name == "onnxruntime":
            return cls(ALL_ROWS)
        rows = name.removeprefix("onnxruntime<=").removesuffix("+torch")
        if not rows.isdigit() or f"onnxruntime<={rows}+torch" != name or int(rows) < 1:
            raise ValueError(f"not an engine name: {name!r}")
        return cls(int(rows))

    def onnx_serves(self, rows: int) -> bool:
        """True when a forward of ``rows`` rows runs on ONNX Runtime."""
        return rows <= self.onnx_max_rows


def pinned_split(setting: str) -> int | None:
    """N for an engine setting "onnxruntime<=N+torch" (a split pinned by name: the same
    choice on every replica and every start, where "auto" times it at each load), else
    None."""
    if not setting.startswith("onnxruntime<="):
        return None
    try:
        return EngineChoice.named(setting).onnx_max_rows
    except ValueError:
        return None


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
    float32 ``[N, 2]`` out (the caller maps outputs, as for torch). ``transform`` rewrites
    the exported graph first (:func:`model.int8.quantize`)."""

    def __init__(
        self,
        network: nn.Module,
        mean: torch.Tensor,
        inv_std: torch.Tensor,
        row_shape: tuple[int, int],
        threads: int,
        *,
        transform: Callable[[bytes], bytes] | None = None,
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
        graph = buffer.getvalue() if transform is None else transform(buffer.getvalue())
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Two cores shared with the gateway: idle pool threads sleep instead of spinning.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(features, dtype=np.float32)
        out: np.ndarray = self._session.run(None, {"x": x})[0]
        return out


def compare_ms(
    onnx_call: Callable[[], Any], torch_call: Callable[[], Any], calls: int = 1
) -> tuple[float, float]:
    """(onnx ms, torch ms) per call: the best of a few rounds of ``calls`` calls each,
    alternated so that a busy moment on the machine falls on both."""
    onnx_call()
    torch_call()  # warm both
    best = [float("inf"), float("inf")]
    for _ in range(TIMING_ROUNDS):
        for i, call in enumerate((onnx_call, torch_call)):
            started = time.perf_counter()
            for _ in range(calls):
                call()
            best[i] = min(best[i], (time.perf_counter() - started) * 1000.0 / calls)
    return best[0], best[1]


def onnx_split(speeds: Callable[[int], tuple[float, float]]) -> tuple[int, str]:
    """The largest of :data:`TIMING_SIZES` up to which ONNX Runtime was faster at every
    size (0: not even at 1 row; :data:`ALL_ROWS`: at all of them), and what was timed.
    ``speeds(rows)`` gives (onnx ms, torch ms); sizes past the first loss are not timed."""
    split, timed = 0, []
    for rows in TIMING_SIZES:
        onnx_ms, torch_ms = speeds(rows)
        timed.append(f"{rows}: {onnx_ms:.2f}/{torch_ms:.2f}")
        if not onnx_ms < torch_ms:
            break
        split = rows
    if split == TIMING_SIZES[-1]:
        split = ALL_ROWS
    return split, "rows: onnxruntime/torch ms " + ", ".join(timed)


def checked_session(
    what: str,
    *,
    device: torch.device,
    build: Callable[[], OnnxForward],
    golden_deviation: Callable[[OnnxForward], float],
    atol: float,
    available: Callable[[], bool] = onnxruntime_available,
) -> OnnxForward | str:
    """``build()``'s session, once it can run here and its golden sample agrees within
    ``atol``; else why not, naming the session ``what`` (``onnxruntime``, ``int8``)."""
    if device.type != "cpu":
        return f"{what} serves the CPU only, the model is on {device}"
    if not available():
        return "onnxruntime is not installed"
    try:
        session = build()
    except Exception as exc:  # an exporter, quantiser or runtime that cannot take this network
        return f"export to {what} failed: {type(exc).__name__}: {exc}"
    deviation = golden_deviation(session)
    if not deviation <= atol:
        return (
            f"golden check under {what} failed: max deviation {deviation:.3g} > tolerance {atol:g}"
        )
    return session


def choose_engine(
    setting: str,
    *,
    device: torch.device,
    numerics: str,
    build: Callable[[], OnnxForward],
    golden_deviation: Callable[[OnnxForward], float],
    atol: float,
    speeds: Callable[[OnnxForward, int], tuple[float, float]],
    available: Callable[[], bool] = onnxruntime_available,
    label: str = "model",
) -> tuple[EngineChoice, OnnxForward | None]:
    """The engine to serve ``label`` on, and the session when ONNX Runtime runs any forward.

    ``setting`` "torch" keeps torch; "onnxruntime" runs every forward on it whenever it
    can run the model correctly (fp32 numerics only: it has no bf16); "auto" runs it for
    the forward sizes where it measured faster: ``speeds(session, rows)`` gives (onnx ms,
    torch ms in the model's numerics) for ``rows`` rows (:func:`compare_ms`,
    :func:`onnx_split`); "onnxruntime<=N+torch" runs it up to N rows, torch above (in the
    model's numerics), untimed. Every refusal is logged as a warning when ONNX Runtime was
    asked for by name, at info level under "auto"."""
    pinned = pinned_split(setting)
    if setting not in ENGINE_SETTINGS and pinned is None:
        raise ValueError(
            f"unknown engine {setting!r}; use one of {ENGINE_SETTINGS} or onnxruntime<=N+torch"
        )
    if setting == "torch":
        return EngineChoice(), None

    def keep_torch(reason: str) -> tuple[EngineChoice, None]:
        level = logging.INFO if setting == "auto" else logging.WARNING
        log.log(level, "%s: %s; serving on torch", label, reason)
        return EngineChoice(fallback=reason), None

    if setting == "onnxruntime" and numerics != "fp32":
        return keep_torch(f"onnxruntime runs fp32 only, the numerics are {numerics}")
    session = checked_session(
        "onnxruntime",
        device=device,
        build=build,
        golden_deviation=golden_deviation,
        atol=atol,
        available=available,
    )
    if isinstance(session, str):
        return keep_torch(session)
    if setting == "onnxruntime":
        return EngineChoice(ALL_ROWS), session
    if pinned is not None:
        choice = EngineChoice(pinned)
        log.info("%s: serving on %s, pinned by name (not timed)", label, choice.name)
        return choice, session
    split, timed = onnx_split(lambda rows: speeds(session, rows))
    if split == 0:
        return keep_torch(f"onnxruntime measured no faster here ({timed})")
    choice = EngineChoice(split)
    log.info("%s: serving on %s against torch %s (%s)", label, choice.name, numerics, timed)
    return choice, session
