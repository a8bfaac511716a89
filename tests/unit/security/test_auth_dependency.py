"""The auth dependency: credentials -> principal -> scopes -> rate limit, and its errors."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from app.security.api_keys import ApiKeyStore, generate_api_key
from app.security.context import SecurityContext
from app.security.jwt_tokens import mint_token
from tests.support.live import columnar_bars
from tests.support.security_app import (
    AUDIENCE,
    ISSUER,
    MakeMaterial,
    SecurityMaterial,
    asgi_client,
)

BODY = columnar_bars()


def new_key(material: SecurityMaterial, scopes: list[str], **kw: Any) -> str:
    store = ApiKeyStore(material.config.security.authentication.api_key_store_path)
    return store.create(owner=kw.pop("owner", "desk-a"), scopes=scopes, **kw)[1]


def token(material: SecurityMaterial, scopes: list[str], subject: str = "svc") -> str:
    return mint_token(material.jwt_secret, subject, scopes, 300, ISSUER, AUDIENCE)


async def test_predict_returns_principal_when_api_key_valid(material: SecurityMaterial) -> None:
    key = new_key(material, ["model:predict"], priority=7)
    async with asgi_client(material.config) as client:
        response = await client.post("/predict", json=BODY, headers={"X-API-Key": key})
    assert response.status_code == 200
    principal = response.json()["principal"]
    assert principal == {
        "subject": "desk-a",
        "method": "api_key",
        "key_id": key[4:16],
        "scopes": ["model:predict"],
        "priority": 7,
    }


async def test_stats_returns_principal_when_bearer_jwt_valid(material: SecurityMaterial) -> None:
    async with asgi_client(material.config) as client:
        response = await client.get(
            "/stats", headers={"Authorization": f"Bearer {token(material, ['model:stats'])}"}
        )
    assert response.status_code == 200
    assert response.json()["principal"]["method"] == "jwt"
    assert response.json()["principal"]["subject"] == "svc"


async def test_missing_credentials_get_401_with_both_challenges(
    material: SecurityMaterial,
) -> None:
    async with asgi_client(material.config) as client:
        response = await client.post("/predict", json=BODY)
    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": "unauthorized",
        "message": "missing or invalid credentials",
        "request_id": None,
        "details": None,
    }
    assert response.headers["www-authenticate"] == (
        'Bearer realm="cnnlstm", ApiKey realm="cnnlstm", header="X-API-Key"'
    )


async def test_bad_key_and_bad_token_read_the_same_as_missing(
    material: SecurityMaterial,
) -> None:
    revoked = new_key(material, ["model:predict"], disabled=True)
    expired = new_key(material, ["model:predict"], expires_at=1.0)
    async with asgi_client(material.config) as client:
        messages = set()
        for headers in (
            {"X-API-Key": generate_api_key()[1]},
            {"X-API-Key": revoked},
            {"X-API-Key": expired},
            {"X-API-Key": "garbage"},
            {"Authorization": "Bearer not.a.jwt"},
            {"Authorization": "Basic dXNlcjpwYXNz"},
        ):
            response = await client.post("/predict", json=BODY, headers=headers)
            assert response.status_code == 401
            messages.add((response.json()["error"]["code"], response.json()["error"]["message"]))
    assert messages == {("unauthorized", "missing or invalid credentials")}


async def test_invalid_bearer_gets_invalid_token_challenge(material: SecurityMaterial) -> None:
    async with asgi_client(material.config) as client:
        response = await client.get("/stats", headers={"Authorization": "Bearer x.y.z"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith(
        'Bearer realm="cnnlstm", error="invalid_token"'
    )


async def test_missing_scope_gets_403_insufficient_scope(material: SecurityMaterial) -> None:
    key = new_key(material, ["model:stats"])
    async with asgi_client(material.config) as client:
        by_key = await client.post("/predict", json=BODY, headers={"X-API-Key": key})
        by_jwt = await client.get(
            "/stats", headers={"Authorization": f"Bearer {token(material, ['model:predict'])}"}
        )
    for response, scope in ((by_key, "model:predict"), (by_jwt, "model:stats")):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "insufficient_scope"
        assert response.headers["www-authenticate"] == (
            f'Bearer realm="cnnlstm", error="insufficient_scope", scope="{scope}"'
        )


async def test_bearer_refused_on_predict_when_route_takes_api_keys_only(
    make_material: MakeMaterial,
) -> None:
    material = make_material({"security": {"authentication": {"predict_methods": ["api_key"]}}})
    async with asgi_client(material.config) as client:
        response = await client.post(
            "/predict",
            json=BODY,
            headers={"Authorization": f"Bearer {token(material, ['model:predict'])}"},
        )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'ApiKey realm="cnnlstm", header="X-API-Key"'


async def test_custom_api_key_header_name_is_honoured(make_material: MakeMaterial) -> None:
    material = make_material({"security": {"authentication": {"api_key_header": "X-Desk-Key"}}})
    key = new_key(material, ["model:predict"])
    async with asgi_client(material.config) as client:
        ok = await client.post("/predict", json=BODY, headers={"X-Desk-Key": key})
        default_name = await client.post("/predict", json=BODY, headers={"X-API-Key": key})
    assert ok.status_code == 200
    assert default_name.status_code == 401


@pytest.mark.parametrize("param", ["api_key", "X-API-KEY", "x_api_key", "Token", "access_token"])
async def test_key_in_query_parameter_is_refused_with_400(
    material: SecurityMaterial, param: str
) -> None:
    key = new_key(material, ["model:predict"])
    async with asgi_client(material.config) as client:
        response = await client.post(
            "/predict", params={param: key}, json=BODY, headers={"X-API-Key": key}
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "credentials_in_url"
    assert key not in response.text


async def test_rate_limited_key_gets_429_with_integer_retry_after(
    material: SecurityMaterial,
) -> None:
    key = new_key(material, ["model:predict"], rate_limit_per_s=0.25, burst=2)
    async with asgi_client(material.config) as client:
        statuses = [
            (await client.post("/predict", json=BODY, headers={"X-API-Key": key})).status_code
            for _ in range(2)
        ]
        limited = await client.post("/predict", json=BODY, headers={"X-API-Key": key})
    assert statuses == [200, 200]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert limited.headers["retry-after"] == "4"


async def test_jwt_principals_get_default_rate_limit_when_configured(
    make_material: MakeMaterial,
) -> None:
    material = make_material(
        {"network_security": {"limits": {"default_rate_limit_per_s": 1, "default_burst": 1}}}
    )
    headers = {"Authorization": f"Bearer {token(material, ['model:stats'])}"}
    async with asgi_client(material.config) as client:
        first = await client.get("/stats", headers=headers)
        second = await client.get("/stats", headers=headers)
    assert (first.status_code, second.status_code) == (200, 429)
    assert second.headers["retry-after"] == "1"


async def test_jwt_principals_are_not_limited_when_no_default(material: SecurityMaterial) -> None:
    headers = {"Authorization": f"Bearer {token(material, ['model:stats'])}"}
    async with asgi_client(material.config) as client:
        statuses = {(await client.get("/stats", headers=headers)).status_code for _ in range(50)}
    assert statuses == {200}


async def test_disabled_authentication_serves_anonymous_with_all_scopes(
    make_material: MakeMaterial, caplog: pytest.LogCaptureFixture
) -> None:
    material = make_material({"security": {"authentication": {"enabled": False}}})
    async with asgi_client(material.config) as client:
        predict = await client.post("/predict", json=BODY)
        stats = await client.get("/stats")
    assert predict.status_code == stats.status_code == 200
    assert predict.json()["principal"]["method"] == "anonymous"
    assert predict.json()["principal"]["scopes"] == ["model:predict", "model:stats"]
    logger = logging.getLogger("test.security.startup")
    with caplog.at_level(logging.WARNING, logger="test.security.startup"):
        SecurityContext.from_config(material.config).warn_if_disabled(logger)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "authentication is disabled" in caplog.records[0].getMessage()


def test_warn_if_disabled_is_silent_when_security_is_on(material: SecurityMaterial) -> None:
    messages: list[str] = []

    class Recorder:
        def warning(self, msg: str, *args: object, **kwargs: object) -> None:
            messages.append(msg)

    SecurityContext.from_config(material.config).warn_if_disabled(Recorder())
    assert messages == []


async def test_disabled_authorization_skips_scope_checks(make_material: MakeMaterial) -> None:
    material = make_material({"security": {"authorization": {"enabled": False}}})
    key = new_key(material, ["model:stats"])
    async with asgi_client(material.config) as client:
        response = await client.post("/predict", json=BODY, headers={"X-API-Key": key})
        anonymous = await client.post("/predict", json=BODY)
    assert response.status_code == 200
    assert anonymous.status_code == 401


async def test_metrics_needs_stats_bearer_when_metrics_auth_is_bearer(
    material: SecurityMaterial,
) -> None:
    key = new_key(material, ["model:stats"])
    async with asgi_client(material.config) as client:
        anonymous = await client.get("/metrics")
        with_key = await client.get("/metrics", headers={"X-API-Key": key})
        with_predict_jwt = await client.get(
            "/metrics", headers={"Authorization": f"Bearer {token(material, ['model:predict'])}"}
        )
        with_stats_jwt = await client.get(
            "/metrics", headers={"Authorization": f"Bearer {token(material, ['model:stats'])}"}
        )
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="cnnlstm"'
    assert with_key.status_code == 401
    assert with_predict_jwt.status_code == 403
    assert with_stats_jwt.status_code == 200


async def test_metrics_is_open_when_metrics_auth_is_open(make_material: MakeMaterial) -> None:
    material = make_material({"security": {"authentication": {"metrics_auth": "open"}}})
    async with asgi_client(material.config) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200


async def test_openapi_documents_both_schemes_with_route_scopes(
    material: SecurityMaterial,
) -> None:
    async with asgi_client(material.config) as client:
        doc = (await client.get("/openapi.json")).json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["ApiKey"]["description"],
    }
    assert schemes["OAuth2ClientCredentials"]["flows"]["clientCredentials"]["tokenUrl"] == "token"
    assert {"OAuth2ClientCredentials": ["model:predict"]} in doc["paths"]["/predict"]["post"][
        "security"
    ]
    assert {"OAuth2ClientCredentials": ["model:stats"]} in doc["paths"]["/stats"]["get"]["security"]
