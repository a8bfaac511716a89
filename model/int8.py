"""Int8 numerics: every CPU forward on ONNX Runtime, with the weights quantised to int8.

``serving.predictor_numerics: int8`` turns this on, and only that does: ``auto`` never
takes it. ONNX Runtime's dynamic quantisation stores the weights of the LSTM and the head
as int8 and quantises their inputs at each forward (``DynamicQuantizeLSTM``,
``MatMulInteger``). The convolutions stay fp32, because quantising them as well measured
slower (8.2 against 5.6 ms for 32 rows). Measured on session 16's AMD EPYC (AVX-512 VNNI,
no AMX), one thread, the demo artifact, best of 30 (BENCHMARKS.md, session 16):

    rows              1       8      32
    onnxrt int8    0.27    1.43    5.56  ms
    onnxrt fp32    0.53    2.77   11.12  ms
    torch bf16     1.02    2.24    7.02  ms

It is not in ``auto`` for two reasons, and a desk should turn it on knowing both:

- Its error is about twice bf16's. Against fp32, over 3000 EURUSD windows, the largest
  deviation was 5.4e-3 of a return std and 1.7e-3 of prob_up (bf16: 2.9e-3 and 9.8e-4).
  Five of the 3000 rows changed side of 0.5 (bf16: one).
- A row's answer depends on its batch-mates. The inputs' int8 scale is taken over the
  whole forward, so the same window can come back different in the third decimal of a
  return std when other traffic shares its forward.

It is held to bf16's golden tolerance (:data:`model.numerics.BF16_GOLDEN_ATOL`, the
reduced-precision bound). A model that misses that tolerance, or cannot run here (on a GPU,
without ONNX Runtime, with the torch engine forced, or where the export or quantisation
fails) is served in fp32, and the reason is shown in ``/stats`` and ``/metrics`` as the
numerics' fallback.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from model.engine import OnnxForward, onnxruntime_available
from model.numerics import BF16_GOLDEN_ATOL

log = logging.getLogger(__name__)

# The ops whose weights become int8 (the convolutions stay fp32: slower quantised here).
QUANTISED_OPS = ("LSTM", "MatMul", "Gemm")
# The reduced-precision bound that bf16 is held to (model.numerics): int8 measured within it,
# with about twice bf16's error (see above).
INT8_GOLDEN_ATOL = BF16_GOLDEN_ATOL


def quantize(graph: bytes) -> bytes:
    """``graph`` (a serialised fp32 ONNX model) with int8 weights for :data:`QUANTISED_OPS`;
    in memory, apart from the temporary file the quantiser writes to."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="cnnlstm-int8-") as directory:
        out = Path(directory) / "int8.onnx"
        # The quantiser's advice to run its shape pre-processing first goes to its logger:
        # the graph is a fixed, small one, measured as fast without it.
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(max(level, logging.ERROR))
        try:
            quantize_dynamic(
                onnx.load_from_string(graph),
                out,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(QUANTISED_OPS),
            )
        finally:
            quiet.setLevel(level)
        return out.read_bytes()


def choose_int8(
    *,
    device: torch.device,
    engine: str,
    build: Callable[[], OnnxForward],
    golden_deviation: Callable[[OnnxForward], float],
    atol: float = INT8_GOLDEN_ATOL,
    available: Callable[[], bool] = onnxruntime_available,
    label: str = "model",
) -> tuple[OnnxForward | None, str | None]:
    """The int8 session to run every forward of ``label`` on (``build`` makes it, with
    ``int8=True``), or None and why not: each refusal is logged as a warning, since int8 is
    only ever asked for by name."""

    def refuse(reason: str) -> tuple[None, str]:
        log.warning("%s: %s; serving fp32", label, reason)
        return None, reason

    if device.type != "cpu":
        return refuse(f"int8 runs on ONNX Runtime on the CPU only, the model is on {device}")
    if engine == "torch":
        return refuse("int8 runs on ONNX Runtime, and the engine setting is torch")
    if not available():
        return refuse("int8 runs on ONNX Runtime, which is not installed")
    try:
        session = build()
    except Exception as exc:  # an exporter or quantiser that cannot take this network
        return refuse(f"int8 export failed: {type(exc).__name__}: {exc}")
    deviation = golden_deviation(session)
    if not deviation <= atol:
        return refuse(
            f"golden check under int8 failed: max deviation {deviation:.3g} > tolerance {atol:g}"
        )
    return session, None
