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
    path: str,
    methods: frozenset[AuthMethod],
    reason: str,
    *,
    method: str | None = None,
    key_id: str | None = None,
) -> ApiError:
    log.info("auth_rejected", reason=reason, method=method, key_id=key_id, path=path)
    return _unauthorized(ctx, methods, "invalid_token" if method == "jwt" else None)


def _from_api_key(
    ctx: SecurityContext, path: str, raw: str, methods: frozenset[AuthMethod]
) -> Principal:
    if ctx.api_keys is None:
        raise _reject(ctx, path, methods, "api_keys_not_configured", method="api_key")
    record, reason = ctx.api_keys.check(raw)
    if record is None:
        # The key id is the key's public half; a malformed value is not logged at all.
        raise _reject(ctx, path, methods, reason, method="api_key", key_id=parse_key_id(raw))
    return ctx.principal_from_key(record)


def _from_bearer(
    ctx: SecurityContext, path: str, authorization: str, methods: frozenset[AuthMethod]
) -> Principal:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _reject(ctx, path, methods, "not_bearer", method="jwt")
    if ctx.jwt is None:
        raise _reject(ctx, path, methods, "jwt_not_configured", method="jwt")
    try:
        verified = ctx.jwt.verify(token.strip())
    except InvalidToken as exc:
        raise _reject(ctx, path, methods, exc.reason, method="jwt") from None
    return ctx.principal_from_token(verified)


def _resolve(
    ctx: SecurityContext,
    path: str,
    scopes: list[str] | tuple[str, ...],
    methods: frozenset[AuthMethod],
    *,
    api_key: str | None,
    authorization: str | None,
) -> Principal:
    if not ctx.enabled:
        return ctx.anonymous(scopes)
    raw_key = api_key if "api_key" in methods else None
    bearer = authorization if "jwt" in methods else None
    if raw_key is not None:
        principal = _from_api_key(ctx, path, raw_key, methods)
    elif bearer is not None:
        principal = _from_bearer(ctx, path, bearer, methods)
    else:
        raise _reject(ctx, path, methods, "missing")
    if ctx.scopes_enforced and not principal.has_scopes(scopes):
        log.info(
            "auth_forbidden",
            subject=principal.subject,
            key_id=principal.key_id,
            required=list(scopes),
            path=path,
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


def authorize(
    ctx: SecurityContext,
    path: str,
    scopes: list[str] | tuple[str, ...],
    *,
    api_key: str | None,
    authorization: str | None,
) -> Principal:
    """Resolve the caller from its credential headers, check ``scopes``, charge its bucket.

    ``path`` is only for the log line of a refusal. Raises :class:`ApiError` (401, 403 or
    429); the route's dependency and the prediction fast path both call this."""
    principal = _resolve(
        ctx,
        path,
        scopes,
        ctx.methods_for(scopes),
        api_key=api_key,
        authorization=authorization,
    )
    wait = ctx.rate_limit_wait(principal)
    if wait > 0:
        log.info("rate_limited", subject=principal.subject, key_id=principal.key_id)
        raise ApiError(
            429,
            "rate limit exceeded",
            code="rate_limited",
            headers={"Retry-After": retry_after_header(wait)},
        )
    return principal


async def authenticate(request: Request, security_scopes: SecurityScopes) -> Principal:
    """:func:`authorize` for a route's ``Security`` dependency.

    It reads its own headers (no ``fastapi.security`` sub-dependency runs per request);
    the OpenAPI document gets the schemes from :mod:`app.security.openapi_security`."""
    ctx = security_context(request)
    headers = request.headers
    principal = authorize(
        ctx,
        request.url.path,
        security_scopes.scopes,
        api_key=headers.get(ctx.api_key_header),
        authorization=headers.get("authorization"),
    )
    request.state.principal = principal
    return principal


async def metrics_access(request: Request) -> Principal | None:
    """``/metrics``: open, or a JWT bearer with ``model:stats`` (``metrics_auth``)."""
    ctx = security_context(request)
    if ctx.config.security.authentication.metrics_auth == "open":
        return None
    principal = _resolve(
        ctx,
        request.url.path,
        (STATS_SCOPE,),
        _JWT_ONLY,
        api_key=None,
        authorization=request.headers.get("authorization"),
    )
    request.state.principal = principal
    return principal


PredictPrincipal = Annotated[Principal, Security(authenticate, scopes=[PREDICT_SCOPE])]
StatsPrincipal = Annotated[Principal, Security(authenticate, scopes=[STATS_SCOPE])]
MetricsAccess = Annotated[Principal | None, Depends(metrics_access)]
