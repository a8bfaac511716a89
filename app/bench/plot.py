"""Latency (p50 and p99) against offered rate from a ``cnnlstm bench --json`` result.

``cnnlstm bench plot RESULT.json OUT.png`` or ``python -m app.bench.plot RESULT.json OUT.png``.
Every run of a system (the fixed rates, both Serve runs of an A/B/A pair, and every
find-max step) is one point; the p99 target is drawn as a line. matplotlib comes with
the ``bench`` extra (``pip install -e '.[bench]'``; ``dev`` includes it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

LABELS = {"serve": "Serve", "baseline": "no-Ray peer", "hello": "bare hello (floor)"}
COLOURS = {"serve": "tab:blue", "baseline": "tab:orange", "hello": "tab:green"}


def series(result: dict[str, Any]) -> dict[str, list[tuple[float, float | None, float | None]]]:
    """Per system: sorted ``(offered rate, p50 ms, p99 ms)`` of every single-row run."""
    out: dict[str, list[tuple[float, float | None, float | None]]] = {}
    for name, target in result["targets"].items():
        runs = [*target.get("runs", []), *(target.get("find_max") or {}).get("steps", [])]
        points = [
            (float(r["offered_rps"]), r["latency_ms"]["p50"], r["latency_ms"]["p99"]) for r in runs
        ]
        out[name] = sorted(points, key=lambda p: p[0])
    return out


def plot(result: dict[str, Any], out: Path, p99_target_ms: float = 100.0) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, points in series(result).items():
        colour = COLOURS.get(name)
        label = LABELS.get(name, name)
        for idx, style, what in ((1, "--", "p50"), (2, "-", "p99")):
            xy = [(p[0], p[idx]) for p in points if p[idx] is not None]
            if xy:
                xs, ys = zip(*xy, strict=True)
                ax.plot(xs, ys, style, marker="o", color=colour, label=f"{label} {what}")
    ax.axhline(p99_target_ms, color="grey", linewidth=0.8, label=f"p99 target {p99_target_ms:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (req/s, open loop)")
    ax.set_ylabel("latency from scheduled send (ms)")
    load = (result.get("meta") or {}).get("loadavg_1m_end")
    ax.set_title(f"cnnlstm bench: latency vs offered rate (load1 at end {load})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", type=Path, help="JSON written by cnnlstm bench --json")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--p99-target-ms", type=float, default=100.0)
    args = parser.parse_args(argv)
    try:
        result = json.loads(args.result.read_text())
        plot(result, args.out, args.p99_target_ms)
    except ImportError:
        print("error: plotting needs matplotlib: pip install -e '.[bench]'", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"plot written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
