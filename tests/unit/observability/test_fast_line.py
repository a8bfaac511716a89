"""``info_line`` writes the line structlog would have written, at a fraction of the cost."""

from __future__ import annotations

import io
import logging
from typing import Any

from app.config import Logging
from app.observability.fast_line import info_line
from app.observability.logging import bind_request_id, clear_request_id, configure_logging
from tests.unit.observability.log_capture import parse_lines

FIELDS: dict[str, Any] = {
    "method": "POST",
    "route": "/predict",
    "status": 200,
    "latency_ms": 1.234,
    "scopes": ["model:predict"],
    "batch_size": 7,
    "model_version": None,
}


def _both(config: Logging, fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    import structlog

    buf = io.StringIO()
    configure_logging(config, component="gateway-x", stream=buf)
    bind_request_id("rid-1")
    try:
        info_line("app.access", "access", fields)
        structlog.get_logger("app.access").info("access", **fields)
    finally:
        clear_request_id()
    fast, slow = parse_lines(buf.getvalue())
    return fast, slow


def test_the_line_has_the_same_fields_as_structlogs() -> None:
    fast, slow = _both(Logging(), FIELDS)
    assert fast.pop("timestamp").endswith("Z")
    slow.pop("timestamp")
    assert fast == slow
    assert fast["request_id"] == "rid-1"
    assert fast["component"] == "gateway-x"
    assert (fast["level"], fast["logger"], fast["event"]) == ("info", "app.access", "access")


def test_credentials_are_redacted_on_the_fast_line_too() -> None:
    secret = "ck_abcdef.0123456789abcdef0123456789abcdef"
    fields = {**FIELDS, "api_key": secret, "note": f"Authorization: Bearer {secret}"}
    fast, slow = _both(Logging(), fields)
    assert secret not in str(fast)
    assert fast["api_key"] == slow["api_key"]
    assert fast["note"] == slow["note"]


def test_no_line_below_the_configured_level() -> None:
    buf = io.StringIO()
    configure_logging(Logging(level="WARNING"), component="gateway-x", stream=buf)
    info_line("app.access", "access", FIELDS)
    assert buf.getvalue() == ""


def test_console_format_takes_the_structlog_path() -> None:
    buf = io.StringIO()
    configure_logging(Logging(format="console"), component="gateway-x", stream=buf)
    info_line("app.access", "access", FIELDS)
    text = buf.getvalue()
    assert "access" in text
    assert "route" in text
    assert not text.lstrip().startswith("{")


def test_a_plain_handler_still_gets_the_json_text() -> None:
    configure_logging(Logging(), component="gateway-x", stream=io.StringIO())
    plain = io.StringIO()
    handler = logging.StreamHandler(plain)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.getLogger("app.access").addHandler(handler)
    try:
        info_line("app.access", "access", FIELDS)
    finally:
        logging.getLogger("app.access").removeHandler(handler)
    assert plain.getvalue().startswith('INFO {"method":"POST"')


def test_the_line_does_not_run_structlogs_processor_chain() -> None:
    """The point of the fast line: none of the per-call processors run for it."""
    import structlog

    buf = io.StringIO()
    configure_logging(Logging(), component="gateway-x", stream=buf)
    calls: list[str] = []

    def counting(_logger: Any, _name: str, event_dict: Any) -> Any:
        calls.append(event_dict["event"])
        return event_dict

    processors = structlog.get_config()["processors"]
    structlog.configure(processors=[counting, *processors])
    info_line("app.access", "fast", FIELDS)
    structlog.get_logger("app.access").info("slow", **FIELDS)
    assert calls == ["slow"]
    assert [line["event"] for line in parse_lines(buf.getvalue())] == ["fast", "slow"]


def test_model_lines_take_the_configured_renderer_and_match_structlog() -> None:
    """The predictor's batch line goes through model.common.log_lines: once logging is
    configured it is the fast line, with the same fields structlog writes."""
    import structlog

    from model.common import log_lines

    fields = {"calls": 2, "rows": 3, "model_ms": 0.4, "request_ids": ["a", "b", "c"]}
    buf = io.StringIO()
    configure_logging(Logging(), component="predictor-x", stream=buf)
    try:
        assert log_lines._writer is info_line
        log_lines.info_line("model.batches", "predict_batch", fields)
        structlog.get_logger("model.batches").info("predict_batch", **fields)
        fast, slow = parse_lines(buf.getvalue())
    finally:
        log_lines.use_writer(None)
    assert fast.pop("timestamp").endswith("Z")
    slow.pop("timestamp")
    assert fast == slow
    assert fast["request_ids"] == ["a", "b", "c"]
    assert (fast["logger"], fast["component"]) == ("model.batches", "predictor-x")
    assert log_lines._writer is log_lines._structlog_line
