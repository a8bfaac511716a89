"""The OpenAPI document's error side: every error of every route, in the one error shape.

FastAPI documents what a route declares; the errors come from everywhere else (the
hygiene and size middlewares, the auth dependency, the failure table, the exception
handlers), so :func:`document_errors` adds them after the document is built, from
:data:`ROUTE_ERRORS`: for each operation and status the ``ErrorResponse`` schema, one
example per code, and the ``Retry-After`` / ``WWW-Authenticate`` headers where they come.
The codes themselves are one enumeration, ``ErrorCode`` (:data:`app.api.errors.ERROR_CODES`:
the failure kinds plus the edge's own codes). FastAPI's own ``HTTPValidationError`` shape,
which this API never sends, is dropped from the document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from app.api.errors import ERROR_CODES, HYGIENE_CODES, error_body, prediction_errors
from app.gateway.failures import FAILURES
from app.gateway.schemas import ErrorResponse
from app.observability.access_log import REQUEST_ID_HEADER
from model.common.failures import FailureKind

Codes = Mapping[int, tuple[str, ...]]

_HYGIENE: Codes = {
    400: HYGIENE_CODES,
    500: ("internal_error",),
}
_AUTH: Codes = {401: ("unauthorized",), 403: ("insufficient_scope",), 429: ("rate_limited",)}


def _merge(*tables: Codes) -> dict[int, tuple[str, ...]]:
    out: dict[int, list[str]] = {}
    for table in tables:
        for status, codes in table.items():
            out.setdefault(status, []).extend(c for c in codes if c not in out.get(status, []))
    return {status: tuple(codes) for status, codes in sorted(out.items())}


# Every operation's errors, keyed "METHOD /path". A route missing here is a test failure.
ROUTE_ERRORS: dict[str, dict[int, tuple[str, ...]]] = {
    "POST /predict": prediction_errors(),
    "POST /predict/batch": prediction_errors(),
    "GET /stats": _merge(_HYGIENE, _AUTH),
    "POST /token": _merge(
        _HYGIENE,
        {
            400: ("invalid_request", "unsupported_grant_type", "invalid_scope"),
            401: ("invalid_client",),
            413: ("payload_too_large",),
            422: ("invalid_request",),
            429: ("rate_limited",),
            503: ("unavailable",),
        },
    ),
    "GET /healthz": _merge(_HYGIENE),
    "GET /ready": _merge(_HYGIENE, {503: ("not_ready",)}),
    # Open, or a JWT with model:stats (security.authentication.metrics_auth); no rate limit.
    "GET /metrics": _merge(_HYGIENE, {401: ("unauthorized",), 403: ("insufficient_scope",)}),
}

_RETRY_AFTER_CODES = frozenset(
    {"rate_limited", "not_ready"}
    | {k.value for k, rule in FAILURES.items() if rule.retry_after_s is not None}
)

EXAMPLE_REQUEST_ID = "4f0c2d1e9a7b4c3d8e6f1a2b3c4d5e6f"
_EXAMPLE_MODEL = {"name": "cnn_lstm", "version": "20261127T101500Z", "sha256": "3b9f" + "0" * 60}
_PREDICTION = {
    "symbol": "EURUSD",
    "expected_return": -3.1e-05,
    "prob_up": 0.47,
    "horizon_bars": 1,
    "as_of": 1600226800,
    "model": _EXAMPLE_MODEL,
}
PREDICT_EXAMPLE: dict[str, Any] = {**_PREDICTION, "request_id": EXAMPLE_REQUEST_ID}
BATCH_EXAMPLE: dict[str, Any] = {
    "request_id": EXAMPLE_REQUEST_ID,
    "predictions": [
        _PREDICTION,
        {**_PREDICTION, "symbol": "GBPUSD", "expected_return": 4.2e-05, "prob_up": 0.53},
    ],
}

# Messages and details as the app writes them, where the code's meaning is not enough.
_EXAMPLE_MESSAGES: dict[str, str] = {
    "invalid_bars": "timestamps must be strictly increasing",
    "malformed_json": "request body is not valid JSON",
    "invalid_request": "request failed validation",
    "unauthorized": "missing or invalid credentials",
    "insufficient_scope": "the credential lacks a scope this route requires",
    "rate_limited": "rate limit exceeded",
    "payload_too_large": "request body exceeds 65536 bytes",
    "internal_error": "internal error",
    "not_ready": "the model is not loaded yet",
    "invalid_client": "client authentication failed",
}
_EXAMPLE_DETAILS: dict[str, list[Any]] = {
    "invalid_bars": [
        {"loc": ["body", "timestamps"], "msg": "must be strictly increasing", "type": "value_error"}
    ],
    "invalid_request": [
        {"loc": ["body", "close"], "msg": "Field required", "type": "missing"},
    ],
}


def _message(code: str) -> str:
    if code in _EXAMPLE_MESSAGES:
        return _EXAMPLE_MESSAGES[code]
    if code in set(FailureKind):
        rule = FAILURES[FailureKind(code)]
        if rule.message:
            return rule.message
    return ERROR_CODES[code]


def error_example(status: int, code: str) -> dict[str, Any]:
    """One named OpenAPI example: the body the app sends for ``code`` at ``status``."""
    return {
        "summary": f"{code}: {ERROR_CODES[code]}",
        "value": error_body(
            status,
            _message(code),
            code=code,
            request_id=EXAMPLE_REQUEST_ID,
            details=_EXAMPLE_DETAILS.get(code),
        ),
    }


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


def error_response_doc(status: int, codes: tuple[str, ...]) -> dict[str, Any]:
    """The ``responses`` entry for ``status``: the shape, an example per code, headers."""
    headers = {REQUEST_ID_HEADER: _header("the request id (the caller's, or a fresh one)")}
    if any(c in _RETRY_AFTER_CODES for c in codes):
        headers["Retry-After"] = _header(
            "seconds to wait before retrying (sent with "
            + ", ".join(c for c in codes if c in _RETRY_AFTER_CODES)
            + ")"
        )
    if status in (401, 403):
        headers["WWW-Authenticate"] = _header("the scheme(s) and error (RFC 6750)")
    return {
        "description": ", ".join(codes),
        "headers": headers,
        "content": {
            "application/json": {
                "schema": {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"},
                "examples": {code: error_example(status, code) for code in codes},
            }
        },
    }


def _add_error_schemas(doc: dict[str, Any]) -> None:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    model = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in model.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas.setdefault(ErrorResponse.__name__, model)
    schemas["ErrorCode"] = {
        "type": "string",
        "title": "ErrorCode",
        "enum": list(ERROR_CODES),
        "description": "Every code an error body can carry:\n\n"
        + "\n".join(f"* `{code}`: {meaning}" for code, meaning in ERROR_CODES.items()),
    }
    detail = schemas.get("ErrorDetail", {}).get("properties", {})
    if "code" in detail:
        detail["code"] = {"$ref": "#/components/schemas/ErrorCode"}
    # FastAPI's default 422 shape: this API never sends it (one error shape).
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def _success_examples(doc: dict[str, Any]) -> None:
    for path, example in (("/predict", PREDICT_EXAMPLE), ("/predict/batch", BATCH_EXAMPLE)):
        op = doc.get("paths", {}).get(path, {}).get("post")
        if op is None:
            continue
        ok = op.setdefault("responses", {}).setdefault("200", {"description": "Successful"})
        media = ok.setdefault("content", {}).setdefault("application/json", {})
        media["example"] = example
        ok["headers"] = {REQUEST_ID_HEADER: _header("the request id, also in the body")}


def add_error_docs(doc: dict[str, Any]) -> dict[str, Any]:
    """Document every operation's errors in ``doc`` (in place; returns it)."""
    _add_error_schemas(doc)
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            table = ROUTE_ERRORS.get(f"{method.upper()} {path}", _HYGIENE)
            responses = op["responses"]
            for key in [k for k in responses if k.isdigit() and int(k) >= 400]:
                if int(key) not in table:
                    del responses[key]  # e.g. FastAPI's automatic 422 where none can come
            for status, codes in table.items():
                responses[str(status)] = error_response_doc(status, codes)
            op["responses"] = dict(sorted(responses.items()))
    _success_examples(doc)
    return doc


def document_errors(app: FastAPI) -> None:
    """Wrap ``app.openapi`` so the served document carries :func:`add_error_docs`."""
    build = app.openapi
    done = False

    def openapi() -> dict[str, Any]:
        nonlocal done
        doc = build()
        if not done:
            add_error_docs(doc)
            done = True
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
