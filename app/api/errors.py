"""One JSON error shape for every failure the API can return.

Every error body is ``{"error": {"code": str, "message": str, "request_id": str | None,
"details": list | None}}``. Handlers for FastAPI's validation errors and Starlette's
HTTP errors are mapped onto the same shape so clients parse one thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.gateway.failures import FAILURES, PredictionFailure
from app.gateway.schemas import ErrorResponse
from model.common.failures import FailureKind

log = structlog.get_logger("app.api.errors")


class FastJSONResponse(JSONResponse):
    """JSON response rendered by orjson (FastAPI's FastJSONResponse is deprecated)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


_DEFAULT_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}
FALLBACK_CODE = "error"  # a status with no entry above (none the app raises itself)

# What each prediction failure kind means to a client (the kinds are the source of the
# codes; a kind missing here is still a code, described by its own name).
_FAILURE_MEANINGS: dict[FailureKind, str] = {
    FailureKind.INVALID_BARS: "the OHLCV window fails validation",
    FailureKind.TOO_MANY_ITEMS: "a batch over the configured item limit",
    FailureKind.MODEL_NOT_FOUND: "no such model name or version",
    FailureKind.INVALID_FEATURES: "the predictor refused the feature array",
    FailureKind.DEADLINE_EXCEEDED: "X-Request-Deadline-Ms passed before the model answered",
    FailureKind.QUEUE_FULL: "the prediction queue is full (see Retry-After)",
    FailureKind.NOT_READY: "the model is not loaded, validated and warm yet (see Retry-After)",
    FailureKind.INVALID_MODEL: "the requested model version failed validation",
    FailureKind.TIMEOUT: "the predictor did not answer within the gateway's timeout",
    FailureKind.UNAVAILABLE: "the predictor failed or could not be reached",
}

# The edge's own codes: what the gateway answers besides the prediction failure kinds
# (credentials, scopes, body size and parsing, rate limits, the token grant, routing).
EDGE_CODES: dict[str, str] = {
    "bad_request": "a bad request with no more precise code",
    "malformed_json": "the body is not valid JSON",
    "credentials_in_url": "a credential in the query string (refused and scrubbed)",
    "duplicate_credentials": "Authorization or the API key header sent more than once",
    "unsupported_http_version": "only HTTP/1.0 and HTTP/1.1 are spoken",
    "invalid_request": "the body, a header or a form field fails the schema",
    "unsupported_grant_type": "POST /token: only client_credentials is supported",
    "invalid_scope": "POST /token: a requested scope is not allowed for the client",
    "unauthorized": "missing or bad credentials (see WWW-Authenticate)",
    "invalid_client": "POST /token: client authentication failed",
    "insufficient_scope": "the credential lacks a scope the route requires",
    "forbidden": "forbidden, with no more precise code",
    "not_found": "no such route",
    "method_not_allowed": "the route does not take this method",
    "request_timeout": "the request took too long to arrive",
    "payload_too_large": "the body is over network_security.limits.max_body_bytes",
    "unsupported_media_type": "the body's content type is not accepted",
    "rate_limited": "the caller's rate limit is spent (see Retry-After)",
    "internal_error": "an unexpected error; the log has it under the request id",
    FALLBACK_CODE: "any other status",
}

# Every code an error body can carry: the one enumeration (OpenAPI's ErrorCode).
ERROR_CODES: dict[str, str] = {
    **{k.value: _FAILURE_MEANINGS.get(k, k.value.replace("_", " ")) for k in FailureKind},
    **{c: m for c, m in EDGE_CODES.items() if c not in {k.value for k in FailureKind}},
}


