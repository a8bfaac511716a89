"""What every ``cnnlstm`` command shares: the global options and how argv is parsed.

Global options (``--config FILE``) belong to the top-level parser and are repeated on
every subcommand parser, so ``cnnlstm --config X registry list`` and ``cnnlstm registry
list --config X`` mean the same. On the subcommands their default is ``SUPPRESS``: an
option not given after the subcommand leaves the value given before it (or the
top-level default) in place instead of overwriting it with ``None``.

A command that forwards its arguments to another parser (``train`` hands them to
``model.train``) sets ``forward_extras=True`` in its defaults; it gets the arguments
argparse did not recognise as ``args.extras``. Every other command rejects them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

CONFIG_HELP = (
    "YAML configuration laid out like the spec (default: $CNNLSTM_CONFIG, else the spec's "
    "defaults); accepted before or after the subcommand"
)


def add_global_options(parser: argparse.ArgumentParser, *, root: bool) -> None:
    """The options every command accepts; ``root`` is the top-level parser."""
    if "--config" in parser._option_string_actions:
        return
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None if root else argparse.SUPPRESS,
        help=CONFIG_HELP,
    )


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    children: dict[int, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                children.setdefault(id(child), child)  # aliases share one parser
    return list(children.values())


def propagate_global_options(parser: argparse.ArgumentParser) -> None:
    """Repeat the global options on every subcommand parser, at every depth."""
    for child in _subparsers(parser):
        add_global_options(child, root=False)
        propagate_global_options(child)


def parse_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse ``argv`` as ``parser.parse_args`` does, but let forwarding commands keep the
    arguments they pass on (as ``args.extras``, without a leading ``--``)."""
    args, extras = parser.parse_known_args(argv)
    if getattr(args, "forward_extras", False):
        if "--" in extras:
            extras.remove("--")  # the first one only: `train -- --epochs 1`
        args.extras = extras
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args
