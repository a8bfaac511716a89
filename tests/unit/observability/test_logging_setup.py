"""configure_logging: one JSON shape for structlog and stdlib, levels, ids, idempotence."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import structlog

from app.config import Logging
from app.observability.logging import (
    bind_request_id,
    clear_request_id,
    configure_logging,
)
from tests.unit.observability.log_capture import LogLines, parse_lines


def test_structlog_and_stdlib_lines_are_json_with_common_fields(log_lines: LogLines) -> None:
    structlog.get_logger("app.test").info("hello", answer=42)
    logging.getLogger("uvicorn.error").info("Started server process %d", 7)
    logging.getLogger("ray").warning("core says hi")

    first, second, third = log_lines()
    assert first["event"] == "hello"
    assert first["answer"] == 42
    assert second["event"] == "Started server process 7"
    assert third["logger"] == "ray"
    for line in (first, second, third):
        assert line["component"] == "test"
        assert line["level"] in {"info", "warning"}
        assert line["timestamp"].endswith("Z")


def test_bound_request_id_is_in_every_line_until_cleared(log_lines: LogLines) -> None:
    bind_request_id("req-12345678")
    assert structlog.contextvars.get_contextvars()["request_id"] == "req-12345678"
    structlog.get_logger("a").info("one")
    logging.getLogger("fastapi").info("two")
    clear_request_id()
    structlog.get_logger("a").info("three")

    lines = log_lines()
    assert [line.get("request_id") for line in lines] == ["req-12345678", "req-12345678", None]
    assert "request_id" not in structlog.contextvars.get_contextvars()


def test_level_from_config_filters_lower_levels() -> None:
    buf = io.StringIO()
    configure_logging(Logging(level="WARNING"), component="c", stream=buf)
    structlog.get_logger("x").info("dropped")
    logging.getLogger("uvicorn.error").info("dropped too")
    structlog.get_logger("x").warning("kept")
    assert [line["event"] for line in parse_lines(buf.getvalue())] == ["kept"]


def test_configure_twice_writes_each_line_once() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(Logging(), component="c", stream=first)
    configure_logging(Logging(), component="c", stream=second)
    structlog.get_logger("x").info("once")
    logging.getLogger("uvicorn.error").info("once too")
    assert first.getvalue() == ""
    assert [line["event"] for line in parse_lines(second.getvalue())] == ["once", "once too"]


def test_library_loggers_lose_their_own_handlers() -> None:
    lib = logging.getLogger("uvicorn.error")
    stray = logging.StreamHandler(io.StringIO())
    lib.addHandler(stray)
    lib.propagate = False
    buf = io.StringIO()
    configure_logging(Logging(), component="c", stream=buf)
    lib.error("boom")
    assert stray not in lib.handlers
    assert parse_lines(buf.getvalue())[0]["event"] == "boom"


def test_serve_access_lines_and_uvicorn_access_are_dropped(log_lines: LogLines) -> None:
    logging.getLogger("ray.serve").info("GET /predict 200", extra={"serve_access_log": True})
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /predict?token=x" 200')
    logging.getLogger("ray.serve").info("replica started")
    assert [line["event"] for line in log_lines()] == ["replica started"]


def test_log_file_in_directory_named_after_component(tmp_path: Path) -> None:
    configure_logging(Logging(directory=tmp_path), component="gateway-r1", stream=io.StringIO())
    structlog.get_logger("x").info("to file")
    for handler in logging.getLogger().handlers:
        handler.flush()
    line = json.loads((tmp_path / "gateway-r1.log").read_text().splitlines()[0])
    assert line["event"] == "to file"
    assert line["component"] == "gateway-r1"


def test_console_format_renders_plain_text() -> None:
    buf = io.StringIO()
    configure_logging(Logging(format="console"), component="c", stream=buf)
    structlog.get_logger("x").info("readable", n=1)
    out = buf.getvalue()
    assert "readable" in out
    assert not out.lstrip().startswith("{")
