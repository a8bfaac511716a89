"""The ops commands on their own parser, wired as ``app.cli.main`` wires every command
(global options before or after the subcommand), and where the repository is."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from app.cli import backup_cmds, config_cmds
from app.cli.common import add_global_options, parse_args, propagate_global_options

ROOT = Path(__file__).resolve().parents[3]


def ops_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnlstm")
    add_global_options(parser, root=True)
    sub = parser.add_subparsers(dest="command", required=True)
    config_cmds.register(sub)
    backup_cmds.register(sub)
    propagate_global_options(parser)  # as app.cli.main does: --config after the command too
    return parser


def run_cli(argv: list[str]) -> int:
    args = parse_args(ops_parser(), argv)
    code: int = args.func(args)
    return code


def generator_command(generated: Path) -> list[str]:
    """The ``cnnlstm ...`` argv recorded in a generated file's first line."""
    first = generated.read_text(encoding="utf-8").splitlines()[0]
    command = first.split("`")[1]
    argv = shlex.split(command)
    assert argv[0] == "cnnlstm", command
    return argv[1:]
