"""``cnnlstm completion bash|zsh|tcsh|...``: a shell completion script, made by shtab.

The script is generated from the same parser the command line uses, so it knows every
subcommand and option (``train``'s own options live in ``model.train`` and are not
completed)::

    cnnlstm completion bash > ~/.local/share/bash-completion/completions/cnnlstm
    cnnlstm completion zsh > "${fpath[1]}/_cnnlstm"
"""

from __future__ import annotations

import argparse
import sys

import shtab


def _completion(args: argparse.Namespace) -> int:
    from app.cli.main import build_parser  # the whole tree, this command included

    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "completion",
        help=f"print a shell completion script ({', '.join(shtab.SUPPORTED_SHELLS)})",
        description="Print a completion script for SHELL on stdout, e.g. "
        "'cnnlstm completion bash > ~/.local/share/bash-completion/completions/cnnlstm' or "
        "'eval \"$(cnnlstm completion bash)\"'.",
    )
    p.add_argument("shell", choices=list(shtab.SUPPORTED_SHELLS), metavar="SHELL")
    p.set_defaults(func=_completion)