class ApiError(Exception):
    """An error the API answers with a typed status and the shared body shape."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        details: list[Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code or _DEFAULT_CODES.get(status_code, FALLBACK_CODE)
        self.message = message
        self.details = details
        self.headers = dict(headers or {})


def error_body(
    status_code: int,
    message: str,
    *,
    code: str | None = None,
    request_id: str | None = None,
    details: list[Any] | None = None,
) -> dict[str, Any]:
    return {
        "error": {
            "code": code or _DEFAULT_CODES.get(status_code, FALLBACK_CODE),
            "message": message,
            "request_id": request_id,
            "details": details,
        }
    }


def error_response(
    status_code: int,
    message: str,
    *,
    code: str | None = None,
    request_id: str | None = None,
    details: list[Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> FastJSONResponse:
    return FastJSONResponse(
        error_body(status_code, message, code=code, request_id=request_id, details=details),
        status_code=status_code,
        headers=dict(headers or {}),
    )


def _request_id(request: Request) -> str | None:
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else None


def _clean_validation_errors(errors: list[Any]) -> list[dict[str, Any]]:
    # Pydantic puts the offending input (possibly a credential or a huge array) into
    # each error; echo only where and what, never the value.
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in errors
    ]


# What the request hygiene middleware (app.security.hardening) refuses on every route (400).
HYGIENE_CODES = ("credentials_in_url", "duplicate_credentials", "unsupported_http_version")

# What a prediction route answers, by status: the edge's checks before the request reaches
# the core (credentials, scopes, body size and parsing, the caller's rate limit), then every
# failure kind at the status its rule gives it (app.gateway.failures).
_PREDICTION_EDGE: dict[int, tuple[str, ...]] = {
    400: ("malformed_json", *HYGIENE_CODES),
    401: ("unauthorized",),
    403: ("insufficient_scope",),
    413: ("payload_too_large",),
    422: ("invalid_request",),
    429: ("rate_limited",),
    500: ("internal_error",),
}


def prediction_errors() -> dict[int, tuple[str, ...]]:
    """Every code ``/predict`` and ``/predict/batch`` can answer, by status."""
    by_status = {s: list(codes) for s, codes in _PREDICTION_EDGE.items()}
    for kind, rule in FAILURES.items():
        by_status.setdefault(rule.http_status, []).append(kind.value)
    return {s: tuple(codes) for s, codes in sorted(by_status.items())}


def prediction_error_responses() -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a prediction route (app.api.openapi adds the examples)."""
    return {
        status: {"model": ErrorResponse, "description": ", ".join(codes)}
        for status, codes in prediction_errors().items()
    }


def known_error_response(exc: Exception, request_id: str | None) -> FastJSONResponse | None:
    """The answer to an error the API raises on purpose; ``None`` for anything else.

    The exception handlers below and the prediction fast path (app.api.fast_predict) both
    render through this, so one failure reads the same whichever path met it."""
    if isinstance(exc, PredictionFailure):
        # The one place a failure kind becomes a response (app.gateway.failures).
        return error_response(
            exc.rule.http_status,
            exc.message,
            code=exc.kind.value,
            request_id=request_id,
            details=exc.details,
            headers=exc.headers,
        )
    if isinstance(exc, ApiError):
        return error_response(
            exc.status_code,
            exc.message,
            code=exc.code,
            request_id=request_id,
            details=exc.details,
            headers=exc.headers,
        )
    if isinstance(exc, RequestValidationError):
        errors = exc.errors()
        malformed = any(e.get("type") == "json_invalid" for e in errors)
        return error_response(
            400 if malformed else 422,
            "request body is not valid JSON" if malformed else "request failed validation",
            code="malformed_json" if malformed else "invalid_request",
            request_id=request_id,
            details=_clean_validation_errors(list(errors)),
        )
    if isinstance(exc, StarletteHTTPException):
        return error_response(
            exc.status_code,
            str(exc.detail),
            request_id=request_id,
            headers=getattr(exc, "headers", None),
        )
    return None


def unhandled_error_response(exc: Exception, request_id: str | None) -> FastJSONResponse:
    """500 for anything unexpected: internals never leak; the log has the traceback."""
    log.exception("unhandled_error", request_id=request_id, error=type(exc).__name__)
    return error_response(500, "internal error", request_id=request_id)


def register_exception_handlers(app: FastAPI) -> None:
    async def _known(request: Request, exc: Exception) -> FastJSONResponse:
        response = known_error_response(exc, _request_id(request))
        assert response is not None  # registered for the known types only
        return response

    for known in (PredictionFailure, ApiError, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(known, _known)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> FastJSONResponse:
        return unhandled_error_response(exc, _request_id(request))
