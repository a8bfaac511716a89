"""``cnnlstm bench``: open-loop latency/throughput against Serve (and the no-Ray baseline)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.bench.report import format_report
from app.bench.runner import INSTRUMENTS, BenchOptions, run_bench
from app.bench.schedule import ARRIVALS
from app.bench.sender import IDLE_REUSE_S
from app.bench.server_process import KEEP_ALIVE_S


def _rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of rates: {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("rates must be positive numbers")
    return rates


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions(
        rates=args.rates,
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        batch_symbols=args.batch_symbols,
        batch_rates=args.batch_rates,
        find_max=args.find_max,
        find_max_start=args.find_max_start,
        find_max_step=args.find_max_step,
        find_max_limit=args.find_max_limit,
        find_max_sittings=args.find_max_sittings,
        compare_baseline=args.compare_baseline,
        distinct_windows=args.windows,
        timeout_s=args.request_timeout,
        config_path=args.config,
        url=args.url,
        ca_file=args.ca,
        api_key_file=args.api_key_file,
        stats_token_file=args.stats_token_file,
        baseline_port=args.baseline_port,
        peer_engine=args.peer_engine,
        train_seconds=args.train_seconds,
        instrument=args.instrument,
        arrivals=args.arrivals,
        senders=args.senders,
        generator_nice=args.generator_nice,
        generator_spin_ms=args.generator_spin_ms,
        idle_reuse_s=args.idle_reuse_s,
        max_connections=args.max_connections,
        seed=args.seed,
        calibrate=args.calibrate,
        calibrate_only=args.calibrate_only,
        model_batch1_ms=args.model_batch1_ms,
    )


def _plot(words: list[str]) -> int:
    if len(words) != 3 or words[0] != "plot":
        print("error: usage: cnnlstm bench plot RESULT.json OUT.png", file=sys.stderr)
        return 2
    from app.bench import plot

    return plot.main(words[1:])


def _bench(args: argparse.Namespace) -> int:
    if args.action:
        return _plot(args.action)
    if args.url and not args.api_key_file:
        print("error: --url needs --api-key-file", file=sys.stderr)
        return 2
    opts = options_from_args(args)

    def progress(msg: str) -> None:
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    try:
        result = run_bench(opts, progress)
    except (TimeoutError, RuntimeError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_report(result), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"\nJSON written to {args.json}")
    if args.plot:
        from app.bench import plot

        try:
            plot.plot(result, args.plot)
        except ImportError:
            print("error: --plot needs matplotlib: pip install -e '.[bench]'", file=sys.stderr)
            return 1
        print(f"plot written to {args.plot}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="open-loop load at fixed rates; p50..p99.9 against the spec 12.1 targets",
        description="Offer fixed arrival rates (open loop: latency counts from the scheduled "
        "send time) with real EURUSD windows and real credentials over HTTPS. Without --url, "
        "starts the stack as 'cnnlstm serve --demo' does and stops it at the end. "
        "'cnnlstm bench plot RESULT.json OUT.png' draws p50/p99 against offered rate.",
    )
    p.add_argument(
        "action",
        nargs="*",
        metavar="plot RESULT.json OUT.png",
        help="instead of measuring, plot a result written by --json",
    )
    target = p.add_argument_group("target (default: start the local Serve stack)")
    target.add_argument("--url", default=None, help="benchmark a running server instead")
    target.add_argument("--ca", type=Path, default=None, help="CA file to verify its certificate")
    target.add_argument("--api-key-file", type=Path, default=None, help="X-API-Key, in a file")
    target.add_argument(
        "--stats-token-file", type=Path, default=None, help="JWT with model:stats, for /stats"
    )
    load = p.add_argument_group("load")
    load.add_argument("--rates", type=_rates, default=[200.0, 500.0], help="req/s, e.g. 200,500")
    load.add_argument("--duration", type=float, default=60.0, help="measured seconds per rate")
    load.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first")
    load.add_argument(
        "--connections", type=int, default=64, help="keep-alive connections opened up front"
    )
    load.add_argument(
        "--max-connections",
        type=int,
        default=512,
        help="more are opened when every connection waits for a reply (a send never waits)",
    )
    load.add_argument(
        "--arrivals",
        choices=ARRIVALS,
        default="even",
        help="even: one evenly spaced stream over all senders; poisson: exponential gaps",
    )
    load.add_argument("--seed", type=int, default=0, help="seed of the Poisson schedule")
    load.add_argument(
        "--instrument",
        choices=INSTRUMENTS,
        default="pysock",
        help="pysock: sender processes on raw keep-alive sockets (default, see "
        "app/bench/generator.py); aiohttp: one asyncio process (the older client)",
    )
    load.add_argument("--senders", type=int, default=2, help="sender processes (pysock)")
    load.add_argument(
        "--generator-nice",
        type=int,
        default=-5,
        help="the sender processes' niceness (pysock; default -5, ahead of the servers, so "
        "the generator is not what falls behind on a shared box; 0: the servers' own; kept "
        "where it cannot be raised)",
    )
    load.add_argument(
        "--generator-spin-ms",
        type=float,
        default=2.0,
        help="pysock: a sender idle for 100 ms or more sleeps until this long before its "
        "next send and spins on the clock for the rest, because a timer fires 0.1-0.8 ms "
        "late on a VM that halts idle vCPUs (default 2; 0: sleep only)",
    )
    load.add_argument(
        "--idle-reuse-s",
        type=float,
        default=IDLE_REUSE_S,
        help="a connection idle this long is closed, not reused; keep it under the "
        f"server's keep-alive timeout (default {IDLE_REUSE_S:g}: the bench's own servers "
        f"keep {KEEP_ALIVE_S} s, as Serve's gateway; uvicorn's default is 5 s)",
    )
    load.add_argument(
        "--windows",
        type=int,
        default=2048,
        help="distinct EURUSD windows cycled through (more than the feature cache holds, so "
        "every request misses it; 1 measures the cache-hit path)",
    )
    load.add_argument("--request-timeout", type=float, default=30.0, help="seconds per request")
    load.add_argument(
        "--batch-symbols",
        type=int,
        default=0,
        help="also measure /predict/batch with N symbols per request (reports predictions/s)",
    )
    load.add_argument(
        "--batch-rates",
        type=_rates,
        default=None,
        help="req/s for the /predict/batch runs (default: each --rates value / N, the same "
        "predictions/s as the single-row runs)",
    )
    search = p.add_argument_group("search")
    search.add_argument(
        "--find-max",
        action="store_true",
        help="step the rate up until p99 > target or errors, Serve, peer and the bare hello "
        "app alternating at each step (a system failing the first step steps down until one "
        "passes); report each one's highest passing rate",
    )
    search.add_argument("--find-max-start", type=float, default=25.0)
    search.add_argument("--find-max-step", type=float, default=25.0)
    search.add_argument("--find-max-limit", type=float, default=3000.0)
    search.add_argument(
        "--find-max-sittings",
        type=_positive_int,
        default=1,
        help="repeat the whole find-max staircase N times and keep each system's median "
        "highest rate (every sitting's maximum is printed and kept in the JSON)",
    )
    cal = p.add_argument_group("calibration")
    cal.add_argument(
        "--calibrate",
        action="store_true",
        help="also offer every rate to a bare ASGI hello app (uvicorn, same certificate): "
        "the generator's floor, latency and CPU per request",
    )
    cal.add_argument(
        "--calibrate-only",
        action="store_true",
        help="only the hello app: check the instrument without starting Serve",
    )
    cal.add_argument(
        "--model-batch1-ms",
        type=float,
        default=None,
        help="the model's batch-1 forward time for the 1 req/s target (default: the "
        "server's /stats model time at 1 req/s)",
    )
    p.add_argument(
        "--compare-baseline",
        action="store_true",
        help="also run a single-process uvicorn server (no Ray) serving the same model, "
        "alternating Serve, peer, Serve at each rate; prints Serve/peer ratios",
    )
    p.add_argument("--baseline-port", type=int, default=0, help="default: a free port")
    p.add_argument(
        "--peer-engine",
        default="serve",
        metavar="ENGINE",
        help="the peer's serving.predictor_engine: 'serve' (default) pins it to the split "
        "Serve's predictor chose, so both run the same engines and only the serving paths "
        "differ; or an engine setting (auto: the peer times its own at load)",
    )
    p.add_argument("--train-seconds", type=float, default=60.0, help="demo model training budget")
    p.add_argument("--json", type=Path, default=None, help="write the full result here")
    p.add_argument("--plot", type=Path, default=None, help="also draw the result to this PNG")
    p.set_defaults(func=_bench)
