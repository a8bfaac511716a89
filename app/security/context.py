"""Everything the auth dependencies need at request time, built once from the config.

``install_security`` puts one :class:`SecurityContext` on ``app.state.security``; the
dependencies in :mod:`app.security.dependencies` read it from there. It has no FastAPI
import, so it can be built and inspected in plain unit tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from app.config import AuthMethod, ServiceConfig
from app.security.api_keys import ApiKeyRecord, ApiKeyStore
from app.security.clients import ClientStore
from app.security.jwt_tokens import JwtVerifier, VerifiedToken
from app.security.principal import Principal
from app.security.rate_limit import TokenBucketLimiter

PREDICT_SCOPE = "model:predict"
STATS_SCOPE = "model:stats"
REALM = "cnnlstm"

log = structlog.get_logger("app.security")


class WarningLogger(Protocol):
    def warning(self, msg: str, /, *args: Any, **kwargs: Any) -> Any: ...


@dataclass
class SecurityContext:
    config: ServiceConfig
    api_keys: ApiKeyStore | None = None
    jwt: JwtVerifier | None = None
    clients: ClientStore | None = None
    limiter: TokenBucketLimiter = field(default_factory=TokenBucketLimiter)
    token_limiter: TokenBucketLimiter = field(default_factory=TokenBucketLimiter)

    @classmethod
    def from_config(cls, config: ServiceConfig) -> SecurityContext:
        auth = config.security.authentication
        limits = config.network_security.limits
        ctx = cls(
            config=config,
            limiter=TokenBucketLimiter(limits.rate_limit_max_buckets),
            token_limiter=TokenBucketLimiter(limits.rate_limit_max_buckets),
        )
        if not auth.enabled:
            return ctx
        if "api_key" in auth.methods:
            ctx.api_keys = ApiKeyStore(auth.api_key_store_path)
        if auth.client_store_path is not None:
            ctx.clients = ClientStore(auth.client_store_path)
        if "jwt" in auth.methods or ctx.clients is not None:
            ctx.jwt = JwtVerifier.from_config(auth)
        ctx._log_summary()
        return ctx

    def _log_summary(self) -> None:
        """One line at start: what is accepted and what key material was found (no secrets)."""
        auth = self.config.security.authentication
        log.info(
            "security_ready",
            methods=list(auth.methods),
            api_keys=None if self.api_keys is None else len(self.api_keys),
            api_key_store=str(auth.api_key_store_path),
            jwt_algorithms_with_keys=None if self.jwt is None else self.jwt.key_algorithms,
            oauth2_clients=None if self.clients is None else len(self.clients),
            scopes_enforced=self.scopes_enforced,
        )
        if self.api_keys is not None and not self.api_keys.path.exists():
            log.warning("api_key_store_missing", path=str(auth.api_key_store_path))
        if self.jwt is not None and not self.jwt.key_algorithms:
            log.warning("jwt_no_key_material", jwt_secret_path=str(auth.jwt_secret_path))

    # --- configuration views -----------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.config.security.authentication.enabled

    @property
    def scopes_enforced(self) -> bool:
        return self.config.security.authorization.enabled

    @property
    def api_key_header(self) -> str:
        return self.config.security.authentication.api_key_header

    def methods_for(self, scopes: list[str] | tuple[str, ...]) -> frozenset[AuthMethod]:
        """Which credential types a route takes: its per-route list within ``methods``."""
        auth = self.config.security.authentication
        allowed: set[AuthMethod] = set(auth.methods)
        if PREDICT_SCOPE in scopes:
            allowed &= set(auth.predict_methods)
        if STATS_SCOPE in scopes:
            allowed &= set(auth.stats_methods)
        return frozenset(allowed)

    def challenge(self, methods: frozenset[AuthMethod], error: str | None = None) -> str:
        """``WWW-Authenticate`` value naming each accepted scheme (RFC 7235 / 6750)."""
        parts = []
        if "jwt" in methods:
            bearer = f'Bearer realm="{REALM}"'
            parts.append(f'{bearer}, error="{error}"' if error else bearer)
        if "api_key" in methods:
            parts.append(f'ApiKey realm="{REALM}", header="{self.api_key_header}"')
        return ", ".join(parts) or f'Bearer realm="{REALM}"'

    def anonymous(self, scopes: list[str] | tuple[str, ...]) -> Principal:
        granted = set(self.config.security.authorization.required_scopes) | set(scopes)
        return Principal(subject="anonymous", scopes=frozenset(granted), method="anonymous")

    def warn_if_disabled(self, logger: WarningLogger) -> None:
        """Call at every start: running without authentication must never be silent."""
        if not self.enabled:
            logger.warning(
                "SECURITY WARNING: authentication is disabled "
                "(security.authentication.enabled=false); every request is served as an "
                "anonymous principal holding all scopes"
            )
        elif not self.scopes_enforced:
            logger.warning(
                "SECURITY WARNING: authorization is disabled "
                "(security.authorization.enabled=false); scopes are not checked"
            )

    # --- credentials -> principal --------------------------------------------------------

    @staticmethod
    def principal_from_key(record: ApiKeyRecord) -> Principal:
        return Principal(
            subject=record.owner,
            scopes=record.scopes,
            method="api_key",
            key_id=record.key_id,
            rate_limit_per_s=record.rate_limit_per_s,
            burst=record.burst,
            priority=record.priority,
        )

    @staticmethod
    def principal_from_token(token: VerifiedToken) -> Principal:
        return Principal(subject=token.subject, scopes=token.scopes, method="jwt")

    def rate_limit_wait(self, principal: Principal, now: float | None = None) -> float:
        """Seconds the caller must wait (0.0: go ahead). Unlimited principals get 0.0."""
        limits = self.config.network_security.limits
        rate = principal.rate_limit_per_s or limits.default_rate_limit_per_s
        if rate is None or principal.method == "anonymous":
            return 0.0
        burst = principal.burst or limits.default_burst
        return self.limiter.acquire(
            principal.rate_key, rate, burst, time.monotonic() if now is None else now
        )

    def token_attempt_wait(self, client_id: str) -> float:
        """Throttle guesses at one client's secret on ``POST /token``, then every client's
        together (made-up ids each get a bucket of their own, but cost a hash each)."""
        limits = self.config.network_security.limits
        wait = self.token_limiter.acquire(
            f"client:{client_id[:64]}",
            limits.token_endpoint_rate_per_s,
            limits.token_endpoint_burst,
        )
        if wait > 0:
            return wait
        return self.token_limiter.acquire(
            "all", limits.token_endpoint_global_rate_per_s, limits.token_endpoint_global_burst
        )
