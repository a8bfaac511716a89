"""``cnnlstm``: one command for serving, training, the registry, security and operations."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.cli import bench_cmd, model_cmds, ops_cmds, rollout_cmds, security_cmds, serve_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnlstm",
        description="CNN+LSTM price model on Ray Serve behind a secured FastAPI gateway.",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="YAML configuration laid out like the spec (default: $CNNLSTM_CONFIG, else "
        "the spec's defaults)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_cmd.register(sub)
    model_cmds.register(sub)
    security_cmds.register(sub)
    ops_cmds.register(sub)
    rollout_cmds.register(sub)
    bench_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
