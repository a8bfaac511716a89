"""Run one open-loop load in a fresh Python process: ``python -m app.bench.client_process``.

Why a process of its own: the benchmark's main process is also Ray's driver (its threads,
its log streaming, hundreds of thousands of imported objects a collection would walk),
and the client's CPU time and memory must be measured apart from everything else. The
child imports only aiohttp and the generator; request bodies come in a file (one per
line) and the spec, secrets included, on stdin; the result is one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from app.bench.loadgen import LoadSpec, run_open_loop
from app.bench.payloads import Payloads


def _loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, bool]:
    try:
        import uvloop
    except ImportError:
        return None, False
    return uvloop.new_event_loop, True


def run(coro: Coroutine[Any, Any, dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """Run the load on uvloop when installed; returns (result, used uvloop)."""
    factory, used = _loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro), used


def run_in_subprocess(spec: LoadSpec, payloads: Payloads) -> dict[str, Any]:
    """Run ``spec`` with ``payloads`` in a child process and return its result dict."""
    with tempfile.TemporaryDirectory(prefix="cnnlstm-bench-") as tmp:
        bodies = Path(tmp) / "bodies.jsonl"
        # orjson never emits a raw newline, so one body per line is unambiguous.
        bodies.write_bytes(b"\n".join(payloads.bodies))
        proc = subprocess.run(
            [sys.executable, "-m", "app.bench.client_process", "--bodies", str(bodies)],
            input=json.dumps(spec.to_json()),
            capture_output=True,
            text=True,
            timeout=spec.warmup_s + spec.duration_s + 2 * spec.timeout_s + 120,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(
            f"load generator failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bodies", type=Path, required=True, help="one request body per line")
    args = parser.parse_args(argv)
    spec = LoadSpec.from_json(json.loads(sys.stdin.read()))
    bodies = [line for line in args.bodies.read_bytes().split(b"\n") if line]
    if not bodies:
        print("no request bodies", file=sys.stderr)
        return 2
    # Everything alive now lives for the whole run: keep the collector off it so a full
    # collection cannot stall the send schedule (the same trick the servers use).
    gc.collect()
    gc.freeze()
    result, used_uvloop = run(run_open_loop(spec, bodies))
    result["generator"]["uvloop"] = used_uvloop
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
