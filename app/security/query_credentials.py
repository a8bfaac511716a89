"""Credentials in the URL: found, refused and scrubbed.

A key in the query string ends up in access logs, proxy logs and browser history, so it
is refused (400 ``credentials_in_url``) and never tried. The value is also blanked in the
ASGI scope so that an access logger which prints the query string prints no secret.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

# client_secret: RFC 6749 2.3.1 forbids client credentials in the URI of POST /token.
CREDENTIAL_QUERY_PARAMS = frozenset(
    {"api_key", "x-api-key", "apikey", "token", "access_token", "client_secret"}
)
_REDACTED = b"REDACTED"


def _name(raw: bytes) -> str:
    return unquote_plus(raw.decode("latin-1")).strip().lower().replace("_", "-")


_NORMALISED = frozenset(n.replace("_", "-") for n in CREDENTIAL_QUERY_PARAMS)


def has_credential_params(query_string: bytes) -> bool:
    """True when any query parameter is named like a credential (any case, ``_`` or ``-``)."""
    if not query_string:
        return False
    lowered = query_string.lower()
    if (
        b"key" not in lowered
        and b"token" not in lowered
        and b"secret" not in lowered
        and b"%" not in lowered
    ):
        return False  # the common case: nothing credential-like at all, skip the parse
    return any(_name(pair.split(b"=", 1)[0]) in _NORMALISED for pair in query_string.split(b"&"))


def redact_credential_params(query_string: bytes) -> bytes:
    """The query string with every credential-named parameter's value blanked."""
    parts = []
    for pair in query_string.split(b"&"):
        name = pair.split(b"=", 1)[0]
        parts.append(name + b"=" + _REDACTED if _name(name) in _NORMALISED else pair)
    return b"&".join(parts)
