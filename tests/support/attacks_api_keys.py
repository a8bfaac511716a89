"""Attacks with API keys and scopes: unknown, tampered, revoked, expired, misplaced, greedy."""

from __future__ import annotations

import httpx
import pytest

from app.security.api_keys import generate_api_key
from tests.support.attack_base import PREDICT, STATS, AttackBase, SuiteKeys
from tests.support.live import LiveTarget


class ApiKeyAttacks(AttackBase):
    # --- API keys ----------------------------------------------------------------------------

    def test_valid_api_key_is_accepted(
        self, live_target: LiveTarget, client: httpx.Client, keys: SuiteKeys
    ) -> None:
        response = self._predict(
            client, live_target, headers=self._key_header(live_target, keys.predict)
        )
        assert response.status_code == 200, response.text

    def test_missing_credentials_get_401_with_challenge(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        response = self._predict(client, live_target)
        self._assert_unauthorized(response)
        challenge = response.headers["www-authenticate"]
        methods = live_target.config.security.authentication.predict_methods
        assert ("ApiKey" in challenge) == ("api_key" in methods)
        assert ("Bearer" in challenge) == ("jwt" in methods)

    def test_unknown_api_key_gets_401(self, live_target: LiveTarget, client: httpx.Client) -> None:
        _, forged = generate_api_key()
        live_target.remember(forged)
        self._assert_unauthorized(
            self._predict(client, live_target, headers=self._key_header(live_target, forged))
        )

    def test_api_key_with_tampered_secret_gets_401(
        self, live_target: LiveTarget, client: httpx.Client, keys: SuiteKeys
    ) -> None:
        last = keys.predict[-1]
        tampered = keys.predict[:-1] + ("A" if last != "A" else "B")
        self._assert_unauthorized(
            self._predict(client, live_target, headers=self._key_header(live_target, tampered))
        )

    def test_revoked_api_key_gets_401(
        self, live_target: LiveTarget, client: httpx.Client, keys: SuiteKeys
    ) -> None:
        self._assert_unauthorized(
            self._predict(client, live_target, headers=self._key_header(live_target, keys.revoked))
        )

    def test_deleted_api_key_gets_401(
        self, live_target: LiveTarget, client: httpx.Client, keys: SuiteKeys
    ) -> None:
        self._assert_unauthorized(
            self._predict(client, live_target, headers=self._key_header(live_target, keys.deleted))
        )

    def test_expired_api_key_gets_401(
        self, live_target: LiveTarget, client: httpx.Client, keys: SuiteKeys
    ) -> None:
        self._assert_unauthorized(
            self._predict(client, live_target, headers=self._key_header(live_target, keys.expired))
        )

    def test_disabled_api_key_gets_401(
        self, live_target: LiveTarget, client: httpx.Client, keys: SuiteKeys
    ) -> None:
        self._assert_unauthorized(
            self._predict(client, live_target, headers=self._key_header(live_target, keys.disabled))
        )

    def test_rejected_api_keys_all_read_the_same(
        self, live_target: LiveTarget, client: httpx.Client, keys: SuiteKeys
    ) -> None:
        _, unknown = generate_api_key()
        live_target.remember(unknown)
        bodies = set()
        for key in (unknown, keys.revoked, keys.deleted, keys.expired, keys.disabled):
            response = self._predict(
                client, live_target, headers=self._key_header(live_target, key)
            )
            error = response.json()["error"]
            bodies.add(
                (
                    response.status_code,
                    error["code"],
                    error["message"],
                    response.headers["www-authenticate"],
                )
            )
        assert len(bodies) == 1, bodies

    @pytest.mark.parametrize("param", ["api_key", "X-API-KEY", "token", "Access_Token"])
    def test_api_key_in_query_parameter_is_refused(
        self, live_target: LiveTarget, client: httpx.Client, keys: SuiteKeys, param: str
    ) -> None:
        response = client.post(
            "/predict", params={param: keys.predict}, json=live_target.valid_predict_body()
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "credentials_in_url"
        assert keys.predict not in response.text

    def test_rate_limited_key_gets_429_with_retry_after(
        self, live_target: LiveTarget, client: httpx.Client, keys: SuiteKeys
    ) -> None:
        statuses = []
        for _ in range(30):  # burst 2 per gateway replica; a few replicas still run dry
            response = self._predict(
                client, live_target, headers=self._key_header(live_target, keys.throttled)
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
        assert statuses[0] == 200
        assert statuses[-1] == 429, statuses
        assert set(statuses[:-1]) == {200}
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["code"] == "rate_limited"

    # --- scopes ---------------------------------------------------------------------------------

    def test_predict_scoped_token_on_stats_gets_403(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        if "jwt" not in live_target.config.security.authentication.stats_methods:
            pytest.skip("/stats takes no JWTs in this config")
        response = self._stats_with(client, live_target.mint([PREDICT]))
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "insufficient_scope"

    def test_stats_scoped_token_on_predict_gets_403(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        if "jwt" not in live_target.config.security.authentication.predict_methods:
            pytest.skip("/predict takes no JWTs in this config")
        token = live_target.mint([STATS])
        response = self._predict(client, live_target, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "insufficient_scope"

    def test_stats_scoped_key_on_predict_gets_403(
        self, live_target: LiveTarget, client: httpx.Client, keys: SuiteKeys
    ) -> None:
        if "api_key" not in live_target.config.security.authentication.predict_methods:
            pytest.skip("/predict takes no API keys in this config")
        response = self._predict(
            client, live_target, headers=self._key_header(live_target, keys.stats)
        )
        assert response.status_code == 403, response.text
