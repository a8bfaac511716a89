"""CUDA graphs for the serving forward: one captured per batch-size bucket at warm-up.

On the H200 a forward of this network is mostly kernel launches: batch 32 takes 0.71 ms
eagerly and 0.40 ms replayed from a CUDA graph (BENCHMARKS.md, "GPU box"). So on CUDA the
warm-up captures the normalised forward once per bucket (1, 2, 4, ... 32 rows) into static
input and output buffers. A batch is written into the smallest bucket that holds it
(through page-locked host buffers: one copy in, one copy out, one synchronisation), the
padding rows zeroed (rows never mix in this network: convolutions and the LSTM run along
time, and BatchNorm uses its stored statistics in eval), the graph replayed and the first
rows read back. A batch larger than the largest bucket runs eagerly.

Torch-only and Ray-free (a GPU machine without Ray runs it through ``model.gpu_check``);
the capture itself is a parameter so the bucketing can be tested on a CPU.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch

Forward = Callable[[torch.Tensor], torch.Tensor]
# (forward, static input) -> (replay, static output): replay() recomputes the output
# from whatever the static input holds.
Capture = Callable[[Forward, torch.Tensor], tuple[Callable[[], None], torch.Tensor]]

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32)


def capture_cuda(
    forward: Forward, static_x: torch.Tensor
) -> tuple[Callable[[], None], torch.Tensor]:
    """PyTorch's recipe: warm up on a side stream, then capture on the device's stream."""
    with torch.no_grad():
        side = torch.cuda.Stream(device=static_x.device)
        side.wait_stream(torch.cuda.current_stream(static_x.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                forward(static_x)
        torch.cuda.current_stream(static_x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = forward(static_x)
    return graph.replay, static_out


class _Bucket(NamedTuple):
    """One captured bucket: the graph's device buffers and the host buffers staged
    through them (page-locked on CUDA), with numpy views of the host side."""

    static_x: torch.Tensor
    replay: Callable[[], None]
    static_out: torch.Tensor
    host_x: np.ndarray  # a view of the (pinned) host input the batch is written into
    host_in: torch.Tensor
    host_out: torch.Tensor  # float32, (pinned) host copy of the output
    out_view: np.ndarray


class GraphedForward:
    """``forward`` captured once per bucket; :meth:`run` answers a batch from the smallest
    bucket that holds it (None when none does). Replays are serialised: the buffers are
    shared by every caller of a bucket.

    A batch travels through page-locked host buffers made once per bucket: numpy writes
    the rows (and zeroes the padding) straight into the pinned input, one copy moves it
    into the graph's input, the graph replays, one copy brings the output rows back into
    the pinned output, and one stream synchronisation ends the call. From pageable
    memory each copy is staged through a driver buffer and waited for, and a copy into
    the graph's input, a zeroing and a clone of its output were kernels of their own; on
    the H200 the eager ``predict`` of 32 rows took 0.85 ms against 0.71 ms for its forward
    (BENCHMARKS.md, "GPU box")."""

    def __init__(
        self,
        forward: Forward,
        row_shape: tuple[int, ...],
        device: torch.device,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        capture: Capture = capture_cuda,
    ) -> None:
        sizes = sorted({int(b) for b in buckets})
        if not sizes or sizes[0] < 1:
            raise ValueError(f"buckets must be positive batch sizes, got {list(buckets)}")
        self.buckets = tuple(sizes)
        cuda = device.type == "cuda"  # only there is host memory pinned and a copy async
        self._device = device
        self._graphs: dict[int, _Bucket] = {}
        for size in self.buckets:
            static_x = torch.zeros((size, *row_shape), dtype=torch.float32, device=device)
            replay, static_out = capture(forward, static_x)
            host_in = torch.zeros(static_x.shape, dtype=torch.float32, pin_memory=cuda)
            host_out = torch.zeros(static_out.shape, dtype=torch.float32, pin_memory=cuda)
            self._graphs[size] = _Bucket(
                static_x, replay, static_out, host_in.numpy(), host_in, host_out, host_out.numpy()
            )
        self._lock = threading.Lock()

    def bucket_for(self, rows: int) -> int | None:
        """The smallest bucket holding ``rows``; None above the largest."""
        return next((b for b in self.buckets if b >= rows), None)

    def run(self, features: np.ndarray) -> np.ndarray | None:
        """The forward of ``features`` (``[rows, *row_shape]``, on the host) replayed, as a
        float32 ``[rows, ...]`` array of its own; None when no bucket fits."""
        rows = int(features.shape[0])
        bucket = self.bucket_for(rows)
        if bucket is None or rows == 0:
            return None
        b = self._graphs[bucket]
        with self._lock, torch.no_grad():
            b.host_x[:rows] = features
            b.host_x[rows:] = 0.0  # rows never mix, but stale rows must not linger
            b.static_x.copy_(b.host_in, non_blocking=True)
            b.replay()
            b.host_out[:rows].copy_(b.static_out[:rows], non_blocking=True)
            if self._device.type == "cuda":
                torch.cuda.current_stream(self._device).synchronize()
            return b.out_view[:rows].copy()
