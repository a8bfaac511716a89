"""POST /token: the client-credentials grant and its RFC 6749 errors."""

from __future__ import annotations

import base64
import time
from urllib.parse import quote_plus

import httpx
import jwt as pyjwt
import pytest

from app.security.clients import ClientStore
from tests.support.security_app import (
    AUDIENCE,
    ISSUER,
    MakeMaterial,
    SecurityMaterial,
    asgi_client,
)


def new_client(material: SecurityMaterial, scopes: list[str]) -> tuple[str, str]:
    path = material.config.security.authentication.client_store_path
    assert path is not None
    record, secret = ClientStore(path).create(owner="risk", scopes=scopes)
    return record.client_id, secret


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


async def test_token_is_issued_with_all_allowed_scopes_when_scope_omitted(
    material: SecurityMaterial,
) -> None:
    cid, secret = new_client(material, ["model:stats", "model:predict"])
    async with asgi_client(material.config) as client:
        response = await client.post(
            "/token",
            data={"grant_type": "client_credentials", "client_id": cid, "client_secret": secret},
        )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "model:predict model:stats"
    assert response.headers["cache-control"] == "no-store"
    claims = pyjwt.decode(
        body["access_token"],
        material.jwt_secret.encode(),
        algorithms=["HS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
    )
    assert claims["sub"] == cid
    assert claims["exp"] - claims["iat"] == 900
    assert abs(claims["iat"] - time.time()) < 5


async def test_issued_token_is_limited_to_the_requested_scope(material: SecurityMaterial) -> None:
    cid, secret = new_client(material, ["model:stats", "model:predict"])
    async with asgi_client(material.config) as client:
        issued = await client.post(
            "/token",
            data={
                "grant_type": "client_credentials",
                "client_id": cid,
                "client_secret": secret,
                "scope": "model:stats",
            },
        )
        token = issued.json()["access_token"]
        stats = await client.get("/stats", headers={"Authorization": f"Bearer {token}"})
        predict = await client.post(
            "/predict", json={"a": 1}, headers={"Authorization": f"Bearer {token}"}
        )
    assert issued.json()["scope"] == "model:stats"
    assert stats.status_code == 200
    assert predict.status_code == 403


async def test_token_is_issued_when_client_uses_http_basic(material: SecurityMaterial) -> None:
    cid, secret = new_client(material, ["model:stats"])
    async with asgi_client(material.config) as client:
        response = await client.post(
            "/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": basic(cid, secret)},
        )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "form",
    [
        {"client_secret": "wrong"},
        {"client_id": "cli_0000000000000000"},
        {"client_secret": None},
    ],
)
async def test_bad_client_credentials_get_401_invalid_client(
    material: SecurityMaterial, form: dict[str, str | None]
) -> None:
    cid, secret = new_client(material, ["model:stats"])
    data = {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret}
    data.update(form)
    async with asgi_client(material.config) as client:
        response = await client.post(
            "/token", data={k: v for k, v in data.items() if v is not None}
        )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_client"
    assert response.headers["www-authenticate"] == 'Basic realm="cnnlstm"'
    assert secret not in response.text


@pytest.mark.parametrize(
    "value",
    [
        "Basic \u00e9\u00e9\u00e9\u00e9",  # not ASCII: base64 refuses it with a ValueError
        "Basic !!!!",  # not the base64 alphabet
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),  # not UTF-8 once decoded
    ],
    ids=["non-ascii", "not base64", "not utf-8"],
)
async def test_undecodable_basic_credentials_get_401_invalid_client(
    material: SecurityMaterial, value: str
) -> None:
    async with asgi_client(material.config) as client:
        response = await client.post(
            "/token",
            data={"grant_type": "client_credentials"},
            headers=[(b"authorization", value.encode("latin-1"))],
        )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_client"


async def test_revoked_client_gets_401(material: SecurityMaterial) -> None:
    cid, secret = new_client(material, ["model:stats"])
    path = material.config.security.authentication.client_store_path
    assert path is not None
    ClientStore(path).revoke(cid)
    async with asgi_client(material.config) as client:
        response = await client.post(
            "/token",
            data={"grant_type": "client_credentials", "client_id": cid, "client_secret": secret},
        )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({}, "invalid_request"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"grant_type": "client_credentials", "scope": "model:admin"}, "invalid_scope"),
    ],
)
async def test_grant_errors_get_400_with_rfc6749_codes(
    material: SecurityMaterial, data: dict[str, str], code: str
) -> None:
    cid, secret = new_client(material, ["model:stats"])
    async with asgi_client(material.config) as client:
        response = await client.post(
            "/token", data={"client_id": cid, "client_secret": secret, **data}
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


async def test_two_client_auth_methods_at_once_get_400(material: SecurityMaterial) -> None:
    cid, secret = new_client(material, ["model:stats"])
    async with asgi_client(material.config) as client:
        response = await client.post(
            "/token",
            data={"grant_type": "client_credentials", "client_secret": secret},
            headers={"Authorization": basic(cid, secret)},
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


async def test_repeated_guesses_for_one_client_get_429(make_material: MakeMaterial) -> None:
    material = make_material(
        {
            "network_security": {
                "limits": {"token_endpoint_rate_per_s": 0.5, "token_endpoint_burst": 3}
            }
        }
    )
    cid, _ = new_client(material, ["model:stats"])
    data = {"grant_type": "client_credentials", "client_id": cid, "client_secret": "guess"}
    async with asgi_client(material.config) as client:
        statuses = [(await client.post("/token", data=data)).status_code for _ in range(4)]
        last = await client.post("/token", data=data)
    assert statuses == [401, 401, 401, 429]
    assert last.headers["retry-after"] == "2"


async def test_a_flood_of_made_up_client_ids_meets_the_endpoints_own_limit(
    make_material: MakeMaterial, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each id is new, so the per-client limit never trips; every check is a slow hash
    # (~7 ms of CPU), taken from the cores the predictions run on.
    material = make_material(
        {
            "network_security": {
                "limits": {
                    "token_endpoint_global_rate_per_s": 0.5,
                    "token_endpoint_global_burst": 3,
                }
            }
        }
    )
    checks: list[str] = []
    original = ClientStore.authenticate

    def counted(self: ClientStore, client_id: str, client_secret: str) -> object:
        checks.append(client_id)
        return original(self, client_id, client_secret)

    monkeypatch.setattr(ClientStore, "authenticate", counted)
    async with asgi_client(material.config) as client:
        answers = [
            await client.post(
                "/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": f"c{i}",
                    "client_secret": "x",
                },
            )
            for i in range(5)
        ]
    assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]
    assert len(checks) == 3  # no slow hash for a refused attempt
    assert answers[-1].json()["error"]["code"] == "rate_limited"
    assert int(answers[-1].headers["retry-after"]) >= 1


async def test_token_route_is_documented_in_openapi(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    operation = doc["paths"]["/token"]["post"]
    assert "application/x-www-form-urlencoded" in operation["requestBody"]["content"]
    assert {"200", "400", "401", "429"} <= set(operation["responses"])
