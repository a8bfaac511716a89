"""One JSON log format for every process of the service (spec 6.2).

structlog renders; the standard library's logging carries. structlog events and records
from libraries that use ``logging`` (uvicorn, FastAPI, Ray) both end in the same
``ProcessorFormatter``, so every line has the same fields: ``timestamp``, ``level``,
``logger``, ``component``, ``event``, the bound ``request_id`` and whatever the call added,
with credentials redacted (:mod:`app.observability.redaction`) just before rendering.

Call :func:`configure_logging` once where a process starts: the CLI, and the
``__init__`` of each Serve deployment (Ray runs replicas in their own worker processes,
which do not inherit the driver's logging). Calling it again replaces what the previous
call installed, so a reused worker process does not end up writing every line twice.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from app.config import Logging
from app.observability.fast_line import RENDERED_ATTR, info_line, use_json
from app.observability.log_files import RetentionRotatingFileHandler, sweep_directory
from app.observability.redaction import redact_event
from model.common import log_lines

# Library loggers whose own handlers are replaced by propagation to ours. "ray.serve" is
# included so replica logs share the format; Serve's per-request access lines are dropped
# (see _drop_serve_access_lines) because the gateway's access middleware writes the one
# access line per request.
ROUTED_LOGGERS: tuple[str, ...] = ("uvicorn", "uvicorn.error", "fastapi", "ray", "ray.serve")
# uvicorn's access log repeats ours; httpx logs every outgoing URL at INFO. Both would put
# raw query strings (which can hold credentials) into the log.
_SILENCED_LOGGERS = ("uvicorn.access", "httpx")
_OURS = "_cnnlstm_handler"


def bind_request_id(rid: str) -> None:
    """Make ``rid`` this context's request id: every log line in it carries the field."""
    structlog.contextvars.bind_contextvars(request_id=rid)


def clear_request_id() -> None:
    structlog.contextvars.unbind_contextvars("request_id")


def _orjson_dumps(obj: Any, **kwargs: Any) -> str:
    return orjson.dumps(
        obj, default=kwargs.get("default", str), option=orjson.OPT_NON_STR_KEYS
    ).decode()


def _add_component(component: str) -> Processor:
    def add(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("component", component)
        return event_dict

    return add


def _drop_serve_access_lines(record: logging.LogRecord) -> bool:
    return not getattr(record, "serve_access_log", False)


def _shared_processors(component: str) -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_component(component),
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]


def build_formatter(config: Logging, *, component: str) -> structlog.stdlib.ProcessorFormatter:
    """The formatter every handler of ours uses (exposed so tests can render records)."""
    renderer: Processor
    if config.format == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    return _Formatter(
        foreign_pre_chain=_shared_processors(component),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
    )


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """Prints a record :func:`~app.observability.fast_line.info_line` rendered as is."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, RENDERED_ATTR, False):
            return record.getMessage()
        return super().format(record)


def resolve_log_file(config: Logging, component: str, log_file: Path | None) -> Path | None:
    if log_file is not None:
        return log_file
    if config.directory is not None:
        return config.directory / f"{component}.log"
    return None


def _default_stream() -> TextIO:
    # Inside a Serve replica sys.stderr is a shim that feeds Serve's logger; writing our
    # lines there would wrap them in Serve's format (or loop, once that logger propagates
    # to ours). The process's real stderr is what Ray captures and forwards.
    return sys.__stderr__ if sys.__stderr__ is not None else sys.stderr


def configure_logging(
    config: Logging,
    *,
    component: str,
    log_file: Path | None = None,
    stream: TextIO | None = None,
    routed_loggers: Sequence[str] = ROUTED_LOGGERS,
    stderr: bool | None = None,
) -> None:
    """Install JSON logging for this process (idempotent; the last call wins).

    ``component`` names the process in every line and, with ``logging.directory`` set, the
    file ``<directory>/<component>.log``; make it unique per process when files are on.
    ``stderr`` None follows ``logging.stderr_with_file``: with a log file, a Ray replica
    writes only there, since everything on its stderr is also captured and forwarded by
    Ray (each access line rendered and shipped twice costs CPU on the hot path).
    """
    level = logging.getLevelNamesMapping()[config.level]
    formatter = build_formatter(config, component=component)
    use_json(component if config.format == "json" else None)
    # Lines from model code (the predictor's batch line) take the same renderer as the
    # access line: its own JSON rendering, or structlog's path for the console format.
    log_lines.use_writer(info_line)

    path = resolve_log_file(config, component, log_file)
    use_stderr = stderr if stderr is not None else (path is None or config.stderr_with_file)
    handlers: list[logging.Handler] = (
        [logging.StreamHandler(stream or _default_stream())] if use_stderr else []
    )
    if path is not None:
        sweep_directory(path.parent, retention_days=config.retention_days, keep=path)
        handlers.append(
            RetentionRotatingFileHandler(
                path,
                max_bytes=int(config.max_log_size_mb * 1024 * 1024),
                retention_days=config.retention_days,
                max_files=config.max_files,
            )
        )

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        setattr(handler, _OURS, True)
        handler.setFormatter(formatter)
        handler.addFilter(_drop_serve_access_lines)
        root.addHandler(handler)
    root.setLevel(level)

    for name in routed_loggers:
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    for name in _SILENCED_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(component),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Loggers made at import time (module-level get_logger) must pick up a later
        # configure_logging call, so bound loggers are not cached.
        cache_logger_on_first_use=False,
    )


def configure_replica_logging(logging_json: dict[str, Any], *, component: str) -> None:
    """``configure_logging`` from plain values: handed (as a ``functools.partial``) to
    deployments that must not import ``app`` themselves, i.e. the predictor."""
    configure_logging(Logging.model_validate(logging_json), component=component)
