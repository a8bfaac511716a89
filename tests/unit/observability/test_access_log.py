"""The access middleware: one line per request, and the same id in the line and header."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from app.api.errors import register_exception_handlers
from app.config import Logging
from app.observability.access_log import AccessLogMiddleware, install_access_log
from tests.unit.observability.log_capture import LogLines

GOOD_CLIENT_ID = "client-req.0001_abc"


def build_app(*, enabled: bool = True, via_add_middleware: bool = False) -> FastAPI:
    app = FastAPI()
    register_exception_handlers(app)

    @app.get("/items/{item_id}")
    async def item(item_id: int, request: Request) -> dict[str, Any]:
        return {"id": item_id, "request_id": request.state.request_id}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, str]:
        request.state.principal = SimpleNamespace(
            subject="svc-trader", key_id="k_01", scopes={"model:predict", "a:b"},
            auth_method="api_key",
        )  # fmt: skip
        request.state.model_version = "1.2.0"
        request.state.batch_size = 7
        return {"ok": "yes"}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    if via_add_middleware:
        app.add_middleware(AccessLogMiddleware, enabled=enabled)
    else:
        install_access_log(app, Logging(enable_access_logs=enabled))
    return app


async def call(app: FastAPI, method: str, url: str, **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, url, **kw)


def access_lines(log_lines: LogLines) -> list[dict[str, Any]]:
    return [line for line in log_lines() if line["event"] == "access"]


@pytest.mark.parametrize(
    ("method", "url", "status", "route"),
    [
        ("GET", "/items/5", 200, "/items/{item_id}"),
        ("GET", "/nowhere/at/all", 404, None),
        ("GET", "/items/not-an-int", 422, "/items/{item_id}"),
        ("GET", "/boom", 500, "/boom"),
    ],
)
async def test_one_access_line_per_request_with_the_header_request_id(
    log_lines: LogLines, method: str, url: str, status: int, route: str | None
) -> None:
    response = await call(build_app(), method, url)

    assert response.status_code == status
    rid = response.headers["x-request-id"]
    [line] = access_lines(log_lines)
    assert line["request_id"] == rid
    assert line["status"] == status
    assert line["route"] == route
    assert line["method"] == method
    assert line["latency_ms"] >= 0
    if status >= 400:
        assert response.json()["error"]["request_id"] == rid


async def test_unhandled_error_still_gets_id_when_added_with_add_middleware(
    log_lines: LogLines,
) -> None:
    response = await call(build_app(via_add_middleware=True), "GET", "/boom")
    assert response.status_code == 500
    rid = response.headers["x-request-id"]
    assert response.json()["error"]["request_id"] == rid
    [line] = access_lines(log_lines)
    assert (line["request_id"], line["status"]) == (rid, 500)


async def test_valid_client_request_id_is_kept(log_lines: LogLines) -> None:
    response = await call(build_app(), "GET", "/items/1", headers={"X-Request-ID": GOOD_CLIENT_ID})
    assert response.headers["x-request-id"] == GOOD_CLIENT_ID
    assert response.json()["request_id"] == GOOD_CLIENT_ID
    assert access_lines(log_lines)[0]["request_id"] == GOOD_CLIENT_ID


@pytest.mark.parametrize(
    "good",
    [
        "a",
        "short",
        "x" * 128,
        "trace:0af7651916cd43dd.span:00f067aa0ba902b7",
        "A-Z_a-z.0-9:all",
        "550e8400-e29b-41d4-a716-446655440000",
    ],
)
async def test_client_request_id_of_up_to_128_safe_chars_is_kept(
    log_lines: LogLines, good: str
) -> None:
    response = await call(build_app(), "GET", "/nowhere", headers={"X-Request-ID": good})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == good
    assert response.json()["error"]["request_id"] == good
    assert access_lines(log_lines)[0]["request_id"] == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "has spaces in it",
        "x" * 129,
        "x" * 8192,
        "semi;colon-12345",
        "<script>alert(1)</script>",
        '"><img src=x onerror=alert(1)>',
        "id/with/slashes",
        "tab\there",
        "caf\u00e9-0001".encode(),  # non-ASCII bytes
    ],
)
async def test_invalid_client_request_id_is_replaced(log_lines: LogLines, bad: str | bytes) -> None:
    response = await call(build_app(), "GET", "/items/1", headers={"X-Request-ID": bad})
    rid = response.headers["x-request-id"]
    assert rid != bad
    assert len(rid) == 32
    assert int(rid, 16) >= 0  # uuid4 hex
    assert response.json()["request_id"] == rid
    assert access_lines(log_lines)[0]["request_id"] == rid
    text = bad.decode("latin-1") if isinstance(bad, bytes) else bad
    if text:
        assert text not in str(log_lines())


async def test_invalid_client_request_id_is_not_echoed_in_an_error_body(
    log_lines: LogLines,
) -> None:
    markup = "<b>" + "y" * 8000 + "</b>"
    response = await call(build_app(), "GET", "/nowhere", headers={"X-Request-ID": markup})
    rid = response.headers["x-request-id"]
    assert response.status_code == 404
    assert response.json()["error"]["request_id"] == rid
    assert len(rid) == 32
    assert "<b>" not in response.text
    assert "<b>" not in str(log_lines())


async def test_access_line_carries_caller_model_and_batch(log_lines: LogLines) -> None:
    await call(build_app(), "POST", "/predict")
    [line] = access_lines(log_lines)
    assert line["principal"] == "svc-trader"
    assert line["key_id"] == "k_01"
    assert line["auth_method"] == "api_key"
    assert line["scopes"] == ["a:b", "model:predict"]
    assert line["model_version"] == "1.2.0"
    assert line["batch_size"] == 7


async def test_access_line_without_auth_has_null_principal(log_lines: LogLines) -> None:
    await call(build_app(), "GET", "/items/1")
    [line] = access_lines(log_lines)
    assert line["principal"] is None
    assert line["scopes"] is None
    assert line["model_version"] is None


async def test_access_line_never_holds_headers_query_or_body(log_lines: LogLines) -> None:
    await call(
        build_app(),
        "POST",
        "/predict?token=querysecret",
        headers={"X-API-Key": "headersecret", "Authorization": "Bearer bearersecret"},
        content=b'{"bars": "bodysecret"}',
    )
    raw = str(access_lines(log_lines))
    for secret in ("querysecret", "headersecret", "bearersecret", "bodysecret"):
        assert secret not in raw


async def test_disabled_access_logs_still_assign_request_ids(log_lines: LogLines) -> None:
    response = await call(build_app(enabled=False), "GET", "/items/1")
    assert response.headers["x-request-id"]
    assert access_lines(log_lines) == []


async def test_other_log_lines_in_the_request_carry_its_id(log_lines: LogLines) -> None:
    response = await call(build_app(), "GET", "/boom")
    rid = response.headers["x-request-id"]
    errors = [line for line in log_lines() if line["event"] == "unhandled_error"]
    assert errors
    assert all(line["request_id"] == rid for line in errors)


def test_install_after_start_is_refused() -> None:
    app = FastAPI()
    app.middleware_stack = app.build_middleware_stack()
    with pytest.raises(RuntimeError, match="before the app starts"):
        install_access_log(app, Logging())
