"""``cnnlstm``: one command for serving, training, the registry, security and operations."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from app.cli import (
    audit_cmd,
    backup_cmds,
    bench_cmd,
    completion_cmd,
    config_cmds,
    model_cmds,
    rollout_cmds,
    security_cmds,
    serve_cmd,
)
from app.cli.common import add_global_options, parse_args, propagate_global_options
from app.config import ConfigError

DISTRIBUTION = "cnnlstm-serve"


def package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnlstm",
        description="CNN+LSTM price model on Ray Serve behind a secured FastAPI gateway.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    add_global_options(parser, root=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_cmd.register(sub)
    model_cmds.register(sub)
    security_cmds.register(sub)
    config_cmds.register(sub)
    backup_cmds.register(sub)
    rollout_cmds.register(sub)
    bench_cmd.register(sub)
    audit_cmd.register(sub)
    completion_cmd.register(sub)
    propagate_global_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:  # a missing or invalid --config: its message says it all
        print(f"cnnlstm: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
