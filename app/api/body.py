"""Request bodies and client-hint headers read straight from the ASGI request.

FastAPI's own body handling decodes JSON with the standard library, then validates the
resulting Python objects field by field, then the route's header parameters one by one.
On ``/predict`` (a 4 KB body of 384 numbers, every request) that was the largest single
cost after the framework itself, so the prediction routes read the raw bytes and let
pydantic-core parse and validate them in one pass (``model_validate_json``: ~35 us
against ~150 us). Errors keep FastAPI's shape and status codes: malformed JSON -> 400
``malformed_json``, anything else -> 422 with ``loc`` starting at ``body`` or ``header``
(both go through the one ``RequestValidationError`` handler in :mod:`app.api.errors`).

:func:`document_raw_bodies` puts the models back into the OpenAPI document, which FastAPI
cannot see once a route takes the raw request.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from app.api.errors import ApiError

M = TypeVar("M", bound=BaseModel)

PRIORITY_HEADER = "X-Priority"
DEADLINE_HEADER = "X-Request-Deadline-Ms"
PRIORITY_RANGE = (-100, 100)
# Unix epoch milliseconds in 64 bits, as bar timestamps are: a JSON integer has no size
# limit, and one past any float would overflow turning it into seconds (a 500).
MAX_DEADLINE_MS = 2**63 - 1


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # FastAPI's rule too: no content type, try JSON
    media = content_type.split(";", 1)[0].strip().lower()
    maintype, _, subtype = media.partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


def parse_model(raw: bytes, content_type: str | None, model: type[M]) -> M:
    """``raw`` as ``model``, or the same errors FastAPI would raise for that body."""
    if not raw:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    if not is_json(content_type):
        raise RequestValidationError(
            [
                {
                    "type": "model_attributes_type",
                    "loc": ("body",),
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": None,
                }
            ]
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


async def read_model(request: Request, model: type[M]) -> M:
    """The body of ``request`` as ``model`` (:func:`parse_model`).

    A client that leaves before its body is whole gets the answer to the part that came,
    as on the prediction fast path: Starlette's ``ClientDisconnect`` would reach the
    handler of unexpected errors and count as a 500 against the error budget."""
    chunks: list[bytes] = []
    with contextlib.suppress(ClientDisconnect):
        async for chunk in request.stream():
            chunks.append(chunk)
    return parse_model(b"".join(chunks), request.headers.get("content-type"), model)


def int_header(raw: str | None, name: str, lo: int | None, hi: int | None) -> int | None:
    """An integer header's value (``None`` if absent), or a 422 naming the header."""
    if raw is None:
        return None
    loc = ("header", name)
    try:
        value = int(raw.strip())
    except ValueError:
        raise RequestValidationError(
            [{"type": "int_parsing", "loc": loc, "msg": "Input should be a valid integer"}]
        ) from None
    if lo is not None and value < lo:
        raise RequestValidationError(
            [{"type": "greater_than_equal", "loc": loc, "msg": f"Input should be >= {lo}"}]
        )
    if hi is not None and value > hi:
        raise RequestValidationError(
            [{"type": "less_than_equal", "loc": loc, "msg": f"Input should be <= {hi}"}]
        )
    return value


def priority_hint(raw: str | None) -> int | None:
    """``X-Priority``: lowers the caller's priority (the route never lets it raise it)."""
    return int_header(raw, PRIORITY_HEADER, *PRIORITY_RANGE)


def deadline_hint(raw: str | None, clock: Callable[[], float] = time.monotonic) -> float | None:
    """``X-Request-Deadline-Ms`` (Unix epoch ms) on ``clock``; 503 if already past."""
    deadline_ms = int_header(raw, DEADLINE_HEADER, 0, MAX_DEADLINE_MS)
    if deadline_ms is None:
        return None
    remaining = deadline_ms / 1000.0 - time.time()
    if remaining <= 0:
        raise ApiError(503, "the request deadline has already passed", code="deadline_exceeded")
    return clock() + remaining


HINT_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": PRIORITY_HEADER,
        "in": "header",
        "required": False,
        "description": "Lower this request's priority below the key's own (never raises it)",
        "schema": {"type": "integer", "minimum": PRIORITY_RANGE[0], "maximum": PRIORITY_RANGE[1]},
    },
    {
        "name": DEADLINE_HEADER,
        "in": "header",
        "required": False,
        "description": "Unix epoch milliseconds after which the answer is useless; a request "
        "still queued then is dropped before it reaches the model",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_DEADLINE_MS},
    },
]


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads ``model`` with :func:`read_model`."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        },
        "parameters": HINT_PARAMETERS,
    }


def document_raw_bodies(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Add ``models`` (and the models they use) to the app's OpenAPI components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = build()
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                schemas.setdefault(name, sub)
            schemas.setdefault(model.__name__, schema)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
