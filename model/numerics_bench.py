"""Each CPU numerics of one artifact, side by side: forward time and error against fp32.

    python -m model.numerics_bench [--registry DIR] [--version V] [--rows 1,8,32]

Loads the artifact once per numerics through the real runtime (``load_model``, so each one
runs on the engine it is served on, and a numerics this machine cannot serve says why),
times ``predict`` at each forward size on the same real EURUSD windows, alternating the
numerics round by round so that a busy moment falls on all of them, and prints the best
and median time, rows per second, and the largest deviation from fp32 over those windows
(returns in units of return_std, prob_up as is: the golden check's units). fp32 on torch
is the baseline in the same run. Torch only: no Ray, no app imports.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from model.common.features import compute_features, sliding_windows
from model.common.registry import ModelRegistry
from model.data import load_bars
from model.numerics import cpu_has_native_bf16
from model.runtime import LoadedModel, configure_threads, load_model

# (label, numerics, engine): the exact baseline first.
CANDIDATES = (
    ("fp32 torch", "fp32", "torch"),
    ("fp32 onnxruntime", "fp32", "onnxruntime"),
    ("bf16 torch", "bf16", "torch"),
    ("int8 onnxruntime", "int8", "auto"),
)


def _windows(rows: int) -> np.ndarray:
    bars = load_bars("eurusd")
    return compute_features(sliding_windows(bars[-(rows + 63) :]))


def run(
    registry: ModelRegistry,
    name: str,
    version: str | None,
    rows: Sequence[int],
    rounds: int,
    check_rows: int = 512,
) -> list[dict[str, object]]:
    """One result per candidate and size; a candidate that loads as something else (its
    numerics fell back) is reported with the reason and not timed."""
    ref = registry.resolve(name, version)
    models: list[tuple[str, LoadedModel]] = []
    results: list[dict[str, object]] = []
    for label, numerics, engine in CANDIDATES:
        if numerics == "bf16" and not cpu_has_native_bf16():
            # Served only where the CPU has it (auto); forced, it runs emulated, ~10x slower.
            results.append({"numerics": label, "skipped": "this CPU has no native bf16"})
            continue
        model = load_model(registry, ref, numerics=numerics, engine=engine)
        if model.numerics.name != numerics:
            results.append({"numerics": label, "skipped": model.numerics.fallback})
            continue
        models.append((label, model))
    check = _windows(check_rows).astype(np.float32)
    exact = models[0][1].predict(check)
    deviation = {label: m.deviation(m.predict(check), exact) for label, m in models}
    times: dict[tuple[str, int], list[float]] = {}
    for size in rows:
        x = np.ascontiguousarray(check[:size])
        for _, m in models:
            m.predict(x)  # warm
        for _ in range(rounds):
            for label, m in models:
                started = time.perf_counter()
                m.predict(x)
                times.setdefault((label, size), []).append(time.perf_counter() - started)
    for label, m in models:
        for size in rows:
            ms = np.asarray(times[(label, size)]) * 1000.0
            results.append(
                {
                    "numerics": label,
                    "engine": m.engine.name,
                    "rows": size,
                    "best_ms": round(float(ms.min()), 3),
                    "median_ms": round(float(np.median(ms)), 3),
                    "rows_per_s": round(size / float(np.median(ms)) * 1000.0),
                    "max_dev_vs_fp32": deviation[label],
                }
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", type=Path, default=Path(".local/models"))
    parser.add_argument("--model", default="cnn_lstm")
    parser.add_argument("--version", default=None, help="default: the registry's default")
    parser.add_argument("--rows", default="1,8,32", help="forward sizes")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (as served)")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    results = run(
        ModelRegistry(args.registry),
        args.model,
        args.version,
        [int(r) for r in args.rows.split(",")],
        args.rounds,
    )
    print(f"torch {torch.__version__}, {args.threads} thread(s); deviation over 512 windows")
    print(f"{'numerics':<17} {'engine':<22} {'rows':>4} {'best ms':>8} {'median':>8}", end="")
    print(f" {'rows/s':>8} {'max dev vs fp32':>15}")
    for r in results:
        if "skipped" in r:
            print(f"{r['numerics']:<17} not served here: {r['skipped']}")
            continue
        print(
            f"{r['numerics']:<17} {r['engine']:<22} {r['rows']:>4} {r['best_ms']:>8.3f} "
            f"{r['median_ms']:>8.3f} {r['rows_per_s']:>8} {r['max_dev_vs_fp32']:>15.2e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
