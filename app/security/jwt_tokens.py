"""JWT bearer tokens: verification with pinned algorithms, and minting for the CLI and /token.

The header's ``alg`` is only used to *select* among the algorithms the config accepts, and
each accepted algorithm has its own pre-built key: an HS* token is checked with the HMAC
secret only, an RS256/ES256 token with the public key only, so a token "signed" with the
public key as an HMAC secret (algorithm confusion) can never verify. ``alg: none`` is never
accepted. ``exp`` is required; ``nbf``/``iat`` honour the configured leeway.

Claim types are checked on the decoded claims, not left to python-jose (which runs
``int()`` on the time claims, so ``"exp": "9999999999"`` or ``"iat": true`` would pass):
``exp``, ``nbf`` and ``iat`` must be JSON numbers (``bool`` and numeric strings are not),
else the token is invalid (reason ``bad_claim_type``). Scopes are read from the OAuth2
``scope`` claim only, which must be a space-delimited string (a list or any other type
makes the token invalid); ``scp`` and every other claim grant nothing.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from jose import jwk
from jose import jwt as jose_jwt
from jose.backends.base import Key
from jose.exceptions import ExpiredSignatureError, JOSEError, JWTClaimsError

from app.config import Authentication
from app.security.secret_files import FileChangeProbe, fingerprint

log = structlog.get_logger("app.security.jwt")

MAX_TOKEN_BYTES = 8192  # refuse before parsing: a bearer header is attacker-sized
MIN_SECRET_BYTES = 32
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset({"RS256", "ES256"})


class JwtKeyError(RuntimeError):
    """Key material is missing, too weak or unreadable (the message never holds it)."""


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


def read_jwt_secret(path: Path) -> bytes:
    """The HMAC secret from a mounted file, whitespace stripped; refuses weak secrets."""
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        raise JwtKeyError(f"JWT secret file not found: {path}") from None
    except OSError as exc:
        raise JwtKeyError(f"JWT secret file {path} unreadable: {exc.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise JwtKeyError(
            f"JWT secret in {path} is shorter than {MIN_SECRET_BYTES} bytes; "
            "make one with `cnnlstm secret init`"
        )
    return secret


def generate_jwt_secret() -> str:
    """A new HMAC secret: 384 random bits, URL-safe text (64 characters)."""
    return secrets.token_urlsafe(48)


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
    return jose_jwt.encode(claims, key, algorithm=algorithm)


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


TIME_CLAIMS = ("exp", "nbf", "iat")


def _is_json_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_claim_types(claims: dict[str, Any]) -> None:
    """Raise ``InvalidToken("bad_claim_type")`` unless each present time claim is a number."""
    for name in TIME_CLAIMS:
        if name in claims and not _is_json_number(claims[name]):
            raise InvalidToken("bad_claim_type")


def scopes_from_claims(claims: dict[str, Any]) -> frozenset[str]:
    """The OAuth2 ``scope`` claim (space-delimited string); absent means no scopes."""
    value = claims.get("scope")
    if value is None:
        return frozenset()
    if not isinstance(value, str):
        raise InvalidToken("claims")
    return frozenset(value.split())


class JwtVerifier:
    """Verifies bearer tokens against the configured algorithms and key files."""

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
    ) -> None:
        unknown = set(algorithms) - HMAC_ALGORITHMS - PUBLIC_KEY_ALGORITHMS
        if unknown or not algorithms:
            raise JwtKeyError(f"unsupported JWT algorithms: {sorted(unknown) or 'none given'}")
        self.algorithms = tuple(dict.fromkeys(algorithms))
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self._hmac_algs = [a for a in self.algorithms if a in HMAC_ALGORITHMS]
        self._public_algs = [a for a in self.algorithms if a in PUBLIC_KEY_ALGORITHMS]
        self._secret: bytes | None = None
        self._keys: dict[str, Key] = {}
        self._secret_probe = (
            FileChangeProbe(secret_path, reload_interval_s)
            if secret_path and self._hmac_algs
            else None
        )
        self._public_probe = (
            FileChangeProbe(public_key_path, reload_interval_s)
            if public_key_path and self._public_algs
            else None
        )
        if self._public_algs and public_key_path is None:
            raise JwtKeyError(
                f"{self._public_algs} need security.authentication.jwt_public_key_path"
            )
        # First load: a weak secret or a bad key is a startup error, a missing file a warning
        # (the service can start before the secret is mounted; HS tokens fail until then).
        self._load_secret(startup=True)
        self._load_public_key(startup=True)

    @classmethod
    def from_config(cls, auth: Authentication) -> JwtVerifier:
        return cls(
            algorithms=list(auth.jwt_algorithms),
            secret_path=auth.jwt_secret_path,
            public_key_path=auth.jwt_public_key_path,
            issuer=auth.jwt_issuer,
            audience=auth.jwt_audience,
            leeway_s=auth.jwt_leeway_s,
        )

    @property
    def signing_algorithm(self) -> str | None:
        """The HMAC algorithm tokens are minted with (/token), if any is accepted."""
        return self._hmac_algs[0] if self._hmac_algs else None

    @property
    def key_algorithms(self) -> list[str]:
        """Algorithms that currently have key material (for the startup summary)."""
        return sorted(self._keys)

    def signing_secret(self) -> bytes | None:
        self._maybe_reload()
        return self._secret

    # --- key material ----------------------------------------------------------------

    def _maybe_reload(self) -> None:
        if self._secret_probe is not None and self._secret_probe.changed():
            self._load_secret(startup=False)
        if self._public_probe is not None and self._public_probe.changed():
            self._load_public_key(startup=False)

    def _load_secret(self, *, startup: bool) -> None:
        probe = self._secret_probe
        if probe is None:
            return
        seen = fingerprint(probe.path)
        probe.mark_seen(seen)
        try:
            secret = read_jwt_secret(probe.path)
        except JwtKeyError as exc:
            if startup and seen is not None:
                raise
            # Rotation mistakes keep the previous secret rather than locking everyone out.
            log.error("jwt_secret_unavailable", error=str(exc))
            return
        self._secret = secret
        for alg in self._hmac_algs:
            self._keys[alg] = jwk.construct(secret, alg)
        if not startup:
            log.info("jwt_secret_rotated", path=str(probe.path))

    def _load_public_key(self, *, startup: bool) -> None:
        probe = self._public_probe
        if probe is None:
            return
        probe.mark_seen(fingerprint(probe.path))
        try:
            pem = probe.path.read_bytes()
            keys = {alg: jwk.construct(pem, alg) for alg in self._public_algs}
        except (OSError, JOSEError, ValueError) as exc:
            if startup:
                raise JwtKeyError(
                    f"JWT public key {probe.path} unusable: {type(exc).__name__}"
                ) from None
            log.error("jwt_public_key_unavailable", path=str(probe.path), error=type(exc).__name__)
            return
        self._keys.update(keys)
        if not startup:
            log.info("jwt_public_key_rotated", path=str(probe.path))

    # --- hot path --------------------------------------------------------------------

    def verify(self, token: str, now: float | None = None) -> VerifiedToken:
        """Return the verified token or raise :class:`InvalidToken`."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("too_large")
        self._maybe_reload()
        try:
            alg = jose_jwt.get_unverified_header(token).get("alg")
        except (JOSEError, ValueError, TypeError, AttributeError):
            raise InvalidToken("malformed") from None
        if alg not in self.algorithms:
            raise InvalidToken("algorithm_not_allowed")
        key = self._keys.get(alg)
        if key is None:
            raise InvalidToken("no_key")
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
        return self._to_verified(claims, time.time() if now is None else now)

    def _to_verified(self, claims: dict[str, Any], now: float) -> VerifiedToken:
        check_claim_types(claims)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("claims")
        iat = claims.get("iat")
        if iat is not None and iat > now + self.leeway_s:
            raise InvalidToken("issued_in_future")
        return VerifiedToken(
            subject=subject,
            scopes=scopes_from_claims(claims),
            expires_at=float(claims["exp"]),
            claims=claims,
        )
