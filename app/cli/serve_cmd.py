"""``cnnlstm serve``: local Ray (or ``RAY_ADDRESS``), the app, wait for ``/ready``, Ctrl-C."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import numpy as np

from app.config.env import load_service_config
from app.observability.logging import configure_logging
from model.common.features import WINDOW
from model.data import load_bars


def sample_request(symbol: str = "EURUSD", offset: int = 1000) -> dict[str, object]:
    """A real window of EURUSD hourly bars (shipped in the ``backtesting`` package)."""
    bars = load_bars("eurusd")[offset : offset + WINDOW]
    start = 1_600_000_000
    return {
        "symbol": symbol,
        "timestamps": [start + 3600 * i for i in range(WINDOW)],
        **{
            name: np.round(bars[:, j], 6).tolist()
            for j, name in enumerate(("open", "high", "low", "close", "volume"))
        },
    }


def _print_howto(url: str, ca: Path | None, key_hint: str, sample: Path | None) -> None:
    cacert = f"--cacert {ca} " if ca else ""
    body = f"@{sample}" if sample else "@request.json"
    print(f"\nServing on {url}  (Ctrl-C stops it)\n", flush=True)
    print("Try it:")
    print(f"  curl {cacert}{url}/ready")
    print(
        f"  curl {cacert}-H \"X-API-Key: {key_hint}\" -H 'Content-Type: application/json' "
        f"-d {body} {url}/predict"
    )
    if sample:
        token_file = sample.parent / "stats-token"
        print(f'  curl {cacert}-H "Authorization: Bearer $(cat {token_file})" {url}/stats')
    print(
        f"  curl {cacert}{url}/metrics | head\n  open {url}/docs for the OpenAPI docs\n", flush=True
    )


def _serve(args: argparse.Namespace) -> int:
    from app.serve import runner  # imports Ray: only this command pays for it

    settings, config = load_service_config(args.config)
    configure_logging(config.logging, component="cli", stderr=True)
    ca: Path | None = None
    key_hint = "<your API key>"
    # Demo material goes to ./.local (git-ignored); a production run writes nothing:
    # its secrets directory is a read-only mount.
    local_dir = Path(".local")
    sample: Path | None = None
    if args.demo:
        from app.cli.demo import prepare_demo
        from app.security.secret_files import atomic_write_private

        print("Preparing demo material (dev TLS, JWT secret, API key, model)...", flush=True)
        demo = prepare_demo(config, train_seconds=args.train_seconds)
        ca = demo.ca_file
        key_hint = f"$(cat {demo.api_key_file})"
        atomic_write_private(local_dir / "stats-token", demo.stats_token.encode())
        sample = local_dir / "sample-request.json"
        sample.write_text(json.dumps(sample_request()))
        if demo.api_key_is_new:
            # Shown once, on the terminal only (never logged); kept 0600 for re-runs.
            print(f"\nNew demo API key (scope model:predict): {demo.api_key}")
            print(f"  saved to {demo.api_key_file}")
        print(f"Model in the registry: {demo.model}", flush=True)
    elif config.network_security.tls.enabled:
        candidate = config.network_security.tls.cert_path.parent / "ca.crt"
        ca = candidate if candidate.exists() else None

    started = runner.start_ray(settings, config)
    config = started.config
    print(f"Ray: {started.how}", flush=True)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        runner.deploy(config, settings)
        url = runner.base_url(config)
        info = runner.wait_ready(url, verify=runner.ssl_context(ca), timeout_s=args.timeout)
        model = info.body.get("model") or {}
        print(f"Ready after {info.waited_s:.1f}s: model {model.get('name')}/{model.get('version')}")
        _print_howto(url, ca, key_hint, sample)
        if args.exit_when_ready:
            return 0
        stop.wait()
        print("Shutting down...", flush=True)
        return 0
    except TimeoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        runner.shutdown()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="start Ray (local or RAY_ADDRESS) and the app; wait for /ready"
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="first make what a laptop lacks: dev TLS certs, a JWT secret, a demo API key and "
        "a demo model trained on real EURUSD bars (kept for later runs)",
    )
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for /ready")
    p.add_argument("--train-seconds", type=float, default=60.0, help="demo training budget")
    p.add_argument(
        "--exit-when-ready", action="store_true", help="stop as soon as /ready is 200 (smoke test)"
    )
    p.set_defaults(func=_serve)
