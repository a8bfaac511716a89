"""The auth dependencies: the one place where a request becomes a :class:`Principal`.

Routes declare what they need with the ``Annotated`` aliases at the bottom::

    @router.post("/predict")
    async def predict(body: PredictRequest, principal: PredictPrincipal) -> Prediction: ...

Before any of this runs, :class:`~app.security.hardening.RequestHygieneMiddleware` has
already refused credentials in the URL and repeated credential headers (400). Order inside
:func:`authenticate`: the route's accepted credential (API key header, then
``Authorization: Bearer``) is checked (401 + ``WWW-Authenticate``) -> scopes (403) -> the
caller's token bucket (429 + ``Retry-After``). Every 401 reads the same whatever failed
(unknown, revoked, expired, bad signature...); the reason goes to the server log, never
the credential.
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Request, Security
from fastapi.security import SecurityScopes

from app.api.errors import ApiError
from app.config import AuthMethod
from app.security.api_keys import parse_key_id
from app.security.context import PREDICT_SCOPE, REALM, STATS_SCOPE, SecurityContext
from app.security.jwt_tokens import InvalidToken
from app.security.principal import Principal
from app.security.rate_limit import retry_after_header

log = structlog.get_logger("app.security.auth")

UNAUTHORIZED_MESSAGE = "missing or invalid credentials"
_JWT_ONLY: frozenset[AuthMethod] = frozenset({"jwt"})


def security_context(request: Request) -> SecurityContext:
    ctx = getattr(request.app.state, "security", None)
    if not isinstance(ctx, SecurityContext):
        raise RuntimeError("install_security(app, config) was not called for this app")
    return ctx


def current_principal(request: Request) -> Principal | None:
    """The principal the auth dependency resolved for this request (for logs/metrics)."""
    principal = getattr(request.state, "principal", None)
    return principal if isinstance(principal, Principal) else None


def _unauthorized(
    ctx: SecurityContext, methods: frozenset[AuthMethod], error: str | None
) -> ApiError:
    return ApiError(
        401,
        UNAUTHORIZED_MESSAGE,
        code="unauthorized",
        headers={"WWW-Authenticate": ctx.challenge(methods, error)},
    )


def _reject(
    ctx: SecurityContext,
    request: Request,
    methods: frozenset[AuthMethod],
    reason: str,
    *,
    method: str | None = None,
    key_id: str | None = None,
) -> ApiError:
    log.info("auth_rejected", reason=reason, method=method, key_id=key_id, path=request.url.path)
    return _unauthorized(ctx, methods, "invalid_token" if method == "jwt" else None)


def _from_api_key(
    ctx: SecurityContext, request: Request, raw: str, methods: frozenset[AuthMethod]
) -> Principal:
    if ctx.api_keys is None:
        raise _reject(ctx, request, methods, "api_keys_not_configured", method="api_key")
    record, reason = ctx.api_keys.check(raw)
    if record is None:
        # The key id is the key's public half; a malformed value is not logged at all.
        raise _reject(ctx, request, methods, reason, method="api_key", key_id=parse_key_id(raw))
    return ctx.principal_from_key(record)


def _from_bearer(
    ctx: SecurityContext, request: Request, authorization: str, methods: frozenset[AuthMethod]
) -> Principal:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _reject(ctx, request, methods, "not_bearer", method="jwt")
    if ctx.jwt is None:
        raise _reject(ctx, request, methods, "jwt_not_configured", method="jwt")
    try:
        verified = ctx.jwt.verify(token.strip())
    except InvalidToken as exc:
        raise _reject(ctx, request, methods, exc.reason, method="jwt") from None
    return ctx.principal_from_token(verified)


def _resolve(
    ctx: SecurityContext,
    request: Request,
    scopes: list[str] | tuple[str, ...],
    methods: frozenset[AuthMethod],
) -> Principal:
    if not ctx.enabled:
        return ctx.anonymous(scopes)
    headers = request.headers
    raw_key = headers.get(ctx.api_key_header) if "api_key" in methods else None
    authorization = headers.get("authorization") if "jwt" in methods else None
    if raw_key is not None:
        principal = _from_api_key(ctx, request, raw_key, methods)
    elif authorization is not None:
        principal = _from_bearer(ctx, request, authorization, methods)
    else:
        raise _reject(ctx, request, methods, "missing")
    if ctx.scopes_enforced and not principal.has_scopes(scopes):
        log.info(
            "auth_forbidden",
            subject=principal.subject,
            key_id=principal.key_id,
            required=list(scopes),
            path=request.url.path,
        )
        wanted = " ".join(scopes)
        raise ApiError(
            403,
            "the credential lacks a scope this route requires",
            code="insufficient_scope",
            headers={
                "WWW-Authenticate": (
                    f'Bearer realm="{REALM}", error="insufficient_scope", scope="{wanted}"'
                )
            },
        )
    return principal


async def authenticate(request: Request, security_scopes: SecurityScopes) -> Principal:
    """Resolve the caller, check the route's scopes, then charge its token bucket.

    It reads its own headers (no ``fastapi.security`` sub-dependency runs per request);
    the OpenAPI document gets the schemes from :mod:`app.security.openapi_security`."""
    ctx = security_context(request)
    scopes = security_scopes.scopes
    principal = _resolve(ctx, request, scopes, ctx.methods_for(scopes))
    wait = ctx.rate_limit_wait(principal)
    if wait > 0:
        log.info("rate_limited", subject=principal.subject, key_id=principal.key_id)
        raise ApiError(
            429,
            "rate limit exceeded",
            code="rate_limited",
            headers={"Retry-After": retry_after_header(wait)},
        )
    request.state.principal = principal
    return principal


async def metrics_access(request: Request) -> Principal | None:
    """``/metrics``: open, or a JWT bearer with ``model:stats`` (``metrics_auth``)."""
    ctx = security_context(request)
    if ctx.config.security.authentication.metrics_auth == "open":
        return None
    principal = _resolve(ctx, request, (STATS_SCOPE,), _JWT_ONLY)
    request.state.principal = principal
    return principal


PredictPrincipal = Annotated[Principal, Security(authenticate, scopes=[PREDICT_SCOPE])]
StatsPrincipal = Annotated[Principal, Security(authenticate, scopes=[STATS_SCOPE])]
MetricsAccess = Annotated[Principal | None, Depends(metrics_access)]
