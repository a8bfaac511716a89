"""Credentials in the URL are recognised in every spelling and scrubbed."""

from __future__ import annotations

import pytest

from app.security.query_credentials import has_credential_params, redact_credential_params


@pytest.mark.parametrize(
    "query",
    [
        b"api_key=abc",
        b"API_KEY=abc",
        b"x-api-key=abc",
        b"X_Api_Key=abc",
        b"apikey=abc",
        b"token=abc",
        b"Access_Token=abc",
        b"a=1&access_token=abc",
        b"api%5Fkey=abc",
        b"api%5fkey",
        b"token",
        b"grant_type=client_credentials&Client-Secret=abc",
    ],
)
def test_has_credential_params_when_named_like_a_credential(query: bytes) -> None:
    assert has_credential_params(query) is True


@pytest.mark.parametrize("query", [b"", b"symbol=AAPL", b"keyboard=1", b"tokens=2", b"a=token"])
def test_has_credential_params_false_when_no_credential_name(query: bytes) -> None:
    assert has_credential_params(query) is False


def test_redact_blanks_only_credential_values() -> None:
    assert (
        redact_credential_params(b"symbol=X&api_key=cnl_secret&Token=t0k")
        == b"symbol=X&api_key=REDACTED&Token=REDACTED"
    )
