"""The predictor's GPU settings (the config's ``gpu_optimization`` section), torch-free.

Built once from the config's plain mapping when the predictor's settings are read;
:mod:`model.runtime` applies them to torch when a model is placed on a CUDA device.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuOptions:
    """TF32 matmuls, the share of device memory the process may take, cuDNN autotuning,
    how often cached CUDA memory is handed back (``torch.cuda.empty_cache``), and whether
    warm-up captures the forward as CUDA graphs (:mod:`model.cuda_graphs`)."""

    enable_tf32: bool = True
    memory_fraction: float = 0.8
    enable_cudnn_benchmark: bool = True
    cleanup_interval_s: float = 300.0
    cuda_graphs: bool = True
