"""JWT bearer tokens: minting for the CLI and /token, and verification with pinned keys.

The header's ``alg`` is only used to *select* among the algorithms the config accepts, and
each accepted algorithm has its own key: an HS* token is checked with the HMAC secret only,
an RS256/ES256 token with a public key only (the static PEM, or the JWKS key its ``kid``
names, which must be pinned to that same algorithm), so a token "signed" with a public key
as an HMAC secret (algorithm confusion) can never verify. ``alg: none`` is never accepted.
``exp`` is required; ``nbf``/``iat`` honour the configured leeway.

Which public key: with ``jwt_jwks_url`` set, an RS256/ES256 token that carries a ``kid`` is
verified against the JWK set only (:mod:`app.security.jwks`); one without a ``kid`` uses the
static ``jwt_public_key_path`` key when there is one. Header and claim rules (no key from
the token itself, ``typ``, claim types, scopes, maximum lifetime) live in
:mod:`app.security.jwt_claims`; the key files in :mod:`app.security.jwt_keys`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jose import jwt as jose_jwt
from jose.backends.base import Key
from jose.exceptions import ExpiredSignatureError, JOSEError, JWTClaimsError

from app.config import Authentication
from app.security.jwks import JwksKeySource
from app.security.jwt_claims import (
    InvalidToken,
    VerifiedToken,
    check_claim_types,
    check_header,
    scopes_from_claims,
    verified_from_claims,
)
from app.security.jwt_keys import (
    HMAC_ALGORITHMS,
    MIN_SECRET_BYTES,
    PUBLIC_KEY_ALGORITHMS,
    JwtKeyError,
    StaticKeys,
    generate_jwt_secret,
    read_jwt_secret,
)

__all__ = [
    "HMAC_ALGORITHMS",
    "MAX_TOKEN_BYTES",
    "MIN_SECRET_BYTES",
    "PUBLIC_KEY_ALGORITHMS",
    "InvalidToken",
    "JwtKeyError",
    "JwtVerifier",
    "VerifiedToken",
    "check_claim_types",
    "generate_jwt_secret",
    "mint_token",
    "read_jwt_secret",
    "scopes_from_claims",
]

MAX_TOKEN_BYTES = 8192  # refuse before parsing: a bearer header is attacker-sized
RFC9068_TYP = "at+jwt"


def mint_token(
    secret: str | bytes,
    subject: str,
    scopes: Iterable[str],
    ttl_s: float,
    issuer: str | None = None,
    audience: str | None = None,
    algorithm: str = "HS256",
    *,
    now: float | None = None,
) -> str:
    """Sign a short-lived access token. ``secret`` is the HMAC secret or a private key PEM."""
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    if algorithm in HMAC_ALGORITHMS and len(_as_bytes(secret).strip()) < MIN_SECRET_BYTES:
        raise JwtKeyError(f"refusing to sign with an HMAC secret under {MIN_SECRET_BYTES} bytes")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": subject,
        "scope": " ".join(sorted(set(scopes))),
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl_s),
        "jti": secrets.token_urlsafe(12),
    }
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    key = secret.strip() if algorithm in HMAC_ALGORITHMS else secret
    # RFC 9068's media type for access tokens, so `jwt_required_typ: at+jwt` takes our own.
    return jose_jwt.encode(claims, key, algorithm=algorithm, headers={"typ": RFC9068_TYP})


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


class JwtVerifier:
    """Verifies bearer tokens against the configured algorithms and key sources."""

    def __init__(
        self,
        *,
        algorithms: list[str],
        secret_path: Path | None,
        public_key_path: Path | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_s: float = 30.0,
        reload_interval_s: float = 1.0,
        jwks: JwksKeySource | None = None,
        max_lifetime_s: float | None = None,
        required_typ: str | None = None,
    ) -> None:
        unknown = set(algorithms) - HMAC_ALGORITHMS - PUBLIC_KEY_ALGORITHMS
        if unknown or not algorithms:
            raise JwtKeyError(f"unsupported JWT algorithms: {sorted(unknown) or 'none given'}")
        self.algorithms = tuple(dict.fromkeys(algorithms))
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.max_lifetime_s = max_lifetime_s
        self.required_typ = required_typ
        self.jwks = jwks
        self._hmac_algs = [a for a in self.algorithms if a in HMAC_ALGORITHMS]
        public_algs = [a for a in self.algorithms if a in PUBLIC_KEY_ALGORITHMS]
        if public_algs and public_key_path is None and jwks is None:
            raise JwtKeyError(
                f"{public_algs} need security.authentication.jwt_public_key_path or jwt_jwks_url"
            )
        self._static = StaticKeys(
            hmac_algorithms=self._hmac_algs,
            public_algorithms=public_algs,
            secret_path=secret_path,
            public_key_path=public_key_path,
            reload_interval_s=reload_interval_s,
        )

    @classmethod
    def from_config(cls, auth: Authentication) -> JwtVerifier:
        jwks = None
        if auth.jwt_jwks_url is not None:
            jwks = JwksKeySource(
                auth.jwt_jwks_url,
                timeout_s=auth.jwt_jwks_timeout_s,
                min_refresh_interval_s=auth.jwt_jwks_refresh_min_interval_s,
                cache_ttl_s=auth.jwt_jwks_cache_ttl_s,
            )
        return cls(
            algorithms=list(auth.jwt_algorithms),
            secret_path=auth.jwt_secret_path,
            public_key_path=auth.jwt_public_key_path,
            issuer=auth.jwt_issuer,
            audience=auth.jwt_audience,
            leeway_s=auth.jwt_leeway_s,
            jwks=jwks,
            max_lifetime_s=auth.jwt_max_lifetime_s,
            required_typ=auth.jwt_required_typ,
        )

    @property
    def signing_algorithm(self) -> str | None:
        """The HMAC algorithm tokens are minted with (/token), if any is accepted."""
        return self._hmac_algs[0] if self._hmac_algs else None

    @property
    def key_algorithms(self) -> list[str]:
        """Algorithms that currently have key material (for the startup summary)."""
        jwks_algs = self.jwks.algorithms if self.jwks is not None else set()
        return sorted((set(self._static.keys) | jwks_algs) & set(self.algorithms))

    def signing_secret(self) -> bytes | None:
        self._static.maybe_reload()
        return self._static.secret

    # --- hot path --------------------------------------------------------------------

    def _key_for(self, alg: str, kid: str | None) -> Key:
        if kid is not None and self.jwks is not None and alg in PUBLIC_KEY_ALGORITHMS:
            return self.jwks.key_for(kid, alg)
        key = self._static.keys.get(alg)
        if key is None:
            raise InvalidToken("no_key")
        return key

    def verify(self, token: str, now: float | None = None) -> VerifiedToken:
        """Return the verified token or raise :class:`InvalidToken`."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("too_large")
        self._static.maybe_reload()
        try:
            header = jose_jwt.get_unverified_header(token)
        except (JOSEError, ValueError, TypeError, AttributeError):
            raise InvalidToken("malformed") from None
        if not isinstance(header, dict):
            raise InvalidToken("malformed")
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise InvalidToken("algorithm_not_allowed")
        kid = check_header(header, self.required_typ)
        key = self._key_for(alg, kid)
        options = {
            "require_exp": True,
            "require_aud": self.audience is not None,
            "require_iss": self.issuer is not None,
            "leeway": self.leeway_s,
        }
        try:
            claims = jose_jwt.decode(
                token,
                key,
                algorithms=[alg],  # only the one whose key we picked
                audience=self.audience,
                issuer=self.issuer,
                options=options,
            )
        except ExpiredSignatureError:
            raise InvalidToken("expired") from None
        except JWTClaimsError:
            raise InvalidToken("claims") from None
        except Exception:  # attacker-shaped input: any parse failure is just "invalid"
            raise InvalidToken("invalid") from None
        return verified_from_claims(
            claims,
            now=time.time() if now is None else now,
            leeway_s=self.leeway_s,
            max_lifetime_s=self.max_lifetime_s,
        )
