"""``cnnlstm config render-env``: the node environment Serve reads at import time.

``cnnlstm serve`` puts :func:`app.serve.serve_env.serve_env_vars` into its local Ray's
environment itself (:func:`app.serve.runner.apply_serve_env`). On the Ray-native path
(``ray start`` + ``serve run``/``serve deploy`` with a generated Serve YAML) nobody does,
and without them the gateway does not serve HTTPS on ``http_port`` (no direct ingress),
handle calls go over actor calls, replicas run at nice 15, and so on. Every node then
needs, before ``ray start`` (the raylet passes its environment to the replicas) and in the
shell that runs ``serve run``::

    eval "$(cnnlstm --config deploy/config.yaml config render-env)"

The config is resolved as ``cnnlstm serve`` resolves it (``--config``, else
``CNNLSTM_CONFIG``), so both paths get the same values.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from typing import Literal

from app.config.env import load_service_config
from app.serve.serve_env import serve_env_vars

Format = Literal["export", "dotenv"]
FORMATS: tuple[Format, ...] = ("export", "dotenv")
_PLAIN = re.compile(r"[A-Za-z0-9_.,:/@%+=-]*")


def _dotenv_value(value: str) -> str:
    if _PLAIN.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render_env(env: dict[str, str], fmt: Format = "export") -> str:
    """``export NAME=value`` lines (shell-quoted), or ``NAME=value`` lines (dotenv)."""
    if fmt == "export":
        lines = [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    else:
        lines = [f"{name}={_dotenv_value(value)}" for name, value in env.items()]
    return "".join(line + "\n" for line in lines)


def _render_env(args: argparse.Namespace) -> int:
    _, config = load_service_config(args.config)
    sys.stdout.write(render_env(serve_env_vars(config), args.format))
    return 0


def register(cfg_sub: argparse._SubParsersAction) -> None:
    """Add ``render-env`` under ``cnnlstm config``."""
    env = cfg_sub.add_parser(
        "render-env",
        help="the environment every Ray node needs for `serve run`/`serve deploy`",
        description=(
            "Print the environment Serve reads at import time on every Ray node (direct "
            "ingress and its ports, gRPC transport, worker niceness, metric push intervals, "
            "drain period...). Use before `ray start` and `serve run`: "
            'eval "$(cnnlstm --config FILE config render-env)".'
        ),
    )
    env.add_argument(
        "--format",
        choices=FORMATS,
        default="export",
        help="export: `export NAME=value` lines for eval (default); dotenv: NAME=value",
    )
    env.set_defaults(func=_render_env)
