"""Attacks every server built from our config must repel, over real HTTPS.

Not collected by itself (no ``test_`` prefix): a test module subclasses
``SecurityAttackSuite`` and provides a ``live_target`` fixture returning a
:class:`tests.support.live.LiveTarget`. The suite assumes only what the config promises:
``POST /predict`` takes JSON and needs ``model:predict``, ``GET /stats`` needs
``model:stats``; the key store, JWT secret and public key are the files the config names.
Each test asserts one exact status. The last test replays good and bad requests and then
searches every log file for every credential used.

The attacks live in ``tests/support/attacks_*.py``, grouped by what they attack. pytest
runs inherited tests first and a class's own tests last, so the log check, defined here,
runs after every attack and its search covers every credential the suite used.
"""

from __future__ import annotations

import time

import httpx

from tests.support.attack_base import STATS, SuiteKeys, log_files
from tests.support.attacks_api_keys import ApiKeyAttacks
from tests.support.attacks_tokens import TokenAttacks
from tests.support.attacks_transport import TransportAttacks
from tests.support.live import LiveTarget


class SecurityAttackSuite(ApiKeyAttacks, TokenAttacks, TransportAttacks):
    """Every attack; subclass it next to a ``live_target`` fixture."""

    def test_no_credential_reaches_the_logs_after_a_session(
        self, live_target: LiveTarget, client: httpx.Client, keys: SuiteKeys
    ) -> None:
        """A session of good and bad requests, then every log file is searched for every
        key, token and secret this suite used (runs after every attack)."""
        t = live_target
        t.jwt_secret()  # the signing secret itself is on the list
        good_token = t.mint([STATS])
        self._predict(client, t, headers=self._key_header(t, keys.predict))
        self._predict(client, t, headers=self._key_header(t, keys.revoked))
        self._predict(client, t, headers=self._key_header(t, keys.predict[:-2] + "zz"))
        self._predict(client, t, headers={"Authorization": f"Bearer {good_token}"})
        self._stats_with(client, good_token)
        self._stats_with(client, good_token[:-3] + "abc")
        client.post("/predict", params={"api_key": keys.predict}, json=t.valid_predict_body())
        client.get("/stats", params={"access_token": good_token})
        client.get("/stats", headers={"Authorization": f"Basic {keys.predict}"})
        time.sleep(t.log_flush_s)
        files = log_files(t.log_paths)
        assert files, f"no log files under {t.log_paths}"
        assert sum(p.stat().st_size for p in files) > 0, "the server logged nothing at all"
        secrets = {s for s in t.secrets_used if len(s) >= 16}
        leaks = []
        for path in files:
            text = path.read_bytes().decode("utf-8", errors="replace")
            leaks.extend(f"{path}: ...{s[-6:]}" for s in secrets if s in text)
        assert leaks == []
