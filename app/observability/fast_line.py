"""One INFO line rendered here, without structlog's processor chain: the access line.

Through structlog and the standard library, one line costs ~65 us of CPU on this box
(building the bound logger, eight processors, a ``LogRecord`` and the formatter's own
chain); writing it is ~3 us. The access line is written once per request, so on the
prediction path it cost as much as the request's own validation and features together.

:func:`info_line` renders the same JSON object the chain renders (the bound request id,
the fields, ``event``, ``level``, ``logger``, ``component``, ``timestamp``), passes it through
the same :func:`redact_event`, and hands the text to the same handlers as a record whose
message it is (the formatters of :mod:`app.observability.logging` print it as is), so
rotation, filters, levels and destinations stay the configured ones. With the console
format configured, it takes the ordinary structlog path.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from app.observability.redaction import redact_event

RENDERED_ATTR = "cnnlstm_rendered"

_component: str | None = None  # None: not configured for JSON, use structlog


def use_json(component: str | None) -> None:
    """Called by ``configure_logging``: the component name, or None for non-JSON output."""
    global _component
    _component = component


def json_component() -> str | None:
    """What :func:`use_json` last set (tests restore it)."""
    return _component


def info_line(logger_name: str, event: str, fields: dict[str, Any]) -> None:
    """Log ``event`` with ``fields`` at INFO on ``logger_name``, as structlog would."""
    logger = logging.getLogger(logger_name)
    if not logger.isEnabledFor(logging.INFO):
        return
    component = _component
    if component is None:
        structlog.get_logger(logger_name).info(event, **fields)
        return
    line: dict[str, Any] = dict(structlog.contextvars.get_contextvars())
    line.update(fields)
    line["event"] = event
    line["level"] = "info"
    line["logger"] = logger_name
    line["component"] = component
    line["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    text = orjson.dumps(
        redact_event(None, "info", line), default=str, option=orjson.OPT_NON_STR_KEYS
    ).decode()
    # The text is the message too, so a handler with a plain formatter still prints it.
    record = logger.makeRecord(logger_name, logging.INFO, "", 0, text, (), None)
    setattr(record, RENDERED_ATTR, True)
    logger.handle(record)
