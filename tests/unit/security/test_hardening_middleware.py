"""Pure-ASGI hardening: body limits, header stripping, URL credentials, headers, CORS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Response
from starlette.types import Receive, Scope, Send

from app.api.errors import register_exception_handlers
from app.security.api_keys import ApiKeyStore
from app.security.hardening import install_security
from tests.support.security_app import (
    ALLOWED_ORIGIN,
    MakeMaterial,
    SecurityMaterial,
    asgi_client,
    build_security_test_app,
)

LIMIT = 16384  # max_body_bytes in the test material


def key_for(material: SecurityMaterial) -> str:
    store = ApiKeyStore(material.config.security.authentication.api_key_store_path)
    return store.create(owner="desk", scopes=["model:predict"])[1]


async def test_body_over_limit_by_content_length_gets_413_in_shared_shape(
    material: SecurityMaterial,
) -> None:
    key = key_for(material)
    async with asgi_client(material.config) as client:
        response = await client.post(
            "/predict",
            content=b"{" + b" " * LIMIT + b"}",
            headers={"X-API-Key": key, "content-type": "application/json"},
        )
    assert response.status_code == 413
    assert response.json() == {
        "error": {
            "code": "payload_too_large",
            "message": f"request body exceeds {LIMIT} bytes",
            "request_id": None,
            "details": None,
        }
    }


async def test_streamed_body_over_limit_gets_413_without_content_length(
    material: SecurityMaterial,
) -> None:
    key = key_for(material)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"pad": "'
        for _ in range(LIMIT // 1000 + 1):
            yield b"x" * 1000
        yield b'"}'

    async with asgi_client(material.config) as client:
        response = await client.post(
            "/predict",
            content=chunks(),
            headers={"X-API-Key": key, "content-type": "application/json"},
        )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_body_at_the_limit_is_accepted(material: SecurityMaterial) -> None:
    key = key_for(material)
    body = b'{"pad": "' + b"x" * (LIMIT - 11) + b'"}'
    assert len(body) == LIMIT
    async with asgi_client(material.config) as client:
        response = await client.post(
            "/predict", content=body, headers={"X-API-Key": key, "content-type": "application/json"}
        )
    assert response.status_code == 200


async def test_serve_control_headers_are_stripped_before_the_app(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/echo-headers",
        headers={
            "X-Request-Timeout-Seconds": "0",
            "x-request-disconnect-disabled": "?1",
            "x-kept": "1",
        },
    )
    seen = response.json()["headers"]
    assert "x-kept" in seen
    assert "x-request-timeout-seconds" not in seen
    assert "x-request-disconnect-disabled" not in seen


async def _query_left_in_scope(
    material: SecurityMaterial, method: str, url: str
) -> tuple[httpx.Response, bytes | None]:
    """The answer to one request, and the query string its scope holds afterwards (what
    the access log and anything after the app would read)."""
    app = build_security_test_app(material.config)
    seen: dict[str, Any] = {}

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        await app(scope, receive, send)
        seen["query"] = scope.get("query_string")

    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="https://t") as client:
        response = await client.request(method, url)
    return response, seen["query"]


async def test_credential_query_is_scrubbed_from_the_scope_when_refused(
    material: SecurityMaterial,
) -> None:
    response, query = await _query_left_in_scope(
        material, "GET", "/healthz?symbol=X&api_key=cnl_secret_value"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "credentials_in_url"
    assert query == b"symbol=X&api_key=REDACTED"


async def test_client_secret_in_the_token_url_is_refused_and_scrubbed(
    material: SecurityMaterial,
) -> None:
    # RFC 6749 2.3.1: client credentials MUST NOT be in the request URI.
    query = "grant_type=client_credentials&client_id=cli_0123456789abcdef&client_secret=s3cr3t"
    response, left = await _query_left_in_scope(material, "POST", f"/token?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "credentials_in_url"
    assert left is not None
    assert b"s3cr3t" not in left


async def test_api_responses_carry_security_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert (
        response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    )
    assert "strict-transport-security" not in response.headers  # TLS is off here


async def test_hsts_is_sent_when_tls_enabled(make_material: MakeMaterial) -> None:
    material = make_material({"network_security": {"tls": {"enabled": True}}})
    async with asgi_client(material.config) as client:
        response = await client.post("/predict", json={})
    assert response.status_code == 401
    assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


async def test_docs_page_gets_a_csp_that_lets_swagger_load(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "https://cdn.jsdelivr.net" in csp
    assert "frame-ancestors 'none'" in csp
    assert "cache-control" not in response.headers


async def test_app_set_headers_are_not_overridden(material: SecurityMaterial) -> None:
    app = FastAPI()
    register_exception_handlers(app)
    install_security(app, material.config)

    @app.get("/cached")
    async def cached() -> Response:
        return Response("x", headers={"Cache-Control": "max-age=60"})

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://t") as client:
        response = await client.get("/cached")
    assert response.headers.get_list("cache-control") == ["max-age=60"]


async def test_cors_preflight_is_answered_for_allowed_origin(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/predict",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert response.headers["access-control-allow-methods"] == "GET, POST"
    assert "x-api-key" in response.headers["access-control-allow-headers"].lower()
    assert response.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in response.headers


async def test_cors_preflight_gets_no_allow_origin_for_other_origin(
    client: httpx.AsyncClient,
) -> None:
    response = await client.options(
        "/predict",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_cors_exposes_request_id_and_retry_after_on_errors(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/predict", json={}, headers={"Origin": ALLOWED_ORIGIN})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert exposed == {"x-request-id", "retry-after"}


async def test_cors_headers_absent_when_cors_disabled(make_material: MakeMaterial) -> None:
    material = make_material({"network_security": {"cors": {"enabled": False}}})
    async with asgi_client(material.config) as client:
        response = await client.get("/healthz", headers={"Origin": ALLOWED_ORIGIN})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


async def test_unhandled_error_500_carries_security_headers(material: SecurityMaterial) -> None:
    # Starlette answers an unhandled exception from ServerErrorMiddleware, outside every
    # add_middleware layer: the protective headers must still be on that 500.
    app = build_security_test_app(material.config)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="https://t") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
