"""Spec section 7: authentication, authorization, and network security (TLS, CORS, limits)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from app.config.base import AuthMethod, JwtAlgorithm, Section


def _both_methods() -> list[AuthMethod]:
    return ["api_key", "jwt"]


def _hs256() -> list[JwtAlgorithm]:
    return ["HS256"]


# Plain http is for a JWKS server on this machine only (tests, a sidecar); anything that
# crosses a network must be https, or whoever sits on the path chooses our trusted keys.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def jwks_url_problem(url: str) -> str | None:
    """Why ``url`` may not serve as a JWKS URL, or None when it may."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "is not a URL"
    if not host:
        return "has no host"
    if parts.username or parts.password:
        return "may not carry credentials"
    if parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK_HOSTS):
        return None
    return "must be https:// (http:// only for 127.0.0.1, ::1 or localhost)"


# --- 7.1 Authentication and authorization ------------------------------------------------


class Authentication(Section):
    enabled: bool = True
    methods: list[AuthMethod] = Field(default_factory=_both_methods)
    api_key_header: str = "X-API-Key"
    jwt_secret_path: Path = Path("/secrets/jwt-secret")
    # Not in the spec, needed to run it: where the hashed API-key store lives, which JWT
    # algorithms are accepted, and what an external identity provider's tokens look like.
    api_key_store_path: Path = Path("/secrets/api-keys.json")
    client_store_path: Path | None = None
    jwt_algorithms: list[JwtAlgorithm] = Field(default_factory=_hs256)
    jwt_public_key_path: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_s: float = Field(30, ge=0, le=300)
    token_ttl_s: int = Field(900, ge=30, le=86400)
    # An identity provider's key set (RS256/ES256 keys picked by the token's `kid`); cached,
    # refreshed every `jwt_jwks_cache_ttl_s` in the background, and on an unknown `kid` at
    # most once per `jwt_jwks_refresh_min_interval_s` (app/security/jwks.py).
    jwt_jwks_url: str | None = None
    jwt_jwks_refresh_min_interval_s: float = Field(60, ge=1, le=3600)
    jwt_jwks_cache_ttl_s: float = Field(300, ge=10, le=86400)
    jwt_jwks_timeout_s: float = Field(2.0, gt=0, le=10)
    # Optional token limits: the longest `exp - iat` accepted (tokens then need `iat`), and
    # the header `typ` required (e.g. "at+jwt", RFC 9068; case-insensitive).
    jwt_max_lifetime_s: int | None = Field(None, ge=30)
    jwt_required_typ: str | None = Field(None, min_length=1, max_length=64)
    # The per-route method matrix: by default each route takes both methods.
    predict_methods: list[AuthMethod] = Field(default_factory=_both_methods)
    stats_methods: list[AuthMethod] = Field(default_factory=_both_methods)
    metrics_auth: Literal["open", "bearer"] = "open"

    @field_validator("jwt_jwks_url")
    @classmethod
    def _jwks_url_is_trusted(cls, url: str | None) -> str | None:
        problem = None if url is None else jwks_url_problem(url)
        if problem is not None:
            raise ValueError(f"jwt_jwks_url {problem}")
        return url

    @model_validator(mode="after")
    def _jwt_settings_agree(self) -> Authentication:
        if self.jwt_jwks_url is not None and not {"RS256", "ES256"} & set(self.jwt_algorithms):
            raise ValueError("jwt_jwks_url needs RS256 or ES256 in jwt_algorithms")
        if self.jwt_max_lifetime_s is not None and self.token_ttl_s > self.jwt_max_lifetime_s:
            # POST /token would mint tokens that this same service then refuses.
            raise ValueError("token_ttl_s may not exceed jwt_max_lifetime_s")
        return self


class Authorization(Section):
    enabled: bool = True
    required_scopes: list[str] = Field(default_factory=lambda: ["model:predict", "model:stats"])


class Security(Section):
    authentication: Authentication = Authentication()
    authorization: Authorization = Authorization()


# --- 7.2 Network security ----------------------------------------------------------------


class Tls(Section):
    enabled: bool = True
    cert_path: Path = Path("/certs/tls.crt")
    key_path: Path = Path("/certs/tls.key")
    # Not in the spec: Strict-Transport-Security max-age sent while TLS is on.
    hsts_max_age_s: int = Field(31_536_000, ge=0)


class Cors(Section):
    enabled: bool = True
    allowed_origins: list[str] = Field(
        default_factory=lambda: ["https://trading-platform.com", "https://api.trading-platform.com"]
    )
    allowed_methods: list[str] = Field(default_factory=lambda: ["GET", "POST"])
    allowed_headers: list[str] = Field(
        default_factory=lambda: ["Content-Type", "Authorization", "X-API-Key"]
    )
    # Not in the spec: response headers browsers may read, and how long a preflight is cached.
    expose_headers: list[str] = Field(default_factory=lambda: ["X-Request-ID", "Retry-After"])
    max_age_s: int = Field(600, ge=0, le=86400)


class Limits(Section):
    """Hardening limits (not in the spec; needed so bad input is bounded)."""

    # A 64-bar request is ~6 KB of JSON; 2 MiB fits a full /predict/batch of 128 items.
    max_body_bytes: int = Field(2_097_152, ge=1024)
    max_bars: int = Field(4096, ge=64)
    max_batch_symbols: int = Field(128, ge=1)
    # Per-principal token buckets. API keys carry their own rate/burst; JWT principals (and
    # keys without one) get these defaults, where None means "not limited".
    default_rate_limit_per_s: float | None = Field(None, gt=0)
    default_burst: int = Field(20, ge=1)
    rate_limit_max_buckets: int = Field(100_000, ge=100)
    # Guesses against POST /token, per client_id (each check costs a deliberate slow hash).
    token_endpoint_rate_per_s: float = Field(1.0, gt=0)
    token_endpoint_burst: int = Field(10, ge=1)
    # Not in the spec: checks on POST /token for every client_id together. A flood of
    # made-up ids never meets the per-client limit, and each check costs a slow hash
    # (~7 ms of CPU on a 2-vCPU box): 20 a second hold that to ~14 % of one core.
    token_endpoint_global_rate_per_s: float = Field(20.0, gt=0)
    token_endpoint_global_burst: int = Field(40, ge=1)


class NetworkSecurity(Section):
    tls: Tls = Tls()
    cors: Cors = Cors()
    limits: Limits = Limits()
