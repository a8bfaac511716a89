"""Credentials never reach a log line: by key name, or by shape anywhere in any string."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from app.observability.redaction import REDACTED, is_sensitive_key, redact, scrub_text
from tests.unit.observability.log_capture import LogLines

API_KEY = "cnl_AbCdEf012345_" + "x" * 20 + "-_" + "Y" * 21  # 43 chars after the id
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzdmMifQ.c2lnbmF0dXJlLXBhcnQ"


def test_api_key_shape_is_43_chars_after_the_id() -> None:
    assert len(API_KEY.split("_", 2)[2]) == 43


@pytest.mark.parametrize(
    "key",
    [
        "authorization", "Authorization", "X-API-Key", "x_api_key", "api_key", "token",
        "access_token", "refresh_token", "secret", "client_secret", "password", "cookie",
        "Set-Cookie", "db_password", "jwt_secret",
    ],
)  # fmt: skip
def test_credential_keys_are_sensitive(key: str) -> None:
    assert is_sensitive_key(key)


@pytest.mark.parametrize(
    "key", ["event", "request_id", "key_id", "principal", "scopes", "auth_method", "status"]
)
def test_ordinary_keys_are_not_sensitive(key: str) -> None:
    assert not is_sensitive_key(key)


def test_redact_masks_credential_keys_at_any_depth() -> None:
    event = {
        "headers": {"Authorization": "Bearer abc", "Accept": "json"},
        "items": [{"password": "hunter2", "ok": 1}],
        "client_secret": "s3cr3t",
    }
    out = redact(event)
    assert out["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert out["items"] == [{"password": REDACTED, "ok": 1}]
    assert out["client_secret"] == REDACTED


def test_scrub_replaces_api_keys_and_jwts_inside_text() -> None:
    text = f"bad key {API_KEY} then token={JWT}; done"
    out = scrub_text(text)
    assert API_KEY not in out
    assert JWT not in out
    assert out == "bad key [REDACTED_API_KEY] then token=[REDACTED_JWT]; done"


def test_scrub_masks_bearer_and_basic_credentials() -> None:
    assert (
        scrub_text("Authorization: Bearer opaque-token-123") == "Authorization: Bearer [REDACTED]"
    )
    assert scrub_text("basic dXNlcjpwYXNzd29yZA==") == "basic [REDACTED]"


def test_redact_scrubs_nested_strings_tuples_and_objects() -> None:
    class Holder:
        def __str__(self) -> str:
            return f"holder({API_KEY})"

    out = redact({"detail": {"note": [f"x {JWT}", (API_KEY,)]}, "obj": Holder(), "n": 3})
    dumped = json.dumps(out)
    assert API_KEY not in dumped
    assert JWT not in dumped
    assert out["n"] == 3


def test_logged_lines_never_contain_credentials(log_lines: LogLines) -> None:
    log = structlog.get_logger("test")
    log.info(
        f"login attempt with {API_KEY}",
        authorization=f"Bearer {JWT}",
        headers={"x-api-key": API_KEY, "user-agent": "curl"},
        detail=f"rejected token {JWT}",
    )
    logging.getLogger("uvicorn.error").warning("client sent %s", API_KEY)
    try:
        raise ValueError(f"token {JWT} expired")
    except ValueError:
        log.exception("auth_failed")

    lines = log_lines()
    assert len(lines) == 3
    raw = json.dumps(lines)
    assert API_KEY not in raw
    assert JWT not in raw
    assert lines[0]["authorization"] == REDACTED
    assert lines[0]["headers"] == {"x-api-key": REDACTED, "user-agent": "curl"}
    assert "[REDACTED_JWT]" in lines[2]["exception"]


def test_raw_asgi_headers_are_logged_redacted_not_dumped_to_stderr(
    log_lines: LogLines, capsys: pytest.CaptureFixture[str]
) -> None:
    # dict(scope["headers"]) has bytes names: a line the renderer cannot write goes to
    # logging's error handler, which prints the event dict as it was, secret and all.
    opaque = "Zq8vT1xPp0-opaque-secret-4Hk2"
    headers = {b"x-api-key": opaque.encode(), b"accept": b"application/json"}
    structlog.get_logger("test").info("request", headers=headers)
    [line] = log_lines()
    assert line["headers"] == {"x-api-key": REDACTED, "accept": "application/json"}
    assert opaque not in capsys.readouterr().err
