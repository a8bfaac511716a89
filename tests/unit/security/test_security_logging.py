"""No credential ever reaches a log line or an error body."""

from __future__ import annotations

import logging

import pytest
from structlog.testing import capture_logs

from app.observability.redaction import redact_event
from app.security.api_keys import ApiKeyStore
from app.security.clients import ClientStore
from app.security.jwt_tokens import mint_token
from tests.support.live import columnar_bars
from tests.support.security_app import AUDIENCE, ISSUER, SecurityMaterial, asgi_client


async def test_no_secret_in_logs_or_bodies_after_good_and_bad_requests(
    material: SecurityMaterial, caplog: pytest.LogCaptureFixture
) -> None:
    auth = material.config.security.authentication
    keys = ApiKeyStore(auth.api_key_store_path)
    _, good_key = keys.create(owner="desk", scopes=["model:predict"])
    revoked_record, revoked_key = keys.create(owner="desk", scopes=["model:predict"])
    keys.revoke(revoked_record.key_id)
    assert auth.client_store_path is not None
    client_record, client_secret = ClientStore(auth.client_store_path).create(
        owner="risk", scopes=["model:stats"]
    )
    token = mint_token(material.jwt_secret, "svc", ["model:stats"], 300, ISSUER, AUDIENCE)
    tampered_key = good_key[:-1] + ("A" if good_key[-1] != "A" else "B")
    secrets = [
        good_key,
        good_key[-43:],
        revoked_key,
        revoked_key[-43:],
        tampered_key[-43:],
        client_secret,
        token,
        token.rsplit(".", 1)[1],
        material.jwt_secret,
    ]
    bodies: list[str] = []
    with caplog.at_level(logging.DEBUG), capture_logs() as events:
        async with asgi_client(material.config) as client:
            for headers in (
                {"X-API-Key": good_key},
                {"X-API-Key": revoked_key},
                {"X-API-Key": tampered_key},
                {"Authorization": f"Bearer {token}"},
                {"Authorization": f"Bearer {token[:-2]}xx"},
                {"Authorization": f"Basic {good_key}"},
            ):
                for method, path in (("POST", "/predict"), ("GET", "/stats")):
                    response = await client.request(
                        method, path, headers=headers, json=columnar_bars()
                    )
                    bodies.append(response.text + str(response.headers))
            for params in ({"api_key": good_key}, {"access_token": token}):
                response = await client.get("/stats", params=params)
                bodies.append(response.text + str(response.headers))
            for secret in (client_secret, client_secret[::-1]):
                response = await client.post(
                    "/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": client_record.client_id,
                        "client_secret": secret,
                    },
                )
                bodies.append(response.text)
    # httpx is the test's own client logging the URLs it sends: not the server's log.
    server_records = [r for r in caplog.records if not r.name.startswith("httpx")]
    logged = "\n".join([*(str(e) for e in events), *(r.getMessage() for r in server_records)])
    reasons = {e.get("reason") for e in events if e["event"] == "auth_rejected"}
    assert {"disabled", "mismatch", "not_bearer", "invalid"} <= reasons  # the log has content
    leaked = [s[-6:] for s in secrets if s in logged]
    assert leaked == []
    echoed = [s[-6:] for s in secrets if any(s in body for body in bodies)]
    assert echoed == []


async def test_rejection_log_names_the_key_id_and_reason_but_not_the_key(
    material: SecurityMaterial,
) -> None:
    store = ApiKeyStore(material.config.security.authentication.api_key_store_path)
    record, key = store.create(owner="desk", scopes=["model:predict"], disabled=True)
    with capture_logs() as events:
        async with asgi_client(material.config) as client:
            response = await client.post("/predict", json={}, headers={"X-API-Key": key})
    assert response.status_code == 401
    [rejected] = [e for e in events if e["event"] == "auth_rejected"]
    assert rejected == {
        "event": "auth_rejected",
        "log_level": "info",
        "reason": "disabled",
        "method": "api_key",
        "key_id": record.key_id,
        "path": "/predict",
    }


async def test_malformed_key_is_not_logged_at_all(material: SecurityMaterial) -> None:
    pasted = "my-password-pasted-by-mistake-0123456789"
    with capture_logs() as events:
        async with asgi_client(material.config) as client:
            await client.post("/predict", json={}, headers={"X-API-Key": pasted})
    [rejected] = [e for e in events if e["event"] == "auth_rejected"]
    assert rejected["reason"] == "malformed"
    assert rejected["key_id"] is None
    assert pasted not in str(events)


# A client secret (or a foreign API key) has no shape a value pattern could know: only the
# name it travels under can say it is one.
OPAQUE = "Zq8vT1xPp0-opaque-secret-4Hk2"


@pytest.mark.parametrize(
    "headers",
    [
        # scope["headers"], Headers.raw, headers.items(): (name, value) pairs
        [(b"x-api-key", OPAQUE.encode()), (b"cookie", f"session={OPAQUE}".encode())],
        [("X-API-Key", OPAQUE), ("Authorization", f"Token {OPAQUE}")],
        # a dict made of the raw ASGI pairs keeps the bytes names
        {b"x-api-key": OPAQUE.encode(), b"authorization": f"Token {OPAQUE}".encode()},
    ],
)
def test_redaction_masks_credential_headers_in_raw_asgi_form(headers: object) -> None:
    out = redact_event(None, "info", {"event": "request", "headers": headers})
    assert OPAQUE not in repr(out)


@pytest.mark.parametrize(
    "text",
    [
        f"https://gw.test/predict?symbol=X&api_key={OPAQUE}",
        f"/stats?X-Api-Key={OPAQUE}",
        f"/stats?access_token={OPAQUE}&recent=5",
        f"grant_type=client_credentials&client_id=cli_0123456789abcdef&client_secret={OPAQUE}",
        f"GET /token?password={OPAQUE} HTTP/1.1",
    ],
)
def test_redaction_masks_credential_query_parameters(text: str) -> None:
    out = redact_event(None, "info", {"event": "request", "url": text})
    assert OPAQUE not in out["url"]
    assert "[REDACTED]" in out["url"]


def test_redaction_keeps_ordinary_query_parameters() -> None:
    # Names are judged as dict keys are: these hold nothing secret.
    url = "/stats?recent=5&symbol=EURUSD&keyboard=1&key_id=0123456789ab&token_ttl_s=900"
    assert redact_event(None, "info", {"event": "e", "url": url})["url"] == url
