"""The OpenAPI document's errors and examples, and /docs and /redoc served without a CDN."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from app.api.app import create_app
from app.api.docs import ASSETS
from app.api.errors import ERROR_CODES
from app.api.openapi import ROUTE_ERRORS
from app.gateway.schemas import BatchPredictResponse, ErrorResponse, PredictResponse
from model.common.refs import ModelRef
from model.export import make_random_artifact
from tests.api.test_gateway_api import _build
from tests.fakes import FakePredictor
from tests.support.live import columnar_bars


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelRef]:
    root = tmp_path_factory.mktemp("openapi")
    return root, make_random_artifact(root / "models", version="1.0.0", seed=1)


@pytest.fixture(scope="module")
def built(root: tuple[Path, ModelRef]) -> Iterator[tuple[TestClient, str]]:
    _state, app, key = _build(root[0], FakePredictor(ref=root[1]))
    with TestClient(app) as client:
        yield client, key


@pytest.fixture(scope="module")
def doc(built: tuple[TestClient, str]) -> dict[str, Any]:
    client, _ = built
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield f"{method.upper()} {path}", op


def test_every_operation_has_an_error_table_and_every_table_an_operation(
    doc: dict[str, Any],
) -> None:
    assert {name for name, _ in _operations(doc)} == set(ROUTE_ERRORS)


def test_every_error_response_is_the_one_shape_with_an_example_per_code(
    doc: dict[str, Any],
) -> None:
    enum = set(doc["components"]["schemas"]["ErrorCode"]["enum"])
    for name, op in _operations(doc):
        errors = {int(s): r for s, r in op["responses"].items() if int(s) >= 400}
        assert set(errors) == set(ROUTE_ERRORS[name]), name
        for status, response in errors.items():
            media = response["content"]["application/json"]
            assert media["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}, name
            examples = media["examples"]
            assert set(examples) == set(ROUTE_ERRORS[name][status]), (name, status)
            for code, example in examples.items():
                body = ErrorResponse.model_validate(example["value"])
                assert body.error.code == code
                assert code in enum
            assert "X-Request-ID" in response["headers"]
            if status == 429:
                assert "Retry-After" in response["headers"], name
            if status == 401:
                assert "WWW-Authenticate" in response["headers"], name


def test_the_error_codes_are_one_enumeration(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert schemas["ErrorCode"]["enum"] == list(ERROR_CODES)
    assert schemas["ErrorDetail"]["properties"]["code"] == {
        "$ref": "#/components/schemas/ErrorCode"
    }
    # FastAPI's own validation-error shape is never sent, so it is not documented.
    assert "HTTPValidationError" not in schemas
    assert "HTTPValidationError" not in str(doc["paths"])


def test_prediction_successes_have_examples_in_the_response_shape(doc: dict[str, Any]) -> None:
    for path, model in (("/predict", PredictResponse), ("/predict/batch", BatchPredictResponse)):
        ok = doc["paths"][path]["post"]["responses"]["200"]
        model.model_validate(ok["content"]["application/json"]["example"])


def _documented(doc: dict[str, Any], name: str, status: int) -> set[str]:
    op = doc["paths"][name.split(" ", 1)[1]][name.split(" ", 1)[0].lower()]
    examples = op["responses"].get(str(status), {}).get("content", {})
    return set(examples.get("application/json", {}).get("examples", {}))


def test_the_errors_the_app_sends_are_the_documented_ones(
    built: tuple[TestClient, str], doc: dict[str, Any]
) -> None:
    client, key = built
    auth = {"X-API-Key": key}
    bad_bars = {**columnar_bars(), "close": [1.0]}
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST /predict", "/predict", {"json": columnar_bars()}, "unauthorized"),
        ("POST /predict", "/predict", {"json": {}, "headers": {"X-API-Key": "x"}}, "unauthorized"),
        ("POST /predict", "/predict", {"json": bad_bars, "headers": auth}, "invalid_bars"),
        ("POST /predict", "/predict", {"content": b"{", "headers": auth}, "malformed_json"),
        ("POST /predict", "/predict?api_key=cnl_x", {"json": {}}, "credentials_in_url"),
        (
            "POST /predict/batch",
            "/predict/batch",
            {"json": {"items": []}, "headers": auth},
            "invalid_request",
        ),
        ("POST /token", "/token", {"data": {"grant_type": "password"}}, "unsupported_grant_type"),
        ("POST /token", "/token", {"data": {"grant_type": "client_credentials"}}, "invalid_client"),
        ("GET /stats", "/stats", {}, "unauthorized"),
        ("GET /stats", "/stats", {"headers": auth}, "insufficient_scope"),
    ]
    for name, url, kwargs, expected in cases:
        response = client.request(name.split(" ", 1)[0], url, **kwargs)
        code = response.json()["error"]["code"]
        assert code == expected, (name, url, response.text)
        assert code in _documented(doc, name, response.status_code), (name, response.status_code)


_SRC = re.compile(r"""(?:src|href|spec-url|data-openapi-url)="([^"]*)\"""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_same_origin_assets(built: tuple[TestClient, str], page: str) -> None:
    client, _ = built
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    refs = _SRC.findall(response.text)
    assert refs, response.text
    for ref in refs:
        assert ref.startswith("/"), ref
        assert not ref.startswith("//"), ref
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        assert asset.headers["x-content-type-options"] == "nosniff"
    assert "http" not in response.text.lower().replace("http-equiv", "")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "http" not in csp
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY"


def test_every_packaged_asset_is_served_with_its_type(built: tuple[TestClient, str]) -> None:
    client, _ = built
    for name, media_type in ASSETS.items():
        response = client.get(f"/docs/assets/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == media_type
        assert len(response.content) > 1000
        assert response.headers["cache-control"] == "public, max-age=86400"
    init = client.get("/docs/assets/swagger-init.js")
    assert init.status_code == 200
    assert "SwaggerUIBundle(" in init.text


def test_only_listed_assets_are_served(built: tuple[TestClient, str]) -> None:
    client, _ = built
    for path in ("/docs/assets/core.py", "/docs/assets/..%2Fcore.py", "/docs/assets/"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


def test_docs_off_means_404_for_docs_redoc_and_the_schema(root: tuple[Path, ModelRef]) -> None:
    state, _app, _key = _build(root[0], FakePredictor(ref=root[1]))
    state.config.serving.docs_enabled = False
    app = create_app(state.config, state, metrics_registry=CollectorRegistry())
    client = TestClient(app)  # no lifespan needed: nothing here reaches the predictor
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui-bundle.js"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert client.get("/healthz").status_code == 200
