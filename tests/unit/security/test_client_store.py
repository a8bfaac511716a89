"""OAuth2 client secrets: slow salted hashes, uniform failure path."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from app.security import clients
from app.security.clients import ClientStore, ClientStoreError


@pytest.fixture
def store(tmp_path: Path) -> ClientStore:
    return ClientStore(tmp_path / "clients.json", reload_interval_s=0.0)


def test_secret_is_stored_as_pbkdf2_sha256_hash(store: ClientStore, tmp_path: Path) -> None:
    record, secret = store.create(owner="risk", scopes=["model:stats"])
    text = (tmp_path / "clients.json").read_text()
    assert secret not in text
    [item] = json.loads(text)["clients"]
    assert item["secret_hash"].startswith("$pbkdf2-sha256$")
    assert item["client_id"] == record.client_id
    assert stat.S_IMODE(os.stat(tmp_path / "clients.json").st_mode) == 0o600


def test_two_clients_with_equal_secrets_get_different_hashes() -> None:
    assert clients.hash_client_secret("same-secret") != clients.hash_client_secret("same-secret")


def test_authenticate_returns_client_when_secret_matches(store: ClientStore) -> None:
    record, secret = store.create(owner="risk", scopes=["model:stats"])
    assert store.authenticate(record.client_id, secret) == record


def test_authenticate_returns_none_when_secret_wrong(store: ClientStore) -> None:
    record, secret = store.create(owner="risk", scopes=["model:stats"])
    assert store.authenticate(record.client_id, secret + "x") is None


def test_authenticate_returns_none_when_client_revoked(store: ClientStore) -> None:
    record, secret = store.create(owner="risk", scopes=["model:stats"])
    assert store.revoke(record.client_id) is True
    assert store.authenticate(record.client_id, secret) is None


def test_unknown_client_still_costs_one_hash_check(
    store: ClientStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_verify = clients._hasher.verify

    def spy(secret: str, hashed: str) -> bool:
        calls.append(hashed)
        return real_verify(secret, hashed)

    monkeypatch.setattr(clients._hasher, "verify", spy)
    assert store.authenticate("cli_0000000000000000", "whatever") is None
    assert store.authenticate("not-even-an-id", "whatever") is None
    assert len(calls) == 2
    assert all(h.startswith("$pbkdf2-sha256$") for h in calls)


def test_list_never_shows_hashes(store: ClientStore) -> None:
    store.create(owner="risk", scopes=["model:stats"])
    [view] = [c.public_view() for c in store.list_clients()]
    assert "secret_hash" not in view
    assert view["scopes"] == ["model:stats"]


def test_create_refuses_when_scope_invalid(store: ClientStore) -> None:
    with pytest.raises(ClientStoreError):
        store.create(owner="risk", scopes=["bad scope"])
