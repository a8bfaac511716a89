"""The strict edge: one credential header of each kind, typed JWT claims, one URL refusal."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from structlog.testing import capture_logs

from app.security.api_keys import ApiKeyStore
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


def new_key(material: SecurityMaterial, scopes: list[str]) -> str:
    store = ApiKeyStore(material.config.security.authentication.api_key_store_path)
    return store.create(owner="desk-a", scopes=scopes)[1]


def bearer(material: SecurityMaterial, scopes: list[str]) -> str:
    return "Bearer " + mint_token(material.jwt_secret, "svc", scopes, 300, ISSUER, AUDIENCE)


def duplicate_error(name: str, api_key_header: str = "X-API-Key") -> dict[str, Any]:
    return {
        "error": {
            "code": "duplicate_credentials",
            "message": (
                f"{name} was sent more than once; send exactly one Authorization "
                f"or {api_key_header} header"
            ),
            "request_id": None,
            "details": None,
        }
    }


# --- repeated credential headers --------------------------------------------------------


@pytest.mark.parametrize("valid_first", [True, False])
async def test_repeated_api_key_header_gets_400_never_first_wins(
    material: SecurityMaterial, valid_first: bool
) -> None:
    good = new_key(material, ["model:predict"])
    pair = [("X-API-Key", good), ("x-api-key", "garbage")]
    headers = pair if valid_first else pair[::-1]
    async with asgi_client(material.config) as client:
        response = await client.post("/predict", json=BODY, headers=headers)
    assert response.status_code == 400
    assert response.json() == duplicate_error("X-API-Key")
    assert good not in response.text


async def test_same_api_key_twice_is_still_refused(material: SecurityMaterial) -> None:
    good = new_key(material, ["model:predict"])
    async with asgi_client(material.config) as client:
        response = await client.post(
            "/predict", json=BODY, headers=[("X-API-Key", good), ("X-API-Key", good)]
        )
    assert response.status_code == 400
    assert response.json() == duplicate_error("X-API-Key")


@pytest.mark.parametrize("valid_first", [True, False])
async def test_repeated_authorization_header_gets_400_never_first_wins(
    material: SecurityMaterial, valid_first: bool
) -> None:
    good = bearer(material, ["model:stats"])
    pair = [("Authorization", good), ("Authorization", "Bearer not.a.jwt")]
    headers = pair if valid_first else pair[::-1]
    async with asgi_client(material.config) as client:
        stats = await client.get("/stats", headers=headers)
        metrics = await client.get("/metrics", headers=headers)
        token = await client.post(
            "/token",
            data={"grant_type": "client_credentials"},
            headers=[("Authorization", "Basic YTpi"), ("Authorization", "Basic Yzpk")],
        )
    for response in (stats, metrics, token):
        assert response.status_code == 400
        assert response.json() == duplicate_error("Authorization")
        assert "www-authenticate" not in response.headers
        assert good.split(" ")[1] not in response.text


async def test_repeated_header_is_refused_on_routes_without_auth_too(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/healthz", headers=[("Authorization", "Bearer a"), ("Authorization", "Bearer b")]
    )
    assert response.status_code == 400
    assert response.json() == duplicate_error("Authorization")
    assert response.headers["x-content-type-options"] == "nosniff"  # still hardened


async def test_custom_api_key_header_is_the_one_checked_for_repeats(
    make_material: MakeMaterial,
) -> None:
    material = make_material({"security": {"authentication": {"api_key_header": "X-Desk-Key"}}})
    good = new_key(material, ["model:predict"])
    async with asgi_client(material.config) as client:
        repeated = await client.post(
            "/predict", json=BODY, headers=[("X-Desk-Key", good), ("X-Desk-Key", good)]
        )
        other_name_twice = await client.post(
            "/predict",
            json=BODY,
            headers=[("X-Desk-Key", good), ("X-API-Key", "a"), ("X-API-Key", "b")],
        )
    assert repeated.status_code == 400
    assert repeated.json() == duplicate_error("X-Desk-Key", "X-Desk-Key")
    assert other_name_twice.status_code == 200  # X-API-Key is no credential header here


async def test_one_key_and_one_bearer_together_are_not_duplicates(
    material: SecurityMaterial,
) -> None:
    good = new_key(material, ["model:predict"])
    async with asgi_client(material.config) as client:
        response = await client.post(
            "/predict",
            json=BODY,
            headers={"X-API-Key": good, "Authorization": bearer(material, ["model:stats"])},
        )
    assert response.status_code == 200
    assert response.json()["principal"]["method"] == "api_key"


async def test_duplicate_refusal_reaches_no_auth_code(material: SecurityMaterial) -> None:
    with capture_logs() as events:
        async with asgi_client(material.config) as client:
            response = await client.get(
                "/stats", headers=[("Authorization", "Bearer a"), ("Authorization", "Bearer b")]
            )
    assert response.status_code == 400
    assert [e for e in events if e["event"].startswith("auth_")] == []


# --- credentials in the URL: refused once, by the middleware ----------------------------


async def test_credentials_in_url_get_one_message_from_the_middleware(
    material: SecurityMaterial,
) -> None:
    key = new_key(material, ["model:predict"])
    with capture_logs() as events:
        async with asgi_client(material.config) as client:
            predict = await client.post(
                "/predict", params={"api_key": key}, json=BODY, headers={"X-API-Key": key}
            )
            health = await client.get("/healthz", params={"token": "t0k"})
    expected = {
        "error": {
            "code": "credentials_in_url",
            "message": (
                "credentials must not be sent in the URL; use the X-API-Key or Authorization header"
            ),
            "request_id": None,
            "details": None,
        }
    }
    assert (predict.status_code, predict.json()) == (400, expected)
    assert (health.status_code, health.json()) == (400, expected)
    assert [e for e in events if e["event"].startswith("auth_")] == []


# --- JWT claim types ----------------------------------------------------------------------


def raw_token(material: SecurityMaterial, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "svc",
        "scope": "model:stats",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "iss": ISSUER,
        "aud": AUDIENCE,
    }
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return pyjwt.encode(claims, material.jwt_secret.encode(), algorithm="HS256")


@pytest.mark.parametrize(
    "overrides",
    [
        # Taken when the test runs, not when it is collected (see test_jwt_verifier).
        {"exp": lambda: str(int(time.time()) + 300)},
        {"nbf": lambda: str(int(time.time()))},
        {"iat": True},
    ],
)
async def test_jwt_with_a_non_numeric_time_claim_gets_the_plain_401(
    material: SecurityMaterial, overrides: dict[str, Any]
) -> None:
    token = raw_token(material, **{k: v() if callable(v) else v for k, v in overrides.items()})
    with capture_logs() as events:
        async with asgi_client(material.config) as client:
            response = await client.get("/stats", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": "unauthorized",
            "message": "missing or invalid credentials",
            "request_id": None,
            "details": None,
        }
    }
    assert response.headers["www-authenticate"].startswith(
        'Bearer realm="cnnlstm", error="invalid_token"'
    )
    [rejected] = [e for e in events if e["event"] == "auth_rejected"]
    assert (rejected["reason"], rejected["method"]) == ("bad_claim_type", "jwt")


async def test_jwt_with_a_scope_list_gets_the_plain_401(material: SecurityMaterial) -> None:
    token = raw_token(material, scope=["model:stats"])
    async with asgi_client(material.config) as client:
        response = await client.get("/stats", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_jwt_scp_claim_grants_nothing(material: SecurityMaterial) -> None:
    token = raw_token(material, scope=None, scp=["model:stats"])
    async with asgi_client(material.config) as client:
        response = await client.get("/stats", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.json() == {
        "error": {
            "code": "insufficient_scope",
            "message": "the credential lacks a scope this route requires",
            "request_id": None,
            "details": None,
        }
    }
