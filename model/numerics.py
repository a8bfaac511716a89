"""Which numerics a loaded model runs in: fp32, or bf16 autocast where the CPU has bf16.

DESIGN section 3: on a CPU with AVX512-BF16 one core runs a batch of 32 in 8.8 ms under
bf16 autocast against 12.5 ms in fp32. Without native bf16 the same autocast is emulated
and many times slower (24 ms fp32 against 267 ms bf16 measured on an AVX2-only core), and
on the GPU bf16 was slower than fp32 at these sizes. So ``auto`` takes bf16 only on a CPU
that has it, and only once the artifact's golden sample agrees under it. ``int8`` is
chosen by name only and runs on ONNX Runtime (:mod:`model.int8`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# "int8" is ONNX Runtime with int8 weights, chosen by name only (model.int8).
NUMERICS_SETTINGS = ("auto", "fp32", "bf16", "int8")

# Largest golden-sample deviation accepted under bf16, in the units of the fp32 check
# (expected return in units of return_std, prob_up as a probability). bf16 keeps 8
# mantissa bits; on a trained model the measured error was at most 1.2e-3 (return) and
# 4e-4 (prob_up) over 937 EURUSD windows, and under 1e-4 on the golden rows. 1e-2 leaves
# about ten times that for other weights, yet stays below one percentage point of prob_up
# and one percent of a return std: a model that bf16 really changes fails it.
BF16_GOLDEN_ATOL = 1e-2

# int8 forwards all run on ONNX Runtime (model.int8): none is left to torch to autocast.
_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "int8": None}
_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class NumericsChoice:
    """The numerics a model runs in, and why it is fp32 where bf16 or int8 was wanted."""

    name: str = "fp32"  # "fp32" | "bf16" | "int8"
    fallback: str | None = None

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of the forward pass; None: plain fp32."""
        return _DTYPES[self.name]


def cpu_flags(cpuinfo: Path = _CPUINFO) -> frozenset[str] | None:
    """The first CPU's flags in ``cpuinfo``; None where there is no such file (macOS, a
    locked-down sandbox)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(cpuinfo: Path = _CPUINFO) -> bool:
    """True where the CPU computes bf16 in hardware (AVX512-BF16 or AMX)."""
    flags = cpu_flags(cpuinfo)
    if flags is None:
        # No /proc: ask the cpuinfo library torch ships.
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return not _BF16_CPU_FLAGS.isdisjoint(flags)


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """Autocast to ``dtype`` on ``device``; a no-op for plain fp32.

    Without autocast's cache of cast weights on CUDA: a forward captured into a CUDA graph
    must not keep tensors cast during the capture (``torch.cuda.make_graphed_callables``
    refuses to capture with the cache on, for that reason)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=device.type != "cuda")


def wanted_numerics(
    setting: str, device: torch.device, cpu_bf16: Callable[[], bool] = cpu_has_native_bf16
) -> str:
    """What ``setting`` asks for on ``device``, before any golden check."""
    if setting not in NUMERICS_SETTINGS:
        raise ValueError(f"unknown numerics {setting!r}; use one of {NUMERICS_SETTINGS}")
    if setting != "auto":
        return setting
    if device.type != "cpu":
        return "fp32"
    return "bf16" if cpu_bf16() else "fp32"


def choose_numerics(
    setting: str,
    device: torch.device,
    golden_deviation: Callable[[str], float],
    *,
    cpu_bf16: Callable[[], bool] = cpu_has_native_bf16,
    atol: float = BF16_GOLDEN_ATOL,
    label: str = "model",
) -> NumericsChoice:
    """The numerics to serve ``label`` in: the wanted ones if the golden sample agrees
    under them within ``atol``, else fp32 with the reason (logged as a warning)."""
    wanted = wanted_numerics(setting, device, cpu_bf16)
    if wanted == "int8":
        raise ValueError("int8 runs on ONNX Runtime: model.int8.choose_int8 chooses it")
    if wanted == "fp32":
        return NumericsChoice("fp32")
    if device.type == "cpu" and not cpu_bf16():
        log.warning("%s: %s forced on a CPU without native bf16; it runs emulated", label, wanted)
    deviation = golden_deviation(wanted)
    if not deviation <= atol:
        reason = (
            f"golden check under {wanted} failed on {device}: max deviation "
            f"{deviation:.3g} > tolerance {atol:g}"
        )
        log.warning("%s: %s; serving fp32", label, reason)
        return NumericsChoice("fp32", fallback=reason)
    return NumericsChoice(wanted)
