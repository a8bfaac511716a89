"""Attacks with bearer tokens: forged, confused, stale, misdirected; the /token grant."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from tests.support.attack_base import (
    PREDICT,
    STATS,
    AttackBase,
    b64url,
    claims_for,
    hs256_token,
)
from tests.support.live import LiveTarget


class TokenAttacks(AttackBase):
    # --- JWTs ---------------------------------------------------------------------------------

    def test_valid_jwt_on_stats_is_accepted(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        if "jwt" not in live_target.config.security.authentication.stats_methods:
            pytest.skip("/stats takes no JWTs in this config")
        token = live_target.mint([STATS])
        response = client.get("/stats", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text

    def test_rs256_jwt_is_accepted(self, live_target: LiveTarget, client: httpx.Client) -> None:
        auth = live_target.config.security.authentication
        if "RS256" not in auth.jwt_algorithms or live_target.rsa_private_key_path is None:
            pytest.skip("RS256 is not configured for this server")
        token = live_target.mint([STATS], algorithm="RS256")
        response = client.get("/stats", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text

    def test_jwt_with_alg_none_gets_401(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        payload = b64url(json.dumps(claims_for(live_target, STATS)).encode())
        for alg in ("none", "None", "NONE"):
            header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
            self._assert_unauthorized(self._stats_with(client, f"{header}.{payload}."))

    def test_hs256_token_signed_with_public_key_gets_401(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        public_pem = live_target.public_key_pem()
        if public_pem is None:
            pytest.skip("no public key configured: nothing to confuse")
        payload = claims_for(live_target, f"{STATS} {PREDICT}")
        for key in (public_pem, public_pem.strip()):
            token = hs256_token({"alg": "HS256", "typ": "JWT"}, payload, key)
            self._assert_unauthorized(self._stats_with(client, token))

    def test_expired_jwt_gets_401(self, live_target: LiveTarget, client: httpx.Client) -> None:
        leeway = int(live_target.config.security.authentication.jwt_leeway_s)
        past = int(time.time()) - leeway - 600
        token = live_target.mint(
            [STATS], claims={"iat": past - 300, "nbf": past - 300, "exp": past}
        )
        self._assert_unauthorized(self._stats_with(client, token))

    def test_jwt_without_exp_gets_401(self, live_target: LiveTarget, client: httpx.Client) -> None:
        self._assert_unauthorized(
            self._stats_with(client, live_target.mint([STATS], claims={"exp": None}))
        )

    def test_jwt_with_future_nbf_gets_401(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        leeway = int(live_target.config.security.authentication.jwt_leeway_s)
        future = int(time.time()) + leeway + 600
        token = live_target.mint([STATS], ttl_s=3600, claims={"nbf": future})
        self._assert_unauthorized(self._stats_with(client, token))

    def test_jwt_with_wrong_issuer_gets_401(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        if live_target.config.security.authentication.jwt_issuer is None:
            pytest.skip("no issuer configured")
        self._assert_unauthorized(
            self._stats_with(
                client, live_target.mint([STATS], claims={"iss": "https://evil.example"})
            )
        )

    def test_jwt_with_wrong_audience_gets_401(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        if live_target.config.security.authentication.jwt_audience is None:
            pytest.skip("no audience configured")
        self._assert_unauthorized(
            self._stats_with(client, live_target.mint([STATS], claims={"aud": "some-other-api"}))
        )

    def test_jwt_signed_with_another_secret_gets_401(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        token = live_target.mint([STATS], key=b"an-attacker-chosen-secret-of-sufficient-length!!")
        self._assert_unauthorized(self._stats_with(client, token))

    def test_jwt_with_tampered_payload_gets_401(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        header, payload, signature = live_target.mint([PREDICT], subject="alice").split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims |= {"sub": "admin", "scope": f"{PREDICT} {STATS}"}
        forged = f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
        self._assert_unauthorized(self._stats_with(client, forged))

    def test_oversized_jwt_gets_401(self, live_target: LiveTarget, client: httpx.Client) -> None:
        token = live_target.mint([STATS], claims={"pad": "x" * 9000})
        response = self._stats_with(client, token)
        assert response.status_code == 401, response.text

    # --- OAuth2 client credentials --------------------------------------------------------------

    def test_client_credentials_token_reaches_stats(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        if live_target.config.security.authentication.client_store_path is None:
            pytest.skip("no OAuth2 client store configured")
        client_id, secret = live_target.create_client([STATS])
        issued = client.post(
            "/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
            },
        )
        assert issued.status_code == 200, issued.text
        token = issued.json()["access_token"]
        live_target.remember(token)
        assert self._stats_with(client, token).status_code == 200
        assert self._predict(
            client, live_target, headers={"Authorization": f"Bearer {token}"}
        ).status_code in {401, 403}

    def test_client_credentials_with_wrong_secret_get_401(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        if live_target.config.security.authentication.client_store_path is None:
            pytest.skip("no OAuth2 client store configured")
        client_id, secret = live_target.create_client([STATS])
        response = client.post(
            "/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret[::-1],
            },
        )
        live_target.remember(secret[::-1])
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "invalid_client"
