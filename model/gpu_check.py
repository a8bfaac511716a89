"""Forward-latency check for a CUDA machine (torch only: no Ray, no app imports).

    python -m model.gpu_check --json out.json [--artifact DIR]

Loads an artifact (or a seeded random one) through the real runtime with the default
GPU options, checks its golden sample on the device, then times for each batch size:
``eager`` (network forward, fp32), ``graph`` (the same forward replayed from a CUDA
graph; ``graph-fp16`` and ``graph-bf16`` the same under autocast, with each one's
deviation from the fp32 eager output) and ``predict`` (numpy in -> numpy out: the serving
path, normalisation and copies included, replayed from the graphs the warm-up captured).
Without CUDA it times the CPU eager path and says so.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.common.artifact import read_manifest
from model.common.gpu import GpuOptions
from model.common.registry import ModelRegistry
from model.cuda_graphs import capture_cuda
from model.export import make_random_artifact
from model.numerics import autocast
from model.runtime import LoadedModel, load_model


def _timings(
    fn: Callable[[], object], iters: int, warmup: int, sync: Callable[[], None]
) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def _row(mode: str, batch: int, times: list[float], **extra: Any) -> dict[str, Any]:
    ms = np.asarray(times) * 1000.0
    return {
        "mode": mode,
        "batch": batch,
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "rows_per_s": round(batch / float(np.mean(times)), 1),
        **extra,
    }


def _graph_forward(
    net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, reference: torch.Tensor
) -> tuple[Callable[[], None], float]:
    """Capture ``net(x)`` in a CUDA graph; return a replay closure and its largest
    deviation from ``reference`` (the fp32 eager output)."""
    static_x = x.clone()
    replay_graph, static_out = capture_cuda(net, static_x)  # the serving path's capture
    replay_graph()
    torch.cuda.synchronize()
    deviation = float((static_out.float() - reference).abs().max())

    def replay() -> None:
        static_x.copy_(x)  # a real caller has to copy its batch into the captured buffer
        replay_graph()

    return replay, deviation


def _autocast(
    net: torch.nn.Module, device: torch.device, dtype: torch.dtype
) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, dtype):  # the serving forward's autocast, as captured there
            return net(x)

    return forward


# The forward replayed in each precision: "graph" is what serves (fp32, TF32 as the GPU
# options say); the others say whether a reduced precision would be faster on this GPU
# (on the H200 in 2026-11 bf16 was not, eagerly) and how far it moves the raw outputs.
_GRAPH_MODES: tuple[tuple[str, torch.dtype | None], ...] = (
    ("graph", None),
    ("graph-fp16", torch.float16),
    ("graph-bf16", torch.bfloat16),
)


def _bench(
    model: LoadedModel, batch_sizes: list[int], iters: int, warmup: int
) -> list[dict[str, Any]]:
    cuda = model.device.type == "cuda"
    sync: Callable[[], None] = torch.cuda.synchronize if cuda else (lambda: None)
    net = model.network
    arch = model.manifest.architecture
    golden = np.asarray(model.manifest.golden.inputs, dtype=np.float32)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for batch in batch_sizes:
        x = torch.randn(batch, arch.window, arch.num_features, generator=gen).to(model.device)
        with torch.inference_mode():
            rows.append(_row("eager", batch, _timings(partial(net, x), iters, warmup, sync)))
        if cuda:
            with torch.no_grad():
                reference = net(x).float()
            for mode, dtype in _GRAPH_MODES:
                forward = net if dtype is None else _autocast(net, model.device, dtype)
                try:
                    replay, deviation = _graph_forward(forward, x, reference)
                    rows.append(
                        _row(
                            mode,
                            batch,
                            _timings(replay, iters, warmup, sync),
                            max_abs_vs_eager=deviation,
                        )
                    )
                except RuntimeError as exc:  # report, do not abort the whole check
                    rows.append({"mode": mode, "batch": batch, "error": str(exc)[:300]})
        features = np.concatenate([golden] * (-(-batch // len(golden))))[:batch]
        rows.append(
            _row("predict", batch, _timings(partial(model.predict, features), iters, warmup, sync))
        )
    return rows


# Issue 11's GPU target: 32 rows through the serving path (``predict``, numpy in and out)
# at p50 <= 0.4 ms on an H100/H200.
TARGET_BATCH = 32
TARGET_P50_MS = 0.4


def target_verdict(results: list[dict[str, Any]], *, on_gpu: bool) -> str | None:
    """The GPU target's verdict from the ``predict`` row of 32 rows; None where there is
    no such row or the forwards ran on a CPU (a CPU's figure is no verdict)."""
    row = next((r for r in results if r["mode"] == "predict" and r["batch"] == TARGET_BATCH), None)
    if row is None or "p50_ms" not in row or not on_gpu:
        return None
    p50 = row["p50_ms"]
    gap = round(p50 - TARGET_P50_MS, 4)
    how = "met" if gap <= 0 else f"missed by {gap:g} ms"
    return f"predict {TARGET_BATCH} rows p50 {p50:g} ms, target <= {TARGET_P50_MS:g} ({how})"


def _print_report(report: dict[str, Any]) -> None:
    print(f"{report['device']} | torch {report['torch']} | CUDA {report['cuda']}", end="")
    print(f" | cuDNN {report['cudnn']} | {report['cpu_threads']} CPU threads")
    print(
        f"model {report['model']} loaded in {report['load_seconds']:.2f}s; golden deviation "
        f"fp32 {report['golden_max_deviation_fp32']:.2e}, "
        f"serving precision {report['golden_max_deviation_serving']:.2e}"
    )
    print(f"{'mode':<10} {'batch':>5} {'p50 ms':>9} {'p99 ms':>9} {'rows/s':>11} {'max dev':>9}")
    for row in report["results"]:
        head = f"{row['mode']:<10} {row['batch']:>5}"
        if "error" in row:
            print(f"{head}  failed: {row['error']}")
        else:
            dev = row.get("max_abs_vs_eager")
            tail = f" {dev:>9.2e}" if dev is not None else ""
            print(
                f"{head} {row['p50_ms']:>9.3f} {row['p99_ms']:>9.3f} "
                f"{row['rows_per_s']:>11.0f}{tail}"
            )
    if report.get("target"):
        print(f"issue 11 GPU target: {report['target']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Forward-latency check of the CNN+LSTM runtime.")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--artifact", type=Path, help="artifact dir (manifest + weights)")
    parser.add_argument("--device", default="gpu")
    parser.add_argument("--batch-sizes", default="1,8,32,128")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    opts = GpuOptions()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        if args.artifact:
            manifest = read_manifest(args.artifact)
            ref = ModelRegistry(tmp).publish(args.artifact, manifest.name, manifest.version)
        else:
            ref = make_random_artifact(Path(tmp), seed=0)
        t0 = time.perf_counter()
        model = load_model(ModelRegistry(tmp), ref, device=args.device, gpu_options=opts)
        load_s = time.perf_counter() - t0
    golden = np.asarray(model.manifest.golden.inputs, dtype=np.float32)
    expected = np.asarray(model.manifest.golden.expected)
    serving_dev = np.abs(model.predict(golden) - expected)
    serving_dev[:, 0] /= model.manifest.normalization.return_std
    model.warmup()

    cuda = model.device.type == "cuda"
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(model.device)
        if cuda
        else f"CPU ({platform.processor() or platform.machine()})",
        "cuda_available": torch.cuda.is_available(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cpu_threads": torch.get_num_threads(),
        "gpu_options": asdict(opts),
        "model": ref.key,
        "load_seconds": round(load_s, 3),
        "golden_max_deviation_fp32": model.golden_deviation(),
        "golden_max_deviation_serving": float(serving_dev.max()),
        # Batch sizes `predict` replays from CUDA graphs captured at warm-up (empty: eager).
        "serving_graph_buckets": list(model.graph_buckets),
        "results": _bench(model, batch_sizes, args.iters, args.warmup),
    }
    report["target"] = target_verdict(report["results"], on_gpu=cuda)
    if not cuda:
        why = "CPU requested" if torch.cuda.is_available() else "no CUDA available"
        print(f"{why}: timing the CPU eager path only")
    _print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
