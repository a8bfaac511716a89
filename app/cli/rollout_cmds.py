"""``cnnlstm rollout start|status|abort``: drive the blue/green rollout controller.

These talk to the running application through Ray: ``ray.init(address=RAY_ADDRESS or
"auto")`` (run them on a cluster node, or set ``RAY_ADDRESS`` to the GCS address or a
``ray://`` client address), then a handle to the ``rollout_controller`` deployment of
``serving.app_name``. Every command prints the controller's status as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from app.config.env import load_service_config
from app.control.rollout_settings import CONTROLLER_NAME

CALL_TIMEOUT_S = 120.0  # start waits for a predictor to load and check the version
FINISHED = ("promoted", "rolled_back", "aborted")


def connect(config_path: str | None) -> Any:
    """A handle to the running rollout controller."""
    import ray
    from ray import serve

    settings, config = load_service_config(config_path)
    if not ray.is_initialized():
        address = settings.RAY_ADDRESS or "auto"
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    return serve.get_deployment_handle(CONTROLLER_NAME, app_name=config.serving.app_name)


def _call(handle: Any, method: str, *args: Any) -> Any:
    return getattr(handle, method).remote(*args).result(timeout_s=CALL_TIMEOUT_S)


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _answer(result: dict[str, Any]) -> int:
    _print(result)
    if not result.get("accepted", False):
        print(f"refused: {result.get('reason')}", file=sys.stderr)
        return 1
    return 0


def _wait(handle: Any, timeout_s: float, poll_s: float = 2.0) -> int:
    """Follow the rollout to its end; 0 when promoted, 1 otherwise."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        status = _call(handle, "status")
        seen = (status["phase"], status["green_weight_pct"])
        if seen != last:
            print(f"{status['phase']} green={status['green_weight_pct']:g}%", file=sys.stderr)
            last = seen
        if status["phase"] in FINISHED:
            _print(status)
            return 0 if status["phase"] == "promoted" else 1
        time.sleep(poll_s)
    print(f"still {last} after {timeout_s:g}s", file=sys.stderr)
    return 1


def _start(args: argparse.Namespace) -> int:
    handle = connect(args.config)
    code = _answer(_call(handle, "start", args.model, args.version, args.shadow_s))
    if code == 0 and args.wait:
        return _wait(handle, args.timeout)
    return code


def _status(args: argparse.Namespace) -> int:
    _print(_call(connect(args.config), "status"))
    return 0


def _abort(args: argparse.Namespace) -> int:
    return _answer(_call(connect(args.config), "abort", args.reason))


def register(sub: argparse._SubParsersAction) -> None:
    rollout = sub.add_parser(
        "rollout",
        help="blue/green rollout of a registry version (start, status, abort)",
        description="Shift traffic from the version in service (blue) to another (green) "
        "in steps after a shadow phase that compares their answers, rolling back on errors "
        "or disagreement. Needs the app running; connects with "
        "RAY_ADDRESS (default: auto).",
    )
    rsub = rollout.add_subparsers(dest="rollout_command", required=True)
    start = rsub.add_parser("start", help="start a rollout to MODEL VERSION (green)")
    start.add_argument("model")
    start.add_argument("version")
    start.add_argument(
        "--shadow-s",
        type=float,
        default=None,
        metavar="SECONDS",
        help="shadow phase before the first traffic step: green scores a sample of blue's "
        "rows and must agree with it (default: blue_green_deployment.shadow.duration_s; "
        "0 skips it)",
    )
    start.add_argument(
        "--wait", action="store_true", help="follow it to the end (exit 0 only if promoted)"
    )
    start.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits")
    start.set_defaults(func=_start)
    status = rsub.add_parser("status", help="the controller's state as JSON")
    status.set_defaults(func=_status)
    abort = rsub.add_parser("abort", help="send all traffic back to blue now")
    abort.add_argument("--reason", default="aborted by an operator")
    abort.set_defaults(func=_abort)
