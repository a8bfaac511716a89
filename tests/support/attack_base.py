"""Shared pieces of the security attack suite (see ``tests/security_cases.py``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live import LiveTarget

PREDICT = "model:predict"
STATS = "model:stats"


@dataclass(frozen=True)
class SuiteKeys:
    predict: str
    stats: str
    revoked: str
    deleted: str
    expired: str
    disabled: str
    throttled: str


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hs256_token(header: dict[str, object], payload: dict[str, object], key: bytes) -> str:
    """Hand-made HS256 JWT: libraries refuse a PEM as an HMAC key, attackers do not."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def claims_for(target: LiveTarget, scope: str) -> dict[str, object]:
    """Claims a real token would carry (issuer/audience included), for hand-made tokens."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": "mallory", "scope": scope, "iat": now, "exp": now + 300}
    auth = target.config.security.authentication
    if auth.jwt_issuer is not None:
        claims["iss"] = auth.jwt_issuer
    if auth.jwt_audience is not None:
        claims["aud"] = auth.jwt_audience
    return claims


def log_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files.append(path)
    return files


class AttackBase:
    """Fixtures and request helpers every attack group uses."""

    # --- fixtures ------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def keys(cls, live_target: LiveTarget) -> SuiteKeys:
        """Every key the suite needs, written at once so the server reloads only once."""
        t = live_target
        _, predict = t.create_key([PREDICT], wait=False)
        _, stats = t.create_key([STATS], wait=False)
        revoked_id, revoked = t.create_key([PREDICT], wait=False)
        deleted_id, deleted = t.create_key([PREDICT], wait=False)
        _, expired = t.create_key([PREDICT], expires_at=time.time() - 60, wait=False)
        _, disabled = t.create_key([PREDICT], disabled=True, wait=False)
        _, throttled = t.create_key([PREDICT], rate_limit_per_s=0.01, burst=2, wait=False)
        t.revoke_key(revoked_id, wait=False)
        t.delete_key(deleted_id, wait=False)
        t.wait_for_reload()
        return SuiteKeys(predict, stats, revoked, deleted, expired, disabled, throttled)

    @pytest.fixture
    def client(self, live_target: LiveTarget) -> Iterator[httpx.Client]:
        with live_target.client() as client:
            yield client

    def _predict(self, client: httpx.Client, target: LiveTarget, **kwargs: Any) -> httpx.Response:
        return client.post("/predict", json=target.valid_predict_body(), **kwargs)

    def _key_header(self, target: LiveTarget, key: str) -> dict[str, str]:
        return {target.config.security.authentication.api_key_header: key}

    def _assert_unauthorized(self, response: httpx.Response) -> None:
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthorized"
        assert "realm=" in response.headers["www-authenticate"]

    def _stats_with(self, client: httpx.Client, token: str) -> httpx.Response:
        return client.get("/stats", headers={"Authorization": f"Bearer {token}"})
