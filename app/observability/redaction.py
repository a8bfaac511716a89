"""Keep credentials out of log lines, whatever code wrote them.

Two nets: keys that name a credential have their value replaced wholesale, and every
string anywhere in the event (messages, nested dicts, exception text) is scanned for
things shaped like our API keys, JWTs or bearer credentials. The second net catches the
cases the first cannot, such as ``log.info("auth failed", detail=f"bad token {tok}")``.

A name is a key whatever form it arrives in: a dict key (``str`` or the ``bytes`` of ASGI
headers), the first half of a ``(name, value)`` pair (``scope["headers"]``,
``headers.items()``), or a ``name=value`` parameter inside a string (a URL's query, a form
body). A client secret has no shape of its own, so its name is all there is to go by.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote_plus

REDACTED = "[REDACTED]"

# Compared after lower-casing and turning "-" into "_", so "X-API-Key" matches "x_api_key".
_SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "x_api_key",
        "api_key",
        "apikey",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "secret",
        "client_secret",
        "jwt_secret",
        "password",
        "passwd",
        "cookie",
        "set_cookie",
        "private_key",
        "credentials",
    }
)
# Any key that merely contains one of these is masked too: a false positive costs a
# field in a log line, a false negative leaks a credential.
_SENSITIVE_PARTS = ("password", "secret", "token", "api_key", "apikey", "authorization", "cookie")
# Keys that contain a sensitive word but only ever hold harmless values.
_ALLOWED_KEYS = frozenset({"token_ttl_s", "key_id", "auth_method", "scopes"})

_VALUE_PATTERNS = (
    (re.compile(r"cnl_[A-Za-z0-9]{12}_[A-Za-z0-9_-]{43}"), "[REDACTED_API_KEY]"),
    (re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*"), "[REDACTED_JWT]"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [REDACTED]"),
)
# One cheap pass that every pattern above needs to match first: most strings in a log line
# (routes, ids, numbers as text) contain none of these, and skip the three substitutions.
_TRIGGER = re.compile(r"cnl_|eyJ|(?i:bearer|basic)")
# ``name=value`` in a query string or form body; the name is judged like a dict key.
_PARAM = re.compile(r"(?<![\w.%-])([\w.%-]+)=([^&\s#;\"']+)")
_PARAM_TRIGGER = re.compile(r"(?i)passw|secret|token|api[-_%]|apikey|authorization|cookie")
_MAX_DEPTH = 8
_SCALARS = frozenset({int, float, bool})


def _name_is_sensitive(key: str) -> bool:
    k = key.lower().replace("-", "_")
    if k in _ALLOWED_KEYS:
        return False
    return k in _SENSITIVE_KEYS or any(part in k for part in _SENSITIVE_PARTS)


# Log keys come from code, so there are few distinct ones: the cache turns the check into
# one dict look-up per field. (Parameter names inside text are the client's: uncached.)
_key_is_sensitive = functools.lru_cache(maxsize=4096)(_name_is_sensitive)


def is_sensitive_key(key: object) -> bool:
    if isinstance(key, bytes | bytearray):  # an ASGI header name
        key = bytes(key).decode("latin-1")
    return isinstance(key, str) and _key_is_sensitive(key)


def _key_text(key: object) -> str:
    """A non-``str`` dict key as text: the JSON renderer takes no ``bytes`` key, and a line
    it cannot render goes to logging's error handler, which prints the unredacted event."""
    text = bytes(key).decode("latin-1") if isinstance(key, bytes | bytearray) else str(key)
    return scrub_text(text)


def _mask_param(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    if value.startswith("[REDACTED") or not _name_is_sensitive(unquote_plus(name)):
        return match.group(0)
    return f"{name}={REDACTED}"


def scrub_text(text: str) -> str:
    """``text`` with API keys, JWTs, bearer/basic credentials and the values of
    credential-named ``name=value`` parameters replaced."""
    if len(text) < 12:
        return text
    if _TRIGGER.search(text):
        for pattern, replacement in _VALUE_PATTERNS:
            text = pattern.sub(replacement, text)
    if "=" in text and _PARAM_TRIGGER.search(text):
        text = _PARAM.sub(_mask_param, text)
    return text


def redact(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` with sensitive keys masked and every string scrubbed."""
    if isinstance(value, str):
        return scrub_text(value)
    if depth >= _MAX_DEPTH:  # a pathological structure: drop it rather than recurse on
        return value if isinstance(value, int | float | bool) or value is None else REDACTED
    if isinstance(value, Mapping):
        return {
            (k if type(k) is str else _key_text(k)): (
                REDACTED if is_sensitive_key(k) else redact(v, depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, tuple) and len(value) == 2 and is_sensitive_key(value[0]):
        # A (name, value) pair: ASGI's raw headers, ``headers.items()``, form fields.
        return [redact(value[0], depth + 1), REDACTED]
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray):
        return scrub_text(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, int | float | bool) or value is None:
        return value
    # The renderer would str() it anyway; do it here so the text is scrubbed first.
    return scrub_text(str(value))


def redact_event(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> dict[str, Any]:
    """structlog processor: the last step before rendering, so it sees every field.

    Runs on every log line, so the common field types take a short path.
    """
    out: dict[str, Any] = {}
    for key, value in event_dict.items():
        if key != "event" and is_sensitive_key(key):
            out[key] = REDACTED
        elif value is None or type(value) in _SCALARS:
            out[key] = value
        elif type(value) is str:
            out[key] = scrub_text(value)
        else:
            out[key] = redact(value)
    return out
