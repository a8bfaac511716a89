"""``POST /token``: the OAuth2 client-credentials grant (RFC 6749 section 4.4).

Clients authenticate with HTTP Basic or with ``client_id``/``client_secret`` form fields
(not both) and get a short-lived HS256 JWT holding the requested scopes, which must be a
subset of the client's allowed scopes (all of them when ``scope`` is omitted). Errors use
RFC 6749's codes inside the shared error shape: 400 ``invalid_request`` /
``unsupported_grant_type`` / ``invalid_scope``, 401 ``invalid_client``.
"""

from __future__ import annotations

import base64
from typing import Annotated, Literal
from urllib.parse import unquote_plus

from fastapi import APIRouter, Form, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.api.errors import ApiError
from app.security.context import REALM, SecurityContext
from app.security.dependencies import security_context
from app.security.jwt_tokens import mint_token
from app.security.rate_limit import retry_after_header

router = APIRouter(tags=["auth"])

_MAX_FIELD = 256


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - a scheme name, not a secret
    expires_in: int = Field(description="seconds until the token expires")
    scope: str = Field(description="granted scopes, space-separated")


def _invalid_request(message: str) -> ApiError:
    return ApiError(400, message, code="invalid_request")


def _invalid_client() -> ApiError:
    return ApiError(
        401,
        "client authentication failed",
        code="invalid_client",
        headers={"WWW-Authenticate": f'Basic realm="{REALM}"'},
    )


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """``(client_id, client_secret)`` from HTTP Basic (form-urlencoded per RFC 6749 2.3.1)."""
    if authorization is None:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise _invalid_client()
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # not base64 (binascii.Error), not ASCII at all, or not UTF-8
        raise _invalid_client() from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise _invalid_client()
    return unquote_plus(client_id), unquote_plus(secret)


def _client_credentials(
    request: Request, client_id: str | None, client_secret: str | None
) -> tuple[str, str]:
    basic = _basic_credentials(request.headers.get("authorization"))
    if basic is not None:
        if client_secret is not None:
            raise _invalid_request("use one client authentication method, not two")
        if client_id is not None and client_id != basic[0]:
            raise _invalid_request("client_id does not match the Basic credentials")
        return basic
    if not client_id or not client_secret:
        raise _invalid_client()
    return client_id, client_secret


def _granted_scopes(requested: str | None, allowed: frozenset[str]) -> frozenset[str]:
    if requested is None or not requested.strip():
        return allowed
    wanted = frozenset(requested.split())
    if not wanted <= allowed:
        raise ApiError(400, "requested scope is not allowed for this client", code="invalid_scope")
    return wanted


@router.post(
    "/token",
    response_model=TokenResponse,
    summary="Get an access token (OAuth2 client credentials)",
    responses={
        400: {"description": "invalid_request, unsupported_grant_type or invalid_scope"},
        401: {"description": "invalid_client"},
        429: {"description": "too many attempts, for this client or in all; see Retry-After"},
    },
)
async def issue_token(
    request: Request,
    grant_type: Annotated[str | None, Form(max_length=64)] = None,
    client_id: Annotated[str | None, Form(max_length=_MAX_FIELD)] = None,
    client_secret: Annotated[str | None, Form(max_length=_MAX_FIELD)] = None,
    scope: Annotated[str | None, Form(max_length=1024)] = None,
) -> TokenResponse:
    ctx: SecurityContext = security_context(request)
    if grant_type is None:
        raise _invalid_request("grant_type is required")
    if grant_type != "client_credentials":
        raise ApiError(
            400, "only grant_type=client_credentials is supported", code="unsupported_grant_type"
        )
    cid, secret = _client_credentials(request, client_id, client_secret)
    if ctx.clients is None or ctx.jwt is None:
        raise _invalid_client()
    wait = ctx.token_attempt_wait(cid)
    if wait > 0:
        raise ApiError(
            429,
            "too many token requests; retry later",
            code="rate_limited",
            headers={"Retry-After": retry_after_header(wait)},
        )
    # A deliberately slow hash: off the event loop so other requests keep flowing.
    client = await run_in_threadpool(ctx.clients.authenticate, cid, secret)
    if client is None:
        raise _invalid_client()
    granted = _granted_scopes(scope, client.scopes)
    signing_secret = ctx.jwt.signing_secret()
    algorithm = ctx.jwt.signing_algorithm
    if signing_secret is None or algorithm is None:
        raise ApiError(503, "token issuance is not configured", code="unavailable")
    auth = ctx.config.security.authentication
    token = mint_token(
        signing_secret,
        subject=client.client_id,
        scopes=granted,
        ttl_s=auth.token_ttl_s,
        issuer=auth.jwt_issuer,
        audience=auth.jwt_audience,
        algorithm=algorithm,
    )
    return TokenResponse(
        access_token=token, expires_in=auth.token_ttl_s, scope=" ".join(sorted(granted))
    )
