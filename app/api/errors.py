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
        self.code = code or _DEFAULT_CODES.get(status_code, "error")
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
            "code": code or _DEFAULT_CODES.get(status_code, "error"),
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


# What the edge itself answers on a prediction route, before the request reaches the
# core: credentials, scopes, body size and parsing, the caller's rate limit.
_EDGE_ERRORS: dict[int, str] = {
    400: "malformed_json, credentials_in_url",
    401: "unauthorized: missing or bad credentials",
    403: "insufficient_scope: the credential lacks model:predict",
    413: "payload_too_large: body over the configured size limit",
    422: "invalid_request: the body or a header fails the schema",
    429: "rate_limited (see Retry-After)",
}


def prediction_error_responses() -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a prediction route: every code it can answer, by status."""
    by_status: dict[int, list[str]] = {s: [text] for s, text in _EDGE_ERRORS.items()}
    for kind, rule in FAILURES.items():
        by_status.setdefault(rule.http_status, []).append(kind.value)
    return {
        status: {"model": ErrorResponse, "description": "; ".join(codes)}
        for status, codes in sorted(by_status.items())
    }


def register_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(PredictionFailure)
    async def _prediction_failure(request: Request, exc: PredictionFailure) -> FastJSONResponse:
        # The one place a failure kind becomes a response (app.gateway.failures).
        return error_response(
            exc.rule.http_status,
            exc.message,
            code=exc.kind.value,
            request_id=_request_id(request),
            details=exc.details,
            headers=exc.headers,
        )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> FastJSONResponse:
        return error_response(
            exc.status_code,
            exc.message,
            code=exc.code,
            request_id=_request_id(request),
            details=exc.details,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> FastJSONResponse:
        errors = exc.errors()
        malformed = any(e.get("type") == "json_invalid" for e in errors)
        return error_response(
            400 if malformed else 422,
            "request body is not valid JSON" if malformed else "request failed validation",
            code="malformed_json" if malformed else "invalid_request",
            request_id=_request_id(request),
            details=_clean_validation_errors(list(errors)),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> FastJSONResponse:
        return error_response(
            exc.status_code,
            str(exc.detail),
            request_id=_request_id(request),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> FastJSONResponse:
        # Never leak internals; the traceback goes to the log with the request id.
        log.exception("unhandled_error", request_id=_request_id(request), error=type(exc).__name__)
        return error_response(500, "internal error", request_id=_request_id(request))
