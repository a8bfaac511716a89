"""``cnnlstm config render-serve|render-kuberay|render-env|check``.

Rendering reads the config file alone (no environment overlay), so a generated file
depends only on the committed config (``render-env``, in ``render_env_cmd``, resolves it
as ``cnnlstm serve`` does: ``--config``, else ``CNNLSTM_CONFIG``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from app.cli import render_env_cmd
from app.config import ConfigError, ServiceConfig, load_config_file
from app.serve.manifests import PLACEHOLDER_IMAGE, render_kuberay
from app.serve.options import Device
from app.serve.serve_yaml import build_serve_config, render_serve_config


def _write(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)


def _config_flag(args: argparse.Namespace) -> str:
    return f"cnnlstm --config {args.config} " if args.config else "cnnlstm "


def _render_serve(args: argparse.Namespace) -> int:
    config = load_config_file(args.config)
    app_path = args.app_config_path or args.config
    command = f"{_config_flag(args)}config render-serve --device {args.device}"
    if args.app_config_path:
        command += f" --app-config-path {args.app_config_path}"
    if args.output:
        command += f" --output {args.output}"
    device: Device = args.device
    _write(
        render_serve_config(config, config_path=app_path, device=device, command=command),
        args.output,
    )
    return 0


def _render_kuberay(args: argparse.Namespace) -> int:
    if not args.config:
        print("render-kuberay needs --config (the file ships as a ConfigMap)", file=sys.stderr)
        return 2
    config = load_config_file(args.config)
    image = args.image or PLACEHOLDER_IMAGE
    outputs = {
        "--output": args.output,
        "--cronjobs-output": args.cronjobs_output,
        "--cluster-output": args.cluster_output,
        "--secrets-output": args.secrets_output,
    }
    command = f"{_config_flag(args)}config render-kuberay --device {args.device}"
    for flag, value in (("--image", args.image), *outputs.items()):
        if value:
            command += f" {flag} {value}"
    files = render_kuberay(
        config, Path(args.config), device=args.device, image=image, command=command
    )
    if all(value is None for value in outputs.values()):
        # Never the Secret templates: piped into `kubectl apply`, their placeholders would
        # replace the real Secrets (TLS, keys, the Ray token). --secrets-output writes them.
        _write("---\n".join((files.rayservice, files.cronjobs, files.cluster)), None)
        return 0
    for text, output in zip(files, outputs.values(), strict=True):
        if output is not None:
            _write(text, output)
    return 0


def check_config(config: ServiceConfig) -> list[str]:
    """Checks beyond the schema: things that would only fail once deployed."""
    problems: list[str] = []
    from app.ops.scheduler import parse_cron
    from app.scaling.market_calendar import CalendarUnavailable, MarketSchedule

    if config.market_calendar.enabled:
        try:
            MarketSchedule(config.market_calendar.exchange).is_open(time.time())
        except CalendarUnavailable as exc:
            problems.append(f"market_calendar.exchange: {exc}")
    for name in ("model_backup", "config_backup"):
        try:
            parse_cron(getattr(config, name).schedule)
        except ValueError as exc:
            problems.append(f"{name}.schedule: {exc}")
    try:
        _validate_with_serve(config)
    except Exception as exc:
        problems.append(f"serve config: {exc}")
    return problems


def _validate_with_serve(config: ServiceConfig) -> None:
    # Serve's own models: they import and pickle the autoscaling policy, like a deploy does.
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    for device in ("cpu", "gpu"):
        if device == "gpu" and config.resources.num_gpus <= 0:
            continue
        data = build_serve_config(config, config_path="config.yaml", device=device)
        ServeDeploySchema.model_validate(data)
        for deployment in data["applications"][0]["deployments"]:
            if "autoscaling_config" in deployment:
                AutoscalingConfig(**deployment["autoscaling_config"])


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str))


def _check(args: argparse.Namespace) -> int:
    try:
        config = load_config_file(args.file)
    except ConfigError as exc:
        if args.json:
            _print_json({"file": args.file, "ok": False, "problems": [str(exc)]})
        else:
            print(exc, file=sys.stderr)
        return 1
    problems = check_config(config)
    if args.json:
        _print_json({"file": args.file, "ok": not problems, "problems": problems})
        return 1 if problems else 0
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    if problems:
        print(f"{args.file}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.file}: OK")
    return 0


RENDER_DESCRIPTION = (
    "Reads the --config file alone: neither $CNNLSTM_CONFIG nor the spec 8 environment "
    "variables, so the output depends on that file only."
)


def register(sub: argparse._SubParsersAction) -> None:
    cfg = sub.add_parser(
        "config", help="render Serve/KubeRay files and the node environment, check a config file"
    )
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    serve = cfg_sub.add_parser(
        "render-serve",
        help="a Serve config file for `serve deploy`",
        description=RENDER_DESCRIPTION + " Without --config: the spec's defaults.",
    )
    serve.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    serve.add_argument("--output", default=None)
    serve.add_argument(
        "--app-config-path",
        default=None,
        help="the config path as the replicas see it (default: the --config value)",
    )
    serve.set_defaults(func=_render_serve)
    kuberay = cfg_sub.add_parser(
        "render-kuberay",
        help="RayService, backup CronJobs, cluster objects, Secret templates",
        description=RENDER_DESCRIPTION + " --config is required (it ships as a ConfigMap).",
    )
    kuberay.add_argument("--device", choices=["cpu", "gpu"], default="gpu")
    kuberay.add_argument(
        "--image", default=None, help=f"the pushed image (default: {PLACEHOLDER_IMAGE}, unpullable)"
    )
    kuberay.add_argument(
        "--output",
        default=None,
        help="RayService file (default: stdout, every file but the Secret templates)",
    )
    kuberay.add_argument("--cronjobs-output", default=None, help="CronJobs file")
    kuberay.add_argument(
        "--cluster-output", default=None, help="PVCs, NetworkPolicy, PDB, PodMonitor file"
    )
    kuberay.add_argument("--secrets-output", default=None, help="Secret templates file")
    kuberay.set_defaults(func=_render_kuberay)
    render_env_cmd.register(cfg_sub)
    check = cfg_sub.add_parser("check", help="strictly validate a config file")
    check.add_argument("file")
    check.add_argument(
        "--json", action="store_true", help='one JSON report on stdout: {"ok": ..., "problems"}'
    )
    check.set_defaults(func=_check)
