"""INFO lines from model code, rendered by whatever renderer the process's logging setup
installed.

The predictor writes one line per forward (the batch line of :mod:`model.deployment`).
At 500 req/s, py-spy on the replica found 8% of its samples in structlog's processor chain
and the standard library's record machinery for that line; in a warm loop writing it to a
file costs 35 us of CPU that way and 17.5 us through the access line's renderer
(BENCHMARKS.md, session 16). The app's logging setup
(``app.observability.logging.configure_logging``, which the predictor's replica runs)
installs its own renderer of the same JSON object (``app.observability.fast_line``), as
the gateway's access line uses; this module only holds the seam, so that ``model/`` does
not import ``app/``. Without a renderer installed (tests, the GPU check), a line takes the
plain structlog path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

Writer = Callable[[str, str, dict[str, Any]], None]


def _structlog_line(logger_name: str, event: str, fields: dict[str, Any]) -> None:
    structlog.get_logger(logger_name).info(event, **fields)


_writer: Writer = _structlog_line


def use_writer(writer: Writer | None) -> None:
    """Render every later :func:`info_line` with ``writer``; None: structlog's own path."""
    global _writer
    _writer = writer if writer is not None else _structlog_line


def info_line(logger_name: str, event: str, fields: dict[str, Any]) -> None:
    """Log ``event`` with ``fields`` at INFO on ``logger_name``."""
    _writer(logger_name, event, fields)
