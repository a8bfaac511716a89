"""Spec section 7: authentication, authorization, and network security (TLS, CORS, limits)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from app.config.base import AuthMethod, JwtAlgorithm, Section


def _both_methods() -> list[AuthMethod]:
    return ["api_key", "jwt"]


def _hs256() -> list[JwtAlgorithm]:
    return ["HS256"]


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
    # The per-route method matrix: by default each route takes both methods.
    predict_methods: list[AuthMethod] = Field(default_factory=_both_methods)
    stats_methods: list[AuthMethod] = Field(default_factory=_both_methods)
    metrics_auth: Literal["open", "bearer"] = "open"


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


class NetworkSecurity(Section):
    tls: Tls = Tls()
    cors: Cors = Cors()
    limits: Limits = Limits()
