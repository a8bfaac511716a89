"""CUDA graphs for the serving forward: one captured per batch-size bucket at warm-up.

On the H200 a forward of this network is mostly kernel launches: batch 32 takes 0.71 ms
eagerly and 0.40 ms replayed from a CUDA graph (BENCHMARKS.md, "GPU box"). So on CUDA the
warm-up captures the normalised forward once per bucket (1, 2, 4, ... 32 rows) into static
input and output buffers. A batch is copied into the smallest bucket that holds it, the
padding rows zeroed (rows never mix in this network: convolutions and the LSTM run along
time, and BatchNorm uses its stored statistics in eval), the graph replayed and the first
rows read back. A batch larger than the largest bucket runs eagerly.

Torch-only and Ray-free (a GPU machine without Ray runs it through ``model.gpu_check``);
the capture itself is a parameter so the bucketing can be tested on a CPU.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

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


class GraphedForward:
    """``forward`` captured once per bucket; :meth:`run` answers a batch from the smallest
    bucket that holds it (None when none does). Replays are serialised: the buffers are
    shared by every caller of a bucket."""

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
        self._graphs: dict[int, tuple[torch.Tensor, Callable[[], None], torch.Tensor]] = {}
        for size in self.buckets:
            static_x = torch.zeros((size, *row_shape), dtype=torch.float32, device=device)
            replay, static_out = capture(forward, static_x)
            self._graphs[size] = (static_x, replay, static_out)
        self._lock = threading.Lock()

    def bucket_for(self, rows: int) -> int | None:
        """The smallest bucket holding ``rows``; None above the largest."""
        return next((b for b in self.buckets if b >= rows), None)

    def run(self, x: torch.Tensor) -> torch.Tensor | None:
        """The forward of ``x`` (on the capture device) replayed; None when no bucket fits."""
        rows = int(x.shape[0])
        bucket = self.bucket_for(rows)
        if bucket is None or rows == 0:
            return None
        static_x, replay, static_out = self._graphs[bucket]
        with self._lock, torch.no_grad():
            static_x[:rows].copy_(x)
            if rows < bucket:
                static_x[rows:].zero_()
            replay()
            return static_out[:rows].clone()
