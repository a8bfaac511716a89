"""The ops commands on their own parser (``app.cli.main`` also wires ``serve``, which
imports Ray), and where the repository is."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from app.cli import ops_cmds

ROOT = Path(__file__).resolve().parents[3]


def ops_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnlstm")
    parser.add_argument("--config", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    ops_cmds.register(sub)
    return parser


def run_cli(argv: list[str]) -> int:
    args = ops_parser().parse_args(argv)
    code: int = args.func(args)
    return code


def generator_command(generated: Path) -> list[str]:
    """The ``cnnlstm ...`` argv recorded in a generated file's first line."""
    first = generated.read_text(encoding="utf-8").splitlines()[0]
    command = first.split("`")[1]
    argv = shlex.split(command)
    assert argv[0] == "cnnlstm", command
    return argv[1:]
