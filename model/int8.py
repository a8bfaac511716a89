"""Int8 numerics: every CPU forward on ONNX Runtime, with the weights quantised to int8.

``serving.predictor_numerics: int8`` turns this on, and only that does: ``auto`` never
takes it. ONNX Runtime's dynamic quantisation stores the weights of the LSTM and the head
as int8 and quantises their inputs at each forward (``DynamicQuantizeLSTM``,
``MatMulInteger``). The convolutions stay fp32, because quantising them as well measured
slower (8.2 against 5.6 ms for 32 rows). ``python -m model.numerics_bench`` on session
16's AMD EPYC (AVX-512 VNNI, no AMX), one thread, the demo artifact, the numerics
alternated round by round, best of 30 (BENCHMARKS.md, session 16):

    rows              1       8      32    largest deviation from fp32 (512 windows)
    torch fp32     1.20    4.09   12.96    0
    onnxrt fp32    0.67    3.27   12.34    1.9e-7
    torch bf16     1.14    2.85    7.98    1.2e-3
    onnxrt int8    0.40    1.80    6.48    3.7e-3   ms

It is not in ``auto`` for two reasons, and a desk should turn it on knowing both:

- Its error is about twice bf16's. Against fp32, over 3000 EURUSD windows, the largest
  deviation was 5.4e-3 of a return std and 1.7e-3 of prob_up (bf16: 2.9e-3 and 9.8e-4).
  Five of the 3000 rows changed side of 0.5 (bf16: one).
- A row's answer depends on its batch-mates. The inputs' int8 scale is taken over the
  whole forward, so the same window comes back a little different when other traffic
  shares its forward: by up to 3.5e-3 (of a return std, or of prob_up) over 60 EURUSD
  windows, each alone and then beside 31 random others. Under fp32 and bf16 the two
  answers were identical.

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

from model.engine import OnnxForward, checked_session, onnxruntime_available
from model.numerics import BF16_GOLDEN_ATOL, cpu_flags

log = logging.getLogger(__name__)

# The ops whose weights become int8 (the convolutions stay fp32: slower quantised here).
QUANTISED_OPS = ("LSTM", "MatMul", "Gemm")
# The reduced-precision bound that bf16 is held to (model.numerics): int8 measured within it,
# with about twice bf16's error (see above).
INT8_GOLDEN_ATOL = BF16_GOLDEN_ATOL
# int8 dot products without saturation: AVX512-VNNI, AVX-VNNI, AMX-INT8.
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_has_vnni(cpuinfo: Path | None = None) -> bool:
    """True where the CPU multiplies int8 by int8 without saturating (VNNI or AMX-INT8);
    False where that is unknown."""
    flags = cpu_flags() if cpuinfo is None else cpu_flags(cpuinfo)
    return flags is not None and not _VNNI_FLAGS.isdisjoint(flags)


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Please consider to run pre-processing")


def quantize(graph: bytes) -> bytes:
    """``graph`` (a serialised fp32 ONNX model) with int8 weights for :data:`QUANTISED_OPS`;
    in memory, apart from the temporary file the quantiser writes to.

    On a CPU without VNNI the weights keep within 7 bits. There ONNX Runtime multiplies the
    uint8 inputs by the int8 weights with an instruction whose 16-bit pair sums can
    saturate; its quantiser's ``reduce_range`` avoids that, at one bit of precision (forced
    here: largest deviation 6.5e-3 against 5.4e-3 over 3000 EURUSD windows, 32 rows in 7.6
    against 7.2 ms)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="cnnlstm-int8-") as directory:
        out = Path(directory) / "int8.onnx"
        # The quantiser's advice to run its shape pre-processing first goes to the root
        # logger: the graph is a fixed, small one, measured as fast without it. Only that
        # line is dropped (other threads keep logging meanwhile).
        root = logging.getLogger()
        root.addFilter(_no_preprocessing_advice)
        try:
            quantize_dynamic(
                onnx.load_from_string(graph),
                out,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(QUANTISED_OPS),
                reduce_range=not cpu_has_vnni(),
            )
        finally:
            root.removeFilter(_no_preprocessing_advice)
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
    if engine == "torch":
        session: OnnxForward | str = "int8 runs on ONNX Runtime, and the engine setting is torch"
    else:
        session = checked_session(
            "int8",
            device=device,
            build=build,
            golden_deviation=golden_deviation,
            atol=atol,
            available=available,
        )
    if isinstance(session, str):
        log.warning("%s: %s; serving fp32", label, session)
        return None, session
    return session, None
