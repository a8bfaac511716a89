"""JWT checks that need no key: the header's shape and the claims' types and limits.

Everything here is pure (no I/O, no key material) and raises :class:`InvalidToken` with a
fixed reason word; the reason goes to the server log only, the client sees a plain 401.

Header rules. A token may not point at its own key: ``jku``/``x5u`` (a URL to fetch keys
from), ``jwk``/``x5c`` (a key or certificate embedded in the token) make it invalid
(reason ``untrusted_key_header``), so no code path can ever be talked into using them.
``crit`` names extensions the verifier would have to understand; we understand none, so
RFC 7515 section 4.1.11 says such a token must be refused (reason ``unsupported_crit``).
``kid`` is a short string when present. ``typ`` is compared only when
``jwt_required_typ`` is set: case-insensitively, with or without the ``application/``
prefix (RFC 9068 names ``at+jwt``; ``application/at+jwt`` is the same media type).

Claim rules. ``exp``, ``nbf`` and ``iat`` must be JSON numbers (python-jose runs ``int()``
on them, so ``"exp": "9999999999"`` or ``"iat": true`` would pass it). Scopes come from the
OAuth2 ``scope`` claim only, a space-delimited string. With ``jwt_max_lifetime_s`` set, a
token must carry ``iat`` and ``exp - iat`` may not exceed it: an identity provider (or a
leaked signing key) minting year-long tokens is refused even though each one is signed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

TIME_CLAIMS = ("exp", "nbf", "iat")
# Header parameters that carry or locate key material chosen by whoever made the token.
KEY_LOCATING_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c"})
MAX_KID_CHARS = 256
MEDIA_TYPE_PREFIX = "application/"


class InvalidToken(Exception):
    """A token was rejected; ``reason`` is a fixed word for the server log, not the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    subject: str
    scopes: frozenset[str]
    expires_at: float
    claims: dict[str, Any] = field(repr=False)


def _normalise_typ(value: str) -> str:
    value = value.strip().lower()
    return value.removeprefix(MEDIA_TYPE_PREFIX)


def check_header(header: dict[str, Any], required_typ: str | None = None) -> str | None:
    """Refuse headers that try to choose their own key or need unknown extensions, and
    check ``typ`` when one is required. Returns the ``kid`` (None when absent)."""
    if KEY_LOCATING_HEADERS.intersection(header):
        raise InvalidToken("untrusted_key_header")
    if "crit" in header:
        raise InvalidToken("unsupported_crit")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS):
        raise InvalidToken("malformed")
    if required_typ is not None:
        typ = header.get("typ")
        if not isinstance(typ, str) or _normalise_typ(typ) != _normalise_typ(required_typ):
            raise InvalidToken("wrong_typ")
    return kid


def _is_json_number(value: Any) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # a JSON integer past any float (no time a token can mean)
        return False


def check_claim_types(claims: dict[str, Any]) -> None:
    """Raise ``InvalidToken("bad_claim_type")`` unless each present time claim is a number."""
    for name in TIME_CLAIMS:
        if name in claims and not _is_json_number(claims[name]):
            raise InvalidToken("bad_claim_type")


def check_lifetime(claims: dict[str, Any], max_lifetime_s: float | None) -> None:
    """With a maximum set, require ``iat`` and ``exp - iat <= max_lifetime_s``.

    Call after :func:`check_claim_types` (and after ``exp`` is known to be present)."""
    if max_lifetime_s is None:
        return
    iat = claims.get("iat")
    if iat is None:
        raise InvalidToken("missing_iat")
    if claims["exp"] - iat > max_lifetime_s:
        raise InvalidToken("lifetime_too_long")


def scopes_from_claims(claims: dict[str, Any]) -> frozenset[str]:
    """The OAuth2 ``scope`` claim (space-delimited string); absent means no scopes."""
    value = claims.get("scope")
    if value is None:
        return frozenset()
    if not isinstance(value, str):
        raise InvalidToken("claims")
    return frozenset(value.split())


def verified_from_claims(
    claims: dict[str, Any],
    *,
    now: float,
    leeway_s: float,
    max_lifetime_s: float | None = None,
) -> VerifiedToken:
    """The checks python-jose does not do, on claims whose signature has been verified."""
    check_claim_types(claims)
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("claims")
    iat = claims.get("iat")
    if iat is not None and iat > now + leeway_s:
        raise InvalidToken("issued_in_future")
    check_lifetime(claims, max_lifetime_s)
    return VerifiedToken(
        subject=subject,
        scopes=scopes_from_claims(claims),
        expires_at=float(claims["exp"]),
        claims=claims,
    )
